//! `elhaz setup aws-profile`: a `credential_process` profile in the AWS config file.
//!
//! The file is edited line by line: only the target profile's stanza changes (its
//! `credential_process` line is replaced in place, or added under the header; a new stanza is
//! appended), every other byte — comments, blank lines, other profiles — stays as it was. A
//! run that would change nothing writes nothing; otherwise the previous file is kept as
//! `<file>.elhaz.bak` and the new one is written atomically with the old file's mode.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};

/// The AWS config file: `$AWS_CONFIG_FILE`, else `~/.aws/config`.
fn aws_config_file() -> Result<PathBuf> {
    if let Some(f) = std::env::var_os("AWS_CONFIG_FILE").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(f));
    }
    let home =
        directories::BaseDirs::new().ok_or_else(|| anyhow!("cannot find your home directory"))?;
    Ok(home.home_dir().join(".aws").join("config"))
}

fn header_name(line: &str) -> Option<String> {
    let t = line.trim();
    let inner = t.strip_prefix('[')?.split(']').next()?.trim();
    match inner.strip_prefix("profile") {
        Some(rest) if rest.starts_with(char::is_whitespace) => Some(rest.trim().to_string()),
        // In the config file a bare `[name]` is not a profile (SDKs ignore it); only
        // `[default]` is.
        _ => (inner == "default").then(|| inner.to_string()),
    }
}

fn key_of(line: &str) -> Option<String> {
    let t = line.trim_start();
    if t.starts_with('#') || t.starts_with(';') {
        return None;
    }
    let (k, _) = t.split_once('=')?;
    Some(k.trim().to_ascii_lowercase())
}

/// Returns the edited text (unchanged if already up to date) and any conflicting keys found in
/// the stanza.
pub fn edit_config(
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
    let start = lines.iter().position(|l| {
        header_name(l).as_deref() == Some(profile) && l.trim_start().starts_with('[')
    });
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
        match key_of(l).as_deref() {
            Some("credential_process") => {
                if !replaced {
                    out.push(format!("{line}\n"));
                    replaced = true;
                }
            }
            Some(
                k @ ("aws_access_key_id"
                | "aws_secret_access_key"
                | "aws_session_token"
                | "role_arn"
                | "source_profile"
                | "credential_source"
                | "sso_session"
                | "sso_start_url"
                | "web_identity_token_file"),
            ) => {
                conflicts.push(k.to_string());
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

/// `credential_process = <this binary> credential-process -- NAME`, the binary's absolute path
/// quoted if it holds whitespace (SDKs split the line like a shell; it may not use `~` or
/// variables). The `--` keeps the name an operand even if a name ever started with `-`.
pub fn credential_process_line(name: &str) -> Result<String> {
    let exe = std::env::current_exe().context("cannot find the elhaz executable")?;
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

/// The value of `key` in `profile`'s stanza of an AWS config text.
pub fn profile_value(text: &str, profile: &str, key: &str) -> Option<String> {
    let mut inside = false;
    for l in text.lines() {
        if l.trim_start().starts_with('[') {
            inside = header_name(l).as_deref() == Some(profile);
        } else if inside && key_of(l).as_deref() == Some(key) {
            return l.split_once('=').map(|(_, v)| v.trim().to_string());
        }
    }
    None
}

/// Profiles of an AWS config text whose `credential_process` runs `elhaz credential-process
/// NAME` (what `setup aws-profile NAME` writes, under any profile name).
pub fn profiles_running(text: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for l in text.lines() {
        if l.trim_start().starts_with('[') {
            current = header_name(l);
        } else if let Some(p) = &current
            && key_of(l).as_deref() == Some("credential_process")
            && let Some((_, cmd)) = l.split_once('=')
            && elhaz::daemon::selfref::calls_elhaz(cmd.trim())
            && names_session(cmd, name)
            && !out.contains(p)
        {
            out.push(p.clone());
        }
    }
    out
}

/// Whether an elhaz command line asks for session `name` (`NAME`, `-n NAME`, `--name NAME`).
fn names_session(cmd: &str, name: &str) -> bool {
    let words: Vec<&str> = cmd
        .split_whitespace()
        .map(|w| w.trim_matches(['"', '\'']))
        .collect();
    words
        .iter()
        .skip(1)
        .any(|w| *w == name || *w == format!("--name={name}"))
}

/// The text without the stanzas of `profiles` (header to the next header).
pub fn remove_stanzas(text: &str, profiles: &[String]) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for l in text.split_inclusive('\n') {
        if l.trim_start().starts_with('[') {
            skipping = header_name(l).is_some_and(|p| profiles.contains(&p));
        }
        if !skipping {
            out.push_str(l);
        }
    }
    out
}

/// `config remove`'s offer: the AWS profiles that run session `name` are removed when
/// `decision` is `Some(true)` or the user says yes on a terminal; kept (with a note) otherwise.
pub fn offer_profile_removal(name: &str, decision: Option<bool>) -> Result<()> {
    use std::io::IsTerminal;
    let Ok(file) = aws_config_file() else {
        return Ok(());
    };
    let file = std::fs::canonicalize(&file).unwrap_or(file);
    let Ok(old) = std::fs::read_to_string(&file) else {
        return Ok(());
    };
    let profiles = profiles_running(&old, name);
    if profiles.is_empty() {
        return Ok(());
    }
    let list = profiles
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let remove = match decision {
        Some(d) => d,
        None if std::io::stdin().is_terminal() => super::confirm(&format!(
            "Also remove AWS profile {list} from {} (it runs `elhaz credential-process {name}`)?",
            file.display()
        ))?,
        None => false,
    };
    if !remove {
        println!(
            "kept AWS profile {list} in {}: it still runs `elhaz credential-process {name}`, \
             which now fails; remove that stanza by hand (`config remove --remove-profile` does it)",
            file.display()
        );
        return Ok(());
    }
    let new = remove_stanzas(&old, &profiles);
    let backup = PathBuf::from(format!("{}.elhaz.bak", file.display()));
    elhaz::config::atomic_write(&backup, old.as_bytes())?;
    let mode = std::fs::metadata(&file).ok().map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode()
    });
    elhaz::config::atomic_write(&file, new.as_bytes())?;
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))?;
    }
    println!(
        "removed AWS profile {list} from {} (previous file saved as {})",
        file.display(),
        backup.display()
    );
    Ok(())
}

