//! The CLI's side of the socket: connect, one request, one reply — blocking `std` I/O only.
//!
//! This is the credential-process hot path, so it builds no async runtime, reads no config
//! file and parses nothing beyond the reply. Starting a missing daemon ([`connect_or_start`])
//! spawns `elhaz daemon start --foreground` with `ELHAZ_DAEMON_DETACH=1`; the daemon forks,
//! and closes its stderr — our pipe — once its socket accepts. Whatever it wrote there before
//! is its own start-up error, shown to the user verbatim.
//!
//! `ELHAZ_NO_DAEMON=1` swaps the socket for an in-process broker (a runtime and the daemon's
//! own handler) for debugging; `ELHAZ_AUTOSTART=0` turns autostart off. This crate knows the
//! broker only as the [`LocalBroker`] trait: the daemon crate implements it and the binary
//! registers its constructor ([`set_in_process_broker`]), so the hot path cannot reach tokio or
//! the AWS SDK even by accident — `elhaz-core` does not depend on them.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::codec;
use crate::error::Error;
use crate::paths::{Paths, lock_is_held, read_pid};
use crate::protocol::{
    ErrorCode, Outcome, PROTOCOL_VERSION, ReplyFrame, Request, RequestFrame, Response, StartReport,
    WireError,
};

/// Environment variable set by the CLI when it spawns a daemon that must detach.
pub const ENV_DETACH: &str = "ELHAZ_DAEMON_DETACH";
/// Environment variable: `0` disables autostart.
pub const ENV_AUTOSTART: &str = "ELHAZ_AUTOSTART";
/// Environment variable: `1` runs the broker in-process instead of using the daemon.
pub const ENV_NO_DAEMON: &str = "ELHAZ_NO_DAEMON";
/// Environment variable: seconds to wait for a reply (default 120; MFA commands and STS retries
/// can take a while).
pub const ENV_CLIENT_TIMEOUT: &str = "ELHAZ_CLIENT_TIMEOUT";

/// How long `daemon start` waits for the socket to accept.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Environment variable: `USER` (name or uid) — use a shared daemon run by that user when no
/// personal daemon runs. Overrides `[client] shared` in `elhaz.toml`; empty or `0` turns it off.
pub const ENV_SHARED: &str = "ELHAZ_SHARED";

/// Environment variable: a delegate's token for a daemon started with `--require-token`; sent
/// with every request (never in argv). Takes precedence over [`ENV_TOKEN_FILE`].
pub const ENV_TOKEN: &str = "ELHAZ_TOKEN";
/// Environment variable: a file whose first line that is neither blank nor a `#` comment is
/// the delegate's token (for a container: a mounted secret).
pub const ENV_TOKEN_FILE: &str = "ELHAZ_TOKEN_FILE";

/// The delegate token from [`ENV_TOKEN`] or [`ENV_TOKEN_FILE`], if either is set (an empty
/// value counts as unset).
pub fn token_from_env() -> Result<Option<crate::protocol::Token>, Error> {
    use zeroize::Zeroizing;
    if let Ok(t) = std::env::var(ENV_TOKEN)
        && !t.trim().is_empty()
    {
        let t = Zeroizing::new(t);
        return Ok(Some(crate::protocol::Token::new(t.trim().to_string())));
    }
    let Some(file) = std::env::var_os(ENV_TOKEN_FILE).filter(|f| !f.is_empty()) else {
        return Ok(None);
    };
    let file = PathBuf::from(file);
    let mut text = Zeroizing::new(String::new());
    std::fs::File::open(&file)
        .and_then(|f| f.take(64 * 1024).read_to_string(&mut text))
        .map_err(|e| {
            Error::io(
                format!("cannot read {ENV_TOKEN_FILE} {}", file.display()),
                e,
            )
        })?;
    let token = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| {
            Error::Insecure(format!(
                "{ENV_TOKEN_FILE} {} holds no token",
                file.display()
            ))
        })?;
    Ok(Some(crate::protocol::Token::new(token.to_string())))
}

