//! Golden protocol frames (`tests/fixtures/protocol/*.json`).
//!
//! Each fixture is one frame's JSON payload, compact and on one line exactly as serde_json
//! emits it (no trailing newline). Each is decoded into the typed frame, compared with the
//! value built here, and re-encoded with `elhaz::codec::to_payload`, which must give the
//! same bytes. Changing a fixture is a wire change: it needs a `PROTOCOL_VERSION` bump (or
//! is an addition that old peers ignore) and an update of docs/protocol.md.
//!
//! Every `Request` and `Response` variant and every `ErrorCode` is covered; the exhaustive
//! matches below stop compiling when a variant is added, pointing here.

use std::collections::BTreeSet;
use std::path::PathBuf;

use elhaz::codec;
use elhaz::protocol::{
    ErrorCode, Identity, Outcome, PROTOCOL_VERSION, ReplyFrame, Request, RequestFrame, Response,
    SessionInfo, SessionState, SsoAssignment, SsoLoginInfo, SsoTarget, SsoToken, StatusInfo, Token,
    WireCredentials, WireError,
};

use crate::util::*;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/protocol")
}

/// A fixture's bytes, with at most one trailing newline stripped (editors add one).
fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    let mut bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    bytes
}

fn req(id: u64, request: Request) -> RequestFrame {
    RequestFrame {
        protocol: PROTOCOL_VERSION,
        id,
        token: None,
        request,
    }
}

fn ok(id: u64, response: Response) -> ReplyFrame {
    ReplyFrame {
        protocol: PROTOCOL_VERSION,
        id,
        outcome: Outcome::Ok(response),
    }
}

fn err(id: u64, e: WireError) -> ReplyFrame {
    ReplyFrame {
        protocol: PROTOCOL_VERSION,
        id,
        outcome: Outcome::Error(e),
    }
}

fn status(uptime_s: u64, sessions: usize, capacity: usize, idle: Option<u64>) -> StatusInfo {
    StatusInfo {
        pid: 4242,
        version: "0.1.0".into(),
        protocol: PROTOCOL_VERSION,
        socket: "/run/user/1000/elhaz/elhaz.sock".into(),
        uptime_s,
        sessions,
        capacity,
        idle_timeout_s: idle,
    }
}

fn creds(full: bool) -> WireCredentials {
    WireCredentials {
        access_key_id: "ASIAIOSFODNN7EXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        session_token: "FwoGZXIvYXdzEXAMPLETOKEN".into(),
        expiration: "2026-01-01T13:00:00Z".into(),
        account_id: full.then(|| "123456789012".into()),
        region: full.then(|| "eu-west-1".into()),
    }
}

fn corp() -> SsoTarget {
    SsoTarget {
        sso_session: Some("corp".into()),
        start_url: "https://my-org.awsapps.com/start".into(),
        region: "eu-west-1".into(),
    }
}

