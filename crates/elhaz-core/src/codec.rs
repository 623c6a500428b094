//! Framing: a 4-byte big-endian length prefix followed by that many bytes of JSON.
//!
//! This is the blocking side (the CLI: plain `std` I/O — the credential-process hot path builds
//! no async runtime). The daemon's async codec (`elhaz_daemon::codec::codec`, tokio-util's
//! `LengthDelimitedCodec`) has the same layout and the same [`MAX_FRAME_LEN`] cap; a test there
//! checks that the two agree byte for byte. A header announcing more than the cap is refused as
//! soon as its four bytes arrive, so an oversized frame is never buffered.

use std::io::{self, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::protocol::MAX_FRAME_LEN;

/// Serializes a frame's JSON payload.
pub fn to_payload<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own plain data types (strings, integers, vectors) cannot fail.
    serde_json::to_vec(value).unwrap_or_else(|e| {
        unreachable!("wire types always serialize: {e}");
    })
}

/// Deserializes a frame's JSON payload.
pub fn from_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(payload)
}

/// Writes one frame (blocking).
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    if payload.len() > MAX_FRAME_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "frame of {} bytes exceeds the {MAX_FRAME_LEN}-byte limit",
                payload.len()
            ),
        ));
    }
    // One write for header and body: one syscall, and no partial frame on the wire if the
    // process dies between two writes.
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)?;
    w.flush()
}

/// Reads one frame (blocking). A length over [`MAX_FRAME_LEN`] is refused before reading the
/// body; EOF before a complete frame is `UnexpectedEof`.
pub fn read_frame(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("peer sent a {len}-byte frame, over the {MAX_FRAME_LEN}-byte limit"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_header_is_refused_without_reading_body() {
        let header = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        let err = read_frame(&mut &header[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let big = vec![b'x'; MAX_FRAME_LEN + 1];
        assert!(write_frame(&mut Vec::new(), &big).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes never panic the blocking reader.
        #[test]
        fn reader_survives_arbitrary_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = read_frame(&mut &bytes[..]);
        }

        /// Whatever JSON-ish payload arrives, request parsing returns, never panics.
        #[test]
        fn request_parsing_survives_arbitrary_json(s in "\\{[ -~]{0,200}\\}") {
            let _ = from_payload::<crate::protocol::Probe>(s.as_bytes());
            let _ = from_payload::<crate::protocol::RequestFrame>(s.as_bytes());
        }
    }

    #[test]
    fn truncated_frame_is_eof() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello").unwrap();
        wire.truncate(6);
        let err = read_frame(&mut &wire[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
