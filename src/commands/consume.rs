//! The consumers: `credential-process`, `exec`, `export`, `whoami`.
//!
//! `credential-process` is the hot path that SDKs run on every credential refresh: it resolves
//! the name (no config parsing when a name is given), makes one blocking socket round trip and
//! prints one JSON object — no async runtime, no SDK, no logging setup.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use elhaz::client;
use elhaz::config::{self, Settings, Store};
use elhaz::paths::Paths;
use elhaz::protocol::{ErrorCode, Request, Response, WireCredentials};
use serde::Serialize;

use crate::cli::{ExecArgs, Format, NameArg};

/// Environment variable naming the current elhaz session (set by `exec`/`shell`).
pub const ENV_SESSION: &str = "ELHAZ_SESSION";

/// Resolves the session name: argument, `$ELHAZ_SESSION`, `default_session`, the only config.
pub fn resolve_name(paths: &Paths, given: Option<&str>) -> Result<String> {
    if let Some(n) = given {
        config::validate_name(n)?;
        return Ok(n.to_string());
    }
    if let Some(n) = std::env::var(ENV_SESSION).ok().filter(|s| !s.is_empty()) {
        config::validate_name(&n).with_context(|| format!("${ENV_SESSION}"))?;
        return Ok(n);
    }
    let settings = Settings::load(&paths.settings_file)?;
    if let Some(n) = settings.default_session {
        return Ok(n.0);
    }
    let names = Store::new(paths.configs_dir.clone()).names()?;
    match names.as_slice() {
        [only] => Ok(only.clone()),
        [] => bail!("no session configs yet: add one with `elhaz config add NAME --role-arn ARN`"),
        many => bail!(
            "which session? pass NAME, set ${ENV_SESSION}, or set default_session in {}; \
             configs: {}",
            paths.settings_file.display(),
            many.join(", ")
        ),
    }
}

