//! The scale section (issue #15): our daemon with 10 / 100 / 1,000 / 10,000 cached sessions —
//! RSS, `daemon list` wall time, `credential-process` median, idle wake-ups, and the STS call
//! rate of the re-warm after a restart (peak and mean per second, from moto's access log, whose
//! timestamps have one-second resolution: exactly the buckets the rate limit is about).
//!
//! A re-warm of 10,000 sessions at 20/s takes ~500 s; its rate is measured over a bounded
//! window instead of waiting for the end. Sessions are loaded by client `add` requests (which
//! the scheduler never holds back) against moto, 8 connections at a time.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::measure::{self, dist};
use crate::{Bench, fan_out, our_config, rss_kib, wake_rate, write_file};

/// The `[sts]` the scale daemons run with (the defaults, written out so the table can say).
const RATE: f64 = 20.0;
const BURST: f64 = 5.0;

/// How much: (session levels, `credential-process` runs, `daemon list` runs, wake-up window,
/// settle time, re-warm window).
struct Plan {
    levels: Vec<usize>,
    cp_runs: u32,
    list_runs: usize,
    wake_window: Duration,
    settle: Duration,
    rewarm_window: Duration,
}

impl Plan {
    fn new(smoke: bool) -> Plan {
        if smoke {
            Plan {
                levels: vec![5, 20],
                cp_runs: 3,
                list_runs: 2,
                wake_window: Duration::from_secs(1),
                settle: Duration::from_millis(500),
                rewarm_window: Duration::from_millis(1500),
            }
        } else {
            Plan {
                levels: vec![10, 100, 1000, 10_000],
                cp_runs: 100,
                list_runs: 7,
                wake_window: Duration::from_secs(30),
                // The runtime's blocking threads linger 10 s after their last job.
                settle: Duration::from_secs(12),
                rewarm_window: Duration::from_secs(15),
            }
        }
    }
}

/// Seconds of the day of a werkzeug access-log line (`… [07/Dec/2026 06:50:01] "POST / …`).
fn log_second(line: &str) -> Option<u32> {
    let stamp = line.split('[').nth(1)?.split(']').next()?;
    let hms = stamp.rsplit(' ').next()?;
    let mut it = hms.split(':').map(|x| x.parse::<u32>().ok());
    Some(it.next()?? * 3600 + it.next()?? * 60 + it.next()??)
}

/// STS calls in moto's log after its first `skip` lines: (per-second counts, in order).
fn calls_per_second(log: &Path, skip: usize) -> Result<Vec<u32>, String> {
    let text = std::fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let secs: Vec<u32> = text
        .lines()
        .skip(skip)
        .filter(|l| l.contains("\"POST / HTTP/1.1\""))
        .filter_map(log_second)
        .collect();
    let (Some(first), Some(last)) = (secs.iter().min(), secs.iter().max()) else {
        return Ok(Vec::new());
    };
    let mut buckets = vec![0u32; (last - first + 1) as usize];
    for s in &secs {
        buckets[(s - first) as usize] += 1;
    }
    Ok(buckets)
}

fn line_count(log: &Path) -> Result<usize, String> {
    Ok(std::fs::read_to_string(log)
        .map_err(|e| format!("{}: {e}", log.display()))?
        .lines()
        .count())
}

/// Runs `elhaz daemon list` against `home` `runs` times; wall times in ms.
fn list_times(b: &Bench, home: &Path, runs: usize) -> Result<Vec<f64>, String> {
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut c = b.cmd(&b.o.elhaz);
        c.args(["daemon", "list"]).env("ELHAZ_HOME", home);
        let t0 = Instant::now();
        let text = b.output(c, Duration::from_secs(60))?;
        out.push(t0.elapsed().as_secs_f64() * 1e3);
        if text.lines().count() < 2 {
            return Err(format!("`daemon list` printed no sessions: {text}"));
        }
    }
    Ok(out)
}

