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
