use super::engine::*;
use super::session::*;
use super::timing::*;
use super::*;
use crate::config::SessionConfig;
use crate::credentials::Credentials;
use crate::daemon::scheduler::RateConfig;
use crate::protocol::{ErrorCode, SessionState};
use crate::sts::BoxFuture;
use crate::sts::Fetched;
use std::sync::Mutex;
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
