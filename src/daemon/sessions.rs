//! The credential engine: a bounded LRU of live sessions, each with its own background
//! refresh task.
//!
//! Concurrency model:
//!
//! - The LRU sits behind a `std::sync::Mutex` held only for map operations — never across an
//!   `.await`, never during I/O. Each session's mutable state has its own small `std` mutex
//!   with the same rule. There is no global lock around network calls: one session's slow
//!   STS call cannot delay another session's reads.
//! - Readers take a valid credential and go. They wait only when no valid credential exists,
//!   and then for a *shared* in-flight fetch: the first reader starts a fetch task and stores
//!   its `Shared` future in the session; every other reader clones it. Any number of
//!   concurrent first fetches cost exactly one STS call (single-flight), without holding a lock
//!   across the call. The fetch runs in its own task, so a reader that gives up does not abort
//!   it.
//! - A per-session refresher task sleeps until `expiry − min(refresh_window, lifetime/3)`
//!   (minus a little jitter) and refreshes through the same single-flight path, so clients
//!   always find fresh credentials. A failed refresh keeps the still-valid credential, records
//!   the error and retries with exponential backoff and jitter; an expired credential is never
//!   served.
//! - Timing uses tokio's monotonic clock: a credential's deadline is `sent + lifetime`,
//!   immune to wall-clock jumps, and testable under `tokio::time::pause`.
//! - Eviction (LRU overflow, `daemon remove`, shutdown) cancels the session's token — ending
//!   its refresher — and drops its credentials at once.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use futures_util::future::Shared;
use lru::LruCache;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{SessionConfig, Source, Store};
use crate::credentials::{Credentials, LongTermKeys, rfc3339};
use crate::protocol::{ErrorCode, Identity, SessionInfo, WireCredentials, WireError};
use crate::sts::{BoxFuture, Fetch, FetchRequest};

/// Longest chain of `session = …` references followed.
const MAX_CHAIN_DEPTH: usize = 8;
/// Retry delay after the first failure; doubles per failure.
const BACKOFF_BASE: Duration = Duration::from_secs(2);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// After a failed fetch, requests within this long get the recorded error instead of a new
/// STS call (a broken session must not turn every client request into an STS call).
const NEGATIVE_TTL: Duration = Duration::from_secs(2);

/// When to refresh, measured from receipt: `lifetime − min(window, lifetime/3) − jitter`,
/// where jitter (`0.0..=1.0` of up to 10 % of the lead) spreads refreshes of sessions loaded
/// together.
pub fn refresh_delay(lifetime: Duration, window: Duration, jitter: f64) -> Duration {
    let lead = window.min(lifetime / 3);
    let jitter = lead.mul_f64(0.1 * jitter.clamp(0.0, 1.0));
    lifetime.saturating_sub(lead + jitter)
}

/// Delay before retry number `failures` (1-based): exponential with ±20 % jitter, capped at
/// [`BACKOFF_MAX`];
/// never later than halfway to `expires_in` when a credential is still valid, so a recovering
/// STS gets several tries before expiry.
pub fn backoff_delay(failures: u32, jitter: f64, expires_in: Option<Duration>) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let d = exp
        .min(BACKOFF_MAX)
        .mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
        .min(BACKOFF_MAX);
    match expires_in {
        Some(left) if left > Duration::from_secs(2) => d.min(left / 2),
        _ => d,
    }
    .max(Duration::from_millis(500))
}

/// How much validity a credential must have left to be served: a little, so that a client
/// never receives credentials that expire in flight.
fn serve_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(10))
}

#[derive(Debug)]
struct Held {
    creds: Arc<Credentials>,
    expires_at: Instant,
    lifetime: Duration,
}

impl Held {
    fn servable(&self, now: Instant) -> bool {
        self.expires_at > now + serve_margin(self.lifetime)
    }
}

type Flight = Shared<BoxFuture<Result<Arc<Held>, WireError>>>;

