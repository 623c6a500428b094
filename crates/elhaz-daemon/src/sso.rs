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

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use aws_sdk_sso::error::ProvideErrorMetadata;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::config::{Settings, SsoConfig, SsoTokenCache};
use crate::credentials::Credentials;
use crate::credentials::Fetched;
use crate::error::display_chain;
use crate::protocol::{ErrorCode, WireError};

/// botocore's refresh window for SSO tokens.
const REFRESH_AHEAD: Duration = Duration::from_secs(15 * 60);
/// The scope that makes CreateToken return a refresh token.
pub const DEFAULT_SCOPE: &str = "sso:account:access";
/// Client name registered with SSO OIDC.
const CLIENT_NAME: &str = "elhaz";

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

/// A token as the AWS CLI v2 and botocore cache it (`~/.aws/sso/cache/<sha1>.json`). Every
/// string is zeroized on drop; `Debug` shows no secret.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(rename_all = "camelCase")]
pub struct CachedToken {
    /// The start URL the token belongs to.
    #[serde(default)]
    pub start_url: String,
    /// The IAM Identity Center region.
    #[serde(default)]
    pub region: String,
    /// The bearer token for the portal.
    pub access_token: String,
    /// When the access token expires (RFC 3339, UTC, `Z`).
    pub expires_at: String,
    /// The registered OIDC client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The registered client's secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// When the client registration expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_expires_at: Option<String>,
    /// The refresh token (only with the `sso:account:access` scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("start_url", &self.start_url)
            .field("expires_at", &self.expires_at)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[REDACTED]"),
            )
            .finish_non_exhaustive()
    }
}

impl CachedToken {
    /// The access token's expiry (`None`: unparsable, treated as expired).
    pub fn expiry(&self) -> Option<SystemTime> {
        parse_time(&self.expires_at)
    }

    /// Time left on the access token.
    pub fn remaining(&self) -> Duration {
        self.expiry()
            .and_then(|e| e.duration_since(SystemTime::now()).ok())
            .unwrap_or(Duration::ZERO)
    }

    /// Whether a refresh-token grant can be attempted.
    pub fn can_refresh(&self) -> bool {
        let registered = self
            .registration_expires_at
            .as_deref()
            .and_then(parse_time)
            .is_none_or(|t| t > SystemTime::now());
        self.refresh_token.is_some()
            && self.client_id.is_some()
            && self.client_secret.is_some()
            && registered
    }
}

impl CachedToken {
    /// The token as `sso_login` carries it.
    pub fn to_wire(&self) -> crate::protocol::SsoToken {
        crate::protocol::SsoToken {
            access_token: self.access_token.clone(),
            expires_at: self.expires_at.clone(),
            refresh_token: self.refresh_token.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            registration_expires_at: self.registration_expires_at.clone(),
        }
    }

    /// The token an `sso_login` carried, for `target`.
    pub fn from_wire(target: &Target, t: &crate::protocol::SsoToken) -> CachedToken {
        CachedToken {
            start_url: target.start_url.clone(),
            region: target.region.clone(),
            access_token: t.access_token.clone(),
            expires_at: t.expires_at.clone(),
            client_id: t.client_id.clone(),
            client_secret: t.client_secret.clone(),
            registration_expires_at: t.registration_expires_at.clone(),
            refresh_token: t.refresh_token.clone(),
        }
    }
}

/// Parses the cache's times: RFC 3339 (`…Z`, or botocore's `…UTC`).
fn parse_time(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let s = s
        .strip_suffix("UTC")
        .map_or_else(|| s.to_string(), |t| format!("{t}Z"));
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
        .ok()
        .or_else(|| humantime::parse_rfc3339(&s).ok())
}

/// `~/.aws/sso/cache` (from `HOME`).
pub fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".aws/sso/cache"))
}

/// The cache file of a key: `sha1(key)` in hex, `.json`.
pub fn cache_file(dir: &Path, key: &str) -> PathBuf {
    use sha1::Digest;
    dir.join(format!(
        "{}.json",
        hex::encode(sha1::Sha1::digest(key.as_bytes()))
    ))
}

/// Reads a cache file; a missing or unparsable file is `None` (the AWS CLI's own rule: a
/// broken cache means "log in again").
pub fn read_cache(file: &Path) -> Option<CachedToken> {
    let mut text = std::fs::read_to_string(file).ok()?;
    let t = serde_json::from_str(&text).ok();
    text.zeroize();
    t
}

/// Writes a cache file atomically with mode 0600 (temp file in the same dir, then rename).
pub fn write_cache(file: &Path, token: &CachedToken) -> Result<(), crate::Error> {
    use std::os::unix::fs::DirBuilderExt;
    let io = |context: String| move |source| crate::Error::Io { context, source };
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(format!("cannot create {}", dir.display())))?;
    // tempfile creates its file 0600.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(format!(
        "cannot create a temp file in {}",
        dir.display()
    )))?;
    let mut json = serde_json::to_vec_pretty(token).unwrap_or_default();
    let written = tmp.write_all(&json).and_then(|()| tmp.as_file().sync_all());
    json.zeroize();
    written.map_err(io(format!("cannot write {}", file.display())))?;
    tmp.persist(file)
        .map_err(|e| io(format!("cannot write {}", file.display()))(e.error))?;
    Ok(())
}

/// The cache file of a target under `HOME`, if a home is known.
pub fn target_cache_file(target: &Target) -> Option<PathBuf> {
    cache_dir().map(|d| cache_file(&d, target.cache_key()))
}

