//! Reading STS's answers: the credentials of a response as a [`Fetched`], their lifetime on
//! STS's own clock (`Expiration − Date`, with the `Date` header recorded by [`DateCapture`]),
//! and an SDK error as a wire error carrying STS's code and message ([`classify`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_sts::config::http::HttpResponse;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use secrecy::SecretString;

use super::Fetched;
use crate::credentials::{Credentials, account_of_arn};
use crate::error::display_chain;
use crate::protocol::{ErrorCode, WireError};

pub(super) fn convert(
    c: Option<&aws_sdk_sts::types::Credentials>,
    arn: Option<String>,
    started: SystemTime,
    note: Option<String>,
) -> Result<Fetched, WireError> {
    convert_dated(c, arn, started, None, note)
}

/// Records the `Date` header of STS's last response to one call (retries overwrite it) and
/// when it arrived on our clock. The engine measures lifetimes with it; `doctor` measures
/// clock skew with it.
#[derive(Debug, Clone, Default)]
pub struct DateCapture(pub(super) Arc<Mutex<Option<(String, SystemTime)>>>);

impl DateCapture {
    /// STS's clock at its last answer, if the answer carried a parseable `Date`.
    pub fn date(&self) -> Option<SystemTime> {
        self.header().and_then(|(d, _)| parse_http_date(&d))
    }

    /// The raw `Date` header of the last answer and our clock when it arrived.
    pub fn header(&self) -> Option<(String, SystemTime)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// An HTTP date (`Wed, 02 Dec 2026 05:27:26 GMT`), as STS sends it in `Date`.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    aws_smithy_types::DateTime::from_str(s, aws_smithy_types::date_time::Format::HttpDate)
        .ok()
        .and_then(|d| SystemTime::try_from(d).ok())
}

impl aws_sdk_sts::config::Intercept for DateCapture {
    fn name(&self) -> &'static str {
        "ElhazStsDateCapture"
    }

    fn read_after_transmit(
        &self,
        ctx: &aws_sdk_sts::config::interceptors::BeforeDeserializationInterceptorContextRef<'_>,
        _rc: &aws_sdk_sts::config::RuntimeComponents,
        _cfg: &mut aws_sdk_sts::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(d) = ctx.response().headers().get("date") {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((d.to_string(), SystemTime::now()));
        }
        Ok(())
    }
}

/// A credential's lifetime: on STS's clock (`Expiration − Date`, less the second `Date`
/// truncates) when the answer says it, else from `started` on our clock (conservative by the
/// round trip).
pub fn lifetime_of(
    expiration: SystemTime,
    started: SystemTime,
    sts_date: Option<SystemTime>,
) -> Duration {
    match sts_date {
        Some(date) => expiration
            .duration_since(date)
            .unwrap_or(Duration::ZERO)
            .saturating_sub(Duration::from_secs(1)),
        None => expiration.duration_since(started).unwrap_or(Duration::ZERO),
    }
}

pub(super) fn convert_dated(
    c: Option<&aws_sdk_sts::types::Credentials>,
    arn: Option<String>,
    started: SystemTime,
    sts_date: Option<SystemTime>,
    note: Option<String>,
) -> Result<Fetched, WireError> {
    let c =
        c.ok_or_else(|| WireError::new(ErrorCode::UpstreamError, "STS returned no credentials"))?;
    let expiration = SystemTime::try_from(*c.expiration()).map_err(|e| {
        WireError::new(
            ErrorCode::UpstreamError,
            format!("STS returned an unusable expiration: {e}"),
        )
    })?;
    let lifetime = lifetime_of(expiration, started, sts_date);
    Ok(Fetched {
        creds: Credentials {
            access_key_id: c.access_key_id().to_string(),
            secret_access_key: SecretString::from(c.secret_access_key().to_string()),
            session_token: SecretString::from(c.session_token().to_string()),
            expiration,
            account_id: arn.as_deref().and_then(account_of_arn),
            arn,
        },
        lifetime,
        note,
    })
}

/// Whether an AWS error code means "slow down": STS's `Throttling`, the JSON services'
/// `ThrottlingException`/`TooManyRequestsException`, `RequestLimitExceeded`, and `SlowDown`,
/// which arrives with HTTP 503 and must not read as "unavailable" (the scheduler slows down on
/// throttling; it does not on an outage). The SDK's own retry classifier's list.
pub fn is_throttling(code: &str) -> bool {
    aws_runtime::retries::classifiers::THROTTLING_ERRORS.contains(&code)
}

/// Maps an SDK error onto a wire error that carries STS's own code and message.
pub fn classify<E>(op: &str, e: SdkError<E, HttpResponse>, with_mfa: bool) -> WireError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &e {
        SdkError::ServiceError(se) => {
            let code = e.code().map(str::to_string);
            let msg = e.message().unwrap_or_default().to_string();
            let status = Some(se.raw().status().as_u16());
            let ec = match code.as_deref() {
                Some("AccessDenied" | "AccessDeniedException") if with_mfa => ErrorCode::MfaFailed,
                Some("AccessDenied" | "AccessDeniedException") => ErrorCode::AccessDenied,
                Some(
                    "ExpiredToken"
                    | "ExpiredTokenException"
                    | "InvalidClientTokenId"
                    | "SignatureDoesNotMatch"
                    | "RequestExpired"
                    | "InvalidIdentityToken"
                    | "IDPRejectedClaim"
                    | "UnrecognizedClientException",
                ) => ErrorCode::InvalidCredentials,
                Some(c) if is_throttling(c) => ErrorCode::Throttled,
                _ => match status {
                    Some(429) => ErrorCode::Throttled,
                    Some(s) if s >= 500 => ErrorCode::Unavailable,
                    Some(403) => ErrorCode::AccessDenied,
                    _ => ErrorCode::UpstreamError,
                },
            };
            let what = match (code, status) {
                (Some(c), _) if msg.is_empty() => c,
                (Some(c), _) => format!("{c}: {msg}"),
                (None, Some(s)) => format!("HTTP {s}"),
                (None, None) => "unknown error".into(),
            };
            WireError::new(ec, format!("STS {op} failed: {what}"))
        }
        SdkError::TimeoutError(_) => {
            WireError::new(ErrorCode::Unavailable, format!("STS {op} timed out"))
        }
        SdkError::DispatchFailure(_) => WireError::new(
            ErrorCode::Unavailable,
            format!("cannot reach STS for {op}: {}", display_chain(&e)),
        ),
        _ => WireError::new(
            ErrorCode::UpstreamError,
            format!("STS {op} failed: {}", display_chain(&e)),
        ),
    }
}
