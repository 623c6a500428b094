//! Finding a daemon and starting one: the personal socket first, then a configured shared
//! daemon; autostart with the typed start report; `ping`.

use super::*;

/// Whether autostart is allowed by the environment.
pub fn autostart_enabled() -> bool {
    std::env::var(ENV_AUTOSTART).map_or(true, |v| v != "0")
}

/// Whether the in-process broker is requested.
pub fn no_daemon() -> bool {
    std::env::var(ENV_NO_DAEMON).is_ok_and(|v| v == "1")
}

/// Connects to the daemon, starting it if needed (and allowed).
pub fn connect_or_start(paths: &Paths) -> Result<Client, Error> {
    if no_daemon() {
        return Client::in_process(paths);
    }
    if let Some(c) = connect_existing(paths)? {
        return Ok(c);
    }
    if !autostart_enabled() {
        return Err(Error::NotRunning(format!(
            "the elhaz daemon is not running and {ENV_AUTOSTART}=0: start it with `elhaz daemon start`"
        )));
    }
    if token_from_env()?.is_some() {
        // A delegate uses someone else's daemon; a daemon of its own would refuse its token.
        return Err(Error::NotRunning(format!(
            "no elhaz daemon is running, and a delegate ({ENV_TOKEN} / {ENV_TOKEN_FILE} set) \
             never starts one: point {ENV_SHARED} and ELHAZ_SHARED_SOCKET at the daemon that \
             issued the token"
        )));
    }
    start_daemon(paths, &paths.socket, &[])?;
    Client::connect(&paths.socket)
}

/// Connects to a running daemon without starting one; `Ok(None)` when none runs.
///
/// The personal socket comes first, and whoever listens there must run as us — anything else
/// is an error, never a reason to look elsewhere. Without a personal daemon (and without
/// `ELHAZ_SOCKET`) two more places are tried: a daemon of *ours* on a shared socket (the
/// daemon user's own CLI, via `[shared] socket` or the default), and — only when `[client]
/// shared` or `ELHAZ_SHARED` names the user it runs as — that user's shared daemon. A shared
/// socket served by anyone else is skipped (we then autostart our own), so a shared daemon is
/// never used silently. When one is used, nothing is ever autostarted.
pub fn connect_existing(paths: &Paths) -> Result<Option<Client>, Error> {
    if let Some(c) = Client::connect_as(&paths.socket, None)? {
        return Ok(Some(c));
    }
    if paths.socket_explicit {
        return Ok(None);
    }
    let settings = crate::config::Settings::load(&paths.settings_file).ok();
    let shared = shared_user(settings.as_ref())?;
    let shared = shared.as_ref().map(|(user, uid)| (user.as_str(), *uid));
    for socket in shared_sockets(paths, settings.as_ref()) {
        if socket == paths.socket {
            continue;
        }
        match Client::connect_as(&socket, shared) {
            Ok(Some(c)) => return Ok(Some(c)),
            Ok(None) => {}
            // Not ours and not the configured shared daemon's: not for us, keep looking.
            Err(Error::WrongDaemon { .. }) if shared.is_none() => {}
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The shared daemon's user, from `ELHAZ_SHARED` or `[client] shared`, resolved to a uid.
pub(super) fn shared_user(
    settings: Option<&crate::config::Settings>,
) -> Result<Option<(String, u32)>, Error> {
    let configured = match std::env::var(ENV_SHARED) {
        Ok(v) if v.is_empty() || v == "0" => None,
        Ok(v) => Some(v),
        Err(_) => settings
            .and_then(|s| s.client.as_ref())
            .and_then(|c| c.shared.clone()),
    };
    let Some(user) = configured.map(|u| u.trim().to_string()) else {
        return Ok(None);
    };
    let uid = match user.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => nix::unistd::User::from_name(&user)
            .ok()
            .flatten()
            .ok_or_else(|| {
                Error::NotRunning(format!(
                    "the shared daemon's user {user:?} ({ENV_SHARED} or [client] shared) does not exist on this machine"
                ))
            })?
            .uid
            .as_raw(),
    };
    Ok(Some((user, uid)))
}

/// Where a shared daemon may listen: `[client] shared_socket`, `ELHAZ_SHARED_SOCKET` / the
/// default, and — for the daemon's own user — `[shared] socket` of its `elhaz.toml`.
pub(super) fn shared_sockets(
    paths: &Paths,
    settings: Option<&crate::config::Settings>,
) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if std::env::var_os(crate::paths::ENV_SHARED_SOCKET).is_none()
        && let Some(s) = settings
            .and_then(|s| s.client.as_ref())
            .and_then(|c| c.shared_socket.clone())
    {
        v.push(s);
    }
    v.push(paths.shared_socket.clone());
    if let Some(s) = settings
        .and_then(|s| s.shared.as_ref())
        .and_then(|s| s.socket.clone())
        && !v.contains(&s)
    {
        v.push(s);
    }
    v
}

/// Errors that mean "no daemon listens there".
pub fn is_not_running(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}

/// How a start ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// A new daemon with this pid.
    New(u32),
    /// One was already running.
    Already(u32),
}

