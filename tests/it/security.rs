//! Socket and file security: private modes whatever the umask, and the daemon's peer-uid
//! check, which holds even when the socket's mode is loosened by hand.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::util::*;

#[track_caller]
fn assert_mode(p: &Path, want: u32) {
    let got = mode_of(p);
    assert_eq!(got, want, "{} has mode {got:o}, want {want:o}", p.display());
}

#[test]
fn everything_is_private_under_umask_000() {
    let env = TestEnv::new();
    // Config store first (creates configs/ and the store lock), then a detached daemon, all
    // under umask 000.
    cmd_ok(&mut env.cmd_umask(0o000, &["config", "add", "dev", "--role-arn", ROLE_ARN]));
    let out = cmd_ok(&mut env.cmd_umask(0o000, &["daemon", "start"]));
    let pid = parse_pid(&stdout(&out)).expect("pid");
    let _d = DetachedDaemon::adopt(&env, pid);
    assert!(env.wait_for_log("daemon started"));
    // An edit (atomic rewrite) keeps the mode too.
    let script = env.write_scratch(
        "edit.sh",
        "#!/bin/sh\n{ printf 'description = \"edited\"\\n'; cat \"$1\"; } > \"$1.new\" && mv \"$1.new\" \"$1\"\n",
    );
    chmod(&script, 0o755);
    let mut edit = env.cmd_umask(0o000, &["config", "edit", "dev"]);
    edit.env("EDITOR", &script);
    cmd_ok(&mut edit);

    assert_mode(&env.run_dir(), 0o700);
    let sock_meta = std::fs::symlink_metadata(env.socket()).unwrap();
    assert!(sock_meta.file_type().is_socket());
    assert_mode(&env.socket(), 0o600);
    assert_mode(&env.lock_file(), 0o600);
    assert_mode(&env.pid_file(), 0o600);
    assert_mode(&env.log_dir(), 0o700);
    let mut logs = 0;
    for e in std::fs::read_dir(env.log_dir()).unwrap() {
        let p = e.unwrap().path();
        assert_mode(&p, 0o600);
        logs += 1;
    }
    assert!(logs >= 1, "no log file");
    assert_mode(&env.configs_dir(), 0o700);
    assert_mode(&env.config_file("dev"), 0o600);
    assert_mode(&env.configs_dir().join(".lock"), 0o600);
    assert_contains(
        &std::fs::read_to_string(env.config_file("dev")).unwrap(),
        &["edited"],
    );
}

#[test]
fn a_loose_run_dir_is_tightened_at_start() {
    let env = TestEnv::new();
    std::fs::create_dir(env.run_dir()).unwrap();
    // Writable by others: someone may have planted something in it; refused, not tightened.
    chmod(&env.run_dir(), 0o777);
    let out = env.run_fail(&["daemon", "start"]);
    let fix = format!("chmod go-w {}", env.run_dir().display());
    assert_contains(&stderr(&out), &[fix.as_str()]);
    // Readable by others only: tightened.
    chmod(&env.run_dir(), 0o755);
    let _d = env.start_daemon_foreground(&[]);
    assert_mode(&env.run_dir(), 0o700);
    assert_mode(&env.socket(), 0o600);
}

#[test]
fn the_socket_path_must_be_a_socket() {
    let env = TestEnv::new();
    std::fs::create_dir(env.run_dir()).unwrap();
    chmod(&env.run_dir(), 0o700);
    std::fs::write(env.socket(), "precious").unwrap();
    let out = env.run_fail(&["daemon", "start"]);
    assert_contains(
        &stderr(&out),
        &["not a socket", env.socket().to_str().unwrap()],
    );
    assert_eq!(std::fs::read_to_string(env.socket()).unwrap(), "precious");
}

const OTHER_USER: &str = "elhaz-test-other";

