//! Hardening, isolation: another uid can neither reach the socket nor read any of elhaz's
//! files (even with the directories loosened by hand), a daemon's memory and environment are
//! closed to its own uid (PR_SET_DUMPABLE 0), and the secrets STS issues never reach a file
//! under ELHAZ_HOME, a log (even at trace level), `ps`, a process environment or the
//! generated AWS config.
//!
//! These run as root (as CI does) with a system user `elhaz-hard-other`, created if missing.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::fake_sts::FakeSts;
use crate::hardening::*;
use crate::moto::{Moto, add_sts_config, aws_env};
use crate::util::*;

/// Every file a personal daemon and its CLI create under `home`: configs, the store lock,
/// logs, the audit log, the instance lock and the pid file. (`elhaz.toml` is the user's own
/// file — elhaz never writes it — so its mode is the user's business.)
fn private_files(env: &TestEnv) -> Vec<PathBuf> {
    let mut files = vec![
        env.config_file("iso"),
        env.configs_dir().join(".lock"),
        env.lock_file(),
        env.pid_file(),
    ];
    let logs: Vec<PathBuf> = std::fs::read_dir(env.log_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert!(
        logs.iter().any(|p| p.to_string_lossy().contains("/audit.")),
        "no audit log in {logs:?}"
    );
    assert!(
        logs.iter().any(|p| p.to_string_lossy().contains("/elhaz.")),
        "no daemon log in {logs:?}"
    );
    files.extend(logs);
    for f in &files {
        assert!(f.is_file(), "{} is missing", f.display());
    }
    files
}

/// `elhaz daemon status` as `uid` against `home`'s daemon: (succeeded, stderr).
fn status_as(uid: u32, gid: u32, home: &Path) -> (bool, String) {
    let mut cmd = std::process::Command::new(bin_for_any_uid());
    cmd.args(["daemon", "status"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("ELHAZ_HOME", home)
        .env("ELHAZ_AUTOSTART", "0")
        .env("ELHAZ_SHARED_SOCKET", "/nonexistent/elhaz.sock")
        .uid(uid)
        .gid(gid)
        .current_dir("/");
    let (status, out, _) = run_limited(&mut cmd, Duration::from_secs(20));
    assert!(
        status.is_some(),
        "daemon status hung{}",
        describe(&cmd, &out)
    );
    (out.status.success(), stderr(&out))
}

/// `elhaz daemon status` as `uid`, told that the daemon on `socket` is a shared daemon run by
/// root (`ELHAZ_SHARED=root`): its CLI then sends the request, so the daemon's own peer check
/// is what refuses it. (Pointed at it as its own socket, the CLI refuses before sending.)
fn status_via_shared(uid: u32, gid: u32, socket: &Path) -> (bool, String) {
    let mut cmd = std::process::Command::new(bin_for_any_uid());
    cmd.args(["daemon", "status"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("ELHAZ_HOME", "/nonexistent/elhaz-home")
        .env("ELHAZ_AUTOSTART", "0")
        .env("ELHAZ_SHARED_SOCKET", socket)
        .env("ELHAZ_SHARED", "root")
        .uid(uid)
        .gid(gid)
        .current_dir("/");
    let (status, out, _) = run_limited(&mut cmd, Duration::from_secs(20));
    assert!(
        status.is_some(),
        "daemon status hung{}",
        describe(&cmd, &out)
    );
    (out.status.success(), stderr(&out))
}

/// Tries to read every file as `uid`; returns the ones it could read.
fn readable_as(uid: u32, gid: u32, files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .filter_map(|f| {
            let out = sh_as(
                uid,
                gid,
                r#"cat -- "$1" > /dev/null"#,
                &[f.to_str().unwrap()],
            );
            let denied = !out.status.success() && stderr(&out).contains("Permission denied");
            (!denied).then(|| format!("{} ({})", f.display(), stderr(&out).trim()))
        })
        .collect()
}

#[test]
fn another_uid_cannot_reach_the_socket_or_read_any_file() {
    let mut skipped = Vec::new();
    let env = TestEnv::new();
    let sts = FakeSts::start();
    aws_env(&env, &sts.url());
    add_sts_config(
        &env,
        "iso",
        &sts.url(),
        &["--role-arn", "arn:aws:iam::123456789012:role/iso"],
    );
    let mut d = env.start_daemon_foreground(&[]);
    let (creds, _) = credential_process(&env, "iso");
    assert!(
        wait_until(DEADLINE, || {
            std::fs::read_dir(env.log_dir()).is_ok_and(|rd| {
                rd.flatten().any(|e| {
                    e.file_name().to_string_lossy().starts_with("audit.")
                        && std::fs::read_to_string(e.path())
                            .is_ok_and(|t| t.contains("credentials served"))
                })
            })
        }),
        "no audit record"
    );
    let files = private_files(&env);
    // Whatever the user: private modes.
    for f in &files {
        assert_eq!(mode_of(f), 0o600, "{}", f.display());
    }
    for dir in [env.configs_dir(), env.log_dir(), env.run_dir()] {
        assert_eq!(mode_of(&dir), 0o700, "{}", dir.display());
    }
    assert_eq!(mode_of(&env.socket()), 0o600);

    let Some((uid, gid)) = other_user(&mut skipped) else {
        record(
            "isolation_other_uid",
            "isolation",
            true,
            "isolation: SKIPPED (no second uid); private modes checked",
            json!({"skipped": skipped}),
        );
        return;
    };
    assert_ne!(uid, 0);
    // Test scaffolding only: let the other uid walk to ELHAZ_HOME (the temp dir is 0700).
    chmod(env.root(), 0o755);
    chmod(env.home(), 0o755);
    let bin = bin_for_any_uid();
    let probe = sh_as(uid, gid, "test -x \"$1\"", &[bin.to_str().unwrap()]);
    if !probe.status.success() {
        skip(
            &mut skipped,
            &format!("{OTHER_USER} cannot execute {}", bin.display()),
        );
    }
    let can_exec = probe.status.success();

    // Layer 1: as elhaz created them (0700 directories, 0600 files).
    let read1 = readable_as(uid, gid, &files);
    let (sock1, err1) = if can_exec {
        status_as(uid, gid, env.home())
    } else {
        (false, "Permission denied".into())
    };
    // Layer 2: directories loosened by hand — the files' own modes still hold, and the
    // socket's 0600 keeps `connect` out.
    for dir in [env.configs_dir(), env.log_dir(), env.run_dir()] {
        chmod(&dir, 0o755);
    }
    let read2 = readable_as(uid, gid, &files);
    let (sock2, err2) = if can_exec {
        status_as(uid, gid, env.home())
    } else {
        (false, "Permission denied".into())
    };
    // Layer 3: the socket too: the other uid's CLI refuses a daemon that is not its own
    // before sending anything, and told to trust it, the daemon itself refuses the peer uid.
    chmod(&env.socket(), 0o666);
    let (sock3, err3) = if can_exec {
        let (sock, err) = status_as(uid, gid, env.home());
        assert!(
            !sock && err.contains("refusing the daemon") && err.contains("runs as uid 0"),
            "the other uid's CLI did not refuse a daemon of uid 0: {err}"
        );
        status_via_shared(uid, gid, &env.socket())
    } else {
        (false, "permission denied".into())
    };
    chmod(&env.socket(), 0o600);
    for dir in [env.configs_dir(), env.log_dir(), env.run_dir()] {
        chmod(&dir, 0o700);
    }
    // The daemon's environment and memory.
    let pid = d.pid().to_string();
    let proc_files: Vec<PathBuf> = ["environ", "mem", "maps"]
        .iter()
        .map(|f| PathBuf::from(format!("/proc/{pid}/{f}")))
        .collect();
    let read_proc = readable_as(uid, gid, &proc_files);
    // The owner is still served.
    let (again, _) = credential_process(&env, "iso");
    let owner_served = again["AccessKeyId"] == creds["AccessKeyId"] && d.try_wait().is_none();
    let refused_logged = env.wait_for_log("refused connection");

    let denied = files.len() * 2 + proc_files.len() - read1.len() - read2.len() - read_proc.len();
    let tried = files.len() * 2 + proc_files.len();
    let socket_denied = !sock1 && !sock2 && !sock3;
    let line = format!(
        "isolation: uid {uid} denied {denied}/{tried} file reads ({} files x 2 layers of \
         directory modes + /proc/PID/{{environ,mem,maps}}), socket refused 3/3 (kernel twice, \
         daemon by peer uid once, logged {refused_logged}), owner served {owner_served}",
        files.len()
    );
    let ok = read1.is_empty()
        && read2.is_empty()
        && read_proc.is_empty()
        && socket_denied
        && err1.contains("ermission denied")
        && err2.contains("ermission denied")
        && err3.contains("ermission denied")
        && owner_served
        && (refused_logged || !can_exec);
    record(
        "isolation_other_uid",
        "isolation",
        ok,
        &line,
        json!({"denied": denied, "tried": tried, "skipped": skipped}),
    );
    assert!(
        read1.is_empty(),
        "readable by uid {uid} as created: {read1:?}"
    );
    assert!(
        read2.is_empty(),
        "readable by uid {uid} with loose directories: {read2:?}"
    );
    assert!(
        read_proc.is_empty(),
        "the daemon's /proc files are readable by uid {uid}: {read_proc:?}"
    );
    assert!(socket_denied, "another uid was served: {line}");
    for e in [&err1, &err2, &err3] {
        assert!(
            e.contains("ermission denied"),
            "not a permission error: {e}"
        );
    }
    assert!(owner_served, "{line}");
    assert!(refused_logged || !can_exec, "the refusal was not logged");
}

#[test]
fn the_daemon_is_not_dumpable_even_for_its_own_uid() {
    let mut skipped = Vec::new();
    let env = TestEnv::new();
    let Some((uid, gid)) = other_user(&mut skipped) else {
        // As any user: a daemon we own still hides its environment from a same-uid reader
        // only if we are not root; nothing meaningful to check here.
        let _d = env.start_daemon_foreground(&[]);
        env.run_ok(&["daemon", "status"]);
        record(
            "isolation_not_dumpable",
            "isolation",
            true,
            "isolation: not dumpable: SKIPPED (no second uid)",
            json!({"skipped": skipped}),
        );
        return;
    };
    // A daemon run by the other user, in a home it owns.
    chmod(env.root(), 0o755);
    let home = env.scratch("other-home");
    std::fs::create_dir(&home).unwrap();
    nix::unistd::chown(
        &home,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .unwrap();
    chmod(&home, 0o700);
    let mut cmd = std::process::Command::new(bin_for_any_uid());
    cmd.args(["daemon", "start", "--foreground"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("ELHAZ_HOME", &home)
        .env("ELHAZ_SHARED_SOCKET", "/nonexistent/elhaz.sock")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("ELHAZ_HARDENING_MARKER", "visible-only-to-root")
        .uid(uid)
        .gid(gid)
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(env.scratch("other.out")).unwrap())
        .stderr(std::fs::File::create(env.scratch("other.err")).unwrap());
    let mut child = ChildGuard(cmd.spawn().unwrap());
    let pid = child.pid();
    // The pid file is written before the socket is bound: wait for both.
    let up = wait_until(DEADLINE, || {
        std::fs::read_to_string(home.join("run/elhaz.pid"))
            .is_ok_and(|p| p.trim() == pid.to_string())
            && home.join("run/elhaz.sock").exists()
    });
    assert!(
        up && child.0.try_wait().unwrap().is_none(),
        "the other user's daemon did not start: {}",
        std::fs::read_to_string(env.scratch("other.err")).unwrap_or_default()
    );
    // Its own uid is served...
    let (served, err) = status_as(uid, gid, &home);
    // ...but cannot read its environment or memory: PR_SET_DUMPABLE 0 makes /proc/PID/*
    // root's. A process of the same uid that is dumpable (this shell) stays readable.
    let environ = format!("/proc/{pid}/environ");
    let own = sh_as(
        uid,
        gid,
        r#"cat "$1" > /dev/null && cat /proc/$$/environ > /dev/null"#,
        &[&environ],
    );
    let control = sh_as(uid, gid, "cat /proc/$$/environ > /dev/null", &[]);
    let environ_denied = !own.status.success() && stderr(&own).contains("Permission denied");
    let mem = sh_as(
        uid,
        gid,
        r#"cat "$1" > /dev/null"#,
        &[&format!("/proc/{pid}/mem")],
    );
    let mem_denied = !mem.status.success();
    let root_sees = std::fs::read(&environ).is_ok_and(|e| count(&e, b"visible-only-to-root") == 1);
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let no_core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .is_some_and(|l| {
            l.split_whitespace().nth(4) == Some("0") && l.split_whitespace().nth(5) == Some("0")
        });
    let line = format!(
        "isolation: a daemon of uid {uid} serves its uid {served}, which cannot read its \
         /proc/PID/environ ({environ_denied}) or mem ({mem_denied}) while reading its own \
         shell's ({}); root can ({root_sees}); core dumps off {no_core}",
        control.status.success()
    );
    let ok = served && environ_denied && mem_denied && control.status.success() && no_core;
    record(
        "isolation_not_dumpable",
        "isolation",
        ok,
        &line,
        json!({"skipped": skipped}),
    );
    assert!(served, "the owner uid was not served: {err}");
    assert!(
        control.status.success(),
        "control read failed: {}",
        stderr(&control)
    );
    assert!(
        environ_denied,
        "same-uid read of the daemon's environ: {}",
        stderr(&own)
    );
    assert!(mem_denied);
    assert!(no_core, "{limits}");
    drop(child);
}

// ---------------------------------------------------------------------------------------

/// Occurrences of `needle` in `hay`.
fn count(hay: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() || hay.len() < needle.len() {
        return 0;
    }
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Every regular file under `dir` (not following symlinks): (path, bytes).
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push((e.path(), std::fs::read(e.path()).unwrap_or_default()));
            }
        }
    }
    out
}

/// Where each secret was found in `places`.
fn scan(places: &[(String, Vec<u8>)], secrets: &[(String, String)]) -> Vec<String> {
    let mut hits = Vec::new();
    for (place, bytes) in places {
        for (what, s) in secrets {
            let n = count(bytes, s.as_bytes());
            if n > 0 {
                hits.push(format!("{what} x{n} in {place}"));
            }
        }
    }
    hits
}

#[test]
fn secrets_never_reach_disk_logs_argv_or_environ() {
    let mut skipped = Vec::new();
    let env = TestEnv::new();
    let moto = Moto::start(env.root());
    aws_env(&env, &moto.url());
    env.set_env("ELHAZ_LOG", "trace");
    add_sts_config(
        &env,
        "sec",
        &moto.url(),
        &["--role-arn", "arn:aws:iam::123456789012:role/sec"],
    );
    // Autostarted (so the daemon inherits ELHAZ_LOG=trace), two generations of credentials.
    let (c1, _) = credential_process(&env, "sec");
    let pid = env.pid_from_file().expect("a daemon pid");
    env.run_ok(&["daemon", "remove", "sec"]);
    let (c2, _) = credential_process(&env, "sec");
    assert_ne!(
        c1["SecretAccessKey"], c2["SecretAccessKey"],
        "moto issued the same secret twice"
    );
    let mut secrets: Vec<(String, String)> = Vec::new();
    for (generation, c) in [(1, &c1), (2, &c2)] {
        for k in ["SecretAccessKey", "SessionToken"] {
            let v = c[k].as_str().unwrap().to_string();
            assert!(
                v.len() >= 16,
                "{k} of generation {generation} is too short to scan for: {v:?}"
            );
            secrets.push((format!("{k} #{generation}"), v));
        }
    }
    // The consumers that write or print something: exec (env), exec --refreshing (a
    // generated AWS config, from a user config holding static keys), whoami, daemon list.
    let user_config = env.write_scratch(
        "user-aws-config",
        "[default]\nregion = eu-west-1\naws_access_key_id = AKIANOTAKEYSHOULDNOTCOPY\n\
         aws_secret_access_key = NOT_A_SECRET_SHOULD_NOT_COPY\n\n[profile other]\n\
         region = us-west-2\naws_session_token = NOT_A_TOKEN_SHOULD_NOT_COPY\n",
    );
    let mut exec = env.cmd(&[
        "exec",
        "--refreshing",
        "sec",
        "--",
        "sh",
        "-c",
        r#"cat "$AWS_CONFIG_FILE""#,
    ]);
    exec.env("AWS_CONFIG_FILE", &user_config);
    let out = limited_ok(&mut exec, Duration::from_secs(60));
    // The child printed the generated config; the file itself went when the child exited.
    let generated = stdout(&out);
    let left: Vec<_> = std::fs::read_dir(env.run_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("aws-config-"))
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "generated config left behind: {left:?}");
    assert_contains(
        &generated,
        &[
            "credential_process",
            "credential-process -- sec",
            "region = eu-west-1",
        ],
    );
    let user_keys_copied = [
        "NOT_A_SECRET_SHOULD_NOT_COPY",
        "NOT_A_TOKEN_SHOULD_NOT_COPY",
        "AKIANOTAKEYSHOULDNOTCOPY",
    ]
    .iter()
    .filter(|k| generated.contains(*k))
    .count();
    let mut plain = env.cmd(&[
        "exec",
        "sec",
        "--",
        "sh",
        "-c",
        "test -n \"$AWS_SECRET_ACCESS_KEY\"",
    ]);
    limited_ok(&mut plain, Duration::from_secs(60));
    limited_ok(&mut env.cmd(&["whoami", "sec"]), Duration::from_secs(60));
    let list = limited_ok(
        &mut env.cmd(&["daemon", "list", "--json"]),
        Duration::from_secs(30),
    );
    secrets.push((
        "user's aws_secret_access_key".into(),
        "NOT_A_SECRET_SHOULD_NOT_COPY".into(),
    ));
    secrets.push((
        "user's aws_session_token".into(),
        "NOT_A_TOKEN_SHOULD_NOT_COPY".into(),
    ));

    // While the daemon runs: ps, its environment and command line, every file.
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output();
    let mut places: Vec<(String, Vec<u8>)> = Vec::new();
    match ps {
        Ok(o) if o.status.success() => places.push(("ps -eo args".into(), o.stdout)),
        _ => skip(&mut skipped, "cannot run ps"),
    }
    places.push(("daemon list --json".into(), list.stdout));
    for f in ["environ", "cmdline"] {
        let p = format!("/proc/{pid}/{f}");
        match std::fs::read(&p) {
            Ok(b) => places.push((p, b)),
            Err(e) => skip(&mut skipped, &format!("cannot read {p}: {e}")),
        }
    }
    let running_files = files_under(env.home());
    places.extend(
        running_files
            .iter()
            .map(|(p, b)| (p.display().to_string(), b.clone())),
    );
    // As another uid, the daemon's environment is closed anyway.
    let other_denied = match other_user(&mut skipped) {
        Some((uid, gid)) => {
            chmod(env.root(), 0o755);
            let o = sh_as(uid, gid, r#"cat "$1""#, &[&format!("/proc/{pid}/environ")]);
            Some(!o.status.success() && o.stdout.is_empty())
        }
        None => None,
    };
    // After a stop (the warm-sessions file is written then), every file again.
    env.run_ok(&["daemon", "stop"]);
    assert!(wait_until(DEADLINE, || !pid_running(pid)));
    let stopped_files = files_under(env.home());
    places.extend(
        stopped_files
            .iter()
            .map(|(p, b)| (format!("{} (after stop)", p.display()), b.clone())),
    );
    let warm_file = stopped_files
        .iter()
        .any(|(p, b)| p.ends_with("logs/warm-sessions") && count(b, b"sec") == 1);
    let log: Vec<u8> = stopped_files
        .iter()
        .filter(|(p, _)| p.to_string_lossy().contains("/logs/elhaz."))
        .flat_map(|(_, b)| b.clone())
        .collect();
    let trace_lines = count(&log, b" TRACE ");
    let hits = scan(&places, &secrets);
    let bytes: usize = places.iter().map(|(_, b)| b.len()).sum();
    let line = format!(
        "secrets: {} secret strings (2 STS generations + the user's static keys) searched in \
         {} files under ELHAZ_HOME (running and stopped, incl. a trace log of {trace_lines} \
         TRACE lines, the audit log, the warm file; the generated AWS config as the child saw it), ps, \
         /proc/PID/{{environ,cmdline}}, daemon list ({:.1} MB): {} found; user static keys \
         copied into the generated config: {user_keys_copied}; other uid reads environ: {}",
        secrets.len(),
        running_files.len() + stopped_files.len(),
        bytes as f64 / 1e6,
        hits.len(),
        match other_denied {
            Some(true) => "denied",
            Some(false) => "ALLOWED",
            None => "not tried",
        }
    );
    let ok = hits.is_empty()
        && user_keys_copied == 0
        && trace_lines > 0
        && warm_file
        && other_denied != Some(false);
    record(
        "isolation_secrets_scan",
        "secrets",
        ok,
        &line,
        json!({
            "secrets_found": hits.len() + user_keys_copied,
            "files_scanned": running_files.len() + stopped_files.len(),
            "bytes_scanned": bytes,
            "skipped": skipped,
        }),
    );
    assert!(hits.is_empty(), "secrets found:\n{}", hits.join("\n"));
    assert_eq!(
        user_keys_copied, 0,
        "the generated config copied static keys:\n{generated}"
    );
    assert!(
        trace_lines > 0,
        "the daemon did not log at trace level: the scan proves little"
    );
    assert!(
        warm_file,
        "no warm-sessions file naming the session after the stop"
    );
    assert_ne!(
        other_denied,
        Some(false),
        "another uid read the daemon's environment"
    );
}
