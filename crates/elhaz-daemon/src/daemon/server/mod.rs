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

mod admission;
mod connection;
mod reply;
mod slots;

use admission::*;
use connection::*;
pub use reply::encode_reply;
use reply::*;
use slots::*;

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
        let (peer, conn) = match check_peer(&stream, &state).await {
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
