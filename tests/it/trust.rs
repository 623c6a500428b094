//! Trust nothing on the path (issue 16, points 1, 2 and part of 5), tried the way an attacker
//! sharing the host would: with a second local account (`elhaz-hard-other`, created as root).
//!
//! - An `ELHAZ_HOME` made under umask 000 whose `configs/` the other user swapped for her own:
//!   refused, and her `[mfa] command` never runs as the victim (a marker file stays absent;
//!   the same config of the victim's own does run it, so the refusal is what stopped it).
//! - A `logs/` symlink, or a symlink where today's log goes: refused, the target untouched.
//! - A config file (or `elhaz.toml`) others can write to, or owned by another uid: refused
//!   with the fix.
//! - An impostor daemon (the other uid listening on the victim's socket, `run/` replaced by
//!   her directory): receives zero bytes, and the CLI says why.
//! - A shared daemon is never used unless configured; when it is, its text reaches the terminal
//!   without control characters, and `exec` says who served it.
//! - Names starting with `-` are rejected; `exec --refreshing` writes no secret (colon form
//!   included) and deletes its generated config when the command exits, and at start-up.
//!
//! The impostor and the fake shared daemon are a few lines of Python run as the other uid (a
//! test thread cannot change uid alone); they count every byte the victim's CLI sends.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::fake_sts::FakeSts;
use crate::hardening::{OTHER_USER, other_user, record, sh_as};
use crate::moto::{add_sts_config, add_toml_config, aws_env};
use crate::util::*;

/// The other user's `(uid, gid)`, or `None` after a loud SKIPPED-CHECK line.
fn attacker(what: &str) -> Option<(u32, u32)> {
    if !is_root() {
        skipped_check(&format!("{what}: needs root to act as a second user"));
        return None;
    }
    let mut skipped = Vec::new();
    let ids = other_user(&mut skipped);
    if ids.is_none() {
        skipped_check(&format!("{what}: no second user ({skipped:?})"));
    }
    ids
}

fn mfa_config(url: &str, marker: &Path) -> String {
    format!(
        "[role]\narn = \"arn:aws:iam::123456789012:role/dev\"\n\n[mfa]\n\
         serial = \"arn:aws:iam::123456789012:mfa/victim\"\n\
         command = [\"sh\", \"-c\", \"touch '{}'; echo 123456\"]\n\n[sts]\nendpoint_url = \"{url}\"\n",
        marker.display()
    )
}

#[test]
fn a_swapped_configs_dir_is_refused_and_runs_nothing() {
    let Some((uid, gid)) = attacker("swapped configs/") else {
        return;
    };
    let env = TestEnv::new();
    let sts = FakeSts::start();
    aws_env(&env, &sts.url());
    let marker = env.scratch("marker");
    let cfg = mfa_config(&sts.url(), &marker);
    // The victim made ELHAZ_HOME under umask 000 (scaffolding: the other uid can reach it).
    chmod(env.root(), 0o755);
    chmod(env.home(), 0o777);
    let home = env.home().to_str().unwrap();
    let out = sh_as(
        uid,
        gid,
        r#"mkdir "$1/configs" && printf '%s' "$2" > "$1/configs/dev.toml""#,
        &[home, &cfg],
    );
    assert!(
        out.status.success(),
        "the attacker could not plant configs/: {out:?}"
    );

    // The victim's credential-process (autostarting the daemon): refused, nothing ran.
    let out = env.run_fail(&["credential-process", "dev"]);
    let fix = format!("chmod go-w {}", env.home().display());
    assert_contains(&stderr(&out), &[fix.as_str(), "0777"]);
    assert!(
        !marker.exists(),
        "the attacker's MFA command ran as the victim"
    );

    // ELHAZ_HOME fixed, but configs/ is still hers: refused by owner, for the CLI too (and
    // nothing of the victim's is written into it).
    chmod(env.home(), 0o700);
    let owned = format!("owned by uid {uid}");
    let configs = env.configs_dir();
    for args in [
        &["credential-process", "dev"][..],
        &["config", "show", "dev"],
        &["config", "add", "mine", "--role-arn", ROLE_ARN],
    ] {
        let out = env.run_fail(args);
        assert_contains(&stderr(&out), &[configs.to_str().unwrap(), owned.as_str()]);
    }
    assert!(!env.config_file("mine").exists());
    let ran = marker.exists();
    record(
        "trust_swapped_configs",
        "trust",
        !ran,
        &format!(
            "trust: configs/ swapped by uid {uid} into a 0777 ELHAZ_HOME refused (mode, then \
             owner); her MFA command ran as the victim: {ran}"
        ),
        serde_json::json!({"attacker_commands_run": u64::from(ran)}),
    );
    assert!(!ran, "the attacker's MFA command ran as the victim");

    // Control: the same config as the victim's own does run its command — so the refusals
    // above are what kept it from running.
    std::fs::remove_dir_all(&configs).unwrap();
    add_toml_config(&env, "dev", &cfg);
    let out = env.run_ok(&["credential-process", "dev"]);
    assert!(stdout(&out).contains("AccessKeyId"));
    assert!(
        marker.exists(),
        "control: the victim's own MFA command did not run"
    );
    eprintln!(
        "trust: swapped configs/ refused (mode, then owner uid {uid}); MFA command ran 0 times"
    );
}

