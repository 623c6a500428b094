//! Commands that cannot rot, part 2 (part 1, `doc_examples.rs`, runs every shell code block).
//!
//! - Every `elhaz …` in a shell code block or an inline code span of README.md and docs/*.md
//!   must parse with the real clap `Cli` (in-process, after `sh` split the words): a fast,
//!   precise message for a renamed command or flag. Mentions in prose that
//!   name a command without its arguments (`elhaz keyring set`) are checked with `--help`.
//! - Every *concrete* command named in prose (`elhaz doctor --json`, `elhaz daemon logs -n
//!   200`) runs for real in a fresh sandbox and must succeed; those that run until stopped
//!   (`--foreground`, `--follow`) must still be running after a moment.
//! - Synopses (`[OPTIONAL]`, `A|B`, `<X>`, `…`, UPPERCASE placeholders) are not commands: they
//!   are printed, not run.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clap::Parser;
use clap::error::ErrorKind;
use elhaz::cli::Cli;

use crate::doc_examples::{DOC_FILES, blocks, command_lines, is_shell};
use crate::moto::{Moto, aws_env};
use crate::util::{BIN, TestEnv, run_limited};

/// The `elhaz …` invocations in one logical shell line.
fn invocations(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let line = line
        .trim()
        .trim_start_matches("$ ")
        .trim_start_matches("# ");
    // Split on shell separators; keep `$( … )` contents.
    let flattened = line.replace("$(", " ; ").replace(')', " ; ");
    for part in flattened.split(['|', ';', '&']) {
        let part = part.trim();
        let part = part.split(" #").next().unwrap_or("").trim();
        // Allow an env-assignment prefix (`ELHAZ_HOME=x elhaz …`) and `eval "…`.
        let words: Vec<&str> = part.split_whitespace().collect();
        let Some(pos) = words
            .iter()
            .position(|w| w.trim_start_matches('"') == "elhaz")
        else {
            continue;
        };
        if !words[..pos]
            .iter()
            .all(|w| w.contains('=') || *w == "eval" || *w == "exec" || *w == "command")
        {
            continue;
        }
        let cmd = words[pos + 1..].join(" ");
        out.push(cmd.trim_end_matches('"').to_string());
    }
    out
}

/// One `elhaz …` command found in the docs.
struct Mention {
    /// `FILE:LINE`.
    place: String,
    /// The arguments after `elhaz`.
    args: String,
    /// In prose (an inline code span) rather than a shell code block.
    inline: bool,
}

impl Mention {
    /// `[OPTIONAL]`, `A|B`, `<X>`, `…` or an UPPERCASE placeholder (other than NAME, ENTRY
    /// and PROFILE, which the parse check accepts as literal names): a synopsis, not a command.
    fn is_synopsis(&self) -> bool {
        let a = &self.args;
        a.contains('[')
            || a.contains('|') && !a.contains(" | ")
            || a.contains('<')
            || a.contains('…')
            || a.contains("...")
            || a.split_whitespace().any(|w| {
                w.len() > 1
                    && w.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                    && !matches!(w, "NAME" | "ENTRY" | "PROFILE")
            })
    }

    /// Names something the reader fills in (`NAME`, `E`, `configs/examples/FILE.toml`): a
    /// reference to a command.
    fn has_placeholder(&self) -> bool {
        self.args
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .any(|w| {
                w.chars().any(|c| c.is_ascii_uppercase())
                    && w.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            })
    }
}

