//! Doc examples that run: every shell code block of README.md and docs/*.md is executed for
//! real, in document order, one scenario per file. (`docs.rs` additionally checks that every
//! `elhaz …` mentioned inline in prose parses.)
//!
//! A scenario is a sandbox: `HOME` and `TMPDIR` in a fresh temp dir (so `~/.aws/config`, the
//! elhaz configs, sockets and logs, and every `mktemp` land there), a moto server as the AWS
//! endpoint (`AWS_ENDPOINT_URL`, with the `testing` keys as the default credentials), the
//! binary under test first on `PATH` as `elhaz`, the repo's `.venv/bin` (aws CLI, moto)
//! next, the repo root as the working directory and no stdin. Each logical line of a block
//! (`\` continuations joined) runs in one bash process, so `export`, `cd` and background jobs
//! carry over like in a reader's terminal; the first line that fails ends the scenario and
//! fails the test with the transcript. Daemons and background jobs a scenario started are
//! stopped at its end.
//!
//! A line ending in `# fails: TEXT` must fail, with TEXT in its stderr (case-insensitive).
//!
//! Directives, in an HTML comment right before a code block (invisible when rendered), say
//! what a block needs that a reader's machine already has:
//!
//! - `<!-- doctest: setup CODE -->`: hidden shell code run first (e.g. the reader's old
//!   Python elhaz configs); `teardown CODE` runs when the scenario ends, whatever happened.
//! - `<!-- doctest: stdin TEXT -->`: the block's stdin (`\n` for newlines), for the
//!   commands that read keys from stdin.
//! - `<!-- doctest: file PATH [owner USER] -->` on a non-shell block (TOML, INI): write the
//!   block to PATH (`~`, `~user` expanded; `/abs/path/elhaz` replaced by the binary's path).
//! - `<!-- doctest: as USER -->`: run each line as USER with an empty environment (only
//!   `PATH` to find `elhaz`, and `HOME`) — what an agent account has.
//! - `<!-- doctest: root -->`: the block changes the machine (users, groups, `/run/elhaz`,
//!   `/etc`). It runs only as root on a throwaway machine (`CI=true`) with no `/run/elhaz`
//!   and none of the accounts it creates (`WALKTHROUGH_ACCOUNTS`) of its own; elsewhere it is
//!   reported as not run, never silently, and its teardown does not run either.
//! - `<!-- doctest: ci-runs CMD -->`: CMD, a line of the block, is what `.ci/run` itself runs
//!   (the test suite, the release install); the test checks `.ci/run` contains it.
//! - `<!-- doctest: skip REASON -->`: cannot run in a test at all (e.g. `systemctl` needs
//!   systemd as PID 1); listed in the output with the reason, and counted (see
//!   `MAX_SKIPPED_BLOCKS`), so skipping cannot spread unnoticed.

use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::moto::Moto;
use crate::util::wait_until;
use crate::util::{
    bin_for_any_uid, chmod, is_root, pid_running, sh_quote, skipped_check, snapshot, system_lock,
};

/// The documents whose examples must run. `every_doc_file_is_covered` keeps it complete.
pub const DOC_FILES: &[&str] = &[
    "README.md",
    "docs/architecture.md",
    "docs/cli.md",
    "docs/configuration.md",
    "docs/migration.md",
    "docs/operations.md",
    "docs/performance.md",
    "docs/protocol.md",
    "docs/security.md",
    "docs/troubleshooting.md",
];

/// Blocks that say `skip` across all docs. Raising it is a decision, not an accident.
const MAX_SKIPPED_BLOCKS: usize = 5;

/// The accounts docs/operations.md's walkthrough creates (and its teardown deletes).
const WALKTHROUGH_ACCOUNTS: &[&str] = &["elhaz", "agent"];

/// Upper bound for one document's scenario (README's runs `scripts/demo`, ~1 min).
const SCENARIO_LIMIT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq)]
enum Directive {
    Skip(String),
    CiRuns(String),
    Setup(String),
    Teardown(String),
    Stdin(String),
    File(String),
    As(String),
    Root,
}

#[derive(Debug)]
pub struct Block {
    /// 1-based line of the opening fence.
    pub line: usize,
    pub info: String,
    /// (1-based line, text without the block's indentation).
    pub body: Vec<(usize, String)>,
    directives: Vec<Directive>,
}

