//! The latency chart: one SVG, two panels (per-process wall time in ms; per-request latency in
//! µs), log scale, one row per distribution — a box from p25 to p75 with the median marked,
//! whiskers from p1 to p99, and a strip of sample points — coloured ours / Python elhaz /
//! floor. Plain SVG text; no plotting library.

use std::fmt::Write as _;

use serde_json::Value;

const OURS: &str = "#1565c0";
const PY: &str = "#c62828";
const FLOOR: &str = "#6d6d6d";

const W: f64 = 1180.0;
const LABEL_W: f64 = 300.0;
const PLOT_X0: f64 = 310.0;
const PLOT_X1: f64 = 900.0;
const ROW_H: f64 = 30.0;

struct Row {
    label: String,
    color: &'static str,
    /// Evenly spaced order statistics.
    samples: Vec<f64>,
    p50: f64,
    p99: f64,
    n: u64,
}

fn row(label: &str, color: &'static str, d: &Value, scale: f64) -> Option<Row> {
    let samples: Vec<f64> = d["samples"]
        .as_array()?
        .iter()
        .filter_map(Value::as_f64)
        .map(|x| x * scale)
        .filter(|x| *x > 0.0)
        .collect();
    if samples.is_empty() {
        return None;
    }
    Some(Row {
        label: label.to_string(),
        color,
        samples,
        p50: d["p50"].as_f64()? * scale,
        p99: d["p99"].as_f64()? * scale,
        n: d["n"].as_u64().unwrap_or(0),
    })
}

