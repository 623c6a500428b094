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

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_sts::config::Region;
use aws_sdk_sts::config::http::HttpResponse;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{self, SessionConfig, Source};
use crate::credentials::{Credentials, LongTermKeys, account_of_arn};
use crate::error::display_chain;
use crate::protocol::{ErrorCode, Identity, WireError};

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

/// The credentials of `base` when they are temporary (a session token and an expiry), as a
/// fetch result; `None` for long-term keys (or credentials that cannot be resolved now).
async fn temporary(base: &SharedCredentialsProvider, note: Option<String>) -> Option<Fetched> {
    let c = base.provide_credentials().await.ok()?;
    let token = c.session_token()?.to_string();
    let expiration = c.expiry()?;
    Some(Fetched {
        creds: Credentials {
            access_key_id: c.access_key_id().to_string(),
            secret_access_key: SecretString::from(c.secret_access_key().to_string()),
            session_token: SecretString::from(token),
            expiration,
            account_id: c.account_id().map(|a| a.as_str().to_string()),
            arn: None,
        },
        lifetime: expiration
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
        note,
    })
}

/// The AWS STS implementation.
#[derive(Debug, Clone)]
pub struct StsFetcher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: aws_sdk_sts::Client,
    default_region: Option<Region>,
    default_creds: Option<SharedCredentialsProvider>,
    /// MFA sessions by (serial, source): shared across configs, refreshed only with a code.
    mfa_sessions: Mutex<HashMap<String, Arc<Credentials>>>,
    /// IAM Identity Center tokens and the portal (`[sso]` sources).
    sso: Arc<crate::sso::Sso>,
}

/// A role session name STS accepts, derived from the local user.
fn default_session_name() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
    let clean: String = user
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(*c))
        .take(56)
        .collect();
    format!("elhaz-{}", if clean.is_empty() { "user" } else { &clean })
}

impl StsFetcher {
    /// Loads the daemon's AWS configuration once (environment, shared config, default chain).
    pub async fn load() -> StsFetcher {
        // Region from the environment and shared config only: the default region chain would
        // also probe the EC2 instance metadata service, which costs time and log noise on every
        // machine that is not an EC2 instance. A session without a region uses us-east-1.
        let region = aws_config::meta::region::RegionProviderChain::first_try(
            aws_config::environment::EnvironmentVariableRegionProvider::new(),
        )
        .or_else(aws_config::profile::ProfileFileRegionProvider::new())
        .region()
        .await
        .unwrap_or_else(|| Region::from_static("us-east-1"));
        // The default credential and token chains resolve a region for their own providers;
        // with ours set they do not probe instance metadata either.
        let chain = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
            .region(region.clone())
            .build()
            .await;
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .credentials_provider(chain)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .operation_timeout(Duration::from_secs(30))
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .load()
            .await;
        StsFetcher {
            inner: Arc::new(Inner {
                client: aws_sdk_sts::Client::new(&sdk),
                default_region: sdk.region().cloned(),
                default_creds: sdk.credentials_provider(),
                mfa_sessions: Mutex::new(HashMap::new()),
                sso: Arc::new(crate::sso::Sso::new(&sdk)),
            }),
        }
    }
}

impl Inner {
    fn region(&self, cfg: &SessionConfig) -> Region {
        cfg.sts
            .as_ref()
            .and_then(|s| s.region.as_ref())
            .or(cfg.region.as_ref())
            .map(|r| Region::new(r.0.clone()))
            .or_else(|| self.default_region.clone())
            .unwrap_or_else(|| Region::from_static("us-east-1"))
    }

    fn overrides(
        &self,
        cfg: &SessionConfig,
        creds: Option<SharedCredentialsProvider>,
    ) -> aws_sdk_sts::config::Builder {
        let mut b = aws_sdk_sts::config::Builder::default().region(self.region(cfg));
        if let Some(url) = cfg.endpoint_url() {
            b = b.endpoint_url(url);
        }
        if let Some(c) = creds {
            b = b.credentials_provider(c);
        }
        b
    }

