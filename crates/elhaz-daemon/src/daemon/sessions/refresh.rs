//! What runs without a request: each session's refresher (sleep until the refresh point,
//! wait for a permit of the background STS scheduler, refresh through the engine's
//! single-flight path) and the one clock watcher that wakes refreshers whose wall-clock
//! refresh point passed while the monotonic clock stood still (sleep, clock changes).
//!
//! Both are plain loops over `tokio::select!`, ended by the session's or the daemon's
//! cancellation token; a client's fetch meanwhile reschedules a refresher through its
//! `Notify` instead of racing it.

use std::sync::Arc;

use tokio::time::Instant;

use super::engine::{Engine, sts_endpoint};
use super::session::Session;
use crate::daemon::clock;

/// A session's background refresher: sleeps until the next refresh is due, waits for a
/// scheduler permit (deadline: the credential's expiry), refreshes through the single-flight
/// path, and exits when the session is evicted or the daemon stops. While it waits for the
/// permit the refresh stays due; a client's fetch meanwhile reschedules it, and the wait is
/// dropped.
pub(super) async fn refresher(engine: Arc<Engine>, session: Arc<Session>) {
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
pub(super) enum Permit {
    /// Go ahead.
    Granted,
    /// A client's fetch made the call unnecessary (rescheduled, or one is in flight).
    NotNeeded,
    /// The session was evicted or the daemon stops.
    Stopped,
}

/// Waits for `session`'s background permit. Wake-ups meanwhile (a client's fetch, the clock
/// watcher) re-check whether the call is still needed without losing the place in the queue.
pub(super) async fn wait_for_permit(
    engine: &Engine,
    session: &Session,
    deadline: Instant,
) -> Permit {
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
pub(super) async fn clock_watcher(engine: Arc<Engine>) {
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
