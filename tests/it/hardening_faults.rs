//! Hardening, faults: an STS that is unreachable, failing (5xx), throttling or hanging
//! through a refresh; `kill -9` of the daemon during a burst of requests and of `config
//! add` in the middle of its write; a full disk; and racing daemon starts.
//!
//! Credentials live 36 s here: the refresh is due after ~23 s and they stay servable until
//! ~32 s, so a failed refresh, the backoff, the still-valid credentials being served and
//! the recovery all happen within about half a minute per fault (the four run in parallel).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::RngExt;
use serde_json::{Value, json};

use crate::fake_sts::{FakeSts, Mode};
use crate::hardening::*;
use crate::moto::{add_sts_config, add_toml_config, aws_env};
use crate::util::*;

/// Lifetime of the credentials in the STS fault tests.
const LIFETIME: u64 = 36;
const SESSION: &str = "f";

fn parse_time(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("not RFC 3339: {s:?}: {e}"))
}

/// The fields that must not change while a refresh keeps failing.
fn creds_of(v: &Value) -> [String; 4] {
    [
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
    ]
    .map(|k| v[k].as_str().unwrap_or_default().to_string())
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Unreachable,
    ServerError,
    Throttling,
}

/// A fake STS behind a gate, a session of [`LIFETIME`] s, a foreground daemon.
fn fault_env() -> (TestEnv, FakeSts, Gate) {
    let env = TestEnv::new();
    let sts = FakeSts::start();
    let gate = Gate::open_to(&sts.url());
    aws_env(&env, &gate.url());
    add_sts_config(
        &env,
        SESSION,
        &gate.url(),
        &[
            "--role-arn",
            "arn:aws:iam::123456789012:role/fault",
            "--duration",
            &LIFETIME.to_string(),
        ],
    );
    (env, sts, gate)
}

/// Polls `daemon list` (never a credential request) every 200 ms until `pred` holds for
/// the session; returns it.
fn wait_session(
    env: &TestEnv,
    limit: Duration,
    mut pred: impl FnMut(&Value) -> bool,
) -> Option<Value> {
    let mut found = None;
    wait_until(limit, || {
        let s = listed_session(env, SESSION).unwrap_or(Value::Null);
        if pred(&s) {
            found = Some(s);
            true
        } else {
            std::thread::sleep(Duration::from_millis(200));
            false
        }
    });
    found
}

