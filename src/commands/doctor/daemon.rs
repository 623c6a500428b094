//! The daemon checks: reachable (never autostarted), same protocol and version as this CLI,
//! and none of its cached sessions `failed` or `stale`.

use super::*;

/// What the daemon probe found.
pub(super) enum DaemonProbe {
    NotRunning,
    Unreachable(String),
    Mismatch(String),
    Failed(String),
    /// Up, with its cached sessions (`None`: the list request failed).
    Up(StatusInfo, Option<Vec<elhaz::protocol::SessionInfo>>),
}

pub(super) fn probe_daemon(paths: &Paths) -> DaemonProbe {
    let mut client = match elhaz::client::connect_existing(paths) {
        Ok(Some(c)) => c,
        Ok(None) => return DaemonProbe::NotRunning,
        Err(e) => return DaemonProbe::Unreachable(format!("{e:#}")),
    };
    let classify = |e: elhaz::Error| match e {
        elhaz::Error::Remote(w) if w.code == ErrorCode::ProtocolMismatch => {
            DaemonProbe::Mismatch(w.message)
        }
        other => DaemonProbe::Failed(other.to_string()),
    };
    match client.call(Request::Ping) {
        Ok(Response::Pong { .. }) => {}
        Ok(other) => return DaemonProbe::Failed(format!("unexpected reply to ping: {other:?}")),
        Err(e) => return classify(e),
    }
    match client.call(Request::Status) {
        Ok(Response::Status(s)) => {
            let sessions = match client.call(Request::List {
                state: None,
                pattern: None,
            }) {
                Ok(Response::Sessions { sessions, .. }) => Some(sessions),
                _ => None,
            };
            DaemonProbe::Up(s, sessions)
        }
        Ok(other) => DaemonProbe::Failed(format!("unexpected reply to status: {other:?}")),
        Err(e) => classify(e),
    }
}

/// The daemon check from the probe's result: reachable, its version, its cached sessions.
pub(super) fn check_daemon(r: &mut Report, probe: std::thread::JoinHandle<DaemonProbe>) {
    let Some(probe) = finished_probe(r, probe) else {
        return;
    };
    match probe {
        DaemonProbe::NotRunning => {
            if elhaz::client::autostart_enabled() {
                r.warn(
                    "daemon",
                    "not running (it starts on first use)",
                    "nothing to do; or `elhaz daemon start` now",
                );
            } else {
                r.warn(
                    "daemon",
                    "not running, and ELHAZ_AUTOSTART=0 keeps it from starting on first use",
                    "elhaz daemon start",
                );
            }
        }
        DaemonProbe::Unreachable(e) => r.fail(
            "daemon",
            e,
            "check the socket with `elhaz paths`; `elhaz daemon stop` clears a stale one",
        ),
        DaemonProbe::Mismatch(m) => r.fail(
            "daemon",
            m,
            "run `elhaz daemon stop` (the next command starts a daemon of this version)",
        ),
        DaemonProbe::Failed(m) => r.fail(
            "daemon",
            m,
            "see `elhaz daemon logs`; restart it with `elhaz daemon stop`",
        ),
        DaemonProbe::Up(s, sessions) => {
            check_version(r, &s);
            if let Some(sessions) = &sessions {
                check_sessions(r, sessions);
            }
        }
    }
}

/// The probe's result, waited for within [`DAEMON_TIMEOUT`]; `None` (and a failure reported)
/// when the daemon accepted but did not answer.
fn finished_probe(
    r: &mut Report,
    probe: std::thread::JoinHandle<DaemonProbe>,
) -> Option<DaemonProbe> {
    // The probe thread cannot be cancelled; wait for it within a bound, then give up on it.
    let deadline = std::time::Instant::now() + DAEMON_TIMEOUT;
    while !probe.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if !probe.is_finished() {
        r.fail(
            "daemon",
            format!(
                "the daemon accepted but did not answer within {}s",
                DAEMON_TIMEOUT.as_secs()
            ),
            "see `elhaz daemon logs`; restart it with `elhaz daemon stop`",
        );
        return None;
    }
    Some(
        probe
            .join()
            .unwrap_or_else(|_| DaemonProbe::Failed("the probe panicked".into())),
    )
}

/// A running daemon: its protocol must be this CLI's, its version should be.
fn check_version(r: &mut Report, s: &StatusInfo) {
    let detail = format!(
        "running (pid {}, elhaz {}, protocol {}, {} of {} sessions cached, up {}) on {}",
        s.pid,
        s.version,
        s.protocol,
        s.sessions,
        s.capacity,
        human_secs(s.uptime_s),
        s.socket
    );
    if s.protocol != PROTOCOL_VERSION {
        r.fail(
            "daemon",
            format!("{detail}: this CLI speaks protocol {PROTOCOL_VERSION}"),
            "run `elhaz daemon stop` (the next command starts a daemon of this version)",
        );
    } else if s.version != env!("CARGO_PKG_VERSION") {
        r.warn(
            "daemon",
            format!("{detail}: this CLI is elhaz {}", env!("CARGO_PKG_VERSION")),
            "run `elhaz daemon stop` to switch to this version",
        );
    } else {
        r.ok("daemon", detail);
    }
}

/// Sessions the daemon holds in `failed` (no valid credentials, last attempt failed) or
/// `stale` (serving still-valid credentials while refreshes fail) state.
pub(super) fn check_sessions(r: &mut Report, sessions: &[elhaz::protocol::SessionInfo]) {
    use elhaz::protocol::SessionState;
    let describe = |state: SessionState| -> Vec<String> {
        sessions
            .iter()
            .filter(|s| s.state == state)
            .map(|s| match &s.last_error {
                Some(e) => format!("{} ({e})", s.name),
                None => s.name.clone(),
            })
            .collect()
    };
    let (failed, stale) = (
        describe(SessionState::Failed),
        describe(SessionState::Stale),
    );
    if !failed.is_empty() {
        r.fail(
            "sessions",
            format!("{} failed: {}", failed.len(), failed.join("; ")),
            "fix the cause named in the error (config, source, STS endpoint), then retry with \
             `elhaz whoami NAME`; `elhaz daemon list` shows every session",
        );
    }
    if !stale.is_empty() {
        r.warn(
            "sessions",
            format!(
                "{} stale (still-valid credentials, refreshes failing): {}",
                stale.len(),
                stale.join("; ")
            ),
            "the daemon keeps retrying with backoff; `elhaz daemon logs` shows why",
        );
    }
    if failed.is_empty() && stale.is_empty() {
        r.ok(
            "sessions",
            format!("{} cached, none failed or stale", sessions.len()),
        );
    }
}
