//! Feeds arbitrary bytes to the daemon's frame decoder and request decoder, as a hostile
//! client would: the async codec the server reads with, then `protocol::decode_request`, the
//! one function the server decodes every request frame with. Run with `cargo fuzz run
//! frame_decoder` (nightly); CI keeps it building.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut codec = elhaz::codec::codec();
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        assert!(frame.len() <= elhaz::protocol::MAX_FRAME_LEN);
        let _ = elhaz::protocol::decode_request(&frame);
    }
    let _ = elhaz::codec::read_frame(&mut &data[..]);
});
