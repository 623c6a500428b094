//! The benchmark's smoke run (issue #6): `scripts/bench --smoke` — tiny counts, every figure —
//! must keep working, so the benchmark cannot rot. It measures the binary under test against
//! Python elhaz 0.5.6 (which the script installs into the venv when missing) and asserts that
//! the results JSON holds every figure. No timing is asserted: this is not a performance test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::BIN;

/// The whole smoke run, including a first dev build of the two bench examples, stays far below
/// this; the script bounds each of its own steps too.
const LIMIT: Duration = Duration::from_secs(900);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd` with a deadline; returns (success, stdout, stderr).
fn run_bounded(cmd: &mut Command, out_dir: &Path) -> (bool, String, String) {
    let stdout_file = out_dir.join("bench.stdout");
    let stderr_file = out_dir.join("bench.stderr");
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_file).unwrap())
        .stderr(std::fs::File::create(&stderr_file).unwrap());
    let mut child = cmd.spawn().expect("cannot run scripts/bench");
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            // Its own exit trap stops moto and the daemons it started.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "scripts/bench --smoke did not finish within {LIMIT:?}; stderr:\n{}",
                std::fs::read_to_string(&stderr_file).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (
        status.success(),
        std::fs::read_to_string(&stdout_file).unwrap_or_default(),
        std::fs::read_to_string(&stderr_file).unwrap_or_default(),
    )
}

fn dist_ok(v: &Value, what: &str) {
    for k in ["p50", "p90", "p99", "max"] {
        assert!(
            v[k].as_f64().is_some_and(|x| x.is_finite() && x > 0.0),
            "{what}.{k} missing or not positive: {v}"
        );
    }
    assert!(
        v["samples"].as_array().is_some_and(|s| !s.is_empty()),
        "{what} has no samples"
    );
}

#[test]
fn bench_smoke_run_produces_every_figure() {
    let out = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(repo().join("scripts/bench"));
    cmd.arg("--smoke")
        .arg("--out")
        .arg(out.path())
        .current_dir(repo())
        // Measure the binary under test; the script builds the two bench examples (dev
        // profile), a no-op when they are fresh.
        .env("ELHAZ_BENCH_ELHAZ", BIN)
        .env_remove("ELHAZ_BENCH_HARNESS")
        .env_remove("ELHAZ_BENCH_CLIENT");
    let (ok, stdout, stderr) = run_bounded(&mut cmd, out.path());
    assert!(
        ok,
        "scripts/bench --smoke failed\n===== stdout =====\n{stdout}\n===== stderr =====\n{stderr}"
    );

    let text = std::fs::read_to_string(out.path().join("results.json"))
        .unwrap_or_else(|e| panic!("no results.json ({e}); stderr:\n{stderr}"));
    let r: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["meta"]["mode"], "smoke");
    assert_eq!(r["meta"]["python_elhaz_version"], "0.5.6");

    for k in [
        "bin_true",
        "python_pass",
        "floor_client",
        "ours_cp",
        "ours_exec",
        "py_cp",
        "py_exec",
    ] {
        dist_ok(&r["cli"][k], &format!("cli.{k}"));
    }
    for k in ["static", "ours", "py"] {
        dist_ok(&r["aws"][k], &format!("aws.{k}"));
    }
    for k in ["echo_floor", "ours", "ours_raw", "py"] {
        dist_ok(&r["round_trip"][k], &format!("round_trip.{k}"));
    }
    for side in ["ours", "floor"] {
        let levels: Vec<u64> = r["throughput"][side]
            .as_array()
            .unwrap_or_else(|| panic!("throughput.{side} missing"))
            .iter()
            .map(|t| {
                assert!(t["rps"].as_f64().is_some_and(|x| x > 0.0), "{t}");
                assert_eq!(t["errors"], 0, "throughput errors: {t}");
                t["clients"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(levels, [1, 8, 32, 128], "throughput.{side}");
    }
    for side in ["ours", "py"] {
        let rss = r["rss_kib"][side].as_array().unwrap();
        assert!(rss.len() >= 2, "rss_kib.{side}: {rss:?}");
        assert_eq!(rss[0]["sessions"], 0, "rss_kib.{side} starts idle");
        assert!(rss.iter().all(|l| l["kib"].as_u64().is_some_and(|k| k > 0)));
    }
    let scale = r["scale"]["levels"].as_array().expect("the scale section");
    assert_eq!(scale.len(), 2, "{scale:?}");
    for l in scale {
        assert!(l["rss_kib"].as_u64().is_some_and(|k| k > 0), "{l}");
        dist_ok(&l["list_ms"], "scale.list_ms");
        dist_ok(&l["cp_ms"], "scale.cp_ms");
        assert!(l["wake"]["per_min"].is_number(), "{l}");
        assert!(
            l["rewarm"]["calls"].as_u64().is_some_and(|c| c > 0),
            "the re-warm made no STS call: {l}"
        );
    }
    let sts = &r["sts_calls"];
    for k in [
        "first_fetch_calls",
        "warm_calls",
        "first_fetch_clients",
        "warm_fetches",
    ] {
        assert!(sts[k].is_u64(), "sts_calls.{k} missing: {sts}");
    }
    for side in ["ours", "py"] {
        dist_ok(
            &r["slow_sts"][side]["reads"],
            &format!("slow_sts.{side}.reads"),
        );
        assert!(r["slow_sts"][side]["slow_call_s"].as_f64().is_some());
    }
    let wake = r["idle_wakeups"]["levels"]
        .as_array()
        .expect("idle_wakeups.levels");
    assert_eq!(wake.len(), 2, "{wake:?}");
    assert_eq!(wake[0]["sessions"], 0);
    for l in wake {
        for k in ["per_min", "per_min_without_audit"] {
            assert!(
                l["rate"][k].as_f64().is_some_and(|x| x >= 0.0),
                "idle_wakeups {k}: {l}"
            );
        }
        assert!(
            l["rate"]["threads"]
                .as_object()
                .is_some_and(|t| !t.is_empty()),
            "{l}"
        );
    }
    let targets = r["targets"].as_array().unwrap();
    assert_eq!(
        targets.len(),
        21,
        "every target is evaluated (13 of #6, 2 of #12, 6 of #15)"
    );
    assert!(targets.iter().all(|t| t["met"].is_boolean()));

    // The table on stdout and the chart.
    assert!(
        stdout.contains("| figure | ours | Python elhaz 0.5.6 | floor |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| target | measured | limit | met |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| sessions | RSS | `daemon list`"),
        "the scale table: {stdout}"
    );
    let svg = std::fs::read_to_string(out.path().join("latency.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("Python elhaz") && svg.contains("echo server"));
}
