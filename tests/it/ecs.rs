//! The ECS container credentials endpoint end to end: `exec --ecs` with boto3, the aws CLI
//! (v1) and the Node.js AWS SDK v3 as the child, each over a run longer than several
//! credential lifetimes (8-second credentials from moto); the endpoint's refusals (no token,
//! wrong token, foreign `Host`); signals, exit codes and the stop timeout; `serve ecs` with a
//! token file.
//!
//! The Node.js SDK is installed from the npm registry into `target/ecs-node` by the first test
//! that needs it (`npm install @aws-sdk/credential-providers`; node and npm come from the
//! machine, see `.ci/run`). A missing node or npm fails the test; it never skips.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::moto::{Moto, aws_env};
use crate::util::{TestEnv, assert_contains, describe, mode_of, output_of, wait_until};

const ROLE: &str = "arn:aws:iam::123456789012:role/ecs";

/// A test env with moto and session `name` (8-second credentials).
fn setup(name: &str) -> (TestEnv, Moto) {
    let env = TestEnv::new();
    let moto = Moto::start(env.root());
    aws_env(&env, &moto.url());
    env.run_ok(&["config", "add", name, "--role-arn", ROLE, "--duration", "8"]);
    (env, moto)
}

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

/// A background command with stdout/stderr in files; SIGKILLed and reaped on drop.
struct Bg {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    shown: String,
}

impl Bg {
    fn spawn(env: &TestEnv, mut cmd: Command, tag: &str) -> Bg {
        let out = env.scratch(&format!("{tag}.out"));
        let err = env.scratch(&format!("{tag}.err"));
        cmd.stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        let shown = crate::util::show_cmd(&cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
        Bg {
            child,
            out,
            err,
            shown,
        }
    }
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }
    fn signal(&self, s: Signal) {
        kill(self.pid(), s).unwrap();
    }
    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }
    fn report(&self) -> String {
        format!(
            "\n== command ==\n{}\n== stdout ==\n{}\n== stderr ==\n{}\n",
            self.shown,
            self.stdout(),
            self.stderr()
        )
    }
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let mut st = None;
        wait_until(timeout, || {
            st = self.child.try_wait().unwrap();
            st.is_some()
        });
        st.unwrap_or_else(|| panic!("did not exit within {timeout:?}{}", self.report()))
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs `elhaz exec --ecs NAME -- ARGV…` to completion (bounded).
fn exec_ecs(env: &TestEnv, name: &str, argv: &[&str], timeout: Duration) -> (ExitStatus, Bg) {
    let mut cmd = env.cmd(&["exec", "--ecs", name, "--"]);
    cmd.args(argv);
    let mut bg = Bg::spawn(env, cmd, "exec");
    let st = bg.wait(timeout);
    (st, bg)
}

fn distinct(keys: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    keys.into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// Consumers over several credential lifetimes.
// ---------------------------------------------------------------------------------------------

/// boto3's container provider refreshes through the endpoint for ~24 s of 8-second
/// credentials: every call works, it sees several keys, and its env holds no static keys.
#[test]
fn exec_ecs_boto3_outlives_several_credentials() {
    let (env, _moto) = setup("ecs");
    let script = env.write_scratch(
        "boto.py",
        r#"import json, os, time
import boto3
s = boto3.Session()
sts = s.client("sts", endpoint_url=os.environ["AWS_ENDPOINT_URL_STS"])
keys, errors = [], []
for i in range(12):
    try:
        arn = sts.get_caller_identity()["Arn"]
        keys.append(s.get_credentials().get_frozen_credentials().access_key)
        assert ":assumed-role/ecs/" in arn, arn
    except Exception as e:
        errors.append(repr(e))
    time.sleep(2)
print(json.dumps({"keys": keys, "errors": errors,
                  "method": s.get_credentials().method,
                  "static": [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                         "AWS_SESSION_TOKEN") if k in os.environ],
                  "token_len": len(os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"]),
                  "uri": os.environ["AWS_CONTAINER_CREDENTIALS_FULL_URI"]}))
"#,
    );
    let py = venv_bin("python");
    let (st, bg) = exec_ecs(
        &env,
        "ecs",
        &[py.to_str().unwrap(), script.to_str().unwrap()],
        Duration::from_secs(150),
    );
    assert!(st.success(), "{}", bg.report());
    let v: Value = serde_json::from_str(bg.stdout().trim()).unwrap_or_else(|e| {
        panic!("not JSON ({e}){}", bg.report());
    });
    assert_eq!(v["errors"], serde_json::json!([]), "{}", bg.report());
    assert_eq!(v["keys"].as_array().unwrap().len(), 12, "{v}");
    assert_eq!(v["method"], "container-role", "{v}");
    assert_eq!(v["static"], serde_json::json!([]), "{v}");
    assert_eq!(v["token_len"], 64, "{v}");
    assert!(
        v["uri"].as_str().unwrap().starts_with("http://127.0.0.1:"),
        "{v}"
    );
    let keys = distinct(
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string()),
    );
    assert!(keys.len() > 1, "one key over 3 lifetimes: {keys:?}");
}