    /// The base credentials provider for a config's source (`None`: web identity, which
    /// needs none, handled separately).
    async fn base(&self, req: &FetchRequest) -> Result<SharedCredentialsProvider, WireError> {
        match req.config.source() {
            Source::Default => {
                // The default chain would run the selected profile's `credential_process`
                // itself (no process group, no deadline): when no environment keys come
                // first, such a profile (or a chain ending in one) is run by us instead.
                if !env_keys_present()
                    && let Some(chain) = ProfileFiles::load().process_chain(&default_profile())
                {
                    return self.run_process_chain(req, &default_profile(), chain).await;
                }
                self.default_creds.clone().ok_or_else(|| {
                    WireError::new(
                        ErrorCode::SourceError,
                        "no default AWS credentials: the daemon's environment and shared \
                         config provide none; set a `profile`, `keyring` or `session` source",
                    )
                })
            }
            Source::Profile(p) => {
                // A profile whose credentials come from a `credential_process`, directly or at
                // the root of a `source_profile` chain, runs under our own runner (own process
                // group, killed on the fetch deadline and at stop) and its roles are assumed
                // here; anything else goes through the SDK's profile chain.
                if let Some(chain) = ProfileFiles::load().process_chain(&p) {
                    return self.run_process_chain(req, &p, chain).await;
                }
                let conf = aws_config::provider_config::ProviderConfig::without_region()
                    .with_region(Some(self.region(&req.config)));
                let provider = aws_config::profile::ProfileFileCredentialsProvider::builder()
                    .configure(&conf)
                    .profile_name(&p)
                    .build();
                // Resolve now so a broken profile is reported as a source error, not as STS's.
                let creds = provider.provide_credentials().await.map_err(|e| {
                    WireError::new(
                        ErrorCode::SourceError,
                        format!("AWS profile {p:?}: {}", display_chain(&e)),
                    )
                })?;
                Ok(SharedCredentialsProvider::new(creds))
            }
            Source::Keyring(entry) => {
                let keys = req.long_term.as_ref().ok_or_else(|| {
                    WireError::new(
                        ErrorCode::Internal,
                        format!("keyring entry {entry:?} was not loaded"),
                    )
                })?;
                Ok(SharedCredentialsProvider::new(keys.to_sdk()))
            }
            Source::Session(other) => {
                let c = req.chained.as_ref().ok_or_else(|| {
                    WireError::new(
                        ErrorCode::Internal,
                        format!("credentials of source session {other:?} were not resolved"),
                    )
                })?;
                Ok(SharedCredentialsProvider::new(c.to_sdk()))
            }
            Source::WebIdentity(_) => Err(WireError::new(
                ErrorCode::Internal,
                "web identity sessions need no base credentials",
            )),
            Source::Sso(sso) => {
                let f = self.sso.role_credentials(&req.name, &sso, None).await?;
                Ok(SharedCredentialsProvider::new(f.creds.to_sdk()))
            }
        }
    }

    /// Runs the root `credential_process` of a profile chain under [`run_child`], then assumes
    /// each role of the chain in order (root first) with the credentials of the step before,
    /// as the SDK's profile provider would: `role_arn`, `external_id`, `role_session_name`
    /// (default: ours), and `duration_seconds` as botocore reads it (the Rust SDK ignores it;
    /// STS's default of 1 h otherwise). Each call goes to the session's STS endpoint and region.
    async fn run_process_chain(
        &self,
        req: &FetchRequest,
        profile: &str,
        chain: ProcessChain,
    ) -> Result<SharedCredentialsProvider, WireError> {
        let mut creds = run_credential_process(&chain.root, &chain.command).await?;
        for role in chain.roles {
            let started = SystemTime::now();
            let out = self
                .client
                .assume_role()
                .role_arn(role.arn.clone())
                .role_session_name(role.session_name.unwrap_or_else(default_session_name))
                .set_external_id(role.external_id)
                .set_duration_seconds(role.duration_seconds)
                .customize()
                .config_override(self.overrides(&req.config, Some(creds)))
                .send()
                .await
                .map_err(|e| {
                    let mut e = classify("AssumeRole", e, false);
                    e.message = format!(
                        "AWS profile {profile:?}: role_arn of profile {:?}: {}",
                        role.profile, e.message
                    );
                    e
                })?;
            let step = convert(out.credentials(), None, started, None)?;
            creds = SharedCredentialsProvider::new(step.creds.to_sdk());
        }
        Ok(creds)
    }

    /// GetFederationToken with the session's base (long-term) credentials.
    async fn federation_token(
        &self,
        req: FetchRequest,
        duration_s: u32,
    ) -> Result<Fetched, WireError> {
        let cfg = req.config.clone();
        let base = self.base(&req).await?;
        let (name, policy) = federation_policy(&req.name);
        let started = SystemTime::now();
        let dates = DateCapture::default();
        let out = self
            .client
            .get_federation_token()
            .name(name)
            .policy(policy)
            .duration_seconds(i32::try_from(duration_s).unwrap_or(i32::MAX))
            .customize()
            .config_override(self.overrides(&cfg, Some(base)))
            .interceptor(dates.clone())
            .send()
            .await
            .map_err(|e| classify("GetFederationToken", e, false))?;
        let arn = out.federated_user().map(|u| u.arn().to_string());
        convert_dated(out.credentials(), arn, started, dates.date(), None)
    }

