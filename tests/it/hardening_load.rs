//! Hardening, load: 1,000 concurrent connections and 100,000 requests against one daemon
//! (ids echoed, credentials correct, RSS bounded), the default connection cap with more
//! clients than slots, and clients that dribble or never read while others are served.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fake_sts::FakeSts;
use crate::hardening::*;
use crate::moto::{add_sts_config, aws_env};
use crate::util::*;

const SESSION: &str = "load";
/// Generous bound of one round trip under load (clients beyond the cap wait in the backlog).
const ROUND_TRIP_LIMIT: Duration = Duration::from_secs(60);
/// Descriptors the daemon may open besides connections while serving (a log file).
const FD_SLACK: usize = 2;
/// Daemon RSS ceiling under load.
const RSS_LIMIT_MB: f64 = 64.0;

/// What every reply must say.
struct Expected {
    pid: u32,
    key: String,
    secret: String,
    token: String,
}

/// A test env with a fake STS and one session config, `elhaz.toml` = `settings`.
fn setup(settings: &str) -> (TestEnv, FakeSts) {
    let env = TestEnv::new();
    let sts = FakeSts::start();
    aws_env(&env, &sts.url());
    add_sts_config(
        &env,
        SESSION,
        &sts.url(),
        &["--role-arn", "arn:aws:iam::123456789012:role/load"],
    );
    if !settings.is_empty() {
        env.write_settings(settings);
    }
    (env, sts)
}

