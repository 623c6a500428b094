//! `elhaz.toml`: the daemon's and the CLI's settings, their defaults and their validation.

use super::*;

/// Global settings (`elhaz.toml`). Every field is optional; see docs/configuration.md.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Maximum number of cached sessions (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<usize>,
    /// Exit after this long without a request (default: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Secs>,
    /// Refresh this long before expiry, or a third of the lifetime if less (default 20 min).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_window: Option<Secs>,
    /// Session used when a consumer is given no name and `ELHAZ_SESSION` is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_session: Option<SessionName>,
    /// Maximum concurrent client connections (default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Number of daily log files kept (default 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_files: Option<usize>,
    /// Re-warm the sessions that were cached when the daemon last stopped (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewarm: Option<bool>,
    /// Most connections one client uid may hold at once (default: no limit beyond
    /// `max_connections`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_client: Option<usize>,
    /// Most credential requests per second for one session (default: unlimited). Bursts up
    /// to the same number are allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<f64>,
    /// Most bytes the daemon writes to its logs (operational and audit, each) per UTC day, in
    /// MiB (default 100); beyond it lines are dropped and counted, never written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_max_mib_per_day: Option<u64>,
    /// Serve credentials even when their audit line cannot be written (default false: the
    /// request is refused with an audit error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_fail_open: Option<bool>,
    /// One overall deadline for each credential fetch, covering every child process it runs
    /// (a profile's `credential_process`, the MFA `command`) and the STS calls (default 2 min).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch_timeout: Option<Secs>,
    /// How long `daemon stop` waits for the daemon to exit (default 10 s); `--timeout`
    /// overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<Secs>,
    /// Whether `daemon stop` SIGKILLs a daemon that has not exited by then, as `--force` does
    /// (default false); `--no-force` overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_force: Option<bool>,
    /// Fraction (0..=1) of the room between the refresh window and botocore's 15-minute
    /// window over which the refresh points of sessions loaded together are spread (default
    /// 1: all of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_spread: Option<f64>,
    /// `[sts]`: how fast the daemon calls STS on its own (re-warm, refresh-ahead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts: Option<StsSettings>,
    /// `daemon start --shared`: a daemon for a dedicated user, serving other users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedSettings>,
    /// `[client]`: which daemon the CLI may use besides your own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientSettings>,
    /// Where IAM Identity Center tokens are kept besides the daemon's memory: `"aws"` (default:
    /// the AWS CLI's cache, `~/.aws/sso/cache/`, shared with the AWS CLI and SDKs) or `"memory"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso_token_cache: Option<SsoTokenCache>,
    /// `[sso_sessions.NAME]`: IAM Identity Center logins shared by sessions (`[sso] session`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sso_sessions: std::collections::BTreeMap<String, SsoSession>,
}

/// `[sts]` in `elhaz.toml`: the rate of the daemon's own STS calls (re-warm after a restart,
/// refresh-ahead), per STS endpoint. Calls a client waits for are never held back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StsSettings {
    /// Background calls per second per endpoint (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Calls an idle endpoint may make at once (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<f64>,
    /// `[sts.endpoints."URL"]`: `rate` and `burst` for one endpoint (its `endpoint_url`, or
    /// `https://sts.REGION.amazonaws.com`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub endpoints: std::collections::BTreeMap<String, StsRate>,
}

/// `rate` and `burst` of one `[sts.endpoints."URL"]`; what is left out comes from `[sts]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StsRate {
    /// Background calls per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Largest burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<f64>,
}

/// Slowest background STS rate `[sts] rate` accepts (calls per second).
pub const MIN_STS_RATE: f64 = 0.5;
/// Fastest background STS rate `[sts] rate` accepts, and the largest `burst`.
pub const MAX_STS_RATE: f64 = 10_000.0;

