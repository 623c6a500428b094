//! Keeping elhaz from feeding on itself.
//!
//! Two ways a daemon can end up asking itself for credentials — and then wait on itself until
//! the STS timeout, with a `credential-process` child per attempt:
//!
//! 1. **An inherited environment.** Inside `elhaz shell dev` (or `exec --refreshing`) the
//!    environment has `AWS_PROFILE=elhaz-dev` and `AWS_CONFIG_FILE` pointing at the generated
//!    `run/aws-config-dev`, whose profile runs `elhaz credential-process dev`; `exec` exports
//!    the session's own keys. A daemon autostarted from there would build its default
//!    credential chain from that. [`scrub_environment`] runs first thing in
//!    [`lifecycle::serve`](super::lifecycle::serve) — the one path every daemon start (by hand,
//!    `--foreground`, autostart) goes through — and removes what elhaz itself put there:
//!    `ELHAZ_SESSION`; a generated `AWS_CONFIG_FILE` (a file under `run/`);
//!    `AWS_PROFILE`/`AWS_DEFAULT_PROFILE` naming an `elhaz-…` profile; and, when
//!    `ELHAZ_SESSION` shows the environment is a session's, `AWS_CONTAINER_*` variables and
//!    the session's exported keys (`AWS_ACCESS_KEY_ID`, …, recognised by the
//!    `AWS_CREDENTIAL_EXPIRATION` elhaz exports with them). A user's own variables are kept:
//!    the daemon's default chain is theirs.
//! 2. **A profile that calls elhaz.** A session whose source is an AWS profile (or the default
//!    chain's profile) whose `credential_process` runs `elhaz credential-process` — directly or
//!    through `source_profile` — would call this daemon while it resolves that very session.
//!    [`check_source`] reads the shared config and credentials files when a session is loaded
//!    (not per request) and refuses such a source with [`ErrorCode::SelfReference`], naming the
//!    profile, file and line. The test is syntactic: the program's file name is `elhaz` (or it
//!    is this executable) and an argument is `credential-process` (or `export` with
//!    `--format credential-process`). A wrapper script that calls elhaz is not seen through;
//!    it is still bounded by the STS timeout.

use std::path::{Path, PathBuf};

use crate::config::{SessionConfig, Source};
use crate::protocol::{ErrorCode, WireError};

/// Longest `source_profile` chain followed.
const MAX_PROFILE_DEPTH: usize = 8;

/// Variables elhaz exports into a session's environment (`exec`, `export`) that a daemon must
/// never use as its own.
const SESSION_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CREDENTIAL_EXPIRATION",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
];

/// The variables of `vars` that [`scrub_environment`] removes, given the daemon's `run/`
/// directory. Pure, for tests.
pub fn to_scrub<'a>(vars: impl Iterator<Item = (&'a str, &'a str)>, run_dir: &Path) -> Vec<String> {
    let vars: Vec<(&str, &str)> = vars.collect();
    let has = |name: &str| vars.iter().any(|(k, v)| *k == name && !v.is_empty());
    let in_session = has("ELHAZ_SESSION");
    // `exec`/`export` always export the expiration with a session's keys; a user's own
    // static keys next to a stray ELHAZ_SESSION have none and stay.
    let exported_keys = in_session && has("AWS_CREDENTIAL_EXPIRATION");
    let run_dir = canonical(run_dir);
    vars.iter()
        .filter(|(k, v)| match *k {
            "ELHAZ_SESSION" => true,
            "AWS_CONFIG_FILE" | "AWS_SHARED_CREDENTIALS_FILE" => {
                let f = canonical(Path::new(v));
                f.parent().is_some_and(|p| p == run_dir)
                    || (in_session
                        && f.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("aws-config-")))
            }
            "AWS_PROFILE" | "AWS_DEFAULT_PROFILE" => v.starts_with("elhaz-"),
            k if k.starts_with("AWS_CONTAINER_") => in_session && SESSION_VARS.contains(&k),
            k => exported_keys && SESSION_VARS.contains(&k),
        })
        .map(|(k, _)| k.to_string())
        .collect()
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Removes from this process's environment what elhaz itself put into it (see the module
/// docs); returns the names removed, for the log.
///
/// # Safety
///
/// Changes the process environment: call it only while this process has a single thread
/// (before any runtime, log writer or other thread exists).
pub unsafe fn scrub_environment(run_dir: &Path) -> Vec<String> {
    let vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let names = to_scrub(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())), run_dir);
    for k in &names {
        // SAFETY: the caller guarantees no other thread exists that could read the
        // environment concurrently.
        unsafe { std::env::remove_var(k) };
    }
    names
}