/// Every `elhaz …` command in README.md and docs/*.md: in the command lines of shell code
/// blocks (as `doc_examples` reads them) and in inline code spans of prose.
fn mentions() -> Vec<Mention> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for rel in DOC_FILES {
        let text = std::fs::read_to_string(root.join(rel)).unwrap();
        let blocks = blocks(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
        // 1-based lines inside a fenced block, fences included.
        let fenced: BTreeSet<usize> = blocks
            .iter()
            .flat_map(|b| b.line..=b.line + b.body.len() + 1)
            .collect();
        for b in blocks.iter().filter(|b| is_shell(&b.info)) {
            for l in command_lines(b) {
                out.extend(invocations(&l.cmd).into_iter().map(|args| Mention {
                    place: format!("{rel}:{}", l.at),
                    args,
                    inline: false,
                }));
            }
        }
        for (i, raw) in text.lines().enumerate() {
            if fenced.contains(&(i + 1)) {
                continue;
            }
            // Inline code spans in prose and tables (where `\|` is an escaped pipe).
            for span in raw.split('`').skip(1).step_by(2) {
                if let Some(args) = span.strip_prefix("elhaz ") {
                    out.push(Mention {
                        place: format!("{rel}:{}", i + 1),
                        args: args.replace("\\|", "|"),
                        inline: true,
                    });
                }
            }
        }
    }
    out
}

