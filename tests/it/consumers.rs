//! The consumer commands end to end: `credential-process`, `exec` (incl. `--refreshing`),
//! `export`, `shell`, `whoami`, name resolution and `setup aws-profile`, driven by the real
//! consumers — the aws CLI (v1) and boto3 from `<repo>/.venv`, and aws-sdk-rust — against a
//! moto STS on loopback.
//!
//! Every test runs in its own [`TestEnv`] with [`moto::aws_env`]: the dummy source keys
//! `testing`/`testing`, `AWS_ENDPOINT_URL_STS` = moto, `AWS_DEFAULT_REGION=us-east-1`, and
//! `AWS_CONFIG_FILE` / `AWS_SHARED_CREDENTIALS_FILE` inside the test's temp dir (never the real
//! `~/.aws`). The daemon is autostarted by the first command that needs it (inheriting that
//! environment) and stopped by `TestEnv`'s drop; moto is killed by its guard. Anything that
//! runs Python or the aws CLI is bounded by [`run_bounded`], which kills the child on timeout.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::moto::{Moto, aws_env};
use crate::util::{
    BIN, ROLE_ARN, TestEnv, assert_contains, cmd_fail, cmd_ok, describe, mode_of, show_cmd, stderr,
    stdout, wait_until,
};

/// The account moto reports.
const ACCOUNT: &str = "123456789012";

/// Bound for one short consumer run (an aws CLI or Python start-up, an STS round trip).
const SHORT: Duration = Duration::from_secs(60);

/// `<repo>/.venv/bin/<name>`; panics (never skips) when the venv is missing.
fn venv_bin(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin")
        .join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup-python",
        p.display()
    );
    p
}

/// `<repo>/.venv/bin`.
fn venv_dir() -> PathBuf {
    venv_bin("python").parent().unwrap().to_path_buf()
}

/// The path elhaz writes into `credential_process` lines (`current_exe`, i.e. canonical).
fn exe_in_profile() -> String {
    let exe = std::fs::canonicalize(BIN).unwrap();
    let exe = exe.to_string_lossy();
    if exe.contains(char::is_whitespace) {
        format!("\"{exe}\"")
    } else {
        exe.into_owned()
    }
}

/// `arn:aws:iam::123456789012:role/<role>`.
fn role_arn(role: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{role}")
}

/// The prefix of the ARN moto reports for credentials of an assumed `role`.
fn assumed(role: &str) -> String {
    format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role}/")
}

/// A test environment pointed at its own moto. Field order matters: the env (and the daemon
/// it stops on drop) goes before moto.
struct Aws {
    env: TestEnv,
    moto: Moto,
}

impl Aws {
    fn new() -> Aws {
        let env = TestEnv::new();
        let moto = Moto::start(env.root());
        aws_env(&env, &moto.url());
        // The user's AWS files (empty unless a test writes them), inside the temp dir.
        std::fs::create_dir(env.scratch("aws")).unwrap();
        env.set_env("AWS_CONFIG_FILE", env.scratch("aws/config"));
        env.set_env(
            "AWS_SHARED_CREDENTIALS_FILE",
            env.scratch("aws/credentials"),
        );
        Aws { env, moto }
    }

    /// The user's AWS config file (`$AWS_CONFIG_FILE` of every command).
    fn aws_config(&self) -> PathBuf {
        self.env.scratch("aws/config")
    }

    /// Adds session `name` assuming `role/<name>` with extra `config add` flags.
    fn add(&self, name: &str, extra: &[&str]) {
        let arn = role_arn(name);
        let mut args = vec!["config", "add", name, "--role-arn", &arn];
        args.extend_from_slice(extra);
        self.env.run_ok(&args);
    }

    /// Loads `name` into the (autostarted) daemon, so later commands that run without the
    /// source keys in their environment find it warm.
    fn warm(&self, name: &str) {
        self.env.run_ok(&["daemon", "add", name]);
    }

    /// `elhaz export NAME --format json`.
    fn creds(&self, name: &str) -> Value {
        json_of(&self.env.run_ok(&["export", name, "--format", "json"]))
    }

    /// A command for a venv program with the test environment.
    fn venv_cmd(&self, name: &str) -> Command {
        self.env.command(venv_bin(name))
    }
}

/// A child killed (and reaped) on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Runs `cmd` with stdout/stderr captured, killing it after `timeout`; returns its pid too.
fn run_bounded_pid(cmd: &mut Command, timeout: Duration) -> (u32, Output) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = KillOnDrop(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", show_cmd(cmd))),
    );
    let pid = child.0.id();
    let mut out_pipe = child.0.stdout.take().unwrap();
    let mut err_pipe = child.0.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out_pipe.read_to_end(&mut b);
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err_pipe.read_to_end(&mut b);
        b
    });
    let mut status = None;
    wait_until(timeout, || {
        status = child.0.try_wait().expect("try_wait failed");
        status.is_some()
    });
    let Some(status) = status else {
        drop(child);
        panic!("{} did not finish within {timeout:?}", show_cmd(cmd));
    };
    let out = Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    };
    (pid, out)
}

/// Runs `cmd` bounded by `timeout`.
fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    run_bounded_pid(cmd, timeout).1
}