/// The other test user's uid and gid, creating the user if needed (root only).
fn other_user() -> Option<(u32, u32)> {
    let lookup = || {
        nix::unistd::User::from_name(OTHER_USER)
            .ok()
            .flatten()
            .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
    };
    if let Some(ids) = lookup() {
        return Some(ids);
    }
    // Tolerate a concurrent creation (exit 9: the user exists).
    let out = std::process::Command::new("useradd")
        .args(["-M", "-r", "-s", "/usr/sbin/nologin", OTHER_USER])
        .output();
    match out {
        Ok(o) if o.status.success() || o.status.code() == Some(9) => {}
        Ok(o) => {
            skipped_check(&format!(
                "useradd {OTHER_USER} failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            return None;
        }
        Err(e) => {
            skipped_check(&format!("cannot run useradd: {e}"));
            return None;
        }
    }
    let ids = lookup();
    if ids.is_none() {
        skipped_check(&format!("{OTHER_USER} not found after useradd"));
    }
    ids
}

#[test]
fn another_uid_is_refused() {
    let env = TestEnv::new();
    let mut d = env.start_daemon_foreground(&[]);
    // What can be asserted as any user: the default modes keep others out.
    assert_mode(&env.run_dir(), 0o700);
    assert_mode(&env.socket(), 0o600);

    if !is_root() {
        skipped_check("not root: cannot run `elhaz daemon status` as another uid");
        env.run_ok(&["daemon", "status"]);
        return;
    }
    let Some((uid, gid)) = other_user() else {
        env.run_ok(&["daemon", "status"]);
        return;
    };
    assert_ne!(uid, 0);
    // Let the other user walk to the run dir, which stays 0700.
    chmod(env.root(), 0o755);
    chmod(env.home(), 0o755);
    let as_other = || {
        let mut cmd = env.command(bin_for_any_uid());
        cmd.args(["daemon", "status"])
            .uid(uid)
            .gid(gid)
            .current_dir("/");
        cmd
    };

    // 1. Default modes: the kernel keeps the other uid away from the socket.
    let mut cmd = as_other();
    let out = output_of(&mut cmd);
    assert!(
        !out.status.success(),
        "another uid reached the daemon through a 0700 run dir{}",
        describe(&cmd, &out)
    );
    if stderr(&out).contains("cannot execute") || out.status.code() == Some(126) {
        skipped_check(&format!(
            "{OTHER_USER} cannot execute {}",
            bin_for_any_uid().display()
        ));
        return;
    }
    assert_contains(&stderr(&out), &["ermission denied"]);
    assert!(
        !env.log_text().contains("refused connection"),
        "the daemon saw a connection it should never have received"
    );

    // 2. Modes loosened by hand: the kernel lets it connect; the other uid's CLI refuses a
    // daemon that is not its own before sending anything, and told to trust it as a shared
    // daemon of root's, the daemon still refuses.
    chmod(&env.run_dir(), 0o755);
    chmod(&env.socket(), 0o666);
    let mut cmd = as_other();
    let out = output_of(&mut cmd);
    assert_contains(&stderr(&out), &["refusing the daemon", "runs as uid 0"]);
    let mut cmd = as_other();
    cmd.env("ELHAZ_HOME", "/nonexistent/elhaz-home")
        .env("ELHAZ_SHARED_SOCKET", env.socket())
        .env("ELHAZ_SHARED", "root")
        .env("ELHAZ_AUTOSTART", "0");
    let out = output_of(&mut cmd);
    assert!(
        !out.status.success(),
        "the daemon served another uid{}",
        describe(&cmd, &out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("permission denied") && !err.contains("os error"),
        "expected the daemon's own refusal, not an I/O error{}",
        describe(&cmd, &out)
    );
    assert!(
        !stdout(&out).contains("is running"),
        "{}",
        describe(&cmd, &out)
    );

    // The owner is still served, and the refusal is logged with the peer's uid.
    assert!(d.try_wait().is_none(), "the daemon died{}", d.report());
    let out = env.run_ok(&["daemon", "status"]);
    assert_contains(&stdout(&out), &["is running"]);
    assert!(
        env.wait_for_log("refused connection"),
        "no refusal in the log:\n{}",
        env.log_text()
    );
    let log = env.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("refused connection"))
        .unwrap();
    assert_contains(line, &[&format!("peer_uid={uid}")]);
}

/// A refused client (here: over `max_connections_per_client`) gets the daemon's reason even
/// when the daemon replied and closed before the client wrote its request (its write then
/// fails with a broken pipe, but the reply is waiting to be read).
#[test]
fn a_refused_client_gets_the_daemons_reason_even_after_a_broken_pipe() {
    use elhaz::protocol::Request;
    let env = TestEnv::new();
    env.write_settings("max_connections_per_client = 1\n");
    let mut d = env.start_daemon_foreground(&[]);
    // Hold the one slot (retrying while the readiness probe's connection is still counted).
    let mut holder = None;
    assert!(
        wait_until(DEADLINE, || {
            let mut c = env.raw();
            c.send_frame(br#"{"protocol":4,"id":1,"op":"ping"}"#);
            let served = c
                .read_frame()
                .is_ok_and(|p| p.windows(4).any(|w| w == b"pong"));
            if served {
                holder = Some(c);
            }
            served
        }),
        "never got the connection slot{}",
        d.report()
    );
    // A second connection is refused before the daemon reads anything; wait for the refusal
    // (logged just before the reply and close), then write.
    let mut client = elhaz::client::Client::connect(&env.socket()).unwrap();
    assert!(env.wait_for_log("per-client connection limit"));
    let err = client.call(Request::Status).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("too many connections") && !msg.contains("lost the connection"),
        "{msg}"
    );
    // The CLI says the same.
    let out = env.run_fail(&["daemon", "status"]);
    assert_contains(&stderr(&out), &["too many connections"]);
    // And the holder is still served.
    let mut holder = holder.unwrap();
    let reply = holder.request(r#"{"protocol":4,"id":2,"op":"status"}"#);
    assert_eq!(reply["ok"]["kind"], "status", "{reply}");
    assert!(d.try_wait().is_none());
}
