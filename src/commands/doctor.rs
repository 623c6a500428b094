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

use super::aws_config;
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

fn my_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Mode and ownership problems of a file or directory, worst first: (status, what, fix).
fn access_problem(
    path: &Path,
    meta: &std::fs::Metadata,
    strict: bool,
) -> Option<(Status, String, String)> {
    let me = my_uid();
    let mode = meta.mode() & 0o7777;
    let shown = path.display();
    if meta.uid() != me {
        return Some((
            Status::Fail,
            format!(
                "{shown} is owned by uid {}, not by you (uid {me})",
                meta.uid()
            ),
            format!("chown {me} {shown}  (or use your own ELHAZ_HOME)"),
        ));
    }
    let want = if meta.is_dir() { "700" } else { "600" };
    if mode & 0o022 != 0 {
        return Some((
            Status::Fail,
            format!("{shown} is writable by group or others (mode {mode:04o})"),
            format!("chmod {want} {shown}"),
        ));
    }
    if mode & 0o077 != 0 {
        return Some((
            if strict { Status::Fail } else { Status::Warn },
            format!("{shown} is accessible to group or others (mode {mode:04o})"),
            format!("chmod {want} {shown}"),
        ));
    }
    None
}

/// A directory that may not exist yet. `strict`: any group/other access is a failure.
fn check_dir(r: &mut Report, label: &str, dir: &Path, strict: bool) {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            r.ok(label, format!("{}: not created yet", dir.display()));
            return;
        }
        Err(e) => {
            r.warn(
                label,
                format!("cannot inspect {}: {e}", dir.display()),
                "check the path with `elhaz paths`",
            );
            return;
        }
    };
    // A symlinked configs or log directory (dotfiles) is fine; the run dir must be real.
    let meta = if meta.file_type().is_symlink() && !strict {
        match std::fs::metadata(dir) {
            Ok(m) => m,
            Err(e) => {
                r.fail(
                    label,
                    format!("{} is a dangling symbolic link: {e}", dir.display()),
                    format!("rm {}", dir.display()),
                );
                return;
            }
        }
    } else {
        meta
    };
    if !meta.is_dir() {
        r.fail(
            label,
            format!(
                "{} is not a directory{}",
                dir.display(),
                if meta.file_type().is_symlink() {
                    " (a symbolic link)"
                } else {
                    ""
                }
            ),
            format!("move {} away; elhaz creates it", dir.display()),
        );
        return;
    }
    match access_problem(dir, &meta, strict) {
        Some((status, detail, fix)) => r.add(status, label, detail, Some(fix)),
        None => r.ok(
            label,
            format!("{} (mode {:04o})", dir.display(), meta.mode() & 0o7777),
        ),
    }
}

