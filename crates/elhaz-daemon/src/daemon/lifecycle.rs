//! Everything around the server: detaching, the single-instance lock, stale-socket recovery,
//! creating the socket with its mode, the pid file, signals, the idle exit and cleanup.
//!
//! Start-up order matters and is the same for `--foreground` and detached starts. This list is
//! the one place it is written down (docs/architecture.md refers here); it follows [`serve`]
//! step by step:
//!
//! 1. *(detached only)* **Fork** before any thread exists; the parent exits, the child calls
//!    `setsid`. The CLI that spawned us holds the read end of our stderr pipe and reads it
//!    until EOF. Then, still single-threaded, **scrub** from the environment what elhaz itself
//!    put there (`ELHAZ_SESSION`, a generated `AWS_CONFIG_FILE`, `AWS_PROFILE=elhaz-…`, …; see
//!    [`selfref`](super::selfref)), so a daemon started inside `elhaz shell` never calls itself.
//! 2. **umask 077** for the whole daemon: every file we create is private, whatever the
//!    caller's umask. Every directory we use passes the ssh-style **path check** of
//!    [`crate::fsafe`]; only then are `elhaz.toml` and a `--token-file` read (an invalid one is
//!    a start-up error, shown to the user) and **logging** started, so the lock and
//!    stale-socket decisions below are in the log.
//! 3. Take an exclusive **`flock`** on `run/elhaz.lock`. Held → another daemon owns this run
//!    dir: report "already running" (typed, on the start-up pipe) and exit 0. The kernel drops
//!    the lock when a daemon dies, even by `kill -9`, so a crash never blocks the next start —
//!    unlike a pid file guess. With the lock held, stale `run/aws-config-*` files go.
//! 4. Write the **pid file** — before the socket, so whoever sees the socket accept can read it.
//! 5. A leftover socket can only be **stale** now: remove it if connecting is refused (and
//!    refuse to touch anything that is not a socket, or that answers). **Bind** under umask 177
//!    so the socket is *born* 0600 — no bind-then-chmod window (a shared socket gets its mode
//!    and group through a verified directory descriptor).
//! 6. **Harden** the process (no core dumps, no same-uid ptrace), join the keyring, build the
//!    2-worker **runtime** and the engine, start the idle watch, the signal handlers and the
//!    **re-warm** of the sessions recorded at the last stop.
//! 7. **Signal readiness**: write the typed start report
//!    ([`START_REPORT_PREFIX`](crate::protocol::START_REPORT_PREFIX)) to stderr, then point
//!    stderr at /dev/null, which closes the CLI's pipe. Then serve until shutdown.
//!
//! Shutdown (SIGTERM, SIGINT and every other stop signal in [`STOP_SIGNALS`] — SIGHUP stops
//! too, it does not reload, except in a daemon with a `--token-file`, where SIGHUP re-reads
//! that file and nothing else — `stop`, idle timeout, `--once`) cancels every task, kills the
//! process groups of child processes still running (a profile's `credential_process`, an MFA
//! command), then removes the socket (only if it is still ours) and the pid file; the lock
//! goes with the process.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::stat::{Mode, umask};

use crate::config::{self, Settings};
use crate::daemon::sessions::WarmEntry;
use crate::daemon::state::{Options, State};
use crate::error::Error;
use crate::paths::Paths;
use crate::protocol::StartReport;

pub use crate::client::ENV_DETACH;
pub use crate::paths::{lock_is_held, read_pid};

/// Holds the single-instance lock for the daemon's lifetime.
#[derive(Debug)]
pub struct InstanceLock {
    _file: std::fs::File,
}