/// One `[section]` of an AWS shared config or credentials file.
#[derive(Debug, Clone)]
struct Section {
    profile: String,
    file: PathBuf,
    /// `(key, value, 1-based line)`.
    keys: Vec<(String, String, usize)>,
}

impl Section {
    fn get(&self, key: &str) -> Option<(&str, usize)> {
        self.keys
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, l)| (v.as_str(), *l))
    }
}

/// Parses an AWS INI file: `[profile NAME]`/`[default]` in the config file, `[NAME]` in the
/// credentials file. Continuation lines (indented) and comments are skipped.
fn sections(text: &str, file: &Path, credentials_file: bool) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    let mut current: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(inner) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            let inner = inner.trim();
            let name = if credentials_file {
                Some(inner.to_string())
            } else {
                match inner.strip_prefix("profile") {
                    Some(rest) if rest.starts_with(char::is_whitespace) => {
                        Some(rest.trim().to_string())
                    }
                    _ => (inner == "default").then(|| inner.to_string()),
                }
            };
            current = name.map(|profile| {
                out.push(Section {
                    profile,
                    file: file.to_path_buf(),
                    keys: Vec::new(),
                });
                out.len() - 1
            });
            continue;
        }
        if t.starts_with('#') || t.starts_with(';') || line.starts_with([' ', '\t']) {
            continue;
        }
        if let (Some(idx), Some((k, v))) = (current, t.split_once('=')) {
            out[idx]
                .keys
                .push((k.trim().to_ascii_lowercase(), v.trim().to_string(), i + 1));
        }
    }
    out
}

/// The AWS shared config and credentials files the daemon's SDK reads.
fn aws_files() -> Vec<(PathBuf, bool)> {
    let home = || directories::BaseDirs::new().map(|b| b.home_dir().join(".aws"));
    let pick = |var: &str, default: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| home().map(|h| h.join(default)))
    };
    let mut v = Vec::new();
    if let Some(f) = pick("AWS_CONFIG_FILE", "config") {
        v.push((f, false));
    }
    if let Some(f) = pick("AWS_SHARED_CREDENTIALS_FILE", "credentials") {
        v.push((f, true));
    }
    v
}

fn load_sections() -> Vec<Section> {
    let mut all = Vec::new();
    for (file, creds) in aws_files() {
        // An unreadable or missing file holds no profile that could call us; the SDK reports
        // its own errors when it reads it.
        if let Ok(text) = std::fs::read_to_string(&file) {
            all.extend(sections(&text, &file, creds));
        }
    }
    all
}

/// Whether a `credential_process` command line runs this elhaz's credential-process.
pub fn calls_elhaz(command: &str) -> bool {
    let words: Vec<String> = command
        .split_whitespace()
        .map(|w| w.trim_matches(['"', '\'']).to_string())
        .collect();
    let Some(prog) = words.first() else {
        return false;
    };
    let prog = Path::new(prog);
    let is_elhaz = prog.file_name().is_some_and(|n| n == "elhaz")
        || std::env::current_exe()
            .ok()
            .is_some_and(|exe| canonical(prog) == canonical(&exe));
    if !is_elhaz {
        return false;
    }
    let rest = &words[1..];
    rest.iter().any(|w| w == "credential-process")
        || (rest.iter().any(|w| w == "export")
            && rest.windows(2).any(|w| {
                matches!(w[0].as_str(), "-f" | "--format") && w[1] == "credential-process"
            })
            || rest.iter().any(|w| w == "--format=credential-process"))
}

/// Refuses a session whose source profile would run `elhaz credential-process`.
pub fn check_source(name: &str, config: &SessionConfig) -> Result<(), WireError> {
    let start = match config.source() {
        Source::Profile(p) => p,
        Source::Default => {
            // The default chain reads environment keys before any profile.
            if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() {
                return Ok(());
            }
            std::env::var("AWS_PROFILE")
                .or_else(|_| std::env::var("AWS_DEFAULT_PROFILE"))
                .ok()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "default".into())
        }
        _ => return Ok(()),
    };
    check_profile(name, &start, &load_sections())
}

