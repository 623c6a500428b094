//! Hardening, bad input: 10,000 seeded random frames on the socket (random bytes, random
//! JSON, mutated requests, wrong versions and types, oversized and truncated frames), and
//! hostile config and settings files (huge, deeply nested, invalid UTF-8, NUL bytes,
//! symlinks, a FIFO, a directory).
//!
//! Set `ELHAZ_HARDENING_SEED` to replay a run; the seed is printed either way.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

use crate::hardening::*;
use crate::util::*;

/// Frames in the random-frame test.
const FRAMES: usize = 10_000;
const THREADS: usize = 4;
/// Each read of a reply must come within this (the daemon answers bad frames at once).
const REPLY_WAIT: Duration = Duration::from_secs(5);
/// Largest RSS growth tolerated over the whole run.
const RSS_GROWTH_LIMIT_MB: f64 = 16.0;

/// Every error code the daemon may send (protocol/errors.rs).
const CODES: &[&str] = &[
    "bad_request",
    "protocol_mismatch",
    "frame_too_large",
    "permission_denied",
    "not_found",
    "conflict",
    "invalid_config",
    "mfa_required",
    "mfa_failed",
    "access_denied",
    "invalid_credentials",
    "throttled",
    "unavailable",
    "upstream_error",
    "source_error",
    "expired",
    "rate_limited",
    "busy",
    "shutting_down",
    "internal",
];

/// Ops a random frame may carry. Never `stop`: a valid stop would end the run.
const OPS: &[&str] = &[
    "ping",
    "status",
    "list",
    "add",
    "remove",
    "credentials",
    "whoami",
];

const KEYS: &[&str] = &[
    "protocol", "id", "op", "name", "mfa_code", "kind", "ok", "error", "", "Protocol", "ID",
];

fn rand_string(rng: &mut StdRng) -> String {
    const ODD: &[char] = &[
        '\0', '\u{7f}', '"', '\\', '/', '.', 'é', '😀', '\u{202e}', '\u{feff}', '\n', '\t', ' ',
        '-', '_', '%', '$', '{', '}', '[', ']',
    ];
    let len = match rng.random_range(0..10) {
        0 => rng.random_range(65..300),
        _ => rng.random_range(0..16),
    };
    (0..len)
        .map(|_| {
            if rng.random_bool(0.7) {
                rng.random_range(b'a'..=b'z') as char
            } else {
                ODD[rng.random_range(0..ODD.len())]
            }
        })
        .collect()
}

fn rand_number(rng: &mut StdRng) -> Value {
    match rng.random_range(0..6) {
        0 => json!(rng.random::<u64>()),
        1 => json!(-rng.random_range(1i64..1_000_000)),
        2 => json!(rng.random::<f64>() * 1e6),
        3 => json!(u64::MAX),
        4 => json!(rng.random_range(0..4)),
        // Larger than u64: serde_json keeps it as a float.
        _ => serde_json::from_str("1e400").unwrap_or(json!(1.5)),
    }
}

fn rand_json(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.random_bool(0.5)),
        2 => rand_number(rng),
        3 => json!(rand_string(rng)),
        4 => json!(OPS[rng.random_range(0..OPS.len())]),
        5 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| rand_json(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.random_range(0..5) {
                let k = if rng.random_bool(0.8) {
                    KEYS[rng.random_range(0..KEYS.len())].to_string()
                } else {
                    rand_string(rng)
                };
                m.insert(k, rand_json(rng, depth - 1));
            }
            Value::Object(m)
        }
    }
}

/// A valid request (never `stop`).
fn valid_request(rng: &mut StdRng, id: u64) -> Value {
    let op = OPS[rng.random_range(0..OPS.len())];
    let mut v = json!({"protocol": elhaz::protocol::PROTOCOL_VERSION, "id": id, "op": op});
    if matches!(op, "add" | "remove" | "credentials" | "whoami") {
        v["name"] = json!(format!("s{}", rng.random_range(0..100)));
    }
    if matches!(op, "credentials" | "whoami") && rng.random_bool(0.2) {
        v["mfa_code"] = json!("123456");
    }
    v
}