/// A connection to a daemon (or an in-process broker).
pub struct Client {
    transport: Transport,
    next_id: u64,
    served: Served,
    /// Sent with every request (`ELHAZ_TOKEN` / `ELHAZ_TOKEN_FILE`).
    token: Option<crate::protocol::Token>,
}

/// Which daemon a [`Client`] talks to, checked before a byte was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// A daemon running as us (our own, personal daemon).
    Personal {
        /// Its socket.
        socket: PathBuf,
    },
    /// A shared daemon, running as the user `[client] shared` / `ELHAZ_SHARED` names.
    Shared {
        /// Its socket.
        socket: PathBuf,
        /// The user it runs as, as configured.
        user: String,
        /// Its uid, from the kernel (`SO_PEERCRED`).
        uid: u32,
    },
    /// The in-process broker (`ELHAZ_NO_DAEMON=1`).
    InProcess,
}

impl std::fmt::Display for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Served::Personal { socket } => write!(f, "your daemon at {}", socket.display()),
            Served::Shared { socket, user, uid } => write!(
                f,
                "the shared daemon of user {user} (uid {uid}) at {}",
                socket.display()
            ),
            Served::InProcess => f.write_str("the in-process broker (ELHAZ_NO_DAEMON=1)"),
        }
    }
}

enum Transport {
    Socket(UnixStream),
    InProcess(Box<dyn LocalBroker>),
}

/// A request handler in this process instead of a daemon behind a socket
/// (`ELHAZ_NO_DAEMON=1`): the daemon crate's handlers on a runtime of their own.
pub trait LocalBroker: Send {
    /// Handles one request as the daemon would for its owner.
    fn call(&mut self, request: Request) -> Result<Response, WireError>;
}

/// Builds the in-process broker for `ELHAZ_NO_DAEMON=1`.
pub type BrokerFactory = fn(&Paths) -> Result<Box<dyn LocalBroker>, Error>;

static IN_PROCESS_BROKER: std::sync::OnceLock<BrokerFactory> = std::sync::OnceLock::new();

/// Registers how to build the in-process broker (the binary does, at start-up, with the daemon
/// crate's). Later registrations are ignored.
pub fn set_in_process_broker(factory: BrokerFactory) {
    let _ = IN_PROCESS_BROKER.set(factory);
}

/// The uid of the process at the other end of `stream`, from the kernel.
fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        getsockopt(stream, PeerCredentials)
            .map(|c| c.uid())
            .map_err(std::io::Error::from)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        nix::unistd::getpeereid(stream)
            .map(|(uid, _)| uid.as_raw())
            .map_err(std::io::Error::from)
    }
}

/// Connects to `socket`; `Ok(None)` when nothing listens there.
fn dial(socket: &Path) -> Result<Option<UnixStream>, Error> {
    match UnixStream::connect(socket) {
        Ok(s) => Ok(Some(s)),
        Err(e) if is_not_running(&e) => Ok(None),
        Err(e) => Err(Error::io(
            format!("cannot connect to {}", socket.display()),
            e,
        )),
    }
}

impl Client {
    /// Connects to the daemon's socket and checks, before sending anything, that the process
    /// listening there runs as us; fails if no daemon is listening or it is someone else's.
    pub fn connect(socket: &Path) -> Result<Client, Error> {
        match Client::connect_as(socket, None)? {
            Some(c) => Ok(c),
            None => Err(Error::NotRunning(format!(
                "no elhaz daemon is listening on {}",
                socket.display()
            ))),
        }
    }