/// Paths, permissions and config validity. Returns the configs that use a keyring entry.
fn check_paths(r: &mut Report, paths: &Paths) -> Vec<String> {
    check_dir(r, "configs dir", &paths.configs_dir, false);
    check_dir(r, "run dir", &paths.run_dir, true);
    check_dir(r, "log dir", &paths.log_dir, false);

    match std::fs::symlink_metadata(&paths.socket) {
        Err(_) => r.ok(
            "socket",
            format!(
                "{}: not present (no daemon running here)",
                paths.socket.display()
            ),
        ),
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                r.fail(
                    "socket",
                    format!("{} exists but is not a socket", paths.socket.display()),
                    format!("remove it: rm {}", paths.socket.display()),
                );
            } else {
                match access_problem(&paths.socket, &meta, true) {
                    Some((status, detail, _)) => r.add(
                        status,
                        "socket",
                        detail,
                        Some("restart the daemon (`elhaz daemon stop`; it comes back 0600)".into()),
                    ),
                    None => r.ok(
                        "socket",
                        format!(
                            "{} (mode {:04o})",
                            paths.socket.display(),
                            meta.mode() & 0o7777
                        ),
                    ),
                }
            }
        }
    }

    match std::fs::symlink_metadata(&paths.settings_file) {
        Err(_) => r.ok(
            "settings",
            format!("{}: none (defaults)", paths.settings_file.display()),
        ),
        Ok(meta) => {
            let problem = access_problem(&paths.settings_file, &meta, false);
            match (Settings::load(&paths.settings_file), problem) {
                (Err(e), _) => r.fail(
                    "settings",
                    e.to_string(),
                    "fix the file (docs/configuration.md)",
                ),
                (Ok(_), Some((status, detail, fix))) => {
                    r.add(status, "settings", detail, Some(fix))
                }
                (Ok(_), None) => r.ok(
                    "settings",
                    format!("{}: valid", paths.settings_file.display()),
                ),
            }
        }
    }

    let store = Store::new(paths.configs_dir.clone());
    let custom = config::env_custom_endpoint();
    let mut keyring_users = Vec::new();
    let names = match store.names() {
        Ok(n) => n,
        Err(e) => {
            r.fail(
                "configs",
                e.to_string(),
                "check the configs directory (`elhaz paths`)",
            );
            return keyring_users;
        }
    };
    // Files elhaz ignores because their names are not session names.
    if let Ok(rd) = std::fs::read_dir(&paths.configs_dir) {
        let mut ignored: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .filter(|n| {
                n.strip_suffix(".toml")
                    .is_some_and(|s| config::validate_name(s).is_err())
            })
            .collect();
        ignored.sort();
        for n in ignored {
            r.warn(
                format!("config {n}"),
                "ignored: not a valid session name ([A-Za-z0-9._-], up to 64 characters)",
                "rename the file",
            );
        }
    }
    let mut good = 0;
    for name in &names {
        let file = store.file(name);
        let label = format!("config {name}");
        let problem = match std::fs::symlink_metadata(&file) {
            Ok(meta) if meta.file_type().is_symlink() => None, // load() explains
            Ok(meta) => access_problem(&file, &meta, false),
            Err(_) => None,
        };
        match store.load(name, custom) {
            Err(e) => r.fail(label, e.to_string(), format!("elhaz config edit {name}")),
            Ok(cfg) => {
                if cfg.keyring.is_some() {
                    keyring_users.push(name.clone());
                }
                match problem {
                    Some((status, detail, fix)) => r.add(status, label, detail, Some(fix)),
                    None => good += 1,
                }
            }
        }
    }
    if names.is_empty() {
        r.ok(
            "configs",
            "no session configs yet (`elhaz config add NAME --role-arn ARN`)",
        );
    } else if good > 0 {
        r.ok(
            "configs",
            format!(
                "{good} of {} session config{} valid and private",
                names.len(),
                if names.len() == 1 { "" } else { "s" }
            ),
        );
    }
    keyring_users
}

/// What the daemon probe found.
enum DaemonProbe {
    NotRunning,
    Unreachable(String),
    Mismatch(String),
    Failed(String),
    /// Up, with its cached sessions (`None`: the list request failed).
    Up(StatusInfo, Option<Vec<elhaz::protocol::SessionInfo>>),
}

fn probe_daemon(paths: &Paths) -> DaemonProbe {
    let mut client = match elhaz::client::connect_existing(paths) {
        Ok(Some(c)) => c,
        Ok(None) => return DaemonProbe::NotRunning,
        Err(e) => return DaemonProbe::Unreachable(format!("{e:#}")),
    };
    let classify = |e: elhaz::Error| match e {
        elhaz::Error::Remote(w) if w.code == ErrorCode::ProtocolMismatch => {
            DaemonProbe::Mismatch(w.message)
        }
        other => DaemonProbe::Failed(other.to_string()),
    };
    match client.call(Request::Ping) {
        Ok(Response::Pong { .. }) => {}
        Ok(other) => return DaemonProbe::Failed(format!("unexpected reply to ping: {other:?}")),
        Err(e) => return classify(e),
    }
    match client.call(Request::Status) {
        Ok(Response::Status(s)) => {
            let sessions = match client.call(Request::List {
                state: None,
                pattern: None,
            }) {
                Ok(Response::Sessions { sessions, .. }) => Some(sessions),
                _ => None,
            };
            DaemonProbe::Up(s, sessions)
        }
        Ok(other) => DaemonProbe::Failed(format!("unexpected reply to status: {other:?}")),
        Err(e) => classify(e),
    }
}

