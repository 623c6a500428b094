//! The lean `elhaz` binary: the two hot paths served here, everything else handed on.
//!
//! `elhaz credential-process NAME` runs on every SDK credential refresh, so its start-up cost
//! is paid many times. A binary that also carries the daemon, the AWS SDK and clap is 24 MB;
//! mapping it costs page faults, and the TLS library's constructors run in every process
//! before `main`. So `elhaz` is two binaries, installed together (`cargo install --path .`):
//!
//! - `elhaz` (`src/front.rs`, linked against this crate alone, ~1.5 MB): recognises the plain
//!   spellings `credential-process [--] NAME` and `exec NAME -- CMD [ARGS…]`, connects to a
//!   running daemon and, when the daemon answers with credentials, prints them or runs the
//!   command. A test (`tests/it/layout.rs`) checks that no tokio, hyper or AWS code is in it.
//! - `elhaz-full`, next to it: every command, the daemon, the in-process broker.
//!
//! The rule that keeps them equal: **the front finishes only what needs nothing else** — a
//! running daemon's credentials, printed or exported into the command, or its plain error
//! (unknown session, access denied, STS down …), printed as `elhaz-full` prints it. Any other
//! case — another command or spelling, `ELHAZ_NO_DAEMON=1`, no daemon running (autostart), a
//! nesting check that fails, a reply that needs the terminal (an MFA code, an IAM Identity
//! Center login), a socket or protocol failure — `exec`s `elhaz-full` with the same arguments
//! and `argv[0]`, in the same process, which does everything from the start: prompts, errors
//! and exit codes are `elhaz-full`'s own. The `credential_process` JSON, the session variables
//! and the "did you mean" hint come from one place ([`consume`]). The cost of the rule: a
//! request handed on after the daemon answered it is sent twice; that happens only for the
//! interactive replies, where a person is about to type anyway.
//!
//! [`consume`]: crate::consume

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use crate::client;
use crate::consume;
use crate::error::Error;
use crate::paths::Paths;
use crate::protocol::{ErrorCode, Request, Response, WireCredentials, WireError};

/// The file name of the binary that runs every command (installed next to `elhaz`).
pub const FULL_BINARY: &str = "elhaz-full";
/// The file name of the lean binary users run (and `credential_process` lines name).
pub const FRONT_BINARY: &str = "elhaz";

/// A hot path, as recognised without a command-line parser.
#[derive(Debug, PartialEq)]
pub enum Hot {
    /// `credential-process [--] NAME`.
    CredentialProcess(String),
    /// `exec NAME -- CMD [ARGS…]`: the name and the command with its arguments (never empty).
    Exec(String, Vec<OsString>),
}

/// The two hot paths in their plain spellings: `credential-process [--] NAME` and `exec NAME
/// -- CMD [ARGS…]` (`args` includes `argv[0]`). Anything else (flags, `-n`, missing parts)
/// is `None`, for the full command-line parser. `elhaz-full` skips clap with the same grammar
/// (`elhaz::cli::fast_path`).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Option<Hot> {
    let mut it = args.into_iter().skip(1).peekable();
    let sub = it.next()?;
    // `credential-process -- NAME`, as `setup aws-profile` writes it.
    if sub == "credential-process" && it.peek().is_some_and(|a| a == "--") {
        it.next();
    }
    let name = it.next()?.into_string().ok()?;
    if name.is_empty() || name.starts_with('-') {
        return None;
    }
    match sub.to_str()? {
        "credential-process" if it.next().is_none() => Some(Hot::CredentialProcess(name)),
        "exec" if it.next().is_some_and(|d| d == "--") => {
            let command: Vec<OsString> = it.collect();
            (!command.is_empty()).then_some(Hot::Exec(name, command))
        }
        _ => None,
    }
}

/// `elhaz`'s `main`: serve a hot path, or hand the command line to `elhaz-full`.
pub fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let why = match parse(args.iter().cloned()) {
        Some(_) if client::no_daemon() => None,
        Some(hot) => match serve(hot) {
            Ok(code) => return code,
            Err(HandOn(why)) => why,
        },
        None => None,
    };
    delegate(&args, why.as_deref())
}

/// Why a hot path goes to `elhaz-full` after all: said only if `elhaz-full` cannot be run
/// (a lone `elhaz` copied into a container, say), so that the real reason is not lost.
struct HandOn(Option<String>);

impl<E: std::fmt::Display> From<E> for HandOn {
    fn from(e: E) -> Self {
        HandOn(Some(e.to_string()))
    }
}