/// The aws CLI, started afresh every 2-3 s for ~24 s: each run signs with a key from the
/// endpoint (read from botocore's debug log), every run succeeds, and the keys change.
#[test]
fn exec_ecs_aws_cli_outlives_several_credentials() {
    let (env, _moto) = setup("ecs");
    let aws = venv_bin("aws");
    let script = format!(
        r#"i=0; while [ $i -lt 8 ]; do
  "{aws}" --debug sts get-caller-identity --output text --query Arn 2>"$0.err.$i" || {{ echo "run $i failed"; cat "$0.err.$i" >&2; exit 9; }}
  grep -o 'Credential=[A-Z0-9]*/' "$0.err.$i" | head -1
  i=$((i+1)); sleep 2
done"#,
        aws = aws.display()
    );
    let base = env.scratch("awscli");
    let (st, bg) = exec_ecs(
        &env,
        "ecs",
        &["sh", "-c", &script, base.to_str().unwrap()],
        Duration::from_secs(240),
    );
    assert!(st.success(), "{}", bg.report());
    let out = bg.stdout();
    let arns = out
        .lines()
        .filter(|l| l.contains(":assumed-role/ecs/"))
        .count();
    assert_eq!(arns, 8, "{}", bg.report());
    let keys = distinct(
        out.lines()
            .filter_map(|l| l.strip_prefix("Credential="))
            .map(|k| k.trim_end_matches('/').to_string()),
    );
    assert!(
        keys.len() > 1,
        "one key over 3 lifetimes: {keys:?}{}",
        bg.report()
    );
    let debug = std::fs::read_to_string(format!("{}.err.0", base.display())).unwrap();
    assert!(
        debug.contains("container-role"),
        "the CLI did not use the container provider"
    );
}

/// `target/ecs-node` with `@aws-sdk/credential-providers` installed from npm.
fn node_sdk_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ecs-node");
    let marker = dir.join("node_modules/@aws-sdk/credential-providers/package.json");
    if !marker.is_file() {
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("npm");
        cmd.args([
            "install",
            "--no-audit",
            "--no-fund",
            "--no-save",
            "--prefix",
            dir.to_str().unwrap(),
            "@aws-sdk/credential-providers@3",
        ])
        .stdin(Stdio::null());
        let out = output_of(&mut cmd);
        assert!(
            out.status.success() && marker.is_file(),
            "cannot install the Node.js AWS SDK (npm and the npm registry are needed){}",
            describe(&cmd, &out)
        );
    }
    dir
}

/// The Node.js SDK v3's default chain (`fromNodeProviderChain`) picks the endpoint up and
/// keeps getting fresh credentials over ~24 s of 8-second ones, with no error.
#[test]
fn exec_ecs_node_sdk_v3_outlives_several_credentials() {
    let dir = node_sdk_dir();
    let (env, _moto) = setup("ecs");
    let script = env.write_scratch(
        "creds.js",
        r#"const { fromNodeProviderChain } = require("@aws-sdk/credential-providers");
const provider = fromNodeProviderChain();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
(async () => {
  const keys = [], errors = [];
  for (let i = 0; i < 12; i++) {
    try {
      const c = await provider();
      if (!c.sessionToken || !c.expiration) throw new Error("no token/expiration");
      keys.push(c.accessKeyId);
    } catch (e) { errors.push(String(e)); }
    await sleep(2000);
  }
  console.log(JSON.stringify({ keys, errors }));
})();
"#,
    );
    env.set_env("NODE_PATH", dir.join("node_modules"));
    let (st, bg) = exec_ecs(
        &env,
        "ecs",
        &["node", script.to_str().unwrap()],
        Duration::from_secs(150),
    );
    assert!(st.success(), "{}", bg.report());
    let v: Value = serde_json::from_str(bg.stdout().trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}){}", bg.report()));
    assert_eq!(v["errors"], serde_json::json!([]), "{}", bg.report());
    let keys: Vec<String> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 12, "{v}");
    let keys = distinct(keys);
    assert!(keys.len() > 1, "one key over 3 lifetimes: {keys:?}");
}

