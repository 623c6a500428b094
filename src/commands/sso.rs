//! `elhaz sso …`: IAM Identity Center login, status, logout and populate.
//!
//! The login runs here, in the CLI (it needs the user's terminal and browser), on a
//! current-thread runtime — this is not the credential hot path. The token goes to the AWS
//! CLI's cache file, which the daemon reads whenever it lacks a token (see `elhaz::sso`). One
//! login per start URL at a time: a `flock` on `run/sso-<sha1>.lock`; a second `sso login`
//! waits for it and then finds the first one's token valid.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use elhaz::config::{self, Settings, SsoConfig, SsoTokenCache, Store};
use elhaz::paths::Paths;
use elhaz::sso::{self, CachedToken, Flow, LoginOptions, Target};

use elhaz::cli::{SsoCmd, SsoLoginArgs, SsoTarget};

/// Runs `elhaz sso …`.
pub fn run(paths: &Paths, cmd: SsoCmd) -> Result<ExitCode> {
    match cmd {
        SsoCmd::Login(args) => login(paths, &args),
        SsoCmd::Status { json } => status(paths, json),
        SsoCmd::Logout { target } => logout(paths, &target),
        SsoCmd::Populate { target, dry_run } => populate(paths, &target, dry_run),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The target named on the command line (or the only `[sso_sessions]` entry).
fn target(settings: &Settings, t: &SsoTarget) -> Result<Target> {
    if let (Some(url), Some(region)) = (&t.start_url, &t.region) {
        config::check_start_url(url).map_err(|m| anyhow!("--start-url: {m}"))?;
        let region: config::Region = region.parse().map_err(|m| anyhow!("--region: {m}"))?;
        return Ok(Target {
            session_name: None,
            start_url: url.clone(),
            region: region.0,
            scopes: vec![sso::DEFAULT_SCOPE.into()],
        });
    }
    let name = match &t.sso_session {
        Some(n) => n.clone(),
        None => {
            let mut names = settings.sso_sessions.keys();
            match (names.next(), names.next()) {
                (Some(only), None) => only.clone(),
                (None, _) => bail!(
                    "no SSO session given and elhaz.toml has no [sso_sessions]: name one, or \
                     give --start-url URL --region REGION"
                ),
                (Some(_), Some(_)) => bail!(
                    "elhaz.toml has several [sso_sessions] ({}): name one",
                    settings
                        .sso_sessions
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    };
    Target::named(&name, settings).map_err(|e| anyhow!("{e}"))
}

fn disk(settings: &Settings) -> bool {
    settings.sso_token_cache.unwrap_or_default() == SsoTokenCache::Aws
}

fn cache_file(t: &Target) -> Result<std::path::PathBuf> {
    sso::target_cache_file(t)
        .ok_or_else(|| anyhow!("cannot locate ~/.aws/sso/cache: HOME is not set"))
}

/// Takes the per-start-URL login lock (held while the guard lives).
fn login_lock(paths: &Paths, t: &Target) -> Result<nix::fcntl::Flock<std::fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    use sha1::Digest;
    elhaz::fsafe::ensure_private_dir(&paths.run_dir)?;
    let file = paths.run_dir.join(format!(
        "sso-{}.lock",
        hex::encode(sha1::Sha1::digest(t.start_url.as_bytes()))
    ));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&file)
        .with_context(|| format!("cannot open {}", file.display()))?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(l),
        Err((f, _)) => {
            eprintln!(
                "another `elhaz sso login` for {} is running; waiting for it",
                t.start_url
            );
            Flock::lock(f, FlockArg::LockExclusive)
                .map_err(|(_, e)| anyhow!("cannot lock {}: {e}", file.display()))
        }
    }
}

fn login(paths: &Paths, a: &SsoLoginArgs) -> Result<ExitCode> {
    let settings = Settings::load(&paths.settings_file)?;
    let t = target(&settings, &a.target)?;
    if !disk(&settings) {
        bail!(
            "sso_token_cache = \"memory\" in elhaz.toml: this daemon cannot take a login handed \
             over by the CLI yet; remove the setting to share the token through ~/.aws/sso/cache"
        );
    }
    let timeout: config::Secs = a.timeout.parse().map_err(|m| anyhow!("--timeout: {m}"))?;
    let file = cache_file(&t)?;
    let _lock = login_lock(paths, &t)?;
    if !a.force
        && let Some(held) = sso::read_cache(&file)
        && held.start_url == t.start_url
        && held.remaining() > Duration::from_secs(15 * 60)
    {
        eprintln!(
            "already logged in to {} (token valid until {}); use --force to log in again",
            t.start_url, held.expires_at
        );
        return Ok(ExitCode::SUCCESS);
    }
    let flow = if a.use_device_code || !sso::has_display() {
        Flow::DeviceCode
    } else {
        Flow::Pkce
    };
    let opts = LoginOptions {
        flow,
        open_browser: !a.no_browser,
        timeout: Duration::from_secs(timeout.0.max(1)),
    };
    let token: CachedToken = runtime()?.block_on(async {
        let sdk = sso::cli_sdk_config().await;
        sso::login(&sdk, &t, &opts, &mut |line| eprintln!("{line}")).await
    })?;
    sso::write_cache(&file, &token)?;
    eprintln!(
        "logged in to {} (token valid until {}{}); cached in {}",
        t.start_url,
        token.expires_at,
        if token.refresh_token.is_some() {
            ", renewed silently"
        } else {
            ", no refresh token"
        },
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Every target the configs and elhaz.toml name, with the sessions using each.
fn targets(paths: &Paths, settings: &Settings) -> Result<BTreeMap<String, (Target, Vec<String>)>> {
    let mut out = BTreeMap::new();
    for name in settings.sso_sessions.keys() {
        if let Ok(t) = Target::named(name, settings) {
            out.insert(t.cache_key().to_string(), (t, Vec::new()));
        }
    }
    for l in Store::new(&paths.configs_dir).list(config::env_custom_endpoint())? {
        let Ok(cfg) = &l.config else { continue };
        let Some(s) = &cfg.sso else { continue };
        let Ok(t) = Target::resolve(s, settings) else {
            continue;
        };
        out.entry(t.cache_key().to_string())
            .or_insert_with(|| (t, Vec::new()))
            .1
            .push(l.name.clone());
    }
    Ok(out)
}

fn status(paths: &Paths, json: bool) -> Result<ExitCode> {
    let settings = Settings::load(&paths.settings_file)?;
    let mut rows = Vec::new();
    for (_, (t, sessions)) in targets(paths, &settings)? {
        let cached = disk(&settings)
            .then(|| sso::target_cache_file(&t).and_then(|f| sso::read_cache(&f)))
            .flatten()
            .filter(|c| c.start_url.is_empty() || c.start_url == t.start_url);
        rows.push(serde_json::json!({
            "sso_session": t.session_name,
            "start_url": t.start_url,
            "region": t.region,
            "logged_in": cached.as_ref().is_some_and(|c| c.remaining() > Duration::ZERO),
            "expires_at": cached.as_ref().map(|c| c.expires_at.clone()),
            "refresh_token": cached.as_ref().is_some_and(|c| c.refresh_token.is_some()),
            "cache_file": disk(&settings).then(|| sso::target_cache_file(&t)).flatten(),
            "sessions": sessions,
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no IAM Identity Center logins configured");
    }
    for r in &rows {
        let name = r["sso_session"].as_str().unwrap_or("-");
        let state = if r["logged_in"].as_bool() == Some(true) {
            format!(
                "logged in until {}{}",
                r["expires_at"].as_str().unwrap_or("?"),
                if r["refresh_token"].as_bool() == Some(true) {
                    " (refresh token: yes)"
                } else {
                    " (refresh token: no)"
                }
            )
        } else {
            "not logged in".into()
        };
        let sessions: Vec<&str> = r["sessions"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        println!(
            "{name}  {}  {state}  sessions: {}",
            r["start_url"].as_str().unwrap_or(""),
            if sessions.is_empty() {
                "-".into()
            } else {
                sessions.join(", ")
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn logout(paths: &Paths, a: &SsoTarget) -> Result<ExitCode> {
    let settings = Settings::load(&paths.settings_file)?;
    let t = target(&settings, a)?;
    let file = cache_file(&t)?;
    if let Some(token) = sso::read_cache(&file) {
        let done = runtime()?.block_on(async {
            let sdk = sso::cli_sdk_config().await;
            sso::portal_logout(&sdk, &t, &token).await
        });
        if let Err(e) = done {
            eprintln!("warning: portal logout failed ({e}); removing the local token anyway");
        }
        std::fs::remove_file(&file).with_context(|| format!("cannot remove {}", file.display()))?;
    }
    let sessions = targets(paths, &settings)?
        .remove(t.cache_key())
        .map(|(_, s)| s)
        .unwrap_or_default();
    if let Ok(Some(mut c)) = elhaz::client::connect_existing(paths) {
        for name in &sessions {
            let _ = c.call(elhaz::protocol::Request::Remove { name: name.clone() });
        }
    }
    println!(
        "logged out of {}; dropped {} session(s)",
        t.start_url,
        sessions.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `account name` + `role` → a session name: lowercase, `[a-z0-9-]`, at most 64 characters.
fn derived_name(account_name: &str, role: &str) -> String {
    let slug = |s: &str| {
        let mut out = String::new();
        for c in s.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c.to_ascii_lowercase());
            } else if !out.ends_with('-') {
                out.push('-');
            }
        }
        out.trim_matches('-').to_string()
    };
    let mut name = format!("{}-{}", slug(account_name), slug(role));
    name.truncate(64);
    name.trim_matches('-').to_string()
}

fn populate(paths: &Paths, a: &SsoTarget, dry_run: bool) -> Result<ExitCode> {
    let settings = Settings::load(&paths.settings_file)?;
    let t = target(&settings, a)?;
    let token = sso::read_cache(&cache_file(&t)?)
        .filter(|c| c.remaining() > Duration::ZERO)
        .ok_or_else(|| anyhow!("not logged in to {}: run `{}`", t.start_url, t.login_hint()))?;
    let list = runtime()?.block_on(async {
        let sdk = sso::cli_sdk_config().await;
        sso::assignments(&sdk, &t, &token).await
    })?;
    let store = Store::new(&paths.configs_dir);
    let (mut written, mut same) = (0, 0);
    for asg in &list {
        let name = derived_name(&asg.account_name, &asg.role_name);
        if config::validate_name(&name).is_err() {
            eprintln!(
                "skipped {} / {}: no usable session name",
                asg.account_id, asg.role_name
            );
            continue;
        }
        let cfg = config::SessionConfig {
            description: Some(format!(
                "{} ({}) / {}",
                asg.account_name, asg.account_id, asg.role_name
            )),
            region: t.region.parse().ok(),
            sso: Some(SsoConfig {
                start_url: t.session_name.is_none().then(|| t.start_url.clone()),
                region: t
                    .session_name
                    .is_none()
                    .then(|| config::Region(t.region.clone())),
                session: t.session_name.clone(),
                account_id: asg.account_id.clone(),
                role_name: asg.role_name.clone(),
            }),
            ..Default::default()
        };
        match store.load(&name, false) {
            Ok(existing) if existing == cfg => {
                same += 1;
                continue;
            }
            Ok(_) => {
                eprintln!("kept {name}: a different config by that name exists");
                continue;
            }
            Err(_) => {}
        }
        if dry_run {
            println!("would write {name}: {} / {}", asg.account_id, asg.role_name);
        } else {
            store.write(&name, &cfg.to_toml(), false)?;
            println!("wrote {name}: {} / {}", asg.account_id, asg.role_name);
        }
        written += 1;
    }
    println!(
        "{} {written} session config(s), {same} already up to date",
        if dry_run { "would write" } else { "wrote" }
    );
    Ok(ExitCode::SUCCESS)
}
