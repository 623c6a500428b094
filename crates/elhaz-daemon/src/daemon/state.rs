//! State shared by every task of the daemon.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::daemon::sessions::Sessions;
use crate::paths::Paths;

/// Options the daemon is started with (flags override `elhaz.toml`).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Serve one request, then exit (tests).
    pub once: bool,
    /// Cache capacity override.
    pub capacity: Option<usize>,
    /// Idle timeout override.
    pub idle_timeout: Option<Duration>,
    /// Serve other users per `[shared]` in `elhaz.toml`.
    pub shared: bool,
    /// Shared-mode socket mode override.
    pub socket_mode: Option<u32>,
    /// Shared-mode socket directory mode override.
    pub socket_dir_mode: Option<u32>,
    /// Shared-mode socket group override.
    pub group: Option<String>,
    /// `--require-token --token-file FILE`: delegates' tokens; every non-owner needs one.
    pub token_file: Option<std::path::PathBuf>,
}

/// Shared daemon state. Cheap to reach from any task through an `Arc`.
#[derive(Debug)]
pub struct State {
    /// Resolved paths.
    pub paths: Paths,
    /// Global settings from `elhaz.toml`.
    pub settings: Settings,
    /// Effective options.
    pub options: Options,
    /// The daemon's pid.
    pub pid: u32,
    /// The uid peers must have.
    pub uid: u32,
    /// When the daemon started.
    pub started: Instant,
    /// Wall-clock start time.
    pub started_at: SystemTime,
    /// Cancelled exactly once, when the daemon shuts down; every task watches it.
    pub shutdown: CancellationToken,
    /// The session cache.
    pub sessions: Sessions,
    /// Who may ask for what.
    pub policy: crate::daemon::policy::Policy,
    /// Peers' groups from the group database, where the socket cannot tell them (not Linux).
    pub groups: crate::daemon::groups::GroupCache,
    /// The delegates' tokens (`--require-token`), reloaded on SIGHUP.
    pub tokens: Option<crate::daemon::tokens::Tokens>,
    /// Milliseconds since `started` of the last request (for the idle timeout).
    last_activity_ms: AtomicU64,
}

impl State {
    /// The engine and the state as a daemon runs them, from `elhaz.toml` (`[sts]` shaping,
    /// fetch deadline, capacity, refresh window): the one setup `daemon start` and the
    /// in-process broker share. Tests that inject a fetcher build `Sessions` themselves and call
    /// [`State::new`].
    pub fn build(
        paths: Paths,
        settings: Settings,
        options: Options,
    ) -> Result<State, crate::Error> {
        let capacity = options.capacity.unwrap_or(settings.capacity());
        let sessions = crate::daemon::sessions::Sessions::shaped(
            crate::config::Store::new(paths.configs_dir.clone()),
            capacity,
            std::sync::Arc::new(crate::sts::LazySts::with_deadline(settings.fetch_timeout())),
            Duration::from_secs(settings.refresh_window()),
            crate::daemon::sessions::Shaping::from_settings(&settings),
        );
        State::new(paths, settings, options, sessions)
    }

    /// Builds the state; `sessions` is created by the caller so tests can inject sources.
    pub fn new(
        paths: Paths,
        settings: Settings,
        options: Options,
        sessions: Sessions,
    ) -> Result<State, crate::Error> {
        let uid = nix::unistd::geteuid().as_raw();
        let mut policy = crate::daemon::policy::Policy::new(uid, &settings, options.shared)?;
        let tokens = options
            .token_file
            .as_deref()
            .map(crate::daemon::tokens::Tokens::load)
            .transpose()?;
        if tokens.is_some() {
            policy.require_tokens(&settings);
        }
        Ok(State {
            policy,
            groups: Default::default(),
            tokens,
            paths,
            settings,
            options,
            pid: std::process::id(),
            uid,
            started: Instant::now(),
            started_at: SystemTime::now(),
            shutdown: sessions.shutdown_token(),
            sessions,
            last_activity_ms: AtomicU64::new(0),
        })
    }

    /// Records that a request arrived.
    pub fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }

    /// When the last request arrived.
    pub fn last_activity(&self) -> Instant {
        self.started + Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed))
    }

    /// The effective idle timeout.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.options
            .idle_timeout
            .or(self.settings.idle_timeout.map(|s| s.duration()))
    }
}