/// Runs `cmd` bounded by [`SHORT`] and requires success.
fn bounded_ok(cmd: &mut Command) -> Output {
    let out = run_bounded(cmd, SHORT);
    assert!(
        out.status.success(),
        "command failed unexpectedly{}",
        describe(cmd, &out)
    );
    out
}

/// Stdout parsed as JSON.
#[track_caller]
fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", stdout(out)))
}

/// The NUL-separated output of `env -0` as a map.
fn env_map(bytes: &[u8]) -> BTreeMap<String, String> {
    bytes
        .split(|&b| b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let e = String::from_utf8_lossy(e);
            let (k, v) = e.split_once('=').unwrap_or((&e, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
fn is_rfc3339_z(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Checks one credential_process JSON document (the whole of `text` but its final newline).
#[track_caller]
fn check_process_json(text: &str) -> Value {
    let body = text
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("no final newline: {text:?}"));
    assert!(!body.contains('\n'), "more than one line on stdout: {text}");
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {text}"));
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    let mut want = vec![
        "AccessKeyId",
        "AccountId",
        "Expiration",
        "SecretAccessKey",
        "SessionToken",
        "Version",
    ];
    want.sort_unstable();
    let mut got = keys.clone();
    got.sort_unstable();
    assert_eq!(got, want, "credential_process keys: {v}");
    assert_eq!(v["Version"], 1, "{v}");
    for k in ["AccessKeyId", "SecretAccessKey", "SessionToken"] {
        assert!(
            v[k].as_str().is_some_and(|s| !s.is_empty()),
            "{k} must be a non-empty string: {v}"
        );
    }
    assert!(
        v["AccessKeyId"].as_str().unwrap().starts_with("ASIA"),
        "temporary keys start with ASIA: {v}"
    );
    let exp = v["Expiration"].as_str().unwrap();
    assert!(
        is_rfc3339_z(exp),
        "Expiration {exp:?} is not YYYY-MM-DDTHH:MM:SSZ"
    );
    let when = humantime::parse_rfc3339(exp).unwrap();
    assert!(when > SystemTime::now(), "Expiration {exp} is in the past");
    assert_eq!(v["AccountId"], ACCOUNT, "{v}");
    v
}

// ---------------------------------------------------------------------------------------------
// 1–3. Real consumers get the assumed role.
// ---------------------------------------------------------------------------------------------

/// `elhaz exec dev -- aws sts get-caller-identity` (env credentials) reports the assumed role.
#[test]
fn aws_cli_under_exec_sees_the_assumed_role() {
    let t = Aws::new();
    t.env.add_config("dev");
    let mut cmd = t.env.cmd(&["exec", "dev", "--"]);
    cmd.arg(venv_bin("aws"))
        .args(["sts", "get-caller-identity", "--output", "json"]);
    let v = json_of(&bounded_ok(&mut cmd));
    let arn = v["Arn"].as_str().unwrap_or_default();
    assert!(arn.starts_with(&assumed("dev")), "Arn: {v}");
    assert_eq!(v["Account"], ACCOUNT, "{v}");
}

/// A profile written by `setup aws-profile` works for the aws CLI with no keys in the
/// environment: only credential_process can supply them (ELHAZ_HOME reaches the
/// credential_process child through the environment).
#[test]
fn aws_cli_through_setup_profile_sees_the_assumed_role() {
    let t = Aws::new();
    t.add("dev", &[]);
    t.warm("dev");
    t.env
        .run_ok(&["setup", "aws-profile", "dev", "--profile", "p"]);
    let mut cmd = t.venv_cmd("aws");
    cmd.args([
        "sts",
        "get-caller-identity",
        "--profile",
        "p",
        "--output",
        "json",
    ])
    .env_remove("AWS_ACCESS_KEY_ID")
    .env_remove("AWS_SECRET_ACCESS_KEY");
    let v = json_of(&bounded_ok(&mut cmd));
    let arn = v["Arn"].as_str().unwrap_or_default();
    assert!(arn.starts_with(&assumed("dev")), "Arn: {v}");
    assert!(!arn.contains("user/moto"), "Arn: {v}");
}

/// boto3 through the setup profile (credential_process) and under `exec` (env credentials).
#[test]
fn boto3_through_setup_profile_and_under_exec() {
    let t = Aws::new();
    t.add("dev", &[]);
    t.warm("dev");
    t.env
        .run_ok(&["setup", "aws-profile", "dev", "--profile", "p"]);
    let script = t.env.write_scratch(
        "profile.py",
        r#"import json, os, sys
import boto3
s = boto3.Session(profile_name=sys.argv[1])
sts = s.client("sts", endpoint_url=os.environ["AWS_ENDPOINT_URL_STS"])
arn = sts.get_caller_identity()["Arn"]
c = s.get_credentials()
print(json.dumps({"arn": arn, "key": c.get_frozen_credentials().access_key, "method": c.method}))
"#,
    );
    let mut cmd = t.venv_cmd("python");
    cmd.arg(&script)
        .arg("p")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    let v = json_of(&bounded_ok(&mut cmd));
    assert!(
        v["arn"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&assumed("dev")),
        "{v}"
    );
    assert_eq!(v["method"], "custom-process", "{v}");
    // The keys boto3 used are the ones the daemon serves.
    assert_eq!(v["key"], t.creds("dev")["access_key_id"], "{v}");

    let mut cmd = t.env.cmd(&["exec", "dev", "--"]);
    cmd.arg(venv_bin("python")).args([
        "-c",
        "import boto3, json, os; s = boto3.Session(); \
         arn = s.client('sts', endpoint_url=os.environ['AWS_ENDPOINT_URL_STS'])\
         .get_caller_identity()['Arn']; \
         print(json.dumps({'arn': arn, 'method': s.get_credentials().method}))",
    ]);
    let v = json_of(&bounded_ok(&mut cmd));
    assert!(
        v["arn"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&assumed("dev")),
        "{v}"
    );
    assert_eq!(v["method"], "env", "{v}");
}

/// aws-sdk-rust: a `ProfileFileCredentialsProvider` for a credential_process profile in a
/// given file, and an STS client using it.
#[tokio::test(flavor = "multi_thread")]
async fn rust_sdk_profile_provider_runs_credential_process() {
    use aws_credential_types::provider::ProvideCredentials;

    let t = Aws::new();
    t.add("dev", &[]);
    t.warm("dev");
    // The test process cannot set ELHAZ_HOME for the child (env vars are process-global), so
    // the line sets it itself; the SDK runs the line through `sh -c`.
    let file = t.env.write_scratch(
        "rust-sdk-config",
        format!(
            "[profile p]\ncredential_process = /usr/bin/env -u ELHAZ_SOCKET -u ELHAZ_NO_DAEMON \
             ELHAZ_HOME={} {} credential-process dev\n",
            t.env.home().display(),
            exe_in_profile()
        ),
    );
    #[allow(deprecated)]
    let files = {
        use aws_config::profile::profile_file::{ProfileFileKind, ProfileFiles};
        ProfileFiles::builder()
            .with_file(ProfileFileKind::Config, &file)
            .build()
    };
    let provider = aws_config::profile::ProfileFileCredentialsProvider::builder()
        .profile_files(files)
        .profile_name("p")
        .build();
    let served = t.creds("dev");
    let got = provider
        .provide_credentials()
        .await
        .expect("the profile provider failed");
    assert_eq!(
        Some(got.access_key_id()),
        served["access_key_id"].as_str(),
        "the SDK got other keys than the daemon serves"
    );
    assert!(got.session_token().is_some(), "no session token");
    assert!(
        got.expiry().is_some(),
        "no expiry: the SDK would never refresh"
    );

    let conf = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .endpoint_url(t.moto.url())
        .credentials_provider(provider)
        .build();
    let client = aws_sdk_sts::Client::from_conf(conf);
    let id = client
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity failed");
    let arn = id.arn().unwrap_or_default();
    assert!(arn.starts_with(&assumed("dev")), "Arn: {arn}");
    assert_eq!(id.account(), Some(ACCOUNT));
}

// ---------------------------------------------------------------------------------------------
// 4. credential-process output contract.
// ---------------------------------------------------------------------------------------------

#[test]
fn credential_process_prints_exactly_one_contract_object() {
    let t = Aws::new();
    t.add("dev", &[]);
    let out = t.env.run_ok(&["credential-process", "dev"]);
    let v = check_process_json(&stdout(&out));
    // Warm now: a second call prints the same cached credential, again alone on stdout.
    let out2 = t.env.run_ok(&["credential-process", "dev"]);
    let v2 = check_process_json(&stdout(&out2));
    assert_eq!(v, v2, "a warm session should serve its cached credential");
}

#[test]
fn credential_process_unknown_session_fails_with_one_line() {
    let t = Aws::new();
    t.add("dev", &[]);
    let out = t.env.run_fail(&["credential-process", "nope"]);
    assert!(
        out.stdout.is_empty(),
        "stdout must be empty: {:?}",
        stdout(&out)
    );
    let err = stderr(&out);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "want a one-line error:\n{err}"
    );
    assert_contains(&err, &["nope"]);
}

// ---------------------------------------------------------------------------------------------
// 5. exec.
// ---------------------------------------------------------------------------------------------

#[test]
fn exec_passes_the_exit_status_through() {
    let t = Aws::new();
    t.add("dev", &[]);
    let out = run_bounded(
        &mut t.env.cmd(&["exec", "dev", "--", "sh", "-c", "exit 7"]),
        SHORT,
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
}

/// The command replaces elhaz (same pid), so a signal death is the caller's to see.
#[test]
fn exec_replaces_the_process_and_passes_signal_death_through() {
    let t = Aws::new();
    t.add("dev", &[]);
    t.warm("dev");
    let mut cmd = t
        .env
        .cmd(&["exec", "dev", "--", "sh", "-c", "echo $$; kill -TERM $$"]);
    let (pid, out) = run_bounded_pid(&mut cmd, SHORT);
    assert_eq!(
        out.status.signal(),
        Some(15),
        "want death by SIGTERM{}",
        describe(&cmd, &out)
    );
    assert_eq!(
        stdout(&out).trim(),
        pid.to_string(),
        "the command should run in the elhaz process itself (exec)"
    );
}

#[test]
fn exec_environment_rules() {
    let t = Aws::new();
    t.add("dev", &["--region", "eu-west-2"]);
    t.add("plain", &[]);
    t.warm("dev");
    t.warm("plain");
    let stale = [
        ("AWS_PROFILE", "stale-profile"),
        ("AWS_DEFAULT_PROFILE", "stale-profile"),
        ("AWS_ACCESS_KEY_ID", "AKIASTALE"),
        ("AWS_SECRET_ACCESS_KEY", "stale-secret"),
        ("AWS_SESSION_TOKEN", "stale-token"),
        ("AWS_SECURITY_TOKEN", "stale-token"),
        ("AWS_CREDENTIAL_EXPIRATION", "2000-01-01T00:00:00Z"),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://127.0.0.1:9/creds",
        ),
        (
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "/v2/credentials/x",
        ),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "stale-auth"),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            "/nonexistent/token",
        ),
    ];
    let run = |name: &str| {
        let mut cmd = t.env.cmd(&["exec", name, "--", "env", "-0"]);
        cmd.envs(stale);
        env_map(&bounded_ok(&mut cmd).stdout)
    };

    let child = run("dev");
    for k in [
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SECURITY_TOKEN",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    ] {
        assert!(
            !child.contains_key(k),
            "{k} leaked into the child: {child:?}"
        );
    }
    let served = t.creds("dev");
    assert_eq!(
        child.get("AWS_ACCESS_KEY_ID").map(String::as_str),
        served["access_key_id"].as_str()
    );
    assert_eq!(
        child.get("AWS_SECRET_ACCESS_KEY").map(String::as_str),
        served["secret_access_key"].as_str()
    );
    assert_eq!(
        child.get("AWS_SESSION_TOKEN").map(String::as_str),
        served["session_token"].as_str()
    );
    assert_eq!(
        child.get("AWS_CREDENTIAL_EXPIRATION").map(String::as_str),
        served["expiration"].as_str()
    );
    assert!(
        is_rfc3339_z(&child["AWS_CREDENTIAL_EXPIRATION"]),
        "{child:?}"
    );
    assert_eq!(
        child.get("AWS_REGION").map(String::as_str),
        Some("eu-west-2")
    );
    assert_eq!(
        child.get("AWS_DEFAULT_REGION").map(String::as_str),
        Some("eu-west-2")
    );
    assert_eq!(child.get("ELHAZ_SESSION").map(String::as_str), Some("dev"));
    // Unrelated AWS settings pass through.
    assert_eq!(
        child.get("AWS_ENDPOINT_URL_STS").map(String::as_str),
        Some(t.moto.url().as_str())
    );

    // Without a region in the config, the parent's region variables are left alone.
    let child = run("plain");
    assert_eq!(
        child.get("AWS_DEFAULT_REGION").map(String::as_str),
        Some("us-east-1")
    );
    assert_eq!(
        child.get("ELHAZ_SESSION").map(String::as_str),
        Some("plain")
    );
    assert_eq!(
        child.get("AWS_ACCESS_KEY_ID").map(String::as_str),
        t.creds("plain")["access_key_id"].as_str()
    );
    assert!(!child.contains_key("AWS_PROFILE"), "{child:?}");
}

#[test]
fn exec_without_a_command_fails_clearly() {
    let t = Aws::new();
    t.add("dev", &[]);
    for args in [&["exec", "dev"][..], &["exec", "dev", "--"][..]] {
        let out = t.env.run_fail(args);
        let err = stderr(&out);
        assert_contains(&err, &["CMD", "--"]);
        assert!(out.stdout.is_empty(), "{}", stdout(&out));
    }
}

#[test]
fn exec_unknown_session_fails_naming_it() {
    let t = Aws::new();
    t.add("dev", &[]);
    let out = t
        .env
        .run_fail(&["exec", "nope", "--", "sh", "-c", "echo RAN"]);
    assert_contains(&stderr(&out), &["\"nope\""]);
    assert!(!stdout(&out).contains("RAN"), "the command ran anyway");
}

#[test]
fn exec_nesting_rules() {
    let t = Aws::new();
    t.add("a", &[]);
    t.add("b", &[]);
    t.warm("a");
    t.warm("b");
    let a = t.creds("a");
    let b = t.creds("b");
    assert_ne!(a["access_key_id"], b["access_key_id"]);
    // As if inside `elhaz exec a`.
    let inside_a = |args: &[&str]| {
        let mut cmd = t.env.cmd(args);
        cmd.env("ELHAZ_SESSION", "a")
            .env("AWS_ACCESS_KEY_ID", a["access_key_id"].as_str().unwrap())
            .env(
                "AWS_SECRET_ACCESS_KEY",
                a["secret_access_key"].as_str().unwrap(),
            )
            .env("AWS_SESSION_TOKEN", a["session_token"].as_str().unwrap());
        cmd
    };

    let out = cmd_fail(&mut inside_a(&["exec", "a", "--", "sh", "-c", "echo RAN"]));
    assert_contains(&stderr(&out), &["--force", "\"a\""]);
    assert!(!stdout(&out).contains("RAN"), "the command ran anyway");
    // So does the implicit name ($ELHAZ_SESSION).
    let out = cmd_fail(&mut inside_a(&["exec", "--", "true"]));
    assert_contains(&stderr(&out), &["--force"]);

    let out = cmd_ok(&mut inside_a(&[
        "exec", "--force", "a", "--", "sh", "-c", "echo RAN",
    ]));
    assert_eq!(stdout(&out).trim(), "RAN");

    let out = bounded_ok(&mut inside_a(&["exec", "b", "--", "env", "-0"]));
    let child = env_map(&out.stdout);
    assert_eq!(child.get("ELHAZ_SESSION").map(String::as_str), Some("b"));
    assert_eq!(
        child.get("AWS_ACCESS_KEY_ID").map(String::as_str),
        b["access_key_id"].as_str()
    );
    assert_eq!(
        child.get("AWS_SESSION_TOKEN").map(String::as_str),
        b["session_token"].as_str()
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Name resolution.
// ---------------------------------------------------------------------------------------------

#[test]
fn the_only_config_needs_no_name() {
    let t = Aws::new();
    t.add("solo", &[]);
    let v = json_of(&t.env.run_ok(&["export", "--format", "json"]));
    assert_eq!(v["session"], "solo");
    let out = t
        .env
        .run_ok(&["exec", "--", "sh", "-c", "printf %s \"$ELHAZ_SESSION\""]);
    assert_eq!(stdout(&out), "solo");
    let v = json_of(&t.env.run_ok(&["whoami", "--json"]));
    assert!(
        v["arn"].as_str().unwrap().starts_with(&assumed("solo")),
        "{v}"
    );
}

#[test]
fn name_resolution_with_two_configs() {
    let t = Aws::new();
    t.add("a", &[]);
    t.add("b", &[]);
    // No name, no $ELHAZ_SESSION, no default_session: an error listing both.
    for args in [
        &["export", "--format", "json"][..],
        &["credential-process"][..],
        &["exec", "--", "true"][..],
        &["whoami"][..],
    ] {
        let out = t.env.run_fail(args);
        assert_contains(&stderr(&out), &["a, b", "ELHAZ_SESSION", "default_session"]);
        assert!(out.stdout.is_empty(), "{}", stdout(&out));
    }

    let whoami = |cmd: &mut Command| {
        let v = json_of(&cmd_ok(cmd));
        v["arn"].as_str().unwrap_or_default().to_string()
    };
    // $ELHAZ_SESSION picks b.
    let arn = whoami(t.env.cmd(&["whoami", "--json"]).env("ELHAZ_SESSION", "b"));
    assert!(arn.starts_with(&assumed("b")), "{arn}");
    let mut cmd = t.env.cmd(&["export", "--format", "json"]);
    cmd.env("ELHAZ_SESSION", "b");
    assert_eq!(json_of(&cmd_ok(&mut cmd))["session"], "b");

    // default_session picks a; $ELHAZ_SESSION still wins over it.
    t.env.write_settings("default_session = \"a\"\n");
    let arn = whoami(&mut t.env.cmd(&["whoami", "--json"]));
    assert!(arn.starts_with(&assumed("a")), "{arn}");
    let out = t.env.run_ok(&["credential-process"]);
    assert_eq!(
        check_process_json(&stdout(&out))["AccessKeyId"],
        t.creds("a")["access_key_id"]
    );
    let arn = whoami(t.env.cmd(&["whoami", "--json"]).env("ELHAZ_SESSION", "b"));
    assert!(arn.starts_with(&assumed("b")), "{arn}");

    // -n NAME works like the positional.
    let arn = whoami(&mut t.env.cmd(&["whoami", "-n", "b", "--json"]));
    assert!(arn.starts_with(&assumed("b")), "{arn}");
    let out = t.env.run_ok(&[
        "exec",
        "-n",
        "b",
        "--",
        "sh",
        "-c",
        "printf %s \"$ELHAZ_SESSION\"",
    ]);
    assert_eq!(stdout(&out), "b");
    let v = json_of(&t.env.run_ok(&["export", "--name", "b", "--format", "json"]));
    assert_eq!(v["session"], "b");
    // … and not together with it.
    t.env.run_fail(&["whoami", "a", "-n", "b"]);
}

// ---------------------------------------------------------------------------------------------
// 7. export.
// ---------------------------------------------------------------------------------------------

/// `export --format env`, evaluated by `sh`, yields exactly the values of `--format json`, and
/// unsets the variables that would override them. (Quoting of quotes, spaces, `$`, backslashes
/// and empty values is covered by the unit test `quoting_round_trips_through_sh` in
/// src/commands/consume.rs: moto's credentials never contain such characters.)
#[test]
fn export_env_round_trips_through_sh() {
    let t = Aws::new();
    t.add("dev", &["--region", "eu-west-2"]);
    let json = t.creds("dev");
    let env_out = t.env.run_ok(&["export", "dev", "--format", "env"]);
    // The default format is env.
    assert_eq!(stdout(&t.env.run_ok(&["export", "dev"])), stdout(&env_out));
    t.env.write_scratch("export.sh", &env_out.stdout);
    let mut sh = t.env.command("sh");
    sh.args(["-c", "eval \"$(cat export.sh)\" && exec env -0"])
        .envs([
            ("AWS_PROFILE", "stale"),
            ("AWS_DEFAULT_PROFILE", "stale"),
            ("AWS_SECURITY_TOKEN", "stale"),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:9/"),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "stale"),
            ("AWS_SESSION_TOKEN", "stale"),
        ]);
    let got = env_map(&cmd_ok(&mut sh).stdout);
    for (var, key) in [
        ("AWS_ACCESS_KEY_ID", "access_key_id"),
        ("AWS_SECRET_ACCESS_KEY", "secret_access_key"),
        ("AWS_SESSION_TOKEN", "session_token"),
        ("AWS_CREDENTIAL_EXPIRATION", "expiration"),
        ("AWS_REGION", "region"),
        ("AWS_DEFAULT_REGION", "region"),
        ("ELHAZ_SESSION", "session"),
    ] {
        assert_eq!(
            got.get(var).map(String::as_str),
            json[key].as_str(),
            "{var} after eval (export output:\n{})",
            stdout(&env_out)
        );
    }
    for var in [
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SECURITY_TOKEN",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    ] {
        assert!(!got.contains_key(var), "{var} survived the eval: {got:?}");
    }
}

#[test]
fn export_json_and_credential_process_formats() {
    let t = Aws::new();
    t.add("dev", &["--region", "eu-west-2"]);
    let v = t.creds("dev");
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "access_key_id",
            "account_id",
            "expiration",
            "region",
            "secret_access_key",
            "session",
            "session_token"
        ],
        "{v}"
    );
    assert_eq!(v["session"], "dev");
    assert_eq!(v["account_id"], ACCOUNT);
    assert_eq!(v["region"], "eu-west-2");
    assert!(is_rfc3339_z(v["expiration"].as_str().unwrap()), "{v}");

    let out = t
        .env
        .run_ok(&["export", "dev", "--format", "credential-process"]);
    let cp = check_process_json(&stdout(&out));
    let direct = check_process_json(&stdout(&t.env.run_ok(&["credential-process", "dev"])));
    assert_eq!(cp, direct, "export -f credential-process differs");
    assert_eq!(cp["AccessKeyId"], v["access_key_id"]);
    assert_eq!(cp["SecretAccessKey"], v["secret_access_key"]);
    assert_eq!(cp["SessionToken"], v["session_token"]);
    assert_eq!(cp["Expiration"], v["expiration"]);

    // Without a region, `region` is null (the key is still there).
    t.add("plain", &[]);
    let v = t.creds("plain");
    assert!(v["region"].is_null(), "{v}");
}

// ---------------------------------------------------------------------------------------------
// 8. whoami.
// ---------------------------------------------------------------------------------------------

#[test]
fn whoami_shows_the_role_not_the_source() {
    let t = Aws::new();
    t.add("dev", &[]);
    let v = json_of(&t.env.run_ok(&["whoami", "dev", "--json"]));
    let arn = v["arn"].as_str().unwrap_or_default();
    assert!(arn.contains("assumed-role/dev/"), "{v}");
    assert!(
        !arn.contains("user/moto"),
        "the source identity leaked: {v}"
    );
    assert_eq!(v["account"], ACCOUNT, "{v}");
    assert_eq!(v["session"], "dev", "{v}");
    let text = stdout(&t.env.run_ok(&["whoami", "dev"]));
    assert_contains(&text, &["assumed-role/dev/", "123456789012"]);
}

// ---------------------------------------------------------------------------------------------
// 9. setup aws-profile.
// ---------------------------------------------------------------------------------------------

/// A setup-only environment (no STS needed).
fn setup_env() -> (TestEnv, PathBuf) {
    let env = TestEnv::new();
    let file = env.scratch("aws-config");
    env.set_env("AWS_CONFIG_FILE", &file);
    env.set_env(
        "AWS_SHARED_CREDENTIALS_FILE",
        env.scratch("aws-credentials"),
    );
    env.add_config("dev");
    (env, file)
}

fn mtime(p: &Path) -> (i64, i64) {
    let m = std::fs::metadata(p).unwrap();
    (m.mtime(), m.mtime_nsec())
}

#[test]
fn setup_aws_profile_keeps_a_hand_written_config() {
    let (env, file) = setup_env();
    let original = "# my AWS config\n;  a semicolon comment\n\n[default]\nregion=us-east-1   \n\
                    output = json\n\n\n[profile other]\n  role_arn = arn:aws:iam::123456789012:role/o\n\
                    source_profile=default\n\n[sso-session x]\nsso_start_url = https://example.awsapps.com/start\n\
                    sso_region = us-east-1\n[profile   spaced  ]\nregion = eu-west-1   ; trailing\n\t# tabbed comment";
    std::fs::write(&file, original).unwrap();
    crate::util::chmod(&file, 0o640);
    let out = env.run_ok(&["setup", "aws-profile", "dev", "--profile", "p"]);
    assert_contains(&stdout(&out), &["\"p\""]);
    let line = format!(
        "credential_process = {} credential-process -- dev",
        exe_in_profile()
    );
    let want = format!("{original}\n\n[profile p]\n{line}\n");
    let got = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        got, want,
        "only the stanza (after a blank line) may be added"
    );
    assert_eq!(mode_of(&file), 0o640, "the file's mode must be kept");
    let backup = PathBuf::from(format!("{}.elhaz.bak", file.display()));
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), original);

    // Again: nothing changes, nothing is written, no new backup.
    let (file_t, backup_t) = (mtime(&file), mtime(&backup));
    std::thread::sleep(Duration::from_millis(20));
    let out = env.run_ok(&["setup", "aws-profile", "dev", "--profile", "p"]);
    assert_contains(&stdout(&out), &["already up to date"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), want);
    assert_eq!(mtime(&file), file_t, "the file was rewritten");
    assert_eq!(mtime(&backup), backup_t, "the backup was rewritten");
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), original);
    let baks: Vec<_> = std::fs::read_dir(env.root())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".bak"))
        .collect();
    assert_eq!(baks.len(), 1, "one backup only: {baks:?}");
}

