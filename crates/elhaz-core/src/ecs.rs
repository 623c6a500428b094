//! The ECS container credentials endpoint: a tiny HTTP/1.1 server that answers the contract
//! every AWS SDK speaks when `AWS_CONTAINER_CREDENTIALS_FULL_URI` is set
//! (`GET` → `{"AccessKeyId","SecretAccessKey","Token","Expiration"[,"AccountId"]}`), used by
//! `elhaz exec --ecs` (one endpoint per child, on `127.0.0.1`, a random port) and
//! `elhaz serve ecs` (a long-lived endpoint for containers).
//!
//! # Trade-offs
//!
//! - **std threads, no tokio, no HTTP crate.** `exec` is on the CLI hot path, which builds no
//!   async runtime. The server reads one request head (bounded: 16 KiB, 5 s), answers it and
//!   closes the connection (`Connection: close`); SDKs open a connection per refresh anyway.
//!   One thread per connection, at most [`MAX_CONNECTIONS`] at once (more get a 503), so a
//!   slow or hostile local client cannot starve the child's SDK.
//! - **Every GET is a daemon round trip** (the [`Source`] the caller passes): no second cache
//!   here, so the child always gets the credential the daemon refreshes ahead of expiry.
//! - **Checks, in order:** the `Host` header must name the listening address (an IP literal
//!   — loopback only unless the caller allows remote — or `localhost`, with our port), which
//!   defeats DNS rebinding (a browser page on `evil.example` that resolves to 127.0.0.1 still
//!   sends `Host: evil.example`); then `Authorization` must equal the token, compared in
//!   constant time (missing → 401, wrong → 403); then method `GET` and path [`PATH`]. Every
//!   refusal is reported to the caller's audit hook ([`Event`]); the token never is.
//! - **The token** is 32 random bytes from the thread-local CSPRNG (ChaCha, seeded by the OS),
//!   hex-encoded; it is zeroized on drop and redacted from `Debug`.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::protocol::WireCredentials;

/// The path the endpoint serves; anything else is a 404.
pub const PATH: &str = "/credentials";
/// Connections served at once; more get a 503.
pub const MAX_CONNECTIONS: usize = 64;
/// Largest accepted request head.
const MAX_HEAD: usize = 16 * 1024;
/// Read/write timeout for one connection.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The bearer token an SDK sends verbatim as `Authorization`.
pub struct Token(Zeroizing<String>);

impl Token {
    /// 32 random bytes, hex-encoded (64 characters).
    pub fn generate() -> Token {
        let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(rand::random());
        let mut s = String::with_capacity(64);
        for b in bytes.iter() {
            s.push_str(&format!("{b:02x}"));
        }
        Token(Zeroizing::new(s))
    }

    /// The token text (for the child's environment or the token file only).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison (the length is not secret: it is always 64).
    pub fn matches(&self, given: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        if mine.len() != given.len() {
            return false;
        }
        mine.iter()
            .zip(given)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why a credential request could not be answered (becomes a 502 with this message).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// Where the endpoint gets credentials: one daemon round trip per call.
pub trait Source: Send + Sync + 'static {
    /// The session's current credentials.
    fn credentials(&self) -> Result<WireCredentials, SourceError>;
}

impl<F> Source for F
where
    F: Fn() -> Result<WireCredentials, SourceError> + Send + Sync + 'static,
{
    fn credentials(&self) -> Result<WireCredentials, SourceError> {
        self()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header (401).
    MissingToken,
    /// `Authorization` is not the token (403).
    WrongToken,
    /// `Host` is missing or not the listening address (403; DNS rebinding).
    ForeignHost,
    /// Not a GET (405).
    Method,
    /// Not [`PATH`] (404).
    Path,
    /// Malformed or oversized request head (400).
    BadRequest,
    /// Too many connections at once (503).
    Busy,
}

impl Refusal {
    /// The HTTP status sent.
    pub fn status(self) -> u16 {
        match self {
            Refusal::MissingToken => 401,
            Refusal::WrongToken | Refusal::ForeignHost => 403,
            Refusal::Method => 405,
            Refusal::Path => 404,
            Refusal::BadRequest => 400,
            Refusal::Busy => 503,
        }
    }

    /// A short reason (never contains request data).
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::MissingToken => "no Authorization token",
            Refusal::WrongToken => "wrong Authorization token",
            Refusal::ForeignHost => "Host header is not the endpoint's address",
            Refusal::Method => "method is not GET",
            Refusal::Path => "unknown path",
            Refusal::BadRequest => "malformed request",
            Refusal::Busy => "too many connections",
        }
    }

