//! Turning a session config into temporary credentials: the [`Fetch`] trait and its AWS STS
//! implementation.
//!
//! One `aws_sdk_sts::Client` serves every session; each call carries its own region, endpoint
//! and credentials through `customize().config_override(…)`, so all sessions share one HTTP
//! connection pool and one loaded `SdkConfig` — a cached session costs its credentials and a
//! few strings, not a client.
//!
//! Base credentials come from the config's source: the daemon's default chain (loaded once at
//! start, from the environment the daemon was started with), an AWS profile (re-read at each
//! refresh, so edits and SSO token renewals are picked up), long-term keys from the keyring
//! (read once per session load by the cache, passed in here), another session's credentials
//! (chaining, resolved by the cache in-process), or a web identity token file (re-read at each
//! refresh; tokens rotate).
//!
//! Child processes: a profile whose credentials come from a `credential_process`, directly or
//! at the root of a `role_arn` + `source_profile` chain, is resolved here rather than by the
//! SDK's profile provider, which would run the process with no process group, no deadline and
//! no way to kill it at daemon stop. [`ProfileFiles::process_chain`] walks the chain by the
//! SDK's rules and hands every other shape (static keys, SSO, web identity,
//! `credential_source`, invalid chains) back to the SDK, so its errors stay the SDK's. The
//! trade-off: the chain's roles are assumed at the session's STS endpoint and region (the SDK
//! would use the profile's), and we also honour `duration_seconds`, which botocore reads and
//! the Rust SDK ignores.
//!
//! Clock skew: every credential call records the `Date` header of STS's answer (an SDK
//! interceptor, [`DateCapture`]) and measures the lifetime on STS's own clock,
//! `Expiration − Date`, instead of against our clock. A local clock that runs slow would
//! otherwise stretch the lifetime (and the daemon would serve credentials past the real
//! expiry); one that runs fast would shrink it (and refresh too early, or loop). The engine
//! derives the skew from the same numbers and shows it in `daemon list`. The shared MFA
//! session (below) is still judged against the local clock.
//!
//! MFA follows aws-vault: a role behind MFA is assumed from an MFA-backed GetSessionToken
//! session (default 12 h), shared by every config with the same serial, source and STS
//! endpoint, so background refreshes of the role need no new code until that MFA session
//! ends.
//!
//! # Layout
//!
//! This module holds the contract — [`Fetch`], [`FetchRequest`], [`ToSdk`] — and re-exports
//! what the daemon names as `sts::X`; the implementation is split by concern:
//!
//! - `fetcher` — [`StsFetcher`]: the one SDK client, base credentials per source, and the
//!   calls (GetSessionToken, AssumeRole, web identity, GetFederationToken, whoami).
//! - `mfa` — MFA codes (from the request, a command, or asking the CLI) and the shared MFA
//!   session.
//! - `profiles` — reading the shared config and credentials files to find a
//!   `credential_process` chain the SDK would otherwise run unsupervised.
//! - `children` — running child processes (`credential_process`, MFA commands) in their own
//!   process group, bounded and killed at stop.
//! - `answers` — reading STS's answers: credentials, lifetimes on STS's clock
//!   ([`DateCapture`]), error classification.
//! - `lazy` — [`LazySts`], the fetcher the daemon uses: loaded on first use, every fetch under
//!   one deadline.
//!
//! The pieces of the fetcher (`fetcher`, `mfa`) are `impl` blocks of one private type, so
//! they share its fields (`pub(super)`); the others are free functions with no state of
//! their own but the table of running children. The trade-off: a reader of the fetch path
//! opens two files, in exchange for the MFA rules and the child-process rules each reading as
//! one piece.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};

use crate::config::SessionConfig;
use crate::credentials::{Credentials, LongTermKeys};
use crate::protocol::{ErrorCode, Identity, WireError};

mod answers;
mod children;
mod fetcher;
mod lazy;
mod mfa;
mod profiles;

pub use answers::{DateCapture, classify, is_throttling, lifetime_of, parse_http_date};
pub use children::{CREDENTIAL_PROCESS_TIMEOUT, kill_children};
pub use fetcher::StsFetcher;
pub use lazy::LazySts;

