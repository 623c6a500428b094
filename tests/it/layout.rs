//! The workspace's layout, checked rather than kept by convention: `elhaz-core` — what
//! `credential-process` and `exec` run through — must not depend, directly or transitively, on
//! an async runtime, an HTTP stack or any AWS crate (over `cargo metadata`), and the lean
//! `elhaz` binary built on it carries none of their code; modules import each other without
//! cycles.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Package names the hot path's crate may never pull in, by prefix.
const FORBIDDEN: &[&str] = &["tokio", "hyper", "aws-", "h2", "rustls", "tracing-appender"];

/// `cargo metadata` of this workspace (resolved for the build machine's platform).
fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
        ])
        .arg(host_triple())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

fn host_triple() -> String {
    let cargo = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(cargo)
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_string()
}

/// The package names `root` depends on at run time (normal and build dependencies, not dev),
/// transitively, from the resolved graph.
fn runtime_closure(meta: &Value, root: &str) -> BTreeSet<String> {
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: BTreeMap<&str, Vec<&str>> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let deps = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].as_str() != Some("dev"))
                })
                .map(|d| d["pkg"].as_str().unwrap())
                .collect();
            (n["id"].as_str().unwrap(), deps)
        })
        .collect();
    let root_id = names
        .iter()
        .find(|(_, n)| **n == root)
        .map(|(id, _)| *id)
        .unwrap_or_else(|| panic!("{root} is in the workspace"));
    let (mut seen, mut todo) = (BTreeSet::new(), vec![root_id]);
    while let Some(id) = todo.pop() {
        for d in nodes.get(id).into_iter().flatten() {
            if seen.insert(*d) {
                todo.push(d);
            }
        }
    }
    seen.iter().map(|id| names[id].to_string()).collect()
}

#[test]
fn the_hot_paths_crate_depends_on_no_runtime_and_no_sdk() {
    let meta = metadata();
    let core = runtime_closure(&meta, "elhaz-core");
    let bad: Vec<_> = core
        .iter()
        .filter(|n| FORBIDDEN.iter().any(|f| n.starts_with(f)))
        .collect();
    assert!(
        bad.is_empty(),
        "elhaz-core depends on {bad:?}; move that code to elhaz-daemon"
    );
    // The check can fail: the daemon's closure has exactly what core's must not.
    let daemon = runtime_closure(&meta, "elhaz-daemon");
    for must in ["tokio", "hyper", "aws-sdk-sts", "elhaz-core"] {
        assert!(
            daemon.contains(must),
            "elhaz-daemon lacks {must}: {daemon:?}"
        );
    }
    assert!(
        !core.contains("elhaz-daemon"),
        "elhaz-core depends on the daemon crate"
    );
}

/// The `elhaz` binary users run carries none of the heavy code — the property the crate
/// boundary exists for, checked on the built binaries. Each crate leaves its source paths in
/// the code it contributes (panic locations, debug info), so a marker found in `elhaz-full`
/// and absent from `elhaz` means that crate's code is not linked into `elhaz`.
#[test]
fn the_lean_binary_links_no_runtime_no_sdk_and_no_clap() {
    let front = std::path::Path::new(env!("CARGO_BIN_EXE_elhaz"));
    let full = front.with_file_name("elhaz-full");
    let (front, full) = (std::fs::read(front).unwrap(), std::fs::read(full).unwrap());
    let has = |bin: &[u8], m: &str| bin.windows(m.len()).any(|w| w == m.as_bytes());
    for marker in [
        "tokio-1.",
        "hyper-1.",
        "aws-sdk-",
        "aws-smithy",
        "aws-lc",
        "clap_builder",
    ] {
        assert!(
            has(&full, marker),
            "the check sees nothing: {marker} not in elhaz-full"
        );
        assert!(
            !has(&front, marker),
            "{marker} code is linked into the lean elhaz"
        );
    }
}

/// The fuzz target decodes request frames with the function the server uses, so what is fuzzed
/// is what is served.
#[test]
fn the_fuzz_target_and_the_server_share_the_request_decoder() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [
        "crates/elhaz-daemon/src/daemon/server/connection.rs",
        "fuzz/fuzz_targets/frame_decoder.rs",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(
            text.contains("protocol::decode_request("),
            "{file} does not decode requests with protocol::decode_request"
        );
    }
}

