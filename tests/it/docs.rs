//! Commands that cannot rot: every `elhaz …` command in a shell code block of README.md and
//! docs/*.md must parse with the real binary (`ELHAZ_PARSE_ONLY=1` stops right after argument
//! parsing) — a fast, precise message for a renamed command or flag; `doc_examples.rs` runs
//! the same blocks for real. Inline mentions in prose (`elhaz keyring set`) are
//! checked with `--help` (the command path and the flags shown must exist). Synopsis lines with
//! `[OPTIONAL]`/`A|B`/`UPPERCASE` notation are not commands: they are printed, not run.

use std::path::Path;
use std::process::Command;

use crate::util::BIN;

/// Shell-ish fenced blocks we treat as runnable.
fn is_shell_fence(info: &str) -> bool {
    matches!(info.trim(), "sh" | "bash" | "console" | "shell" | "zsh")
}

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

#[test]
fn every_documented_command_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    files.sort();
    let (mut checked, mut synopses, mut failures) = (0, Vec::new(), Vec::new());
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let mut in_shell = false;
        let mut in_fence = false;
        let mut pending = String::new();
        // (line, arguments, inline mention?)
        let mut candidates: Vec<(usize, String, bool)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            if let Some(info) = raw.trim_start().strip_prefix("```") {
                if in_fence {
                    in_fence = false;
                    in_shell = false;
                } else {
                    in_fence = true;
                    in_shell = is_shell_fence(info);
                }
                continue;
            }
            if !in_fence {
                // Inline code spans in prose and tables: `elhaz …`.
                let spans: Vec<&str> = raw.split('`').skip(1).step_by(2).collect();
                for span in spans {
                    if span.starts_with("elhaz ") {
                        candidates.push((
                            i + 1,
                            span.trim_start_matches("elhaz ").to_string(),
                            true,
                        ));
                    }
                }
                continue;
            }
            if !in_shell {
                continue;
            }
            if let Some(cont) = raw.strip_suffix('\\') {
                pending.push_str(cont);
                pending.push(' ');
                continue;
            }
            let line = format!("{pending}{raw}");
            pending.clear();
            for args in invocations(&line) {
                candidates.push((i + 1, args, false));
            }
        }
        for (lineno, args, inline) in candidates {
            {
                let place = format!("{}:{}", file.strip_prefix(root).unwrap().display(), lineno);
                let is_synopsis = args.contains('[')
                    || args.contains('|')
                    || args.contains('<')
                    || args.contains('…')
                    || args.contains("...")
                    || args.split_whitespace().any(|w| {
                        w.len() > 1
                            && w.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                            && !matches!(w, "NAME" | "ENTRY" | "PROFILE")
                    });
                if is_synopsis {
                    synopses.push(format!("{place}: elhaz {args}"));
                    continue;
                }
                checked += 1;
                // Inline mentions in prose often name a command without its required
                // arguments (`elhaz keyring set`): check the command path and flags exist.
                let args = if inline && !args.contains(" -- ") && !args.starts_with("help") {
                    format!("{args} --help")
                } else {
                    args
                };
                let out = Command::new("sh")
                    .arg("-c")
                    .arg(format!("exec \"$0\" {args}"))
                    .arg(BIN)
                    .env("ELHAZ_PARSE_ONLY", "1")
                    .output()
                    .unwrap();
                if !out.status.success() {
                    failures.push(format!(
                        "{place}: `elhaz {args}`: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
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
}
