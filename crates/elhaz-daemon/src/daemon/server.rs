//! The accept loop and the per-connection tasks.
//!
//! Every connection gets its own task, so a slow or dead client only ever holds its own task
//! and one slot of the connection cap. Reading a whole frame is bounded by
//! [`FRAME_READ_TIMEOUT`] (a slowloris client is dropped), writing a reply by
//! [`WRITE_TIMEOUT`] (a client that never reads is dropped), and an idle keep-alive connection
//! by [`IDLE_TIMEOUT`].
//!
//! **Admission and fairness.** The peer check runs right after `accept`, before any byte is
//! read and before a slot is taken: the kernel's peer credentials (SO_PEERCRED / getpeereid,
//! and the peer's real groups, see [`crate::daemon::policy`]) must be the daemon's own uid or
//! match a shared-mode allow rule. Anything else is refused (logged with uid and pid, rate
//! limited) and closed — fail closed, even when the socket's mode was loosened by hand. Then,
//! in this order:
//! 1. the peer's own cap (`max_connections_per_client`; in shared mode every non-owner uid
//!    also has `[shared] max_connections_per_peer`, default 16) — a peer over it gets `busy`;
//! 2. a global slot: `max_connections` minus [`OWNER_RESERVED`] slots are open to everyone,
//!    the reserved ones only to the owner, so no other uid can ever take the owner's last
//!    slots;
//! 3. when no slot is free, the new connection waits, and the connection that has been *idle*
//!    longest — silent since connecting for [`EVICT_MIN_SILENT`] (250 ms), or between
//!    requests for [`EVICT_MIN_IDLE`] (750 ms) — and holds a slot this peer may use, is
//!    closed to make room. So silent or idle connections — even of the owner's own uid —
//!    make a client wait well under a second; a connection with a request in flight is never
//!    closed. (Readiness is confirmed with `MSG_PEEK`: tokio may report a fresh socket
//!    readable before any byte arrived.) Only waiters that have sent something compete for
//!    slots; a waiter silent for [`WAIT_SILENT_LIMIT`] is closed.
//!    At most [`MAX_WAITING`] connections wait like this; beyond them new clients wait in
//!    the kernel's backlog (they cost no memory there). Clients that keep a connection open
//!    between requests must therefore expect it to be closed when the daemon is full; elhaz's
//!    own CLI opens one connection per command.
//!
//! Slots are RAII guards held by the connection task: when the task ends — normally, by a
//! timeout, by eviction, or by a panic unwinding — the slot goes back. Non-owner peers of a
//! shared daemon also have a request rate (`[shared] peer_rate_limit`), answered with
//! `rate_limited` beyond it.
//!
//! Shutdown: [`run`] returns when its `shutdown` future resolves or the state's cancellation
//! token fires (a `stop` request, idle timeout, `--once`). It then cancels every connection
//! and refresh task, waits (bounded) for connection tasks to finish, and drops all sessions.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::bytes::Bytes;
use tokio_util::codec::{Framed, LengthDelimitedCodecError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::codec;
use crate::daemon::State;
use crate::daemon::handler::{self, Peer};
use crate::daemon::policy::ConnGuard;
use crate::protocol::{
    ErrorCode, MAX_FRAME_LEN, Outcome, PROTOCOL_VERSION, ReplyFrame, Response, SessionInfo,
    WireError,
};

/// Longest time a client may take to send one complete frame.
pub const FRAME_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time writing one reply may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// An open connection with no request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long shutdown waits for connection tasks to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Connection slots only the owner may take (at most half of `max_connections`).
pub const OWNER_RESERVED: usize = 16;
/// When every slot is taken, a connection that has sent nothing yet for this long may be
/// closed to make room for a waiting one (a real client sends its request at once).
pub const EVICT_MIN_SILENT: Duration = Duration::from_millis(250);
/// When every slot is taken, a connection idle between requests for this long may be closed
/// to make room for a waiting one (longer than for a silent one: a busy client's gap between
/// two requests can be long on a loaded machine).
pub const EVICT_MIN_IDLE: Duration = Duration::from_millis(750);
/// A connection waiting for a slot that has sent nothing for this long is closed.
pub const WAIT_SILENT_LIMIT: Duration = Duration::from_secs(1);
/// How often a waiting connection looks for an idle one to evict.
pub const EVICT_POLL: Duration = Duration::from_millis(50);
/// Most connections waiting for a slot at once (beyond: the kernel's backlog).
pub const MAX_WAITING: usize = 256;
/// How long a refusal reply may take to write.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most refusal replies being written at once (beyond: closed without a reply).
const MAX_REFUSING: usize = 64;

/// The connection slots: open, owner-reserved, and who is idle.
#[derive(Debug)]
struct Slots {
    open: Arc<Semaphore>,
    reserved: Arc<Semaphore>,
    waiting: Arc<Semaphore>,
    refusing: Arc<Semaphore>,
    /// Connections waiting for a request, oldest first.
    idle: Mutex<BTreeMap<u64, IdleEntry>>,
    seq: AtomicU64,
}

#[derive(Debug)]
struct IdleEntry {
    reserved: bool,
    /// No request received yet on this connection.
    silent: bool,
    since: tokio::time::Instant,
    evict: CancellationToken,
}

/// A connection's slot: the global permit and the peer's own. Dropping it returns both.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    reserved: bool,
    _peer: ConnGuard,
}

