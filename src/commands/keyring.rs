//! `elhaz keyring set|remove|list`: long-term keys go into the OS keyring, read from the
//! terminal (secret without echo) or from stdin — never from argv, where `ps` would show them.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use elhaz::credentials::LongTermKeys;
use elhaz::paths::Paths;
use secrecy::SecretString;
use zeroize::Zeroize;

use elhaz::cli::KeyringCmd;

pub fn run(paths: &Paths, cmd: KeyringCmd) -> Result<ExitCode> {
    match cmd {
        KeyringCmd::Set { entry } => set(paths, &entry),
        KeyringCmd::Remove { entry } => remove(paths, &entry),
        KeyringCmd::List { json } => list(paths, json),
        KeyringCmd::Rotate {
            entry,
            verify_timeout,
        } => {
            let t = verify_timeout
                .parse::<elhaz::config::Secs>()
                .map_err(|e| anyhow::anyhow!("--verify-timeout: {e}"))?;
            super::rotate::run(paths, &entry, t.duration())
        }
    }
}

pub(crate) fn check_entry(entry: &str) -> Result<()> {
    elhaz::config::validate_name(entry).map_err(|_| {
        anyhow::anyhow!(
            "invalid keyring entry {entry:?}: use 1 to 64 characters from A-Z a-z 0-9 . _ -"
        )
    })
}

pub(crate) fn read_index(paths: &Paths) -> Vec<String> {
    std::fs::read_to_string(&paths.keyring_index)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

pub(crate) fn write_index(paths: &Paths, names: &[String]) -> Result<()> {
    if let Some(dir) = paths.keyring_index.parent() {
        elhaz::fsafe::create_dir_mode(dir, 0o700)?;
    }
    let mut text = names.join("\n");
    text.push('\n');
    elhaz::config::atomic_write(&paths.keyring_index, text.as_bytes())?;
    Ok(())
}

/// Reads a line from the terminal with echo off.
fn read_hidden(prompt: &str) -> Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("cannot open the terminal")?;
    let mut w = &tty;
    write!(w, "{prompt}")?;
    w.flush()?;
    let old = tcgetattr(&tty).context("cannot read terminal settings")?;
    let mut quiet = old.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&tty, SetArg::TCSANOW, &quiet).context("cannot turn off echo")?;
    let mut line = String::new();
    let r = std::io::BufReader::new(&tty).read_line(&mut line);
    let _ = tcsetattr(&tty, SetArg::TCSANOW, &old);
    writeln!(w)?;
    r?;
    let s = line.trim().to_string();
    line.zeroize();
    Ok(s)
}

fn set(paths: &Paths, entry: &str) -> Result<ExitCode> {
    check_entry(entry)?;
    let (akid, mut secret) = if std::io::stdin().is_terminal() {
        eprint!("Access key id: ");
        std::io::stderr().flush()?;
        let mut akid = String::new();
        std::io::stdin().read_line(&mut akid)?;
        (akid.trim().to_string(), read_hidden("Secret access key: ")?)
    } else {
        let mut lines = std::io::stdin().lock().lines();
        let akid = lines.next().transpose()?.unwrap_or_default();
        let secret = lines.next().transpose()?.unwrap_or_default();
        (akid.trim().to_string(), secret.trim().to_string())
    };
    let valid_akid =
        (16..=128).contains(&akid.len()) && akid.bytes().all(|b| b.is_ascii_alphanumeric());
    if !valid_akid {
        secret.zeroize();
        bail!(
            "that does not look like an access key id (16 to 128 letters and digits, e.g. AKIA…)"
        );
    }
    if secret.is_empty() {
        bail!(
            "no secret access key given (stdin: first line the access key id, second line the secret)"
        );
    }
    let keys = LongTermKeys {
        access_key_id: akid,
        secret_access_key: SecretString::from(std::mem::take(&mut secret)),
    };
    elhaz::keyring::set(entry, &keys)?;
    let mut names = read_index(paths);
    if !names.iter().any(|n| n == entry) {
        names.push(entry.to_string());
        names.sort();
        write_index(paths, &names)?;
    }
    println!(
        "stored keys for {entry:?} in the OS keyring (use `keyring = \"{entry}\"` in a session config)"
    );
    Ok(ExitCode::SUCCESS)
}

fn remove(paths: &Paths, entry: &str) -> Result<ExitCode> {
    check_entry(entry)?;
    let r = elhaz::keyring::remove(entry);
    let mut names = read_index(paths);
    let listed = names.iter().any(|n| n == entry);
    names.retain(|n| n != entry);
    if listed {
        write_index(paths, &names)?;
    }
    match r {
        Ok(()) => println!("removed keyring entry {entry:?}"),
        Err(elhaz::keyring::KeyringError::NotFound(_)) if listed => {
            println!("keyring entry {entry:?} was already gone; removed it from the index")
        }
        Err(e) => return Err(e.into()),
    }
    Ok(ExitCode::SUCCESS)
}

fn list(paths: &Paths, json: bool) -> Result<ExitCode> {
    let names = read_index(paths);
    if json {
        println!("{}", serde_json::to_string_pretty(&names)?);
    } else if names.is_empty() {
        println!("no keyring entries (add one with `elhaz keyring set ENTRY`)");
    } else {
        for n in names {
            println!("{n}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