fn parse_directive(text: &str) -> Result<Directive, String> {
    let text = text.trim();
    let (kind, arg) = match text.split_once(char::is_whitespace) {
        Some((k, a)) => (k, a.trim().to_string()),
        None => (text, String::new()),
    };
    let need = |what: &str| {
        if arg.is_empty() {
            Err(format!("`doctest: {kind}` needs {what}"))
        } else {
            Ok(arg.clone())
        }
    };
    Ok(match kind {
        "skip" => Directive::Skip(need("a reason")?),
        "ci-runs" => Directive::CiRuns(need("the command")?),
        "setup" => Directive::Setup(need("shell code")?),
        "teardown" => Directive::Teardown(need("shell code")?),
        "stdin" => Directive::Stdin(need("the text")?.replace("\\n", "\n")),
        "file" => Directive::File(need("a path")?),
        "as" => Directive::As(need("a user")?),
        "root" if arg.is_empty() => Directive::Root,
        _ => return Err(format!("unknown doctest directive {text:?}")),
    })
}

/// The fenced blocks of a markdown text, each with the directives right before it.
pub fn blocks(text: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut pending: Vec<(usize, Directive)> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let raw = lines[i];
        let t = raw.trim();
        if let Some(rest) = t.strip_prefix("<!-- doctest:") {
            let start = i + 1;
            let mut body = String::new();
            let mut cur = rest.to_string();
            loop {
                if let Some(end) = cur.find("-->") {
                    body.push_str(&cur[..end]);
                    break;
                }
                body.push_str(&cur);
                body.push('\n');
                i += 1;
                cur = lines
                    .get(i)
                    .ok_or(format!("line {start}: unterminated doctest directive"))?
                    .to_string();
            }
            let d = parse_directive(&body).map_err(|e| format!("line {start}: {e}"))?;
            pending.push((start, d));
            i += 1;
            continue;
        }
        if let Some(info) = t.strip_prefix("```") {
            let open = i + 1;
            let indent = &raw[..raw.len() - raw.trim_start().len()];
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                let l = lines[i];
                let l = l.strip_prefix(indent).unwrap_or(l.trim_start());
                body.push((i + 1, l.to_string()));
                i += 1;
            }
            if i == lines.len() {
                return Err(format!("line {open}: unterminated code block"));
            }
            out.push(Block {
                line: open,
                info: info.trim().to_string(),
                body,
                directives: pending.drain(..).map(|(_, d)| d).collect(),
            });
            i += 1;
            continue;
        }
        if !t.is_empty()
            && let Some((at, _)) = pending.first()
        {
            return Err(format!(
                "line {at}: a doctest directive must come right before a code block"
            ));
        }
        i += 1;
    }
    if let Some((at, _)) = pending.first() {
        return Err(format!(
            "line {at}: a doctest directive with no code block after it"
        ));
    }
    Ok(out)
}

pub fn is_shell(info: &str) -> bool {
    matches!(info, "sh" | "bash" | "console" | "shell" | "zsh")
}

/// A runnable line: the command and, for `# fails: TEXT`, the expected stderr text.
#[derive(Debug, PartialEq)]
pub struct Line {
    pub at: usize,
    pub cmd: String,
    fails: Option<String>,
}

/// The logical command lines of a shell block: continuations joined, comments and blank lines
/// dropped, `$ ` prompts stripped (a `console` block's other lines are output).
pub fn command_lines(block: &Block) -> Vec<Line> {
    let console = block.info == "console";
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (at, raw) in &block.body {
        let (start, mut text) = match pending.take() {
            Some((s, acc)) => (s, acc + raw.trim_start()),
            None => {
                let t = raw.trim();
                let t = if console {
                    match t.strip_prefix("$ ") {
                        Some(cmd) => cmd,
                        None => continue,
                    }
                } else {
                    t
                };
                if t.is_empty() || t.starts_with('#') {
                    continue;
                }
                (*at, t.to_string())
            }
        };
        if let Some(cont) = text.strip_suffix('\\') {
            pending = Some((start, cont.to_string()));
            continue;
        }
        let mut fails = None;
        if let Some(pos) = text.find("# fails:") {
            fails = Some(text[pos + "# fails:".len()..].trim().to_string());
            text.truncate(pos);
        }
        out.push(Line {
            at: start,
            cmd: text.trim_end().to_string(),
            fails,
        });
    }
    out
}

