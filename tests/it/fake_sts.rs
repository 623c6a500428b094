//! A fake AWS STS served by the test itself on 127.0.0.1 (std `TcpListener`, one thread per
//! connection, HTTP/1.1 with `Connection: close`).
//!
//! Why it exists next to moto: moto cannot inject faults (throttling, 5xx, typed 403s, hangs)
//! or per-role delays, its call counts are only visible through its access log, and the Rust
//! SDK cannot parse moto's error bodies (`code()` is `None`), so typed error codes need a server
//! that answers with the standard STS XML error body
//! (`<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>`).
//!
//! It answers AssumeRole, AssumeRoleWithWebIdentity, GetSessionToken and GetCallerIdentity
//! with the real response shapes (namespace `https://sts.amazonaws.com/doc/2011-06-15/`,
//! `Expiration` as RFC 3339 `…Z`), records every request's form parameters and the access key
//! id of its SigV4 `Authorization` header, remembers which identity each issued key belongs to
//! (so GetCallerIdentity reports the assumed role), and its behaviour can be switched at
//! runtime: [`Mode`], credential lifetime, per-role delays and holds.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// The account every identity belongs to.
pub const ACCOUNT: &str = "123456789012";
/// The identity of keys the fake did not issue (the "IAM user" behind static keys).
pub const BASE_ARN: &str = "arn:aws:iam::123456789012:user/fake";
const NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
/// Upper bound of any hold, delay or hang (a forgotten hold must not outlive the test).
const MAX_WAIT: Duration = Duration::from_secs(60);

/// How the fake answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Normal answers.
    Ok,
    /// An STS error: HTTP status, error code and message in the standard XML body.
    Fail {
        status: u16,
        code: &'static str,
        message: String,
    },
    /// Read the request, never answer (until the mode changes or the fake is dropped).
    Hang,
}

impl Mode {
    pub fn throttling() -> Mode {
        Mode::fail(400, "Throttling", "Rate exceeded (fake STS)")
    }
    /// S3-style throttling that STS endpoints also send: HTTP 503 with code `SlowDown`.
    pub fn slow_down() -> Mode {
        Mode::fail(
            503,
            "SlowDown",
            "Please reduce your request rate (fake STS)",
        )
    }
    pub fn unavailable() -> Mode {
        Mode::fail(
            503,
            "ServiceUnavailable",
            "fake STS is down for maintenance",
        )
    }
    pub fn access_denied() -> Mode {
        Mode::fail(
            403,
            "AccessDenied",
            "User: arn:aws:iam::123456789012:user/fake is not authorized to perform: sts:AssumeRole (fake STS)",
        )
    }
    pub fn expired_token() -> Mode {
        Mode::fail(
            403,
            "ExpiredToken",
            "The security token included in the request is expired (fake STS)",
        )
    }
    fn fail(status: u16, code: &'static str, message: &str) -> Mode {
        Mode::Fail {
            status,
            code,
            message: message.into(),
        }
    }
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Call {
    /// `Action` (e.g. `AssumeRole`).
    pub action: String,
    /// Every form parameter, decoded.
    pub params: BTreeMap<String, String>,
    /// The access key id from the `Authorization` header's `Credential=` scope.
    pub access_key: Option<String>,
    /// The whole `Credential=` scope (`AKID/DATE/REGION/sts/aws4_request`).
    pub scope: Option<String>,
    /// When the request was read.
    pub received: Instant,
    /// When the answer was written (None: not (yet) answered).
    pub replied: Option<Instant>,
    /// The access key id issued by this call, if it issued credentials.
    pub issued: Option<String>,
}

impl Call {
    /// A parameter's value.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
    /// The role name of `RoleArn` (its last path segment).
    pub fn role(&self) -> Option<&str> {
        self.param("RoleArn").and_then(|a| a.rsplit('/').next())
    }
}

struct Behaviour {
    mode: Mode,
    /// Lifetime of issued credentials (None: the requested DurationSeconds).
    lifetime: Option<Duration>,
    /// AssumeRole of these roles answers only after the delay.
    delays: HashMap<String, Duration>,
    /// AssumeRole of these roles waits until released.
    held: HashSet<String>,
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    calls: Mutex<Vec<Call>>,
    /// Issued access key id → the ARN GetCallerIdentity reports for it.
    identities: Mutex<HashMap<String, String>>,
    next_key: AtomicU64,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The running fake; stopped on drop.
pub struct FakeSts {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FakeSts {
    /// Starts serving on a free port of 127.0.0.1.
    pub fn start() -> FakeSts {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind the fake STS");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(Behaviour {
                mode: Mode::Ok,
                lifetime: None,
                delays: HashMap::new(),
                held: HashSet::new(),
            }),
            calls: Mutex::new(Vec::new()),
            identities: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(1),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        let _ = serve(&s, stream);
                    });
                }
            }
        });
        FakeSts {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        lock(&self.shared.behaviour).mode = mode;
    }

    /// GetCallerIdentity with access key `key` reports `arn` (keys it did not issue otherwise
    /// report [`BASE_ARN`]).
    pub fn set_identity(&self, key: &str, arn: &str) {
        lock(&self.shared.identities).insert(key.to_string(), arn.to_string());
    }

    /// Issued credentials expire `lifetime` after the answer.
    pub fn set_lifetime(&self, lifetime: Duration) {
        lock(&self.shared.behaviour).lifetime = Some(lifetime);
    }

    /// AssumeRole of `role` (role name) answers after `delay`.
    pub fn delay_role(&self, role: &str, delay: Duration) {
        lock(&self.shared.behaviour)
            .delays
            .insert(role.into(), delay);
    }

    /// AssumeRole of `role` waits (at most a minute) until [`FakeSts::release`].
    pub fn hold_role(&self, role: &str) {
        lock(&self.shared.behaviour).held.insert(role.into());
    }

    pub fn release(&self, role: &str) {
        lock(&self.shared.behaviour).held.remove(role);
    }

    /// Every request so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.shared.calls).clone()
    }

    /// Requests of `action`.
    pub fn calls_of(&self, action: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.action == action)
            .collect()
    }

    /// AssumeRole requests for role name `role`.
    pub fn assume_role_calls(&self, role: &str) -> Vec<Call> {
        self.calls_of("AssumeRole")
            .into_iter()
            .filter(|c| c.role() == Some(role))
            .collect()
    }

    /// Waits (bounded) until `pred` holds for the recorded calls.
    pub fn wait_for(&self, timeout: Duration, mut pred: impl FnMut(&[Call]) -> bool) -> bool {
        crate::util::wait_until(timeout, || pred(&lock(&self.shared.calls)))
    }
}

