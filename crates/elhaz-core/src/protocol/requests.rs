//! What a client sends: the [`Request`] variants and the delegate [`Token`].

use super::*;

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
