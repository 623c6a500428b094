//! Encoding replies so every frame fits the cap: a `sessions` reply split over several frames,
//! any other oversized reply turned into a typed `frame_too_large` error.

use super::*;

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

pub(super) fn reply_too_large(id: u64, len: usize) -> Bytes {
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
pub(super) fn split_sessions(id: u64, sessions: Vec<SessionInfo>) -> Vec<Bytes> {
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

pub(super) fn error_reply(id: u64, err: WireError) -> Bytes {
    Bytes::from(codec::to_payload(&ReplyFrame {
        protocol: PROTOCOL_VERSION,
        id,
        outcome: Outcome::Error(err),
    }))
}
