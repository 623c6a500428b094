//! Real time (issue #11): the real daemon's wall clock jumps while its monotonic clock does
//! not — what a laptop sees after sleeping with the lid closed.
//!
//! The jump is made with libfaketime (Debian `faketime`, installed by `.ci/run`), preloaded
//! into the daemon only: `FAKETIME_DONT_FAKE_MONOTONIC=1` leaves `CLOCK_MONOTONIC` alone, and
//! `FAKETIME_TIMESTAMP_FILE` + `FAKETIME_NO_CACHE=1` let the test move the offset at run time
//! by rewriting the file (`+2h`). The CLI and moto run on the real clock, so after a jump the
//! daemon's clock is ahead of STS's: moto's `Expiration` uses the real clock, and the daemon
//! must judge validity by STS's clock (the skew it measures from `Date`) *and* notice that its
//! wall clock passed the refresh point, with no request and no help from the kernel (the
//! timerfd does not fire for a faked clock; the drift check does).
//!
//! STS is moto behind a TCP gate (`hardening::Gate`), so "no network at wake-up" is a refused
//! connection and "network back" is the gate reopening on the same port.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::hardening::Gate;
use crate::moto::{Moto, add_sts_config, aws_env};
use crate::util::*;

/// libfaketime's preload library, wherever the distribution put it.
fn libfaketime() -> Option<PathBuf> {
    let from_dpkg = std::process::Command::new("dpkg")
        .args(["-L", "libfaketime"])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| l.ends_with("/libfaketime.so.1"))
                .map(PathBuf::from)
        });
    from_dpkg.filter(|p| p.exists()).or_else(|| {
        [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib",
            "/usr/local/lib",
        ]
        .iter()
        .map(|d| PathBuf::from(d).join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
    })
}

fn list_json(env: &TestEnv) -> Value {
    let out = env.run_ok(&["daemon", "list", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "dev"))
        .cloned()
        .unwrap_or_else(|| panic!("dev is not listed: {v}"))
}

fn credential_process(env: &TestEnv) -> Value {
    let out = env.run_ok(&["credential-process", "dev"]);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn expiration(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v["Expiration"].as_str().unwrap()).unwrap()
}

#[test]
fn wall_clock_jump_refreshes_once_in_background_and_after_outage() {
    let Some(lib) = libfaketime() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "libfaketime is missing; .ci/run installs the faketime package"
        );
        skipped_check(
            "libfaketime is not installed (apt-get install faketime); clock jumps untested",
        );
        return;
    };
    let env = TestEnv::new();
    let moto = Moto::start(env.root());
    let mut gate = Gate::open_to(&moto.url());
    aws_env(&env, &moto.url());
    // 15 minutes: the monotonic refresh (at 10 min) never comes during this test.
    add_sts_config(
        &env,
        "dev",
        &gate.url(),
        &["--role-arn", ROLE_ARN, "--duration", "900"],
    );
    let offset = env.write_scratch("faketime", "+0\n");
    let mut cmd = env.cmd(&["daemon", "start", "--foreground"]);
    cmd.env("LD_PRELOAD", &lib)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_NO_CACHE", "1");
    let _daemon = env.spawn_daemon(&mut cmd);
    let jump = |spec: &str| std::fs::write(&offset, format!("{spec}\n")).unwrap();

    let first = credential_process(&env);
    let calls0 = moto.sts_calls();
    let info = list_json(&env);
    assert_eq!(info["state"], "fresh", "{info}");
    assert!(info.get("clock_skew_secs").is_none(), "no skew yet: {info}");

    // --- The lid closes for two hours. -------------------------------------------------------
    jump("+2h");
    let info = list_json(&env);
    assert_ne!(info["state"], "fresh", "fresh past its expiration: {info}");
    assert!(
        info["expires_in_s"].as_i64().is_some_and(|s| s < 0),
        "{info}"
    );

    // 50 clients wake at once: one STS call, every one gets the same new credential.
    let t0 = Instant::now();
    let keys: Vec<Value> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..50)
            .map(|_| s.spawn(|| credential_process(&env)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        moto.sts_calls(),
        calls0 + 1,
        "50 waking clients cost one STS call"
    );
    for k in &keys {
        assert_eq!(k["AccessKeyId"], keys[0]["AccessKeyId"]);
        assert_ne!(
            k["AccessKeyId"], first["AccessKeyId"],
            "the stale credential was served"
        );
    }
    // Valid for the usual time (moto's Expiration is on the real clock, as is ours here).
    let left = expiration(&keys[0])
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(
        left > Duration::from_secs(800),
        "new credential lives only {left:?}"
    );
    let info = list_json(&env);
    assert_eq!(info["state"], "fresh", "{info}");
    assert!(
        info["expires_in_s"].as_i64().is_some_and(|s| s > 800),
        "{info}"
    );
    // The daemon's clock is now two hours ahead of STS's: measured and shown.
    let skew = info["clock_skew_secs"].as_i64().unwrap_or(0);
    assert!((-7260..=-7140).contains(&skew), "skew {skew}: {info}");
    let text = stdout(&env.run_ok(&["daemon", "list"]));
    assert_contains(&text, &["clock skew", "ahead of STS"]);
    eprintln!("wake with requests handled in {:?}", t0.elapsed());

    // --- Another two hours asleep; nobody asks: the background refresher notices. -----------
    let calls1 = moto.sts_calls();
    jump("+4h");
    let t1 = Instant::now();
    let renewed = wait_until(Duration::from_secs(60), || moto.sts_calls() > calls1);
    assert!(
        renewed,
        "no background refresh within 60 s of the jump{}",
        env.log_text()
    );
    eprintln!("background renewal {:?} after the jump", t1.elapsed());
    assert!(wait_until(DEADLINE, || list_json(&env)["state"] == "fresh"));
    assert_eq!(moto.sts_calls(), calls1 + 1, "exactly one refresh");

    // --- Waking into no network. --------------------------------------------------------------
    gate.close();
    jump("+6h");
    let mut raw = env.raw();
    let reply = raw.request(r#"{"protocol":4,"id":1,"op":"credentials","name":"dev"}"#);
    assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
    let msg = reply["error"]["message"].as_str().unwrap_or_default();
    assert_contains(msg, &["cannot reach STS", "session \"dev\"", &gate.url()]);
    let out = env.run_fail(&["credential-process", "dev"]);
    assert_contains(&stderr(&out), &["cannot reach STS", "dev"]);
    let info = list_json(&env);
    assert_ne!(info["state"], "fresh", "{info}");
    // The network comes back: fresh credentials within 30 s, without a request.
    let calls2 = moto.sts_calls();
    gate.reopen();
    let t2 = Instant::now();
    let back = wait_until(Duration::from_secs(30), || {
        list_json(&env)["state"] == "fresh"
    });
    assert!(
        back,
        "not fresh within 30 s of the network's return{}",
        env.log_text()
    );
    eprintln!("fresh {:?} after the network came back", t2.elapsed());
    assert!(moto.sts_calls() > calls2);
    let last = credential_process(&env);
    assert_ne!(last["AccessKeyId"], keys[0]["AccessKeyId"]);
}