/// `[client]` in `elhaz.toml`: the CLI uses a shared daemon only when this (or
/// `ELHAZ_SHARED=USER`) names the user it must run as.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// The user (name or numeric uid) a shared daemon runs as; without it no shared daemon is
    /// ever used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<String>,
    /// Where that daemon listens (default: `ELHAZ_SHARED_SOCKET`, else `/run/elhaz/elhaz.sock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_socket: Option<PathBuf>,
}

/// `sso_token_cache` in `elhaz.toml`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SsoTokenCache {
    /// The AWS CLI's cache files (shared with the AWS CLI, botocore and other SDKs).
    #[default]
    Aws,
    /// The daemon's memory only: every daemon restart needs a new `elhaz sso login`.
    Memory,
}

pub use crate::paths::DEFAULT_SHARED_SOCKET;
/// Default mode of a shared daemon's socket.
pub const DEFAULT_SHARED_SOCKET_MODE: u32 = 0o660;
/// Default mode of a shared daemon's socket directory (when the daemon creates it).
pub const DEFAULT_SHARED_DIR_MODE: u32 = 0o750;

/// `[shared]` in `elhaz.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedSettings {
    /// Socket path (default `/run/elhaz/elhaz.sock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// Socket mode (default `0o660`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_mode: Option<u32>,
    /// Mode of the socket directory when the daemon creates it (default `0o750`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_dir_mode: Option<u32>,
    /// Group owning the socket (and the directory, when the daemon creates it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Who besides the daemon's own user may ask, and for which sessions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<AllowRule>,
    /// Most connections one non-owner uid may hold at once (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_peer: Option<usize>,
    /// Most requests per second one non-owner uid may make, over all its connections
    /// (default 20; bursts up to twice that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_rate_limit: Option<f64>,
}

/// One `[[shared.allow]]` rule: a principal (exactly one of `uid`, `user`, `group`) and the
/// sessions it may use (`"*"` for all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// A numeric uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// A user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A group name: its members (primary or supplementary) match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Sessions this principal may fetch; `"*"` allows all.
    #[serde(default)]
    pub sessions: Vec<String>,
}

/// Default cache capacity.
pub const DEFAULT_CAPACITY: usize = 64;
/// Default refresh window.
pub const DEFAULT_REFRESH_WINDOW: u64 = 20 * 60;
/// Default connection cap.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Default number of log files kept.
pub const DEFAULT_LOG_FILES: usize = 7;
/// Default overall deadline of one credential fetch, in seconds.
pub const DEFAULT_FETCH_TIMEOUT: u64 = 120;
/// Default time `daemon stop` waits for the daemon to exit, in seconds.
pub const DEFAULT_STOP_TIMEOUT: u64 = 10;
/// Default daily log volume cap, in MiB.
pub const DEFAULT_LOG_MAX_MIB_PER_DAY: u64 = 100;
/// Default connection cap for one non-owner uid of a shared daemon.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 16;
/// Default request rate (per second) for one non-owner uid of a shared daemon.
pub const DEFAULT_PEER_RATE_LIMIT: f64 = 20.0;

impl Settings {
    /// Loads `elhaz.toml`; a missing file means defaults. Every problem is reported at once.
    pub fn load(file: &Path) -> Result<Settings, Error> {
        let Some(src) = read_config_file(file)? else {
            return Ok(Settings::default());
        };
        let (s, problems) = redacting::deserialize_all::<Settings>(&src);
        let s = match s {
            Some(s) if problems.is_empty() => s,
            _ => return Err(invalid(file, &src, problems)),
        };
        let errs = s.problems();
        if errs.is_empty() {
            Ok(s)
        } else {
            Err(invalid(
                file,
                &src,
                errs.iter().map(|e| locate(&src, e)).collect(),
            ))
        }
    }

