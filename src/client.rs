//! The CLI's side of the socket: connect, one request, one reply — blocking `std` I/O only.
//!
//! This is the credential-process hot path, so it builds no async runtime, reads no config
//! file and parses nothing beyond the reply. Starting a missing daemon ([`connect_or_start`])
//! spawns `elhaz daemon start --foreground` with `ELHAZ_DAEMON_DETACH=1`; the daemon forks,
//! and closes its stderr — our pipe — once its socket accepts. Whatever it wrote there before
//! is its own start-up error, shown to the user verbatim.
//!
//! `ELHAZ_NO_DAEMON=1` swaps the socket for an in-process broker (a runtime and the daemon's
//! own handler) for debugging; `ELHAZ_AUTOSTART=0` turns autostart off.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec;
use crate::error::Error;
use crate::paths::Paths;
use crate::protocol::{
    ErrorCode, Outcome, PROTOCOL_VERSION, ReplyFrame, Request, RequestFrame, Response, WireError,
};

/// Environment variable: `0` disables autostart.
pub const ENV_AUTOSTART: &str = "ELHAZ_AUTOSTART";
/// Environment variable: `1` runs the broker in-process instead of using the daemon.
pub const ENV_NO_DAEMON: &str = "ELHAZ_NO_DAEMON";
/// Environment variable: seconds to wait for a reply (default 120; MFA commands and STS retries
/// can take a while).
pub const ENV_CLIENT_TIMEOUT: &str = "ELHAZ_CLIENT_TIMEOUT";

/// How long `daemon start` waits for the socket to accept.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A connection to a daemon (or an in-process broker).
pub struct Client {
    transport: Transport,
    next_id: u64,
}

enum Transport {
    Socket(UnixStream),
    InProcess(Box<InProcess>),
}

struct InProcess {
    runtime: tokio::runtime::Runtime,
    state: Arc<crate::daemon::State>,
}

impl Client {
    /// Connects to the daemon's socket; fails if no daemon is listening.
    pub fn connect(socket: &Path) -> std::io::Result<Client> {
        let stream = UnixStream::connect(socket)?;
        let secs = std::env::var(ENV_CLIENT_TIMEOUT)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|&s| s > 0)
            .unwrap_or(120);
        stream.set_read_timeout(Some(Duration::from_secs(secs)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(Client {
            transport: Transport::Socket(stream),
            next_id: 1,
        })
    }

    /// An in-process broker over the same handlers the daemon runs.
    pub fn in_process(paths: &Paths) -> Result<Client, Error> {
        use crate::config::{Settings, Store};
        use crate::daemon::sessions::Sessions;
        use crate::daemon::state::{Options, State};
        let settings = Settings::load(&paths.settings_file)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot start the async runtime", e))?;
        let _ = crate::keyring::init();
        let fetcher = crate::sts::LazySts::new();
        let sessions = Sessions::new(
            Store::new(paths.configs_dir.clone()),
            settings.capacity(),
            Arc::new(fetcher),
            Duration::from_secs(settings.refresh_window()),
        );
        let state = Arc::new(State::new(
            paths.clone(),
            settings,
            Options::default(),
            sessions,
        )?);
        Ok(Client {
            transport: Transport::InProcess(Box::new(InProcess { runtime, state })),
            next_id: 1,
        })
    }

    /// Sends one request and waits for its reply. Error replies become [`Error::Remote`].
    pub fn call(&mut self, request: Request) -> Result<Response, Error> {
        let id = self.next_id;
        self.next_id += 1;
        match &mut self.transport {
            Transport::InProcess(p) => {
                let peer = crate::daemon::handler::Peer::new(
                    p.state.uid,
                    Some(std::process::id() as i32),
                    crate::daemon::policy::Access::Owner,
                );
                let state = p.state.clone();
                p.runtime
                    .block_on(crate::daemon::handler::handle(&state, peer, request))
                    .map_err(Error::Remote)
            }
            Transport::Socket(stream) => {
                let frame = RequestFrame {
                    protocol: PROTOCOL_VERSION,
                    id,
                    request,
                };
                let io =
                    |e: std::io::Error| Error::io("lost the connection to the elhaz daemon", e);
                if let Err(e) = codec::write_frame(stream, &codec::to_payload(&frame)) {
                    // A daemon that refuses a peer (another uid, a connection limit) replies
                    // and closes without reading; if it was quicker than us, our write fails
                    // but its reply is still readable and says more than "broken pipe".
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                    ) && let Ok(payload) = codec::read_frame(stream)
                    {
                        return decode_reply(&payload, id);
                    }
                    return Err(io(e));
                }
                let payload = codec::read_frame(stream).map_err(io)?;
                match decode_reply(&payload, id)? {
                    Response::Sessions {
                        mut sessions,
                        more: true,
                    } => {
                        // A long list arrives as several frames of one snapshot; bounded so a
                        // misbehaving daemon cannot keep us reading forever.
                        for _ in 0..MAX_LIST_FRAMES {
                            let payload = codec::read_frame(stream).map_err(io)?;
                            let Response::Sessions {
                                sessions: next,
                                more,
                            } = decode_reply(&payload, id)?
                            else {
                                return Err(Error::Protocol(
                                    "the daemon interrupted a session list with another reply"
                                        .into(),
                                ));
                            };
                            sessions.extend(next);
                            if !more {
                                return Ok(Response::Sessions {
                                    sessions,
                                    more: false,
                                });
                            }
                        }
                        Err(Error::Protocol(format!(
                            "the daemon's session list ran past {MAX_LIST_FRAMES} frames"
                        )))
                    }
                    other => Ok(other),
                }
            }
        }
    }
}

