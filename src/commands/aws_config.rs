//! The AWS config file (`$AWS_CONFIG_FILE`, else `~/.aws/config`): where it is, how its
//! sections and keys read, and every edit elhaz makes to it. `setup aws-profile`, `config
//! remove`, `config import-aws`, `exec --refreshing` and `doctor` all go through here, so the
//! file is located, parsed and written one way.
//!
//! Trade-off: a line-oriented reader instead of an INI library. Every edit must leave every
//! other byte — comments, blank lines, order, other tools' sections — exactly as it was, which
//! INI libraries that parse into maps and serialize back do not do. The reader follows botocore
//! where it matters: a key is what stands before the first `=`, trimmed and case-insensitive;
//! comment lines start with `#` or `;`; in the config file a bare `[name]` is not a profile
//! (SDKs ignore it) — only `[profile NAME]` and `[default]` are.
//!
//! Writes keep the previous file as a backup, replace the file atomically (temp file + rename,
//! `fsafe::atomic_write`) and keep its mode.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use elhaz::cli::{Cli, Command, Format};

/// Keys that make SDKs take credentials from somewhere other than `credential_process` (or
/// that change what it is used for), when they stand in the same profile.
pub const CONFLICTING_KEYS: &[&str] = &[
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "role_arn",
    "source_profile",
    "credential_source",
    "sso_session",
    "sso_start_url",
    "web_identity_token_file",
];

/// Keys that hold secrets (or pair with one).
pub const SECRET_KEYS: &[&str] = &[
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "aws_security_token",
];

/// The AWS config file: `$AWS_CONFIG_FILE`, else `~/.aws/config`.
pub fn file() -> Result<PathBuf> {
    if let Some(f) = std::env::var_os("AWS_CONFIG_FILE").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(f));
    }
    let home =
        directories::BaseDirs::new().ok_or_else(|| anyhow!("cannot find your home directory"))?;
    Ok(home.home_dir().join(".aws").join("config"))
}

/// The profile a header line opens: `Some(Some(NAME))` for `[profile NAME]` and `[default]`,
/// `Some(None)` for any other section (`[sso-session …]`, a bare `[name]`), `None` for a line
/// that is not a header.
pub fn section_of(line: &str) -> Option<Option<String>> {
    let t = line.trim();
    let inner = t.strip_prefix('[')?.split(']').next()?.trim();
    Some(match inner.strip_prefix("profile") {
        Some(rest) if rest.starts_with(char::is_whitespace) => Some(rest.trim().to_string()),
        _ => (inner == "default").then(|| inner.to_string()),
    })
}

/// The profile a header line opens, if it opens one.
fn profile_of(line: &str) -> Option<String> {
    section_of(line).flatten()
}

/// The key of a `key = value` line (lower-cased), not of a comment.
pub fn key_of(line: &str) -> Option<String> {
    let t = line.trim_start();
    if t.starts_with('#') || t.starts_with(';') {
        return None;
    }
    let (k, _) = t.split_once('=')?;
    Some(k.trim().to_ascii_lowercase())
}

/// The value of `key` in `profile`'s stanza.
pub fn profile_value(text: &str, profile: &str, key: &str) -> Option<String> {
    let mut inside = false;
    for l in text.lines() {
        if l.trim_start().starts_with('[') {
            inside = profile_of(l).as_deref() == Some(profile);
        } else if inside && key_of(l).as_deref() == Some(key) {
            return l.split_once('=').map(|(_, v)| v.trim().to_string());
        }
    }
    None
}

/// `credential_process = <elhaz> credential-process -- NAME`: the lean `elhaz` next to this
/// binary (`front_binary`), by absolute path, quoted if it holds whitespace (SDKs split the
/// line like a shell; it may not use `~` or variables). The `--` keeps the name an operand
/// even if a name ever started with `-`.
pub fn credential_process_line(name: &str) -> Result<String> {
    let exe = elhaz::front::front_binary().context("cannot find the elhaz executable")?;
    let exe = exe.to_string_lossy();
    let exe = if exe.contains(char::is_whitespace) {
        format!("\"{exe}\"")
    } else {
        exe.into_owned()
    };
    Ok(format!(
        "credential_process = {exe} credential-process -- {name}"
    ))
}

