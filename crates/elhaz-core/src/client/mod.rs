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

mod start;
mod terminal;

pub use start::*;
use terminal::strip_controls_in_payload;
pub use terminal::terminal_safe;
