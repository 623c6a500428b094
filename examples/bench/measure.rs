//! Client-side measurement primitives: one round trip in each protocol, latency loops,
//! throughput, and the statistics of a sample.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Read/write timeout of every benchmark socket: a wedged server fails the run, it never
/// hangs it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A length-prefixed request frame for our daemon (and the echo floor).
pub fn frame(json: &str) -> Vec<u8> {
    let mut f = (json.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(json.as_bytes());
    f
}

/// Our wire request for `op` on `name`.
pub fn ours_request(op: &str, name: &str) -> Vec<u8> {
    frame(&format!(
        r#"{{"protocol":4,"id":1,"op":"{op}","name":"{name}"}}"#
    ))
}

/// Python elhaz's wire request: one JSON line.
pub fn py_request(action: &str, config: Option<&str>, id: u64) -> Vec<u8> {
    let payload = config.map_or_else(|| "{}".to_string(), |c| format!(r#"{{"config":"{c}"}}"#));
    format!(
        r#"{{"version":1,"request_id":"00000000-0000-4000-8000-{id:012x}","action":"{action}","payload":{payload}}}"#
    )
    .into_bytes()
    .into_iter()
    .chain(std::iter::once(b'\n'))
    .collect()
}

/// One connection, one length-prefixed request, one reply: what `bench_client` and the CLI do,
/// minus JSON. Returns the reply payload.
pub fn raw_round_trip(socket: &Path, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.write_all(request)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; u32::from_be_bytes(len).min(1 << 16) as usize];
    s.read_exact(&mut body)?;
    Ok(body)
}

/// One round trip through the library client, exactly as `elhaz credential-process` makes it
/// (connect, timeouts, encode, decode, id check).
pub fn elhaz_round_trip(socket: &Path, name: &str) -> Result<(), String> {
    let mut c = elhaz::client::Client::connect(socket).map_err(|e| e.to_string())?;
    match c.call(elhaz::protocol::Request::Credentials {
        name: name.to_string(),
        mfa_code: None,
    }) {
        Ok(elhaz::protocol::Response::Credentials(_)) => Ok(()),
        Ok(other) => Err(format!("unexpected reply {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// One connection, one JSON line each way (Python elhaz's protocol). Returns the reply line.
pub fn py_round_trip(socket: &Path, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.write_all(request)?;
    let mut r = BufReader::new(s);
    let mut line = Vec::with_capacity(1024);
    r.read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "python elhaz closed the connection without a reply",
        ));
    }
    Ok(line)
}

/// Which client a loop runs.
#[derive(Clone)]
pub enum Target {
    /// The library client against our daemon, for session `name`.
    Elhaz { socket: PathBuf, name: String },
    /// A raw length-prefixed request; the reply must contain `expect`.
    Raw {
        socket: PathBuf,
        request: Vec<u8>,
        expect: &'static [u8],
    },
    /// Python elhaz's JSON line protocol; the reply must contain `"ok":true`.
    Py { socket: PathBuf, request: Vec<u8> },
}

impl Target {
    /// One round trip; `Err` on any failure or unexpected reply.
    pub fn once(&self) -> Result<(), String> {
        match self {
            Target::Elhaz { socket, name } => elhaz_round_trip(socket, name),
            Target::Raw {
                socket,
                request,
                expect,
            } => {
                let reply = raw_round_trip(socket, request).map_err(|e| e.to_string())?;
                if contains(&reply, expect) {
                    Ok(())
                } else {
                    Err(format!(
                        "unexpected reply: {}",
                        String::from_utf8_lossy(&reply[..reply.len().min(300)])
                    ))
                }
            }
            Target::Py { socket, request } => {
                let reply = py_round_trip(socket, request).map_err(|e| e.to_string())?;
                if contains(&reply, br#""ok":true"#) {
                    Ok(())
                } else {
                    Err(format!(
                        "unexpected reply: {}",
                        String::from_utf8_lossy(&reply[..reply.len().min(300)])
                    ))
                }
            }
        }
    }
}

/// Whether `hay` contains `needle`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Times up to `n` sequential round trips (stopping early after `max_time`), in microseconds.
/// The first failure aborts: a benchmark of errors measures nothing.
pub fn latencies(t: &Target, n: usize, max_time: Duration) -> Result<Vec<f64>, String> {
    let mut out = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t0 = Instant::now();
        t.once()?;
        out.push(t0.elapsed().as_secs_f64() * 1e6);
        if start.elapsed() > max_time {
            break;
        }
    }
    Ok(out)
}

/// Round trips until `stop` is set or `max_time` passes; latencies in microseconds.
pub fn latencies_until(
    t: &Target,
    stop: &AtomicBool,
    max_time: Duration,
    max_samples: usize,
) -> Result<Vec<f64>, String> {
    let mut out = Vec::new();
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) && start.elapsed() < max_time && out.len() < max_samples {
        let t0 = Instant::now();
        t.once()?;
        out.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    Ok(out)
}

/// Throughput of one concurrency level.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Concurrent clients (threads, each one connection per request, back to back).
    pub clients: usize,
    /// Completed requests per second.
    pub rps: f64,
    /// Completed requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Measured seconds.
    pub secs: f64,
}

/// `clients` threads doing back-to-back round trips for `duration`.
pub fn throughput(t: &Target, clients: usize, duration: Duration) -> Throughput {
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut handles = Vec::with_capacity(clients);
    for _ in 0..clients {
        let t = t.clone();
        let barrier = barrier.clone();
        handles.push(std::thread::spawn(move || {
            barrier.wait();
            let deadline = Instant::now() + duration;
            let (mut ok, mut err) = (0u64, 0u64);
            while Instant::now() < deadline {
                match t.once() {
                    Ok(()) => ok += 1,
                    Err(_) => {
                        err += 1;
                        // Do not spin on a dead server.
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            (ok, err)
        }));
    }
    barrier.wait();
    let start = Instant::now();
    let (mut ok, mut err) = (0, 0);
    for h in handles {
        if let Ok((o, e)) = h.join() {
            ok += o;
            err += e;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Throughput {
        clients,
        rps: ok as f64 / secs,
        requests: ok,
        errors: err,
        secs,
    }
}

/// Summary statistics of a sample, with a thinned copy of the sample for the chart.
#[derive(Debug, Clone, Serialize)]
pub struct Dist {
    /// `us` or `ms`.
    pub unit: &'static str,
    /// Sample size.
    pub n: usize,
    /// Smallest value.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Up to 400 evenly spaced order statistics (the whole sample when smaller).
    pub samples: Vec<f64>,
}

/// Nearest-rank percentile of a sorted sample.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Statistics of `v` (in `unit`).
pub fn dist(mut v: Vec<f64>, unit: &'static str) -> Dist {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let samples = if n <= 400 {
        v.clone()
    } else {
        (0..400).map(|i| v[i * (n - 1) / 399]).collect()
    };
    Dist {
        unit,
        n,
        min: v.first().copied().unwrap_or(f64::NAN),
        p50: pct(&v, 50.0),
        p90: pct(&v, 90.0),
        p99: pct(&v, 99.0),
        max: v.last().copied().unwrap_or(f64::NAN),
        mean: if n == 0 {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / n as f64
        },
        samples,
    }
}
