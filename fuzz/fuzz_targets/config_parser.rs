//! Feeds arbitrary text to the session-config parser and its error locator. Run with
//! `cargo fuzz run config_parser` (nightly); CI keeps it building.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = std::path::Path::new("fuzz.toml");
        let _ = elhaz::config::SessionConfig::parse(text, path, false);
        let _ = elhaz::config::SessionConfig::parse(text, path, true);
    }
});
