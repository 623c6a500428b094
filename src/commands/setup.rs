//! `elhaz setup aws-profile`: a `credential_process` profile in the AWS config file.
//!
//! The file is edited line by line: only the target profile's stanza changes (its
//! `credential_process` line is replaced in place, or added under the header; a new stanza is
//! appended), every other byte — comments, blank lines, other profiles — stays as it was. A
//! run that would change nothing writes nothing; otherwise the previous file is kept as
//! `<file>.elhaz.bak` and the new one is written atomically with the old file's mode.

use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};

use super::aws_config::{
    credential_process_line, profiles_running, remove_stanzas, replace, set_credential_process,
};

/// `config remove`'s offer: the AWS profiles that run session `name` are removed when
/// `decision` is `Some(true)` or the user says yes on a terminal; kept (with a note) otherwise.
pub fn offer_profile_removal(name: &str, decision: Option<bool>) -> Result<()> {
    use std::io::IsTerminal;
    let Ok(file) = super::aws_config::file() else {
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
    let backup = replace(&file, Some(&old), &new, ".elhaz.bak")?;
    println!(
        "removed AWS profile {list} from {} (previous file saved as {})",
        file.display(),
        backup.map(|b| b.display().to_string()).unwrap_or_default()
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
    let file = super::aws_config::file()?;
    // Edit the file a symlink points to (dotfiles): the atomic rename would replace the link.
    let file = std::fs::canonicalize(&file).unwrap_or(file);
    let old = match std::fs::read_to_string(&file) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let (new, conflicts) = set_credential_process(
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
    if let Some(backup) = replace(&file, old.as_deref(), &new, ".elhaz.bak")? {
        eprintln!("elhaz: previous file saved as {}", backup.display());
    }
    println!(
        "profile {profile:?} in {} now gets credentials from elhaz session {name:?} (try: aws sts get-caller-identity --profile {profile})",
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}