/// Sets `profile`'s `credential_process` to `line` (replaced in place, added under the header,
/// or a new stanza appended with `region` when given). Returns the text (unchanged when already
/// up to date) and the [`CONFLICTING_KEYS`] found in the stanza.
pub fn set_credential_process(
    text: &str,
    profile: &str,
    line: &str,
    region: Option<&str>,
) -> (String, Vec<String>) {
    let header = if profile == "default" {
        "[default]".to_string()
    } else {
        format!("[profile {profile}]")
    };
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let start = lines
        .iter()
        .position(|l| profile_of(l).as_deref() == Some(profile) && l.trim_start().starts_with('['));
    let Some(start) = start else {
        let mut out = text.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        if !out.is_empty() && !out.ends_with("\n\n") {
            out.push('\n');
        }
        out.push_str(&header);
        out.push('\n');
        out.push_str(line);
        out.push('\n');
        if let Some(r) = region {
            out.push_str(&format!("region = {r}\n"));
        }
        return (out, Vec::new());
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.trim_start().starts_with('['))
        .map_or(lines.len(), |p| start + 1 + p);
    let mut conflicts = Vec::new();
    let mut out: Vec<String> = lines[..=start].iter().map(|s| s.to_string()).collect();
    let mut replaced = false;
    for l in &lines[start + 1..end] {
        match key_of(l) {
            Some(k) if k == "credential_process" => {
                if !replaced {
                    out.push(format!("{line}\n"));
                    replaced = true;
                }
            }
            Some(k) if CONFLICTING_KEYS.contains(&k.as_str()) => {
                conflicts.push(k);
                out.push(l.to_string());
            }
            _ => out.push(l.to_string()),
        }
    }
    if !replaced {
        out.insert(start + 1, format!("{line}\n"));
        if !out[start].ends_with('\n') {
            out[start].push('\n');
        }
    }
    out.extend(lines[end..].iter().map(|s| s.to_string()));
    (out.concat(), conflicts)
}

/// The text without the stanzas of `profiles` (header to the next header).
pub fn remove_stanzas(text: &str, profiles: &[String]) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for l in text.split_inclusive('\n') {
        if l.trim_start().starts_with('[') {
            skipping = profile_of(l).is_some_and(|p| profiles.contains(&p));
        }
        if !skipping {
            out.push_str(l);
        }
    }
    out
}

/// Each of `names`' profile bodies replaced by its elhaz `credential_process` line (its
/// `region` kept); everything else byte for byte.
pub fn rewire_profiles(text: &str, names: &[String]) -> Result<String> {
    let mut out = String::new();
    let mut in_converted = false;
    for l in text.split_inclusive('\n') {
        if l.trim_start().starts_with('[') {
            let profile = profile_of(l);
            in_converted = profile.as_ref().is_some_and(|p| names.contains(p));
            out.push_str(l);
            if !l.ends_with('\n') {
                out.push('\n');
            }
            if let (true, Some(p)) = (in_converted, profile) {
                out.push_str(&credential_process_line(&p)?);
                out.push('\n');
            }
            continue;
        }
        if !in_converted || key_of(l).as_deref() == Some("region") {
            out.push_str(l);
        }
    }
    Ok(out)
}

/// One `[section]`: the word before its name (`profile`, `sso-session`, …; `profile` for
/// `[default]` and a bare `[name]`), its name and its keys (names as written).
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// `profile`, `sso-session`, `services`, …
    pub kind: String,
    /// The section's name.
    pub name: String,
    /// Its `key = value` lines.
    pub keys: BTreeMap<String, String>,
}

/// Every section of the text with its keys.
pub fn sections(text: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(h) = t.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            let h = h.trim();
            let (kind, name) = match h.split_once(char::is_whitespace) {
                Some((k, n)) => (k.to_string(), n.trim().to_string()),
                None => ("profile".to_string(), h.to_string()),
            };
            out.push(Section {
                kind,
                name,
                keys: BTreeMap::new(),
            });
        } else if let (Some(s), Some((k, v))) = (out.last_mut(), t.split_once('=')) {
            s.keys.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    out
}

/// A profile's `credential_process` line and the other keys of its stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileProcess {
    /// The profile.
    pub profile: String,
    /// The line number (1-based).
    pub line: usize,
    /// The command.
    pub command: String,
    /// The stanza's other keys.
    pub other_keys: Vec<String>,
}

