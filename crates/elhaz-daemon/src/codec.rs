//! Framing for the daemon: core's blocking functions ([`elhaz_core::codec`], re-exported here)
//! plus the async codec the server reads and writes with — tokio-util's `LengthDelimitedCodec`
//! with the same layout (4-byte big-endian length, then JSON) and the same [`MAX_FRAME_LEN`]
//! cap: a header announcing more is refused as soon as its four bytes arrive, so an oversized
//! frame is never buffered.

pub use elhaz_core::codec::*;
use tokio_util::codec::LengthDelimitedCodec;

use crate::protocol::MAX_FRAME_LEN;

/// The daemon-side codec: 4-byte big-endian length, [`MAX_FRAME_LEN`] cap.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(MAX_FRAME_LEN)
        .new_codec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::bytes::{Bytes, BytesMut};
    use tokio_util::codec::{Decoder, Encoder};

    #[test]
    fn sync_and_async_framing_agree() {
        let mut wire = Vec::new();
        write_frame(&mut wire, br#"{"a":1}"#).unwrap();
        let mut buf = BytesMut::from(&wire[..]);
        let frame = codec().decode(&mut buf).unwrap().unwrap();
        assert_eq!(&frame[..], br#"{"a":1}"#);

        let mut out = BytesMut::new();
        codec()
            .encode(Bytes::from_static(b"xyz"), &mut out)
            .unwrap();
        assert_eq!(read_frame(&mut &out[..]).unwrap(), b"xyz");
    }

    #[test]
    fn oversized_header_is_refused_by_the_async_codec_too() {
        let header = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        let mut buf = BytesMut::from(&header[..]);
        assert!(codec().decode(&mut buf).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes never panic the decoder: every outcome is a frame, "need more",
        /// or an error — and a decoded frame never exceeds the cap.
        #[test]
        fn decoder_survives_arbitrary_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            let mut c = codec();
            for _ in 0..64 {
                match c.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        proptest::prop_assert!(frame.len() <= MAX_FRAME_LEN);
                        let _ = from_payload::<crate::protocol::RequestFrame>(&frame);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
