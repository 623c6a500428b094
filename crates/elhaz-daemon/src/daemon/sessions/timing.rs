//! When the engine refreshes and retries, and how a cached failure reads: pure functions of
//! durations (and a random `jitter` the caller draws), so the schedule is unit-tested without
//! a clock. The constants here are the engine's timing knobs; `elhaz.toml` sets the ones a
//! user may change ([`Shaping`]).

use std::time::{Duration, SystemTime};

use crate::daemon::scheduler::RateConfig;
use crate::protocol::WireError;

/// Longest chain of `session = …` references followed.
pub(super) const MAX_CHAIN_DEPTH: usize = 8;
/// Retry delay after the first failure; doubles per failure.
pub(super) const BACKOFF_BASE: Duration = Duration::from_secs(2);
/// Longest retry delay.
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// After a failed fetch, requests within this long get the recorded error instead of a new
/// STS call (a broken session must not turn every client request into an STS call).
pub(super) const NEGATIVE_TTL: Duration = Duration::from_secs(2);
/// Longest retry delay after a failure to reach STS (`unavailable`). Wi-Fi is often not up yet
/// when a laptop wakes: once it is, the next attempt must come soon (fresh credentials within
/// 30 s, fetch time included), not after a backoff of minutes. The cost while offline is one
/// quick, failing connection attempt per cached session every 15 s or so.
pub const RETRY_UNREACHABLE_MAX: Duration = Duration::from_secs(15);
/// A measured clock skew larger than this is shown in `daemon list`.
pub(super) const SKEW_SHOWN_SECS: i64 = 60;

/// botocore's advisory refresh window: an SDK given credentials with less than this left
/// refreshes them (runs the credential process) on every call.
pub const BOTOCORE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// A session unused for longer than this is not re-warmed after a restart (it stays cold
/// until a client asks for it).
pub const REWARM_MAX_IDLE: Duration = Duration::from_secs(24 * 3600);

/// When to refresh, measured from receipt. The earliest point is `lifetime − lead`, where
/// `lead = min(window, lifetime/3)`; the latest keeps botocore's 15 minutes when the lead is
/// longer than that (else three quarters of the lead: a short lead leaves little time for a
/// failing STS's retries before expiry, so only its first quarter is used; never within the
/// serve margin). `spread` (0..=1) is
/// the fraction of the room between the two that is used, and `jitter` (0..=1) the point in
/// it: sessions loaded together refresh spread over that room, so N of them cost about
/// N / room calls per second instead of one burst.
pub fn refresh_delay(lifetime: Duration, window: Duration, spread: f64, jitter: f64) -> Duration {
    let lead = window.min(lifetime / 3);
    let latest_left = if lead > BOTOCORE_WINDOW {
        BOTOCORE_WINDOW
    } else {
        lead.mul_f64(0.75)
    };
    let latest_left = latest_left.max(serve_margin(lifetime)).min(lead);
    let room = (lead - latest_left).mul_f64(spread.clamp(0.0, 1.0));
    lifetime.saturating_sub(lead) + room.mul_f64(jitter.clamp(0.0, 1.0))
}

/// How the daemon's own STS calls are shaped (`elhaz.toml`: `[sts]`, `refresh_spread`).
#[derive(Debug, Clone)]
pub struct Shaping {
    /// Background rate and burst of every endpoint.
    pub rate: RateConfig,
    /// Other rates for some endpoints, keyed by [`sts_endpoint`]'s name.
    pub endpoints: std::collections::HashMap<String, RateConfig>,
    /// Fraction of the refresh room refresh points are spread over (see [`refresh_delay`]).
    pub spread: f64,
}

impl Default for Shaping {
    fn default() -> Self {
        Shaping {
            rate: RateConfig::default(),
            endpoints: Default::default(),
            spread: 1.0,
        }
    }
}

impl Shaping {
    /// The shaping `elhaz.toml` asks for.
    pub fn from_settings(settings: &crate::config::Settings) -> Shaping {
        let d = Shaping::default();
        let sts = settings.sts.clone().unwrap_or_default();
        let rate = RateConfig {
            rate: sts.rate.unwrap_or(d.rate.rate),
            burst: sts.burst.unwrap_or(d.rate.burst),
        };
        let endpoints = sts
            .endpoints
            .iter()
            .map(|(url, r)| {
                let c = RateConfig {
                    rate: r.rate.unwrap_or(rate.rate),
                    burst: r.burst.unwrap_or(rate.burst),
                };
                (url.trim_end_matches('/').to_string(), c)
            })
            .collect();
        Shaping {
            rate,
            endpoints,
            spread: settings.refresh_spread(),
        }
    }
}

/// Delay before retry number `failures` (1-based): exponential with ±20 % jitter, capped at
/// [`BACKOFF_MAX`];
/// never later than halfway to `expires_in` when a credential is still valid, so a recovering
/// STS gets several tries before expiry.
pub fn backoff_delay(failures: u32, jitter: f64, expires_in: Option<Duration>) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let d = exp
        .min(BACKOFF_MAX)
        .mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
        .min(BACKOFF_MAX);
    match expires_in {
        Some(left) if left > Duration::from_secs(2) => d.min(left / 2),
        _ => d,
    }
    .max(Duration::from_millis(500))
}

/// How much validity a credential must have left to be served: a little, so that a client
/// never receives credentials that expire in flight.
pub(super) fn serve_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(10))
}

/// A cached failure, saying so: when the attempt was and when the next one is due.
pub(super) fn cached_failure(
    e: &WireError,
    ago: Duration,
    retry_in: Option<Duration>,
) -> WireError {
    let mut w = e.clone();
    let next = match retry_in {
        Some(d) => format!("retrying in {}", secs(d)),
        None => format!(
            "a request after {} retries",
            secs(NEGATIVE_TTL.saturating_sub(ago))
        ),
    };
    w.message = format!("{} (last attempt {} ago; {next})", e.message, secs(ago));
    w
}

/// `3 s`, or `0.4 s` below ten seconds.
pub(super) fn secs(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} s", d.as_secs())
    }
}

/// Seconds since the Unix epoch (0 before it).
pub(super) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `to − from` in whole seconds, signed.
pub(super) fn secs_between(from: std::time::Instant, to: std::time::Instant) -> i64 {
    match to.checked_duration_since(from) {
        Some(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        None => -i64::try_from(from.duration_since(to).as_secs()).unwrap_or(i64::MAX),
    }
}
