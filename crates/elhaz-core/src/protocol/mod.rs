//! The wire types shared by the CLI and the daemon.
//!
//! Every frame is one JSON object (see [`crate::codec`] for framing). A request is
//! `{"protocol":4,"id":7,"op":"credentials","name":"dev"}`; the reply echoes `protocol` and
//! `id` and carries either `"ok":{"kind":…}` or `"error":{"code":…,"message":…}`. Every
//! request gets exactly one reply frame, except `list`, whose reply may be split over several
//! `sessions` frames (see [`Response::Sessions`]).
//! `docs/protocol.md` documents every frame and `tests/fixtures/` holds golden copies.
//!
//! [`PROTOCOL_VERSION`] is bumped by hand whenever a frame changes incompatibly; it is not
//! derived from the crate version (a derived formula once collapsed two releases of a peer
//! project into one number). The daemon reads `protocol` and `id` before anything else
//! ([`Probe`]), so a mismatched peer always gets a typed `protocol_mismatch` reply rather than a
//! parse error.

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks. Bump by hand on any incompatible frame change.
///
/// History: 1 — the first version; 2 — `list` replies may span several frames (`more`) and
/// `list` takes `state` / `pattern` filters; 3 — a request may carry a delegate `token`
/// (an older daemon would ignore it and judge the peer by uid alone, so it is a bump);
/// 4 — the IAM Identity Center requests `sso_login` / `sso_status` / `sso_logout`, and a
/// `login_required` error names its login (`sso`).
pub const PROTOCOL_VERSION: u32 = 4;

/// The largest frame (JSON payload, excluding the 4-byte length prefix) either side accepts.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// The first thing the daemon decodes from a frame: enough to answer even a peer that speaks
/// another protocol version.
#[derive(Debug, Deserialize)]
pub struct Probe {
    /// The peer's protocol version.
    pub protocol: u32,
    /// The request id to echo.
    #[serde(default)]
    pub id: u64,
}

/// A request frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame {
    /// The sender's protocol version.
    pub protocol: u32,
    /// Echoed in the reply.
    pub id: u64,
    /// A delegate's token (`ELHAZ_TOKEN` / `ELHAZ_TOKEN_FILE`), for a daemon started with
    /// `--require-token`; the request is then judged by the token, not the peer's uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
    /// What is asked.
    #[serde(flatten)]
    pub request: Request,
}

mod decode;
mod errors;
mod replies;
mod requests;
mod sso;

pub use decode::*;
pub use errors::*;
pub use replies::*;
pub use requests::*;
pub use sso::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_state_names_match_serde() {
        for (s, n) in SessionState::ALL.iter().zip(SessionState::NAMES) {
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{n}\""));
            assert_eq!(s.as_str(), n);
            assert_eq!(n.parse::<SessionState>(), Ok(*s));
        }
        assert!("loading".parse::<SessionState>().is_err());
    }

    #[test]
    fn decode_request_checks_protocol_then_op_then_frame() {
        let ok = format!(r#"{{"protocol":{PROTOCOL_VERSION},"id":7,"op":"ping"}}"#);
        assert_eq!(decode_request(ok.as_bytes()).unwrap().id, 7);
        let old = decode_request(br#"{"protocol":1,"id":3,"op":"ping"}"#).unwrap_err();
        assert_eq!((old.id, old.error.code), (3, ErrorCode::ProtocolMismatch));
        let int_op = format!(r#"{{"protocol":{PROTOCOL_VERSION},"id":4,"op":2}}"#);
        let e = decode_request(int_op.as_bytes()).unwrap_err();
        assert_eq!((e.id, e.error.code), (4, ErrorCode::BadRequest));
        let e = decode_request(b"not json").unwrap_err();
        assert_eq!((e.id, e.error.code), (0, ErrorCode::BadRequest));
    }

    #[test]
    fn start_reports_round_trip_and_leave_the_error_text() {
        for r in [
            StartReport::Ready { pid: 42 },
            StartReport::AlreadyRunning { pid: Some(7) },
            StartReport::AlreadyRunning { pid: None },
        ] {
            let text = format!("warning: one\n{}", r.line());
            assert_eq!(
                StartReport::parse(&text),
                (Some(r), "warning: one\n".into())
            );
        }
        assert_eq!(
            StartReport::Ready { pid: 42 }.line(),
            "elhaz-start-report {\"state\":\"ready\",\"pid\":42}\n"
        );
        // A malformed report is text, not a report.
        let (r, rest) = StartReport::parse("elhaz-start-report {\"state\":\"nope\"}\n");
        assert_eq!(r, None);
        assert!(rest.contains("nope"));
    }

    /// The protocol version is bumped by hand. If this test fails you changed it: make sure the
    /// change is deliberate, update docs/protocol.md, the golden fixtures and CHANGELOG.md.
    #[test]
    fn protocol_version_is_pinned() {
        assert_eq!(PROTOCOL_VERSION, 4);
    }

    #[test]
    fn request_frame_shape() {
        let mut f = RequestFrame {
            protocol: 4,
            id: 7,
            token: None,
            request: Request::Credentials {
                name: "dev".into(),
                mfa_code: None,
            },
        };
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"protocol":4,"id":7,"op":"credentials","name":"dev"}"#
        );
        f.token = Some(Token::new("t0k3n-t0k3n-t0k3n".into()));
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"protocol":4,"id":7,"token":"t0k3n-t0k3n-t0k3n","op":"credentials","name":"dev"}"#
        );
        assert!(!format!("{f:?}").contains("t0k3n"));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let r = Request::Credentials {
            name: "dev".into(),
            mfa_code: Some("123456".into()),
        };
        assert!(!format!("{r:?}").contains("123456"));
        let c = WireCredentials {
            access_key_id: "ASIA".into(),
            secret_access_key: "s3cr3t".into(),
            session_token: "t0k3n".into(),
            expiration: "x".into(),
            account_id: None,
            region: None,
        };
        let d = format!("{c:?}");
        assert!(!d.contains("s3cr3t") && !d.contains("t0k3n"));
    }

    #[test]
    fn sso_login_debug_shows_no_token() {
        let r = Request::SsoLogin {
            sso: SsoTarget {
                sso_session: Some("corp".into()),
                start_url: "https://x.awsapps.com/start".into(),
                region: "eu-west-1".into(),
            },
            sso_token: SsoToken {
                access_token: "SECRET-A".into(),
                expires_at: "2030-01-01T00:00:00Z".into(),
                refresh_token: Some("SECRET-R".into()),
                client_id: Some("SECRET-I".into()),
                client_secret: Some("SECRET-C".into()),
                registration_expires_at: None,
            },
        };
        let d = format!("{r:?}");
        assert!(!d.contains("SECRET"), "{d}");
        assert!(d.contains("x.awsapps.com"), "{d}");
        let RequestFrame { request, .. } = RequestFrame {
            protocol: PROTOCOL_VERSION,
            id: 1,
            token: None,
            request: r,
        };
        let Request::SsoLogin { sso_token, .. } = request else {
            unreachable!("built above")
        };
        assert!(!format!("{sso_token:?}").contains("SECRET"));
    }

    #[test]
    fn unknown_error_code_still_decodes() {
        let w: WireError =
            serde_json::from_str(r#"{"code":"from_the_future","message":"m"}"#).unwrap();
        assert_eq!(w.code, ErrorCode::Unknown);
    }
}
