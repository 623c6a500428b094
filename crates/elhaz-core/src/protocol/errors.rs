//! Typed errors on the wire: [`ErrorCode`] (what a client may match on) and [`WireError`].

use super::*;

/// Machine-readable error codes. New codes may be added within a protocol version; a client
/// that does not know a code sees [`ErrorCode::Unknown`] and still prints the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame could not be decoded or the request is malformed.
    BadRequest,
    /// The peer speaks another protocol version; `protocol` holds the daemon's.
    ProtocolMismatch,
    /// A frame (a request, or the reply the daemon would have sent) exceeded
    /// [`MAX_FRAME_LEN`].
    FrameTooLarge,
    /// The peer is not allowed to use this daemon or this request.
    PermissionDenied,
    /// No such session config.
    NotFound,
    /// A session config already exists.
    Conflict,
    /// A session config is invalid.
    InvalidConfig,
    /// The session's source would ask this same daemon for credentials (a profile whose
    /// `credential_process` runs `elhaz credential-process`).
    SelfReference,
    /// The session needs an MFA code; `mfa_serial` names the device.
    MfaRequired,
    /// The MFA code was rejected or the MFA command failed.
    MfaFailed,
    /// STS (or the source of base credentials) denied access.
    AccessDenied,
    /// The base credentials are expired or invalid.
    InvalidCredentials,
    /// STS throttled us.
    Throttled,
    /// STS could not be reached or timed out.
    Unavailable,
    /// Another STS failure.
    UpstreamError,
    /// The source of base credentials failed (profile, keyring, web identity token…).
    SourceError,
    /// The only credentials we have are expired; they are never served.
    Expired,
    /// A rate limit for this session or client was hit.
    RateLimited,
    /// The daemon is at its connection limit.
    Busy,
    /// The daemon is shutting down.
    ShuttingDown,
    /// A bug or unexpected failure inside the daemon.
    Internal,
    /// The IAM Identity Center token of the session's start URL is gone or was rejected and
    /// cannot be refreshed silently: someone must run `elhaz sso login` (the message says how).
    LoginRequired,
    /// A code this client does not know (from a newer daemon).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code's wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::ProtocolMismatch => "protocol_mismatch",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::InvalidConfig => "invalid_config",
            ErrorCode::SelfReference => "self_reference",
            ErrorCode::MfaRequired => "mfa_required",
            ErrorCode::MfaFailed => "mfa_failed",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::Throttled => "throttled",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::UpstreamError => "upstream_error",
            ErrorCode::SourceError => "source_error",
            ErrorCode::Expired => "expired",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Busy => "busy",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
            ErrorCode::LoginRequired => "login_required",
            ErrorCode::Unknown => "unknown",
        }
    }
}

/// An error reply: a code to branch on and a message to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable message (upstream messages included verbatim).
    pub message: String,
    /// For `protocol_mismatch`: the daemon's protocol version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
    /// For `mfa_required`: the MFA device serial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_serial: Option<String>,
    /// For `login_required`: the IAM Identity Center login to run (an interactive CLI offers
    /// it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso: Option<Box<SsoTarget>>,
}

impl WireError {
    /// A plain error with a code and message. A message longer than 4 KiB (one quoting a
    /// huge config line, say) is cut, so the reply always fits in a frame.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> WireError {
        let mut message = message.into();
        if message.len() > 4096 {
            let mut cut = 4096;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("… (truncated)");
        }
        WireError {
            code,
            message,
            protocol: None,
            mfa_serial: None,
            sso: None,
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WireError {}