#[derive(Debug, Default)]
struct Inner {
    held: Option<Arc<Held>>,
    inflight: Option<Flight>,
    last_error: Option<WireError>,
    /// When `last_error` was recorded.
    failed_at: Option<Instant>,
    next_refresh: Option<Instant>,
    failures: u32,
    long_term: Option<Arc<LongTermKeys>>,
    note: Option<String>,
}

/// One cached session.
#[derive(Debug)]
pub struct Session {
    name: String,
    config: Arc<SessionConfig>,
    inner: Mutex<Inner>,
    /// Wakes the refresher when a client-triggered fetch changed the schedule.
    wake: Notify,
    cancel: CancellationToken,
    hits: AtomicU64,
    sts_calls: AtomicU64,
    warning: Option<String>,
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Our critical sections only assign fields; a panic inside one cannot leave the state
        // half-updated in a way readers misinterpret, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn info(&self) -> SessionInfo {
        let now = Instant::now();
        let wall = SystemTime::now();
        let inner = self.lock();
        let valid = inner.held.as_ref().filter(|h| h.servable(now));
        let state = match (valid.is_some(), inner.inflight.is_some(), &inner.last_error) {
            (true, true, _) => "refreshing",
            (true, false, Some(_)) => "stale",
            (true, false, None) => "fresh",
            (false, true, _) => "refreshing",
            (false, false, Some(e)) if e.code == ErrorCode::LoginRequired => "login_required",
            (false, false, Some(_)) => "failed",
            (false, false, None) if inner.held.is_some() => "expired",
            (false, false, None) => "idle",
        };
        let to_wall = |t: Instant| rfc3339(wall + t.saturating_duration_since(now));
        SessionInfo {
            name: self.name.clone(),
            state: state.into(),
            source: self.config.source().kind().into(),
            expiration: inner.held.as_ref().map(|h| rfc3339(h.creds.expiration)),
            next_refresh: inner.next_refresh.map(to_wall),
            last_error: inner.last_error.as_ref().map(|e| e.message.clone()),
            hits: self.hits.load(Ordering::Relaxed),
            sts_calls: self.sts_calls.load(Ordering::Relaxed),
            warning: match (&self.warning, &inner.note) {
                (Some(w), Some(n)) => Some(format!("{w}; {n}")),
                (w, n) => w.clone().or_else(|| n.clone()),
            },
        }
    }

    /// Drops the credentials now (eviction/shutdown), whoever still holds the `Arc<Session>`.
    fn retire(&self) {
        self.cancel.cancel();
        let mut inner = self.lock();
        inner.held = None;
        inner.long_term = None;
        inner.inflight = None;
        inner.next_refresh = None;
    }
}

#[derive(Debug)]
struct Engine {
    /// Never held across an `.await`.
    cache: Mutex<LruCache<String, Arc<Session>>>,
    store: Store,
    fetcher: Arc<dyn Fetch>,
    shutdown: CancellationToken,
    refresh_window: Duration,
}

/// The session cache (cheap to clone; clones share the cache).
#[derive(Debug, Clone)]
pub struct Sessions {
    engine: Arc<Engine>,
}

impl Sessions {
    /// A cache of `capacity` sessions loading configs from `store` and credentials from
    /// `fetcher`.
    pub fn new(
        store: Store,
        capacity: usize,
        fetcher: Arc<dyn Fetch>,
        refresh_window: Duration,
    ) -> Sessions {
        let cap = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Sessions {
            engine: Arc::new(Engine {
                cache: Mutex::new(LruCache::new(cap)),
                store,
                fetcher,
                shutdown: CancellationToken::new(),
                refresh_window,
            }),
        }
    }