fn check_daemon(r: &mut Report, probe: std::thread::JoinHandle<DaemonProbe>) {
    // The probe thread cannot be cancelled; wait for it within a bound, then give up on it.
    let deadline = std::time::Instant::now() + DAEMON_TIMEOUT;
    while !probe.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if !probe.is_finished() {
        r.fail(
            "daemon",
            format!(
                "the daemon accepted but did not answer within {}s",
                DAEMON_TIMEOUT.as_secs()
            ),
            "see `elhaz daemon logs`; restart it with `elhaz daemon stop`",
        );
        return;
    }
    let probe = probe
        .join()
        .unwrap_or_else(|_| DaemonProbe::Failed("the probe panicked".into()));
    match probe {
        DaemonProbe::NotRunning => {
            if elhaz::client::autostart_enabled() {
                r.warn(
                    "daemon",
                    "not running (it starts on first use)",
                    "nothing to do; or `elhaz daemon start` now",
                );
            } else {
                r.warn(
                    "daemon",
                    "not running, and ELHAZ_AUTOSTART=0 keeps it from starting on first use",
                    "elhaz daemon start",
                );
            }
        }
        DaemonProbe::Unreachable(e) => r.fail(
            "daemon",
            e,
            "check the socket with `elhaz paths`; `elhaz daemon stop` clears a stale one",
        ),
        DaemonProbe::Mismatch(m) => r.fail(
            "daemon",
            m,
            "run `elhaz daemon stop` (the next command starts a daemon of this version)",
        ),
        DaemonProbe::Failed(m) => r.fail(
            "daemon",
            m,
            "see `elhaz daemon logs`; restart it with `elhaz daemon stop`",
        ),
        DaemonProbe::Up(s, sessions) => {
            let detail = format!(
                "running (pid {}, elhaz {}, protocol {}, {} of {} sessions cached, up {}) on {}",
                s.pid,
                s.version,
                s.protocol,
                s.sessions,
                s.capacity,
                super::human_secs(s.uptime_s),
                s.socket
            );
            if s.protocol != PROTOCOL_VERSION {
                r.fail(
                    "daemon",
                    format!("{detail}: this CLI speaks protocol {PROTOCOL_VERSION}"),
                    "run `elhaz daemon stop` (the next command starts a daemon of this version)",
                );
            } else if s.version != env!("CARGO_PKG_VERSION") {
                r.warn(
                    "daemon",
                    format!("{detail}: this CLI is elhaz {}", env!("CARGO_PKG_VERSION")),
                    "run `elhaz daemon stop` to switch to this version",
                );
            } else {
                r.ok("daemon", detail);
            }
            if let Some(sessions) = &sessions {
                check_sessions(r, sessions);
            }
        }
    }
}

/// Sessions the daemon holds in `failed` (no valid credentials, last attempt failed) or
/// `stale` (serving still-valid credentials while refreshes fail) state.
fn check_sessions(r: &mut Report, sessions: &[elhaz::protocol::SessionInfo]) {
    use elhaz::protocol::SessionState;
    let describe = |state: SessionState| -> Vec<String> {
        sessions
            .iter()
            .filter(|s| s.state == state)
            .map(|s| match &s.last_error {
                Some(e) => format!("{} ({e})", s.name),
                None => s.name.clone(),
            })
            .collect()
    };
    let (failed, stale) = (
        describe(SessionState::Failed),
        describe(SessionState::Stale),
    );
    if !failed.is_empty() {
        r.fail(
            "sessions",
            format!("{} failed: {}", failed.len(), failed.join("; ")),
            "fix the cause named in the error (config, source, STS endpoint), then retry with \
             `elhaz whoami NAME`; `elhaz daemon list` shows every session",
        );
    }
    if !stale.is_empty() {
        r.warn(
            "sessions",
            format!(
                "{} stale (still-valid credentials, refreshes failing): {}",
                stale.len(),
                stale.join("; ")
            ),
            "the daemon keeps retrying with backoff; `elhaz daemon logs` shows why",
        );
    }
    if failed.is_empty() && stale.is_empty() {
        r.ok(
            "sessions",
            format!("{} cached, none failed or stale", sessions.len()),
        );
    }
}

fn check_keyring(r: &mut Report, users: &[String]) {
    use elhaz::keyring::KeyringError;
    let hint = if cfg!(target_os = "macos") {
        "unlock the login keychain (`security unlock-keychain`)"
    } else {
        "check that `keyctl show` works (containers may block keyctl; `keyctl session` starts a \
         session keyring), or keep keys in an AWS profile instead"
    };
    let result = elhaz::keyring::init().and_then(|()| {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        elhaz::keyring::read(&format!(
            "elhaz-doctor-probe-{}-{nanos:x}",
            std::process::id()
        ))
        .map(|_| ())
    });
    let needed = if users.is_empty() {
        String::new()
    } else {
        format!("; used by {}", users.join(", "))
    };
    let status = if users.is_empty() {
        Status::Warn
    } else {
        Status::Fail
    };
    match result {
        Err(KeyringError::NotFound(_)) => {
            r.ok("keyring", format!("the OS keyring answers{needed}"))
        }
        Ok(()) => r.ok("keyring", format!("the OS keyring answers{needed}")),
        Err(e @ KeyringError::Unavailable(_)) => {
            r.add(status, "keyring", e.to_string(), Some(hint.into()))
        }
        Err(e) => r.add(status, "keyring", e.to_string(), Some(hint.into())),
    }
}

