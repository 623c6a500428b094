//! The hardening suite: load, bad input, faults and isolation, proving docs/security.md.
//!
//! The tests live in `hardening_load.rs`, `hardening_input.rs`, `hardening_faults.rs` and
//! `hardening_isolation.rs`; this module holds what they share: the figure each test prints
//! (`hardening: …`) and writes as JSON to `target/hardening/<test>.json` (read by
//! `scripts/test` for its "hardening summary" table), daemon RSS and fd counts from `/proc`,
//! raw frames, a second uid, bounded child processes and a TCP gate that can make an STS
//! unreachable.
//!
//! JSON fields every figure has: `test`, `kind` (`load`, `bad_input`, `fault`, `isolation`,
//! `secrets`), `ok` (the test's own verdict, written before its final asserts so a failing
//! run still leaves its numbers), `line` (the printed figure). Optional numeric fields the
//! summary adds up: `requests`, `wrong`, `faults_survived`, `bad_inputs`, `secrets_found`,
//! and `skipped` (the SKIPPED-CHECK reasons, if any).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::*;

/// `target/hardening/` of this checkout.
pub fn results_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/hardening")
}

/// Prints `hardening: LINE` and writes the figure to `target/hardening/<test>.json`.
/// `fields` (an object) is merged into the JSON. Returns `ok` so callers can assert on it.
pub fn record(test: &str, kind: &str, ok: bool, line: &str, fields: Value) -> bool {
    eprintln!("hardening: {line}");
    let mut v = json!({
        "test": test,
        "kind": kind,
        "ok": ok,
        "line": line,
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), fields) {
        obj.extend(extra);
    }
    let dir = results_dir();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return ok;
    }
    let file = dir.join(format!("{test}.json"));
    let tmp = dir.join(format!(".{test}.json.{}.tmp", std::process::id()));
    let text = serde_json::to_string_pretty(&v).unwrap();
    if std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &file))
        .is_err()
    {
        eprintln!("cannot write {}", file.display());
    }
    ok
}

/// A SKIPPED-CHECK line, remembered for the figure.
pub fn skip(skipped: &mut Vec<String>, reason: &str) {
    skipped_check(reason);
    skipped.push(reason.to_string());
}

/// `VmRSS` of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `VmRSS` of `pid` in MB (panics if unreadable: every caller runs on Linux with `/proc`).
pub fn rss_mb(pid: u32) -> f64 {
    let kib = rss_kib(pid).unwrap_or_else(|| panic!("cannot read VmRSS of pid {pid}"));
    kib as f64 / 1024.0
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|rd| rd.count())
}

/// Raises this process's RLIMIT_NOFILE soft limit to at least `want` (raising the hard
/// limit too when allowed); returns the soft limit in force afterwards.
pub fn raise_nofile(want: u64) -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft >= want {
        return soft;
    }
    if hard < want && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return want;
    }
    let target = want.min(hard);
    let _ = setrlimit(Resource::RLIMIT_NOFILE, target, hard);
    getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit").0
}

/// One frame on the wire: 4-byte big-endian length, then `payload`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut buf = (payload.len() as u32).to_be_bytes().to_vec();
    buf.extend_from_slice(payload);
    buf
}

/// Reads one frame; `Ok(None)` on a clean EOF (or a reset) before any byte of it.
pub fn read_frame_or_eof(s: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match s.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && got == 0 => {
                return Ok(None);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > 64 * 1024 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the daemon sent a {len}-byte frame"),
        ));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok(Some(body))
}

/// One request on a fresh connection, without panicking: the reply as JSON, or why not.
pub fn try_request(socket: &Path, payload: &str, timeout: Duration) -> Result<Value, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    s.write_all(&frame(payload.as_bytes()))
        .map_err(|e| format!("write: {e}"))?;
    match read_frame_or_eof(&mut s) {
        Ok(Some(body)) => serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}")),
        Ok(None) => Err("closed without a reply".into()),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// A credentials request frame.
pub fn credentials_request(id: u64, name: &str) -> String {
    format!(r#"{{"protocol":4,"id":{id},"op":"credentials","name":"{name}"}}"#)
}

/// Runs `cmd` (bounded by `limit`), requiring exit status 0.
pub fn limited_ok(cmd: &mut Command, limit: Duration) -> Output {
    let (status, out, _) = run_limited(cmd, limit);
    assert!(
        status.is_some(),
        "command did not finish within {limit:?}{}",
        describe(cmd, &out)
    );
    assert!(
        out.status.success(),
        "command failed{}",
        describe(cmd, &out)
    );
    out
}

/// `credential-process NAME` (bounded): its JSON and how long it took.
pub fn credential_process(env: &TestEnv, name: &str) -> (Value, Duration) {
    let mut cmd = env.cmd(&["credential-process", name]);
    let (status, out, took) = run_limited(&mut cmd, Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "credential-process failed or hung{}",
        describe(&cmd, &out)
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}){}", describe(&cmd, &out)));
    for k in [
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
    ] {
        assert!(v[k].as_str().is_some_and(|s| !s.is_empty()), "{k} in {v}");
    }
    (v, took)
}

