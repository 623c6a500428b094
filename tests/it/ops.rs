//! Operations commands end to end: `config import-elhaz` (Python elhaz YAML in, TOML out),
//! `doctor`, `completions` (static scripts and clap's dynamic protocol), `man`, `hook` in real
//! shells, `setup systemd --print` (checked by `systemd-analyze verify`) and
//! `setup agent-access --dry-run`.
//!
//! Shells other than bash, `groff`/`man` and `systemd-analyze` are used when installed; a
//! check that cannot run prints `SKIPPED-CHECK: …` instead of passing silently.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::moto::{Moto, add_sts_config, aws_env};
use crate::util::*;

/// A secret access key that must never leave the YAML file it is written in.
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzSECRETKEY";
/// Its access key id (not secret, but never printed either).
const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";

/// Python elhaz 0.5.6 configs as its `config add` writes them (ruamel round-trip dump of the
/// pydantic model, `None`s excluded), plus two files it cannot use.
fn python_configs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let files = [
        (
            "prod-admin.yaml",
            r#"AssumeRole:
  RoleArn: arn:aws:iam::123456789012:role/Admin
  RoleSessionName: alice
  PolicyArns:
  - arn:aws:iam::aws:policy/ReadOnlyAccess
  - arn:aws:iam::123456789012:policy/Boundary
  Policy: '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}'
  DurationSeconds: 7200
  ExternalId: ext-1234
  Tags:
  - Key: team
    Value: infra
  - Key: cost-center
    Value: '42'
  TransitiveTagKeys:
  - team
  SourceIdentity: alice
STS:
  region_name: eu-west-1
  verify: true
  endpoint_url: https://sts.eu-west-1.amazonaws.com
Session:
  profile_name: corp
Meta:
  description: production admin
"#
            .to_string(),
        ),
        (
            "keys.yaml",
            format!(
                "AssumeRole:\n  RoleArn: arn:aws:iam::123456789012:role/dev\nSession:\n  \
                 aws_access_key_id: {KEY_ID}\n  aws_secret_access_key: {SECRET}\n  \
                 region_name: us-west-2\n"
            ),
        ),
        (
            "mfa.yaml",
            "AssumeRole:\n  RoleArn: arn:aws:iam::123456789012:role/mfa\n  SerialNumber: \
             arn:aws:iam::123456789012:mfa/alice\n  TokenCode: '918273'\nMFA:\n  command: ykman \
             oath accounts code --single 'AWS alice'\n  timeout: 20\n"
                .to_string(),
        ),
        (
            "broken.yaml",
            "AssumeRole:\n  RoleArn: [arn:aws:iam::123456789012:role/x\n".to_string(),
        ),
        (
            "norole.yaml",
            "STS:\n  region_name: us-east-1\nMeta:\n  description: orphan\n".to_string(),
        ),
        ("notes.txt", "not a config".to_string()),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", stdout(out)))
}

/// The line of `text` starting with `prefix` (panics with the text if none).
fn line_with<'a>(text: &'a str, prefix: &str, contains: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix) && l.contains(contains))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} with {contains:?} in:\n{text}"))
}

/// Asserts no file under `dir` contains `needle`.
fn assert_nowhere(dir: &Path, needle: &str) {
    for (path, bytes) in snapshot(dir) {
        assert!(
            !String::from_utf8_lossy(&bytes).contains(needle),
            "{needle:?} found in {}",
            dir.join(path).display()
        );
    }
}

