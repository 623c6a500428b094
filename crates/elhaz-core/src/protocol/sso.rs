//! The IAM Identity Center wire types: a login's name ([`SsoTarget`]), its token
//! ([`SsoToken`], redacted and zeroized), and what `sso_status` / `sso_assignments` return.

use super::*;

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
