//! Scoped delegates by token (`daemon start --require-token --token-file FILE`): scoped and
//! unscoped tokens, a wrong token, a token revoked by editing the file and sending SIGHUP (and
//! a bad reload that keeps the old set), audit lines with the 8-character hash prefix and
//! never the token, and a loose token file refused at start naming the file.
//!
//! The token rules are the same whoever presents a token (the owner too: a request with a
//! token is judged by the token), so most of this runs as the test's own uid and needs
//! nothing special. `a_different_uid_needs_a_token` uses a real second uid (root only, like
//! tests/it/hardening_isolation.rs) and says loudly when it cannot.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};

use crate::fake_sts::FakeSts;
use crate::hardening::{OTHER_USER, other_user};
use crate::moto::{add_sts_config, aws_env};
use crate::util::*;

const SCOPED: &str = "scoped-delegate-token-0123456789abcdef";
const UNSCOPED: &str = "unscoped-delegate-token-fedcba9876543210";
const WRONG: &str = "wrong-delegate-token-000000000000000000";

fn prefix(token: &str) -> String {
    hex::encode(&Sha256::digest(token.as_bytes())[..4])
}

fn write_token_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    chmod(path, 0o600);
}

/// A home with two role sessions (`ci`, `prod`) on a fake STS and a token file.
fn setup(env: &TestEnv, sts: &FakeSts, tokens: &str) -> PathBuf {
    aws_env(env, &sts.url());
    for (name, role) in [("ci", "CiReadOnly"), ("prod", "ProdAdmin")] {
        add_sts_config(
            env,
            name,
            &sts.url(),
            &[
                "--role-arn",
                &format!("arn:aws:iam::123456789012:role/{role}"),
            ],
        );
    }
    let file = env.scratch("tokens");
    write_token_file(&file, tokens);
    file
}

fn with_token(env: &TestEnv, token: &str, args: &[&str]) -> Output {
    let mut c = env.cmd(args);
    c.env("ELHAZ_TOKEN", token).env("ELHAZ_AUTOSTART", "0");
    let (status, out, _) = run_limited(&mut c, Duration::from_secs(60));
    assert!(status.is_some(), "hung{}", describe(&c, &out));
    out
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        stderr(out),
        stdout(out)
    );
    assert!(
        stdout(out).contains("AccessKeyId") || stdout(out).contains("arn:"),
        "{what}: {}",
        stdout(out)
    );
}

fn assert_denied(out: &Output, what: &str, needle: &str) {
    assert!(!out.status.success(), "{what} succeeded: {}", stdout(out));
    let err = stderr(out);
    assert!(
        err.contains("permission denied") && err.contains(needle),
        "{what}: {err}"
    );
}

fn audit_text(env: &TestEnv) -> String {
    std::fs::read_dir(env.log_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("audit."))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect()
}

