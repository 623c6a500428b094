//! `ELHAZ_NO_DAEMON=1`: the broker runs inside the CLI; no daemon, no socket.

use crate::util::*;

#[test]
fn daemon_add_in_process_needs_no_daemon() {
    let env = TestEnv::new();
    let sts = crate::fake_sts::FakeSts::start();
    crate::moto::aws_env(&env, &sts.url());
    env.add_config("dev");
    let mut cmd = env.cmd(&["daemon", "add", "dev"]);
    cmd.env("ELHAZ_NO_DAEMON", "1");
    let out = cmd_ok(&mut cmd);
    assert_contains(&stdout(&out), &["session dev loaded"]);
    assert!(!env.socket().exists(), "a socket was created");
    assert!(!env.run_dir().exists(), "a run dir was created");
    assert!(env.pid_from_file().is_none());
    env.run_code(&["daemon", "status"], 3);
    // The in-process broker did the work itself.
    assert_eq!(
        sts.calls()
            .iter()
            .map(|c| c.action.as_str())
            .collect::<Vec<_>>(),
        ["AssumeRole"]
    );

    // Errors come from the same handlers the daemon runs.
    let mut cmd = env.cmd(&["daemon", "add", "nope"]);
    cmd.env("ELHAZ_NO_DAEMON", "1");
    let out = cmd_fail(&mut cmd);
    assert_contains(&stderr(&out), &["no session config", "nope"]);
    let mut cmd = env.cmd(&["daemon", "add", "../x"]);
    cmd.env("ELHAZ_NO_DAEMON", "1");
    let out = cmd_fail(&mut cmd);
    assert_contains(&stderr(&out), &["invalid session name"]);
    assert!(!env.socket().exists());

    // Even with autostart disabled.
    let mut cmd = env.cmd(&["daemon", "add", "dev"]);
    cmd.env("ELHAZ_NO_DAEMON", "1").env("ELHAZ_AUTOSTART", "0");
    cmd_ok(&mut cmd);
    assert!(!env.socket().exists());
}