/// The modules of one crate's `src/` and the modules each names (`crate::NAME`, and
/// `crate::daemon::NAME` / `super::NAME` inside `daemon/`), outside comments and unit tests.
fn module_graph(src: &std::path::Path) -> BTreeMap<String, BTreeSet<String>> {
    fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            if e.file_type().unwrap().is_dir() {
                files(&e.path(), out);
            } else if e.path().extension().is_some_and(|x| x == "rs") {
                out.push(e.path());
            }
        }
    }
    let mut all = Vec::new();
    files(src, &mut all);
    let name_of = |p: &std::path::Path| {
        let rel = p.strip_prefix(src).unwrap().with_extension("");
        let rel = rel.to_string_lossy().replace('/', "::");
        rel.strip_suffix("::mod").map(str::to_string).unwrap_or(rel)
    };
    let modules: BTreeSet<String> = all.iter().map(|p| name_of(p)).collect();
    let mut graph = BTreeMap::new();
    for p in &all {
        let me = name_of(p);
        if me == "lib" || me == "main" {
            continue;
        }
        let text = std::fs::read_to_string(p).unwrap();
        let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        let mut deps = BTreeSet::new();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (prefix, base) in [("crate::", ""), ("super::", "daemon::")] {
                if prefix == "super::" && !me.starts_with("daemon::") {
                    continue;
                }
                for part in code.split(prefix).skip(1) {
                    let mut words = part.split(|c: char| !(c.is_alphanumeric() || c == '_'));
                    let first = format!("{base}{}", words.next().unwrap_or(""));
                    let second = words.next().unwrap_or("");
                    let nested = format!("{first}::{second}");
                    let dep = if modules.contains(&nested) {
                        nested
                    } else {
                        first
                    };
                    if modules.contains(&dep) && dep != me {
                        deps.insert(dep);
                    }
                }
            }
        }
        graph.insert(me, deps);
    }
    graph
}

/// Module imports within each crate form no cycle (a cycle is two modules that can only be
/// understood, and moved, together).
#[test]
fn no_import_cycle_between_modules() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for src in ["crates/elhaz-core/src", "crates/elhaz-daemon/src"] {
        let graph = module_graph(&root.join(src));
        assert!(graph.len() > 5, "{src}: read {} modules", graph.len());
        // Depth-first search for a back edge, reporting the cycle it closes.
        fn visit<'a>(
            g: &'a BTreeMap<String, BTreeSet<String>>,
            n: &'a str,
            stack: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
        ) -> Option<Vec<String>> {
            if let Some(i) = stack.iter().position(|s| *s == n) {
                return Some(stack[i..].iter().map(|s| s.to_string()).collect());
            }
            if !done.insert(n) {
                return None;
            }
            stack.push(n);
            for d in g.get(n).into_iter().flatten() {
                if let Some(c) = visit(g, d, stack, done) {
                    return Some(c);
                }
            }
            stack.pop();
            None
        }
        let mut done = BTreeSet::new();
        for n in graph.keys() {
            let cycle = visit(&graph, n, &mut Vec::new(), &mut done);
            assert!(cycle.is_none(), "{src}: import cycle {cycle:?}");
        }
    }
}

/// Longest source file, in code lines (not blank, not comments), outside unit tests.
const MAX_FILE_CODE_LINES: usize = 600;
/// Longest function, in code lines, unless the comment above it says why it is one piece.
const MAX_FN_CODE_LINES: usize = 80;

/// Every `.rs` file of the three packages' `src/`, except unit-test files (`tests.rs`).
fn source_files() -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs")
                && p.file_name().is_some_and(|n| n != "tests.rs")
            {
                out.push(p);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for src in ["src", "crates/elhaz-core/src", "crates/elhaz-daemon/src"] {
        walk(&root.join(src), &mut out);
    }
    out.sort();
    out
}

/// A file's lines before its unit tests (the first top-level `#[cfg(test)]`).
fn lines_before_tests(text: &str) -> Vec<&str> {
    text.lines().take_while(|l| *l != "#[cfg(test)]").collect()
}

/// A line that is code: not blank, not only a comment.
fn is_code(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with("//") && !t.starts_with("/*") && !t.starts_with('*')
}