    async fn fetch(&self, req: FetchRequest) -> Result<Fetched, WireError> {
        let cfg = req.config.clone();
        let mut duration = cfg.effective_duration();
        let mut note = None;
        if matches!(cfg.source(), Source::Session(_)) && duration > config::CHAINED_ROLE_MAX {
            note = Some(format!(
                "duration capped from {} to 1h: AWS limits chained role sessions to 1 hour",
                config::Secs(duration)
            ));
            tracing::warn!(session = %req.name, requested = duration, "capping chained role duration to 3600 s");
            duration = config::CHAINED_ROLE_MAX;
        }
        let duration = i32::try_from(duration).unwrap_or(i32::MAX);

        if let Source::WebIdentity(token_file) = cfg.source() {
            return self.web_identity(&req, &token_file, duration, note).await;
        }
        if let Source::Sso(sso) = cfg.source()
            && cfg.role.is_none()
        {
            return self.sso.role_credentials(&req.name, &sso, note).await;
        }
        let base = self.base(&req).await?;
        if cfg.role.is_none()
            && cfg.mfa.is_none()
            && matches!(cfg.source(), Source::Profile(_))
            && let Some(f) = temporary(&base, note.clone()).await
        {
            // A profile that yields temporary credentials (an IAM Identity Center profile, a
            // role profile): served as they are — STS refuses GetSessionToken with session
            // credentials.
            return Ok(f);
        }
        let Some(role) = &cfg.role else {
            // GetSessionToken (with MFA if configured).
            let mut call = self.client.get_session_token().duration_seconds(duration);
            if let Some(mfa) = &cfg.mfa {
                let code = self.mfa_code(&req).await?;
                call = call
                    .serial_number(mfa.serial.0.clone())
                    .token_code(code.expose_secret());
            }
            let started = SystemTime::now();
            let dates = DateCapture::default();
            let out = call
                .customize()
                .config_override(self.overrides(&cfg, Some(base)))
                .interceptor(dates.clone())
                .send()
                .await
                .map_err(|e| classify("GetSessionToken", e, cfg.mfa.is_some()))?;
            return convert_dated(out.credentials(), None, started, dates.date(), note);
        };

        // A role behind MFA is assumed from a shared MFA session.
        let caller = match &cfg.mfa {
            Some(mfa) => {
                let mfa_creds = self.mfa_session(&req, &mfa.serial.0, base).await?;
                SharedCredentialsProvider::new(mfa_creds.to_sdk())
            }
            None => base,
        };
        let mut call = self
            .client
            .assume_role()
            .role_arn(role.arn.0.clone())
            .role_session_name(
                role.session_name
                    .clone()
                    .unwrap_or_else(default_session_name),
            )
            .duration_seconds(duration)
            .set_external_id(role.external_id.clone())
            .set_policy(role.policy.clone())
            .set_source_identity(role.source_identity.clone());
        for arn in &role.policy_arns {
            call = call.policy_arns(
                aws_sdk_sts::types::PolicyDescriptorType::builder()
                    .arn(arn.0.clone())
                    .build(),
            );
        }
        for (k, v) in &role.tags {
            let tag = aws_sdk_sts::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| WireError::new(ErrorCode::InvalidConfig, format!("tag {k:?}: {e}")))?;
            call = call.tags(tag);
        }
        for k in &role.transitive_tag_keys {
            call = call.transitive_tag_keys(k);
        }
        let started = SystemTime::now();
        let dates = DateCapture::default();
        let out = call
            .customize()
            .config_override(self.overrides(&cfg, Some(caller)))
            .interceptor(dates.clone())
            .send()
            .await
            .map_err(|e| classify("AssumeRole", e, false))?;
        let arn = out.assumed_role_user().map(|u| u.arn().to_string());
        convert_dated(out.credentials(), arn, started, dates.date(), note)
    }

    async fn web_identity(
        &self,
        req: &FetchRequest,
        token_file: &std::path::Path,
        duration: i32,
        note: Option<String>,
    ) -> Result<Fetched, WireError> {
        let cfg = &req.config;
        let role = cfg.role.as_ref().ok_or_else(|| {
            WireError::new(ErrorCode::InvalidConfig, "web identity needs a [role]")
        })?;
        let token = tokio::fs::read_to_string(token_file).await.map_err(|e| {
            WireError::new(
                ErrorCode::SourceError,
                format!(
                    "cannot read web identity token {}: {e}",
                    token_file.display()
                ),
            )
        })?;
        let token = SecretString::from(token.trim().to_string());
        let started = SystemTime::now();
        let mut call = self
            .client
            .assume_role_with_web_identity()
            .role_arn(role.arn.0.clone())
            .role_session_name(
                role.session_name
                    .clone()
                    .unwrap_or_else(default_session_name),
            )
            .web_identity_token(token.expose_secret())
            .duration_seconds(duration)
            .set_policy(role.policy.clone());
        for arn in &role.policy_arns {
            call = call.policy_arns(
                aws_sdk_sts::types::PolicyDescriptorType::builder()
                    .arn(arn.0.clone())
                    .build(),
            );
        }
        let dates = DateCapture::default();
        let out = call
            .customize()
            .config_override(self.overrides(cfg, None))
            .interceptor(dates.clone())
            .send()
            .await
            .map_err(|e| classify("AssumeRoleWithWebIdentity", e, false))?;
        let arn = out.assumed_role_user().map(|u| u.arn().to_string());
        convert_dated(out.credentials(), arn, started, dates.date(), note)
    }

    /// An MFA code: from the request, else the configured command, else ask the CLI.
    async fn mfa_code(&self, req: &FetchRequest) -> Result<SecretString, WireError> {
        // Invariant: only called for configs with `[mfa]`.
        let Some(mfa) = &req.config.mfa else {
            return Err(WireError::new(ErrorCode::Internal, "no [mfa] section"));
        };
        if let Some(code) = &req.mfa_code {
            return check_code(code.clone());
        }
        if let Some(argv) = &mfa.command {
            let timeout = Duration::from_secs(
                mfa.command_timeout
                    .map_or(config::DEFAULT_MFA_COMMAND_TIMEOUT, |t| t.0),
            );
            return run_mfa_command(argv, timeout).await;
        }
        let mut e = WireError::new(
            ErrorCode::MfaRequired,
            format!("mfa required (serial {})", mfa.serial),
        );
        e.mfa_serial = Some(mfa.serial.0.clone());
        Err(e)
    }

    /// The shared MFA-backed session for (serial, source, STS endpoint), creating it with a
    /// code if needed. The endpoint is part of the key: a session token from one STS (a local
    /// one, a partition's) means nothing to another.
    async fn mfa_session(
        &self,
        req: &FetchRequest,
        serial: &str,
        base: SharedCredentialsProvider,
    ) -> Result<Arc<Credentials>, WireError> {
        let key = mfa_key(serial, &req.config);
        let margin = SystemTime::now() + Duration::from_secs(5 * 60);
        let cached = self
            .mfa_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .filter(|c| c.expiration > margin)
            .cloned();
        if let Some(c) = cached {
            return Ok(c);
        }
        let code = self.mfa_code(req).await?;
        let duration = req
            .config
            .mfa
            .as_ref()
            .and_then(|m| m.session_duration)
            .map_or(config::DEFAULT_MFA_SESSION_DURATION, |d| d.0);
        let started = SystemTime::now();
        let out = self
            .client
            .get_session_token()
            .serial_number(serial)
            .token_code(code.expose_secret())
            .duration_seconds(i32::try_from(duration).unwrap_or(i32::MAX))
            .customize()
            .config_override(self.overrides(&req.config, Some(base)))
            .send()
            .await
            .map_err(|e| classify("GetSessionToken (MFA)", e, true))?;
        let fetched = convert(out.credentials(), None, started, None)?;
        let creds = Arc::new(fetched.creds);
        self.mfa_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, creds.clone());
        tracing::info!(session = %req.name, "MFA session established");
        Ok(creds)
    }
}

