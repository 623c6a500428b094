//! Shared daemon for a dedicated user, with real uids created by the test (as root): the agent
//! uid fetches credentials for its allowed session with zero flags and no environment but
//! `ELHAZ_SHARED` (it has no home for a `[client] shared` setting), is
//! refused for other sessions and for admin requests, and cannot read any file of the daemon
//! user. The daemon listens on the default shared socket `/run/elhaz/elhaz.sock`, because the
//! agent is told nothing else.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::moto::Moto;
use crate::util::{bin_for_any_uid, describe, is_root, skipped_check, system_lock, wait_until};

const DAEMON_USER: &str = "elhaz-it-daemon";
const AGENT_USER: &str = "elhaz-it-agent";
const GROUP: &str = "elhaz-it";
const SOCKET_DIR: &str = "/run/elhaz";

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        describe(&Command::new(args[0]), &out)
    );
}

fn ensure_group(name: &str) {
    if nix::unistd::Group::from_name(name).unwrap().is_none() {
        // Tolerate a concurrent creation.
        let _ = Command::new("groupadd").args(["--system", name]).output();
    }
    assert!(nix::unistd::Group::from_name(name).unwrap().is_some());
}

fn ensure_user(name: &str) -> nix::unistd::User {
    if nix::unistd::User::from_name(name).unwrap().is_none() {
        let _ = Command::new("useradd")
            .args(["-M", "-r", "-s", "/bin/sh", name])
            .output();
    }
    nix::unistd::User::from_name(name)
        .unwrap()
        .expect("user exists")
}

struct Cleanup {
    daemon: Option<Child>,
    created_dir: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.created_dir {
            let _ = std::fs::remove_dir_all(SOCKET_DIR);
        }
    }
}

/// A command as `uid:gid` with an empty environment but `ELHAZ_SHARED` naming the daemon user
/// (plus what the caller adds).
fn as_user(uid: u32, gid: u32, args: &[&str]) -> Command {
    let mut c = Command::new(bin_for_any_uid());
    c.args(args)
        .env_clear()
        .env("ELHAZ_SHARED", DAEMON_USER)
        .uid(uid)
        .gid(gid)
        .current_dir("/")
        .stdin(Stdio::null());
    c
}

