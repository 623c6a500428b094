//! What the daemon answers: the reply frame, [`Response`] and the types it carries (status,
//! sessions and their [`SessionState`], credentials, identity).

use super::*;

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
