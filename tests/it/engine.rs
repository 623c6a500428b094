//! The credential engine end to end: the real binary and daemon against moto (refresh timing,
//! web identity) and against the in-test fake STS (exact call counts, delays, faults, MFA,
//! chaining, keyring). See `moto.rs` and `fake_sts.rs`.
//!
//! Timing: credentials live 6 to 20 s here so refresh-ahead, backoff and expiry happen within
//! seconds (a custom STS endpoint lifts AWS's duration limits). Every wait is a bounded poll;
//! the only sleeps let a short credential age.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::fake_sts::{FakeSts, Mode};
use crate::moto::{Moto, add_sts_config, add_toml_config, aws_env, free_port};
use crate::util::*;

/// Bound of any single CLI run in this module.
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn role(name: &str) -> String {
    format!("arn:aws:iam::123456789012:role/{name}")
}

/// Runs `cmd` with piped output, killing it (and panicking) after `limit`.
fn run_bounded(cmd: &mut Command, limit: Duration) -> (Output, Duration) {
    let (status, output, elapsed) = run_limited(cmd, limit);
    assert!(
        status.is_some(),
        "{} did not finish within {limit:?}",
        show_cmd(cmd)
    );
    (output, elapsed)
}

fn bounded_ok(cmd: &mut Command) -> Output {
    let (out, _) = run_bounded(cmd, RUN_LIMIT);
    assert!(
        out.status.success(),
        "command failed{}",
        describe(cmd, &out)
    );
    out
}

fn bounded_fail(cmd: &mut Command) -> Output {
    let (out, _) = run_bounded(cmd, RUN_LIMIT);
    assert!(
        !out.status.success() && out.status.code().is_some(),
        "command was expected to fail{}",
        describe(cmd, &out)
    );
    out
}

/// `credential-process NAME`, checked against the credential_process contract.
fn cp(env: &TestEnv, name: &str) -> Value {
    let mut cmd = env.cmd(&["credential-process", name]);
    let out = bounded_ok(&mut cmd);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}){}", describe(&cmd, &out)));
    assert_eq!(v["Version"], 1, "{v}");
    for k in ["AccessKeyId", "SecretAccessKey", "SessionToken"] {
        assert!(v[k].as_str().is_some_and(|s| !s.is_empty()), "{k} in {v}");
    }
    let exp = v["Expiration"].as_str().unwrap_or_default();
    assert!(exp.ends_with('Z'), "Expiration {exp:?}");
    parse_time(exp);
    v
}

/// `credential-process NAME` that must fail with nothing on stdout; returns stderr.
fn cp_fail(env: &TestEnv, name: &str) -> String {
    let mut cmd = env.cmd(&["credential-process", name]);
    let out = bounded_fail(&mut cmd);
    assert!(
        out.stdout.is_empty(),
        "stdout not empty{}",
        describe(&cmd, &out)
    );
    stderr(&out)
}

fn key(v: &Value) -> String {
    v["AccessKeyId"].as_str().unwrap_or_default().to_string()
}

fn parse_time(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("not RFC 3339: {s:?}: {e}"))
}

/// `daemon list --json`.
fn sessions(env: &TestEnv) -> Vec<Value> {
    let out = bounded_ok(&mut env.cmd(&["daemon", "list", "--json"]));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("daemon list --json: {e}: {}", stdout(&out)))
}

fn names(env: &TestEnv) -> Vec<String> {
    sessions(env)
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn session(env: &TestEnv, name: &str) -> Value {
    let all = sessions(env);
    all.iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("session {name} not in daemon list: {all:?}"))
}

/// A credentials request over a raw connection: the reply frame (for error codes).
fn raw_credentials(env: &TestEnv, name: &str) -> Value {
    let mut conn = env.raw();
    // STS retries (throttling, 5xx, refused connections) can take longer than util's 5 s.
    conn.stream.set_read_timeout(Some(RUN_LIMIT)).unwrap();
    conn.request(&format!(
        r#"{{"protocol":4,"id":1,"op":"credentials","name":"{name}"}}"#
    ))
}