/// Takes the single-instance lock, or reports who holds it.
pub fn acquire_lock(paths: &Paths) -> Result<InstanceLock, Error> {
    crate::fsafe::ensure_private_dir(&paths.run_dir)?;
    let file = config::open_private(&paths.lock_file)?;
    match file.try_lock() {
        Ok(()) => Ok(InstanceLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::AlreadyRunning {
            pid: read_pid(paths),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(
            format!("cannot lock {}", paths.lock_file.display()),
            e,
        )),
    }
}

/// Removes a stale socket: only a socket, and only if nothing answers on it.
pub fn remove_stale_socket(socket: &Path) -> Result<(), Error> {
    let meta = match std::fs::symlink_metadata(socket) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("cannot inspect {}", socket.display()), e)),
    };
    if !meta.file_type().is_socket() {
        return Err(Error::Insecure(format!(
            "{} exists and is not a socket; remove it or choose another ELHAZ_SOCKET",
            socket.display()
        )));
    }
    match UnixStream::connect(socket) {
        Ok(_) => Err(Error::Insecure(format!(
            "another process is serving {}; stop it or choose another ELHAZ_SOCKET",
            socket.display()
        ))),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            tracing::info!(socket = %socket.display(), "removing stale socket");
            std::fs::remove_file(socket)
                .map_err(|e| Error::io(format!("cannot remove stale {}", socket.display()), e))
        }
        Err(e) => Err(Error::io(format!("cannot probe {}", socket.display()), e)),
    }
}

/// Binds `socket` so that it is created with mode 0600 (umask 177 during `bind`).
pub fn bind_private(socket: &Path) -> Result<UnixListener, Error> {
    if let Some(dir) = socket.parent() {
        crate::fsafe::create_dir_mode(dir, 0o700)?;
    }
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(socket);
    umask(old);
    let listener = bound.map_err(|e| Error::io(format!("cannot bind {}", socket.display()), e))?;
    // Belt and braces: the mode is already 0600; make sure, as a non-0600 socket is a bug.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("cannot set mode of {}", socket.display()), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("cannot make the socket non-blocking", e))?;
    Ok(listener)
}

/// Binds a shared daemon's socket: created with `mode` (umask set to match during `bind`)
/// and handed to `group`. The directory is created with `dir_mode` and `group` only if it
/// does not exist; an existing directory is never changed. Either way the directory must pass
/// the ssh-style check for the daemon user (owned by it or root, not writable by group or
/// others, its parents too): only then can nobody swap the socket between `bind` and the
/// `fchownat`/`fchmodat` below, which act relative to a descriptor of that verified directory
/// and never follow a symlink — the socket's mode and group are never set through a path
/// someone else could redirect.
pub fn bind_shared(
    socket: &Path,
    mode: u32,
    dir_mode: u32,
    group: Option<&str>,
) -> Result<UnixListener, Error> {
    use nix::fcntl::{AtFlags, OFlag};
    use nix::sys::stat::{FchmodatFlags, SFlag, fchmodat, fstatat};
    use nix::unistd::{Gid, Group, fchown, fchownat};
    let gid: Option<Gid> = match group {
        Some(g) => Some(
            Group::from_name(g)
                .ok()
                .flatten()
                .ok_or_else(|| Error::Insecure(format!("socket group {g:?} does not exist")))?
                .gid,
        ),
        None => None,
    };
    let dir = socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = socket
        .file_name()
        .ok_or_else(|| Error::Insecure(format!("{} names no socket file", socket.display())))?;
    crate::fsafe::check_dir_chain(dir)?;
    let created = !dir.exists();
    if created {
        crate::fsafe::create_dir_mode(dir, dir_mode)?;
    }
    let dir_fd = nix::fcntl::open(
        dir,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("cannot open {}", dir.display()), e.into()))?;
    if created && let Some(gid) = gid {
        fchown(&dir_fd, None, Some(gid))
            .map_err(|e| Error::io(format!("cannot chgrp {}", dir.display()), e.into()))?;
    }
    let dir_meta = std::fs::File::from(
        dir_fd
            .try_clone()
            .map_err(|e| Error::io(format!("cannot inspect {}", dir.display()), e))?,
    )
    .metadata()
    .map_err(|e| Error::io(format!("cannot inspect {}", dir.display()), e))?;
    crate::fsafe::check_dir_meta(dir, &dir_meta)?;
    let old = umask(Mode::from_bits_truncate(!mode & 0o777));
    let bound = UnixListener::bind(socket);
    umask(old);
    let listener = bound.map_err(|e| Error::io(format!("cannot bind {}", socket.display()), e))?;
    let st = fstatat(&dir_fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| Error::io(format!("cannot inspect {}", socket.display()), e.into()))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(Error::Insecure(format!(
            "{} is no longer the socket just bound",
            socket.display()
        )));
    }
    if let Some(gid) = gid {
        fchownat(&dir_fd, name, None, Some(gid), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| Error::io(format!("cannot chgrp {}", socket.display()), e.into()))?;
    }
    // Checked above to be a socket (not a symlink) in a directory nobody else can write.
    fchmodat(
        &dir_fd,
        name,
        Mode::from_bits_truncate(mode),
        FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| Error::io(format!("cannot set mode of {}", socket.display()), e.into()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("cannot make the socket non-blocking", e))?;
    Ok(listener)
}