/// The key of the shared MFA session of a config behind `serial`.
fn mfa_key(serial: &str, config: &SessionConfig) -> String {
    format!(
        "{serial}\u{0}{:?}\u{0}{}",
        config.source(),
        config.endpoint_url().unwrap_or_default()
    )
}

fn check_code(code: SecretString) -> Result<SecretString, WireError> {
    let c = code.expose_secret();
    if c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit()) {
        Ok(code)
    } else {
        Err(WireError::new(
            ErrorCode::MfaFailed,
            "an MFA code is 6 digits",
        ))
    }
}

async fn run_mfa_command(argv: &[String], timeout: Duration) -> Result<SecretString, WireError> {
    let fail = |m: String| WireError::new(ErrorCode::MfaFailed, m);
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| fail("the MFA command is empty".into()))?;
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args);
    let out = run_child(cmd, timeout)
        .await
        .map_err(|e| fail(format!("the MFA command {prog:?} {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(fail(format!(
            "the MFA command {prog:?} exited with {}: {}",
            out.status,
            err.trim().chars().take(300).collect::<String>()
        )));
    }
    let code = String::from_utf8_lossy(&out.stdout);
    let code = code.lines().last().unwrap_or("").trim().to_string();
    check_code(SecretString::from(code)).map_err(|_| {
        fail(format!(
            "the MFA command {prog:?} did not print a 6-digit code"
        ))
    })
}

/// Process groups of the child processes running now (MFA commands, `credential_process`),
/// so that [`kill_children`] can end them at daemon stop.
static CHILDREN: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// A running child's process group: killed (SIGKILL to the whole group) when dropped — after
/// the child exits, on a timeout, or when the fetch's future is dropped at its deadline.
struct GroupGuard(i32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
        CHILDREN
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|g| *g != self.0);
    }
}

