//! The targets of issue #6 and the markdown table, both computed from the results JSON only,
//! so a saved `results.json` always reproduces its table.

use serde_json::{Value, json};

use crate::{fmt_num, ratio};

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// The largest measured level of a `[{"sessions":N,"kib":K}]` list.
fn last_level(v: &Value) -> (u64, f64) {
    v.as_array()
        .and_then(|a| a.last())
        .map(|l| (l["sessions"].as_u64().unwrap_or(0), f(&l["kib"])))
        .unwrap_or((0, f64::NAN))
}

fn tp_at(list: &Value, clients: u64) -> f64 {
    list.as_array()
        .and_then(|a| a.iter().find(|t| t["clients"].as_u64() == Some(clients)))
        .map_or(f64::NAN, |t| f(&t["rps"]))
}

/// One target: what is measured, its limit and whether it is met. `ratio` is the measured
/// value relative to the same run's floor where the target is a ratio.
fn target(id: &str, what: &str, value: f64, unit: &str, cmp: &str, limit: f64) -> Value {
    let met = match cmp {
        "<=" => value <= limit,
        ">=" => value >= limit,
        _ => value == limit,
    };
    json!({
        "id": id, "target": what, "value": value, "unit": unit, "cmp": cmp, "limit": limit,
        "met": met && value.is_finite(),
    })
}

