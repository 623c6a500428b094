//! The two binaries (#12): the lean `elhaz` serves `credential-process` and `exec` from a
//! running daemon by itself and hands everything else to the `elhaz-full` next to it.
//!
//! To tell which binary answered, some tests run a copy of `elhaz` in a directory *without*
//! `elhaz-full`: what works there was served by the lean binary alone; what needs
//! `elhaz-full` fails saying so, with the reason it was needed. The rest compares the two
//! binaries' output for the same cached credentials, byte for byte.

use std::path::{Path, PathBuf};

use crate::moto::{Moto, aws_env};
use crate::util::{BIN, TestEnv, assert_contains, cmd_fail, cmd_ok, stderr, stdout};

/// `elhaz-full`, next to the binary under test.
fn full() -> PathBuf {
    Path::new(BIN).with_file_name("elhaz-full")
}

/// A copy of the lean `elhaz` alone in a directory of the test's (no `elhaz-full` beside it).
fn lone_elhaz(env: &TestEnv) -> PathBuf {
    let dir = env.scratch("lone");
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("elhaz");
    std::fs::copy(BIN, &bin).unwrap();
    bin
}

/// An environment with moto and session `dev` loaded into a running daemon.
fn with_daemon() -> (TestEnv, Moto) {
    let env = TestEnv::new();
    let moto = Moto::start(env.root());
    aws_env(&env, &moto.url());
    env.run_ok(&[
        "config",
        "add",
        "dev",
        "--role-arn",
        "arn:aws:iam::123456789012:role/dev",
        "--duration",
        "1h",
    ]);
    env.run_ok(&["daemon", "add", "dev"]);
    (env, moto)
}

#[test]
fn the_lean_elhaz_alone_serves_a_running_daemon() {
    let (env, _moto) = with_daemon();
    let lone = lone_elhaz(&env);
    let run = |args: &[&str]| {
        let mut cmd = env.command(&lone);
        cmd.args(args);
        cmd
    };
    // Credentials, printed and exported, with no elhaz-full to hand anything to.
    let out = cmd_ok(&mut run(&["credential-process", "dev"]));
    assert_contains(&stdout(&out), &[r#"{"Version":1,"AccessKeyId":"#]);
    let out = cmd_ok(&mut run(&[
        "exec",
        "dev",
        "--",
        "sh",
        "-c",
        "echo $ELHAZ_SESSION",
    ]));
    assert_eq!(stdout(&out), "dev\n");
    // A plain error from the daemon is said here, with the hint, as elhaz-full says it.
    let lean = cmd_fail(&mut run(&["credential-process", "deb"]));
    let full = cmd_fail(env.command(full()).args(["credential-process", "deb"]));
    assert_contains(&stderr(&lean), &["did you mean `dev`?"]);
    assert_eq!(stderr(&lean), stderr(&full));
    assert_eq!(lean.status.code(), full.status.code());
}

#[test]
fn the_lean_elhaz_alone_says_why_it_needed_elhaz_full() {
    let env = TestEnv::new();
    let lone = lone_elhaz(&env);
    // No daemon runs: starting one is elhaz-full's job, and the reason is said.
    let out = cmd_fail(env.command(&lone).args(["credential-process", "dev"]));
    let err = stderr(&out);
    assert_contains(&err, &["no elhaz daemon is running"]);
    assert_contains(&err, &["elhaz-full"]);
    assert_eq!(out.status.code(), Some(1));
    // Any other command goes to elhaz-full directly.
    let out = cmd_fail(env.command(&lone).args(["config", "list"]));
    assert_contains(&stderr(&out), &["hands everything else to elhaz-full"]);
}

#[test]
fn both_binaries_print_the_same_credentials_and_environment() {
    let (env, _moto) = with_daemon();
    let full_cmd = |args: &[&str]| {
        let mut cmd = env.command(full());
        cmd.args(args);
        cmd
    };
    let lean = cmd_ok(&mut env.cmd(&["credential-process", "dev"]));
    let full = cmd_ok(&mut full_cmd(&["credential-process", "dev"]));
    assert_eq!(stdout(&lean), stdout(&full));
    let show = [
        "exec",
        "dev",
        "--",
        "sh",
        "-c",
        "env | grep -E '^(AWS|ELHAZ)_' | sort",
    ];
    let lean = cmd_ok(&mut env.cmd(&show));
    let full = cmd_ok(&mut full_cmd(&show));
    assert_eq!(stdout(&lean), stdout(&full));
    assert_contains(&stdout(&lean), &["AWS_SESSION_TOKEN="]);
}

#[cfg(target_os = "linux")]
#[test]
fn a_daemon_started_through_either_binary_shows_as_elhaz() {
    let env = TestEnv::new();
    env.run_ok(&["daemon", "start"]);
    let pid = std::fs::read_to_string(env.home().join("run/elhaz.pid")).unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap();
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap();
    let want = std::fs::canonicalize(BIN).unwrap();
    assert_eq!(argv0, want.as_os_str().as_encoded_bytes());
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", pid.trim())).unwrap();
    assert_eq!(comm.trim(), "elhaz-full", "the image is the full binary");
}
