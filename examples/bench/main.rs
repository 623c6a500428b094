//! The elhaz benchmark harness. `scripts/bench` builds it, sets up the machine (hyperfine, the
//! venv with moto and Python elhaz 0.5.6, a moto STS) and runs
//!
//!     bench run --elhaz BIN --client BENCH_CLIENT --venv DIR --moto-url URL --moto-log FILE
//!               --work DIR --out DIR [--smoke]
//!
//! which measures ours, Python elhaz and the floors side by side in one run, prints a markdown
//! table on stdout and writes `results.json`, `table.md` and `latency.svg` into `--out`.
//! Other modes: `bench echo-server SOCKET REPLY_FILE` (the round-trip floor, spawned by `run`),
//! `bench chart RESULTS.json OUT.svg` (re-render the chart) and `bench load SOCKET NAME SECONDS
//! CLIENTS` (a steady load on a daemon, to attach a profiler to).
//!
//! Every loop is bounded in count and in time; everything listens on loopback or on unix
//! sockets under `--work`; every process it starts is killed when it returns (and recorded in
//! `--work/pids/` so the script's exit trap can clean up after a crash).

mod chart;
mod measure;
mod report;
mod scale;
mod servers;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use measure::{Dist, Target, dist};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mode = args.first().and_then(|a| a.to_str()).unwrap_or("");
    let result = match mode {
        "run" => Opts::parse(&args[1..]).and_then(run),
        "echo-server" if args.len() == 3 => {
            servers::echo_server(Path::new(&args[1]), Path::new(&args[2]))
        }
        "chart" if args.len() == 3 => chart_mode(Path::new(&args[1]), Path::new(&args[2])),
        "load" if args.len() == 5 => load_mode(&args[1..]),
        _ => Err(
            "usage: bench run --elhaz BIN --client BIN --venv DIR --moto-url URL \
                  --moto-log FILE --work DIR --out DIR [--smoke]\n       \
                  bench echo-server SOCKET REPLY_FILE\n       bench chart RESULTS.json OUT.svg\n       \
                  bench load SOCKET NAME SECONDS CLIENTS"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `bench load SOCKET NAME SECONDS CLIENTS`: back-to-back credentials requests (raw client)
/// from CLIENTS threads for SECONDS — a steady load to attach a profiler to.
fn load_mode(args: &[OsString]) -> Result<(), String> {
    let num = |a: &OsString| {
        a.to_string_lossy()
            .parse::<f64>()
            .map_err(|e| e.to_string())
    };
    let name = args[1].to_string_lossy().into_owned();
    let t = Target::Raw {
        socket: PathBuf::from(&args[0]),
        request: measure::ours_request("credentials", &name),
        expect: b"",
    };
    let secs = num(&args[2])?.clamp(0.1, 600.0);
    let clients = num(&args[3])?.clamp(1.0, 1024.0) as usize;
    let r = measure::throughput(&t, clients, Duration::from_secs_f64(secs));
    println!(
        "{} clients: {:.0} req/s ({} requests, {} errors, {:.1}s)",
        r.clients, r.rps, r.requests, r.errors, r.secs
    );
    Ok(())
}

fn chart_mode(input: &Path, output: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    std::fs::write(output, chart::render(&v)).map_err(|e| e.to_string())
}

/// Command-line options of `bench run`.
struct Opts {
    elhaz: PathBuf,
    client: PathBuf,
    venv: PathBuf,
    moto_url: String,
    moto_log: PathBuf,
    work: PathBuf,
    out: PathBuf,
    smoke: bool,
}

impl Opts {
    fn parse(args: &[OsString]) -> Result<Opts, String> {
        let mut m: BTreeMap<String, OsString> = BTreeMap::new();
        let mut smoke = false;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let a = a.to_string_lossy().into_owned();
            if a == "--smoke" {
                smoke = true;
                continue;
            }
            let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
            m.insert(a, v.clone());
        }
        let mut take = |k: &str| {
            m.remove(k)
                .ok_or_else(|| format!("missing {k}"))
                .map(PathBuf::from)
        };
        let abs = |p: PathBuf| std::path::absolute(&p).map_err(|e| e.to_string());
        let o = Opts {
            elhaz: abs(take("--elhaz")?)?,
            client: abs(take("--client")?)?,
            venv: abs(take("--venv")?)?,
            moto_url: take("--moto-url")?.to_string_lossy().into_owned(),
            moto_log: abs(take("--moto-log")?)?,
            work: abs(take("--work")?)?,
            out: abs(take("--out")?)?,
            smoke,
        };
        if let Some(k) = m.keys().next() {
            return Err(format!("unknown option {k}"));
        }
        Ok(o)
    }
}

/// How much of everything: full run versus the smoke run.
#[derive(Debug, Clone, serde::Serialize)]
struct Counts {
    hf_runs: u32,
    hf_warmup: u32,
    hf_runs_py: u32,
    hf_warmup_py: u32,
    aws_runs: u32,
    aws_warmup: u32,
    rt_blocks: usize,
    rt_per_block: usize,
    rt_py: usize,
    tp_secs: f64,
    tp_levels: Vec<usize>,
    rss_levels: Vec<usize>,
    rss_levels_py: Vec<usize>,
    first_fetch_clients: usize,
    warm_fetches: usize,
    slow_delay_s: f64,
    wake_window_s: f64,
    wake_sessions: usize,
}

impl Counts {
    fn new(smoke: bool) -> Counts {
        if smoke {
            Counts {
                hf_runs: 3,
                hf_warmup: 1,
                hf_runs_py: 2,
                hf_warmup_py: 0,
                aws_runs: 1,
                aws_warmup: 0,
                rt_blocks: 2,
                rt_per_block: 50,
                rt_py: 10,
                tp_secs: 0.2,
                tp_levels: vec![1, 8, 32, 128],
                rss_levels: vec![2, 5, 10],
                rss_levels_py: vec![2, 4],
                first_fetch_clients: 20,
                warm_fetches: 50,
                slow_delay_s: 1.0,
                wake_window_s: 3.0,
                wake_sessions: 10,
            }
        } else {
            Counts {
                hf_runs: 300,
                hf_warmup: 30,
                hf_runs_py: 30,
                hf_warmup_py: 3,
                aws_runs: 10,
                aws_warmup: 1,
                rt_blocks: 10,
                rt_per_block: 3000,
                rt_py: 2000,
                tp_secs: 3.0,
                tp_levels: vec![1, 8, 32, 128],
                rss_levels: vec![10, 100, 1000],
                rss_levels_py: vec![10, 20],
                first_fetch_clients: 100,
                warm_fetches: 1000,
                slow_delay_s: 4.0,
                wake_window_s: 60.0,
                wake_sessions: 100,
            }
        }
    }
}

/// A child process killed (TERM, then KILL) when dropped.
struct Proc {
    name: String,
    child: Child,
    pid_file: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        if self.alive() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.alive() {
                eprintln!("bench: {} ignored SIGTERM; killing it", self.name);
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// Everything a run shares.
struct Bench {
    o: Opts,
    c: Counts,
    env: Vec<(String, OsString)>,
    log: std::fs::File,
    started: Instant,
}

/// Variables that would leak the developer's own setup into the run.
const SCRUB: &[&str] = &[
    "ELHAZ_SOCKET",
    "ELHAZ_NO_DAEMON",
    "ELHAZ_CLIENT_TIMEOUT",
    "ELHAZ_DAEMON_DETACH",
    "ELHAZ_SESSION",
    "ELHAZ_LOG",
    "RUST_LOG",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
];

impl Bench {
    fn say(&self, msg: impl AsRef<str>) {
        eprintln!(
            "bench [{:>6.1}s] {}",
            self.started.elapsed().as_secs_f64(),
            msg.as_ref()
        );
    }

    fn pyhome(&self) -> PathBuf {
        self.o.work.join("pyhome")
    }
    fn ours_home(&self) -> PathBuf {
        self.o.work.join("ours")
    }
    fn ours_socket(&self) -> PathBuf {
        self.ours_home().join("run/elhaz.sock")
    }
    fn py_socket(home: &Path) -> PathBuf {
        home.join(".elhaz/sock/daemon.sock")
    }
    fn py_bin(&self, name: &str) -> PathBuf {
        self.o.venv.join("bin").join(name)
    }

    /// A command with the run's environment; output goes to the run log.
    fn cmd(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(prog);
        for k in SCRUB {
            c.env_remove(k);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.stdin(Stdio::null());
        c.stdout(self.log_stdio());
        c.stderr(self.log_stdio());
        c
    }

    fn log_stdio(&self) -> Stdio {
        self.log
            .try_clone()
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null())
    }

    /// Runs `c` to completion within `limit`; its stdout is returned.
    fn output(&self, mut c: Command, limit: Duration) -> Result<String, String> {
        let shown = format!("{c:?}");
        let out_file = self.o.work.join("last-output");
        c.stdout(
            std::fs::File::create(&out_file)
                .map(Stdio::from)
                .map_err(|e| e.to_string())?,
        );
        let mut child = c.spawn().map_err(|e| format!("cannot run {shown}: {e}"))?;
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{shown} did not finish within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let out = std::fs::read_to_string(&out_file).unwrap_or_default();
        if !status.success() {
            return Err(format!(
                "{shown} failed ({status}); stdout: {out}; see {}",
                self.o.work.join("bench.log").display()
            ));
        }
        Ok(out)
    }

    /// Starts a long-lived child, recording its pid for the script's exit trap.
    fn spawn(&self, name: &str, mut c: Command, log: &Path) -> Result<Proc, String> {
        let f = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let f2 = f.try_clone().map_err(|e| e.to_string())?;
        c.stdout(Stdio::from(f)).stderr(Stdio::from(f2));
        let child = c.spawn().map_err(|e| format!("cannot start {name}: {e}"))?;
        let pid_file = self.o.work.join("pids").join(name);
        let _ = std::fs::write(&pid_file, child.id().to_string());
        Ok(Proc {
            name: name.to_string(),
            child,
            pid_file,
        })
    }

    /// Polls `ready` until it holds, the process dies, or 30 s pass.
    fn wait_ready(
        &self,
        p: &mut Proc,
        log: &Path,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ready() {
                return Ok(());
            }
            let alive = p.alive();
            if !alive || Instant::now() > deadline {
                let tail = std::fs::read_to_string(log).unwrap_or_default();
                let tail: String = tail
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(format!(
                    "{} did not come up (alive: {}); its log {}:\n{tail}",
                    p.name,
                    alive,
                    log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts our daemon (foreground child) with `home` as ELHAZ_HOME.
    fn start_ours(&self, name: &str, home: &Path) -> Result<Proc, String> {
        let mut c = self.cmd(&self.o.elhaz);
        c.args(["daemon", "start", "--foreground"])
            .env("ELHAZ_HOME", home);
        let log = self.o.work.join(format!("logs/{name}.log"));
        let mut p = self.spawn(name, c, &log)?;
        let socket = home.join("run/elhaz.sock");
        self.wait_ready(&mut p, &log, || {
            measure::raw_round_trip(&socket, &measure::ours_request("ping", "x"))
                .is_ok_and(|r| measure::contains(&r, br#""kind":"pong""#))
        })?;
        Ok(p)
    }

    /// Starts a Python elhaz daemon (`python -m elhaz.cli daemon _serve`, what its `daemon
    /// start` runs) with `home` as HOME.
    fn start_py(&self, name: &str, home: &Path, cache: usize) -> Result<Proc, String> {
        let mut c = self.cmd(self.py_bin("python"));
        c.args(["-m", "elhaz.cli", "--max-daemon-cache-size"])
            .arg(cache.to_string())
            .args(["daemon", "_serve"])
            .env("HOME", home);
        let log = self.o.work.join(format!("logs/{name}.log"));
        let mut p = self.spawn(name, c, &log)?;
        let socket = Self::py_socket(home);
        self.wait_ready(&mut p, &log, || {
            measure::py_round_trip(&socket, &measure::py_request("list", None, 1)).is_ok()
        })?;
        Ok(p)
    }

    /// Runs hyperfine over `cmds` (label, command line) and returns each one's wall times.
    fn hyperfine(
        &self,
        tag: &str,
        runs: u32,
        warmup: u32,
        cmds: &[(&str, String)],
    ) -> Result<Vec<Dist>, String> {
        let json_file = self.o.work.join(format!("hyperfine-{tag}.json"));
        let mut c = self.cmd("hyperfine");
        c.args(["-N", "--style", "basic", "--export-json"])
            .arg(&json_file)
            .args(["--runs", &runs.to_string(), "--warmup", &warmup.to_string()]);
        for (label, line) in cmds {
            c.args(["-n", label, line]);
        }
        // Bound: every command's runs at 5 s each, at most.
        let limit = Duration::from_secs(60 + 5 * u64::from(runs + warmup) * cmds.len() as u64);
        self.output(c, limit)?;
        let text = std::fs::read_to_string(&json_file).map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let results = v["results"]
            .as_array()
            .ok_or("hyperfine wrote no results")?;
        let mut out = Vec::new();
        for r in results {
            let times: Vec<f64> = r["times"]
                .as_array()
                .ok_or("hyperfine result without times")?
                .iter()
                .filter_map(Value::as_f64)
                .map(|s| s * 1e3)
                .collect();
            out.push(dist(times, "ms"));
        }
        if out.len() != cmds.len() {
            return Err(format!("hyperfine returned {} results", out.len()));
        }
        Ok(out)
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn our_config(role: &str, endpoint: &str, duration: u64) -> String {
    format!(
        "duration = {duration}\n\n[role]\narn = \"arn:aws:iam::123456789012:role/{role}\"\n\
         session_name = \"bench\"\n\n[sts]\nendpoint_url = \"{endpoint}\"\nregion = \"us-east-1\"\n"
    )
}

fn py_config(role: &str, endpoint: &str, duration: u64) -> String {
    format!(
        "AssumeRole:\n  RoleArn: arn:aws:iam::123456789012:role/{role}\n  RoleSessionName: bench\n  \
         DurationSeconds: {duration}\nSTS:\n  region_name: us-east-1\n  endpoint_url: {endpoint}\n"
    )
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> Result<u64, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS for pid {pid}"))
}

/// POSTs to moto's access log counted: `"POST / HTTP/1.1"` lines (each one STS call).
fn moto_calls(log: &Path) -> Result<usize, String> {
    let s = std::fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
    Ok(s.lines()
        .filter(|l| l.contains("\"POST / HTTP/1.1\""))
        .count())
}

/// Sends `requests` over `threads` concurrent connections; every reply must contain `expect`.
fn fan_out(
    socket: &Path,
    requests: Vec<Vec<u8>>,
    threads: usize,
    expect: &'static [u8],
    py: bool,
) -> Result<(), String> {
    let queue = Arc::new(std::sync::Mutex::new(requests));
    let mut hs = Vec::new();
    for _ in 0..threads {
        let queue = queue.clone();
        let socket = socket.to_path_buf();
        hs.push(std::thread::spawn(move || -> Result<(), String> {
            loop {
                let next = queue.lock().map_err(|e| e.to_string())?.pop();
                let Some(req) = next else { return Ok(()) };
                let reply = if py {
                    measure::py_round_trip(&socket, &req)
                } else {
                    measure::raw_round_trip(&socket, &req)
                }
                .map_err(|e| e.to_string())?;
                if !measure::contains(&reply, expect) {
                    return Err(format!(
                        "unexpected reply: {}",
                        String::from_utf8_lossy(&reply[..reply.len().min(300)])
                    ));
                }
            }
        }));
    }
    for h in hs {
        h.join().map_err(|_| "a client thread panicked")??;
    }
    Ok(())
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "?".into());
    let run = |p: &str, a: &[&str]| {
        Command::new(p)
            .args(a)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|s| s.trim_matches('"').to_string())
        .unwrap_or_default();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": model,
        "mem_gib": (mem_kib as f64 / 1048576.0 * 10.0).round() / 10.0,
        "kernel": run("uname", &["-r"]),
        "os": os,
        "rustc": run("rustc", &["--version"]),
        "hyperfine": run("hyperfine", &["--version"]),
    })
}

fn run(o: Opts) -> Result<(), String> {
    let started = Instant::now();
    let c = Counts::new(o.smoke);
    for d in [
        "pids",
        "logs",
        "aws",
        "pyhome/.elhaz/configs",
        "ours/configs",
    ] {
        std::fs::create_dir_all(o.work.join(d)).map_err(|e| e.to_string())?;
    }
    std::fs::create_dir_all(&o.out).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(o.work.join("bench.log")).map_err(|e| e.to_string())?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut path_v = OsString::from(o.venv.join("bin"));
    path_v.push(":");
    path_v.push(path);
    let w = &o.work;
    let env: Vec<(String, OsString)> = vec![
        ("HOME".into(), w.join("pyhome").into()),
        ("ELHAZ_HOME".into(), w.join("ours").into()),
        ("ELHAZ_AUTOSTART".into(), "0".into()),
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_DEFAULT_REGION".into(), "us-east-1".into()),
        ("AWS_ENDPOINT_URL_STS".into(), o.moto_url.clone().into()),
        ("AWS_CONFIG_FILE".into(), w.join("aws/config").into()),
        (
            "AWS_SHARED_CREDENTIALS_FILE".into(),
            w.join("aws/credentials").into(),
        ),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ("PATH".into(), path_v),
    ];
    let b = Bench {
        o,
        c,
        env,
        log,
        started,
    };
    b.say(format!(
        "{} run; work dir {}",
        if b.o.smoke { "smoke" } else { "full" },
        b.o.work.display()
    ));
    let results = measure_all(&b)?;
    let text = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    write_file(&b.o.out.join("results.json"), &text)?;
    let table = report::table(&results);
    write_file(&b.o.out.join("table.md"), &table)?;
    write_file(&b.o.out.join("latency.svg"), &chart::render(&results))?;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(table.as_bytes());
    let _ = stdout.flush();
    b.say(format!(
        "done in {:.0}s: {}/results.json, table.md, latency.svg",
        b.started.elapsed().as_secs_f64(),
        b.o.out.display()
    ));
    Ok(())
}

fn measure_all(b: &Bench) -> Result<Value, String> {
    let c = &b.c;
    let o = &b.o;
    let moto = o.moto_url.as_str();
    let delay = Duration::from_secs_f64(c.slow_delay_s);
    let sts = servers::fake_sts(delay, Duration::from_secs(300))?;
    b.say(format!(
        "fake STS (role `slow` delayed {:.1}s) on {}",
        c.slow_delay_s, sts.url
    ));

    // --- configs --------------------------------------------------------------------------
    let ours_home = b.ours_home();
    write_file(&ours_home.join("elhaz.toml"), "capacity = 2000\n")?;
    write_file(
        &ours_home.join("configs/bench.toml"),
        &our_config("bench", moto, 3600),
    )?;
    write_file(
        &ours_home.join("configs/single.toml"),
        &our_config("single", moto, 3600),
    )?;
    write_file(
        &ours_home.join("configs/slow.toml"),
        &our_config("slow", &sts.url, 3600),
    )?;
    let pyhome = b.pyhome();
    let pyconf = pyhome.join(".elhaz/configs");
    write_file(&pyconf.join("bench.yaml"), &py_config("bench", moto, 3600))?;
    write_file(
        &pyconf.join("slow.yaml"),
        &py_config("slow", &sts.url, 3600),
    )?;
    write_file(
        &o.work.join("aws/config"),
        &format!(
            "[profile elhaz-rs]\ncredential_process = {} credential-process bench\nregion = us-east-1\n\n\
             [profile elhaz-py]\ncredential_process = {} export -n bench -f credential-process\nregion = us-east-1\n",
            o.elhaz.display(),
            b.py_bin("elhaz").display()
        ),
    )?;
    write_file(&o.work.join("aws/credentials"), "")?;

    // --- daemons --------------------------------------------------------------------------
    let ours = b.start_ours("ours-daemon", &ours_home)?;
    let py = b.start_py("py-daemon", &pyhome, 30)?;
    b.say(format!(
        "daemons up: ours pid {}, python elhaz pid {}",
        ours.pid(),
        py.pid()
    ));
    let sock = b.ours_socket();
    let pysock = Bench::py_socket(&pyhome);

    // Warm both through their CLIs, checking the output is a credential_process document.
    for (label, mut cmd) in [
        ("ours", {
            let mut x = b.cmd(&o.elhaz);
            x.args(["credential-process", "bench"]);
            x
        }),
        ("python elhaz", {
            let mut x = b.cmd(b.py_bin("elhaz"));
            x.args(["export", "-n", "bench", "-f", "credential-process"]);
            x
        }),
    ] {
        cmd.stderr(b.log_stdio());
        let out = b.output(cmd, Duration::from_secs(60))?;
        let v: Value = serde_json::from_str(out.trim())
            .map_err(|e| format!("{label}: credential-process output is not JSON ({e}): {out}"))?;
        if v["Version"] != 1
            || !v["AccessKeyId"]
                .as_str()
                .is_some_and(|k| k.starts_with("ASIA"))
        {
            return Err(format!(
                "{label}: unexpected credential-process output {out}"
            ));
        }
    }
    let reply = measure::raw_round_trip(&sock, &measure::ours_request("credentials", "bench"))
        .map_err(|e| e.to_string())?;
    if !measure::contains(&reply, br#""kind":"credentials""#) {
        return Err(format!(
            "our daemon's reply is not credentials: {}",
            String::from_utf8_lossy(&reply)
        ));
    }
    let reply_file = o.work.join("reply.json");
    std::fs::write(&reply_file, &reply).map_err(|e| e.to_string())?;
    let echo_sock = o.work.join("echo.sock");
    let echo = {
        let mut cmd = b.cmd(std::env::current_exe().map_err(|e| e.to_string())?);
        cmd.arg("echo-server").arg(&echo_sock).arg(&reply_file);
        let log = o.work.join("logs/echo.log");
        let mut p = b.spawn("echo-server", cmd, &log)?;
        let es = echo_sock.clone();
        b.wait_ready(&mut p, &log, || {
            measure::raw_round_trip(&es, &measure::ours_request("credentials", "bench")).is_ok()
        })?;
        p
    };
    b.say(format!(
        "echo floor up (pid {}), canned reply of {} bytes",
        echo.pid(),
        reply.len()
    ));

    // --- 1+2. CLI wall time -----------------------------------------------------------------
    let ex = |p: &Path| p.display().to_string();
    b.say("hyperfine: floors, credential-process, exec (ours)");
    let fast = b.hyperfine(
        "cli",
        c.hf_runs,
        c.hf_warmup,
        &[
            ("/bin/true", "/bin/true".into()),
            (
                "python3 -c pass",
                format!("{} -c pass", ex(&b.py_bin("python3"))),
            ),
            (
                "std-only socket client",
                format!("{} {} bench", ex(&o.client), ex(&sock)),
            ),
            (
                "elhaz credential-process",
                format!("{} credential-process bench", ex(&o.elhaz)),
            ),
            (
                "elhaz exec -- /bin/true",
                format!("{} exec bench -- /bin/true", ex(&o.elhaz)),
            ),
        ],
    )?;
    b.say("hyperfine: Python elhaz export / exec");
    let slow_cli = b.hyperfine(
        "cli-py",
        c.hf_runs_py,
        c.hf_warmup_py,
        &[
            ("/bin/true", "/bin/true".into()),
            (
                "python elhaz export -f credential-process",
                format!(
                    "{} export -n bench -f credential-process",
                    ex(&b.py_bin("elhaz"))
                ),
            ),
            (
                "python elhaz exec -- /bin/true",
                format!("{} exec -n bench -- /bin/true", ex(&b.py_bin("elhaz"))),
            ),
        ],
    )?;

    // --- 3. aws CLI -------------------------------------------------------------------------
    let aws = ex(&b.py_bin("aws"));
    let aws_cmds = [
        (
            "aws, static env credentials",
            format!("env {aws} sts get-caller-identity"),
            "",
        ),
        (
            "aws via elhaz credential_process",
            format!(
                "env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY {aws} --profile elhaz-rs sts get-caller-identity"
            ),
            "assumed-role/bench/",
        ),
        (
            "aws via python elhaz credential_process",
            format!(
                "env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY {aws} --profile elhaz-py sts get-caller-identity"
            ),
            "assumed-role/bench/",
        ),
    ];
    for (label, line, want) in &aws_cmds {
        let mut parts = line.split(' ');
        let mut cmd = b.cmd(parts.next().unwrap_or("env"));
        cmd.args(parts);
        let out = b.output(cmd, Duration::from_secs(60))?;
        if !out.contains("\"Arn\"") || !out.contains(want) {
            return Err(format!("{label}: unexpected identity {out}"));
        }
    }
    b.say("hyperfine: aws sts get-caller-identity");
    let aws_d = b.hyperfine(
        "aws",
        c.aws_runs,
        c.aws_warmup,
        &aws_cmds
            .iter()
            .map(|(l, line, _)| (*l, line.clone()))
            .collect::<Vec<_>>(),
    )?;

    // --- 4. round trip in-process -------------------------------------------------------------
    b.say("round trips: ours (library client), ours (raw client), echo floor — interleaved");
    let t_ours = Target::Elhaz {
        socket: sock.clone(),
        name: "bench".into(),
    };
    let t_ours_raw = Target::Raw {
        socket: sock.clone(),
        request: measure::ours_request("credentials", "bench"),
        expect: br#""kind":"credentials""#,
    };
    let t_echo = Target::Raw {
        socket: echo_sock.clone(),
        request: measure::ours_request("credentials", "bench"),
        expect: br#""kind":"credentials""#,
    };
    let t_py = Target::Py {
        socket: pysock.clone(),
        request: measure::py_request("credentials", Some("bench"), 7),
    };
    let block_limit = Duration::from_secs(20);
    for t in [&t_ours, &t_ours_raw, &t_echo] {
        measure::latencies(t, (c.rt_per_block / 5).max(5), block_limit)?;
    }
    let (mut rt_ours, mut rt_raw, mut rt_echo) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..c.rt_blocks {
        rt_ours.extend(measure::latencies(&t_ours, c.rt_per_block, block_limit)?);
        rt_raw.extend(measure::latencies(
            &t_ours_raw,
            c.rt_per_block,
            block_limit,
        )?);
        rt_echo.extend(measure::latencies(&t_echo, c.rt_per_block, block_limit)?);
    }
    b.say("round trips: python elhaz socket");
    measure::latencies(&t_py, (c.rt_py / 10).max(2), block_limit)?;
    let rt_py = measure::latencies(&t_py, c.rt_py, Duration::from_secs(60))?;

    // --- 5. throughput ----------------------------------------------------------------------
    let mut tp_ours = Vec::new();
    let mut tp_echo = Vec::new();
    let tp_dur = Duration::from_secs_f64(c.tp_secs);
    for &n in &c.tp_levels {
        b.say(format!(
            "throughput: {n} concurrent clients, {:.1}s each",
            c.tp_secs
        ));
        tp_ours.push(measure::throughput(&t_ours_raw, n, tp_dur));
        tp_echo.push(measure::throughput(&t_echo, n, tp_dur));
    }
    drop(echo);

    // --- 7. STS calls: concurrent first fetches, warm fetches -------------------------------
    b.say(format!(
        "single flight: {} concurrent first fetches of one session, then {} warm fetches",
        c.first_fetch_clients, c.warm_fetches
    ));
    let before = moto_calls(&o.moto_log)?;
    {
        let barrier = Arc::new(std::sync::Barrier::new(c.first_fetch_clients));
        let mut hs = Vec::new();
        for _ in 0..c.first_fetch_clients {
            let barrier = barrier.clone();
            let t = Target::Raw {
                socket: sock.clone(),
                request: measure::ours_request("credentials", "single"),
                expect: br#""kind":"credentials""#,
            };
            hs.push(std::thread::spawn(move || {
                barrier.wait();
                t.once()
            }));
        }
        for h in hs {
            h.join().map_err(|_| "a client thread panicked")??;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let after_first = moto_calls(&o.moto_log)?;
    let t_single = Target::Raw {
        socket: sock.clone(),
        request: measure::ours_request("credentials", "single"),
        expect: br#""kind":"credentials""#,
    };
    measure::latencies(&t_single, c.warm_fetches, Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_millis(500));
    let after_warm = moto_calls(&o.moto_log)?;
    let daemon_count = {
        let reply = measure::raw_round_trip(&sock, &measure::ours_request("list", "x"))
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_slice(&reply).map_err(|e| e.to_string())?;
        v["ok"]["sessions"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == "single"))
            .and_then(|s| s["sts_calls"].as_u64())
    };

    // --- 8. read latency while another session's STS call is slow ---------------------------
    b.say(format!(
        "slow STS: reads of a cached session while another session's STS call takes {:.1}s",
        c.slow_delay_s
    ));
    let slow_ours = slow_read(
        &Target::Raw {
            socket: sock.clone(),
            request: measure::ours_request("credentials", "slow"),
            expect: br#""kind":"credentials""#,
        },
        &t_ours,
        delay,
    )?;
    // Python elhaz must cache the slow session first (its `add` builds the session outside
    // its lock); the fake STS hands out 5-minute credentials, inside botocore's mandatory
    // refresh window, so every `credentials` request for it refreshes — under its lock.
    b.say("slow STS: python elhaz (adding the slow session first)");
    let add_slow = measure::py_request("add", Some("slow"), 9);
    measure::py_round_trip(&pysock, &add_slow).map_err(|e| e.to_string())?;
    let slow_py = slow_read(
        &Target::Py {
            socket: pysock.clone(),
            request: measure::py_request("credentials", Some("slow"), 10),
        },
        &t_py,
        delay,
    )?;

    // --- 6. RSS -------------------------------------------------------------------------------
    let ours_idle = rss_kib(ours.pid())?;
    let py_idle_main = rss_kib(py.pid())?;
    drop(ours);
    drop(py);
    b.say(format!(
        "RSS: fresh daemons; ours with {:?} sessions, python elhaz with {:?}",
        c.rss_levels, c.rss_levels_py
    ));
    let rss_ours = rss_ours(b)?;
    let rss_py = rss_py(b)?;
    b.say(format!(
        "idle wake-ups: a fresh daemon, idle and with {} cached sessions, {:.0}s each",
        c.wake_sessions, c.wake_window_s
    ));
    let wakeups = wakeups_ours(b)?;
    let scale = scale::scale_ours(b)?;

    let fast_names = [
        "bin_true",
        "python_pass",
        "floor_client",
        "ours_cp",
        "ours_exec",
    ];
    let mut cli = serde_json::Map::new();
    for (k, d) in fast_names.iter().zip(&fast) {
        cli.insert((*k).into(), json!(d));
    }
    cli.insert("bin_true_py_group".into(), json!(slow_cli[0]));
    cli.insert("py_cp".into(), json!(slow_cli[1]));
    cli.insert("py_exec".into(), json!(slow_cli[2]));

    let mut v = json!({
        "meta": {
            "mode": if o.smoke { "smoke" } else { "full" },
            "date": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            "machine": machine(),
            "elhaz_version": b.output({let mut x = b.cmd(&o.elhaz); x.arg("--version"); x}, Duration::from_secs(10))?.trim().trim_start_matches("elhaz ").to_string(),
            "python_elhaz_version": b.output({let mut x = b.cmd(b.py_bin("python")); x.args(["-c", "import importlib.metadata as m; print(m.version('elhaz'))"]); x}, Duration::from_secs(30))?.trim(),
            "elhaz_binary": o.elhaz,
            "binary_bytes": {
                "elhaz": file_len(&o.elhaz),
                "elhaz_full": file_len(&o.elhaz.with_file_name("elhaz-full")),
                "floor_client": file_len(&o.client),
            },
            "counts": c,
            "seconds": 0.0,
        },
        "cli": cli,
        "aws": { "static": aws_d[0], "ours": aws_d[1], "py": aws_d[2] },
        "round_trip": { "echo_floor": dist(rt_echo, "us"), "ours": dist(rt_ours, "us"),
                        "ours_raw": dist(rt_raw, "us"), "py": dist(rt_py, "us") },
        "throughput": { "ours": tp_ours, "floor": tp_echo },
        "rss_kib": {
            "ours": rss_ours,
            "py": rss_py,
            "ours_idle_after_bench": ours_idle,
            "py_after_bench": py_idle_main,
        },
        "idle_wakeups": wakeups,
        "scale": scale,
        "sts_calls": {
            "first_fetch_clients": c.first_fetch_clients,
            "first_fetch_calls": after_first - before,
            "first_fetch_daemon_count": daemon_count,
            "warm_fetches": c.warm_fetches,
            "warm_calls": after_warm - after_first,
        },
        "slow_sts": {
            "delay_s": c.slow_delay_s,
            "ours": slow_ours,
            "py": slow_py,
            "fake_sts_requests": sts.served.load(Ordering::Relaxed),
        },
    });
    v["targets"] = report::targets(&v);
    v["meta"]["seconds"] = json!((b.started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
    Ok(v)
}

/// Starts `slow` (a first fetch, or a refresh, that takes `delay` at the STS), and meanwhile
/// reads `cached` back to back for as long as the slow call lasts (at most `delay` + 10 s).
fn slow_read(slow: &Target, cached: &Target, delay: Duration) -> Result<Value, String> {
    cached.once()?;
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let s = slow.clone();
    let t0 = Instant::now();
    let h = std::thread::spawn(move || {
        let r = s.once();
        d2.store(true, Ordering::Relaxed);
        (r, t0.elapsed())
    });
    // Let the slow request reach the daemon first.
    std::thread::sleep(Duration::from_millis(50));
    let samples =
        measure::latencies_until(cached, &done, delay + Duration::from_secs(10), 500_000)?;
    let (r, took) = h.join().map_err(|_| "the slow client panicked")?;
    r.map_err(|e| format!("the slow request failed: {e}"))?;
    let overlapped = samples.len();
    Ok(json!({
        "slow_call_s": took.as_secs_f64(),
        "reads": dist(samples, "us"),
        "reads_during_call": overlapped,
    }))
}

/// Our daemon's RSS: idle, then with each level of cached sessions.
fn rss_ours(b: &Bench) -> Result<Value, String> {
    let home = b.o.work.join("ours-rss");
    let max = b.c.rss_levels.iter().copied().max().unwrap_or(0);
    write_file(&home.join("elhaz.toml"), "capacity = 2000\n")?;
    for i in 1..=max {
        write_file(
            &home.join(format!("configs/s{i:04}.toml")),
            &our_config(&format!("r{i:04}"), &b.o.moto_url, 3600),
        )?;
    }
    let p = b.start_ours("ours-rss-daemon", &home)?;
    let sock = home.join("run/elhaz.sock");
    // Idle means settled: start-up work done, nothing asked since.
    std::thread::sleep(Duration::from_millis(1500));
    let mut out = vec![json!({"sessions": 0, "kib": rss_kib(p.pid())?})];
    let mut have = 0;
    let t0 = Instant::now();
    for &level in &b.c.rss_levels {
        let reqs = ((have + 1)..=level)
            .map(|i| measure::ours_request("add", &format!("s{i:04}")))
            .collect();
        fan_out(&sock, reqs, 8, br#""kind":"added""#, false)?;
        have = level;
        std::thread::sleep(Duration::from_millis(300));
        out.push(json!({"sessions": level, "kib": rss_kib(p.pid())?}));
        b.say(format!(
            "  ours: {level} sessions cached ({:.1}s)",
            t0.elapsed().as_secs_f64()
        ));
    }
    Ok(Value::Array(out))
}

/// The audit writer's thread name (`src/logging.rs`); reported apart, see `wakeups_ours`.
const AUDIT_THREAD: &str = "elhaz-audit";

/// Voluntary context switches of every thread of `pid`, summed by thread name.
fn switches_by_thread(pid: u32) -> Result<BTreeMap<String, u64>, String> {
    let dir = format!("/proc/{pid}/task");
    let mut out = BTreeMap::new();
    for t in std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))? {
        let t = t.map_err(|e| e.to_string())?.path();
        // A thread that ends meanwhile is skipped (its switches are lost: an undercount).
        let (Ok(comm), Ok(status)) = (
            std::fs::read_to_string(t.join("comm")),
            std::fs::read_to_string(t.join("status")),
        ) else {
            continue;
        };
        let n = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("no voluntary_ctxt_switches in {}", t.display()))?;
        *out.entry(comm.trim().to_string()).or_default() += n;
    }
    Ok(out)
}

/// Wake-ups per minute of `pid` over `window`: voluntary context switches of all its threads
/// (each one is a thread going back to sleep, i.e. one wake-up), in total, without the audit
/// writer thread, and by thread name.
fn wake_rate(pid: u32, window: Duration) -> Result<Value, String> {
    let before = switches_by_thread(pid)?;
    std::thread::sleep(window);
    let after = switches_by_thread(pid)?;
    let per_min = |n: u64| (n as f64 * 60.0 / window.as_secs_f64() * 10.0).round() / 10.0;
    let mut threads = serde_json::Map::new();
    let (mut total, mut audit) = (0, 0);
    for (name, n) in &after {
        let d = n.saturating_sub(before.get(name).copied().unwrap_or(0));
        total += d;
        if name == AUDIT_THREAD {
            audit += d;
        }
        threads.insert(name.clone(), json!(per_min(d)));
    }
    Ok(json!({
        "per_min": per_min(total),
        "per_min_without_audit": per_min(total - audit),
        "threads": threads,
    }))
}

/// Idle wake-ups of our daemon (issue #11, target ≤ 2 a minute): a fresh daemon with no
/// session, then with `wake_sessions` cached sessions and no requests, each over
/// `wake_window_s`. Until the audit writer stops waking every second, the total includes its
/// ~60 a minute; `per_min_without_audit` is everything else.
fn wakeups_ours(b: &Bench) -> Result<Value, String> {
    let home = b.o.work.join("ours-wake");
    let n = b.c.wake_sessions;
    let window = Duration::from_secs_f64(b.c.wake_window_s);
    write_file(&home.join("elhaz.toml"), "capacity = 2000\n")?;
    for i in 1..=n {
        write_file(
            &home.join(format!("configs/w{i:04}.toml")),
            &our_config(&format!("w{i:04}"), &b.o.moto_url, 3600),
        )?;
    }
    let p = b.start_ours("ours-wake-daemon", &home)?;
    let sock = home.join("run/elhaz.sock");
    std::thread::sleep(Duration::from_millis(1500));
    let idle = wake_rate(p.pid(), window)?;
    let reqs = (1..=n)
        .map(|i| measure::ours_request("add", &format!("w{i:04}")))
        .collect();
    fan_out(&sock, reqs, 8, br#""kind":"added""#, false)?;
    // Settle: the runtime's blocking threads linger 10 s after their last job.
    let settle = if b.o.smoke { 1.5 } else { 12.0 };
    std::thread::sleep(Duration::from_secs_f64(settle));
    let loaded = wake_rate(p.pid(), window)?;
    Ok(json!({
        "window_s": b.c.wake_window_s,
        "levels": [
            {"sessions": 0, "rate": idle},
            {"sessions": n, "rate": loaded},
        ],
    }))
}

/// Python elhaz's RSS: idle, then with each level of cached sessions.
fn rss_py(b: &Bench) -> Result<Value, String> {
    let home = b.o.work.join("py-rss");
    let max = b.c.rss_levels_py.iter().copied().max().unwrap_or(0);
    for i in 1..=max {
        write_file(
            &home.join(format!(".elhaz/configs/p{i:02}.yaml")),
            &py_config(&format!("p{i:02}"), &b.o.moto_url, 3600),
        )?;
    }
    let p = b.start_py("py-rss-daemon", &home, max + 5)?;
    let sock = Bench::py_socket(&home);
    std::thread::sleep(Duration::from_millis(1500));
    let mut out = vec![json!({"sessions": 0, "kib": rss_kib(p.pid())?})];
    let mut have = 0;
    for &level in &b.c.rss_levels_py {
        let reqs = ((have + 1)..=level)
            .map(|i| measure::py_request("add", Some(&format!("p{i:02}")), i as u64))
            .collect();
        // One at a time: its listen backlog is 5.
        fan_out(&sock, reqs, 1, br#""ok":true"#, true)?;
        have = level;
        std::thread::sleep(Duration::from_millis(300));
        out.push(json!({"sessions": level, "kib": rss_kib(p.pid())?}));
        b.say(format!("  python elhaz: {level} sessions cached"));
    }
    Ok(Value::Array(out))
}

/// `a / b` for display, `NaN` when undefined.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

/// Formats a latency in its own unit with 2–3 significant digits.
pub fn fmt_num(x: f64) -> String {
    let mut s = String::new();
    let _ = if !x.is_finite() {
        write!(s, "—")
    } else if x >= 100.0 {
        write!(s, "{x:.0}")
    } else if x >= 10.0 {
        write!(s, "{x:.1}")
    } else {
        write!(s, "{x:.2}")
    };
    s
}

/// A file's size in bytes (NaN, shown as such, when it cannot be read).
fn file_len(p: &std::path::Path) -> f64 {
    std::fs::metadata(p).map_or(f64::NAN, |m| m.len() as f64)
}