/// A request with one field given a wrong type or a hostile value.
fn wrong_typed(rng: &mut StdRng, id: u64) -> Value {
    let mut v = valid_request(rng, id);
    let field = ["protocol", "id", "op", "name", "mfa_code"][rng.random_range(0..5)];
    v[field] = match rng.random_range(0..8) {
        0 => json!(rand_string(rng)),
        1 => rand_number(rng),
        2 => json!([1, 2, 3]),
        3 => json!({"nested": {"deeper": [null]}}),
        4 => Value::Null,
        5 => json!(true),
        6 => json!("../../../../etc/passwd"),
        _ => json!("x".repeat(rng.random_range(1000..60_000))),
    };
    if rng.random_bool(0.2) {
        v.as_object_mut()
            .unwrap()
            .insert(rand_string(rng), rand_json(rng, 2));
    }
    v
}

/// Byte-level mutations of a valid request.
fn mutated(rng: &mut StdRng, id: u64) -> Vec<u8> {
    let mut b = serde_json::to_vec(&valid_request(rng, id)).unwrap();
    for _ in 0..rng.random_range(1..4) {
        if b.is_empty() {
            break;
        }
        let i = rng.random_range(0..b.len());
        match rng.random_range(0..6) {
            0 => b[i] = rng.random(),
            1 => {
                b.remove(i);
            }
            2 => b.insert(i, rng.random()),
            3 => {
                let j = rng.random_range(i..b.len());
                let slice = b[i..=j].to_vec();
                b.splice(i..i, slice);
            }
            4 => b.truncate(i),
            _ => {
                let j = rng.random_range(0..b.len());
                b.swap(i, j);
            }
        }
    }
    b
}

/// What a connection sends.
enum Case {
    /// Complete frames (1 to 4); each gets exactly one reply.
    Frames(Vec<Vec<u8>>),
    /// A header announcing more than 64 KiB, then some bytes: one `frame_too_large`, close.
    Oversized(Vec<u8>),
    /// A valid frame cut short, then EOF: closed without a reply.
    Truncated(Vec<u8>),
    /// Raw bytes with no framing discipline: zero or more valid replies, then close.
    Raw(Vec<u8>),
}

impl Case {
    fn frames(&self) -> usize {
        match self {
            Case::Frames(f) => f.len(),
            _ => 1,
        }
    }
}

/// A payload the daemon must never receive: a `stop` could be valid.
fn may_stop(p: &[u8]) -> bool {
    p.windows(3).any(|w| w == b"top") || p.windows(2).any(|w| w == b"\\u")
}

