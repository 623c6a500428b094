//! Child processes the daemon runs for a fetch — a profile's `credential_process`, an MFA
//! command — each the leader of its own process group, with its output captured, under a
//! deadline, and killed with its whole group when it exits, times out, its fetch is dropped,
//! or the daemon stops ([`kill_children`]). The SDK's own provider would run them with none
//! of that, which is why `profiles` finds such chains and hands them here.

use std::sync::Mutex;
use std::time::Duration;

use aws_credential_types::provider::SharedCredentialsProvider;

use crate::protocol::{ErrorCode, WireError};

/// Process groups of the child processes running now (MFA commands, `credential_process`),
/// so that [`kill_children`] can end them at daemon stop.
pub(super) static CHILDREN: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// A running child's process group: killed (SIGKILL to the whole group) when dropped — after
/// the child exits, on a timeout, or when the fetch's future is dropped at its deadline.
pub(super) struct GroupGuard(i32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
        CHILDREN
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|g| *g != self.0);
    }
}

/// Kills the process group of every child still running (daemon stop).
pub fn kill_children() {
    let groups = std::mem::take(&mut *CHILDREN.lock().unwrap_or_else(|p| p.into_inner()));
    for g in groups {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(g),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Why a child process gave no output.
#[derive(Debug, thiserror::Error)]
pub(super) enum ChildError {
    #[error("cannot be started: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("failed: {0}")]
    Wait(#[source] std::io::Error),
    #[error("timed out after {0:?} (its process group was killed)")]
    Timeout(Duration),
}

/// Runs `cmd` (stdin null, output captured) as the leader of a new process group, and kills
/// the whole group when it exits, after `timeout`, or if this future is dropped — so a
/// grandchild that holds the pipes open or keeps running is gone too.
pub(super) async fn run_child(
    mut cmd: tokio::process::Command,
    timeout: Duration,
) -> Result<std::process::Output, ChildError> {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(ChildError::Spawn)?;
    // A spawned child always has a pid until it is reaped, and it is not reaped yet.
    let pgid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    let _group = (pgid > 0).then(|| {
        CHILDREN
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pgid);
        GroupGuard(pgid)
    });
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.map_err(ChildError::Wait),
        Err(_) => Err(ChildError::Timeout(timeout)),
    }
}

/// How long a profile's `credential_process` may run.
pub const CREDENTIAL_PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a profile's `credential_process` (through `sh -c`, as the AWS SDKs do) under
/// [`run_child`] and reads its JSON (`Version` 1).
pub(super) async fn run_credential_process(
    profile: &str,
    command: &str,
) -> Result<SharedCredentialsProvider, WireError> {
    let fail = |m: String| {
        WireError::new(
            ErrorCode::SourceError,
            format!("AWS profile {profile:?}: credential_process {m}"),
        )
    };
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c").arg(command);
    let out = run_child(cmd, CREDENTIAL_PROCESS_TIMEOUT)
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(fail(format!(
            "exited with {}: {}",
            out.status,
            err.trim().chars().take(300).collect::<String>()
        )));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Output {
        version: u32,
        access_key_id: String,
        secret_access_key: String,
        #[serde(default)]
        session_token: Option<String>,
        #[serde(default)]
        expiration: Option<String>,
    }
    // The output holds secrets: never quote it in an error.
    let stdout = zeroize::Zeroizing::new(out.stdout);
    let o: Output = serde_json::from_slice(&stdout).map_err(|e| {
        fail(format!(
            "printed no valid credential JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    if o.version != 1 {
        return Err(fail(format!(
            "printed Version {}; only Version 1 is supported",
            o.version
        )));
    }
    let expiry =
        match &o.expiration {
            Some(t) => Some(humantime::parse_rfc3339_weak(t).map_err(|_| {
                fail("printed an Expiration that is not an RFC 3339 time".to_string())
            })?),
            None => None,
        };
    Ok(SharedCredentialsProvider::new(
        aws_credential_types::Credentials::new(
            o.access_key_id,
            zeroize::Zeroizing::new(o.secret_access_key).as_str(),
            o.session_token
                .map(zeroize::Zeroizing::new)
                .as_deref()
                .cloned(),
            expiry,
            "credential_process",
        ),
    ))
}