/// Asks the daemon for credentials, prompting on the terminal once if it needs an MFA code.
pub(crate) fn fetch(paths: &Paths, name: &str) -> Result<WireCredentials> {
    let mut c = client::connect_or_start(paths)?;
    let mut code = None;
    let mut prompted = false;
    loop {
        match c.call(Request::Credentials {
            name: name.to_string(),
            mfa_code: code.take(),
        }) {
            Ok(Response::Credentials(creds)) => return Ok(creds),
            Ok(other) => bail!("unexpected reply to a credentials request: {other:?}"),
            Err(elhaz::Error::Remote(e)) if e.code == ErrorCode::MfaRequired && !prompted => {
                prompted = true;
                code = Some(prompt_mfa(name, e.mfa_serial.as_deref().unwrap_or("?"))?);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads an MFA code from /dev/tty (stdout may be captured by an SDK, stderr piped).
fn prompt_mfa(name: &str, serial: &str) -> Result<String> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| {
            anyhow!(
                "session {name:?} needs an MFA code (serial {serial}) and there is no terminal to \
                 ask on ({e}); set `[mfa] command` in its config, or run `elhaz daemon add {name}` \
                 in a terminal first"
            )
        })?;
    let mut w = &tty;
    write!(w, "elhaz: MFA code for {serial} (session {name}): ")?;
    w.flush()?;
    let mut line = String::new();
    std::io::BufReader::new(&tty).read_line(&mut line)?;
    Ok(line.trim().to_string())
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ProcessOutput<'a> {
    version: u8,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    session_token: &'a str,
    expiration: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
}

fn process_json(c: &WireCredentials) -> String {
    let out = ProcessOutput {
        version: 1,
        access_key_id: &c.access_key_id,
        secret_access_key: &c.secret_access_key,
        session_token: &c.session_token,
        expiration: &c.expiration,
        account_id: c.account_id.as_deref(),
    };
    // Plain strings: serialization cannot fail.
    serde_json::to_string(&out).unwrap_or_default()
}

pub fn credential_process(paths: &Paths, name: &NameArg) -> Result<ExitCode> {
    let name = resolve_name(paths, name.given())?;
    let creds = fetch(paths, &name)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", process_json(&creds))?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// POSIX single-quote quoting: round-trips through `eval` for any value.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// fish single-quote quoting (only `\\` and `'` are special inside).
fn fish_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Variables that would make an SDK ignore (or fight with) the ones we set.
pub(crate) const OVERRIDING: &[&str] = &[
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CREDENTIAL_EXPIRATION",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
];

/// The variables a session exports.
fn session_env(name: &str, c: &WireCredentials) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("AWS_ACCESS_KEY_ID", c.access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY", c.secret_access_key.clone()),
        ("AWS_SESSION_TOKEN", c.session_token.clone()),
        ("AWS_CREDENTIAL_EXPIRATION", c.expiration.clone()),
    ];
    if let Some(r) = &c.region {
        v.push(("AWS_REGION", r.clone()));
        v.push(("AWS_DEFAULT_REGION", r.clone()));
    }
    v.push((ENV_SESSION, name.to_string()));
    v
}

pub fn export(paths: &Paths, name: &NameArg, format: Format) -> Result<ExitCode> {
    let name = resolve_name(paths, name.given())?;
    let creds = fetch(paths, &name)?;
    let mut out = std::io::stdout().lock();
    match format {
        Format::Env => {
            for k in OVERRIDING {
                if !session_env(&name, &creds).iter().any(|(v, _)| v == k) {
                    writeln!(out, "unset {k}")?;
                }
            }
            for (k, v) in session_env(&name, &creds) {
                writeln!(out, "export {k}={}", sh_quote(&v))?;
            }
        }
        Format::Json => {
            let v = serde_json::json!({
                "session": name,
                "access_key_id": creds.access_key_id,
                "secret_access_key": creds.secret_access_key,
                "session_token": creds.session_token,
                "expiration": creds.expiration,
                "account_id": creds.account_id,
                "region": creds.region,
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        Format::CredentialProcess => writeln!(out, "{}", process_json(&creds))?,
        Format::Fish => {
            for k in OVERRIDING {
                if !session_env(&name, &creds).iter().any(|(v, _)| v == k) {
                    writeln!(out, "set -e {k}")?;
                }
            }
            for (k, v) in session_env(&name, &creds) {
                writeln!(out, "set -gx {k} {}", fish_quote(&v))?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Refuses to nest into the same session unless forced.
pub(crate) fn check_nesting(name: &str, force: bool) -> Result<()> {
    if !force && std::env::var(ENV_SESSION).is_ok_and(|s| s == name) {
        bail!(
            "already inside elhaz session {name:?} (ELHAZ_SESSION is set); nesting it again is \
             usually a mistake — pass --force to do it anyway"
        );
    }
    Ok(())
}

pub fn exec(paths: &Paths, args: ExecArgs) -> Result<ExitCode> {
    let name = resolve_name(paths, args.name.given())?;
    check_nesting(&name, args.force)?;
    if args.ecs.ecs {
        return super::ecs::exec(paths, &name, &args.command, &args.ecs);
    }
    run_in_session(paths, &name, &args.command, args.refreshing)
}

/// `elhaz shell`: the user's shell, with SDK calls refreshing through a credential_process
/// profile (not a prompt hook: nothing runs per prompt) and `ELHAZ_SESSION` as the marker.
pub fn shell(paths: &Paths, name: &NameArg, force: bool) -> Result<ExitCode> {
    let name = resolve_name(paths, name.given())?;
    check_nesting(&name, force)?;
    let sh = std::env::var_os("SHELL")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".into());
    eprintln!("elhaz: entering session {name:?} (exit the shell to leave it)");
    run_in_session(paths, &name, &[sh], true)
}

/// Replaces this process with `command` running in session `name`'s environment.
fn run_in_session(
    paths: &Paths,
    name: &str,
    command: &[std::ffi::OsString],
    refreshing: bool,
) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let name = name.to_string();
    let (prog, rest) = command
        .split_first()
        .ok_or_else(|| anyhow!("give the command to run after `--`"))?;
    let mut cmd = std::process::Command::new(prog);
    cmd.args(rest);
    for k in OVERRIDING {
        cmd.env_remove(k);
    }
    if refreshing {
        // Fetch once now so errors (and MFA prompts) happen here, not inside the child's SDK.
        let creds = fetch(paths, &name)?;
        let file = refreshing_config(paths, &name, creds.region.as_deref())?;
        cmd.env("AWS_CONFIG_FILE", &file)
            .env("AWS_PROFILE", profile_name(&name))
            .env("AWS_SDK_LOAD_CONFIG", "1")
            .env(ENV_SESSION, &name);
        if let Some(r) = &creds.region {
            cmd.env("AWS_REGION", r).env("AWS_DEFAULT_REGION", r);
        }
    } else {
        let creds = fetch(paths, &name)?;
        cmd.envs(session_env(&name, &creds));
    }
    // On success `exec` does not return: the command replaces us, so its exit status and
    // signals are its own.
    let err = cmd.exec();
    Err(anyhow!("cannot run {}: {err}", prog.to_string_lossy()))
}

fn profile_name(name: &str) -> String {
    format!("elhaz-{name}")
}

/// Writes `run/aws-config-NAME`: the user's AWS config minus any secret keys, plus a profile
/// whose `credential_process` is this binary. Nothing secret is written.
fn refreshing_config(
    paths: &Paths,
    name: &str,
    region: Option<&str>,
) -> Result<std::path::PathBuf> {
    let user_file = std::env::var_os("AWS_CONFIG_FILE")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| directories::BaseDirs::new().map(|b| b.home_dir().join(".aws/config")));
    let user_text = user_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .unwrap_or_default();
    // Without a region of its own, the session inherits the region of the profile the user
    // was in (AWS_PROFILE, else default), as that is what the child would have used.
    let current = std::env::var("AWS_PROFILE")
        .or_else(|_| std::env::var("AWS_DEFAULT_PROFILE"))
        .unwrap_or_else(|_| "default".into());
    let region = region
        .map(str::to_string)
        .or_else(|| super::setup::profile_value(&user_text, &current, "region"));
    let mut text = String::new();
    {
        for line in user_text.lines() {
            let key = line
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if matches!(
                key.as_str(),
                "aws_access_key_id"
                    | "aws_secret_access_key"
                    | "aws_session_token"
                    | "aws_security_token"
            ) {
                continue;
            }
            text.push_str(line);
            text.push('\n');
        }
    }
    text.push_str(&format!(
        "\n[profile {}]\n{}\n",
        profile_name(name),
        super::setup::credential_process_line(name)?
    ));
    if let Some(r) = &region {
        text.push_str(&format!("region = {r}\n"));
    }
    elhaz::paths::ensure_private_dir(&paths.run_dir)?;
    let file = paths.run_dir.join(format!("aws-config-{name}"));
    config::atomic_write(&file, text.as_bytes())?;
    Ok(file)
}

pub fn whoami(paths: &Paths, name: &NameArg, json: bool) -> Result<ExitCode> {
    let name = resolve_name(paths, name.given())?;
    // Warm (and prompt for MFA) through the credentials path, then ask for the identity.
    fetch(paths, &name)?;
    let mut c = client::connect_or_start(paths)?;
    let Response::Identity(id) = c.call(Request::Whoami {
        name: name.clone(),
        mfa_code: None,
    })?
    else {
        bail!("unexpected reply to whoami");
    };
    if json {
        let mut v = serde_json::to_value(&id)?;
        v["session"] = name.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("session     {name}");
        println!("account     {}", id.account);
        println!("arn         {}", id.arn);
        println!("user id     {}", id.user_id);
        println!("expiration  {}", id.expiration);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_round_trips_through_sh() {
        for v in ["plain", "with space", "it's", "a'b\"c$d`e\\f", ""] {
            let out = std::process::Command::new("sh")
                .args(["-c", "eval \"X=$1\"; printf %s \"$X\"", "sh", &sh_quote(v)])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), v);
        }
    }
}