/// When to renew a token: `min(15 min, lifetime / 3)` before expiry.
fn ahead(lifetime: Option<Duration>) -> Duration {
    lifetime.map_or(REFRESH_AHEAD, |l| REFRESH_AHEAD.min(l / 3))
}

/// What the daemon keeps per start URL.
#[derive(Debug)]
struct Entry {
    target: Target,
    /// The token, and the lifetime it was issued with when we obtained it ourselves. A tokio
    /// mutex: it is held across the refresh call so concurrent fetches share one refresh.
    token: tokio::sync::Mutex<Option<(CachedToken, Option<Duration>)>>,
    /// No usable token and no way to refresh silently.
    login_required: AtomicBool,
    /// The sessions that fetched through this login and are still cached (the engine says
    /// when one goes: [`Sso::session_retired`]). The renewer runs only while this is not
    /// empty.
    users: Mutex<BTreeSet<String>>,
    /// Wakes the renewer: a new token, a user gone, the entry closed.
    wake: tokio::sync::Notify,
    /// Dropped from the daemon (`sso logout`, or replaced by another target for the key).
    closed: AtomicBool,
    /// Whether a renewer task runs for this entry.
    renewing: AtomicBool,
    /// Times the renewer woke up (tests check it stays idle when there is nothing to renew).
    wakeups: std::sync::atomic::AtomicU64,
}

