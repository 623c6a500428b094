//! The daemon's IAM Identity Center state ([`Sso`]): per start URL an `Entry` with the token
//! it holds, behind a tokio mutex that is held across a refresh so concurrent fetches share
//! one refresh call. A fetch re-reads the cache file first (another tool may have logged in),
//! uses a valid token, else refreshes it; a start URL that cannot be renewed is marked
//! `login_required` and fails fast until a new token appears. The background renewal is in
//! `renewer`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_sso::error::ProvideErrorMetadata;
use secrecy::SecretString;

use super::cache::{CachedToken, read_cache, target_cache_file, write_cache};
use super::portal::{Assignment, list_assignments};
use super::renewer::refresher;
use super::{REFRESH_AHEAD, Target, classify, login_required};
use crate::config::{Settings, SsoConfig, SsoTokenCache};
use crate::credentials::{Credentials, Fetched};
use crate::error::display_chain;
use crate::protocol::{ErrorCode, WireError};

/// When to renew a token: `min(15 min, lifetime / 3)` before expiry.
pub(super) fn ahead(lifetime: Option<Duration>) -> Duration {
    lifetime.map_or(REFRESH_AHEAD, |l| REFRESH_AHEAD.min(l / 3))
}

/// What the daemon keeps per start URL.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) target: Target,
    /// The token, and the lifetime it was issued with when we obtained it ourselves. A tokio
    /// mutex: it is held across the refresh call so concurrent fetches share one refresh.
    pub(super) token: tokio::sync::Mutex<Option<(CachedToken, Option<Duration>)>>,
    /// No usable token and no way to refresh silently.
    pub(super) login_required: AtomicBool,
    /// The sessions that fetched through this login and are still cached (the engine says
    /// when one goes: [`Sso::session_retired`]). The renewer runs only while this is not
    /// empty.
    pub(super) users: Mutex<BTreeSet<String>>,
    /// Wakes the renewer: a new token, a user gone, the entry closed.
    pub(super) wake: tokio::sync::Notify,
    /// Dropped from the daemon (`sso logout`, or replaced by another target for the key).
    pub(super) closed: AtomicBool,
    /// Whether a renewer task runs for this entry.
    pub(super) renewing: AtomicBool,
    /// Times the renewer woke up (tests check it stays idle when there is nothing to renew).
    pub(super) wakeups: std::sync::atomic::AtomicU64,
}

impl Entry {
    pub(super) fn new(target: &Target) -> Entry {
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

    pub(super) fn users(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the renewer has a reason to run.
    pub(super) fn wanted(&self) -> bool {
        !self.closed.load(Ordering::SeqCst) && !self.users().is_empty()
    }
}

/// The daemon's IAM Identity Center state: one [`Entry`] per cache key, the OIDC and portal
/// clients (sharing the daemon's HTTP client and timeouts).
#[derive(Debug)]
pub struct Sso {
    pub(super) oidc: aws_sdk_ssooidc::Client,
    pub(super) portal: aws_sdk_sso::Client,
    pub(super) entries: Mutex<HashMap<String, Arc<Entry>>>,
}

/// Where the token cache lives according to `elhaz.toml` (re-read: it may change while the
/// daemon runs, and an invalid file keeps the default).
pub(super) fn settings() -> Settings {
    crate::paths::Paths::from_env()
        .ok()
        .and_then(|p| Settings::load(&p.settings_file).ok())
        .unwrap_or_default()
}

pub(super) fn disk_cache(settings: &Settings) -> bool {
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

    pub(super) fn entry(&self, target: &Target) -> Arc<Entry> {
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
    pub(super) fn ensure_renewer(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
    ) -> Option<tokio::task::JoinHandle<()>> {
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
    pub(super) async fn access_token(
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
    pub(super) async fn refresh_locked(
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
pub(super) fn adopt_disk(
    slot: &mut Option<(CachedToken, Option<Duration>)>,
    target: &Target,
    disk: bool,
) {
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
