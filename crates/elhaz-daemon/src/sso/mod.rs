//! IAM Identity Center (SSO): the OIDC token of each start URL, the AWS CLI's token cache, and
//! role credentials from the portal.
//!
//! # Design
//!
//! - **Who logs in.** `elhaz sso login` runs the OIDC flow in the CLI (device code, or
//!   authorization code + PKCE with a loopback redirect) and writes the resulting token to the
//!   AWS CLI's cache file; the daemon never opens a browser and never prompts. The daemon
//!   re-reads that file whenever it needs a token it does not hold, so a login — elhaz's, the
//!   AWS CLI v2's, or botocore's — is picked up by every session of the start URL at the next
//!   request. Concurrent logins for one start URL (`sso login`, or an interactive consumer
//!   offering one) take a lock file in the run dir; the second waits and then finds the first
//!   one's token.
//! - **Where the token lives.** In the daemon, per start URL ([`Sso`]), in a struct that zeroizes
//!   its strings on drop; by default also in `~/.aws/sso/cache/<sha1>.json` (0600, written to a
//!   temp file then renamed), the file name and fields the AWS CLI v2 and botocore use, so one
//!   login serves them all. `sso_token_cache = "memory"` in `elhaz.toml` keeps it off disk: the
//!   CLI hands the token over the socket instead (`sso_login`, owner only, [`Sso::adopt`]), and
//!   the daemon neither reads nor writes the cache. The trade-off (no sharing with other tools,
//!   a new login after every daemon restart) is in docs/security.md.
//! - **Silent refresh.** Each start URL has a background renewer that renews the access token
//!   with the refresh token `min(15 min, lifetime / 3)` before it expires (botocore's window),
//!   and a fetch that finds the token inside that window renews it first. The cache is shared
//!   state (refresh tokens may rotate on use), so it is re-read before every refresh. A token
//!   whose renewal was refused is used to its end; once it has expired (or the portal refuses
//!   it) and no refresh token is left or the OIDC service rejects it, the start URL is marked
//!   `login_required`: fetches then fail at once, with no network call, with
//!   [`ErrorCode::LoginRequired`] (carrying the login, so an interactive CLI can offer it) and
//!   a message naming the command to run, until a different token appears (a new login); the
//!   engine reports the sessions in state `login_required`.
//!   Nothing in the daemon ever opens a browser, so a laptop waking up asks for nothing by
//!   itself: the first interactive command offers one login per start URL (the lock above
//!   makes every other wait for it), non-interactive ones fail fast with the hint.
//! - **The renewer's lifetime.** A renewer runs only while a cached session uses its start URL
//!   (the engine reports evictions through `Fetch::session_retired`) and ends with the last
//!   one, or at `sso logout`; the token itself stays until logout, so a session loaded later
//!   renews it on its first fetch and restarts the renewer. While it holds no token it can
//!   renew it sleeps on a `Notify` with no timer, so an idle daemon is not woken; a renewal
//!   that fails for a passing reason is retried after 30 s, doubling to 5 min. The trade-off:
//!   an idle start URL's token is not kept fresh, so the first fetch after a long idle spell
//!   pays one refresh call.
//! - **Role credentials** come from `GetRoleCredentials` like any other fetch; the engine's
//!   refresh-ahead schedules them. A chained `[role]` on top is assumed by the STS code.
//! - **Endpoints** follow the SDK: `AWS_ENDPOINT_URL_SSO_OIDC`, `AWS_ENDPOINT_URL_SSO`,
//!   `AWS_ENDPOINT_URL`. The client (`elhaz-core`) knows nothing of this module.
//!
//! # Layout
//!
//! This module holds what every part names — a login's [`Target`], the `login_required` error,
//! the SDK error mapping — and re-exports the rest as `sso::X`:
//!
//! - `cache` — [`CachedToken`] and the AWS CLI's token cache files (shared with the AWS CLI
//!   v2 and botocore).
//! - `logins` — [`Sso`], the daemon's state per start URL: the token it holds, re-read from
//!   the cache, refreshed with the refresh token, handed over by `sso_login`; role
//!   credentials.
//! - `renewer` — the background renewal of one start URL's token.
//! - `login` — the login flows the CLI runs (device code; authorization code with PKCE).
//! - `loopback` — the PKCE flow's loopback redirect listener and its URL coding.
//! - `portal` — the portal calls the CLI makes with a token (accounts and roles, logout).
//!
//! The daemon's half (`logins`, `renewer`) and the CLI's half (`login`, `loopback`, `portal`)
//! share only the cache format and the target; the split keeps the daemon's locking rules
//! (a tokio mutex per start URL, held across a refresh) in two files that say nothing of
//! browsers.

use std::time::Duration;

use aws_sdk_sso::error::ProvideErrorMetadata;

use crate::config::{Settings, SsoConfig};
use crate::error::display_chain;
use crate::protocol::{ErrorCode, WireError};

mod cache;
mod login;
mod logins;
mod loopback;
mod portal;
mod renewer;

pub use cache::{CachedToken, cache_dir, cache_file, read_cache, target_cache_file, write_cache};
pub use login::{Flow, LoginOptions, has_display, login};
pub use logins::Sso;
pub use loopback::pkce_challenge;
pub use portal::{Assignment, assignments, cli_sdk_config, portal_logout};