impl Entry {
    fn new(target: &Target) -> Entry {
        Entry {
            target: target.clone(),
            token: tokio::sync::Mutex::new(None),
            login_required: AtomicBool::new(false),
            users: Mutex::new(BTreeSet::new()),
            wake: tokio::sync::Notify::new(),
            closed: AtomicBool::new(false),
            renewing: AtomicBool::new(false),
            wakeups: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn users(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the renewer has a reason to run.
    fn wanted(&self) -> bool {
        !self.closed.load(Ordering::SeqCst) && !self.users().is_empty()
    }
}

/// The daemon's IAM Identity Center state: one [`Entry`] per cache key, the OIDC and portal
/// clients (sharing the daemon's HTTP client and timeouts).
#[derive(Debug)]
pub struct Sso {
    oidc: aws_sdk_ssooidc::Client,
    portal: aws_sdk_sso::Client,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

/// Where the token cache lives according to `elhaz.toml` (re-read: it may change while the
/// daemon runs, and an invalid file keeps the default).
fn settings() -> Settings {
    crate::paths::Paths::from_env()
        .ok()
        .and_then(|p| Settings::load(&p.settings_file).ok())
        .unwrap_or_default()
}

fn disk_cache(settings: &Settings) -> bool {
    settings.sso_token_cache.unwrap_or_default() == SsoTokenCache::Aws
}

impl Sso {
    /// Clients built from the daemon's SDK config.
    pub fn new(sdk: &aws_config::SdkConfig) -> Sso {
        Sso {
            oidc: aws_sdk_ssooidc::Client::new(sdk),
            portal: aws_sdk_sso::Client::new(sdk),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entry(&self, target: &Target) -> Arc<Entry> {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = map.get(target.cache_key())
            && e.target == *target
        {
            return e.clone();
        }
        let e = Arc::new(Entry::new(target));
        if let Some(old) = map.insert(target.cache_key().to_string(), e.clone()) {
            // The key now names another login (its config changed): the old one ends.
            old.closed.store(true, Ordering::SeqCst);
            old.wake.notify_one();
        }
        e
    }

    /// Starts the entry's renewer unless one runs (or there is no user to renew for).
    fn ensure_renewer(self: &Arc<Self>, entry: &Arc<Entry>) -> Option<tokio::task::JoinHandle<()>> {
        if !entry.wanted() || entry.renewing.swap(true, Ordering::SeqCst) {
            return None;
        }
        Some(tokio::spawn(refresher(Arc::downgrade(self), entry.clone())))
    }

    /// The engine dropped session `name` (removed, evicted, reloaded): it no longer keeps a
    /// renewer alive. The held token stays (a later fetch may use or refresh it).
    pub fn session_retired(&self, name: &str) {
        let entries: Vec<Arc<Entry>> = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for e in entries {
            let now_unused = {
                let mut users = e.users();
                users.remove(name) && users.is_empty()
            };
            if now_unused {
                e.wake.notify_one();
            }
        }
    }

    /// Every login the daemon holds, for `sso_status` (no secret).
    pub async fn status(&self) -> Vec<crate::protocol::SsoLoginInfo> {
        let mut entries: Vec<Arc<Entry>> = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        entries.sort_by(|a, b| a.target.cache_key().cmp(b.target.cache_key()));
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let guard = e.token.lock().await;
            let token = guard.as_ref().map(|(t, _)| t);
            out.push(crate::protocol::SsoLoginInfo {
                sso: e.target.to_wire(),
                expires_at: token.map(|t| t.expires_at.clone()),
                refresh_token: token.is_some_and(|t| t.refresh_token.is_some()),
                login_required: e.login_required.load(Ordering::Relaxed),
                sessions: e.users().iter().cloned().collect(),
            });
        }
        out
    }

    /// The accounts and roles of `target`'s login, listed by the portal with the daemon's
    /// token (renewed first if due): `sso populate` in memory-only mode, where the CLI has no
    /// token of its own.
    pub async fn assignments(
        self: &Arc<Self>,
        target: &Target,
    ) -> Result<Vec<Assignment>, WireError> {
        let entry = self.entry(target);
        let disk = disk_cache(&settings());
        let token = self.access_token(&entry, disk, false).await?;
        list_assignments(
            &self.portal,
            target,
            secrecy::ExposeSecret::expose_secret(&token),
        )
        .await
    }

    /// Drops the daemon's token of `target` (`sso logout`); with `portal`, first calls the
    /// portal's Logout with it. Returns whether a token was held and the portal's failure.
    pub async fn logout(&self, target: &Target, portal: bool) -> (bool, Option<String>) {
        let entry = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(target.cache_key());
        let Some(entry) = entry else {
            return (false, None);
        };
        entry.closed.store(true, Ordering::SeqCst);
        entry.wake.notify_one();
        let token = entry.token.lock().await.take();
        let Some((token, _)) = token else {
            return (false, None);
        };
        let mut failed = None;
        if portal {
            let out = self
                .portal
                .logout()
                .access_token(&token.access_token)
                .customize()
                .config_override(
                    aws_sdk_sso::config::Builder::default()
                        .region(aws_sdk_sso::config::Region::new(target.region.clone())),
                )
                .send()
                .await;
            if let Err(e) = out {
                failed = Some(classify("SSO Logout", &e).message);
            }
        }
        tracing::info!(start_url = %target.start_url, "SSO token dropped (logout)");
        (true, failed)
    }

    /// Role credentials of an `[sso]` config through GetRoleCredentials.
    pub async fn role_credentials(
        self: &Arc<Self>,
        name: &str,
        sso: &SsoConfig,
        note: Option<String>,
    ) -> Result<Fetched, WireError> {
        let settings = settings();
        let target = Target::resolve(sso, &settings)?;
        let entry = self.entry(&target);
        entry.users().insert(name.to_string());
        self.ensure_renewer(&entry);
        let disk = disk_cache(&settings);
        for attempt in 0..2 {
            let token = self.access_token(&entry, disk, attempt > 0).await?;
            let started = SystemTime::now();
            let out = self
                .portal
                .get_role_credentials()
                .account_id(&sso.account_id)
                .role_name(&sso.role_name)
                .access_token(secrecy::ExposeSecret::expose_secret(&token))
                .customize()
                .config_override(
                    aws_sdk_sso::config::Builder::default()
                        .region(aws_sdk_sso::config::Region::new(target.region.clone())),
                )
                .send()
                .await;
            match out {
                Ok(out) => {
                    let c = out.role_credentials().ok_or_else(|| {
                        WireError::new(
                            ErrorCode::UpstreamError,
                            "SSO GetRoleCredentials returned no credentials",
                        )
                    })?;
                    let expiration = SystemTime::UNIX_EPOCH
                        + Duration::from_millis(u64::try_from(c.expiration()).unwrap_or(0));
                    return Ok(Fetched {
                        creds: Credentials {
                            access_key_id: c.access_key_id().unwrap_or_default().to_string(),
                            secret_access_key: SecretString::from(
                                c.secret_access_key().unwrap_or_default().to_string(),
                            ),
                            session_token: SecretString::from(
                                c.session_token().unwrap_or_default().to_string(),
                            ),
                            expiration,
                            account_id: Some(sso.account_id.clone()),
                            arn: None,
                        },
                        lifetime: expiration.duration_since(started).unwrap_or(Duration::ZERO),
                        note,
                    });
                }
                Err(e) if e.code() == Some("UnauthorizedException") && attempt == 0 => {
                    // The token was revoked or expired early: refresh (or re-read) once.
                    tracing::info!(session = name, start_url = %target.start_url, "SSO token rejected by the portal; refreshing");
                    continue;
                }
                Err(e) if e.code() == Some("UnauthorizedException") => {
                    // Kept (not cleared), so only a different token — a new login — is tried.
                    entry.login_required.store(true, Ordering::Relaxed);
                    return Err(login_required(&target, "the portal rejected the token"));
                }
                Err(e) => return Err(classify("SSO GetRoleCredentials", &e)),
            }
        }
        Err(login_required(&target, "the portal rejected the token"))
    }

    /// A valid access token for `entry`: held, re-read from the cache, or refreshed.
    async fn access_token(
        &self,
        entry: &Entry,
        disk: bool,
        force: bool,
    ) -> Result<SecretString, WireError> {
        let target = &entry.target;
        let mut guard = entry.token.lock().await;
        let before = guard
            .as_ref()
            .map(|(t, _)| zeroize::Zeroizing::new(t.access_token.clone()));
        adopt_disk(&mut guard, target, disk);
        let replaced = guard.as_ref().map(|(t, _)| t.access_token.as_str())
            != before.as_ref().map(|b| b.as_str());
        if replaced {
            // Someone logged in (elhaz, the AWS CLI, botocore): a fresh start.
            entry.login_required.store(false, Ordering::Relaxed);
            entry.wake.notify_one();
        } else if entry.login_required.load(Ordering::Relaxed) {
            // Fail at once, with no network call, until a new token appears.
            return Err(login_required(
                target,
                "the token expired or was revoked and could not be renewed",
            ));
        }
        // A token another tool just wrote is tried before forcing a refresh.
        let force = force && !replaced;
        if let Some((t, life)) = guard.as_ref()
            && !force
            && t.remaining() > ahead(*life)
        {
            return Ok(SecretString::from(t.access_token.clone()));
        }
        match self.refresh_locked(&mut guard, target, disk).await {
            Ok(()) => {}
            Err(e) => {
                // A token that is still valid is used to its end (unless the portal refused
                // it: `force`).
                if let Some((t, _)) = guard.as_ref()
                    && !force
                    && t.remaining() > Duration::from_secs(5)
                {
                    return Ok(SecretString::from(t.access_token.clone()));
                }
                if e.code == ErrorCode::LoginRequired {
                    entry.login_required.store(true, Ordering::Relaxed);
                }
                return Err(e);
            }
        }
        entry.login_required.store(false, Ordering::Relaxed);
        let (t, _) = guard
            .as_ref()
            .ok_or_else(|| WireError::new(ErrorCode::Internal, "SSO refresh left no token"))?;
        Ok(SecretString::from(t.access_token.clone()))
    }

    /// The refresh-token grant; the caller holds the entry's lock.
    async fn refresh_locked(
        &self,
        slot: &mut Option<(CachedToken, Option<Duration>)>,
        target: &Target,
        disk: bool,
    ) -> Result<(), WireError> {
        let Some((old, _)) = slot.as_ref().filter(|(t, _)| t.can_refresh()) else {
            return Err(login_required(
                target,
                if slot.is_some() {
                    "the token expired and there is no refresh token"
                } else {
                    "no token"
                },
            ));
        };
        let out = self
            .oidc
            .create_token()
            .grant_type("refresh_token")
            .set_client_id(old.client_id.clone())
            .set_client_secret(old.client_secret.clone())
            .set_refresh_token(old.refresh_token.clone())
            .customize()
            .config_override(
                aws_sdk_ssooidc::config::Builder::default()
                    .region(aws_sdk_ssooidc::config::Region::new(target.region.clone())),
            )
            .send()
            .await;
        match out {
            Ok(out) => {
                let lifetime = Duration::from_secs(u64::try_from(out.expires_in()).unwrap_or(0));
                let mut new = old.clone();
                new.access_token = out.access_token().unwrap_or_default().to_string();
                new.expires_at = crate::credentials::rfc3339(SystemTime::now() + lifetime);
                if let Some(r) = out.refresh_token() {
                    new.refresh_token = Some(r.to_string());
                }
                new.start_url = target.start_url.clone();
                new.region = target.region.clone();
                if disk
                    && let Some(f) = target_cache_file(target)
                    && let Err(e) = write_cache(&f, &new)
                {
                    tracing::warn!(error = %display_chain(&e), "cannot write the SSO token cache");
                }
                tracing::info!(start_url = %target.start_url, "SSO access token refreshed");
                *slot = Some((new, Some(lifetime)));
                Ok(())
            }
            Err(e) => {
                let code = e.code().unwrap_or_default().to_string();
                tracing::warn!(start_url = %target.start_url, code, "SSO token refresh failed");
                if matches!(
                    code.as_str(),
                    "InvalidGrantException"
                        | "ExpiredTokenException"
                        | "AccessDeniedException"
                        | "InvalidClientException"
                        | "UnauthorizedClientException"
                ) {
                    if let Some((t, _)) = slot.as_mut() {
                        t.refresh_token = None;
                    }
                    Err(login_required(
                        target,
                        &format!("the refresh was refused ({code})"),
                    ))
                } else {
                    Err(classify("SSO OIDC CreateToken", &e))
                }
            }
        }
    }

    /// Takes a token `elhaz sso login` handed over (`sso_login`): every session of the start
    /// URL uses it at once, and it is renewed like one the daemon obtained. Nothing is written
    /// to the AWS CLI's cache here (in the default mode the CLI wrote it already).
    pub async fn adopt(self: &Arc<Self>, target: &Target, token: CachedToken) {
        let entry = self.entry(target);
        let lifetime = token.remaining();
        *entry.token.lock().await = Some((token, Some(lifetime)));
        entry.login_required.store(false, Ordering::Relaxed);
        entry.wake.notify_one();
        self.ensure_renewer(&entry);
        tracing::info!(start_url = %target.start_url, "SSO token handed over by `elhaz sso login`");
    }
}

/// Takes the cache file's token when it is newer than the one held (another tool logged in or
/// refreshed).
fn adopt_disk(slot: &mut Option<(CachedToken, Option<Duration>)>, target: &Target, disk: bool) {
    if !disk {
        return;
    }
    let Some(file) = target_cache_file(target) else {
        return;
    };
    let Some(t) = read_cache(&file) else {
        return;
    };
    if !t.start_url.is_empty() && t.start_url != target.start_url {
        return;
    }
    let newer = match slot.as_ref() {
        None => true,
        Some((held, _)) => t.expiry() > held.expiry() && t.access_token != held.access_token,
    };
    if newer {
        *slot = Some((t, None));
    }
}

/// How long the renewer waits after a renewal that failed for a passing reason (network,
/// throttling), doubling from 30 s up to 5 min.
fn retry_after(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    (Duration::from_secs(30) * 2u32.saturating_pow(failures.min(5) - 1))
        .min(Duration::from_secs(300))
}

/// The background renewal of one start URL's access token.
///
/// It sleeps until the token is due for renewal, and only while it holds a token it can
/// renew; otherwise it waits for [`Entry::wake`] alone (no timer, so an idle or logged-out
/// start URL never wakes the daemon). It ends when no cached session uses the start URL, when
/// the entry is dropped (`sso logout`), or when the daemon's fetcher goes. Bounded: one
/// iteration per renewal attempt or wake-up.
async fn refresher(sso: Weak<Sso>, entry: Arc<Entry>) {
    let mut failures = 0u32;
    loop {
        if !entry.wanted() {
            entry.renewing.store(false, Ordering::SeqCst);
            // A user may have arrived between the check and the store: keep running then.
            if !entry.wanted() || entry.renewing.swap(true, Ordering::SeqCst) {
                tracing::debug!(start_url = %entry.target.start_url, "SSO renewer ends: no session uses it");
                return;
            }
        }
        let wait = {
            let guard = entry.token.lock().await;
            match guard.as_ref() {
                Some((t, life)) if t.can_refresh() => Some(
                    t.remaining()
                        .saturating_sub(ahead(*life))
                        .max(retry_after(failures))
                        .clamp(Duration::from_secs(1), Duration::from_secs(3600)),
                ),
                _ => None,
            }
        };
        let woken = match wait {
            None => {
                entry.wake.notified().await;
                true
            }
            Some(w) => tokio::select! {
                () = tokio::time::sleep(w) => false,
                () = entry.wake.notified() => true,
            },
        };
        entry.wakeups.fetch_add(1, Ordering::Relaxed);
        if woken {
            // Something changed (a token, the users): look again.
            failures = 0;
            continue;
        }
        let Some(sso) = sso.upgrade() else { return };
        let disk = disk_cache(&settings());
        let mut guard = entry.token.lock().await;
        adopt_disk(&mut guard, &entry.target, disk);
        let due = match guard.as_ref() {
            Some((t, life)) => t.can_refresh() && t.remaining() <= ahead(*life),
            None => false,
        };
        if due {
            // A refused renewal is noticed by the next fetch once the token has expired;
            // until then the token is used to its end.
            match sso.refresh_locked(&mut guard, &entry.target, disk).await {
                Ok(()) => {
                    failures = 0;
                    entry.login_required.store(false, Ordering::Relaxed);
                }
                Err(_) => failures = failures.saturating_add(1),
            }
        }
    }
}

fn login_required(target: &Target, why: &str) -> WireError {
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

fn classify<E, R>(op: &str, e: &aws_sdk_sso::error::SdkError<E, R>) -> WireError
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

/// How `elhaz sso login` signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// OAuth device authorization: a URL and a code to confirm on any device.
    DeviceCode,
    /// Authorization code with PKCE and a loopback redirect (a browser on this machine).
    Pkce,
}

/// Options of a login.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    /// Which flow.
    pub flow: Flow,
    /// Open the URL with `$BROWSER` / `xdg-open` / `open`; otherwise only print it.
    pub open_browser: bool,
    /// Give up after this long.
    pub timeout: Duration,
}

/// Whether this machine looks able to open a browser (a display, macOS, or `$BROWSER`).
pub fn has_display() -> bool {
    cfg!(target_os = "macos")
        || ["DISPLAY", "WAYLAND_DISPLAY", "BROWSER"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

fn oidc_region(target: &Target) -> aws_sdk_ssooidc::config::Builder {
    aws_sdk_ssooidc::config::Builder::default()
        .region(aws_sdk_ssooidc::config::Region::new(target.region.clone()))
}

/// The OIDC base URL the authorize page lives on (the SDK's endpoint rules, env overrides
/// first).
fn oidc_base_url(target: &Target) -> String {
    ["AWS_ENDPOINT_URL_SSO_OIDC", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| format!("https://oidc.{}.amazonaws.com", target.region))
        .trim_end_matches('/')
        .to_string()
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Decodes a percent-encoded query value (`+` is a space).
fn dec(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unpadded base64url (RFC 4648 §5), as PKCE wants.
fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The PKCE challenge of a verifier: `base64url(sha256(verifier))`.
pub fn pkce_challenge(verifier: &str) -> String {
    use sha2::Digest;
    b64url(&sha2::Sha256::digest(verifier.as_bytes()))
}

fn open_url(url: &str) {
    let opener = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| {
            if cfg!(target_os = "macos") {
                "open".into()
            } else {
                "xdg-open".into()
            }
        });
    let spawned = std::process::Command::new(&opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        eprintln!("cannot open a browser with {opener:?} ({e}); open the URL above yourself");
    }
}

/// Runs a login and returns the token (with the client registration, for refreshes).
/// `say` receives the lines to show the user (URL, code).
pub async fn login(
    sdk: &aws_config::SdkConfig,
    target: &Target,
    opts: &LoginOptions,
    say: &mut (dyn FnMut(&str) + Send),
) -> Result<CachedToken, WireError> {
    let oidc = aws_sdk_ssooidc::Client::new(sdk);
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let timeout_err = || {
        WireError::new(
            ErrorCode::Unavailable,
            format!(
                "the login was not completed within {}; run `{}` again",
                crate::config::Secs(opts.timeout.as_secs()),
                target.login_hint()
            ),
        )
    };
    let (listener, redirect) = match opts.flow {
        Flow::Pkce => {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| {
                    WireError::new(
                        ErrorCode::Internal,
                        format!("cannot listen on 127.0.0.1: {e}"),
                    )
                })?;
            let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
            (
                Some(l),
                Some(format!("http://127.0.0.1:{port}/oauth/callback")),
            )
        }
        Flow::DeviceCode => (None, None),
    };
    let mut reg = oidc
        .register_client()
        .client_name(CLIENT_NAME)
        .client_type("public")
        .set_scopes(Some(target.scopes.clone()));
    if let Some(r) = &redirect {
        reg = reg
            .grant_types("authorization_code")
            .grant_types("refresh_token")
            .redirect_uris(r)
            .issuer_url(&target.start_url);
    }
    let reg = reg
        .customize()
        .config_override(oidc_region(target))
        .send()
        .await
        .map_err(|e| classify("SSO OIDC RegisterClient", &e))?;
    let client_id = reg.client_id().unwrap_or_default().to_string();
    let client_secret = reg.client_secret().unwrap_or_default().to_string();
    let registration_expires_at = (reg.client_secret_expires_at() > 0).then(|| {
        crate::credentials::rfc3339(
            SystemTime::UNIX_EPOCH
                + Duration::from_secs(u64::try_from(reg.client_secret_expires_at()).unwrap_or(0)),
        )
    });

    let out = match (listener, redirect) {
        (Some(listener), Some(redirect)) => {
            let verifier = b64url(&rand::random::<[u8; 48]>());
            let state = hex::encode(rand::random::<[u8; 16]>());
            let url = format!(
                "{}/authorize?response_type=code&client_id={}&redirect_uri={}&state={}&code_challenge_method=S256&scopes={}&code_challenge={}",
                oidc_base_url(target),
                enc(&client_id),
                enc(&redirect),
                state,
                enc(&target.scopes.join(" ")),
                pkce_challenge(&verifier),
            );
            say(&format!(
                "Sign in to {} in your browser:\n  {url}",
                target.start_url
            ));
            if opts.open_browser {
                open_url(&url);
            }
            let code = tokio::time::timeout_at(deadline, callback(&listener, &state))
                .await
                .map_err(|_| timeout_err())??;
            oidc.create_token()
                .grant_type("authorization_code")
                .client_id(&client_id)
                .client_secret(&client_secret)
                .code(code)
                .redirect_uri(&redirect)
                .code_verifier(verifier)
                .customize()
                .config_override(oidc_region(target))
                .send()
                .await
                .map_err(|e| classify("SSO OIDC CreateToken", &e))?
        }
        _ => {
            let auth = oidc
                .start_device_authorization()
                .client_id(&client_id)
                .client_secret(&client_secret)
                .start_url(&target.start_url)
                .customize()
                .config_override(oidc_region(target))
                .send()
                .await
                .map_err(|e| classify("SSO OIDC StartDeviceAuthorization", &e))?;
            let url = auth
                .verification_uri_complete()
                .or(auth.verification_uri())
                .unwrap_or_default()
                .to_string();
            say(&format!(
                "Sign in to {} and confirm the code {}:\n  {url}",
                target.start_url,
                auth.user_code().unwrap_or_default()
            ));
            if opts.open_browser {
                open_url(&url);
            }
            let expires =
                tokio::time::Instant::now() + Duration::from_secs(auth.expires_in().max(1) as u64);
            let mut interval = Duration::from_secs(auth.interval().clamp(1, 60) as u64);
            let device_code = auth.device_code().unwrap_or_default().to_string();
            // Bounded by the deadline and the device code's own expiry.
            loop {
                if tokio::time::Instant::now() + interval > deadline.min(expires) {
                    return Err(if deadline <= expires {
                        timeout_err()
                    } else {
                        device_expired(target)
                    });
                }
                tokio::time::sleep(interval).await;
                let r = oidc
                    .create_token()
                    .grant_type("urn:ietf:params:oauth:grant-type:device_code")
                    .client_id(&client_id)
                    .client_secret(&client_secret)
                    .device_code(&device_code)
                    .customize()
                    .config_override(oidc_region(target))
                    .send()
                    .await;
                match r {
                    Ok(out) => break out,
                    Err(e) => match e.code() {
                        Some("AuthorizationPendingException") => {}
                        Some("SlowDownException") => interval += Duration::from_secs(5),
                        Some("ExpiredTokenException") => return Err(device_expired(target)),
                        Some("AccessDeniedException") => {
                            return Err(WireError::new(
                                ErrorCode::AccessDenied,
                                "the sign-in was denied in the browser",
                            ));
                        }
                        _ => return Err(classify("SSO OIDC CreateToken", &e)),
                    },
                }
            }
        }
    };
    let lifetime = Duration::from_secs(u64::try_from(out.expires_in()).unwrap_or(0));
    Ok(CachedToken {
        start_url: target.start_url.clone(),
        region: target.region.clone(),
        access_token: out.access_token().unwrap_or_default().to_string(),
        expires_at: crate::credentials::rfc3339(SystemTime::now() + lifetime),
        client_id: Some(client_id),
        client_secret: Some(client_secret),
        registration_expires_at,
        refresh_token: out.refresh_token().map(str::to_string),
    })
}

fn device_expired(target: &Target) -> WireError {
    WireError::new(
        ErrorCode::Expired,
        format!(
            "the device code expired before the sign-in was confirmed; run `{}` again",
            target.login_hint()
        ),
    )
}

/// Waits for the browser's redirect to the loopback listener; returns the code.
async fn callback(listener: &tokio::net::TcpListener, state: &str) -> Result<String, WireError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Bounded by the caller's deadline; stray connections (favicon…) are answered and skipped.
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        // The whole request head, not just the first read: a browser may send the request
        // line and the headers in separate segments, and answering (and closing) before the
        // rest has arrived makes the kernel reset the connection under the browser, which
        // then sees a broken pipe instead of our page. Bounded: 8 KiB and 5 s.
        let mut buf = Vec::with_capacity(1024);
        let read_head = async {
            let mut chunk = [0u8; 1024];
            while buf.len() < 8192 && !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Ok::<(), std::io::Error>(())
        };
        if !matches!(
            tokio::time::timeout(Duration::from_secs(5), read_head).await,
            Ok(Ok(()))
        ) {
            continue;
        }
        let head = String::from_utf8_lossy(&buf).into_owned();
        let target = head
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let Some(query) = target.strip_prefix("/oauth/callback?") else {
            let _ = sock
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            let _ = sock.shutdown().await;
            continue;
        };
        let params: HashMap<String, String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (dec(k), dec(v)))
            .collect();
        let (status, body, result) = if params.get("state").map(String::as_str) != Some(state) {
            (
                "400 Bad Request",
                "elhaz: the sign-in reply does not match this login (state); try again.",
                Err(WireError::new(
                    ErrorCode::AccessDenied,
                    "the browser's redirect carried another login's state; run the login again",
                )),
            )
        } else if let Some(code) = params.get("code") {
            (
                "200 OK",
                "elhaz: signed in. You can close this window.",
                Ok(code.clone()),
            )
        } else {
            (
                "400 Bad Request",
                "elhaz: the sign-in failed.",
                Err(WireError::new(
                    ErrorCode::AccessDenied,
                    format!(
                        "the sign-in failed: {}",
                        params
                            .get("error")
                            .map_or("no code in the redirect", String::as_str)
                    ),
                )),
            )
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = sock.write_all(reply.as_bytes()).await;
        // FIN after the page (not a reset): the browser reads it whole.
        let _ = sock.shutdown().await;
        return result;
    }
}

/// Portal logout with a token (best effort: the local state is dropped regardless).
pub async fn portal_logout(
    sdk: &aws_config::SdkConfig,
    target: &Target,
    token: &CachedToken,
) -> Result<(), WireError> {
    aws_sdk_sso::Client::new(sdk)
        .logout()
        .access_token(&token.access_token)
        .customize()
        .config_override(
            aws_sdk_sso::config::Builder::default()
                .region(aws_sdk_sso::config::Region::new(target.region.clone())),
        )
        .send()
        .await
        .map_err(|e| classify("SSO Logout", &e))?;
    Ok(())
}

/// One account and role the portal lists for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Account id.
    pub account_id: String,
    /// Account name.
    pub account_name: String,
    /// Role name.
    pub role_name: String,
}

/// Every account and role of a token (ListAccounts, ListAccountRoles), paginated, bounded.
pub async fn assignments(
    sdk: &aws_config::SdkConfig,
    target: &Target,
    token: &CachedToken,
) -> Result<Vec<Assignment>, WireError> {
    list_assignments(&aws_sdk_sso::Client::new(sdk), target, &token.access_token).await
}

/// [`assignments`] with a portal client and a bearer token.
async fn list_assignments(
    portal: &aws_sdk_sso::Client,
    target: &Target,
    access_token: &str,
) -> Result<Vec<Assignment>, WireError> {
    let region = || {
        aws_sdk_sso::config::Builder::default()
            .region(aws_sdk_sso::config::Region::new(target.region.clone()))
    };
    let mut accounts = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..100 {
        let out = portal
            .list_accounts()
            .access_token(access_token)
            .set_next_token(next.take())
            .customize()
            .config_override(region())
            .send()
            .await
            .map_err(|e| classify("SSO ListAccounts", &e))?;
        for a in out.account_list() {
            accounts.push((
                a.account_id().unwrap_or_default().to_string(),
                a.account_name().unwrap_or_default().to_string(),
            ));
        }
        next = out.next_token().map(str::to_string);
        if next.is_none() {
            break;
        }
    }
    let mut all = Vec::new();
    for (id, name) in accounts {
        let mut next: Option<String> = None;
        for _ in 0..100 {
            let out = portal
                .list_account_roles()
                .access_token(access_token)
                .account_id(&id)
                .set_next_token(next.take())
                .customize()
                .config_override(region())
                .send()
                .await
                .map_err(|e| classify("SSO ListAccountRoles", &e))?;
            for r in out.role_list() {
                all.push(Assignment {
                    account_id: id.clone(),
                    account_name: name.clone(),
                    role_name: r.role_name().unwrap_or_default().to_string(),
                });
            }
            next = out.next_token().map(str::to_string);
            if next.is_none() {
                break;
            }
        }
    }
    Ok(all)
}

/// An SDK config for the CLI's SSO calls (no credentials: these APIs take a bearer token).
pub async fn cli_sdk_config() -> aws_config::SdkConfig {
    use aws_config::timeout::TimeoutConfig;
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::from_static("us-east-1"))
        .no_credentials()
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        )
        .load()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_matches_rfc7636() {
        // RFC 7636 appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn cache_file_name_is_sha1_of_key() {
        // sha1("my-sso") as botocore computes it.
        use sha1::Digest;
        let f = cache_file(Path::new("/c"), "my-sso");
        let want = hex::encode(sha1::Sha1::digest(b"my-sso"));
        assert_eq!(f, PathBuf::from(format!("/c/{want}.json")));
        assert_eq!(want.len(), 40);
    }

    #[test]
    fn query_coding_round_trips() {
        let s = "http://127.0.0.1:5/oauth/callback?a=b c&d";
        assert_eq!(dec(&enc(s)), s);
        assert_eq!(dec("a+b%2Fc%"), "a b/c%");
    }

    #[test]
    fn cache_times_parse_both_spellings() {
        assert!(parse_time("2030-01-01T00:00:00Z").is_some());
        assert!(parse_time("2030-01-01T00:00:00UTC").is_some());
        assert!(parse_time("2030-01-01T00:00:00.123Z").is_some());
        assert!(parse_time("soon").is_none());
    }

    fn idle_sso() -> Arc<Sso> {
        // No endpoint is ever called by these tests: the renewer only calls the OIDC service
        // when a token is due, and none is.
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::from_static("us-east-1"))
            .build();
        Arc::new(Sso::new(&sdk))
    }

