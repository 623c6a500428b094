//! Shared helpers for the integration tests.
//!
//! Every test gets its own [`TestEnv`]: a temp directory whose `home/` is the `ELHAZ_HOME` of
//! every command it runs, plus scratch space next to it (`root()`) for input files, editor
//! scripts and the output of foreground daemons. Commands run the real binary with every
//! inherited `ELHAZ_*` / `AWS_*` variable removed, so the developer's own daemon, configs and
//! AWS credentials can never leak into a test.
//!
//! Nothing here sleeps for a fixed time: waits are bounded polls ([`wait_until`]). Every daemon
//! a test starts is owned by a guard that stops it on drop ([`DaemonGuard`] for
//! `--foreground` children, [`DetachedDaemon`] for `elhaz daemon start`), and `TestEnv`'s own
//! `Drop` stops any daemon still serving its home (e.g. one autostarted by `daemon add`).
//!
//! Helpers panic with the full command, directory, exit status, stdout and stderr (ripgrep
//! style), so a failure explains itself.
//!
//! Later modules (the credential engine's) add their own servers (e.g. a moto STS) and hand
//! their endpoint to the daemon with [`TestEnv::set_env`].

#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_elhaz");

/// Upper bound for anything that should happen "promptly" (a daemon coming up or going away).
/// Generous so a loaded CI machine does not flake; a passing run never waits this long.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A syntactically valid role ARN for configs.
pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/dev";

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Output's stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Output's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A command line as a shell-ish string (for messages).
pub fn show_cmd(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        let k = k.to_string_lossy();
        let shown =
            k.starts_with("ELHAZ_") || k.starts_with("AWS_") || k == "EDITOR" || k == "VISUAL";
        if shown && let Some(v) = v {
            let _ = write!(s, "{k}={:?} ", v.to_string_lossy());
        }
    }
    let _ = write!(s, "{:?}", cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        let _ = write!(s, " {:?}", a.to_string_lossy());
    }
    s
}

/// A ripgrep-style report of a command and what it did.
pub fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "\n===== command =====\n{}\n===== dir =====\n{}\n===== status =====\n{}\n\
         ===== stdout =====\n{}\n===== stderr =====\n{}\n===================\n",
        show_cmd(cmd),
        cmd.get_current_dir()
            .map_or("<inherited>".into(), |d| d.display().to_string()),
        out.status,
        stdout(out),
        stderr(out),
    )
}

/// Runs `cmd` to completion, capturing its output.
pub fn output_of(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", show_cmd(cmd)))
}

/// Runs `cmd` and requires exit status 0.
pub fn cmd_ok(cmd: &mut Command) -> Output {
    let out = output_of(cmd);
    assert!(
        out.status.success(),
        "command failed unexpectedly{}",
        describe(cmd, &out)
    );
    out
}

/// Runs `cmd` and requires a non-zero exit status (not a signal death).
pub fn cmd_fail(cmd: &mut Command) -> Output {
    let out = output_of(cmd);
    assert!(
        !out.status.success() && out.status.code().is_some(),
        "command was expected to fail with an exit code{}",
        describe(cmd, &out)
    );
    out
}

/// Runs `cmd` and requires exit code `code`.
pub fn cmd_code(cmd: &mut Command, code: i32) -> Output {
    let out = output_of(cmd);
    assert_eq!(
        out.status.code(),
        Some(code),
        "unexpected exit status (wanted {code}){}",
        describe(cmd, &out)
    );
    out
}

/// Asserts that `hay` contains every needle, with a readable message.
#[track_caller]
pub fn assert_contains(hay: &str, needles: &[&str]) {
    for n in needles {
        assert!(hay.contains(n), "expected {n:?} in:\n{hay}");
    }
}