/// botocore's refresh window for SSO tokens.
pub(super) const REFRESH_AHEAD: Duration = Duration::from_secs(15 * 60);
/// The scope that makes CreateToken return a refresh token.
pub const DEFAULT_SCOPE: &str = "sso:account:access";
/// Client name registered with SSO OIDC.
pub(super) const CLIENT_NAME: &str = "elhaz";

/// One IAM Identity Center login: a start URL and its region, named by an `[sso_sessions]`
/// entry or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The `[sso_sessions.NAME]` name, when the config used one.
    pub session_name: Option<String>,
    /// The AWS access portal URL.
    pub start_url: String,
    /// The IAM Identity Center region.
    pub region: String,
    /// Scopes to register.
    pub scopes: Vec<String>,
}

impl Target {
    /// The string the AWS CLI hashes for the cache file name: the sso-session name, or the
    /// start URL for legacy profiles.
    pub fn cache_key(&self) -> &str {
        self.session_name.as_deref().unwrap_or(&self.start_url)
    }

    /// The target as the wire names it.
    pub fn to_wire(&self) -> crate::protocol::SsoTarget {
        crate::protocol::SsoTarget {
            sso_session: self.session_name.clone(),
            start_url: self.start_url.clone(),
            region: self.region.clone(),
        }
    }

    /// The target a wire name stands for: a named one is resolved from `settings` (and must
    /// have the start URL the peer saw), an unnamed one takes the default scope.
    pub fn from_wire(
        wire: &crate::protocol::SsoTarget,
        settings: &Settings,
    ) -> Result<Target, WireError> {
        let t = match &wire.sso_session {
            Some(name) => Target::named(name, settings)?,
            None => {
                crate::config::check_start_url(&wire.start_url).map_err(|m| {
                    WireError::new(ErrorCode::BadRequest, format!("start_url: {m}"))
                })?;
                let region: crate::config::Region = wire
                    .region
                    .parse()
                    .map_err(|m| WireError::new(ErrorCode::BadRequest, format!("region: {m}")))?;
                Target {
                    session_name: None,
                    start_url: wire.start_url.clone(),
                    region: region.0,
                    scopes: vec![DEFAULT_SCOPE.into()],
                }
            }
        };
        if t.start_url != wire.start_url || t.region != wire.region {
            return Err(WireError::new(
                ErrorCode::Conflict,
                format!(
                    "[sso_sessions.{}] in the daemon's elhaz.toml is {} in {}, not {} in {}",
                    wire.sso_session.as_deref().unwrap_or("?"),
                    t.start_url,
                    t.region,
                    wire.start_url,
                    wire.region
                ),
            ));
        }
        Ok(t)
    }

    /// The command that logs in to this target.
    pub fn login_hint(&self) -> String {
        match &self.session_name {
            Some(n) => format!("elhaz sso login {n}"),
            None => format!(
                "elhaz sso login --start-url {} --region {}",
                self.start_url, self.region
            ),
        }
    }

    /// A target from an `[sso]` table and the settings' `[sso_sessions]`.
    pub fn resolve(sso: &SsoConfig, settings: &Settings) -> Result<Target, WireError> {
        match (&sso.session, &sso.start_url, &sso.region) {
            (Some(name), _, _) => Target::named(name, settings),
            (None, Some(url), Some(region)) => Ok(Target {
                session_name: None,
                start_url: url.clone(),
                region: region.0.clone(),
                scopes: vec![DEFAULT_SCOPE.into()],
            }),
            _ => Err(WireError::new(
                ErrorCode::InvalidConfig,
                "[sso] needs `start_url` and `region`, or `session`",
            )),
        }
    }

    /// The target of `[sso_sessions.NAME]`.
    pub fn named(name: &str, settings: &Settings) -> Result<Target, WireError> {
        let s = settings.sso_sessions.get(name).ok_or_else(|| {
            WireError::new(
                ErrorCode::InvalidConfig,
                format!(
                    "no [sso_sessions.{name}] in elhaz.toml (add one with start_url and region)"
                ),
            )
        })?;
        Ok(Target {
            session_name: Some(name.into()),
            start_url: s.start_url.clone(),
            region: s.region.0.clone(),
            scopes: if s.scopes.is_empty() {
                vec![DEFAULT_SCOPE.into()]
            } else {
                s.scopes.clone()
            },
        })
    }
}

pub(super) fn login_required(target: &Target, why: &str) -> WireError {
    let mut e = WireError::new(
        ErrorCode::LoginRequired,
        format!(
            "IAM Identity Center login needed for {} ({why}): run `{}`",
            target.start_url,
            target.login_hint()
        ),
    );
    e.sso = Some(Box::new(target.to_wire()));
    e
}

pub(super) fn classify<E, R>(op: &str, e: &aws_sdk_sso::error::SdkError<E, R>) -> WireError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_sso::error::SdkError;
    let code = match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => ErrorCode::Unavailable,
        _ => match e.code() {
            Some("TooManyRequestsException" | "SlowDownException") => ErrorCode::Throttled,
            Some("UnauthorizedException" | "AccessDeniedException") => ErrorCode::AccessDenied,
            Some("ResourceNotFoundException") => ErrorCode::NotFound,
            _ => ErrorCode::UpstreamError,
        },
    };
    let what = match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => display_chain(e),
    };
    WireError::new(code, format!("{op} failed: {what}"))
}

#[cfg(test)]
mod tests;
