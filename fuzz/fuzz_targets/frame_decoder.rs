//! Feeds arbitrary bytes to the daemon's frame decoder and request parser, as a hostile
//! client would. Run with `cargo fuzz run frame_decoder` (nightly); CI keeps it building.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut codec = elhaz::codec::codec();
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        assert!(frame.len() <= elhaz::protocol::MAX_FRAME_LEN);
        let _ = elhaz::codec::from_payload::<elhaz::protocol::Probe>(&frame);
        let _ = elhaz::codec::from_payload::<elhaz::protocol::RequestFrame>(&frame);
    }
    let _ = elhaz::codec::read_frame(&mut &data[..]);
});
