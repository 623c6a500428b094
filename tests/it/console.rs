//! `elhaz console --print` against a fake federation endpoint served by the test (the real one
//! is AWS's sign-in service, which no test can reach): the session's role credentials reach
//! the fake's getSigninToken, the printed login URL carries the sign-in token and the
//! destination, and no secret reaches stderr or the daemon's logs.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::moto::{Moto, aws_env};
use crate::util::{TestEnv, assert_contains, stderr, stdout};

/// Percent-decoding of a query value.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Serves one getSigninToken request; sends its request line back.
fn fake_federation() -> (String, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/federation", l.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                break;
            }
        }
        let body = r#"{"SigninToken":"FAKE-SIGNIN-TOKEN_123"}"#;
        write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        tx.send(line).unwrap();
    });
    (url, rx)
}

#[test]
fn console_print_signs_in_through_the_federation_endpoint() {
    let env = TestEnv::new();
    let moto = Moto::start(env.root());
    aws_env(&env, &moto.url());
    env.run_ok(&[
        "config",
        "add",
        "web",
        "--role-arn",
        "arn:aws:iam::123456789012:role/web",
    ]);
    let creds: Value =
        serde_json::from_slice(&env.run_ok(&["export", "web", "--format", "json"]).stdout).unwrap();
    let (url, rx) = fake_federation();
    env.set_env("ELHAZ_FEDERATION_URL", &url);
    let out = env.run_ok(&[
        "console",
        "web",
        "--print",
        "--duration",
        "1h",
        "--destination",
        "https://console.aws.amazon.com/s3/home",
    ]);
    let line = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let target = line.split(' ').nth(1).unwrap();
    assert!(
        target.starts_with("/federation?Action=getSigninToken&"),
        "{line}"
    );
    let session = target
        .split('&')
        .find_map(|kv| kv.strip_prefix("Session="))
        .unwrap();
    let session: Value = serde_json::from_str(&decode(session)).unwrap();
    assert_eq!(session["sessionId"], creds["access_key_id"]);
    assert_eq!(session["sessionKey"], creds["secret_access_key"]);
    assert_eq!(session["sessionToken"], creds["session_token"]);
    assert!(target.contains("&SessionDuration=3600"), "{target}");

    let printed = stdout(&out);
    let login = printed.trim();
    assert_contains(
        login,
        &[
            &format!("{url}?Action=login&Issuer=elhaz"),
            "SigninToken=FAKE-SIGNIN-TOKEN_123",
            "Destination=https%3A%2F%2Fconsole.aws.amazon.com%2Fs3%2Fhome",
        ],
    );
    let secret = creds["secret_access_key"].as_str().unwrap();
    assert!(!printed.contains(secret), "credentials in the login URL");
    assert!(!stderr(&out).contains(secret));
    assert!(
        !env.log_text().contains(secret),
        "the secret key reached the logs"
    );
    assert!(!env.log_text().contains("FAKE-SIGNIN-TOKEN"));
}

#[test]
fn console_bad_flags_are_clear() {
    let env = TestEnv::new();
    env.run_ok(&[
        "config",
        "add",
        "web",
        "--role-arn",
        "arn:aws:iam::123456789012:role/web",
    ]);
    let out = env.run_fail(&["console", "web", "--print", "--duration", "5m"]);
    assert_contains(&stderr(&out), &["--duration", "900..43200"]);
}

/// An IAM-user session (no role: GetSessionToken) cannot sign in with its own credentials —
/// the federation endpoint takes role or federated-user credentials only — so the daemon, which
/// holds the long-term keys, calls GetFederationToken (moto serves it) and the CLI hands the
/// federated credentials to the fake federation endpoint. Neither the long-term secret nor the
/// federated one reaches stdout, stderr or the logs.
#[test]
fn console_for_an_iam_user_session_uses_federated_credentials_from_the_daemon() {
    let env = TestEnv::new();
    let moto = Moto::start(env.root());
    aws_env(&env, &moto.url());
    env.run_ok(&["config", "add", "user", "--duration", "1h"]);
    let plain: Value =
        serde_json::from_slice(&env.run_ok(&["export", "user", "--format", "json"]).stdout)
            .unwrap();
    let (url, rx) = fake_federation();
    env.set_env("ELHAZ_FEDERATION_URL", &url);
    let out = env.run_ok(&["console", "user", "--print", "--duration", "3h"]);
    let line = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let target = line.split(' ').nth(1).unwrap();
    let session = target
        .split('&')
        .find_map(|kv| kv.strip_prefix("Session="))
        .unwrap();
    let session: Value = serde_json::from_str(&decode(session)).unwrap();
    // moto answers GetSessionToken and GetFederationToken with the same fixed key id but
    // different session tokens (GetFederationToken's begins `AQoDYXdzEPT`): the token tells
    // which call made the credentials the federation endpoint received.
    assert_ne!(
        session["sessionToken"], plain["session_token"],
        "the GetSessionToken credentials were sent, not federated ones"
    );
    assert!(
        session["sessionToken"]
            .as_str()
            .is_some_and(|t| t.starts_with("AQoDYXdzEPT")),
        "not GetFederationToken's credentials: {session}"
    );
    assert_ne!(
        session["sessionKey"], "testing",
        "the long-term secret left the daemon"
    );
    assert_contains(
        stdout(&out).trim(),
        &["Action=login", "SigninToken=FAKE-SIGNIN-TOKEN_123"],
    );
    // The federated credentials were audited, with GetFederationToken's 3 h lifetime.
    let audit: String = std::fs::read_dir(env.log_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("audit."))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    let exp = audit
        .lines()
        .filter(|l| l.contains("session=user "))
        .filter_map(|l| l.split("expiration=").nth(1))
        .filter_map(|e| humantime::parse_rfc3339(e.trim()).ok())
        .max()
        .expect("no audit line for session user");
    let left = exp
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(
        left > Duration::from_secs(2 * 3600 + 1800) && left <= Duration::from_secs(3 * 3600 + 60),
        "console credentials last {left:?}, not ~3h\n{audit}"
    );
    let secret = session["sessionKey"].as_str().unwrap();
    for text in [stdout(&out), stderr(&out), env.log_text(), audit] {
        assert!(!text.contains(secret), "the federated secret leaked");
    }
}