/// Whether `pid` is a live process. A zombie awaiting its parent's `wait` has finished (its
/// parent may be init, which reaps when it likes), but a zombie thread-group leader whose
/// other threads are still exiting has not: they may still hold its files and sockets.
pub fn pid_running(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        let state = |stat_path: &str| -> Option<String> {
            let stat = std::fs::read_to_string(stat_path).ok()?;
            // The state follows the parenthesised command name (which may contain spaces).
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().next().map(str::to_string)
        };
        let Some(leader) = state(&format!("/proc/{pid}/stat")) else {
            return false;
        };
        if !matches!(leader.as_str(), "Z" | "X" | "x") {
            return true;
        }
        // Leader done: any other thread still alive?
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name() != *pid.to_string().as_str())
            .any(|e| {
                state(&format!(
                    "/proc/{pid}/task/{}/stat",
                    e.file_name().to_string_lossy()
                ))
                .is_some_and(|s| !matches!(s.as_str(), "Z" | "X" | "x"))
            })
    }
    #[cfg(not(target_os = "linux"))]
    {
        kill(Pid::from_raw(pid as i32), None).is_ok()
    }
}

/// Whether `pid` runs the binary under test (guards against pid reuse before we kill it).
pub fn pid_is_elhaz(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .ok()
            .and_then(|c| c.split(|&b| b == 0).next().map(<[u8]>::to_vec))
            .is_some_and(|argv0| {
                // The lean `elhaz` or its `elhaz-full`, run by path or started as `elhaz`.
                let full = Path::new(BIN).with_file_name("elhaz-full");
                let canonical = std::fs::canonicalize(BIN).unwrap_or_default();
                [Path::new(BIN), full.as_path(), canonical.as_path()]
                    .iter()
                    .any(|b| argv0 == b.as_os_str().as_encoded_bytes())
            })
    }
    #[cfg(not(target_os = "linux"))]
    {
        pid_running(pid)
    }
}

/// The pids holding a `flock` on `file`, from `/proc/locks` (Linux only; `None` elsewhere).
pub fn flock_holders(file: &Path) -> Option<Vec<u32>> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let meta = std::fs::metadata(file).ok()?;
    let dev = meta.dev();
    let (major, minor) = (
        nix::sys::stat::major(dev) as u64,
        nix::sys::stat::minor(dev) as u64,
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let mut pids = Vec::new();
    for line in locks.lines() {
        // "1: FLOCK  ADVISORY  WRITE 19408 fe:00:10043413 0 EOF" ("->" marks waiters).
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"FLOCK") || fields.contains(&"->") {
            continue;
        }
        let (Some(pid), Some(id)) = (fields.get(4), fields.get(5)) else {
            continue;
        };
        let parts: Vec<&str> = id.split(':').collect();
        let [ma, mi, ino] = parts[..] else { continue };
        let same = u64::from_str_radix(ma, 16).ok() == Some(major)
            && u64::from_str_radix(mi, 16).ok() == Some(minor)
            && ino.parse::<u64>().ok() == Some(meta.ino());
        if same && let Ok(pid) = pid.parse() {
            pids.push(pid);
        }
    }
    Some(pids)
}

/// Mode bits (permission part) of a path, not following symlinks.
pub fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Sets the permission bits of `p`.
pub fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", p.display()));
}

/// Whether we run as root (some checks need another uid).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Prints a loud line for a check that cannot run here.
pub fn skipped_check(reason: &str) {
    eprintln!("SKIPPED-CHECK: {reason}");
}

/// A per-test environment: temp dir, `ELHAZ_HOME`, extra env for every command.
pub struct TestEnv {
    root: tempfile::TempDir,
    home: PathBuf,
    extra_env: Mutex<Vec<(OsString, OsString)>>,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    /// A fresh environment; `home()` exists (0700) and is empty.
    pub fn new() -> TestEnv {
        let root = tempfile::Builder::new()
            .prefix("elhaz-it.")
            .tempdir()
            .expect("cannot create a temp dir");
        let home = root.path().join("home");
        std::fs::create_dir(&home).expect("cannot create the test home");
        chmod(&home, 0o700);
        TestEnv {
            root,
            home,
            extra_env: Mutex::new(Vec::new()),
        }
    }

