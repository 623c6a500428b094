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
//! - A per-session refresher task sleeps until its refresh point, a random point between
//!   `expiry − min(refresh_window, lifetime/3)` and botocore's 15 minutes before expiry (the
//!   room times `refresh_spread`; see [`refresh_delay`]), so sessions loaded together do not
//!   refresh together. It then waits for a permit of the background STS scheduler
//!   (`daemon::scheduler`: a rate per STS endpoint, earliest expiry first) and refreshes
//!   through the same single-flight path, so clients always find fresh credentials. A client
//!   that needs a fetch meanwhile (its credentials ran out in the queue) fetches at once and
//!   the queued refresh is dropped: clients never wait behind background work. A failed refresh keeps the still-valid credential, records
//!   the error and retries with exponential backoff and jitter; an expired credential is never
//!   served. Failures to *reach* STS (`unavailable`: no network yet after a wake-up) retry
//!   at least every [`RETRY_UNREACHABLE_MAX`], so fresh credentials arrive soon after the
//!   network returns, without a request.
//! - Timing uses two clocks. A credential's deadline is `sent + lifetime` on tokio's monotonic
//!   clock (immune to clock changes, testable under `tokio::time::pause`) *and* the same
//!   deadline on the wall clock (`wall(sent) + lifetime`), because the monotonic clock stops
//!   while a laptop sleeps. The lifetime is measured on STS's clock where the answer says it
//!   (`Expiration − Date`, see `sts`), so the wall deadline is STS's `Expiration` translated to
//!   our clock: a local clock that is off never makes us serve past the real expiry, and one
//!   that runs fast does not make every credential look expired. A credential is servable
//!   only while *both* deadlines leave more than the serve margin; the refresh point exists on
//!   both clocks too and the earlier one wins. The monotonic one is a timer of the session's
//!   refresher; the wall one is watched by a single clock watcher for all sessions
//!   (`daemon::clock`: a timerfd that fires on clock sets and resume, plus a coarse drift
//!   check), which wakes every refresher whose wall-clock refresh point passed. The wall clock
//!   is injectable ([`Sessions::with_wall_clock`]) so unit tests move it by hours without
//!   moving tokio's clock.
//! - Re-warm after a restart ([`Sessions::rewarm`]) loads the recorded sessions in their old
//!   LRU order and fetches them most recently used first through the same scheduler; sessions
//!   unused for more than a day stay cold until asked. The last use is one relaxed atomic
//!   store per request (wall-clock seconds), recorded in the warm file at shutdown.
//! - Eviction (LRU overflow, `daemon remove`, shutdown) cancels the session's token — ending
//!   its refresher — and drops its credentials at once.
//! - Config edits take effect at the next request: each request `stat`s the session's config
//!   file (device, inode, size, mtime, ctime — about a microsecond, no read, no parse) and
//!   compares that stamp with the one it loaded. On a change the file is re-read: the same
//!   config apart from `description` keeps the session and its credentials; any other change
//!   replaces the session (old credentials dropped, refresher cancelled); a removed file evicts
//!   it. A watcher (inotify) would notice edits without a request, but needs a thread and
//!   per-directory state, and gains little: a config only matters when a request uses it (a
//!   background refresh between an edit and the next request still uses the old config).
//!   Sessions chained from an edited one keep their credentials until their own next refresh.

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
use crate::daemon::clock::{self, WallClock};
use crate::daemon::scheduler::{Outcome, RateConfig, Scheduler};
use crate::protocol::{ErrorCode, Identity, SessionInfo, SessionState, WireCredentials, WireError};
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
/// Longest retry delay after a failure to reach STS (`unavailable`). Wi-Fi is often not up yet
/// when a laptop wakes: once it is, the next attempt must come soon (fresh credentials within
/// 30 s, fetch time included), not after a backoff of minutes. The cost while offline is one
/// quick, failing connection attempt per cached session every 15 s or so.
pub const RETRY_UNREACHABLE_MAX: Duration = Duration::from_secs(15);
/// A measured clock skew larger than this is shown in `daemon list`.
const SKEW_SHOWN_SECS: i64 = 60;

/// botocore's advisory refresh window: an SDK given credentials with less than this left
/// refreshes them (runs the credential process) on every call.
pub const BOTOCORE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// A session unused for longer than this is not re-warmed after a restart (it stays cold
/// until a client asks for it).
pub const REWARM_MAX_IDLE: Duration = Duration::from_secs(24 * 3600);

/// When to refresh, measured from receipt. The earliest point is `lifetime − lead`, where
/// `lead = min(window, lifetime/3)`; the latest keeps botocore's 15 minutes when the lead is
/// longer than that (else three quarters of the lead: a short lead leaves little time for a
/// failing STS's retries before expiry, so only its first quarter is used; never within the
/// serve margin). `spread` (0..=1) is
/// the fraction of the room between the two that is used, and `jitter` (0..=1) the point in
/// it: sessions loaded together refresh spread over that room, so N of them cost about
/// N / room calls per second instead of one burst.
pub fn refresh_delay(lifetime: Duration, window: Duration, spread: f64, jitter: f64) -> Duration {
    let lead = window.min(lifetime / 3);
    let latest_left = if lead > BOTOCORE_WINDOW {
        BOTOCORE_WINDOW
    } else {
        lead.mul_f64(0.75)
    };
    let latest_left = latest_left.max(serve_margin(lifetime)).min(lead);
    let room = (lead - latest_left).mul_f64(spread.clamp(0.0, 1.0));
    lifetime.saturating_sub(lead) + room.mul_f64(jitter.clamp(0.0, 1.0))
}

/// How the daemon's own STS calls are shaped (`elhaz.toml`: `[sts]`, `refresh_spread`).
#[derive(Debug, Clone)]
pub struct Shaping {
    /// Background rate and burst of every endpoint.
    pub rate: RateConfig,
    /// Other rates for some endpoints, keyed by [`sts_endpoint`]'s name.
    pub endpoints: std::collections::HashMap<String, RateConfig>,
    /// Fraction of the refresh room refresh points are spread over (see [`refresh_delay`]).
    pub spread: f64,
}

impl Default for Shaping {
    fn default() -> Self {
        Shaping {
            rate: RateConfig::default(),
            endpoints: Default::default(),
            spread: 1.0,
        }
    }
}

