//! IAM Identity Center end to end: the real binary, the real `aws-sdk-ssooidc` / `aws-sdk-sso`
//! clients, and the suite's fake OIDC + portal (`fake_sso.rs`; moto emulates neither).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fake_sso::{FakeSso, follow_authorize};
use crate::util::*;

const LIMIT: Duration = Duration::from_secs(30);

/// An env whose HOME (for ~/.aws/sso/cache) and SSO endpoints point at the test.
fn sso_env() -> (TestEnv, FakeSso) {
    let env = TestEnv::new();
    let fake = FakeSso::start();
    let home = env.scratch("userhome");
    std::fs::create_dir_all(&home).unwrap();
    env.set_env("HOME", &home);
    env.set_env("AWS_ENDPOINT_URL_SSO_OIDC", fake.url());
    env.set_env("AWS_ENDPOINT_URL_SSO", fake.url());
    env.write_settings(&format!(
        "[sso_sessions.corp]\nstart_url = \"{}\"\nregion = \"eu-west-1\"\n",
        fake.start_url()
    ));
    (env, fake)
}

fn cache_file(env: &TestEnv, key: &str) -> PathBuf {
    elhaz::sso::cache_file(&env.scratch("userhome/.aws/sso/cache"), key)
}

fn add_sso(env: &TestEnv, name: &str, account: &str, role: &str) {
    env.run_ok(&[
        "config",
        "add",
        name,
        "--sso-session",
        "corp",
        "--sso-account-id",
        account,
        "--sso-role-name",
        role,
    ]);
}

