//! A moto STS server for the engine tests, and the AWS environment that points elhaz at an STS.
//!
//! [`Moto`] runs `<repo>/.venv/bin/moto_server -H 127.0.0.1 -p PORT` (created by
//! `scripts/setup-python`) on a free port, waits (bounded) until it answers HTTP, counts STS
//! calls from its access log (werkzeug writes one `"POST / HTTP/1.1" 200` line per request to
//! stderr, which goes to a file in the test's scratch dir) and kills it on drop.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{TestEnv, wait_until};

/// How long moto may take to answer its first request (it starts in ~0.6 s when idle).
const MOTO_START: Duration = Duration::from_secs(20);

/// A running moto server; killed on drop.
pub struct Moto {
    child: Child,
    port: u16,
    log: PathBuf,
}

/// `<repo>/.venv/bin/moto_server`; panics if it is missing.
pub fn moto_server_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/setup-python",
        bin.display()
    );
    bin
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("cannot find a free port")
        .port()
}

/// Whether something on `port` answers an HTTP request.
fn answers_http(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = "GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut buf = [0u8; 16];
    s.write_all(req.as_bytes()).is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"HTTP/1."))
}

impl Moto {
    /// Starts moto with its log in `dir`; retries a few times if the port was taken meanwhile.
    pub fn start(dir: &Path) -> Moto {
        let bin = moto_server_bin();
        let mut last = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let log = dir.join(format!("moto-{attempt}.log"));
            let file = std::fs::File::create(&log).unwrap();
            let child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("PYTHONUNBUFFERED", "1")
                .stdin(Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let mut moto = Moto { child, port, log };
            let mut exited = false;
            let up = wait_until(MOTO_START, || {
                exited = matches!(moto.child.try_wait(), Ok(Some(_)));
                exited || answers_http(port)
            });
            if up && !exited {
                return moto;
            }
            last = std::fs::read_to_string(&moto.log).unwrap_or_default();
            // Dropping `moto` kills it; a port collision makes it exit, so try another port.
            drop(moto);
        }
        panic!("moto_server did not come up after 5 attempts; last log:\n{last}");
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The access log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// STS calls served so far (every STS action is a `POST /`).
    pub fn sts_calls(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"POST / HTTP/1.1\""))
            .count()
    }

    /// Waits (bounded) until at least `n` STS calls were logged; returns the count.
    pub fn wait_calls(&self, n: usize, timeout: Duration) -> usize {
        wait_until(timeout, || self.sts_calls() >= n);
        self.sts_calls()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Points every later command of `env` (and the daemons they autostart) at the STS at `url`,
/// with dummy static keys as the default source and no shared config files.
pub fn aws_env(env: &TestEnv, url: &str) {
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL_STS", url),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ] {
        env.set_env(k, v);
    }
    env.set_env("AWS_CONFIG_FILE", env.scratch("no-aws-config"));
    env.set_env(
        "AWS_SHARED_CREDENTIALS_FILE",
        env.scratch("no-aws-credentials"),
    );
    // Bounds every CLI round trip (the daemon's own STS timeouts are 30 s).
    env.set_env("ELHAZ_CLIENT_TIMEOUT", "60");
}

/// `elhaz config add NAME --sts-endpoint-url URL EXTRA…`.
pub fn add_sts_config(env: &TestEnv, name: &str, url: &str, extra: &[&str]) {
    let mut args = vec!["config", "add", name, "--sts-endpoint-url", url];
    args.extend_from_slice(extra);
    env.run_ok(&args);
}

/// `elhaz config add NAME --from-file FILE` with `toml` as the file.
pub fn add_toml_config(env: &TestEnv, name: &str, toml: &str) {
    let file = env.write_scratch(&format!("{name}.in.toml"), toml);
    env.run_ok(&["config", "add", name, "--from-file", file.to_str().unwrap()]);
}
