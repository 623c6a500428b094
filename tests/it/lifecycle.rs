//! Daemon lifecycle: start (detached and foreground), status, stop, restart, single instance,
//! start races, crash recovery, signals, autostart, `--once`, idle exit, capacity, logs, and
//! start-up errors.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::util::*;

#[test]
fn status_exits_3_when_not_running() {
    let env = TestEnv::new();
    let out = env.run_code(&["daemon", "status"], 3);
    assert_contains(&stdout(&out), &["not running"]);
    let out = env.run_code(&["daemon", "status", "--json"], 3);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["running"], false, "{v}");
    assert_eq!(
        v["socket"].as_str(),
        Some(env.socket().to_str().unwrap()),
        "{v}"
    );
    // Asking for status never creates anything.
    assert!(!env.run_dir().exists());
    // Stopping a daemon that does not run is not an error.
    let out = env.run_ok(&["daemon", "stop"]);
    assert_contains(&stdout(&out), &["not running"]);
}

#[test]
fn detached_start_status_stop_restart() {
    let env = TestEnv::new();
    let out = env.run_ok(&["daemon", "start"]);
    let pid = parse_pid(&stdout(&out)).unwrap_or_else(|| panic!("no pid in {:?}", stdout(&out)));
    assert_contains(&stdout(&out), &["started"]);
    let guard = DetachedDaemon::adopt(&env, pid);

    // `daemon start` returned only once the socket accepts: status succeeds right away.
    let out = env.run_code(&["daemon", "status"], 0);
    assert_contains(&stdout(&out), &["is running", &pid.to_string()]);
    let v = env.status_json();
    for key in [
        "pid", "version", "protocol", "socket", "uptime_s", "sessions", "capacity",
    ] {
        assert!(v.get(key).is_some(), "status --json lacks {key:?}: {v}");
    }
    assert_eq!(v["pid"], pid, "{v}");
    assert_eq!(v["running"], true, "{v}");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"), "{v}");
    assert_eq!(v["protocol"], elhaz::protocol::PROTOCOL_VERSION, "{v}");
    assert_eq!(v["socket"].as_str(), Some(env.socket().to_str().unwrap()));
    assert_eq!(v["sessions"], 0, "{v}");
    assert_eq!(v["capacity"], 64, "{v}");
    assert!(v["uptime_s"].is_u64(), "{v}");
    assert!(pid_running(pid));
    assert_eq!(env.pid_from_file(), Some(pid));
    if let Some(holders) = flock_holders(&env.lock_file()) {
        assert_eq!(holders, vec![pid], "lock holders");
    }

    // Stop returns once the daemon is gone and has cleaned up.
    let out = env.run_ok(&["daemon", "stop"]);
    assert_contains(&stdout(&out), &["stopped", &pid.to_string()]);
    assert!(
        !pid_running(pid),
        "pid {pid} still runs after `daemon stop`"
    );
    assert!(!env.socket().exists(), "socket left behind");
    assert!(!env.pid_file().exists(), "pid file left behind");
    env.run_code(&["daemon", "status"], 3);
    drop(guard);

    // Restart.
    let again = env.start_daemon_detached(&[]);
    assert_ne!(again.pid, pid);
    assert_eq!(env.status_pid(), again.pid);
    env.run_ok(&["daemon", "stop"]);
    assert!(!pid_running(again.pid));
    env.run_code(&["daemon", "status"], 3);
}

#[test]
fn second_start_reports_already_running() {
    let env = TestEnv::new();
    let d = env.start_daemon_detached(&[]);
    let out = env.run_ok(&["daemon", "start"]);
    assert_contains(&stdout(&out), &["already running"]);
    assert_eq!(parse_pid(&stdout(&out)), Some(d.pid), "{}", stdout(&out));
    // A second foreground start also says so and exits 0 without disturbing the first.
    let out = env.run_ok(&["daemon", "start", "--foreground"]);
    assert_contains(&stderr(&out), &["already running", &d.pid.to_string()]);
    assert_eq!(env.status_pid(), d.pid);
    assert!(env.socket().exists());
    if let Some(holders) = flock_holders(&env.lock_file()) {
        assert_eq!(holders, vec![d.pid], "lock holders");
    }
}

