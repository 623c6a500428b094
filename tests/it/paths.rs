//! `elhaz paths` and the `ELHAZ_HOME` / `ELHAZ_SOCKET` layout.

use crate::util::*;

#[test]
fn paths_json_shows_the_elhaz_home_layout() {
    let env = TestEnv::new();
    let out = env.run_ok(&["paths", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&out)));
    let home = env.home();
    let want = |rel: &str| home.join(rel).to_str().unwrap().to_string();
    for (key, rel) in [
        ("configs_dir", "configs"),
        ("settings_file", "elhaz.toml"),
        ("run_dir", "run"),
        ("socket", "run/elhaz.sock"),
        ("lock_file", "run/elhaz.lock"),
        ("pid_file", "run/elhaz.pid"),
        ("log_dir", "logs"),
    ] {
        assert_eq!(v[key].as_str(), Some(want(rel).as_str()), "{key} in {v}");
    }
    // Nothing was created by asking.
    assert_eq!(std::fs::read_dir(home).unwrap().count(), 0);

    let out = env.run_ok(&["paths"]);
    let text = stdout(&out);
    assert_contains(
        &text,
        &[&want("configs"), &want("run/elhaz.sock"), &want("logs")],
    );

    // A relative ELHAZ_HOME is made absolute (against the cwd).
    let mut cmd = env.cmd(&["paths", "--json"]);
    cmd.env("ELHAZ_HOME", "home");
    let v: serde_json::Value = serde_json::from_slice(&cmd_ok(&mut cmd).stdout).unwrap();
    assert_eq!(v["socket"].as_str(), Some(want("run/elhaz.sock").as_str()));
}

#[test]
fn elhaz_socket_moves_only_the_socket() {
    let env = TestEnv::new();
    let custom_dir = env.scratch("sockets");
    let custom = custom_dir.join("custom.sock");
    env.set_env("ELHAZ_SOCKET", &custom);
    assert_eq!(env.socket(), custom);

    let out = env.run_ok(&["paths", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["socket"].as_str(), custom.to_str(), "{v}");
    let run = env.run_dir();
    assert_eq!(v["run_dir"].as_str(), run.to_str(), "{v}");
    assert_eq!(
        v["lock_file"].as_str(),
        run.join("elhaz.lock").to_str(),
        "{v}"
    );
    assert_eq!(
        v["pid_file"].as_str(),
        run.join("elhaz.pid").to_str(),
        "{v}"
    );

    let d = env.start_daemon_detached(&[]);
    assert!(custom.exists(), "no socket at {}", custom.display());
    assert_eq!(mode_of(&custom), 0o600);
    assert_eq!(mode_of(&custom_dir), 0o700);
    assert!(
        !run.join("elhaz.sock").exists(),
        "socket also in the run dir"
    );
    assert!(env.lock_file().exists());
    assert_eq!(env.pid_from_file(), Some(d.pid));
    let s = env.status_json();
    assert_eq!(s["socket"].as_str(), custom.to_str(), "{s}");
    // It serves there: a raw ping on the custom socket.
    let mut c = RawConn::connect(&custom);
    let reply = c.request(r#"{"protocol":4,"id":1,"op":"ping"}"#);
    assert_eq!(reply["ok"]["pid"], d.pid, "{reply}");
    // Without ELHAZ_SOCKET the CLI looks in the run dir, and the single-instance lock (which
    // stays in the run dir) still holds.
    let mut cmd = env.cmd(&["daemon", "status"]);
    cmd.env_remove("ELHAZ_SOCKET");
    cmd_code(&mut cmd, 3);
    let mut cmd = env.cmd(&["daemon", "start", "--foreground"]);
    cmd.env_remove("ELHAZ_SOCKET");
    let out = cmd_ok(&mut cmd);
    assert_contains(&stderr(&out), &["already running"]);
    assert!(!run.join("elhaz.sock").exists());

    env.run_ok(&["daemon", "stop"]);
    assert!(!custom.exists(), "custom socket left after stop");
    assert!(!pid_running(d.pid));
}