#[test]
fn import_elhaz_converts_a_python_config_directory() {
    let env = TestEnv::new();
    let src = env.scratch("py/.elhaz/configs");
    python_configs(&src);
    let out = env.run_ok(&["config", "import-elhaz", src.to_str().unwrap()]);
    let (so, se) = (stdout(&out), stderr(&out));

    // One line per YAML file (notes.txt is not one), with reasons and notes.
    assert_contains(&so, &["imported 3 of 5 files", "(2 skipped)"]);
    assert!(!so.contains("notes.txt"), "{so}");
    line_with(&so, "imported", "prod-admin.yaml");
    line_with(&so, "imported", "keys.yaml");
    line_with(&so, "imported", "mfa.yaml");
    assert_contains(
        line_with(&so, "skipped", "broken.yaml"),
        &["invalid YAML", "line"],
    );
    assert_contains(
        line_with(&so, "skipped", "norole.yaml"),
        &["no AssumeRole section"],
    );
    assert_contains(
        &so,
        &[
            "    note: static keys found in Session (aws_access_key_id, aws_secret_access_key)",
            "elhaz keyring set keys",
            "keyring = \"keys\"",
            "    note: AssumeRole.TokenCode is not carried",
            "    note: STS.verify is not carried",
            "    note: AssumeRole.PolicyArns",
        ],
    );

    // The secret, its key id and the fixed MFA code went nowhere.
    for needle in [SECRET, KEY_ID, "918273"] {
        assert!(
            !so.contains(needle) && !se.contains(needle),
            "{needle} printed:\n{so}\n{se}"
        );
        assert_nowhere(env.home(), needle);
    }

    // Full AssumeRole: every field mapped.
    let v = json_of(&env.run_ok(&["config", "show", "prod-admin", "--json"]));
    assert_eq!(v["description"], "production admin");
    assert_eq!(v["profile"], "corp");
    assert_eq!(v["source_kind"], "profile");
    assert_eq!(v["region"], "eu-west-1");
    assert_eq!(v["duration"], 7200);
    assert_eq!(v["role"]["arn"], "arn:aws:iam::123456789012:role/Admin");
    assert_eq!(v["role"]["session_name"], "alice");
    assert_eq!(v["role"]["external_id"], "ext-1234");
    assert_eq!(v["role"]["source_identity"], "alice");
    assert_eq!(
        v["role"]["policy_arns"],
        serde_json::json!([
            "arn:aws:iam::aws:policy/ReadOnlyAccess",
            "arn:aws:iam::123456789012:policy/Boundary"
        ])
    );
    assert_eq!(
        v["role"]["tags"],
        serde_json::json!({"team": "infra", "cost-center": "42"})
    );
    assert_eq!(
        v["role"]["transitive_tag_keys"],
        serde_json::json!(["team"])
    );
    let policy: Value = serde_json::from_str(v["role"]["policy"].as_str().unwrap()).unwrap();
    assert_eq!(policy["Statement"][0]["Action"], "s3:*");
    assert_eq!(
        v["sts"],
        serde_json::json!({"endpoint_url": "https://sts.eu-west-1.amazonaws.com", "region": "eu-west-1"})
    );

    // Static keys: a keyring reference, no keys.
    let v = json_of(&env.run_ok(&["config", "show", "keys", "--json"]));
    assert_eq!(v["keyring"], "keys");
    assert_eq!(v["source_kind"], "keyring");
    assert_eq!(v["region"], "us-west-2");
    assert!(v.get("profile").is_none(), "{v}");

    // MFA: the command string split like Python's shlex, the timeout carried, no code.
    let v = json_of(&env.run_ok(&["config", "show", "mfa", "--json"]));
    assert_eq!(v["mfa"]["serial"], "arn:aws:iam::123456789012:mfa/alice");
    assert_eq!(
        v["mfa"]["command"],
        serde_json::json!(["ykman", "oath", "accounts", "code", "--single", "AWS alice"])
    );
    assert_eq!(v["mfa"]["command_timeout"], 20);

    // The files: private, valid, with a header naming their source.
    let text = std::fs::read_to_string(env.config_file("prod-admin")).unwrap();
    assert!(text.starts_with("# Imported from Python elhaz"), "{text}");
    assert_contains(
        &text,
        &[src.join("prod-admin.yaml").to_str().unwrap(), "[role.tags]"],
    );
    for name in ["prod-admin", "keys", "mfa"] {
        assert_eq!(mode_of(&env.config_file(name)), 0o600, "{name}");
    }
    assert!(!env.config_file("broken").exists() && !env.config_file("norole").exists());
    let list = json_of(&env.run_ok(&["config", "list", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    assert!(
        list.as_array().unwrap().iter().all(|c| c["valid"] == true),
        "{list}"
    );
}

#[test]
fn import_elhaz_dry_run_writes_nothing() {
    let env = TestEnv::new();
    let src = env.scratch("py");
    python_configs(&src);
    let before = snapshot(env.home());
    let out = env.run_ok(&["config", "import-elhaz", src.to_str().unwrap(), "--dry-run"]);
    let so = stdout(&out);
    assert_eq!(snapshot(env.home()), before, "a dry run wrote something");
    assert!(!env.configs_dir().exists());
    line_with(&so, "would import", "prod-admin.yaml");
    line_with(&so, "skipped", "broken.yaml");
    // The TOML it would write, header included.
    assert_contains(
        &so,
        &[
            &format!("    --- {}", env.config_file("mfa").display()),
            "    # Imported from Python elhaz",
            "    [role]",
            "    arn = \"arn:aws:iam::123456789012:role/Admin\"",
            "    keyring = \"keys\"",
            "would import 3 of 5 files",
            "dry run: nothing was written",
        ],
    );
    assert!(!so.contains(SECRET) && !stderr(&out).contains(SECRET));
}

#[test]
fn import_elhaz_refuses_to_overwrite_without_force() {
    let env = TestEnv::new();
    let src = env.scratch("py");
    python_configs(&src);
    env.run_ok(&["config", "import-elhaz", src.to_str().unwrap()]);
    // The user edits one afterwards.
    let edited = format!("description = \"mine\"\n[role]\narn = \"{ROLE_ARN}\"\n");
    std::fs::write(env.config_file("mfa"), &edited).unwrap();
    let before = snapshot(&env.configs_dir());

    // Everything exists or is broken: nothing imported, so the run fails and changes nothing.
    let out = env.run_fail(&["config", "import-elhaz", src.to_str().unwrap()]);
    let so = stdout(&out);
    assert_contains(
        line_with(&so, "skipped", "mfa.yaml"),
        &["already exists", "--force"],
    );
    assert_contains(&so, &["imported 0 of 5 files"]);
    assert_eq!(snapshot(&env.configs_dir()), before);
    // A dry run says the same.
    let out = env.run_fail(&["config", "import-elhaz", src.to_str().unwrap(), "--dry-run"]);
    assert_contains(
        line_with(&stdout(&out), "skipped", "keys.yaml"),
        &["already exists"],
    );

    // --force overwrites.
    env.run_ok(&["config", "import-elhaz", src.to_str().unwrap(), "--force"]);
    let text = std::fs::read_to_string(env.config_file("mfa")).unwrap();
    assert!(
        text.contains("role/mfa") && !text.contains("mine"),
        "{text}"
    );
}

#[test]
fn import_elhaz_single_file_default_dir_and_exit_codes() {
    let env = TestEnv::new();
    // The default directory is $HOME/.elhaz/configs.
    let home = env.scratch("userhome");
    python_configs(&home.join(".elhaz/configs"));
    let mut cmd = env.cmd(&["config", "import-elhaz", "--dry-run"]);
    cmd.env("HOME", &home);
    let out = cmd_ok(&mut cmd);
    assert_contains(
        &stdout(&out),
        &["would import 3 of 5 files", ".elhaz/configs"],
    );

    // One file, whatever its extension.
    let one = env.write_scratch(
        "solo.yml",
        "AssumeRole:\n  RoleArn: arn:aws:iam::123456789012:role/solo\n  DurationSeconds: 900\n",
    );
    let out = env.run_ok(&["config", "import-elhaz", one.to_str().unwrap()]);
    // 900 s credentials: botocore would call elhaz on every request.
    assert_contains(
        &stdout(&out),
        &["imported 1 of 1 file", "note: credentials last 15m"],
    );
    let v = json_of(&env.run_ok(&["config", "show", "solo", "--json"]));
    assert_eq!(v["duration"], 900);

    // A name elhaz cannot use (Python allowed any \w) is skipped with the reason.
    let dir = env.scratch("odd");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("caf\u{e9}.yaml"),
        "AssumeRole:\n  RoleArn: arn:aws:iam::123456789012:role/x\n",
    )
    .unwrap();
    // Nothing importable and something failed: exit 1.
    let out = env.run_fail(&["config", "import-elhaz", dir.to_str().unwrap()]);
    assert_contains(&stdout(&out), &["invalid session name", "rename the file"]);
    // An empty directory is not a failure.
    let empty = env.scratch("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = env.run_ok(&["config", "import-elhaz", empty.to_str().unwrap()]);
    assert_contains(&stdout(&out), &["no *.yaml"]);
    // A missing path is.
    let out = env.run_fail(&[
        "config",
        "import-elhaz",
        env.scratch("nope").to_str().unwrap(),
    ]);
    assert_contains(&stderr(&out), &["cannot read"]);
}

/// `elhaz doctor --json` (any exit status) as a list of checks.
fn doctor_json(env: &TestEnv) -> (Vec<Value>, std::process::Output) {
    let out = output_of(&mut env.cmd(&["doctor", "--json"]));
    let v = json_of(&out);
    let checks = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .clone();
    for c in &checks {
        assert!(c["check"].is_string() && c["detail"].is_string(), "{c}");
        assert!(
            matches!(c["status"].as_str(), Some("ok" | "warn" | "fail")),
            "{c}"
        );
        // A problem always comes with a fix.
        assert_eq!(c["status"] != "ok", c["fix"].is_string(), "{c}");
    }
    (checks, out)
}

fn check<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {checks:#?}"))
}

/// Points the clock-skew probe at a closed local port: a quick, hermetic "unreachable".
fn offline_sts(env: &TestEnv) {
    env.set_env(
        "AWS_ENDPOINT_URL_STS",
        format!("http://127.0.0.1:{}", crate::moto::free_port()),
    );
}

#[test]
fn doctor_on_a_fresh_home() {
    let env = TestEnv::new();
    offline_sts(&env);
    let out = env.run_ok(&["doctor"]);
    let so = stdout(&out);
    for name in [
        "configs dir",
        "run dir",
        "log dir",
        "socket",
        "settings",
        "configs",
        "daemon",
        "keyring",
        "aws profiles",
        "clock skew",
    ] {
        assert!(
            so.lines()
                .any(|l| l.get(6..).is_some_and(|rest| rest.starts_with(name))),
            "no {name:?} line in:\n{so}"
        );
    }
    assert_contains(
        &so,
        &[
            "not created yet",
            "not running (it starts on first use)",
            "cannot check clock skew",
            "0 failures",
        ],
    );
    // Doctor never starts the daemon and creates nothing.
    assert!(!env.socket().exists() && !env.run_dir().exists());
    assert!(std::fs::read_dir(env.home()).unwrap().next().is_none());

    let (checks, out) = doctor_json(&env);
    assert!(out.status.success());
    assert_eq!(check(&checks, "configs dir")["status"], "ok");
    assert_eq!(check(&checks, "daemon")["status"], "warn");
    assert_eq!(check(&checks, "clock skew")["status"], "warn");
    assert!(checks.iter().all(|c| c["status"] != "fail"), "{checks:#?}");
}

#[test]
fn doctor_flags_loose_and_invalid_configs() {
    let env = TestEnv::new();
    offline_sts(&env);
    env.add_config("dev");
    env.add_config("ops");
    chmod(&env.config_file("dev"), 0o644);
    let (checks, out) = doctor_json(&env);
    let dev = check(&checks, "config dev");
    assert_eq!(dev["status"], "warn", "{dev}");
    assert_contains(dev["detail"].as_str().unwrap(), &["0644"]);
    assert_contains(dev["fix"].as_str().unwrap(), &["chmod 600", "dev.toml"]);
    assert!(out.status.success(), "a readable config is a warning");
    assert_contains(
        check(&checks, "configs")["detail"].as_str().unwrap(),
        &["1 of 2"],
    );

    // Writable by others: a failure (anyone could make it run an MFA command as you).
    chmod(&env.config_file("dev"), 0o666);
    let (checks, out) = doctor_json(&env);
    assert_eq!(check(&checks, "config dev")["status"], "fail");
    assert_eq!(out.status.code(), Some(1));
    let human = stdout(&output_of(&mut env.cmd(&["doctor"])));
    assert_contains(
        line_with(&human, "FAIL", "config dev"),
        &["writable by group or others"],
    );

    // Invalid: the error, with its line.
    chmod(&env.config_file("dev"), 0o600);
    std::fs::write(env.config_file("ops"), "[role]\narn = \"nope\"\n").unwrap();
    let (checks, out) = doctor_json(&env);
    let ops = check(&checks, "config ops");
    assert_eq!(ops["status"], "fail");
    assert_contains(ops["detail"].as_str().unwrap(), &["line 2", "role ARN"]);
    assert_contains(ops["fix"].as_str().unwrap(), &["elhaz config edit ops"]);
    assert_eq!(out.status.code(), Some(1));

    // A run dir others can enter fails too.
    std::fs::create_dir(env.run_dir()).unwrap();
    chmod(&env.run_dir(), 0o755);
    let (checks, _) = doctor_json(&env);
    assert_eq!(check(&checks, "run dir")["status"], "fail");
}

#[test]
fn doctor_with_a_running_daemon() {
    let env = TestEnv::new();
    offline_sts(&env);
    env.add_config("dev");
    let daemon = env.start_daemon_detached(&[]);
    let (checks, out) = doctor_json(&env);
    assert!(out.status.success(), "{checks:#?}");
    let d = check(&checks, "daemon");
    assert_eq!(d["status"], "ok", "{d}");
    assert_contains(
        d["detail"].as_str().unwrap(),
        &[
            &format!("pid {}", daemon.pid),
            &format!("protocol {}", elhaz::protocol::PROTOCOL_VERSION),
            env!("CARGO_PKG_VERSION"),
        ],
    );
    assert_eq!(check(&checks, "run dir")["status"], "ok");
    assert_eq!(check(&checks, "socket")["status"], "ok");
    assert_contains(
        check(&checks, "socket")["detail"].as_str().unwrap(),
        &["0600"],
    );
    let human = stdout(&env.run_ok(&["doctor"]));
    assert_contains(line_with(&human, "OK", "daemon"), &["running (pid"]);
    // Still running, and nothing was loaded into it.
    assert_eq!(env.status_pid(), daemon.pid);
}

#[test]
fn doctor_reports_a_daemon_of_another_protocol() {
    let env = TestEnv::new();
    offline_sts(&env);
    std::fs::create_dir(env.run_dir()).unwrap();
    chmod(&env.run_dir(), 0o700);
    let listener = UnixListener::bind(env.socket()).unwrap();
    // A daemon from the future: answers every frame with protocol 99.
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut s, _)) = listener.accept() {
            let mut len = [0u8; 4];
            if s.read_exact(&mut len).is_ok() {
                let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                let _ = s.read_exact(&mut body);
                let reply = br#"{"protocol":99,"id":1,"error":{"code":"protocol_mismatch","message":"speak 99"}}"#;
                let _ = s.write_all(&(reply.len() as u32).to_be_bytes());
                let _ = s.write_all(reply);
            }
        }
    });
    let (checks, out) = doctor_json(&env);
    server.join().unwrap();
    let d = check(&checks, "daemon");
    assert_eq!(d["status"], "fail", "{d}");
    assert_contains(d["detail"].as_str().unwrap(), &["protocol 99"]);
    assert_contains(d["fix"].as_str().unwrap(), &["elhaz daemon stop"]);
    assert_eq!(out.status.code(), Some(1));
    std::fs::remove_file(env.socket()).unwrap();
}