fn requests() -> Vec<(&'static str, RequestFrame)> {
    vec![
        ("request_ping.json", req(1, Request::Ping)),
        ("request_status.json", req(2, Request::Status)),
        ("request_stop.json", req(3, Request::Stop)),
        (
            "request_list.json",
            req(
                4,
                Request::List {
                    state: None,
                    pattern: None,
                },
            ),
        ),
        (
            "request_list_filtered.json",
            req(
                4,
                Request::List {
                    state: Some("failed".into()),
                    pattern: Some("prod-*".into()),
                },
            ),
        ),
        (
            "request_add.json",
            req(5, Request::Add { name: "dev".into() }),
        ),
        (
            "request_remove.json",
            req(6, Request::Remove { name: "dev".into() }),
        ),
        (
            "request_credentials.json",
            req(
                7,
                Request::Credentials {
                    name: "dev".into(),
                    mfa_code: None,
                },
            ),
        ),
        (
            "request_credentials_token.json",
            RequestFrame {
                token: Some(Token::new("0123456789abcdef0123456789abcdef".into())),
                ..req(
                    7,
                    Request::Credentials {
                        name: "ci".into(),
                        mfa_code: None,
                    },
                )
            },
        ),
        (
            "request_credentials_mfa.json",
            req(
                8,
                Request::Credentials {
                    name: "prod".into(),
                    mfa_code: Some("123456".into()),
                },
            ),
        ),
        (
            "request_whoami.json",
            req(
                9,
                Request::Whoami {
                    name: "dev".into(),
                    mfa_code: None,
                },
            ),
        ),
        (
            "request_whoami_mfa.json",
            req(
                10,
                Request::Whoami {
                    name: "prod".into(),
                    mfa_code: Some("654321".into()),
                },
            ),
        ),
        (
            "request_console_credentials.json",
            req(
                11,
                Request::ConsoleCredentials {
                    name: "iam-user".into(),
                    duration_s: Some(3600),
                },
            ),
        ),
        (
            "request_sso_login.json",
            req(
                12,
                Request::SsoLogin {
                    sso: corp(),
                    sso_token: SsoToken {
                        access_token: "aoaAAAAAGexampleaccesstoken".into(),
                        expires_at: "2026-01-01T13:00:00Z".into(),
                        refresh_token: Some("aorAAAAAGexamplerefreshtoken".into()),
                        client_id: Some("cid-example".into()),
                        client_secret: Some("cs-example".into()),
                        registration_expires_at: Some("2026-03-31T12:00:00Z".into()),
                    },
                },
            ),
        ),
        ("request_sso_status.json", req(13, Request::SsoStatus)),
        (
            "request_sso_assignments.json",
            req(15, Request::SsoAssignments { sso: corp() }),
        ),
        (
            "request_sso_logout.json",
            req(
                14,
                Request::SsoLogout {
                    sso: corp(),
                    portal_logout: true,
                },
            ),
        ),
    ]
}