fn utc_date() -> String {
    let out = Command::new("date").args(["-u", "+%F"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_logs_symlink_is_refused_and_its_target_untouched() {
    let env = TestEnv::new();
    let bashrc = env.write_scratch("bashrc", "precious\n");
    // logs/ as a link to another directory.
    let elsewhere = env.scratch("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, env.log_dir()).unwrap();
    let out = env.run_fail(&["daemon", "start"]);
    assert_contains(
        &stderr(&out),
        &[env.log_dir().to_str().unwrap(), "symbolic link"],
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

    // A link where today's log (and audit log) would be written.
    std::fs::remove_file(env.log_dir()).unwrap();
    std::fs::create_dir(env.log_dir()).unwrap();
    chmod(&env.log_dir(), 0o700);
    let today = utc_date();
    for prefix in ["elhaz", "audit"] {
        std::os::unix::fs::symlink(&bashrc, env.log_dir().join(format!("{prefix}.{today}.log")))
            .unwrap();
    }
    let out = env.run_fail(&["daemon", "start"]);
    assert_contains(&stderr(&out), &["symbolic link", &format!(".{today}.log")]);
    assert_eq!(std::fs::read_to_string(&bashrc).unwrap(), "precious\n");
    assert!(!env.socket().exists(), "a daemon came up anyway");

    let untouched = |elsewhere: &Path, bashrc: &Path| {
        std::fs::read_dir(elsewhere).unwrap().count() == 0
            && std::fs::read_to_string(bashrc).unwrap() == "precious\n"
    };
    let summary = |cases: u32, ok: bool| {
        record(
            "trust_logs_symlink",
            "trust",
            ok,
            &format!(
                "trust: {cases} symlinked logs/ setups (a logs/ link, today's log and audit \
                 files linked to ~/.bashrc{}) refused at daemon start; targets untouched: {ok}",
                if cases > 2 {
                    ", a logs/ link planted by another uid"
                } else {
                    ""
                }
            ),
            serde_json::json!({"attacker_commands_run": 0}),
        );
    };
    // Planted by another user in an ELHAZ_HOME made under umask 000: refused as well.
    let Some((uid, gid)) = attacker("logs/ symlink planted by another uid") else {
        summary(2, untouched(&elsewhere, &bashrc));
        return;
    };
    std::fs::remove_dir_all(env.log_dir()).unwrap();
    chmod(env.root(), 0o755);
    chmod(env.home(), 0o777);
    let out = sh_as(
        uid,
        gid,
        r#"ln -s "$2" "$1/logs""#,
        &[env.home().to_str().unwrap(), elsewhere.to_str().unwrap()],
    );
    assert!(out.status.success(), "{out:?}");
    let out = env.run_fail(&["daemon", "start"]);
    assert_contains(&stderr(&out), &["chmod go-w"]);
    summary(3, untouched(&elsewhere, &bashrc));
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert_eq!(std::fs::read_to_string(&bashrc).unwrap(), "precious\n");
}

#[test]
fn a_group_writable_config_is_refused_with_the_fix() {
    let env = TestEnv::new();
    env.add_config("dev");
    let file = env.config_file("dev");
    chmod(&file, 0o664);
    let fix = format!("chmod go-w {}", file.display());
    // The CLI reading it, and the daemon asked for it (the CLI reads nothing for a NAME).
    let out = env.run_fail(&["config", "show", "dev"]);
    assert_contains(&stderr(&out), &[fix.as_str(), "0664"]);
    env.set_env("ELHAZ_CLIENT_TIMEOUT", "30");
    let out = env.run_fail(&["credential-process", "dev"]);
    assert_contains(&stderr(&out), &[fix.as_str()]);
    chmod(&file, 0o600);

    // elhaz.toml, read by the CLI to resolve a missing NAME.
    env.write_settings("default_session = \"dev\"\n");
    chmod(&env.settings_file(), 0o646);
    let out = env.run_fail(&["credential-process"]);
    let fix = format!("chmod go-w {}", env.settings_file().display());
    assert_contains(&stderr(&out), &[fix.as_str()]);
    chmod(&env.settings_file(), 0o600);

    // Owned by another uid: refused even with a tight mode.
    let Some((uid, gid)) = attacker("config owned by another uid") else {
        return;
    };
    nix::unistd::chown(
        &file,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .unwrap();
    let out = env.run_fail(&["config", "show", "dev"]);
    assert_contains(&stderr(&out), &[&format!("owned by uid {uid}")]);
}

/// A fake daemon run as `uid`: listens on `socket`, answers each complete request frame with
/// the next of `replies` (none left: no answer), and records "CONNECTIONS BYTES" in `count`
/// after each connection ends. Killed on drop.
struct FakeDaemon {
    child: Child,
    count: PathBuf,
}

const FAKE_DAEMON: &str = r#"
import os, socket, struct, sys
path, count_file, replies = sys.argv[1], sys.argv[2], list(sys.argv[3:])
conns = total = 0
def record():
    with open(count_file + ".tmp", "w") as f:
        f.write("%d %d" % (conns, total))
    os.rename(count_file + ".tmp", count_file)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o777)
s.listen(8)
s.settimeout(120)
record()
while True:
    c, _ = s.accept()
    c.settimeout(5)
    buf = b""
    try:
        while True:
            b = c.recv(65536)
            if not b:
                break
            total += len(b)
            buf += b
            while len(buf) >= 4 and len(buf) >= 4 + struct.unpack(">I", buf[:4])[0]:
                buf = buf[4 + struct.unpack(">I", buf[:4])[0]:]
                if replies:
                    r = replies.pop(0).encode()
                    c.sendall(struct.pack(">I", len(r)) + r)
    except socket.timeout:
        pass
    c.close()
    conns += 1
    record()
"#;

impl FakeDaemon {
    fn start(uid: u32, gid: u32, socket: &Path, replies: &[&str]) -> FakeDaemon {
        let count = socket.with_extension("count");
        let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("a system python3 for the fake daemon");
        let child = Command::new(python)
            .arg("-c")
            .arg(FAKE_DAEMON)
            .arg(socket)
            .arg(&count)
            .args(replies)
            .uid(uid)
            .gid(gid)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let fake = FakeDaemon { child, count };
        assert!(
            wait_until(DEADLINE, || fake.count.exists()),
            "the fake daemon did not come up on {}",
            socket.display()
        );
        fake
    }

    /// (connections finished, bytes received), once at least `conns` connections ended.
    fn counts(&self, conns: u64) -> (u64, u64) {
        let read = || {
            let t = std::fs::read_to_string(&self.count).unwrap_or_default();
            let mut it = t.split_whitespace().map(|n| n.parse::<u64>().unwrap_or(0));
            (it.next().unwrap_or(0), it.next().unwrap_or(0))
        };
        assert!(
            wait_until(DEADLINE, || read().0 >= conns),
            "the fake daemon saw {:?}, expected {conns} connections",
            read()
        );
        read()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory owned by `uid` (0755) at `dir`, as if the other user had put it there.
fn her_dir(dir: &Path, uid: u32, gid: u32) {
    std::fs::create_dir_all(dir).unwrap();
    chmod(dir, 0o755);
    nix::unistd::chown(
        dir,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .unwrap();
}

#[test]
fn an_impostor_daemon_receives_zero_bytes() {
    let Some((uid, gid)) = attacker("impostor daemon") else {
        return;
    };
    let env = TestEnv::new();
    env.add_config("dev");
    // run/ replaced by hers (scaffolding: she can reach it), her process on the socket.
    chmod(env.root(), 0o755);
    chmod(env.home(), 0o755);
    her_dir(&env.run_dir(), uid, gid);
    let fake = FakeDaemon::start(uid, gid, &env.socket(), &[]);
    let refusing = format!("refusing the daemon at {}", env.socket().display());
    let runs_as = format!("runs as uid {uid}");
    let mut conns = 0;
    for args in [
        &["credential-process", "dev"][..],
        &["whoami", "dev"],
        &["exec", "dev", "--", "true"],
        &["daemon", "status"],
    ] {
        let out = env.run_fail(args);
        assert_contains(
            &stderr(&out),
            &[refusing.as_str(), runs_as.as_str(), "nothing was sent"],
        );
        conns += 1;
    }
    let (seen, bytes) = fake.counts(conns);
    record(
        "trust_impostor",
        "trust",
        bytes == 0,
        &format!(
            "trust: impostor daemon of uid {uid} on the victim's socket: {seen} connections \
             (credential-process, whoami, exec, status), {bytes} bytes received"
        ),
        serde_json::json!({"impostor_bytes": bytes}),
    );
    assert_eq!(
        bytes, 0,
        "the impostor received {bytes} bytes over {seen} connections"
    );
}

/// A reply frame of this CLI's protocol version with `body` (`"ok":…` or `"error":…`).
fn reply(body: &str) -> String {
    format!(
        r#"{{"protocol":{},"id":1,{body}}}"#,
        elhaz::protocol::PROTOCOL_VERSION
    )
}

/// `ok` reply with credentials, as the protocol fixtures have it.
fn creds_reply() -> String {
    reply(
        r#""ok":{"kind":"credentials","access_key_id":"ASIAIOSFODNN7EXAMPLE","secret_access_key":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY","session_token":"FwoGZXIvYXdzEXAMPLETOKEN","expiration":"2099-01-01T13:00:00Z","account_id":"123456789012"}"#,
    )
}

#[test]
fn no_silent_shared_fallback() {
    let Some((uid, gid)) = attacker("shared fallback") else {
        return;
    };
    let env = TestEnv::new();
    let sts = FakeSts::start();
    aws_env(&env, &sts.url());
    add_sts_config(&env, "dev", &sts.url(), &["--role-arn", ROLE_ARN]);
    // Another user's "shared daemon" at the shared socket the CLI knows about.
    chmod(env.root(), 0o755);
    let shared_dir = env.scratch("shared");
    her_dir(&shared_dir, uid, gid);
    let socket = shared_dir.join("elhaz.sock");
    env.set_env("ELHAZ_SHARED_SOCKET", &socket);
    let fake = FakeDaemon::start(uid, gid, &socket, &[&creds_reply()]);

    // Not configured: without autostart, an error — the shared daemon is not used.
    let mut cmd = env.cmd(&["credential-process", "dev"]);
    cmd.env("ELHAZ_AUTOSTART", "0");
    let out = cmd_fail(&mut cmd);
    assert_contains(&stderr(&out), &["not running"]);
    // With autostart: our own daemon, which says so.
    let out = env.run_ok(&["whoami", "dev", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["daemon"]["kind"], "personal", "{v}");
    assert!(v["arn"].as_str().unwrap().contains("assumed-role"), "{v}");
    // Three connections, no byte: for `credential-process` the lean elhaz and then elhaz-full
    // (it hands the missing daemon on) each checked the peer and moved on; then `whoami`.
    let (_, bytes) = fake.counts(3);
    assert_eq!(
        bytes, 0,
        "the unconfigured shared daemon received {bytes} bytes"
    );
    env.run_ok(&["daemon", "stop"]);

    // Configured (ELHAZ_SHARED names its user): used, and exec says who served it.
    let mut cmd = env.cmd(&["exec", "dev", "--", "sh", "-c", "echo $AWS_ACCESS_KEY_ID"]);
    cmd.env("ELHAZ_AUTOSTART", "0")
        .env("ELHAZ_SHARED", OTHER_USER);
    let out = cmd_ok(&mut cmd);
    assert_eq!(stdout(&out).trim(), "ASIAIOSFODNN7EXAMPLE");
    assert_contains(
        &stderr(&out),
        &[&format!(
            "served by the shared daemon of user {OTHER_USER} (uid {uid})"
        )],
    );
    let (_, bytes) = fake.counts(4);
    assert!(bytes > 0, "the configured shared daemon got no request");
    // ... and so does [client] shared in elhaz.toml; a wrong user there is an impostor.
    env.write_settings("[client]\nshared = \"root\"\n");
    let mut cmd = env.cmd(&["credential-process", "dev"]);
    cmd.env("ELHAZ_AUTOSTART", "0");
    let out = cmd_fail(&mut cmd);
    assert_contains(
        &stderr(&out),
        &["refusing the daemon at", &format!("uid {uid}")],
    );
}

#[test]
fn control_characters_from_a_daemon_are_stripped() {
    let Some((uid, gid)) = attacker("control characters") else {
        return;
    };
    let env = TestEnv::new();
    chmod(env.root(), 0o755);
    let shared_dir = env.scratch("shared");
    her_dir(&shared_dir, uid, gid);
    let socket = shared_dir.join("elhaz.sock");
    env.set_env("ELHAZ_SHARED_SOCKET", &socket);
    env.set_env("ELHAZ_SHARED", OTHER_USER);
    env.set_env("ELHAZ_AUTOSTART", "0");
    let error = reply(
        r#""error":{"code":"internal","message":"boom \u001b[2J\u001b]0;owned\u0007 \r\u009bdone"}"#,
    );
    let mfa = reply(
        r#""error":{"code":"mfa_required","message":"needs \u001b[31mMFA","mfa_serial":"arn:aws:iam::1:mfa/\u001b]2;pwned\u0007x"}"#,
    );
    // The MFA reply three times: the lean `elhaz` hands `mfa_required` to `elhaz-full`, which
    // asks again, takes the device's prompt lock and asks once more (another CLI may have just
    // prompted) before it prompts itself.
    let fake = FakeDaemon::start(uid, gid, &socket, &[&error, &mfa, &mfa, &mfa]);
    let no_tty = |args: &[&str]| {
        let mut cmd = env.cmd(args);
        // SAFETY: setsid is async-signal-safe; it detaches the child from any terminal, so
        // the MFA prompt cannot open /dev/tty and reports the serial instead.
        unsafe {
            cmd.pre_exec(|| {
                let _ = nix::unistd::setsid();
                Ok(())
            });
        }
        cmd_fail(&mut cmd)
    };
    for (args, visible) in [
        (&["credential-process", "dev"][..], "boom [2J]0;owned done"),
        (&["credential-process", "dev"], "mfa/]2;pwnedx"),
    ] {
        let out = no_tty(args);
        let err = stderr(&out);
        assert!(err.contains(visible), "{visible:?} not in {err:?}");
        for c in ['\u{1b}', '\u{7}', '\r', '\u{9b}'] {
            assert!(!err.contains(c), "{c:?} reached the terminal: {err:?}");
        }
    }
    assert!(fake.counts(2).1 > 0);
}

#[test]
fn a_loose_shared_socket_dir_is_refused() {
    let env = TestEnv::new();
    let dir = env.scratch("shared-run");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o775);
    env.set_env("ELHAZ_SOCKET", dir.join("elhaz.sock"));
    let out = env.run_fail(&["daemon", "start", "--shared"]);
    let fix = format!("chmod go-w {}", dir.display());
    assert_contains(&stderr(&out), &[fix.as_str()]);
    assert!(!dir.join("elhaz.sock").exists());
    // Tight: the shared daemon binds there, mode and group set on the verified directory.
    chmod(&dir, 0o750);
    env.run_ok(&["daemon", "start", "--shared"]);
    assert_eq!(mode_of(&dir.join("elhaz.sock")), 0o660);
    env.run_ok(&["daemon", "stop"]);
}

#[test]
fn dash_names_are_rejected() {
    let env = TestEnv::new();
    let out = env.run_fail(&["config", "add", "--role-arn", ROLE_ARN, "--", "-dev"]);
    assert_contains(&stderr(&out), &["invalid session name", "'-'"]);
    assert!(!env.config_file("-dev").exists());
    let out = env.run_fail(&["credential-process", "--", "-dev"]);
    assert_contains(&stderr(&out), &["invalid session name"]);
    // The generated line keeps any name an operand.
    env.add_config("dev");
    let out = env.run_ok(&["setup", "aws-profile", "dev", "--print"]);
    assert_contains(&stdout(&out), &["credential-process -- dev"]);
}

/// `aws-config-*` files in `run/`.
fn generated(env: &TestEnv) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(env.run_dir())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("aws-config-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn exec_refreshing_writes_no_secret_and_cleans_up() {
    let env = TestEnv::new();
    let sts = FakeSts::start();
    aws_env(&env, &sts.url());
    add_sts_config(&env, "dev", &sts.url(), &["--role-arn", ROLE_ARN]);
    let user_config = env.write_scratch(
        "user-aws-config",
        "[default]\nregion = eu-west-1\naws_secret_access_key: COLON_SECRET\n\
         AWS_Access_Key_Id : AKIACOLONKEY\naws_session_token=\n  CONTINUED_TOKEN\n\
         # aws_security_token = COMMENTED_TOKEN\n[profile other]\noutput = json\n",
    );
    env.set_env("AWS_CONFIG_FILE", &user_config);
    let mut cmd = env.cmd(&[
        "exec",
        "--refreshing",
        "dev",
        "--",
        "sh",
        "-c",
        r#"cat "$AWS_CONFIG_FILE"; echo "FILE=$AWS_CONFIG_FILE"; exit 7"#,
    ]);
    let out = cmd_code(&mut cmd, 7);
    let text = stdout(&out);
    assert_contains(
        &text,
        &[
            "[profile other]",
            "[profile elhaz-dev]",
            "credential-process -- dev",
        ],
    );
    for secret in [
        "COLON_SECRET",
        "AKIACOLONKEY",
        "CONTINUED_TOKEN",
        "COMMENTED_TOKEN",
    ] {
        assert!(!text.contains(secret), "{secret} copied: {text}");
    }
    let file = PathBuf::from(text.lines().last().unwrap().strip_prefix("FILE=").unwrap());
    assert!(file.starts_with(env.run_dir()), "{}", file.display());
    assert!(!file.exists(), "{} outlived the command", file.display());

    // Killed by a signal: elhaz dies of the same signal, and still cleans up.
    let mut cmd = env.cmd(&[
        "exec",
        "--refreshing",
        "dev",
        "--",
        "sh",
        "-c",
        "kill -TERM $$",
    ]);
    let out = output_of(&mut cmd);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(15), "{}", describe(&cmd, &out));
    assert_eq!(generated(&env), Vec::<String>::new());

    // Stale ones (a killed exec, an older elhaz) go at daemon start-up; a live one stays.
    let live = format!("aws-config-dev.{}", std::process::id());
    for n in ["aws-config-dev.999999999", "aws-config-old", live.as_str()] {
        std::fs::write(env.run_dir().join(n), "x").unwrap();
    }
    env.run_ok(&["daemon", "stop"]);
    env.run_ok(&["daemon", "start"]);
    assert_eq!(generated(&env), vec![live.clone()]);
    // ... and at the next exec --refreshing.
    std::fs::write(env.run_dir().join("aws-config-dev.999999998"), "x").unwrap();
    env.run_ok(&["exec", "--refreshing", "dev", "--", "true"]);
    assert_eq!(generated(&env), vec![live]);
}
