//! The physical floor of `elhaz credential-process`, for `scripts/bench`: a std-only client that
//! connects to a unix socket, sends one length-prefixed credentials request, and copies the
//! reply's JSON payload to stdout. No argument parsing library, no JSON, no runtime.
//!
//!     bench_client SOCKET NAME

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, name] = args.as_slice() else {
        eprintln!("usage: bench_client SOCKET NAME");
        return ExitCode::from(2);
    };
    match round_trip(socket, name) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn round_trip(socket: &str, name: &str) -> std::io::Result<()> {
    let body = format!(r#"{{"protocol":4,"id":1,"op":"credentials","name":"{name}"}}"#);
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body.as_bytes());
    let mut s = UnixStream::connect(socket)?;
    s.write_all(&frame)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut reply = vec![0u8; u32::from_be_bytes(len).min(1 << 16) as usize];
    s.read_exact(&mut reply)?;
    reply.push(b'\n');
    std::io::stdout().lock().write_all(&reply)
}