fn replies() -> Vec<(&'static str, ReplyFrame)> {
    let mut mfa = WireError::new(ErrorCode::MfaRequired, "session \"prod\" needs an MFA code");
    mfa.mfa_serial = Some("arn:aws:iam::123456789012:mfa/alice".into());
    let mut mismatch = WireError::new(
        ErrorCode::ProtocolMismatch,
        "daemon speaks protocol 4, this client speaks 999: run `elhaz daemon stop` (the next \
         command starts a matching daemon)",
    );
    mismatch.protocol = Some(PROTOCOL_VERSION);
    let mut login_required = WireError::new(
        ErrorCode::LoginRequired,
        "IAM Identity Center login needed for https://my-org.awsapps.com/start (the refresh was \
         refused (InvalidGrantException)): run `elhaz sso login corp`",
    );
    login_required.sso = Some(Box::new(corp()));
    vec![
        (
            "reply_pong.json",
            ok(
                1,
                Response::Pong {
                    version: "0.1.0".into(),
                    pid: 4242,
                },
            ),
        ),
        (
            "reply_status.json",
            ok(2, Response::Status(status(3725, 2, 64, Some(1800)))),
        ),
        (
            "reply_status_no_idle_timeout.json",
            ok(2, Response::Status(status(0, 0, 8, None))),
        ),
        (
            "reply_stopping.json",
            ok(3, Response::Stopping { pid: 4242 }),
        ),
        (
            "reply_sessions.json",
            ok(
                4,
                Response::Sessions {
                    sessions: vec![
                        SessionInfo {
                            name: "prod".into(),
                            state: SessionState::Fresh,
                            source: "profile".into(),
                            expiration: Some("2026-01-01T13:00:00Z".into()),
                            next_refresh: Some("2026-01-01T12:40:00Z".into()),
                            last_error: None,
                            hits: 17,
                            sts_calls: 2,
                            warning: None,
                            mfa_expiration: None,
                            expires_in_s: None,
                            clock_skew_secs: None,
                        },
                        SessionInfo {
                            name: "ci".into(),
                            state: SessionState::Failed,
                            source: "web_identity".into(),
                            expiration: None,
                            next_refresh: None,
                            last_error: Some(
                                "AccessDenied: not authorized to perform \
                                 sts:AssumeRoleWithWebIdentity"
                                    .into(),
                            ),
                            hits: 0,
                            sts_calls: 3,
                            warning: Some(
                                "credentials last 15m and are refreshed 5m before expiry".into(),
                            ),
                            mfa_expiration: None,
                            expires_in_s: None,
                            clock_skew_secs: None,
                        },
                    ],
                    more: false,
                },
            ),
        ),
        (
            "reply_sessions_empty.json",
            ok(
                4,
                Response::Sessions {
                    sessions: vec![],
                    more: false,
                },
            ),
        ),
        (
            // Every session state once: the wire names of `SessionState`.
            "reply_sessions_every_state.json",
            ok(
                4,
                Response::Sessions {
                    sessions: SessionState::ALL
                        .iter()
                        .map(|s| SessionInfo {
                            name: s.as_str().replace('_', "-"),
                            state: *s,
                            source: "default".into(),
                            ..SessionInfo::default()
                        })
                        .collect(),
                    more: false,
                },
            ),
        ),
        (
            "reply_sessions_more.json",
            ok(
                4,
                Response::Sessions {
                    sessions: vec![SessionInfo {
                        name: "a1".into(),
                        state: SessionState::Fresh,
                        source: "default".into(),
                        expiration: None,
                        next_refresh: None,
                        last_error: None,
                        hits: 0,
                        sts_calls: 1,
                        warning: None,
                        mfa_expiration: None,
                        expires_in_s: None,
                        clock_skew_secs: None,
                    }],
                    more: true,
                },
            ),
        ),
        (
            "reply_added.json",
            ok(
                5,
                Response::Added {
                    session: SessionInfo {
                        name: "dev".into(),
                        state: SessionState::Idle,
                        source: "default".into(),
                        expiration: None,
                        next_refresh: None,
                        last_error: None,
                        hits: 0,
                        sts_calls: 0,
                        warning: None,
                        mfa_expiration: None,
                        expires_in_s: None,
                        clock_skew_secs: None,
                    },
                },
            ),
        ),
        (
            "reply_removed.json",
            ok(
                6,
                Response::Removed {
                    name: "dev".into(),
                    was_cached: true,
                },
            ),
        ),
        (
            "reply_credentials.json",
            ok(7, Response::Credentials(creds(true))),
        ),
        (
            "reply_credentials_minimal.json",
            ok(7, Response::Credentials(creds(false))),
        ),
        (
            "reply_identity.json",
            ok(
                9,
                Response::Identity(Identity {
                    account: "123456789012".into(),
                    arn: "arn:aws:sts::123456789012:assumed-role/dev/elhaz-alice".into(),
                    user_id: "AROA3XFRBF535PLBIFPI4:elhaz-alice".into(),
                    expiration: "2026-01-01T13:00:00Z".into(),
                    mfa_expiration: None,
                }),
            ),
        ),
        ("reply_error_mfa_required.json", err(8, mfa)),
        ("reply_protocol_mismatch.json", err(5, mismatch)),
        (
            "reply_error_bad_request.json",
            err(
                0,
                WireError::new(
                    ErrorCode::BadRequest,
                    "malformed frame: expected value at line 1 column 1",
                ),
            ),
        ),
        (
            "reply_error_frame_too_large.json",
            err(
                0,
                WireError::new(
                    ErrorCode::FrameTooLarge,
                    "frame exceeds the 65536-byte limit",
                ),
            ),
        ),
        ("reply_error_login_required.json", err(9, login_required)),
        (
            "reply_sso_logged_in.json",
            ok(
                12,
                Response::SsoLoggedIn {
                    sso: corp(),
                    expires_at: "2026-01-01T13:00:00Z".into(),
                },
            ),
        ),
        (
            "reply_sso_status.json",
            ok(
                13,
                Response::SsoStatus {
                    logins: vec![
                        SsoLoginInfo {
                            sso: corp(),
                            expires_at: Some("2026-01-01T13:00:00Z".into()),
                            refresh_token: true,
                            login_required: false,
                            sessions: vec!["dev".into(), "prod".into()],
                        },
                        SsoLoginInfo {
                            sso: SsoTarget {
                                sso_session: None,
                                start_url: "https://old.awsapps.com/start".into(),
                                region: "us-east-1".into(),
                            },
                            expires_at: None,
                            refresh_token: false,
                            login_required: true,
                            sessions: vec![],
                        },
                    ],
                },
            ),
        ),
        (
            "reply_sso_assignments.json",
            ok(
                15,
                Response::SsoAssignments {
                    assignments: vec![
                        SsoAssignment {
                            account_id: "111111111111".into(),
                            account_name: "Prod Account".into(),
                            role_name: "ReadOnly".into(),
                        },
                        SsoAssignment {
                            account_id: "222222222222".into(),
                            account_name: "dev".into(),
                            role_name: "Developer".into(),
                        },
                    ],
                },
            ),
        ),
        (
            "reply_sso_logged_out.json",
            ok(
                14,
                Response::SsoLoggedOut {
                    sso: corp(),
                    had_token: true,
                    portal_error: None,
                },
            ),
        ),
        (
            "reply_error_not_found.json",
            err(
                5,
                WireError::new(
                    ErrorCode::NotFound,
                    "no session config named \"nope\" (expected \
                     /home/alice/.config/elhaz/configs/nope.toml)",
                ),
            ),
        ),
        (
            "reply_error_permission_denied.json",
            err(
                0,
                WireError::new(
                    ErrorCode::PermissionDenied,
                    "permission denied: this daemon serves uid 1000 only",
                ),
            ),
        ),
    ]
}

