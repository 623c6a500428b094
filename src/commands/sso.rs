//! `elhaz sso …`: IAM Identity Center login, status, logout and populate.
//!
//! The login runs here, in the CLI (it needs the user's terminal and browser), on a
//! current-thread runtime — this is not the credential hot path. The token goes to the AWS
//! CLI's cache file, which the daemon reads whenever it lacks a token (see `elhaz::sso`), or —
//! with `sso_token_cache = "memory"` — to the daemon over its socket (`sso_login`, an
//! owner-only request), and nowhere else. One login per start URL at a time: a `flock` on
//! `run/sso-<sha1>.lock`; a second `sso login` (or a consumer offering the login, see
//! `consume::fetch_with`) waits for it and then finds the first one's token valid.

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
pub(crate) fn login_lock(paths: &Paths, t: &Target) -> Result<nix::fcntl::Flock<std::fs::File>> {
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

/// How a login runs (from `sso login`'s flags, or the defaults when a consumer offers one).
#[derive(Debug, Clone)]
pub(crate) struct LoginPlan {
    /// Log in even when a valid token is held.
    pub force: bool,
    /// The flow and browser options.
    pub opts: LoginOptions,
}

impl LoginPlan {
    /// The flow `sso login` picks: device code when asked or where no browser can be opened,
    /// otherwise PKCE with a loopback redirect.
    pub(crate) fn new(
        force: bool,
        use_device_code: bool,
        no_browser: bool,
        timeout: Duration,
    ) -> Self {
        let flow = if use_device_code || !sso::has_display() {
            Flow::DeviceCode
        } else {
            Flow::Pkce
        };
        LoginPlan {
            force,
            opts: LoginOptions {
                flow,
                open_browser: !no_browser,
                timeout,
            },
        }
    }
}

/// What [`login_to`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LoginOutcome {
    /// A new token is stored (cache file, or the daemon's memory).
    LoggedIn,
    /// A valid token was already held (another login finished first); nothing was done.
    AlreadyLoggedIn,
}

/// The daemon's view of a login (memory-only mode): its status row, if a daemon runs.
fn daemon_login(paths: &Paths, t: &Target) -> Option<elhaz::protocol::SsoLoginInfo> {
    let mut c = elhaz::client::connect_existing(paths).ok()??;
    match c.call(elhaz::protocol::Request::SsoStatus).ok()? {
        elhaz::protocol::Response::SsoStatus { logins } => logins
            .into_iter()
            .find(|l| l.sso.start_url == t.start_url && l.sso.sso_session == t.session_name),
        _ => None,
    }
}

/// Logs in to `t` under the per-start-URL lock and stores the token: in the AWS CLI's cache
/// file by default, or — `sso_token_cache = "memory"` — handed to the daemon over its socket
/// (started if needed), nothing written to disk. A valid token found once the lock is held
/// (a concurrent login finished) ends it, unless `plan.force`.
pub(crate) fn login_to(
    paths: &Paths,
    settings: &Settings,
    t: &Target,
    plan: &LoginPlan,
    say: &mut (dyn FnMut(&str) + Send),
) -> Result<LoginOutcome> {
    let _lock = login_lock(paths, t)?;
    login_locked(paths, settings, t, plan, say)
}

