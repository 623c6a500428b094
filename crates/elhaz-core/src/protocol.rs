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

/// A delegate's bearer token on the wire: redacted from `Debug`, zeroized on drop.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    /// Wraps a token.
    pub fn new(token: String) -> Token {
        Token(token)
    }

    /// The token's bytes (to hash; never to log).
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.0.zeroize();
    }
}

/// Every request the daemon understands; one handler function each in `daemon::handler`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Liveness and version check.
    Ping,
    /// Daemon status: pid, version, uptime, cache occupancy.
    Status,
    /// Graceful shutdown.
    Stop,
    /// Cached sessions with their state, optionally filtered. The reply may span several
    /// frames ([`Response::Sessions`] with `more`), so any number of sessions can be listed.
    List {
        /// Only sessions in this state (`fresh`, `stale`, …).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<String>,
        /// Only sessions whose name matches this glob (`*` and `?`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pattern: Option<String>,
    },
    /// Load a session config and warm its credentials.
    Add {
        /// Session name.
        name: String,
    },
    /// Evict a session, cancelling its refresh and dropping its secrets.
    Remove {
        /// Session name.
        name: String,
    },
    /// Temporary credentials for a session (loading it if it is not cached).
    Credentials {
        /// Session name.
        name: String,
        /// An MFA code typed by the user, when the daemon asked for one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mfa_code: Option<String>,
    },
    /// Credentials for the AWS console's federation sign-in (`elhaz console`): for a session
    /// whose credentials come from GetSessionToken (an IAM user, no role), federated-user
    /// credentials from GetFederationToken with the long-term keys the daemon holds; for
    /// every other session its usual credentials. Replied to with
    /// [`Response::Credentials`].
    ConsoleCredentials {
        /// Session name.
        name: String,
        /// GetFederationToken's `DurationSeconds` (default 1 h).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_s: Option<u32>,
    },
    /// GetCallerIdentity made with the session's own credentials.
    Whoami {
        /// Session name.
        name: String,
        /// An MFA code typed by the user, when the daemon asked for one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mfa_code: Option<String>,
    },
    /// Hands the daemon an IAM Identity Center token that `elhaz sso login` obtained, for
    /// every session of that start URL. The owner's only (an admin request): the one way a
    /// token reaches a daemon with `sso_token_cache = "memory"`.
    SsoLogin {
        /// The login the token belongs to.
        sso: SsoTarget,
        /// The token (redacted from `Debug`, zeroized on drop).
        sso_token: SsoToken,
    },
    /// The daemon's IAM Identity Center logins: expiry, refresh token present, state. No
    /// secret in the reply; the owner's only.
    SsoStatus,
    /// The accounts and roles the portal lists for a login, with the daemon's token
    /// (`sso populate` in memory-only mode). The owner's only.
    SsoAssignments {
        /// The login.
        sso: SsoTarget,
    },
    /// Drops the daemon's token of a login, first calling the portal's Logout with it when
    /// `portal_logout` is set. The owner's only.
    SsoLogout {
        /// The login to end.
        sso: SsoTarget,
        /// Call the portal's Logout with the daemon's token (memory-only mode, where no
        /// other copy exists).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        portal_logout: bool,
    },
}

/// An IAM Identity Center login as the wire names it: the `[sso_sessions]` name, when the
/// config used one, and the start URL and region (the daemon re-resolves a named one from its
/// `elhaz.toml` and refuses a mismatch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsoTarget {
    /// The `[sso_sessions.NAME]` name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso_session: Option<String>,
    /// The AWS access portal URL.
    pub start_url: String,
    /// The IAM Identity Center region.
    pub region: String,
}

/// An IAM Identity Center OIDC token on the wire (`sso_login`): every string zeroized on
/// drop, `Debug` shows only the expiry.
#[derive(
    Clone, PartialEq, Eq, Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop,
)]
pub struct SsoToken {
    /// The portal bearer token.
    pub access_token: String,
    /// When it expires (RFC 3339, UTC).
    pub expires_at: String,
    /// The refresh token, when the login's scopes included `sso:account:access`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The registered OIDC client (for refreshes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The registered client's secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// When the client registration expires (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_expires_at: Option<String>,
}