/// Exhaustive: a new `Request` variant breaks the build here.
fn request_kind(r: &Request) -> &'static str {
    match r {
        Request::Ping => "ping",
        Request::Status => "status",
        Request::Stop => "stop",
        Request::List { .. } => "list",
        Request::Add { .. } => "add",
        Request::Remove { .. } => "remove",
        Request::Credentials { .. } => "credentials",
        Request::Whoami { .. } => "whoami",
        Request::ConsoleCredentials { .. } => "console_credentials",
        Request::SsoLogin { .. } => "sso_login",
        Request::SsoStatus => "sso_status",
        Request::SsoAssignments { .. } => "sso_assignments",
        Request::SsoLogout { .. } => "sso_logout",
    }
}
const ALL_REQUESTS: &[&str] = &[
    "ping",
    "status",
    "stop",
    "list",
    "add",
    "remove",
    "credentials",
    "whoami",
    "console_credentials",
    "sso_login",
    "sso_status",
    "sso_assignments",
    "sso_logout",
];

/// Exhaustive: a new `Response` variant breaks the build here.
fn response_kind(r: &Response) -> &'static str {
    match r {
        Response::Pong { .. } => "pong",
        Response::Status(_) => "status",
        Response::Stopping { .. } => "stopping",
        Response::Sessions { .. } => "sessions",
        Response::Added { .. } => "added",
        Response::Removed { .. } => "removed",
        Response::Credentials(_) => "credentials",
        Response::Identity(_) => "identity",
        Response::SsoLoggedIn { .. } => "sso_logged_in",
        Response::SsoStatus { .. } => "sso_status",
        Response::SsoAssignments { .. } => "sso_assignments",
        Response::SsoLoggedOut { .. } => "sso_logged_out",
    }
}
const ALL_RESPONSES: &[&str] = &[
    "pong",
    "status",
    "stopping",
    "sessions",
    "added",
    "removed",
    "credentials",
    "identity",
    "sso_logged_in",
    "sso_status",
    "sso_assignments",
    "sso_logged_out",
];

