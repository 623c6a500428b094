//! One connection's task: read a frame (bounded), decode it with `protocol::decode_request`,
//! authorize, handle, write the reply frames (bounded), until EOF, a timeout or shutdown.

use super::*;

pub(super) async fn serve_connection(
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
pub(super) async fn send_all(
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
pub(super) async fn data_ready(stream: &UnixStream) -> std::io::Result<()> {
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
pub(super) struct After {
    pub(super) stop: bool,
}

pub(super) async fn handle_frame(
    state: &Arc<State>,
    peer: Peer,
    bytes: &[u8],
) -> (Vec<Bytes>, After) {
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
