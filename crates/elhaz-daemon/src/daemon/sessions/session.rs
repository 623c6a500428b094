//! One cached session: its credentials with their deadline on both clocks (`Held`), its
//! mutable state behind a small `std` mutex (`Inner`: never held across an `.await`), and how
//! `daemon list` shows it. Also the cheap `stat` stamp that tells a request whether the
//! session's config file changed.
//!
//! Everything here is synchronous and takes no lock but the session's own: the engine
//! (`engine`) decides when to fetch, this module only records and judges what is held.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use futures_util::future::Shared;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::timing::{SKEW_SHOWN_SECS, secs_between, serve_margin};
use crate::config::SessionConfig;
use crate::credentials::{Credentials, LongTermKeys, rfc3339};
use crate::protocol::{ErrorCode, SessionInfo, SessionState, WireError};
use crate::sts::BoxFuture;

/// A cheap fingerprint of a config file's `stat` (device, inode, size, mtime and ctime, to
/// the nanosecond); `None` if it cannot be stat'ed. `Store::write` renames a new file into
/// place, so every write changes the inode; an in-place edit changes mtime/ctime.
pub(super) fn stamp(file: &std::path::Path) -> Option<u64> {
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
pub(super) fn same_identity(a: &SessionConfig, b: &SessionConfig) -> bool {
    let strip = |c: &SessionConfig| SessionConfig {
        description: None,
        ..c.clone()
    };
    strip(a) == strip(b)
}

#[derive(Debug)]
pub(super) struct Held {
    pub(super) creds: Arc<Credentials>,
    /// The deadline on the monotonic clock: `sent + lifetime`.
    pub(super) expires_at: Instant,
    /// The same deadline on the wall clock: `wall(sent) + lifetime`, i.e. STS's `Expiration`
    /// on our clock. The monotonic clock stops during sleep; this one does not.
    pub(super) wall_expires: SystemTime,
    pub(super) lifetime: Duration,
    /// STS's clock minus ours when the request was sent, in seconds (with the round trip).
    pub(super) skew_secs: i64,
}

impl Held {
    /// Servable only while both clocks leave more than the serve margin.
    pub(super) fn servable(&self, now: Instant, wall: SystemTime) -> bool {
        let margin = serve_margin(self.lifetime);
        self.expires_at > now + margin && self.wall_expires > wall + margin
    }

    /// Seconds of validity left by the stricter of the two clocks (negative: expired).
    pub(super) fn left_secs(&self, now: Instant, wall: SystemTime) -> i64 {
        let mono = secs_between(now.into_std(), self.expires_at.into_std());
        let wall = match self.wall_expires.duration_since(wall) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        };
        mono.min(wall)
    }

    /// Validity left by the stricter clock, zero when expired.
    pub(super) fn left(&self, now: Instant, wall: SystemTime) -> Duration {
        Duration::from_secs(u64::try_from(self.left_secs(now, wall)).unwrap_or(0))
    }
}

pub(super) type Flight = Shared<BoxFuture<Result<Arc<Held>, WireError>>>;

#[derive(Debug, Default)]
pub(super) struct Inner {
    pub(super) held: Option<Arc<Held>>,
    pub(super) inflight: Option<Flight>,
    pub(super) last_error: Option<WireError>,
    /// When `last_error` was recorded.
    pub(super) failed_at: Option<Instant>,
    pub(super) next_refresh: Option<Instant>,
    /// The same refresh point on the wall clock; the earlier of the two is due first. Both
    /// are set together, or both `None` (nothing scheduled).
    pub(super) refresh_wall: Option<SystemTime>,
    pub(super) failures: u32,
    pub(super) long_term: Option<Arc<LongTermKeys>>,
    pub(super) note: Option<String>,
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
    pub(super) name: String,
    pub(super) config: Arc<SessionConfig>,
    pub(super) inner: Mutex<Inner>,
    /// Wakes the refresher when a client-triggered fetch changed the schedule.
    pub(super) wake: Notify,
    pub(super) cancel: CancellationToken,
    pub(super) hits: AtomicU64,
    pub(super) sts_calls: AtomicU64,
    pub(super) warning: Option<String>,
    /// [`stamp`] of the config file this session was loaded from.
    pub(super) stamp: AtomicU64,
    /// When a client last asked for it (wall clock, Unix seconds): recorded in the warm file
    /// so a restart re-warms the most recently used sessions first and leaves idle ones cold.
    pub(super) last_used: AtomicU64,
}

impl Inner {
    /// Whether the scheduled refresh is due by either clock.
    pub(super) fn refresh_due(&self, now: Instant, wall: SystemTime) -> bool {
        self.next_refresh.is_some_and(|t| t <= now) || self.refresh_wall.is_some_and(|t| t <= wall)
    }

    /// Whether servable credentials are held or a fetch is in flight.
    pub(super) fn warm_or_fetching(&self, wall: SystemTime) -> bool {
        self.inflight.is_some()
            || self
                .held
                .as_ref()
                .is_some_and(|h| h.servable(Instant::now(), wall))
    }

    /// Schedules the next refresh `delay` after (`mono`, `wall`) on both clocks.
    pub(super) fn schedule(&mut self, at: Option<(Instant, SystemTime, Duration)>) {
        self.next_refresh = at.map(|(m, _, d)| m + d);
        self.refresh_wall = at.map(|(_, w, d)| w + d);
    }
}

impl Session {
    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // Our critical sections only assign fields; a panic inside one cannot leave the state
        // half-updated in a way readers misinterpret, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session as `daemon list` shows it, judged at wall time `wall` (and now on the
    /// monotonic clock) by the same rule that decides what is served.
    pub(super) fn info(&self, wall: SystemTime) -> SessionInfo {
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
    pub(super) fn retire(&self) {
        self.cancel.cancel();
        let mut inner = self.lock();
        inner.held = None;
        inner.long_term = None;
        inner.inflight = None;
        inner.schedule(None);
    }
}