/// Every error code, with the exhaustive match keeping the list honest.
const ALL_CODES: &[ErrorCode] = &[
    ErrorCode::BadRequest,
    ErrorCode::ProtocolMismatch,
    ErrorCode::FrameTooLarge,
    ErrorCode::PermissionDenied,
    ErrorCode::NotFound,
    ErrorCode::Conflict,
    ErrorCode::InvalidConfig,
    ErrorCode::MfaRequired,
    ErrorCode::MfaFailed,
    ErrorCode::AccessDenied,
    ErrorCode::InvalidCredentials,
    ErrorCode::Throttled,
    ErrorCode::Unavailable,
    ErrorCode::UpstreamError,
    ErrorCode::SourceError,
    ErrorCode::Expired,
    ErrorCode::RateLimited,
    ErrorCode::Busy,
    ErrorCode::ShuttingDown,
    ErrorCode::Internal,
    ErrorCode::Unknown,
    ErrorCode::SelfReference,
    ErrorCode::LoginRequired,
];
fn code_index(c: ErrorCode) -> usize {
    match c {
        ErrorCode::BadRequest => 0,
        ErrorCode::ProtocolMismatch => 1,
        ErrorCode::FrameTooLarge => 2,
        ErrorCode::PermissionDenied => 3,
        ErrorCode::NotFound => 4,
        ErrorCode::Conflict => 5,
        ErrorCode::InvalidConfig => 6,
        ErrorCode::MfaRequired => 7,
        ErrorCode::MfaFailed => 8,
        ErrorCode::AccessDenied => 9,
        ErrorCode::InvalidCredentials => 10,
        ErrorCode::Throttled => 11,
        ErrorCode::Unavailable => 12,
        ErrorCode::UpstreamError => 13,
        ErrorCode::SourceError => 14,
        ErrorCode::Expired => 15,
        ErrorCode::RateLimited => 16,
        ErrorCode::Busy => 17,
        ErrorCode::ShuttingDown => 18,
        ErrorCode::Internal => 19,
        ErrorCode::Unknown => 20,
        ErrorCode::SelfReference => 21,
        ErrorCode::LoginRequired => 22,
    }
}

fn check_golden<T>(name: &str, expected: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = fixture(name);
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains('\n'),
        "{name}: fixtures are single-line JSON"
    );
    let decoded: T = codec::from_payload(&bytes)
        .unwrap_or_else(|e| panic!("{name} does not decode: {e}\n{text}"));
    assert_eq!(&decoded, expected, "{name} decodes to another value");
    let encoded = codec::to_payload(expected);
    assert_eq!(
        String::from_utf8_lossy(&encoded),
        text,
        "{name}: re-encoding does not give the fixture's bytes"
    );
    assert_eq!(encoded, bytes, "{name}: bytes differ");
}

#[test]
fn request_fixtures_round_trip_byte_for_byte() {
    let mut kinds = BTreeSet::new();
    for (name, frame) in requests() {
        check_golden(name, &frame);
        assert_eq!(frame.protocol, PROTOCOL_VERSION);
        kinds.insert(request_kind(&frame.request));
    }
    let all: BTreeSet<_> = ALL_REQUESTS.iter().copied().collect();
    assert_eq!(kinds, all, "every Request variant needs a golden fixture");
}

#[test]
fn reply_fixtures_round_trip_byte_for_byte() {
    let mut kinds = BTreeSet::new();
    let mut errors = 0;
    for (name, frame) in replies() {
        check_golden(name, &frame);
        match &frame.outcome {
            Outcome::Ok(r) => {
                kinds.insert(response_kind(r));
            }
            Outcome::Error(_) => errors += 1,
        }
    }
    let all: BTreeSet<_> = ALL_RESPONSES.iter().copied().collect();
    assert_eq!(kinds, all, "every Response variant needs a golden fixture");
    assert!(errors >= 2);
}

