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
    ErrorCode, MAX_FRAME_LEN, Outcome, PROTOCOL_VERSION, Probe, ReplyFrame, RequestFrame, Response,
    SessionInfo, WireError,
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
        let (frames, after) = handle_frame(state, peer.clone(), &bytes).await;
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

/// What the connection does after writing a reply.
#[derive(Debug, Default)]
struct After {
    stop: bool,
}

async fn handle_frame(state: &Arc<State>, peer: Peer, bytes: &[u8]) -> (Vec<Bytes>, After) {
    let probe: Probe = match codec::from_payload(bytes) {
        Ok(p) => p,
        Err(e) => {
            return (
                vec![error_reply(
                    0,
                    WireError::new(ErrorCode::BadRequest, format!("malformed frame: {e}")),
                )],
                After::default(),
            );
        }
    };
    if probe.protocol != PROTOCOL_VERSION {
        return (
            vec![error_reply(
                probe.id,
                handler::protocol_mismatch(probe.protocol),
            )],
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
            return (vec![error_reply(probe.id, err)], After::default());
        }
        Err(e) => {
            return (
                vec![error_reply(
                    probe.id,
                    WireError::new(ErrorCode::BadRequest, format!("malformed request: {e}")),
                )],
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

#[cfg(test)]
mod tests {
    use super::*;

    fn info(i: usize) -> SessionInfo {
        SessionInfo {
            name: format!("session-{i:05}"),
            state: "fresh".into(),
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