fn expected(env: &TestEnv, pid: u32) -> Expected {
    let (v, _) = credential_process(env, SESSION);
    let s = |k: &str| v[k].as_str().unwrap().to_string();
    Expected {
        pid,
        key: s("AccessKeyId"),
        secret: s("SecretAccessKey"),
        token: s("SessionToken"),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ping,
    Status,
    Credentials,
}

/// Request `i` of a client: a ping first, then a mix (10 % status, 10 % ping, 80 %
/// credentials).
fn kind_of(i: usize) -> Kind {
    match i % 10 {
        _ if i == 0 => Kind::Ping,
        1 => Kind::Status,
        2 => Kind::Ping,
        _ => Kind::Credentials,
    }
}

fn payload(kind: Kind, id: u64) -> String {
    match kind {
        Kind::Ping => format!(r#"{{"protocol":4,"id":{id},"op":"ping"}}"#),
        Kind::Status => format!(r#"{{"protocol":4,"id":{id},"op":"status"}}"#),
        Kind::Credentials => credentials_request(id, SESSION),
    }
}

fn check(reply: &Value, id: u64, kind: Kind, exp: &Expected) -> Result<(), String> {
    let ok = &reply["ok"];
    let good = reply["protocol"] == elhaz::protocol::PROTOCOL_VERSION
        && reply["id"] == id
        && match kind {
            Kind::Ping => ok["kind"] == "pong" && ok["pid"] == exp.pid,
            Kind::Status => ok["kind"] == "status" && ok["pid"] == exp.pid,
            Kind::Credentials => {
                ok["kind"] == "credentials"
                    && ok["access_key_id"] == exp.key.as_str()
                    && ok["secret_access_key"] == exp.secret.as_str()
                    && ok["session_token"] == exp.token.as_str()
            }
        };
    if good {
        Ok(())
    } else {
        // Never print the secret parts of a wrong reply in full.
        Err(format!(
            "request {id}: wrong reply (id {}, kind {}, error {})",
            reply["id"], ok["kind"], reply["error"]
        ))
    }
}

#[derive(Default)]
struct Counters {
    answered: AtomicU64,
    wrong: AtomicU64,
    failed: AtomicU64,
    credentials: AtomicU64,
    failures: Failures,
}

async fn round_trip(s: &mut tokio::net::UnixStream, payload: &str) -> Result<Value, String> {
    let fut = async {
        s.write_all(&frame(payload.as_bytes()))
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > 64 * 1024 {
            return Err(format!("a {len}-byte reply"));
        }
        let mut body = vec![0u8; len];
        s.read_exact(&mut body)
            .await
            .map_err(|e| format!("read: {e}"))?;
        serde_json::from_slice(&body).map_err(|e| format!("reply is not JSON: {e}"))
    };
    tokio::time::timeout(ROUND_TRIP_LIMIT, fut)
        .await
        .unwrap_or_else(|_| Err(format!("no reply within {ROUND_TRIP_LIMIT:?}")))
}

/// One client: connects, sends `requests` requests one after the other on one connection,
/// checking each reply. After the first reply it waits at `barrier` (all clients connected
/// and served at once) and/or holds its connection idle for `hold`, then — as a CLI
/// command would — opens a new connection for the rest: a full daemon closes connections
/// idle for `EVICT_MIN_SILENT` / `EVICT_MIN_IDLE` to make room for waiting clients (#16).
async fn client(
    socket: Arc<PathBuf>,
    idx: usize,
    requests: usize,
    exp: Arc<Expected>,
    barrier: Option<Arc<tokio::sync::Barrier>>,
    hold: Duration,
    c: Arc<Counters>,
) {
    let conn = tokio::time::timeout(
        ROUND_TRIP_LIMIT,
        tokio::net::UnixStream::connect(socket.as_path()),
    )
    .await;
    let mut s = match conn {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            c.failures.push(format!("client {idx}: connect: {e}"));
            None
        }
        Err(_) => {
            c.failures.push(format!("client {idx}: connect timed out"));
            None
        }
    };
    for i in 0..requests {
        let id = idx as u64 * 1_000_000 + i as u64 + 1;
        let kind = kind_of(i);
        let result = match s.as_mut() {
            Some(s) => round_trip(s, &payload(kind, id)).await,
            None => Err("not connected".into()),
        };
        match result {
            Ok(reply) => match check(&reply, id, kind, &exp) {
                Ok(()) => {
                    c.answered.fetch_add(1, Ordering::Relaxed);
                    if kind == Kind::Credentials {
                        c.credentials.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    c.answered.fetch_add(1, Ordering::Relaxed);
                    c.wrong.fetch_add(1, Ordering::Relaxed);
                    c.failures.push(format!("client {idx}: {e}"));
                }
            },
            Err(e) => {
                c.failed.fetch_add((requests - i) as u64, Ordering::Relaxed);
                c.failures.push(format!("client {idx}, request {i}: {e}"));
                s = None;
            }
        }
        if i == 0 {
            if let Some(b) = &barrier {
                // Every client arrives here, failed or not, so the others never wait forever.
                if tokio::time::timeout(ROUND_TRIP_LIMIT, b.wait())
                    .await
                    .is_err()
                {
                    c.failures
                        .push(format!("client {idx}: the barrier did not open in time"));
                }
            }
            if !hold.is_zero() {
                tokio::time::sleep(hold).await;
                s = match tokio::time::timeout(
                    ROUND_TRIP_LIMIT,
                    tokio::net::UnixStream::connect(socket.as_path()),
                )
                .await
                {
                    Ok(Ok(s)) => Some(s),
                    _ => {
                        c.failed
                            .fetch_add((requests - i - 1) as u64, Ordering::Relaxed);
                        c.failures.push(format!("client {idx}: reconnect failed"));
                        None
                    }
                };
            }
        }
        if s.is_none() {
            break;
        }
    }
}

/// Peak values seen by a background sampler.
#[derive(Default)]
struct Peaks {
    rss_kib: AtomicU64,
    accepted: AtomicUsize,
    fds: AtomicUsize,
}

/// Samples the daemon's RSS, open fds and accepted connections every 20 ms until `stop`.
fn sampler(
    pid: u32,
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    peaks: Arc<Peaks>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(300);
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            if let Some(r) = rss_kib(pid) {
                peaks.rss_kib.fetch_max(r, Ordering::Relaxed);
            }
            if let Some(a) = accepted_connections(&socket) {
                peaks.accepted.fetch_max(a, Ordering::Relaxed);
            }
            if let Some(f) = fd_count(pid) {
                peaks.fds.fetch_max(f, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

struct LoadRun {
    clients: usize,
    requests_each: usize,
    barrier: bool,
    hold: Duration,
}

struct LoadResult {
    answered: u64,
    wrong: u64,
    failed: u64,
    credentials: u64,
    failures: Vec<String>,
    elapsed: Duration,
    rss_before: f64,
    rss_peak: f64,
    rss_after: f64,
    /// Peak accepted connections from `/proc/net/unix` (read in several chunks while
    /// connections come and go, so it can over-count by a few).
    peak_accepted: usize,
    /// Peak open descriptors beyond the idle daemon's: its connections (exact to within the
    /// odd transient file).
    peak_conn_fds: usize,
}

fn run_load(env: &TestEnv, pid: u32, exp: Expected, run: &LoadRun) -> LoadResult {
    let socket = env.socket();
    let rss_before = rss_mb(pid);
    // Descriptors the idle daemon holds (listener, lock, logs, runtime); every accepted
    // connection adds one.
    let base_fds = fd_count(pid).expect("cannot count the daemon's fds");
    let stop = Arc::new(AtomicBool::new(false));
    let peaks = Arc::new(Peaks::default());
    let sampling = sampler(pid, socket.clone(), stop.clone(), peaks.clone());
    let counters = Arc::new(Counters::default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let exp = Arc::new(exp);
    let socket_arc = Arc::new(socket.clone());
    rt.block_on(async {
        let barrier = run
            .barrier
            .then(|| Arc::new(tokio::sync::Barrier::new(run.clients)));
        let tasks: Vec<_> = (0..run.clients)
            .map(|idx| {
                tokio::spawn(client(
                    socket_arc.clone(),
                    idx,
                    run.requests_each,
                    exp.clone(),
                    barrier.clone(),
                    run.hold,
                    counters.clone(),
                ))
            })
            .collect();
        for t in tasks {
            // A panicking client task is a test failure, reported through the counters.
            if let Err(e) = t.await {
                counters.failures.push(format!("client task died: {e}"));
                counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let elapsed = started.elapsed();
    drop(rt);
    // Let the daemon close the last connections before the "after" figure.
    wait_until(DEADLINE, || accepted_connections(&socket).unwrap_or(0) == 0);
    stop.store(true, Ordering::SeqCst);
    sampling.join().unwrap();
    let rss_after = rss_mb(pid);
    LoadResult {
        answered: counters.answered.load(Ordering::SeqCst),
        wrong: counters.wrong.load(Ordering::SeqCst),
        failed: counters.failed.load(Ordering::SeqCst),
        credentials: counters.credentials.load(Ordering::SeqCst),
        failures: counters.failures.take(),
        elapsed,
        rss_before,
        rss_peak: peaks.rss_kib.load(Ordering::SeqCst) as f64 / 1024.0,
        rss_after,
        peak_accepted: peaks.accepted.load(Ordering::SeqCst),
        peak_conn_fds: peaks.fds.load(Ordering::SeqCst).saturating_sub(base_fds),
    }
}

/// Cached-session hits and STS calls from `daemon list`.
fn hits_and_calls(env: &TestEnv) -> (u64, u64) {
    let s = listed_session(env, SESSION).expect("the session is cached");
    (
        s["hits"].as_u64().unwrap_or(0),
        s["sts_calls"].as_u64().unwrap_or(0),
    )
}

#[test]
fn concurrent_1000_connections_100k_requests() {
    const CLIENTS: usize = 1000;
    const EACH: usize = 100;
    let nofile = raise_nofile(8192);
    assert!(
        nofile >= 2 * CLIENTS as u64 + 200,
        "RLIMIT_NOFILE is {nofile}: cannot hold {CLIENTS} connections on both ends"
    );
    let (env, sts) = setup("max_connections = 2048\n");
    let mut daemon = env.start_daemon_foreground(&[]);
    let pid = daemon.pid();
    let exp = expected(&env, pid);
    let r = run_load(
        &env,
        pid,
        exp,
        &LoadRun {
            clients: CLIENTS,
            requests_each: EACH,
            barrier: true,
            hold: Duration::ZERO,
        },
    );
    let total = (CLIENTS * EACH) as u64;
    let alive = daemon.try_wait().is_none();
    let (hits, calls) = hits_and_calls(&env);
    let assume_roles = sts.calls_of("AssumeRole").len();
    let line = format!(
        "load: {CLIENTS} concurrent conns (max_connections 2048, peak {} connections open), \
         {total} requests, {} answered, {} wrong, {} failed, rss {:.1} MB -> peak {:.1} MB -> \
         {:.1} MB, {:.1} s ({:.0} req/s), {assume_roles} STS call(s)",
        r.peak_conn_fds,
        r.answered,
        r.wrong,
        r.failed,
        r.rss_before,
        r.rss_peak,
        r.rss_after,
        r.elapsed.as_secs_f64(),
        total as f64 / r.elapsed.as_secs_f64(),
    );
    let ok = alive
        && r.answered == total
        && r.wrong == 0
        && r.failed == 0
        && r.peak_conn_fds >= CLIENTS
        && r.rss_peak < RSS_LIMIT_MB
        && r.rss_after < RSS_LIMIT_MB
        && assume_roles == 1
        && hits == r.credentials + 1;
    record(
        "load_1000_concurrent_connections_100k_requests",
        "load",
        ok,
        &line,
        json!({
            "connections": CLIENTS,
            "requests": total,
            "answered": r.answered,
            "wrong": r.wrong,
            "failed": r.failed,
            "peak_connections": r.peak_conn_fds,
            "peak_accepted_proc_net_unix": r.peak_accepted,
            "rss_before_mb": r.rss_before,
            "rss_peak_mb": r.rss_peak,
            "rss_after_mb": r.rss_after,
            "elapsed_s": r.elapsed.as_secs_f64(),
        }),
    );
    assert!(alive, "the daemon died under load{}", daemon.report());
    assert!(
        r.failures.is_empty() && r.wrong == 0 && r.failed == 0,
        "{line}\nfirst failures:\n{}",
        r.failures.join("\n")
    );
    assert_eq!(r.answered, total, "{line}");
    assert!(
        r.peak_conn_fds >= CLIENTS,
        "never {CLIENTS} connections open at once: {line}"
    );
    assert!(r.rss_peak < RSS_LIMIT_MB, "{line}");
    assert!(r.rss_after < RSS_LIMIT_MB, "{line}");
    // Every credential came from the cache: one AssumeRole (the warm-up), and the daemon
    // counted every hit.
    assert_eq!(assume_roles, 1, "{:?}", sts.calls());
    assert_eq!(calls, 1);
    assert_eq!(hits, r.credentials + 1, "{line}");
    env.run_ok(&["daemon", "status"]);
}

#[test]
fn clients_1000_with_the_default_cap_of_512() {
    use elhaz::daemon::server::MAX_WAITING;
    const CLIENTS: usize = 1000;
    const EACH: usize = 20;
    let default_cap = elhaz::config::DEFAULT_MAX_CONNECTIONS;
    assert_eq!(default_cap, 512, "the documented default changed");
    raise_nofile(8192);
    let (env, _sts) = setup("");
    let mut daemon = env.start_daemon_foreground(&[]);
    let pid = daemon.pid();
    let exp = expected(&env, pid);
    // Each client holds its connection idle for a second after its first reply, so the cap
    // is reached; the clients beyond it wait (the daemon closes idle held connections to make
    // room, and their clients reconnect) or sit in the listen backlog, and are served later.
    let r = run_load(
        &env,
        pid,
        exp,
        &LoadRun {
            clients: CLIENTS,
            requests_each: EACH,
            barrier: false,
            hold: Duration::from_secs(1),
        },
    );
    let total = (CLIENTS * EACH) as u64;
    let alive = daemon.try_wait().is_none();
    let line = format!(
        "load: {CLIENTS} clients against the default cap of {default_cap}: peak {} connections \
         open at once, {total} requests, {} answered, {} wrong, {} failed, rss {:.1} MB -> peak {:.1} MB \
         -> {:.1} MB, {:.1} s",
        r.peak_conn_fds,
        r.answered,
        r.wrong,
        r.failed,
        r.rss_before,
        r.rss_peak,
        r.rss_after,
        r.elapsed.as_secs_f64()
    );
    let ok = alive
        && r.answered == total
        && r.wrong == 0
        && r.failed == 0
        && r.peak_conn_fds <= default_cap + MAX_WAITING + FD_SLACK
        && r.peak_conn_fds >= default_cap / 2
        && r.rss_peak < RSS_LIMIT_MB;
    record(
        "load_1000_clients_with_the_default_cap_of_512",
        "load",
        ok,
        &line,
        json!({
            "connections": CLIENTS,
            "requests": total,
            "answered": r.answered,
            "wrong": r.wrong,
            "failed": r.failed,
            "peak_connections": r.peak_conn_fds,
            "peak_accepted_proc_net_unix": r.peak_accepted,
            "rss_before_mb": r.rss_before,
            "rss_peak_mb": r.rss_peak,
            "rss_after_mb": r.rss_after,
            "elapsed_s": r.elapsed.as_secs_f64(),
        }),
    );
    assert!(alive, "the daemon died under load{}", daemon.report());
    assert!(
        r.failures.is_empty() && r.wrong == 0 && r.failed == 0,
        "{line}\nfirst failures:\n{}",
        r.failures.join("\n")
    );
    assert_eq!(r.answered, total, "{line}");
    // Besides the cap's slots, at most MAX_WAITING accepted connections wait for one.
    assert!(
        r.peak_conn_fds <= default_cap + MAX_WAITING + FD_SLACK,
        "more connections accepted than the cap and its waiters: {line}"
    );
    assert!(
        r.peak_conn_fds >= default_cap / 2,
        "the clients never ran concurrently: {line}"
    );
    assert!(r.rss_peak < RSS_LIMIT_MB, "{line}");
}

/// Whether the daemon has closed `s` (EOF or reset), waiting at most `wait`.
fn closed_within(s: &mut std::os::unix::net::UnixStream, wait: Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
    }
}

/// A slowloris: sends a header announcing 200 bytes, then one byte per second. Returns how
/// long after `started` the daemon closed the connection (None: still open after `limit`).
fn slowloris(mut s: std::os::unix::net::UnixStream, limit: Duration) -> (Option<Duration>, usize) {
    use std::io::Write;
    let started = Instant::now();
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    if s.write_all(&200u32.to_be_bytes()).is_err() {
        return (Some(started.elapsed()), 0);
    }
    let mut sent = 0;
    while started.elapsed() < limit && sent < 200 {
        if closed_within(&mut s, Duration::from_secs(1)) {
            return (Some(started.elapsed()), sent);
        }
        if s.write_all(b"x").is_err() {
            return (Some(started.elapsed()), sent);
        }
        sent += 1;
    }
    (None, sent)
}

#[test]
fn slowloris_and_a_client_that_never_reads_do_not_block_others() {
    use elhaz::daemon::server::{FRAME_READ_TIMEOUT, WRITE_TIMEOUT};
    use std::io::Write;
    let (env, _sts) = setup("");
    let mut daemon = env.start_daemon_foreground(&[]);
    let pid = daemon.pid();
    let exp = expected(&env, pid);
    let socket = env.socket();
    let rss_before = rss_mb(pid);
    let limit = FRAME_READ_TIMEOUT * 3;

    // 1. A slowloris on a fresh connection.
    let s1 = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let fresh = std::thread::spawn(move || slowloris(s1, limit));
    // 2. A slowloris that first behaves (one ping), then dribbles its second frame.
    let mut s2 = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    s2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s2.write_all(&frame(br#"{"protocol":4,"id":1,"op":"ping"}"#))
        .unwrap();
    let pong = read_frame_or_eof(&mut s2).unwrap().expect("a pong");
    assert!(String::from_utf8_lossy(&pong).contains("pong"));
    let second = std::thread::spawn(move || slowloris(s2, limit));
    // 3. A client that idles between two requests for longer than the frame timeout (but
    //    less than the idle timeout): idling is not dribbling, it stays connected.
    let mut s4 = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    s4.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let idler = std::thread::spawn(move || {
        let mut pongs = 0;
        for id in [1, 2] {
            if s4
                .write_all(&frame(
                    format!(r#"{{"protocol":4,"id":{id},"op":"ping"}}"#).as_bytes(),
                ))
                .is_ok()
                && matches!(read_frame_or_eof(&mut s4), Ok(Some(b)) if String::from_utf8_lossy(&b).contains("pong"))
            {
                pongs += 1;
            }
            if id == 1 {
                std::thread::sleep(FRAME_READ_TIMEOUT + Duration::from_secs(3));
            }
        }
        pongs
    });
    // 4. A client that sends credential requests as fast as it can and never reads.
    let mut s3 = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    s3.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deaf = std::thread::spawn(move || {
        let started = Instant::now();
        let mut sent = 0u64;
        let mut first_block: Option<Instant> = None;
        let req = frame(credentials_request(7, SESSION).as_bytes());
        while started.elapsed() < Duration::from_secs(60) && sent < 1_000_000 {
            match s3.write_all(&req) {
                Ok(()) => sent += 1,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    first_block.get_or_insert_with(Instant::now);
                }
                Err(_) => {
                    // EPIPE / ECONNRESET: the daemon dropped us.
                    return (sent, first_block.map(|b| b.elapsed()), true);
                }
            }
        }
        (sent, first_block.map(|b| b.elapsed()), false)
    });

    // Meanwhile other clients are served: a credentials request on a fresh connection every
    // 50 ms, and a `credential-process` run every 20th round.
    let started = Instant::now();
    let mut served = 0u64;
    let mut cli_runs = 0u64;
    let mut max_latency = Duration::ZERO;
    let mut failures = Vec::new();
    let mut round = 0u64;
    while started.elapsed() < Duration::from_secs(90)
        && round < 2_000
        && !(fresh.is_finished()
            && second.is_finished()
            && deaf.is_finished()
            && idler.is_finished())
    {
        round += 1;
        let t0 = Instant::now();
        match try_request(
            &socket,
            &credentials_request(round, SESSION),
            Duration::from_secs(5),
        ) {
            Ok(r) if r["id"] == round && r["ok"]["access_key_id"] == exp.key.as_str() => {
                served += 1;
            }
            Ok(r) => failures.push(format!("round {round}: wrong reply {}", r["error"])),
            Err(e) => failures.push(format!("round {round}: {e}")),
        }
        max_latency = max_latency.max(t0.elapsed());
        if round.is_multiple_of(20) {
            let (v, took) = credential_process(&env, SESSION);
            assert_eq!(v["AccessKeyId"], exp.key.as_str());
            max_latency = max_latency.max(took);
            cli_runs += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (fresh_closed, fresh_sent) = fresh.join().unwrap();
    let (second_closed, second_sent) = second.join().unwrap();
    let (deaf_sent, deaf_closed_after_block, deaf_dropped) = deaf.join().unwrap();
    let idler_pongs = idler.join().unwrap();
    let alive = daemon.try_wait().is_none();
    let rss_after = rss_mb(pid);
    let secs = |d: Option<Duration>| {
        d.map_or("never".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
    };
    let idle_s = (FRAME_READ_TIMEOUT + Duration::from_secs(3)).as_secs();
    let line = format!(
        "load: slowloris closed after {} (fresh conn, {fresh_sent} bytes dribbled) and {} \
         (after a ping, {second_sent} bytes), an idler got {idler_pongs}/2 pongs across a \
         {idle_s} s pause, never-reading client ({deaf_sent} requests sent) \
         dropped {} after its writes blocked; meanwhile {served} requests + {cli_runs} \
         credential-process runs served, max latency {:.0} ms, {} failures; rss {rss_before:.1} \
         MB -> {rss_after:.1} MB",
        secs(fresh_closed),
        secs(second_closed),
        secs(deaf_closed_after_block),
        max_latency.as_secs_f64() * 1000.0,
        failures.len(),
    );
    let lo = FRAME_READ_TIMEOUT - Duration::from_secs(1);
    let hi = FRAME_READ_TIMEOUT + Duration::from_secs(8);
    let in_window = |d: Option<Duration>| d.is_some_and(|d| d >= lo && d <= hi);
    let deaf_ok = deaf_dropped
        && deaf_closed_after_block.is_some_and(|d| d <= WRITE_TIMEOUT + Duration::from_secs(10));
    let ok = alive
        && in_window(fresh_closed)
        && in_window(second_closed)
        && deaf_ok
        && idler_pongs == 2
        && failures.is_empty()
        && served >= 50
        && max_latency < Duration::from_secs(5)
        && rss_after < RSS_LIMIT_MB;
    record(
        "load_slowloris_and_a_client_that_never_reads_do_not_block_others",
        "load",
        ok,
        &line,
        json!({
            "requests": served + cli_runs,
            "wrong": failures.len(),
            "slowloris_closed_s": fresh_closed.map(|d| d.as_secs_f64()),
            "slowloris_after_ping_closed_s": second_closed.map(|d| d.as_secs_f64()),
            "never_reader_dropped": deaf_dropped,
            "max_latency_ms": max_latency.as_secs_f64() * 1000.0,
            "rss_before_mb": rss_before,
            "rss_after_mb": rss_after,
        }),
    );
    assert!(alive, "the daemon died{}", daemon.report());
    assert!(failures.is_empty(), "{line}\n{}", failures.join("\n"));
    assert!(served >= 50, "{line}");
    assert!(max_latency < Duration::from_secs(5), "{line}");
    assert!(
        in_window(fresh_closed),
        "a fresh slowloris was not closed {FRAME_READ_TIMEOUT:?} after connecting: {line}"
    );
    assert!(
        in_window(second_closed),
        "a slowloris that first sent a valid request was not closed {FRAME_READ_TIMEOUT:?} \
         after it began dribbling: {line}"
    );
    assert!(
        deaf_ok,
        "a client that never reads was not dropped after {WRITE_TIMEOUT:?}: {line}"
    );
    assert_eq!(
        idler_pongs, 2,
        "a client idle for less than the idle timeout was dropped: {line}"
    );
    assert!(rss_after < RSS_LIMIT_MB, "{line}");
}
