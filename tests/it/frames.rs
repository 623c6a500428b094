//! Raw frames on the socket: malformed input gets a typed error reply (or a clean close) and
//! never takes the daemon down; slow or silent clients never block others.

use std::time::{Duration, Instant};

use crate::util::*;

/// The daemon still answers the CLI.
fn still_serves(env: &TestEnv, d: &mut DaemonGuard<'_>) {
    assert!(d.try_wait().is_none(), "the daemon died{}", d.report());
    let out = env.run_ok(&["daemon", "status"]);
    assert_contains(&stdout(&out), &["is running"]);
}

#[test]
fn garbage_payload_gets_bad_request_and_the_connection_survives() {
    let env = TestEnv::new();
    let mut d = env.start_daemon_foreground(&[]);
    let mut c = env.raw();
    for garbage in [
        &b"\xff\xfe not json at all"[..],
        b"",
        b"{\"protocol\":4,\"id\":3,\"op\":\"ping\"",
    ] {
        c.send_frame(garbage);
        let reply = c.read_reply();
        let msg = assert_error_reply(&reply, "bad_request", 0);
        assert_contains(&msg, &["malformed"]);
    }
    // Same connection, valid request: the loop survived the bad frames.
    let reply = c.request(r#"{"protocol":4,"id":9,"op":"ping"}"#);
    assert_eq!(reply["id"], 9, "{reply}");
    assert_eq!(reply["ok"]["kind"], "pong", "{reply}");
    assert_eq!(reply["ok"]["pid"], d.pid(), "{reply}");
    still_serves(&env, &mut d);
}

#[test]
fn json_that_is_not_a_request_gets_bad_request() {
    let env = TestEnv::new();
    let mut d = env.start_daemon_foreground(&[]);
    for payload in [
        "[1,2,3]",
        "\"hello\"",
        "null",
        "42",
        r#"{"hello":"world"}"#,
        r#"{"id":4,"op":"ping"}"#,
    ] {
        let mut c = env.raw();
        let reply = c.request(payload);
        assert_error_reply(&reply, "bad_request", 0);
    }
    still_serves(&env, &mut d);
}

#[test]
fn wrong_protocol_version_gets_protocol_mismatch() {
    let env = TestEnv::new();
    let mut d = env.start_daemon_foreground(&[]);
    let mut c = env.raw();
    let reply = c.request(r#"{"protocol":999,"id":5,"op":"ping"}"#);
    let msg = assert_error_reply(&reply, "protocol_mismatch", 5);
    assert_eq!(reply["error"]["protocol"], 4, "{reply}");
    assert_contains(&msg, &["elhaz daemon stop", "999"]);
    // A future peer may send fields and ops we do not know: still a typed mismatch.
    let reply = c.request(r#"{"protocol":5,"id":6,"op":"teleport","where":{"x":1}}"#);
    assert_error_reply(&reply, "protocol_mismatch", 6);
    // And the connection is still usable at our version.
    let reply = c.request(r#"{"protocol":4,"id":7,"op":"status"}"#);
    assert_eq!(reply["ok"]["kind"], "status", "{reply}");
    still_serves(&env, &mut d);
}

#[test]
fn unknown_op_gets_bad_request_with_its_id() {
    let env = TestEnv::new();
    let mut d = env.start_daemon_foreground(&[]);
    let mut c = env.raw();
    let reply = c.request(r#"{"protocol":4,"id":11,"op":"frobnicate"}"#);
    let msg = assert_error_reply(&reply, "bad_request", 11);
    assert_contains(&msg, &["frobnicate"]);
    let reply = c.request(r#"{"protocol":4,"id":12}"#);
    assert_error_reply(&reply, "bad_request", 12);
    still_serves(&env, &mut d);
}

#[test]
fn wrong_field_types_get_bad_request() {
    let env = TestEnv::new();
    let mut d = env.start_daemon_foreground(&[]);
    let mut c = env.raw();
    // Request body fields: the probe succeeds, so the id is echoed.
    for (payload, id) in [
        (r#"{"protocol":4,"id":21,"op":"add","name":42}"#, 21),
        (r#"{"protocol":4,"id":22,"op":"add"}"#, 22),
        (r#"{"protocol":4,"id":23,"op":"remove","name":["a"]}"#, 23),
        (
            r#"{"protocol":4,"id":24,"op":"credentials","name":"dev","mfa_code":123456}"#,
            24,
        ),
        (r#"{"protocol":4,"id":25,"op":7}"#, 25),
    ] {
        let reply = c.request(payload);
        assert_error_reply(&reply, "bad_request", id);
    }
    // Envelope fields: the probe itself fails, so no id can be echoed.
    for payload in [
        r#"{"protocol":"1","id":26,"op":"ping"}"#,
        r#"{"protocol":4,"id":"27","op":"ping"}"#,
        r#"{"protocol":-1,"id":28,"op":"ping"}"#,
        r#"{"protocol":4,"id":-29,"op":"ping"}"#,
    ] {
        let reply = c.request(payload);
        assert_error_reply(&reply, "bad_request", 0);
    }
    // Validation errors in well-typed requests are typed too.
    let reply = c.request(r#"{"protocol":4,"id":30,"op":"add","name":"../etc"}"#);
    assert_error_reply(&reply, "bad_request", 30);
    let reply = c.request(r#"{"protocol":4,"id":31,"op":"add","name":"nope"}"#);
    assert_error_reply(&reply, "not_found", 31);
    still_serves(&env, &mut d);
}

#[test]
fn truncated_frame_then_close_is_dropped_quietly() {
    let env = TestEnv::new();
    let mut d = env.start_daemon_foreground(&[]);
    let mut c = env.raw();
    // Announce 100 bytes, send 10, close our side.
    c.send_raw(&100u32.to_be_bytes());
    c.send_raw(b"{\"protocol");
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    c.expect_closed();
    // A header cut short, too.
    let mut c = env.raw();
    c.send_raw(&[0, 0]);
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    c.expect_closed();
    still_serves(&env, &mut d);
}

#[test]
fn oversized_length_header_is_refused_without_reading_the_body() {
    let env = TestEnv::new();
    let mut d = env.start_daemon_foreground(&[]);
    for len in [64 * 1024 + 1, u32::MAX] {
        let mut c = env.raw();
        let t0 = Instant::now();
        // Only the header: a daemon that waited for the body would sit on its 10 s read
        // timeout, and our 5 s read timeout would fail this test.
        c.send_raw(&len.to_be_bytes());
        match c.read_frame() {
            Ok(payload) => {
                let reply: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                let msg = assert_error_reply(&reply, "frame_too_large", 0);
                assert_contains(&msg, &["65536"]);
                c.expect_closed();
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {} // clean close
            Err(e) => panic!("no reply and no clean close for a {len}-byte header: {e}"),
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "the daemon took {:?} to refuse a {len}-byte header",
            t0.elapsed()
        );
    }
    // Exactly the limit is fine (the payload is then judged as JSON).
    let mut c = env.raw();
    let mut big = br#"{"protocol":4,"id":40,"op":"ping","pad":""#.to_vec();
    big.resize(64 * 1024 - 2, b'x');
    big.extend_from_slice(b"\"}");
    assert_eq!(big.len(), 64 * 1024);
    let reply = c.request(std::str::from_utf8(&big).unwrap());
    assert_eq!(reply["ok"]["kind"], "pong", "{reply}");
    assert_eq!(reply["id"], 40);
    assert!(
        env.wait_for_log("refused an oversized frame"),
        "no refusal in the log:\n{}",
        env.log_text()
    );
    still_serves(&env, &mut d);
}

#[test]
fn a_silent_client_does_not_block_others() {
    let env = TestEnv::new();
    let mut d = env.start_daemon_foreground(&[]);
    // One client connects and says nothing; another sends half a frame and stalls.
    let _silent = env.raw();
    let mut stalled = env.raw();
    stalled.send_raw(&50u32.to_be_bytes());
    stalled.send_raw(b"{\"protocol\":4,");
    let t0 = Instant::now();
    let mut c = env.raw();
    let reply = c.request(r#"{"protocol":4,"id":1,"op":"ping"}"#);
    assert_eq!(reply["ok"]["kind"], "pong", "{reply}");
    let out = env.run_ok(&["daemon", "status"]);
    assert_contains(&stdout(&out), &["is running"]);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "other clients waited {:?} behind a silent one",
        t0.elapsed()
    );
    still_serves(&env, &mut d);
}

#[test]
fn pipelined_requests_on_one_connection_are_answered_in_order() {
    let env = TestEnv::new();
    let mut d = env.start_daemon_foreground(&[]);
    let mut c = env.raw();
    // Three frames in one write, the middle one bad.
    let mut buf = Vec::new();
    for p in [
        r#"{"protocol":4,"id":1,"op":"ping"}"#,
        "not json",
        r#"{"protocol":4,"id":3,"op":"list"}"#,
    ] {
        buf.extend_from_slice(&(p.len() as u32).to_be_bytes());
        buf.extend_from_slice(p.as_bytes());
    }
    c.send_raw(&buf);
    let r1 = c.read_reply();
    let r2 = c.read_reply();
    let r3 = c.read_reply();
    assert_eq!(
        (r1["id"].as_u64(), &r1["ok"]["kind"]),
        (Some(1), &"pong".into())
    );
    assert_error_reply(&r2, "bad_request", 0);
    assert_eq!(
        (r3["id"].as_u64(), &r3["ok"]["kind"]),
        (Some(3), &"sessions".into())
    );
    still_serves(&env, &mut d);
}