/// Every `credential_process` of the text, per profile (indented continuation lines are not
/// keys).
pub fn credential_processes(text: &str) -> Vec<ProfileProcess> {
    let mut out: Vec<ProfileProcess> = Vec::new();
    let mut current: Option<String> = None;
    let mut keys: Vec<(String, String)> = Vec::new(); // (profile, key)
    for (i, l) in text.lines().enumerate() {
        if let Some(section) = section_of(l) {
            current = section;
            continue;
        }
        if l.starts_with([' ', '\t']) {
            continue;
        }
        let (Some(profile), Some(k)) = (&current, key_of(l)) else {
            continue;
        };
        if k == "credential_process" {
            let command = l.split_once('=').map_or("", |(_, v)| v.trim());
            out.push(ProfileProcess {
                profile: profile.clone(),
                line: i + 1,
                command: command.to_string(),
                other_keys: Vec::new(),
            });
        } else {
            keys.push((profile.clone(), k));
        }
    }
    for p in &mut out {
        p.other_keys = keys
            .iter()
            .filter(|(prof, _)| *prof == p.profile)
            .map(|(_, k)| k.clone())
            .collect();
    }
    out
}

/// The session an elhaz command line (the words after the program) asks credential_process
/// JSON for, parsed with the real [`Cli`]: `Ok(Some(name))`, `Ok(None)` when it names none,
/// `Err` when it does not print credential_process JSON at all.
pub fn requested_session(args: &[String]) -> Result<Option<String>, String> {
    let cli = Cli::try_parse_from(std::iter::once("elhaz").chain(args.iter().map(String::as_str)))
        .map_err(|e| {
            let first = e.to_string();
            let first = first
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ");
            format!("it does not parse as an elhaz command: {first}")
        })?;
    match cli.command {
        Command::CredentialProcess(name) => Ok(name.given().map(str::to_string)),
        Command::Export {
            name,
            format: Format::CredentialProcess,
        } => Ok(name.given().map(str::to_string)),
        Command::Export { .. } => {
            Err("it runs `elhaz export` without `--format credential-process`".into())
        }
        _ => {
            let sub = args
                .iter()
                .find(|a| !a.starts_with('-'))
                .map_or("", String::as_str);
            Err(format!(
                "`elhaz {sub}` does not print credential_process JSON"
            ))
        }
    }
}

/// Profiles whose `credential_process` runs this elhaz for session `name` (what `setup
/// aws-profile NAME` writes, under any profile name).
pub fn profiles_running(text: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for p in credential_processes(text) {
        if !elhaz::selfref::calls_elhaz(&p.command) || out.contains(&p.profile) {
            continue;
        }
        let Ok(argv) = elhaz::import::shlex_split(&p.command) else {
            continue;
        };
        if requested_session(argv.get(1..).unwrap_or_default())
            .ok()
            .flatten()
            .as_deref()
            == Some(name)
        {
            out.push(p.profile);
        }
    }
    out
}