/// Registration as idle (evictable); removed on drop.
struct IdleMark<'a> {
    slots: &'a Slots,
    key: u64,
}

impl Drop for IdleMark<'_> {
    fn drop(&mut self) {
        self.slots
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

impl Slots {
    fn new(max: usize) -> Slots {
        let reserved = OWNER_RESERVED.min(max / 2);
        Slots {
            open: Arc::new(Semaphore::new(max - reserved)),
            reserved: Arc::new(Semaphore::new(reserved)),
            waiting: Arc::new(Semaphore::new(MAX_WAITING)),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
            idle: Mutex::new(BTreeMap::new()),
            seq: AtomicU64::new(0),
        }
    }

    /// A free slot now, if any: open first, then (owner only) reserved.
    fn try_take(&self, owner: bool) -> Option<(OwnedSemaphorePermit, bool)> {
        if let Ok(p) = self.open.clone().try_acquire_owned() {
            return Some((p, false));
        }
        if owner && let Ok(p) = self.reserved.clone().try_acquire_owned() {
            return Some((p, true));
        }
        None
    }

    /// Waits for a slot.
    async fn take(&self, owner: bool) -> Option<(OwnedSemaphorePermit, bool)> {
        if owner {
            tokio::select! {
                p = self.open.clone().acquire_owned() => p.ok().map(|p| (p, false)),
                p = self.reserved.clone().acquire_owned() => p.ok().map(|p| (p, true)),
            }
        } else {
            self.open
                .clone()
                .acquire_owned()
                .await
                .ok()
                .map(|p| (p, false))
        }
    }

    /// Closes the longest-idle connection whose slot `owner` (or not) may use.
    fn evict(&self, owner: bool) -> bool {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // Oldest first (keys are in marking order): the first usable one idle long enough.
        let key = idle
            .iter()
            .find(|(_, e)| {
                let min = if e.silent {
                    EVICT_MIN_SILENT
                } else {
                    EVICT_MIN_IDLE
                };
                (owner || !e.reserved) && e.since.elapsed() >= min
            })
            .map(|(k, _)| *k);
        match key.and_then(|k| idle.remove(&k)) {
            Some(e) => {
                e.evict.cancel();
                true
            }
            None => false,
        }
    }

    fn mark_idle<'a>(
        &'a self,
        slot: &Slot,
        silent: bool,
        evict: &CancellationToken,
    ) -> IdleMark<'a> {
        let key = self.seq.fetch_add(1, Ordering::Relaxed);
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).insert(
            key,
            IdleEntry {
                reserved: slot.reserved,
                silent,
                since: tokio::time::Instant::now(),
                evict: evict.clone(),
            },
        );
        IdleMark { slots: self, key }
    }
}