    /// Every rule the file breaks, in the order they are checked.
    fn problems(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        self.check_limits(&mut errs);
        if let Some(sh) = &self.shared {
            check_shared(sh, &mut errs);
        }
        self.check_logins(&mut errs);
        if self
            .refresh_spread
            .is_some_and(|f| !(0.0..=1.0).contains(&f))
        {
            bad(
                &mut errs,
                "refresh_spread",
                "must be a fraction between 0 and 1 (1 spreads over all the room)",
            );
        }
        if let Some(sts) = &self.sts {
            check_sts(sts, &mut errs);
        }
        if self.idle_timeout.is_some_and(|w| w.0 == 0) {
            bad(
                &mut errs,
                "idle_timeout",
                "must be at least 1 second (omit it to never exit)",
            );
        }
        errs
    }

    /// The numeric limits of the top-level settings.
    fn check_limits(&self, errs: &mut Vec<FieldError>) {
        if self.capacity.is_some_and(|c| !(1..=100_000).contains(&c)) {
            bad(errs, "capacity", "must be between 1 and 100000");
        }
        if self
            .max_connections
            .is_some_and(|c| !(1..=65_536).contains(&c))
        {
            bad(errs, "max_connections", "must be between 1 and 65536");
        }
        if self.log_files.is_some_and(|c| !(1..=365).contains(&c)) {
            bad(errs, "log_files", "must be between 1 and 365");
        }
        if self.refresh_window.is_some_and(|w| w.0 == 0) {
            bad(errs, "refresh_window", "must be at least 1 second");
        }
        if self.max_connections_per_client.is_some_and(|c| c == 0) {
            bad(errs, "max_connections_per_client", "must be at least 1");
        }
        if self.rate_limit.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            bad(
                errs,
                "rate_limit",
                "must be a positive number of requests per second",
            );
        }
        if self
            .fetch_timeout
            .is_some_and(|t| !(1..=3600).contains(&t.0))
        {
            bad(errs, "fetch_timeout", "must be between 1 second and 1 hour");
        }
        if self.stop_timeout.is_some_and(|t| t.0 > 3600) {
            bad(errs, "stop_timeout", "must be at most 1 hour");
        }
        if self
            .log_max_mib_per_day
            .is_some_and(|m| !(1..=1_048_576).contains(&m))
        {
            bad(
                errs,
                "log_max_mib_per_day",
                "must be between 1 and 1048576 (MiB)",
            );
        }
    }

    /// `[client] shared` and `[sso_sessions.NAME]`: whom to log in as, and where.
    fn check_logins(&self, errs: &mut Vec<FieldError>) {
        if self
            .client
            .as_ref()
            .and_then(|c| c.shared.as_deref())
            .is_some_and(|u| u.trim().is_empty())
        {
            bad(
                errs,
                "client.shared",
                "names the user a shared daemon runs as, e.g. \"elhaz\"",
            );
        }
        for (name, sso) in &self.sso_sessions {
            if let Err(m) =
                check_sso_session_name(name).and_then(|()| check_start_url(&sso.start_url))
            {
                bad(errs, "sso_sessions", &format!("[sso_sessions.{name}]: {m}"));
            }
        }
    }

    /// Cache capacity.
    pub fn capacity(&self) -> usize {
        self.capacity.unwrap_or(DEFAULT_CAPACITY)
    }
    /// Refresh window in seconds.
    pub fn refresh_window(&self) -> u64 {
        self.refresh_window.map_or(DEFAULT_REFRESH_WINDOW, |s| s.0)
    }
    /// Connection cap.
    pub fn max_connections(&self) -> usize {
        self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS)
    }
    /// Log files kept.
    pub fn log_files(&self) -> usize {
        self.log_files.unwrap_or(DEFAULT_LOG_FILES)
    }
    /// The refresh spread fraction.
    pub fn refresh_spread(&self) -> f64 {
        self.refresh_spread.unwrap_or(1.0)
    }
    /// Whether to re-warm sessions after a restart.
    pub fn rewarm(&self) -> bool {
        self.rewarm.unwrap_or(true)
    }
    /// The overall deadline of one credential fetch.
    pub fn fetch_timeout(&self) -> Duration {
        Duration::from_secs(self.fetch_timeout.map_or(DEFAULT_FETCH_TIMEOUT, |t| t.0))
    }
    /// How long `daemon stop` waits for the exit when `--timeout` is not given.
    pub fn stop_timeout(&self) -> Duration {
        Duration::from_secs(self.stop_timeout.map_or(DEFAULT_STOP_TIMEOUT, |t| t.0))
    }
    /// Whether `daemon stop` SIGKILLs after the timeout when neither `--force` nor
    /// `--no-force` is given.
    pub fn stop_force(&self) -> bool {
        self.stop_force.unwrap_or(false)
    }
    /// Daily log volume cap in bytes (per stream).
    pub fn log_max_bytes_per_day(&self) -> u64 {
        self.log_max_mib_per_day
            .unwrap_or(DEFAULT_LOG_MAX_MIB_PER_DAY)
            .saturating_mul(1024 * 1024)
    }
    /// Whether credentials are served when their audit line cannot be written.
    pub fn audit_fail_open(&self) -> bool {
        self.audit_fail_open.unwrap_or(false)
    }
}