    fn test_target(name: &str) -> Target {
        Target {
            // A name no real cache file has (the renewer re-reads the cache when it wakes).
            session_name: Some(format!("elhaz-unit-{name}-{}", std::process::id())),
            start_url: "https://unit.awsapps.com/start".into(),
            region: "eu-west-1".into(),
            scopes: vec![DEFAULT_SCOPE.into()],
        }
    }

    fn token(valid_for: Duration, refresh: bool) -> CachedToken {
        CachedToken {
            start_url: "https://unit.awsapps.com/start".into(),
            region: "eu-west-1".into(),
            access_token: "unit-access".into(),
            expires_at: crate::credentials::rfc3339(SystemTime::now() + valid_for),
            client_id: Some("cid".into()),
            client_secret: Some("cs".into()),
            registration_expires_at: None,
            refresh_token: refresh.then(|| "unit-refresh".into()),
        }
    }

    /// Whether the renewer task ends within a (paused-clock) second.
    async fn ends(h: tokio::task::JoinHandle<()>) -> bool {
        tokio::time::timeout(Duration::from_secs(1), h)
            .await
            .is_ok()
    }

    /// With nothing to renew the renewer sleeps without a timer (no wake-up in an hour), and it
    /// ends when the last session using the start URL goes.
    #[tokio::test(start_paused = true)]
    async fn renewer_without_a_token_never_wakes_and_ends_with_its_last_user() {
        let sso = idle_sso();
        let t = test_target("idle");
        let e = sso.entry(&t);
        e.users().insert("a".into());
        e.users().insert("b".into());
        let h = sso
            .ensure_renewer(&e)
            .expect("a renewer starts for a used entry");
        assert!(sso.ensure_renewer(&e).is_none(), "one renewer per entry");
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(
            e.wakeups.load(Ordering::Relaxed),
            0,
            "woke with nothing to renew"
        );
        // A token that cannot be renewed (no refresh token) is nothing to renew either.
        sso.adopt(&t, token(Duration::from_secs(8 * 3600), false))
            .await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(
            e.wakeups.load(Ordering::Relaxed),
            1,
            "only the adopt woke it"
        );
        sso.session_retired("a");
        tokio::task::yield_now().await;
        assert!(!h.is_finished(), "b still uses it");
        sso.session_retired("b");
        assert!(ends(h).await, "the renewer outlived its last session");
        assert!(!e.renewing.load(Ordering::SeqCst));
        // The token stays for the next user, whose first fetch restarts a renewer.
        assert!(e.token.lock().await.is_some());
        e.users().insert("c".into());
        let h = sso
            .ensure_renewer(&e)
            .expect("a new user restarts the renewer");
        let (had, portal) = sso.logout(&t, false).await;
        assert!(had && portal.is_none());
        assert!(ends(h).await, "the renewer outlived `sso logout`");
        assert!(e.token.lock().await.is_none(), "logout keeps the token");
    }