/// Pings the daemon listening on `socket`: its pid if it answers.
pub fn ping(socket: &Path) -> Result<Option<u32>, Error> {
    let Some(mut c) = Client::connect_as(socket, None)? else {
        return Ok(None);
    };
    match c.call(Request::Ping)? {
        Response::Pong { pid, .. } => Ok(Some(pid)),
        other => Err(Error::Protocol(format!(
            "unexpected reply to ping: {other:?}"
        ))),
    }
}

/// Starts a detached daemon and returns once `socket` accepts, or with the daemon's own
/// start-up error. `extra` are additional `daemon start` flags (e.g. `--capacity 8`).
pub fn start_daemon(paths: &Paths, socket: &Path, extra: &[String]) -> Result<Started, Error> {
    if let Some(pid) = ping(socket)? {
        return Ok(Started::Already(pid));
    }
    let exe =
        std::env::current_exe().map_err(|e| Error::io("cannot find the elhaz executable", e))?;
    let (mut reader, writer) =
        std::io::pipe().map_err(|e| Error::io("cannot create the start-up pipe", e))?;
    let mut cmd = Command::new(exe);
    // Shown as `elhaz daemon start …` (argv[0] the lean binary users run), whichever binary
    // starts it; the image is this one, which has the daemon.
    if let Ok(front) = crate::front::front_binary() {
        std::os::unix::process::CommandExt::arg0(&mut cmd, front);
    }
    // The daemon scrubs these itself too; removing them here keeps them out of its
    // /proc/PID/environ as well.
    let vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    for k in crate::selfref::to_scrub(
        vars.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &paths.run_dir,
    ) {
        cmd.env_remove(k);
    }
    cmd.args(["daemon", "start", "--foreground"])
        .args(extra)
        .env(ENV_DETACH, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(writer);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("cannot start the elhaz daemon", e))?;
    // Close our copy of the pipe's write end, or we would never see EOF.
    drop(cmd);
    let status = child
        .wait()
        .map_err(|e| Error::io("cannot wait for the elhaz daemon", e))?;

    // Read the daemon's stderr until it closes it (ready) or exits (failed), within a bound.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = (&mut reader).take(64 * 1024).read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let text = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
    let (report, text) = StartReport::parse(&text);

    // The daemon may have lost a start race to another daemon that is still binding: while
    // some daemon holds the lock, wait for the socket to accept.
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        // Readiness is a bare connect, not a request: a `--once` daemon must keep its one
        // request for the caller.
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            let pid = || read_pid(paths).unwrap_or(0);
            return Ok(match report {
                Some(StartReport::AlreadyRunning { pid: p }) => {
                    Started::Already(p.unwrap_or_else(pid))
                }
                Some(StartReport::Ready { pid: p }) => Started::New(p),
                // Our daemon lost a start race and has not reported yet, or is older: the
                // socket accepts, which is what the caller needs.
                None => Started::New(pid()),
            });
        }
        if !lock_is_held(paths) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = text.trim();
    let text = text.strip_prefix("elhaz: ").unwrap_or(text);
    Err(Error::NotRunning(if !text.is_empty() {
        format!("the elhaz daemon failed to start: {text}")
    } else if !status.success() {
        format!("the elhaz daemon failed to start ({status})")
    } else {
        format!(
            "the elhaz daemon did not come up within {}s; see `elhaz daemon logs` ({})",
            START_TIMEOUT.as_secs(),
            paths.log_dir.display()
        )
    }))
}
