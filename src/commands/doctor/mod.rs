//! `elhaz doctor [--json]`: a list of checks, each OK / WARN / FAIL with a one-line fix.
//!
//! - paths: the configs, run and log directories (missing is fine), the socket, `elhaz.toml`
//!   and every session config — owned by us, not accessible to others, valid;
//! - daemon: reachable (never autostarted), same protocol and version as this CLI;
//! - sessions (when a daemon answers): none of its cached sessions `failed` or `stale`;
//! - keyring: the OS store answers (a lookup of a random entry must say "not found");
//! - AWS profiles: every `credential_process` in the AWS config file that runs elhaz points at
//!   an executable elhaz and at a session that has a valid config;
//! - clock skew: the `Date` of an (unsigned-for-real) STS reply against the local clock, within
//!   3 seconds or not at all.
//!
//! Exit status 1 if any check FAILs, else 0. Nothing secret is ever printed: of the AWS config
//! file only `credential_process` values are shown.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Result;

use super::{aws_config, human_secs};
use elhaz::config::{self, Settings, Store};
use elhaz::paths::Paths;
use elhaz::protocol::{ErrorCode, PROTOCOL_VERSION, Request, Response, StatusInfo};
use serde::Serialize;

/// How long the daemon may take to answer a ping and a status request.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound of the whole clock-skew probe.
const SKEW_TIMEOUT: Duration = Duration::from_secs(3);
/// Skew above which STS rejects signatures.
const SKEW_FAIL: Duration = Duration::from_secs(5 * 60);
/// Skew worth a warning.
const SKEW_WARN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Serialize)]
struct Check {
    check: String,
    status: Status,
    detail: String,
    fix: Option<String>,
}

#[derive(Default)]
struct Report(Vec<Check>);

impl Report {
    fn add(
        &mut self,
        status: Status,
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: Option<String>,
    ) {
        self.0.push(Check {
            check: check.into(),
            status,
            detail: detail.into(),
            fix,
        });
    }
    fn ok(&mut self, check: impl Into<String>, detail: impl Into<String>) {
        self.add(Status::Ok, check, detail, None);
    }
    fn warn(
        &mut self,
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.add(Status::Warn, check, detail, Some(fix.into()));
    }
    fn fail(
        &mut self,
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.add(Status::Fail, check, detail, Some(fix.into()));
    }
}

pub fn run(paths: &Paths, json: bool) -> Result<ExitCode> {
    let mut r = Report::default();
    // The daemon probe first: it runs on its own thread, before anything else starts any.
    let daemon = std::thread::spawn({
        let paths = paths.clone();
        move || probe_daemon(&paths)
    });
    let keyring_users = check_paths(&mut r, paths);
    check_daemon(&mut r, daemon);
    check_keyring(&mut r, &keyring_users);
    check_aws_profiles(&mut r, paths);
    check_clock(&mut r);

    let worst = r.0.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
    if json {
        println!("{}", serde_json::to_string_pretty(&r.0)?);
    } else {
        print_human(&r.0);
    }
    Ok(if worst == Status::Fail {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_human(checks: &[Check]) {
    let w = checks
        .iter()
        .map(|c| c.check.chars().count())
        .max()
        .unwrap_or(5);
    for c in checks {
        println!("{:<4}  {:<w$}  {}", c.status.label(), c.check, c.detail);
        if let Some(fix) = &c.fix {
            println!("{:<4}  {:<w$}  fix: {fix}", "", "");
        }
    }
    let count = |s| checks.iter().filter(|c| c.status == s).count();
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    println!(
        "\n{}: {} ok, {}, {}",
        plural(checks.len(), "check"),
        count(Status::Ok),
        plural(count(Status::Warn), "warning"),
        plural(count(Status::Fail), "failure")
    );
}

mod clock;
mod daemon;
mod fs;
mod keyring;
mod profiles;

use clock::*;
use daemon::*;
use fs::*;
use keyring::*;
use profiles::*;