/// Records one rule's failure on `field`.
fn bad(errs: &mut Vec<FieldError>, field: &'static str, message: &str) {
    errs.push(FieldError {
        field,
        message: message.into(),
    });
}

/// `[shared]`: per-peer limits, socket modes, and each `[[shared.allow]]` rule.
fn check_shared(sh: &SharedSettings, errs: &mut Vec<FieldError>) {
    if sh.max_connections_per_peer.is_some_and(|c| c == 0) {
        bad(
            errs,
            "shared.max_connections_per_peer",
            "must be at least 1",
        );
    }
    if sh
        .peer_rate_limit
        .is_some_and(|r| !(r > 0.0 && r.is_finite()))
    {
        bad(
            errs,
            "shared.peer_rate_limit",
            "must be a positive number of requests per second",
        );
    }
    for (field, mode) in [
        ("shared.socket_mode", sh.socket_mode),
        ("shared.socket_dir_mode", sh.socket_dir_mode),
    ] {
        if mode.is_some_and(|m| m > 0o777) {
            bad(errs, field, "must be a permission mode such as 0o660");
        }
    }
    for rule in &sh.allow {
        let principals = [
            rule.uid.is_some(),
            rule.user.is_some(),
            rule.group.is_some(),
        ];
        if principals.iter().filter(|p| **p).count() != 1 {
            bad(
                errs,
                "shared.allow",
                "each rule names exactly one of uid, user or group",
            );
        }
        if rule.sessions.is_empty() {
            bad(
                errs,
                "shared.allow",
                "each rule lists the sessions it may use (\"*\" for all)",
            );
        }
        if rule
            .sessions
            .iter()
            .any(|n| n != "*" && validate_name(n).is_err())
        {
            bad(
                errs,
                "shared.allow",
                "a rule lists an invalid session name (use \"*\" or names of [A-Za-z0-9._-])",
            );
        }
    }
}

/// `[sts]` and each `[sts.endpoints."URL"]`: rate and burst within bounds.
fn check_sts(sts: &StsSettings, errs: &mut Vec<FieldError>) {
    let own = ("sts.rate", "sts.burst", String::new(), sts.rate, sts.burst);
    let per_endpoint = sts.endpoints.iter().map(|(url, r)| {
        let (rate, burst) = ("sts.endpoints.rate", "sts.endpoints.burst");
        (
            rate,
            burst,
            format!("[sts.endpoints.{url:?}]: "),
            r.rate,
            r.burst,
        )
    });
    for (rate_field, burst_field, at, rate, burst) in std::iter::once(own).chain(per_endpoint) {
        if rate.is_some_and(|r| !(MIN_STS_RATE..=MAX_STS_RATE).contains(&r)) {
            let m = format!("{at}must be a number of calls per second between 0.5 and 10000");
            bad(errs, rate_field, &m);
        }
        if burst.is_some_and(|b| !(1.0..=MAX_STS_RATE).contains(&b)) {
            let m = format!("{at}must be a number of calls between 1 and 10000");
            bad(errs, burst_field, &m);
        }
    }
}