    /// Scratch directory (parent of `home()`); commands run with it as their cwd.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// `ELHAZ_HOME`.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// A path in the scratch directory.
    pub fn scratch(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// Writes a scratch file and returns its path.
    pub fn write_scratch(&self, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.scratch(rel);
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
        p
    }

    /// `configs/`.
    pub fn configs_dir(&self) -> PathBuf {
        self.home.join("configs")
    }

    /// `configs/NAME.toml`.
    pub fn config_file(&self, name: &str) -> PathBuf {
        self.configs_dir().join(format!("{name}.toml"))
    }

    /// `elhaz.toml`.
    pub fn settings_file(&self) -> PathBuf {
        self.home.join("elhaz.toml")
    }

    /// `run/`.
    pub fn run_dir(&self) -> PathBuf {
        self.home.join("run")
    }

    /// The socket (honours an `ELHAZ_SOCKET` set with [`TestEnv::set_env`]).
    pub fn socket(&self) -> PathBuf {
        self.extra_env
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(k, _)| k == "ELHAZ_SOCKET")
            .map_or_else(|| self.run_dir().join("elhaz.sock"), |(_, v)| v.into())
    }

    /// `run/elhaz.pid`.
    pub fn pid_file(&self) -> PathBuf {
        self.run_dir().join("elhaz.pid")
    }

    /// `run/elhaz.lock`.
    pub fn lock_file(&self) -> PathBuf {
        self.run_dir().join("elhaz.lock")
    }

    /// `logs/`.
    pub fn log_dir(&self) -> PathBuf {
        self.home.join("logs")
    }

    /// Adds a variable to the environment of every later command (and of the guards' `stop`).
    pub fn set_env(&self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) {
        self.extra_env
            .lock()
            .unwrap()
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
    }