/// Kills the process group of every child still running (daemon stop).
pub fn kill_children() {
    let groups = std::mem::take(&mut *CHILDREN.lock().unwrap_or_else(|p| p.into_inner()));
    for g in groups {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(g),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Why a child process gave no output.
#[derive(Debug, thiserror::Error)]
enum ChildError {
    #[error("cannot be started: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("failed: {0}")]
    Wait(#[source] std::io::Error),
    #[error("timed out after {0:?} (its process group was killed)")]
    Timeout(Duration),
}

/// Runs `cmd` (stdin null, output captured) as the leader of a new process group, and kills
/// the whole group when it exits, after `timeout`, or if this future is dropped — so a
/// grandchild that holds the pipes open or keeps running is gone too.
async fn run_child(
    mut cmd: tokio::process::Command,
    timeout: Duration,
) -> Result<std::process::Output, ChildError> {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(ChildError::Spawn)?;
    // A spawned child always has a pid until it is reaped, and it is not reaped yet.
    let pgid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    let _group = (pgid > 0).then(|| {
        CHILDREN
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pgid);
        GroupGuard(pgid)
    });
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.map_err(ChildError::Wait),
        Err(_) => Err(ChildError::Timeout(timeout)),
    }
}

/// How long a profile's `credential_process` may run.
pub const CREDENTIAL_PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

/// An INI file as `(section, key) -> value` (top-level keys only; nested ones are skipped).
fn ini_lookup(text: &str, section: &str, key: &str) -> Option<String> {
    let mut current = None::<String>;
    let mut found = None;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            continue; // a sub-property
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.split_whitespace().collect::<Vec<_>>().join(" "));
            continue;
        }
        if current.as_deref() == Some(section)
            && let Some((k, v)) = line.split_once('=')
            && k.trim().eq_ignore_ascii_case(key)
        {
            found = Some(v.trim().to_string());
        }
    }
    found
}

/// Whether the environment holds static keys, which the SDK's default chain takes before any
/// profile.
fn env_keys_present() -> bool {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    (set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY"))
        || (set("AWS_ACCESS_KEY") && set("AWS_SECRET_KEY"))
}

/// The profile the SDK's default chain reads: `AWS_PROFILE`, else `default`.
fn default_profile() -> String {
    std::env::var("AWS_PROFILE")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// The longest `source_profile` chain elhaz walks itself; a longer one is left to the SDK.
const MAX_PROFILE_CHAIN: usize = 16;

/// A role of a profile chain: one profile's `role_arn` and the settings that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProfileRole {
    profile: String,
    arn: String,
    external_id: Option<String>,
    session_name: Option<String>,
    duration_seconds: Option<i32>,
}

/// A profile whose credentials come from a `credential_process`: run `command` (of profile
/// `root`), then assume `roles` in order (empty for a plain `credential_process` profile).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProcessChain {
    root: String,
    command: String,
    roles: Vec<ProfileRole>,
}

/// The text of the shared config and credentials files, read once per fetch (so edits are
/// picked up), as the SDK finds them (`AWS_CONFIG_FILE`, `AWS_SHARED_CREDENTIALS_FILE`, else
/// under `$HOME/.aws`).
struct ProfileFiles {
    config: String,
    creds: String,
}