    /// The token cancelled at daemon shutdown; every session's token is its child.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.engine.shutdown.clone()
    }

    /// Number of cached sessions.
    pub fn len(&self) -> usize {
        self.engine.lock().len()
    }

    /// Whether no session is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Capacity.
    pub fn capacity(&self) -> usize {
        self.engine.lock().cap().get()
    }

    /// Every cached session, most recently used first.
    pub fn list(&self) -> Vec<SessionInfo> {
        let sessions: Vec<Arc<Session>> =
            self.engine.lock().iter().map(|(_, s)| s.clone()).collect();
        sessions.iter().map(|s| s.info()).collect()
    }

    /// Names of the cached sessions, most recently used first.
    pub fn names(&self) -> Vec<String> {
        self.engine.lock().iter().map(|(k, _)| k.clone()).collect()
    }

    /// Loads (or reloads, if its config changed) a session and waits for its first credentials.
    pub async fn add(&self, name: &str) -> Result<SessionInfo, WireError> {
        let session = self.engine.load(name, true)?;
        let result = self.engine.credentials_of(&session, None).await;
        let info = session.info();
        result.map(|_| info)
    }

    /// Evicts a session; whether it was cached.
    pub fn remove(&self, name: &str) -> bool {
        let popped = self.engine.lock().pop(name);
        if let Some(s) = &popped {
            s.retire();
            tracing::info!(session = name, "session removed");
        }
        popped.is_some()
    }

    /// Evicts every session, cancelling their refreshers and dropping their credentials.
    pub fn clear(&self) {
        let all: Vec<Arc<Session>> = {
            let mut cache = self.engine.lock();
            let v = cache.iter().map(|(_, s)| s.clone()).collect();
            cache.clear();
            v
        };
        for s in all {
            s.retire();
        }
    }

    /// Credentials for a session, loading it if needed.
    pub async fn credentials(
        &self,
        name: &str,
        mfa_code: Option<String>,
    ) -> Result<WireCredentials, WireError> {
        let session = self.engine.load(name, false)?;
        let held = self
            .engine
            .credentials_of(&session, mfa_code.map(Into::into))
            .await?;
        session.hits.fetch_add(1, Ordering::Relaxed);
        let region = session.config.region.as_ref().map(|r| r.0.clone());
        Ok(held.creds.to_wire(region))
    }

    /// GetCallerIdentity made with the session's own credentials.
    pub async fn whoami(
        &self,
        name: &str,
        mfa_code: Option<String>,
    ) -> Result<Identity, WireError> {
        let session = self.engine.load(name, false)?;
        let held = self
            .engine
            .credentials_of(&session, mfa_code.map(Into::into))
            .await?;
        self.engine
            .fetcher
            .whoami(session.config.clone(), held.creds.clone())
            .await
    }
}

