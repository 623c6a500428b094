//! A fake IAM Identity Center — SSO OIDC and the SSO portal on one port — served by the test
//! itself on 127.0.0.1 (std `TcpListener`, one thread per connection, `Connection: close`).
//!
//! Why: moto emulates neither the OIDC service nor the portal. The real `aws-sdk-ssooidc` /
//! `aws-sdk-sso` clients (and botocore) are pointed at it with `AWS_ENDPOINT_URL_SSO_OIDC` and
//! `AWS_ENDPOINT_URL_SSO`.
//!
//! OIDC: `POST /client/register`, `POST /device_authorization`, `POST /token` (device code
//! with `AuthorizationPendingException` / `SlowDownException` / `ExpiredTokenException`,
//! authorization code with PKCE S256 verification, refresh token with rotation,
//! `InvalidGrantException`), and `GET /authorize`, which redirects to the client's loopback URI
//! with a code. Portal: `GET /federation/credentials`, `GET /assignment/accounts`,
//! `GET /assignment/roles`, `POST /logout`; a bad token is a 401 `UnauthorizedException`.
//! Errors are typed by the `x-amzn-ErrorType` header, as the real services do. Every request is
//! counted by path; a headless "user" approves device codes ([`FakeSso::approve_pending`],
//! [`FakeSso::auto_approve`]) or follows the authorize URL ([`follow_authorize`]).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Accounts the portal lists: (id, name, roles).
pub const ACCOUNTS: &[(&str, &str, &[&str])] = &[
    ("111111111111", "Prod Account", &["ReadOnly", "Admin"]),
    ("222222222222", "dev", &["Developer"]),
];

#[derive(Debug, Default)]
struct Device {
    client_id: String,
    user_code: String,
    approved: bool,
    issued: bool,
    expires: Option<Instant>,
}

#[derive(Debug)]
struct AuthCode {
    client_id: String,
    redirect_uri: String,
    challenge: String,
}

#[derive(Debug, Default)]
struct State {
    clients: HashMap<String, (String, Vec<String>)>,
    devices: HashMap<String, Device>,
    codes: HashMap<String, AuthCode>,
    /// Valid access tokens.
    access: HashMap<String, Instant>,
    /// Valid refresh tokens → client id.
    refresh: HashMap<String, String>,
    calls: Vec<String>,
    pkce_verified: u64,
    /// Token lifetime issued.
    token_lifetime: Option<u64>,
    /// Role credentials lifetime.
    role_lifetime: Option<u64>,
    /// Answer the next N device polls with SlowDownException.
    slow_down: u32,
    auto_approve: bool,
    /// Device codes expire after this many seconds.
    device_expires_in: Option<u64>,
}

struct Shared {
    state: Mutex<State>,
    next: AtomicU64,
    stop: AtomicBool,
}

fn lock(s: &Shared) -> MutexGuard<'_, State> {
    s.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The running fake; stops on drop.