    fn code(self) -> &'static str {
        match self {
            Refusal::MissingToken => "Unauthorized",
            Refusal::WrongToken | Refusal::ForeignHost => "Forbidden",
            Refusal::Method => "MethodNotAllowed",
            Refusal::Path => "NotFound",
            Refusal::BadRequest => "BadRequest",
            Refusal::Busy => "ServiceUnavailable",
        }
    }
}

/// What the audit hook hears about.
#[derive(Debug)]
pub enum Event<'a> {
    /// Credentials were served to `peer`.
    Served {
        /// The client's address.
        peer: SocketAddr,
    },
    /// A request from `peer` was refused.
    Refused {
        /// The client's address.
        peer: SocketAddr,
        /// Why.
        why: Refusal,
    },
    /// The daemon could not supply credentials (502).
    Failed {
        /// The client's address.
        peer: SocketAddr,
        /// The daemon's error.
        error: &'a SourceError,
    },
}

/// The audit hook.
pub type Audit = Arc<dyn Fn(&Event<'_>) + Send + Sync>;

/// An endpoint's configuration.
pub struct Endpoint {
    /// The token every request must carry.
    pub token: Arc<Token>,
    /// Accept a `Host` naming a non-loopback IP literal (`serve ecs --allow-remote`).
    pub allow_remote_host: bool,
    /// Where credentials come from.
    pub source: Arc<dyn Source>,
    /// Told about every request (refusals included).
    pub audit: Audit,
}

/// Serves `listener` on a background thread until the process exits.
pub fn spawn(listener: TcpListener, endpoint: Endpoint) -> std::io::Result<SocketAddr> {
    let local = listener.local_addr()?;
    let endpoint = Arc::new(endpoint);
    std::thread::Builder::new()
        .name("elhaz-ecs".into())
        .spawn(move || accept_loop(listener, local, endpoint))?;
    Ok(local)
}

/// The URL to put in `AWS_CONTAINER_CREDENTIALS_FULL_URI` for a listener at `addr`.
pub fn full_uri(addr: SocketAddr) -> String {
    format!("http://{addr}{PATH}")
}

fn accept_loop(listener: TcpListener, local: SocketAddr, endpoint: Arc<Endpoint>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(stream) = conn else {
            // EMFILE, ECONNABORTED…: back off a little instead of spinning.
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let mut s = stream;
            let _ = s.set_write_timeout(Some(IO_TIMEOUT));
            respond_refusal(&mut s, Refusal::Busy);
            (endpoint.audit)(&Event::Refused {
                peer,
                why: Refusal::Busy,
            });
            continue;
        }
        let (ep, act) = (endpoint.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("elhaz-ecs-conn".into())
            .spawn(move || {
                handle(stream, peer, local, &ep);
                act.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A parsed request head: what the checks need, nothing else kept.
struct Head {
    method: String,
    path: String,
    host: Option<String>,
    authorization: Option<Zeroizing<Vec<u8>>>,
}

fn read_head(stream: &mut TcpStream) -> Option<Head> {
    let mut buf = Zeroizing::new(Vec::with_capacity(1024));
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    chunk.fill(0);
    parse_head(&buf[..end])
}

fn parse_head(head: &[u8]) -> Option<Head> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = std::str::from_utf8(lines.next()?).ok()?;
    let mut parts = request_line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    let mut h = Head {
        method: method.to_string(),
        path: path.to_string(),
        host: None,
        authorization: None,
    };
    for line in lines {
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"host") {
            if h.host.is_some() {
                return None; // two Host headers: ambiguous, refuse
            }
            h.host = Some(std::str::from_utf8(value).ok()?.to_string());
        } else if name.eq_ignore_ascii_case(b"authorization") {
            if h.authorization.is_some() {
                return None;
            }
            h.authorization = Some(Zeroizing::new(value.to_vec()));
        }
    }
    Some(h)
}

/// Whether `host` (a `Host` header) names the endpoint at `local`.
fn host_ok(host: &str, local: SocketAddr, allow_remote: bool) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            },
        };
        (ip, port)
    } else {
        match host.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    if let Some(p) = port
        && p.parse::<u16>().ok() != Some(local.port())
    {
        return false;
    }
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || allow_remote,
        Err(_) => false,
    }
}