#[test]
fn scoped_and_unscoped_tokens_revocation_and_audit() {
    let env = TestEnv::new();
    let sts = FakeSts::start();
    let file = setup(
        &env,
        &sts,
        &format!("# delegates\n{SCOPED}:ci\n\n{UNSCOPED}\n"),
    );
    let file_arg = file.to_str().unwrap();
    let d = env.start_daemon_foreground(&["--require-token", "--token-file", file_arg]);

    // Scoped: its session, nothing else, never admin.
    assert_ok(
        &with_token(&env, SCOPED, &["credential-process", "ci"]),
        "scoped ci",
    );
    assert_denied(
        &with_token(&env, SCOPED, &["credential-process", "prod"]),
        "scoped prod",
        "prod",
    );
    for admin in [
        &["daemon", "add", "prod"][..],
        &["daemon", "remove", "ci"],
        &["daemon", "list"],
        &["daemon", "stop"],
    ] {
        assert_denied(
            &with_token(&env, SCOPED, admin),
            &admin.join(" "),
            "reserved for the daemon's owner",
        );
    }
    // Unscoped: every session, still no admin.
    for s in ["ci", "prod"] {
        assert_ok(
            &with_token(&env, UNSCOPED, &["credential-process", s]),
            &format!("unscoped {s}"),
        );
    }
    assert_ok(&with_token(&env, UNSCOPED, &["whoami", "prod"]), "whoami");
    // The same token from ELHAZ_TOKEN_FILE (a mounted secret).
    let tf = env.write_scratch("my-token", format!("# mine\n{UNSCOPED}\n"));
    let mut c = env.cmd(&["credential-process", "prod"]);
    c.env("ELHAZ_TOKEN_FILE", &tf).env("ELHAZ_AUTOSTART", "0");
    assert_ok(&cmd_ok(&mut c), "ELHAZ_TOKEN_FILE");
    c.env("ELHAZ_TOKEN", SCOPED);
    assert_denied(&output_of(&mut c), "ELHAZ_TOKEN wins", "prod");
    assert_denied(
        &with_token(&env, UNSCOPED, &["daemon", "stop"]),
        "unscoped stop",
        "reserved for the daemon's owner",
    );
    // A wrong token: refused, named by its hash prefix only.
    let out = with_token(&env, WRONG, &["credential-process", "ci"]);
    assert_denied(&out, "wrong token", &prefix(WRONG));
    assert!(!stderr(&out).contains(WRONG), "{}", stderr(&out));
    // The owner without a token keeps admin.
    let out = env.run_ok(&["daemon", "list"]);
    assert!(stdout(&out).contains("prod"), "{}", stdout(&out));

    // Audit: credentials by token carry the prefix, never the token.
    let audit = audit_text(&env);
    assert!(
        audit
            .lines()
            .any(|l| l.contains("session=ci ") && l.contains(&format!(" token={}", prefix(SCOPED)))),
        "{audit}"
    );
    assert!(
        audit.contains(&format!(" token={}", prefix(UNSCOPED))),
        "{audit}"
    );

    // Revoke the scoped token: edit the file, SIGHUP. The daemon keeps running.
    write_token_file(&file, &format!("{UNSCOPED}\n"));
    d.signal(Signal::SIGHUP);
    assert!(
        env.wait_for_log("token file reloaded"),
        "no reload in the log{}",
        d.report()
    );
    assert_denied(
        &with_token(&env, SCOPED, &["credential-process", "ci"]),
        "revoked token",
        "revoked",
    );
    assert_ok(
        &with_token(&env, UNSCOPED, &["credential-process", "ci"]),
        "unscoped after reload",
    );

    // A bad reload (a loose file) keeps the set in force and logs an error naming the file.
    write_token_file(&file, &format!("{UNSCOPED}\n{SCOPED}\n"));
    chmod(&file, 0o644);
    d.signal(Signal::SIGHUP);
    assert!(
        env.wait_for_log("cannot reload the token file"),
        "no reload error in the log{}",
        d.report()
    );
    assert!(
        env.log_text().contains(file_arg),
        "the error names the file"
    );
    assert_denied(
        &with_token(&env, SCOPED, &["credential-process", "ci"]),
        "token of a refused reload",
        "not valid",
    );
    assert_ok(
        &with_token(&env, UNSCOPED, &["credential-process", "prod"]),
        "unscoped after a bad reload",
    );

    // No token ever reached a log or the audit trail; the wrong one is in the log as a prefix.
    let logs = format!("{}{}", env.log_text(), audit_text(&env));
    for t in [SCOPED, UNSCOPED, WRONG] {
        assert!(!logs.contains(t), "a token reached the logs");
    }
    assert!(
        logs.contains(&prefix(WRONG)),
        "the refusal is logged by prefix"
    );
    drop(d);
}