/// Whether `elhaz ARGS` parses with the real clap [`Cli`]: the words are split by `sh` (quotes,
/// escapes and variables as a reader's shell would), then parsed in-process.
fn parses(args: &str) -> Result<(), String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("printf '%s\\0' \"$0\" {args}"))
        .arg("elhaz")
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(format!(
            "sh cannot split it: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let words: Vec<std::ffi::OsString> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| std::ffi::OsStr::from_bytes(w).to_os_string())
        .collect();
    match Cli::try_parse_from(words) {
        Ok(_) => Ok(()),
        // `--help` and `--version` are answers, not failures.
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => Ok(()),
        Err(e) => Err(e.to_string().trim().to_string()),
    }
}

#[test]
fn every_documented_command_parses() {
    let (mut checked, mut synopses, mut failures) = (0, Vec::new(), Vec::new());
    for m in mentions() {
        if m.is_synopsis() {
            synopses.push(format!("{}: elhaz {}", m.place, m.args));
            continue;
        }
        checked += 1;
        // Inline mentions in prose often name a command without its required arguments
        // (`elhaz keyring set`): check the command path and flags exist.
        let args = if m.inline && !m.args.contains(" -- ") && !m.args.starts_with("help") {
            format!("{} --help", m.args.split(" | ").next().unwrap_or(""))
        } else {
            m.args.clone()
        };
        if let Err(e) = parses(&args) {
            failures.push(format!("{}: `elhaz {args}`: {e}", m.place));
        }
    }
    eprintln!("docs: {checked} documented commands parsed");
    for s in &synopses {
        eprintln!("docs: synopsis, not run: {s}");
    }
    assert!(
        checked >= 10,
        "expected the docs to show commands; found {checked}"
    );
    assert!(
        failures.is_empty(),
        "documented commands that do not parse:\n{}",
        failures.join("\n")
    );
}

/// Concrete commands named in prose that run until stopped: they must still be running after
/// a moment (then they are stopped).
const INLINE_LONG_RUNNING: &[&str] = &["daemon start --foreground", "daemon logs --follow"];

/// Every concrete `elhaz …` named in prose — a complete command without placeholders, like
/// `elhaz doctor --json` or `elhaz daemon logs -n 200` — runs for real, each in a fresh
/// sandbox (its own `ELHAZ_HOME` and `HOME`, moto as AWS, a running daemon and a session the
/// command names, `dev` by default, from `dev.toml` in the working directory). Only the
/// `elhaz` stage of a pipeline runs (`elhaz man | man -l -`). Mentions that name a command
/// without its arguments (`elhaz keyring set`) or with placeholders (`elhaz config show
/// NAME`) are references; `every_documented_command_parses` checks them.
#[test]
fn concrete_inline_commands_run() {
    let scratch = tempfile::tempdir().unwrap();
    let moto = Moto::start(scratch.path());
    let (mut ran, mut references, mut failures) = (0, 0, Vec::new());
    let mut seen_long = BTreeSet::new();
    for m in mentions() {
        if !m.inline || m.is_synopsis() {
            continue;
        }
        let args = m.args.split(" | ").next().unwrap_or("").trim().to_string();
        if m.has_placeholder() || parses(&args).is_err() {
            references += 1;
            continue;
        }
        let env = TestEnv::new();
        aws_env(&env, &moto.url());
        // Every service (the aws CLI of `exec … -- aws s3 ls` too) goes to moto.
        env.set_env("AWS_ENDPOINT_URL", moto.url());
        env.set_env("HOME", env.root());
        env.write_scratch(
            "dev.toml",
            "duration = \"1h\"\n\n[role]\narn = \"arn:aws:iam::123456789012:role/dev\"\n",
        );
        let words: Vec<&str> = args.split_whitespace().collect();
        if !args.starts_with("config add") {
            let name = ["ci-readonly", "prod", "dev"]
                .into_iter()
                .find(|n| words.contains(n))
                .unwrap_or("dev");
            env.run_ok(&["config", "add", name, "--from-file", "dev.toml"]);
        }
        if !args.starts_with("daemon start") {
            env.run_ok(&["daemon", "start"]);
        }
        let mut cmd = env.command("sh");
        cmd.arg("-c").arg(format!("exec \"$0\" {args}")).arg(BIN);
        let long = INLINE_LONG_RUNNING.contains(&args.as_str());
        if long {
            seen_long.insert(args.clone());
        }
        let limit = if long {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(60)
        };
        let (status, out, _) = run_limited(&mut cmd, limit);
        let ok = if long {
            status.is_none()
        } else {
            status.is_some_and(|s| s.success())
        };
        ran += 1;
        eprintln!(
            "docs: ran {}: elhaz {args}: {}",
            m.place,
            if ok { "ok" } else { "FAILED" }
        );
        if !ok {
            failures.push(format!(
                "{}: `elhaz {args}`{}: {status:?}\n{}",
                m.place,
                if long { " (should keep running)" } else { "" },
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    eprintln!("docs: {ran} concrete commands named in prose ran, {references} references parsed");
    for a in INLINE_LONG_RUNNING {
        assert!(
            seen_long.contains(*a),
            "INLINE_LONG_RUNNING lists `elhaz {a}`, which no document mentions"
        );
    }
    assert!(ran >= 15, "only {ran} concrete commands found in prose");
    assert!(
        failures.is_empty(),
        "commands named in the docs that fail:\n{}",
        failures.join("\n\n")
    );
}

#[test]
fn invocation_extraction() {
    assert_eq!(invocations("$ elhaz daemon start"), vec!["daemon start"]);
    assert_eq!(
        invocations(r#"eval "$(elhaz export dev --format env)""#),
        vec!["export dev --format env"]
    );
    assert_eq!(
        invocations("ELHAZ_HOME=/x elhaz paths | jq . # comment"),
        vec!["paths"]
    );
    assert!(invocations("echo elhaz is great").is_empty());
    let m = |args: &str| Mention {
        place: String::new(),
        args: args.to_string(),
        inline: true,
    };
    for reference in [
        "config show NAME",
        "keyring set E",
        "config add x --from-file configs/examples/FILE.toml",
    ] {
        assert!(m(reference).has_placeholder(), "{reference}");
    }
    for concrete in [
        "doctor --json",
        "daemon logs -n 200",
        "man | man -l -",
        "--version",
    ] {
        assert!(!m(concrete).has_placeholder(), "{concrete}");
        assert!(!m(concrete).is_synopsis(), "{concrete}");
    }
    for synopsis in [
        "shell [NAME]",
        "config add|remove",
        "exec NAME -- …",
        "<COMMAND> …",
    ] {
        assert!(m(synopsis).is_synopsis(), "{synopsis}");
    }
}

/// The source files under `dir` (relative to the repo), as paths relative to it
/// (`daemon/clock.rs`, `daemon/mod.rs`), with `commands/` as one entry (the binary's subcommands, listed as a
/// directory).
fn source_modules(dir: &str) -> BTreeSet<String> {
    fn walk(dir: &Path, rel: &str, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let name = e.file_name().into_string().unwrap();
            let path = format!("{rel}{name}");
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), &format!("{path}/"), out);
            } else if name.ends_with(".rs") {
                out.insert(path);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
        "",
        &mut out,
    );
    out
}

/// docs/architecture.md's "Modules" tables: for each `### `DIR` …` heading, the names in the
/// first column of its table (in backticks).
fn architecture_modules() -> BTreeMap<String, BTreeSet<String>> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md"))
            .unwrap();
    let section = text
        .split("\n## Modules\n")
        .nth(1)
        .expect("architecture.md has a Modules section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut out = BTreeMap::new();
    for sub in section.split("\n### ").skip(1) {
        let dir = sub
            .split('`')
            .nth(1)
            .expect("each Modules subsection names its directory in backticks");
        let names = out.entry(dir.to_string()).or_insert_with(BTreeSet::new);
        for row in sub.lines().filter(|l| l.starts_with("| `")) {
            let first = row.split('|').nth(1).unwrap_or("");
            for name in first.split('`').skip(1).step_by(2) {
                names.insert(name.to_string());
            }
        }
    }
    out
}

/// The modules a module doc's list names: `` - [`name`] `` bullets.
fn doc_bullets(file: &str) -> BTreeSet<String> {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("//! - [`"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

/// The `pub mod NAME;` declarations of a module file.
fn declared(file: &str) -> BTreeSet<String> {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_string())
        .collect()
}

/// The source directory of each package of the workspace.
const CRATE_SOURCES: &[&str] = &["src/", "crates/elhaz-core/src/", "crates/elhaz-daemon/src/"];

/// Docs that describe the layout are checked against it: docs/architecture.md has one module
/// table per crate, naming every source file and nothing else; each crate's `lib.rs` Layout and
/// `daemon/mod.rs` list exactly the modules they declare.
#[test]
fn module_lists_match_the_source() {
    let documented = architecture_modules();
    assert_eq!(
        documented
            .keys()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        CRATE_SOURCES.iter().copied().collect::<BTreeSet<_>>(),
        "docs/architecture.md's Modules section has one table per crate source directory"
    );
    for dir in CRATE_SOURCES {
        let source = source_modules(dir);
        let listed = &documented[*dir];
        let missing: Vec<_> = source.difference(listed).collect();
        let stale: Vec<_> = listed.difference(&source).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "docs/architecture.md's table for {dir}: missing {missing:?}, names no file {stale:?}"
        );
    }
    for file in [
        "src/lib.rs",
        "crates/elhaz-core/src/lib.rs",
        "crates/elhaz-daemon/src/lib.rs",
        "crates/elhaz-daemon/src/daemon/mod.rs",
    ] {
        let (decl, listed) = (declared(file), doc_bullets(file));
        assert_eq!(
            decl, listed,
            "{file}: the modules it declares and those its docs list differ"
        );
    }
}

/// The session states are defined once, on `SessionState`; every docs line that lists them
/// (protocol.md's `state` field, cli.md's `--state`) lists exactly its wire names, in order.
#[test]
fn documented_session_states_are_the_enums() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let names: Vec<&str> = elhaz::protocol::SessionState::NAMES.to_vec();
    let mut checked = 0;
    for (file, marker) in [
        ("docs/protocol.md", "| `state`"),
        ("docs/cli.md", "| `--state STATE`"),
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with(marker))
            .unwrap_or_else(|| panic!("{file} has no line starting with {marker}"));
        let listed: Vec<&str> = line
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .filter(|w| !["state", "string"].contains(w))
            .collect();
        assert_eq!(listed, names, "{file}: {line}");
        checked += 1;
    }
    assert_eq!(checked, 2);
}

/// Every relative link of README.md and docs/*.md (`[text](../crates/…)`, `[x](cli.md#…)`)
/// points at a file that exists: files move (the workspace split moved most of `src/`), links
/// must follow.
#[test]
fn relative_links_in_the_docs_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (mut checked, mut broken) = (0, Vec::new());
    for rel in DOC_FILES {
        let file = root.join(rel);
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            for part in line.split("](").skip(1) {
                let target = part.split(')').next().unwrap_or("");
                let target = target.split('#').next().unwrap_or("");
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                if !file.parent().unwrap().join(target).exists() {
                    broken.push(format!("{rel}:{}: {target}", i + 1));
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} links found");
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}