fn check_profile(name: &str, start: &str, all: &[Section]) -> Result<(), WireError> {
    let mut chain = vec![start.to_string()];
    let mut current = start.to_string();
    for _ in 0..MAX_PROFILE_DEPTH {
        // The config file wins over the credentials file for the same key, as in the SDK.
        let found: Vec<&Section> = all.iter().filter(|s| s.profile == current).collect();
        let get = |k: &str| found.iter().find_map(|s| s.get(k).map(|(v, l)| (*s, v, l)));
        if let Some((sec, cmd, line)) = get("credential_process")
            && calls_elhaz(cmd)
        {
            let via = if chain.len() > 1 {
                format!(" (through source_profile {})", chain.join(" → "))
            } else {
                String::new()
            };
            return Err(WireError::new(
                ErrorCode::SelfReference,
                format!(
                    "session {name:?}: its source AWS profile {current:?}{via} runs elhaz \
                     itself ({} line {line}: credential_process = {cmd}), so resolving it \
                     would ask this daemon for credentials while it resolves them; give the \
                     session a source with credentials of its own (`profile`, `keyring`, or \
                     `session = \"OTHER\"` to chain elhaz sessions)",
                    sec.file.display()
                ),
            ));
        }
        match get("source_profile") {
            Some((_, next, _)) if next != current && !chain.iter().any(|c| c == next) => {
                chain.push(next.to_string());
                current = next.to_string();
            }
            _ => return Ok(()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_elhaz_credential_process_lines() {
        assert!(calls_elhaz("elhaz credential-process dev"));
        assert!(calls_elhaz(
            "/usr/local/bin/elhaz credential-process --name dev"
        ));
        assert!(calls_elhaz("'/opt/x/elhaz' credential-process dev"));
        assert!(calls_elhaz("elhaz export dev --format credential-process"));
        assert!(!calls_elhaz("elhaz export dev"));
        assert!(!calls_elhaz("aws-vault exec dev --json"));
        assert!(!calls_elhaz("/usr/bin/elhazard credential-process"));
        assert!(!calls_elhaz(""));
    }

    #[test]
    fn follows_source_profile_and_names_the_line() {
        let cfg = "[default]\nregion = eu-west-1\n\n[profile base]\nsource_profile = loop\n\
                   \n[profile loop]\ncredential_process = elhaz credential-process dev\n\
                   \n[profile ok]\nsource_profile = keys\n";
        let creds = "[keys]\naws_access_key_id = AKIA\n";
        let mut all = sections(cfg, Path::new("/c"), false);
        all.extend(sections(creds, Path::new("/k"), true));
        let e = check_profile("dev", "base", &all).unwrap_err();
        assert_eq!(e.code, ErrorCode::SelfReference);
        assert!(e.message.contains("\"loop\""), "{}", e.message);
        assert!(e.message.contains("base → loop"), "{}", e.message);
        assert!(e.message.contains("/c line 8"), "{}", e.message);
        check_profile("dev", "ok", &all).unwrap();
        check_profile("dev", "default", &all).unwrap();
        check_profile("dev", "missing", &all).unwrap();
    }

    #[test]
    fn scrubs_only_what_elhaz_put_there() {
        let run = Path::new("/nonexistent/run");
        let outside = [
            ("AWS_PROFILE", "work"),
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_CONFIG_FILE", "/home/u/.aws/config"),
        ];
        assert!(to_scrub(outside.into_iter(), run).is_empty());
        let shell = [
            ("ELHAZ_SESSION", "dev"),
            ("AWS_PROFILE", "elhaz-dev"),
            ("AWS_CONFIG_FILE", "/nonexistent/run/aws-config-dev"),
            ("AWS_ACCESS_KEY_ID", "ASIA"),
            ("AWS_CREDENTIAL_EXPIRATION", "2026-01-01T00:00:00Z"),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1"),
            ("AWS_REGION", "eu-west-1"),
            ("HOME", "/home/u"),
        ];
        let mut got = to_scrub(shell.into_iter(), run);
        got.sort();
        assert_eq!(
            got,
            [
                "AWS_ACCESS_KEY_ID",
                "AWS_CONFIG_FILE",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_CREDENTIAL_EXPIRATION",
                "AWS_PROFILE",
                "ELHAZ_SESSION"
            ]
        );
        // Static keys of the user's next to a stray ELHAZ_SESSION: kept.
        let stray = [("ELHAZ_SESSION", "b"), ("AWS_ACCESS_KEY_ID", "AKIA")];
        assert_eq!(to_scrub(stray.into_iter(), run), ["ELHAZ_SESSION"]);
    }
}