    /// Connects to `socket` and checks the peer: our own euid, or — with `shared` = (user,
    /// uid) — that user's. `Ok(None)` when nothing listens there.
    fn connect_as(socket: &Path, shared: Option<(&str, u32)>) -> Result<Option<Client>, Error> {
        let Some(stream) = dial(socket)? else {
            return Ok(None);
        };
        let uid = peer_uid(&stream).map_err(|e| {
            Error::io(
                format!("cannot identify the peer of {}", socket.display()),
                e,
            )
        })?;
        let me = nix::unistd::geteuid().as_raw();
        let served = match shared {
            _ if uid == me => Served::Personal {
                socket: socket.to_path_buf(),
            },
            Some((user, want)) if uid == want => Served::Shared {
                socket: socket.to_path_buf(),
                user: user.to_string(),
                uid,
            },
            _ => {
                return Err(Error::WrongDaemon {
                    socket: socket.to_path_buf(),
                    uid,
                    expected: match shared {
                        Some((user, want)) => format!("you (uid {me}) or {user} (uid {want})"),
                        None => format!("you (uid {me})"),
                    },
                });
            }
        };
        let secs = std::env::var(ENV_CLIENT_TIMEOUT)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|&s| s > 0)
            .unwrap_or(120);
        let io = |e| {
            Error::io(
                format!("cannot configure the socket {}", socket.display()),
                e,
            )
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(secs)))
            .map_err(io)?;
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .map_err(io)?;
        Ok(Some(Client {
            transport: Transport::Socket(stream),
            next_id: 1,
            served,
            token: token_from_env()?,
        }))
    }

    /// Which daemon this client talks to.
    pub fn served(&self) -> &Served {
        &self.served
    }

    /// The in-process broker registered with [`set_in_process_broker`] (`ELHAZ_NO_DAEMON=1`).
    pub fn in_process(paths: &Paths) -> Result<Client, Error> {
        let factory = IN_PROCESS_BROKER.get().ok_or_else(|| {
            Error::NotRunning(format!(
                "{ENV_NO_DAEMON}=1, but this program has no in-process broker"
            ))
        })?;
        Ok(Client {
            transport: Transport::InProcess(factory(paths)?),
            next_id: 1,
            served: Served::InProcess,
            token: None,
        })
    }

    /// Sends one request and waits for its reply. Error replies become [`Error::Remote`].
    pub fn call(&mut self, request: Request) -> Result<Response, Error> {
        let id = self.next_id;
        self.next_id += 1;
        match &mut self.transport {
            Transport::InProcess(broker) => broker.call(request).map_err(Error::Remote),
            Transport::Socket(stream) => {
                let frame = RequestFrame {
                    protocol: PROTOCOL_VERSION,
                    id,
                    token: self.token.clone(),
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
    let cleaned = strip_controls_in_payload(payload);
    let payload: &[u8] = &cleaned;
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
fn shared_user(settings: Option<&crate::config::Settings>) -> Result<Option<(String, u32)>, Error> {
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
fn shared_sockets(paths: &Paths, settings: Option<&crate::config::Settings>) -> Vec<PathBuf> {
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

/// Text from a daemon made safe for a terminal: control characters (C0 but tab and newline,
/// DEL, C1 — escape sequences, bells, carriage returns) removed. Every string of every reply
/// passes through this in [`decode_reply`], so error messages, MFA serials and notes the CLI
/// prints can never drive the user's terminal.
pub fn terminal_safe(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() && c != '\n' && c != '\t';
    if s.contains(bad) {
        std::borrow::Cow::Owned(s.chars().filter(|c| !bad(*c)).collect())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// A reply payload with [`terminal_safe`] applied to every string in it. JSON can carry a
/// control character only as a `\u` escape, or raw for DEL and C1 (U+0080–U+009F, UTF-8
/// `C2 80`–`C2 9F`): a payload with none of those is returned as it is, without a second parse
/// (the credential-process hot path).
fn strip_controls_in_payload(payload: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let suspicious = payload.windows(2).any(|w| {
        (w[0] == b'\\' && w[1] == b'u') || (w[0] == 0xC2 && (0x80..=0x9F).contains(&w[1]))
    }) || payload.contains(&0x7F);
    if !suspicious {
        return std::borrow::Cow::Borrowed(payload);
    }
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) => {
                if let std::borrow::Cow::Owned(clean) = terminal_safe(s) {
                    *s = clean;
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            serde_json::Value::Object(o) => o.values_mut().for_each(walk),
            _ => {}
        }
    }
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(mut v) => {
            walk(&mut v);
            // Re-encoding a value we just parsed cannot fail.
            std::borrow::Cow::Owned(serde_json::to_vec(&v).unwrap_or_default())
        }
        Err(_) => std::borrow::Cow::Borrowed(payload),
    }
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