#[test]
fn setup_aws_profile_replaces_only_the_credential_process_line() {
    let (env, file) = setup_env();
    let original = "[default]\nregion = us-east-1\n\n[profile p]\nregion = eu-west-1\n\
                    credential_process = /old/elhaz credential-process old\noutput = json\n# keep me\n\n\
                    [profile q]\ncredential_process = /other/tool q\n";
    std::fs::write(&file, original).unwrap();
    let out = env.run_ok(&["setup", "aws-profile", "dev", "--profile", "p"]);
    let line = format!(
        "credential_process = {} credential-process -- dev",
        exe_in_profile()
    );
    let want = original.replace(
        "credential_process = /old/elhaz credential-process old",
        &line,
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), want);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));

    // A stanza without the line gets it right under its header, and a conflicting key is
    // reported (and kept).
    let original = "[profile r]\nrole_arn = arn:aws:iam::123456789012:role/x\n[default]\n";
    std::fs::write(&file, original).unwrap();
    let out = env.run_ok(&["setup", "aws-profile", "dev", "--profile", "r"]);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("[profile r]\n{line}\nrole_arn = arn:aws:iam::123456789012:role/x\n[default]\n")
    );
    assert_contains(&stderr(&out), &["warning", "role_arn"]);
}

#[test]
fn setup_aws_profile_print_writes_nothing() {
    let (env, file) = setup_env();
    env.run_ok(&[
        "config",
        "add",
        "reg",
        "--role-arn",
        ROLE_ARN,
        "--region",
        "eu-west-2",
    ]);
    let line = format!(
        "credential_process = {} credential-process -- dev",
        exe_in_profile()
    );
    let out = env.run_ok(&["setup", "aws-profile", "dev", "--profile", "p", "--print"]);
    assert_eq!(stdout(&out), format!("[profile p]\n{line}\n"));
    assert!(!file.exists(), "--print created the config file");
    let out = env.run_ok(&["setup", "aws-profile", "reg", "--print"]);
    assert_eq!(
        stdout(&out),
        format!(
            "[profile reg]\ncredential_process = {} credential-process -- reg\nregion = eu-west-2\n",
            exe_in_profile()
        )
    );
    // With an existing file: untouched, no backup.
    std::fs::write(&file, "[default]\n").unwrap();
    let before = mtime(&file);
    std::thread::sleep(Duration::from_millis(20));
    let out = env.run_ok(&[
        "setup",
        "aws-profile",
        "dev",
        "--profile",
        "default",
        "--print",
    ]);
    assert_eq!(stdout(&out), format!("[default]\n{line}\n"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "[default]\n");
    assert_eq!(mtime(&file), before);
    assert!(!PathBuf::from(format!("{}.elhaz.bak", file.display())).exists());
}

/// A bare `[p]` section is not profile `p` in the config file (SDKs ignore it), so setup adds a
/// real `[profile p]` stanza instead of editing it — checked with the aws CLI's own reading.
#[test]
fn setup_aws_profile_does_not_mistake_a_bare_section_for_the_profile() {
    let (env, file) = setup_env();
    let original = "[p]\nregion = us-east-1\n";
    std::fs::write(&file, original).unwrap();
    env.run_ok(&["setup", "aws-profile", "dev", "--profile", "p"]);
    let line = format!(
        "credential_process = {} credential-process -- dev",
        exe_in_profile()
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("{original}\n[profile p]\n{line}\n")
    );
    let mut cmd = env.command(venv_bin("aws"));
    cmd.args(["configure", "get", "credential_process", "--profile", "p"]);
    let out = bounded_ok(&mut cmd);
    assert_eq!(
        stdout(&out).trim(),
        format!("{} credential-process -- dev", exe_in_profile())
    );
}

/// A symlinked config (dotfiles) is edited through the link, not replaced by a regular file.
#[test]
fn setup_aws_profile_edits_a_symlinked_config_in_place() {
    let (env, file) = setup_env();
    std::fs::create_dir(env.scratch("dotfiles")).unwrap();
    let target = env.write_scratch("dotfiles/aws-config", "[default]\nregion = us-east-1\n");
    std::os::unix::fs::symlink(&target, &file).unwrap();
    env.run_ok(&["setup", "aws-profile", "dev", "--profile", "p"]);
    assert!(
        std::fs::symlink_metadata(&file)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the symlink was replaced by a regular file"
    );
    let line = format!(
        "credential_process = {} credential-process -- dev",
        exe_in_profile()
    );
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        format!("[default]\nregion = us-east-1\n\n[profile p]\n{line}\n")
    );
    let backup = env.scratch("dotfiles/aws-config.elhaz.bak");
    assert_eq!(
        std::fs::read_to_string(&backup).unwrap(),
        "[default]\nregion = us-east-1\n"
    );
}