    /// A renewable token far from expiry: the renewer sleeps until it is due, waking at most
    /// once an hour (the cap that survives a suspended laptop's monotonic clock).
    #[tokio::test(start_paused = true)]
    async fn renewer_with_a_distant_expiry_sleeps_until_due() {
        let sso = idle_sso();
        let t = test_target("distant");
        let e = sso.entry(&t);
        e.users().insert("a".into());
        let h = sso.ensure_renewer(&e).expect("a renewer starts");
        sso.adopt(&t, token(Duration::from_secs(8 * 3600), true))
            .await;
        tokio::time::sleep(Duration::from_secs(59 * 60)).await;
        assert_eq!(
            e.wakeups.load(Ordering::Relaxed),
            1,
            "only the adopt woke it"
        );
        tokio::time::sleep(Duration::from_secs(2 * 60)).await;
        assert_eq!(
            e.wakeups.load(Ordering::Relaxed),
            2,
            "one wake-up in an hour"
        );
        sso.session_retired("a");
        assert!(ends(h).await);
    }

    #[test]
    fn retry_after_backs_off_to_five_minutes() {
        assert_eq!(retry_after(0), Duration::ZERO);
        assert_eq!(retry_after(1), Duration::from_secs(30));
        assert_eq!(retry_after(2), Duration::from_secs(60));
        assert_eq!(retry_after(4), Duration::from_secs(240));
        assert_eq!(retry_after(9), Duration::from_secs(300));
    }

    #[test]
    fn debug_hides_tokens() {
        let mut t = CachedToken::default();
        t.access_token = "SECRET-A".into();
        t.refresh_token = Some("SECRET-R".into());
        t.client_secret = Some("SECRET-C".into());
        let d = format!("{t:?}");
        assert!(!d.contains("SECRET"), "{d}");
    }
}