#[test]
fn every_fixture_file_is_checked() {
    let known: BTreeSet<String> = requests()
        .iter()
        .map(|(n, _)| n.to_string())
        .chain(replies().iter().map(|(n, _)| n.to_string()))
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(on_disk, known, "fixture files and checked frames differ");
}

#[test]
fn error_codes_spell_as_on_the_wire() {
    for (i, &code) in ALL_CODES.iter().enumerate() {
        assert_eq!(code_index(code), i, "ALL_CODES is out of order at {code:?}");
        let json = serde_json::to_string(&code).unwrap();
        assert_eq!(json, format!("\"{}\"", code.as_str()), "{code:?}");
        let back: ErrorCode = serde_json::from_str(&json).unwrap();
        assert_eq!(back, code);
    }
    // A code from a newer daemon decodes as `unknown` and keeps its message.
    let reply: ReplyFrame = codec::from_payload(
        br#"{"protocol":4,"id":3,"error":{"code":"from_the_future","message":"m","extra":1}}"#,
    )
    .unwrap();
    assert_eq!(
        reply.outcome,
        Outcome::Error(WireError::new(ErrorCode::Unknown, "m"))
    );
}

/// The daemon's own frames agree with the fixtures: the golden requests are understood and
/// the replies it generates itself match byte for byte.
#[test]
fn live_daemon_speaks_the_golden_frames() {
    let env = TestEnv::new();
    let d = env.start_daemon_foreground(&[]);
    let mut c = env.raw();

    c.send_frame(&fixture("request_ping.json"));
    let reply: ReplyFrame = codec::from_payload(&c.read_frame().unwrap()).unwrap();
    assert_eq!(
        reply,
        ok(
            1,
            Response::Pong {
                version: env!("CARGO_PKG_VERSION").into(),
                pid: d.pid(),
            }
        )
    );

    c.send_frame(&fixture("request_status.json"));
    let payload = c.read_frame().unwrap();
    let reply: ReplyFrame = codec::from_payload(&payload).unwrap();
    assert_eq!(reply.id, 2);
    let Outcome::Ok(Response::Status(s)) = reply.outcome else {
        panic!("not a status reply: {}", String::from_utf8_lossy(&payload));
    };
    assert_eq!(
        (s.pid, s.protocol, s.capacity),
        (d.pid(), PROTOCOL_VERSION, 64)
    );
    // Same keys, in the same order, as the golden status without an idle timeout.
    let keys = |v: &serde_json::Value| -> Vec<String> {
        v["ok"].as_object().unwrap().keys().cloned().collect()
    };
    let live: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    let golden: serde_json::Value =
        serde_json::from_slice(&fixture("reply_status_no_idle_timeout.json")).unwrap();
    assert_eq!(keys(&live), keys(&golden));

    c.send_frame(&fixture("request_list.json"));
    // request_list.json has id 4, as has the golden empty list.
    assert_eq!(
        String::from_utf8(c.read_frame().unwrap()).unwrap(),
        String::from_utf8(fixture("reply_sessions_empty.json")).unwrap()
    );

    c.send_frame(br#"{"protocol":999,"id":5,"op":"ping"}"#);
    assert_eq!(
        String::from_utf8(c.read_frame().unwrap()).unwrap(),
        String::from_utf8(fixture("reply_protocol_mismatch.json")).unwrap()
    );

    let mut big = env.raw();
    big.send_raw(&(70_000u32).to_be_bytes());
    assert_eq!(
        String::from_utf8(big.read_frame().unwrap()).unwrap(),
        String::from_utf8(fixture("reply_error_frame_too_large.json")).unwrap()
    );

    c.send_frame(&fixture("request_stop.json"));
    let reply: ReplyFrame = codec::from_payload(&c.read_frame().unwrap()).unwrap();
    assert_eq!(reply, ok(3, Response::Stopping { pid: d.pid() }));
    let mut d = d;
    assert!(d.wait_exit(DEADLINE).success());
}
