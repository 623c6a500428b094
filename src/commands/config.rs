//! `elhaz config …`: non-interactive by default; prompts only on a TTY.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use elhaz::config::{
    self, MfaConfig, RoleConfig, SessionConfig, Settings, Store, StsConfig, WebIdentityConfig,
};
use elhaz::paths::Paths;

use elhaz::cli::ConfigAddArgs;

const HEADER: &str = "# elhaz session config — every field: `elhaz help config`\n";

/// The TOML written for a config built from flags, with `duration` stored as the user gave it
/// (`--duration 1h` is written `duration = "1h"`, not `3600`).
fn flags_toml(cfg: &SessionConfig, duration: Option<&str>) -> String {
    let Some(given) = duration.map(str::trim) else {
        return format!("{HEADER}{}", cfg.to_toml());
    };
    let value = match given.parse::<u64>() {
        Ok(n) => n.to_string(),
        Err(_) => toml::Value::String(given.to_string()).to_string(),
    };
    let body = SessionConfig {
        duration: None,
        ..cfg.clone()
    }
    .to_toml();
    // Top-level keys come before the first table; `duration` joins them.
    let at = if body.starts_with('[') {
        0
    } else {
        body.find("\n\n[")
            .or_else(|| body.find("\n["))
            .map_or(body.len(), |i| i + 1)
    };
    format!("{HEADER}{}duration = {value}\n{}", &body[..at], &body[at..])
}

fn store(paths: &Paths) -> Store {
    Store::new(paths.configs_dir.clone())
}

/// Parses a flag value with `FromStr`, naming the flag on error.
fn flag<T: std::str::FromStr<Err = String>>(name: &str, v: &Option<String>) -> Result<Option<T>> {
    v.as_deref()
        // The value is the user's own argument, so it is quoted back (config files' are not).
        .map(|s| s.parse::<T>().map_err(|e| anyhow!("--{name} {s:?}: {e}")))
        .transpose()
}

/// The session config `config add`'s flags describe, each field checked as it is parsed.
fn config_from_flags(a: &ConfigAddArgs) -> Result<SessionConfig> {
    let role = role_flags(a)?;
    let mfa = mfa_flags(a)?;
    let sts = (a.sts_endpoint_url.is_some() || a.sts_region.is_some())
        .then(|| -> Result<StsConfig> {
            Ok(StsConfig {
                endpoint_url: a.sts_endpoint_url.clone(),
                region: flag("sts-region", &a.sts_region)?,
            })
        })
        .transpose()?;
    Ok(SessionConfig {
        description: a.description.clone(),
        region: flag("region", &a.region)?,
        profile: a.source_profile.clone(),
        session: flag("source-session", &a.source_session)?,
        keyring: a.keyring.clone(),
        duration: flag("duration", &a.duration)?,
        role,
        web_identity: a
            .web_identity_token_file
            .as_ref()
            .map(|p| -> Result<WebIdentityConfig> {
                Ok(WebIdentityConfig {
                    token_file: std::path::absolute(p)
                        .with_context(|| format!("--web-identity-token-file {}", p.display()))?,
                })
            })
            .transpose()?,
        mfa,
        sts,
        sso: sso_flags(a)?,
    })
}

/// `[role]` from `--role-arn` and its AssumeRole flags, which are refused without it.
fn role_flags(a: &ConfigAddArgs) -> Result<Option<RoleConfig>> {
    Ok(match &a.role_arn {
        Some(_) => {
            let mut tags = BTreeMap::new();
            for t in &a.tag {
                let (k, v) = t
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--tag {t:?}: expected KEY=VALUE"))?;
                tags.insert(k.to_string(), v.to_string());
            }
            // Field-level checks live in the deserializers; run them by round-tripping.
            Some(RoleConfig {
                arn: flag("role-arn", &a.role_arn)?.ok_or_else(|| anyhow!("--role-arn"))?,
                session_name: a.session_name.clone(),
                external_id: a.external_id.clone(),
                policy: a.policy.clone(),
                policy_arns: a
                    .policy_arn
                    .iter()
                    .map(|p| p.parse().map_err(|e| anyhow!("--policy-arn: {e}")))
                    .collect::<Result<_>>()?,
                transitive_tag_keys: a.transitive_tag_key.clone(),
                source_identity: a.source_identity.clone(),
                tags,
            })
        }
        None => {
            for (set, name) in [
                (a.session_name.is_some(), "--session-name"),
                (a.external_id.is_some(), "--external-id"),
                (a.policy.is_some(), "--policy"),
                (!a.policy_arn.is_empty(), "--policy-arn"),
                (!a.tag.is_empty(), "--tag"),
                (!a.transitive_tag_key.is_empty(), "--transitive-tag-key"),
                (a.source_identity.is_some(), "--source-identity"),
            ] {
                if set {
                    bail!("{name} needs --role-arn (it is an AssumeRole parameter)");
                }
            }
            None
        }
    })
}

