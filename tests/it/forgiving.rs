//! The forgiving CLI (issue #17): "did you mean" for session names and config fields, `exec`
//! with or without `--` and without a command, `shell` checking the session first and
//! exporting `ELHAZ_SESSION` for prompts, completion after `--`, every config error reported
//! at once without quoting values, help with examples, durations stored as given, and the
//! license files.
//!
//! Tests that need credentials use a moto STS (`moto::aws_env`); the rest never reach STS
//! (unknown names fail in the daemon's config load, before any STS call).

use std::time::Duration;

use crate::moto::{Moto, aws_env};
use crate::util::*;

/// Looks like an AWS secret access key; must never appear in an error.
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY";

/// An environment with session `dev` pointed at its own moto (field order: env, then moto).
struct Sts {
    env: TestEnv,
    _moto: Moto,
}

impl Sts {
    fn new() -> Sts {
        let env = TestEnv::new();
        let moto = Moto::start(env.root());
        aws_env(&env, &moto.url());
        env.add_config("dev");
        Sts { env, _moto: moto }
    }
}

/// Runs `cmd` with a bound, killing it on timeout.
fn bounded(cmd: &mut std::process::Command) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let done = wait_until(Duration::from_secs(60), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !done {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(done, "timed out: {}", describe(cmd, &out));
    out
}

#[test]
fn unknown_session_names_get_a_suggestion_everywhere() {
    let env = TestEnv::new();
    env.add_config("dev");
    env.add_config("prod");
    for args in [
        &["config", "show", "deb"][..],
        &["config", "edit", "deb"],
        &["config", "remove", "--yes", "deb"],
        &["credential-process", "deb"],
        &["exec", "deb", "--", "true"],
        &["export", "deb"],
        &["whoami", "deb"],
        &["shell", "deb"],
        &["daemon", "add", "deb"],
    ] {
        let mut cmd = env.cmd(args);
        cmd.env("EDITOR", "true").env("SHELL", "/bin/sh");
        let out = bounded(&mut cmd);
        assert!(!out.status.success(), "{}", describe(&cmd, &out));
        let err = stderr(&out);
        assert!(
            err.contains("deb") && err.contains("did you mean `dev`?"),
            "{}",
            describe(&cmd, &out)
        );
        assert!(
            !err.contains("entering session"),
            "{}",
            describe(&cmd, &out)
        );
    }
    // Not cached and not a config: the hint rides on the notice.
    let out = env.run_ok(&["daemon", "remove", "prdo"]);
    assert_contains(&stdout(&out), &["not cached", "did you mean `prod`?"]);
    // Nothing close: no made-up suggestion.
    let out = env.run_fail(&["config", "show", "zzzzzz"]);
    assert!(!stderr(&out).contains("did you mean"), "{}", stderr(&out));
}

#[test]
fn unknown_config_fields_get_a_suggestion() {
    let env = TestEnv::new();
    let file = env.write_scratch(
        "typo.toml",
        "regoin = \"eu-west-1\"\n[role]\narm = \"arn:aws:iam::123456789012:role/x\"\n",
    );
    let out = env.run_fail(&[
        "config",
        "add",
        "dev",
        "--from-file",
        file.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert_contains(
        &err,
        &[
            "line 1, column 1",
            "unknown field `regoin`; did you mean `region`?",
            "line 3, column 1",
            "field `role`: unknown field `arm`; did you mean `arn`?",
        ],
    );
    // The typo in elhaz.toml too.
    env.write_settings("capacty = 4\n");
    let out = env.run_fail(&["credential-process"]);
    assert_contains(&stderr(&out), &["capacty", "did you mean `capacity`?"]);
}

#[test]
fn every_config_error_is_reported_at_once() {
    let env = TestEnv::new();
    let file = env.write_scratch(
        "bad.toml",
        "region = \"EU_WEST\"\nduration = \"soon\"\nbogus = 1\n\
         [role]\narn = \"arn:aws:iam::12:role/x\"\n[mfa]\ncommand = [\"ykman\"]\n",
    );
    let out = env.run_fail(&[
        "config",
        "add",
        "dev",
        "--from-file",
        file.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert_contains(
        &err,
        &[
            "5 problems",
            "line 1, column 10: field `region`: invalid region",
            "line 2, column 12: field `duration`: invalid duration",
            "line 3, column 1: unknown field `bogus`",
            "line 5, column 7: field `role.arn`: invalid role ARN",
            "field `mfa.serial`: is required",
        ],
    );
    assert!(!env.config_file("dev").exists());

    // Cross-field rules are collected too, once every field parses.
    let file = env.write_scratch(
        "cross.toml",
        "profile = \"a\"\nkeyring = \"b\"\nduration = 60\n[role]\narn = \"arn:aws:iam::123456789012:role/x\"\n",
    );
    let out = env.run_fail(&[
        "config",
        "add",
        "dev",
        "--from-file",
        file.to_str().unwrap(),
    ]);
    assert_contains(
        &stderr(&out),
        &[
            "2 problems",
            "line 2, column 1: field `keyring`: set at most one",
            "line 3, column 1: field `duration`",
        ],
    );
}

#[test]
fn config_errors_never_quote_the_value() {
    let env = TestEnv::new();
    let q = |s: &str| format!("\"{s}\"");
    let cases = [
        format!("region = {}\n", q(SECRET)),
        format!("duration = {}\n", q(SECRET)),
        format!(
            "session = {}\n[role]\narn = \"arn:aws:iam::123456789012:role/x\"\n",
            q(SECRET)
        ),
        format!("[role]\narn = {}\n", q(SECRET)),
        format!(
            "[role]\narn = \"arn:aws:iam::123456789012:role/x\"\nexternal_id = \"!!{SECRET}\"\n"
        ),
        format!("[mfa]\nserial = \"!{SECRET}\"\n"),
        format!("[sts]\nendpoint_url = {}\n", q(SECRET)),
        format!("description = [{}]\n", q(SECRET)),
        format!(
            "[role]\narn = \"arn:aws:iam::123456789012:role/x\"\ntransitive_tag_keys = [{}]\n",
            q(SECRET)
        ),
        // Syntax errors: a bare value, an unterminated string.
        format!("aws_secret_access_key = {SECRET}\n"),
        format!("region = \"{SECRET}\n"),
    ];
    for (i, text) in cases.iter().enumerate() {
        let file = env.write_scratch(&format!("secret{i}.toml"), text);
        let out = env.run_fail(&[
            "config",
            "add",
            "dev",
            "--from-file",
            file.to_str().unwrap(),
        ]);
        let err = stderr(&out);
        assert!(err.contains("line "), "case {i}: {err}");
        assert!(
            !err.contains(SECRET) && !err.contains("wJalrXUtnFEMI"),
            "case {i} quoted the value:\n{text}\n{err}"
        );
    }
    // elhaz.toml as well (read by every command that resolves a default session).
    env.write_settings(&format!(
        "default_session = {}\ncapacity = {}\n",
        q(SECRET),
        q(SECRET)
    ));
    let out = env.run_fail(&["credential-process"]);
    let err = stderr(&out);
    assert_contains(&err, &["2 problems", "default_session", "capacity"]);
    assert!(!err.contains("wJalrXUtnFEMI"), "{err}");
}

#[test]
fn exec_takes_the_command_with_or_without_double_dash() {
    let t = Sts::new();
    for args in [
        &[
            "exec",
            "dev",
            "--",
            "sh",
            "-c",
            "echo \"$ELHAZ_SESSION $AWS_ACCESS_KEY_ID\"",
        ][..],
        &[
            "exec",
            "dev",
            "sh",
            "-c",
            "echo \"$ELHAZ_SESSION $AWS_ACCESS_KEY_ID\"",
        ],
    ] {
        let mut cmd = t.env.cmd(args);
        let out = bounded(&mut cmd);
        assert!(out.status.success(), "{}", describe(&cmd, &out));
        let text = stdout(&out);
        assert!(
            text.starts_with("dev ") && text.trim().len() > 8,
            "{}",
            describe(&cmd, &out)
        );
    }
    // Flags after NAME belong to the command, not to elhaz.
    let mut cmd = t.env.cmd(&["exec", "dev", "echo", "--force", "--", "-n"]);
    let out = bounded(&mut cmd);
    assert_eq!(stdout(&out), "--force -- -n\n", "{}", describe(&cmd, &out));
}

#[test]
fn exec_without_a_command_points_to_shell() {
    let env = TestEnv::new();
    env.add_config("dev");
    env.set_env("ELHAZ_AUTOSTART", "0");
    for args in [
        &["exec", "dev"][..],
        &["exec", "dev", "--"],
        &["exec", "-n", "dev"],
    ] {
        let out = env.run_fail(args);
        assert_contains(
            &stderr(&out),
            &[
                "no command to run",
                "elhaz shell dev",
                "elhaz exec dev -- CMD",
            ],
        );
    }
}

#[test]
fn shell_checks_the_session_before_entering_and_exports_elhaz_session() {
    let t = Sts::new();
    // An unknown session fails before anything is announced or started.
    let mut cmd = t.env.cmd(&["shell", "nosuch"]);
    cmd.env("SHELL", "/bin/sh");
    let out = bounded(&mut cmd);
    assert!(!out.status.success(), "{}", describe(&cmd, &out));
    assert!(
        !stderr(&out).contains("entering session"),
        "{}",
        describe(&cmd, &out)
    );
    assert_contains(&stderr(&out), &["nosuch"]);

    // The shell sees ELHAZ_SESSION (for prompts); nesting another session warns.
    let script = t
        .env
        .write_scratch("fake-shell", "#!/bin/sh\necho \"prompt:$ELHAZ_SESSION\"\n");
    chmod(&script, 0o755);
    let mut cmd = t.env.cmd(&["shell", "dev"]);
    cmd.env("SHELL", &script).env("ELHAZ_SESSION", "prod");
    let out = bounded(&mut cmd);
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    assert_eq!(stdout(&out), "prompt:dev\n");
    let err = stderr(&out);
    assert_contains(
        &err,
        &[
            "warning",
            "inside session \"prod\"",
            "entering session \"dev\"",
        ],
    );
    assert!(
        err.find("warning").unwrap() < err.find("entering").unwrap(),
        "{err}"
    );
}

#[test]
fn completion_after_double_dash_offers_commands_and_files() {
    let env = TestEnv::new();
    env.add_config("dev");
    let bin_dir = env.scratch("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let tool = bin_dir.join("zz-elhaz-tool");
    std::fs::write(&tool, "#!/bin/sh\n").unwrap();
    chmod(&tool, 0o755);
    env.write_scratch("zz-elhaz-file.txt", "x");
    let complete = |words: &[&str]| {
        let mut cmd = env.cmd(&["--"]);
        cmd.args(words)
            .current_dir(env.scratch(""))
            .env("PATH", &bin_dir)
            .env("COMPLETE", "bash")
            .env("_CLAP_COMPLETE_INDEX", (words.len() - 1).to_string())
            .env("_CLAP_IFS", "\n");
        let out = cmd_ok(&mut cmd);
        stdout(&out)
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    for words in [
        &["elhaz", "exec", "dev", "--", "zz-elhaz"][..],
        &["elhaz", "exec", "dev", "zz-elhaz"],
    ] {
        let got = complete(words);
        assert!(
            got.iter().any(|c| c == "zz-elhaz-tool"),
            "{words:?}: {got:?}"
        );
        assert!(
            got.iter().any(|c| c == "zz-elhaz-file.txt"),
            "{words:?}: {got:?}"
        );
    }
    let got = complete(&["elhaz", "exec", "dev", "--", "zz-elhaz-tool", "zz-elhaz-f"]);
    assert!(got.iter().any(|c| c == "zz-elhaz-file.txt"), "{got:?}");
    // Session names still complete before the command.
    assert_eq!(complete(&["elhaz", "exec", "d"]), ["dev"]);
}

#[test]
fn help_carries_examples() {
    let env = TestEnv::new();
    for args in [
        &["--help"][..],
        &["exec", "--help"],
        &["credential-process", "--help"],
        &["config", "add", "--help"],
        &["daemon", "--help"],
    ] {
        let out = env.run_ok(args);
        assert_contains(&stdout(&out), &["Examples:", "elhaz "]);
    }
    let out = env.run_ok(&["credential-process", "--help"]);
    assert_contains(
        &stdout(&out),
        &["credential_process = elhaz credential-process dev"],
    );
    let out = env.run_ok(&["help", "config"]);
    assert_contains(
        &stdout(&out),
        &["[role]", "arn = ", "[mfa]", "serial", "duration"],
    );
}

#[test]
fn durations_are_stored_as_given_and_the_header_names_a_help_topic() {
    let env = TestEnv::new();
    for (given, stored, secs) in [
        ("1h", "duration = \"1h\"", 3600),
        ("90m", "duration = \"90m\"", 5400),
        ("3600", "duration = 3600", 3600),
    ] {
        env.run_ok(&[
            "config",
            "add",
            "dev",
            "--force",
            "--role-arn",
            ROLE_ARN,
            "--duration",
            given,
        ]);
        let text = std::fs::read_to_string(env.config_file("dev")).unwrap();
        assert!(text.lines().any(|l| l == stored), "{given}:\n{text}");
        assert!(
            text.starts_with("# ") && text.lines().next().unwrap().contains("elhaz help config"),
            "{text}"
        );
        assert!(!text.contains("docs/configuration.md"), "{text}");
        let out = env.run_ok(&["config", "show", "dev", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["duration"], secs, "{given}: {v}");
    }
}

#[test]
fn license_files_exist_and_ship() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mit = std::fs::read_to_string(root.join("LICENSE-MIT")).unwrap();
    assert!(
        mit.contains("MIT License") && mit.contains("The elhaz developers"),
        "{mit}"
    );
    assert!(mit.contains("WITHOUT WARRANTY OF ANY KIND"));
    let apache = std::fs::read_to_string(root.join("LICENSE-APACHE")).unwrap();
    assert!(apache.contains("Apache License") && apache.contains("Version 2.0, January 2004"));
    assert!(apache.contains("END OF TERMS AND CONDITIONS"));
    let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let package = manifest["package"].as_table().unwrap();
    assert_eq!(package["license"].as_str(), Some("MIT OR Apache-2.0"));
    let include: Vec<&str> = package["include"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for f in [
        "/LICENSE-MIT",
        "/LICENSE-APACHE",
        "/src",
        "/README.md",
        "/Cargo.lock",
    ] {
        assert!(include.contains(&f), "{f} not in include: {include:?}");
    }
}