fn payload(rng: &mut StdRng, id: u64) -> Vec<u8> {
    let p = match rng.random_range(0..100) {
        0..20 => {
            let len = rng.random_range(0..300);
            (0..len).map(|_| rng.random()).collect()
        }
        20..40 => serde_json::to_vec(&rand_json(rng, 4)).unwrap(),
        40..60 => mutated(rng, id),
        60..75 => {
            // Another protocol version: a typed mismatch with the id echoed.
            let mut v = valid_request(rng, id);
            v["protocol"] = json!(
                [0u64, 2, 3, 999, u32::MAX as u64, u32::MAX as u64 + 1][rng.random_range(0..6)]
            );
            serde_json::to_vec(&v).unwrap()
        }
        75..95 => serde_json::to_vec(&wrong_typed(rng, id)).unwrap(),
        _ => serde_json::to_vec(&valid_request(rng, id)).unwrap(),
    };
    if may_stop(&p) || p.len() > 64 * 1024 {
        return format!(r#"{{"protocol":4,"id":{id},"op":"ping"}}"#).into_bytes();
    }
    p
}

fn case(rng: &mut StdRng, next_id: &mut u64, budget: usize) -> Case {
    let mut id = || {
        *next_id += 1;
        *next_id
    };
    match rng.random_range(0..100) {
        0..5 => {
            let mut b = rng
                .random_range((64 * 1024 + 1) as u32..=u32::MAX)
                .to_be_bytes()
                .to_vec();
            b.extend((0..rng.random_range(0..64)).map(|_| rng.random::<u8>()));
            Case::Oversized(b)
        }
        5..9 => {
            let full = frame(&serde_json::to_vec(&valid_request(rng, id())).unwrap());
            let cut = rng.random_range(1..full.len());
            Case::Truncated(full[..cut].to_vec())
        }
        9..13 => {
            let mut b: Vec<u8> = (0..rng.random_range(1..200))
                .map(|_| rng.random())
                .collect();
            if rng.random_bool(0.5) {
                // A small length, so the bytes after it are parsed as a frame body.
                b[0] = 0;
                if b.len() > 1 {
                    b[1] = 0;
                }
            }
            if may_stop(&b) {
                b.retain(|c| *c != b't');
            }
            Case::Raw(b)
        }
        _ => {
            let n = rng.random_range(1..=4usize).min(budget);
            Case::Frames((0..n).map(|_| payload(rng, id())).collect())
        }
    }
}

/// The reply the daemon owes `payload`, from the same first-pass parse it does: a probe
/// that parses gets its id echoed (and `protocol_mismatch` for another version); one that
/// does not gets `bad_request` with id 0.
fn check_reply(payload: &[u8], reply: &Value) -> Result<String, String> {
    let outcome = check_shape(reply)?;
    match elhaz::codec::from_payload::<elhaz::protocol::Probe>(payload) {
        Ok(p) => {
            if reply["id"] != p.id {
                return Err(format!("id {} not echoed: {reply}", p.id));
            }
            if p.protocol != elhaz::protocol::PROTOCOL_VERSION && outcome != "protocol_mismatch" {
                return Err(format!("protocol {} got {outcome}", p.protocol));
            }
        }
        Err(_) => {
            if outcome != "bad_request" || reply["id"] != 0 {
                return Err(format!("an unparsable frame got {outcome}: {reply}"));
            }
        }
    }
    Ok(outcome)
}

/// A well-formed reply: our protocol version, exactly one of `ok` / `error`, a known code and a
/// message. Returns the outcome (`ok:KIND` or the error code).
fn check_shape(reply: &Value) -> Result<String, String> {
    if reply["protocol"] != elhaz::protocol::PROTOCOL_VERSION || !reply["id"].is_u64() {
        return Err(format!("bad envelope: {reply}"));
    }
    match (reply.get("ok"), reply.get("error")) {
        (Some(ok), None) => Ok(format!("ok:{}", ok["kind"].as_str().unwrap_or("?"))),
        (None, Some(err)) => {
            let code = err["code"].as_str().unwrap_or("");
            let msg = err["message"].as_str().unwrap_or("");
            if !CODES.contains(&code) || msg.is_empty() {
                return Err(format!("bad error: {reply}"));
            }
            Ok(code.to_string())
        }
        _ => Err(format!("neither ok nor error: {reply}")),
    }
}

/// Reads replies until the daemon closes the connection.
fn replies_until_close(s: &mut UnixStream) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for _ in 0..16 {
        match read_frame_or_eof(s) {
            Ok(Some(body)) => out.push(
                serde_json::from_slice(&body)
                    .map_err(|e| format!("a reply is not JSON ({e}): {body:?}"))?,
            ),
            Ok(None) => return Ok(out),
            Err(e) => return Err(format!("no reply and no close within {REPLY_WAIT:?}: {e}")),
        }
    }
    Err("more replies than frames".into())
}

#[derive(Default)]
struct Tally {
    frames: usize,
    connections: usize,
    outcomes: BTreeMap<String, usize>,
    failures: Vec<String>,
}

