//! The workspace's crate boundary, checked over `cargo metadata` rather than kept by
//! convention: `elhaz-core` — what `credential-process` and `exec` run through — must not
//! depend, directly or transitively, on an async runtime, an HTTP stack or any AWS crate.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Package names the hot path's crate may never pull in, by prefix.
const FORBIDDEN: &[&str] = &["tokio", "hyper", "aws-", "h2", "rustls", "tracing-appender"];

/// `cargo metadata` of this workspace (resolved for the build machine's platform).
fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
        ])
        .arg(host_triple())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

fn host_triple() -> String {
    let cargo = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(cargo)
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_string()
}

/// The package names `root` depends on at run time (normal and build dependencies, not dev),
/// transitively, from the resolved graph.
fn runtime_closure(meta: &Value, root: &str) -> BTreeSet<String> {
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: BTreeMap<&str, Vec<&str>> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let deps = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].as_str() != Some("dev"))
                })
                .map(|d| d["pkg"].as_str().unwrap())
                .collect();
            (n["id"].as_str().unwrap(), deps)
        })
        .collect();
    let root_id = names
        .iter()
        .find(|(_, n)| **n == root)
        .map(|(id, _)| *id)
        .unwrap_or_else(|| panic!("{root} is in the workspace"));
    let (mut seen, mut todo) = (BTreeSet::new(), vec![root_id]);
    while let Some(id) = todo.pop() {
        for d in nodes.get(id).into_iter().flatten() {
            if seen.insert(*d) {
                todo.push(d);
            }
        }
    }
    seen.iter().map(|id| names[id].to_string()).collect()
}

#[test]
fn the_hot_paths_crate_depends_on_no_runtime_and_no_sdk() {
    let meta = metadata();
    let core = runtime_closure(&meta, "elhaz-core");
    let bad: Vec<_> = core
        .iter()
        .filter(|n| FORBIDDEN.iter().any(|f| n.starts_with(f)))
        .collect();
    assert!(
        bad.is_empty(),
        "elhaz-core depends on {bad:?}; move that code to elhaz-daemon"
    );
    // The check can fail: the daemon's closure has exactly what core's must not.
    let daemon = runtime_closure(&meta, "elhaz-daemon");
    for must in ["tokio", "hyper", "aws-sdk-sts", "elhaz-core"] {
        assert!(
            daemon.contains(must),
            "elhaz-daemon lacks {must}: {daemon:?}"
        );
    }
    assert!(
        !core.contains("elhaz-daemon"),
        "elhaz-core depends on the daemon crate"
    );
}

/// The fuzz target decodes request frames with the function the server uses, so what is fuzzed
/// is what is served.
#[test]
fn the_fuzz_target_and_the_server_share_the_request_decoder() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [
        "crates/elhaz-daemon/src/daemon/server.rs",
        "fuzz/fuzz_targets/frame_decoder.rs",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(
            text.contains("protocol::decode_request("),
            "{file} does not decode requests with protocol::decode_request"
        );
    }
}
