//! The consumers: `credential-process`, `exec`, `export`, `whoami`.
//!
//! `credential-process` is the hot path that SDKs run on every credential refresh: it resolves
//! the name (no config parsing when a name is given), makes one blocking socket round trip and
//! prints one JSON object — no async runtime, no SDK, no logging setup.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use elhaz::client;
use elhaz::config::{self, Settings, Store};
use elhaz::paths::Paths;
use elhaz::protocol::{ErrorCode, Request, Response, WireCredentials};

use elhaz::cli::{ExecArgs, Format, NameArg};

pub use elhaz::consume::{ENV_SESSION, OVERRIDING};
use elhaz::consume::{call_noting_waits, note_shared, process_json, session_env};

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
///
/// One prompt per MFA device: before prompting, the CLI takes an exclusive `flock` on
/// `run/mfa-SERIAL.lock` and holds it until the daemon has answered the request carrying the
/// code. Another CLI that needs a code for the same device meanwhile waits for the lock
/// instead of prompting too (a TOTP code is single-use on AWS), then asks again without a code:
/// the daemon's MFA session, created by the first CLI's code, serves it.
pub(crate) fn fetch(paths: &Paths, name: &str) -> Result<WireCredentials> {
    fetch_with(paths, &mut client::connect_or_start(paths)?, name)
}