/// The text without its secret keys, read the way botocore's `configparser` reads it: the key
/// is everything before the first `=` *or* `:`, trimmed, case-insensitive; an indented (or
/// blank) line after it continues its value and goes with it. Comment lines go too (a
/// commented-out key is still a secret).
pub fn strip_secret_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut dropping = false;
    for line in text.lines() {
        let trimmed = line.trim();
        let indented = line.starts_with([' ', '\t']);
        if dropping && (trimmed.is_empty() || indented) {
            continue;
        }
        dropping = false;
        if trimmed.starts_with(['#', ';']) {
            continue;
        }
        let key = trimmed
            .split(['=', ':'])
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if trimmed.contains(['=', ':']) && SECRET_KEYS.contains(&key.as_str()) {
            dropping = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Replaces `file` with `new`: the previous text (if any) is kept as `<file><suffix>` first,
/// then the file is written atomically with its old mode. Returns the backup's path, if one was
/// written.
pub fn replace(file: &Path, old: Option<&str>, new: &str, suffix: &str) -> Result<Option<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let backup = match old {
        Some(old) => {
            let backup = PathBuf::from(format!("{}{suffix}", file.display()));
            elhaz::fsafe::atomic_write(&backup, old.as_bytes())?;
            Some(backup)
        }
        None => None,
    };
    let mode = std::fs::metadata(file).ok().map(|m| m.permissions().mode());
    elhaz::fsafe::atomic_write(file, new.as_bytes())?;
    if let Some(mode) = mode {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot restore the mode of {}", file.display()))?;
    }
    Ok(backup)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_credential_process_per_profile() {
        let text = "[default]\nregion = x\n[profile dev]\n# credential_process = old\ncredential_process = /bin/elhaz credential-process dev\nrole_arn = r\n[sso-session s]\ncredential_process = nope\n[profile b]\n  credential_process = nested\ncredential_process=elhaz export -n b -f credential-process\n";
        let found = credential_processes(text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].profile, "dev");
        assert_eq!(found[0].line, 5);
        assert_eq!(found[0].command, "/bin/elhaz credential-process dev");
        assert_eq!(found[0].other_keys, vec!["role_arn".to_string()]);
        assert_eq!(found[1].profile, "b");
    }

    #[test]
    fn requested_sessions_come_from_the_real_cli() {
        for (args, want) in [
            (&["credential-process", "dev"][..], Some("dev")),
            (&["credential-process", "--", "dev"], Some("dev")),
            (&["credential-process", "--name", "dev"], Some("dev")),
            (&["credential-process", "--name=dev"], Some("dev")),
            (&["credential-process"], None),
            (
                &["export", "-n", "prod", "-f", "credential-process"],
                Some("prod"),
            ),
            (
                &["export", "-f", "credential-process", "prod"],
                Some("prod"),
            ),
        ] {
            assert_eq!(
                requested_session(&v(args)),
                Ok(want.map(str::to_string)),
                "{args:?}"
            );
        }
        for args in [&["export", "prod"][..], &["whoami", "prod"], &[], &["nope"]] {
            assert!(requested_session(&v(args)).is_err(), "{args:?}");
        }
    }

    #[test]
    fn rewired_profiles_keep_only_their_region() {
        let text = "[profile dev]\nrole_arn = a\nregion = r\n[profile keep]\nrole_arn = b\n";
        let out = rewire_profiles(text, &["dev".to_string()]).unwrap();
        let line = credential_process_line("dev").unwrap();
        assert_eq!(
            out,
            format!("[profile dev]\n{line}\nregion = r\n[profile keep]\nrole_arn = b\n")
        );
    }

    #[test]
    fn secret_keys_are_stripped_in_every_form_botocore_reads() {
        let text = "[default]\nregion = eu-west-1\naws_access_key_id=AKIA1\n\
                    AWS_Secret_Access_Key : S1\n\taws_session_token:T1\n\
                    aws_security_token  =\n    T2\n\n    T3\noutput = json\n\
                    # aws_secret_access_key = S2\n[profile x]\ns3 =\n  max_concurrent_requests = 2\n";
        let out = strip_secret_keys(text);
        for secret in ["AKIA1", "S1", "T1", "T2", "T3", "S2"] {
            assert!(!out.contains(secret), "{secret} in {out:?}");
        }
        assert_eq!(
            out,
            "[default]\nregion = eu-west-1\noutput = json\n[profile x]\ns3 =\n  \
             max_concurrent_requests = 2\n"
        );
    }
    #[test]
    fn finds_and_removes_the_profiles_running_a_session() {
        let text = "[default]\nregion = x\n\n[profile dev]\ncredential_process = /bin/elhaz credential-process dev\nregion = y\n\n[profile devops]\ncredential_process = /bin/elhaz credential-process devops\n";
        let found = profiles_running(text, "dev");
        assert_eq!(found, ["dev"]);
        assert_eq!(
            remove_stanzas(text, &found),
            "[default]\nregion = x\n\n[profile devops]\ncredential_process = /bin/elhaz credential-process devops\n"
        );
    }

    const LINE: &str = "credential_process = /bin/elhaz credential-process dev";

    #[test]
    fn appends_a_stanza_and_keeps_everything_else() {
        let text = "# mine\n[default]\nregion = eu-west-1 ; keep\n\n[profile other]\noutput=json";
        let (out, c) = set_credential_process(text, "dev", LINE, None);
        assert!(out.starts_with(
            "# mine\n[default]\nregion = eu-west-1 ; keep\n\n[profile other]\noutput=json\n"
        ));
        assert!(
            out.ends_with(&format!("\n\n[profile dev]\n{LINE}\n")),
            "{out}"
        );
        assert!(c.is_empty());
        // Idempotent.
        assert_eq!(set_credential_process(&out, "dev", LINE, None).0, out);
    }

    #[test]
    fn replaces_in_place_inside_an_existing_stanza() {
        let text = "[profile dev]\nregion = x\ncredential_process = old\n# c\n[profile z]\ncredential_process = keep\n";
        let (out, _) = set_credential_process(text, "dev", LINE, None);
        assert_eq!(
            out,
            format!(
                "[profile dev]\nregion = x\n{LINE}\n# c\n[profile z]\ncredential_process = keep\n"
            )
        );
        let (out2, c) = set_credential_process("[profile dev]\nrole_arn = r\n", "dev", LINE, None);
        assert_eq!(out2, format!("[profile dev]\n{LINE}\nrole_arn = r\n"));
        assert_eq!(c, vec!["role_arn".to_string()]);
    }

    #[test]
    fn default_profile_uses_the_bare_header() {
        let (out, _) = set_credential_process("", "default", LINE, None);
        assert_eq!(out, format!("[default]\n{LINE}\n"));
    }
}