/// `[mfa]` from `--mfa-serial` and `--mfa-command`.
fn mfa_flags(a: &ConfigAddArgs) -> Result<Option<MfaConfig>> {
    Ok(match &a.mfa_serial {
        Some(_) => Some(MfaConfig {
            serial: flag("mfa-serial", &a.mfa_serial)?.ok_or_else(|| anyhow!("--mfa-serial"))?,
            command: a
                .mfa_command
                .as_ref()
                .map(|c| c.split_whitespace().map(String::from).collect()),
            command_timeout: None,
            session_duration: None,
        }),
        None => None,
    })
}

/// `[sso]` from `--sso-*` flags (validated with the rest of the config).
fn sso_flags(a: &ConfigAddArgs) -> Result<Option<elhaz::config::SsoConfig>> {
    if a.sso_start_url.is_none() && a.sso_session.is_none() {
        return Ok(None);
    }
    Ok(Some(elhaz::config::SsoConfig {
        start_url: a.sso_start_url.clone(),
        region: flag("sso-region", &a.sso_region)?,
        session: a.sso_session.clone(),
        account_id: a.sso_account_id.clone().unwrap_or_default(),
        role_name: a.sso_role_name.clone().unwrap_or_default(),
    }))
}

fn no_flags(a: &ConfigAddArgs) -> bool {
    a.role_arn.is_none()
        && a.duration.is_none()
        && a.region.is_none()
        && a.source_profile.is_none()
        && a.source_session.is_none()
        && a.keyring.is_none()
        && a.web_identity_token_file.is_none()
        && a.mfa_serial.is_none()
        && a.description.is_none()
        && a.sts_endpoint_url.is_none()
        && a.sts_region.is_none()
        && a.sso_start_url.is_none()
        && a.sso_session.is_none()
}

