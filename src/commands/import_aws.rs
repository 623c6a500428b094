//! `elhaz config import-aws`: the `[profile …]` and `[sso-session …]` entries of the AWS
//! shared config file become session configs and `[sso_sessions]` of elhaz.toml.
//!
//! Converted: `role_arn` (+ `source_profile`, `role_session_name`, `external_id`,
//! `mfa_serial`, `duration_seconds`), `sso_session` / legacy `sso_start_url` + `sso_region`
//! with `sso_account_id` + `sso_role_name`, and `region`. A `source_profile` that is itself
//! converted becomes a chained `session = …`; otherwise it stays a `profile = …` source (static
//! keys in the credentials file). Anything else (`credential_source`, `credential_process`,
//! `web_identity_token_file`, profiles with only keys) is reported, not guessed at. The AWS file
//! is never changed unless `--rewrite`, which first copies it to `FILE.elhaz-backup` and then
//! replaces each converted profile's body with a `credential_process` line (and its region).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use elhaz::config::{self, MfaConfig, RoleConfig, SessionConfig, Settings, SsoConfig, Store};
use elhaz::paths::Paths;

use super::aws_config::{self, Section};

fn aws_config_file(path: Option<&Path>) -> Result<PathBuf> {
    match path {
        Some(p) => Ok(p.to_path_buf()),
        None => aws_config::file(),
    }
}

/// Converts one profile, or says why not.
fn convert(s: &Section, converted: &BTreeMap<String, ()>) -> Result<SessionConfig, String> {
    let k = |key: &str| s.keys.get(key).cloned();
    for unsupported in [
        "credential_source",
        "credential_process",
        "web_identity_token_file",
    ] {
        if s.keys.contains_key(unsupported) {
            return Err(format!("`{unsupported}` has no elhaz equivalent"));
        }
    }
    let region = match k("region") {
        Some(r) => Some(r.parse().map_err(|e| format!("region: {e}"))?),
        None => None,
    };
    let mut cfg = SessionConfig {
        region,
        ..Default::default()
    };
    cfg.sso = sso_of(s)?;
    if let Some(arn) = k("role_arn") {
        convert_role(s, &arn, converted, &mut cfg)?;
    } else if cfg.sso.is_none() {
        return Err("no role_arn or sso_* settings (static keys stay a `profile` source)".into());
    }
    if let Some(d) = k("duration_seconds") {
        cfg.duration = Some(d.parse().map_err(|e| format!("duration_seconds: {e}"))?);
    }
    cfg.validate(config::env_custom_endpoint())
        .map_err(|errs| {
            errs.iter()
                .map(|fe| format!("{}: {}", fe.field, fe.message))
                .collect::<Vec<_>>()
                .join("; ")
        })?;
    Ok(cfg)
}

/// `[sso]` from `sso_account_id` + `sso_role_name` with `sso_session` or the legacy
/// `sso_start_url` + `sso_region`.
fn sso_of(s: &Section) -> Result<Option<SsoConfig>, String> {
    let k = |key: &str| s.keys.get(key).cloned();
    let (Some(account_id), Some(role_name)) = (k("sso_account_id"), k("sso_role_name")) else {
        return Ok(None);
    };
    Ok(Some(match k("sso_session") {
        Some(sess) => SsoConfig {
            session: Some(sess),
            account_id,
            role_name,
            ..Default::default()
        },
        None => SsoConfig {
            start_url: k("sso_start_url"),
            region: match k("sso_region") {
                Some(r) => Some(r.parse().map_err(|e| format!("sso_region: {e}"))?),
                None => None,
            },
            account_id,
            role_name,
            ..Default::default()
        },
    }))
}

/// `role_arn` → `[role]`, its source (a converted `source_profile` chains as `session`, any
/// other stays a `profile`) and `mfa_serial` → `[mfa]`.
fn convert_role(
    s: &Section,
    arn: &str,
    converted: &BTreeMap<String, ()>,
    cfg: &mut SessionConfig,
) -> Result<(), String> {
    let k = |key: &str| s.keys.get(key).cloned();
    cfg.role = Some(RoleConfig {
        arn: arn.parse().map_err(|e| format!("role_arn: {e}"))?,
        session_name: k("role_session_name"),
        external_id: k("external_id"),
        policy: None,
        policy_arns: vec![],
        transitive_tag_keys: vec![],
        source_identity: None,
        tags: BTreeMap::new(),
    });
    match k("source_profile") {
        Some(src) if cfg.sso.is_some() => {
            return Err(format!("both sso_* and source_profile {src:?}"));
        }
        Some(src) if converted.contains_key(&src) && src != s.name => {
            cfg.session = Some(src.parse().map_err(|e| format!("source_profile: {e}"))?);
        }
        Some(src) => cfg.profile = Some(src),
        None if cfg.sso.is_none() => {
            return Err("role_arn without source_profile or sso_*".into());
        }
        None => {}
    }
    if let Some(serial) = k("mfa_serial") {
        cfg.mfa = Some(MfaConfig {
            serial: serial.parse().map_err(|e| format!("mfa_serial: {e}"))?,
            command: None,
            command_timeout: None,
            session_duration: None,
        });
    }
    Ok(())
}

