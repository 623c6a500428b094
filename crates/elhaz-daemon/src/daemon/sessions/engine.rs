//! The shared cache and the fetch path: [`Engine::load`] finds or (re)loads a session from its
//! config file, [`Engine::credentials_of`] serves held credentials or joins the session's one
//! in-flight fetch, and [`Engine::fetch`] runs it (chained sources resolved in-process through
//! the same cache, keyring keys read once per load) and records the outcome and the next
//! refresh. Errors leave here with the session and the STS endpoint in their message.
//!
//! The LRU's `std` mutex is held for map operations only — file I/O (the config, the chain
//! check) happens before it is taken, and no `.await` happens under it.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use lru::LruCache;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::refresh::{clock_watcher, refresher};
use super::session::{Flight, Held, Inner, Session, same_identity, stamp};
use super::timing::unix_secs;
use super::timing::{
    MAX_CHAIN_DEPTH, NEGATIVE_TTL, RETRY_UNREACHABLE_MAX, Shaping, backoff_delay, cached_failure,
    refresh_delay,
};
use crate::config::{SessionConfig, Source, Store};
use crate::credentials::{LongTermKeys, rfc3339};
use crate::daemon::clock::WallClock;
use crate::daemon::scheduler::{Outcome, Scheduler};
use crate::protocol::{ErrorCode, WireError};
use crate::sts::{BoxFuture, Fetch, FetchRequest};