    /// A command for `program` with the test environment: inherited `ELHAZ_*`, `AWS_*`,
    /// `EDITOR` and `VISUAL` removed; `ELHAZ_HOME`, `ELHAZ_LOG=debug`, a shared-daemon socket
    /// that does not exist, and a hermetic AWS environment (IMDS disabled, AWS config and
    /// credentials files pointing at nothing) set;
    /// then the variables added with [`TestEnv::set_env`]; stdin null; cwd the scratch dir.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        for (k, _) in std::env::vars_os() {
            let name = k.to_string_lossy();
            if name.starts_with("ELHAZ_")
                || name.starts_with("AWS_")
                || name == "EDITOR"
                || name == "VISUAL"
            {
                cmd.env_remove(&k);
            }
        }
        cmd.env("ELHAZ_HOME", &self.home)
            .env("ELHAZ_LOG", "debug")
            // Hermetic AWS: no instance metadata probes, no ~/.aws files.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", self.scratch("aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.scratch("aws-credentials"),
            )
            // Never discover a shared daemon of this machine.
            .env("ELHAZ_SHARED_SOCKET", self.scratch("no-shared-daemon.sock"))
            .current_dir(self.root())
            .stdin(Stdio::null());
        for (k, v) in self.extra_env.lock().unwrap().iter() {
            cmd.env(k, v);
        }
        cmd
    }

    /// `elhaz ARGS…` in the test environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.command(BIN);
        cmd.args(args);
        cmd
    }

    /// `elhaz ARGS…` run under `umask MASK` (set by a `sh` wrapper: the test process's own
    /// umask is never touched, as tests share it under `cargo test`).
    pub fn cmd_umask(&self, mask: u32, args: &[&str]) -> Command {
        let mut cmd = self.command("sh");
        cmd.arg("-c")
            .arg(format!("umask {mask:03o}; exec \"$0\" \"$@\""))
            .arg(BIN)
            .args(args);
        cmd
    }

    /// Runs `elhaz ARGS…`, requiring success.
    pub fn run_ok(&self, args: &[&str]) -> Output {
        cmd_ok(&mut self.cmd(args))
    }

    /// Runs `elhaz ARGS…`, requiring failure (non-zero exit code).
    pub fn run_fail(&self, args: &[&str]) -> Output {
        cmd_fail(&mut self.cmd(args))
    }

    /// Runs `elhaz ARGS…`, requiring exit code `code`.
    pub fn run_code(&self, args: &[&str], code: i32) -> Output {
        cmd_code(&mut self.cmd(args), code)
    }

    /// Runs `elhaz ARGS…` with `input` on stdin, returning the output whatever the status.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> (Command, Output) {
        let mut cmd = self.cmd(args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", show_cmd(&cmd)));
        let mut sin = child.stdin.take().unwrap();
        // A child that rejects early may close stdin first; that is its business.
        let _ = sin.write_all(input);
        drop(sin);
        let out = child.wait_with_output().unwrap();
        (cmd, out)
    }

    /// Writes `elhaz.toml`.
    pub fn write_settings(&self, text: &str) {
        std::fs::write(self.settings_file(), text).unwrap();
    }

    /// Adds a valid session config `name` assuming [`ROLE_ARN`].
    pub fn add_config(&self, name: &str) {
        self.run_ok(&["config", "add", name, "--role-arn", ROLE_ARN]);
    }

    /// The pid in the pid file.
    pub fn pid_from_file(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Whether the socket currently accepts a connection.
    pub fn socket_accepts(&self) -> bool {
        UnixStream::connect(self.socket()).is_ok()
    }

    /// `elhaz daemon status --json` of a running daemon.
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.run_ok(&["daemon", "status", "--json"]);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{}", stdout(&out)))
    }

    /// The pid a running daemon reports in `status --json`.
    pub fn status_pid(&self) -> u32 {
        let v = self.status_json();
        v["pid"].as_u64().unwrap_or_else(|| panic!("no pid in {v}")) as u32
    }

    /// Every log file's text, concatenated oldest first.
    pub fn log_text(&self) -> String {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.log_dir())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
            .collect()
    }

    /// Waits (bounded) until the daemon's log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        wait_until(DEADLINE, || self.log_text().contains(needle))
    }

    /// Starts `elhaz daemon start --foreground EXTRA…` as a child and waits until its socket
    /// accepts (connecting without sending a frame, which is not a request: `--once` daemons
    /// are not used up by this check).
    pub fn start_daemon_foreground(&self, extra: &[&str]) -> DaemonGuard<'_> {
        let mut args = vec!["daemon", "start", "--foreground"];
        args.extend_from_slice(extra);
        let mut cmd = self.cmd(&args);
        self.spawn_daemon(&mut cmd)
    }

    /// Spawns a prepared `daemon start --foreground` command and waits for its socket.
    pub fn spawn_daemon(&self, cmd: &mut Command) -> DaemonGuard<'_> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out_path = self.scratch(&format!("daemon-{n}.stdout"));
        let err_path = self.scratch(&format!("daemon-{n}.stderr"));
        cmd.stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", show_cmd(cmd)));
        let mut guard = DaemonGuard {
            env: self,
            child,
            command: show_cmd(cmd),
            stdout_path: out_path,
            stderr_path: err_path,
        };
        let socket = self.socket();
        let mut exited = None;
        let ready = wait_until(DEADLINE, || {
            if let Ok(Some(st)) = guard.child.try_wait() {
                exited = Some(st);
                return true;
            }
            UnixStream::connect(&socket).is_ok()
        });
        if let Some(st) = exited {
            panic!(
                "the foreground daemon exited before serving ({st}){}",
                guard.report()
            );
        }
        assert!(
            ready,
            "the foreground daemon did not accept on {} within {DEADLINE:?}{}",
            socket.display(),
            guard.report()
        );
        guard
    }

    /// Runs `elhaz daemon start EXTRA…` (detached), requires success, and returns a guard
    /// that stops the daemon on drop.
    pub fn start_daemon_detached(&self, extra: &[&str]) -> DetachedDaemon<'_> {
        let mut args = vec!["daemon", "start"];
        args.extend_from_slice(extra);
        let out = self.run_ok(&args);
        let pid = parse_pid(&stdout(&out))
            .unwrap_or_else(|| panic!("no pid in `daemon start` output:\n{}", stdout(&out)));
        DetachedDaemon { env: self, pid }
    }

    /// Opens a raw connection to the daemon's socket.
    pub fn raw(&self) -> RawConn {
        RawConn::connect(&self.socket())
    }

    /// Stops whatever daemon serves this home: `elhaz daemon stop`, then SIGKILL if needed.
    pub fn stop_any_daemon(&self, known_pid: Option<u32>) {
        let pid = known_pid.or_else(|| self.pid_from_file());
        let _ = self.cmd(&["daemon", "stop", "--timeout", "5"]).output();
        if let Some(pid) = pid
            && pid_running(pid)
            && pid_is_elhaz(pid)
        {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            wait_until(DEADLINE, || !pid_running(pid));
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Safety net for daemons no guard owns (autostart). Only when something suggests one.
        if self.pid_file().exists() || self.socket().exists() {
            self.stop_any_daemon(None);
        }
    }
}