/// [`fetch`] over a connection the caller already holds (to say which daemon served it).
fn fetch_with(paths: &Paths, c: &mut client::Client, name: &str) -> Result<WireCredentials> {
    let mut code = None;
    let mut prompted = false;
    let mut offered_login = false;
    let mut mfa_lock: Option<std::fs::File> = None;
    // Bounded: at most one retry after waiting for the lock and one with the code, and one
    // after an IAM Identity Center login.
    for _ in 0..5 {
        let request = Request::Credentials {
            name: name.to_string(),
            mfa_code: code.take(),
        };
        match call_noting_waits(paths, name, c, request) {
            Ok(Response::Credentials(creds)) => return Ok(creds),
            Ok(other) => bail!("unexpected reply to a credentials request: {other:?}"),
            Err(elhaz::Error::Remote(e)) if e.code == ErrorCode::MfaRequired && !prompted => {
                let serial = e.mfa_serial.as_deref().unwrap_or("?");
                if mfa_lock.is_none() {
                    mfa_lock = Some(lock_mfa_device(paths, serial)?);
                    // Another CLI may have prompted for this device meanwhile (we waited for
                    // it, or it finished just before): its MFA session may serve us now.
                    continue;
                }
                prompted = true;
                code = Some(prompt_mfa(name, serial)?);
            }
            Err(elhaz::Error::Remote(e))
                if e.code == ErrorCode::LoginRequired && e.sso.is_some() && !offered_login =>
            {
                offered_login = true;
                match offer_sso_login(paths, c, name, &e)? {
                    Offer::Served(creds) => return Ok(creds),
                    Offer::LoggedIn => {}
                    Offer::Declined => return Err(elhaz::Error::Remote(e).into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    bail!("session {name:?} still asks for an MFA code after one was given")
}

/// What [`offer_sso_login`] came to.
enum Offer {
    /// Another command's login, finished while we waited for its lock, serves the request.
    Served(WireCredentials),
    /// We logged in: ask again.
    LoggedIn,
    /// No terminal to ask on, or the user said no: the `login_required` error stands.
    Declined,
}

/// The IAM Identity Center login of a `login_required` reply, offered on the terminal — the
/// same rule as the MFA prompt: interactive means /dev/tty opens (stdout may be an SDK's pipe,
/// stderr swallowed by botocore). Without one the error stands at once, so a
/// `credential_process` under an SDK fails fast with the hint.
///
/// One login per start URL: the offer takes the same lock as `elhaz sso login` first. A
/// command that had to wait for it asks the daemon again before offering anything — the
/// login it waited for serves it — so after a laptop wakes up, a burst of commands asks for
/// one login per start URL.
fn offer_sso_login(
    paths: &Paths,
    c: &mut client::Client,
    name: &str,
    e: &elhaz::protocol::WireError,
) -> Result<Offer> {
    let Some(wire) = e.sso.as_deref() else {
        return Ok(Offer::Declined);
    };
    let Ok(tty) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    else {
        return Ok(Offer::Declined);
    };
    let settings = Settings::load(&paths.settings_file)?;
    let target = elhaz::sso::Target::from_wire(wire, &settings).map_err(|e| anyhow!(e))?;
    let _lock = super::sso::login_lock(paths, &target)?;
    // A login may have finished while we waited for the lock (or just before we asked).
    match c.call(Request::Credentials {
        name: name.to_string(),
        mfa_code: None,
    }) {
        Ok(Response::Credentials(creds)) => return Ok(Offer::Served(creds)),
        Err(elhaz::Error::Remote(again)) if again.code == ErrorCode::LoginRequired => {}
        // Anything else (MFA, another failure): the caller's loop deals with it.
        Ok(_) | Err(_) => return Ok(Offer::LoggedIn),
    }
    let mut w = &tty;
    write!(
        w,
        "elhaz: session {name} needs a new IAM Identity Center login to {}.\n\
         elhaz: log in to {} now? [Y/n] ",
        target.start_url,
        target.session_name.as_deref().unwrap_or(&target.start_url)
    )?;
    w.flush()?;
    let mut answer = String::new();
    std::io::BufReader::new(&tty).read_line(&mut answer)?;
    let answer = answer.trim().to_ascii_lowercase();
    if !(answer.is_empty() || answer == "y" || answer == "yes") {
        return Ok(Offer::Declined);
    }
    // As `elhaz sso login` with no flags picks, except that no browser opener is run where
    // there is no display (the device code is printed instead).
    let display = elhaz::sso::has_display();
    let plan = super::sso::LoginPlan::new(true, !display, !display, Duration::from_secs(600));
    let mut say = |line: &str| {
        let mut w = &tty;
        let _ = writeln!(w, "elhaz: {line}");
    };
    super::sso::login_locked(paths, &settings, &target, &plan, &mut say)?;
    Ok(Offer::LoggedIn)
}

/// How long a CLI waits for another CLI's MFA prompt (a person typing a code).
const MFA_LOCK_WAIT: Duration = Duration::from_secs(300);

/// Takes the per-device MFA lock, waiting (bounded) while another CLI holds it.
fn lock_mfa_device(paths: &Paths, serial: &str) -> Result<std::fs::File> {
    use std::hash::{Hash, Hasher};
    elhaz::fsafe::ensure_private_dir(&paths.run_dir)?;
    let clean: String = serial
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serial.hash(&mut h);
    let file = paths
        .run_dir
        .join(format!("mfa-{clean}-{:016x}.lock", h.finish()));
    let f = config::open_private(&file)?;
    let deadline = Instant::now() + MFA_LOCK_WAIT;
    let mut waited = false;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(anyhow!(e).context(format!("cannot lock {}", file.display())));
            }
        }
        if !waited && std::io::stderr().is_terminal() {
            eprintln!(
                "elhaz: another elhaz command is asking for the MFA code of {serial}; waiting for it"
            );
        }
        waited = true;
        if Instant::now() >= deadline {
            bail!(
                "another elhaz command has been asking for the MFA code of {serial} for {}s; \
                 answer it, or stop it and try again ({} is its lock)",
                MFA_LOCK_WAIT.as_secs(),
                file.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many times a malformed MFA code is asked for again.
const MFA_TRIES: usize = 3;

/// Reads an MFA code from /dev/tty (stdout may be captured by an SDK, stderr piped). A code
/// that is not 6 digits (spaces are ignored) is asked for again, up to [`MFA_TRIES`] times.
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
    let mut reader = std::io::BufReader::new(&tty);
    for attempt in 1..=MFA_TRIES {
        write!(w, "elhaz: MFA code for {serial} (session {name}): ")?;
        w.flush()?;
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("no MFA code entered for {serial} (session {name})");
        }
        let code: String = line.split_whitespace().collect();
        if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(code);
        }
        if attempt < MFA_TRIES {
            writeln!(
                w,
                "elhaz: an MFA code is 6 digits; try again ({} of {MFA_TRIES} tries left)",
                MFA_TRIES - attempt
            )?;
        }
    }
    bail!("no valid MFA code for {serial} after {MFA_TRIES} tries: an MFA code is 6 digits")
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
    if !force && elhaz::consume::nests(name) {
        bail!(
            "already inside elhaz session {name:?} (ELHAZ_SESSION is set); nesting it again is \
             usually a mistake — pass --force to do it anyway"
        );
    }
    Ok(())
}

pub fn exec(paths: &Paths, args: ExecArgs) -> Result<ExitCode> {
    let name = resolve_name(paths, args.name.given())?;
    if args.command().is_empty() {
        bail!(
            "no command to run: `elhaz exec {name} -- CMD [ARGS…]` runs one; for an \
             interactive shell in the session, run `elhaz shell {name}`"
        );
    }
    check_nesting(&name, args.force)?;
    if args.ecs.ecs {
        return super::ecs::exec(paths, &name, args.command(), &args.ecs);
    }
    run_in_session(paths, &name, args.command(), args.refreshing, None)
}

/// `elhaz shell`: the user's shell, with SDK calls refreshing through a credential_process
/// profile (not a prompt hook: nothing runs per prompt) and `ELHAZ_SESSION` as the marker.
pub fn shell(paths: &Paths, name: &NameArg, force: bool) -> Result<ExitCode> {
    let name = resolve_name(paths, name.given())?;
    check_nesting(&name, force)?;
    if let Some(outer) = std::env::var(ENV_SESSION)
        .ok()
        .filter(|s| !s.is_empty() && *s != name)
    {
        eprintln!(
            "elhaz: warning: starting session {name:?} inside session {outer:?} \
             ({ENV_SESSION}={outer}); exit this shell to return to {outer:?}"
        );
    }
    let sh = std::env::var_os("SHELL")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".into());
    // Announced only once the session has answered (so `shell nosuch` fails first).
    let banner = format!("elhaz: entering session {name:?} (exit the shell to leave it)");
    run_in_session(paths, &name, &[sh], true, Some(&banner))
}

/// Runs `command` in session `name`'s environment. Plain `exec` replaces this process (its
/// exit status and signals are the command's own). `--refreshing` cannot: the generated
/// `run/aws-config-NAME.PID` must be deleted when the command exits, so we spawn it, wait and
/// then clean up (see [`wait_and_clean`]). `banner` goes to stderr once the credentials are
/// fetched, just before the command starts.
fn run_in_session(
    paths: &Paths,
    name: &str,
    command: &[std::ffi::OsString],
    refreshing: bool,
    banner: Option<&str>,
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
    let mut c = client::connect_or_start(paths)?;
    note_shared(&c);
    if refreshing {
        // Fetch once now so errors (and MFA prompts) happen here, not inside the child's SDK.
        let creds = fetch_with(paths, &mut c, &name)?;
        let file = refreshing_config(paths, &name, creds.region.as_deref())?;
        cmd.env("AWS_CONFIG_FILE", &file)
            .env("AWS_PROFILE", profile_name(&name))
            .env("AWS_SDK_LOAD_CONFIG", "1")
            .env(ENV_SESSION, &name);
        if let Some(r) = &creds.region {
            cmd.env("AWS_REGION", r).env("AWS_DEFAULT_REGION", r);
        }
        if let Some(b) = banner {
            eprintln!("{b}");
        }
        return wait_and_clean(cmd, prog, &file);
    }
    let creds = fetch_with(paths, &mut c, &name)?;
    drop(c);
    cmd.envs(session_env(&name, &creds));
    if let Some(b) = banner {
        eprintln!("{b}");
    }
    // On success `exec` does not return: the command replaces us, so its exit status and
    // signals are its own.
    let err = cmd.exec();
    Err(anyhow!("cannot run {}: {err}", prog.to_string_lossy()))
}

/// The child of `exec --refreshing`, for the signal handler (0: not started yet).
static CHILD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
/// A SIGTERM/SIGHUP that arrived before the child existed.
static PENDING: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn relay_signal(sig: nix::libc::c_int) {
    use std::sync::atomic::Ordering;
    // SIGINT/SIGQUIT come from the terminal to the whole process group: the child gets its own
    // copy and decides; we only outlive it to clean up. SIGTERM/SIGHUP may be ours alone.
    if sig == nix::libc::SIGTERM || sig == nix::libc::SIGHUP {
        let pid = CHILD.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill(2) is async-signal-safe and touches no memory of ours. `pid` is our
            // child; CHILD is cleared right after `wait` reaps it (a window of a few
            // instructions in which the pid cannot have been reused in practice).
            unsafe {
                nix::libc::kill(pid, sig);
            }
        } else {
            PENDING.store(sig, Ordering::SeqCst);
        }
    }
}

/// Spawns `cmd`, relays SIGTERM/SIGHUP to it, survives the terminal's SIGINT/SIGQUIT, waits,
/// deletes `file`, and ends the way the child did (its exit code, or the same signal).
/// Handlers (not `SIG_IGN`) are installed before the spawn, so the child starts with default
/// dispositions; SIGTSTP keeps its default, so Ctrl-Z stops both and `fg` resumes both.
fn wait_and_clean(
    mut cmd: std::process::Command,
    prog: &std::ffi::OsStr,
    file: &std::path::Path,
) -> Result<ExitCode> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    use std::os::unix::process::ExitStatusExt;
    use std::sync::atomic::Ordering;
    let relay = SigAction::new(
        SigHandler::Handler(relay_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    let relayed = [
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGTERM,
        Signal::SIGHUP,
    ];
    for sig in relayed {
        // SAFETY: `relay_signal` only does atomic loads/stores and kill(2), all
        // async-signal-safe.
        let _ = unsafe { sigaction(sig, &relay) };
    }
    let spawned = cmd.spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(file);
            return Err(anyhow!("cannot run {}: {e}", prog.to_string_lossy()));
        }
    };
    // A child pid fits in i32 (pid_t).
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    let pending = PENDING.swap(0, Ordering::SeqCst);
    if pending != 0 {
        // SAFETY: the child is alive or a zombie until we wait for it below.
        unsafe {
            nix::libc::kill(child.id() as i32, pending);
        }
    }
    let status = child.wait();
    CHILD.store(0, Ordering::SeqCst);
    let _ = std::fs::remove_file(file);
    let status = status.with_context(|| format!("cannot wait for {}", prog.to_string_lossy()))?;
    if let Some(code) = status.code() {
        return Ok(ExitCode::from(code.clamp(0, 255) as u8));
    }
    let sig = status.signal().unwrap_or(nix::libc::SIGTERM);
    // Die of the same signal, so our caller sees what the command did.
    if let Ok(s) = Signal::try_from(sig) {
        let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        // SAFETY: restoring the default disposition is always sound.
        let _ = unsafe { sigaction(s, &default) };
        let _ = nix::sys::signal::raise(s);
    }
    Ok(ExitCode::from((128 + sig).clamp(0, 255) as u8))
}

fn profile_name(name: &str) -> String {
    format!("elhaz-{name}")
}

/// Writes `run/aws-config-NAME.PID`: the user's AWS config minus any secret keys, plus a
/// profile whose `credential_process` is this binary. Nothing secret is written; the caller
/// deletes it when the command exits, and stale ones (a killed `exec`) are removed here and at
/// daemon start-up.
fn refreshing_config(
    paths: &Paths,
    name: &str,
    region: Option<&str>,
) -> Result<std::path::PathBuf> {
    let user_file = super::aws_config::file().ok();
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
        .or_else(|| super::aws_config::profile_value(&user_text, &current, "region"));
    let mut text = super::aws_config::strip_secret_keys(&user_text);
    text.push_str(&format!(
        "\n[profile {}]\n{}\n",
        profile_name(name),
        super::aws_config::credential_process_line(name)?
    ));
    if let Some(r) = &region {
        text.push_str(&format!("region = {r}\n"));
    }
    elhaz::fsafe::ensure_private_dir(&paths.run_dir)?;
    elhaz::fsafe::remove_stale_aws_configs(&paths.run_dir);
    let file = elhaz::fsafe::generated_aws_config(&paths.run_dir, name, std::process::id());
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
    let daemon = match c.served() {
        client::Served::Personal { socket } => {
            serde_json::json!({"kind": "personal", "socket": socket})
        }
        client::Served::Shared { socket, user, uid } => {
            serde_json::json!({"kind": "shared", "socket": socket, "user": user, "uid": uid})
        }
        client::Served::InProcess => serde_json::json!({"kind": "in-process"}),
    };
    if json {
        let mut v = serde_json::to_value(&id)?;
        v["session"] = name.into();
        v["daemon"] = daemon;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("session     {name}");
        println!("account     {}", id.account);
        println!("arn         {}", id.arn);
        println!("user id     {}", id.user_id);
        println!("expiration  {}", id.expiration);
        if let Some(m) = &id.mfa_expiration {
            println!("mfa expires {m}");
        }
        println!("daemon      {}", c.served());
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