// ---------------------------------------------------------------------------------------------
// 10. exec --refreshing.
// ---------------------------------------------------------------------------------------------

/// A child running longer than its first credential lives keeps working: its SDK re-runs
/// `elhaz credential-process` from the generated profile and gets the daemon's refreshed
/// credential. The generated config carries no secret from the user's config.
#[test]
fn exec_refreshing_child_outlives_its_first_credential() {
    let t = Aws::new();
    std::fs::write(
        t.aws_config(),
        "[default]\nregion = us-west-2\naws_access_key_id = AKIASHOULDNOTLEAK\n\
         aws_secret_access_key = SHOULD_NOT_LEAK\n\n[profile unrelated]\noutput = json\n",
    )
    .unwrap();
    t.add("r8", &["--duration", "8"]);
    let script = t.env.write_scratch(
        "loop.py",
        r#"import json, os, time
import boto3
s = boto3.Session()
sts = s.client("sts", endpoint_url=os.environ["AWS_ENDPOINT_URL_STS"])
for i in range(10):
    arn = sts.get_caller_identity()["Arn"]
    key = s.get_credentials().get_frozen_credentials().access_key
    if i == 0:
        with open(os.environ["AWS_CONFIG_FILE"]) as f, open(os.environ["COPY_TO"], "w") as g:
            g.write(f.read())
    print(json.dumps({"i": i, "arn": arn, "key": key,
                      "profile": os.environ.get("AWS_PROFILE"),
                      "env_key": os.environ.get("AWS_ACCESS_KEY_ID")}), flush=True)
    if i < 9:
        time.sleep(2)
"#,
    );
    let mut cmd = t.env.cmd(&["exec", "--refreshing", "r8", "--"]);
    let copy = t.env.scratch("generated-copy");
    cmd.arg(venv_bin("python"))
        .arg(&script)
        .env("COPY_TO", &copy);
    let out = run_bounded(&mut cmd, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "the child failed{}",
        describe(&cmd, &out)
    );
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10, "{}", describe(&cmd, &out));
    let mut keys: Vec<&str> = Vec::new();
    for l in &lines {
        assert!(
            l["arn"].as_str().unwrap().starts_with(&assumed("r8")),
            "{l}"
        );
        assert_eq!(l["profile"], "elhaz-r8", "{l}");
        assert!(
            l["env_key"].is_null(),
            "static keys in the child's env: {l}"
        );
        let k = l["key"].as_str().unwrap();
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    assert!(
        keys.len() >= 2,
        "the child never saw a refreshed credential over ~18 s of 8 s credentials: {keys:?}{}",
        describe(&cmd, &out)
    );

    // The generated file went with the child; the child's copy shows what it held.
    let left: Vec<_> = std::fs::read_dir(t.env.run_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("aws-config-"))
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "generated config left behind: {left:?}");
    let text = std::fs::read_to_string(&copy).unwrap();
    assert!(!text.contains("SHOULD_NOT_LEAK"), "{text}");
    assert!(!text.contains("AKIASHOULDNOTLEAK"), "{text}");
    assert!(!text.contains("aws_secret_access_key"), "{text}");
    assert_contains(
        &text,
        &[
            "[profile unrelated]",
            "[profile elhaz-r8]",
            &format!(
                "credential_process = {} credential-process -- r8",
                exe_in_profile()
            ),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// 11. shell.
// ---------------------------------------------------------------------------------------------

/// `elhaz shell` with a script on stdin instead of a terminal.
fn shell_cmd(t: &Aws, args: &[&str], input: &str) -> (Command, Output) {
    let mut cmd = t.env.cmd(args);
    let path = format!(
        "{}:{}",
        venv_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let input_file = t.env.write_scratch("shell-input.sh", input);
    cmd.env("SHELL", "/bin/sh")
        .env("PATH", path)
        .stdin(std::fs::File::open(input_file).unwrap());
    let out = run_bounded(&mut cmd, SHORT);
    (cmd, out)
}

#[test]
fn shell_runs_the_users_shell_in_the_session() {
    let t = Aws::new();
    t.add("dev", &[]);
    let (cmd, out) = shell_cmd(
        &t,
        &["shell", "dev"],
        "aws sts get-caller-identity --query Arn --output text; echo \"$ELHAZ_SESSION\"\n",
    );
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{}", describe(&cmd, &out));
    assert!(
        lines[0].starts_with(&assumed("dev")),
        "{}",
        describe(&cmd, &out)
    );
    assert_eq!(lines[1], "dev");
}

#[test]
fn shell_refuses_to_nest_without_force() {
    let t = Aws::new();
    t.add("dev", &[]);
    let mut cmd = t.env.cmd(&["shell", "dev"]);
    cmd.env("ELHAZ_SESSION", "dev").env("SHELL", "/bin/sh");
    let out = cmd_fail(&mut cmd);
    assert_contains(&stderr(&out), &["--force"]);
    assert!(out.stdout.is_empty());

    let mut cmd = t.env.cmd(&["shell", "--force", "dev"]);
    cmd.env("ELHAZ_SESSION", "dev")
        .env("SHELL", "/bin/sh")
        .stdin(
            std::fs::File::open(t.env.write_scratch("in.sh", "echo \"in $ELHAZ_SESSION\"\n"))
                .unwrap(),
        );
    let out = bounded_ok(&mut cmd);
    assert_eq!(stdout(&out), "in dev\n");
}