/// Disables core dumps and same-uid ptrace attachment where the OS allows.
pub fn harden_process() {
    use nix::sys::resource::{Resource, setrlimit};
    if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        tracing::warn!(error = %e, "cannot disable core dumps");
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot clear the dumpable flag");
    }
}

/// Forks into the background: the parent exits at once, the child leads a new session.
fn detach() -> Result<(), Error> {
    use nix::unistd::{ForkResult, fork, setsid};
    // SAFETY: called first thing in `serve`, before the tokio runtime, the log writer or any
    // other thread exists, so the child is a complete single-threaded copy of this process.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => std::process::exit(0),
        Ok(ForkResult::Child) => {
            let _ = setsid();
            Ok(())
        }
        Err(e) => Err(Error::io("cannot fork the daemon", e.into())),
    }
}

/// Whether this process is a detached start (spawned by the CLI, which reads our stderr).
pub fn is_detached_start() -> bool {
    std::env::var_os(ENV_DETACH).is_some_and(|v| v == "1")
}

/// Writes the typed [`StartReport`] line to the start-up pipe (stderr) of a detached start;
/// returns whether it did (a foreground start has a person, not a CLI, on stderr).
pub fn report_start(report: StartReport) -> bool {
    if !is_detached_start() {
        return false;
    }
    use std::io::Write;
    let _ = std::io::stderr().write_all(report.line().as_bytes());
    true
}

/// Reports readiness, then closes the start-up pipe to the CLI by pointing stderr at
/// /dev/null.
fn signal_ready() {
    report_start(StartReport::Ready {
        pid: std::process::id(),
    });
    if let Ok(devnull) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stderr(&devnull);
    }
}