#[test]
fn doctor_checks_credential_process_profiles() {
    let env = TestEnv::new();
    offline_sts(&env);
    env.add_config("dev");
    let exe = std::fs::canonicalize(BIN).unwrap();
    let config = format!(
        "[default]\nregion = us-east-1\n\n\
         [profile gone]\ncredential_process = /nonexistent/bin/elhaz credential-process dev\n\n\
         [profile good]\ncredential_process = {exe} credential-process dev\n\n\
         [profile legacy]\ncredential_process = {exe} export -n dev -f credential-process\n\n\
         [profile orphan]\ncredential_process = {exe} credential-process nosuch\n\n\
         [profile pyshell]\ncredential_process = /usr/bin/python3 -m elhaz.cli --socket-path /s \
         export --format credential-process -n dev\n\n\
         [profile other]\ncredential_process = /usr/bin/some-other-tool --json\n\
         aws_secret_access_key = NOT-TO-BE-PRINTED\n",
        exe = exe.display()
    );
    std::fs::write(env.scratch("aws-config"), config).unwrap();
    let (checks, out) = doctor_json(&env);
    assert_eq!(out.status.code(), Some(1));
    let gone = check(&checks, "aws profile gone");
    assert_eq!(gone["status"], "fail");
    assert_contains(
        gone["detail"].as_str().unwrap(),
        &["/nonexistent/bin/elhaz does not exist", ":5"],
    );
    assert_contains(
        gone["fix"].as_str().unwrap(),
        &["elhaz setup aws-profile dev --profile gone"],
    );
    assert_eq!(check(&checks, "aws profile good")["status"], "ok");
    assert_contains(
        check(&checks, "aws profile good")["detail"]
            .as_str()
            .unwrap(),
        &["session dev"],
    );
    assert_eq!(check(&checks, "aws profile legacy")["status"], "ok");
    let orphan = check(&checks, "aws profile orphan");
    assert_eq!(orphan["status"], "fail");
    assert_contains(
        orphan["detail"].as_str().unwrap(),
        &["\"nosuch\" has no config"],
    );
    let py = check(&checks, "aws profile pyshell");
    assert_eq!(py["status"], "warn", "{py}");
    assert_contains(py["detail"].as_str().unwrap(), &["runs the Python elhaz"]);
    assert_contains(
        py["fix"].as_str().unwrap(),
        &["elhaz setup aws-profile dev --profile pyshell"],
    );
    // Other tools' profiles are not ours to judge; no value but credential_process is shown.
    assert!(
        !checks.iter().any(|c| c["check"] == "aws profile other"),
        "{checks:#?}"
    );
    assert!(!stdout(&out).contains("NOT-TO-BE-PRINTED"));
}