// ---------------------------------------------------------------------------------------------
// Refusals, lifetime of the endpoint.
// ---------------------------------------------------------------------------------------------

/// No token → 401, a wrong token or a foreign `Host` → 403, each audited on elhaz's stderr
/// without the token; the right request → 200 with the contract's fields; the endpoint is gone
/// once the child has exited.
#[test]
fn exec_ecs_refuses_bad_requests_and_dies_with_the_child() {
    let (env, _moto) = setup("ecs");
    let uri_file = env.scratch("uri");
    let script = format!(
        r#"set -u
u="$AWS_CONTAINER_CREDENTIALS_FULL_URI"; t="$AWS_CONTAINER_AUTHORIZATION_TOKEN"
printf %s "$u" > "{uri}"
code() {{ curl -s -o /dev/null -w '%{{http_code}}' "$@"; }}
echo "none $(code "$u")"
echo "wrong $(code -H "Authorization: x$t" "$u")"
echo "host $(code -H "Authorization: $t" -H "Host: evil.example" "$u")"
echo "path $(code -H "Authorization: $t" "${{u%/credentials}}/other")"
echo "ok $(code -H "Authorization: $t" "$u")"
curl -s -H "Authorization: $t" "$u" > "{uri}.body"
"#,
        uri = uri_file.display()
    );
    let (st, bg) = exec_ecs(&env, "ecs", &["sh", "-c", &script], Duration::from_secs(60));
    assert!(st.success(), "{}", bg.report());
    let out = bg.stdout();
    for line in ["none 401", "wrong 403", "host 403", "path 404", "ok 200"] {
        assert!(
            out.lines().any(|l| l == line),
            "missing {line:?}{}",
            bg.report()
        );
    }
    let err = bg.stderr();
    assert_contains(
        &err,
        &[
            "refused a request from 127.0.0.1:",
            "no Authorization token (401)",
            "wrong Authorization token (403)",
            "Host header is not the endpoint's address (403)",
        ],
    );
    let body: Value =
        serde_json::from_slice(&std::fs::read(format!("{}.body", uri_file.display())).unwrap())
            .unwrap();
    for k in ["AccessKeyId", "SecretAccessKey", "Token", "Expiration"] {
        assert!(body[k].is_string(), "{k} missing: {body}");
    }
    assert!(!err.contains(body["SecretAccessKey"].as_str().unwrap()));
    // The endpoint died with the child.
    let uri = std::fs::read_to_string(&uri_file).unwrap();
    let hostport = uri
        .trim_start_matches("http://")
        .trim_end_matches("/credentials");
    assert!(
        std::net::TcpStream::connect(hostport).is_err(),
        "{hostport} still accepts after the child exited"
    );
}

// ---------------------------------------------------------------------------------------------
// Exit codes and signals.
// ---------------------------------------------------------------------------------------------

#[test]
fn exec_ecs_passes_exit_codes_through() {
    let (env, _moto) = setup("ecs");
    let (st, bg) = exec_ecs(
        &env,
        "ecs",
        &["sh", "-c", "exit 7"],
        Duration::from_secs(60),
    );
    assert_eq!(st.code(), Some(7), "{}", bg.report());
    let (st, bg) = exec_ecs(
        &env,
        "ecs",
        &["sh", "-c", "kill -USR2 $$"],
        Duration::from_secs(60),
    );
    assert_eq!(st.code(), Some(128 + 12), "{}", bg.report());
}