fn prompt(question: &str) -> Result<Option<String>> {
    eprint!("{question}: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let line = line.trim();
    Ok((!line.is_empty()).then(|| line.to_string()))
}

pub fn add(paths: &Paths, mut a: ConfigAddArgs) -> Result<ExitCode> {
    config::validate_name(&a.name)?;
    let store = store(paths);
    let file = store.file(&a.name);
    let custom = config::env_custom_endpoint();
    let text = match &a.from_file {
        Some(src) => {
            let (origin, text) = if src.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .take(config::MAX_CONFIG_BYTES + 1)
                    .read_to_string(&mut s)
                    .context("cannot read the config from stdin")?;
                if s.len() as u64 > config::MAX_CONFIG_BYTES {
                    bail!(
                        "the config on stdin exceeds {} bytes",
                        config::MAX_CONFIG_BYTES
                    );
                }
                (PathBuf::from("<stdin>"), s)
            } else {
                let s = elhaz::fsafe::read_input_file(src)?
                    .ok_or_else(|| anyhow!("--from-file {}: no such file", src.display()))?;
                (src.clone(), s)
            };
            // Validate with the source's name in messages; store the text verbatim (comments
            // and layout are the user's).
            SessionConfig::parse(&text, &origin, custom)?;
            text
        }
        None => {
            if no_flags(&a) && std::io::stdin().is_terminal() {
                eprintln!("Adding session config {:?} ({})", a.name, file.display());
                a.role_arn = prompt("Role ARN to assume (empty: GetSessionToken only)")?;
                a.region = prompt("Region (optional)")?;
                a.source_profile = prompt("Source AWS profile (empty: default credential chain)")?;
            }
            let cfg = config_from_flags(&a)?;
            let text = flags_toml(&cfg, a.duration.as_deref());
            // Run every check (field-level ones live in deserializers) on what we will write.
            SessionConfig::parse(&text, Path::new("<flags>"), custom)?;
            text
        }
    };
    let cfg = SessionConfig::parse(&text, &file, custom)?;
    if cfg.session.as_ref().is_some_and(|s| s.0 == a.name) {
        bail!("session {:?} cannot chain from itself", a.name);
    }
    let previous = store.load(&a.name, custom).ok();
    let written = store.write(&a.name, &text, a.force)?;
    println!("added session config {} ({})", a.name, written.display());
    tell_daemon(paths, &a.name, previous.as_ref(), Some(&cfg));
    let window = Settings::load(&paths.settings_file)
        .map(|s| s.refresh_window())
        .unwrap_or(config::DEFAULT_REFRESH_WINDOW);
    if let Some(w) = cfg.freshness_warning(window) {
        eprintln!("elhaz: warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Tells a running daemon (if any) that `name`'s config changed from `old` to `new` (`None`:
/// removed) and says what happened to its cached session. The daemon would notice the change
/// at the next request anyway (it stats the file); evicting now drops the old credentials at
/// once and lets us report it.
fn tell_daemon(
    paths: &Paths,
    name: &str,
    old: Option<&SessionConfig>,
    new: Option<&SessionConfig>,
) {
    use elhaz::protocol::{Request, Response};
    let Ok(Some(mut c)) = elhaz::client::connect_existing(paths) else {
        return;
    };
    // A valid name has no glob characters, so as a pattern it matches itself only.
    let cached = match c.call(Request::List {
        state: None,
        pattern: Some(name.to_string()),
    }) {
        Ok(Response::Sessions { sessions, .. }) => sessions.iter().any(|s| s.name == name),
        _ => return,
    };
    if !cached {
        if new.is_some() {
            println!(
                "the running daemon has not cached {name}; it uses the new config when first asked"
            );
        }
        return;
    }
    let strip = |c: &SessionConfig| SessionConfig {
        description: None,
        ..c.clone()
    };
    if let (Some(o), Some(n)) = (old, new)
        && strip(o) == strip(n)
    {
        println!(
            "the running daemon keeps {name}'s cached credentials (only the description changed)"
        );
        return;
    }
    match c.call(Request::Remove { name: name.into() }) {
        Ok(_) if new.is_some() => println!(
            "the running daemon dropped {name}'s cached credentials; it uses the new config from the next request"
        ),
        Ok(_) => println!("the running daemon evicted {name} and dropped its cached credentials"),
        Err(e) => eprintln!(
            "elhaz: warning: could not evict {name} from the running daemon ({e}); it reloads the config at the next request"
        ),
    }
}

pub fn remove(paths: &Paths, name: &str, yes: bool, profile: Option<bool>) -> Result<ExitCode> {
    config::validate_name(name)?;
    let store = store(paths);
    let file = store.file(name);
    if std::fs::symlink_metadata(&file).is_err() {
        return Err(elhaz::Error::ConfigNotFound {
            name: name.into(),
            file,
        }
        .into());
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!("refusing to remove {name:?} without confirmation: pass --yes");
        }
        if !super::confirm(&format!(
            "Remove session config {name:?} ({})?",
            file.display()
        ))? {
            println!("kept {name}");
            return Ok(ExitCode::SUCCESS);
        }
    }
    store.remove(name)?;
    println!("removed session config {name}");
    // Evict it from a running daemon so its credentials are dropped too.
    tell_daemon(paths, name, None, None);
    super::setup::offer_profile_removal(name, profile)?;
    Ok(ExitCode::SUCCESS)
}

fn summary(cfg: &SessionConfig) -> String {
    match (&cfg.role, &cfg.web_identity) {
        (Some(r), Some(_)) => format!("web identity → {}", r.arn),
        (Some(r), None) => format!("assume {}", r.arn),
        (None, _) if cfg.sso.is_some() => cfg.sso.as_ref().map_or_else(String::new, |s| {
            format!("sso {} / {}", s.account_id, s.role_name)
        }),
        (None, _) if cfg.mfa.is_some() => "session token (MFA)".into(),
        (None, _) => "session token".into(),
    }
}

pub fn list(paths: &Paths, json: bool) -> Result<ExitCode> {
    let listed = store(paths).list(config::env_custom_endpoint())?;
    if json {
        let items: Vec<serde_json::Value> = listed
            .iter()
            .map(|l| match &l.config {
                Ok(c) => serde_json::json!({
                    "name": l.name,
                    "source": c.source().kind(),
                    "role_arn": c.role.as_ref().map(|r| r.arn.0.clone()),
                    "region": c.region.as_ref().map(|r| r.0.clone()),
                    "description": c.description,
                    "valid": true,
                }),
                Err(e) => serde_json::json!({
                    "name": l.name,
                    "valid": false,
                    "error": e.to_string(),
                }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(ExitCode::SUCCESS);
    }
    if listed.is_empty() {
        println!(
            "no session configs in {} (add one with `elhaz config add NAME --role-arn ARN`)",
            paths.configs_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let width = listed
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!("{:<width$}  {:<8}  WHAT", "NAME", "SOURCE");
    for l in &listed {
        match &l.config {
            Ok(c) => {
                let desc = c
                    .description
                    .as_deref()
                    .map(|d| format!("  ({d})"))
                    .unwrap_or_default();
                println!(
                    "{:<width$}  {:<8}  {}{desc}",
                    l.name,
                    c.source().kind(),
                    summary(c)
                );
            }
            Err(e) => println!("{:<width$}  {:<8}  INVALID: {e}", l.name, "-"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn show(paths: &Paths, name: &str, json: bool) -> Result<ExitCode> {
    let store = store(paths);
    if json {
        let cfg = store.load(name, config::env_custom_endpoint())?;
        let mut v = serde_json::to_value(&cfg)?;
        v["name"] = name.into();
        v["source_kind"] = cfg.source().kind().into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        // Configs hold no secrets by construction (static keys are not a field), so the file is
        // shown as written, comments included; it is validated first.
        let text = store.read(name)?;
        store.load(name, config::env_custom_endpoint())?;
        println!("# {}", store.file(name).display());
        print!("{text}");
        if !text.ends_with('\n') {
            println!();
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn edit(paths: &Paths, name: &str) -> Result<ExitCode> {
    let store = store(paths);
    let original = store.read(name)?;
    let file = store.file(name);
    let editor = std::env::var("VISUAL")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .or_else(|| {
            std::env::var("EDITOR")
                .ok()
                .filter(|e| !e.trim().is_empty())
        })
        .unwrap_or_else(|| "vi".into());
    // The draft lives next to the config (same private directory), never in a shared /tmp.
    let draft = tempfile::Builder::new()
        .prefix(&format!(".{name}.edit."))
        .suffix(".toml")
        .tempfile_in(store.dir())
        .context("cannot create a draft file")?;
    std::fs::write(draft.path(), &original)?;
    let custom = config::env_custom_endpoint();
    loop {
        // `sh -c '$EDITOR "$1"'` lets EDITOR carry arguments (e.g. `code -w`).
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{editor} \"$1\""))
            .arg("sh")
            .arg(draft.path())
            .status()
            .with_context(|| format!("cannot run the editor {editor:?}"))?;
        if !status.success() {
            bail!(
                "the editor {editor:?} exited with {status}; {} is unchanged",
                file.display()
            );
        }
        let text = std::fs::read_to_string(draft.path()).context("cannot read the draft")?;
        if text == original {
            println!("no changes to {}", file.display());
            return Ok(ExitCode::SUCCESS);
        }
        match SessionConfig::parse(&text, &file, custom) {
            Ok(new) => {
                let previous = SessionConfig::parse(&original, &file, custom).ok();
                store.write(name, &text, true)?;
                println!("updated session config {name}");
                tell_daemon(paths, name, previous.as_ref(), Some(&new));
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => {
                eprintln!("elhaz: {e}");
                if !std::io::stdin().is_terminal() || !super::confirm("Edit again?")? {
                    bail!("edit rejected; {} is unchanged", file.display());
                }
            }
        }
    }
}