#[test]
fn doctor_measures_clock_skew_against_sts() {
    let env = TestEnv::new();
    let moto = Moto::start(env.root());
    env.set_env("AWS_ENDPOINT_URL_STS", moto.url());
    let (checks, _) = doctor_json(&env);
    let c = check(&checks, "clock skew");
    assert_eq!(c["status"], "ok", "{c}");
    assert_contains(
        c["detail"].as_str().unwrap(),
        &["the local clock is", &moto.url()],
    );
}

#[test]
fn completion_scripts_for_every_shell() {
    let env = TestEnv::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = env.run_ok(&["completions", shell]);
        let script = stdout(&out);
        assert!(script.len() > 100, "{shell}: {script}");
        assert!(
            script.contains("COMPLETE"),
            "{shell} script does not call back:\n{script}"
        );
        let file = env.write_scratch(&format!("elhaz.{shell}"), &script);
        match shell {
            "bash" => {}
            other if which(other).is_some() => {
                // Syntax check without running anything.
                cmd_ok(env.command(other).arg("-n").arg(&file));
            }
            other => skipped_check(&format!(
                "{other} is not installed: its completion script is not syntax-checked"
            )),
        }
    }
    // bash: sourcing registers the dynamic completer.
    let out = cmd_ok(env.command("bash").arg("-c").arg(format!(
        "source <('{BIN}' completions bash) && complete -p elhaz"
    )));
    assert_contains(&stdout(&out), &["-F _clap_complete_elhaz elhaz"]);
}

