//! `exec --ecs`, `shell --ecs` and `serve ecs`: the ECS container credentials endpoint
//! ([`elhaz::ecs`]) in front of the daemon.
//!
//! `exec --ecs` does not `exec(2)`: elhaz stays the child's parent so the endpoint lives
//! exactly as long as the child. Signal handling, std only (the hot path builds no runtime):
//! the forwarded signals are blocked in every thread before any starts (and unblocked again
//! in the child between fork and exec: a mask survives exec) and one thread takes them with
//! `sigwaitinfo`.
//!
//! - A signal some *process* sent elhaz (`kill`, systemd, a supervisor) is forwarded to the
//!   child. One the *terminal* generated (Ctrl-C, Ctrl-\, a resize: `si_code == SI_KERNEL`) is
//!   not: the child is in the same foreground process group and already got it, and a second
//!   SIGINT would make e.g. Python raise KeyboardInterrupt twice. (Elsewhere than Linux, where
//!   `sigwaitinfo` is missing, every signal is forwarded.)
//! - SIGTERM is "elhaz is asked to stop": the child gets `--stop-signal` (default SIGTERM);
//!   if it has not exited `--stop-timeout` later (default 10 s) it gets SIGKILL, and elhaz says
//!   which of the two ended it.
//! - elhaz exits with the child's status, or 128+N when a signal killed it.
//!
//! Reaping races: the waiting thread uses `waitid(WNOWAIT)` (Linux) to learn of the exit
//! without reaping, marks the child gone under the same mutex the killer takes, and only then
//! reaps, so SIGKILL can never hit a recycled pid.
//!
//! Refused requests (no/wrong token, foreign `Host`) are audited on elhaz's stderr, one line
//! each, naming the peer address and the reason, never the token offered.

use std::ffi::OsString;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use elhaz::client;
use elhaz::ecs::{self, Endpoint, Event, SourceError, Token};
use elhaz::paths::Paths;
use elhaz::protocol::{Request, Response, WireCredentials};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::Pid;

use super::consume::{ENV_SESSION, OVERRIDING, check_nesting, fetch, resolve_name};
use elhaz::cli::{EcsExecArgs, NameArg, ServeEcsArgs};

/// Default seconds between the stop signal and SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: u64 = 10;

/// Signals forwarded to the child.
const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGWINCH,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
];

/// One daemon round trip per request; no prompting (an MFA code was asked for, if needed,
/// before the child started).
fn daemon_source(paths: &Paths, name: &str) -> Arc<dyn ecs::Source> {
    let (paths, name) = (paths.clone(), name.to_string());
    Arc::new(move || -> Result<WireCredentials, SourceError> {
        let mut c = client::connect_or_start(&paths)
            .map_err(|e| SourceError(format!("elhaz daemon: {e}")))?;
        match c.call(Request::Credentials {
            name: name.clone(),
            mfa_code: None,
        }) {
            Ok(Response::Credentials(creds)) => Ok(creds),
            Ok(_) => Err(SourceError(
                "unexpected reply to a credentials request".into(),
            )),
            Err(e) => Err(SourceError(format!("session {name:?}: {e}"))),
        }
    })
}

/// The audit hook: refusals and failures on stderr, one line each.
fn stderr_audit(what: &'static str) -> ecs::Audit {
    Arc::new(move |ev: &Event<'_>| match ev {
        Event::Served { .. } => {}
        Event::Refused { peer, why } => eprintln!(
            "elhaz: {what}: refused a request from {peer}: {} ({})",
            why.reason(),
            why.status()
        ),
        Event::Failed { peer, error } => {
            eprintln!("elhaz: {what}: could not serve {peer}: {error}")
        }
    })
}

fn parse_signal(s: &str) -> Result<Signal> {
    let up = s.to_ascii_uppercase();
    let full = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    full.parse::<Signal>().map_err(|_| {
        anyhow!("--stop-signal {s:?}: not a signal name (try TERM, INT, HUP, QUIT, USR1)")
    })
}

