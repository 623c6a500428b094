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
//!
//! # Layout
//!
//! The engine is split by concern; the pieces share private state (a session's `Inner`, the
//! engine's cache), so their items are `pub(super)` — visible inside `sessions` only — and
//! this module re-exports what the rest of the daemon names (`sessions::Sessions`,
//! `sessions::Shaping`, …):
//!
//! - `mod.rs` — [`Sessions`], the public face: load, serve, list, remove, re-warm.
//! - `timing` — when to refresh and retry: [`refresh_delay`], [`backoff_delay`], the serve
//!   margin, the negative cache's message, [`Shaping`]; pure functions, unit-tested alone.
//! - `session` — one cached session: its credentials on both clocks (`Held`), its mutable
//!   state (`Inner`) and how `daemon list` shows it; the config-file stamp.
//! - `engine` — the shared cache and the fetch path: loading (and reloading) configs,
//!   single-flight fetches, chained sources, error context, keyring reads.
//! - `refresh` — the background tasks: each session's refresher and its wait for a scheduler
//!   permit, and the one clock watcher.
//!
//! The trade-off of the split: `engine` and `refresh` call each other (the engine spawns a
//! session's refresher; the refresher fetches through the engine), so they are two files of
//! one unit rather than independent modules — the line between them is "what a client's
//! request runs" versus "what runs without one".

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Source, Store};
use crate::credentials::rfc3339;
use crate::daemon::clock::{self, WallClock};
use crate::protocol::{Identity, SessionInfo, WireCredentials, WireError};
use crate::sts::{Fetch, FetchRequest};

mod engine;
mod refresh;
mod session;
mod timing;

use engine::{Engine, explain, sts_endpoint};

pub use session::{Session, WarmEntry};
use timing::unix_secs;
pub use timing::{
    BOTOCORE_WINDOW, RETRY_UNREACHABLE_MAX, REWARM_MAX_IDLE, Shaping, backoff_delay, refresh_delay,
};

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
        Sessions {
            engine: Arc::new(Engine::new(
                store,
                capacity,
                fetcher,
                refresh_window,
                shaping,
                wall,
            )),
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

#[cfg(test)]
mod tests;