/// `program` on `PATH`, if installed.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[test]
fn dynamic_completion_offers_session_names() {
    let env = TestEnv::new();
    for name in ["dev", "prod", "prod-eu"] {
        env.add_config(name);
    }
    // clap_complete's protocol: COMPLETE=<shell> elhaz -- <words…>, index of the current word.
    let complete = |shell: &str, words: &[&str]| {
        let mut cmd = env.cmd(&["--"]);
        cmd.args(words)
            .env("COMPLETE", shell)
            .env("_CLAP_COMPLETE_INDEX", (words.len() - 1).to_string())
            .env("_CLAP_IFS", "\n");
        let out = cmd_ok(&mut cmd);
        stdout(&out)
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        complete("bash", &["elhaz", "credential-process", "pr"]),
        ["prod", "prod-eu"]
    );
    assert_eq!(complete("bash", &["elhaz", "export", "-n", "d"]), ["dev"]);
    assert_eq!(
        complete("bash", &["elhaz", "config", "show", "prod-"]),
        ["prod-eu"]
    );
    let all = complete("fish", &["elhaz", "credential-process", ""]);
    for name in ["dev", "prod", "prod-eu"] {
        assert!(all.iter().any(|c| c == name), "{name} not offered: {all:?}");
    }

    // End to end in bash: the registered function fills COMPREPLY.
    let out = cmd_ok(env.command("bash").arg("-c").arg(format!(
        "source <('{BIN}' completions bash)\n\
         COMP_WORDS=(elhaz credential-process pro); COMP_CWORD=2\n\
         COMP_LINE='elhaz credential-process pro'; COMP_POINT=${{#COMP_LINE}}\n\
         _clap_complete_elhaz elhaz pro credential-process\n\
         printf '<%s>\\n' \"${{COMPREPLY[@]}}\""
    )));
    assert_eq!(stdout(&out).trim(), "<prod>\n<prod-eu>");
}