/// One level: load `n` sessions, measure, restart, measure the re-warm.
fn level(b: &Bench, plan: &Plan, n: usize) -> Result<Value, String> {
    let home = b.o.work.join(format!("scale-{n}"));
    write_file(
        &home.join("elhaz.toml"),
        &format!("capacity = 20000\n\n[sts]\nrate = {RATE}\nburst = {BURST}\n"),
    )?;
    for i in 0..n {
        write_file(
            &home.join(format!("configs/s{i:05}.toml")),
            &our_config(&format!("scale{i:05}"), &b.o.moto_url, 3600),
        )?;
    }
    let name = format!("scale-{n}-daemon");
    let p = b.start_ours(&name, &home)?;
    let sock = home.join("run/elhaz.sock");
    let t0 = Instant::now();
    let reqs = (0..n)
        .map(|i| measure::ours_request("add", &format!("s{i:05}")))
        .collect();
    fan_out(&sock, reqs, 8, br#""kind":"added""#, false)?;
    let load_s = t0.elapsed().as_secs_f64();
    b.say(format!("  scale: {n} sessions loaded in {load_s:.1}s"));
    std::thread::sleep(Duration::from_millis(500));
    let kib = rss_kib(p.pid())?;
    let list = dist(list_times(b, &home, plan.list_runs)?, "ms");
    let cp = b.hyperfine(
        &format!("scale-cp-{n}"),
        plan.cp_runs,
        (plan.cp_runs / 10).max(1),
        &[(
            "credential-process",
            format!(
                "env ELHAZ_HOME={} {} credential-process s00000",
                home.display(),
                b.o.elhaz.display()
            ),
        )],
    )?;
    let cp = cp.into_iter().next().ok_or("hyperfine returned nothing")?;
    std::thread::sleep(plan.settle);
    let wake = wake_rate(p.pid(), plan.wake_window)?;

    // Re-warm: stop (the warm file is written), start again, count moto's calls per second.
    drop(p);
    let mark = line_count(&b.o.moto_log)?;
    let p = b.start_ours(&name, &home)?;
    std::thread::sleep(plan.rewarm_window);
    drop(p);
    let buckets = calls_per_second(&b.o.moto_log, mark)?;
    let total: u32 = buckets.iter().sum();
    // The mean over whole seconds: the first and last buckets are partial.
    let inner = if buckets.len() > 2 {
        &buckets[1..buckets.len() - 1]
    } else {
        &buckets[..]
    };
    let mean = if inner.is_empty() {
        f64::NAN
    } else {
        f64::from(inner.iter().sum::<u32>()) / inner.len() as f64
    };
    Ok(json!({
        "sessions": n,
        "load_s": (load_s * 10.0).round() / 10.0,
        "rss_kib": kib,
        "list_ms": list,
        "cp_ms": cp,
        "wake": wake,
        "rewarm": {
            "window_s": plan.rewarm_window.as_secs_f64(),
            "calls": total,
            "peak_per_s": buckets.iter().max().copied().unwrap_or(0),
            "mean_per_s": (mean * 10.0).round() / 10.0,
            "per_second": buckets,
        },
    }))
}

/// The whole section.
pub fn scale_ours(b: &Bench) -> Result<Value, String> {
    let plan = Plan::new(b.o.smoke);
    let mut levels = Vec::new();
    for &n in &plan.levels {
        b.say(format!("scale: {n} sessions"));
        levels.push(level(b, &plan, n)?);
    }
    Ok(json!({
        "rate": RATE,
        "burst": BURST,
        "wake_window_s": plan.wake_window.as_secs_f64(),
        "levels": levels,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn werkzeug_log_lines_parse() {
        let l = r#"127.0.0.1 - - [07/Dec/2026 06:50:01] "POST / HTTP/1.1" 200 -"#;
        assert_eq!(log_second(l), Some(6 * 3600 + 50 * 60 + 1));
        assert_eq!(log_second("no stamp"), None);
    }
}
