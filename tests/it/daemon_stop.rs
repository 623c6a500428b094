//! `daemon stop [--timeout S] [--force]` always ends: a daemon that cannot answer or exit
//! (SIGSTOPped here, so it ignores SIGTERM and never replies) is reported without `--force`
//! and SIGKILLed with it, its stale socket and pid file removed.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::util::{TestEnv, assert_contains, pid_running, stderr, stdout, wait_until};

#[test]
fn daemon_stop_force_kills_a_daemon_that_ignores_sigterm() {
    let env = TestEnv::new();
    let d = env.start_daemon_detached(&[]);
    let pid = d.pid;
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();

    let t0 = Instant::now();
    let out = env.run_fail(&["daemon", "stop", "--timeout", "1"]);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "stop did not honour --timeout"
    );
    assert_contains(&stderr(&out), &["did not exit within 1s", "--force"]);
    assert!(pid_running(pid), "the daemon died without --force");

    let out = env.run_ok(&["daemon", "stop", "--timeout", "1", "--force"]);
    assert_contains(
        &stdout(&out),
        &[&format!("elhaz daemon killed (pid {pid})")],
    );
    assert!(wait_until(Duration::from_secs(10), || !pid_running(pid)));
    assert!(!env.socket().exists(), "stale socket left behind");
    assert!(!env.pid_file().exists(), "stale pid file left behind");
    let out = env.run_ok(&["daemon", "stop"]);
    assert_contains(&stdout(&out), &["not running"]);
}

#[test]
fn daemon_stop_says_stopped_for_a_healthy_daemon() {
    let env = TestEnv::new();
    let d = env.start_daemon_detached(&[]);
    let out = env.run_ok(&["daemon", "stop", "--timeout", "10", "--force"]);
    assert_contains(
        &stdout(&out),
        &[&format!("elhaz daemon stopped (pid {})", d.pid)],
    );
}

/// `stop_force = true` and `stop_timeout` in elhaz.toml: a plain `daemon stop` (no flags)
/// SIGKILLs a daemon that cannot exit after the configured timeout; `--no-force` still
/// refuses to, and `--timeout` overrides the configured wait.
#[test]
fn configured_stop_force_kills_without_the_flag() {
    let env = TestEnv::new();
    env.write_settings("stop_timeout = \"1s\"\nstop_force = true\n");
    let d = env.start_daemon_detached(&[]);
    let pid = d.pid;
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();

    let t0 = Instant::now();
    let out = env.run_fail(&["daemon", "stop", "--no-force"]);
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "stop did not honour stop_timeout = 1s"
    );
    assert_contains(&stderr(&out), &["did not exit within 1s", "--force"]);
    assert!(pid_running(pid), "--no-force killed the daemon");

    let out = env.run_fail(&["daemon", "stop", "--no-force", "--timeout", "2"]);
    assert_contains(&stderr(&out), &["did not exit within 2s"]);

    let t0 = Instant::now();
    let out = env.run_ok(&["daemon", "stop"]);
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "configured force stop took {:?}",
        t0.elapsed()
    );
    assert_contains(
        &stdout(&out),
        &[&format!("elhaz daemon killed (pid {pid})")],
    );
    assert!(wait_until(Duration::from_secs(10), || !pid_running(pid)));
    assert!(!env.socket().exists(), "stale socket left behind");
    assert!(!env.pid_file().exists(), "stale pid file left behind");
}

/// Without the settings a plain `daemon stop` never SIGKILLs (the default stays safe), and a
/// broken elhaz.toml does not keep a daemon from being stopped.
#[test]
fn default_stop_does_not_force_and_survives_a_broken_settings_file() {
    let env = TestEnv::new();
    let d = env.start_daemon_detached(&[]);
    let pid = d.pid;
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    let out = env.run_fail(&["daemon", "stop", "--timeout", "1"]);
    assert_contains(&stderr(&out), &["did not exit within 1s"]);
    assert!(pid_running(pid), "a default stop killed the daemon");
    env.write_settings("stop_force = \"yes please\"\n");
    let out = env.run_ok(&["daemon", "stop", "--timeout", "1", "--force"]);
    assert_contains(&stderr(&out), &["warning: ignoring"]);
    assert_contains(
        &stdout(&out),
        &[&format!("elhaz daemon killed (pid {pid})")],
    );
    assert!(wait_until(Duration::from_secs(10), || !pid_running(pid)));
}