#[test]
fn man_page_is_valid_roff() {
    let env = TestEnv::new();
    let out = env.run_ok(&["man"]);
    let roff = stdout(&out);
    assert!(
        roff.starts_with(".TH") || roff.starts_with(".ie"),
        "{}",
        &roff[..roff.len().min(200)]
    );
    assert_contains(&roff, &[".TH elhaz 1", "credential\\-process"]);
    let page = env.write_scratch("elhaz.1", &roff);
    if which("groff").is_some() {
        let out = cmd_ok(
            env.command("groff")
                .args(["-man", "-Tascii", "-ww", "-P-bou"])
                .arg(&page),
        );
        assert!(
            stderr(&out).trim().is_empty(),
            "groff warnings:\n{}",
            stderr(&out)
        );
        assert_contains(&stdout(&out), &["credential-process", "NAME", "SYNOPSIS"]);
    } else {
        skipped_check("groff is not installed: the man page is not rendered");
    }
    if which("man").is_some() {
        let out = cmd_ok(
            env.command("man")
                .args(["-l"])
                .arg(&page)
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "100"),
        );
        assert_contains(&stdout(&out), &["elhaz(1)", "credential"]);
    } else {
        skipped_check("man is not installed: the man page is not rendered with man -l");
    }
}

/// A moto-backed environment with session `dev`, `elhaz` on `PATH` (the hooks call it by
/// name), and the dummy source keys `testing` in the environment.
fn hook_env() -> (TestEnv, Moto) {
    let env = TestEnv::new();
    let moto = Moto::start(env.root());
    aws_env(&env, &moto.url());
    add_sts_config(&env, "dev", &moto.url(), &["--role-arn", ROLE_ARN]);
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin_dir.to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    env.set_env("PATH", std::env::join_paths(dirs).unwrap());
    (env, moto)
}

