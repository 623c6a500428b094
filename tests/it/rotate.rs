//! `elhaz keyring rotate ENTRY` against moto's IAM (and STS): the new key works (a second
//! rotation starts from it), the old key is gone, the daemon's sessions on the entry are
//! dropped; and each injected failure leaves a working key:
//! - the user already has AWS's two keys (moto enforces the limit): CreateAccessKey fails,
//!   nothing changes;
//! - STS never accepts the new key (STS is the test's fake, which knows only the old key's
//!   user — moto's STS accepts every key at once, so it cannot refuse one): the new key is
//!   deleted and the entry keeps the old one;
//! - the keyring cannot store the new key (the kernel refuses the write: the test takes the
//!   write permission off the entry's key): the new key is deleted and the entry keeps the old
//!   one.
//!
//! The keys live in the kernel keyutils store (per user, not per test): entries get unique
//! names and are removed on drop. A keyring that cannot be used here is reported loudly.

use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::fake_sts::FakeSts;
use crate::moto::{Moto, aws_env, moto_server_bin};
use crate::util::*;

/// The aws CLI of the venv against moto, with moto's dummy keys.
fn aws(moto: &Moto, args: &[&str]) -> Value {
    let mut c = Command::new(moto_server_bin().with_file_name("aws"));
    c.args(args)
        .args(["--endpoint-url", &moto.url(), "--output", "json"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let out = cmd_ok(&mut c);
    if out.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn key_ids(moto: &Moto, user: &str) -> Vec<String> {
    let mut ids: Vec<String> =
        aws(moto, &["iam", "list-access-keys", "--user-name", user])["AccessKeyMetadata"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["AccessKeyId"].as_str().unwrap().to_string())
            .collect();
    ids.sort();
    ids
}

struct KeyringEntry<'a>(&'a TestEnv, String);

impl Drop for KeyringEntry<'_> {
    fn drop(&mut self) {
        for e in [self.1.clone(), format!("{}.previous", self.1)] {
            let _ = self.0.cmd(&["keyring", "remove", &e]).output();
        }
    }
}

fn rotate(env: &TestEnv, entry: &str, extra: &[&str]) -> Output {
    let mut args = vec!["keyring", "rotate", entry];
    args.extend_from_slice(extra);
    let mut c = env.cmd(&args);
    let (status, out, _) = run_limited(&mut c, Duration::from_secs(120));
    assert!(status.is_some(), "rotate hung{}", describe(&c, &out));
    out
}

/// A moto IAM user with one key stored in a fresh keyring entry; `None` (after a loud line)
/// when the keyring cannot be used here.
fn setup<'a>(
    env: &'a TestEnv,
    moto: &Moto,
    tag: &str,
) -> Option<(String, String, KeyringEntry<'a>)> {
    aws_env(env, &moto.url());
    env.set_env("AWS_ENDPOINT_URL_IAM", moto.url());
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let user = format!("rot-{tag}-{nanos}");
    aws(moto, &["iam", "create-user", "--user-name", &user]);
    let k = aws(moto, &["iam", "create-access-key", "--user-name", &user]);
    let (id, secret) = (
        k["AccessKey"]["AccessKeyId"].as_str().unwrap().to_string(),
        k["AccessKey"]["SecretAccessKey"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let entry = format!("elhaz-rot-{}-{nanos}", std::process::id());
    let (_c, out) = env.run_stdin(
        &["keyring", "set", &entry],
        format!("{id}\n{secret}\n").as_bytes(),
    );
    if !out.status.success() {
        skipped_check(&format!(
            "the OS keyring is not usable here: {}",
            stderr(&out).trim()
        ));
        assert_contains(&stderr(&out).to_lowercase(), &["keyring"]);
        return None;
    }
    let guard = KeyringEntry(env, entry.clone());
    Some((user, id, guard))
}

#[test]
fn rotate_replaces_the_key_and_drops_the_sessions_that_used_it() {
    let env = TestEnv::new();
    let moto = Moto::start(env.root());
    let Some((user, first, guard)) = setup(&env, &moto, "ok") else {
        return;
    };
    let entry = guard.1.clone();
    env.run_ok(&[
        "config",
        "add",
        "kr",
        "--keyring",
        &entry,
        "--duration",
        "1h",
    ]);
    let _d = env.start_daemon_foreground(&[]);
    env.run_ok(&["credential-process", "kr"]);
    assert!(stdout(&env.run_ok(&["daemon", "list"])).contains("kr"));

    let out = rotate(&env, &entry, &[]);
    assert!(out.status.success(), "{}{}", stderr(&out), stdout(&out));
    let keys = key_ids(&moto, &user);
    assert_eq!(keys.len(), 1, "{keys:?}");
    let second = keys[0].clone();
    assert_ne!(second, first, "the old key is still there");
    assert_contains(
        &stdout(&out),
        &[
            &second,
            &format!("old key {first} deleted"),
            "dropped 1 cached session",
        ],
    );
    assert!(
        !stdout(&env.run_ok(&["daemon", "list"])).contains("kr"),
        "the session on the rotated entry is still cached"
    );
    // The keyring holds a working new key: a second rotation starts from it.
    let out = rotate(&env, &entry, &[]);
    assert!(out.status.success(), "{}{}", stderr(&out), stdout(&out));
    let keys = key_ids(&moto, &user);
    assert!(
        keys.len() == 1 && keys[0] != second && keys[0] != first,
        "{keys:?}"
    );
    env.run_ok(&["credential-process", "kr"]);
    // No secret in what the command printed.
    assert!(!stdout(&out).contains("Secret") && !stderr(&out).contains("Secret"));
}

#[test]
fn rotate_failures_leave_a_working_key() {
    let env = TestEnv::new();
    let moto = Moto::start(env.root());
    let Some((user, first, guard)) = setup(&env, &moto, "fail") else {
        return;
    };
    let entry = guard.1.clone();

    // At AWS's two-key limit: CreateAccessKey fails, nothing changes.
    let extra = aws(&moto, &["iam", "create-access-key", "--user-name", &user]);
    let extra = extra["AccessKey"]["AccessKeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let out = rotate(&env, &entry, &[]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert_contains(
        &stderr(&out),
        &["cannot create a new key", &user, "nothing changed"],
    );
    let mut both = vec![first.clone(), extra.clone()];
    both.sort();
    assert_eq!(key_ids(&moto, &user), both);
    aws(
        &moto,
        &[
            "iam",
            "delete-access-key",
            "--user-name",
            &user,
            "--access-key-id",
            &extra,
        ],
    );

    // STS never accepts the new key: it is deleted, the entry keeps the old one.
    let sts = FakeSts::start();
    sts.set_identity(&first, &format!("arn:aws:iam::123456789012:user/{user}"));
    let mut c = env.cmd(&["keyring", "rotate", &entry, "--verify-timeout", "2s"]);
    c.env("AWS_ENDPOINT_URL_STS", sts.url());
    let (status, out, took) = run_limited(&mut c, Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| !s.success()),
        "{}",
        describe(&c, &out)
    );
    assert!(
        took < Duration::from_secs(30),
        "verification was not bounded: {took:?}"
    );
    assert_contains(
        &stderr(&out),
        &[
            "did not accept the new key",
            &format!("keeps the old key {first}"),
            "was deleted",
        ],
    );
    assert_eq!(key_ids(&moto, &user), vec![first.clone()]);
    // The entry still holds the old, working key: a rotation against moto's STS succeeds.
    let out = rotate(&env, &entry, &[]);
    assert!(out.status.success(), "{}{}", stderr(&out), stdout(&out));
    let keys = key_ids(&moto, &user);
    assert!(keys.len() == 1 && keys[0] != first, "{keys:?}");
}

/// The old key cannot be deleted: the entry keeps the new key, the old pair is kept in
/// `ENTRY.previous` (listed), the message names the old key id, exit status 1. Injected with
/// an old key IAM does not know: the test's fake STS answers every key as
/// `arn:aws:iam::123456789012:user/fake` (so the moto user is named `fake`, and both the old
/// and the new key "work" there), and moto's DeleteAccessKey then refuses the unknown old id.
#[test]
fn an_old_key_that_cannot_be_deleted_is_kept_and_named() {
    let env = TestEnv::new();
    let moto = Moto::start(env.root());
    aws_env(&env, &moto.url());
    env.set_env("AWS_ENDPOINT_URL_IAM", moto.url());
    let sts = FakeSts::start();
    env.set_env("AWS_ENDPOINT_URL_STS", sts.url());
    aws(&moto, &["iam", "create-user", "--user-name", "fake"]);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let entry = format!("elhaz-rot-{}-{nanos}-old", std::process::id());
    let old = "AKIAOLDKEYNOTINIAM01";
    let (_c, out) = env.run_stdin(
        &["keyring", "set", &entry],
        format!("{old}\nold-secret\n").as_bytes(),
    );
    if !out.status.success() {
        skipped_check(&format!(
            "the OS keyring is not usable here: {}",
            stderr(&out).trim()
        ));
        assert_contains(&stderr(&out).to_lowercase(), &["keyring"]);
        return;
    }
    let _guard = KeyringEntry(&env, entry.clone());
    let out = rotate(&env, &entry, &["--verify-timeout", "5s"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stderr(&out),
        stdout(&out)
    );
    let previous = format!("{entry}.previous");
    assert_contains(
        &stderr(&out),
        &[old, "could not be deleted", &previous, "still works"],
    );
    let keys = key_ids(&moto, "fake");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_contains(&stderr(&out), &[&keys[0]]);
    let listed: Vec<String> =
        serde_json::from_slice(&env.run_ok(&["keyring", "list", "--json"]).stdout).unwrap();
    assert!(
        listed.contains(&previous) && listed.contains(&entry),
        "{listed:?}"
    );
    // The entry holds the new key: rotating it against moto's own STS works.
    let mut c = env.cmd(&["keyring", "rotate", &entry]);
    c.env("AWS_ENDPOINT_URL_STS", moto.url());
    let out = cmd_ok(&mut c);
    assert_contains(&stdout(&out), &[&format!("old key {} deleted", keys[0])]);
}

/// Sets the permissions of the kernel key behind keyring entry `entry` (root's persistent
/// keyring, which the store uses): `keyctl` in a fresh session keyring that links the
/// persistent keyring, so that it possesses the key.
fn set_key_perm(entry: &str, perm: &str) {
    let script = format!(
        "keyctl get_persistent @s >/dev/null && \
         id=$(keyctl search @s user 'keyring:{entry}@elhaz') && keyctl setperm \"$id\" {perm}"
    );
    let mut c = Command::new("keyctl");
    c.args(["session", "-", "sh", "-c", &script]);
    cmd_ok(&mut c);
}

/// The keyring cannot store the new key: the kernel refuses the write (EACCES), as a locked or
/// read-only keyring would — injected by taking the write permission off the entry's key
/// (view, read, search, link and setattr stay), not by a switch in elhaz. The rotation reads
/// the entry, creates the new key, fails to store it, deletes it, and the entry keeps the old
/// key; with the permission back, the old key rotates.
#[test]
fn a_keyring_that_cannot_store_the_new_key_keeps_the_old_one() {
    let env = TestEnv::new();
    let moto = Moto::start(env.root());
    let Some((user, first, guard)) = setup(&env, &moto, "perm") else {
        return;
    };
    let entry = guard.1.clone();
    set_key_perm(&entry, "0x3b010000");
    let out = rotate(&env, &entry, &[]);
    assert!(
        !out.status.success(),
        "the rotation succeeded with a read-only entry: {}",
        stdout(&out)
    );
    assert_contains(
        &stderr(&out),
        &[
            "cannot store the new key in the keyring",
            &format!("keeps the old key {first}"),
            "was deleted",
        ],
    );
    assert_eq!(key_ids(&moto, &user), vec![first.clone()]);

    // Writable again: the entry still holds the old, working key, and it rotates.
    set_key_perm(&entry, "0x3f010000");
    let out = rotate(&env, &entry, &[]);
    assert!(out.status.success(), "{}{}", stderr(&out), stdout(&out));
    let keys = key_ids(&moto, &user);
    assert!(keys.len() == 1 && keys[0] != first, "{keys:?}");
}
