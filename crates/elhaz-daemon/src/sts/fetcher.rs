//! [`StsFetcher`]: one `aws_sdk_sts::Client` for every session, the base credentials of each
//! source, and the STS calls that turn a config into credentials. Each call carries its
//! region, endpoint and credentials in `config_override`, and an interceptor that records
//! STS's `Date` (see `answers`). MFA lives in `mfa`, child processes in `children`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_sts::config::Region;
use secrecy::{ExposeSecret, SecretString};

use super::answers::{DateCapture, classify, convert, convert_dated};
use super::children::run_credential_process;
use super::mfa::mfa_key;
use super::profiles::{ProcessChain, ProfileFiles, default_profile, env_keys_present};
use super::{BoxFuture, Fetch, FetchRequest, Fetched, ToSdk, federation_policy};
use crate::config::{self, RoleConfig, SessionConfig, Source};
use crate::credentials::Credentials;
use crate::error::display_chain;
use crate::protocol::{ErrorCode, Identity, WireError};

/// The credentials of `base` when they are temporary (a session token and an expiry), as a
/// fetch result; `None` for long-term keys (or credentials that cannot be resolved now).
pub(super) async fn temporary(
    base: &SharedCredentialsProvider,
    note: Option<String>,
) -> Option<Fetched> {
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
    pub(super) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) client: aws_sdk_sts::Client,
    pub(super) default_region: Option<Region>,
    pub(super) default_creds: Option<SharedCredentialsProvider>,
    /// MFA sessions by (serial, source): shared across configs, refreshed only with a code.
    pub(super) mfa_sessions: Mutex<HashMap<String, Arc<Credentials>>>,
    /// IAM Identity Center tokens and the portal (`[sso]` sources).
    pub(super) sso: Arc<crate::sso::Sso>,
}

/// A role session name STS accepts, derived from the local user.
pub(super) fn default_session_name() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
    let clean: String = user
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(*c))
        .take(56)
        .collect();
    format!("elhaz-{}", if clean.is_empty() { "user" } else { &clean })
}

/// The session duration to ask for, and a note when it was capped: AWS limits role chaining
/// (a `session = …` source) to one hour.
fn capped_duration(req: &FetchRequest) -> (i32, Option<String>) {
    let mut duration = req.config.effective_duration();
    let mut note = None;
    if matches!(req.config.source(), Source::Session(_)) && duration > config::CHAINED_ROLE_MAX {
        note = Some(format!(
            "duration capped from {} to 1h: AWS limits chained role sessions to 1 hour",
            config::Secs(duration)
        ));
        tracing::warn!(session = %req.name, requested = duration, "capping chained role duration to 3600 s");
        duration = config::CHAINED_ROLE_MAX;
    }
    (i32::try_from(duration).unwrap_or(i32::MAX), note)
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
    pub(super) fn region(&self, cfg: &SessionConfig) -> Region {
        cfg.sts
            .as_ref()
            .and_then(|s| s.region.as_ref())
            .or(cfg.region.as_ref())
            .map(|r| Region::new(r.0.clone()))
            .or_else(|| self.default_region.clone())
            .unwrap_or_else(|| Region::from_static("us-east-1"))
    }

    pub(super) fn overrides(
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
    pub(super) async fn base(
        &self,
        req: &FetchRequest,
    ) -> Result<SharedCredentialsProvider, WireError> {
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
    pub(super) async fn run_process_chain(
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
    pub(super) async fn federation_token(
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

    /// Credentials for one session: web identity and plain `[sso]` sessions by their own
    /// call; otherwise the source's base credentials, served as they are when a profile
    /// already yields temporary ones, else GetSessionToken (no `[role]`) or AssumeRole.
    pub(super) async fn fetch(&self, req: FetchRequest) -> Result<Fetched, WireError> {
        let cfg = req.config.clone();
        let (duration, note) = capped_duration(&req);
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
        match &cfg.role {
            None => self.session_token(&req, base, duration, note).await,
            Some(role) => {
                // A role behind MFA is assumed from a shared MFA session.
                let caller = match &cfg.mfa {
                    Some(mfa) => {
                        let mfa_creds = self.mfa_session(&req, &mfa.serial.0, base).await?;
                        SharedCredentialsProvider::new(mfa_creds.to_sdk())
                    }
                    None => base,
                };
                self.assume_role(&req, role, caller, duration, note).await
            }
        }
    }

    /// GetSessionToken with the base credentials (and the MFA code, if configured).
    async fn session_token(
        &self,
        req: &FetchRequest,
        base: SharedCredentialsProvider,
        duration: i32,
        note: Option<String>,
    ) -> Result<Fetched, WireError> {
        let cfg = &req.config;
        let mut call = self.client.get_session_token().duration_seconds(duration);
        if let Some(mfa) = &cfg.mfa {
            let code = self.mfa_code(req).await?;
            call = call
                .serial_number(mfa.serial.0.clone())
                .token_code(code.expose_secret());
        }
        let started = SystemTime::now();
        let dates = DateCapture::default();
        let out = call
            .customize()
            .config_override(self.overrides(cfg, Some(base)))
            .interceptor(dates.clone())
            .send()
            .await
            .map_err(|e| classify("GetSessionToken", e, cfg.mfa.is_some()))?;
        convert_dated(out.credentials(), None, started, dates.date(), note)
    }

    /// AssumeRole of `role` with `caller`'s credentials, with every `[role]` setting (session
    /// name, external id, session policy and policy ARNs, source identity, tags).
    async fn assume_role(
        &self,
        req: &FetchRequest,
        role: &RoleConfig,
        caller: SharedCredentialsProvider,
        duration: i32,
        note: Option<String>,
    ) -> Result<Fetched, WireError> {
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
            .config_override(self.overrides(&req.config, Some(caller)))
            .interceptor(dates.clone())
            .send()
            .await
            .map_err(|e| classify("AssumeRole", e, false))?;
        let arn = out.assumed_role_user().map(|u| u.arn().to_string());
        convert_dated(out.credentials(), arn, started, dates.date(), note)
    }

    pub(super) async fn web_identity(
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
            // (`sessions::engine::explain`), so "no network yet after a wake-up" reads as such.
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