/// The functions of `lines` (rustfmt layout: a body ends at the first `}` at the signature's
/// indentation) as (name, first line index, code lines, whether the comment and attributes
/// right above it say "one piece").
fn functions(lines: &[&str]) -> Vec<(String, usize, usize, bool)> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        let mut words = t.split_whitespace().peekable();
        // Qualifiers before `fn`: visibility, const, async, unsafe, extern "C".
        while let Some(w) = words.peek() {
            if w.starts_with("pub") || ["const", "async", "unsafe", "extern", "\"C\""].contains(w) {
                words.next();
            } else {
                break;
            }
        }
        if words.next() != Some("fn") {
            continue;
        }
        let name: String = words
            .next()
            .unwrap_or("")
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // A declaration without a body (in a trait) ends in `;` before any `{`.
        let sig_end = lines[i..]
            .iter()
            .position(|l| l.trim_end().ends_with('{') || l.trim_end().ends_with(';'));
        let Some(sig_end) = sig_end.map(|k| i + k) else {
            continue;
        };
        if lines[sig_end].trim_end().ends_with(';') || lines[sig_end].trim_end().ends_with("{}") {
            continue;
        }
        let close = format!("{}}}", " ".repeat(indent));
        let Some(end) = lines[sig_end..]
            .iter()
            .position(|l| *l == close)
            .map(|k| sig_end + k)
        else {
            continue;
        };
        let code = lines[i..=end].iter().filter(|l| is_code(l)).count();
        let mut above = String::new();
        for l in lines[..i].iter().rev() {
            let t = l.trim_start();
            if t.starts_with("//") || t.starts_with("#[") {
                above.push_str(t);
                above.push(' ');
            } else {
                break;
            }
        }
        let excused = above.to_lowercase().contains("one piece");
        out.push((name, i + 1, code, excused));
    }
    out
}

/// No source file over [`MAX_FILE_CODE_LINES`] code lines: a file that long holds more than
/// one concern (#12).
#[test]
fn no_source_file_is_too_long() {
    let files = source_files();
    assert!(files.len() > 40, "read {} files", files.len());
    let long: Vec<String> = files
        .iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let n = lines_before_tests(&text)
                .iter()
                .filter(|l| is_code(l))
                .count();
            (n > MAX_FILE_CODE_LINES).then(|| format!("{} ({n} code lines)", p.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_FILE_CODE_LINES} code lines — split by concern:\n{}",
        long.join("\n")
    );
}

/// No function over [`MAX_FN_CODE_LINES`] code lines unless the comment above it says why it
/// is "one piece" (#12).
#[test]
fn no_function_is_too_long_without_a_reason() {
    let mut long = Vec::new();
    let mut seen = 0;
    for p in source_files() {
        let text = std::fs::read_to_string(&p).unwrap();
        for (name, line, code, excused) in functions(&lines_before_tests(&text)) {
            seen += 1;
            if code > MAX_FN_CODE_LINES && !excused {
                long.push(format!("{}:{line} {name} ({code} code lines)", p.display()));
            }
        }
    }
    assert!(
        seen > 500,
        "found only {seen} functions: the scanner is broken"
    );
    assert!(
        long.is_empty(),
        "over {MAX_FN_CODE_LINES} code lines — split it, or say above it why it is one piece:\n{}",
        long.join("\n")
    );
}

/// The scanner itself: a long function is found and measured, a "one piece" comment excuses
/// it, a trait declaration is no function.
#[test]
fn the_function_scanner_measures_what_it_should() {
    let mut src = vec![
        "/// Docs.",
        "// One piece: a table.",
        "pub(crate) fn long(",
        "    a: u8,",
        ") {",
    ];
    src.extend(std::iter::repeat_n("    x();", 90));
    src.extend([
        "",
        "    // comment",
        "}",
        "trait T {",
        "    fn decl(&self);",
        "}",
        "fn short() {",
        "    y();",
        "}",
    ]);
    let f = functions(&src);
    let names: Vec<&str> = f.iter().map(|(n, ..)| n.as_str()).collect();
    assert_eq!(names, ["long", "short"]);
    assert_eq!(
        f[0].2, 94,
        "signature lines + body + closing brace, comments not counted"
    );
    assert!(f[0].3, "the one-piece comment excuses it");
    assert!(!f[1].3);
}