/// `daemon list --json`.
pub fn daemon_list(env: &TestEnv) -> Vec<Value> {
    let out = limited_ok(
        &mut env.cmd(&["daemon", "list", "--json"]),
        Duration::from_secs(30),
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("daemon list --json: {e}: {}", stdout(&out)))
}

/// One session of `daemon list --json`, if cached.
pub fn listed_session(env: &TestEnv, name: &str) -> Option<Value> {
    daemon_list(env).into_iter().find(|s| s["name"] == name)
}

/// The other uid of the isolation tests.
pub const OTHER_USER: &str = "elhaz-hard-other";

/// `(uid, gid)` of [`OTHER_USER`], creating it if needed (root only). `None` after a
/// SKIPPED-CHECK line when that is impossible.
pub fn other_user(skipped: &mut Vec<String>) -> Option<(u32, u32)> {
    let lookup = || {
        nix::unistd::User::from_name(OTHER_USER)
            .ok()
            .flatten()
            .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
    };
    if let Some(ids) = lookup() {
        return Some(ids);
    }
    if !is_root() {
        skip(skipped, "not root: cannot create or act as another uid");
        return None;
    }
    // Exit 9: created meanwhile by a concurrent test.
    match Command::new("useradd")
        .args(["-M", "-r", "-s", "/usr/sbin/nologin", OTHER_USER])
        .output()
    {
        Ok(o) if o.status.success() || o.status.code() == Some(9) => {}
        Ok(o) => {
            skip(
                skipped,
                &format!(
                    "useradd {OTHER_USER} failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            );
            return None;
        }
        Err(e) => {
            skip(skipped, &format!("cannot run useradd: {e}"));
            return None;
        }
    }
    let ids = lookup();
    if ids.is_none() {
        skip(skipped, &format!("{OTHER_USER} not found after useradd"));
    }
    ids
}

/// Runs `sh -c SCRIPT sh ARGS…` as `uid`/`gid` (cwd `/`, bounded to 20 s).
pub fn sh_as(uid: u32, gid: u32, script: &str, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .arg("sh")
        .args(args)
        .uid(uid)
        .gid(gid)
        .current_dir("/")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(Stdio::null());
    let (status, out, _) = run_limited(&mut cmd, Duration::from_secs(20));
    assert!(
        status.is_some(),
        "sh as uid {uid} hung{}",
        describe(&cmd, &out)
    );
    out
}

/// A child process killed and reaped on drop.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A TCP forwarder on 127.0.0.1 in front of an upstream (the fake STS). Closing it drops the
/// listener, so connecting is refused (an unreachable STS); opening it binds the same port
/// again.
pub struct Gate {
    port: u16,
    upstream: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    /// Connections forwarded so far.
    pub forwarded: Arc<AtomicUsize>,
    /// Client sides of the forwarded connections, shut down by `close` (a pooled keep-alive
    /// connection must not outlive the outage).
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Gate {
    /// Opens a gate on a free port forwarding to `upstream` (`http://127.0.0.1:PORT`).
    pub fn open_to(upstream_url: &str) -> Gate {
        let upstream: SocketAddr = upstream_url
            .trim_start_matches("http://")
            .parse()
            .expect("upstream address");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind gate");
        let port = listener.local_addr().unwrap().port();
        let mut g = Gate {
            port,
            upstream,
            stop: Arc::new(AtomicBool::new(false)),
            accept: None,
            forwarded: Arc::new(AtomicUsize::new(0)),
            conns: Arc::default(),
        };
        g.serve(listener);
        g
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn serve(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        self.stop = Arc::new(AtomicBool::new(false));
        let (stop, upstream, forwarded, conns) = (
            self.stop.clone(),
            self.upstream,
            self.forwarded.clone(),
            self.conns.clone(),
        );
        self.accept = Some(std::thread::spawn(move || {
            // Bounded: a forgotten gate stops after ten minutes.
            let deadline = Instant::now() + Duration::from_secs(600);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((client, _)) => {
                        forwarded.fetch_add(1, Ordering::SeqCst);
                        if let Ok(c) = client.try_clone() {
                            conns.lock().unwrap().push(c);
                        }
                        std::thread::spawn(move || forward(client, upstream));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
    }

    /// Stops listening: new connections are refused, open ones are cut.
    pub fn close(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Listens again on the same port.
    pub fn reopen(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("gate: rebinding port {}: {e}; retrying", self.port);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("cannot rebind the gate's port {}: {e}", self.port),
            }
        };
        self.serve(listener);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.close();
    }
}

fn forward(client: TcpStream, upstream: SocketAddr) {
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
        return;
    };
    for s in [&client, &server] {
        let _ = s.set_read_timeout(Some(Duration::from_secs(90)));
    }
    let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let mut client = client;
        let mut server = server;
        let _ = std::io::copy(&mut client, &mut server);
        let _ = server.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut s2, &mut c2);
    let _ = c2.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

/// Mutex-protected list of text lines, for worker threads' failure messages.
#[derive(Default, Clone)]
pub struct Failures(pub Arc<Mutex<Vec<String>>>);

impl Failures {
    pub fn push(&self, s: String) {
        let mut v = self.0.lock().unwrap();
        if v.len() < 50 {
            v.push(s);
        }
    }
    pub fn take(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}
