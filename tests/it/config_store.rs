//! The config store through the CLI: `config add/show/list/remove/edit`, non-interactive (stdin
//! is never a TTY here), validation messages, atomicity and concurrency.

use std::os::unix::fs::symlink;
use std::process::Output;

use crate::util::*;

const OTHER_ARN: &str = "arn:aws:iam::210987654321:role/other";

fn read(env: &TestEnv, name: &str) -> Vec<u8> {
    std::fs::read(env.config_file(name)).unwrap()
}

#[test]
fn add_from_flags_writes_a_private_file_that_show_displays() {
    let env = TestEnv::new();
    let out = env.run_ok(&[
        "config",
        "add",
        "dev",
        "--role-arn",
        ROLE_ARN,
        "--region",
        "eu-west-1",
        "--duration",
        "2h",
        "--description",
        "dev box",
        "--source-profile",
        "corp",
        "--tag",
        "team=infra",
        "--transitive-tag-key",
        "team",
    ]);
    let file = env.config_file("dev");
    assert_contains(&stdout(&out), &["dev", file.to_str().unwrap()]);
    assert_eq!(mode_of(&file), 0o600);
    assert_eq!(mode_of(&env.configs_dir()), 0o700);

    let out = env.run_ok(&["config", "show", "dev"]);
    let text = stdout(&out);
    assert_contains(
        &text,
        &[
            file.to_str().unwrap(),
            ROLE_ARN,
            "eu-west-1",
            "dev box",
            "corp",
        ],
    );
    // Shown as written (after the header line naming the file).
    let on_disk = String::from_utf8(read(&env, "dev")).unwrap();
    assert!(text.ends_with(&on_disk), "show:\n{text}\nfile:\n{on_disk}");

    let out = env.run_ok(&["config", "show", "dev", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "dev", "{v}");
    assert_eq!(v["role"]["arn"], ROLE_ARN, "{v}");
    assert_eq!(v["role"]["tags"]["team"], "infra", "{v}");
    assert_eq!(v["region"], "eu-west-1", "{v}");
    assert_eq!(v["duration"], 7200, "{v}");
    assert_eq!(v["profile"], "corp", "{v}");
    assert_eq!(v["source_kind"], "profile", "{v}");

    // Show of a missing config names it and where it was looked for.
    let out = env.run_fail(&["config", "show", "nope"]);
    assert_contains(&stderr(&out), &["nope", "nope.toml"]);
}

#[test]
fn from_file_and_stdin_keep_the_text_verbatim() {
    let env = TestEnv::new();
    let text = "# my prod account — careful\n\nregion   = \"eu-west-1\"   # Ireland\n\n\
                [role]\n  arn = \"arn:aws:iam::123456789012:role/Admin\"  \n\
                  session_name = 'alice'\n";
    let src = env.write_scratch("prod.toml", text);
    env.run_ok(&[
        "config",
        "add",
        "prod",
        "--from-file",
        src.to_str().unwrap(),
    ]);
    assert_eq!(read(&env, "prod"), text.as_bytes());
    // Relative paths resolve against the cwd.
    env.run_ok(&["config", "add", "prod2", "--from-file", "prod.toml"]);
    assert_eq!(read(&env, "prod2"), text.as_bytes());

    let (cmd, out) = env.run_stdin(
        &["config", "add", "piped", "--from-file", "-"],
        text.as_bytes(),
    );
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    assert_eq!(read(&env, "piped"), text.as_bytes());
    assert_eq!(mode_of(&env.config_file("piped")), 0o600);

    let out = env.run_ok(&["config", "show", "piped"]);
    assert_contains(&stdout(&out), &["# my prod account — careful", "# Ireland"]);
}

#[test]
fn force_overwrites_and_a_second_add_without_it_fails() {
    let env = TestEnv::new();
    env.add_config("dev");
    let before = read(&env, "dev");
    let out = env.run_fail(&["config", "add", "dev", "--role-arn", OTHER_ARN]);
    assert_contains(
        &stderr(&out),
        &[
            "already exists",
            env.config_file("dev").to_str().unwrap(),
            "--force",
        ],
    );
    assert_eq!(read(&env, "dev"), before);

    env.run_ok(&["config", "add", "dev", "--force", "--role-arn", OTHER_ARN]);
    let after = String::from_utf8(read(&env, "dev")).unwrap();
    assert_contains(&after, &[OTHER_ARN]);
    assert!(!after.contains(ROLE_ARN));
    assert_eq!(mode_of(&env.config_file("dev")), 0o600);
    // No temp files are left behind by the atomic writes.
    let names: Vec<String> = std::fs::read_dir(env.configs_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| n == "dev.toml" || n == ".lock"),
        "{names:?}"
    );
}