/// Runs `elhaz ARGS…` under `script` (a pty as its controlling terminal), typing `input`.
/// `None` (after a SKIPPED-CHECK) when no pty can be allocated here.
fn run_on_pty(env: &TestEnv, args: &str, input: &[u8]) -> Option<(Command, Output)> {
    let mut cmd = env.command("script");
    cmd.args(["-qec", &format!("{} {args}", sh_quote(BIN)), "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("cannot run script");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    // Keep stdin open until the command ends: EOF would reach the pty as end of input.
    let mut status = None;
    wait_until(RUN_LIMIT, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    if stderr(&out).contains("pseudo-terminal") || stdout(&out).contains("pseudo-terminal") {
        skipped_check(&format!("no pty available for `script`: {}", stderr(&out)));
        assert_contains(&stderr(&out), &["pseudo-terminal"]);
        return None;
    }
    assert!(
        status.is_some(),
        "script did not finish within {RUN_LIMIT:?}{}",
        describe(&cmd, &out)
    );
    Some((cmd, out))
}

fn fake_env() -> (TestEnv, FakeSts) {
    let env = TestEnv::new();
    let sts = FakeSts::start();
    aws_env(&env, &sts.url());
    (env, sts)
}

#[test]
fn background_refresh_before_expiry_without_requests() {
    let env = TestEnv::new();
    let moto = Moto::start(env.root());
    aws_env(&env, &moto.url());
    add_sts_config(
        &env,
        "bg",
        &moto.url(),
        &["--role-arn", &role("bg"), "--duration", "12"],
    );

    let first = cp(&env, "bg");
    let e1 = first["Expiration"].as_str().unwrap().to_string();
    let e1_time = parse_time(&e1);
    assert_eq!(moto.wait_calls(1, DEADLINE), 1, "{}", moto.log());
    let s = session(&env, "bg");
    assert_eq!(
        (
            s["state"].as_str(),
            s["sts_calls"].as_u64(),
            s["hits"].as_u64()
        ),
        (Some("fresh"), Some(1), Some(1)),
        "{s}"
    );
    assert_eq!(s["expiration"], e1.as_str(), "{s}");
    let next = parse_time(s["next_refresh"].as_str().unwrap_or_else(|| panic!("{s}")));
    assert!(next < e1_time, "refresh scheduled after expiry: {s}");

    // No client request from here on: only `daemon list`, which never fetches.
    let started = Instant::now();
    let mut refreshed = Value::Null;
    let ok = wait_until(Duration::from_secs(25), || {
        let s = session(&env, "bg");
        let changed = s["expiration"] != e1.as_str();
        if changed {
            refreshed = s;
        } else {
            std::thread::sleep(Duration::from_millis(150));
        }
        changed
    });
    let seen_at = SystemTime::now();
    assert!(
        ok,
        "no background refresh within 25 s: {}",
        session(&env, "bg")
    );
    eprintln!(
        "background refresh seen {:?} after the first fetch",
        started.elapsed()
    );
    assert!(
        seen_at < e1_time,
        "refreshed only after the old credentials expired ({e1})"
    );
    assert_eq!(refreshed["state"], "fresh", "{refreshed}");
    assert_eq!(refreshed["sts_calls"], 2, "{refreshed}");
    assert_eq!(
        refreshed["hits"], 1,
        "a client request caused the refresh: {refreshed}"
    );
    let e2 = refreshed["expiration"].as_str().unwrap().to_string();
    assert!(parse_time(&e2) > e1_time, "{e2} not after {e1}");
    assert_eq!(moto.wait_calls(2, DEADLINE), 2, "{}", moto.log());

    let second = cp(&env, "bg");
    assert_ne!(
        key(&second),
        key(&first),
        "same credentials after the refresh"
    );
    assert_eq!(second["Expiration"], e2.as_str());
    // The read is served from memory: no STS call (give a late log line a moment to appear).
    wait_until(Duration::from_millis(500), || moto.sts_calls() > 2);
    assert_eq!(
        moto.sts_calls(),
        2,
        "the read caused an STS call:\n{}",
        moto.log()
    );
    let s = session(&env, "bg");
    assert_eq!(
        (s["sts_calls"].as_u64(), s["hits"].as_u64()),
        (Some(2), Some(2)),
        "{s}"
    );
}

#[test]
fn single_flight_for_100_concurrent_first_fetches_then_warm_reads() {
    let (env, sts) = fake_env();
    add_sts_config(&env, "sf", &sts.url(), &["--role-arn", &role("sf")]);
    let _daemon = env.start_daemon_foreground(&[]);
    // The one AssumeRole is held until every client waits on the daemon (a 1 s delay would
    // usually do; a hold makes the overlap certain).
    sts.hold_role("sf");
    let clients: Vec<_> = (0..100)
        .map(|_| {
            let mut cmd = env.cmd(&["credential-process", "sf"]);
            std::thread::spawn(move || {
                let (out, _) = run_bounded(&mut cmd, RUN_LIMIT);
                (describe(&cmd, &out), out)
            })
        })
        .collect();
    assert!(sts.wait_for(DEADLINE, |c| !c.is_empty()), "no STS call");
    let socket = env.socket();
    let waiting = match accepted_connections(&socket) {
        Some(_) => {
            wait_until(Duration::from_secs(8), || {
                accepted_connections(&socket).unwrap_or(0) >= 100
            });
            accepted_connections(&socket)
        }
        None => {
            skipped_check("/proc/net/unix is unreadable: cannot count waiting clients");
            std::thread::sleep(Duration::from_secs(1));
            None
        }
    };
    eprintln!("clients waiting on the daemon while STS was held: {waiting:?}");
    sts.release("sf");
    let mut keys = std::collections::BTreeSet::new();
    for c in clients {
        let (report, out) = c.join().unwrap();
        assert!(out.status.success(), "a concurrent client failed{report}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        keys.insert(key(&v));
    }
    if let Some(n) = waiting {
        assert!(
            n >= 100,
            "only {n} clients were waiting during the STS call"
        );
    }
    assert_eq!(sts.calls_of("AssumeRole").len(), 1, "{:?}", sts.calls());
    assert_eq!(keys.len(), 1, "clients got different credentials: {keys:?}");
    let the_key = keys.into_iter().next().unwrap();

    // 1,000 warm reads over the socket, then 100 CLI runs (4 at a time): no STS call.
    let t0 = Instant::now();
    let mut conn = env.raw();
    for id in 1..=1000 {
        let r = conn.request(&format!(
            r#"{{"protocol":4,"id":{id},"op":"credentials","name":"sf"}}"#
        ));
        assert_eq!(r["ok"]["access_key_id"], the_key.as_str(), "{r}");
    }
    let raw_time = t0.elapsed();
    let t0 = Instant::now();
    let pool: Vec<_> = (0..4)
        .map(|_| {
            let cmds: Vec<Command> = (0..25)
                .map(|_| env.cmd(&["credential-process", "sf"]))
                .collect();
            std::thread::spawn(move || {
                cmds.into_iter()
                    .map(|mut c| {
                        let (out, _) = run_bounded(&mut c, RUN_LIMIT);
                        assert!(out.status.success(), "{}", describe(&c, &out));
                        key(&serde_json::from_slice(&out.stdout).unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in pool {
        assert!(t.join().unwrap().iter().all(|k| *k == the_key));
    }
    eprintln!(
        "warm reads: 1000 over one socket in {raw_time:?}, 100 credential-process runs in {:?}",
        t0.elapsed()
    );
    assert_eq!(
        sts.calls().len(),
        1,
        "warm reads called STS: {:?}",
        sts.calls()
    );
    let s = session(&env, "sf");
    assert_eq!(
        (s["sts_calls"].as_u64(), s["hits"].as_u64()),
        (Some(1), Some(1200)),
        "{s}"
    );
}

#[test]
fn a_slow_sts_call_does_not_delay_reads_of_another_session() {
    let (env, sts) = fake_env();
    add_sts_config(&env, "fast", &sts.url(), &["--role-arn", &role("fast")]);
    add_sts_config(&env, "slow", &sts.url(), &["--role-arn", &role("slow")]);
    sts.delay_role("slow", Duration::from_secs(4));
    let first = cp(&env, "fast");

    let mut slow_cmd = env.cmd(&["credential-process", "slow"]);
    let slow = std::thread::spawn(move || {
        let (out, took) = run_bounded(&mut slow_cmd, RUN_LIMIT);
        (describe(&slow_cmd, &out), out, took)
    });
    assert!(
        sts.wait_for(DEADLINE, |c| c.iter().any(|c| c.role() == Some("slow"))),
        "the slow fetch never reached STS"
    );
    let mut lat = Vec::new();
    let mut ends = Vec::new();
    for _ in 0..50 {
        let t0 = Instant::now();
        let v = cp(&env, "fast");
        lat.push(t0.elapsed());
        ends.push(Instant::now());
        assert_eq!(key(&v), key(&first));
    }
    let (report, out, took) = slow.join().unwrap();
    assert!(out.status.success(), "{report}");
    let slow_call = &sts.assume_role_calls("slow")[0];
    let replied = slow_call.replied.expect("the slow call was answered");
    // Reads that finished before STS answered the slow call.
    let during = ends.iter().filter(|e| **e < replied).count();
    let mut sorted = lat.clone();
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "reads of cached `fast` during a 4 s STS call for `slow`: min {:.1} ms, median {:.1} ms, \
         max {:.1} ms, mean {:.1} ms; ~{during} of 50 finished while the slow call was pending; \
         the slow fetch took {took:?}",
        ms(sorted[0]),
        ms(sorted[25]),
        ms(sorted[49]),
        ms(lat.iter().sum::<Duration>() / 50),
    );
    assert!(
        ms(sorted[49]) < 500.0,
        "a cached read took {:?}",
        sorted[49]
    );
    assert!(
        ends[0] < replied,
        "the first cached read waited for the slow call"
    );
    assert!(
        took >= Duration::from_millis(3500),
        "the delay was not applied ({took:?})"
    );
    assert_eq!(sts.assume_role_calls("fast").len(), 1);
    assert_eq!(sts.assume_role_calls("slow").len(), 1);
}

#[test]
fn lru_eviction_readd_remove_and_add() {
    let (env, sts) = fake_env();
    for n in ["a", "b", "c"] {
        add_sts_config(&env, n, &sts.url(), &["--role-arn", &role(n)]);
    }
    let _daemon = env.start_daemon_foreground(&["--capacity", "2"]);
    let a1 = cp(&env, "a");
    cp(&env, "b");
    cp(&env, "c");
    assert_eq!(names(&env), ["c", "b"]);
    let st = env.status_json();
    assert_eq!(
        (st["sessions"].as_u64(), st["capacity"].as_u64()),
        (Some(2), Some(2)),
        "{st}"
    );
    let evicted = |who: &str| {
        let needle = format!("session={who}");
        env.log_text()
            .lines()
            .any(|l| l.contains("session evicted") && l.contains(&needle))
    };
    assert!(
        wait_until(DEADLINE, || evicted("a")),
        "no eviction of a in the log:\n{}",
        env.log_text()
    );
    assert!(!evicted("b"));

    // Re-adding a works (a new STS call) and evicts the least recently used, b.
    let a2 = cp(&env, "a");
    assert_ne!(key(&a1), key(&a2), "evicted credentials were kept");
    assert_eq!(sts.assume_role_calls("a").len(), 2);
    assert_eq!(names(&env), ["a", "c"]);
    assert!(
        wait_until(DEADLINE, || evicted("b")),
        "no eviction of b:\n{}",
        env.log_text()
    );

    let out = bounded_ok(&mut env.cmd(&["daemon", "remove", "a"]));
    assert_contains(&stdout(&out), &["evicted"]);
    assert_eq!(names(&env), ["c"]);
    let out = bounded_ok(&mut env.cmd(&["daemon", "remove", "a"]));
    assert_contains(&stdout(&out), &["not cached"]);

    bounded_ok(&mut env.cmd(&["daemon", "add", "b"]));
    assert_eq!(names(&env), ["b", "c"]);
    let b = session(&env, "b");
    assert_eq!(b["state"], "fresh", "{b}");
    assert!(b["expiration"].is_string(), "add did not warm b: {b}");
    assert_eq!(sts.assume_role_calls("b").len(), 2);
    // The warmed credentials are served without another call.
    cp(&env, "b");
    assert_eq!(sts.assume_role_calls("b").len(), 2);
    assert_eq!(sts.assume_role_calls("c").len(), 1);
}

#[test]
fn chaining_uses_source_credentials_caps_duration_and_refuses_loops() {
    let (env, sts) = fake_env();
    let url = sts.url();
    add_sts_config(
        &env,
        "base",
        &url,
        &["--role-arn", &role("A"), "--duration", "5400"],
    );
    add_sts_config(
        &env,
        "child",
        &url,
        &[
            "--source-session",
            "base",
            "--role-arn",
            &role("B"),
            "--duration",
            "7200",
        ],
    );
    let child = cp(&env, "child");
    let calls = sts.calls_of("AssumeRole");
    assert_eq!(calls.len(), 2, "{calls:?}");
    let (a, b) = (&calls[0], &calls[1]);
    assert_eq!(a.role(), Some("A"));
    assert_eq!(
        a.access_key.as_deref(),
        Some("testing"),
        "base used the default keys"
    );
    assert_eq!(a.param("DurationSeconds"), Some("5400"));
    assert_eq!(b.role(), Some("B"));
    assert_eq!(
        b.access_key, a.issued,
        "child's AssumeRole was not signed with base's credentials"
    );
    assert_eq!(
        b.param("DurationSeconds"),
        Some("3600"),
        "chained duration not capped"
    );
    assert_eq!(Some(key(&child)), b.issued);
    // base is cached: the same credentials child was assumed with, no new call.
    assert_eq!(Some(key(&cp(&env, "base"))), a.issued);
    assert_eq!(sts.calls_of("AssumeRole").len(), 2);

    let out = bounded_ok(&mut env.cmd(&["whoami", "child", "--json"]));
    let id: Value = serde_json::from_slice(&out.stdout).unwrap();
    let arn = id["arn"].as_str().unwrap_or_default();
    assert!(
        arn.starts_with("arn:aws:sts::123456789012:assumed-role/B/"),
        "{id}"
    );
    assert_eq!(id["account"], "123456789012", "{id}");
    let gci = sts.calls_of("GetCallerIdentity");
    assert_eq!(
        gci.last().and_then(|c| c.access_key.clone()),
        Some(key(&child))
    );

    let s = session(&env, "child");
    assert_eq!(s["source"], "session", "{s}");
    let warning = s["warning"].as_str().unwrap_or_default();
    assert_contains(warning, &["capped", "1h"]);

    // A loop is refused at once, with no STS call.
    add_sts_config(
        &env,
        "x",
        &url,
        &["--source-session", "y", "--role-arn", &role("X")],
    );
    add_sts_config(
        &env,
        "y",
        &url,
        &["--source-session", "x", "--role-arn", &role("Y")],
    );
    let before = sts.calls().len();
    let (out, took) = run_bounded(
        &mut env.cmd(&["credential-process", "x"]),
        Duration::from_secs(15),
    );
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "{}",
        stderr(&out)
    );
    assert_contains(&stderr(&out), &["loops", "x → y → x"]);
    eprintln!("chain loop refused in {took:?}");
    assert_eq!(
        raw_credentials(&env, "y")["error"]["code"],
        "invalid_config"
    );
    assert_eq!(sts.calls().len(), before, "a looping chain called STS");
}

fn mfa_toml(url: &str, role_name: &str, serial: &str, command: &str) -> String {
    format!(
        "[role]\narn = \"{}\"\n\n[mfa]\nserial = \"{serial}\"\ncommand = [\"sh\", \"-c\", \"{command}\"]\n\n\
         [sts]\nendpoint_url = \"{url}\"\n",
        role(role_name)
    )
}

#[test]
fn mfa_command_creates_a_shared_mfa_session_and_bad_codes_fail() {
    let (env, sts) = fake_env();
    let url = sts.url();
    let serial = "arn:aws:iam::123456789012:mfa/tester";
    add_toml_config(&env, "m1", &mfa_toml(&url, "mfa1", serial, "echo 123456"));
    add_toml_config(&env, "m2", &mfa_toml(&url, "mfa2", serial, "echo 999999"));

    let c1 = cp(&env, "m1");
    let gst = sts.calls_of("GetSessionToken");
    assert_eq!(gst.len(), 1, "{:?}", sts.calls());
    assert_eq!(gst[0].param("SerialNumber"), Some(serial));
    assert_eq!(gst[0].param("TokenCode"), Some("123456"));
    assert_eq!(gst[0].access_key.as_deref(), Some("testing"));
    let mfa_key = gst[0].issued.clone().expect("GetSessionToken issued keys");
    let ar = sts.assume_role_calls("mfa1");
    assert_eq!(ar.len(), 1);
    assert_eq!(
        ar[0].access_key.as_ref(),
        Some(&mfa_key),
        "role not assumed from the MFA session"
    );
    assert_eq!(ar[0].issued, Some(key(&c1)));

    // Same serial and source: the MFA session is reused (m2's command is never run).
    cp(&env, "m2");
    assert_eq!(
        sts.calls_of("GetSessionToken").len(),
        1,
        "{:?}",
        sts.calls()
    );
    let ar2 = sts.assume_role_calls("mfa2");
    assert_eq!(ar2.len(), 1);
    assert_eq!(ar2[0].access_key.as_ref(), Some(&mfa_key));

    // Same serial and source against another STS endpoint: that endpoint's own MFA session
    // (a token from one STS means nothing to another).
    let sts2 = FakeSts::start();
    add_toml_config(
        &env,
        "m5",
        &mfa_toml(&sts2.url(), "mfa5", serial, "echo 654321"),
    );
    cp(&env, "m5");
    let gst2 = sts2.calls_of("GetSessionToken");
    assert_eq!(gst2.len(), 1, "{:?}", sts2.calls());
    assert_eq!(gst2[0].param("TokenCode"), Some("654321"));
    let ar5 = sts2.assume_role_calls("mfa5");
    assert_eq!(ar5.len(), 1);
    assert_eq!(ar5[0].access_key, gst2[0].issued, "{:?}", sts2.calls());

    // A command printing garbage, and one that fails: mfa_failed, no STS call.
    let other = "arn:aws:iam::123456789012:mfa/other";
    add_toml_config(&env, "m3", &mfa_toml(&url, "mfa3", other, "echo garbage"));
    let err = cp_fail(&env, "m3");
    assert_contains(&err, &["did not print a 6-digit code"]);
    let r = raw_credentials(&env, "m3");
    assert_eq!(r["error"]["code"], "mfa_failed", "{r}");
    let third = "arn:aws:iam::123456789012:mfa/third";
    add_toml_config(
        &env,
        "m4",
        &mfa_toml(&url, "mfa4", third, "echo no-token-here >&2; exit 3"),
    );
    let err = cp_fail(&env, "m4");
    assert_contains(&err, &["MFA command", "no-token-here"]);
    assert_eq!(raw_credentials(&env, "m4")["error"]["code"], "mfa_failed");
    assert_eq!(
        sts.calls_of("GetSessionToken").len(),
        1,
        "{:?}",
        sts.calls()
    );
    assert!(sts.assume_role_calls("mfa3").is_empty() && sts.assume_role_calls("mfa4").is_empty());
}

#[test]
fn mfa_prompt_on_the_terminal_and_a_clear_error_without_one() {
    let (env, sts) = fake_env();
    let serial = "arn:aws:iam::123456789012:mfa/pty-user";
    add_sts_config(
        &env,
        "p1",
        &sts.url(),
        &["--role-arn", &role("pty"), "--mfa-serial", serial],
    );
    let _daemon = env.start_daemon_foreground(&[]);

    // No controlling terminal (new session, stdin null): a clear error naming the serial.
    let mut cmd = env.command("setsid");
    cmd.args(["-w", BIN, "credential-process", "p1"]);
    let out = bounded_fail(&mut cmd);
    assert!(out.stdout.is_empty(), "{}", describe(&cmd, &out));
    assert_contains(&stderr(&out), &[serial, "no terminal", "[mfa] command"]);
    assert!(sts.calls().is_empty(), "{:?}", sts.calls());

    // On a pty (script's stdin feeds it), the code typed is used.
    let Some((cmd, out)) = run_on_pty(&env, "credential-process p1", b"654321\n") else {
        return;
    };
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "script run failed{}",
        describe(&cmd, &out)
    );
    assert_contains(
        &text,
        &[
            &format!("MFA code for {serial}"),
            "\"AccessKeyId\":\"ASIAFAKE",
        ],
    );
    let gst = sts.calls_of("GetSessionToken");
    assert_eq!(gst.len(), 1, "{:?}", sts.calls());
    assert_eq!(gst[0].param("TokenCode"), Some("654321"));
    assert_eq!(gst[0].param("SerialNumber"), Some(serial));
    let ar = sts.assume_role_calls("pty");
    assert_eq!(ar.len(), 1);
    assert_eq!(ar[0].access_key, gst[0].issued);
    assert!(text.contains(ar[0].issued.as_deref().unwrap()), "{text}");
    // Now cached: no terminal needed any more.
    let again = cp(&env, "p1");
    assert_eq!(Some(key(&again)), ar[0].issued);
}

#[test]
fn web_identity_with_moto() {
    let env = TestEnv::new();
    let moto = Moto::start(env.root());
    aws_env(&env, &moto.url());
    let token = env.write_scratch("token.jwt", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ0ZXN0In0.\n");
    let url = moto.url();
    let tok = token.to_str().unwrap();
    add_sts_config(
        &env,
        "wi",
        &url,
        &[
            "--web-identity-token-file",
            tok,
            "--role-arn",
            &role("webrole"),
        ],
    );
    let out = bounded_ok(&mut env.cmd(&["whoami", "wi", "--json"]));
    let id: Value = serde_json::from_slice(&out.stdout).unwrap();
    let arn = id["arn"].as_str().unwrap_or_default();
    assert!(
        arn.starts_with("arn:aws:sts::123456789012:assumed-role/webrole/"),
        "{id}"
    );
    assert_eq!(session(&env, "wi")["source"], "web_identity");
    assert!(moto.wait_calls(2, DEADLINE) >= 2, "{}", moto.log());

    let missing = env.scratch("missing-token.jwt");
    let m = missing.to_str().unwrap();
    add_sts_config(
        &env,
        "wi-missing",
        &url,
        &[
            "--web-identity-token-file",
            m,
            "--role-arn",
            &role("webrole"),
        ],
    );
    let err = cp_fail(&env, "wi-missing");
    assert_contains(&err, &["web identity token", m]);
    let r = raw_credentials(&env, "wi-missing");
    assert_eq!(r["error"]["code"], "source_error", "{r}");
}

/// Removes a keyring entry on drop (the keyutils store is per user, not per test).
struct KeyringEntry<'a>(&'a TestEnv, String);

impl Drop for KeyringEntry<'_> {
    fn drop(&mut self) {
        let _ = self.0.cmd(&["keyring", "remove", &self.1]).output();
    }
}

#[test]
fn keyring_source_with_the_kernel_keyutils_store() {
    let (env, sts) = fake_env();
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let entry = format!("elhaz-it-{}-{nanos}", std::process::id());
    let (_cmd, out) = env.run_stdin(
        &["keyring", "set", &entry],
        b"AKIAIOSFODNN7EXAMPLE\nsecret\n",
    );
    if !out.status.success() {
        skipped_check(&format!(
            "the OS keyring is not usable here: {}",
            stderr(&out).trim()
        ));
        assert_contains(&stderr(&out).to_lowercase(), &["keyring"]);
        return;
    }
    let _cleanup = KeyringEntry(&env, entry.clone());
    assert_contains(&stdout(&out), &[&entry]);
    let out = bounded_ok(&mut env.cmd(&["keyring", "list", "--json"]));
    let listed: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(listed.contains(&entry), "{listed:?}");

    add_sts_config(
        &env,
        "kr",
        &sts.url(),
        &["--keyring", &entry, "--role-arn", &role("kr")],
    );
    let creds = cp(&env, "kr");
    let ar = sts.assume_role_calls("kr");
    assert_eq!(ar.len(), 1);
    assert_eq!(
        ar[0].access_key.as_deref(),
        Some("AKIAIOSFODNN7EXAMPLE"),
        "the call was not signed with the stored keys"
    );
    assert_eq!(ar[0].issued, Some(key(&creds)));
    assert_eq!(session(&env, "kr")["source"], "keyring");

    let out = bounded_ok(&mut env.cmd(&["keyring", "remove", &entry]));
    assert_contains(&stdout(&out), &["removed"]);
    let out = bounded_ok(&mut env.cmd(&["keyring", "list", "--json"]));
    let listed: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!listed.contains(&entry), "{listed:?}");
    // A new session on the removed entry fails with a source error naming the fix.
    add_sts_config(
        &env,
        "kr2",
        &sts.url(),
        &["--keyring", &entry, "--role-arn", &role("kr2")],
    );
    let err = cp_fail(&env, "kr2");
    assert_contains(&err, &["no keyring entry", &entry, "elhaz keyring set"]);
    assert_eq!(
        raw_credentials(&env, "kr2")["error"]["code"],
        "source_error"
    );
    assert!(sts.assume_role_calls("kr2").is_empty());
}

#[test]
fn a_failing_refresh_keeps_serving_valid_credentials_then_recovers() {
    let (env, sts) = fake_env();
    sts.set_lifetime(Duration::from_secs(20));
    add_sts_config(&env, "rf", &sts.url(), &["--role-arn", &role("rf")]);
    let first = cp(&env, "rf");
    let e1 = first["Expiration"].as_str().unwrap().to_string();
    let e1_time = parse_time(&e1);
    sts.set_mode(Mode::unavailable());

    // Past the refresh point (~2/3 of the lifetime) the refresh fails; the session is stale.
    let mut stale = Value::Null;
    let ok = wait_until(Duration::from_secs(18), || {
        let s = session(&env, "rf");
        let hit = s["state"] == "stale";
        if hit {
            stale = s;
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
        hit
    });
    assert!(ok, "never stale: {} {:?}", session(&env, "rf"), sts.calls());
    assert!(SystemTime::now() < e1_time);
    assert_contains(
        stale["last_error"].as_str().unwrap_or_default(),
        &["ServiceUnavailable", "fake STS is down for maintenance"],
    );
    let next = parse_time(
        stale["next_refresh"]
            .as_str()
            .unwrap_or_else(|| panic!("no backoff: {stale}")),
    );
    assert!(
        next < e1_time,
        "the retry is scheduled after expiry: {stale}"
    );
    assert_eq!(stale["expiration"], e1.as_str());

    // Still valid: served at once, unchanged.
    let t0 = Instant::now();
    let served = cp(&env, "rf");
    let took = t0.elapsed();
    eprintln!(
        "stale-but-valid read took {took:?}; failed STS calls so far: {}",
        sts.calls().len() - 1
    );
    assert_eq!(key(&served), key(&first));
    assert_eq!(served["Expiration"], e1.as_str());
    assert!(
        took < Duration::from_secs(2),
        "the read waited for STS: {took:?}"
    );
    let hits = session(&env, "rf")["hits"].as_u64();

    // STS recovers: the daemon's own retry picks it up, no client request needed.
    sts.set_mode(Mode::Ok);
    let mut fresh = Value::Null;
    let ok = wait_until(Duration::from_secs(15), || {
        let s = session(&env, "rf");
        let hit = s["state"] == "fresh" && s["expiration"] != e1.as_str();
        if hit {
            fresh = s;
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
        hit
    });
    assert!(ok, "no recovery: {}", session(&env, "rf"));
    assert!(SystemTime::now() < e1_time, "recovered only after expiry");
    assert!(
        fresh.get("last_error").is_none_or(|v| v.is_null()),
        "{fresh}"
    );
    assert_eq!(
        fresh["hits"].as_u64(),
        hits,
        "a client request forced the recovery"
    );
    let again = cp(&env, "rf");
    assert_ne!(key(&again), key(&first));
    assert_eq!(again["Expiration"], fresh["expiration"]);
    assert_eq!(
        sts.assume_role_calls("rf")
            .iter()
            .filter(|c| c.issued.is_some())
            .count(),
        2
    );
}

#[test]
fn expired_credentials_are_never_served() {
    let (env, sts) = fake_env();
    sts.set_lifetime(Duration::from_secs(6));
    add_sts_config(&env, "ex", &sts.url(), &["--role-arn", &role("ex")]);
    let first = cp(&env, "ex");
    let fetched = Instant::now();
    let exp = parse_time(first["Expiration"].as_str().unwrap());
    sts.set_mode(Mode::throttling());
    // Let the credentials expire (bounded: they live at most 6 s).
    std::thread::sleep(Duration::from_millis(6500).saturating_sub(fetched.elapsed()));
    assert!(SystemTime::now() > exp);
    let err = cp_fail(&env, "ex");
    assert_contains(&err, &["Throttling", "Rate exceeded (fake STS)"]);
    assert!(!err.contains(&key(&first)), "{err}");
    let r = raw_credentials(&env, "ex");
    assert_eq!(r["error"]["code"], "throttled", "{r}");
    let s = session(&env, "ex");
    assert_ne!(s["state"], "fresh", "{s}");
    assert_ne!(s["state"], "stale", "{s}");
}

#[test]
fn access_denied_is_reported_with_sts_code_and_message() {
    let (env, sts) = fake_env();
    sts.set_mode(Mode::access_denied());
    add_sts_config(&env, "den", &sts.url(), &["--role-arn", &role("den")]);
    let err = cp_fail(&env, "den");
    assert_contains(
        &err,
        &[
            "AccessDenied",
            "is not authorized to perform: sts:AssumeRole (fake STS)",
        ],
    );
    let r = raw_credentials(&env, "den");
    assert_eq!(r["error"]["code"], "access_denied", "{r}");
    assert_eq!(session(&env, "den")["state"], "failed");
}

#[test]
fn expired_token_is_reported_as_invalid_credentials() {
    let (env, sts) = fake_env();
    sts.set_mode(Mode::expired_token());
    add_sts_config(&env, "tok", &sts.url(), &["--role-arn", &role("tok")]);
    let err = cp_fail(&env, "tok");
    assert_contains(
        &err,
        &[
            "ExpiredToken",
            "security token included in the request is expired",
        ],
    );
    let r = raw_credentials(&env, "tok");
    assert_eq!(r["error"]["code"], "invalid_credentials", "{r}");
}

#[test]
fn an_unreachable_sts_is_reported_promptly() {
    let env = TestEnv::new();
    let closed = format!("http://127.0.0.1:{}", free_port());
    aws_env(&env, &closed);
    add_sts_config(&env, "down", &closed, &["--role-arn", &role("down")]);
    let mut cmd = env.cmd(&["credential-process", "down"]);
    let (out, took) = run_bounded(&mut cmd, Duration::from_secs(30));
    eprintln!("unreachable STS reported after {took:?}");
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "{}",
        describe(&cmd, &out)
    );
    assert_contains(&stderr(&out), &["cannot reach STS"]);
    let r = raw_credentials(&env, "down");
    assert_eq!(r["error"]["code"], "unavailable", "{r}");
}

#[test]
fn a_hanging_sts_times_out_instead_of_hanging_the_client() {
    let (env, sts) = fake_env();
    sts.set_mode(Mode::Hang);
    add_sts_config(&env, "hang", &sts.url(), &["--role-arn", &role("hang")]);
    let mut cmd = env.cmd(&["credential-process", "hang"]);
    let (out, took) = run_bounded(&mut cmd, Duration::from_secs(50));
    eprintln!(
        "hanging STS reported after {took:?} ({} attempts)",
        sts.calls().len()
    );
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "{}",
        describe(&cmd, &out)
    );
    assert_contains(&stderr(&out), &["timed out"]);
    assert!(!sts.calls().is_empty());
}

#[test]
fn mfa_prompt_for_the_source_session_of_a_chain() {
    let (env, sts) = fake_env();
    let url = sts.url();
    let serial = "arn:aws:iam::123456789012:mfa/chain-user";
    add_sts_config(
        &env,
        "mbase",
        &url,
        &["--role-arn", &role("mbase"), "--mfa-serial", serial],
    );
    add_sts_config(
        &env,
        "mchild",
        &url,
        &["--source-session", "mbase", "--role-arn", &role("mchild")],
    );
    let _daemon = env.start_daemon_foreground(&[]);
    // The child itself has no MFA: the prompt is for its source's device, and the code typed
    // reaches the source session.
    let Some((cmd, out)) = run_on_pty(&env, "credential-process mchild", b"112233\n") else {
        return;
    };
    assert!(
        out.status.success(),
        "chained MFA prompt failed{}",
        describe(&cmd, &out)
    );
    let text = stdout(&out);
    assert_contains(
        &text,
        &[
            &format!("MFA code for {serial}"),
            "\"AccessKeyId\":\"ASIAFAKE",
        ],
    );
    let gst = sts.calls_of("GetSessionToken");
    assert_eq!(gst.len(), 1, "{:?}", sts.calls());
    assert_eq!(gst[0].param("TokenCode"), Some("112233"));
    let base = sts.assume_role_calls("mbase");
    let child = sts.assume_role_calls("mchild");
    assert_eq!((base.len(), child.len()), (1, 1), "{:?}", sts.calls());
    assert_eq!(base[0].access_key, gst[0].issued);
    assert_eq!(child[0].access_key, base[0].issued);
    assert!(text.contains(child[0].issued.as_deref().unwrap()), "{text}");
}

#[test]
fn a_slow_sts_answer_does_not_extend_the_credentials_deadline() {
    // STS answers 4 s after the request with 6 s credentials: they expire 6 s after the
    // answer, not 6 s after "answer + lifetime measured from the request".
    let (env, sts) = fake_env();
    sts.set_lifetime(Duration::from_secs(6));
    sts.delay_role("late", Duration::from_secs(4));
    add_sts_config(&env, "late", &sts.url(), &["--role-arn", &role("late")]);
    let first = cp(&env, "late");
    let exp = parse_time(first["Expiration"].as_str().unwrap());
    sts.set_mode(Mode::access_denied());
    sts.delay_role("late", Duration::ZERO);
    // Past the real expiry (bounded: at most 6 s from now), nothing may be served.
    let wait = exp
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .min(Duration::from_secs(7))
        + Duration::from_millis(700);
    std::thread::sleep(wait);
    let mut cmd = env.cmd(&["credential-process", "late"]);
    let (out, _) = run_bounded(&mut cmd, RUN_LIMIT);
    let now = SystemTime::now();
    if out.status.success() {
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        panic!(
            "served credentials that expired at {} at {} (same key as before: {})",
            v["Expiration"],
            humantime::format_rfc3339_millis(now),
            key(&v) == key(&first)
        );
    }
    assert!(out.stdout.is_empty());
    assert_contains(&stderr(&out), &["AccessDenied"]);
}

#[test]
fn assume_role_and_session_token_parameters_reach_sts() {
    let (env, sts) = fake_env();
    let url = sts.url();
    let policy = r#"{"Version":"2012-10-17","Statement":[]}"#;
    let managed = "arn:aws:iam::aws:policy/ReadOnlyAccess";
    let own = "arn:aws:iam::123456789012:policy/Extra";
    add_sts_config(
        &env,
        "params",
        &url,
        &[
            "--role-arn",
            &role("P"),
            "--session-name",
            "ci-run",
            "--external-id",
            "ext-123",
            "--policy-arn",
            managed,
            "--policy-arn",
            own,
            "--tag",
            "team=core",
            "--tag",
            "env=test",
            "--transitive-tag-key",
            "team",
            "--source-identity",
            "alice",
            "--policy",
            policy,
            "--region",
            "eu-west-1",
            "--duration",
            "1800",
        ],
    );
    let creds = cp(&env, "params");
    assert_eq!(creds["AccountId"], "123456789012", "{creds}");
    let calls = sts.assume_role_calls("P");
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    for (k, v) in [
        ("RoleArn", role("P").as_str()),
        ("RoleSessionName", "ci-run"),
        ("ExternalId", "ext-123"),
        ("DurationSeconds", "1800"),
        ("PolicyArns.member.1.arn", managed),
        ("PolicyArns.member.2.arn", own),
        ("Tags.member.1.Key", "env"),
        ("Tags.member.1.Value", "test"),
        ("Tags.member.2.Key", "team"),
        ("Tags.member.2.Value", "core"),
        ("TransitiveTagKeys.member.1", "team"),
        ("SourceIdentity", "alice"),
        ("Policy", policy),
        ("Version", "2011-06-15"),
    ] {
        assert_eq!(c.param(k), Some(v), "{k} in {:?}", c.params);
    }
    let scope = c.scope.as_deref().unwrap_or_default();
    assert!(
        scope.contains("/eu-west-1/sts/aws4_request"),
        "signed for the wrong region: {scope}"
    );

    // Defaults: RoleSessionName elhaz-<user>; without a role, GetSessionToken.
    add_sts_config(&env, "plain", &url, &["--role-arn", &role("plain")]);
    cp(&env, "plain");
    let plain = &sts.assume_role_calls("plain")[0];
    assert!(
        plain
            .param("RoleSessionName")
            .is_some_and(|n| n.starts_with("elhaz-")),
        "{:?}",
        plain.params
    );
    assert_eq!(plain.param("DurationSeconds"), Some("3600"));
    assert!(
        plain
            .scope
            .as_deref()
            .unwrap_or_default()
            .contains("/us-east-1/")
    );

    add_sts_config(&env, "gst", &url, &["--duration", "1000"]);
    let g = cp(&env, "gst");
    let gst = sts.calls_of("GetSessionToken");
    assert_eq!(gst.len(), 1, "{:?}", sts.calls());
    assert_eq!(gst[0].param("DurationSeconds"), Some("1000"));
    assert_eq!(gst[0].param("SerialNumber"), None);
    assert_eq!(gst[0].access_key.as_deref(), Some("testing"));
    assert_eq!(gst[0].issued, Some(key(&g)));
    let out = bounded_ok(&mut env.cmd(&["whoami", "gst", "--json"]));
    let id: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(id["arn"], crate::fake_sts::BASE_ARN, "{id}");
    assert_eq!(id["user_id"], key(&g).as_str(), "{id}");
}

#[test]
fn web_identity_token_is_reread_at_each_refresh() {
    let (env, sts) = fake_env();
    sts.set_lifetime(Duration::from_secs(6));
    let token = env.write_scratch("rotating.jwt", "token-one\n");
    let tok = token.to_str().unwrap();
    add_sts_config(
        &env,
        "rot",
        &sts.url(),
        &["--web-identity-token-file", tok, "--role-arn", &role("rot")],
    );
    let first = cp(&env, "rot");
    let calls = sts.calls_of("AssumeRoleWithWebIdentity");
    assert_eq!(calls.len(), 1, "{:?}", sts.calls());
    assert_eq!(calls[0].param("WebIdentityToken"), Some("token-one"));
    assert_eq!(calls[0].role(), Some("rot"));
    assert_eq!(
        calls[0].access_key, None,
        "AssumeRoleWithWebIdentity is not signed"
    );
    assert_eq!(calls[0].issued, Some(key(&first)));
    // The token rotates; the background refresh (at ~2/3 of 6 s) sends the new one.
    env.write_scratch("rotating.jwt", "token-two\n");
    assert!(
        sts.wait_for(Duration::from_secs(10), |c| c.len() >= 2),
        "no background refresh: {:?}",
        sts.calls()
    );
    let calls = sts.calls_of("AssumeRoleWithWebIdentity");
    assert_eq!(calls[1].param("WebIdentityToken"), Some("token-two"));
    assert_eq!(session(&env, "rot")["hits"], 1);
}

/// A restart keeps configs and re-warms the sessions that were cached (names only are
/// recorded; `rewarm = false` turns it off).
#[test]
fn restart_rewarms_cached_sessions_from_their_names() {
    let (env, sts) = fake_env();
    for n in ["a", "b"] {
        add_sts_config(&env, n, &sts.url(), &["--role-arn", &role(n)]);
        cp(&env, n);
    }
    env.run_ok(&["daemon", "stop"]);
    let warm = std::fs::read_to_string(env.home().join("logs/warm-sessions")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let lines: Vec<(&str, u64)> = warm
        .lines()
        .map(|l| {
            let (name, used) = l.split_once('\t').expect("NAME<TAB>LAST_USED");
            (name, used.parse().expect("Unix seconds"))
        })
        .collect();
    assert_eq!(
        lines.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec!["b", "a"],
        "names, MRU first"
    );
    assert!(
        lines.iter().all(|(_, t)| now.abs_diff(*t) < 120),
        "last use recorded: {warm}"
    );
    assert!(!warm.contains("ASIA"), "no credential is recorded");
    let _d = env.start_daemon_detached(&[]);
    assert!(
        wait_until(Duration::from_secs(15), || {
            let s = sessions(&env);
            s.len() == 2 && s.iter().all(|x| x["state"] == "fresh")
        }),
        "sessions were not re-warmed: {:?}",
        sessions(&env)
    );
    assert_eq!(
        names(&env),
        vec!["b".to_string(), "a".to_string()],
        "LRU order kept"
    );

    env.run_ok(&["daemon", "stop"]);
    env.write_settings("rewarm = false\n");
    let _d = env.start_daemon_detached(&[]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        sessions(&env).is_empty(),
        "rewarm = false keeps the cache empty"
    );
}

/// `profile = "P"` sources: a profile with static keys, and a `credential_process` profile —
/// the role is assumed with what the profile provides (checked by the key that signed the
/// AssumeRole at the fake STS).
#[test]
fn profile_sources_static_keys_and_credential_process() {
    let (env, sts) = fake_env();
    let script = env.write_scratch(
        "provide.sh",
        "#!/bin/sh\nprintf '%s' '{\"Version\":1,\"AccessKeyId\":\"AKIAPROCESS000000001\",\"SecretAccessKey\":\"x\"}'\n",
    );
    chmod(&script, 0o755);
    let cfg = env.write_scratch(
        "aws-config-sources",
        format!(
            "[profile keys]\naws_access_key_id = AKIAPROFILEKEYS00001\naws_secret_access_key = s\n\n\
             [profile proc]\ncredential_process = {}\n",
            script.display()
        ),
    );
    env.set_env("AWS_CONFIG_FILE", &cfg);
    add_sts_config(
        &env,
        "viakeys",
        &sts.url(),
        &["--source-profile", "keys", "--role-arn", &role("a")],
    );
    add_sts_config(
        &env,
        "viaproc",
        &sts.url(),
        &["--source-profile", "proc", "--role-arn", &role("b")],
    );
    cp(&env, "viakeys");
    cp(&env, "viaproc");
    let signer = |r: &str| {
        sts.calls_of("AssumeRole")
            .into_iter()
            .find(|c| c.params.get("RoleArn").map(String::as_str) == Some(r))
            .and_then(|c| c.access_key)
    };
    assert_eq!(signer(&role("a")).as_deref(), Some("AKIAPROFILEKEYS00001"));
    assert_eq!(signer(&role("b")).as_deref(), Some("AKIAPROCESS000000001"));
    assert_eq!(session(&env, "viaproc")["source"], "profile");
    // A profile that does not exist is a source error naming it.
    add_sts_config(
        &env,
        "nosuch",
        &sts.url(),
        &["--source-profile", "nope", "--role-arn", &role("c")],
    );
    let err = cp_fail(&env, "nosuch");
    assert!(err.contains("\"nope\""), "{err}");
}

/// A profile chain that ends in a `credential_process` (`top` → `mid` → `root`): elhaz runs the
/// process itself (its own process group, under the fetch deadline) and assumes the chain's
/// roles in order, root first, each signed with the step before's key, with the profile's
/// `external_id`, `role_session_name` and `duration_seconds`; the session's own role last.
#[test]
fn a_source_profile_chain_to_a_credential_process_is_assumed_in_order() {
    let (env, sts) = fake_env();
    let script = env.write_scratch(
        "provide-chain.sh",
        "#!/bin/sh\nprintf '%s' '{\"Version\":1,\"AccessKeyId\":\"AKIAPROCESS000000002\",\"SecretAccessKey\":\"x\"}'\n",
    );
    chmod(&script, 0o755);
    let cfg = env.write_scratch(
        "aws-config-chain",
        format!(
            "[profile top]\nrole_arn = {}\nsource_profile = mid\n\n\
             [profile mid]\nrole_arn = {}\nsource_profile = root\nexternal_id = ext-1\n\
             role_session_name = me-mid\nduration_seconds = 1800\n\n\
             [profile root]\ncredential_process = {}\n",
            role("mid2"),
            role("mid1"),
            script.display()
        ),
    );
    env.set_env("AWS_CONFIG_FILE", &cfg);
    add_sts_config(
        &env,
        "viachain",
        &sts.url(),
        &["--source-profile", "top", "--role-arn", &role("final")],
    );
    cp(&env, "viachain");
    let calls = sts.calls_of("AssumeRole");
    let roles: Vec<_> = calls.iter().filter_map(|c| c.role()).collect();
    assert_eq!(roles, ["mid1", "mid2", "final"], "{calls:?}");
    let (mid1, mid2, last) = (&calls[0], &calls[1], &calls[2]);
    assert_eq!(mid1.access_key.as_deref(), Some("AKIAPROCESS000000002"));
    assert_eq!(mid1.param("ExternalId"), Some("ext-1"));
    assert_eq!(mid1.param("RoleSessionName"), Some("me-mid"));
    assert_eq!(mid1.param("DurationSeconds"), Some("1800"));
    assert_eq!(mid2.param("ExternalId"), None);
    assert!(mid1.issued.is_some() && mid2.issued.is_some(), "{calls:?}");
    assert_eq!(mid2.access_key, mid1.issued, "mid2 signed with mid1's key");
    assert_eq!(
        last.access_key, mid2.issued,
        "the session's role signed with mid2's key"
    );
}

/// The same kind of chain against moto: a working `role_arn` + `source_profile` chain to a
/// `credential_process` still gets credentials, and `whoami` is the session's role.
#[test]
fn a_source_profile_chain_to_a_credential_process_works_against_moto() {
    let env = TestEnv::new();
    let moto = Moto::start(env.root());
    aws_env(&env, &moto.url());
    let script = env.write_scratch(
        "provide-moto.sh",
        "#!/bin/sh\nprintf '%s' '{\"Version\":1,\"AccessKeyId\":\"AKIAPROCESS000000003\",\"SecretAccessKey\":\"x\"}'\n",
    );
    chmod(&script, 0o755);
    let cfg = env.write_scratch(
        "aws-config-moto-chain",
        format!(
            "[profile hop]\nrole_arn = {}\nsource_profile = proc\n\n\
             [profile proc]\ncredential_process = {}\n",
            role("hop"),
            script.display()
        ),
    );
    env.set_env("AWS_CONFIG_FILE", &cfg);
    add_sts_config(
        &env,
        "mchain",
        &moto.url(),
        &["--source-profile", "hop", "--role-arn", &role("end")],
    );
    cp(&env, "mchain");
    assert_eq!(moto.wait_calls(2, DEADLINE), 2, "{}", moto.log());
    let out = bounded_ok(&mut env.cmd(&["whoami", "mchain"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("role/end") || text.contains("end/"), "{text}");
}

/// A source-less session (the daemon's default chain) whose `AWS_PROFILE` chains to a
/// `credential_process`, with no keys in the environment (set empty: the harness cannot unset
/// them): elhaz runs the process and assumes the chain itself, as for `profile = "P"`.
#[test]
fn the_default_chain_profile_to_a_credential_process_is_resolved_by_elhaz() {
    let (env, sts) = fake_env();
    env.set_env("AWS_ACCESS_KEY_ID", "");
    env.set_env("AWS_SECRET_ACCESS_KEY", "");
    let script = env.write_scratch(
        "provide-default.sh",
        "#!/bin/sh\nprintf '%s' '{\"Version\":1,\"AccessKeyId\":\"AKIAPROCESS000000004\",\"SecretAccessKey\":\"x\"}'\n",
    );
    chmod(&script, 0o755);
    let cfg = env.write_scratch(
        "aws-config-default-chain",
        format!(
            "[profile viadefault]\nrole_arn = {}\nsource_profile = rootd\n\n\
             [profile rootd]\ncredential_process = {}\n",
            role("hopd"),
            script.display()
        ),
    );
    env.set_env("AWS_CONFIG_FILE", &cfg);
    env.set_env("AWS_PROFILE", "viadefault");
    add_sts_config(&env, "dflt", &sts.url(), &["--role-arn", &role("endd")]);
    cp(&env, "dflt");
    let calls = sts.calls_of("AssumeRole");
    let roles: Vec<_> = calls.iter().filter_map(|c| c.role()).collect();
    assert_eq!(roles, ["hopd", "endd"], "{calls:?}");
    assert_eq!(calls[0].access_key.as_deref(), Some("AKIAPROCESS000000004"));
    assert_eq!(calls[1].access_key, calls[0].issued);
    assert_eq!(session(&env, "dflt")["source"], "default");
}