pub fn aws_profile(
    paths: &elhaz::paths::Paths,
    name: &str,
    profile: Option<&str>,
    print: bool,
) -> Result<ExitCode> {
    elhaz::config::validate_name(name)?;
    // The session's region, if its config sets one, goes into the stanza too.
    let region = elhaz::config::Store::new(paths.configs_dir.clone())
        .load(name, elhaz::config::env_custom_endpoint())
        .ok()
        .and_then(|c| c.region.map(|r| r.0));
    let profile = profile.unwrap_or(name);
    if profile.is_empty() || profile.contains([']', '[', '\n']) {
        return Err(anyhow!(
            "--profile {profile:?} is not a usable profile name"
        ));
    }
    let line = credential_process_line(name)?;
    if print {
        let header = if profile == "default" {
            "[default]".to_string()
        } else {
            format!("[profile {profile}]")
        };
        println!("{header}\n{line}");
        if let Some(r) = &region {
            println!("region = {r}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let file = aws_config_file()?;
    // Edit the file a symlink points to (dotfiles): the atomic rename would replace the link.
    let file = std::fs::canonicalize(&file).unwrap_or(file);
    let old = match std::fs::read_to_string(&file) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let (new, conflicts) = edit_config(
        old.as_deref().unwrap_or(""),
        profile,
        &line,
        region.as_deref(),
    );
    for k in &conflicts {
        eprintln!(
            "elhaz: warning: profile {profile:?} in {} also sets `{k}`, which may take precedence over credential_process; remove it",
            file.display()
        );
    }
    if old.as_deref() == Some(new.as_str()) {
        println!(
            "profile {profile:?} in {} is already up to date",
            file.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if let Some(old) = &old {
        let backup = PathBuf::from(format!("{}.elhaz.bak", file.display()));
        elhaz::config::atomic_write(&backup, old.as_bytes())?;
        eprintln!("elhaz: previous file saved as {}", backup.display());
    }
    let mode = std::fs::metadata(&file).ok().map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode()
    });
    elhaz::config::atomic_write(&file, new.as_bytes())?;
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))?;
    }
    println!(
        "profile {profile:?} in {} now gets credentials from elhaz session {name:?} (try: aws sts get-caller-identity --profile {profile})",
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::edit_config;

    #[test]
    fn finds_and_removes_the_profiles_running_a_session() {
        let text = "[default]\nregion = x\n\n[profile dev]\ncredential_process = /bin/elhaz credential-process dev\nregion = y\n\n[profile devops]\ncredential_process = /bin/elhaz credential-process devops\n";
        let found = super::profiles_running(text, "dev");
        assert_eq!(found, ["dev"]);
        assert_eq!(
            super::remove_stanzas(text, &found),
            "[default]\nregion = x\n\n[profile devops]\ncredential_process = /bin/elhaz credential-process devops\n"
        );
    }

    const LINE: &str = "credential_process = /bin/elhaz credential-process dev";

    #[test]
    fn appends_a_stanza_and_keeps_everything_else() {
        let text = "# mine\n[default]\nregion = eu-west-1 ; keep\n\n[profile other]\noutput=json";
        let (out, c) = edit_config(text, "dev", LINE, None);
        assert!(out.starts_with(
            "# mine\n[default]\nregion = eu-west-1 ; keep\n\n[profile other]\noutput=json\n"
        ));
        assert!(
            out.ends_with(&format!("\n\n[profile dev]\n{LINE}\n")),
            "{out}"
        );
        assert!(c.is_empty());
        // Idempotent.
        assert_eq!(edit_config(&out, "dev", LINE, None).0, out);
    }

    #[test]
    fn replaces_in_place_inside_an_existing_stanza() {
        let text = "[profile dev]\nregion = x\ncredential_process = old\n# c\n[profile z]\ncredential_process = keep\n";
        let (out, _) = edit_config(text, "dev", LINE, None);
        assert_eq!(
            out,
            format!(
                "[profile dev]\nregion = x\n{LINE}\n# c\n[profile z]\ncredential_process = keep\n"
            )
        );
        let (out2, c) = edit_config("[profile dev]\nrole_arn = r\n", "dev", LINE, None);
        assert_eq!(out2, format!("[profile dev]\n{LINE}\nrole_arn = r\n"));
        assert_eq!(c, vec!["role_arn".to_string()]);
    }

    #[test]
    fn default_profile_uses_the_bare_header() {
        let (out, _) = edit_config("", "default", LINE, None);
        assert_eq!(out, format!("[default]\n{LINE}\n"));
    }
}