/// Runs a daemon in this process until it shuts down. `daemon start --foreground` lands here;
/// a detached start (`ELHAZ_DAEMON_DETACH=1`, set by the CLI) forks first. The steps are the
/// start-up order of the module docs, in that order.
pub fn serve(paths: &Paths, options: Options) -> Result<(), Error> {
    let detached = is_detached_start();
    if detached {
        detach()?;
    }
    // SAFETY: as for `detach`: nothing has started a thread yet (no runtime, no log writer),
    // so no other thread can read the environment while it changes.
    let scrubbed = unsafe { super::selfref::scrub_environment(&paths.run_dir) };
    // SAFETY-free but process-wide: from here on every file the daemon creates is private.
    umask(Mode::from_bits_truncate(0o077));
    // Every directory we read from or write to passes the ssh-style check before a config is
    // read (configs name commands that run as us) or a log is opened.
    crate::fsafe::check_paths(paths)?;
    let settings = Settings::load(&paths.settings_file)?;
    // A token file that is missing, loose or malformed refuses the start before anything is
    // bound (State::new loads it again, for the set it keeps).
    if let Some(f) = &options.token_file {
        crate::daemon::tokens::TokenSet::load(f)?;
    }
    // Logging first, so that lock and stale-socket decisions are in the log too.
    let _log = start_logging(paths, &settings, detached, &scrubbed)?;
    let (paths, shared) = socket_paths(paths, &options, &settings);
    let paths = &paths;
    let lock = acquire_lock(paths)?;
    crate::fsafe::remove_stale_aws_configs(&paths.run_dir);
    let listener = write_pid_and_bind(paths, &options, shared.as_ref())?;
    let socket_ino = std::fs::metadata(&paths.socket).map(|m| m.ino()).ok();
    harden_process();

    let capacity = options.capacity.unwrap_or(settings.capacity());
    // Keyrings are per thread: join ours before the runtime's threads exist.
    if let Err(e) = crate::keyring::init() {
        tracing::warn!(error = %e, "keyring sources will not work");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("elhaz-worker")
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the async runtime", e))?;
    let state = Arc::new(State::build(paths.clone(), settings, options)?);
    tracing::info!(
        pid = state.pid,
        version = env!("CARGO_PKG_VERSION"),
        protocol = crate::protocol::PROTOCOL_VERSION,
        socket = %paths.socket.display(),
        capacity,
        "daemon started"
    );
    let result = runtime.block_on(run_until_shutdown(listener, &state, detached));
    // Children still running (a hung credential_process, an MFA command) die with their group.
    crate::sts::kill_children();
    runtime.shutdown_timeout(Duration::from_secs(1));
    cleanup(paths, socket_ino);
    tracing::info!("daemon stopped");
    drop(state);
    // The lock goes with the process: `daemon stop` returns once the lock is free, so
    // releasing it here (before the log flush and the exit) would let `stop` return while
    // this process still exists. The kernel closes the file when the process is gone.
    std::mem::forget(lock);
    result
}

/// Starts the daemon's log files (and stderr, in the foreground), and records which variables
/// elhaz had put into the environment and the daemon ignores.
fn start_logging(
    paths: &Paths,
    settings: &Settings,
    detached: bool,
    scrubbed: &[String],
) -> Result<crate::logging::Guards, Error> {
    let log = crate::logging::init_daemon(
        &paths.log_dir,
        crate::logging::LogOptions {
            keep: settings.log_files(),
            max_bytes_per_day: settings.log_max_bytes_per_day(),
            audit_fail_open: settings.audit_fail_open(),
            also_stderr: !detached,
        },
    )?;
    if !scrubbed.is_empty() {
        tracing::info!(
            variables = scrubbed.join(","),
            "ignoring what elhaz put into the environment it was started from"
        );
    }
    Ok(log)
}

/// The paths with the socket a shared daemon listens on (`[shared] socket`, else the shared
/// default, unless `ELHAZ_SOCKET` named one), and the `[shared]` settings in shared mode.
fn socket_paths(
    paths: &Paths,
    options: &Options,
    settings: &Settings,
) -> (Paths, Option<config::SharedSettings>) {
    let mut paths = paths.clone();
    let shared = options
        .shared
        .then(|| settings.shared.clone().unwrap_or_default());
    if let Some(sh) = &shared
        && !paths.socket_explicit
    {
        paths.socket = sh
            .socket
            .clone()
            .unwrap_or_else(|| paths.shared_socket.clone());
    }
    (paths, shared)
}

/// Writes the pid file, then binds the socket (a stale one removed first) — private, or with
/// the shared mode's socket mode, directory mode and group. A failed bind removes the pid file
/// again.
fn write_pid_and_bind(
    paths: &Paths,
    options: &Options,
    shared: Option<&config::SharedSettings>,
) -> Result<UnixListener, Error> {
    // The pid file before the socket: whoever sees the socket accept can read the pid.
    config::atomic_write(
        &paths.pid_file,
        format!("{}\n", std::process::id()).as_bytes(),
    )?;
    let bound = remove_stale_socket(&paths.socket).and_then(|()| match shared {
        Some(sh) => bind_shared(
            &paths.socket,
            options
                .socket_mode
                .or(sh.socket_mode)
                .unwrap_or(config::DEFAULT_SHARED_SOCKET_MODE),
            options
                .socket_dir_mode
                .or(sh.socket_dir_mode)
                .unwrap_or(config::DEFAULT_SHARED_DIR_MODE),
            options.group.as_deref().or(sh.group.as_deref()),
        ),
        None => bind_private(&paths.socket),
    });
    if bound.is_err() {
        let _ = std::fs::remove_file(&paths.pid_file);
    }
    bound
}

/// Inside the runtime: registers the socket, starts the idle watch, the signal handlers (and
/// the token reload) and the re-warm, reports readiness to a detached start's CLI, and serves
/// until shutdown.
async fn run_until_shutdown(
    listener: UnixListener,
    state: &Arc<State>,
    detached: bool,
) -> Result<(), Error> {
    let listener = tokio::net::UnixListener::from_std(listener)
        .map_err(|e| Error::io("cannot register the socket", e))?;
    if let Some(idle) = state.idle_timeout() {
        tokio::spawn(idle_watch(state.clone(), idle));
    }
    let reload = state.tokens.is_some();
    let signals = shutdown_signals(reload)?;
    if reload {
        tokio::spawn(reload_tokens_on_sighup(state.clone())?);
    }
    rewarm(state);
    if detached {
        signal_ready();
    }
    crate::daemon::run(listener, state.clone(), signals).await;
    Ok(())
}

/// Records the names (never the credentials) of the cached sessions and when each was last
/// used, most recently used first, so the next start can re-warm them (see [`warm_text`]).
pub fn record_warm(state: &State) {
    let entries = state.sessions.warm_entries();
    if entries.is_empty() || !state.settings.rewarm() {
        let _ = std::fs::remove_file(&state.paths.warm_file);
        return;
    }
    if let Some(dir) = state.paths.warm_file.parent() {
        let _ = crate::fsafe::create_dir_mode(dir, 0o700);
    }
    if let Err(e) = config::atomic_write(&state.paths.warm_file, warm_text(&entries).as_bytes()) {
        tracing::warn!(error = %e, "cannot record the cached sessions");
    }
}

/// The warm file: one line per session, most recently used first, `NAME<TAB>UNIX_SECONDS`
/// (when a client last used it).
pub fn warm_text(entries: &[WarmEntry]) -> String {
    let mut text = String::new();
    for e in entries {
        let secs = e
            .last_used
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        text.push_str(&format!("{}\t{secs}\n", e.name));
    }
    text
}

/// Reads a warm file written by [`warm_text`], or by an older elhaz that recorded names only
/// (those count as recently used). Lines that do not parse are skipped.
pub fn parse_warm(text: &str) -> Vec<WarmEntry> {
    text.lines()
        .filter_map(|line| {
            let (name, used) = match line.trim().split_once('\t') {
                Some((n, t)) => (n.trim(), Some(t.trim().parse::<u64>().ok()?)),
                None => (line.trim(), None),
            };
            config::validate_name(name).ok()?;
            Some(WarmEntry {
                name: name.to_string(),
                last_used: used.map(|s| std::time::UNIX_EPOCH + Duration::from_secs(s)),
            })
        })
        .collect()
}

/// Re-warms the sessions recorded at the last shutdown, in the background (most recently used
/// first, at the scheduler's rate; see `Sessions::rewarm`).
fn rewarm(state: &Arc<State>) {
    if !state.settings.rewarm() {
        return;
    }
    let Ok(text) = std::fs::read_to_string(&state.paths.warm_file) else {
        return;
    };
    state.sessions.rewarm(parse_warm(&text));
}

/// The signals that stop the daemon cleanly: every signal whose default action would end the
/// process and that a user or the system sends to ask it to stop. SIGHUP stops too (it does
/// not reload: settings are read at start, so `daemon stop` + start is the reload). SIGPIPE is
/// ignored by the Rust runtime; SIGXFSZ (a file-size rlimit) is caught and ignored, so the
/// write fails with `EFBIG` instead (an audit write then refuses the credential); SIGKILL and
/// SIGSTOP cannot be caught.
pub const STOP_SIGNALS: &[(i32, &str)] = &[
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGPROF, "SIGPROF"),
    (libc::SIGXCPU, "SIGXCPU"),
];