fn run_case(socket: &Path, c: &Case, t: &mut Tally) {
    let mut s = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            t.failures.push(format!("connect: {e}"));
            return;
        }
    };
    t.connections += 1;
    t.frames += c.frames();
    s.set_read_timeout(Some(REPLY_WAIT)).unwrap();
    s.set_write_timeout(Some(REPLY_WAIT)).unwrap();
    let bytes: Vec<u8> = match c {
        Case::Frames(ps) => ps.iter().flat_map(|p| frame(p)).collect(),
        Case::Oversized(b) | Case::Truncated(b) | Case::Raw(b) => b.clone(),
    };
    // The daemon may close early (oversized header): a failed write is fine.
    let _ = s.write_all(&bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let replies = match replies_until_close(&mut s) {
        Ok(r) => r,
        Err(e) => {
            t.failures.push(e);
            return;
        }
    };
    let mut note = |o: String| *t.outcomes.entry(o).or_default() += 1;
    match c {
        Case::Frames(ps) => {
            if replies.len() != ps.len() {
                let shown: Vec<String> = ps
                    .iter()
                    .map(|p| format!("{:?}", String::from_utf8_lossy(&p[..p.len().min(300)])))
                    .collect();
                t.failures.push(format!(
                    "{} frames got {} replies: {}",
                    ps.len(),
                    replies.len(),
                    shown.join(" | ")
                ));
                return;
            }
            for (p, r) in ps.iter().zip(&replies) {
                match check_reply(p, r) {
                    Ok(o) => note(o),
                    Err(e) => t.failures.push(format!(
                        "{e} (payload {:?})",
                        String::from_utf8_lossy(&p[..p.len().min(200)])
                    )),
                }
            }
        }
        Case::Oversized(_) => {
            let ok = replies.len() == 1
                && replies[0]["error"]["code"] == "frame_too_large"
                && replies[0]["id"] == 0;
            if ok {
                note("frame_too_large (oversized header)".into());
            } else {
                t.failures.push(format!("oversized header got {replies:?}"));
            }
        }
        Case::Truncated(_) => {
            if replies.is_empty() {
                note("closed (truncated frame)".into());
            } else {
                t.failures
                    .push(format!("a truncated frame got replies: {replies:?}"));
            }
        }
        Case::Raw(_) => {
            for r in &replies {
                if let Err(e) = check_shape(r) {
                    t.failures.push(e);
                }
            }
            note(format!(
                "closed after raw bytes ({} replies)",
                replies.len().min(1)
            ));
        }
    }
}