/// A child that records the signals it gets: SIGHUP, SIGUSR1, SIGWINCH, SIGQUIT and SIGINT
/// sent to elhaz reach it, and it exits with the code it chose.
#[test]
fn exec_ecs_forwards_signals() {
    let (env, _moto) = setup("ecs");
    let log = env.scratch("signals");
    let script = format!(
        r#"for s in HUP USR1 WINCH QUIT INT; do trap "echo $s >> '{log}'" $s; done
echo ready >> '{log}'
i=0; while [ $i -lt 600 ]; do
  grep -q INT '{log}' && exit 5
  sleep 0.1; i=$((i+1))
done
exit 1"#,
        log = log.display()
    );
    let mut cmd = env.cmd(&["exec", "--ecs", "ecs", "--", "sh", "-c", &script]);
    cmd.stdin(Stdio::null());
    let mut bg = Bg::spawn(&env, cmd, "sig");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(30), || read().contains("ready")),
        "{}",
        bg.report()
    );
    for (sig, name) in [
        (Signal::SIGHUP, "HUP"),
        (Signal::SIGUSR1, "USR1"),
        (Signal::SIGWINCH, "WINCH"),
        (Signal::SIGQUIT, "QUIT"),
    ] {
        bg.signal(sig);
        assert!(
            wait_until(Duration::from_secs(10), || read()
                .lines()
                .any(|l| l == name)),
            "{name} never reached the child: {}{}",
            read(),
            bg.report()
        );
    }
    bg.signal(Signal::SIGINT);
    let st = bg.wait(Duration::from_secs(20));
    assert_eq!(st.code(), Some(5), "{}{}", read(), bg.report());
}

/// SIGTERM to elhaz: a child that exits on it ends with 143 and elhaz says so; a child that
/// ignores it is SIGKILLed after --stop-timeout (137) and elhaz says that.
#[test]
fn exec_ecs_stop_timeout_ends_in_sigkill() {
    let (env, _moto) = setup("ecs");
    let ready = env.scratch("ready");
    for (ignore, want, says) in [
        (false, 128 + 15, "stopped after SIGTERM"),
        (
            true,
            128 + 9,
            "did not exit within 1s of SIGTERM; killed it with SIGKILL",
        ),
    ] {
        let _ = std::fs::remove_file(&ready);
        let trap = if ignore { "trap '' TERM;" } else { "" };
        let script = format!("{trap} touch '{}'; exec sleep 60", ready.display());
        let mut cmd = env.cmd(&[
            "exec",
            "--ecs",
            "--stop-timeout",
            "1",
            "ecs",
            "--",
            "sh",
            "-c",
            &script,
        ]);
        cmd.stdin(Stdio::null());
        let mut bg = Bg::spawn(&env, cmd, "stop");
        assert!(
            wait_until(Duration::from_secs(30), || ready.exists()),
            "{}",
            bg.report()
        );
        bg.signal(Signal::SIGTERM);
        let st = bg.wait(Duration::from_secs(20));
        assert_eq!(st.code(), Some(want), "{}", bg.report());
        assert_contains(&bg.stderr(), &["sent SIGTERM to the child", says]);
    }
}

#[test]
fn exec_ecs_flag_errors_are_clear() {
    let env = TestEnv::new();
    let out = env.run_fail(&["exec", "--stop-timeout", "3", "x", "--", "true"]);
    assert_contains(&crate::util::stderr(&out), &["--ecs"]);
    let out = env.run_fail(&["exec", "--ecs", "--refreshing", "x", "--", "true"]);
    assert_contains(&crate::util::stderr(&out), &["--refreshing"]);
    env.run_ok(&["config", "add", "x", "--role-arn", ROLE]);
    let out = env.run_fail(&["exec", "--ecs", "--stop-signal", "NOPE", "x", "--", "true"]);
    assert_contains(&crate::util::stderr(&out), &["--stop-signal \"NOPE\""]);
}

// ---------------------------------------------------------------------------------------------
// serve ecs.
// ---------------------------------------------------------------------------------------------

