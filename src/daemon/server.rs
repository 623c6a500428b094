//! The accept loop and the per-connection tasks.
//!
//! Every connection gets its own task, so a slow or dead client only ever holds its own task
//! and one slot of the connection cap. Reading a whole frame is bounded by
//! [`FRAME_READ_TIMEOUT`] (a slowloris client is dropped), writing a reply by
//! [`WRITE_TIMEOUT`] (a client that never reads is dropped), and an idle keep-alive connection
//! by [`IDLE_TIMEOUT`]. The cap is a semaphore acquired *before* `accept`, so excess clients
//! wait in the kernel's backlog instead of costing us memory.
//!
//! The peer check runs before any byte is read: the peer's uid (SO_PEERCRED / getpeereid) must
//! be the daemon's own. Anything else is refused, logged with uid and pid, and closed — fail
//! closed, even when the socket's mode was loosened by hand.
//!
//! Shutdown: [`run`] returns when its `shutdown` future resolves or the state's cancellation
//! token fires (a `stop` request, idle timeout, `--once`). It then cancels every connection
//! and refresh task, waits (bounded) for connection tasks to finish, and drops all sessions.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::bytes::Bytes;
use tokio_util::codec::{Framed, LengthDelimitedCodecError};
use tokio_util::task::TaskTracker;

use crate::codec;
use crate::daemon::State;
use crate::daemon::handler::{self, Peer};
use crate::protocol::{
    ErrorCode, Outcome, PROTOCOL_VERSION, Probe, ReplyFrame, RequestFrame, Response, WireError,
};

/// Longest time a client may take to send one complete frame.
pub const FRAME_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time writing one reply may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// An open connection with no request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long shutdown waits for connection tasks to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Serves `listener` until `shutdown` resolves or `state.shutdown` is cancelled.
pub async fn run(listener: UnixListener, state: Arc<State>, shutdown: impl Future<Output = ()>) {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(state.settings.max_connections()));
    let cancel = state.shutdown.clone();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = cancel.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed; treat as shutdown
            },
        };
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        tracker.spawn(async move {
            connection(stream, &state).await;
            drop(permit);
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
    crate::daemon::lifecycle::record_warm(&state);
    state.sessions.clear();
}

/// Admits the peer by its kernel-reported credentials, or says why not.
fn check_peer(stream: &UnixStream, state: &State) -> Result<Peer, String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("cannot read peer credentials: {e}"))?;
    let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
    let Some(access) = state.policy.admit(uid, gid) else {
        tracing::warn!(
            peer_uid = uid,
            peer_pid = pid.unwrap_or(-1),
            "refused connection from another uid"
        );
        return Err(format!(
            "permission denied: this daemon does not serve uid {uid}"
        ));
    };
    if !state.policy.connect(uid) {
        tracing::warn!(
            peer_uid = uid,
            "refused connection: per-client connection limit reached"
        );
        return Err(format!(
            "too many connections from uid {uid} (max_connections_per_client)"
        ));
    }
    Ok(Peer::new(uid, pid, access))
}

async fn connection(stream: UnixStream, state: &Arc<State>) {
    let peer = check_peer(&stream, state);
    let mut framed = Framed::new(stream, codec::codec());
    let peer = match peer {
        Ok(p) => p,
        Err(message) => {
            let code = if message.starts_with("too many") {
                ErrorCode::Busy
            } else {
                ErrorCode::PermissionDenied
            };
            let reply = error_reply(0, WireError::new(code, message));
            let _ = tokio::time::timeout(WRITE_TIMEOUT, framed.send(reply)).await;
            return;
        }
    };
    let uid = peer.uid;
    serve_connection(framed, peer, state).await;
    state.policy.disconnect(uid);
}

async fn serve_connection(
    mut framed: Framed<UnixStream, tokio_util::codec::LengthDelimitedCodec>,
    peer: Peer,
    state: &Arc<State>,
) {
    let cancel = state.shutdown.clone();
    let mut first = true;
    loop {
        // Between requests the client may idle for IDLE_TIMEOUT before the next frame's first
        // byte; once it starts a frame, the whole frame must arrive within FRAME_READ_TIMEOUT.
        if !first && framed.read_buffer().is_empty() {
            let idle = tokio::select! {
                () = cancel.cancelled() => return,
                r = tokio::time::timeout(IDLE_TIMEOUT, framed.get_ref().readable()) => r,
            };
            if !matches!(idle, Ok(Ok(()))) {
                return;
            }
        }
        first = false;
        let next = tokio::select! {
            () = cancel.cancelled() => return,
            r = tokio::time::timeout(FRAME_READ_TIMEOUT, framed.next()) => r,
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
                    tracing::warn!(
                        peer_pid = peer.pid.unwrap_or(-1),
                        "refused an oversized frame"
                    );
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
        let (reply, after) = handle_frame(state, peer.clone(), &bytes).await;
        let sent = tokio::time::timeout(WRITE_TIMEOUT, framed.send(reply)).await;
        if after.stop || state.options.once {
            state.shutdown.cancel();
            return;
        }
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
    }
}

/// What the connection does after writing a reply.
#[derive(Debug, Default)]
struct After {
    stop: bool,
}

async fn handle_frame(state: &Arc<State>, peer: Peer, bytes: &[u8]) -> (Bytes, After) {
    let probe: Probe = match codec::from_payload(bytes) {
        Ok(p) => p,
        Err(e) => {
            return (
                error_reply(
                    0,
                    WireError::new(ErrorCode::BadRequest, format!("malformed frame: {e}")),
                ),
                After::default(),
            );
        }
    };
    if probe.protocol != PROTOCOL_VERSION {
        return (
            error_reply(probe.id, handler::protocol_mismatch(probe.protocol)),
            After::default(),
        );
    }
    let frame: RequestFrame = match codec::from_payload(bytes) {
        Ok(f) if op_is_named(bytes) => f,
        Ok(_) => {
            let err = WireError::new(
                ErrorCode::BadRequest,
                "malformed request: `op` must be a string",
            );
            return (error_reply(probe.id, err), After::default());
        }
        Err(e) => {
            return (
                error_reply(
                    probe.id,
                    WireError::new(ErrorCode::BadRequest, format!("malformed request: {e}")),
                ),
                After::default(),
            );
        }
    };
    state.touch();
    let op = frame.request.op();
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
    let reply = ReplyFrame {
        protocol: PROTOCOL_VERSION,
        id: frame.id,
        outcome,
    };
    (Bytes::from(codec::to_payload(&reply)), after)
}

/// Whether the frame names its op with a string. serde also reads an integer as an enum's
/// variant *index*, so `"op":2` would otherwise parse as `stop`.
fn op_is_named(bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Op {
        op: serde_json::Value,
    }
    codec::from_payload::<Op>(bytes).is_ok_and(|o| o.op.is_string())
}

fn error_reply(id: u64, err: WireError) -> Bytes {
    Bytes::from(codec::to_payload(&ReplyFrame {
        protocol: PROTOCOL_VERSION,
        id,
        outcome: Outcome::Error(err),
    }))
}
