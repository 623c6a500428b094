//! Scale: listing thousands of cached sessions.
//!
//! Protocol version 1 sent the whole `list` reply as one frame, which outgrew the 64 KiB cap
//! past ~400 sessions, and the connection was dropped ("failed to fill whole buffer"). These
//! tests cache 5,000 sessions and list them through the CLI and the raw protocol.
//!
//! The suite's fake STS serves the fetches rather than moto: what is under test is the listing,
//! and 5,000 AssumeRole calls against moto (~160/s here) would cost half a minute.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::fake_sts::FakeSts;
use crate::moto::aws_env;
use crate::util::*;

const SESSIONS: usize = 5_000;
/// Connections loading sessions in parallel.
const LOADERS: usize = 8;

fn name(i: usize) -> String {
    format!("s{i:04}")
}

fn frame(json: String) -> String {
    json.replace("PV", &elhaz::protocol::PROTOCOL_VERSION.to_string())
}

/// Writes `SESSIONS` role configs into `env`.
fn write_configs(env: &TestEnv) {
    std::fs::create_dir_all(env.configs_dir()).unwrap();
    for i in 0..SESSIONS {
        std::fs::write(
            env.config_file(&name(i)),
            format!(
                "[role]\narn = \"arn:aws:iam::123456789012:role/{}\"\n",
                name(i)
            ),
        )
        .unwrap();
    }
}

/// Caches every session in the running daemon (`add` waits for each one's credentials).
fn load_all(env: &TestEnv) {
    let socket = env.socket();
    std::thread::scope(|scope| {
        for l in 0..LOADERS {
            let socket = &socket;
            scope.spawn(move || {
                let mut c = RawConn::connect(socket);
                for i in (l..SESSIONS).step_by(LOADERS) {
                    let reply = c.request(&frame(format!(
                        r#"{{"protocol":PV,"id":{i},"op":"add","name":"{}"}}"#,
                        name(i)
                    )));
                    assert_eq!(reply["ok"]["kind"], "added", "{reply}");
                }
            });
        }
    });
}

/// Sends one `list` request and reads every frame of its reply: (frames, sessions).
fn raw_list(c: &mut RawConn, id: u64, filters: &str) -> (usize, Vec<Value>) {
    c.send_frame(
        frame(format!(
            r#"{{"protocol":PV,"id":{id},"op":"list"{filters}}}"#
        ))
        .as_bytes(),
    );
    let mut all = Vec::new();
    // Bounded: 5,000 sessions need ~25 frames.
    for frames in 1..=1000 {
        let reply = c.read_reply(); // read_frame asserts each frame is within the 64 KiB cap
        assert_eq!(reply["id"], id, "{reply}");
        assert_eq!(reply["ok"]["kind"], "sessions", "{reply}");
        all.extend(reply["ok"]["sessions"].as_array().unwrap().iter().cloned());
        if reply["ok"].get("more").is_none() {
            return (frames, all);
        }
        assert_eq!(reply["ok"]["more"], true, "{reply}");
    }
    panic!("the list reply did not end within 1000 frames");
}

#[test]
fn five_thousand_sessions_list_through_the_protocol_and_the_cli() {
    let env = TestEnv::new();
    let sts = FakeSts::start();
    aws_env(&env, &sts.url());
    write_configs(&env);
    let _daemon = env.start_daemon_foreground(&["--capacity", "10000"]);
    load_all(&env);

    // Raw protocol: several frames, one snapshot, every session exactly once.
    let mut c = env.raw();
    let (frames, sessions) = raw_list(&mut c, 77, "");
    assert!(frames > 1, "5,000 sessions cannot fit in one frame");
    let names: BTreeSet<String> = sessions
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!((sessions.len(), names.len()), (SESSIONS, SESSIONS));
    // The connection is still in step: the next request gets its own reply.
    let pong = c.request(&frame(r#"{"protocol":PV,"id":78,"op":"ping"}"#.into()));
    assert_eq!(
        (pong["id"].as_u64(), pong["ok"]["kind"].as_str()),
        (Some(78), Some("pong"))
    );

    // Filters are applied by the daemon.
    let (_, s1) = raw_list(&mut c, 79, r#","pattern":"s1*","state":"fresh""#);
    assert_eq!(s1.len(), 1000, "s1000..s1999");
    assert!(
        s1.iter()
            .all(|s| s["name"].as_str().unwrap().starts_with("s1"))
    );
    let (_, none) = raw_list(&mut c, 80, r#","state":"failed""#);
    assert!(none.is_empty());
    let bad = c.request(&frame(
        r#"{"protocol":PV,"id":81,"op":"list","state":"sleepy"}"#.into(),
    ));
    assert_eq!(bad["error"]["code"], "bad_request", "{bad}");

    // The CLI: JSON and the table.
    let out = env.run_ok(&["daemon", "list", "--json"]);
    let listed: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(listed.len(), SESSIONS);
    let out = env.run_ok(&["daemon", "list"]);
    assert_eq!(
        stdout(&out).lines().count(),
        SESSIONS + 1,
        "a header and one row each"
    );
    let out = env.run_ok(&["daemon", "list", "s49*", "--state", "fresh", "--json"]);
    let listed: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(listed.len(), 100, "s4900..s4999");
    let out = env.run_ok(&["daemon", "list", "nomatch*"]);
    assert_contains(&stdout(&out), &["no cached session matches"]);
    let out = env.run_fail(&["daemon", "list", "--state", "sleepy"]);
    assert_contains(&stderr(&out), &["sleepy", "fresh"]);
}