/// Runs `config import-aws`.
pub fn run(
    paths: &Paths,
    path: Option<&Path>,
    force: bool,
    dry_run: bool,
    rewrite: bool,
) -> Result<ExitCode> {
    let file = aws_config_file(path)?;
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let sections = aws_config::sections(&text);
    import_sso_sessions(paths, &sections, dry_run)?;
    let (written, skipped) = import_profiles(paths, &sections, force, dry_run);
    println!(
        "{} {} session config(s); {skipped} profile(s) not converted",
        if dry_run { "would write" } else { "wrote" },
        written.len()
    );
    if rewrite && !written.is_empty() {
        let out = aws_config::rewire_profiles(&text, &written)?;
        let backup = aws_config::replace(&file, Some(&text), &out, ".elhaz-backup")?;
        println!(
            "rewrote {} profile(s) in {} to use elhaz (backup: {})",
            written.len(),
            file.display(),
            backup.map(|b| b.display().to_string()).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `[sso-session NAME]` → `[sso_sessions.NAME]` of elhaz.toml (appended when missing).
fn import_sso_sessions(paths: &Paths, sections: &[Section], dry_run: bool) -> Result<()> {
    let settings = Settings::load(&paths.settings_file)?;
    let mut toml_add = String::new();
    for s in sections.iter().filter(|s| s.kind == "sso-session") {
        let Some(block) = sso_session_block(s, &settings) else {
            continue;
        };
        println!(
            "{} [sso_sessions.{}] in elhaz.toml",
            if dry_run { "would add" } else { "added" },
            s.name
        );
        toml_add.push_str(&block);
    }
    if !toml_add.is_empty() && !dry_run {
        append_settings(paths, &toml_add)?;
    }
    Ok(())
}

/// The `[sso_sessions.NAME]` block for one `[sso-session NAME]`, or `None` (said why) when it
/// is incomplete, invalid or already in elhaz.toml.
fn sso_session_block(s: &Section, settings: &Settings) -> Option<String> {
    let (Some(url), Some(region)) = (s.keys.get("sso_start_url"), s.keys.get("sso_region")) else {
        println!(
            "skipped sso-session {}: needs sso_start_url and sso_region",
            s.name
        );
        return None;
    };
    if let Err(m) =
        config::check_sso_session_name(&s.name).and_then(|()| config::check_start_url(url))
    {
        println!("skipped sso-session {}: {m}", s.name);
        return None;
    }
    if settings.sso_sessions.contains_key(&s.name) {
        println!("kept [sso_sessions.{}]: already in elhaz.toml", s.name);
        return None;
    }
    let scopes: Vec<String> = s
        .keys
        .get("sso_registration_scopes")
        .map(|v| {
            v.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut block = format!(
        "\n[sso_sessions.{}]\nstart_url = {}\nregion = {}\n",
        s.name,
        toml::Value::String(url.clone()),
        toml::Value::String(region.clone())
    );
    if !scopes.is_empty() {
        block.push_str(&format!(
            "scopes = {}\n",
            toml::Value::Array(scopes.into_iter().map(toml::Value::String).collect())
        ));
    }
    Some(block)
}

/// Appends `add` to elhaz.toml, validating the result before it replaces the file.
fn append_settings(paths: &Paths, add: &str) -> Result<()> {
    let mut current = config::read_config_file(&paths.settings_file)?.unwrap_or_default();
    current.push_str(add);
    // Validate before writing: a bad block must not break the daemon's start.
    let tmp =
        tempfile::NamedTempFile::new_in(paths.settings_file.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(tmp.path(), &current)?;
    Settings::load(tmp.path())?;
    tmp.persist(&paths.settings_file).map_err(|e| {
        anyhow!(
            "cannot write {}: {}",
            paths.settings_file.display(),
            e.error
        )
    })?;
    Ok(())
}

/// `[profile NAME]` → session config NAME. Returns the names written (or that would be) and
/// how many profiles were not converted.
fn import_profiles(
    paths: &Paths,
    sections: &[Section],
    force: bool,
    dry_run: bool,
) -> (Vec<String>, usize) {
    let profiles: Vec<&Section> = sections.iter().filter(|s| s.kind == "profile").collect();
    // Names that will be elhaz sessions: a source_profile among them becomes chaining.
    let mut converted = BTreeMap::new();
    for s in &profiles {
        if config::validate_name(&s.name).is_ok() && convert(s, &BTreeMap::new()).is_ok() {
            converted.insert(s.name.clone(), ());
        }
    }
    let store = Store::new(&paths.configs_dir);
    let (mut written, mut skipped) = (Vec::new(), 0);
    for s in &profiles {
        if let Err(e) = config::validate_name(&s.name) {
            println!("skipped profile {}: {e}", s.name);
            skipped += 1;
            continue;
        }
        let cfg = match convert(s, &converted) {
            Ok(c) => c,
            Err(why) => {
                println!("skipped profile {}: {why}", s.name);
                skipped += 1;
                continue;
            }
        };
        if dry_run {
            println!("would write {}:\n{}", s.name, cfg.to_toml());
            written.push(s.name.clone());
            continue;
        }
        match store.write(&s.name, &cfg.to_toml(), force) {
            Ok(_) => {
                println!("wrote {}", s.name);
                written.push(s.name.clone());
            }
            Err(e) => {
                println!("skipped profile {}: {e}", s.name);
                skipped += 1;
            }
        }
    }
    (written, skipped)
}