/// Our credential types as SDK credentials values (for chaining, whoami and the IAM client).
/// An extension trait because `elhaz-core`, which owns the types, depends on no AWS crate.
pub trait ToSdk {
    /// The SDK's credentials value (secrets copied into the SDK's own zeroizing type).
    fn to_sdk(&self) -> aws_credential_types::Credentials;
}

impl ToSdk for Credentials {
    fn to_sdk(&self) -> aws_credential_types::Credentials {
        aws_credential_types::Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.expose_secret().to_string(),
            Some(self.session_token.expose_secret().to_string()),
            Some(self.expiration),
            "elhaz",
        )
    }
}

impl ToSdk for LongTermKeys {
    fn to_sdk(&self) -> aws_credential_types::Credentials {
        aws_credential_types::Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.expose_secret().to_string(),
            None,
            None,
            "elhaz-keyring",
        )
    }
}

/// A boxed future, so [`Fetch`] can be used as a trait object.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Everything a fetch needs, owned (fetches run in their own tasks).
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// Session name (for messages and the default role session name).
    pub name: String,
    /// The session's config.
    pub config: Arc<SessionConfig>,
    /// For `session = "OTHER"`: OTHER's current credentials.
    pub chained: Option<Arc<Credentials>>,
    /// For `keyring = "ENTRY"`: the keys, read once at session load.
    pub long_term: Option<Arc<LongTermKeys>>,
    /// An MFA code supplied by the requesting CLI.
    pub mfa_code: Option<SecretString>,
}

pub use crate::credentials::Fetched;

/// A source of temporary credentials. The daemon uses [`StsFetcher`]; unit tests use fakes.
pub trait Fetch: Send + Sync + std::fmt::Debug + 'static {
    /// Obtains credentials for a session.
    fn fetch(&self, req: FetchRequest) -> BoxFuture<Result<Fetched, WireError>>;
    /// GetCallerIdentity with a session's credentials.
    fn whoami(
        &self,
        config: Arc<SessionConfig>,
        creds: Arc<Credentials>,
    ) -> BoxFuture<Result<Identity, WireError>>;
    /// When the shared MFA session a config's role is assumed from ends, if one is held.
    fn mfa_expiration(&self, _config: &SessionConfig) -> Option<SystemTime> {
        None
    }
    /// The IAM Identity Center state, for the `sso_*` requests (`None`: this fetcher has
    /// none, as in the engine's unit tests).
    fn sso(&self) -> BoxFuture<Option<Arc<crate::sso::Sso>>> {
        Box::pin(async { None })
    }
    /// The engine dropped session `name` (removed, evicted, replaced): per-session state
    /// kept for it elsewhere (the SSO renewer's users) lets go.
    fn session_retired(&self, _name: &str) {}
    /// GetFederationToken with the session's long-term keys (`elhaz console` for an IAM-user
    /// session), lasting `duration_s`.
    fn federation_token(
        &self,
        req: FetchRequest,
        _duration_s: u32,
    ) -> BoxFuture<Result<Fetched, WireError>> {
        Box::pin(async move {
            Err(WireError::new(
                ErrorCode::Internal,
                format!(
                    "session {:?}: this credential source cannot call GetFederationToken",
                    req.name
                ),
            ))
        })
    }
}

/// GetFederationToken's duration when `console` gives none: 1 hour (AWS allows 15 min to
/// 36 h with an IAM user's keys; the console session itself lasts at most 12 h).
pub const FEDERATION_DEFAULT_DURATION: u32 = 3600;

/// The session policy and federated-user name GetFederationToken is called with.
///
/// Without a policy, AWS gives the federated user *no* permissions, so elhaz passes one that
/// allows every action on every resource: the federated user's effective permissions are the
/// intersection of that and the IAM user's own policies — in effect, it inherits the user's
/// permissions (and never gains any). The name is `elhaz-SESSION`, cut to AWS's 32 characters
/// (session names use only characters AWS accepts there). Note that the call is made with the
/// long-term keys, not an MFA session (AWS does not allow MFA on it): policies that require
/// `aws:MultiFactorAuthPresent` deny the console user.
pub fn federation_policy(session: &str) -> (String, &'static str) {
    let name: String = format!("elhaz-{session}").chars().take(32).collect();
    (
        name,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
    )
}

#[cfg(test)]
mod tests;