/// Quantile of evenly spaced order statistics.
fn q(s: &[f64], p: f64) -> f64 {
    let i = ((s.len() - 1) as f64 * p).round() as usize;
    s[i.min(s.len() - 1)]
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn fmt_val(x: f64, unit: &str) -> String {
    match unit {
        "ms" if x >= 1000.0 => format!("{:.2} s", x / 1000.0),
        "µs" if x >= 1_000_000.0 => format!("{:.2} s", x / 1e6),
        "µs" if x >= 1000.0 => fmt_val(x / 1000.0, "ms"),
        _ if x >= 100.0 => format!("{x:.0} {unit}"),
        _ if x >= 10.0 => format!("{x:.1} {unit}"),
        _ => format!("{x:.2} {unit}"),
    }
}

fn tick_label(x: f64, unit: &str) -> String {
    let v = match unit {
        "ms" if x >= 1000.0 => return format!("{} s", x / 1000.0),
        "µs" if x >= 1_000_000.0 => return format!("{} s", x / 1e6),
        "µs" if x >= 1000.0 => return format!("{} ms", x / 1000.0),
        _ => x,
    };
    let s = format!("{v}");
    format!("{s} {unit}")
}

/// Draws one panel at `y`; returns its height.
fn panel(svg: &mut String, y: f64, title: &str, unit: &str, rows: &[Row]) -> f64 {
    if rows.is_empty() {
        return 0.0;
    }
    let lo = rows
        .iter()
        .flat_map(|r| r.samples.iter())
        .copied()
        .fold(f64::INFINITY, f64::min);
    let hi = rows
        .iter()
        .flat_map(|r| r.samples.iter())
        .copied()
        .fold(0.0, f64::max);
    let (llo, lhi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let x = |v: f64| PLOT_X0 + (v.log10() - llo) / (lhi - llo) * (PLOT_X1 - PLOT_X0);
    let top = y + 34.0;
    let bottom = top + rows.len() as f64 * ROW_H;
    let _ = writeln!(
        svg,
        r#"<text x="12" y="{:.1}" font-size="15" font-weight="bold">{}</text>"#,
        y + 18.0,
        esc(title)
    );
    // Grid and ticks: every decade, with 2 and 5 between.
    let decade_px = (PLOT_X1 - PLOT_X0) / (lhi - llo);
    let mut e = llo;
    while e <= lhi {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powf(e);
            if v.log10() > lhi + 1e-9 {
                continue;
            }
            let xv = x(v);
            let major = m == 1.0;
            let _ = writeln!(
                svg,
                r##"<line x1="{xv:.1}" y1="{top:.1}" x2="{xv:.1}" y2="{bottom:.1}" stroke="{}" stroke-width="1"/>"##,
                if major { "#d0d0d0" } else { "#ececec" }
            );
            if major || decade_px >= 150.0 {
                let _ = writeln!(
                    svg,
                    r##"<text x="{xv:.1}" y="{:.1}" font-size="{}" text-anchor="middle" fill="#555">{}</text>"##,
                    bottom + 15.0,
                    if major { 11 } else { 9 },
                    esc(&tick_label(v, unit))
                );
            }
        }
        e += 1.0;
    }
    for (i, r) in rows.iter().enumerate() {
        let cy = top + (i as f64 + 0.5) * ROW_H;
        if i % 2 == 1 {
            let _ = writeln!(
                svg,
                r##"<rect x="8" y="{:.1}" width="{:.1}" height="{ROW_H}" fill="#000" fill-opacity="0.025"/>"##,
                cy - ROW_H / 2.0,
                W - 16.0
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="end" fill="{}">{}</text>"#,
            LABEL_W,
            cy + 4.0,
            r.color,
            esc(&r.label)
        );
        let s = &r.samples;
        let (p1, p25, p75) = (q(s, 0.01), q(s, 0.25), q(s, 0.75));
        // Strip: up to 120 of the sample points, deterministic jitter.
        let step = (s.len() / 120).max(1);
        for (k, v) in s.iter().step_by(step).enumerate() {
            let jitter = (((k as u64).wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0 - 0.5)
                * (ROW_H * 0.55);
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="1.7" fill="{}" fill-opacity="0.28"/>"#,
                x(*v),
                cy + jitter,
                r.color
            );
        }
        // Whiskers p1..p99, box p25..p75, median.
        let _ = writeln!(
            svg,
            r#"<line x1="{:.1}" y1="{cy:.1}" x2="{:.1}" y2="{cy:.1}" stroke="{}" stroke-width="1.4"/>"#,
            x(p1),
            x(r.p99.max(p1)),
            r.color
        );
        for w in [p1, r.p99.max(p1)] {
            let _ = writeln!(
                svg,
                r#"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="{3}" stroke-width="1.4"/>"#,
                x(w),
                cy - 5.0,
                cy + 5.0,
                r.color
            );
        }
        let _ = writeln!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="14" fill="{}" fill-opacity="0.22" stroke="{}" stroke-width="1.4"/>"#,
            x(p25),
            cy - 7.0,
            (x(p75) - x(p25)).max(1.5),
            r.color,
            r.color
        );
        let _ = writeln!(
            svg,
            r#"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="{3}" stroke-width="3"/>"#,
            x(r.p50),
            cy - 9.0,
            cy + 9.0,
            r.color
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="11.5" fill="#222">median <tspan font-weight="bold">{}</tspan> · p99 {} · n={}</text>"##,
            PLOT_X1 + 12.0,
            cy + 4.0,
            esc(&fmt_val(r.p50, unit)),
            esc(&fmt_val(r.p99, unit)),
            r.n
        );
    }
    bottom + 28.0 - y
}

/// Renders the chart from a results JSON.
pub fn render(r: &Value) -> String {
    let cli = &r["cli"];
    let aws = &r["aws"];
    let rt = &r["round_trip"];
    let slow = &r["slow_sts"];
    let delay = slow["delay_s"].as_f64().unwrap_or(0.0);
    let wall: Vec<Row> = [
        row("/bin/true", FLOOR, &cli["bin_true"], 1.0),
        row(
            "std-only socket client (floor)",
            FLOOR,
            &cli["floor_client"],
            1.0,
        ),
        row("elhaz credential-process", OURS, &cli["ours_cp"], 1.0),
        row("elhaz exec -- /bin/true", OURS, &cli["ours_exec"], 1.0),
        row("python3 -c pass", FLOOR, &cli["python_pass"], 1.0),
        row(
            "Python elhaz export -f credential-process",
            PY,
            &cli["py_cp"],
            1.0,
        ),
        row("Python elhaz exec -- /bin/true", PY, &cli["py_exec"], 1.0),
        row(
            "aws sts get-caller-identity, static keys",
            FLOOR,
            &aws["static"],
            1.0,
        ),
        row(
            "aws … via elhaz credential_process",
            OURS,
            &aws["ours"],
            1.0,
        ),
        row("aws … via Python elhaz", PY, &aws["py"], 1.0),
    ]
    .into_iter()
    .flatten()
    .collect();
    let req: Vec<Row> = [
        row("echo server (floor)", FLOOR, &rt["echo_floor"], 1.0),
        row("elhaz daemon, library client", OURS, &rt["ours"], 1.0),
        row("elhaz daemon, raw client", OURS, &rt["ours_raw"], 1.0),
        row("Python elhaz daemon", PY, &rt["py"], 1.0),
        row(
            &format!("elhaz: cached read during {delay} s STS call"),
            OURS,
            &slow["ours"]["reads"],
            1.0,
        ),
        row("Python elhaz: same", PY, &slow["py"]["reads"], 1.0),
    ]
    .into_iter()
    .flatten()
    .collect();
    let m = &r["meta"];
    let subtitle = format!(
        "{} run, {} — {} × {}, kernel {}; box p25–p75, bar = median, whiskers p1–p99, dots = samples",
        m["mode"].as_str().unwrap_or("?"),
        m["date"].as_str().unwrap_or("?"),
        m["machine"]["nproc"],
        m["machine"]["cpu"].as_str().unwrap_or("?"),
        m["machine"]["kernel"].as_str().unwrap_or("?"),
    );
    let mut body = String::new();
    let mut y = 70.0;
    y += panel(
        &mut body,
        y,
        "Wall time per process (log scale)",
        "ms",
        &wall,
    );
    y += 10.0;
    y += panel(
        &mut body,
        y,
        "Latency per daemon request, connect to reply (log scale)",
        "µs",
        &req,
    );
    let h = y + 10.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h:.0}" viewBox="0 0 {W} {h:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="12" y="24" font-size="18" font-weight="bold">elhaz vs Python elhaz 0.5.6 vs the floor</text>"#
    );
    let _ = writeln!(
        svg,
        r##"<text x="12" y="44" font-size="11" fill="#555">{}</text>"##,
        esc(&subtitle)
    );
    let mut lx = 12.0;
    for (name, color) in [
        ("elhaz (ours)", OURS),
        ("Python elhaz 0.5.6", PY),
        ("floor", FLOOR),
    ] {
        let _ = writeln!(
            svg,
            r#"<rect x="{lx}" y="54" width="12" height="12" fill="{color}"/><text x="{:.0}" y="64" font-size="12">{name}</text>"#,
            lx + 17.0
        );
        lx += 40.0 + name.len() as f64 * 7.0;
    }
    svg.push_str(&body);
    svg.push_str("</svg>\n");
    svg
}