/// Runs `script` in `shell -c` with the test environment.
fn shell(env: &TestEnv, shell: &str, script: &str) -> std::process::Output {
    let mut cmd = env.command(shell);
    cmd.arg("-c").arg(script);
    output_of(&mut cmd)
}

/// The `AK=…` value a script printed.
fn printed_key(out: &std::process::Output) -> String {
    stdout(out)
        .lines()
        .find_map(|l| l.strip_prefix("AK="))
        .unwrap_or_else(|| panic!("no AK= line:\n{}\n{}", stdout(out), stderr(out)))
        .to_string()
}

#[test]
fn hook_bash_elhaz_use_loads_a_session() {
    let (env, _moto) = hook_env();
    let out = shell(
        &env,
        "bash",
        "source <(elhaz hook bash)\n\
         type elhaz_use >/dev/null || exit 9\n\
         elhaz_use dev || exit 8\n\
         echo \"AK=$AWS_ACCESS_KEY_ID\"\n\
         [ -n \"$AWS_SESSION_TOKEN\" ] || exit 7\n",
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let ak = printed_key(&out);
    // Temporary credentials from STS replaced the dummy source keys.
    assert!(ak.starts_with("ASIA") && ak != "testing", "{ak}");

    // A failing fetch returns non-zero and leaves the environment as it was.
    let out = shell(
        &env,
        "bash",
        "source <(elhaz hook bash)\n\
         elhaz_use nosuch; rc=$?\n\
         echo \"rc=$rc\"; echo \"AK=$AWS_ACCESS_KEY_ID\"; echo \"TOKEN=${AWS_SESSION_TOKEN-unset}\"\n",
    );
    let so = stdout(&out);
    assert!(!so.contains("rc=0") && so.contains("rc="), "{so}");
    assert_eq!(printed_key(&out), "testing");
    assert_contains(&so, &["TOKEN=unset"]);
    assert_contains(&stderr(&out), &["nosuch"]);
}

/// Gives zsh and fish a home of their own (they write history and config there).
fn shell_home(env: &TestEnv) {
    let home = env.scratch("shellhome");
    std::fs::create_dir(&home).unwrap();
    env.set_env("HOME", &home);
    env.set_env("XDG_CONFIG_HOME", home.join(".config"));
    env.set_env("XDG_DATA_HOME", home.join(".local/share"));
}

#[test]
fn hook_zsh_elhaz_use_loads_a_session() {
    if which("zsh").is_none() {
        skipped_check("zsh is not installed: `elhaz hook zsh` is not exercised");
        return;
    }
    let (env, _moto) = hook_env();
    shell_home(&env);
    let out = shell(
        &env,
        "zsh",
        "source <(elhaz hook zsh)\nelhaz_use dev || exit 8\nprint \"AK=$AWS_ACCESS_KEY_ID\"\n",
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(printed_key(&out).starts_with("ASIA"));
    let out = shell(
        &env,
        "zsh",
        "source <(elhaz hook zsh)\nelhaz_use nosuch && exit 8\nprint \"AK=$AWS_ACCESS_KEY_ID\"\n",
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(printed_key(&out), "testing");
}

#[test]
fn hook_fish_elhaz_use_loads_a_session() {
    if which("fish").is_none() {
        skipped_check("fish is not installed: `elhaz hook fish` is not exercised");
        return;
    }
    let (env, _moto) = hook_env();
    shell_home(&env);
    let out = shell(
        &env,
        "fish",
        "elhaz hook fish | source\nelhaz_use dev; echo \"status=$status\"\necho \"AK=$AWS_ACCESS_KEY_ID\"\n",
    );
    let so = stdout(&out);
    assert!(printed_key(&out).starts_with("ASIA"), "{so}");
    // Like the bash and zsh functions: 0 on success, non-zero (and nothing changed) on failure.
    // (`cmd | source` returns the status of the last command sourced, and fish's `set -gx`
    // passes on the status of an earlier `set -e` of an unset variable: 4.)
    assert!(
        so.contains("status=0"),
        "elhaz_use returned non-zero after loading the session:\n{so}"
    );
    let out = shell(
        &env,
        "fish",
        "elhaz hook fish | source\nelhaz_use nosuch; echo \"status=$status\"\necho \"AK=$AWS_ACCESS_KEY_ID\"\n",
    );
    let so = stdout(&out);
    assert_eq!(printed_key(&out), "testing");
    assert!(so.contains("status=") && !so.contains("status=0"), "{so}");
}

#[test]
fn hook_direnv_defines_use_elhaz() {
    let (env, _moto) = hook_env();
    let out = env.run_ok(&["hook", "direnv"]);
    assert_contains(&stdout(&out), &["use_elhaz()"]);
    // direnv's stdlib is bash: `use elhaz dev` calls use_elhaz dev.
    let out = shell(
        &env,
        "bash",
        "source <(elhaz hook direnv)\n\
         type use_elhaz >/dev/null || exit 9\n\
         use_elhaz dev || exit 8\n\
         echo \"AK=$AWS_ACCESS_KEY_ID\"\n",
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(printed_key(&out).starts_with("ASIA"));
}

#[test]
fn setup_systemd_units_are_hardened_and_verify() {
    let env = TestEnv::new();
    let group = nix::unistd::Group::from_gid(nix::unistd::getgid())
        .unwrap()
        .unwrap()
        .name;
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name;
    let units = [
        ("user", env.run_ok(&["setup", "systemd", "--print"])),
        (
            "user (explicit)",
            env.run_ok(&["setup", "systemd", "--user", "--print"]),
        ),
        (
            "system",
            env.run_ok(&[
                "setup",
                "systemd",
                "--system",
                "--daemon-user",
                &user,
                "--group",
                &group,
                "--print",
            ]),
        ),
    ];
    for (kind, out) in &units {
        let unit = stdout(out);
        assert_contains(
            &unit,
            &[
                "[Service]",
                "NoNewPrivileges=yes",
                "ProtectSystem=strict",
                "PrivateTmp=yes",
                "RuntimeDirectory=elhaz",
                "UMask=0077",
                "Restart=on-failure",
                "daemon start --foreground",
            ],
        );
        if *kind == "system" {
            assert_contains(
                &unit,
                &[
                    &format!("User={user}"),
                    &format!("Group={group}"),
                    "--shared",
                ],
            );
        } else {
            assert_contains(
                &unit,
                &["RuntimeDirectoryMode=0700", "WantedBy=default.target"],
            );
        }
        // Printing writes nothing.
        assert!(!env.home().join(".config").exists());
        if which("systemd-analyze").is_some() {
            let dir = env.scratch(&format!("unit-{}", kind.replace([' ', '(', ')'], "")));
            std::fs::create_dir(&dir).unwrap();
            let file = dir.join("elhaz.service");
            std::fs::write(&file, &unit).unwrap();
            let out = cmd_ok(env.command("systemd-analyze").arg("verify").arg(&file));
            // verify exits 0 even for unknown keys; it names the file in every complaint.
            let err = stderr(&out);
            let complaints: Vec<&str> = err
                .lines()
                .filter(|l| l.contains(file.to_str().unwrap()))
                .collect();
            assert!(
                complaints.is_empty(),
                "{kind} unit:\n{}\n{unit}",
                complaints.join("\n")
            );
        } else {
            skipped_check("systemd-analyze is not installed: the units are not verified");
        }
    }
}

#[test]
fn setup_agent_access_dry_run_prints_the_steps() {
    let env = TestEnv::new();
    let (Some(agent), Some(daemon)) = (
        ["nobody"]
            .into_iter()
            .find(|u| nix::unistd::User::from_name(u).ok().flatten().is_some()),
        ["daemon", "bin", "sys"]
            .into_iter()
            .find(|u| nix::unistd::User::from_name(u).ok().flatten().is_some()),
    ) else {
        skipped_check("no `nobody` and `daemon` users here: agent-access is not exercised");
        return;
    };
    let group = format!("elhaz-it-{}", std::process::id());
    let out = env.run_ok(&[
        "setup",
        "agent-access",
        "--agent-user",
        agent,
        "--daemon-user",
        daemon,
        "--group",
        &group,
        "--socket-dir",
        env.scratch("sockdir").to_str().unwrap(),
        "--dry-run",
    ]);
    let so = stdout(&out);
    assert_contains(
        &so,
        &[
            &format!("+ groupadd --system {group}"),
            &format!("+ usermod -aG {group} {agent}"),
            &format!("+ usermod -aG {group} {daemon}"),
            &format!("+ install -d -m 0750 -o {daemon} -g {group}"),
            "tmpfiles.d/elhaz.conf",
            "[[shared.allow]]",
            &format!("user = \"{agent}\""),
        ],
    );
    // A dry run changes nothing.
    assert!(nix::unistd::Group::from_name(&group).unwrap().is_none());
    assert!(!env.scratch("sockdir").exists());
    // Same users: refused.
    let out = env.run_fail(&[
        "setup",
        "agent-access",
        "--agent-user",
        daemon,
        "--daemon-user",
        daemon,
        "--dry-run",
    ]);
    assert_contains(&stderr(&out), &["must differ"]);
}