/// Most frames one `list` reply may span (≈ 200 sessions a frame: room for millions).
const MAX_LIST_FRAMES: usize = 10_000;

fn decode_reply(payload: &[u8], id: u64) -> Result<Response, Error> {
    let reply: ReplyFrame = match codec::from_payload(payload) {
        Ok(r) => r,
        Err(e) => {
            // A daemon of another protocol version may send replies we cannot parse; its
            // version field still tells the user what to do.
            let theirs = codec::from_payload::<crate::protocol::Probe>(payload)
                .map(|p| p.protocol)
                .ok();
            return Err(match theirs {
                Some(v) if v != PROTOCOL_VERSION => Error::Remote(mismatch(v)),
                _ => Error::Protocol(format!("cannot decode the daemon's reply: {e}")),
            });
        }
    };
    if reply.protocol != PROTOCOL_VERSION {
        return Err(Error::Remote(mismatch(reply.protocol)));
    }
    match reply.outcome {
        Outcome::Ok(r) if reply.id == id => Ok(r),
        Outcome::Ok(_) => Err(Error::Protocol(format!(
            "reply id {} does not match request id {id}",
            reply.id
        ))),
        Outcome::Error(e) => Err(Error::Remote(e)),
    }
}

fn mismatch(daemon: u32) -> WireError {
    let mut e = WireError::new(
        ErrorCode::ProtocolMismatch,
        format!(
            "daemon speaks protocol {daemon}, this CLI speaks {PROTOCOL_VERSION}: run \
             `elhaz daemon stop` (the next command starts a matching daemon)"
        ),
    );
    e.protocol = Some(daemon);
    e
}

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
    start_daemon(paths, &paths.socket, &[])?;
    Client::connect(&paths.socket)
        .map_err(|e| Error::io(format!("cannot connect to {}", paths.socket.display()), e))
}

/// Connects to a running daemon without starting one; `Ok(None)` when none runs. Without a
/// personal daemon (and without `ELHAZ_SOCKET`), a shared daemon's socket is used if one
/// answers — and then nothing is ever autostarted.
pub fn connect_existing(paths: &Paths) -> Result<Option<Client>, Error> {
    match Client::connect(&paths.socket) {
        Ok(c) => return Ok(Some(c)),
        Err(e) if !is_not_running(&e) => {
            return Err(Error::io(
                format!("cannot connect to {}", paths.socket.display()),
                e,
            ));
        }
        Err(_) => {}
    }
    if paths.socket_explicit {
        return Ok(None);
    }
    for shared in shared_sockets(paths) {
        if shared == paths.socket {
            continue;
        }
        match Client::connect(&shared) {
            Ok(c) => return Ok(Some(c)),
            Err(e) if is_not_running(&e) || e.kind() == std::io::ErrorKind::PermissionDenied => {}
            Err(e) => {
                return Err(Error::io(
                    format!("cannot connect to {}", shared.display()),
                    e,
                ));
            }
        }
    }
    Ok(None)
}

/// Where a shared daemon may listen: `ELHAZ_SHARED_SOCKET` / the default, and — for the
/// daemon's own user — `[shared] socket` of its `elhaz.toml`.
fn shared_sockets(paths: &Paths) -> Vec<std::path::PathBuf> {
    let mut v = vec![paths.shared_socket.clone()];
    if let Ok(settings) = crate::config::Settings::load(&paths.settings_file)
        && let Some(s) = settings.shared.and_then(|s| s.socket)
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
    let mut c = match Client::connect(socket) {
        Ok(c) => c,
        Err(e) if is_not_running(&e) => return Ok(None),
        Err(e) => {
            return Err(Error::io(
                format!("cannot connect to {}", socket.display()),
                e,
            ));
        }
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
    // The daemon scrubs these itself too; removing them here keeps them out of its
    // /proc/PID/environ as well.
    let vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    for k in crate::daemon::selfref::to_scrub(
        vars.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &paths.run_dir,
    ) {
        cmd.env_remove(k);
    }
    cmd.args(["daemon", "start", "--foreground"])
        .args(extra)
        .env(crate::daemon::lifecycle::ENV_DETACH, "1")
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

    // The daemon may have lost a start race to another daemon that is still binding: while
    // some daemon holds the lock, wait for the socket to accept.
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        // Readiness is a bare connect, not a request: a `--once` daemon must keep its one
        // request for the caller.
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            let pid = crate::daemon::lifecycle::read_pid(paths).unwrap_or(0);
            return Ok(if text.contains("already running") {
                Started::Already(pid)
            } else {
                Started::New(pid)
            });
        }
        if !crate::daemon::lifecycle::lock_is_held(paths) || Instant::now() >= deadline {
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