/// `elhaz exec --ecs NAME -- CMD…`.
pub fn exec(
    paths: &Paths,
    name: &str,
    command: &[OsString],
    args: &EcsExecArgs,
) -> Result<ExitCode> {
    let stop_signal = parse_signal(args.stop_signal.as_deref().unwrap_or("TERM"))?;
    let stop_timeout = Duration::from_secs(args.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT));
    run_child(paths, name, command, stop_signal, stop_timeout)
}

/// `elhaz shell --ecs`: the user's shell as the `exec --ecs` child.
pub fn shell(paths: &Paths, name: &NameArg, force: bool) -> Result<ExitCode> {
    let name = resolve_name(paths, name.given())?;
    check_nesting(&name, force)?;
    let sh = std::env::var_os("SHELL")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".into());
    eprintln!("elhaz: entering session {name:?} with an ECS endpoint (exit the shell to leave it)");
    run_child(
        paths,
        &name,
        &[sh],
        Signal::SIGTERM,
        Duration::from_secs(DEFAULT_STOP_TIMEOUT),
    )
}

/// Shared between the waiter and the killer: `true` once the child has exited (and may be
/// reaped, after which its pid may be reused).
type Gone = Arc<Mutex<bool>>;

/// Runs `command` as a child with an ECS endpoint for `name`, forwarding signals to it; exits
/// with its status.
fn run_child(
    paths: &Paths,
    name: &str,
    command: &[OsString],
    stop_signal: Signal,
    stop_timeout: Duration,
) -> Result<ExitCode> {
    let (prog, rest) = command
        .split_first()
        .ok_or_else(|| anyhow!("give the command to run after `--`"))?;
    // Errors and MFA prompts happen here, before the child starts.
    let creds = fetch(paths, name)?;

    // Block before any thread exists, so every thread inherits the mask.
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.thread_block().context("cannot block signals")?;

    let (addr, token) = start_endpoint(paths, name)?;
    let mut cmd = child_command(prog, rest, addr, &token, name, set);
    if let Some(r) = &creds.region {
        cmd.env("AWS_REGION", r).env("AWS_DEFAULT_REGION", r);
    }
    drop(creds);
    let child = cmd
        .spawn()
        .map_err(|e| anyhow!("cannot run {}: {e}", prog.to_string_lossy()))?;
    let pid = Pid::from_raw(child.id() as i32);
    let gone: Gone = Arc::new(Mutex::new(false));
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (gone, killed, stopping) = (gone.clone(), killed.clone(), stopping.clone());
        std::thread::Builder::new()
            .name("elhaz-signals".into())
            .spawn(move || signal_loop(set, pid, stop_signal, stop_timeout, gone, killed, stopping))
            .context("cannot start the signal thread")?;
    }
    let status = wait_child(pid, &gone)?;
    let code = match status {
        nix::sys::wait::WaitStatus::Exited(_, c) => c.clamp(0, 255) as u8,
        nix::sys::wait::WaitStatus::Signaled(_, s, _) => 128 + s as u8,
        other => bail!("unexpected wait status for the child: {other:?}"),
    };
    if stopping.load(std::sync::atomic::Ordering::SeqCst)
        && !killed.load(std::sync::atomic::Ordering::SeqCst)
    {
        eprintln!(
            "elhaz: the child (pid {pid}) stopped after {} (exit status {code})",
            signal_name(stop_signal)
        );
    }
    Ok(ExitCode::from(code))
}

/// The ECS endpoint for `name` on a loopback port, with a fresh token.
fn start_endpoint(paths: &Paths, name: &str) -> Result<(SocketAddr, Arc<Token>)> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .context("cannot listen on 127.0.0.1 for the ECS endpoint")?;
    let token = Arc::new(Token::generate());
    let addr = ecs::spawn(
        listener,
        Endpoint {
            token: token.clone(),
            allow_remote_host: false,
            source: daemon_source(paths, name),
            audit: stderr_audit("ecs endpoint"),
        },
    )
    .context("cannot start the ECS endpoint")?;
    Ok((addr, token))
}