impl Shaping {
    /// The shaping `elhaz.toml` asks for.
    pub fn from_settings(settings: &crate::config::Settings) -> Shaping {
        let d = Shaping::default();
        let sts = settings.sts.clone().unwrap_or_default();
        let rate = RateConfig {
            rate: sts.rate.unwrap_or(d.rate.rate),
            burst: sts.burst.unwrap_or(d.rate.burst),
        };
        let endpoints = sts
            .endpoints
            .iter()
            .map(|(url, r)| {
                let c = RateConfig {
                    rate: r.rate.unwrap_or(rate.rate),
                    burst: r.burst.unwrap_or(rate.burst),
                };
                (url.trim_end_matches('/').to_string(), c)
            })
            .collect();
        Shaping {
            rate,
            endpoints,
            spread: settings.refresh_spread(),
        }
    }
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

/// A cached failure, saying so: when the attempt was and when the next one is due.
fn cached_failure(e: &WireError, ago: Duration, retry_in: Option<Duration>) -> WireError {
    let mut w = e.clone();
    let next = match retry_in {
        Some(d) => format!("retrying in {}", secs(d)),
        None => format!(
            "a request after {} retries",
            secs(NEGATIVE_TTL.saturating_sub(ago))
        ),
    };
    w.message = format!("{} (last attempt {} ago; {next})", e.message, secs(ago));
    w
}

/// `3 s`, or `0.4 s` below ten seconds.
fn secs(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} s", d.as_secs())
    }
}

/// The STS endpoint a config calls, for messages and as the scheduler's key: its
/// `endpoint_url`, else the daemon's `AWS_ENDPOINT_URL_STS`/`AWS_ENDPOINT_URL`, else the
/// regional endpoint of its (STS) region; without one, the daemon's default region decides.
fn sts_endpoint(config: &SessionConfig) -> String {
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
fn explain(mut e: WireError, name: &str, endpoint: &str) -> WireError {
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

/// A cheap fingerprint of a config file's `stat` (device, inode, size, mtime and ctime, to
/// the nanosecond); `None` if it cannot be stat'ed. `Store::write` renames a new file into
/// place, so every write changes the inode; an in-place edit changes mtime/ctime.
fn stamp(file: &std::path::Path) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(file).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()).hash(&mut h);
    (m.ctime(), m.ctime_nsec()).hash(&mut h);
    // 0 means "unknown" in `Session::stamp`.
    Some(h.finish().max(1))
}

/// Whether two configs obtain the same credentials: everything but `description` matters
/// (the region is served with the credentials, so it counts too).
fn same_identity(a: &SessionConfig, b: &SessionConfig) -> bool {
    let strip = |c: &SessionConfig| SessionConfig {
        description: None,
        ..c.clone()
    };
    strip(a) == strip(b)
}

#[derive(Debug)]
struct Held {
    creds: Arc<Credentials>,
    /// The deadline on the monotonic clock: `sent + lifetime`.
    expires_at: Instant,
    /// The same deadline on the wall clock: `wall(sent) + lifetime`, i.e. STS's `Expiration`
    /// on our clock. The monotonic clock stops during sleep; this one does not.
    wall_expires: SystemTime,
    lifetime: Duration,
    /// STS's clock minus ours when the request was sent, in seconds (with the round trip).
    skew_secs: i64,
}

impl Held {
    /// Servable only while both clocks leave more than the serve margin.
    fn servable(&self, now: Instant, wall: SystemTime) -> bool {
        let margin = serve_margin(self.lifetime);
        self.expires_at > now + margin && self.wall_expires > wall + margin
    }

    /// Seconds of validity left by the stricter of the two clocks (negative: expired).
    fn left_secs(&self, now: Instant, wall: SystemTime) -> i64 {
        let mono = secs_between(now.into_std(), self.expires_at.into_std());
        let wall = match self.wall_expires.duration_since(wall) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        };
        mono.min(wall)
    }

    /// Validity left by the stricter clock, zero when expired.
    fn left(&self, now: Instant, wall: SystemTime) -> Duration {
        Duration::from_secs(u64::try_from(self.left_secs(now, wall)).unwrap_or(0))
    }
}