fn survive(fault: Fault, test: &str) {
    let (env, sts, mut gate) = fault_env();
    let mut d = env.start_daemon_foreground(&[]);
    let (first, _) = credential_process(&env, SESSION);
    let held = creds_of(&first);
    let expires = parse_time(&held[3]);
    let t0 = Instant::now();
    let (what, needle) = match fault {
        Fault::Unreachable => {
            gate.close();
            ("unreachable (connection refused)", "cannot reach STS")
        }
        Fault::ServerError => {
            sts.set_mode(Mode::unavailable());
            (
                "5xx (503 ServiceUnavailable)",
                "fake STS is down for maintenance",
            )
        }
        Fault::Throttling => {
            sts.set_mode(Mode::throttling());
            ("throttling (400 Throttling)", "Rate exceeded (fake STS)")
        }
    };

    // The refresh fails: still-valid credentials, the error and the next retry are shown.
    let stale = wait_session(&env, Duration::from_secs(LIFETIME), |s| {
        s["state"] == "stale" && s["last_error"].is_string() && s["next_refresh"].is_string()
    });
    let stale_after = t0.elapsed();
    let stale = stale.unwrap_or_else(|| {
        panic!(
            "no failed refresh in `daemon list` within {LIFETIME} s: {:?}{}",
            listed_session(&env, SESSION),
            d.report()
        )
    });
    let last_error = stale["last_error"].as_str().unwrap().to_string();
    let next_refresh = parse_time(stale["next_refresh"].as_str().unwrap());
    // Served from memory at once, unchanged, while the refresh keeps failing.
    let mut max_serve = Duration::ZERO;
    let mut same = 0;
    for _ in 0..5 {
        let (v, took) = credential_process(&env, SESSION);
        max_serve = max_serve.max(took);
        if creds_of(&v) == held {
            same += 1;
        }
    }
    let served_before_expiry = SystemTime::now() < expires;
    // The backoff retries: another attempt, rescheduled.
    let retried = wait_session(&env, Duration::from_secs(15), |s| {
        s["sts_calls"].as_u64().unwrap_or(0) >= 3 && s["last_error"].is_string()
    });
    let sts_calls_during = retried
        .as_ref()
        .and_then(|s| s["sts_calls"].as_u64())
        .unwrap_or(0);

    // Healthy again: recovery without any client request.
    match fault {
        Fault::Unreachable => gate.reopen(),
        _ => sts.set_mode(Mode::Ok),
    }
    let healed = Instant::now();
    let fresh = wait_session(&env, Duration::from_secs(45), |s| {
        s["state"] == "fresh" && s["expiration"] != held[3].as_str() && s["last_error"].is_null()
    });
    let recovered_after = healed.elapsed();
    let (after, _) = credential_process(&env, SESSION);
    let renewed = creds_of(&after);
    let alive = d.try_wait().is_none();

    let line = format!(
        "fault: STS {what}: refresh failed {:.1} s after the fetch (state stale, last_error \
         {last_error:?}, next_refresh set), same credentials served {same}/5 (max {:.0} ms), \
         {sts_calls_during} STS attempts by then; recovered {:.1} s after STS was healthy, \
         without a request",
        stale_after.as_secs_f64(),
        max_serve.as_secs_f64() * 1000.0,
        recovered_after.as_secs_f64(),
    );
    let ok = alive
        && last_error.contains(needle)
        && !last_error.is_empty()
        && next_refresh < expires
        && same == 5
        && served_before_expiry
        && max_serve < Duration::from_secs(5)
        && retried.is_some()
        && fresh.is_some()
        && renewed[0] != held[0]
        && fresh
            .as_ref()
            .is_some_and(|f| f["expiration"] == renewed[3].as_str());
    record(
        test,
        "fault",
        ok,
        &line,
        json!({
            "faults_survived": u64::from(ok),
            "fault": what,
            "last_error": last_error,
            "stale_after_s": stale_after.as_secs_f64(),
            "max_serve_ms": max_serve.as_secs_f64() * 1000.0,
            "recovered_after_s": recovered_after.as_secs_f64(),
        }),
    );
    assert!(alive, "the daemon died{}", d.report());
    assert!(
        !last_error.is_empty() && last_error.contains(needle),
        "last_error does not carry STS's message {needle:?}: {line}"
    );
    assert!(next_refresh < expires, "no retry before expiry: {stale}");
    assert_eq!(
        same, 5,
        "other credentials were served during the fault: {line}"
    );
    assert!(
        served_before_expiry,
        "the test ran too slowly to check serving: {line}"
    );
    assert!(max_serve < Duration::from_secs(5), "{line}");
    assert!(retried.is_some(), "no retry with backoff: {line}");
    assert!(
        fresh.is_some(),
        "no recovery without intervention: {line}{}",
        d.report()
    );
    assert_ne!(
        renewed[0], held[0],
        "the recovered credentials are the old ones"
    );
}