/// The child's command: pointed at the endpoint, without the variables that would override
/// it, and with `unblock` (the forwarded signals) unblocked again between fork and exec.
fn child_command(
    prog: &OsString,
    rest: &[OsString],
    addr: SocketAddr,
    token: &Token,
    name: &str,
    unblock: SigSet,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(prog);
    cmd.args(rest);
    for k in OVERRIDING {
        cmd.env_remove(k);
    }
    cmd.env("AWS_CONTAINER_CREDENTIALS_FULL_URI", ecs::full_uri(addr))
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", token.expose())
        .env(ENV_SESSION, name);
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the forked child before exec and only calls
        // pthread_sigmask, which is async-signal-safe; it allocates and locks nothing.
        unsafe {
            cmd.pre_exec(move || {
                unblock
                    .thread_unblock()
                    .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
            });
        }
    }
    cmd
}

fn signal_name(s: Signal) -> &'static str {
    s.as_str()
}

/// Waits for the child to exit, marks it gone, then reaps it.
fn wait_child(pid: Pid, gone: &Gone) -> Result<nix::sys::wait::WaitStatus> {
    use nix::errno::Errno;
    use nix::sys::wait::{WaitPidFlag, waitpid};
    #[cfg(target_os = "linux")]
    loop {
        use nix::sys::wait::{Id, waitid};
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => bail!("cannot wait for the child (pid {pid}): {e}"),
        }
    }
    // A poisoned lock only means the killer thread panicked; the flag is still meaningful.
    let mut g = gone.lock().unwrap_or_else(|p| p.into_inner());
    *g = true;
    loop {
        match waitpid(pid, None) {
            Ok(s) => return Ok(s),
            Err(Errno::EINTR) => continue,
            Err(e) => bail!("cannot wait for the child (pid {pid}): {e}"),
        }
    }
}

/// Sends `sig` to the child unless it is already gone.
fn signal_child(pid: Pid, gone: &Gone, sig: Signal) -> bool {
    let g = gone.lock().unwrap_or_else(|p| p.into_inner());
    if *g {
        return false;
    }
    kill(pid, sig).is_ok()
}

/// Takes the blocked signals one by one and forwards them.
fn signal_loop(
    set: SigSet,
    pid: Pid,
    stop_signal: Signal,
    stop_timeout: Duration,
    gone: Gone,
    killed: Arc<std::sync::atomic::AtomicBool>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    loop {
        let Some((sig, from_process)) = next_signal(&set) else {
            continue;
        };
        if sig == Signal::SIGTERM {
            if !from_process {
                continue;
            }
            if !signal_child(pid, &gone, stop_signal) {
                return;
            }
            if stopping.swap(true, Ordering::SeqCst) {
                continue; // the stop timer already runs
            }
            eprintln!(
                "elhaz: stopping: sent {} to the child (pid {pid}); SIGKILL in {}s unless it exits",
                signal_name(stop_signal),
                stop_timeout.as_secs()
            );
            let (gone, killed) = (gone.clone(), killed.clone());
            let _ = std::thread::Builder::new()
                .name("elhaz-stop-timer".into())
                .spawn(move || {
                    std::thread::sleep(stop_timeout);
                    let g = gone.lock().unwrap_or_else(|p| p.into_inner());
                    if !*g && kill(pid, Signal::SIGKILL).is_ok() {
                        killed.store(true, Ordering::SeqCst);
                        eprintln!(
                            "elhaz: the child (pid {pid}) did not exit within {}s of {}; killed it \
                             with SIGKILL",
                            stop_timeout.as_secs(),
                            signal_name(stop_signal)
                        );
                    }
                });
        } else if from_process && !signal_child(pid, &gone, sig) {
            return;
        }
    }
}