/// Every target of the issue, evaluated.
pub fn targets(r: &Value) -> Value {
    let cli = &r["cli"];
    let t = f(&cli["bin_true"]["p50"]);
    let cp = f(&cli["ours_cp"]["p50"]);
    let rt = &r["round_trip"];
    let (n_max, kib_max) = last_level(&r["rss_kib"]["ours"]);
    let idle = r["rss_kib"]["ours"]
        .as_array()
        .and_then(|a| a.first())
        .map_or(f64::NAN, |l| f(&l["kib"]));
    let sts = &r["sts_calls"];
    let scale = r["scale"]["levels"].as_array().cloned().unwrap_or_default();
    let (bottom, top) = (
        scale.first().cloned().unwrap_or(Value::Null),
        scale.last().cloned().unwrap_or(Value::Null),
    );
    json!([
        target(
            "cp_vs_true",
            "credential-process median ≤ 2.5× /bin/true (same run)",
            ratio(cp, t),
            "×",
            "<=",
            2.5
        ),
        target(
            "cp_vs_floor",
            "credential-process median ≤ 1.1× the std-only socket client (#12, same run)",
            ratio(cp, f(&cli["floor_client"]["p50"])),
            "×",
            "<=",
            1.1
        ),
        target(
            "cp_vs_true_lean",
            "credential-process median ≤ 2× /bin/true (#12, same run)",
            ratio(cp, t),
            "×",
            "<=",
            2.0
        ),
        target(
            "cp_vs_python",
            "credential-process median ≥ 300× faster than Python elhaz",
            ratio(f(&cli["py_cp"]["p50"]), cp),
            "×",
            ">=",
            300.0
        ),
        target(
            "exec_vs_true",
            "exec -- /bin/true median ≤ 3× /bin/true",
            ratio(f(&cli["ours_exec"]["p50"]), t),
            "×",
            "<=",
            3.0
        ),
        target(
            "rt_p50",
            "round trip median ≤ 1.5× echo floor",
            ratio(f(&rt["ours"]["p50"]), f(&rt["echo_floor"]["p50"])),
            "×",
            "<=",
            1.5
        ),
        target(
            "rt_p99",
            "round trip p99 ≤ 1.5× echo floor",
            ratio(f(&rt["ours"]["p99"]), f(&rt["echo_floor"]["p99"])),
            "×",
            "<=",
            1.5
        ),
        target(
            "tp32",
            "throughput at 32 clients ≥ 70 % of echo floor",
            ratio(
                tp_at(&r["throughput"]["ours"], 32),
                tp_at(&r["throughput"]["floor"], 32)
            ),
            "× floor",
            ">=",
            0.7
        ),
        target(
            "rss_idle",
            "RSS idle ≤ 10 MiB",
            idle / 1024.0,
            "MiB",
            "<=",
            10.0
        ),
        target(
            "rss_sessions",
            &format!("RSS with {n_max} sessions ≤ 30 MiB (issue: 1,000)"),
            kib_max / 1024.0,
            "MiB",
            "<=",
            30.0
        ),
        target(
            "first_fetch",
            &format!(
                "STS calls for {} concurrent first fetches = 1",
                sts["first_fetch_clients"]
            ),
            f(&sts["first_fetch_calls"]),
            "calls",
            "==",
            1.0
        ),
        target(
            "warm",
            &format!("STS calls for {} warm fetches = 0", sts["warm_fetches"]),
            f(&sts["warm_calls"]),
            "calls",
            "==",
            0.0
        ),
        target(
            "idle_wake_0",
            "idle wake-ups per minute, no session ≤ 2 (all threads)",
            f(&r["idle_wakeups"]["levels"][0]["rate"]["per_min"]),
            "/min",
            "<=",
            2.0
        ),
        target(
            "idle_wake_n",
            &format!(
                "idle wake-ups per minute, {} cached sessions ≤ 2 (all threads)",
                r["idle_wakeups"]["levels"][1]["sessions"]
            ),
            f(&r["idle_wakeups"]["levels"][1]["rate"]["per_min"]),
            "/min",
            "<=",
            2.0
        ),
        target(
            "scale_rss",
            &format!(
                "daemon RSS with {} cached sessions ≤ 64 MiB",
                f(&top["sessions"])
            ),
            f(&top["rss_kib"]) / 1024.0,
            "MiB",
            "<=",
            64.0
        ),
        target(
            "scale_list",
            &format!(
                "`daemon list` of {} sessions < 300 ms (median)",
                f(&top["sessions"])
            ),
            f(&top["list_ms"]["p50"]),
            "ms",
            "<=",
            300.0
        ),
        target(
            "scale_cp",
            &format!(
                "credential-process median with {} sessions ≤ 1.2× with {} (noise)",
                f(&top["sessions"]),
                f(&bottom["sessions"])
            ),
            ratio(f(&top["cp_ms"]["p50"]), f(&bottom["cp_ms"]["p50"])),
            "×",
            "<=",
            1.2
        ),
        target(
            "scale_wake",
            &format!(
                "idle wake-ups per minute with {} sessions ≤ 2 (without the audit writer)",
                f(&top["sessions"])
            ),
            f(&top["wake"]["per_min_without_audit"]),
            "/min",
            "<=",
            2.0
        ),
        target(
            "scale_rewarm_peak",
            &format!(
                "re-warm of {} sessions: STS calls in any second ≤ rate + burst",
                f(&top["sessions"])
            ),
            f(&top["rewarm"]["peak_per_s"]),
            "/s",
            "<=",
            f(&r["scale"]["rate"]) + f(&r["scale"]["burst"])
        ),
        target(
            "scale_rewarm_mean",
            &format!(
                "re-warm of {} sessions: mean STS calls per second ≤ rate",
                f(&top["sessions"])
            ),
            f(&top["rewarm"]["mean_per_s"]),
            "/s",
            "<=",
            f(&r["scale"]["rate"]) + 0.5
        ),
        target(
            "slow_read_p99",
            "read p99 of a cached session during a slow STS call ≤ 5 ms",
            f(&r["slow_sts"]["ours"]["reads"]["p99"]) / 1e3,
            "ms",
            "<=",
            5.0
        ),
    ])
}

fn ms(d: &Value) -> String {
    format!("{} / {} ms", fmt_num(f(&d["p50"])), fmt_num(f(&d["p90"])))
}

fn us(d: &Value) -> String {
    format!("{} / {} µs", fmt_num(f(&d["p50"])), fmt_num(f(&d["p99"])))
}

fn mib(kib: f64) -> String {
    format!("{} MiB", fmt_num(kib / 1024.0))
}