/// The first `pid N` in a line like "elhaz daemon started (pid 123)".
pub fn parse_pid(text: &str) -> Option<u32> {
    let i = text.find("(pid ")?;
    let rest = &text[i + 5..];
    let end = rest.find(')')?;
    rest[..end].trim().parse().ok()
}

/// A `daemon start --foreground` child; SIGKILLed and reaped on drop.
pub struct DaemonGuard<'a> {
    env: &'a TestEnv,
    child: Child,
    command: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl DaemonGuard<'_> {
    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal.
    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid() as i32), sig)
            .unwrap_or_else(|e| panic!("cannot send {sig} to the daemon: {e}"));
    }

    /// Its exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait failed")
    }

    /// Waits (bounded by `timeout`) for it to exit; panics with its output if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut status = None;
        wait_until(timeout, || {
            status = self.try_wait();
            status.is_some()
        });
        status.unwrap_or_else(|| {
            panic!(
                "the daemon did not exit within {timeout:?}{}",
                self.report()
            )
        })
    }

    /// The daemon's stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Command, stdout and stderr for messages.
    pub fn report(&self) -> String {
        format!(
            "\n===== daemon command =====\n{}\n===== dir =====\n{}\n===== stdout =====\n{}\n\
             ===== stderr =====\n{}\n===================\n",
            self.command,
            self.env.root().display(),
            std::fs::read_to_string(&self.stdout_path).unwrap_or_default(),
            self.stderr()
        )
    }
}

impl Drop for DaemonGuard<'_> {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A daemon started with `elhaz daemon start`; `elhaz daemon stop` (then SIGKILL) on drop.
pub struct DetachedDaemon<'a> {
    env: &'a TestEnv,
    /// The pid `daemon start` reported.
    pub pid: u32,
}

impl<'a> DetachedDaemon<'a> {
    /// Takes ownership of a daemon started some other way (a racing start, autostart).
    pub fn adopt(env: &'a TestEnv, pid: u32) -> DetachedDaemon<'a> {
        DetachedDaemon { env, pid }
    }
}

impl Drop for DetachedDaemon<'_> {
    fn drop(&mut self) {
        if pid_running(self.pid) {
            self.env.stop_any_daemon(Some(self.pid));
        }
    }
}

/// Read timeout of raw connections: far below the daemon's own 10 s frame timeout, so a test
/// notices a daemon that waits for bytes that will never come.
pub const RAW_TIMEOUT: Duration = Duration::from_secs(5);

/// A raw connection to the daemon: arbitrary bytes out, frames in.
pub struct RawConn {
    /// The socket.
    pub stream: UnixStream,
}

impl RawConn {
    /// Connects to `socket`.
    pub fn connect(socket: &Path) -> RawConn {
        let stream = UnixStream::connect(socket)
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", socket.display()));
        stream.set_read_timeout(Some(RAW_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(RAW_TIMEOUT)).unwrap();
        RawConn { stream }
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .expect("cannot write to the socket");
    }

    /// Sends one frame: 4-byte big-endian length, then `payload`.
    pub fn send_frame(&mut self, payload: &[u8]) {
        let mut buf = (payload.len() as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(payload);
        self.send_raw(&buf);
    }

    /// Reads one frame's payload.
    pub fn read_frame(&mut self) -> std::io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        assert!(len <= 64 * 1024, "the daemon sent a {len}-byte frame");
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body)?;
        Ok(body)
    }

    /// Reads one reply frame as JSON (panics if there is none).
    pub fn read_reply(&mut self) -> serde_json::Value {
        let payload = self
            .read_frame()
            .unwrap_or_else(|e| panic!("no reply frame from the daemon: {e}"));
        serde_json::from_slice(&payload).unwrap_or_else(|e| {
            panic!(
                "the reply is not JSON ({e}): {}",
                String::from_utf8_lossy(&payload)
            )
        })
    }

    /// Sends `payload` as a frame and reads the reply.
    pub fn request(&mut self, payload: &str) -> serde_json::Value {
        self.send_frame(payload.as_bytes());
        self.read_reply()
    }

    /// Requires the daemon to close the connection (EOF or reset) without sending anything.
    pub fn expect_closed(&mut self) {
        let mut buf = [0u8; 64];
        match self.stream.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!(
                "expected the daemon to close the connection, got {n} bytes: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the daemon to close the connection, got {e}"),
        }
    }
}

