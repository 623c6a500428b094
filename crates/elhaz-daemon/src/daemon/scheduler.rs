//! The background STS scheduler: every call the daemon makes on its own (re-warm after a
//! restart, refresh-ahead, retries after a failed refresh) waits here for a permit; calls a
//! client is waiting for do not. The engine (`daemon::sessions`) owns one, shaped by
//! `elhaz.toml`'s `[sts]` (`rate`, `burst`, `[sts.endpoints."URL"]`).
//!
//! Why one scheduler: real STS throttles bursts per account, and a daemon with thousands of
//! sessions would otherwise send them all at once after a restart (2,000 AssumeRole calls in
//! ~12 s were measured against the local STS), and every throttled session would then back off
//! on its own and retry together. Here the rate is shaped per STS endpoint instead:
//!
//! - **Token bucket per endpoint** (default 20 calls/s, burst 5, from [`RateConfig`]). An
//!   endpoint's bucket exists only once it has been used; the dispatcher of an endpoint with
//!   nobody waiting sleeps on a `Notify` (no timer), so an idle daemon does not wake up for
//!   it, and 10,000 cached sessions cost no timers here until their refreshes fall due.
//! - **Earliest deadline first.** Waiters are served in the order of the time by which they
//!   need their credentials (a credential's expiry, or "now" for a re-warm), so a backlog never
//!   lets a credential expire while less urgent refreshes go first. Equal deadlines go in
//!   arrival order, which is how a re-warm queued most recently used first stays so.
//! - **Clients never queue.** A fetch a client waits for takes a token without waiting
//!   ([`Scheduler::foreground`]): it may drive the bucket negative, which only delays
//!   background work.
//! - **AIMD on throttling.** A throttled background call halves the endpoint's rate (down to
//!   [`MIN_RATE`]); each successful one adds [`INCREASE`] back, up to the configured rate. The
//!   sessions themselves keep their normal retry schedule; it is the shared rate that slows.
//!   Client calls report too: a client's call that STS throttles slows the background ones.
//!
//! What it does not do: hold back client calls (they only consume tokens, delaying background
//! work), or limit calls per AWS account rather than per endpoint (the daemon cannot tell
//! accounts apart before the call). A waiter whose session was evicted costs no token.
//!
//! Locks: one `std::sync::Mutex` around the endpoint map and each endpoint's state, held only
//! for field updates, never across an `.await`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The slowest an endpoint is throttled down to, in calls per second.
pub const MIN_RATE: f64 = 0.5;
/// Calls per second added back after each successful background call.
pub const INCREASE: f64 = 0.5;
/// Default background calls per second per STS endpoint.
pub const DEFAULT_RATE: f64 = 20.0;
/// Default burst (tokens an idle endpoint accumulates).
pub const DEFAULT_BURST: f64 = 5.0;

/// Rounding slack when comparing token counts: `0.1 s × 10/s` may come out as 0.999….
const TOKEN_EPSILON: f64 = 1e-9;

/// The rate every endpoint starts at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateConfig {
    /// Calls per second.
    pub rate: f64,
    /// Largest burst.
    pub burst: f64,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            rate: DEFAULT_RATE,
            burst: DEFAULT_BURST,
        }
    }
}

/// How a background call ended, for the rate adjustment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// STS answered (success or an error that is not throttling).
    Answered,
    /// STS throttled the call.
    Throttled,
}

/// The background STS scheduler (cheap to clone; clones share it).
#[derive(Debug, Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: RateConfig,
    /// Per-endpoint rates that differ from `config` (`[sts.endpoints."URL"]`).
    overrides: HashMap<String, RateConfig>,
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    cancel: CancellationToken,
}

#[derive(Debug)]
struct Endpoint {
    /// This endpoint's configured (maximum) rate and burst.
    config: RateConfig,
    state: Mutex<Bucket>,
    /// Wakes the dispatcher when a waiter arrives.
    arrived: Notify,
}

#[derive(Debug)]
struct Bucket {
    /// Current rate (AIMD), calls per second.
    rate: f64,
    /// Available tokens; negative after foreground calls.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    refilled: Instant,
    /// Waiters by (deadline, arrival order).
    waiting: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Each waiter's wake-up, by arrival order.
    senders: HashMap<u64, oneshot::Sender<()>>,
    next_seq: u64,
    /// Calls granted so far (background and foreground), for figures and tests.
    granted: u64,
}