/// The value of `-n NAME` / `--name NAME` / `--name=NAME` anywhere in a command line.
fn name_flag(argv: &[String]) -> Option<String> {
    argv.iter().enumerate().find_map(|(i, a)| match a.as_str() {
        "-n" | "--name" => argv.get(i + 1).cloned(),
        a => a.strip_prefix("--name=").map(str::to_string),
    })
}

/// Finds `prog` like a shell would (a path if it has a slash, else along `$PATH`).
fn resolve_program(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

fn is_executable(p: &Path) -> bool {
    p.is_file() && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok()
}

/// Whether `p` is a Python script (the Python elhaz's entry point).
fn is_python_script(p: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 128];
    let n = std::fs::File::open(p)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    head[..n].starts_with(b"#!")
        && String::from_utf8_lossy(&head[..n])
            .lines()
            .next()
            .is_some_and(|l| l.contains("python"))
}

fn check_aws_profiles(r: &mut Report, paths: &Paths) {
    let Ok(file) = aws_config::file() else {
        r.ok("aws profiles", "no home directory, so no AWS config file");
        return;
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            r.ok(
                "aws profiles",
                format!("no AWS config file at {}", file.display()),
            );
            return;
        }
        Err(e) => {
            r.warn(
                "aws profiles",
                format!("cannot read {}: {e}", file.display()),
                "check AWS_CONFIG_FILE",
            );
            return;
        }
    };
    let store = Store::new(paths.configs_dir.clone());
    let custom = config::env_custom_endpoint();
    let mut found = 0;
    for p in aws_config::credential_processes(&text) {
        let Ok(argv) = elhaz::import::shlex_split(&p.command) else {
            continue;
        };
        let Some(prog) = argv.first() else { continue };
        let base = Path::new(prog)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // `python -m elhaz.cli …` is how the Python elhaz's own `shell` wired itself.
        let python_module = base.starts_with("python")
            && argv
                .windows(2)
                .any(|w| w[0] == "-m" && (w[1] == "elhaz" || w[1].starts_with("elhaz.")));
        if !base.starts_with("elhaz") && !python_module {
            continue;
        }
        found += 1;
        let label = format!("aws profile {}", p.profile);
        let at = format!("{}:{}", file.display(), p.line);
        let rewire = |session: &str| {
            format!(
                "elhaz setup aws-profile {session} --profile {}  (writes this elhaz's path)",
                p.profile
            )
        };
        let session = aws_config::requested_session(&argv[1..]);
        let fix_name = session
            .clone()
            .ok()
            .flatten()
            .or_else(|| name_flag(&argv))
            .unwrap_or_else(|| "NAME".into());
        if python_module {
            r.warn(
                label,
                format!("{at}: `{}` runs the Python elhaz", p.command),
                rewire(&fix_name),
            );
            continue;
        }
        let Some(bin) = resolve_program(prog) else {
            r.fail(
                label,
                format!("{at}: `{prog}` is not on PATH"),
                rewire(&fix_name),
            );
            continue;
        };
        if !bin.exists() {
            r.fail(
                label,
                format!("{at}: {} does not exist", bin.display()),
                rewire(&fix_name),
            );
            continue;
        }
        if !is_executable(&bin) {
            r.fail(
                label,
                format!("{at}: {} is not executable", bin.display()),
                format!("chmod +x {}  (or {})", bin.display(), rewire(&fix_name)),
            );
            continue;
        }
        if is_python_script(&bin) {
            r.warn(
                label,
                format!("{at}: {} is the Python elhaz", bin.display()),
                rewire(&fix_name),
            );
            continue;
        }
        let session = match session {
            Ok(s) => s,
            Err(why) => {
                r.fail(
                    label,
                    format!("{at}: `{}`: {why}", p.command),
                    rewire(&fix_name),
                );
                continue;
            }
        };
        let name = match session {
            Some(n) => n,
            None => {
                let default = Settings::load(&paths.settings_file)
                    .ok()
                    .and_then(|s| s.default_session.map(|d| d.0));
                let only = store
                    .names()
                    .ok()
                    .filter(|n| n.len() == 1)
                    .and_then(|mut n| n.pop());
                match default.or(only) {
                    Some(n) => n,
                    None => {
                        r.fail(
                            label,
                            format!(
                                "{at}: `{}` names no session and there is no default",
                                p.command
                            ),
                            rewire("NAME"),
                        );
                        continue;
                    }
                }
            }
        };
        match store.load(&name, custom) {
            Ok(_) => {
                let conflicts: Vec<&str> = p
                    .other_keys
                    .iter()
                    .map(String::as_str)
                    .filter(|k| aws_config::CONFLICTING_KEYS.contains(k))
                    .collect();
                if conflicts.is_empty() {
                    r.ok(label, format!("{} → session {name}", bin.display()));
                } else {
                    r.warn(
                        label,
                        format!(
                            "{at}: the profile also sets {}, which SDKs may use instead of credential_process",
                            conflicts.join(", ")
                        ),
                        format!("remove those keys from [profile {}]", p.profile),
                    );
                }
            }
            Err(elhaz::Error::ConfigNotFound { .. }) => r.fail(
                label,
                format!("{at}: session {name:?} has no config"),
                format!("elhaz config add {name} --role-arn ARN  (or point the profile at another session)"),
            ),
            Err(e) => r.fail(label, format!("{at}: session {name:?}: {e}"), format!("elhaz config edit {name}")),
        }
    }
    if found == 0 {
        r.ok(
            "aws profiles",
            format!("no credential_process in {} runs elhaz (wire one with `elhaz setup aws-profile NAME`)", file.display()),
        );
    }
}