/// `0: 60.2 (0.2 without audit); 100: …` for the idle wake-up row.
fn wake_list(v: &Value) -> String {
    v["levels"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|l| {
                    format!(
                        "{}: {} ({} without the audit thread)",
                        l["sessions"],
                        fmt_num(f(&l["rate"]["per_min"])),
                        fmt_num(f(&l["rate"]["per_min_without_audit"]))
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

fn rss_list(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|l| {
                    let n = l["sessions"].as_u64().unwrap_or(0);
                    let label = if n == 0 {
                        "idle".to_string()
                    } else {
                        format!("{n}")
                    };
                    format!("{label}: {}", mib(f(&l["kib"])))
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

fn tp_list(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|t| format!("{:.0}", f(&t["rps"])))
                .collect::<Vec<_>>()
                .join(" / ")
        })
        .unwrap_or_default()
}

fn reads(d: &Value) -> String {
    let r = &d["reads"];
    format!(
        "p99 {} ms, max {} ms (n={}, slow call {:.1} s)",
        fmt_num(f(&r["p99"]) / 1e3),
        fmt_num(f(&r["max"]) / 1e3),
        r["n"],
        f(&d["slow_call_s"])
    )
}

/// The markdown table (figures, then targets) printed on stdout and kept in `table.md`.
pub fn table(r: &Value) -> String {
    let cli = &r["cli"];
    let aws = &r["aws"];
    let rt = &r["round_trip"];
    let tp = &r["throughput"];
    let sts = &r["sts_calls"];
    let m = &r["meta"];
    let levels = tp["ours"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| t["clients"].to_string())
                .collect::<Vec<_>>()
                .join(" / ")
        })
        .unwrap_or_default();
    let mut s = String::new();
    s.push_str(&format!(
        "elhaz {} vs Python elhaz {} — {} run, {} — {} × {}, {}, kernel {}, {}\n\n",
        m["elhaz_version"].as_str().unwrap_or("?"),
        m["python_elhaz_version"].as_str().unwrap_or("?"),
        m["mode"].as_str().unwrap_or("?"),
        m["date"].as_str().unwrap_or("?"),
        m["machine"]["nproc"],
        m["machine"]["cpu"].as_str().unwrap_or("?"),
        m["machine"]["os"].as_str().unwrap_or("?"),
        m["machine"]["kernel"].as_str().unwrap_or("?"),
        m["machine"]["rustc"].as_str().unwrap_or("?"),
    ));
    let mib = |v: &Value| f(v) / (1024.0 * 1024.0);
    s.push_str(&format!(
        "Binaries: `elhaz` {:.1} MB (serves credential-process and exec), `elhaz-full` {:.1} MB; \
         std-only socket client {:.1} MB.\n\n",
        mib(&m["binary_bytes"]["elhaz"]),
        mib(&m["binary_bytes"]["elhaz_full"]),
        mib(&m["binary_bytes"]["floor_client"]),
    ));
    s.push_str("| figure | ours | Python elhaz 0.5.6 | floor |\n|---|---|---|---|\n");
    let row = |s: &mut String, a: &str, b: String, c: String, d: String| {
        s.push_str(&format!("| {a} | {b} | {c} | {d} |\n"));
    };
    row(
        &mut s,
        "`credential-process` wall time, warm daemon, cached session (median / p90)",
        ms(&cli["ours_cp"]),
        format!("{} (`export -f credential-process`)", ms(&cli["py_cp"])),
        format!(
            "`/bin/true` {}; `python3 -c pass` {}; std-only socket client {}",
            ms(&cli["bin_true"]),
            ms(&cli["python_pass"]),
            ms(&cli["floor_client"])
        ),
    );
    row(
        &mut s,
        "`exec NAME -- /bin/true` wall time (median / p90)",
        ms(&cli["ours_exec"]),
        ms(&cli["py_exec"]),
        format!(
            "`/bin/true` {} (Python's group: {})",
            ms(&cli["bin_true"]),
            ms(&cli["bin_true_py_group"])
        ),
    );
    row(
        &mut s,
        "`aws sts get-caller-identity` via a credential_process profile (median / p90)",
        ms(&aws["ours"]),
        ms(&aws["py"]),
        format!("static env credentials {}", ms(&aws["static"])),
    );
    row(
        &mut s,
        "daemon request round trip, in-process client (median / p99)",
        format!(
            "{} (library client); {} (raw client)",
            us(&rt["ours"]),
            us(&rt["ours_raw"])
        ),
        us(&rt["py"]),
        format!("echo server {}", us(&rt["echo_floor"])),
    );
    row(
        &mut s,
        &format!("throughput at {levels} concurrent clients (req/s)"),
        tp_list(&tp["ours"]),
        "—".into(),
        format!("echo server {}", tp_list(&tp["floor"])),
    );
    row(
        &mut s,
        &format!(
            "idle wake-ups per minute with N cached sessions (voluntary context switches, all threads, {} s)",
            r["idle_wakeups"]["window_s"]
        ),
        wake_list(&r["idle_wakeups"]),
        "—".into(),
        "—".into(),
    );
    row(
        &mut s,
        "daemon RSS, idle and with N cached sessions",
        rss_list(&r["rss_kib"]["ours"]),
        rss_list(&r["rss_kib"]["py"]),
        "—".into(),
    );
    row(
        &mut s,
        &format!(
            "STS calls for {} concurrent first fetches of one session; for {} warm fetches",
            sts["first_fetch_clients"], sts["warm_fetches"]
        ),
        format!(
            "{} ; {} (daemon's own count: {})",
            sts["first_fetch_calls"], sts["warm_calls"], sts["first_fetch_daemon_count"]
        ),
        "—".into(),
        "1 ; 0".into(),
    );
    row(
        &mut s,
        &format!(
            "read latency of a cached session while another session's STS call takes {} s",
            r["slow_sts"]["delay_s"]
        ),
        reads(&r["slow_sts"]["ours"]),
        reads(&r["slow_sts"]["py"]),
        "—".into(),
    );
    s.push_str(&scale_table(&r["scale"]));
    s.push_str("\n| target | measured | limit | met |\n|---|---|---|---|\n");
    if let Some(ts) = r["targets"].as_array() {
        for t in ts {
            let unit = t["unit"].as_str().unwrap_or("");
            s.push_str(&format!(
                "| {} | {} {unit} | {} {} {unit} | {} |\n",
                t["target"].as_str().unwrap_or("?"),
                fmt_num(f(&t["value"])),
                t["cmp"]
                    .as_str()
                    .unwrap_or("?")
                    .replace("<=", "≤")
                    .replace(">=", "≥"),
                fmt_num(f(&t["limit"])),
                if t["met"].as_bool() == Some(true) {
                    "**met**"
                } else {
                    "**NOT met**"
                }
            ));
        }
    }
    if m["mode"] == "smoke" {
        s.push_str(
            "\nSmoke run: tiny counts and debug-able builds; the numbers prove the benchmark \
             works, not how fast elhaz is.\n",
        );
    }
    s
}

/// The scale section (issue #15): one row per level of cached sessions.
fn scale_table(sc: &Value) -> String {
    let mut s = format!(
        "\nScale: our daemon with N cached sessions (`[sts] rate = {}`, `burst = {}`; re-warm \
         measured over the first {} s after a restart, from moto's per-second log)\n\n\
         | sessions | RSS | `daemon list` (median / p90) | `credential-process` (median / p90) \
         | idle wake-ups/min (without audit writer) | re-warm STS calls/s (peak / mean) |\n\
         |---|---|---|---|---|---|\n",
        sc["rate"], sc["burst"], sc["levels"][0]["rewarm"]["window_s"]
    );
    for l in sc["levels"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} ({}) | {} / {} |\n",
            l["sessions"],
            mib(f(&l["rss_kib"])),
            ms(&l["list_ms"]),
            ms(&l["cp_ms"]),
            fmt_num(f(&l["wake"]["per_min"])),
            fmt_num(f(&l["wake"]["per_min_without_audit"])),
            l["rewarm"]["peak_per_s"],
            fmt_num(f(&l["rewarm"]["mean_per_s"])),
        ));
    }
    s
}