/// [`login_to`] for a caller that already holds [`login_lock`].
pub(crate) fn login_locked(
    paths: &Paths,
    settings: &Settings,
    t: &Target,
    plan: &LoginPlan,
    say: &mut (dyn FnMut(&str) + Send),
) -> Result<LoginOutcome> {
    let disk = disk(settings);
    let file = if disk { Some(cache_file(t)?) } else { None };
    if !plan.force {
        let held = match &file {
            Some(f) => sso::read_cache(f)
                .filter(|h| h.start_url == t.start_url)
                .and_then(|h| h.expiry()),
            None => daemon_login(paths, t)
                .filter(|l| !l.login_required)
                .and_then(|l| l.expires_at)
                .and_then(|e| humantime::parse_rfc3339_weak(e.trim_end_matches('Z')).ok()),
        };
        if let Some(until) = held
            && until
                .duration_since(std::time::SystemTime::now())
                .is_ok_and(|left| left > Duration::from_secs(15 * 60))
        {
            say(&format!(
                "already logged in to {} (token valid until {}); use --force to log in again",
                t.start_url,
                humantime::format_rfc3339_seconds(until)
            ));
            return Ok(LoginOutcome::AlreadyLoggedIn);
        }
    }
    let token: CachedToken = runtime()?.block_on(async {
        let sdk = sso::cli_sdk_config().await;
        sso::login(&sdk, t, &plan.opts, say).await
    })?;
    let renewal = if token.refresh_token.is_some() {
        ", renewed silently"
    } else {
        ", no refresh token"
    };
    match &file {
        Some(file) => {
            sso::write_cache(file, &token)?;
            say(&format!(
                "logged in to {} (token valid until {}{renewal}); cached in {}",
                t.start_url,
                token.expires_at,
                file.display()
            ));
        }
        None => {
            let mut c = elhaz::client::connect_or_start(paths)?;
            let reply = c.call(elhaz::protocol::Request::SsoLogin {
                sso: t.to_wire(),
                sso_token: token.to_wire(),
            });
            match reply {
                Ok(elhaz::protocol::Response::SsoLoggedIn { .. }) => {}
                Ok(other) => bail!("unexpected reply to sso_login: {other:?}"),
                Err(e) => {
                    return Err(anyhow!(e).context(
                        "the login succeeded but the daemon did not take the token (it is \
                         not kept anywhere else: sso_token_cache = \"memory\")",
                    ));
                }
            }
            say(&format!(
                "logged in to {} (token valid until {}{renewal}); held in the daemon's memory \
                 only (sso_token_cache = \"memory\": a daemon restart needs a new login)",
                t.start_url, token.expires_at,
            ));
        }
    }
    Ok(LoginOutcome::LoggedIn)
}