/// The STS endpoint doctor asks: `AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL`, or global STS.
fn sts_endpoint() -> String {
    ["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "https://sts.amazonaws.com".into())
}

/// Sends one GetCallerIdentity with dummy credentials and returns the server's `Date` and the
/// local time it arrived.
fn probe_sts_date(endpoint: &str) -> Result<(SystemTime, SystemTime), String> {
    use aws_sdk_sts::config::{
        BehaviorVersion, Credentials, Region, retry::RetryConfig, timeout::TimeoutConfig,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "us-east-1".into());
    let capture = elhaz::sts::DateCapture::default();
    let conf = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("doctor", "doctor", None, None, "doctor"))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(SKEW_TIMEOUT)
                .operation_timeout(SKEW_TIMEOUT)
                .build(),
        )
        .interceptor(capture.clone())
        .build();
    let client = aws_sdk_sts::Client::from_conf(conf);
    let sent = runtime.block_on(async {
        tokio::time::timeout(SKEW_TIMEOUT, client.get_caller_identity().send()).await
    });
    let Some((date, local)) = capture.header() else {
        return Err(match sent {
            Err(_) => format!("no answer within {}s", SKEW_TIMEOUT.as_secs()),
            Ok(Err(e)) => elhaz::error::display_chain(&e),
            Ok(Ok(_)) => "the reply has no Date header".into(),
        });
    };
    let server = elhaz::sts::parse_http_date(&date)
        .ok_or_else(|| format!("cannot parse the reply's Date header {date:?}"))?;
    Ok((server, local))
}

fn check_clock(r: &mut Report) {
    let endpoint = sts_endpoint();
    let (server, local) = match probe_sts_date(&endpoint) {
        Ok(v) => v,
        Err(e) => {
            r.warn(
                "clock skew",
                format!("cannot check clock skew against {endpoint}: {e}"),
                "check your network; or ignore this when offline",
            );
            return;
        }
    };
    // `Date` has whole seconds: a clock in sync reads up to one second behind.
    let (skew, direction) = match local.duration_since(server) {
        Ok(ahead) => (ahead.saturating_sub(Duration::from_secs(1)), "ahead of"),
        Err(e) => (e.duration(), "behind"),
    };
    let secs = skew.as_secs();
    let detail = format!("the local clock is {secs}s {direction} {endpoint}");
    let fix = "sync the clock (e.g. `timedatectl set-ntp true`, or restart chrony/ntpd)";
    if skew > SKEW_FAIL {
        r.fail(
            "clock skew",
            format!("{detail}: STS rejects signatures more than 5 minutes off"),
            fix,
        );
    } else if skew > SKEW_WARN {
        r.warn("clock skew", detail, fix);
    } else {
        r.ok("clock skew", detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn name_flags_in_python_command_lines() {
        assert_eq!(
            name_flag(&v(&["python3", "-m", "elhaz.cli", "export", "-n", "dev"])),
            Some("dev".into())
        );
    }
}