/// One rejected input: arguments, optional stdin, and what the message must name.
struct Bad {
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    needles: Vec<String>,
}

fn bad(args: &[&str], needles: &[&str]) -> Bad {
    Bad {
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: None,
        needles: needles.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn bad_inputs_fail_clearly_and_change_nothing() {
    let env = TestEnv::new();
    env.add_config("dev");
    env.run_ok(&[
        "config",
        "add",
        "other",
        "--role-arn",
        OTHER_ARN,
        "--description",
        "keep me",
    ]);
    let unknown = env.write_scratch(
        "unknown.toml",
        "region = \"eu-west-1\"\nbogus = 1\n[role]\narn = \"arn:aws:iam::123456789012:role/x\"\n",
    );
    let two_sources = env.write_scratch(
        "two.toml",
        "profile = \"a\"\nkeyring = \"b\"\n[role]\narn = \"arn:aws:iam::123456789012:role/x\"\n",
    );
    let bad_arn = env.write_scratch(
        "badarn.toml",
        "# comment\n[role]\narn = \"arn:aws:iam::12:role/x\"\n",
    );
    let not_utf8 = env.write_scratch("latin1.toml", b"description = \"caf\xe9\"\n");
    let mut big_text = String::from("description = \"big\"\n");
    while big_text.len() <= 64 * 1024 {
        big_text.push_str("# padding padding padding padding padding padding padding\n");
    }
    let big = env.write_scratch("big.toml", &big_text);
    let target = env.write_scratch("target.toml", "region = \"eu-west-1\"\n");
    let link = env.scratch("link.toml");
    symlink(&target, &link).unwrap();
    let p = |p: &std::path::Path| p.to_str().unwrap().to_string();

    let mut cases = vec![
        bad(
            &["config", "add", "a/b", "--role-arn", ROLE_ARN],
            &["invalid session name", "\"a/b\""],
        ),
        bad(
            &["config", "add", ".x", "--role-arn", ROLE_ARN],
            &["invalid session name", "\".x\""],
        ),
        bad(&["config", "show", "a/b"], &["invalid session name"]),
        bad(
            &["config", "remove", "--yes", ".x"],
            &["invalid session name"],
        ),
        bad(
            &[
                "config",
                "add",
                "dev",
                "--force",
                "--role-arn",
                "arn:aws:iam::12:role/x",
            ],
            &["--role-arn", "invalid role ARN", "arn:aws:iam::12:role/x"],
        ),
        bad(
            &["config", "add", "dev", "--force", "--role-arn", "role/x"],
            &["--role-arn", "invalid role ARN"],
        ),
        bad(
            &[
                "config",
                "add",
                "dev",
                "--force",
                "--role-arn",
                ROLE_ARN,
                "--duration",
                "60",
            ],
            &["duration", "900..=43200", "custom STS endpoint"],
        ),
        bad(
            &["config", "add", "dev", "--force", "--duration", "200000"],
            &["duration", "GetSessionToken"],
        ),
        bad(
            &[
                "config",
                "add",
                "dev",
                "--force",
                "--role-arn",
                ROLE_ARN,
                "--duration",
                "soon",
            ],
            &["--duration", "invalid duration"],
        ),
        bad(
            &["config", "add", "dev", "--force", "--region", "EU_WEST"],
            &["--region", "EU_WEST"],
        ),
        bad(
            &["config", "add", "dev", "--force", "--session-name", "x"],
            &["--session-name", "--role-arn"],
        ),
        bad(
            &[
                "config",
                "add",
                "dev",
                "--force",
                "--role-arn",
                ROLE_ARN,
                "--source-session",
                "dev",
            ],
            &["chain from itself"],
        ),
        bad(
            &[
                "config",
                "add",
                "dev",
                "--force",
                "--role-arn",
                ROLE_ARN,
                "--tag",
                "novalue",
            ],
            &["--tag", "KEY=VALUE"],
        ),
        bad(
            &[
                "config",
                "add",
                "dev",
                "--force",
                "--from-file",
                &p(&unknown),
            ],
            &[&p(&unknown), "line 2", "unknown field `bogus`"],
        ),
        bad(
            &[
                "config",
                "add",
                "dev",
                "--force",
                "--from-file",
                &p(&bad_arn),
            ],
            &[&p(&bad_arn), "line 3", "role ARN"],
        ),
        bad(
            &[
                "config",
                "add",
                "dev",
                "--force",
                "--from-file",
                &p(&two_sources),
            ],
            &[&p(&two_sources), "line 2", "at most one"],
        ),
        bad(
            &[
                "config",
                "add",
                "dev",
                "--force",
                "--source-profile",
                "a",
                "--keyring",
                "b",
            ],
            &["--keyring", "--source-profile"],
        ),
        bad(
            &[
                "config",
                "add",
                "dev",
                "--force",
                "--from-file",
                &p(&unknown),
                "--role-arn",
                ROLE_ARN,
            ],
            &["--from-file", "--role-arn"],
        ),
        bad(
            &[
                "config",
                "add",
                "dev",
                "--force",
                "--from-file",
                &p(&not_utf8),
            ],
            &[&p(&not_utf8), "UTF-8"],
        ),
        bad(
            &["config", "add", "dev", "--force", "--from-file", &p(&big)],
            &[&p(&big), "65536"],
        ),
        bad(
            &["config", "add", "dev", "--force", "--from-file", &p(&link)],
            &[&p(&link), "symbolic link"],
        ),
        bad(
            &[
                "config",
                "add",
                "dev",
                "--force",
                "--from-file",
                "missing.toml",
            ],
            &["--from-file", "missing.toml", "no such file"],
        ),
        bad(
            &["config", "remove", "nope", "--yes"],
            &["nope", "nope.toml"],
        ),
        bad(&["config", "edit", "nope"], &["nope"]),
    ];
    for (stdin, needles) in [
        (&b"region = \n"[..], &["<stdin>", "line 1"][..]),
        (b"[role\narn = 1\n", &["<stdin>", "line 1"]),
        (b"bogus = true\n", &["<stdin>", "unknown field `bogus`"]),
        (b"description = \"caf\xe9\"\n", &["stdin", "UTF-8"]),
        (big_text.as_bytes(), &["stdin", "65536"]),
    ] {
        let mut b = bad(
            &["config", "add", "dev", "--force", "--from-file", "-"],
            needles,
        );
        b.stdin = Some(stdin.to_vec());
        cases.push(b);
    }

    let before = snapshot(env.home());
    for case in &cases {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let (cmd, out): (_, Output) = match &case.stdin {
            Some(input) => env.run_stdin(&args, input),
            None => {
                let mut cmd = env.cmd(&args);
                let out = output_of(&mut cmd);
                (cmd, out)
            }
        };
        let report = describe(&cmd, &out);
        assert!(
            !out.status.success() && out.status.code().is_some(),
            "accepted a bad input{report}"
        );
        let err = stderr(&out);
        for n in &case.needles {
            assert!(err.contains(n.as_str()), "message lacks {n:?}{report}");
        }
        assert!(
            !err.contains("panicked"),
            "a bad input made elhaz panic{report}"
        );
        assert_eq!(
            snapshot(env.home()),
            before,
            "a rejected command changed files{report}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "region = \"eu-west-1\"\n"
    );
}

#[test]
fn duration_limits_are_lifted_for_custom_sts_endpoints() {
    let env = TestEnv::new();
    let args = [
        "config",
        "add",
        "short",
        "--role-arn",
        ROLE_ARN,
        "--duration",
        "60",
    ];
    let out = env.run_fail(&args);
    assert_contains(&stderr(&out), &["duration", "900..=43200"]);
    assert!(!env.config_file("short").exists());

    let mut cmd = env.cmd(&args);
    cmd.env("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:1");
    cmd_ok(&mut cmd);
    let mut show = env.cmd(&["config", "show", "short", "--json"]);
    show.env("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:1");
    let v: serde_json::Value = serde_json::from_slice(&cmd_ok(&mut show).stdout).unwrap();
    assert_eq!(v["duration"], 60, "{v}");

    let mut cmd = env.cmd(&args);
    cmd.arg("--force")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:1");
    cmd_ok(&mut cmd);

    env.run_ok(&[
        "config",
        "add",
        "local",
        "--role-arn",
        ROLE_ARN,
        "--duration",
        "60",
        "--sts-endpoint-url",
        "http://127.0.0.1:1",
    ]);
    let out = env.run_ok(&["config", "show", "local", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sts"]["endpoint_url"], "http://127.0.0.1:1", "{v}");
    assert_eq!(v["duration"], 60, "{v}");
    // Zero is never allowed.
    let mut cmd = env.cmd(&[
        "config",
        "add",
        "zero",
        "--role-arn",
        ROLE_ARN,
        "--duration",
        "0",
    ]);
    cmd.env("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:1");
    let out = cmd_fail(&mut cmd);
    assert_contains(&stderr(&out), &["duration", "at least 1 second"]);
}

#[test]
fn a_symlinked_config_is_refused_and_force_replaces_the_link() {
    let env = TestEnv::new();
    env.add_config("dev"); // creates configs/
    let target_text = "# not elhaz's\nregion = \"eu-west-1\"\n";
    let target = env.write_scratch("elsewhere.toml", target_text);
    let link = env.config_file("link");
    symlink(&target, &link).unwrap();

    let out = env.run_fail(&["config", "show", "link"]);
    assert_contains(&stderr(&out), &[link.to_str().unwrap(), "symbolic link"]);
    let out = env.run_fail(&["config", "show", "link", "--json"]);
    assert_contains(&stderr(&out), &["symbolic link"]);
    let out = env.run_ok(&["config", "list"]);
    assert_contains(&stdout(&out), &["link", "INVALID", "dev"]);

    // Loading it into a daemon fails the same way.
    let mut cmd = env.cmd(&["daemon", "add", "link"]);
    cmd.env("ELHAZ_NO_DAEMON", "1");
    let out = cmd_fail(&mut cmd);
    assert_contains(&stderr(&out), &["symbolic link"]);

    let out = env.run_fail(&["config", "add", "link", "--role-arn", ROLE_ARN]);
    assert_contains(&stderr(&out), &["already exists"]);
    env.run_ok(&["config", "add", "link", "--force", "--role-arn", ROLE_ARN]);
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(meta.file_type().is_file(), "the link was not replaced");
    assert_eq!(mode_of(&link), 0o600);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), target_text);
    env.run_ok(&["config", "show", "link"]);
}

#[test]
fn list_shows_invalid_configs_without_hiding_the_others() {
    let env = TestEnv::new();
    let out = env.run_ok(&["config", "list"]);
    assert_contains(&stdout(&out), &["no session configs"]);
    let out = env.run_ok(&["config", "list", "--json"]);
    assert_eq!(stdout(&out).trim(), "[]");

    env.add_config("alpha");
    env.run_ok(&[
        "config",
        "add",
        "gamma",
        "--source-profile",
        "corp",
        "--description",
        "session token from corp",
    ]);
    std::fs::write(env.config_file("beta"), "region = 1\n").unwrap();
    // Files that are not configs are ignored.
    std::fs::write(env.configs_dir().join("notes.txt"), "hello").unwrap();
    std::fs::write(env.configs_dir().join(".hidden.toml"), "x").unwrap();

    let out = env.run_ok(&["config", "list"]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[1].starts_with("alpha") && lines[1].contains(ROLE_ARN),
        "{text}"
    );
    assert!(
        lines[2].starts_with("beta") && lines[2].contains("INVALID") && lines[2].contains("line 1"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("gamma") && lines[3].contains("profile"),
        "{text}"
    );

    let out = env.run_ok(&["config", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 3, "{v}");
    assert_eq!(items[0]["name"], "alpha");
    assert_eq!(items[0]["valid"], true);
    assert_eq!(items[0]["role_arn"], ROLE_ARN);
    assert_eq!(items[1]["name"], "beta");
    assert_eq!(items[1]["valid"], false);
    assert!(
        items[1]["error"].as_str().unwrap().contains("beta.toml"),
        "{v}"
    );
    assert_eq!(items[2]["name"], "gamma");
    assert_eq!(items[2]["source"], "profile");
    assert_eq!(items[2]["description"], "session token from corp");
}

#[test]
fn remove_needs_yes_without_a_tty() {
    let env = TestEnv::new();
    env.add_config("dev");
    let before = read(&env, "dev");
    let out = env.run_fail(&["config", "remove", "dev"]);
    assert_contains(&stderr(&out), &["--yes"]);
    assert_eq!(read(&env, "dev"), before);

    let out = env.run_ok(&["config", "remove", "dev", "--yes"]);
    assert_contains(&stdout(&out), &["removed", "dev"]);
    assert!(!env.config_file("dev").exists());
    let out = env.run_fail(&["config", "remove", "dev", "--yes"]);
    assert_contains(&stderr(&out), &["no session config", "dev"]);
}

#[test]
fn remove_also_evicts_from_a_running_daemon() {
    let env = TestEnv::new();
    let sts = crate::fake_sts::FakeSts::start();
    crate::moto::aws_env(&env, &sts.url());
    env.add_config("dev");
    let _d = env.start_daemon_foreground(&[]);
    env.run_ok(&["daemon", "add", "dev"]);
    assert_eq!(env.status_json()["sessions"], 1);
    env.run_ok(&["config", "remove", "dev", "--yes"]);
    assert_eq!(env.status_json()["sessions"], 0);
}

/// An editor script body that puts a top-level `description` first (appending would land in
/// the file's last table).
pub const PREPEND_DESCRIPTION: &str = "{ printf 'description = \"via visual\"\\n'; cat \"$1\"; } > \"$1.new\" && mv \"$1.new\" \"$1\"";

fn editor(env: &TestEnv, name: &str, body: &str) -> String {
    let p = env.write_scratch(name, format!("#!/bin/sh\n{body}\n"));
    chmod(&p, 0o755);
    p.to_str().unwrap().to_string()
}

fn drafts_left(env: &TestEnv) -> Vec<String> {
    std::fs::read_dir(env.configs_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".edit."))
        .collect()
}

#[test]
fn edit_rejects_invalid_results_and_applies_valid_ones() {
    let env = TestEnv::new();
    env.add_config("dev");
    let before = read(&env, "dev");

    let broken = editor(&env, "broken.sh", "printf 'region = \\n[role\\n' > \"$1\"");
    let mut cmd = env.cmd(&["config", "edit", "dev"]);
    cmd.env("EDITOR", &broken);
    let out = cmd_fail(&mut cmd);
    assert_contains(
        &stderr(&out),
        &[
            "invalid config",
            "line ",
            "rejected",
            env.config_file("dev").to_str().unwrap(),
            "unchanged",
        ],
    );
    assert_eq!(read(&env, "dev"), before);
    assert_eq!(drafts_left(&env), Vec::<String>::new());

    let schema = editor(
        &env,
        "schema.sh",
        "printf 'secret_access_key = \"x\"\\n' >> \"$1\"",
    );
    let mut cmd = env.cmd(&["config", "edit", "dev"]);
    cmd.env("EDITOR", &schema);
    let out = cmd_fail(&mut cmd);
    assert_contains(&stderr(&out), &["unknown field `secret_access_key`"]);
    assert_eq!(read(&env, "dev"), before);

    let failing = editor(&env, "fail.sh", "echo junk > \"$1\"; exit 1");
    let mut cmd = env.cmd(&["config", "edit", "dev"]);
    cmd.env("EDITOR", &failing);
    let out = cmd_fail(&mut cmd);
    assert_contains(&stderr(&out), &["unchanged"]);
    assert_eq!(read(&env, "dev"), before);

    let noop = editor(&env, "noop.sh", "true");
    let mut cmd = env.cmd(&["config", "edit", "dev"]);
    cmd.env("EDITOR", &noop);
    assert_contains(&stdout(&cmd_ok(&mut cmd)), &["no changes"]);
    assert_eq!(read(&env, "dev"), before);

    let good = editor(
        &env,
        "good.sh",
        "printf 'region = \"ap-south-1\"\\n[role]\\narn = \"arn:aws:iam::210987654321:role/other\"\\n' > \"$1\"",
    );
    let mut cmd = env.cmd(&["config", "edit", "dev"]);
    cmd.env("EDITOR", &good);
    assert_contains(&stdout(&cmd_ok(&mut cmd)), &["updated"]);
    let after = String::from_utf8(read(&env, "dev")).unwrap();
    assert_eq!(
        after,
        "region = \"ap-south-1\"\n[role]\narn = \"arn:aws:iam::210987654321:role/other\"\n"
    );
    assert_eq!(mode_of(&env.config_file("dev")), 0o600);
    assert_eq!(drafts_left(&env), Vec::<String>::new());

    // VISUAL wins over EDITOR.
    let visual = editor(&env, "visual.sh", PREPEND_DESCRIPTION);
    let mut cmd = env.cmd(&["config", "edit", "dev"]);
    cmd.env("EDITOR", &broken).env("VISUAL", &visual);
    cmd_ok(&mut cmd);
    assert_contains(
        &String::from_utf8(read(&env, "dev")).unwrap(),
        &["via visual"],
    );
}

#[test]
fn concurrent_adds_of_different_names_all_land() {
    let env = TestEnv::new();
    let names: Vec<String> = (0..16).map(|i| format!("s{i:02}")).collect();
    let results: Vec<(String, Output)> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|n| {
                let env = &env;
                s.spawn(move || {
                    let mut cmd = env.cmd(&["config", "add", n, "--role-arn", ROLE_ARN]);
                    let out = output_of(&mut cmd);
                    (describe(&cmd, &out), out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (desc, out) in &results {
        assert!(out.status.success(), "a concurrent add failed{desc}");
    }
    let out = env.run_ok(&["config", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["valid"], true, "{i}");
            i["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(listed, names.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn concurrent_adds_of_one_name_have_one_winner() {
    let env = TestEnv::new();
    let arns: Vec<String> = (0..8)
        .map(|i| format!("arn:aws:iam::12345678901{i}:role/r{i}"))
        .collect();
    let results: Vec<(String, Output)> = std::thread::scope(|s| {
        let handles: Vec<_> = arns
            .iter()
            .map(|arn| {
                let env = &env;
                s.spawn(move || {
                    let mut cmd = env.cmd(&["config", "add", "same", "--role-arn", arn]);
                    let out = output_of(&mut cmd);
                    (describe(&cmd, &out), out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, (_, o))| o.status.success())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    for (i, (desc, out)) in results.iter().enumerate() {
        if i != winners[0] {
            assert!(
                stderr(out).contains("already exists"),
                "a losing add failed for another reason{desc}"
            );
        }
    }
    let text = String::from_utf8(read(&env, "same")).unwrap();
    assert_contains(&text, &[&arns[winners[0]]]);
    let out = env.run_ok(&["config", "show", "same", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["role"]["arn"], arns[winners[0]].as_str(), "{v}");
}