/// The next blocked signal, and whether a process (not the terminal/kernel) sent it.
#[cfg(target_os = "linux")]
fn next_signal(set: &SigSet) -> Option<(Signal, bool)> {
    // SAFETY: `info` is a plain C struct that sigwaitinfo fills; zeroed memory is a valid
    // initial value, and `set` outlives the call.
    let (n, info) = unsafe {
        let mut info: nix::libc::siginfo_t = std::mem::zeroed();
        let n = nix::libc::sigwaitinfo(set.as_ref(), &mut info);
        (n, info)
    };
    if n < 0 {
        return None; // EINTR
    }
    let sig = Signal::try_from(n).ok()?;
    Some((sig, info.si_code != nix::libc::SI_KERNEL))
}

#[cfg(not(target_os = "linux"))]
fn next_signal(set: &SigSet) -> Option<(Signal, bool)> {
    set.wait().ok().map(|s| (s, true))
}

/// `elhaz serve ecs NAME --listen ADDR:PORT`.
pub fn serve(paths: &Paths, args: ServeEcsArgs) -> Result<ExitCode> {
    let name = resolve_name(paths, args.name.given())?;
    let listen: SocketAddr = args.listen.parse().map_err(|e| {
        anyhow!(
            "--listen {:?}: expected ADDR:PORT such as 127.0.0.1:9911 ({e})",
            args.listen
        )
    })?;
    if !listen.ip().is_loopback() {
        if !args.allow_remote {
            bail!(
                "--listen {listen}: not a loopback address; anyone who can reach it and has the \
                 token gets the session's credentials. Pass --allow-remote to do it anyway"
            );
        }
        eprintln!(
            "elhaz: WARNING: serving session {name:?} on non-loopback {listen}; protect the token \
             file and the network path (plain HTTP: the token and credentials cross it unencrypted)"
        );
    }
    // Warm (and prompt for MFA) before serving.
    drop(fetch(paths, &name)?);
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block().context("cannot block signals")?;
    let listener =
        TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    let token = Arc::new(Token::generate());
    write_token_file(&args.token_file, &token)?;
    let addr = ecs::spawn(
        listener,
        Endpoint {
            token: token.clone(),
            allow_remote_host: args.allow_remote,
            source: daemon_source(paths, &name),
            audit: stderr_audit("serve ecs"),
        },
    )
    .context("cannot start the ECS endpoint")?;
    let abs = std::path::absolute(&args.token_file).unwrap_or_else(|_| args.token_file.clone());
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "AWS_CONTAINER_CREDENTIALS_FULL_URI={}",
            ecs::full_uri(addr)
        )?;
        writeln!(
            out,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={}",
            abs.display()
        )?;
        if args.print_token {
            writeln!(out, "AWS_CONTAINER_AUTHORIZATION_TOKEN={}", token.expose())?;
        }
        out.flush()?;
    }
    eprintln!(
        "elhaz: serving session {name:?} at {} until SIGINT/SIGTERM",
        ecs::full_uri(addr)
    );
    let sig = loop {
        if let Ok(s) = set.wait() {
            break s;
        }
    };
    let _ = std::fs::remove_file(&args.token_file);
    eprintln!(
        "elhaz: serve ecs stopped ({}); removed {}",
        sig.as_str(),
        abs.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes the token to `file`, mode 0600 (replacing any file there).
fn write_token_file(file: &Path, token: &Token) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(file);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("--token-file {}: cannot create it", file.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("--token-file {}", file.display()))?;
    f.write_all(token.expose().as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("--token-file {}: cannot write it", file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signal_names() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigint").unwrap(), Signal::SIGINT);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), Signal::SIGUSR1);
        let e = parse_signal("NOPE").unwrap_err().to_string();
        assert!(e.contains("--stop-signal"), "{e}");
    }
}