/// Seconds since the Unix epoch (0 before it).
fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `to − from` in whole seconds, signed.
fn secs_between(from: std::time::Instant, to: std::time::Instant) -> i64 {
    match to.checked_duration_since(from) {
        Some(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        None => -i64::try_from(from.duration_since(to).as_secs()).unwrap_or(i64::MAX),
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
    /// The same refresh point on the wall clock; the earlier of the two is due first. Both
    /// are set together, or both `None` (nothing scheduled).
    refresh_wall: Option<SystemTime>,
    failures: u32,
    long_term: Option<Arc<LongTermKeys>>,
    note: Option<String>,
}

/// One line of the warm file: a session cached at the last shutdown, and when a client last
/// used it (`None`: an old warm file that recorded names only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmEntry {
    /// The session's name.
    pub name: String,
    /// When a client last used it.
    pub last_used: Option<SystemTime>,
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
    /// [`stamp`] of the config file this session was loaded from.
    stamp: AtomicU64,
    /// When a client last asked for it (wall clock, Unix seconds): recorded in the warm file
    /// so a restart re-warms the most recently used sessions first and leaves idle ones cold.
    last_used: AtomicU64,
}

impl Inner {
    /// Whether the scheduled refresh is due by either clock.
    fn refresh_due(&self, now: Instant, wall: SystemTime) -> bool {
        self.next_refresh.is_some_and(|t| t <= now) || self.refresh_wall.is_some_and(|t| t <= wall)
    }

    /// Whether servable credentials are held or a fetch is in flight.
    fn warm_or_fetching(&self, wall: SystemTime) -> bool {
        self.inflight.is_some()
            || self
                .held
                .as_ref()
                .is_some_and(|h| h.servable(Instant::now(), wall))
    }

    /// Schedules the next refresh `delay` after (`mono`, `wall`) on both clocks.
    fn schedule(&mut self, at: Option<(Instant, SystemTime, Duration)>) {
        self.next_refresh = at.map(|(m, _, d)| m + d);
        self.refresh_wall = at.map(|(_, w, d)| w + d);
    }
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Our critical sections only assign fields; a panic inside one cannot leave the state
        // half-updated in a way readers misinterpret, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session as `daemon list` shows it, judged at wall time `wall` (and now on the
    /// monotonic clock) by the same rule that decides what is served.
    fn info(&self, wall: SystemTime) -> SessionInfo {
        let now = Instant::now();
        let inner = self.lock();
        let valid = inner.held.as_ref().filter(|h| h.servable(now, wall));
        let state = match (valid.is_some(), inner.inflight.is_some(), &inner.last_error) {
            (true, true, _) => SessionState::Refreshing,
            (true, false, Some(_)) => SessionState::Stale,
            (true, false, None) => SessionState::Fresh,
            (false, true, _) => SessionState::Refreshing,
            (false, false, Some(e)) if e.code == ErrorCode::LoginRequired => {
                SessionState::LoginRequired
            }
            (false, false, Some(_)) => SessionState::Failed,
            (false, false, None) if inner.held.is_some() => SessionState::Expired,
            (false, false, None) => SessionState::Idle,
        };
        let to_wall = |t: Instant| wall + t.saturating_duration_since(now);
        // The earlier of the two refresh points, shown on the wall clock.
        let next_refresh = match (inner.next_refresh.map(to_wall), inner.refresh_wall) {
            (Some(m), Some(w)) => Some(m.min(w)),
            (m, w) => m.or(w),
        };
        SessionInfo {
            name: self.name.clone(),
            state,
            source: self.config.source().kind().into(),
            expiration: inner.held.as_ref().map(|h| rfc3339(h.creds.expiration)),
            next_refresh: next_refresh.map(rfc3339),
            expires_in_s: inner.held.as_ref().map(|h| h.left_secs(now, wall)),
            clock_skew_secs: inner
                .held
                .as_ref()
                .map(|h| h.skew_secs)
                .filter(|s| s.abs() > SKEW_SHOWN_SECS),
            last_error: inner.last_error.as_ref().map(|e| e.message.clone()),
            hits: self.hits.load(Ordering::Relaxed),
            sts_calls: self.sts_calls.load(Ordering::Relaxed),
            warning: match (&self.warning, &inner.note) {
                (Some(w), Some(n)) => Some(format!("{w}; {n}")),
                (w, n) => w.clone().or_else(|| n.clone()),
            },
            mfa_expiration: None,
        }
    }

    /// Drops the credentials now (eviction/shutdown), whoever still holds the `Arc<Session>`.
    fn retire(&self) {
        self.cancel.cancel();
        let mut inner = self.lock();
        inner.held = None;
        inner.long_term = None;
        inner.inflight = None;
        inner.schedule(None);
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
    /// Fraction of the refresh room refresh points are spread over.
    refresh_spread: f64,
    /// Every background STS call (refresh, re-warm) waits here for a permit.
    scheduler: Scheduler,
    /// The wall clock (`SystemTime::now` in production).
    wall: WallClock,
    /// Whether the clock watcher task was started (once, with the first session).
    watching: std::sync::atomic::AtomicBool,
    /// Wakes the clock watcher when a session is loaded (it sleeps while none is cached).
    watch_wake: Notify,
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
        Sessions::shaped(store, capacity, fetcher, refresh_window, Shaping::default())
    }

    /// [`Sessions::new`] with the background STS calls shaped by `shaping`.
    pub fn shaped(
        store: Store,
        capacity: usize,
        fetcher: Arc<dyn Fetch>,
        refresh_window: Duration,
        shaping: Shaping,
    ) -> Sessions {
        Sessions::build(
            store,
            capacity,
            fetcher,
            refresh_window,
            shaping,
            clock::system(),
        )
    }

    /// [`Sessions::new`] reading the wall clock from `wall` (unit tests move it).
    pub fn with_wall_clock(
        store: Store,
        capacity: usize,
        fetcher: Arc<dyn Fetch>,
        refresh_window: Duration,
        wall: WallClock,
    ) -> Sessions {
        Sessions::build(
            store,
            capacity,
            fetcher,
            refresh_window,
            Shaping::default(),
            wall,
        )
    }

    fn build(
        store: Store,
        capacity: usize,
        fetcher: Arc<dyn Fetch>,
        refresh_window: Duration,
        shaping: Shaping,
        wall: WallClock,
    ) -> Sessions {
        let cap = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        let shutdown = CancellationToken::new();
        let scheduler =
            Scheduler::with_overrides(shaping.rate, shaping.endpoints, shutdown.clone());
        Sessions {
            engine: Arc::new(Engine {
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
        let wall = self.engine.now_wall();
        sessions
            .iter()
            .map(|s| {
                let mut info = s.info(wall);
                info.mfa_expiration = self.engine.mfa_expiration(s, info.expiration.as_ref());
                info
            })
            .collect()
    }

    /// Names of the cached sessions, most recently used first.
    pub fn names(&self) -> Vec<String> {
        self.engine.lock().iter().map(|(k, _)| k.clone()).collect()
    }

    /// The cached sessions with when a client last used each, most recently used first (what
    /// the warm file records).
    pub fn warm_entries(&self) -> Vec<WarmEntry> {
        self.engine
            .lock()
            .iter()
            .map(|(k, s)| WarmEntry {
                name: k.clone(),
                last_used: Some(
                    SystemTime::UNIX_EPOCH
                        + Duration::from_secs(s.last_used.load(Ordering::Relaxed)),
                ),
            })
            .collect()
    }

    /// Re-warms `entries` (most recently used first) after a restart, in the background:
    /// sessions unused for more than [`REWARM_MAX_IDLE`] stay cold; the others are loaded at
    /// once in their old LRU order (configs only, no STS call), then fetched most recently
    /// used first, each after a background permit of the scheduler, so the re-warm goes at
    /// the configured rate and a client's own fetch never waits behind it. Returns the task.
    pub fn rewarm(&self, entries: Vec<WarmEntry>) -> tokio::task::JoinHandle<()> {
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let now = engine.now_wall();
            let (warm, cold): (Vec<WarmEntry>, Vec<WarmEntry>) =
                entries.into_iter().partition(|e| {
                    e.last_used.is_none_or(|t| {
                        now.duration_since(t).unwrap_or_default() <= REWARM_MAX_IDLE
                    })
                });
            if !cold.is_empty() {
                tracing::info!(
                    sessions = cold.len(),
                    "not re-warming sessions unused for more than a day (loaded when asked)"
                );
            }
            // Least recently used first, so the LRU order survives the restart.
            let mut loaded = Vec::with_capacity(warm.len());
            for e in warm.iter().rev() {
                match engine.load(&e.name, false) {
                    Ok(s) => {
                        if let Some(t) = e.last_used {
                            s.last_used.store(unix_secs(t), Ordering::Relaxed);
                        }
                        loaded.push(s);
                    }
                    Err(err) => {
                        tracing::warn!(session = %e.name, error = %err.message, "cannot re-warm")
                    }
                }
            }
            tracing::info!(
                sessions = loaded.len(),
                "re-warming (most recently used first)"
            );
            for session in loaded.into_iter().rev() {
                if engine.shutdown.is_cancelled() {
                    return;
                }
                if session.cancel.is_cancelled()
                    || session.lock().warm_or_fetching(engine.now_wall())
                {
                    continue; // evicted, or a client fetched it meanwhile
                }
                let endpoint = sts_endpoint(&session.config);
                if !engine.scheduler.background(&endpoint, Instant::now()).await {
                    return;
                }
                let flight = {
                    let mut inner = session.lock();
                    if session.cancel.is_cancelled() || inner.warm_or_fetching(engine.now_wall()) {
                        continue; // the permit is spent; a client was quicker
                    }
                    let f = engine.start_fetch(&session, None, true);
                    inner.inflight = Some(f.clone());
                    f
                };
                // The fetch runs in its own task; this one only reports how it ended.
                tokio::spawn(async move {
                    match flight.await {
                        Ok(_) => tracing::info!(session = %session.name, "re-warmed after restart"),
                        Err(e) => {
                            tracing::warn!(session = %session.name, error = %e.message, "cannot re-warm")
                        }
                    }
                });
            }
        })
    }

    /// Loads (or reloads, if its config changed) a session and waits for its first credentials.
    pub async fn add(&self, name: &str) -> Result<SessionInfo, WireError> {
        let session = self.engine.load(name, true)?;
        let result = self.engine.credentials_of(&session, None).await;
        let info = session.info(self.engine.now_wall());
        result.map(|_| info)
    }

    /// Evicts a session; whether it was cached.
    pub fn remove(&self, name: &str) -> bool {
        let popped = self.engine.lock().pop(name);
        if let Some(s) = &popped {
            self.engine.retire(s);
            tracing::info!(session = name, "session removed");
        }
        popped.is_some()
    }

    /// The fetcher's IAM Identity Center state (for the `sso_*` requests).
    pub async fn sso(&self) -> Option<Arc<crate::sso::Sso>> {
        self.engine.fetcher.sso().await
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
            self.engine.retire(&s);
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
        self.engine.used(&session);
        let region = session.config.region.as_ref().map(|r| r.0.clone());
        Ok(held.creds.to_wire(region))
    }

    /// Credentials the AWS console's federation endpoint accepts, for `elhaz console`. That
    /// endpoint takes role (or federated-user) credentials only, so a session whose
    /// credentials come from GetSessionToken (no `[role]`; an IAM user's long-term keys from
    /// the default chain, a profile or the keyring) gets GetFederationToken with those keys,
    /// called here because the daemon holds them and the CLI must not (see
    /// [`crate::sts::federation_policy`] for the policy and the name). Nothing is cached: a
    /// console sign-in is rare and the federated credentials are handed out once. Every other
    /// session gets its usual credentials.
    pub async fn console_credentials(
        &self,
        name: &str,
        duration_s: Option<u32>,
    ) -> Result<WireCredentials, WireError> {
        let session = self.engine.load(name, false)?;
        let config = session.config.clone();
        let federate = config.role.is_none()
            && matches!(
                config.source(),
                Source::Default | Source::Profile(_) | Source::Keyring(_)
            );
        if !federate {
            return self.credentials(name, None).await;
        }
        let long_term = match config.source() {
            Source::Keyring(entry) => Some(self.engine.long_term(&session, entry).await?),
            _ => None,
        };
        session.sts_calls.fetch_add(1, Ordering::Relaxed);
        let endpoint = sts_endpoint(&config);
        let fetched = self
            .engine
            .fetcher
            .federation_token(
                FetchRequest {
                    name: session.name.clone(),
                    config: config.clone(),
                    chained: None,
                    long_term,
                    mfa_code: None,
                },
                duration_s.unwrap_or(crate::sts::FEDERATION_DEFAULT_DURATION),
            )
            .await
            .map_err(|e| explain(e, &session.name, &endpoint))?;
        session.hits.fetch_add(1, Ordering::Relaxed);
        let region = config.region.as_ref().map(|r| r.0.clone());
        Ok(fetched.creds.to_wire(region))
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
        let mut id = self
            .engine
            .fetcher
            .whoami(session.config.clone(), held.creds.clone())
            .await?;
        id.mfa_expiration = self
            .engine
            .mfa_expiration(&session, Some(&rfc3339(held.creds.expiration)));
        Ok(id)
    }
}

impl Engine {
    fn lock(&self) -> MutexGuard<'_, LruCache<String, Arc<Session>>> {
        // LRU operations are not interrupted by our code; a poisoned guard is still consistent.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_wall(&self) -> SystemTime {
        self.wall.now()
    }

    /// Records that a client used `session` now.
    fn used(&self, session: &Session) {
        session
            .last_used
            .store(unix_secs(self.now_wall()), Ordering::Relaxed);
    }

    /// Starts the clock watcher with the first session, and wakes it if it sleeps because
    /// no session was cached.
    fn watch(self: &Arc<Self>) {
        if !self.watching.swap(true, Ordering::AcqRel) {
            tokio::spawn(clock_watcher(self.clone()));
        }
        self.watch_wake.notify_one();
    }

    /// Wakes the refresher of every session whose refresh is due by either clock.
    fn wake_due(&self, now: Instant, wall: SystemTime) -> usize {
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
    fn load(self: &Arc<Self>, name: &str, reload: bool) -> Result<Arc<Session>, WireError> {
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
    fn mfa_expiration(&self, session: &Session, expiration: Option<&String>) -> Option<String> {
        let config = &session.config;
        config.mfa.as_ref()?;
        if config.role.is_none() {
            return expiration.cloned();
        }
        self.fetcher.mfa_expiration(config).map(rfc3339)
    }

    /// Evicts `name` if cached; whether it was.
    fn evict(&self, name: &str) -> bool {
        let popped = self.lock().pop(name);
        if let Some(s) = &popped {
            self.retire(s);
        }
        popped.is_some()
    }

    /// Retires a session that left the cache and tells the fetcher (its SSO renewer, say, may
    /// have no user left).
    fn retire(&self, s: &Session) {
        s.retire();
        self.fetcher.session_retired(&s.name);
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
    fn start_fetch(
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
    async fn fetch(
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

    async fn fetch_inner(
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

/// A session's background refresher: sleeps until the next refresh is due, waits for a
/// scheduler permit (deadline: the credential's expiry), refreshes through the single-flight
/// path, and exits when the session is evicted or the daemon stops. While it waits for the
/// permit the refresh stays due; a client's fetch meanwhile reschedules it, and the wait is
/// dropped.
async fn refresher(engine: Arc<Engine>, session: Arc<Session>) {
    engine.watch();
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
            // Rescheduled by a client's fetch, or woken by the clock watcher: check below.
            () = session.wake.notified() => {}
            () = sleep => {}
        }
        // Due, with no fetch in flight: wait for a permit first.
        let deadline = {
            let inner = session.lock();
            if !inner.refresh_due(Instant::now(), engine.now_wall()) {
                continue; // rescheduled meanwhile, or woken for nothing
            }
            match (&inner.inflight, &inner.held) {
                (Some(_), _) => None, // a client's fetch is under way: join it below
                (None, Some(h)) => Some(h.expires_at),
                (None, None) => Some(Instant::now()),
            }
        };
        if let Some(deadline) = deadline {
            match wait_for_permit(&engine, &session, deadline).await {
                Permit::Granted => {}
                Permit::NotNeeded => continue,
                Permit::Stopped => return,
            }
        }
        let flight = {
            let wall = engine.now_wall();
            let mut inner = session.lock();
            if !inner.refresh_due(Instant::now(), wall) {
                continue;
            }
            inner.schedule(None);
            match &inner.inflight {
                Some(f) => f.clone(),
                None => {
                    let f = engine.start_fetch(&session, None, true);
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

/// How a wait for a background permit ended.
enum Permit {
    /// Go ahead.
    Granted,
    /// A client's fetch made the call unnecessary (rescheduled, or one is in flight).
    NotNeeded,
    /// The session was evicted or the daemon stops.
    Stopped,
}

/// Waits for `session`'s background permit. Wake-ups meanwhile (a client's fetch, the clock
/// watcher) re-check whether the call is still needed without losing the place in the queue.
async fn wait_for_permit(engine: &Engine, session: &Session, deadline: Instant) -> Permit {
    let endpoint = sts_endpoint(&session.config);
    let permit = engine.scheduler.background(&endpoint, deadline);
    tokio::pin!(permit);
    // Bounded by the permit: each round either ends or waits for the next wake-up.
    loop {
        tokio::select! {
            () = session.cancel.cancelled() => return Permit::Stopped,
            granted = &mut permit => {
                return if granted { Permit::Granted } else { Permit::Stopped };
            }
            () = session.wake.notified() => {
                let inner = session.lock();
                if inner.inflight.is_some() || !inner.refresh_due(Instant::now(), engine.now_wall()) {
                    return Permit::NotNeeded;
                }
            }
        }
    }
}

/// The one clock watcher for all sessions (see `daemon::clock`): wakes on the platform's
/// clock-change signal (Linux: clock set or resume) or every [`clock::CHECK_INTERVAL`] while
/// sessions are cached, and wakes the refreshers whose wall-clock refresh point passed. With
/// no session cached it sleeps until one is loaded, so an empty daemon never wakes.
async fn clock_watcher(engine: Arc<Engine>) {
    let mut signal = clock::ClockChange::new();
    let mut ticker: Option<clock::Ticker> = None;
    let mut mono0 = Instant::now();
    let mut wall0 = engine.now_wall();
    loop {
        if engine.lock().is_empty() {
            ticker = None; // no kernel timer while there is nothing to check
            tokio::select! {
                () = engine.shutdown.cancelled() => return,
                () = engine.watch_wake.notified() => {}
            }
            mono0 = Instant::now();
            wall0 = engine.now_wall();
            continue;
        }
        let signalled = tokio::select! {
            () = engine.shutdown.cancelled() => return,
            () = ticker.get_or_insert_with(clock::Ticker::new).tick() => false,
            () = signal.changed() => true,
        };
        let (mono, wall) = (Instant::now(), engine.now_wall());
        let drift = clock::drift(mono - mono0, wall0, wall);
        let woken = engine.wake_due(mono, wall);
        if signalled || drift.abs() > clock::JUMP_THRESHOLD.as_secs_f64() {
            tracing::info!(
                drift_s = drift.round() as i64,
                signalled,
                refreshing = woken,
                "the wall clock jumped (sleep, resume or clock change)"
            );
        }
        (mono0, wall0) = (mono, wall);
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
        // The earliest point: the lead (20 min) before expiry.
        assert_eq!(refresh_delay(h, w, 1.0, 0.0), Duration::from_secs(2400));
        // The latest: botocore's 15 minutes before expiry; half the room at jitter 0.5.
        assert_eq!(refresh_delay(h, w, 1.0, 1.0), Duration::from_secs(2700));
        assert_eq!(refresh_delay(h, w, 1.0, 0.5), Duration::from_secs(2550));
        // A smaller spread uses part of the room; none keeps the single point.
        assert_eq!(refresh_delay(h, w, 0.2, 1.0), Duration::from_secs(2460));
        assert_eq!(refresh_delay(h, w, 0.0, 1.0), Duration::from_secs(2400));
        // A long window: 12 h credentials, 1 h lead, spread over 45 min.
        let w1h = Duration::from_secs(3600);
        assert_eq!(
            refresh_delay(Duration::from_secs(43_200), w1h, 1.0, 1.0),
            Duration::from_secs(43_200 - 900)
        );
        // Short lifetimes: the lead is a third; spread over its first quarter (time is left
        // for a failing STS's retries), never past the serve margin.
        assert_eq!(
            refresh_delay(Duration::from_secs(30), w, 0.0, 0.0),
            Duration::from_secs(20)
        );
        assert_eq!(
            refresh_delay(Duration::from_secs(30), w, 1.0, 1.0),
            Duration::from_millis(22_500)
        );
        for lifetime in [1, 5, 30, 600, 2700, 3600, 43_200] {
            let l = Duration::from_secs(lifetime);
            for window in [1, 10, 60, 1200, 3600] {
                let w = Duration::from_secs(window);
                let d = refresh_delay(l, w, 1.0, 1.0);
                // A lead shorter than the margin is the configuration's choice; the spread
                // never goes beyond it or the margin.
                assert!(
                    l - d >= serve_margin(l).min(w.min(l / 3)),
                    "{lifetime} s / {window} s: refresh at {d:?} is past the serve margin"
                );
            }
        }
    }

    #[test]
    fn shaping_from_settings_fills_endpoint_overrides_from_sts() {
        let settings: crate::config::Settings = toml::from_str(
            "refresh_spread = 0.25\n[sts]\nrate = 8\nburst = 3\n\
             [sts.endpoints.\"https://sts.eu-west-1.amazonaws.com/\"]\nrate = 2\n",
        )
        .unwrap();
        let s = Shaping::from_settings(&settings);
        assert_eq!(
            s.rate,
            RateConfig {
                rate: 8.0,
                burst: 3.0
            }
        );
        assert_eq!(s.spread, 0.25);
        // Keyed like `sts_endpoint` (no trailing slash); the burst comes from `[sts]`.
        assert_eq!(
            s.endpoints["https://sts.eu-west-1.amazonaws.com"],
            RateConfig {
                rate: 2.0,
                burst: 3.0
            }
        );
        let d = Shaping::from_settings(&Default::default());
        assert_eq!((d.rate, d.spread), (RateConfig::default(), 1.0));
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
        /// Answer `Throttled` (as STS's `Throttling` classifies).
        throttle: std::sync::atomic::AtomicBool,
        /// Every call: (session, when).
        log: Mutex<Vec<(String, Instant)>>,
        lifetime: Duration,
        delay: Duration,
    }

    impl FakeSts {
        /// When each call for a session whose name starts with `prefix` was made.
        fn times(&self, prefix: &str) -> Vec<Instant> {
            let log = self.log.lock().unwrap();
            log.iter()
                .filter(|(n, _)| n.starts_with(prefix))
                .map(|(_, t)| *t)
                .collect()
        }
        fn names(&self) -> Vec<String> {
            self.log
                .lock()
                .unwrap()
                .iter()
                .map(|(n, _)| n.clone())
                .collect()
        }
    }

    /// Most calls in any window of `len` among `times`.
    fn peak(times: &[Instant], len: Duration) -> usize {
        times
            .iter()
            .map(|s| times.iter().filter(|t| **t >= *s && **t < *s + len).count())
            .max()
            .unwrap_or(0)
    }

    impl Fetch for FakeSts {
        fn fetch(&self, req: FetchRequest) -> BoxFuture<Result<Fetched, WireError>> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let fail = self.fail.load(Ordering::SeqCst);
            let throttle = self.throttle.load(Ordering::SeqCst);
            self.log
                .lock()
                .unwrap()
                .push((req.name.clone(), Instant::now()));
            let (lifetime, delay) = (self.lifetime, self.delay);
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                if fail {
                    return Err(WireError::new(ErrorCode::Unavailable, "sts is down"));
                }
                if throttle {
                    return Err(WireError::new(
                        ErrorCode::Throttled,
                        "Throttling: slow down",
                    ));
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
        setup_with_clock(lifetime, delay_ms, names, clock::system())
    }

    /// Like `setup`, with a wall clock that runs `offset` seconds (signed) off the real one;
    /// moving the offset jumps the engine's wall clock without moving tokio's.
    fn setup_clocked(
        lifetime: u64,
        delay_ms: u64,
        names: &[&str],
    ) -> (
        Sessions,
        Arc<FakeSts>,
        Arc<std::sync::atomic::AtomicI64>,
        tempfile::TempDir,
    ) {
        let offset = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let o = offset.clone();
        let wall = WallClock::new(move || {
            let off = o.load(Ordering::SeqCst);
            let now = SystemTime::now();
            if off >= 0 {
                now + Duration::from_secs(off.unsigned_abs())
            } else {
                now - Duration::from_secs(off.unsigned_abs())
            }
        });
        let (sessions, fake, dir) = setup_with_clock(lifetime, delay_ms, names, wall);
        (sessions, fake, offset, dir)
    }

    fn setup_with_clock(
        lifetime: u64,
        delay_ms: u64,
        names: &[&str],
        wall: WallClock,
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
            throttle: false.into(),
            log: Mutex::new(Vec::new()),
            lifetime: Duration::from_secs(lifetime),
            delay: Duration::from_millis(delay_ms),
        });
        let sessions =
            Sessions::with_wall_clock(store, 2, fake.clone(), Duration::from_secs(1200), wall);
        (sessions, fake, dir)
    }

    /// `n` sessions `s0000`… (plus `names`) in a cache big enough for all, shaped by
    /// `shaping`, with a 20-minute window.
    fn setup_shaped(
        lifetime: u64,
        n: usize,
        names: &[&str],
        shaping: Shaping,
    ) -> (Sessions, Arc<FakeSts>, tempfile::TempDir) {
        let (_, fake, dir) = setup(lifetime, 10, names);
        let store = Store::new(dir.path().join("configs"));
        for i in 0..n {
            store
                .write(
                    &format!("s{i:04}"),
                    "[role]\narn = \"arn:aws:iam::123456789012:role/r\"\n",
                    false,
                )
                .unwrap();
        }
        let sessions = Sessions::build(
            store,
            n + names.len() + 1,
            fake.clone(),
            Duration::from_secs(1200),
            shaping,
            clock::system(),
        );
        (sessions, fake, dir)
    }

    fn shaping(rate: f64, burst: f64, spread: f64) -> Shaping {
        Shaping {
            rate: RateConfig { rate, burst },
            endpoints: Default::default(),
            spread,
        }
    }

    /// Loads sessions `s0000`… `s{n-1}` with a client request each, all at once.
    async fn load_all(sessions: &Sessions, n: usize) {
        for i in 0..n {
            sessions
                .credentials(&format!("s{i:04}"), None)
                .await
                .unwrap();
        }
    }

    /// The refresh points of sessions loaded together spread over the room between the lead
    /// (20 min) and botocore's 15 minutes: no burst.
    #[tokio::test(start_paused = true)]
    async fn refreshes_of_sessions_loaded_together_are_spread() {
        let (sessions, fake, _d) = setup_shaped(3600, 300, &[], shaping(1000.0, 1000.0, 1.0));
        let t0 = Instant::now();
        load_all(&sessions, 300).await;
        // Each session's refresh point counts from its own receipt: the last one loaded got
        // its credentials this long after t0 (the fake's answer times add up).
        let loading = t0.elapsed();
        tokio::time::sleep(Duration::from_secs(46 * 60)).await;
        let times = fake.times("s");
        let refreshes: Vec<Instant> = times[300..].to_vec();
        assert_eq!(refreshes.len(), 300, "each session refreshed once");
        let first = *refreshes.iter().min().unwrap() - t0;
        let last = *refreshes.iter().max().unwrap() - t0;
        assert!(first >= Duration::from_secs(40 * 60), "{first:?}");
        assert!(
            last <= Duration::from_secs(45 * 60) + loading + Duration::from_secs(1),
            "{last:?} (loading took {loading:?})"
        );
        assert!(
            last - first >= Duration::from_secs(4 * 60),
            "spread over {:?}",
            last - first
        );
        // 300 over 300 s is ~1/s: never a burst (a synchronized refresh would be 300 at once).
        let p = peak(&refreshes, Duration::from_secs(1));
        assert!(p <= 8, "{p} refreshes within one second");
    }

    /// Background refreshes wait for the scheduler: with no spread all are due together, and
    /// they go at the configured rate, earliest expiry first.
    #[tokio::test(start_paused = true)]
    async fn background_refreshes_go_at_the_scheduler_rate() {
        let (sessions, fake, _d) = setup_shaped(3600, 100, &[], shaping(5.0, 2.0, 0.0));
        load_all(&sessions, 100).await; // client fetches: never held back
        let loaded = Instant::now();
        assert!(loaded.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_secs(40 * 60 + 30)).await;
        let refreshes = fake.times("s")[100..].to_vec();
        assert_eq!(refreshes.len(), 100);
        let p = peak(&refreshes, Duration::from_secs(1));
        assert!(
            p <= 5 + 2,
            "{p} background calls within one second at 5/s, burst 2"
        );
        let span = *refreshes.last().unwrap() - refreshes[0];
        assert!(
            span >= Duration::from_secs(19),
            "100 calls at 5/s took only {span:?}"
        );
        // Earliest expiry first: sessions were loaded in order, so they refresh in order.
        let names = fake.names();
        let order: Vec<&String> = names[100..].iter().collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
    }

    /// A client's first fetch is answered at once while a long background backlog waits.
    #[tokio::test(start_paused = true)]
    async fn a_clients_first_fetch_never_waits_behind_background_work() {
        let (sessions, fake, _d) = setup_shaped(3600, 100, &["z"], shaping(1.0, 1.0, 0.0));
        load_all(&sessions, 100).await;
        // All 100 refreshes are due; at 1/s the backlog lasts ~100 s.
        tokio::time::sleep(Duration::from_secs(40 * 60 + 5)).await;
        let before = fake.calls.load(Ordering::SeqCst);
        assert!(
            before < 100 + 20,
            "the backlog is still queued ({before} calls)"
        );
        let t0 = Instant::now();
        sessions.credentials("z", None).await.unwrap();
        assert_eq!(
            t0.elapsed(),
            Duration::from_millis(10),
            "only the fetch itself"
        );
    }

    /// A refresh waiting for a permit is dropped when a client fetches the session meanwhile:
    /// one STS call, not two.
    #[tokio::test(start_paused = true)]
    async fn a_client_fetch_replaces_a_queued_refresh() {
        let (sessions, fake, _d) = setup_shaped(60, 40, &[], shaping(0.5, 1.0, 0.0));
        load_all(&sessions, 40).await;
        // Refreshes are due at 40 s; at 0.5/s the last ones wait ~80 s, past the expiry.
        tokio::time::sleep(Duration::from_secs(58)).await;
        let waiting = "s0039";
        assert_eq!(fake.times(waiting).len(), 1, "still queued");
        sessions.credentials(waiting, None).await.unwrap();
        assert_eq!(
            fake.times(waiting).len(),
            2,
            "the client's fetch went ahead"
        );
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            fake.times(waiting).len(),
            2,
            "the queued refresh was dropped, not made as well"
        );
    }

    /// Throttling halves the background rate (AIMD) for the endpoint; success brings it back.
    #[tokio::test(start_paused = true)]
    async fn throttling_slows_the_scheduler_and_it_recovers() {
        let (sessions, fake, _d) = setup_shaped(3600, 60, &[], shaping(20.0, 5.0, 0.0));
        load_all(&sessions, 60).await;
        let endpoint = sts_endpoint(&sessions.engine.load("s0000", false).unwrap().config);
        assert_eq!(sessions.engine.scheduler.rate(&endpoint), 20.0);
        fake.throttle.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(40 * 60 + 2)).await;
        let slowed = sessions.engine.scheduler.rate(&endpoint);
        assert!(slowed <= 2.5, "still at {slowed}/s after being throttled");
        let throttled_calls = fake.calls.load(Ordering::SeqCst) - 60;
        fake.throttle.store(false, Ordering::SeqCst);
        // Every session keeps its credentials (still valid) and retries; each success adds
        // back 0.5/s.
        tokio::time::sleep(Duration::from_secs(5 * 60)).await;
        assert!(
            sessions
                .list()
                .iter()
                .all(|i| i.state == SessionState::Fresh)
        );
        assert!(throttled_calls >= 5);
        assert!(
            sessions.engine.scheduler.rate(&endpoint) >= 20.0 - f64::EPSILON,
            "recovered to {}",
            sessions.engine.scheduler.rate(&endpoint)
        );
    }

    /// Re-warm after a restart: most recently used first, at the scheduler's rate; sessions
    /// unused for more than a day stay cold; the LRU order is the recorded one.
    #[tokio::test(start_paused = true)]
    async fn rewarm_goes_most_recently_used_first_and_leaves_idle_sessions_cold() {
        let (sessions, fake, _d) = setup_shaped(3600, 30, &[], shaping(10.0, 1.0, 1.0));
        let now = SystemTime::now();
        // MRU first: s0000 used a minute ago, … s0029 used 29 min ago; s0025.. over a day.
        let entries: Vec<WarmEntry> = (0..30)
            .map(|i| WarmEntry {
                name: format!("s{i:04}"),
                last_used: Some(if i >= 25 {
                    now - REWARM_MAX_IDLE - Duration::from_secs(60 * i)
                } else {
                    now - Duration::from_secs(60 * (i + 1))
                }),
            })
            .collect();
        let t0 = Instant::now();
        sessions.rewarm(entries).await.unwrap();
        // Bounded: 25 calls at 10/s.
        while fake.calls.load(Ordering::SeqCst) < 25 {
            assert!(t0.elapsed() < Duration::from_secs(10), "re-warm stalled");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let expected: Vec<String> = (0..25).map(|i| format!("s{i:04}")).collect();
        assert_eq!(fake.names(), expected, "MRU first, the idle ones never");
        assert_eq!(
            sessions.names(),
            expected,
            "LRU order kept; idle ones not loaded"
        );
        let times = fake.times("s");
        assert!(peak(&times, Duration::from_secs(1)) <= 11);
        // The recorded last use survives (not reset by the re-warm).
        let recorded = sessions.warm_entries();
        assert_eq!(
            recorded[0].last_used.map(unix_secs),
            Some(unix_secs(now - Duration::from_secs(60)))
        );
    }

    const TWO_HOURS: i64 = 2 * 3600;

    /// The laptop slept two hours: the wall clock moved, tokio's monotonic clock did not. The
    /// next read must not get the dead credential; 50 readers at once cost one STS call.
    #[tokio::test(start_paused = true)]
    async fn wall_jump_next_read_fetches_exactly_once() {
        let (sessions, fake, offset, _d) = setup_clocked(3600, 10, &["a"]);
        let first = sessions.credentials("a", None).await.unwrap();
        assert_eq!(sessions.list()[0].state, SessionState::Fresh);
        offset.store(TWO_HOURS, Ordering::SeqCst);
        let info = &sessions.list()[0];
        assert_eq!(info.state, SessionState::Expired, "{info:?}");
        assert!(info.expires_in_s.is_some_and(|s| s < 0), "{info:?}");
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let s = sessions.clone();
            tasks.push(tokio::spawn(async move { s.credentials("a", None).await }));
        }
        let mut keys = std::collections::HashSet::new();
        for t in tasks {
            keys.insert(t.await.unwrap().unwrap().access_key_id.clone());
        }
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            2,
            "one STS call for 50 readers"
        );
        assert_eq!(keys.len(), 1, "every reader got the same new credential");
        assert!(!keys.contains(&first.access_key_id), "never the stale one");
        let info = &sessions.list()[0];
        assert_eq!(info.state, SessionState::Fresh);
        // The new credential is valid for the usual time again, by both clocks.
        assert!(info.expires_in_s.is_some_and(|s| s > 3500), "{info:?}");
    }

    /// Without any request, the clock watcher notices the jump and the refresher renews
    /// within the detection bound; with no jump, the watcher's ticks refresh nothing.
    #[tokio::test(start_paused = true)]
    async fn refresher_renews_after_wall_jump_within_detection_bound() {
        let (sessions, fake, offset, _d) = setup_clocked(3600, 10, &["a"]);
        let first = sessions.credentials("a", None).await.unwrap();
        tokio::time::sleep(clock::CHECK_INTERVAL * 3).await;
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            1,
            "ticks alone refresh nothing"
        );
        offset.store(TWO_HOURS, Ordering::SeqCst);
        let t0 = Instant::now();
        // Bounded: the watcher ticks every CHECK_INTERVAL; allow two ticks at most.
        while fake.calls.load(Ordering::SeqCst) < 2 {
            assert!(
                t0.elapsed() <= clock::CHECK_INTERVAL + Duration::from_secs(1),
                "no refresh within the detection bound"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2, "exactly one refresh");
        let info = &sessions.list()[0];
        assert_eq!(info.state, SessionState::Fresh, "{info:?}");
        let again = sessions.credentials("a", None).await.unwrap();
        assert_ne!(again.access_key_id, first.access_key_id);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2, "served from memory");
    }

    /// `info` never says `fresh` (or serves) once the wall clock is past the expiration,
    /// whatever the monotonic clock says; STS being unreachable meanwhile is reported.
    #[tokio::test(start_paused = true)]
    async fn info_is_never_fresh_past_expiration() {
        let (sessions, fake, offset, _d) = setup_clocked(3600, 10, &["a"]);
        sessions.credentials("a", None).await.unwrap();
        fake.fail.store(true, Ordering::SeqCst);
        // Walk the wall clock forward in 5-minute steps across the expiry.
        for step in 0..=30i64 {
            offset.store(step * 300, Ordering::SeqCst);
            tokio::task::yield_now().await;
            let wall = SystemTime::now() + Duration::from_secs((step * 300) as u64);
            let info = sessions.list().remove(0);
            let exp = humantime::parse_rfc3339(info.expiration.as_deref().unwrap()).unwrap();
            let left = info.expires_in_s.unwrap();
            if matches!(info.state, SessionState::Fresh | SessionState::Stale) {
                assert!(exp > wall, "{step}: {info:?} is served past its expiration");
                assert!(left > 0, "{info:?}");
            } else if matches!(info.state, SessionState::Expired | SessionState::Failed) {
                let margin = serve_margin(Duration::from_secs(3600)).as_secs() as i64;
                assert!(left <= margin, "{info:?}");
            }
            if exp <= wall {
                assert!(
                    !matches!(info.state, SessionState::Fresh | SessionState::Stale),
                    "{info:?}"
                );
                let e = sessions.credentials("a", None).await.unwrap_err();
                assert_eq!(e.code, ErrorCode::Unavailable, "{e:?}");
            }
        }
    }

    /// Waking into no network: refresh attempts that cannot reach STS retry at least every
    /// RETRY_UNREACHABLE_MAX, so fresh credentials arrive soon after it is back — no request.
    #[tokio::test(start_paused = true)]
    async fn unreachable_sts_is_retried_soon_after_a_wake() {
        let (sessions, fake, offset, _d) = setup_clocked(3600, 10, &["a"]);
        sessions.credentials("a", None).await.unwrap();
        fake.fail.store(true, Ordering::SeqCst);
        offset.store(TWO_HOURS, Ordering::SeqCst);
        // Offline for ten minutes: many failed attempts; the backoff stays short.
        tokio::time::sleep(Duration::from_secs(600)).await;
        let failed = fake.calls.load(Ordering::SeqCst) - 1;
        assert!(
            failed >= 600 / 15 - 5,
            "only {failed} attempts in 10 min offline"
        );
        assert_eq!(sessions.list()[0].state, SessionState::Failed);
        fake.fail.store(false, Ordering::SeqCst);
        let back = Instant::now();
        while sessions.list()[0].state != SessionState::Fresh {
            assert!(
                back.elapsed() <= RETRY_UNREACHABLE_MAX + Duration::from_secs(1),
                "not fresh within {RETRY_UNREACHABLE_MAX:?} of the network's return"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A local clock ten minutes slow: the skew against STS is shown, and the wall deadline is
    /// STS's expiration on our clock (the credential is fresh, not "expires in 70 min").
    #[tokio::test(start_paused = true)]
    async fn clock_skew_is_measured_and_shown() {
        let (sessions, _fake, offset, _d) = setup_clocked(3600, 10, &["a", "b"]);
        sessions.credentials("a", None).await.unwrap();
        assert_eq!(
            sessions.list()[0].clock_skew_secs,
            None,
            "no skew, not shown"
        );
        offset.store(-600, Ordering::SeqCst);
        sessions.credentials("b", None).await.unwrap();
        let info = sessions.list().into_iter().find(|i| i.name == "b").unwrap();
        let skew = info.clock_skew_secs.expect("a 10-minute skew is shown");
        assert!((599..=601).contains(&skew), "{info:?}");
        assert!(
            info.expires_in_s
                .is_some_and(|s| (3590..=3600).contains(&s)),
            "{info:?}"
        );
        assert_eq!(info.state, SessionState::Fresh);
    }

    #[test]
    fn held_validity_needs_both_clocks() {
        let now = Instant::now();
        let wall = SystemTime::now();
        let h = Held {
            creds: Arc::new(Credentials {
                access_key_id: "ASIA".into(),
                secret_access_key: "s".into(),
                session_token: "t".into(),
                expiration: wall + Duration::from_secs(3600),
                account_id: None,
                arn: None,
            }),
            expires_at: now + Duration::from_secs(3600),
            wall_expires: wall + Duration::from_secs(3600),
            lifetime: Duration::from_secs(3600),
            skew_secs: 0,
        };
        assert!(h.servable(now, wall));
        // Monotonic says yes, wall says no (slept two hours), and the other way round.
        assert!(!h.servable(now, wall + Duration::from_secs(7200)));
        assert!(!h.servable(now + Duration::from_secs(7200), wall));
        // The serve margin applies on both clocks.
        assert!(!h.servable(now, wall + Duration::from_secs(3595)));
        assert_eq!(h.left_secs(now, wall + Duration::from_secs(7200)), -3600);
        assert_eq!(
            h.left(now, wall + Duration::from_secs(7200)),
            Duration::ZERO
        );
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
        // Refresh is due between 40 and 45 min (spread); advance to 46 min with no request.
        tokio::time::sleep(Duration::from_secs(46 * 60)).await;
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
        tokio::time::sleep(Duration::from_secs(50 * 60)).await;
        // Refresh failed (and retried), but the credential is still valid: served, no wait.
        let served = sessions.credentials("a", None).await.unwrap();
        assert_eq!(served.access_key_id, first.access_key_id);
        let info = &sessions.list()[0];
        assert_eq!(info.state, SessionState::Stale);
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
        assert_eq!(sessions.list()[0].state, SessionState::Fresh);
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
        tokio::time::sleep(Duration::from_secs(46 * 60)).await;
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