/// Resolves on the first of [`STOP_SIGNALS`]; every one takes the same clean path (cancel,
/// zeroize the cache, remove socket and pid file). With `sighup_reloads` (a daemon with a
/// `--token-file`), SIGHUP is left to [`reload_tokens_on_sighup`] instead.
fn shutdown_signals(sighup_reloads: bool) -> Result<impl std::future::Future<Output = ()>, Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut streams = Vec::with_capacity(STOP_SIGNALS.len());
    for &(sig, name) in STOP_SIGNALS {
        if sighup_reloads && sig == libc::SIGHUP {
            continue;
        }
        let s = signal(SignalKind::from_raw(sig))
            .map_err(|e| Error::io(format!("cannot install the {name} handler"), e))?;
        streams.push((s, name));
    }
    // Handled and never acted on: the write that exceeded the limit fails with EFBIG instead.
    let xfsz = signal(SignalKind::from_raw(libc::SIGXFSZ))
        .map_err(|e| Error::io("cannot install the SIGXFSZ handler", e))?;
    Ok(async move {
        let _xfsz = xfsz;
        let waits = streams.iter_mut().map(|(s, name)| {
            let name: &'static str = name;
            Box::pin(async move {
                s.recv().await;
                name
            })
        });
        let (name, _, _) = futures_util::future::select_all(waits).await;
        tracing::info!(signal = name, "{name} received; stopping");
    })
}