impl std::fmt::Debug for SsoToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoToken")
            .field("expires_at", &self.expires_at)
            .field("refresh_token", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

/// One account and role of a login (`sso_assignments`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsoAssignment {
    /// The account id.
    pub account_id: String,
    /// The account's name.
    pub account_name: String,
    /// The role (permission set) name.
    pub role_name: String,
}

/// One IAM Identity Center login the daemon holds (`sso_status`). Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsoLoginInfo {
    /// The login.
    pub sso: SsoTarget,
    /// When the held access token expires (RFC 3339, UTC); absent without a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Whether a refresh token is held (renewed silently).
    pub refresh_token: bool,
    /// The sessions of this login are in state `login_required`.
    pub login_required: bool,
    /// Cached sessions that use this login.
    pub sessions: Vec<String>,
}

impl std::fmt::Debug for Request {
    // Hand-written so an MFA code never reaches a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Ping => f.write_str("Ping"),
            Request::Status => f.write_str("Status"),
            Request::Stop => f.write_str("Stop"),
            Request::List { .. } => f.write_str("List"),
            Request::Add { name } => write!(f, "Add({name})"),
            Request::Remove { name } => write!(f, "Remove({name})"),
            Request::Credentials { name, mfa_code } => {
                write!(f, "Credentials({name}, mfa={})", mfa_code.is_some())
            }
            Request::Whoami { name, mfa_code } => {
                write!(f, "Whoami({name}, mfa={})", mfa_code.is_some())
            }
            Request::ConsoleCredentials { name, .. } => write!(f, "ConsoleCredentials({name})"),
            Request::SsoLogin { sso, .. } => write!(f, "SsoLogin({}, <redacted>)", sso.start_url),
            Request::SsoStatus => f.write_str("SsoStatus"),
            Request::SsoAssignments { sso } => write!(f, "SsoAssignments({})", sso.start_url),
            Request::SsoLogout { sso, .. } => write!(f, "SsoLogout({})", sso.start_url),
        }
    }
}

impl Request {
    /// A short name for logs and the audit trail.
    pub fn op(&self) -> &'static str {
        match self {
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

    /// Whether this request is the owner's only: it changes the daemon, or carries or
    /// describes an IAM Identity Center login (refused to shared-mode peers and to delegate
    /// tokens alike).
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Request::Stop
                | Request::Add { .. }
                | Request::Remove { .. }
                | Request::SsoLogin { .. }
                | Request::SsoStatus
                | Request::SsoAssignments { .. }
                | Request::SsoLogout { .. }
        )
    }
}

/// A reply frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyFrame {
    /// The daemon's protocol version.
    pub protocol: u32,
    /// The request's id.
    pub id: u64,
    /// Success or failure.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// `"ok": Response` or `"error": WireError`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The request succeeded.
    Ok(Response),
    /// The request failed.
    Error(WireError),
}

/// Successful replies, one per request kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    /// Reply to [`Request::Ping`].
    Pong {
        /// Daemon crate version.
        version: String,
        /// Daemon pid.
        pid: u32,
    },
    /// Reply to [`Request::Status`].
    Status(StatusInfo),
    /// Reply to [`Request::Stop`]: the daemon is shutting down.
    Stopping {
        /// Daemon pid, so the caller can wait for it to exit.
        pid: u32,
    },
    /// Reply to [`Request::List`], possibly one of several frames with the same `id`: every
    /// frame but the last has `more: true`, and the client concatenates their `sessions`. The
    /// daemon takes one snapshot of the cache and splits it so each frame stays under
    /// [`MAX_FRAME_LEN`].
    Sessions {
        /// Cached sessions, most recently used first.
        sessions: Vec<SessionInfo>,
        /// Another `sessions` frame for the same request follows.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more: bool,
    },
    /// Reply to [`Request::Add`].
    Added {
        /// The session as it is now.
        session: SessionInfo,
    },
    /// Reply to [`Request::Remove`].
    Removed {
        /// Session name.
        name: String,
        /// Whether it was cached.
        was_cached: bool,
    },
    /// Reply to [`Request::Credentials`] and [`Request::ConsoleCredentials`].
    Credentials(WireCredentials),
    /// Reply to [`Request::Whoami`].
    Identity(Identity),
    /// Reply to [`Request::SsoLogin`]: the daemon holds the token now.
    SsoLoggedIn {
        /// The login.
        sso: SsoTarget,
        /// When the token expires.
        expires_at: String,
    },
    /// Reply to [`Request::SsoStatus`].
    SsoStatus {
        /// Every login the daemon knows, by start URL.
        logins: Vec<SsoLoginInfo>,
    },
    /// Reply to [`Request::SsoAssignments`].
    SsoAssignments {
        /// Every account and role, in the portal's order.
        assignments: Vec<SsoAssignment>,
    },
    /// Reply to [`Request::SsoLogout`].
    SsoLoggedOut {
        /// The login.
        sso: SsoTarget,
        /// Whether the daemon held a token for it.
        had_token: bool,
        /// The portal's Logout failed (best effort: the token is dropped regardless).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        portal_error: Option<String>,
    },
}