pub struct FakeSso {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FakeSso {
    /// Starts serving on a free port of 127.0.0.1.
    pub fn start() -> FakeSso {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind the fake SSO");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            next: AtomicU64::new(1),
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
        FakeSso {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The start URL the fake's logins belong to.
    pub fn start_url(&self) -> String {
        format!("{}/start", self.url())
    }

    /// Requests to `path` so far (`/token`, `/federation/credentials`, …).
    pub fn count(&self, path: &str) -> usize {
        lock(&self.shared)
            .calls
            .iter()
            .filter(|c| *c == path)
            .count()
    }

    /// `/token` requests with grant type `grant` (`refresh_token`, `authorization_code`,
    /// `device_code`).
    pub fn grants(&self, grant: &str) -> usize {
        let key = format!("/token#{grant}");
        lock(&self.shared)
            .calls
            .iter()
            .filter(|c| **c == key)
            .count()
    }

    /// Authorization-code exchanges whose PKCE verifier matched.
    pub fn pkce_verified(&self) -> u64 {
        lock(&self.shared).pkce_verified
    }

    pub fn set_token_lifetime(&self, secs: u64) {
        lock(&self.shared).token_lifetime = Some(secs);
    }

    pub fn set_role_lifetime(&self, secs: u64) {
        lock(&self.shared).role_lifetime = Some(secs);
    }

    pub fn set_device_expires_in(&self, secs: u64) {
        lock(&self.shared).device_expires_in = Some(secs);
    }

    /// The next `n` device-code polls get SlowDownException.
    pub fn slow_down(&self, n: u32) {
        lock(&self.shared).slow_down = n;
    }

    /// Approve every device code as soon as it is issued.
    pub fn auto_approve(&self, on: bool) {
        lock(&self.shared).auto_approve = on;
    }

    /// The headless user: approves every pending device code; returns how many.
    pub fn approve_pending(&self) -> usize {
        let mut st = lock(&self.shared);
        let mut n = 0;
        for d in st.devices.values_mut().filter(|d| !d.approved) {
            d.approved = true;
            n += 1;
        }
        n
    }

    /// Expires every device code now, whatever `expiresIn` said (the next poll gets
    /// `ExpiredTokenException`).
    pub fn expire_device_codes(&self) {
        let now = Instant::now();
        for d in lock(&self.shared).devices.values_mut() {
            d.expires = Some(now);
        }
    }

    /// Device authorizations issued so far.
    pub fn devices(&self) -> usize {
        lock(&self.shared).devices.len()
    }

    /// Revokes every refresh token (an admin ended the sessions).
    pub fn revoke_refresh_tokens(&self) {
        lock(&self.shared).refresh.clear();
    }

    /// Revokes every access token too.
    pub fn revoke_all(&self) {
        let mut st = lock(&self.shared);
        st.refresh.clear();
        st.access.clear();
    }

    /// Whether `token` is a valid access token now.
    pub fn valid_access_token(&self, token: &str) -> bool {
        lock(&self.shared)
            .access
            .get(token)
            .is_some_and(|e| *e > Instant::now())
    }
}

impl Drop for FakeSso {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// The headless user of the PKCE flow: GETs the authorize URL, takes the redirect and GETs
/// the client's loopback callback. Returns the callback's status line.
pub fn follow_authorize(url: &str) -> String {
    let (status, head, _) = http_get(url);
    assert!(
        status.contains("302"),
        "authorize did not redirect: {status}"
    );
    let location = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("location")
                .then(|| v.trim().to_string())
        })
        .expect("a Location header");
    http_get(&location).0
}

/// A tiny HTTP/1.1 GET on loopback: (status line, head, body).
fn http_get(url: &str) -> (String, String, String) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s =
        TcpStream::connect(host).unwrap_or_else(|e| panic!("cannot connect to {host}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The request in three segments, 100 ms apart (the method alone first), as a browser
    // under load may send it: a server that answers after its first read (a 404 for a path it
    // has not seen yet) and closes makes a later write fail with a broken pipe — the flake of
    // `sso_pkce_login_with_loopback_redirect` — and the real callback is lost.
    s.set_nodelay(true).unwrap();
    let parts = [
        "GET ".to_string(),
        format!("{path} HTTP/1.1\r\n"),
        format!("Host: {host}\r\nConnection: close\r\n\r\n"),
    ];
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        s.write_all(part.as_bytes())
            .unwrap_or_else(|e| panic!("cannot write part {i} of the request to {host}: {e}"));
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        head.to_string(),
        body.to_string(),
    )
}

fn serve(shared: &Shared, mut s: TcpStream) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let (head, body) = crate::fake_sts::read_request(&mut s)?;
    let mut parts = head.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query: HashMap<String, String> = crate::fake_sts::parse_form(query.as_bytes())
        .into_iter()
        .collect();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let bearer = crate::fake_sts::header(&head, "x-amz-sso_bearer_token").map(String::from);
    let reply = handle(shared, &method, path, &query, &body, bearer.as_deref());
    respond(&mut s, reply)
}

enum Reply {
    Json(Value),
    Error(u16, &'static str, String),
    Redirect(String),
    Text(&'static str),
}

fn err(status: u16, kind: &'static str, msg: &str) -> Reply {
    Reply::Error(status, kind, msg.to_string())
}

fn respond(s: &mut TcpStream, r: Reply) -> std::io::Result<()> {
    let text = match r {
        Reply::Json(v) => {
            let b = v.to_string();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                b.len()
            )
        }
        Reply::Error(status, kind, msg) => {
            let oauth = match kind {
                "AuthorizationPendingException" => "authorization_pending",
                "SlowDownException" => "slow_down",
                "ExpiredTokenException" => "expired_token",
                "InvalidGrantException" => "invalid_grant",
                _ => "error",
            };
            let b = json!({"error": oauth, "error_description": msg, "message": msg}).to_string();
            format!(
                "HTTP/1.1 {status} Error\r\nContent-Type: application/json\r\nx-amzn-ErrorType: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                b.len()
            )
        }
        Reply::Redirect(to) => format!(
            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        Reply::Text(t) => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{t}",
            t.len()
        ),
    };
    s.write_all(text.as_bytes())?;
    s.flush()
}

fn field<'a>(body: &'a Value, k: &str) -> &'a str {
    body.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn handle(
    shared: &Shared,
    method: &str,
    path: &str,
    query: &HashMap<String, String>,
    body: &Value,
    bearer: Option<&str>,
) -> Reply {
    let id = |p: &str| format!("{p}-{}", shared.next.fetch_add(1, Ordering::SeqCst));
    let mut st = lock(shared);
    st.calls.push(path.to_string());
    let now = Instant::now();
    match (method, path) {
        ("POST", "/client/register") => {
            let cid = id("client");
            let scopes: Vec<String> = body
                .get("scopes")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            st.clients
                .insert(cid.clone(), (format!("secret-{cid}"), scopes));
            let exp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 90 * 86_400;
            Reply::Json(json!({
                "clientId": cid, "clientSecret": format!("secret-{cid}"),
                "clientIdIssuedAt": exp - 90 * 86_400, "clientSecretExpiresAt": exp
            }))
        }
        ("POST", "/device_authorization") => {
            let client = field(body, "clientId").to_string();
            if !st.clients.contains_key(&client) {
                return err(400, "InvalidClientException", "unknown client");
            }
            let code = id("device");
            let user_code = format!("ABCD-{:04}", shared.next.fetch_add(1, Ordering::SeqCst));
            let expires_in = st.device_expires_in.unwrap_or(600);
            let approved = st.auto_approve;
            st.devices.insert(
                code.clone(),
                Device {
                    client_id: client,
                    user_code: user_code.clone(),
                    approved,
                    issued: false,
                    expires: Some(now + Duration::from_secs(expires_in)),
                },
            );
            Reply::Json(json!({
                "deviceCode": code, "userCode": user_code,
                "verificationUri": "https://device.sso.example/",
                "verificationUriComplete": format!("https://device.sso.example/?user_code={user_code}"),
                "expiresIn": expires_in, "interval": 1
            }))
        }
        ("POST", "/token") => token(shared, &mut st, body, now),
        ("GET", "/authorize") => {
            let code = id("code");
            let redirect = query.get("redirect_uri").cloned().unwrap_or_default();
            st.codes.insert(
                code.clone(),
                AuthCode {
                    client_id: query.get("client_id").cloned().unwrap_or_default(),
                    redirect_uri: redirect.clone(),
                    challenge: query.get("code_challenge").cloned().unwrap_or_default(),
                },
            );
            let state = query.get("state").cloned().unwrap_or_default();
            Reply::Redirect(format!("{redirect}?code={code}&state={state}"))
        }
        (_, p)
            if p.starts_with("/federation/") || p.starts_with("/assignment/") || p == "/logout" =>
        {
            let valid = bearer.is_some_and(|t| st.access.get(t).is_some_and(|e| *e > now));
            if !valid {
                return err(
                    401,
                    "UnauthorizedException",
                    "Session token not found or invalid",
                );
            }
            match p {
                "/federation/credentials" => {
                    let life = st.role_lifetime.unwrap_or(3600);
                    let exp = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap()
                        .as_millis() as u64
                        + life * 1000;
                    let n = shared.next.fetch_add(1, Ordering::SeqCst);
                    Reply::Json(json!({"roleCredentials": {
                        "accessKeyId": format!("ASIASSO{n:013}"),
                        "secretAccessKey": format!("sso-secret-{n}"),
                        "sessionToken": format!("sso-session-{}-{}-{n}",
                            query.get("account_id").cloned().unwrap_or_default(),
                            query.get("role_name").cloned().unwrap_or_default()),
                        "expiration": exp
                    }}))
                }
                "/assignment/accounts" => Reply::Json(json!({
                    "accountList": ACCOUNTS.iter().map(|(id, name, _)| json!({
                        "accountId": id, "accountName": name, "emailAddress": "a@example.com"
                    })).collect::<Vec<_>>()
                })),
                "/assignment/roles" => {
                    let acct = query.get("account_id").cloned().unwrap_or_default();
                    let roles = ACCOUNTS
                        .iter()
                        .find(|(id, _, _)| *id == acct)
                        .map(|(_, _, r)| *r)
                        .unwrap_or(&[]);
                    Reply::Json(json!({
                        "roleList": roles.iter().map(|r| json!({"roleName": r, "accountId": acct})).collect::<Vec<_>>()
                    }))
                }
                _ => {
                    if let Some(t) = bearer {
                        st.access.remove(t);
                    }
                    st.refresh.clear();
                    Reply::Text("")
                }
            }
        }
        ("GET", _) => Reply::Text("ok"),
        _ => err(404, "ResourceNotFoundException", "no such operation"),
    }
}

fn issue(shared: &Shared, st: &mut State, client: &str, now: Instant) -> Value {
    let n = shared.next.fetch_add(1, Ordering::SeqCst);
    let access = format!("access-{n}");
    let life = st.token_lifetime.unwrap_or(3600);
    st.access
        .insert(access.clone(), now + Duration::from_secs(life));
    let with_refresh = st
        .clients
        .get(client)
        .is_some_and(|(_, scopes)| scopes.iter().any(|s| s == "sso:account:access"));
    let mut v = json!({"accessToken": access, "tokenType": "Bearer", "expiresIn": life});
    if with_refresh {
        let r = format!("refresh-{n}");
        st.refresh.insert(r.clone(), client.to_string());
        v["refreshToken"] = json!(r);
    }
    v
}

fn token(shared: &Shared, st: &mut State, body: &Value, now: Instant) -> Reply {
    let client = field(body, "clientId").to_string();
    let secret_ok = st
        .clients
        .get(&client)
        .is_some_and(|(s, _)| s == field(body, "clientSecret"));
    if !secret_ok {
        return err(401, "InvalidClientException", "invalid client");
    }
    let grant = field(body, "grantType");
    let short = match grant {
        "urn:ietf:params:oauth:grant-type:device_code" => "device_code",
        g => g,
    };
    st.calls.push(format!("/token#{short}"));
    match short {
        "device_code" => {
            if st.slow_down > 0 {
                st.slow_down -= 1;
                return err(400, "SlowDownException", "slow down");
            }
            let code = field(body, "deviceCode").to_string();
            let Some(d) = st.devices.get_mut(&code) else {
                return err(400, "InvalidGrantException", "unknown device code");
            };
            if d.expires.is_some_and(|e| e <= now) {
                return err(400, "ExpiredTokenException", "device code expired");
            }
            if !d.approved {
                return err(400, "AuthorizationPendingException", "pending");
            }
            if d.issued {
                return err(400, "InvalidGrantException", "device code already used");
            }
            d.issued = true;
            Reply::Json(issue(shared, st, &client, now))
        }
        "authorization_code" => {
            let Some(c) = st.codes.remove(field(body, "code")) else {
                return err(400, "InvalidGrantException", "unknown code");
            };
            let verifier = field(body, "codeVerifier");
            if c.client_id != client
                || c.redirect_uri != field(body, "redirectUri")
                || elhaz::sso::pkce_challenge(verifier) != c.challenge
            {
                return err(400, "InvalidGrantException", "PKCE verification failed");
            }
            st.pkce_verified += 1;
            Reply::Json(issue(shared, st, &client, now))
        }
        "refresh_token" => {
            let r = field(body, "refreshToken").to_string();
            if st.refresh.remove(&r).is_none_or(|c| c != client) {
                return err(
                    400,
                    "InvalidGrantException",
                    "refresh token invalid or revoked",
                );
            }
            Reply::Json(issue(shared, st, &client, now))
        }
        _ => err(400, "UnsupportedGrantTypeException", "unsupported grant"),
    }
}