fn login(paths: &Paths, a: &SsoLoginArgs) -> Result<ExitCode> {
    let settings = Settings::load(&paths.settings_file)?;
    let t = target(&settings, &a.target)?;
    let timeout: config::Secs = a.timeout.parse().map_err(|m| anyhow!("--timeout: {m}"))?;
    let plan = LoginPlan::new(
        a.force,
        a.use_device_code,
        a.no_browser,
        Duration::from_secs(timeout.0.max(1)),
    );
    login_to(paths, &settings, &t, &plan, &mut |line| eprintln!("{line}"))?;
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

/// `sso status`: every IAM Identity Center login the configs name, and whether it is held.
fn status(paths: &Paths, json: bool) -> Result<ExitCode> {
    let settings = Settings::load(&paths.settings_file)?;
    let disk = disk(&settings);
    // Memory-only mode: the daemon is the only holder (no daemon, no login).
    let held = if disk {
        Vec::new()
    } else {
        daemon_logins(paths)
    };
    let mut rows = Vec::new();
    for (_, (t, sessions)) in targets(paths, &settings)? {
        let (expires_at, refresh_token) = token_state(&t, disk, &held);
        let logged_in = expires_at
            .as_deref()
            .and_then(|e| {
                humantime::parse_rfc3339_weak(e.trim_end_matches('Z').trim_end_matches("UTC")).ok()
            })
            .is_some_and(|e| e > std::time::SystemTime::now());
        rows.push(serde_json::json!({
            "sso_session": t.session_name,
            "start_url": t.start_url,
            "region": t.region,
            "logged_in": logged_in,
            "expires_at": expires_at,
            "refresh_token": refresh_token,
            "token_cache": if disk { "aws" } else { "memory" },
            "cache_file": disk.then(|| sso::target_cache_file(&t)).flatten(),
            "sessions": sessions,
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_status(&rows);
    Ok(ExitCode::SUCCESS)
}

/// The logins a running daemon holds (memory-only mode); none when no daemon answers.
fn daemon_logins(paths: &Paths) -> Vec<elhaz::protocol::SsoLoginInfo> {
    elhaz::client::connect_existing(paths)
        .ok()
        .flatten()
        .and_then(|mut c| c.call(elhaz::protocol::Request::SsoStatus).ok())
        .and_then(|r| match r {
            elhaz::protocol::Response::SsoStatus { logins } => Some(logins),
            _ => None,
        })
        .unwrap_or_default()
}

/// A target's token: when it expires and whether it has a refresh token — from the AWS CLI's
/// cache file (`disk`) or from the daemon's `held` logins.
fn token_state(
    t: &Target,
    disk: bool,
    held: &[elhaz::protocol::SsoLoginInfo],
) -> (Option<String>, bool) {
    if disk {
        let cached = sso::target_cache_file(t)
            .and_then(|f| sso::read_cache(&f))
            .filter(|c| c.start_url.is_empty() || c.start_url == t.start_url);
        (
            cached.as_ref().map(|c| c.expires_at.clone()),
            cached.as_ref().is_some_and(|c| c.refresh_token.is_some()),
        )
    } else {
        let l = held
            .iter()
            .find(|l| l.sso.start_url == t.start_url && l.sso.sso_session == t.session_name)
            .filter(|l| !l.login_required);
        (
            l.and_then(|l| l.expires_at.clone()),
            l.is_some_and(|l| l.refresh_token),
        )
    }
}

/// `sso status`'s lines, one per login.
fn print_status(rows: &[serde_json::Value]) {
    if rows.is_empty() {
        println!("no IAM Identity Center logins configured");
    }
    for r in rows {
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
}

fn logout(paths: &Paths, a: &SsoTarget) -> Result<ExitCode> {
    let settings = Settings::load(&paths.settings_file)?;
    let t = target(&settings, a)?;
    let disk = disk(&settings);
    if disk {
        let file = cache_file(&t)?;
        if let Some(token) = sso::read_cache(&file) {
            let done = runtime()?.block_on(async {
                let sdk = sso::cli_sdk_config().await;
                sso::portal_logout(&sdk, &t, &token).await
            });
            if let Err(e) = done {
                eprintln!("warning: portal logout failed ({e}); removing the local token anyway");
            }
            std::fs::remove_file(&file)
                .with_context(|| format!("cannot remove {}", file.display()))?;
        }
    }
    let sessions = targets(paths, &settings)?
        .remove(t.cache_key())
        .map(|(_, s)| s)
        .unwrap_or_default();
    if let Ok(Some(mut c)) = elhaz::client::connect_existing(paths) {
        // The daemon drops its copy of the token; in memory-only mode it holds the only one
        // and calls the portal's Logout with it.
        match c.call(elhaz::protocol::Request::SsoLogout {
            sso: t.to_wire(),
            portal_logout: !disk,
        }) {
            Ok(elhaz::protocol::Response::SsoLoggedOut {
                portal_error: Some(e),
                ..
            }) => eprintln!(
                "warning: portal logout failed ({e}); the daemon dropped the token anyway"
            ),
            Ok(_) => {}
            Err(e) => eprintln!("warning: the daemon did not drop its token: {e}"),
        }
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
    let not_logged_in = || anyhow!("not logged in to {}: run `{}`", t.start_url, t.login_hint());
    let list = if disk(&settings) {
        let token = sso::read_cache(&cache_file(&t)?)
            .filter(|c| c.remaining() > Duration::ZERO)
            .ok_or_else(not_logged_in)?;
        runtime()?.block_on(async {
            let sdk = sso::cli_sdk_config().await;
            sso::assignments(&sdk, &t, &token).await
        })?
    } else {
        // Memory-only mode: the daemon holds the only token and asks the portal itself.
        let mut c = elhaz::client::connect_existing(paths)?.ok_or_else(not_logged_in)?;
        match c.call(elhaz::protocol::Request::SsoAssignments { sso: t.to_wire() })? {
            elhaz::protocol::Response::SsoAssignments { assignments } => assignments
                .into_iter()
                .map(|a| sso::Assignment {
                    account_id: a.account_id,
                    account_name: a.account_name,
                    role_name: a.role_name,
                })
                .collect(),
            other => bail!("unexpected reply to sso_assignments: {other:?}"),
        }
    };
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