/// Serves `listener` until `shutdown` resolves or `state.shutdown` is cancelled.
pub async fn run(listener: UnixListener, state: Arc<State>, shutdown: impl Future<Output = ()>) {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Slots::new(state.settings.max_connections()));
    let cancel = state.shutdown.clone();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    crate::logging::denial(|| tracing::warn!(error = %e, "accept failed"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (peer, conn) = match check_peer(&stream, &state) {
            Ok(p) => p,
            Err(err) => {
                refuse(&tracker, &slots, stream, err);
                continue;
            }
        };
        let owner = peer.access == handler::Access::Owner;
        if let Some((permit, reserved)) = slots.try_take(owner) {
            let slot = Slot {
                _permit: permit,
                reserved,
                _peer: conn,
            };
            let (state, slots) = (state.clone(), slots.clone());
            tracker
                .spawn(async move { serve_connection(stream, peer, slot, &state, &slots).await });
            continue;
        }
        // Full: wait for a slot, closing idle connections to make room. Beyond MAX_WAITING
        // waiters, new clients wait in the kernel's backlog.
        let waiting = tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = cancel.cancelled() => break,
            p = slots.waiting.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed; treat as shutdown
            },
        };
        let (state, slots) = (state.clone(), slots.clone());
        tracker.spawn(async move {
            let taken = wait_for_slot(&stream, &slots, owner, &state.shutdown).await;
            drop(waiting);
            if let Some((permit, reserved)) = taken {
                let slot = Slot {
                    _permit: permit,
                    reserved,
                    _peer: conn,
                };
                serve_connection(stream, peer, slot, &state, &slots).await;
            }
        });
    }
    tracing::info!("shutting down");
    state.shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; abandoning them");
    }
    crate::logging::flush_denials();
    crate::daemon::lifecycle::record_warm(&state);
    state.sessions.clear();
}

/// Waits for a slot for `stream`, evicting (every [`EVICT_POLL`]) the longest-idle connection
/// that has been silent for [`EVICT_MIN_SILENT`] or idle for [`EVICT_MIN_IDLE`]. Only a
/// waiter that has sent something competes for slots: a silent one just waits for its first
/// byte, and is closed after [`WAIT_SILENT_LIMIT`] (a real client sends its request as soon
/// as it connects), so silent connections cannot crowd the waiting room. `None`: closed or
/// shutdown.
async fn wait_for_slot(
    stream: &UnixStream,
    slots: &Slots,
    owner: bool,
    cancel: &CancellationToken,
) -> Option<(OwnedSemaphorePermit, bool)> {
    let arrived = tokio::time::Instant::now();
    loop {
        match peek(stream) {
            Peek::Closed => return None,
            Peek::Silent => {
                if arrived.elapsed() >= WAIT_SILENT_LIMIT {
                    return None;
                }
                tokio::select! {
                    () = cancel.cancelled() => return None,
                    _ = tokio::time::timeout(EVICT_POLL, data_ready(stream)) => {}
                }
                continue;
            }
            Peek::Data => {}
        }
        if let Some(t) = slots.try_take(owner) {
            return Some(t);
        }
        slots.evict(owner);
        tokio::select! {
            () = cancel.cancelled() => return None,
            r = tokio::time::timeout(EVICT_POLL, slots.take(owner)) => {
                if let Ok(Some(t)) = r {
                    return Some(t);
                }
            }
        }
    }
}

/// What a non-blocking `MSG_PEEK` says about a connection.
enum Peek {
    Data,
    Silent,
    Closed,
}

fn peek(stream: &UnixStream) -> Peek {
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    match recv(
        stream.as_raw_fd(),
        &mut byte,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(0) => Peek::Closed,
        Ok(_) => Peek::Data,
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => Peek::Silent,
        Err(_) => Peek::Closed,
    }
}

/// Writes `err` to a refused connection and closes it, in a task bounded by
/// [`MAX_REFUSING`]: beyond that, the connection is closed without a reply.
fn refuse(tracker: &TaskTracker, slots: &Slots, stream: UnixStream, err: WireError) {
    let Ok(permit) = slots.refusing.clone().try_acquire_owned() else {
        return;
    };
    tracker.spawn(async move {
        let mut framed = Framed::new(stream, codec::codec());
        let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, framed.send(error_reply(0, err))).await;
        drop(permit);
    });
}

