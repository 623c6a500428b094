//! The PKCE flow's loopback redirect: a one-shot HTTP/1.1 listener on 127.0.0.1 that reads
//! the browser's redirect (the whole request head, bounded), checks the `state`, answers a
//! short page and returns the code; plus the percent-coding and base64url PKCE needs. Kept
//! to the few lines of HTTP this takes rather than an HTTP server dependency.

use std::collections::HashMap;
use std::time::Duration;

use crate::protocol::{ErrorCode, WireError};

/// Percent-encodes a query value.
pub(super) fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Decodes a percent-encoded query value (`+` is a space).
pub(super) fn dec(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unpadded base64url (RFC 4648 §5), as PKCE wants.
pub(super) fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The PKCE challenge of a verifier: `base64url(sha256(verifier))`.
pub fn pkce_challenge(verifier: &str) -> String {
    use sha2::Digest;
    b64url(&sha2::Sha256::digest(verifier.as_bytes()))
}

/// Waits for the browser's redirect to the loopback listener; returns the code.
pub(super) async fn callback(
    listener: &tokio::net::TcpListener,
    state: &str,
) -> Result<String, WireError> {
    use tokio::io::AsyncWriteExt;
    // Bounded by the caller's deadline; stray connections (favicon…) are answered and skipped.
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let Some(head) = read_head(&mut sock).await else {
            continue;
        };
        let target = head
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let Some(query) = target.strip_prefix("/oauth/callback?") else {
            let _ = sock
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            let _ = sock.shutdown().await;
            continue;
        };
        let params: HashMap<String, String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (dec(k), dec(v)))
            .collect();
        let (status, body, result) = redirect_outcome(&params, state);
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = sock.write_all(reply.as_bytes()).await;
        // FIN after the page (not a reset): the browser reads it whole.
        let _ = sock.shutdown().await;
        return result;
    }
}

/// The whole request head, not just the first read: a browser may send the request line and
/// the headers in separate segments, and answering (and closing) before the rest has arrived
/// makes the kernel reset the connection under the browser, which then sees a broken pipe
/// instead of our page. Bounded: 8 KiB and 5 s; `None` when the read failed or timed out.
async fn read_head(sock: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(1024);
    let read_head = async {
        let mut chunk = [0u8; 1024];
        while buf.len() < 8192 && !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<(), std::io::Error>(())
    };
    if !matches!(
        tokio::time::timeout(Duration::from_secs(5), read_head).await,
        Ok(Ok(()))
    ) {
        return None;
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// What a redirect's query means: the HTTP status and page to answer, and the login's
/// result (the code, or why not: another login's `state`, or the error the portal sent).
fn redirect_outcome(
    params: &HashMap<String, String>,
    state: &str,
) -> (&'static str, &'static str, Result<String, WireError>) {
    if params.get("state").map(String::as_str) != Some(state) {
        (
            "400 Bad Request",
            "elhaz: the sign-in reply does not match this login (state); try again.",
            Err(WireError::new(
                ErrorCode::AccessDenied,
                "the browser's redirect carried another login's state; run the login again",
            )),
        )
    } else if let Some(code) = params.get("code") {
        (
            "200 OK",
            "elhaz: signed in. You can close this window.",
            Ok(code.clone()),
        )
    } else {
        (
            "400 Bad Request",
            "elhaz: the sign-in failed.",
            Err(WireError::new(
                ErrorCode::AccessDenied,
                format!(
                    "the sign-in failed: {}",
                    params
                        .get("error")
                        .map_or("no code in the redirect", String::as_str)
                ),
            )),
        )
    }
}