#[test]
fn a_loose_or_missing_token_file_is_refused_at_start() {
    let env = TestEnv::new();
    let sts = FakeSts::start();
    let file = setup(&env, &sts, &format!("{SCOPED}:ci\n"));
    let f = file.to_str().unwrap();
    chmod(&file, 0o640);
    let out = env.run_fail(&[
        "daemon",
        "start",
        "--foreground",
        "--require-token",
        "--token-file",
        f,
    ]);
    assert_contains(&stderr(&out), &[f, "0640", "chmod 600"]);
    assert!(!env.socket().exists(), "a refused start left a socket");
    chmod(&file, 0o600);
    std::fs::write(&file, "short:ci\n").unwrap();
    let out = env.run_fail(&[
        "daemon",
        "start",
        "--foreground",
        "--require-token",
        "--token-file",
        f,
    ]);
    assert_contains(&stderr(&out), &[f, "line 1"]);
    let out = env.run_fail(&[
        "daemon",
        "start",
        "--foreground",
        "--require-token",
        "--token-file",
        env.scratch("nope").to_str().unwrap(),
    ]);
    assert_contains(&stderr(&out), &["nope"]);
    // A personal daemon (no --require-token) refuses a token rather than ignoring it.
    write_token_file(&file, &format!("{SCOPED}:ci\n"));
    let _d = env.start_daemon_foreground(&[]);
    assert_denied(
        &with_token(&env, SCOPED, &["credential-process", "ci"]),
        "token to a personal daemon",
        "takes no tokens",
    );
}

/// `elhaz ARGS` as `uid` against a shared socket run by root, with `token` if any.
fn as_uid(uid: u32, gid: u32, socket: &Path, token: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(bin_for_any_uid());
    c.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("ELHAZ_HOME", "/nonexistent/elhaz-home")
        .env("ELHAZ_AUTOSTART", "0")
        .env("ELHAZ_SHARED", "root")
        .env("ELHAZ_SHARED_SOCKET", socket)
        .uid(uid)
        .gid(gid)
        .current_dir("/");
    if let Some(t) = token {
        c.env("ELHAZ_TOKEN", t);
    }
    let (status, out, _) = run_limited(&mut c, Duration::from_secs(60));
    assert!(status.is_some(), "hung{}", describe(&c, &out));
    out
}

#[test]
fn a_different_uid_needs_a_token() {
    if !is_root() {
        skipped_check("delegates of another uid: needs root to act as a second uid");
        return;
    }
    let mut skipped = Vec::new();
    let Some((uid, gid)) = other_user(&mut skipped) else {
        panic!("as root, cannot get a second uid ({OTHER_USER}): {skipped:?}");
    };
    let env = TestEnv::new();
    let sts = FakeSts::start();
    // The token file read by the daemon as ELHAZ_TOKEN_FILE for the delegate, too.
    let file = setup(&env, &sts, &format!("{SCOPED}:ci\n"));
    // A shared socket the other uid can reach (the temp root is 0700; scaffolding only).
    chmod(env.root(), 0o755);
    let dir = env.scratch("sock");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o755);
    let socket = dir.join("elhaz.sock");
    env.set_env("ELHAZ_SOCKET", &socket);
    let _d = env.start_daemon_foreground(&[
        "--shared",
        "--socket-mode",
        "0666",
        "--require-token",
        "--token-file",
        file.to_str().unwrap(),
    ]);
    let out = as_uid(uid, gid, &socket, None, &["credential-process", "ci"]);
    assert_denied(&out, "no token", "requires a token");
    let out = as_uid(
        uid,
        gid,
        &socket,
        Some(WRONG),
        &["credential-process", "ci"],
    );
    assert_denied(&out, "wrong token", "not valid");
    let out = as_uid(
        uid,
        gid,
        &socket,
        Some(SCOPED),
        &["credential-process", "ci"],
    );
    assert_ok(&out, "scoped token as another uid");
    let out = as_uid(
        uid,
        gid,
        &socket,
        Some(SCOPED),
        &["credential-process", "prod"],
    );
    assert_denied(&out, "other session", "prod");
    let out = as_uid(uid, gid, &socket, Some(SCOPED), &["daemon", "stop"]);
    assert_denied(&out, "admin", "reserved for the daemon's owner");
    let audit = audit_text(&env);
    assert!(
        audit.contains(&format!("peer_uid={uid}")) && audit.contains(&prefix(SCOPED)),
        "{audit}"
    );
    assert!(!audit.contains(SCOPED));
}