/// A daemon with a `--token-file`: SIGHUP re-reads it. A file that fails to load keeps the
/// old set in force and logs an error naming the file (never a token).
fn reload_tokens_on_sighup(
    state: Arc<State>,
) -> Result<impl std::future::Future<Output = ()>, Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())
        .map_err(|e| Error::io("cannot install the SIGHUP handler", e))?;
    Ok(async move {
        loop {
            tokio::select! {
                () = state.shutdown.cancelled() => return,
                r = hup.recv() => if r.is_none() { return },
            }
            let Some(tokens) = &state.tokens else {
                return;
            };
            match tokens.reload() {
                Ok(n) => tracing::info!(
                    file = %tokens.file().display(),
                    tokens = n,
                    "SIGHUP: token file reloaded"
                ),
                Err(e) => tracing::error!(
                    file = %tokens.file().display(),
                    error = %e,
                    "SIGHUP: cannot reload the token file; the previous tokens stay in force"
                ),
            }
        }
    })
}

async fn idle_watch(state: Arc<State>, idle: Duration) {
    loop {
        let deadline = state.last_activity() + idle;
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = tokio::time::sleep_until(deadline.into()) => {}
        }
        if state.last_activity() + idle <= std::time::Instant::now() {
            tracing::info!(idle_s = idle.as_secs(), "idle timeout reached; exiting");
            state.shutdown.cancel();
            return;
        }
    }
}

/// Removes the socket (only if it is the one we bound) and the pid file.
fn cleanup(paths: &Paths, socket_ino: Option<u64>) {
    let ours = std::fs::symlink_metadata(&paths.socket)
        .ok()
        .is_some_and(|m| Some(m.ino()) == socket_ino);
    if ours {
        let _ = std::fs::remove_file(&paths.socket);
    }
    let _ = std::fs::remove_file(&paths.pid_file);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_file_round_trips_and_old_files_still_read() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let entries = vec![
            WarmEntry {
                name: "b".into(),
                last_used: Some(t),
            },
            WarmEntry {
                name: "a".into(),
                last_used: Some(t - Duration::from_secs(90_000)),
            },
        ];
        let text = warm_text(&entries);
        assert_eq!(text, "b\t1800000000\na\t1799910000\n");
        assert_eq!(parse_warm(&text), entries);
        // An old warm file: names only, MRU first; they count as recently used.
        let old = parse_warm("b\na\n\n../x\n");
        let names: Vec<_> = old.iter().map(|e| (e.name.as_str(), e.last_used)).collect();
        assert_eq!(names, vec![("b", None), ("a", None)]);
        // A damaged time skips the line rather than guessing.
        assert_eq!(parse_warm("a\tsoon\nb\t5\n").len(), 1);
    }
}