/// Asserts `reply` is an error reply with `code` and `id`; returns its message.
#[track_caller]
pub fn assert_error_reply(reply: &serde_json::Value, code: &str, id: u64) -> String {
    assert_eq!(
        reply["protocol"],
        elhaz::protocol::PROTOCOL_VERSION,
        "reply: {reply}"
    );
    assert_eq!(reply["id"], id, "reply: {reply}");
    assert!(reply.get("ok").is_none(), "reply: {reply}");
    assert_eq!(reply["error"]["code"], code, "reply: {reply}");
    let msg = reply["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {reply}"))
        .to_string();
    assert!(!msg.is_empty(), "empty message in {reply}");
    msg
}

/// A snapshot of every file under `dir` (relative path → bytes, or link target for symlinks).
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(rel, format!("-> {}", t.display()).into_bytes());
            } else if ft.is_dir() {
                stack.push(p);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

/// A path of the `elhaz` binary that any uid may execute (with `elhaz-full` next to it, which
/// it hands most commands to). Tests that run it as another user need one: the build's own
/// path may sit under a private directory (a CI clone in a 0700 temp dir, say). The copies live
/// in a world-readable directory keyed by both builds, shared by every test process, and each
/// is made atomically (copy, then rename).
pub fn bin_for_any_uid() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let bin = Path::new(BIN);
        let full = bin.with_file_name("elhaz-full");
        let reachable = bin
            .ancestors()
            .skip(1)
            .all(|d| std::fs::metadata(d).is_ok_and(|m| m.mode() & 0o001 != 0))
            && [bin, full.as_path()]
                .iter()
                .all(|b| std::fs::metadata(b).is_ok_and(|m| m.mode() & 0o001 != 0));
        if reachable {
            return bin.to_path_buf();
        }
        let key = |b: &Path| {
            let meta = std::fs::metadata(b).unwrap();
            format!("{}-{}", meta.len(), meta.mtime_nsec() ^ meta.mtime())
        };
        let dir = std::env::temp_dir().join(format!("elhaz-it-bin-{}-{}", key(bin), key(&full)));
        let _ = std::fs::create_dir(&dir);
        chmod(&dir, 0o755);
        for (src, name) in [(full.as_path(), "elhaz-full"), (bin, "elhaz")] {
            let target = dir.join(name);
            if !target.exists() {
                let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
                std::fs::copy(src, &tmp).unwrap();
                chmod(&tmp, 0o755);
                std::fs::rename(&tmp, &target).unwrap();
            }
        }
        dir.join("elhaz")
    })
    .clone()
}

/// Single-quotes `s` for `sh`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `cmd` with piped output; kills it and returns `None` for the status after `limit`.
pub fn run_limited(cmd: &mut Command, limit: Duration) -> (Option<ExitStatus>, Output, Duration) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", show_cmd(cmd)));
    let (mut o, mut e) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = o.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = e.read_to_end(&mut v);
        v
    });
    let mut status = None;
    wait_until(limit, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    let elapsed = started.elapsed();
    if status.is_none() {
        let _ = child.kill();
    }
    let final_status = child.wait().expect("wait");
    let output = Output {
        status: final_status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    (status, output, elapsed)
}

/// Connections the daemon has accepted on `socket` and not closed (Linux `/proc/net/unix`:
/// accepted server-side sockets carry the listener's path and state 03; sockets still in the
/// listener's backlog show 02).
pub fn accepted_connections(socket: &Path) -> Option<usize> {
    let text = std::fs::read_to_string("/proc/net/unix").ok()?;
    let path = socket.to_str()?;
    Some(
        text.lines()
            .skip(1)
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() >= 8 && f[5] == "03" && f[7] == path
            })
            .count(),
    )
}

/// Serialises the tests that use machine-wide state (`/run/elhaz`, the users and groups they
/// create, `/etc/tmpfiles.d/elhaz.conf`): the shared-daemon test and the documented
/// shared-daemon walkthrough. An advisory `flock` on a file in the temp dir, released on drop.
pub fn system_lock() -> std::fs::File {
    let path = std::env::temp_dir().join("elhaz-it-system.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
    file
}