/// Daemon status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// Daemon pid.
    pub pid: u32,
    /// Daemon crate version.
    pub version: String,
    /// Daemon protocol version.
    pub protocol: u32,
    /// Socket the daemon listens on.
    pub socket: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Sessions cached.
    pub sessions: usize,
    /// Cache capacity.
    pub capacity: usize,
    /// Idle timeout in seconds, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_s: Option<u64>,
}

/// The state of a cached session, as `daemon list` and the `list` reply show it. This enum is
/// the one place the states are defined and explained; docs/protocol.md lists their wire names
/// and a test keeps that list equal to [`SessionState::NAMES`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Valid credentials, no error.
    Fresh,
    /// A fetch is in flight (valid credentials may be served meanwhile).
    Refreshing,
    /// Valid credentials, but the last refresh failed (retried in the background).
    Stale,
    /// Nothing valid; the last fetch failed.
    Failed,
    /// Nothing valid; the credentials held have expired and no fetch is under way.
    Expired,
    /// Loaded, never fetched.
    #[default]
    Idle,
    /// Nothing valid; the IAM Identity Center login must be renewed (`elhaz sso login`).
    LoginRequired,
}

impl SessionState {
    /// Every state, in the order docs list them.
    pub const ALL: [SessionState; 7] = [
        SessionState::Fresh,
        SessionState::Refreshing,
        SessionState::Stale,
        SessionState::Failed,
        SessionState::Expired,
        SessionState::Idle,
        SessionState::LoginRequired,
    ];
    /// The wire names of [`SessionState::ALL`], in the same order.
    pub const NAMES: [&'static str; 7] = [
        "fresh",
        "refreshing",
        "stale",
        "failed",
        "expired",
        "idle",
        "login_required",
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        // ALL and NAMES are in the same order (checked by a unit test).
        let i = Self::ALL.iter().position(|s| *s == self).unwrap_or(0);
        Self::NAMES[i]
    }
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SessionState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Self::ALL[i])
            .ok_or_else(|| format!("unknown state; expected one of {}", Self::NAMES.join(", ")))
    }
}

/// One cached session as `daemon list` shows it. Holds no secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Session name.
    pub name: String,
    /// Its state.
    pub state: SessionState,
    /// Where the base credentials come from (`default`, `profile`, `session`, `keyring`,
    /// `web_identity`).
    pub source: String,
    /// Expiration of the held credentials (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    /// When the next background refresh is due (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_refresh: Option<String>,
    /// The last refresh error, if the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Credential requests served.
    pub hits: u64,
    /// STS calls made for this session.
    #[serde(default)]
    pub sts_calls: u64,
    /// A warning about the config (e.g. a duration too short for botocore's refresh window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// For a session behind MFA: when its MFA session ends (RFC 3339, UTC) and a new code is
    /// needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_expiration: Option<String>,
    /// Seconds of validity left by the stricter of the daemon's clocks (monotonic, and wall
    /// against STS's `Expiration` corrected for clock skew); negative once expired. Absent
    /// from older daemons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<i64>,
    /// STS's clock minus the daemon's, in seconds, measured from the `Date` of STS's answer;
    /// present only when it exceeds a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_secs: Option<i64>,
}

/// Temporary credentials on the wire. `Debug` redacts the secret parts.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireCredentials {
    /// Access key id (`ASIA…`).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token.
    pub session_token: String,
    /// Expiration, RFC 3339 UTC with a trailing `Z`.
    pub expiration: String,
    /// The account the credentials belong to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// The config's region, for consumers that export it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl std::fmt::Debug for WireCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &"<redacted>")
            .field("expiration", &self.expiration)
            .finish()
    }
}