impl Bucket {
    fn refill(&mut self, now: Instant, burst: f64) {
        let dt = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(burst);
        self.refilled = now;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections only assign fields; a poisoned lock still holds consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Scheduler {
    /// A scheduler whose dispatchers end when `cancel` fires.
    pub fn new(config: RateConfig, cancel: CancellationToken) -> Scheduler {
        Scheduler::with_overrides(config, HashMap::new(), cancel)
    }

    /// [`Scheduler::new`] with other rates for some endpoints (keyed like [`background`]).
    ///
    /// [`background`]: Scheduler::background
    pub fn with_overrides(
        config: RateConfig,
        overrides: HashMap<String, RateConfig>,
        cancel: CancellationToken,
    ) -> Scheduler {
        let sane = |c: RateConfig| RateConfig {
            rate: c.rate.max(MIN_RATE),
            burst: c.burst.max(1.0),
        };
        Scheduler {
            inner: Arc::new(Inner {
                config: sane(config),
                overrides: overrides.into_iter().map(|(k, c)| (k, sane(c))).collect(),
                endpoints: Mutex::new(HashMap::new()),
                cancel,
            }),
        }
    }

    /// The configured (maximum) rate.
    pub fn config(&self) -> RateConfig {
        self.inner.config
    }

    fn endpoint(&self, key: &str) -> Arc<Endpoint> {
        let mut map = lock(&self.inner.endpoints);
        if let Some(e) = map.get(key) {
            return e.clone();
        }
        let config = self
            .inner
            .overrides
            .get(key)
            .copied()
            .unwrap_or(self.inner.config);
        let e = Arc::new(Endpoint {
            config,
            state: Mutex::new(Bucket {
                rate: config.rate,
                tokens: config.burst,
                refilled: Instant::now(),
                waiting: BinaryHeap::new(),
                senders: HashMap::new(),
                next_seq: 0,
                granted: 0,
            }),
            arrived: Notify::new(),
        });
        map.insert(key.to_string(), e.clone());
        tokio::spawn(dispatch(e.clone(), self.inner.cancel.clone()));
        e
    }

    /// Waits for a background permit for `endpoint`; earlier `deadline`s go first. Returns
    /// `false` if the scheduler was shut down meanwhile.
    pub async fn background(&self, endpoint: &str, deadline: Instant) -> bool {
        let e = self.endpoint(endpoint);
        let rx = {
            let mut b = lock(&e.state);
            let seq = b.next_seq;
            b.next_seq += 1;
            let (tx, rx) = oneshot::channel();
            b.waiting.push(Reverse((deadline, seq)));
            b.senders.insert(seq, tx);
            rx
        };
        e.arrived.notify_one();
        tokio::select! {
            r = rx => r.is_ok(),
            () = self.inner.cancel.cancelled() => false,
        }
    }

    /// Records a call a client is waiting for: it takes a token without waiting.
    pub fn foreground(&self, endpoint: &str) {
        let e = self.endpoint(endpoint);
        let mut b = lock(&e.state);
        b.refill(Instant::now(), e.config.burst);
        b.tokens -= 1.0;
        b.granted += 1;
    }

    /// Adjusts `endpoint`'s rate after a background call (AIMD).
    pub fn report(&self, endpoint: &str, outcome: Outcome) {
        let e = self.endpoint(endpoint);
        let mut b = lock(&e.state);
        b.refill(Instant::now(), e.config.burst);
        b.rate = match outcome {
            Outcome::Throttled => (b.rate / 2.0).max(MIN_RATE),
            Outcome::Answered => (b.rate + INCREASE).min(e.config.rate),
        };
        if outcome == Outcome::Throttled {
            tracing::info!(
                endpoint,
                rate = b.rate,
                "STS throttled a background call; slowing background calls"
            );
        }
    }

    /// `endpoint`'s current rate, calls per second.
    pub fn rate(&self, endpoint: &str) -> f64 {
        lock(&self.endpoint(endpoint).state).rate
    }

    /// Calls granted for `endpoint` so far.
    pub fn granted(&self, endpoint: &str) -> u64 {
        lock(&self.endpoint(endpoint).state).granted
    }
}

/// One endpoint's dispatcher: hands out tokens to the earliest deadline while any are waiting,
/// and sleeps on `arrived` (no timer) while nobody waits.
async fn dispatch(e: Arc<Endpoint>, cancel: CancellationToken) {
    let burst = e.config.burst;
    loop {
        // What to do next, decided under the lock, done outside it.
        let wait = {
            let mut b = lock(&e.state);
            let now = Instant::now();
            b.refill(now, burst);
            // Waiters that gave up (an evicted session's refresher) cost no token.
            while let Some(Reverse((_, seq))) = b.waiting.peek().copied()
                && b.senders.get(&seq).is_none_or(|tx| tx.is_closed())
            {
                b.waiting.pop();
                b.senders.remove(&seq);
            }
            match b.waiting.peek().copied() {
                None => None,
                Some(Reverse((_, seq))) if b.tokens >= 1.0 - TOKEN_EPSILON => {
                    b.waiting.pop();
                    b.tokens -= 1.0;
                    b.granted += 1;
                    if let Some(tx) = b.senders.remove(&seq) {
                        // It was open a moment ago; if it just closed, the token is lost.
                        let _ = tx.send(());
                    }
                    continue;
                }
                // At least a millisecond (the timer's resolution): a shorter sleep could end
                // without the clock moving and spin.
                Some(_) => Some(
                    Duration::from_secs_f64((1.0 - b.tokens) / b.rate)
                        .max(Duration::from_millis(1)),
                ),
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = e.arrived.notified(), if wait.is_none() => {}
            () = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn sched(rate: f64, burst: f64) -> Scheduler {
        Scheduler::new(RateConfig { rate, burst }, CancellationToken::new())
    }

    /// Which waiter was granted, and when, in grant order.
    type Grants = Arc<Mutex<Vec<(usize, Instant)>>>;

    /// Spawns background waiters with the given deadlines; returns the grants and the tasks.
    fn waiters(
        s: &Scheduler,
        deadlines: Vec<Duration>,
    ) -> (Grants, Vec<tokio::task::JoinHandle<()>>) {
        let order = Arc::new(Mutex::new(Vec::new()));
        let base = Instant::now();
        let tasks = deadlines
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let (s, order) = (s.clone(), order.clone());
                tokio::spawn(async move {
                    assert!(s.background("sts", base + d).await);
                    lock(&order).push((i, Instant::now()));
                })
            })
            .collect();
        (order, tasks)
    }

    #[tokio::test(start_paused = true)]
    async fn background_calls_are_rate_limited_after_the_burst() {
        let s = sched(20.0, 5.0);
        let t0 = Instant::now();
        let (order, tasks) = waiters(&s, vec![Duration::from_secs(60); 105]);
        for t in tasks {
            t.await.unwrap();
        }
        let order = lock(&order);
        assert_eq!(order.len(), 105);
        // 5 at once, then 100 more at 20/s: the last after ~5 s.
        let last = order.iter().map(|(_, t)| *t).max().unwrap() - t0;
        assert!(
            last >= Duration::from_millis(4900) && last <= Duration::from_millis(5200),
            "{last:?}"
        );
        // In no one-second window were more than rate + burst calls granted.
        for (_, start) in order.iter() {
            let n = order
                .iter()
                .filter(|(_, t)| *t >= *start && *t < *start + Duration::from_secs(1))
                .count();
            assert!(n <= 25, "{n} calls within a second");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn earliest_deadline_goes_first() {
        let s = sched(1.0, 1.0);
        // Use up the burst so the waiters queue.
        assert!(s.background("sts", Instant::now()).await);
        let deadlines = [50, 10, 40, 20, 30].map(Duration::from_secs).to_vec();
        let (order, tasks) = waiters(&s, deadlines);
        tokio::task::yield_now().await;
        for t in tasks {
            t.await.unwrap();
        }
        let got: Vec<usize> = lock(&order).iter().map(|(i, _)| *i).collect();
        assert_eq!(got, vec![1, 3, 4, 2, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_foreground_call_never_waits_but_delays_background_work() {
        let s = sched(2.0, 1.0);
        let t0 = Instant::now();
        for _ in 0..10 {
            s.foreground("sts"); // returns at once, whatever the bucket holds
        }
        assert_eq!(Instant::now(), t0);
        // The bucket is at 1 - 10 = -9: the next background call waits 10 tokens at 2/s.
        assert!(s.background("sts", t0).await);
        let waited = Instant::now() - t0;
        assert!(
            waited >= Duration::from_millis(4900) && waited <= Duration::from_millis(5100),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_halves_the_rate_and_success_recovers_it() {
        let s = sched(20.0, 5.0);
        s.report("sts", Outcome::Throttled);
        assert_eq!(s.rate("sts"), 10.0);
        for _ in 0..10 {
            s.report("sts", Outcome::Throttled);
        }
        assert_eq!(s.rate("sts"), MIN_RATE);
        // Slowed down: 10 background calls after the burst take ~ (10 - 5) / 0.5 = 10 s.
        let t0 = Instant::now();
        let (_, tasks) = waiters(&s, vec![Duration::ZERO; 10]);
        for t in tasks {
            t.await.unwrap();
        }
        let slow = Instant::now() - t0;
        assert!(slow >= Duration::from_secs(9), "{slow:?}");
        // Recovers additively, never beyond the configured rate.
        for _ in 0..100 {
            s.report("sts", Outcome::Answered);
        }
        assert_eq!(s.rate("sts"), 20.0);
        // Other endpoints were never slowed.
        assert_eq!(s.rate("other"), 20.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gave_up_costs_no_token() {
        let s = sched(1.0, 1.0);
        let t0 = Instant::now();
        assert!(s.background("sts", t0).await); // the burst token
        let s2 = s.clone();
        let gone = tokio::spawn(async move { s2.background("sts", t0).await });
        tokio::task::yield_now().await;
        gone.abort();
        let _ = gone.await;
        // The next waiter gets the token due at 1 s, not the one after it.
        assert!(s.background("sts", t0 + Duration::from_secs(5)).await);
        assert_eq!(Instant::now() - t0, Duration::from_secs(1));
        assert_eq!(s.granted("sts"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn endpoints_are_independent() {
        let s = sched(1.0, 1.0);
        let t0 = Instant::now();
        assert!(s.background("a", t0).await);
        assert!(s.background("b", t0).await);
        assert_eq!(Instant::now(), t0, "each endpoint has its own burst");
        assert_eq!((s.granted("a"), s.granted("b")), (1, 1));
    }

    /// 0.1 s at 10/s refills 0.999… tokens in floating point: the dispatcher must still grant
    /// (it used to spin on sub-millisecond sleeps that never moved the paused clock).
    #[tokio::test(start_paused = true)]
    async fn fractional_refills_do_not_stall_the_dispatcher() {
        let s = sched(10.0, 1.0);
        let t0 = Instant::now();
        for _ in 0..30 {
            assert!(s.background("sts", t0).await);
        }
        let took = Instant::now() - t0;
        assert!(
            took >= Duration::from_millis(2850) && took <= Duration::from_millis(3000),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_override_has_its_own_rate_and_burst() {
        let overrides = HashMap::from([(
            "slow".to_string(),
            RateConfig {
                rate: 1.0,
                burst: 1.0,
            },
        )]);
        let s =
            Scheduler::with_overrides(RateConfig::default(), overrides, CancellationToken::new());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(s.background("slow", t0).await);
        }
        // 1 at once, then 1/s.
        assert_eq!(Instant::now() - t0, Duration::from_secs(2));
        assert_eq!(s.rate("slow"), 1.0);
        s.report("slow", Outcome::Answered);
        assert_eq!(
            s.rate("slow"),
            1.0,
            "recovery stops at the endpoint's own rate"
        );
        assert_eq!(s.rate("other"), DEFAULT_RATE);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_dispatcher_sets_no_timer_and_shutdown_releases_waiters() {
        let cancel = CancellationToken::new();
        let s = Scheduler::new(
            RateConfig {
                rate: 1.0,
                burst: 1.0,
            },
            cancel.clone(),
        );
        assert!(s.background("sts", Instant::now()).await);
        // Nobody waits: advancing time a day wakes nothing (the paused clock would run any
        // timer; a dispatcher spinning on timers would grant phantom calls or hang here).
        tokio::time::sleep(Duration::from_secs(86_400)).await;
        assert_eq!(s.granted("sts"), 1);
        // A waiter blocked behind an empty bucket is released by shutdown with `false`.
        s.foreground("sts");
        s.foreground("sts");
        let done = Arc::new(AtomicUsize::new(0));
        let (s2, d2) = (s.clone(), done.clone());
        let t = tokio::spawn(async move {
            let ok = s2.background("sts", Instant::now()).await;
            d2.store(if ok { 1 } else { 2 }, Ordering::SeqCst);
        });
        tokio::task::yield_now().await;
        cancel.cancel();
        t.await.unwrap();
        assert_eq!(done.load(Ordering::SeqCst), 2);
    }
}