/// The four STS faults run side by side (each with its own fake STS, gate, home and
/// daemon): they spend most of their half minute waiting for a refresh to come due.
#[test]
fn sts_unreachable_5xx_throttling_and_a_30_s_hang_are_survived() {
    type Scenario = (&'static str, fn());
    let scenarios: [Scenario; 4] = [
        ("unreachable", || {
            survive(Fault::Unreachable, "fault_sts_unreachable")
        }),
        ("5xx", || survive(Fault::ServerError, "fault_sts_5xx")),
        ("throttling", || {
            survive(Fault::Throttling, "fault_sts_throttling")
        }),
        ("hang", sts_hang),
    ];
    let running: Vec<_> = scenarios
        .into_iter()
        .map(|(name, f)| (name, std::thread::spawn(f)))
        .collect();
    let mut failed = Vec::new();
    for (name, h) in running {
        if let Err(e) = h.join() {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("STS fault {name}: {msg}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

/// STS hangs for 30 s from just after the first fetch: through the refresh that comes due
/// after ~23 s, until shortly before the held credentials stop being servable.
fn sts_hang() {
    const HANG: Duration = Duration::from_secs(30);
    let (env, sts, _gate) = fault_env();
    let mut d = env.start_daemon_foreground(&[]);
    let (first, _) = credential_process(&env, SESSION);
    let held = creds_of(&first);
    let expires = parse_time(&held[3]);
    // Every STS call from now on hangs for 30 s: through the whole refresh lead, up to just
    // before the credentials' serve margin.
    sts.set_mode(Mode::Hang);
    let hang_start = Instant::now();
    let refreshing = wait_session(&env, HANG, |s| s["state"] == "refreshing");
    let in_flight =
        sts.calls_of("AssumeRole").len() == 2 && sts.calls_of("AssumeRole")[1].replied.is_none();
    // While the refresh hangs: the held credentials, at once.
    let mut samples = 0;
    let mut same = 0;
    let mut max_serve = Duration::ZERO;
    while hang_start.elapsed() + Duration::from_secs(1) < HANG && samples < 40 {
        let (v, took) = credential_process(&env, SESSION);
        samples += 1;
        max_serve = max_serve.max(took);
        if creds_of(&v) == held {
            same += 1;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let during = listed_session(&env, SESSION).unwrap_or(Value::Null);
    std::thread::sleep(HANG.saturating_sub(hang_start.elapsed()));
    sts.set_mode(Mode::Ok);
    let healed = Instant::now();
    let fresh = wait_session(&env, Duration::from_secs(45), |s| {
        s["state"] == "fresh" && s["expiration"] != held[3].as_str()
    });
    let recovered_after = healed.elapsed();
    let (after, _) = credential_process(&env, SESSION);
    let renewed = creds_of(&after);
    let renewed_before_expiry = SystemTime::now() < expires;
    let alive = d.try_wait().is_none();
    let line = format!(
        "fault: STS hung {} s through the refresh: {same}/{samples} requests during the hang got \
         the held credentials (max {:.0} ms), state {} with the call in flight {in_flight}; \
         fresh credentials {:.1} s after the hang ended, before the old ones expired \
         {renewed_before_expiry}",
        HANG.as_secs(),
        max_serve.as_secs_f64() * 1000.0,
        during["state"],
        recovered_after.as_secs_f64(),
    );
    let ok = alive
        && refreshing.is_some()
        && in_flight
        && samples >= 3
        && same == samples
        && max_serve < Duration::from_secs(5)
        && fresh.is_some()
        && renewed[0] != held[0];
    record(
        "fault_sts_hang",
        "fault",
        ok,
        &line,
        json!({
            "faults_survived": u64::from(ok),
            "fault": "hang 30 s",
            "served_during_hang": same,
            "max_serve_ms": max_serve.as_secs_f64() * 1000.0,
            "recovered_after_s": recovered_after.as_secs_f64(),
        }),
    );
    assert!(alive, "the daemon died{}", d.report());
    assert!(
        refreshing.is_some() && in_flight,
        "no hanging refresh: {line} {:?}",
        sts.calls()
    );
    assert!(samples >= 3 && same == samples, "{line}");
    assert!(max_serve < Duration::from_secs(5), "{line}");
    assert!(
        fresh.is_some(),
        "no recovery after the hang: {line}{}",
        d.report()
    );
    assert_ne!(renewed[0], held[0]);
}

// ---------------------------------------------------------------------------------------

#[test]
fn kill_9_during_a_burst_then_the_next_credential_process_recovers() {
    let env = TestEnv::new();
    let sts = FakeSts::start();
    aws_env(&env, &sts.url());
    for n in ["a", "b", "c"] {
        add_sts_config(
            &env,
            n,
            &sts.url(),
            &["--role-arn", &format!("arn:aws:iam::123456789012:role/{n}")],
        );
    }
    let configs_before = snapshot(&env.configs_dir());
    // Autostarted, as a user would have it.
    let (a1, _) = credential_process(&env, "a");
    let pid = env.pid_from_file().expect("a pid file");
    assert!(pid_is_elhaz(pid));
    let socket = env.socket();

    // A burst: 16 threads sending requests on fresh connections until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let ok_count = Arc::new(AtomicU64::new(0));
    let err_count = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..16)
        .map(|t| {
            let (stop, ok_count, err_count, socket) = (
                stop.clone(),
                ok_count.clone(),
                err_count.clone(),
                socket.clone(),
            );
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut id = 0u64;
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline && id < 100_000 {
                    id += 1;
                    let name = ["a", "b", "c"][(t + id as usize) % 3];
                    match try_request(
                        &socket,
                        &credentials_request(id, name),
                        Duration::from_secs(5),
                    ) {
                        Ok(r) if r["ok"]["kind"] == "credentials" => {
                            ok_count.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            err_count.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
            })
        })
        .collect();
    wait_until(DEADLINE, || ok_count.load(Ordering::Relaxed) >= 500);
    let served_before = ok_count.load(Ordering::Relaxed);
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    assert!(
        wait_until(DEADLINE, || !pid_running(pid)),
        "pid {pid} survived SIGKILL"
    );
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let burst_errors = err_count.load(Ordering::Relaxed);
    let stale_socket = std::fs::symlink_metadata(&socket).is_ok();

    // The next credential-process starts a new daemon (removing the stale socket).
    let t = Instant::now();
    let (a2, took) = credential_process(&env, "a");
    let recovered = t.elapsed();
    let new_pid = env.pid_from_file().unwrap_or(0);
    let (b, _) = credential_process(&env, "b");
    let (c, _) = credential_process(&env, "c");
    let configs_after = snapshot(&env.configs_dir());
    let list = limited_ok(
        &mut env.cmd(&["config", "list", "--json"]),
        Duration::from_secs(20),
    );
    let listed: Vec<Value> = serde_json::from_slice(&list.stdout).unwrap();
    let all_valid = ["a", "b", "c"]
        .iter()
        .all(|n| listed.iter().any(|v| v["name"] == *n && v["valid"] == true));
    let line = format!(
        "fault: kill -9 of the daemon during a burst ({served_before} requests served, \
         {burst_errors} failed after the kill): stale socket left {stale_socket}, the next \
         credential-process recovered in {:.2} s (new pid {new_pid}), 3/3 configs intact {}",
        recovered.as_secs_f64(),
        configs_before == configs_after && all_valid
    );
    let ok = new_pid != pid
        && new_pid != 0
        && recovered < Duration::from_secs(5)
        && configs_before == configs_after
        && all_valid
        && a2["AccessKeyId"] != a1["AccessKeyId"]
        && b["AccessKeyId"].is_string()
        && c["AccessKeyId"].is_string();
    record(
        "fault_kill_9_during_burst",
        "fault",
        ok,
        &line,
        json!({
            "faults_survived": u64::from(ok),
            "requests": served_before,
            "recovered_s": recovered.as_secs_f64(),
        }),
    );
    assert!(
        stale_socket,
        "kill -9 should leave the socket behind (the test needs it)"
    );
    assert!(
        new_pid != pid && new_pid != 0 && pid_is_elhaz(new_pid),
        "{line}"
    );
    assert!(
        recovered < Duration::from_secs(5),
        "recovery took {took:?}: {line}"
    );
    assert_eq!(configs_before, configs_after, "configs changed");
    assert!(all_valid, "{}", stdout(&list));
    // A new daemon fetched new credentials (the old ones died with the old daemon).
    assert_ne!(a2["AccessKeyId"], a1["AccessKeyId"]);
    assert!(sts.calls_of("AssumeRole").len() >= 4);
}

// ---------------------------------------------------------------------------------------

/// A config text of about `size` bytes with `tag` in its description.
fn padded_config(tag: &str, size: usize) -> String {
    let mut s = format!(
        "description = \"{tag}\"\n[role]\narn = \"arn:aws:iam::123456789012:role/{tag}\"\n"
    );
    let mut i = 0;
    while s.len() < size {
        i += 1;
        s.push_str(&format!(
            "# {tag} padding line {i:06} ............................................\n"
        ));
    }
    s
}

#[test]
fn kill_9_during_config_writes_never_leaves_a_torn_file() {
    const MAX_RUNS: usize = 300;
    let env = TestEnv::new();
    let texts = [
        padded_config("alpha", 30_000),
        padded_config("bravo", 50_000),
    ];
    let srcs: Vec<PathBuf> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| env.write_scratch(&format!("src-{i}.toml"), t))
        .collect();
    add_toml_config(&env, "bystander", &padded_config("bystander", 200));
    env.run_ok(&[
        "config",
        "add",
        "w",
        "--from-file",
        srcs[0].to_str().unwrap(),
    ]);
    let bystander = std::fs::read(env.config_file("bystander")).unwrap();

    // How long one write takes, so kills land anywhere from start-up to the rename.
    let mut runs = Vec::new();
    for src in &srcs {
        let t = Instant::now();
        env.run_ok(&[
            "config",
            "add",
            "w",
            "--force",
            "--from-file",
            src.to_str().unwrap(),
        ]);
        runs.push(t.elapsed());
    }
    let typical = runs
        .iter()
        .max()
        .copied()
        .unwrap_or(Duration::from_millis(5));
    let window_us = (typical.as_micros() as u64 * 3 / 2).max(1000);

    let mut rng = rand::rng();
    let started = Instant::now();
    let (mut killed, mut completed, mut torn, mut list_checks) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    let mut current = std::fs::read_to_string(env.config_file("w")).unwrap();
    for i in 0..MAX_RUNS {
        if started.elapsed() > Duration::from_secs(40) {
            break;
        }
        let which = i % 2;
        let mut cmd = env.cmd(&[
            "config",
            "add",
            "w",
            "--force",
            "--from-file",
            srcs[which].to_str().unwrap(),
        ]);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(Duration::from_micros(rng.random_range(0..window_us)));
        let _ = child.kill(); // SIGKILL; harmless if it already exited
        let status = child.wait().unwrap();
        match (status.code(), status.signal()) {
            (Some(0), _) => completed += 1,
            (_, Some(9)) => killed += 1,
            other => failures.push(format!("run {i}: unexpected exit {other:?}")),
        }
        let now = std::fs::read_to_string(env.config_file("w")).unwrap_or_else(|e| {
            failures.push(format!("run {i}: w.toml unreadable: {e}"));
            String::new()
        });
        let whole = texts.contains(&now);
        if !whole {
            torn += 1;
            failures.push(format!(
                "run {i}: w.toml is neither text ({} bytes)",
                now.len()
            ));
        } else if now != current && now != texts[which] {
            failures.push(format!("run {i}: w.toml changed to the other text"));
        }
        if status.code() == Some(0) && now != texts[which] {
            failures.push(format!("run {i}: a completed write did not land"));
        }
        current = now;
        if i % 25 == 0 {
            list_checks += 1;
            let out = limited_ok(
                &mut env.cmd(&["config", "list", "--json"]),
                Duration::from_secs(20),
            );
            let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
            let names: Vec<&str> = listed.iter().filter_map(|v| v["name"].as_str()).collect();
            if names != ["bystander", "w"] || listed.iter().any(|v| v["valid"] != true) {
                failures.push(format!("run {i}: config list says {listed:?}"));
            }
        }
    }
    // Leftovers: only temp files of the atomic write (`.w.toml.XXXXXX.tmp`), which every
    // command ignores.
    let entries: Vec<String> = std::fs::read_dir(env.configs_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let temps = entries
        .iter()
        .filter(|n| n.starts_with(".w.toml.") && n.ends_with(".tmp"))
        .count();
    let unexpected: Vec<&String> = entries
        .iter()
        .filter(|n| {
            let temp = n.starts_with(".w.toml.") && n.ends_with(".tmp");
            !(temp || matches!(n.as_str(), ".lock" | "w.toml" | "bystander.toml"))
        })
        .collect();
    let out = limited_ok(&mut env.cmd(&["config", "list"]), Duration::from_secs(20));
    let listing = stdout(&out);
    let listed_names: Vec<&str> = listing
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let temps_ignored = !listing.contains(".tmp") && listed_names == ["bystander", "w"];
    limited_ok(
        &mut env.cmd(&["config", "show", "w"]),
        Duration::from_secs(20),
    );
    let bystander_intact = std::fs::read(env.config_file("bystander")).unwrap() == bystander;
    // And the store still takes writes.
    env.run_ok(&[
        "config",
        "add",
        "w",
        "--force",
        "--from-file",
        srcs[1].to_str().unwrap(),
    ]);
    let line = format!(
        "fault: kill -9 during `config add --force` x{}: {killed} killed mid-run, {completed} \
         completed, {torn} torn files, {temps} temp files left (ignored by config list \
         {temps_ignored}), {list_checks} list checks, bystander intact {bystander_intact}",
        killed + completed,
    );
    let ok = failures.is_empty()
        && torn == 0
        && killed >= 10
        && unexpected.is_empty()
        && temps_ignored
        && bystander_intact;
    record(
        "fault_kill_9_during_config_writes",
        "fault",
        ok,
        &line,
        json!({
            "faults_survived": killed,
            "writes": killed + completed,
            "torn": torn,
            "temp_files_left": temps,
        }),
    );
    assert!(failures.is_empty(), "{line}\n{}", failures.join("\n"));
    assert_eq!(torn, 0, "{line}");
    assert!(
        killed >= 10,
        "too few kills landed mid-run to mean anything: {line}"
    );
    assert!(
        unexpected.is_empty(),
        "unexpected files in configs/: {unexpected:?}"
    );
    assert!(temps_ignored, "config list shows temp files:\n{listing}");
    assert!(bystander_intact);
}

// ---------------------------------------------------------------------------------------

/// Unmounts a tmpfs on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

/// Fills the filesystem of `dir` with a file; returns the bytes written and whether
/// ENOSPC was reached.
fn fill(dir: &Path) -> (u64, bool) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let mut written = 0u64;
    for chunk in [4096usize, 512, 1] {
        let buf = vec![0u8; chunk];
        for _ in 0..100_000 {
            match f.write(&buf) {
                Ok(n) if n > 0 => written += n as u64,
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", dir.display()),
            }
        }
    }
    let full = f
        .write(b"x")
        .is_err_and(|e| e.raw_os_error() == Some(nix::libc::ENOSPC));
    (written, full)
}

#[test]
fn disk_full_during_config_add_fails_clearly_and_keeps_the_old_file() {
    let env = TestEnv::new();
    let mut skipped = Vec::new();
    let big = env.write_scratch("big.toml", padded_config("big", 16_000));
    let dir = env.scratch("tiny");
    std::fs::create_dir(&dir).unwrap();
    let mounted = is_root()
        && std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
    if !mounted {
        skip(
            &mut skipped,
            "cannot mount a tmpfs here (needs root and mount rights)",
        );
        // What can be checked anywhere: the same command succeeds with space available.
        env.run_ok(&[
            "config",
            "add",
            "keep",
            "--from-file",
            big.to_str().unwrap(),
        ]);
        record(
            "fault_disk_full",
            "fault",
            true,
            "fault: disk full: SKIPPED (no tmpfs mount)",
            json!({"skipped": skipped}),
        );
        return;
    }
    let _mount = Mount(dir.clone());
    let home = dir.join("home");
    env.set_env("ELHAZ_HOME", &home);
    env.run_ok(&[
        "config",
        "add",
        "keep",
        "--role-arn",
        ROLE_ARN,
        "--description",
        "old",
    ]);
    let file = home.join("configs/keep.toml");
    let old = std::fs::read(&file).unwrap();
    let (filled, full) = fill(&dir);
    assert!(full, "could not fill the tmpfs ({filled} bytes written)");

    let mut cmd = env.cmd(&[
        "config",
        "add",
        "keep",
        "--force",
        "--from-file",
        big.to_str().unwrap(),
    ]);
    let (status, out, _) = run_limited(&mut cmd, Duration::from_secs(20));
    let err = stderr(&out);
    let failed_clearly = status.is_some()
        && out.status.code().is_some_and(|c| c != 0)
        && err.contains("No space left on device")
        && err.contains(file.to_str().unwrap());
    let intact = std::fs::read(&file).unwrap() == old;
    let mut cmd2 = env.cmd(&["config", "add", "new", "--role-arn", ROLE_ARN]);
    let (_, out2, _) = run_limited(&mut cmd2, Duration::from_secs(20));
    let new_refused = !out2.status.success() && !home.join("configs/new.toml").exists();
    let leftovers: Vec<String> = std::fs::read_dir(home.join("configs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    let list = limited_ok(
        &mut env.cmd(&["config", "list", "--json"]),
        Duration::from_secs(20),
    );
    let listed: Vec<Value> = serde_json::from_slice(&list.stdout).unwrap();
    let listed_ok = listed.len() == 1 && listed[0]["name"] == "keep" && listed[0]["valid"] == true;
    // Space again: the same write succeeds.
    std::fs::remove_file(dir.join("filler")).unwrap();
    env.run_ok(&[
        "config",
        "add",
        "keep",
        "--force",
        "--from-file",
        big.to_str().unwrap(),
    ]);
    let recovered = std::fs::read_to_string(&file).unwrap() == padded_config("big", 16_000);
    let line = format!(
        "fault: disk full (64 KiB tmpfs, {filled} bytes of filler): config add --force failed \
         with {:?}, old file intact {intact}, new config refused {new_refused}, {} temp files \
         left, config list ok {listed_ok}, write succeeds once space is back {recovered}",
        err.trim().lines().last().unwrap_or(""),
        leftovers.len()
    );
    let ok =
        failed_clearly && intact && new_refused && leftovers.is_empty() && listed_ok && recovered;
    record(
        "fault_disk_full",
        "fault",
        ok,
        &line,
        json!({"faults_survived": u64::from(ok)}),
    );
    assert!(failed_clearly, "{line}{}", describe(&cmd, &out));
    assert!(intact, "the old config was damaged");
    assert!(new_refused, "{}", describe(&cmd2, &out2));
    assert!(
        leftovers.is_empty(),
        "temp files left after ENOSPC: {leftovers:?}"
    );
    assert!(listed_ok, "{}", stdout(&list));
    assert!(recovered);
}

// ---------------------------------------------------------------------------------------

/// Pids of live `elhaz daemon start --foreground` processes serving `home` (from /proc;
/// `None` when their environment cannot be read).
fn daemons_of(home: &Path) -> Option<Vec<u32>> {
    let needle = format!("ELHAZ_HOME={}", home.display());
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_daemon = args.first() == Some(&BIN.as_bytes())
            && args.contains(&&b"daemon"[..])
            && args.contains(&&b"--foreground"[..]);
        if !is_daemon || !pid_running(pid) {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        if environ.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
            pids.push(pid);
        }
    }
    Some(pids)
}

#[test]
fn eight_racing_starts_yield_exactly_one_daemon() {
    const N: usize = 8;
    let env = TestEnv::new();
    let mut skipped = Vec::new();

    // 1. Eight detached `daemon start` at once.
    let barrier = Arc::new(std::sync::Barrier::new(N));
    let runs: Vec<_> = (0..N)
        .map(|_| {
            let mut cmd = env.cmd(&["daemon", "start"]);
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                let (status, out, _) = run_limited(&mut cmd, Duration::from_secs(30));
                (status, out, show_cmd(&cmd))
            })
        })
        .collect();
    let mut pids = Vec::new();
    let (mut started, mut already) = (0, 0);
    for r in runs {
        let (status, out, desc) = r.join().unwrap();
        assert!(
            status.is_some_and(|s| s.success()),
            "a racing `daemon start` failed: {}\n{desc}",
            stderr(&out)
        );
        let text = stdout(&out);
        if text.contains("already running") {
            already += 1;
        } else if text.contains("daemon started") {
            started += 1;
        }
        pids.push(parse_pid(&text).unwrap_or_else(|| panic!("no pid in {text:?}")));
    }
    let winner = pids[0];
    let _guard = DetachedDaemon::adopt(&env, winner);
    let holders = flock_holders(&env.lock_file());
    // Losing daemons exit on their own, promptly.
    let mut alive = None;
    let single = wait_until(DEADLINE, || {
        alive = daemons_of(env.home());
        alive.as_ref().is_none_or(|a| a.len() == 1)
    });
    if alive.is_none() {
        skip(
            &mut skipped,
            "cannot read other processes' environment: daemons not counted",
        );
    }
    let status_pid = env.status_pid();
    let detached_ok = pids.iter().all(|p| *p == winner)
        && started == 1
        && already == N - 1
        && holders.as_ref().is_none_or(|h| h == &vec![winner])
        && single
        && status_pid == winner;
    let detached_line = format!(
        "{N} racing `daemon start`: {started} started, {already} already running, reported \
         pids {pids:?}, status pid {status_pid}, lock holders {holders:?}, live daemons \
         {alive:?} (single {single})"
    );
    drop(_guard);
    env.stop_any_daemon(Some(winner));
    assert!(wait_until(DEADLINE, || !pid_running(winner)));

    // 2. Eight `daemon start --foreground` at once.
    let children: Vec<ChildGuard> = (0..N)
        .map(|i| {
            let mut cmd = env.cmd(&["daemon", "start", "--foreground"]);
            cmd.stdout(std::fs::File::create(env.scratch(&format!("fg-{i}.out"))).unwrap())
                .stderr(std::fs::File::create(env.scratch(&format!("fg-{i}.err"))).unwrap());
            ChildGuard(cmd.spawn().unwrap())
        })
        .collect();
    let mut children = children;
    let mut exited: Vec<(usize, std::process::ExitStatus)> = Vec::new();
    wait_until(Duration::from_secs(20), || {
        for (i, c) in children.iter_mut().enumerate() {
            if !exited.iter().any(|(j, _)| *j == i)
                && let Ok(Some(st)) = c.0.try_wait()
            {
                exited.push((i, st));
            }
        }
        exited.len() >= N - 1
    });
    // Give a (wrong) second survivor a moment to show itself.
    std::thread::sleep(Duration::from_millis(300));
    for (i, c) in children.iter_mut().enumerate() {
        if !exited.iter().any(|(j, _)| *j == i)
            && let Ok(Some(st)) = c.0.try_wait()
        {
            exited.push((i, st));
        }
    }
    let survivors: Vec<u32> = children
        .iter()
        .enumerate()
        .filter(|(i, _)| !exited.iter().any(|(j, _)| j == i))
        .map(|(_, c)| c.pid())
        .collect();
    let losers_ok = exited.iter().all(|(i, st)| {
        st.code() == Some(0)
            && std::fs::read_to_string(env.scratch(&format!("fg-{i}.err")))
                .unwrap_or_default()
                .contains("already running")
    });
    let fg_holders = flock_holders(&env.lock_file());
    let serving = survivors.len() == 1 && env.status_pid() == survivors[0];
    let fg_ok = survivors.len() == 1
        && exited.len() == N - 1
        && losers_ok
        && serving
        && fg_holders.as_ref().is_none_or(|h| h == &survivors);
    let line = format!(
        "fault: {detached_line}; {N} racing `daemon start --foreground`: {} exited 0 saying \
         already running ({losers_ok}), survivors {survivors:?} serving {serving}, lock \
         holders {fg_holders:?}",
        exited.len()
    );
    let ok = detached_ok && fg_ok;
    record(
        "fault_racing_starts",
        "fault",
        ok,
        &line,
        json!({"faults_survived": 2 * N as u64 * u64::from(ok), "skipped": skipped}),
    );
    let report: Vec<String> = (0..N)
        .map(|i| {
            format!(
                "fg-{i}: {}",
                std::fs::read_to_string(env.scratch(&format!("fg-{i}.err")))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| !l.contains("DEBUG"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            )
        })
        .collect();
    assert!(
        !pids.contains(&0),
        "a racing `daemon start` printed \"(pid 0)\": it found the winner's socket accepting \
         before the winner had written its pid file (client::start_daemon reads the pid file \
         right after a bare connect; lifecycle::serve binds before writing it): {line}"
    );
    assert!(detached_ok, "{line}");
    assert!(fg_ok, "{line}\n{}", report.join("\n"));
    drop(children);
}