/// The STS endpoint a config calls, for messages and as the scheduler's key: its
/// `endpoint_url`, else the daemon's `AWS_ENDPOINT_URL_STS`/`AWS_ENDPOINT_URL`, else the
/// regional endpoint of its (STS) region; without one, the daemon's default region decides.
pub(super) fn sts_endpoint(config: &SessionConfig) -> String {
    if let Some(url) = config.endpoint_url() {
        return url.trim_end_matches('/').to_string();
    }
    // The SDK's own override, from the daemon's environment.
    if let Some(url) = ["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
    {
        return url.trim_end_matches('/').to_string();
    }
    match config
        .sts
        .as_ref()
        .and_then(|s| s.region.as_ref())
        .or(config.region.as_ref())
    {
        Some(r) => format!("https://sts.{}.amazonaws.com", r.0),
        None => "the STS endpoint of the daemon's default region".into(),
    }
}

/// Prefixes an STS failure with the session and the endpoint, so a message in a log or a
/// terminal says which call failed where. Other failures (MFA, sources) already name theirs.
pub(super) fn explain(mut e: WireError, name: &str, endpoint: &str) -> WireError {
    if matches!(
        e.code,
        ErrorCode::AccessDenied
            | ErrorCode::InvalidCredentials
            | ErrorCode::Throttled
            | ErrorCode::Unavailable
            | ErrorCode::UpstreamError
    ) {
        e.message = format!("session {name:?} (STS {endpoint}): {}", e.message);
    }
    e
}

/// What every clone of [`super::Sessions`] shares: the LRU, the fetcher, the background
/// scheduler and the wall clock.
#[derive(Debug)]
pub(super) struct Engine {
    /// Never held across an `.await`.
    pub(super) cache: Mutex<LruCache<String, Arc<Session>>>,
    pub(super) store: Store,
    pub(super) fetcher: Arc<dyn Fetch>,
    pub(super) shutdown: CancellationToken,
    pub(super) refresh_window: Duration,
    /// Fraction of the refresh room refresh points are spread over.
    pub(super) refresh_spread: f64,
    /// Every background STS call (refresh, re-warm) waits here for a permit.
    pub(super) scheduler: Scheduler,
    /// The wall clock (`SystemTime::now` in production).
    pub(super) wall: WallClock,
    /// Whether the clock watcher task was started (once, with the first session).
    pub(super) watching: std::sync::atomic::AtomicBool,
    /// Wakes the clock watcher when a session is loaded (it sleeps while none is cached).
    pub(super) watch_wake: Notify,
}

impl Engine {
    /// An empty cache of `capacity` sessions; see [`super::Sessions::new`].
    pub(super) fn new(
        store: Store,
        capacity: usize,
        fetcher: Arc<dyn Fetch>,
        refresh_window: Duration,
        shaping: Shaping,
        wall: WallClock,
    ) -> Engine {
        let cap = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        let shutdown = CancellationToken::new();
        let scheduler =
            Scheduler::with_overrides(shaping.rate, shaping.endpoints, shutdown.clone());
        Engine {
            cache: Mutex::new(LruCache::new(cap)),
            store,
            fetcher,
            shutdown,
            refresh_window,
            refresh_spread: shaping.spread,
            scheduler,
            wall,
            watching: false.into(),
            watch_wake: Notify::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, LruCache<String, Arc<Session>>> {
        // LRU operations are not interrupted by our code; a poisoned guard is still consistent.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn now_wall(&self) -> SystemTime {
        self.wall.now()
    }

    /// Records that a client used `session` now.
    pub(super) fn used(&self, session: &Session) {
        session
            .last_used
            .store(unix_secs(self.now_wall()), Ordering::Relaxed);
    }

    /// Starts the clock watcher with the first session, and wakes it if it sleeps because
    /// no session was cached.
    pub(super) fn watch(self: &Arc<Self>) {
        if !self.watching.swap(true, Ordering::AcqRel) {
            tokio::spawn(clock_watcher(self.clone()));
        }
        self.watch_wake.notify_one();
    }

    /// Wakes the refresher of every session whose refresh is due by either clock.
    pub(super) fn wake_due(&self, now: Instant, wall: SystemTime) -> usize {
        let sessions: Vec<Arc<Session>> = self.lock().iter().map(|(_, s)| s.clone()).collect();
        let mut woken = 0;
        for s in sessions {
            if s.lock().refresh_due(now, wall) {
                s.wake.notify_one();
                woken += 1;
            }
        }
        woken
    }

    /// The cached session `name`, loading its config if it is not cached. A cached session
    /// whose config file changed on disk (its [`stamp`] differs) is re-read: an identical
    /// config (ignoring `description`) keeps the session and its credentials, any other
    /// change replaces it, and a removed file evicts it. With `reload`, the file is re-read
    /// even when its stamp is unchanged.
    pub(super) fn load(
        self: &Arc<Self>,
        name: &str,
        reload: bool,
    ) -> Result<Arc<Session>, WireError> {
        crate::config::validate_name(name).map_err(|e| e.to_wire())?;
        let file = self.store.file(name);
        let stamp = stamp(&file);
        if !reload
            && let Some(s) = self.lock().get(name)
            && stamp.is_some_and(|st| st == s.stamp.load(Ordering::Relaxed))
        {
            return Ok(s.clone());
        }
        // File I/O happens outside the cache lock.
        let custom = crate::config::env_custom_endpoint();
        let config = match self.store.load(name, custom) {
            Ok(c) => c,
            Err(e) => {
                let w = e.to_wire();
                if w.code == ErrorCode::NotFound && self.evict(name) {
                    tracing::info!(session = name, "session removed: its config file is gone");
                }
                return Err(w);
            }
        };
        self.check_chain(name, &config, custom)?;
        crate::daemon::selfref::check_source(name, &config)?;
        let stamp = stamp.unwrap_or(0);
        let mut cache = self.lock();
        if let Some(existing) = cache.get(name)
            && same_identity(&existing.config, &config)
        {
            existing.stamp.store(stamp, Ordering::Relaxed);
            return Ok(existing.clone());
        }
        let window = self.refresh_window.as_secs();
        let session = Arc::new(Session {
            name: name.to_string(),
            warning: config.freshness_warning(window),
            config: Arc::new(config),
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
            cancel: self.shutdown.child_token(),
            hits: AtomicU64::new(0),
            sts_calls: AtomicU64::new(0),
            stamp: AtomicU64::new(stamp),
            last_used: AtomicU64::new(unix_secs(self.now_wall())),
        });
        let replaced = cache.pop(name);
        let evicted = cache.push(name.to_string(), session.clone());
        drop(cache);
        if let Some(old) = replaced {
            self.retire(&old);
            tracing::info!(
                session = name,
                "session reloaded: its config changed; cached credentials dropped"
            );
        }
        if let Some((old_name, old)) = evicted {
            self.retire(&old);
            tracing::info!(session = %old_name, capacity = self.lock().cap().get(), "session evicted (least recently used)");
        }
        tracing::info!(
            session = name,
            source = session.config.source().kind(),
            "session loaded"
        );
        tokio::spawn(refresher(self.clone(), session.clone()));
        Ok(session)
    }

    /// When `session`'s MFA session ends: the shared one its role is assumed from, or — for a
    /// GetSessionToken session with `[mfa]` — its own credentials' `expiration`.
    pub(super) fn mfa_expiration(
        &self,
        session: &Session,
        expiration: Option<&String>,
    ) -> Option<String> {
        let config = &session.config;
        config.mfa.as_ref()?;
        if config.role.is_none() {
            return expiration.cloned();
        }
        self.fetcher.mfa_expiration(config).map(rfc3339)
    }

    /// Evicts `name` if cached; whether it was.
    pub(super) fn evict(&self, name: &str) -> bool {
        let popped = self.lock().pop(name);
        if let Some(s) = &popped {
            self.retire(s);
        }
        popped.is_some()
    }

    /// Retires a session that left the cache and tells the fetcher (its SSO renewer, say, may
    /// have no user left).
    pub(super) fn retire(&self, s: &Session) {
        s.retire();
        self.fetcher.session_retired(&s.name);
    }

    /// Rejects chains that loop or run too deep (a loop would wait on itself).
    pub(super) fn check_chain(
        &self,
        name: &str,
        config: &SessionConfig,
        custom: bool,
    ) -> Result<(), WireError> {
        let mut seen = vec![name.to_string()];
        let mut next = match config.source() {
            Source::Session(o) => Some(o),
            _ => None,
        };
        while let Some(other) = next {
            if seen.contains(&other) || seen.len() > MAX_CHAIN_DEPTH {
                seen.push(other);
                return Err(WireError::new(
                    ErrorCode::InvalidConfig,
                    format!("session chain loops or is too deep: {}", seen.join(" → ")),
                ));
            }
            let cfg = self.store.load(&other, custom).map_err(|e| {
                WireError::new(
                    e.to_wire().code,
                    format!("source session of {name:?}: {}", e.to_wire().message),
                )
            })?;
            seen.push(other);
            next = match cfg.source() {
                Source::Session(o) => Some(o),
                _ => None,
            };
        }
        Ok(())
    }

    /// Valid credentials of `session`: held ones, or the result of the shared in-flight fetch.
    pub(super) async fn credentials_of(
        self: &Arc<Self>,
        session: &Arc<Session>,
        mfa_code: Option<secrecy::SecretString>,
    ) -> Result<Arc<Held>, WireError> {
        let mut code = mfa_code;
        // At most two rounds: join a flight that turns out to need MFA, then retry with the code.
        for _ in 0..2 {
            let flight = {
                let wall = self.now_wall();
                let mut inner = session.lock();
                let now = Instant::now();
                if let Some(h) = inner.held.as_ref().filter(|h| h.servable(now, wall)) {
                    return Ok(h.clone());
                }
                // Negative cache: a fresh failure is answered from memory, unless this request
                // brings the MFA code the failure asked for.
                // A "needs a code" answer is never cached: asking again costs no STS call, and
                // another client's code may have created the MFA session meanwhile. Nor is
                // `login_required`: the SSO layer answers it with no network call, and a login
                // just handed over must serve the very next request.
                if inner.inflight.is_none()
                    && let (Some(e), Some(at)) = (&inner.last_error, inner.failed_at)
                    && now < at + NEGATIVE_TTL
                    && e.code != ErrorCode::MfaRequired
                    && e.code != ErrorCode::LoginRequired
                {
                    return Err(cached_failure(
                        e,
                        now - at,
                        inner.next_refresh.map(|t| t - now),
                    ));
                }
                match &inner.inflight {
                    Some(f) => f.clone(),
                    None => {
                        // A client waits for this one: it never queues behind background work.
                        let f = self.start_fetch(session, code.take(), false);
                        inner.inflight = Some(f.clone());
                        f
                    }
                }
            };
            match flight.await {
                Err(e) if e.code == ErrorCode::MfaRequired && code.is_some() => continue,
                other => return other,
            }
        }
        Err(WireError::new(
            ErrorCode::MfaFailed,
            "the MFA code was not accepted",
        ))
    }

    /// Starts a fetch task and returns its shared result. Callers store it as the session's
    /// in-flight fetch under the session lock. A `background` fetch already holds a
    /// scheduler permit; any other is a client's and only takes a token on the way.
    pub(super) fn start_fetch(
        self: &Arc<Self>,
        session: &Arc<Session>,
        mfa_code: Option<secrecy::SecretString>,
        background: bool,
    ) -> Flight {
        let engine = self.clone();
        let s = session.clone();
        let task = tokio::spawn(async move { engine.fetch(&s, mfa_code, background).await });
        let s = session.clone();
        let fut: BoxFuture<Result<Arc<Held>, WireError>> = Box::pin(async move {
            task.await.unwrap_or_else(|e| {
                // The task died (a panic) before it could clear the in-flight marker; clear it
                // here, or every later reader would get this cached failure.
                s.lock().inflight = None;
                Err(WireError::new(
                    ErrorCode::Internal,
                    format!("the fetch task failed: {e}"),
                ))
            })
        });
        fut.shared()
    }

    /// One fetch: resolve the source, call STS, record the outcome and the next refresh.
    pub(super) async fn fetch(
        self: Arc<Self>,
        session: &Arc<Session>,
        mfa_code: Option<secrecy::SecretString>,
        background: bool,
    ) -> Result<Arc<Held>, WireError> {
        // `Fetched::lifetime` is measured from when the request was sent, so the deadline is
        // anchored there too: a slow answer must not push it past the real expiry.
        // The wall-clock twin of `sent`: the wall deadline is `wall_sent + lifetime`.
        let sent = Instant::now();
        let wall_sent = self.now_wall();
        let result = self.fetch_inner(session, mfa_code, background).await;
        let now = Instant::now();
        let wall_now = self.now_wall();
        let jitter: f64 = rand::random();
        let mut inner = session.lock();
        inner.inflight = None;
        let out = match result {
            Ok(f) => {
                // `expiration − lifetime` is STS's clock at the request (its `Date`) when the
                // answer carried one; its distance from our clock is the skew.
                let sts_sent = f.creds.expiration.checked_sub(f.lifetime);
                let skew_secs = sts_sent.map_or(0, |t| match t.duration_since(wall_sent) {
                    Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                    Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
                });
                let held = Arc::new(Held {
                    creds: Arc::new(f.creds),
                    expires_at: sent + f.lifetime,
                    wall_expires: wall_sent + f.lifetime,
                    lifetime: f.lifetime,
                    skew_secs,
                });
                inner.schedule(Some((
                    sent,
                    wall_sent,
                    refresh_delay(f.lifetime, self.refresh_window, self.refresh_spread, jitter),
                )));
                inner.held = Some(held.clone());
                inner.last_error = None;
                inner.failed_at = None;
                inner.failures = 0;
                inner.note = f.note;
                Ok(held)
            }
            Err(e) => {
                inner.failures = inner.failures.saturating_add(1);
                let left = inner.held.as_ref().map(|h| h.left(now, wall_now));
                let mut delay = backoff_delay(inner.failures, jitter, left);
                if e.code == ErrorCode::Unavailable {
                    // STS unreachable (no network yet after a wake-up): try again soon.
                    delay = delay.min(RETRY_UNREACHABLE_MAX);
                }
                // Without a code source, an MFA prompt cannot happen in the background: wait
                // for a client to bring a code instead of retrying.
                inner
                    .schedule((e.code != ErrorCode::MfaRequired).then_some((now, wall_now, delay)));
                tracing::warn!(
                    session = %session.name,
                    code = e.code.as_str(),
                    error = %e.message,
                    failures = inner.failures,
                    "refresh failed"
                );
                inner.last_error = Some(e.clone());
                inner.failed_at = Some(now);
                Err(e)
            }
        };
        drop(inner);
        session.wake.notify_one();
        out
    }

    pub(super) async fn fetch_inner(
        self: &Arc<Self>,
        session: &Arc<Session>,
        mut mfa_code: Option<secrecy::SecretString>,
        background: bool,
    ) -> Result<crate::sts::Fetched, WireError> {
        let config = session.config.clone();
        let chained = match config.source() {
            Source::Session(other) => {
                // Without MFA of its own, a code the user typed is for the source's device.
                let code = if config.mfa.is_none() {
                    mfa_code.take()
                } else {
                    None
                };
                // Resolve in-process through the same cache: no socket round trip, no lock held.
                let engine = self.clone();
                let fut: BoxFuture<Result<Arc<Held>, WireError>> = Box::pin(async move {
                    let src = engine.load(&other, false)?;
                    engine.credentials_of(&src, code).await
                });
                let held = fut.await.map_err(|e| {
                    let mut w = WireError::new(e.code, format!("source session: {}", e.message));
                    // Keep the serial so the client can prompt for the source's device, and
                    // the login so it can offer the source's IAM Identity Center login.
                    w.mfa_serial = e.mfa_serial;
                    w.sso = e.sso;
                    w
                })?;
                Some(held.creds.clone())
            }
            _ => None,
        };
        let long_term = match config.source() {
            Source::Keyring(entry) => Some(self.long_term(session, entry).await?),
            _ => None,
        };
        session.sts_calls.fetch_add(1, Ordering::Relaxed);
        let endpoint = sts_endpoint(&config);
        if !background {
            self.scheduler.foreground(&endpoint);
        }
        let result = self
            .fetcher
            .fetch(FetchRequest {
                name: session.name.clone(),
                config,
                chained,
                long_term,
                mfa_code,
            })
            .await;
        // Throttling slows every background call to this endpoint, not just this session's.
        let outcome = match &result {
            Err(e) if e.code == ErrorCode::Throttled => Outcome::Throttled,
            _ => Outcome::Answered,
        };
        self.scheduler.report(&endpoint, outcome);
        result.map_err(|e| explain(e, &session.name, &endpoint))
    }

    /// Long-term keys for a keyring source: read once per session load, then kept.
    pub(super) async fn long_term(
        &self,
        session: &Arc<Session>,
        entry: String,
    ) -> Result<Arc<LongTermKeys>, WireError> {
        if let Some(k) = session.lock().long_term.clone() {
            return Ok(k);
        }
        let keys = tokio::task::spawn_blocking(move || crate::keyring::read(&entry))
            .await
            .map_err(|e| WireError::new(ErrorCode::Internal, format!("keyring task: {e}")))?
            .map_err(|e| WireError::new(ErrorCode::SourceError, e.to_string()))?;
        let keys = Arc::new(keys);
        session.lock().long_term = Some(keys.clone());
        Ok(keys)
    }
}