impl ProfileFiles {
    fn load() -> ProfileFiles {
        let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
        let config = std::env::var_os("AWS_CONFIG_FILE")
            .map(std::path::PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/config")));
        let creds = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
            .map(std::path::PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials")));
        let read = |p: Option<std::path::PathBuf>| {
            p.and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_default()
        };
        ProfileFiles {
            config: read(config),
            creds: read(creds),
        }
    }

    /// Key `key` of profile `name` (the credentials file wins over the config file, as in the
    /// SDK); empty values count as unset.
    fn get(&self, name: &str, key: &str) -> Option<String> {
        let section = if name == "default" {
            "default".to_string()
        } else {
            format!("profile {name}")
        };
        ini_lookup(&self.creds, name, key)
            .or_else(|| ini_lookup(&self.config, &section, key))
            // The SDK reads the default profile from `[profile default]` as well.
            .or_else(|| {
                (name == "default")
                    .then(|| ini_lookup(&self.config, "profile default", key))
                    .flatten()
            })
            .filter(|v| !v.is_empty())
    }

    /// The chain of profile `name` when it ends in a `credential_process`, walked as the SDK's
    /// profile provider walks it (`aws-config`'s `resolve_chain`): a profile with `role_arn`
    /// (and no `web_identity_token_file`) chains to its `source_profile` (itself: its own
    /// base credentials); after the first profile, static keys end the chain; a profile
    /// without `role_arn` is the base. `None` whenever the base is anything else (static
    /// keys, SSO, web identity, `credential_source`) or the chain is invalid (a loop, both or
    /// neither of `source_profile`/`credential_source`, a missing profile): the SDK then
    /// resolves it, and reports the errors, as before. No child process is run on that path.
    fn process_chain(&self, name: &str) -> Option<ProcessChain> {
        let mut visited: Vec<String> = Vec::new();
        let mut roles = Vec::new();
        let mut current = name.to_string();
        let base = loop {
            if visited.contains(&current) || visited.len() >= MAX_PROFILE_CHAIN {
                return None;
            }
            visited.push(current.clone());
            let get = |k: &str| self.get(&current, k);
            if visited.len() > 1
                && get("aws_access_key_id").is_some()
                && get("aws_secret_access_key").is_some()
            {
                return None;
            }
            let Some(arn) = get("role_arn").filter(|_| get("web_identity_token_file").is_none())
            else {
                break current;
            };
            roles.push(ProfileRole {
                profile: current.clone(),
                arn,
                external_id: get("external_id"),
                session_name: get("role_session_name"),
                duration_seconds: get("duration_seconds").and_then(|d| d.parse().ok()),
            });
            match (get("source_profile"), get("credential_source")) {
                (Some(src), None) if src == current => break current,
                (Some(src), None) => current = src,
                _ => return None,
            }
        };
        let get = |k: &str| self.get(&base, k);
        let other_base = [
            "credential_source",
            "web_identity_token_file",
            "sso_session",
            "sso_start_url",
            "sso_account_id",
            "sso_region",
            "sso_role_name",
            "login_session",
        ]
        .iter()
        .any(|k| get(k).is_some());
        if other_base {
            return None;
        }
        let command = get("credential_process")?;
        roles.reverse();
        Some(ProcessChain {
            root: base,
            command,
            roles,
        })
    }
}

/// Runs a profile's `credential_process` (through `sh -c`, as the AWS SDKs do) under
/// [`run_child`] and reads its JSON (`Version` 1).
async fn run_credential_process(
    profile: &str,
    command: &str,
) -> Result<SharedCredentialsProvider, WireError> {
    let fail = |m: String| {
        WireError::new(
            ErrorCode::SourceError,
            format!("AWS profile {profile:?}: credential_process {m}"),
        )
    };
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c").arg(command);
    let out = run_child(cmd, CREDENTIAL_PROCESS_TIMEOUT)
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(fail(format!(
            "exited with {}: {}",
            out.status,
            err.trim().chars().take(300).collect::<String>()
        )));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Output {
        version: u32,
        access_key_id: String,
        secret_access_key: String,
        #[serde(default)]
        session_token: Option<String>,
        #[serde(default)]
        expiration: Option<String>,
    }
    // The output holds secrets: never quote it in an error.
    let stdout = zeroize::Zeroizing::new(out.stdout);
    let o: Output = serde_json::from_slice(&stdout).map_err(|e| {
        fail(format!(
            "printed no valid credential JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    if o.version != 1 {
        return Err(fail(format!(
            "printed Version {}; only Version 1 is supported",
            o.version
        )));
    }
    let expiry =
        match &o.expiration {
            Some(t) => Some(humantime::parse_rfc3339_weak(t).map_err(|_| {
                fail("printed an Expiration that is not an RFC 3339 time".to_string())
            })?),
            None => None,
        };
    Ok(SharedCredentialsProvider::new(
        aws_credential_types::Credentials::new(
            o.access_key_id,
            zeroize::Zeroizing::new(o.secret_access_key).as_str(),
            o.session_token
                .map(zeroize::Zeroizing::new)
                .as_deref()
                .cloned(),
            expiry,
            "credential_process",
        ),
    ))
}

fn convert(
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
pub struct DateCapture(Arc<Mutex<Option<(String, SystemTime)>>>);

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

fn convert_dated(
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

/// A [`StsFetcher`] loaded on first use: an idle daemon (no session yet) never touches the
/// AWS SDK, which keeps its start-up short and its resident memory small. The environment it
/// reads is the daemon's own, which does not change after start.
///
/// Each fetch runs under one overall deadline (`fetch_timeout`): when it passes, the fetch's
/// future is dropped, which kills the process group of any child it was running.
#[derive(Debug, Clone)]
pub struct LazySts {
    cell: Arc<tokio::sync::OnceCell<StsFetcher>>,
    deadline: Duration,
}

impl Default for LazySts {
    fn default() -> Self {
        LazySts::with_deadline(Duration::from_secs(config::DEFAULT_FETCH_TIMEOUT))
    }
}

impl LazySts {
    /// An unloaded fetcher with the default fetch deadline.
    pub fn new() -> LazySts {
        LazySts::default()
    }

    /// An unloaded fetcher whose fetches each end after `deadline`.
    pub fn with_deadline(deadline: Duration) -> LazySts {
        LazySts {
            cell: Arc::default(),
            deadline,
        }
    }
}

impl Fetch for LazySts {
    fn mfa_expiration(&self, config: &SessionConfig) -> Option<SystemTime> {
        self.cell.get()?.mfa_expiration(config)
    }

    fn sso(&self) -> BoxFuture<Option<Arc<crate::sso::Sso>>> {
        let cell = self.cell.clone();
        Box::pin(async move { Some(cell.get_or_init(StsFetcher::load).await.inner.sso.clone()) })
    }

    fn session_retired(&self, name: &str) {
        // Nothing to tell an engine that was never loaded.
        if let Some(f) = self.cell.get() {
            f.session_retired(name);
        }
    }

    fn federation_token(
        &self,
        req: FetchRequest,
        duration_s: u32,
    ) -> BoxFuture<Result<Fetched, WireError>> {
        let (cell, deadline) = (self.cell.clone(), self.deadline);
        Box::pin(async move {
            let name = req.name.clone();
            let call = async {
                cell.get_or_init(StsFetcher::load)
                    .await
                    .federation_token(req, duration_s)
                    .await
            };
            tokio::time::timeout(deadline, call)
                .await
                .unwrap_or_else(|_| {
                    Err(WireError::new(
                        ErrorCode::Unavailable,
                        format!(
                            "GetFederationToken for session {name:?} took longer than \
                             fetch_timeout ({}s)",
                            deadline.as_secs()
                        ),
                    ))
                })
        })
    }

    fn fetch(&self, req: FetchRequest) -> BoxFuture<Result<Fetched, WireError>> {
        let (cell, deadline) = (self.cell.clone(), self.deadline);
        Box::pin(async move {
            let name = req.name.clone();
            let fetch = async { cell.get_or_init(StsFetcher::load).await.fetch(req).await };
            tokio::time::timeout(deadline, fetch)
                .await
                .unwrap_or_else(|_| {
                    Err(WireError::new(
                        ErrorCode::Unavailable,
                        format!(
                            "fetching session {name:?} took longer than fetch_timeout ({}s); its \
                         child processes were killed",
                            deadline.as_secs()
                        ),
                    ))
                })
        })
    }

    fn whoami(
        &self,
        config: Arc<SessionConfig>,
        creds: Arc<Credentials>,
    ) -> BoxFuture<Result<Identity, WireError>> {
        let cell = self.cell.clone();
        Box::pin(async move {
            cell.get_or_init(StsFetcher::load)
                .await
                .whoami(config, creds)
                .await
        })
    }
}

impl Fetch for StsFetcher {
    fn sso(&self) -> BoxFuture<Option<Arc<crate::sso::Sso>>> {
        let sso = self.inner.sso.clone();
        Box::pin(async move { Some(sso) })
    }

    fn session_retired(&self, name: &str) {
        self.inner.sso.session_retired(name);
    }

    fn federation_token(
        &self,
        req: FetchRequest,
        duration_s: u32,
    ) -> BoxFuture<Result<Fetched, WireError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.federation_token(req, duration_s).await })
    }

    fn fetch(&self, req: FetchRequest) -> BoxFuture<Result<Fetched, WireError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            // The engine prefixes STS failures with the session and the endpoint
            // (`sessions::explain`), so "no network yet after a wake-up" reads as such.
            inner.fetch(req).await
        })
    }

    fn whoami(
        &self,
        config: Arc<SessionConfig>,
        creds: Arc<Credentials>,
    ) -> BoxFuture<Result<Identity, WireError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let out = inner
                .client
                .get_caller_identity()
                .customize()
                .config_override(inner.overrides(
                    &config,
                    Some(SharedCredentialsProvider::new(creds.to_sdk())),
                ))
                .send()
                .await
                .map_err(|e| classify("GetCallerIdentity", e, false))?;
            Ok(Identity {
                account: out.account().unwrap_or_default().to_string(),
                arn: out.arn().unwrap_or_default().to_string(),
                user_id: out.user_id().unwrap_or_default().to_string(),
                expiration: crate::credentials::rfc3339(creds.expiration),
                mfa_expiration: None,
            })
        })
    }

    fn mfa_expiration(&self, config: &SessionConfig) -> Option<SystemTime> {
        let mfa = config.mfa.as_ref()?;
        let key = mfa_key(&mfa.serial.0, config);
        let sessions = self
            .inner
            .mfa_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        sessions.get(&key).map(|c| c.expiration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(config: &str, creds: &str) -> ProfileFiles {
        ProfileFiles {
            config: config.into(),
            creds: creds.into(),
        }
    }

    #[test]
    fn a_plain_credential_process_profile_is_a_chain_without_roles() {
        let f = files("[profile p]\ncredential_process = /bin/tool a\n", "");
        assert_eq!(
            f.process_chain("p"),
            Some(ProcessChain {
                root: "p".into(),
                command: "/bin/tool a".into(),
                roles: vec![],
            })
        );
    }

    #[test]
    fn a_source_profile_chain_to_a_credential_process_is_walked_root_first() {
        let f = files(
            "[profile top]\nrole_arn = arn:aws:iam::1:role/top\nsource_profile = mid\n\
             external_id = ext\nrole_session_name = me\nduration_seconds = 1800\n\n\
             [profile mid]\nrole_arn = arn:aws:iam::1:role/mid\nsource_profile = root\n\n\
             [profile root]\ncredential_process = /bin/tool\n",
            "",
        );
        let chain = f.process_chain("top").expect("a process chain");
        assert_eq!(chain.root, "root");
        assert_eq!(chain.command, "/bin/tool");
        let arns: Vec<_> = chain.roles.iter().map(|r| r.arn.as_str()).collect();
        assert_eq!(arns, ["arn:aws:iam::1:role/mid", "arn:aws:iam::1:role/top"]);
        let top = &chain.roles[1];
        assert_eq!(top.external_id.as_deref(), Some("ext"));
        assert_eq!(top.session_name.as_deref(), Some("me"));
        assert_eq!(top.duration_seconds, Some(1800));
        assert_eq!(chain.roles[0].duration_seconds, None);
    }

    #[test]
    fn a_self_referencing_role_profile_uses_its_own_credential_process() {
        let f = files(
            "[profile s]\nrole_arn = arn:aws:iam::1:role/s\nsource_profile = s\n\
             credential_process = /bin/tool\n",
            "",
        );
        let chain = f.process_chain("s").expect("a process chain");
        assert_eq!(chain.root, "s");
        assert_eq!(chain.roles.len(), 1);
    }

    #[test]
    fn chains_without_a_credential_process_are_left_to_the_sdk() {
        // Static keys in a source profile win over its credential_process (as in the SDK).
        let f = files(
            "[profile a]\nrole_arn = arn:aws:iam::1:role/a\nsource_profile = b\n\n\
             [profile b]\ncredential_process = /bin/tool\n",
            "[b]\naws_access_key_id = AKIA\naws_secret_access_key = s\n",
        );
        assert_eq!(f.process_chain("a"), None);
        // A loop, a credential_source, SSO and a missing profile: the SDK reports them.
        let f = files(
            "[profile x]\nrole_arn = r\nsource_profile = y\n\n\
             [profile y]\nrole_arn = r\nsource_profile = x\ncredential_process = t\n\n\
             [profile e]\nrole_arn = r\ncredential_source = Environment\n\n\
             [profile o]\nsso_session = s\ncredential_process = t\n\n\
             [profile m]\nrole_arn = r\nsource_profile = nowhere\n",
            "",
        );
        for p in ["x", "e", "o", "m", "absent"] {
            assert_eq!(f.process_chain(p), None, "{p}");
        }
    }

    #[test]
    fn lifetime_is_measured_on_sts_clock_when_it_says_it() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let exp = t + Duration::from_secs(3600);
        // Our clock ten minutes slow: against our clock the credential would seem to live
        // 70 minutes; STS's Date says 60 (less Date's truncated second).
        let ours = t - Duration::from_secs(600);
        assert_eq!(lifetime_of(exp, ours, None), Duration::from_secs(4200));
        assert_eq!(lifetime_of(exp, ours, Some(t)), Duration::from_secs(3599));
        // Our clock two hours fast: not "already expired".
        let fast = t + Duration::from_secs(7200);
        assert_eq!(lifetime_of(exp, fast, None), Duration::ZERO);
        assert_eq!(lifetime_of(exp, fast, Some(t)), Duration::from_secs(3599));
    }

    #[test]
    fn throttling_codes_include_slow_down_and_exclude_outages() {
        for c in [
            "Throttling",
            "ThrottlingException",
            "RequestLimitExceeded",
            "SlowDown",
            "TooManyRequestsException",
        ] {
            assert!(is_throttling(c), "{c}");
        }
        for c in ["ServiceUnavailable", "InternalFailure", "AccessDenied", ""] {
            assert!(!is_throttling(c), "{c}");
        }
    }

    #[test]
    fn date_capture_parses_http_dates() {
        let c = DateCapture::default();
        assert_eq!(c.date(), None);
        *c.0.lock().unwrap() = Some(("Wed, 02 Dec 2026 05:27:26 GMT".into(), SystemTime::now()));
        assert_eq!(
            c.date().map(crate::credentials::rfc3339).as_deref(),
            Some("2026-12-02T05:27:26Z")
        );
        *c.0.lock().unwrap() = Some(("yesterday".into(), SystemTime::now()));
        assert_eq!(c.date(), None);
    }
}