fn run(mut c: Command) -> (Command, Output) {
    let out = c.output().unwrap();
    (c, out)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.push(p.clone());
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn shared_daemon_serves_allowed_agents_only() {
    if !is_root() {
        skipped_check("shared mode with real uids needs root to create users");
        return;
    }
    // The documented walkthrough in docs/operations.md uses /run/elhaz too.
    let _system = system_lock();
    if Path::new(SOCKET_DIR).join("elhaz.sock").exists() {
        skipped_check("a shared elhaz daemon already owns /run/elhaz on this machine");
        return;
    }
    ensure_group(GROUP);
    let daemon = ensure_user(DAEMON_USER);
    let agent = ensure_user(AGENT_USER);
    let group_gid = nix::unistd::Group::from_name(GROUP)
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    let d_uid = daemon.uid.as_raw();
    let a_uid = agent.uid.as_raw();

    // The daemon user's home: traversable base, private home.
    let base = tempfile::Builder::new()
        .prefix("elhaz-shared.")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = base.path().join("home");
    std::fs::create_dir(&home).unwrap();
    nix::unistd::chown(&home, Some(daemon.uid), Some(daemon.gid)).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let moto_dir = base.path().join("moto");
    std::fs::create_dir(&moto_dir).unwrap();
    let moto = Moto::start(&moto_dir);

    // What `elhaz setup agent-access` does (its file writes under /etc are left out here).
    let mut cleanup = Cleanup {
        daemon: None,
        created_dir: !Path::new(SOCKET_DIR).exists(),
    };
    if cleanup.created_dir {
        sh(&[
            "install",
            "-d",
            "-m",
            "0750",
            "-o",
            DAEMON_USER,
            "-g",
            GROUP,
            SOCKET_DIR,
        ]);
    }
    let dir_mode_before = std::fs::metadata(SOCKET_DIR).unwrap().mode() & 0o7777;

    // As the daemon user, with the shared group as its primary group (as systemd's `Group=`
    // does; a non-root process can only hand its socket to a group it is in).
    let owner = |args: &[&str]| {
        let mut c = as_user(d_uid, group_gid, args);
        c.env("ELHAZ_HOME", &home)
            .env("HOME", &home)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL_STS", moto.url())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
        c
    };
    for (name, role) in [("ci", "CiReadOnly"), ("prod", "ProdAdmin")] {
        let (c, out) = run(owner(&[
            "config",
            "add",
            name,
            "--role-arn",
            &format!("arn:aws:iam::123456789012:role/{role}"),
            "--duration",
            "1h",
        ]));
        assert!(out.status.success(), "{}", describe(&c, &out));
    }
    let settings = format!(
        "[shared]\ngroup = \"{GROUP}\"\n\n[[shared.allow]]\nuser = \"{AGENT_USER}\"\nsessions = [\"ci\"]\n"
    );
    let settings_file = home.join("elhaz.toml");
    std::fs::write(&settings_file, settings).unwrap();
    nix::unistd::chown(&settings_file, Some(daemon.uid), Some(daemon.gid)).unwrap();
    std::fs::set_permissions(&settings_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let mut start = owner(&["daemon", "start", "--foreground", "--shared"]);
    start.stdout(Stdio::null()).stderr(Stdio::null());
    cleanup.daemon = Some(start.spawn().unwrap());
    let socket = Path::new(SOCKET_DIR).join("elhaz.sock");
    assert!(
        wait_until(Duration::from_secs(15), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        }),
        "the shared daemon did not come up on {}",
        socket.display()
    );

    // The socket: 0660, the daemon user's, the shared group; the directory untouched.
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (d_uid, group_gid));
    assert_eq!(
        std::fs::metadata(SOCKET_DIR).unwrap().mode() & 0o7777,
        dir_mode_before
    );

    // The agent, with zero flags and only ELHAZ_SHARED, gets credentials for its session.
    let (c, out) = run(as_user(a_uid, group_gid, &["credential-process", "ci"]));
    assert!(out.status.success(), "{}", describe(&c, &out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Version"], 1);
    assert!(v["AccessKeyId"].as_str().unwrap().starts_with("ASIA"));

    // ... is refused another session and every admin request ...
    for args in [
        &["credential-process", "prod"][..],
        &["daemon", "stop"],
        &["daemon", "list"],
        &["daemon", "add", "ci"],
        &["daemon", "remove", "ci"],
    ] {
        let (c, out) = run(as_user(a_uid, group_gid, args));
        assert!(!out.status.success(), "{}", describe(&c, &out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("permission denied"), "{args:?}: {err}");
    }
    // ... and every IAM Identity Center request, which would hand over, read or drop a login
    // (raw frames, as the agent uid: its CLI would not even try in the default mode).
    let target = r#"{"sso_session":"corp","start_url":"https://corp.awsapps.com/start","region":"eu-west-1"}"#;
    let frames = [
        format!(
            r#"{{"protocol":{},"id":1,"op":"sso_login","sso":{target},"sso_token":{{"access_token":"agent-planted","expires_at":"2099-01-01T00:00:00Z"}}}}"#,
            elhaz::protocol::PROTOCOL_VERSION
        ),
        format!(
            r#"{{"protocol":{},"id":2,"op":"sso_status"}}"#,
            elhaz::protocol::PROTOCOL_VERSION
        ),
        format!(
            r#"{{"protocol":{},"id":3,"op":"sso_logout","sso":{target},"portal_logout":true}}"#,
            elhaz::protocol::PROTOCOL_VERSION
        ),
        format!(
            r#"{{"protocol":{},"id":4,"op":"sso_assignments","sso":{target}}}"#,
            elhaz::protocol::PROTOCOL_VERSION
        ),
    ];
    let script = "import json, socket, struct, sys\n\
        s = socket.socket(socket.AF_UNIX)\n\
        s.connect(sys.argv[1])\n\
        for f in sys.argv[2:]:\n\
        \x20   b = f.encode()\n\
        \x20   s.sendall(struct.pack('>I', len(b)) + b)\n\
        \x20   n = struct.unpack('>I', s.recv(4, socket.MSG_WAITALL))[0]\n\
        \x20   print(json.loads(s.recv(n, socket.MSG_WAITALL))['error']['code'])\n";
    let mut py = Command::new("/usr/bin/python3");
    py.arg("-c")
        .arg(script)
        .arg(&socket)
        .args(&frames)
        .env_clear()
        .uid(a_uid)
        .gid(group_gid)
        .current_dir("/");
    let (c, out) = run(py);
    assert!(out.status.success(), "{}", describe(&c, &out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "permission_denied\npermission_denied\npermission_denied\npermission_denied\n",
        "{}",
        describe(&c, &out)
    );
    // ... the refused stop did not stop it ...
    let (c, out) = run(owner(&["daemon", "list", "--json"]));
    assert!(out.status.success(), "{}", describe(&c, &out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ci\""));

    // ... and can read nothing of the daemon user's.
    let mut checked = 0;
    for f in files_under(&home) {
        let target = f.to_str().unwrap();
        let probe = if f.is_dir() { "ls" } else { "cat" };
        let out = Command::new(probe)
            .arg(target)
            .uid(a_uid)
            .gid(group_gid)
            .output()
            .unwrap();
        assert!(!out.status.success(), "agent could read {target}");
        checked += 1;
    }
    assert!(
        checked >= 5,
        "expected configs, logs, lock and pid under the home; saw {checked}"
    );
    eprintln!("shared: agent refused on {checked} files and dirs of the daemon user");

    // Another uid outside the rule is refused at connect time by the peer check.
    let (c, out) = run(as_user(
        d_uid + 100_000,
        group_gid,
        &["credential-process", "ci"],
    ));
    assert!(!out.status.success(), "{}", describe(&c, &out));
}