#[test]
fn ten_thousand_random_frames_get_an_error_or_a_clean_close() {
    let seed: u64 = std::env::var("ELHAZ_HARDENING_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00e1_4a2d_2026);
    let env = TestEnv::new();
    let mut daemon = env.start_daemon_foreground(&[]);
    let pid = daemon.pid();
    let socket = env.socket();
    let warm = try_request(&socket, r#"{"protocol":4,"id":1,"op":"ping"}"#, REPLY_WAIT);
    assert!(warm.is_ok(), "{warm:?}");
    let rss_before = rss_mb(pid);
    let started = Instant::now();

    // Known-hostile frames first. An op given as an integer was once taken as the enum's
    // variant index (`"op":2` stopped the daemon); every one of these is a bad request.
    let mut fixed = Tally::default();
    let mut hostile: Vec<String> = (0..=8)
        .map(|i| format!(r#"{{"protocol":4,"id":{},"op":{i}}}"#, 900 + i))
        .collect();
    for op in [
        "2.0",
        "-1",
        "\"STOP\"",
        "\"stop \"",
        "\"stop\\u0000\"",
        "[\"stop\"]",
        "{\"stop\":1}",
        "null",
        "true",
        "\"\"",
    ] {
        hostile.push(format!(r#"{{"protocol":4,"id":950,"op":{op}}}"#));
    }
    hostile.push(r#"{"protocol":4,"id":951,"op":"ping","op":"stop"}"#.into());
    hostile.push(r#"{"protocol":4,"id":952,"op":"stop","op":"ping"}"#.into());
    hostile.push(r#"[4,953,"stop"]"#.into());
    hostile.push(r#"[4,954]"#.into());
    for h in &hostile {
        let c = Case::Frames(vec![h.as_bytes().to_vec()]);
        run_case(&socket, &c, &mut fixed);
    }
    let fixed_bad = fixed.outcomes.get("bad_request").copied().unwrap_or(0);
    assert!(
        fixed.failures.is_empty() && fixed_bad == hostile.len() && daemon.try_wait().is_none(),
        "known-hostile frames: {:?} {:?}{}",
        fixed.outcomes,
        fixed.failures,
        daemon.report()
    );

    let socket = Arc::new(socket);
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed.wrapping_add(t as u64));
                let mut tally = Tally::default();
                let quota = FRAMES / THREADS;
                let mut next_id = (t as u64) << 40;
                let mut checks = 0;
                // Bounded by count (the quota) and by time.
                let deadline = Instant::now() + Duration::from_secs(120);
                while tally.frames < quota && Instant::now() < deadline {
                    let c = case(&mut rng, &mut next_id, quota - tally.frames);
                    run_case(&socket, &c, &mut tally);
                    if tally.connections % 250 == 0 {
                        checks += 1;
                        let id = 1_000_000 + checks;
                        match try_request(
                            &socket,
                            &format!(r#"{{"protocol":4,"id":{id},"op":"ping"}}"#),
                            REPLY_WAIT,
                        ) {
                            Ok(r) if r["ok"]["kind"] == "pong" && r["ok"]["pid"] == pid => {}
                            other => tally
                                .failures
                                .push(format!("health check failed: {other:?}")),
                        }
                    }
                    if tally.failures.len() > 20 {
                        break;
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = fixed;
    for w in workers {
        let t = w.join().expect("a worker panicked");
        total.frames += t.frames;
        total.connections += t.connections;
        for (k, v) in t.outcomes {
            *total.outcomes.entry(k).or_default() += v;
        }
        total.failures.extend(t.failures);
    }
    let elapsed = started.elapsed();
    let alive = daemon.try_wait().is_none();
    // Still serving: a ping, the CLI, and nothing was created by the random requests.
    let after = try_request(&socket, r#"{"protocol":4,"id":2,"op":"ping"}"#, REPLY_WAIT);
    let serving = after.as_ref().is_ok_and(|r| r["ok"]["pid"] == pid);
    let rss_after = rss_kib(pid).map_or(f64::NAN, |k| k as f64 / 1024.0);
    let growth = rss_after - rss_before;
    let configs_created = std::fs::read_dir(env.configs_dir())
        .map(|rd| rd.count())
        .unwrap_or(0);
    let outcomes: Vec<String> = total
        .outcomes
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let line = format!(
        "bad input: {} hostile frames ({} known + seeded random: bytes, JSON, mutated, \
         wrong versions and types, oversized, truncated) on {} connections (seed {seed:#x}), \
         {} failures, daemon alive {alive}, rss {rss_before:.1} MB -> {rss_after:.1} MB \
         (+{growth:.1}), {:.1} s; {}",
        total.frames,
        hostile.len(),
        total.connections,
        total.failures.len(),
        elapsed.as_secs_f64(),
        outcomes.join(", ")
    );
    let ok = alive
        && serving
        && total.failures.is_empty()
        && total.frames >= FRAMES
        && growth < RSS_GROWTH_LIMIT_MB
        && configs_created == 0;
    record(
        "input_ten_thousand_random_frames",
        "bad_input",
        ok,
        &line,
        json!({
            "bad_inputs": total.frames,
            "connections": total.connections,
            "failures": total.failures.len(),
            "seed": seed,
            "outcomes": total.outcomes,
            "rss_before_mb": rss_before,
            "rss_after_mb": rss_after,
            "elapsed_s": elapsed.as_secs_f64(),
        }),
    );
    assert!(
        total.failures.is_empty(),
        "{line}\nfirst failures:\n{}",
        total.failures.join("\n")
    );
    assert!(alive, "the daemon died{}", daemon.report());
    assert!(
        serving,
        "the daemon stopped serving: {after:?}{}",
        daemon.report()
    );
    assert!(total.frames >= FRAMES, "{line}");
    assert!(growth < RSS_GROWTH_LIMIT_MB, "{line}");
    assert_eq!(configs_created, 0, "random requests created configs");
    // Every kind of reply was exercised.
    for code in [
        "bad_request",
        "protocol_mismatch",
        "frame_too_large",
        "not_found",
    ] {
        assert!(
            total.outcomes.keys().any(|k| k.starts_with(code)),
            "no {code} reply in {outcomes:?}"
        );
    }
    env.run_ok(&["daemon", "status"]);
}

// ---------------------------------------------------------------------------------------
// Hostile config and settings files.

/// How long any CLI run against a hostile file may take (a FIFO must not block it).
const CLI_LIMIT: Duration = Duration::from_secs(20);

/// `elhaz ARGS` bounded; it must exit with a code (not a signal, not a hang).
fn run_hostile(
    env: &TestEnv,
    args: &[&str],
    failures: &mut Vec<String>,
) -> (Option<i32>, String, String) {
    let mut cmd = env.cmd(args);
    let (status, out, _) = run_limited(&mut cmd, CLI_LIMIT);
    if status.is_none() {
        failures.push(format!("hung{}", describe(&cmd, &out)));
    } else if out.status.code().is_none() {
        failures.push(format!("died of a signal{}", describe(&cmd, &out)));
    }
    (out.status.code(), stdout(&out), stderr(&out))
}

/// Writes the hostile entries into `dir`, named `NAME.toml`; returns the names and what
/// each error must mention.
fn hostile_entries(dir: &Path, good: &Path) -> Vec<(&'static str, &'static str)> {
    const DEPTH: usize = 10_000;
    let w = |name: &str, bytes: Vec<u8>| {
        std::fs::write(dir.join(format!("{name}.toml")), bytes).unwrap();
    };
    let mut huge = String::from("# padding\n");
    while huge.len() <= 100 * 1024 {
        huge.push_str(
            "# ........................................................................\n",
        );
    }
    huge.push_str("[role]\narn = \"arn:aws:iam::123456789012:role/x\"\n");
    w("huge", huge.into_bytes());
    w(
        "deep-arrays",
        format!("description = {}{}\n", "[".repeat(DEPTH), "]".repeat(DEPTH)).into_bytes(),
    );
    w(
        "deep-inline-tables",
        format!("x = {}1{}\n", "{a = ".repeat(DEPTH), "}".repeat(DEPTH)).into_bytes(),
    );
    w(
        "deep-dotted-keys",
        format!("{} = 1\n", vec!["a"; DEPTH].join(".")).into_bytes(),
    );
    w(
        "deep-table-header",
        format!("[{}]\nx = 1\n", vec!["a"; DEPTH].join(".")).into_bytes(),
    );
    w("brackets", format!("{}\n", "[".repeat(DEPTH)).into_bytes());
    w(
        "unclosed-array",
        format!("description = {}\n", "[".repeat(DEPTH)).into_bytes(),
    );
    // One line just under the size cap: an error quoting it must still reach the client
    // (a reply over the 64 KiB frame cap used to be dropped with the connection).
    w(
        "long-line",
        format!("description = \"{}\" junk\n", "a".repeat(65_000)).into_bytes(),
    );
    w(
        "long-region",
        format!("region = \"{}\"\n", "Q".repeat(65_000)).into_bytes(),
    );
    w("bad-utf8", b"description = \"\xff\xfe\xfd\"\n".to_vec());
    w("nul-bytes", b"description = \"a\0b\"\n\0\0\0\n".to_vec());
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd.toml")).unwrap();
    std::os::unix::fs::symlink(good, dir.join("alias.toml")).unwrap();
    nix::unistd::mkfifo(
        &dir.join("fifo.toml"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    std::fs::create_dir(dir.join("dir.toml")).unwrap();
    vec![
        ("huge", "bytes"),
        ("deep-arrays", ""),
        ("deep-inline-tables", ""),
        ("deep-dotted-keys", ""),
        ("deep-table-header", ""),
        ("brackets", ""),
        ("unclosed-array", ""),
        ("long-line", "line 1"),
        ("long-region", "region"),
        ("bad-utf8", "UTF-8"),
        ("nul-bytes", ""),
        ("passwd", "symbolic link"),
        ("alias", "symbolic link"),
        ("fifo", "not a regular file"),
        ("dir", "not a regular file"),
    ]
}

#[test]
fn hostile_config_files_fail_clearly_and_harm_nothing() {
    let env = TestEnv::new();
    let mut failures: Vec<String> = Vec::new();
    let mut tried = 0usize;
    env.add_config("good1");
    env.run_ok(&[
        "config",
        "add",
        "good2",
        "--role-arn",
        ROLE_ARN,
        "--description",
        "second",
    ]);
    let good1 = std::fs::read(env.config_file("good1")).unwrap();
    let good2 = std::fs::read(env.config_file("good2")).unwrap();
    let passwd = std::fs::read("/etc/passwd").unwrap();
    let entries = hostile_entries(&env.configs_dir(), &env.config_file("good1"));
    // The same files as `--from-file` sources (in the scratch dir).
    let src_dir = env.scratch("sources");
    std::fs::create_dir(&src_dir).unwrap();
    hostile_entries(&src_dir, &env.config_file("good1"));
    let mut d = env.start_daemon_foreground(&[]);

    for (name, needle) in &entries {
        let file = env.config_file(name);
        let file_s = file.to_str().unwrap();
        // config show: fails, naming the file (and the problem where it is fixed text).
        tried += 1;
        let (code, _, err) = run_hostile(&env, &["config", "show", name], &mut failures);
        if code == Some(0) || !err.contains(file_s) || !err.contains(needle) {
            failures.push(format!(
                "config show {name}: exit {code:?}, stderr does not name {file_s} / {needle:?}:\n{err}"
            ));
        }
        // config add --from-file: refused, naming the source; nothing created.
        tried += 1;
        let src = src_dir.join(format!("{name}.toml"));
        let target = format!("copy-{name}");
        let (code, _, err) = run_hostile(
            &env,
            &[
                "config",
                "add",
                &target,
                "--from-file",
                src.to_str().unwrap(),
            ],
            &mut failures,
        );
        if code == Some(0) || !err.contains(src.to_str().unwrap()) {
            failures.push(format!(
                "config add --from-file {name}: exit {code:?}, stderr does not name the source:\n{err}"
            ));
        }
        if env.config_file(&target).exists() {
            failures.push(format!("config add --from-file {name} created {target}"));
        }
        // Through the daemon: a clear error, nothing on stdout, the daemon survives.
        tried += 1;
        let (code, out, err) = run_hostile(&env, &["credential-process", name], &mut failures);
        if code == Some(0) || !out.is_empty() || !err.contains(&format!("{name}.toml")) {
            failures.push(format!(
                "credential-process {name}: exit {code:?}, stdout {out:?}, stderr:\n{err}"
            ));
        }
        tried += 1;
        let (code, _, err) = run_hostile(&env, &["daemon", "add", name], &mut failures);
        if code == Some(0) || err.trim().is_empty() {
            failures.push(format!("daemon add {name}: exit {code:?}, stderr:\n{err}"));
        }
        if d.try_wait().is_some() {
            failures.push(format!("the daemon died on {name}{}", d.report()));
            break;
        }
    }

    // `config list` still lists the good configs (as valid) and marks the hostile ones.
    tried += 1;
    let (code, out, err) = run_hostile(&env, &["config", "list", "--json"], &mut failures);
    let listed: Vec<Value> = serde_json::from_str(&out).unwrap_or_default();
    let valid = |n: &str| listed.iter().any(|v| v["name"] == n && v["valid"] == true);
    if code != Some(0) || !valid("good1") || !valid("good2") {
        failures.push(format!("config list --json: exit {code:?}\n{out}\n{err}"));
    }
    for (name, _) in &entries {
        if listed
            .iter()
            .any(|v| v["name"] == *name && v["valid"] == true)
        {
            failures.push(format!("config list shows hostile {name} as valid"));
        }
    }
    let (code, out, _) = run_hostile(&env, &["config", "list"], &mut failures);
    if code != Some(0) || !out.contains("good1") || !out.contains("good2") {
        failures.push(format!("config list: exit {code:?}\n{out}"));
    }

    // `config add --force` over the symlinks replaces the link, never its target.
    for name in ["passwd", "alias"] {
        tried += 1;
        let (code, _, err) = run_hostile(
            &env,
            &["config", "add", name, "--force", "--role-arn", ROLE_ARN],
            &mut failures,
        );
        let meta = std::fs::symlink_metadata(env.config_file(name)).unwrap();
        if code != Some(0) || !meta.is_file() {
            failures.push(format!(
                "config add --force {name}: exit {code:?}, regular file {}: {err}",
                meta.is_file()
            ));
        }
    }
    let intact = std::fs::read("/etc/passwd").unwrap() == passwd
        && std::fs::read(env.config_file("good1")).unwrap() == good1
        && std::fs::read(env.config_file("good2")).unwrap() == good2;
    if !intact {
        failures.push("a symlink target or a good config was modified".into());
    }
    let daemon_alive = d.try_wait().is_none();
    if daemon_alive {
        env.run_ok(&["daemon", "status"]);
    }
    // Let the good config be served: the hostile files never poisoned the daemon.
    drop(d);

    // Hostile elhaz.toml: `daemon start --foreground` fails with a clear error naming it.
    let settings = env.settings_file();
    let settings_s = settings.to_str().unwrap().to_string();
    let mut settings_tried = 0;
    for (name, _) in &entries {
        let src = src_dir.join(format!("{name}.toml"));
        let _ = std::fs::remove_file(&settings);
        let _ = std::fs::remove_dir(&settings);
        let meta = std::fs::symlink_metadata(&src).unwrap();
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &settings).unwrap();
        } else if meta.is_dir() {
            std::fs::create_dir(&settings).unwrap();
        } else if meta.file_type().is_file() {
            std::fs::copy(&src, &settings).unwrap();
        } else {
            nix::unistd::mkfifo(&settings, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .unwrap();
        }
        settings_tried += 1;
        tried += 1;
        let (code, _, err) = run_hostile(&env, &["daemon", "start", "--foreground"], &mut failures);
        if code == Some(0) || !err.contains(&settings_s) {
            failures.push(format!(
                "daemon start with hostile elhaz.toml ({name}): exit {code:?}, stderr:\n{err}"
            ));
        }
        if env.socket_accepts() {
            failures.push(format!("a daemon started with hostile elhaz.toml ({name})"));
            env.stop_any_daemon(None);
        }
    }
    let _ = std::fs::remove_file(&settings);
    let _ = std::fs::remove_dir(&settings);
    // With the settings gone, everything works again.
    let _d = env.start_daemon_foreground(&[]);
    env.run_ok(&["daemon", "status"]);

    let line = format!(
        "bad input: {} hostile config files x 4 commands + {settings_tried} hostile elhaz.toml \
         ({tried} runs, deepest nesting 10000): {} failures, 0 crashes allowed, symlink targets \
         and good configs intact {intact}, daemon survived {daemon_alive}",
        entries.len(),
        failures.len()
    );
    let ok = failures.is_empty() && intact && daemon_alive;
    record(
        "input_hostile_config_files",
        "bad_input",
        ok,
        &line,
        json!({"bad_inputs": tried, "failures": failures.len()}),
    );
    assert!(ok, "{line}\n{}", failures.join("\n---\n"));
}