fn check(head: &Head, local: SocketAddr, ep: &Endpoint) -> Result<(), Refusal> {
    match &head.host {
        Some(h) if host_ok(h, local, ep.allow_remote_host) => {}
        _ => return Err(Refusal::ForeignHost),
    }
    match &head.authorization {
        None => return Err(Refusal::MissingToken),
        Some(a) if !ep.token.matches(a) => return Err(Refusal::WrongToken),
        Some(_) => {}
    }
    if head.method != "GET" {
        return Err(Refusal::Method);
    }
    if head.path != PATH {
        return Err(Refusal::Path);
    }
    Ok(())
}

fn handle(mut stream: TcpStream, peer: SocketAddr, local: SocketAddr, ep: &Endpoint) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let verdict = match read_head(&mut stream) {
        Some(head) => check(&head, local, ep),
        None => Err(Refusal::BadRequest),
    };
    if let Err(why) = verdict {
        respond_refusal(&mut stream, why);
        (ep.audit)(&Event::Refused { peer, why });
        return;
    }
    match ep.source.credentials() {
        Ok(c) => {
            let body = Zeroizing::new(contract_json(&c));
            respond(&mut stream, 200, "OK", &body);
            (ep.audit)(&Event::Served { peer });
        }
        Err(error) => {
            let body = error_json("CredentialsUnavailable", &error.0);
            respond(&mut stream, 502, "Bad Gateway", &body);
            (ep.audit)(&Event::Failed {
                peer,
                error: &error,
            });
        }
    }
}

/// The ECS contract's JSON for `c`.
pub fn contract_json(c: &WireCredentials) -> String {
    let mut v = serde_json::json!({
        "AccessKeyId": c.access_key_id,
        "SecretAccessKey": c.secret_access_key,
        "Token": c.session_token,
        "Expiration": c.expiration,
    });
    if let Some(a) = &c.account_id {
        v["AccountId"] = a.clone().into();
    }
    v.to_string()
}

fn error_json(code: &str, message: &str) -> String {
    serde_json::json!({"code": code, "message": message}).to_string()
}

fn respond_refusal(stream: &mut TcpStream, why: Refusal) {
    let text = match why.status() {
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Bad Request",
    };
    respond(
        stream,
        why.status(),
        text,
        &error_json(why.code(), why.reason()),
    );
}

fn respond(stream: &mut TcpStream, status: u16, text: &str, body: &str) {
    let head = format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut out = Zeroizing::new(head.into_bytes());
    out.extend_from_slice(body.as_bytes());
    let _ = stream.write_all(&out);
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> SocketAddr {
        "127.0.0.1:4567".parse().unwrap()
    }

    #[test]
    fn token_is_64_hex_and_compares_exactly() {
        let t = Token::generate();
        assert_eq!(t.expose().len(), 64);
        assert!(t.expose().bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(t.matches(t.expose().as_bytes()));
        let mut wrong = t.expose().as_bytes().to_vec();
        wrong[63] ^= 1;
        assert!(!t.matches(&wrong));
        assert!(!t.matches(&t.expose().as_bytes()[..63]));
        assert!(!t.matches(b""));
        assert_ne!(Token::generate().expose(), t.expose());
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }

    #[test]
    fn host_rules_defeat_dns_rebinding() {
        for ok in [
            "127.0.0.1:4567",
            "127.0.0.1",
            "localhost:4567",
            "LOCALHOST",
            "[::1]:4567",
            "[::1]",
        ] {
            assert!(host_ok(ok, local(), false), "{ok}");
        }
        for bad in [
            "evil.example:4567",
            "evil.example",
            "127.0.0.1:4568",
            "127.0.0.1:",
            "10.0.0.5:4567",
            "[::1]x",
            "[::1",
            "",
            "127.0.0.1.nip.io:4567",
        ] {
            assert!(!host_ok(bad, local(), false), "{bad}");
        }
        assert!(host_ok("10.0.0.5:4567", local(), true));
        assert!(!host_ok("evil.example:4567", local(), true));
    }

    #[test]
    fn head_parsing() {
        let h =
            parse_head(b"GET /credentials?x=1 HTTP/1.1\r\nhost: 127.0.0.1\r\nAuthorization:  abc ")
                .unwrap();
        assert_eq!(h.method, "GET");
        assert_eq!(h.path, "/credentials");
        assert_eq!(h.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(
            h.authorization.as_deref().map(|v| v.as_slice()),
            Some(&b"abc"[..])
        );
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b").is_none());
        assert!(parse_head(b"GET /\r\n").is_none());
        assert!(parse_head(b"GET / HTTP/1.1\r\nno colon").is_none());
    }
}
