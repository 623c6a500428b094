//! Scale: listing thousands of cached sessions, and the background STS scheduler seen from
//! outside (re-warm rate and order, throttling, clients never queued behind it).
//!
//! Protocol version 1 sent the whole `list` reply as one frame, which outgrew the 64 KiB cap
//! past ~400 sessions, and the connection was dropped ("failed to fill whole buffer"). These
//! tests cache 5,000 sessions and list them through the CLI and the raw protocol.
//!
//! The suite's fake STS serves the fetches rather than moto: what is under test is the listing,
//! and 5,000 AssumeRole calls against moto (~160/s here) would cost half a minute.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::fake_sts::FakeSts;
use crate::moto::aws_env;
use crate::util::*;

const SESSIONS: usize = 5_000;
/// Connections loading sessions in parallel.
const LOADERS: usize = 8;

fn name(i: usize) -> String {
    format!("s{i:04}")
}

fn frame(json: String) -> String {
    json.replace("PV", &elhaz::protocol::PROTOCOL_VERSION.to_string())
}

/// Writes `SESSIONS` role configs into `env`.
fn write_configs(env: &TestEnv) {
    write_n_configs(env, SESSIONS);
}

/// Writes `n` role configs `s0000`… into `env` (role name = session name).
fn write_n_configs(env: &TestEnv, n: usize) {
    std::fs::create_dir_all(env.configs_dir()).unwrap();
    for i in 0..n {
        std::fs::write(
            env.config_file(&name(i)),
            format!(
                "[role]\narn = \"arn:aws:iam::123456789012:role/{}\"\n",
                name(i)
            ),
        )
        .unwrap();
    }
}

/// Caches every session in the running daemon (`add` waits for each one's credentials).
fn load_all(env: &TestEnv) {
    let socket = env.socket();
    std::thread::scope(|scope| {
        for l in 0..LOADERS {
            let socket = &socket;
            scope.spawn(move || {
                let mut c = RawConn::connect(socket);
                for i in (l..SESSIONS).step_by(LOADERS) {
                    let reply = c.request(&frame(format!(
                        r#"{{"protocol":PV,"id":{i},"op":"add","name":"{}"}}"#,
                        name(i)
                    )));
                    assert_eq!(reply["ok"]["kind"], "added", "{reply}");
                }
            });
        }
    });
}

/// Sends one `list` request and reads every frame of its reply: (frames, sessions).
fn raw_list(c: &mut RawConn, id: u64, filters: &str) -> (usize, Vec<Value>) {
    c.send_frame(
        frame(format!(
            r#"{{"protocol":PV,"id":{id},"op":"list"{filters}}}"#
        ))
        .as_bytes(),
    );
    let mut all = Vec::new();
    // Bounded: 5,000 sessions need ~25 frames.
    for frames in 1..=1000 {
        let reply = c.read_reply(); // read_frame asserts each frame is within the 64 KiB cap
        assert_eq!(reply["id"], id, "{reply}");
        assert_eq!(reply["ok"]["kind"], "sessions", "{reply}");
        all.extend(reply["ok"]["sessions"].as_array().unwrap().iter().cloned());
        if reply["ok"].get("more").is_none() {
            return (frames, all);
        }
        assert_eq!(reply["ok"]["more"], true, "{reply}");
    }
    panic!("the list reply did not end within 1000 frames");
}

