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

/// Fresh credentials and how long they live.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The credentials.
    pub creds: Credentials,
    /// Lifetime measured from when the request was sent (monotonic scheduling anchors it at
    /// the start of the fetch, so it never outlives the real expiration; not the wall clock).
    pub lifetime: Duration,
    /// A note for `daemon list`, e.g. the chaining cap.
    pub note: Option<String>,
}

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
            Source::Default => self.default_creds.clone().ok_or_else(|| {
                WireError::new(
                    ErrorCode::SourceError,
                    "no default AWS credentials: the daemon's environment and shared config \
                     provide none; set a `profile`, `keyring` or `session` source",
                )
            }),
            Source::Profile(p) => {
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
            let out = call
                .customize()
                .config_override(self.overrides(&cfg, Some(base)))
                .send()
                .await
                .map_err(|e| classify("GetSessionToken", e, cfg.mfa.is_some()))?;
            return convert(out.credentials(), None, started, note);
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
        let out = call
            .customize()
            .config_override(self.overrides(&cfg, Some(caller)))
            .send()
            .await
            .map_err(|e| classify("AssumeRole", e, false))?;
        let arn = out.assumed_role_user().map(|u| u.arn().to_string());
        convert(out.credentials(), arn, started, note)
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
        let out = call
            .customize()
            .config_override(self.overrides(cfg, None))
            .send()
            .await
            .map_err(|e| classify("AssumeRoleWithWebIdentity", e, false))?;
        let arn = out.assumed_role_user().map(|u| u.arn().to_string());
        convert(out.credentials(), arn, started, note)
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
        let key = format!(
            "{serial}\u{0}{:?}\u{0}{}",
            req.config.source(),
            req.config.endpoint_url().unwrap_or_default()
        );
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
    let child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot run the MFA command {prog:?}: {e}")))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| {
            fail(format!(
                "the MFA command {prog:?} timed out after {timeout:?}"
            ))
        })?
        .map_err(|e| fail(format!("the MFA command {prog:?} failed: {e}")))?;
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

fn convert(
    c: Option<&aws_sdk_sts::types::Credentials>,
    arn: Option<String>,
    started: SystemTime,
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
    // Lifetime measured from when we sent the request: conservative by the round trip.
    let lifetime = expiration.duration_since(started).unwrap_or(Duration::ZERO);
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
                Some(c) if c.contains("Throttl") || c == "RequestLimitExceeded" => {
                    ErrorCode::Throttled
                }
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
#[derive(Debug, Clone, Default)]
pub struct LazySts {
    cell: Arc<tokio::sync::OnceCell<StsFetcher>>,
}

impl LazySts {
    /// An unloaded fetcher.
    pub fn new() -> LazySts {
        LazySts::default()
    }
}

impl Fetch for LazySts {
    fn fetch(&self, req: FetchRequest) -> BoxFuture<Result<Fetched, WireError>> {
        let cell = self.cell.clone();
        Box::pin(async move { cell.get_or_init(StsFetcher::load).await.fetch(req).await })
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
    fn fetch(&self, req: FetchRequest) -> BoxFuture<Result<Fetched, WireError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.fetch(req).await })
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
            })
        })
    }
}