/// Admits the peer by its kernel-reported credentials and takes its per-peer slot, or says
/// why not.
fn check_peer(stream: &UnixStream, state: &State) -> Result<(Peer, ConnGuard), WireError> {
    use std::os::fd::AsFd;
    let cred = stream.peer_cred().map_err(|e| {
        WireError::new(
            ErrorCode::PermissionDenied,
            format!("cannot read peer credentials: {e}"),
        )
    })?;
    let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
    // The groups are needed (and read) only for a non-owner of a daemon with allow rules.
    let groups = if uid != state.policy.owner() && state.policy.has_rules() {
        crate::daemon::policy::peer_groups(stream.as_fd(), uid, gid)
    } else {
        Vec::new()
    };
    let Some(access) = state.policy.admit(uid, &groups) else {
        crate::logging::denial(|| {
            tracing::warn!(
                peer_uid = uid,
                peer_pid = pid.unwrap_or(-1),
                "refused connection from another uid"
            );
        });
        return Err(WireError::new(
            ErrorCode::PermissionDenied,
            format!("permission denied: this daemon does not serve uid {uid}"),
        ));
    };
    let Some(conn) = state.policy.connect(uid) else {
        crate::logging::denial(|| {
            tracing::warn!(
                peer_uid = uid,
                "refused connection: per-client connection limit reached"
            );
        });
        return Err(WireError::new(
            ErrorCode::Busy,
            format!(
                "too many connections from uid {uid} (max_connections_per_client / \
                 shared.max_connections_per_peer)"
            ),
        ));
    };
    Ok((Peer::new(uid, pid, access), conn))
}

async fn serve_connection(
    stream: UnixStream,
    peer: Peer,
    slot: Slot,
    state: &Arc<State>,
    slots: &Slots,
) {
    let mut framed = Framed::new(stream, codec::codec());
    let cancel = state.shutdown.clone();
    let evict = CancellationToken::new();
    let connected = tokio::time::Instant::now();
    let mut first = true;
    loop {
        // Waiting for a request's first byte, the connection is idle and may be evicted.
        // Between requests it may idle for IDLE_TIMEOUT; the first frame must arrive whole
        // within FRAME_READ_TIMEOUT of connecting, a later one within FRAME_READ_TIMEOUT of
        // its first byte.
        let frame_deadline = if framed.read_buffer().is_empty() {
            let idle_limit = if first {
                FRAME_READ_TIMEOUT
            } else {
                IDLE_TIMEOUT
            };
            let mark = slots.mark_idle(&slot, first, &evict);
            let idle = tokio::select! {
                () = cancel.cancelled() => return,
                () = evict.cancelled() => {
                    tracing::debug!(peer_pid = peer.pid.unwrap_or(-1), "closing an idle connection to make room");
                    return;
                }
                r = tokio::time::timeout(idle_limit, data_ready(framed.get_ref())) => r,
            };
            drop(mark);
            if !matches!(idle, Ok(Ok(()))) {
                return;
            }
            if first {
                connected + FRAME_READ_TIMEOUT
            } else {
                tokio::time::Instant::now() + FRAME_READ_TIMEOUT
            }
        } else {
            tokio::time::Instant::now() + FRAME_READ_TIMEOUT
        };
        first = false;
        let next = tokio::select! {
            () = cancel.cancelled() => return,
            r = tokio::time::timeout_at(frame_deadline, framed.next()) => r,
        };
        let bytes = match next {
            Err(_) => {
                tracing::debug!(
                    peer_pid = peer.pid.unwrap_or(-1),
                    "closing a connection that sent no frame in time"
                );
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(e))) => {
                let too_large = e
                    .get_ref()
                    .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>());
                if too_large {
                    crate::logging::denial(|| {
                        tracing::warn!(
                            peer_pid = peer.pid.unwrap_or(-1),
                            "refused an oversized frame"
                        );
                    });
                    let err = WireError::new(
                        ErrorCode::FrameTooLarge,
                        format!(
                            "frame exceeds the {}-byte limit",
                            crate::protocol::MAX_FRAME_LEN
                        ),
                    );
                    let _ =
                        tokio::time::timeout(WRITE_TIMEOUT, framed.send(error_reply(0, err))).await;
                }
                return;
            }
            Ok(Some(Ok(bytes))) => bytes,
        };
        let (frames, after) = if state.policy.take_peer_token(peer.uid) {
            handle_frame(state, peer.clone(), &bytes).await
        } else {
            let err = WireError::new(
                ErrorCode::RateLimited,
                format!(
                    "uid {} is over its request rate (shared.peer_rate_limit); retry shortly",
                    peer.uid
                ),
            );
            (vec![error_reply(0, err)], After::default())
        };
        let sent = tokio::time::timeout(WRITE_TIMEOUT, send_all(&mut framed, frames)).await;
        if after.stop || state.options.once {
            state.shutdown.cancel();
            return;
        }
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
    }
}