#[test]
fn five_thousand_sessions_list_through_the_protocol_and_the_cli() {
    let env = TestEnv::new();
    let sts = FakeSts::start();
    aws_env(&env, &sts.url());
    write_configs(&env);
    let _daemon = env.start_daemon_foreground(&["--capacity", "10000"]);
    load_all(&env);

    // Raw protocol: several frames, one snapshot, every session exactly once.
    let mut c = env.raw();
    let (frames, sessions) = raw_list(&mut c, 77, "");
    assert!(frames > 1, "5,000 sessions cannot fit in one frame");
    let names: BTreeSet<String> = sessions
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!((sessions.len(), names.len()), (SESSIONS, SESSIONS));
    // The connection is still in step: the next request gets its own reply.
    let pong = c.request(&frame(r#"{"protocol":PV,"id":78,"op":"ping"}"#.into()));
    assert_eq!(
        (pong["id"].as_u64(), pong["ok"]["kind"].as_str()),
        (Some(78), Some("pong"))
    );

    // Filters are applied by the daemon.
    let (_, s1) = raw_list(&mut c, 79, r#","pattern":"s1*","state":"fresh""#);
    assert_eq!(s1.len(), 1000, "s1000..s1999");
    assert!(
        s1.iter()
            .all(|s| s["name"].as_str().unwrap().starts_with("s1"))
    );
    let (_, none) = raw_list(&mut c, 80, r#","state":"failed""#);
    assert!(none.is_empty());
    let bad = c.request(&frame(
        r#"{"protocol":PV,"id":81,"op":"list","state":"sleepy"}"#.into(),
    ));
    assert_eq!(bad["error"]["code"], "bad_request", "{bad}");

    // The CLI: JSON and the table.
    let out = env.run_ok(&["daemon", "list", "--json"]);
    let listed: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(listed.len(), SESSIONS);
    let out = env.run_ok(&["daemon", "list"]);
    assert_eq!(
        stdout(&out).lines().count(),
        SESSIONS + 1,
        "a header and one row each"
    );
    let out = env.run_ok(&["daemon", "list", "s49*", "--state", "fresh", "--json"]);
    let listed: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(listed.len(), 100, "s4900..s4999");
    let out = env.run_ok(&["daemon", "list", "nomatch*"]);
    assert_contains(&stdout(&out), &["no cached session matches"]);
    let out = env.run_fail(&["daemon", "list", "--state", "sleepy"]);
    assert_contains(&stderr(&out), &["sleepy", "fresh"]);
}

/// Sessions recorded in the warm file of the re-warm tests.
const WARM: usize = 200;
/// Of those, the last `COLD` were unused for more than a day.
const COLD: usize = 20;

/// Writes the warm file as a daemon that stopped a moment ago would: `s0000` used a second
/// ago, `s0001` two seconds ago, …; the last `COLD` more than a day ago.
fn write_warm_file(env: &TestEnv) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let text: String = (0..WARM)
        .map(|i| {
            let ago = if i >= WARM - COLD { 90_000 + i } else { 1 + i };
            format!("{}\t{}\n", name(i), now - ago as u64)
        })
        .collect();
    let logs = env.home().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    chmod(&logs, 0o700);
    std::fs::write(logs.join("warm-sessions"), text).unwrap();
}

/// AssumeRole calls in any one-second window, at most.
fn peak_per_second(times: &[std::time::Instant]) -> usize {
    times
        .iter()
        .map(|s| {
            times
                .iter()
                .filter(|t| **t >= *s && **t < *s + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

fn received(sts: &FakeSts) -> Vec<std::time::Instant> {
    sts.calls_of("AssumeRole")
        .iter()
        .map(|c| c.received)
        .collect()
}

/// A re-warm of 180 sessions (plus 20 idle for over a day) against the suite's fake STS (it
/// timestamps every call; moto's log has one-second resolution): never more than rate + burst
/// calls in any second, most recently used first, the idle ones left cold; a client's first
/// fetch of a session still queued is answered before the re-warm reaches it.
#[test]
fn rewarm_goes_at_the_configured_rate_most_recently_used_first() {
    let env = TestEnv::new();
    let sts = FakeSts::start();
    aws_env(&env, &sts.url());
    write_n_configs(&env, WARM);
    write_warm_file(&env);
    env.write_settings("capacity = 1000\n[sts]\nrate = 20\nburst = 5\n");
    let _daemon = env.start_daemon_foreground(&[]);

    // A client asks for the least recently used warm session while the re-warm is under way.
    let last = name(WARM - COLD - 1);
    assert!(
        sts.wait_for(Duration::from_secs(10), |c| c.len() >= 20),
        "the re-warm did not start"
    );
    let out = env.run_ok(&["credential-process", &last]);
    let answered_after = sts.calls_of("AssumeRole").len();
    assert!(stdout(&out).contains("ASIAFAKE"), "{}", stdout(&out));
    assert!(
        answered_after < WARM - COLD,
        "the client's fetch waited for the re-warm ({answered_after} calls made first)"
    );

    // Bounded: 180 calls at 20/s take ~9 s.
    assert!(
        sts.wait_for(Duration::from_secs(60), |c| c.len() >= WARM - COLD),
        "re-warm incomplete: {} calls",
        sts.calls().len()
    );
    std::thread::sleep(Duration::from_millis(500));
    let calls = sts.calls_of("AssumeRole");
    assert_eq!(
        calls.len(),
        WARM - COLD,
        "one call per warm session, none for idle ones"
    );
    // Background calls only (the client's own call is not shaped). Arrival times at the fake
    // lag the permits by a variable few milliseconds, so a one-second window of arrivals can
    // catch one permit granted just before it: rate + burst + 1.
    let background: Vec<_> = calls
        .iter()
        .filter(|c| c.role() != Some(last.as_str()))
        .map(|c| c.received)
        .collect();
    let peak = peak_per_second(&background);
    assert!(
        peak <= 20 + 5 + 1,
        "{peak} calls within one second (rate 20, burst 5)"
    );
    let span = calls.last().unwrap().received - calls[0].received;
    assert!(
        span >= Duration::from_secs(7),
        "180 calls at 20/s took only {span:?}"
    );
    // Most recently used first (the client's own fetch jumped the queue; connections opened
    // in one burst may swap neighbours, hence a small tolerance).
    let order: Vec<usize> = calls
        .iter()
        .filter(|c| c.role() != Some(last.as_str()))
        .map(|c| c.role().unwrap()[1..].parse::<usize>().unwrap())
        .collect();
    for (pos, i) in order.iter().enumerate() {
        assert!(
            pos.abs_diff(*i) <= 5,
            "call {pos} was for s{i:04}: {order:?}"
        );
    }
    // The idle ones are not loaded: `daemon list` shows the warm ones, LRU order kept.
    let out = env.run_ok(&["daemon", "list", "--json"]);
    let listed: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(listed.len(), WARM - COLD);
    assert_eq!(
        listed[0]["name"],
        last.as_str(),
        "the client's use made it the MRU"
    );
    assert_eq!(listed[1]["name"], "s0000");
    assert!(listed.iter().all(|s| s["state"] == "fresh"));
}

/// STS answers `SlowDown` (HTTP 503) for a while during a re-warm: classified as throttling,
/// it slows the scheduler down (far below 20/s), and once STS answers again the rate climbs
/// back and every session gets its credentials.
#[test]
fn a_throttling_sts_slows_the_scheduler_and_it_recovers() {
    let env = TestEnv::new();
    let sts = FakeSts::start();
    aws_env(&env, &sts.url());
    write_n_configs(&env, WARM);
    write_warm_file(&env);
    sts.set_mode(crate::fake_sts::Mode::slow_down());
    env.write_settings("capacity = 1000\n[sts]\nrate = 20\nburst = 5\n");
    let _daemon = env.start_daemon_foreground(&[]);
    assert!(
        env.wait_for_log("slowing background calls"),
        "{}",
        env.log_text()
    );
    std::thread::sleep(Duration::from_secs(4));
    let throttled = received(&sts);
    sts.set_mode(crate::fake_sts::Mode::Ok);
    let t_ok = std::time::Instant::now();
    // Unthrottled, 4 s would be ~85 calls; the SDK itself tries each call 3 times.
    let late: Vec<_> = throttled
        .iter()
        .filter(|t| **t >= throttled[0] + Duration::from_secs(2))
        .copied()
        .collect();
    assert!(
        late.len() <= 30,
        "{} calls in the throttled seconds 2..4: not slowed down",
        late.len()
    );
    let list = env.run_ok(&["daemon", "list", "--json"]);
    assert_contains(&stdout(&list), &["SlowDown"]);
    // Recovery: every warm session fresh, bounded.
    assert!(
        wait_until(Duration::from_secs(90), || {
            let out = env.run_ok(&["daemon", "list", "--state", "fresh", "--json"]);
            serde_json::from_str::<Vec<Value>>(&stdout(&out))
                .unwrap()
                .len()
                == WARM - COLD
        }),
        "not every session recovered"
    );
    // The rate climbed back: some second after recovery saw well over the throttled rate.
    let after: Vec<_> = received(&sts).into_iter().filter(|t| *t >= t_ok).collect();
    let peak = peak_per_second(&after);
    assert!(peak >= 10, "the rate never recovered (peak {peak}/s)");
    assert!(
        peak <= 20 + 5 + 1,
        "{peak}/s after recovery exceeds rate + burst"
    );
}