impl Drop for WireCredentials {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.secret_access_key.zeroize();
        self.session_token.zeroize();
    }
}

/// The caller identity of a session's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Account id.
    pub account: String,
    /// Caller ARN (the assumed role for role sessions).
    pub arn: String,
    /// Unique user id.
    pub user_id: String,
    /// Expiration of the credentials used.
    pub expiration: String,
    /// For a session behind MFA: when its MFA session ends (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_expiration: Option<String>,
}

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

/// A frame the daemon will not serve: the error to answer with, under the request's `id` (0
/// when the frame did not even carry one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The id to answer under.
    pub id: u64,
    /// The typed error.
    pub error: WireError,
}

/// Decodes one request frame exactly as the daemon does; the server and the fuzz target call
/// this one function, so what is fuzzed is what is served.
///
/// 1. [`Probe`] first (`protocol` and `id` only), so a peer speaking another protocol version
///    always gets a typed `protocol_mismatch` rather than a parse error.
/// 2. The whole [`RequestFrame`].
/// 3. Its `op` must have been a JSON string: serde also reads an integer as an enum's variant
///    *index*, so `"op":2` would otherwise parse as `stop`.
pub fn decode_request(bytes: &[u8]) -> Result<RequestFrame, Rejected> {
    #[derive(Deserialize)]
    struct Op {
        op: serde_json::Value,
    }
    let bad = |id, message: String| Rejected {
        id,
        error: WireError::new(ErrorCode::BadRequest, message),
    };
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| bad(0, format!("malformed frame: {e}")))?;
    if probe.protocol != PROTOCOL_VERSION {
        return Err(Rejected {
            id: probe.id,
            error: protocol_mismatch(probe.protocol),
        });
    }
    let frame: RequestFrame = serde_json::from_slice(bytes)
        .map_err(|e| bad(probe.id, format!("malformed request: {e}")))?;
    if !serde_json::from_slice::<Op>(bytes).is_ok_and(|o| o.op.is_string()) {
        return Err(bad(
            probe.id,
            "malformed request: `op` must be a string".into(),
        ));
    }
    Ok(frame)
}

/// The error a peer speaking `peer_protocol` gets: it names both versions and the way out.
pub fn protocol_mismatch(peer_protocol: u32) -> WireError {
    let mut e = WireError::new(
        ErrorCode::ProtocolMismatch,
        format!(
            "daemon speaks protocol {PROTOCOL_VERSION}, this client speaks {peer_protocol}: run \
             `elhaz daemon stop` (the next command starts a matching daemon)"
        ),
    );
    e.protocol = Some(PROTOCOL_VERSION);
    e
}

/// The line a detached daemon writes to its start-up pipe (its stderr, which the spawning CLI
/// reads until EOF) once it knows how the start ended: [`START_REPORT_PREFIX`] followed by a
/// JSON [`StartReport`]. Anything else on the pipe is the daemon's error text, shown as is. The
/// CLI decides "started" or "already running" from this typed line, never from message text.
pub const START_REPORT_PREFIX: &str = "elhaz-start-report ";

/// How a detached daemon's start ended (see [`START_REPORT_PREFIX`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StartReport {
    /// This process serves the socket now.
    Ready {
        /// Its pid.
        pid: u32,
    },
    /// Another daemon holds the run directory's lock.
    AlreadyRunning {
        /// The other daemon's pid, when its pid file says.
        pid: Option<u32>,
    },
}

impl StartReport {
    /// The line to write, newline included.
    pub fn line(&self) -> String {
        // serde_json cannot fail on this enum of integers (no maps with non-string keys).
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{START_REPORT_PREFIX}{json}\n")
    }

    /// Splits what the start-up pipe carried into the report (the last well-formed report
    /// line, if any) and the rest of the text.
    pub fn parse(text: &str) -> (Option<StartReport>, String) {
        let mut report = None;
        let mut rest = String::new();
        for line in text.lines() {
            match line
                .strip_prefix(START_REPORT_PREFIX)
                .and_then(|j| serde_json::from_str(j).ok())
            {
                Some(r) => report = Some(r),
                None => {
                    rest.push_str(line);
                    rest.push('\n');
                }
            }
        }
        (report, rest)
    }
}

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