/// `elhaz sso login ARGS` with the headless user approving every device code.
fn device_login(env: &TestEnv, fake: &FakeSso, args: &[&str]) -> String {
    let (devices, polls) = (fake.devices(), fake.grants("device_code"));
    let mut cmd = env.cmd(
        &[
            &["sso", "login"],
            args,
            &["--use-device-code", "--no-browser"],
        ]
        .concat(),
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // The user confirms only after the CLI has polled at least once (authorization_pending).
    assert!(
        wait_until(LIMIT, || (fake.devices() > devices
            && fake.grants("device_code") > polls)
            || child.try_wait().unwrap().is_some()),
        "no device authorization was started"
    );
    fake.approve_pending();
    let out = wait_output(child, LIMIT);
    assert!(
        out.status.success(),
        "sso login failed{}",
        describe(&cmd, &out)
    );
    stderr(&out)
}

fn wait_output(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    if !wait_until(limit, || child.try_wait().unwrap().is_some()) {
        let _ = child.kill();
    }
    child.wait_with_output().unwrap()
}

fn cp(env: &TestEnv, name: &str) -> Value {
    let mut cmd = env.cmd(&["credential-process", name]);
    let (_, out, _) = run_limited(&mut cmd, LIMIT);
    assert!(
        out.status.success(),
        "credential-process failed{}",
        describe(&cmd, &out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn list(env: &TestEnv) -> Vec<Value> {
    let out = env.run_ok(&["daemon", "list", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn sso_config_flags_and_validation() {
    let (env, fake) = sso_env();
    env.run_ok(&[
        "config",
        "add",
        "direct",
        "--sso-start-url",
        &fake.start_url(),
        "--sso-region",
        "eu-west-1",
        "--sso-account-id",
        "123456789012",
        "--sso-role-name",
        "Developer",
    ]);
    let text = std::fs::read_to_string(env.config_file("direct")).unwrap();
    assert_contains(
        &text,
        &[
            "[sso]",
            "account_id = \"123456789012\"",
            "role_name = \"Developer\"",
        ],
    );
    add_sso(&env, "named", "123456789012", "Dev");
    let text = std::fs::read_to_string(env.config_file("named")).unwrap();
    assert_contains(&text, &["session = \"corp\""]);

    let e = stderr(&env.run_fail(&[
        "config",
        "add",
        "bad",
        "--sso-session",
        "corp",
        "--sso-account-id",
        "12",
        "--sso-role-name",
        "Dev",
    ]));
    assert_contains(&e, &["sso.account_id", "12-digit"]);
    let e = stderr(&env.run_fail(&[
        "config",
        "add",
        "bad",
        "--sso-start-url",
        "ftp://x",
        "--sso-region",
        "eu-west-1",
        "--sso-account-id",
        "123456789012",
        "--sso-role-name",
        "Dev",
    ]));
    assert_contains(&e, &["sso.start_url", "https://"]);
    std::fs::write(
        env.config_file("both"),
        "profile = \"p\"\n[sso]\nsession = \"corp\"\naccount_id = \"123456789012\"\nrole_name = \"R\"\n",
    )
    .unwrap();
    let e = stderr(&env.run_fail(&["config", "show", "both"]));
    assert_contains(&e, &["at most one credential source", "profile and sso"]);
    // An unknown [sso_sessions] name is reported when the session is used.
    env.run_ok(&[
        "config",
        "add",
        "ghost",
        "--sso-session",
        "nope",
        "--sso-account-id",
        "123456789012",
        "--sso-role-name",
        "R",
    ]);
    let mut cmd = env.cmd(&["credential-process", "ghost"]);
    let (_, out, _) = run_limited(&mut cmd, LIMIT);
    assert!(!out.status.success());
    assert_contains(&stderr(&out), &["[sso_sessions.nope]", "elhaz.toml"]);
}

#[test]
fn sso_device_login_then_concurrent_first_fetches() {
    let (env, fake) = sso_env();
    for i in 0..5 {
        add_sso(&env, &format!("s{i}"), "123456789012", &format!("Role{i}"));
    }
    let said = device_login(&env, &fake, &["corp"]);
    assert_contains(&said, &["ABCD-", "logged in", "renewed silently"]);
    assert_eq!(fake.count("/client/register"), 1);
    assert!(fake.grants("device_code") >= 2, "pending, then the token");
    let file = cache_file(&env, "corp");
    assert_eq!(mode_of(&file) & 0o777, 0o600);
    let cached: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    for k in [
        "startUrl",
        "region",
        "accessToken",
        "expiresAt",
        "clientId",
        "clientSecret",
        "refreshToken",
        "registrationExpiresAt",
    ] {
        assert!(cached[k].is_string(), "{k} in {cached}");
    }
    assert!(cached["expiresAt"].as_str().unwrap().ends_with('Z'));

    // 20 concurrent first fetches across 5 sessions: 5 role-credential calls, no new login.
    let children: Vec<_> = (0..20)
        .map(|i| {
            let mut c = env.cmd(&["credential-process", &format!("s{}", i % 5)]);
            c.stdout(Stdio::piped()).stderr(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for child in children {
        let out = wait_output(child, LIMIT);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            v["AccessKeyId"].as_str().unwrap().starts_with("ASIASSO"),
            "{v}"
        );
    }
    assert_eq!(fake.count("/federation/credentials"), 5);
    assert_eq!(fake.count("/client/register"), 1);
    assert_eq!(fake.count("/device_authorization"), 1);

    // A second login while the token is valid joins it.
    let again = env.run_ok(&["sso", "login", "corp", "--use-device-code", "--no-browser"]);
    assert_contains(&stderr(&again), &["already logged in"]);
    assert_eq!(fake.count("/device_authorization"), 1);
}

#[test]
fn sso_pkce_login_with_loopback_redirect() {
    let (env, fake) = sso_env();
    // A "display": $BROWSER is set (but --no-browser: the headless user follows the URL).
    env.set_env("BROWSER", "true");
    let mut cmd = env.cmd(&["sso", "login", "corp", "--no-browser"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut url = None;
    let mut seen = String::new();
    for _ in 0..20 {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
        if let Some(u) = line.split_whitespace().find(|w| w.contains("/authorize?")) {
            url = Some(u.to_string());
            break;
        }
    }
    let url = url.unwrap_or_else(|| panic!("no authorize URL printed: {seen}"));
    assert_contains(
        &url,
        &[
            "code_challenge_method=S256",
            "redirect_uri=http%3A%2F%2F127.0.0.1",
            "sso%3Aaccount%3Aaccess",
        ],
    );
    let status = follow_authorize(&url);
    assert!(status.contains("200"), "{status}");
    let out = wait_output(child, LIMIT);
    assert!(out.status.success(), "{seen}{}", stderr(&out));
    assert_eq!(fake.pkce_verified(), 1);
    assert_eq!(fake.count("/device_authorization"), 0);
    assert!(cache_file(&env, "corp").exists());
}

#[test]
fn sso_device_code_expiry_is_a_clear_error() {
    let (env, fake) = sso_env();
    // slow_down at the first poll adds 5 s to the 1 s interval, which outlasts the 3 s device
    // code: one poll only, then a clear expiry message.
    fake.set_device_expires_in(3);
    fake.slow_down(1);
    let mut cmd = env.cmd(&["sso", "login", "corp", "--use-device-code", "--no-browser"]);
    let (_, out, took) = run_limited(&mut cmd, LIMIT);
    assert!(!out.status.success());
    assert_contains(
        &stderr(&out),
        &["device code expired", "elhaz sso login corp"],
    );
    assert_eq!(fake.grants("device_code"), 1, "slow_down was not honoured");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let mut cmd = env.cmd(&[
        "sso",
        "login",
        "corp",
        "--use-device-code",
        "--no-browser",
        "--timeout",
        "2",
    ]);
    fake.set_device_expires_in(600);
    let (_, out, _) = run_limited(&mut cmd, LIMIT);
    assert!(!out.status.success());
    assert_contains(&stderr(&out), &["not completed within 2s"]);
}

#[test]
fn sso_access_token_renewed_in_background_then_login_required() {
    let (env, fake) = sso_env();
    add_sso(&env, "a", "123456789012", "A");
    add_sso(&env, "b", "123456789012", "B");
    fake.set_token_lifetime(9);
    device_login(&env, &fake, &["corp"]);
    let before = std::fs::read_to_string(cache_file(&env, "corp")).unwrap();
    cp(&env, "a");
    let refreshed = fake.grants("refresh_token");
    // No request: the daemon renews the access token with the refresh token (at lifetime/3
    // before expiry) and writes the cache back.
    assert!(
        wait_until(LIMIT, || fake.grants("refresh_token") > refreshed),
        "the access token was not renewed in the background"
    );
    assert!(wait_until(LIMIT, || std::fs::read_to_string(cache_file(
        &env, "corp"
    ))
    .unwrap()
        != before));
    let after: Value =
        serde_json::from_str(&std::fs::read_to_string(cache_file(&env, "corp")).unwrap()).unwrap();
    assert!(fake.valid_access_token(after["accessToken"].as_str().unwrap()));
    assert_eq!(fake.count("/device_authorization"), 1, "no new login");

    // The refresh token is revoked: the next renewal fails; a new session fails fast with
    // the hint, and the daemon reports login_required.
    fake.revoke_all();
    let mut cmd = detached(&env, &["credential-process", "b"]);
    let (_, out, took) = run_limited(&mut cmd, LIMIT);
    assert!(!out.status.success());
    assert_contains(&stderr(&out), &["run `elhaz sso login corp`"]);
    assert!(
        took < Duration::from_secs(2),
        "took {took:?}\n{}",
        daemon_log(&env)
    );
    let b = list(&env).into_iter().find(|s| s["name"] == "b").unwrap();
    assert_eq!(b["state"], "login_required", "{b}");
    // Later requests fail at once, with no call to the OIDC service or the portal.
    let calls = (fake.count("/token"), fake.count("/federation/credentials"));
    std::thread::sleep(Duration::from_millis(2100)); // past the engine's 2 s negative cache
    let mut cmd = detached(&env, &["credential-process", "b"]);
    let (_, out, _) = run_limited(&mut cmd, LIMIT);
    assert_contains(&stderr(&out), &["run `elhaz sso login corp`"]);
    assert_eq!(
        (fake.count("/token"), fake.count("/federation/credentials")),
        calls,
        "a login_required start URL was asked again"
    );

    // One login brings every session back.
    fake.set_token_lifetime(3600);
    device_login(&env, &fake, &["corp", "--force"]);
    let t = Instant::now();
    assert!(
        wait_until(LIMIT, || env
            .cmd(&["credential-process", "b"])
            .output()
            .unwrap()
            .status
            .success()),
        "b did not come back after the login"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    cp(&env, "a");
}

#[test]
fn sso_status_logout_populate() {
    let (env, fake) = sso_env();
    add_sso(&env, "x", "123456789012", "X");
    let st: Value =
        serde_json::from_slice(&env.run_ok(&["sso", "status", "--json"]).stdout).unwrap();
    assert_eq!(st[0]["logged_in"], false, "{st}");
    assert_eq!(st[0]["sessions"], serde_json::json!(["x"]));
    device_login(&env, &fake, &[]);
    let st: Value =
        serde_json::from_slice(&env.run_ok(&["sso", "status", "--json"]).stdout).unwrap();
    assert_eq!(st[0]["logged_in"], true, "{st}");
    assert_eq!(st[0]["refresh_token"], true, "{st}");
    assert_eq!(st[0]["sso_session"], "corp");

    let dry = stdout(&env.run_ok(&["sso", "populate", "--dry-run"]));
    assert_contains(
        &dry,
        &[
            "would write prod-account-readonly",
            "would write dev-developer",
        ],
    );
    assert!(!env.config_file("dev-developer").exists());
    let out = stdout(&env.run_ok(&["sso", "populate", "corp"]));
    assert_contains(&out, &["wrote 3 session config(s)"]);
    let text = std::fs::read_to_string(env.config_file("prod-account-admin")).unwrap();
    assert_contains(
        &text,
        &[
            "account_id = \"111111111111\"",
            "role_name = \"Admin\"",
            "session = \"corp\"",
        ],
    );
    let again = stdout(&env.run_ok(&["sso", "populate"]));
    assert_contains(&again, &["wrote 0 session config(s), 3 already up to date"]);
    let v = cp(&env, "dev-developer");
    assert!(
        v["SessionToken"]
            .as_str()
            .unwrap()
            .contains("222222222222-Developer"),
        "{v}"
    );

    let out = stdout(&env.run_ok(&["sso", "logout", "corp"]));
    assert_contains(&out, &["logged out"]);
    assert_eq!(fake.count("/logout"), 1);
    assert!(!cache_file(&env, "corp").exists());
    assert!(list(&env).iter().all(|s| s["name"] != "dev-developer"));
}

#[test]
fn sso_token_shared_with_boto3_both_ways() {
    let (env, fake) = sso_env();
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "the test venv is missing: {}",
        python.display()
    );
    add_sso(&env, "e", "123456789012", "Dev");
    device_login(&env, &fake, &["corp"]);
    let aws_config = env.write_scratch(
        "aws-config",
        format!(
            "[profile p]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = Dev\nregion = eu-west-1\n\n[sso-session corp]\nsso_start_url = {}\nsso_region = eu-west-1\nsso_registration_scopes = sso:account:access\n",
            fake.start_url()
        ),
    );
    let script = "import boto3\nc = boto3.Session(profile_name='p').get_credentials().get_frozen_credentials()\nprint(c.access_key, c.token)\n";
    let mut cmd: Command = env.command(&python);
    cmd.args(["-c", script]).env("AWS_CONFIG_FILE", &aws_config);
    let (_, out, _) = run_limited(&mut cmd, LIMIT);
    assert!(out.status.success(), "boto3 failed{}", describe(&cmd, &out));
    assert_contains(&stdout(&out), &["ASIASSO", "123456789012-Dev"]);
    assert_eq!(
        fake.count("/device_authorization"),
        1,
        "boto3 used elhaz's login"
    );

    // The other way: a token only botocore's format holds (written as botocore does, with
    // `UTC` times) is picked up by elhaz.
    let (env2, fake2) = (env, fake);
    std::fs::remove_file(cache_file(&env2, "corp")).unwrap();
    env2.run_ok(&["daemon", "stop"]);
    let mut login = env2.cmd(&["sso", "login", "corp", "--use-device-code", "--no-browser"]);
    login.env("HOME", env2.scratch("otherhome"));
    fake2.auto_approve(true);
    let (_, out, _) = run_limited(&mut login, LIMIT);
    assert!(out.status.success(), "{}", stderr(&out));
    let other = elhaz::sso::cache_file(&env2.scratch("otherhome/.aws/sso/cache"), "corp");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&other).unwrap()).unwrap();
    let exp = v["expiresAt"].as_str().unwrap().replace('Z', "UTC");
    v["expiresAt"] = Value::String(exp);
    let file = cache_file(&env2, "corp");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, v.to_string()).unwrap();
    let c = cp(&env2, "e");
    assert!(
        c["SessionToken"]
            .as_str()
            .unwrap()
            .contains("123456789012-Dev"),
        "{c}"
    );
}

/// The daemon's log (for failure messages).
fn daemon_log(env: &TestEnv) -> String {
    let mut text = String::new();
    for e in std::fs::read_dir(env.log_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with("elhaz.") {
            text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    text
}

#[test]
fn sso_chained_role_starts_from_an_sso_session() {
    let (env, fake) = sso_env();
    let sts = crate::fake_sts::FakeSts::start();
    add_sso(&env, "base", "123456789012", "Base");
    std::fs::write(
        env.config_file("chained"),
        format!(
            "session = \"base\"\n[role]\narn = \"arn:aws:iam::123456789012:role/target\"\n[sts]\nendpoint_url = \"{}\"\n",
            sts.url()
        ),
    )
    .unwrap();
    device_login(&env, &fake, &["corp"]);
    let v = cp(&env, "chained");
    assert!(v["AccessKeyId"].is_string());
    let calls = sts.assume_role_calls("target");
    assert_eq!(calls.len(), 1, "{:?}", sts.calls());
    assert!(
        calls[0]
            .access_key
            .as_deref()
            .is_some_and(|k| k.starts_with("ASIASSO")),
        "AssumeRole was not signed with the SSO role credentials: {:?}",
        calls[0].access_key
    );
    assert_eq!(fake.count("/federation/credentials"), 1);

    // The login revoked and both sessions dropped: the chained one is login_required too, with
    // the base's login named (so an interactive CLI could offer it), and fails fast.
    fake.revoke_all();
    env.run_ok(&["daemon", "remove", "chained"]);
    env.run_ok(&["daemon", "remove", "base"]);
    let mut cmd = detached(&env, &["credential-process", "chained"]);
    let (_, out, took) = run_limited(&mut cmd, LIMIT);
    assert!(!out.status.success());
    assert_contains(
        &stderr(&out),
        &["source session", "run `elhaz sso login corp`"],
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    let mut raw = env.raw();
    let reply = raw.request(&format!(
        r#"{{"protocol":{},"id":1,"op":"credentials","name":"chained"}}"#,
        elhaz::protocol::PROTOCOL_VERSION
    ));
    assert_eq!(reply["error"]["code"], "login_required", "{reply}");
    assert_eq!(reply["error"]["sso"]["sso_session"], "corp", "{reply}");
}

#[test]
fn config_import_aws_converts_reports_and_rewrites() {
    let env = TestEnv::new();
    let aws = env.write_scratch(
        "aws-config",
        "[default]\nregion = eu-west-1\n\n\
         [sso-session corp2]\nsso_start_url = https://corp2.awsapps.com/start\nsso_region = eu-west-1\nsso_registration_scopes = sso:account:access\n\n\
         [profile sso-p]\nsso_session = corp2\nsso_account_id = 123456789012\nsso_role_name = Dev\nregion = eu-west-1\n\n\
         [profile legacy]\nsso_start_url = https://old.awsapps.com/start\nsso_region = us-east-1\nsso_account_id = 123456789012\nsso_role_name = Ops\n\n\
         [profile role-p]\nrole_arn = arn:aws:iam::123456789012:role/admin\nsource_profile = sso-p\nexternal_id = ext-1\nduration_seconds = 3600\nregion = eu-west-1\n\n\
         [profile mfa-p]\nrole_arn = arn:aws:iam::123456789012:role/admin\nsource_profile = keys\nmfa_serial = arn:aws:iam::123456789012:mfa/me\n\n\
         [profile keys]\naws_access_key_id = AKIAEXAMPLE\n\n\
         [profile proc]\ncredential_process = /bin/true\n",
    );
    let before = std::fs::read_to_string(&aws).unwrap();
    let dry = stdout(&env.run_ok(&["config", "import-aws", "--dry-run"]));
    assert_contains(
        &dry,
        &["would write 4 session config(s); 3 profile(s) not converted"],
    );
    assert!(!env.config_file("sso-p").exists());
    let out = stdout(&env.run_ok(&["config", "import-aws"]));
    assert_contains(
        &out,
        &[
            "added [sso_sessions.corp2]",
            "skipped profile keys: no role_arn or sso_*",
            "skipped profile proc: `credential_process` has no elhaz equivalent",
            "wrote 4 session config(s)",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(&aws).unwrap(),
        before,
        "the AWS file changed"
    );
    let settings = std::fs::read_to_string(env.settings_file()).unwrap();
    assert_contains(
        &settings,
        &["[sso_sessions.corp2]", "https://corp2.awsapps.com/start"],
    );
    let role = std::fs::read_to_string(env.config_file("role-p")).unwrap();
    assert_contains(
        &role,
        &[
            "session = \"sso-p\"",
            "external_id = \"ext-1\"",
            "duration = ",
        ],
    );
    let mfa = std::fs::read_to_string(env.config_file("mfa-p")).unwrap();
    assert_contains(
        &mfa,
        &["profile = \"keys\"", "arn:aws:iam::123456789012:mfa/me"],
    );
    let legacy = std::fs::read_to_string(env.config_file("legacy")).unwrap();
    assert_contains(
        &legacy,
        &[
            "start_url = \"https://old.awsapps.com/start\"",
            "role_name = \"Ops\"",
        ],
    );
    env.run_ok(&["config", "show", "sso-p"]);

    env.run_ok(&["config", "import-aws", "--force", "--rewrite"]);
    let after = std::fs::read_to_string(&aws).unwrap();
    assert_eq!(
        std::fs::read_to_string(env.scratch("aws-config.elhaz-backup")).unwrap(),
        before
    );
    assert_contains(
        &after,
        &[
            "credential-process -- sso-p",
            "credential-process -- role-p",
            "[profile keys]\naws_access_key_id",
        ],
    );
    assert!(
        !after.contains("sso_account_id = 123456789012\nsso_role_name = Dev"),
        "{after}"
    );
}

/// Every file under the test's `~/.aws/sso` (none may appear in memory-only mode).
fn sso_cache_files(env: &TestEnv) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![env.scratch("userhome/.aws/sso")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

fn sso_status_json(env: &TestEnv) -> Value {
    serde_json::from_slice(&env.run_ok(&["sso", "status", "--json"]).stdout).unwrap()
}

/// `sso_token_cache = "memory"`: `sso login` hands the token to the daemon over its socket;
/// nothing is written under ~/.aws/sso at any point (after the login, the fetches, a
/// background renewal, the logout); sessions work and renew silently; `status` and `logout`
/// go through the daemon (logout ends the portal session with the daemon's token); a daemon
/// restart needs a new login.
#[test]
fn sso_memory_mode_hands_the_token_to_the_daemon() {
    let (env, fake) = sso_env();
    env.write_settings(&format!(
        "sso_token_cache = \"memory\"\n\n[sso_sessions.corp]\nstart_url = \"{}\"\nregion = \"eu-west-1\"\n",
        fake.start_url()
    ));
    add_sso(&env, "a", "123456789012", "A");
    add_sso(&env, "b", "123456789012", "B");
    let no_cache = |when: &str| {
        let files = sso_cache_files(&env);
        assert!(files.is_empty(), "{when}: token cache written: {files:?}");
    };
    let st = sso_status_json(&env);
    assert_eq!(st[0]["logged_in"], false, "{st}");
    assert_eq!(st[0]["token_cache"], "memory", "{st}");

    fake.set_token_lifetime(9);
    let said = device_login(&env, &fake, &["corp"]);
    assert_contains(&said, &["logged in", "daemon's memory", "renewed silently"]);
    no_cache("after the login");
    let st = sso_status_json(&env);
    assert_eq!(st[0]["logged_in"], true, "{st}");
    assert_eq!(st[0]["refresh_token"], true, "{st}");
    assert!(st[0]["cache_file"].is_null(), "{st}");

    let v = cp(&env, "a");
    assert!(
        v["SessionToken"]
            .as_str()
            .unwrap()
            .contains("123456789012-A")
    );
    no_cache("after a fetch");

    // Background renewal with the refresh token, no request, and still nothing on disk.
    let refreshed = fake.grants("refresh_token");
    assert!(
        wait_until(LIMIT, || fake.grants("refresh_token") > refreshed),
        "the access token was not renewed in the background\n{}",
        daemon_log(&env)
    );
    no_cache("after a background renewal");
    // The first access token has expired by now (9 s); b's first fetch uses the renewed one.
    std::thread::sleep(Duration::from_millis(500));
    let v = cp(&env, "b");
    assert!(
        v["SessionToken"]
            .as_str()
            .unwrap()
            .contains("123456789012-B")
    );
    assert_eq!(fake.count("/device_authorization"), 1, "no new login");
    no_cache("after the renewal and a fetch");

    // Logout: the daemon ends the portal session with its token and drops it.
    let out = stdout(&env.run_ok(&["sso", "logout", "corp"]));
    assert_contains(&out, &["logged out", "dropped 2 session(s)"]);
    assert_eq!(fake.count("/logout"), 1);
    let st = sso_status_json(&env);
    assert_eq!(st[0]["logged_in"], false, "{st}");
    let mut cmd = detached(&env, &["credential-process", "a"]);
    let (_, out, took) = run_limited(&mut cmd, LIMIT);
    assert!(!out.status.success());
    assert_contains(&stderr(&out), &["run `elhaz sso login corp`"]);
    assert!(took < Duration::from_secs(2), "{took:?}");

    // A new login, then a daemon restart: the token is gone with the daemon.
    fake.set_token_lifetime(3600);
    device_login(&env, &fake, &["corp"]);
    cp(&env, "a");
    // The daemon's token is valid: another login joins it, asking the daemon.
    let again = env.run_ok(&["sso", "login", "corp", "--use-device-code", "--no-browser"]);
    assert_contains(&stderr(&again), &["already logged in"]);
    assert_eq!(fake.count("/device_authorization"), 2);
    // populate asks the daemon, which lists with its token.
    let out = stdout(&env.run_ok(&["sso", "populate", "corp"]));
    assert_contains(&out, &["wrote 3 session config(s)"]);
    assert!(env.config_file("dev-developer").exists());
    assert_eq!(fake.count("/assignment/accounts"), 1);
    env.run_ok(&["daemon", "stop"]);
    let mut cmd = detached(&env, &["credential-process", "a"]);
    let (_, out, _) = run_limited(&mut cmd, LIMIT);
    assert!(
        !out.status.success(),
        "served after a restart without a login"
    );
    assert_contains(&stderr(&out), &["run `elhaz sso login corp`"]);
    no_cache("at the end");

    // The daemon's log never saw a token (the fake's are `access-N`, `refresh-N` and
    // `secret-client-N`).
    let log = daemon_log(&env);
    for prefix in ["access-", "refresh-", "secret-client-"] {
        let leaked = log.match_indices(prefix).any(|(i, _)| {
            log[i + prefix.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        });
        assert!(!leaked, "a {prefix}N token in the daemon log:\n{log}");
    }
}

/// The `sso_*` requests are the owner's: a delegate token (even an unscoped one) can neither
/// hand over, read nor drop a login; the owner can.
#[test]
fn sso_requests_are_refused_to_delegates() {
    let (env, fake) = sso_env();
    const TOKEN: &str = "unscoped-delegate-token-fedcba9876543210";
    let file = env.scratch("tokens");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    chmod(&file, 0o600);
    let _d =
        env.start_daemon_foreground(&["--require-token", "--token-file", file.to_str().unwrap()]);
    let target = format!(
        r#"{{"sso_session":"corp","start_url":"{}","region":"eu-west-1"}}"#,
        fake.start_url()
    );
    let login = format!(
        r#""op":"sso_login","sso":{target},"sso_token":{{"access_token":"handed-over-secret","expires_at":"2099-01-01T00:00:00Z"}}"#
    );
    let logout = format!(r#""op":"sso_logout","sso":{target},"portal_logout":true"#);
    let list = format!(r#""op":"sso_assignments","sso":{target}"#);
    let mut c = env.raw();
    for (id, op) in [
        (1, login.as_str()),
        (2, r#""op":"sso_status""#),
        (3, logout.as_str()),
        (7, list.as_str()),
    ] {
        let reply = c.request(&format!(
            r#"{{"protocol":{},"id":{id},"token":"{TOKEN}",{op}}}"#,
            elhaz::protocol::PROTOCOL_VERSION
        ));
        assert_error_reply(&reply, "permission_denied", id);
    }
    // Nothing was handed over: the owner's status shows no login.
    let reply = c.request(&format!(
        r#"{{"protocol":{},"id":4,"op":"sso_status"}}"#,
        elhaz::protocol::PROTOCOL_VERSION
    ));
    assert_eq!(reply["ok"]["logins"], serde_json::json!([]), "{reply}");
    // The owner may hand one over; the log shows the start URL, never the token.
    let reply = c.request(&format!(
        r#"{{"protocol":{},"id":5,{login}}}"#,
        elhaz::protocol::PROTOCOL_VERSION
    ));
    assert_eq!(reply["ok"]["kind"], "sso_logged_in", "{reply}");
    let reply = c.request(&format!(
        r#"{{"protocol":{},"id":6,"op":"sso_status"}}"#,
        elhaz::protocol::PROTOCOL_VERSION
    ));
    assert_eq!(
        reply["ok"]["logins"][0]["expires_at"],
        "2099-01-01T00:00:00Z"
    );
    assert!(!reply.to_string().contains("handed-over-secret"), "{reply}");
    assert!(env.wait_for_log("handed over"));
    assert!(!env.log_text().contains("handed-over-secret"));
}

/// `elhaz ARGS…` with no controlling terminal (`setsid`): a non-interactive consumer, as
/// under an SDK's `credential_process`.
fn detached(env: &TestEnv, args: &[&str]) -> Command {
    let mut cmd = env.command("setsid");
    cmd.arg(BIN).args(args);
    cmd
}

/// `sh -c SHELL_CMD` on a fresh pseudo-terminal (util-linux `script`), which becomes its
/// controlling terminal: an interactive CLI. `answer` is typed on it.
fn on_a_tty(env: &TestEnv, shell_cmd: &str, answer: &str) -> std::process::Child {
    let mut cmd = env.command("script");
    cmd.args(["-qfec", shell_cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("util-linux `script` runs");
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(answer.as_bytes()).unwrap();
    // Kept open (an EOF on script's stdin may end the session early); closed with the child.
    std::mem::forget(stdin);
    child
}

/// An env in state `login_required` for sessions `b` and `c`: logged in, `a` fetched (so the
/// daemon holds the token), then every token revoked by the "administrator"; `b` and `c` hold
/// no credentials yet. The device flow is forced (no display) and the
/// headless user approves every new device code.
fn login_required_env() -> (TestEnv, FakeSso) {
    let (env, fake) = sso_env();
    for v in ["DISPLAY", "WAYLAND_DISPLAY", "BROWSER"] {
        env.set_env(v, "");
    }
    add_sso(&env, "a", "123456789012", "A");
    add_sso(&env, "b", "123456789012", "B");
    add_sso(&env, "c", "123456789012", "C");
    device_login(&env, &fake, &["corp"]);
    cp(&env, "a");
    fake.revoke_all();
    fake.auto_approve(true);
    // Non-interactive: fails fast with the hint, offers nothing.
    let mut cmd = detached(&env, &["credential-process", "b"]);
    let (_, out, took) = run_limited(&mut cmd, LIMIT);
    assert!(!out.status.success(), "served with revoked tokens");
    assert_contains(&stderr(&out), &["run `elhaz sso login corp`"]);
    assert!(!stderr(&out).contains("[Y/n]"), "{}", stderr(&out));
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(fake.count("/device_authorization"), 1);
    (env, fake)
}

/// An interactive `credential-process` (stdout captured as an SDK would, a terminal to ask on)
/// in state `login_required` offers the login on the terminal, runs it (device code: no
/// display) and serves the retried fetch.
#[test]
fn sso_interactive_consumer_offers_the_login() {
    let (env, fake) = login_required_env();
    let out_file = env.scratch("cp.json");
    let child = on_a_tty(
        &env,
        &format!("{BIN} credential-process b > {}", out_file.display()),
        "y\n",
    );
    let out = wait_output(child, LIMIT);
    let tty = stdout(&out);
    assert!(out.status.success(), "{tty}{}", stderr(&out));
    assert_contains(
        &tty,
        &["log in to corp now? [Y/n]", "ABCD-", "logged in to"],
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert!(
        v["SessionToken"]
            .as_str()
            .unwrap()
            .contains("123456789012-B"),
        "{v}"
    );
    assert_eq!(fake.count("/device_authorization"), 2, "one new login");
    // Every session of the start URL is back, with no further login.
    cp(&env, "c");
    assert_eq!(fake.count("/device_authorization"), 2);

    // "n" declines: the error stands.
    fake.revoke_all();
    env.run_ok(&["daemon", "remove", "c"]);
    let child = on_a_tty(&env, &format!("{BIN} credential-process c"), "n\n");
    let out = wait_output(child, LIMIT);
    assert!(!out.status.success());
    assert_contains(&stdout(&out), &["[Y/n]", "run `elhaz sso login corp`"]);
    assert_eq!(
        fake.count("/device_authorization"),
        2,
        "declined, yet logged in"
    );
}

/// Two interactive commands for one start URL at once (`exec` and `credential-process`, as
/// after a laptop wakes): one device authorization; the second waits for the first's login
/// and is served by it.
#[test]
fn sso_two_interactive_consumers_one_login() {
    let (env, fake) = login_required_env();
    // The user approves only once the first login's device code is out, so the second
    // command certainly meets the first one's login under way.
    fake.auto_approve(false);
    let a = on_a_tty(
        &env,
        &format!("{BIN} exec b -- sh -c 'echo KEY=$AWS_ACCESS_KEY_ID'"),
        "y\n",
    );
    let b = on_a_tty(&env, &format!("{BIN} credential-process c"), "y\n");
    assert!(
        wait_until(LIMIT, || fake.devices() > 1),
        "no login was started"
    );
    std::thread::sleep(Duration::from_millis(1500));
    fake.approve_pending();
    let (a, b) = (wait_output(a, LIMIT), wait_output(b, LIMIT));
    assert!(a.status.success(), "exec: {}{}", stdout(&a), stderr(&a));
    assert!(
        b.status.success(),
        "credential-process: {}{}",
        stdout(&b),
        stderr(&b)
    );
    assert_contains(&stdout(&a), &["KEY=ASIASSO"]);
    let both = format!("{}{}", stdout(&a), stdout(&b));
    assert_eq!(
        both.matches("[Y/n]").count(),
        1,
        "one offer, the other command waited for it:\n{both}"
    );
    assert_contains(&both, &["is running; waiting for it"]);
    assert_contains(&stdout(&b), &["AccessKeyId"]);
    assert_eq!(
        fake.count("/device_authorization"),
        2,
        "more than one login for one start URL\n--- a ---\n{}\n--- b ---\n{}",
        stdout(&a),
        stdout(&b)
    );
}

/// The OIDC service itself says the device code expired (`expired_token`, before the expiry it
/// announced): a clear message naming the command to run again.
#[test]
fn sso_device_code_expired_by_the_service() {
    let (env, fake) = sso_env();
    let mut cmd = env.cmd(&["sso", "login", "corp", "--use-device-code", "--no-browser"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    assert!(
        wait_until(LIMIT, || fake.grants("device_code") >= 1),
        "the CLI never polled"
    );
    fake.expire_device_codes();
    let out = wait_output(child, LIMIT);
    assert!(!out.status.success());
    assert_contains(
        &stderr(&out),
        &["device code expired", "elhaz sso login corp"],
    );
    assert!(
        fake.grants("device_code") >= 2,
        "the expiry came from a poll"
    );
    assert!(!cache_file(&env, "corp").exists());
}

/// Two `elhaz sso login` for one start URL at once: one device authorization; the second
/// waits for the first and finds its token.
#[test]
fn sso_concurrent_logins_join_one_flow() {
    let (env, fake) = sso_env();
    let spawn = || {
        let mut cmd = env.cmd(&["sso", "login", "corp", "--use-device-code", "--no-browser"]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().unwrap()
    };
    let (a, b) = (spawn(), spawn());
    assert!(
        wait_until(LIMIT, || fake.devices() >= 1),
        "no login was started"
    );
    std::thread::sleep(Duration::from_millis(1000));
    fake.approve_pending();
    let (a, b) = (wait_output(a, LIMIT), wait_output(b, LIMIT));
    assert!(
        a.status.success() && b.status.success(),
        "{}{}",
        stderr(&a),
        stderr(&b)
    );
    assert_eq!(fake.count("/device_authorization"), 1);
    let both = format!("{}{}", stderr(&a), stderr(&b));
    assert_contains(&both, &["is running; waiting for it", "already logged in"]);
}

/// A `profile = "P"` source whose AWS profile uses an `sso_session` (the SDK's own SSO
/// provider in the daemon) works on the token `elhaz sso login` cached.
#[test]
fn sso_profile_source_uses_the_cached_login() {
    let (env, fake) = sso_env();
    std::fs::write(
        env.scratch("aws-config"),
        format!(
            "[profile ssop]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = Dev\nregion = eu-west-1\n\n[sso-session corp]\nsso_start_url = {}\nsso_region = eu-west-1\nsso_registration_scopes = sso:account:access\n",
            fake.start_url()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(env.configs_dir()).unwrap();
    std::fs::write(env.config_file("viaprofile"), "profile = \"ssop\"\n").unwrap();
    device_login(&env, &fake, &["corp"]);
    let v = cp(&env, "viaprofile");
    assert!(
        v["SessionToken"]
            .as_str()
            .unwrap()
            .contains("123456789012-Dev"),
        "{v}"
    );
    assert_eq!(fake.count("/device_authorization"), 1);
}

/// botocore running `elhaz credential-process` with no terminal, in state `login_required`:
/// the credential load fails within 2 s and botocore's error carries the hint (botocore puts
/// the process's stderr in its exception).
#[test]
fn sso_login_required_under_botocore_fails_fast_with_the_hint() {
    let (env, fake) = login_required_env();
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "the test venv is missing: {}",
        python.display()
    );
    let aws_config = env.write_scratch(
        "aws-config-cp",
        format!("[profile via-elhaz]\ncredential_process = {BIN} credential-process b\n"),
    );
    let script = "import time, boto3\n\
        t = time.monotonic()\n\
        try:\n    boto3.Session(profile_name='via-elhaz').get_credentials().get_frozen_credentials()\n    print('SERVED')\n\
        except Exception as e:\n    print('ERROR', round(time.monotonic() - t, 3), e)\n";
    let mut cmd = env.command("setsid");
    cmd.arg(&python)
        .args(["-c", script])
        .env("AWS_CONFIG_FILE", &aws_config);
    let (_, out, _) = run_limited(&mut cmd, LIMIT);
    let said = stdout(&out);
    assert!(said.starts_with("ERROR "), "{said}{}", stderr(&out));
    assert_contains(&said, &["run `elhaz sso login corp`"]);
    let took: f64 = said.split_whitespace().nth(1).unwrap().parse().unwrap();
    eprintln!("sso: botocore's credential load failed with the hint in {took} s");
    assert!(took < 2.0, "botocore's credential load took {took} s");
    assert_eq!(
        fake.count("/device_authorization"),
        1,
        "a login was started"
    );
}

/// Memory-only mode never reads the AWS CLI's cache either: a valid token left there by an
/// earlier login (or the AWS CLI) serves nothing.
#[test]
fn sso_memory_mode_ignores_the_cache_file() {
    let (env, fake) = sso_env();
    add_sso(&env, "a", "123456789012", "A");
    device_login(&env, &fake, &["corp"]);
    assert!(cache_file(&env, "corp").exists());
    env.run_ok(&["daemon", "stop"]);
    env.write_settings(&format!(
        "sso_token_cache = \"memory\"\n\n[sso_sessions.corp]\nstart_url = \"{}\"\nregion = \"eu-west-1\"\n",
        fake.start_url()
    ));
    let mut cmd = detached(&env, &["credential-process", "a"]);
    let (_, out, _) = run_limited(&mut cmd, LIMIT);
    assert!(
        !out.status.success(),
        "served from the cache file in memory mode"
    );
    assert_contains(&stderr(&out), &["run `elhaz sso login corp`"]);
    assert_eq!(fake.count("/federation/credentials"), 0);
    let st = sso_status_json(&env);
    assert_eq!(st[0]["logged_in"], false, "{st}");
}