/// A heredoc body that cannot end early.
fn heredoc(text: &str) -> String {
    assert!(!text.lines().any(|l| l == "__ELHAZ_DOC_EOF__"));
    format!("<<'__ELHAZ_DOC_EOF__'\n{text}\n__ELHAZ_DOC_EOF__\n")
}

const PRELUDE: &str = r#"
# Generated by tests/it/doc_examples.rs: the examples of one document, in order.
__DOC_RUNNING=
__doc_exit() {
  local rc=$?
  if [ -n "$__DOC_RUNNING" ]; then
    echo "DOC EXAMPLE FAILED: $__DOC_RUNNING: exit status $rc" >&2
  fi
  __doc_teardown >/dev/null 2>&1
  kill $(jobs -p) 2>/dev/null
  [ -z "$__DOC_RUNNING" ] || exit 1
}
trap __doc_exit EXIT
__doc_cmd() {  # WHERE FAILS-TEXT STDIN USER; the command on stdin
  local __doc_where=$1 __doc_want=$2 __doc_in=$3 __doc_user=$4 __doc_c __doc_rc __doc_home
  __doc_c=$(cat)
  printf '\n$ %s\n' "$__doc_c"
  if [ -n "$__doc_user" ]; then
    __doc_home=$(getent passwd "$__doc_user" | cut -d: -f6)
    __doc_c="runuser -u $__doc_user -- env -i PATH=\"\$__DOC_USER_PATH\" HOME=$__doc_home LANG=C.UTF-8 bash -c $(printf %q "cd / && $__doc_c")"
  fi
  if [ -z "$__doc_want" ]; then
    # As in a reader's terminal, but strict: any failure, also inside a pipeline or a
    # `cmd; other` line, ends the scenario (the EXIT trap reports where).
    __DOC_RUNNING=$__doc_where
    set -eo pipefail
    eval "$__doc_c" <"$__doc_in"
    set +eo pipefail
    __DOC_RUNNING=
    return 0
  fi
  eval "$__doc_c" <"$__doc_in" 2>"$__DOC_DIR/stderr"
  __doc_rc=$?
  cat "$__DOC_DIR/stderr" >&2
  if [ "$__doc_rc" -eq 0 ]; then
    echo "DOC EXAMPLE FAILED: $__doc_where: succeeded, but the docs say it fails ($__doc_want)" >&2
    exit 1
  elif ! grep -qiF -- "$__doc_want" "$__DOC_DIR/stderr"; then
    echo "DOC EXAMPLE FAILED: $__doc_where: failed (exit $__doc_rc) without \"$__doc_want\" in its stderr" >&2
    exit 1
  fi
}
__doc_file() {  # WHERE PATH OWNER; the content on stdin
  local __doc_p __doc_elhaz
  eval "__doc_p=$2"
  __doc_elhaz=$(command -v elhaz)
  printf '\n(%s: the block above is written to %s)\n' "$1" "$__doc_p"
  sed -e "s#/abs/path/to/elhaz#$__doc_elhaz#g" -e "s#/abs/path/elhaz#$__doc_elhaz#g" \
    >"$__DOC_DIR/file"
  if [ -n "$3" ]; then
    runuser -u "$3" -- sh -c 'umask 077 && mkdir -p "$(dirname "$1")" && cat >"$1"' sh "$__doc_p" \
      <"$__DOC_DIR/file"
  else
    (umask 077 && mkdir -p "$(dirname "$__doc_p")" && cat >"$__doc_p") <"$__DOC_DIR/file"
  fi || { echo "DOC EXAMPLE FAILED: $1: cannot write $__doc_p" >&2; exit 1; }
}
"#;

/// One document's examples as a bash script, and what it leaves out.
#[derive(Default)]
struct Plan {
    /// The prelude, then every block that runs, in order.
    script: String,
    /// The `teardown` code of the blocks that run (the body of `__doc_teardown`).
    teardown: String,
    /// Lines and blocks not run here, with why (printed by the test).
    not_run: Vec<String>,
    /// Lines `.ci/run` must run instead.
    ci_runs: Vec<String>,
    /// Command lines in the script.
    ran_lines: usize,
}

