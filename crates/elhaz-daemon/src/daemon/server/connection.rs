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
    // `conn` (which holds the slot) is declared before `framed` (which owns the socket), so
    // it drops after it: the socket is closed before its slot is free for the next client.
    let conn = Conn {
        peer,
        slot,
        slots,
        cancel: state.shutdown.clone(),
        evict: CancellationToken::new(),
        connected: tokio::time::Instant::now(),
    };
    let mut framed = Framed::new(stream, codec::codec());
    let mut first = true;
    loop {
        let Some(frame_deadline) = conn.wait_for_request(&framed, first).await else {
            return;
        };
        first = false;
        let Some(bytes) = conn.read_frame(&mut framed, frame_deadline).await else {
            return;
        };
        let (frames, after) = if state.policy.take_peer_token(conn.peer.uid) {
            handle_frame(state, conn.peer.clone(), &bytes).await
        } else {
            let err = WireError::new(
                ErrorCode::RateLimited,
                format!(
                    "uid {} is over its request rate (shared.peer_rate_limit); retry shortly",
                    conn.peer.uid
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

type FramedStream = Framed<UnixStream, tokio_util::codec::LengthDelimitedCodec>;

/// One connection as its task keeps it between requests.
struct Conn<'a> {
    peer: Peer,
    /// Its connection slot, returned when the task ends.
    slot: Slot,
    slots: &'a Slots,
    /// The daemon's shutdown.
    cancel: CancellationToken,
    /// Cancelled to close this connection while idle, to make room for a waiting one.
    evict: CancellationToken,
    connected: tokio::time::Instant,
}

impl Conn<'_> {
    /// Waits for the next request's first byte, if none is buffered, and returns by when the
    /// whole frame must have arrived; `None` closes the connection (shutdown, eviction, idle
    /// too long, EOF or an error).
    ///
    /// Waiting for a request's first byte, the connection is idle and may be evicted.
    /// Between requests it may idle for IDLE_TIMEOUT; the first frame must arrive whole
    /// within FRAME_READ_TIMEOUT of connecting, a later one within FRAME_READ_TIMEOUT of its
    /// first byte.
    async fn wait_for_request(
        &self,
        framed: &FramedStream,
        first: bool,
    ) -> Option<tokio::time::Instant> {
        if !framed.read_buffer().is_empty() {
            return Some(tokio::time::Instant::now() + FRAME_READ_TIMEOUT);
        }
        let idle_limit = if first {
            FRAME_READ_TIMEOUT
        } else {
            IDLE_TIMEOUT
        };
        let mark = self.slots.mark_idle(&self.slot, first, &self.evict);
        let idle = tokio::select! {
            () = self.cancel.cancelled() => return None,
            () = self.evict.cancelled() => {
                tracing::debug!(peer_pid = self.peer.pid.unwrap_or(-1), "closing an idle connection to make room");
                return None;
            }
            r = tokio::time::timeout(idle_limit, data_ready(framed.get_ref())) => r,
        };
        drop(mark);
        if !matches!(idle, Ok(Ok(()))) {
            return None;
        }
        Some(if first {
            self.connected + FRAME_READ_TIMEOUT
        } else {
            tokio::time::Instant::now() + FRAME_READ_TIMEOUT
        })
    }

    /// Reads one frame by `deadline`; `None` closes the connection (shutdown, too slow, EOF,
    /// or an oversized frame, which is answered with `frame_too_large` first).
    async fn read_frame(
        &self,
        framed: &mut FramedStream,
        deadline: tokio::time::Instant,
    ) -> Option<Bytes> {
        let next = tokio::select! {
            () = self.cancel.cancelled() => return None,
            r = tokio::time::timeout_at(deadline, framed.next()) => r,
        };
        match next {
            Err(_) => {
                tracing::debug!(
                    peer_pid = self.peer.pid.unwrap_or(-1),
                    "closing a connection that sent no frame in time"
                );
                None
            }
            Ok(None) => None,
            Ok(Some(Err(e))) => {
                let too_large = e
                    .get_ref()
                    .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>());
                if too_large {
                    crate::logging::denial(|| {
                        tracing::warn!(
                            peer_pid = self.peer.pid.unwrap_or(-1),
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
                None
            }
            Ok(Some(Ok(bytes))) => Some(bytes.freeze()),
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