/// `serve ecs` writes the token to a 0600 file (never to stdout), answers curl with the token
/// file and refuses it without; SIGTERM stops it cleanly and removes the file. A non-loopback
/// address needs --allow-remote.
#[test]
fn serve_ecs_answers_with_the_token_file_only() {
    let (env, _moto) = setup("ecs");
    let out = env.run_fail(&[
        "serve",
        "ecs",
        "ecs",
        "--listen",
        "0.0.0.0:0",
        "--token-file",
        "t",
    ]);
    assert_contains(&crate::util::stderr(&out), &["--allow-remote", "0.0.0.0"]);

    let token_file = env.scratch("token");
    let mut bg = Bg::spawn(
        &env,
        env.cmd(&[
            "serve",
            "ecs",
            "ecs",
            "--token-file",
            token_file.to_str().unwrap(),
        ]),
        "serve",
    );
    assert!(
        wait_until(Duration::from_secs(30), || bg.stdout().lines().count() >= 2),
        "{}",
        bg.report()
    );
    let stdout = bg.stdout();
    let uri = stdout
        .lines()
        .find_map(|l| l.strip_prefix("AWS_CONTAINER_CREDENTIALS_FULL_URI="))
        .unwrap()
        .to_string();
    assert_contains(
        &stdout,
        &[&format!(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={}",
            token_file.display()
        )],
    );
    assert_eq!(mode_of(&token_file) & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(token.len(), 64);
    assert!(
        !stdout.contains(&token),
        "token printed without --print-token"
    );

    let curl = |with: bool| {
        let mut c = Command::new("curl");
        c.args(["-s", "-w", "\n%{http_code}"]);
        if with {
            c.arg("-H").arg(format!(
                "Authorization: {}",
                std::fs::read_to_string(&token_file).unwrap()
            ));
        }
        c.arg(&uri);
        String::from_utf8(output_of(&mut c).stdout).unwrap()
    };
    let ok = curl(true);
    assert!(ok.ends_with("\n200"), "{ok}{}", bg.report());
    let body: Value = serde_json::from_str(ok.lines().next().unwrap()).unwrap();
    assert!(
        body["AccessKeyId"].is_string() && body["Token"].is_string(),
        "{body}"
    );
    let refused = curl(false);
    assert!(refused.ends_with("\n401"), "{refused}");

    bg.signal(Signal::SIGTERM);
    let st = bg.wait(Duration::from_secs(20));
    assert!(st.success(), "{}", bg.report());
    assert!(!token_file.exists(), "the token file outlived serve ecs");
    assert_contains(&bg.stderr(), &["serve ecs stopped (SIGTERM)"]);
}

/// `shell --ecs`: the user's shell runs as the endpoint's child; a script on its stdin gets
/// credentials through the endpoint and its exit status is elhaz's.
#[test]
fn shell_ecs_gives_the_shell_an_endpoint() {
    let (env, _moto) = setup("ecs");
    env.set_env("SHELL", "/bin/sh");
    let script = "test -z \"${AWS_ACCESS_KEY_ID:-}\" || exit 9\n\
                  curl -s -o /dev/null -w 'code %{http_code}\\n' \
                  -H \"Authorization: $AWS_CONTAINER_AUTHORIZATION_TOKEN\" \
                  \"$AWS_CONTAINER_CREDENTIALS_FULL_URI\"\nexit 3\n";
    let (cmd, out) = env.run_stdin(&["shell", "--ecs", "ecs"], script.as_bytes());
    assert_eq!(out.status.code(), Some(3), "{}", describe(&cmd, &out));
    assert_contains(&crate::util::stdout(&out), &["code 200"]);
    assert_contains(&crate::util::stderr(&out), &["with an ECS endpoint"]);
}

/// A daemon the endpoint autostarts mid-run (the first one was stopped) does not inherit the
/// signals `exec --ecs` blocks in its threads: SIGTERM still reaches it.
#[test]
fn exec_ecs_autostarted_daemon_gets_sigterm() {
    let (env, _moto) = setup("ecs");
    let (ready, go) = (env.scratch("ready"), env.scratch("go"));
    let script = format!(
        r#"touch '{ready}'
i=0; while [ ! -e '{go}' ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
curl -s -o /dev/null -w 'code %{{http_code}}\n' -H "Authorization: $AWS_CONTAINER_AUTHORIZATION_TOKEN" "$AWS_CONTAINER_CREDENTIALS_FULL_URI""#,
        ready = ready.display(),
        go = go.display()
    );
    let mut bg = Bg::spawn(
        &env,
        env.cmd(&["exec", "--ecs", "ecs", "--", "sh", "-c", &script]),
        "auto",
    );
    assert!(
        wait_until(Duration::from_secs(30), || ready.exists()),
        "{}",
        bg.report()
    );
    env.run_ok(&["daemon", "stop"]);
    std::fs::write(&go, "").unwrap();
    let st = bg.wait(Duration::from_secs(60));
    assert!(st.success(), "{}", bg.report());
    assert_contains(&bg.stdout(), &["code 200"]);
    let pid = env.pid_from_file().expect("no autostarted daemon");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let blocked = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(
        blocked & (1 << (15 - 1)),
        0,
        "SIGTERM blocked in the daemon: {blocked:x}"
    );
    let out = env.run_ok(&["daemon", "stop"]);
    assert_contains(&crate::util::stdout(&out), &["stopped"]);
}