/// Turns the blocks of `rel` into a [`Plan`]; `dir` is the sandbox (stdin files go there),
/// `root_ok` whether `root` blocks may run (`Err`: why not).
fn plan(rel: &str, blocks: &[Block], dir: &Path, root_ok: Result<(), String>) -> Plan {
    let mut p = Plan::default();
    p.script.push_str(PRELUDE);
    for (n, b) in blocks.iter().enumerate() {
        let here = format!("{rel}:{}", b.line);
        let mut stdin = "/dev/null".to_string();
        let mut user = String::new();
        let mut file = None;
        let mut setup = Vec::new();
        let mut ci_runs = Vec::new();
        let mut skip = None;
        let mut root = false;
        let mut teardown = Vec::new();
        for d in &b.directives {
            match d {
                Directive::Skip(r) => skip = Some(r.clone()),
                Directive::CiRuns(c) => ci_runs.push(c.clone()),
                Directive::Setup(c) => setup.push(c.clone()),
                Directive::Teardown(c) => teardown.push(c.clone()),
                Directive::Stdin(t) => {
                    let f = dir.join(format!("stdin-{n}"));
                    std::fs::write(&f, t).unwrap();
                    chmod(&f, 0o644);
                    stdin = f.display().to_string();
                }
                Directive::File(f) => file = Some(f.clone()),
                Directive::As(u) => user = u.clone(),
                Directive::Root => root = true,
            }
        }
        if let Some(reason) = skip {
            p.not_run.push(format!("{here}: not run: {reason}"));
            continue;
        }
        if root && let Err(why) = &root_ok {
            p.not_run.push(format!("{here}: not run: {why}"));
            continue;
        }
        // Only for blocks that run: a walkthrough not run here must not undo anything.
        for c in teardown {
            writeln!(p.teardown, "(\n{c}\n)").unwrap();
        }
        let shell = is_shell(&b.info);
        assert!(
            shell || file.is_some() || setup.is_empty(),
            "{here}: directives on a ```{} block that is neither run nor written",
            b.info
        );
        if !shell && file.is_none() {
            continue;
        }
        writeln!(p.script, "\necho; echo '## {here}'").unwrap();
        if root {
            // The walkthrough is about the shared socket: let the CLI find it.
            p.script.push_str("unset ELHAZ_SHARED_SOCKET\n");
        }
        for code in &setup {
            write!(
                p.script,
                "__doc_cmd {} '' /dev/null '' {}",
                sh_quote(&format!("{here} (hidden setup)")),
                heredoc(code)
            )
            .unwrap();
        }
        if let Some(f) = file {
            let (path, owner) = match f.split_once(" owner ") {
                Some((p, o)) => (p.trim().to_string(), o.trim().to_string()),
                None => (f, String::new()),
            };
            let text: Vec<&str> = b.body.iter().map(|(_, l)| l.as_str()).collect();
            write!(
                p.script,
                "__doc_file {} {} {} {}",
                sh_quote(&here),
                sh_quote(&path),
                sh_quote(&owner),
                heredoc(&text.join("\n"))
            )
            .unwrap();
            continue;
        }
        let lines = command_lines(b);
        let bare = |l: &Line| l.cmd.split(" #").next().unwrap_or("").trim().to_string();
        for c in &ci_runs {
            assert!(
                lines.iter().any(|l| &bare(l) == c),
                "{here}: `doctest: ci-runs {c}` names no line of the block"
            );
        }
        for l in lines {
            if ci_runs.contains(&bare(&l)) {
                p.ci_runs.push(bare(&l));
                p.not_run.push(format!(
                    "{rel}:{}: run by .ci/run itself: {}",
                    l.at,
                    bare(&l)
                ));
                continue;
            }
            p.ran_lines += 1;
            write!(
                p.script,
                "__doc_cmd {} {} {} {} {}",
                sh_quote(&format!("{rel}:{}", l.at)),
                sh_quote(l.fails.as_deref().unwrap_or("")),
                sh_quote(&stdin),
                sh_quote(&user),
                heredoc(&l.cmd)
            )
            .unwrap();
        }
    }
    p.script.push_str("\necho; echo __ELHAZ_DOC_DONE__\n");
    p
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where `cargo` is (the README's `cargo run` and `scripts/demo` use it).
fn cargo_dir() -> Option<PathBuf> {
    if let Some(c) = std::env::var_os("CARGO") {
        return Path::new(&c).parent().map(Path::to_path_buf);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|d| d.join("cargo").is_file())
}

/// Stops every daemon and moto a scenario left behind (their pid files are in its sandbox).
fn stop_leftovers(dir: &Path) {
    let pids: Vec<i32> = snapshot(dir)
        .into_iter()
        .filter(|(rel, _)| {
            rel.file_name()
                .is_some_and(|n| n == "elhaz.pid" || n == "moto.pid")
        })
        .filter_map(|(_, bytes)| String::from_utf8_lossy(&bytes).trim().parse().ok())
        .collect();
    for &pid in &pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    for &pid in &pids {
        if !wait_until(Duration::from_secs(5), || !pid_running(pid as u32)) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Whether this machine may run the `root` blocks (see the module docs).
fn root_allowed() -> Result<(), String> {
    if !is_root() {
        return Err("needs root (it creates users and /run/elhaz)".into());
    }
    if !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        return Err(
            "changes users, groups and /etc: runs only with CI=true (a throwaway machine)".into(),
        );
    }
    if Path::new("/run/elhaz").exists() {
        return Err("this machine has a /run/elhaz of its own; not touching it".into());
    }
    // The walkthrough's teardown deletes the accounts it made: they must be its own.
    for name in WALKTHROUGH_ACCOUNTS {
        if nix::unistd::User::from_name(name).ok().flatten().is_some()
            || nix::unistd::Group::from_name(name).ok().flatten().is_some()
        {
            return Err(format!(
                "this machine already has a user or group {name:?}; not touching it"
            ));
        }
    }
    Ok(())
}

fn run_doc(rel: &str) {
    let text = std::fs::read_to_string(repo().join(rel)).unwrap();
    match run_markdown(rel, &text) {
        Ok(transcript) => eprintln!("{transcript}"),
        Err(failure) => panic!("{failure}"),
    }
}

/// Runs the examples of one markdown text (named `rel` in messages) in a fresh sandbox: the
/// transcript, or why it failed with the transcript.
fn run_markdown(rel: &str, text: &str) -> Result<String, String> {
    let blocks = blocks(text).map_err(|e| format!("{rel}: {e}"))?;
    let wants_root = blocks
        .iter()
        .any(|b| b.directives.contains(&Directive::Root));
    // Taken before looking at /run/elhaz: the shared-daemon test creates and removes it.
    let _system = (wants_root && is_root()).then(system_lock);
    let root_ok = if wants_root { root_allowed() } else { Ok(()) };

    let sandbox = tempfile::Builder::new()
        .prefix("elhaz-doc.")
        .tempdir()
        .unwrap();
    let dir = sandbox.path();
    // Traversable: accounts the walkthrough creates read the stdin files under it.
    chmod(dir, 0o755);
    let home = dir.join("home");
    std::fs::create_dir(&home).unwrap();
    chmod(&home, 0o700);
    let tmp = dir.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    chmod(&tmp, 0o1777);
    let moto_dir = dir.join("moto");
    std::fs::create_dir(&moto_dir).unwrap();
    let moto = Moto::start(&moto_dir);

    let p = plan(rel, &blocks, dir, root_ok);
    for c in &p.ci_runs {
        let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
        assert!(
            ci.lines()
                .any(|l| !l.trim_start().starts_with('#') && l.contains(c.as_str())),
            "{rel}: the docs say .ci/run runs `{c}`, but it does not"
        );
    }
    let script = format!("__doc_teardown() {{\n:\n{}}}\n{}", p.teardown, p.script);
    let script_file = dir.join("doc.sh");
    std::fs::write(&script_file, script.as_bytes()).unwrap();

    let any_bin = bin_for_any_uid();
    let link_dir = dir.join("bin");
    std::fs::create_dir(&link_dir).unwrap();
    chmod(&link_dir, 0o755);
    // `elhaz` on PATH is the binary under test (the build directory may be private).
    std::os::unix::fs::symlink(&any_bin, link_dir.join("elhaz")).unwrap();
    let sys_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let mut path = format!(
        "{}:{}",
        link_dir.display(),
        repo().join(".venv/bin").display()
    );
    if let Some(c) = cargo_dir() {
        write!(path, ":{}", c.display()).unwrap();
    }
    write!(path, ":{sys_path}").unwrap();

    let log = dir.join("transcript");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(&script_file).env_clear();
    // Cargo's and rustup's own settings, so `cargo run` in an example reuses the build
    // instead of rebuilding the binary other tests are running.
    for (k, v) in std::env::vars_os() {
        let name = k.to_string_lossy();
        let keep =
            (name.starts_with("CARGO_") || name.starts_with("RUSTUP_") || name == "RUSTFLAGS")
                && ![
                    "CARGO_PKG_",
                    "CARGO_MANIFEST_",
                    "CARGO_BIN_",
                    "CARGO_CRATE_",
                    "CARGO_PRIMARY_",
                ]
                .iter()
                .any(|p| name.starts_with(p));
        if keep || matches!(name.as_ref(), "CI" | "USER" | "LOGNAME") {
            cmd.env(&k, v);
        }
    }
    cmd.env("PATH", &path)
        .env("HOME", &home)
        .env("TMPDIR", &tmp)
        .env("LANG", "C.UTF-8")
        .env("__DOC_DIR", dir)
        .env(
            "__DOC_USER_PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", link_dir.display()),
        )
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", moto.url())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        // Never a shared daemon of this machine (the `root` walkthrough unsets it).
        .env("ELHAZ_SHARED_SOCKET", dir.join("no-shared-daemon.sock"))
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .process_group(0);
    let mut child = cmd.spawn().expect("cannot run bash");
    let mut status = None;
    let finished = wait_until(SCENARIO_LIMIT, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    // The whole process group: background jobs of the examples included.
    let _ = kill(Pid::from_raw(-(child.id() as i32)), Signal::SIGKILL);
    let _ = child.wait();
    stop_leftovers(dir);
    drop(moto);

    let transcript = std::fs::read_to_string(&log).unwrap_or_default();
    for n in &p.not_run {
        if n.contains("not run:") {
            skipped_check(n);
        } else {
            eprintln!("docs: {n}");
        }
    }
    if !finished {
        return Err(format!(
            "{rel}: the examples did not finish within {SCENARIO_LIMIT:?}; transcript:\n{transcript}"
        ));
    }
    if !(status.is_some_and(|s| s.success()) && transcript.contains("__ELHAZ_DOC_DONE__")) {
        return Err(format!(
            "{rel}: a documented example failed ({status:?}); transcript:\n{transcript}"
        ));
    }
    Ok(format!(
        "docs: {rel}: {} example lines ran, {} not run here\n{transcript}",
        p.ran_lines,
        p.not_run.len()
    ))
}

macro_rules! doc_tests {
    ($($name:ident => $file:literal,)*) => {
        $(
            #[test]
            fn $name() {
                run_doc($file);
            }
        )*
        const DOC_TESTS: &[&str] = &[$($file),*];
    };
}

doc_tests! {
    readme_examples_run => "README.md",
    architecture_examples_run => "docs/architecture.md",
    cli_examples_run => "docs/cli.md",
    configuration_examples_run => "docs/configuration.md",
    migration_examples_run => "docs/migration.md",
    operations_examples_run => "docs/operations.md",
    performance_examples_run => "docs/performance.md",
    protocol_examples_run => "docs/protocol.md",
    security_examples_run => "docs/security.md",
    troubleshooting_examples_run => "docs/troubleshooting.md",
}

#[test]
fn every_doc_file_is_covered() {
    let mut found = vec!["README.md".to_string()];
    for e in std::fs::read_dir(repo().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            found.push(format!("docs/{}", p.file_name().unwrap().to_string_lossy()));
        }
    }
    found.sort();
    let mut listed: Vec<String> = DOC_FILES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "DOC_FILES must list every document");
    let mut tests: Vec<String> = DOC_TESTS.iter().map(|s| s.to_string()).collect();
    tests.sort();
    assert_eq!(tests, listed, "every document needs its doc_tests! entry");

    let mut skipped = Vec::new();
    let mut shell_blocks = 0;
    for rel in DOC_FILES {
        let text = std::fs::read_to_string(repo().join(rel)).unwrap();
        for b in blocks(&text).unwrap_or_else(|e| panic!("{rel}: {e}")) {
            shell_blocks += usize::from(is_shell(&b.info));
            for d in &b.directives {
                if let Directive::Skip(r) = d {
                    skipped.push(format!("{rel}:{}: {r}", b.line));
                }
            }
        }
    }
    assert!(shell_blocks >= 20, "only {shell_blocks} shell blocks found");
    assert!(
        skipped.len() <= MAX_SKIPPED_BLOCKS,
        "{} blocks are skipped, more than MAX_SKIPPED_BLOCKS ({MAX_SKIPPED_BLOCKS}):\n{}",
        skipped.len(),
        skipped.join("\n")
    );
}

/// The runner itself: each of these must fail, naming the line, or the doc tests prove nothing.
#[test]
fn the_runner_catches_failing_examples() {
    let cases = [
        ("a failing command", "```sh\ntrue\nfalse\n```\n", "x.md:3"),
        (
            "a failure inside a pipeline and before `;`",
            "```sh\nfalse | cat; echo done\n```\n",
            "x.md:2",
        ),
        (
            "a command the docs say fails, but works",
            "```sh\nelhaz --version   # fails: boom\n```\n",
            "x.md:2",
        ),
        (
            "a failure with another message than documented",
            "```sh\nelhaz config show nope   # fails: permission denied\n```\n",
            "x.md:2",
        ),
        (
            "a failing hidden setup",
            "<!-- doctest: setup exit 3 -->\n```sh\ntrue\n```\n",
            "x.md:2 (hidden setup)",
        ),
    ];
    for (what, md, place) in cases {
        let err = run_markdown("x.md", md).expect_err(what);
        assert!(
            err.contains(&format!("DOC EXAMPLE FAILED: {place}")),
            "{what}: the report does not name {place}:\n{err}"
        );
    }
    // And what passes: state carries over between lines, a documented failure is accepted,
    // a file block is written, stdin is given.
    let md = "<!-- doctest: file ~/x.toml -->\n```toml\na = 1\n```\n\
              <!-- doctest: stdin hello\\n -->\n```sh\nexport V=1\ncd /tmp\n\
              test \"$V\" = 1 && test \"$PWD\" = /tmp && grep -q 'a = 1' ~/x.toml\n\
              read -r w && test \"$w\" = hello\n\
              elhaz config show nope   # fails: no session config\n\
              elhaz daemon start\n```\n";
    let out = run_markdown("y.md", md).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("6 example lines ran"), "{out}");
    // What a scenario starts does not outlive it.
    let pid: u32 = out
        .split("elhaz daemon started (pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no daemon pid in:\n{out}"));
    assert!(
        !pid_running(pid),
        "the scenario's daemon {pid} is still running"
    );
}