/// Writes a reply's frames with one flush at the end.
async fn send_all(
    framed: &mut Framed<UnixStream, tokio_util::codec::LengthDelimitedCodec>,
    frames: Vec<Bytes>,
) -> std::io::Result<()> {
    for f in frames {
        framed.feed(f).await?;
    }
    SinkExt::<Bytes>::flush(framed).await
}

/// Resolves when the peer has sent a byte (or closed). Readiness alone is not enough: tokio
/// may report a fresh socket readable before any data arrived, and a connection must stay
/// marked idle (evictable) until it really sends something. A `MSG_PEEK` tells.
async fn data_ready(stream: &UnixStream) -> std::io::Result<()> {
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::AsRawFd;
    loop {
        stream.readable().await?;
        let mut byte = [0u8; 1];
        let peeked = stream.try_io(tokio::io::Interest::READABLE, || {
            recv(
                stream.as_raw_fd(),
                &mut byte,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
            )
            .map_err(std::io::Error::from)
        });
        match peeked {
            Ok(_) => return Ok(()), // a byte, or EOF (0)
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What the connection does after writing a reply.
#[derive(Debug, Default)]
struct After {
    stop: bool,
}

async fn handle_frame(state: &Arc<State>, peer: Peer, bytes: &[u8]) -> (Vec<Bytes>, After) {
    let frame = match crate::protocol::decode_request(bytes) {
        Ok(f) => f,
        Err(r) => return (vec![error_reply(r.id, r.error)], After::default()),
    };
    state.touch();
    let op = frame.request.op();
    let peer = match handler::authorize(state, peer, frame.token.as_ref()) {
        Ok(p) => p,
        Err(e) => return (vec![error_reply(frame.id, e)], After::default()),
    };
    let outcome = match handler::handle(state, peer, frame.request).await {
        Ok(r) => Outcome::Ok(r),
        Err(e) => {
            tracing::debug!(op, code = e.code.as_str(), "request failed");
            Outcome::Error(e)
        }
    };
    // Only a stop that the handler accepted stops the daemon (a refused one must not).
    let after = After {
        stop: matches!(outcome, Outcome::Ok(Response::Stopping { .. })),
    };
    state.touch();
    (encode_reply(frame.id, outcome), after)
}

/// Encodes a reply as frames that each fit in [`MAX_FRAME_LEN`]. A `sessions` reply is split
/// into as many frames as it needs (all but the last marked `more`); any other reply that would
/// not fit becomes a typed `frame_too_large` error naming the cap, so the client always gets an
/// answer rather than a dropped connection.
pub fn encode_reply(id: u64, outcome: Outcome) -> Vec<Bytes> {
    match outcome {
        Outcome::Ok(Response::Sessions { sessions, .. }) => split_sessions(id, sessions),
        other => {
            let payload = codec::to_payload(&ReplyFrame {
                protocol: PROTOCOL_VERSION,
                id,
                outcome: other,
            });
            if payload.len() <= MAX_FRAME_LEN {
                vec![Bytes::from(payload)]
            } else {
                vec![reply_too_large(id, payload.len())]
            }
        }
    }
}

fn reply_too_large(id: u64, len: usize) -> Bytes {
    tracing::warn!(
        bytes = len,
        "a reply exceeded the frame cap; sent an error instead"
    );
    error_reply(
        id,
        WireError::new(
            ErrorCode::FrameTooLarge,
            format!(
                "the reply ({len} bytes) exceeds the protocol's {MAX_FRAME_LEN}-byte frame cap"
            ),
        ),
    )
}

/// Greedy split of one snapshot: each frame holds as many sessions as fit under the cap.
fn split_sessions(id: u64, sessions: Vec<SessionInfo>) -> Vec<Bytes> {
    let frame = |sessions: Vec<SessionInfo>, more: bool| {
        codec::to_payload(&ReplyFrame {
            protocol: PROTOCOL_VERSION,
            id,
            outcome: Outcome::Ok(Response::Sessions { sessions, more }),
        })
    };
    // The envelope's size with `more: true` (the larger of the two); each session adds its
    // own JSON plus one comma.
    let envelope = frame(Vec::new(), true).len();
    let mut frames = Vec::new();
    let mut chunk = Vec::new();
    let mut size = envelope;
    for s in sessions {
        let len = codec::to_payload(&s).len() + 1;
        if envelope + len > MAX_FRAME_LEN {
            // One session alone cannot fit (not reachable with validated names and capped
            // messages, but never send a frame the client would refuse).
            return vec![reply_too_large(id, envelope + len)];
        }
        if size + len > MAX_FRAME_LEN {
            frames.push(Bytes::from(frame(std::mem::take(&mut chunk), true)));
            size = envelope;
        }
        size += len;
        chunk.push(s);
    }
    frames.push(Bytes::from(frame(chunk, false)));
    frames
}

fn error_reply(id: u64, err: WireError) -> Bytes {
    Bytes::from(codec::to_payload(&ReplyFrame {
        protocol: PROTOCOL_VERSION,
        id,
        outcome: Outcome::Error(err),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(i: usize) -> SessionInfo {
        SessionInfo {
            name: format!("session-{i:05}"),
            state: crate::protocol::SessionState::Fresh,
            source: "default".into(),
            expiration: Some("2026-01-01T13:00:00Z".into()),
            next_refresh: Some("2026-01-01T12:40:00Z".into()),
            last_error: None,
            hits: i as u64,
            sts_calls: 1,
            ..SessionInfo::default()
        }
    }

    fn decode(frame: &Bytes) -> ReplyFrame {
        codec::from_payload(frame).expect("our own frames decode")
    }

    #[test]
    fn a_long_list_is_split_into_frames_under_the_cap() {
        let all: Vec<SessionInfo> = (0..5000).map(info).collect();
        let frames = encode_reply(
            9,
            Outcome::Ok(Response::Sessions {
                sessions: all.clone(),
                more: false,
            }),
        );
        assert!(frames.len() > 10, "{} frames", frames.len());
        let mut joined = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            assert!(f.len() <= MAX_FRAME_LEN, "frame {i} has {} bytes", f.len());
            let reply = decode(f);
            assert_eq!(reply.id, 9);
            let Outcome::Ok(Response::Sessions { sessions, more }) = reply.outcome else {
                panic!("frame {i} is not a sessions reply");
            };
            assert_eq!(
                more,
                i + 1 < frames.len(),
                "only the last frame ends the list"
            );
            joined.extend(sessions);
        }
        assert_eq!(joined, all, "same sessions, same order");
    }

    #[test]
    fn short_and_empty_lists_are_one_frame() {
        for n in [0, 1, 50] {
            let frames = encode_reply(
                1,
                Outcome::Ok(Response::Sessions {
                    sessions: (0..n).map(info).collect(),
                    more: false,
                }),
            );
            assert_eq!(frames.len(), 1);
        }
    }

    #[test]
    fn a_reply_that_cannot_fit_is_a_typed_error() {
        let mut huge = info(1);
        huge.warning = Some("w".repeat(MAX_FRAME_LEN));
        for outcome in [
            Outcome::Ok(Response::Added {
                session: huge.clone(),
            }),
            Outcome::Ok(Response::Sessions {
                sessions: vec![info(0), huge],
                more: false,
            }),
        ] {
            let frames = encode_reply(4, outcome);
            assert_eq!(frames.len(), 1);
            let reply = decode(&frames[0]);
            assert_eq!(reply.id, 4);
            let Outcome::Error(e) = reply.outcome else {
                panic!("not an error reply");
            };
            assert_eq!(e.code, ErrorCode::FrameTooLarge);
            assert!(e.message.contains("65536-byte frame cap"), "{}", e.message);
        }
    }
}