impl Drop for FakeSts {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Waits while `cond` holds, at most [`MAX_WAIT`], ending early when the fake stops.
fn wait_while(shared: &Shared, limit: Duration, mut cond: impl FnMut(&Behaviour) -> bool) {
    let deadline = Instant::now() + limit.min(MAX_WAIT);
    while Instant::now() < deadline
        && !shared.stop.load(Ordering::SeqCst)
        && cond(&lock(&shared.behaviour))
    {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn serve(shared: &Shared, mut s: TcpStream) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let (head, body) = read_request(&mut s)?;
    if !head.starts_with("POST ") {
        // A readiness probe or a stray client.
        return respond(&mut s, 200, "ok");
    }
    let params = parse_form(&body);
    let scope = header(&head, "authorization")
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split([',', ' ']).next())
        .map(String::from);
    let access_key = scope
        .as_deref()
        .and_then(|c| c.split('/').next())
        .map(String::from);
    let call = Call {
        action: params.get("Action").cloned().unwrap_or_default(),
        params,
        access_key,
        scope,
        received: Instant::now(),
        replied: None,
        issued: None,
    };
    let role = call.role().unwrap_or_default().to_string();
    let assume = call.action == "AssumeRole";
    let idx = {
        let mut calls = lock(&shared.calls);
        calls.push(call.clone());
        calls.len() - 1
    };
    if assume {
        wait_while(shared, MAX_WAIT, |b| b.held.contains(&role));
        let delay = lock(&shared.behaviour).delays.get(&role).copied();
        if let Some(d) = delay {
            let until = Instant::now() + d;
            wait_while(shared, d, |_| Instant::now() < until);
        }
    }
    wait_while(shared, MAX_WAIT, |b| b.mode == Mode::Hang);
    let (mode, lifetime) = {
        let b = lock(&shared.behaviour);
        (b.mode.clone(), b.lifetime)
    };
    let (status, xml, issued) = match mode {
        Mode::Hang => return Ok(()), // stopped while hanging: close without an answer
        Mode::Fail {
            status,
            code,
            message,
        } => (status, error_xml(status, code, &message, idx), None),
        Mode::Ok => answer(shared, &call, lifetime, idx),
    };
    let r = respond(&mut s, status, &xml);
    let mut calls = lock(&shared.calls);
    calls[idx].replied = Some(Instant::now());
    calls[idx].issued = issued;
    r
}

/// A successful answer: (status, body, issued access key id).
fn answer(
    shared: &Shared,
    call: &Call,
    lifetime: Option<Duration>,
    idx: usize,
) -> (u16, String, Option<String>) {
    let caller = call
        .access_key
        .as_ref()
        .and_then(|k| lock(&shared.identities).get(k).cloned())
        .unwrap_or_else(|| BASE_ARN.to_string());
    let wrap = |action: &str, result: String| {
        format!(
            "<{action}Response xmlns=\"{NS}\"><{action}Result>{result}</{action}Result>\
             <ResponseMetadata><RequestId>fake-{idx}</RequestId></ResponseMetadata></{action}Response>"
        )
    };
    let requested = call
        .param("DurationSeconds")
        .and_then(|d| d.parse().ok())
        .unwrap_or(3600);
    let lifetime = lifetime.unwrap_or(Duration::from_secs(requested));
    // Issues credentials whose identity is `arn`; returns (key, <Credentials> element).
    let issue = |arn: &str| {
        let n = shared.next_key.fetch_add(1, Ordering::SeqCst);
        let key = format!("ASIAFAKE{n:012}");
        lock(&shared.identities).insert(key.clone(), arn.to_string());
        let exp = elhaz::credentials::rfc3339(SystemTime::now() + lifetime);
        let xml = format!(
            "<Credentials><AccessKeyId>{key}</AccessKeyId><SecretAccessKey>fakesecret{n}\
             </SecretAccessKey><SessionToken>faketoken{n}</SessionToken><Expiration>{exp}\
             </Expiration></Credentials>"
        );
        (key, xml)
    };
    let role_user = |call: &Call| {
        let role = call.role().unwrap_or("role");
        let session = call.param("RoleSessionName").unwrap_or("session");
        let arn = format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}");
        let user = format!(
            "<AssumedRoleUser><AssumedRoleId>AROAFAKE:{}</AssumedRoleId><Arn>{}</Arn></AssumedRoleUser>",
            esc(session),
            esc(&arn)
        );
        (arn, user)
    };
    match call.action.as_str() {
        "AssumeRole" => {
            let (arn, user) = role_user(call);
            let (key, creds) = issue(&arn);
            (200, wrap("AssumeRole", format!("{creds}{user}")), Some(key))
        }
        "AssumeRoleWithWebIdentity" => {
            let (arn, user) = role_user(call);
            let (key, creds) = issue(&arn);
            let extra = "<SubjectFromWebIdentityToken>fake-subject</SubjectFromWebIdentityToken>\
                         <Audience>fake-audience</Audience><Provider>fake-idp</Provider>";
            let body = wrap("AssumeRoleWithWebIdentity", format!("{creds}{user}{extra}"));
            (200, body, Some(key))
        }
        "GetSessionToken" => {
            let (key, creds) = issue(&caller);
            (200, wrap("GetSessionToken", creds), Some(key))
        }
        "GetCallerIdentity" => {
            let user_id = call.access_key.clone().unwrap_or_default();
            let result = format!(
                "<UserId>{}</UserId><Account>{ACCOUNT}</Account><Arn>{}</Arn>",
                esc(&user_id),
                esc(&caller)
            );
            (200, wrap("GetCallerIdentity", result), None)
        }
        other => {
            let message = format!("fake STS does not implement {other}");
            (400, error_xml(400, "InvalidAction", &message, idx), None)
        }
    }
}

/// The standard STS error body.
fn error_xml(status: u16, code: &str, message: &str, idx: usize) -> String {
    let kind = if status >= 500 { "Receiver" } else { "Sender" };
    format!(
        "<ErrorResponse xmlns=\"{NS}\"><Error><Type>{kind}</Type><Code>{code}</Code><Message>{}\
         </Message></Error><RequestId>fake-{idx}</RequestId></ErrorResponse>",
        esc(message)
    )
}

/// Reads one request: (head, body). Bounded to 64 KiB.
pub fn read_request(s: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .min(64 * 1024);
    if header(&head, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Ok((head, body))
}

pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn respond(s: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let reason = if status == 200 { "OK" } else { "Error" };
    let text = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(text.as_bytes())?;
    s.flush()
}

/// Decodes an `application/x-www-form-urlencoded` body.
pub fn parse_form(body: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