#[test]
fn block_and_line_parsing() {
    let md = "text\n<!-- doctest: stdin a\\nb -->\n<!-- doctest: setup\necho hi\n-->\n\n  ```sh\n  elhaz config add x \\\n    --duration 1h\n  # a comment\n  runuser -u agent -- elhaz daemon stop   # fails: permission denied\n  ```\n```toml\nx = 1\n```\n";
    let b = blocks(md).unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(
        b[0].directives,
        vec![
            Directive::Stdin("a\nb".into()),
            Directive::Setup("echo hi".into())
        ]
    );
    assert_eq!(b[0].line, 7);
    let lines = command_lines(&b[0]);
    assert_eq!(
        lines,
        vec![
            Line {
                at: 8,
                cmd: "elhaz config add x --duration 1h".into(),
                fails: None
            },
            Line {
                at: 11,
                cmd: "runuser -u agent -- elhaz daemon stop".into(),
                fails: Some("permission denied".into())
            },
        ]
    );
    assert!(b[1].directives.is_empty());
    assert!(blocks("<!-- doctest: skip -->\n```sh\nx\n```\n").is_err());
    assert!(blocks("<!-- doctest: bogus -->\n```sh\nx\n```\n").is_err());
    assert!(blocks("<!-- doctest: root -->\nprose\n```sh\nx\n```\n").is_err());
    assert!(blocks("<!-- doctest: root -->\n").is_err());
}