impl Engine {
    fn lock(&self) -> MutexGuard<'_, LruCache<String, Arc<Session>>> {
        // LRU operations are not interrupted by our code; a poisoned guard is still consistent.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached session `name`, loading its config if it is not cached. With `reload`, a
    /// cached session whose config file changed is replaced.
    fn load(self: &Arc<Self>, name: &str, reload: bool) -> Result<Arc<Session>, WireError> {
        crate::config::validate_name(name).map_err(|e| e.to_wire())?;
        if !reload && let Some(s) = self.lock().get(name) {
            return Ok(s.clone());
        }
        // File I/O happens outside the cache lock.
        let custom = crate::config::env_custom_endpoint();
        let config = self.store.load(name, custom).map_err(|e| e.to_wire())?;
        self.check_chain(name, &config, custom)?;
        let mut cache = self.lock();
        if let Some(existing) = cache.get(name)
            && (!reload || *existing.config == config)
        {
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
        });
        let replaced = cache.pop(name);
        let evicted = cache.push(name.to_string(), session.clone());
        drop(cache);
        if let Some(old) = replaced {
            old.retire();
            tracing::info!(session = name, "session reloaded: its config changed");
        }
        if let Some((old_name, old)) = evicted {
            old.retire();
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

    /// Rejects chains that loop or run too deep (a loop would wait on itself).
    fn check_chain(
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
    async fn credentials_of(
        self: &Arc<Self>,
        session: &Arc<Session>,
        mfa_code: Option<secrecy::SecretString>,
    ) -> Result<Arc<Held>, WireError> {
        let mut code = mfa_code;
        // At most two rounds: join a flight that turns out to need MFA, then retry with the code.
        for _ in 0..2 {
            let flight = {
                let mut inner = session.lock();
                let now = Instant::now();
                if let Some(h) = inner.held.as_ref().filter(|h| h.servable(now)) {
                    return Ok(h.clone());
                }
                // Negative cache: a fresh failure is answered from memory, unless this request
                // brings the MFA code the failure asked for.
                if inner.inflight.is_none()
                    && let (Some(e), Some(at)) = (&inner.last_error, inner.failed_at)
                    && now < at + NEGATIVE_TTL
                    && !(e.code == ErrorCode::MfaRequired && code.is_some())
                {
                    return Err(e.clone());
                }
                match &inner.inflight {
                    Some(f) => f.clone(),
                    None => {
                        let f = self.start_fetch(session, code.take());
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
    /// in-flight fetch under the session lock.
    fn start_fetch(
        self: &Arc<Self>,
        session: &Arc<Session>,
        mfa_code: Option<secrecy::SecretString>,
    ) -> Flight {
        let engine = self.clone();
        let s = session.clone();
        let task = tokio::spawn(async move { engine.fetch(&s, mfa_code).await });
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
    async fn fetch(
        self: Arc<Self>,
        session: &Arc<Session>,
        mfa_code: Option<secrecy::SecretString>,
    ) -> Result<Arc<Held>, WireError> {
        // `Fetched::lifetime` is measured from when the request was sent, so the deadline is
        // anchored there too: a slow answer must not push it past the real expiry.
        let sent = Instant::now();
        let result = self.fetch_inner(session, mfa_code).await;
        let now = Instant::now();
        let jitter: f64 = rand::random();
        let mut inner = session.lock();
        inner.inflight = None;
        let out = match result {
            Ok(f) => {
                let held = Arc::new(Held {
                    creds: Arc::new(f.creds),
                    expires_at: sent + f.lifetime,
                    lifetime: f.lifetime,
                });
                inner.next_refresh =
                    Some(sent + refresh_delay(f.lifetime, self.refresh_window, jitter));
                inner.held = Some(held.clone());
                inner.last_error = None;
                inner.failed_at = None;
                inner.failures = 0;
                inner.note = f.note;
                Ok(held)
            }
            Err(e) => {
                inner.failures = inner.failures.saturating_add(1);
                let left = inner
                    .held
                    .as_ref()
                    .map(|h| h.expires_at.saturating_duration_since(now));
                // Without a code source, an MFA prompt cannot happen in the background: wait
                // for a client to bring a code instead of retrying.
                inner.next_refresh = (e.code != ErrorCode::MfaRequired)
                    .then(|| now + backoff_delay(inner.failures, jitter, left));
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

    async fn fetch_inner(
        self: &Arc<Self>,
        session: &Arc<Session>,
        mut mfa_code: Option<secrecy::SecretString>,
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
                    // Keep the serial so the client can prompt for the source's device.
                    w.mfa_serial = e.mfa_serial;
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
        self.fetcher
            .fetch(FetchRequest {
                name: session.name.clone(),
                config,
                chained,
                long_term,
                mfa_code,
            })
            .await
    }

    /// Long-term keys for a keyring source: read once per session load, then kept.
    async fn long_term(
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

/// A session's background refresher: sleeps until the next refresh is due, refreshes through
/// the single-flight path, and exits when the session is evicted or the daemon stops.
async fn refresher(engine: Arc<Engine>, session: Arc<Session>) {
    loop {
        let next = session.lock().next_refresh;
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = session.cancel.cancelled() => return,
            () = session.wake.notified() => continue,
            () = sleep => {}
        }
        let flight = {
            let mut inner = session.lock();
            if inner.next_refresh.is_none_or(|t| t > Instant::now()) {
                continue; // rescheduled meanwhile
            }
            inner.next_refresh = None;
            match &inner.inflight {
                Some(f) => f.clone(),
                None => {
                    let f = engine.start_fetch(&session, None);
                    inner.inflight = Some(f.clone());
                    f
                }
            }
        };
        tokio::select! {
            () = session.cancel.cancelled() => return,
            r = flight => {
                if r.is_ok() {
                    tracing::info!(session = %session.name, "credentials refreshed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sts::Fetched;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn refresh_schedule() {
        let h = Duration::from_secs(3600);
        let w = Duration::from_secs(1200);
        assert_eq!(refresh_delay(h, w, 0.0), Duration::from_secs(2400));
        // Jitter only moves the refresh earlier, by at most 10 % of the lead.
        assert_eq!(refresh_delay(h, w, 1.0), Duration::from_secs(2280));
        // Short lifetimes refresh at two thirds.
        assert_eq!(
            refresh_delay(Duration::from_secs(30), w, 0.0),
            Duration::from_secs(20)
        );
    }

    #[test]
    fn backoff_grows_caps_and_respects_expiry() {
        assert_eq!(backoff_delay(1, 0.5, None), Duration::from_secs(2));
        assert_eq!(backoff_delay(3, 0.5, None), Duration::from_secs(8));
        assert_eq!(backoff_delay(30, 0.5, None), BACKOFF_MAX);
        assert_eq!(
            backoff_delay(30, 0.5, Some(Duration::from_secs(60))),
            Duration::from_secs(30)
        );
        assert!(backoff_delay(1, 0.0, None) >= Duration::from_millis(500));
    }

    /// A fake STS for paused-time tests: counts calls, can be told to fail, returns
    /// credentials of a fixed lifetime after a fixed delay.
    #[derive(Debug)]
    struct FakeSts {
        calls: AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
        lifetime: Duration,
        delay: Duration,
    }

    impl Fetch for FakeSts {
        fn fetch(&self, req: FetchRequest) -> BoxFuture<Result<Fetched, WireError>> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let fail = self.fail.load(Ordering::SeqCst);
            let (lifetime, delay) = (self.lifetime, self.delay);
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                if fail {
                    return Err(WireError::new(ErrorCode::Unavailable, "sts is down"));
                }
                Ok(Fetched {
                    creds: Credentials {
                        access_key_id: format!("ASIA{}{n}", req.name),
                        secret_access_key: "secret".into(),
                        session_token: "token".into(),
                        expiration: SystemTime::now() + lifetime,
                        account_id: None,
                        arn: None,
                    },
                    lifetime,
                    note: None,
                })
            })
        }
        fn whoami(
            &self,
            _c: Arc<SessionConfig>,
            _k: Arc<Credentials>,
        ) -> BoxFuture<Result<Identity, WireError>> {
            Box::pin(async { Err(WireError::new(ErrorCode::Internal, "n/a")) })
        }
    }

    fn setup(
        lifetime: u64,
        delay_ms: u64,
        names: &[&str],
    ) -> (Sessions, Arc<FakeSts>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("configs"));
        for n in names {
            store
                .write(
                    n,
                    "[role]\narn = \"arn:aws:iam::123456789012:role/r\"\n",
                    false,
                )
                .unwrap();
        }
        let fake = Arc::new(FakeSts {
            calls: AtomicUsize::new(0),
            fail: false.into(),
            lifetime: Duration::from_secs(lifetime),
            delay: Duration::from_millis(delay_ms),
        });
        let sessions = Sessions::new(store, 2, fake.clone(), Duration::from_secs(1200));
        (sessions, fake, dir)
    }

    #[tokio::test(start_paused = true)]
    async fn single_flight_for_concurrent_first_fetches() {
        let (sessions, fake, _d) = setup(3600, 500, &["a"]);
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let s = sessions.clone();
            tasks.push(tokio::spawn(async move { s.credentials("a", None).await }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        // Warm fetches make no call.
        for _ in 0..1000 {
            sessions.credentials("a", None).await.unwrap();
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn background_refresh_before_expiry_without_requests() {
        let (sessions, fake, _d) = setup(3600, 10, &["a"]);
        let first = sessions.credentials("a", None).await.unwrap();
        // Refresh is due at 40 min (minus jitter); advance to 41 min with no request.
        tokio::time::sleep(Duration::from_secs(41 * 60)).await;
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        let second = sessions.credentials("a", None).await.unwrap();
        assert_ne!(first.access_key_id, second.access_key_id);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn failure_keeps_serving_valid_then_recovers_and_never_serves_expired() {
        let (sessions, fake, _d) = setup(3600, 10, &["a"]);
        let first = sessions.credentials("a", None).await.unwrap();
        fake.fail.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(45 * 60)).await;
        // Refresh failed (and retried), but the credential is still valid: served, no wait.
        let served = sessions.credentials("a", None).await.unwrap();
        assert_eq!(served.access_key_id, first.access_key_id);
        let info = &sessions.list()[0];
        assert_eq!(info.state, "stale");
        assert!(info.last_error.as_deref().unwrap().contains("sts is down"));
        assert!(
            fake.calls.load(Ordering::SeqCst) >= 3,
            "retried with backoff"
        );
        // Past expiry: never served; the request gets STS's error.
        tokio::time::sleep(Duration::from_secs(16 * 60)).await;
        let err = sessions.credentials("a", None).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::Unavailable);
        // Recovery without intervention.
        fake.fail.store(false, Ordering::SeqCst);
        tokio::time::sleep(BACKOFF_MAX + Duration::from_secs(1)).await;
        assert_eq!(sessions.list()[0].state, "fresh");
        let again = sessions.credentials("a", None).await.unwrap();
        assert_ne!(again.access_key_id, first.access_key_id);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_failure_is_answered_from_memory() {
        let (sessions, fake, _d) = setup(3600, 10, &["a"]);
        fake.fail.store(true, Ordering::SeqCst);
        for _ in 0..10 {
            let e = sessions.credentials("a", None).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::Unavailable);
        }
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            1,
            "one STS call for ten requests"
        );
        // After the negative TTL a request tries again.
        fake.fail.store(false, Ordering::SeqCst);
        tokio::time::sleep(NEGATIVE_TTL).await;
        sessions.credentials("a", None).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn lru_eviction_cancels_and_readd_works() {
        let (sessions, fake, _d) = setup(3600, 10, &["a", "b", "c"]);
        sessions.credentials("a", None).await.unwrap();
        sessions.credentials("b", None).await.unwrap();
        sessions.credentials("c", None).await.unwrap(); // evicts a (capacity 2)
        let names = sessions.names();
        assert_eq!(names, vec!["c".to_string(), "b".to_string()]);
        // The evicted session's refresher is gone: only b and c refresh.
        tokio::time::sleep(Duration::from_secs(41 * 60)).await;
        assert_eq!(fake.calls.load(Ordering::SeqCst), 5);
        sessions.credentials("a", None).await.unwrap(); // re-add
        assert_eq!(fake.calls.load(Ordering::SeqCst), 6);
        assert!(sessions.remove("a"));
        assert!(!sessions.remove("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_fetch_of_one_session_does_not_block_another() {
        let (sessions, _fake, _d) = setup(3600, 4000, &["a", "b"]);
        sessions.credentials("a", None).await.unwrap();
        let s = sessions.clone();
        let slow = tokio::spawn(async move { s.credentials("b", None).await });
        tokio::task::yield_now().await;
        let t0 = Instant::now();
        sessions.credentials("a", None).await.unwrap();
        assert_eq!(
            t0.elapsed(),
            Duration::ZERO,
            "a cached read waits for nothing"
        );
        slow.await.unwrap().unwrap();
    }
}