#[test]
fn concurrent_starts_yield_one_daemon() {
    let env = TestEnv::new();
    let outs: Vec<(String, std::process::Output)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut cmd = env.cmd(&["daemon", "start"]);
                    let out = output_of(&mut cmd);
                    (describe(&cmd, &out), out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut pids = Vec::new();
    for (desc, out) in &outs {
        assert!(out.status.success(), "a racing start failed{desc}");
        pids.push(parse_pid(&stdout(out)).unwrap_or_else(|| panic!("no pid{desc}")));
    }
    let _guard = DetachedDaemon::adopt(&env, pids[0]);
    assert!(
        pids.iter().all(|&p| p == pids[0]),
        "racing starts reported different daemons: {pids:?}"
    );
    let started = outs
        .iter()
        .filter(|(_, o)| stdout(o).contains("started"))
        .count();
    assert!(
        started <= 1,
        "{started} starts claim to have started a daemon"
    );
    assert_eq!(env.status_pid(), pids[0]);
    match flock_holders(&env.lock_file()) {
        Some(holders) => assert_eq!(holders, vec![pids[0]], "exactly one lock holder"),
        None => skipped_check("no /proc/locks: cannot count lock holders"),
    }
}

#[test]
fn kill_9_leaves_stale_socket_and_start_recovers() {
    let env = TestEnv::new();
    let d = env.start_daemon_detached(&[]);
    kill(Pid::from_raw(d.pid as i32), Signal::SIGKILL).unwrap();
    assert!(
        wait_until(DEADLINE, || !pid_running(d.pid)),
        "SIGKILLed daemon still runs"
    );
    // No cleanup happened: the socket is stale, the pid file stale, the lock free.
    assert!(env.socket().exists(), "expected a stale socket");
    assert!(env.pid_file().exists(), "expected a stale pid file");
    assert!(!env.socket_accepts());
    env.run_code(&["daemon", "status"], 3);

    let d2 = env.start_daemon_detached(&[]);
    assert_ne!(d2.pid, d.pid);
    assert_eq!(env.status_pid(), d2.pid);
    assert_eq!(env.pid_from_file(), Some(d2.pid));
}

fn graceful_on(sig: Signal, logged: &str) {
    let env = TestEnv::new();
    let mut d = env.start_daemon_foreground(&[]);
    env.run_ok(&["daemon", "status"]);
    d.signal(sig);
    let st = d.wait_exit(DEADLINE);
    assert!(st.success(), "exit after {sig}: {st}{}", d.report());
    assert!(!env.socket().exists(), "socket left after {sig}");
    assert!(!env.pid_file().exists(), "pid file left after {sig}");
    env.run_code(&["daemon", "status"], 3);
    let log = env.log_text();
    assert_contains(&log, &[logged, "daemon stopped"]);
}

#[test]
fn sigterm_shuts_down_gracefully() {
    graceful_on(Signal::SIGTERM, "SIGTERM received");
}

#[test]
fn sigint_shuts_down_gracefully() {
    graceful_on(Signal::SIGINT, "SIGINT received");
}

#[test]
fn daemon_add_autostarts_the_daemon() {
    let env = TestEnv::new();
    let sts = crate::fake_sts::FakeSts::start();
    crate::moto::aws_env(&env, &sts.url());
    env.add_config("dev");
    env.run_code(&["daemon", "status"], 3);
    let out = env.run_ok(&["daemon", "add", "dev"]);
    assert_contains(&stdout(&out), &["dev"]);
    let pid = env.status_pid();
    let _guard = DetachedDaemon::adopt(&env, pid);
    let v = env.status_json();
    assert_eq!(v["sessions"], 1, "{v}");
    let list = env.run_ok(&["daemon", "list", "--json"]);
    let sessions: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(sessions[0]["name"], "dev", "{sessions}");
    assert_eq!(
        sts.calls()
            .iter()
            .map(|c| c.action.as_str())
            .collect::<Vec<_>>(),
        ["AssumeRole"]
    );
    // The next command reuses it.
    env.run_ok(&["daemon", "add", "dev"]);
    assert_eq!(env.status_pid(), pid);
}

#[test]
fn autostart_can_be_disabled() {
    let env = TestEnv::new();
    env.add_config("dev");
    let mut cmd = env.cmd(&["daemon", "add", "dev"]);
    cmd.env("ELHAZ_AUTOSTART", "0");
    let out = cmd_fail(&mut cmd);
    assert_contains(
        &stderr(&out),
        &["not running", "ELHAZ_AUTOSTART=0", "elhaz daemon start"],
    );
    assert!(!env.socket().exists(), "a daemon was started");
    assert!(env.pid_from_file().is_none(), "a daemon was started");
    env.run_code(&["daemon", "status"], 3);
}

#[test]
fn once_serves_one_request_then_exits() {
    let env = TestEnv::new();
    let mut d = env.start_daemon_foreground(&["--once"]);
    // The readiness probe (a bare connect) was not a request: the daemon still runs.
    assert!(
        d.try_wait().is_none(),
        "--once daemon exited before any request"
    );
    let v = env.status_json();
    assert_eq!(v["pid"], d.pid(), "{v}");
    let st = d.wait_exit(DEADLINE);
    assert!(st.success(), "--once exit: {st}{}", d.report());
    assert!(!env.socket().exists());
    assert!(!env.pid_file().exists());
    env.run_code(&["daemon", "status"], 3);
}

#[test]
fn idle_timeout_from_settings_makes_the_daemon_exit() {
    let env = TestEnv::new();
    env.write_settings("idle_timeout = \"2s\"\n");
    let d = env.start_daemon_detached(&[]);
    let started = Instant::now();
    let v = env.status_json();
    assert_eq!(v["idle_timeout_s"], 2, "{v}");
    assert!(
        wait_until(Duration::from_secs(20), || !pid_running(d.pid)),
        "the daemon did not exit after its 2s idle timeout"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "exited after {:?}, before the idle timeout",
        started.elapsed()
    );
    assert!(
        wait_until(DEADLINE, || !env.socket().exists()),
        "socket left after idle exit"
    );
    assert!(!env.pid_file().exists());
    assert_contains(&env.log_text(), &["idle timeout reached"]);
    env.run_code(&["daemon", "status"], 3);
}

#[test]
fn idle_timeout_flag_overrides_settings() {
    let env = TestEnv::new();
    env.write_settings("idle_timeout = \"2s\"\n");
    let _d = env.start_daemon_foreground(&["--idle-timeout", "1h"]);
    assert_eq!(env.status_json()["idle_timeout_s"], 3600);
}

#[test]
fn capacity_flag_and_setting_show_in_status() {
    let env = TestEnv::new();
    env.write_settings("capacity = 5\n");
    {
        let d = env.start_daemon_detached(&["--capacity", "7"]);
        let v = env.status_json();
        assert_eq!(v["capacity"], 7, "{v}");
        let out = env.run_ok(&["daemon", "status"]);
        assert_contains(&stdout(&out), &["0 of 7"]);
        env.run_ok(&["daemon", "stop"]);
        assert!(!pid_running(d.pid));
    }
    let _d = env.start_daemon_foreground(&[]);
    assert_eq!(env.status_json()["capacity"], 5);
    // Out-of-range flags are rejected by the CLI before anything starts.
    let env2 = TestEnv::new();
    let out = env2.run_fail(&["daemon", "start", "--capacity", "0"]);
    assert_contains(&stderr(&out), &["--capacity"]);
    assert!(!env2.run_dir().exists());
}

#[test]
fn logs_show_lines_after_a_start() {
    let env = TestEnv::new();
    let _d = env.start_daemon_detached(&[]);
    assert!(env.wait_for_log("daemon started"));
    let out = env.run_ok(&["daemon", "logs", "-n", "5"]);
    let text = stdout(&out);
    let n = text.lines().count();
    assert!(
        (1..=5).contains(&n),
        "expected 1 to 5 lines, got {n}:\n{text}"
    );
    let out = env.run_ok(&["daemon", "logs", "-n", "1000"]);
    assert_contains(&stdout(&out), &["daemon started"]);
}

#[test]
fn logs_without_a_daemon_say_so() {
    let env = TestEnv::new();
    let out = env.run_ok(&["daemon", "logs", "-n", "5"]);
    assert_eq!(stdout(&out), "");
    assert_contains(&stderr(&out), &["no logs yet"]);
}

#[test]
fn malformed_settings_fail_the_start_with_the_daemons_error() {
    let env = TestEnv::new();
    env.write_settings("capacity = \"lots\"\n");
    let file = env.settings_file();
    let file = file.to_str().unwrap();

    let out = env.run_fail(&["daemon", "start"]);
    assert_contains(
        &stderr(&out),
        &["failed to start", file, "line 1", "capacity"],
    );
    assert!(!env.socket().exists());
    env.run_code(&["daemon", "status"], 3);

    let out = env.run_fail(&["daemon", "start", "--foreground"]);
    assert_contains(&stderr(&out), &[file, "line 1"]);

    // Autostart reports it too, and starts nothing.
    env.add_config("dev");
    let out = env.run_fail(&["daemon", "add", "dev"]);
    assert_contains(&stderr(&out), &[file]);
    assert!(!env.socket().exists());

    // A setting out of range names its field.
    env.write_settings("idle_timeout = 0\n");
    let out = env.run_fail(&["daemon", "start"]);
    assert_contains(&stderr(&out), &[file, "idle_timeout"]);
}
