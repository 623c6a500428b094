//! `elhaz daemon …`

use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use elhaz::client::{self, Started};
use elhaz::config::Secs;
use elhaz::daemon::{lifecycle, state::Options};
use elhaz::paths::Paths;
use elhaz::protocol::{ErrorCode, Request, Response, SessionInfo};

use super::{EXIT_NOT_RUNNING, human_secs};
use elhaz::cli::StartArgs;

/// `daemon start`: serve in the foreground, or start a detached daemon and wait for it.
pub fn start(paths: &Paths, args: StartArgs) -> Result<ExitCode> {
    // A daemon autostarted from inside `exec --ecs` (by its endpoint's threads) inherits their
    // blocked signals, and a signal mask survives exec: start from an empty one, or SIGTERM
    // would never reach the daemon's handlers.
    let _ = nix::sys::signal::SigSet::all().thread_unblock();
    let idle_timeout = idle_timeout_flag(args.idle_timeout.as_deref())?;
    let socket_mode = mode_flag("--socket-mode", &args.socket_mode)?;
    let socket_dir_mode = mode_flag("--socket-dir-mode", &args.socket_dir_mode)?;
    if args.foreground {
        let options = Options {
            once: args.once,
            capacity: args.capacity.map(|c| c as usize),
            idle_timeout,
            shared: args.shared,
            socket_mode,
            socket_dir_mode,
            group: args.group.clone(),
            token_file: args.token_file.clone(),
        };
        return serve_foreground(paths, options);
    }
    let extra = detached_args(&args, idle_timeout, socket_mode, socket_dir_mode)?;
    let socket = if args.shared && !paths.socket_explicit {
        elhaz::config::Settings::load(&paths.settings_file)?
            .shared
            .and_then(|s| s.socket)
            .unwrap_or_else(|| paths.shared_socket.clone())
    } else {
        paths.socket.clone()
    };
    match client::start_daemon(paths, &socket, &extra)? {
        Started::New(pid) => println!("elhaz daemon started (pid {pid})"),
        Started::Already(pid) => println!("elhaz daemon is already running (pid {pid})"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `--idle-timeout`: a duration of at least one second.
fn idle_timeout_flag(arg: Option<&str>) -> Result<Option<Duration>> {
    arg.map(|s| {
        s.parse::<Secs>()
            .map_err(|e| anyhow::anyhow!("--idle-timeout: {e}"))
            .and_then(|d| {
                if d.0 == 0 {
                    bail!("--idle-timeout: must be at least 1 second")
                } else {
                    Ok(d.duration())
                }
            })
    })
    .transpose()
}

/// A permission-mode flag: octal, at most `0o777`.
fn mode_flag(flag: &str, v: &Option<String>) -> Result<Option<u32>> {
    v.as_deref()
        .map(|s| {
            u32::from_str_radix(s.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| anyhow::anyhow!("{flag} {s:?}: expected an octal mode such as 0660"))
        })
        .transpose()
}

/// `daemon start --foreground`: serve in this process; a daemon already running is success.
fn serve_foreground(paths: &Paths, options: Options) -> Result<ExitCode> {
    match lifecycle::serve(paths, options) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e @ elhaz::Error::AlreadyRunning { pid }) => {
            if !lifecycle::report_start(elhaz::protocol::StartReport::AlreadyRunning { pid }) {
                eprintln!("elhaz: {e}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e.into()),
    }
}

/// The arguments a detached daemon is started with, from the checked flags.
fn detached_args(
    args: &StartArgs,
    idle_timeout: Option<Duration>,
    socket_mode: Option<u32>,
    socket_dir_mode: Option<u32>,
) -> Result<Vec<String>> {
    let mut extra = Vec::new();
    if args.once {
        extra.push("--once".to_string());
    }
    if let Some(c) = args.capacity {
        extra.extend(["--capacity".to_string(), c.to_string()]);
    }
    if let Some(d) = idle_timeout {
        extra.extend(["--idle-timeout".to_string(), d.as_secs().to_string()]);
    }
    if args.shared {
        extra.push("--shared".to_string());
        for (flag, v) in [
            ("--socket-mode", socket_mode),
            ("--socket-dir-mode", socket_dir_mode),
        ] {
            if let Some(m) = v {
                extra.extend([flag.to_string(), format!("{m:o}")]);
            }
        }
        if let Some(g) = &args.group {
            extra.extend(["--group".to_string(), g.clone()]);
        }
    }
    if let Some(f) = &args.token_file {
        // Absolute: the detached daemon's cwd is not ours to rely on.
        let f = std::path::absolute(f).with_context(|| format!("--token-file {}", f.display()))?;
        extra.push("--require-token".to_string());
        extra.extend(["--token-file".to_string(), f.display().to_string()]);
    }
    Ok(extra)
}

/// `daemon stop [--timeout S] [--force | --no-force]`: the flags, else `stop_timeout` and
/// `stop_force` of elhaz.toml, else 10 s without SIGKILL. A settings file that cannot be read
/// does not keep the daemon running: stop warns and uses the defaults (and the flags).
pub fn stop_cmd(
    paths: &Paths,
    timeout: Option<u64>,
    force: bool,
    no_force: bool,
) -> Result<ExitCode> {
    let settings = match elhaz::config::Settings::load(&paths.settings_file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "elhaz: warning: ignoring {} for this stop: {e}",
                paths.settings_file.display()
            );
            elhaz::config::Settings::default()
        }
    };
    let timeout = timeout.unwrap_or_else(|| settings.stop_timeout().as_secs());
    let force = force || (!no_force && settings.stop_force());
    stop(paths, timeout, force)
}

/// `daemon stop [--timeout S] [--force]`: asks the daemon to stop (or SIGTERMs it by its pid
/// file when it cannot answer: another protocol version, or stopped/hung so the request
/// itself times out), waits up to `timeout`, then — with `force` — SIGKILLs it and removes the
/// stale socket and pid file it could not. Prints "stopped" or "killed".
pub fn stop(paths: &Paths, timeout: u64, force: bool) -> Result<ExitCode> {
    let timeout = Duration::from_secs(timeout);
    let deadline = Instant::now() + timeout;
    let pid = match client::connect_existing(paths)? {
        Some(c) => match stop_request(c, timeout) {
            Some(Ok(Response::Stopping { pid })) => Some(pid),
            Some(Ok(other)) => bail!("unexpected reply to stop: {other:?}"),
            // A daemon of another protocol version: it cannot parse our stop; use its pid file.
            Some(Err(elhaz::Error::Remote(e))) if e.code == ErrorCode::ProtocolMismatch => {
                terminate_by_pid(paths)?
            }
            Some(Err(e)) if !force => return Err(e.into()),
            // No answer within the timeout (a stopped or wedged daemon), or a broken one.
            Some(Err(_)) | None if lifecycle::lock_is_held(paths) => terminate_by_pid(paths)?,
            Some(Err(_)) | None => lifecycle::read_pid(paths),
        },
        None if lifecycle::lock_is_held(paths) => terminate_by_pid(paths)?,
        None => {
            println!("elhaz daemon is not running");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let pid_text = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    while lifecycle::lock_is_held(paths) {
        if Instant::now() >= deadline {
            if force && let Some(p) = pid {
                return kill_and_clean(paths, p);
            }
            bail!(
                "the elhaz daemon{pid_text} did not exit within {}s; it may be finishing a slow \
                 STS call. Run `elhaz daemon stop --force` to SIGKILL it and clean up",
                timeout.as_secs(),
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("elhaz daemon stopped{pid_text}");
    Ok(ExitCode::SUCCESS)
}

/// Sends the stop request on a helper thread and waits at most `timeout` for the reply (a
/// SIGSTOPped daemon accepts the connection but never answers).
fn stop_request(
    mut c: client::Client,
    timeout: Duration,
) -> Option<std::result::Result<Response, elhaz::Error>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(c.call(Request::Stop));
    });
    rx.recv_timeout(timeout).ok()
}

/// SIGKILLs `pid` (only while it still holds the lock), waits for the lock to be released and
/// removes the socket and pid file it left.
fn kill_and_clean(paths: &Paths, pid: u32) -> Result<ExitCode> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    if lifecycle::lock_is_held(paths) && lifecycle::read_pid(paths) == Some(pid) {
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL)
            .with_context(|| format!("cannot SIGKILL the elhaz daemon (pid {pid})"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while lifecycle::lock_is_held(paths) {
        if Instant::now() >= deadline {
            bail!("the elhaz daemon (pid {pid}) survived SIGKILL for 10s; check `ps -p {pid}`");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    lifecycle::remove_stale_socket(&paths.socket)?;
    if lifecycle::read_pid(paths) == Some(pid) {
        std::fs::remove_file(&paths.pid_file)
            .with_context(|| format!("cannot remove {}", paths.pid_file.display()))?;
    }
    println!("elhaz daemon killed (pid {pid}); removed its stale socket and pid file");
    Ok(ExitCode::SUCCESS)
}

/// Sends SIGTERM to the pid in the pid file (only while a daemon holds the lock).
fn terminate_by_pid(paths: &Paths) -> Result<Option<u32>> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let Some(pid) = lifecycle::read_pid(paths) else {
        bail!(
            "a daemon holds {} but its pid file {} is unreadable",
            paths.lock_file.display(),
            paths.pid_file.display()
        );
    };
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM)
        .with_context(|| format!("cannot signal the elhaz daemon (pid {pid})"))?;
    Ok(Some(pid))
}

pub fn status(paths: &Paths, json: bool) -> Result<ExitCode> {
    let reply = match client::connect_existing(paths)? {
        Some(mut c) => Some(c.call(Request::Status)?),
        None => None,
    };
    let Some(Response::Status(s)) = reply else {
        if reply.is_some() {
            bail!("unexpected reply to status");
        }
        if json {
            println!(
                "{}",
                serde_json::json!({"running": false, "socket": paths.socket, "paths": paths})
            );
        } else {
            println!(
                "elhaz daemon is not running (socket {})",
                paths.socket.display()
            );
        }
        return Ok(ExitCode::from(EXIT_NOT_RUNNING));
    };
    if json {
        let mut v = serde_json::to_value(&s)?;
        v["running"] = true.into();
        v["paths"] = serde_json::to_value(paths)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("elhaz daemon is running");
        println!("  pid        {}", s.pid);
        println!("  version    {} (protocol {})", s.version, s.protocol);
        println!("  uptime     {}", human_secs(s.uptime_s));
        println!("  socket     {}", s.socket);
        println!("  sessions   {} of {}", s.sessions, s.capacity);
        println!(
            "  idle exit  {}",
            s.idle_timeout_s
                .map_or("never".into(), |t| format!("after {}", human_secs(t)))
        );
        println!("  configs    {}", paths.configs_dir.display());
        println!("  logs       {}", paths.log_dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list(
    paths: &Paths,
    pattern: Option<String>,
    state: Option<String>,
    json: bool,
) -> Result<ExitCode> {
    let Some(mut c) = client::connect_existing(paths)? else {
        if json {
            println!("[]");
        } else {
            println!("elhaz daemon is not running; no sessions cached");
        }
        return Ok(ExitCode::SUCCESS);
    };
    let filtered = pattern.is_some() || state.is_some();
    let Response::Sessions { sessions, .. } = c.call(Request::List { state, pattern })? else {
        bail!("unexpected reply to list");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&sessions)?);
        return Ok(ExitCode::SUCCESS);
    }
    if sessions.is_empty() {
        println!(
            "{}",
            if filtered {
                "no cached session matches"
            } else {
                "no sessions cached"
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    print_sessions(&sessions);
    Ok(ExitCode::SUCCESS)
}

/// A time as "PREFIX 5m" ahead of `now` or "5m ago" behind it; `-` when absent or unreadable.
fn relative(now: std::time::SystemTime, t: &Option<String>, prefix: &str) -> String {
    t.as_deref()
        .and_then(|s| humantime::parse_rfc3339(s).ok())
        .map(|t| match t.duration_since(now) {
            Ok(d) => format!("{prefix} {}", human_secs(d.as_secs())),
            Err(e) => format!("{} ago", human_secs(e.duration().as_secs())),
        })
        .unwrap_or_else(|| "-".into())
}

/// `daemon list`'s table: one row per session, its notes indented under it.
fn print_sessions(sessions: &[SessionInfo]) {
    let now = std::time::SystemTime::now();
    let rel = |t: &Option<String>, prefix: &str| relative(now, t, prefix);
    let rows: Vec<[String; 6]> = sessions
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                s.state.to_string(),
                s.source.clone(),
                // The daemon's own verdict (both its clocks, skew-corrected) when it gives one.
                match s.expires_in_s {
                    Some(left) if left >= 0 => format!("expires in {}", human_secs(left as u64)),
                    Some(left) => format!("{} ago", human_secs(left.unsigned_abs())),
                    None => rel(&s.expiration, "expires in"),
                },
                rel(&s.next_refresh, "refresh in"),
                s.hits.to_string(),
            ]
        })
        .collect();
    let header = ["NAME", "STATE", "SOURCE", "EXPIRES", "NEXT REFRESH", "HITS"];
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(&header);
    for (r, s) in rows.iter().zip(sessions) {
        line(&r.iter().map(String::as_str).collect::<Vec<_>>());
        print_session_notes(s, now);
    }
}

/// The lines under a session's row: its last error, warning, MFA session and clock skew.
fn print_session_notes(s: &SessionInfo, now: std::time::SystemTime) {
    if let Some(e) = &s.last_error {
        println!("    last error: {e}");
    }
    if let Some(w) = &s.warning {
        println!("    warning: {w}");
    }
    if s.mfa_expiration.is_some() {
        println!(
            "    mfa session: {}",
            relative(now, &s.mfa_expiration, "expires in")
        );
    }
    if let Some(k) = s.clock_skew_secs {
        println!(
            "    clock skew: the daemon's clock is {} {} STS's (expiry is judged on STS's clock)",
            human_secs(k.unsigned_abs()),
            if k > 0 { "behind" } else { "ahead of" }
        );
    }
}

pub fn add(paths: &Paths, name: &str) -> Result<ExitCode> {
    let mut c = client::connect_or_start(paths)?;
    let reply = match c.call(Request::Add {
        name: name.to_string(),
    }) {
        // A session behind MFA: prompt on the terminal (as credential-process does), which
        // establishes the MFA session; then the add succeeds without a code.
        Err(elhaz::Error::Remote(e)) if e.code == ErrorCode::MfaRequired => {
            super::consume::fetch(paths, name)?;
            c.call(Request::Add {
                name: name.to_string(),
            })?
        }
        other => other?,
    };
    let Response::Added { session } = reply else {
        bail!("unexpected reply to add");
    };
    println!("session {} loaded ({})", session.name, session.state);
    if let Some(w) = session.warning {
        eprintln!("elhaz: warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn remove(paths: &Paths, name: &str) -> Result<ExitCode> {
    let Some(mut c) = client::connect_existing(paths)? else {
        println!("elhaz daemon is not running; nothing to remove");
        return Ok(ExitCode::SUCCESS);
    };
    let Response::Removed { was_cached, .. } = c.call(Request::Remove {
        name: name.to_string(),
    })?
    else {
        bail!("unexpected reply to remove");
    };
    if was_cached {
        println!("session {name} evicted");
    } else {
        let hint = super::did_you_mean(paths, name)
            .map(|h| format!(" (no config named {name}; {h})"))
            .unwrap_or_default();
        println!("session {name} was not cached{hint}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn logs(paths: &Paths, lines: usize, follow: bool, audit: bool) -> Result<ExitCode> {
    let prefix = if audit {
        elhaz::logging::AUDIT_PREFIX
    } else {
        elhaz::logging::LOG_PREFIX
    };
    let list = || elhaz::logging::files_with_prefix(&paths.log_dir, prefix);
    let files = list();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Tail: walk files newest first until we have enough lines.
    let mut tail: std::collections::VecDeque<String> = Default::default();
    for f in files.iter().rev() {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for l in text.lines().rev() {
            if tail.len() >= lines {
                break;
            }
            tail.push_front(l.to_string());
        }
        if tail.len() >= lines {
            break;
        }
    }
    for l in &tail {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    if files.is_empty() && !follow {
        eprintln!("elhaz: no logs yet in {}", paths.log_dir.display());
    }
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Follow the newest file; when a newer one appears (rotation), finish the old one and move.
    let mut current = files.last().cloned();
    let mut pos = current
        .as_ref()
        .and_then(|f| std::fs::metadata(f).ok())
        .map_or(0, |m| m.len());
    loop {
        if let Some(f) = &current
            && let Ok(mut file) = std::fs::File::open(f)
        {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            if len < pos {
                pos = 0; // truncated
            }
            if len > pos {
                file.seek(SeekFrom::Start(pos))?;
                let mut reader = std::io::BufReader::new(file.take(len - pos));
                let mut buf = String::new();
                while reader.read_line(&mut buf)? > 0 {
                    out.write_all(buf.as_bytes())?;
                    buf.clear();
                }
                out.flush()?;
                pos = len;
            }
        }
        let newest = list().last().cloned();
        if newest.is_some() && newest != current {
            current = newest;
            pos = 0;
            continue;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