/// Serves `hot` when a running daemon answers it for good; [`HandOn`] otherwise.
fn serve(hot: Hot) -> Result<ExitCode, HandOn> {
    restore_sigpipe();
    let paths = Paths::from_env()?;
    let (Hot::CredentialProcess(name) | Hot::Exec(name, _)) = &hot;
    if matches!(hot, Hot::Exec(..)) && consume::nests(name) {
        return Err(HandOn(None));
    }
    let (c, answer) = fetch(&paths, name)?;
    if matches!(hot, Hot::Exec(..)) {
        consume::note_shared(&c);
    }
    drop(c);
    let creds = match answer {
        Ok(creds) => creds,
        Err(e) => return Ok(fail(&paths, name, e)),
    };
    match hot {
        Hot::CredentialProcess(_) => {
            let mut out = std::io::stdout().lock();
            // SIGPIPE is the default again: a closed stdout ends us as it does any filter.
            if let Err(e) = writeln!(out, "{}", consume::process_json(&creds)).and(out.flush()) {
                eprintln!("elhaz: {e}");
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Hot::Exec(name, command) => {
            let Some((prog, rest)) = command.split_first() else {
                return Err(HandOn(None));
            };
            let mut cmd = Command::new(prog);
            cmd.args(rest);
            for k in consume::OVERRIDING {
                cmd.env_remove(k);
            }
            cmd.envs(consume::session_env(&name, &creds));
            // On success `exec` does not return: the command replaces us, so its exit status
            // and signals are its own.
            let err = cmd.exec();
            eprintln!("elhaz: cannot run {}: {err}", prog.to_string_lossy());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// One credentials request to a daemon that is already running: its credentials, or its
/// error when nothing but printing it is left to do; [`HandOn`] for the rest (no daemon, a
/// bad name, an MFA code or a login to ask for, a broken connection) — `elhaz-full` handles
/// those.
fn fetch(
    paths: &Paths,
    name: &str,
) -> Result<(client::Client, Result<WireCredentials, WireError>), HandOn> {
    crate::config::validate_name(name)?;
    let Some(mut c) = client::connect_existing(paths)? else {
        return Err(HandOn(Some(format!(
            "no elhaz daemon is running on {} (starting one is {FULL_BINARY}'s job)",
            paths.socket.display()
        ))));
    };
    let request = Request::Credentials {
        name: name.to_string(),
        mfa_code: None,
    };
    match consume::call_noting_waits(paths, name, &mut c, request) {
        Ok(Response::Credentials(creds)) => Ok((c, Ok(creds))),
        Ok(other) => Err(HandOn(Some(format!(
            "unexpected reply to a credentials request: {other:?}"
        )))),
        Err(Error::Remote(e)) if !needs_the_terminal(&e) => Ok((c, Err(e))),
        Err(e) => Err(e.into()),
    }
}

/// The replies `elhaz-full` turns into a prompt (an MFA code) or a login offer.
fn needs_the_terminal(e: &WireError) -> bool {
    e.code == ErrorCode::MfaRequired || (e.code == ErrorCode::LoginRequired && e.sso.is_some())
}

/// The daemon's error, said as `elhaz-full` says it (with "did you mean" for an unknown
/// session), with the exit code [`consume::exit_code`] gives it.
fn fail(paths: &Paths, name: &str, e: WireError) -> ExitCode {
    let hint = (e.code == ErrorCode::NotFound)
        .then(|| consume::did_you_mean(paths, name))
        .flatten();
    match hint {
        Some(hint) => eprintln!("elhaz: {}; {hint}", e.message),
        None => eprintln!("elhaz: {}", e.message),
    }
    consume::exit_code(&Error::Remote(e))
}

/// Replaces this process with `elhaz-full`, same arguments and `argv[0]`; returns only if
/// that fails, saying so — and `why` the hot path needed it, when it was one.
fn delegate(args: &[OsString], why: Option<&str>) -> ExitCode {
    let err = match full_binary() {
        Ok(full) => {
            let mut cmd = Command::new(&full);
            cmd.args(args.iter().skip(1));
            if let Some(arg0) = args.first() {
                cmd.arg0(arg0);
            }
            format!("cannot run {}: {}", full.display(), cmd.exec())
        }
        Err(e) => format!("cannot find this executable's directory: {e}"),
    };
    if let Some(why) = why {
        eprintln!("elhaz: {why}");
    }
    eprintln!(
        "elhaz: {err} — `elhaz` serves credential-process and exec from a running daemon itself \
         and hands everything else to {FULL_BINARY}, installed next to it (`cargo install \
         --path .` installs both)"
    );
    ExitCode::FAILURE
}

/// This executable, symlinks resolved (so a link to `elhaz` finds its siblings).
fn this_exe() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(std::fs::canonicalize(&exe).unwrap_or(exe))
}

/// `elhaz-full` next to this executable.
pub fn full_binary() -> std::io::Result<PathBuf> {
    Ok(this_exe()?.with_file_name(FULL_BINARY))
}

/// The `elhaz` to write into `credential_process` lines and units: the lean binary next to
/// this executable when there is one, else this executable (an `elhaz-full` run on its own).
pub fn front_binary() -> std::io::Result<PathBuf> {
    let exe = this_exe()?;
    let front = exe.with_file_name(FRONT_BINARY);
    Ok(if front.is_file() { front } else { exe })
}

/// Rust ignores SIGPIPE, so a write into a closed pipe (`elhaz config list | head -1`) is an
/// error to handle. For the CLI the default disposition is right: die quietly like any Unix
/// filter. The daemon keeps SIGPIPE ignored (a vanished client must be an error, not a kill).
pub fn restore_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: installing SIG_DFL runs no handler code of ours; called before any thread starts.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Option<Hot> {
        parse(
            std::iter::once("elhaz")
                .chain(args.iter().copied())
                .map(OsString::from),
        )
    }

    #[test]
    fn the_plain_spellings_are_hot() {
        let cp = Some(Hot::CredentialProcess("dev".into()));
        assert_eq!(p(&["credential-process", "dev"]), cp);
        assert_eq!(p(&["credential-process", "--", "dev"]), cp);
        assert_eq!(
            p(&["exec", "dev", "--", "aws", "s3", "ls"]),
            Some(Hot::Exec(
                "dev".into(),
                ["aws", "s3", "ls"].map(OsString::from).to_vec()
            ))
        );
    }

    #[test]
    fn everything_else_goes_to_the_full_parser() {
        for args in [
            &[][..],
            &["credential-process"],
            &["credential-process", "dev", "extra"],
            &["credential-process", "-n", "dev"],
            &["credential-process", "--help"],
            &["credential-process", ""],
            &["exec", "dev"],
            &["exec", "dev", "--"],
            &["exec", "dev", "aws"],
            &["exec", "--refreshing", "dev", "--", "aws"],
            &["export", "dev"],
            &["daemon", "start"],
        ] {
            assert_eq!(p(args), None, "{args:?}");
        }
    }
}
