//! Time as a laptop lives it: the wall clock the engine reads, and the platform's signal that
//! the wall clock jumped (a clock set, or a resume from sleep).
//!
//! The engine keeps two deadlines per credential (see `daemon::sessions`): one on tokio's
//! monotonic clock, which is immune to clock changes but *stops while the machine sleeps*
//! (`CLOCK_MONOTONIC` on Linux, `CLOCK_UPTIME_RAW` on macOS), and one on the wall clock, which
//! keeps running through sleep. A credential is servable only while both say so. What is left
//! is noticing, without a request, that the wall clock moved past a refresh point:
//!
//! - **Linux:** a `timerfd` on `CLOCK_REALTIME` armed with an absolute expiry far in the future
//!   and `TFD_TIMER_CANCEL_ON_SET`. The kernel cancels it — `read` fails with `ECANCELED` —
//!   whenever the wall clock is set discontinuously *and* on every resume from suspend
//!   (`timekeeping_resume` → `timerfd_resume`). It costs one file descriptor in the runtime's
//!   epoll set and no wake-up at all while nothing happens.
//! - **Everywhere (and the backstop on Linux):** a coarse drift check. The single watcher task
//!   (one for all sessions, never one per session) wakes every [`CHECK_INTERVAL`] while at least
//!   one session is cached, compares how far the wall clock and the monotonic clock moved,
//!   and wakes the refresher of every session whose wall-clock refresh point has passed. This
//!   is what catches clocks that are changed without the kernel knowing (libfaketime in the
//!   integration test) and platforms without a timerfd. It ticks on a periodic `timerfd` on
//!   `CLOCK_MONOTONIC` on Linux ([`Ticker`]), a tokio sleep elsewhere. Its period is the
//!   trade-off between detection delay and idle wake-ups: 45 s gives ≤ 1.4 wake-ups a
//!   minute and, with a fetch of a few seconds, renewal within 60 s of a jump. With no
//!   session cached the watcher sleeps on a `Notify` and never wakes.
//!
//! CLOCK_BOOTTIME timers (which keep running in suspend) would cover sleep but not a clock
//! set, and tokio cannot time on them; the timerfd covers both.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The wall clock the engine reads: `SystemTime::now` in production; unit tests inject one
/// they can move without moving tokio's (paused) monotonic clock.
#[derive(Clone)]
pub struct WallClock(Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl WallClock {
    /// A wall clock read from `now`.
    pub fn new(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> WallClock {
        WallClock(Arc::new(now))
    }

    /// The current wall time.
    pub fn now(&self) -> SystemTime {
        (self.0)()
    }
}

impl std::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WallClock")
    }
}

/// The production wall clock.
pub fn system() -> WallClock {
    WallClock::new(SystemTime::now)
}

/// How often the watcher compares the wall and monotonic clocks while sessions are cached.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(45);

/// A difference between wall and monotonic progress beyond this, between two checks, is
/// logged as a jump (sleep or clock change). Refresh points are checked at every tick anyway.
pub const JUMP_THRESHOLD: Duration = Duration::from_secs(5);

/// How far the wall clock moved relative to the monotonic one, in seconds (positive: the wall
/// clock ran ahead — a sleep, or a clock set forward).
pub fn drift(mono_elapsed: Duration, wall_before: SystemTime, wall_now: SystemTime) -> f64 {
    let wall = match wall_now.duration_since(wall_before) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    wall - mono_elapsed.as_secs_f64()
}

/// The platform's "the wall clock jumped" signal; on platforms without one, it never fires.
#[derive(Debug)]
pub struct ClockChange {
    #[cfg(target_os = "linux")]
    fd: Option<tokio::io::unix::AsyncFd<linux::Timer>>,
}

impl ClockChange {
    /// Arms the signal. Must run inside a tokio runtime with I/O enabled. A failure (no
    /// timerfd, e.g. an old kernel or a seccomp filter) is logged once and leaves only the
    /// drift check.
    pub fn new() -> ClockChange {
        #[cfg(target_os = "linux")]
        {
            match linux::open() {
                Ok(fd) => ClockChange { fd: Some(fd) },
                Err(e) => {
                    tracing::warn!(error = %e, "no timerfd clock-change signal; relying on the drift check");
                    ClockChange { fd: None }
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            ClockChange {}
        }
    }

    /// Resolves when the wall clock was set or the machine resumed (then re-arms). Pending
    /// forever where the platform gives no signal.
    pub async fn changed(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            match linux::wait(fd, true).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "the timerfd clock-change signal failed; relying on the drift check");
                    self.fd = None;
                }
            }
        }
        std::future::pending::<()>().await
    }
}

/// The drift check's period, [`CHECK_INTERVAL`]. On Linux a periodic `timerfd` on
/// `CLOCK_MONOTONIC`: the kernel wakes us exactly once per period, where a tokio timer of 45 s
/// costs up to three wake-ups (its hierarchical wheel parks until the coarse slot, then the
/// finer ones). Elsewhere, and in unit tests (which pause tokio's clock), a tokio sleep. Create
/// it only while there is something to check, and drop it otherwise: the kernel timer keeps
/// firing whether or not anybody waits.
#[derive(Debug)]
pub struct Ticker {
    #[cfg(all(target_os = "linux", not(test)))]
    fd: Option<tokio::io::unix::AsyncFd<linux::Timer>>,
}

impl Ticker {
    /// Starts ticking. Must run inside a tokio runtime with I/O and time enabled.
    pub fn new() -> Ticker {
        #[cfg(all(target_os = "linux", not(test)))]
        {
            Ticker {
                fd: linux::periodic(CHECK_INTERVAL)
                    .inspect_err(
                        |e| tracing::warn!(error = %e, "no timerfd ticker; using a tokio timer"),
                    )
                    .ok(),
            }
        }
        #[cfg(not(all(target_os = "linux", not(test))))]
        {
            Ticker {}
        }
    }

    /// Resolves at the next tick.
    pub async fn tick(&mut self) {
        #[cfg(all(target_os = "linux", not(test)))]
        if let Some(fd) = &self.fd {
            match linux::wait(fd, false).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "the timerfd ticker failed; using a tokio timer");
                    self.fd = None;
                }
            }
        }
        tokio::time::sleep(CHECK_INTERVAL).await
    }
}

impl Default for Ticker {
    fn default() -> Self {
        Ticker::new()
    }
}

impl Default for ClockChange {
    fn default() -> Self {
        ClockChange::new()
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use nix::errno::Errno;
    use nix::sys::time::TimeSpec;
    use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
    use std::os::fd::{AsFd, AsRawFd, RawFd};
    use tokio::io::unix::AsyncFd;

    /// A `TimerFd` that tokio's `AsyncFd` can register (it wants `AsRawFd`).
    #[derive(Debug)]
    pub(super) struct Timer(TimerFd);

    impl AsRawFd for Timer {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_fd().as_raw_fd()
        }
    }

    /// Far enough that the timer never expires by itself (a century); only a clock change
    /// cancels it.
    const FAR: i64 = 100 * 365 * 86_400;

    fn arm(t: &TimerFd) -> nix::Result<()> {
        // The kernel's own CLOCK_REALTIME, not a faked one: the absolute expiry only needs to
        // be far ahead of it.
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)?;
        t.set(
            Expiration::OneShot(TimeSpec::new(now.tv_sec().saturating_add(FAR), 0)),
            TimerSetTimeFlags::TFD_TIMER_ABSTIME | TimerSetTimeFlags::TFD_TIMER_CANCEL_ON_SET,
        )
    }

    pub(super) fn open() -> std::io::Result<AsyncFd<Timer>> {
        let t = TimerFd::new(
            ClockId::CLOCK_REALTIME,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        arm(&t)?;
        // SAFETY: `Timer` owns the timerfd (an `OwnedFd` inside `TimerFd`), never replaces or
        // closes it while the `AsyncFd` owns the `Timer`, and `as_raw_fd` always returns it.
        unsafe { AsyncFd::register_with_interest(Timer(t), tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
    }

    /// A periodic timer on the monotonic clock.
    #[cfg_attr(test, allow(dead_code))]
    pub(super) fn periodic(every: std::time::Duration) -> std::io::Result<AsyncFd<Timer>> {
        let t = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        t.set(
            Expiration::Interval(TimeSpec::from_duration(every)),
            TimerSetTimeFlags::empty(),
        )?;
        // SAFETY: as in `open`: `Timer` owns the fd for the `AsyncFd`'s whole life.
        unsafe { AsyncFd::register_with_interest(Timer(t), tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
    }

    /// Waits for the timer to fire (or, with `rearm`, to be cancelled by a clock change, and
    /// then re-arms the cancel-on-set timer).
    pub(super) async fn wait(fd: &AsyncFd<Timer>, rearm: bool) -> std::io::Result<()> {
        // Bounded: each round either returns or clears a spurious readiness and waits again.
        loop {
            let mut guard = fd.readable().await?;
            match nix::unistd::read(&fd.get_ref().0, &mut [0u8; 8]) {
                // Cancelled by a clock set or a resume; or (in a century) expired.
                Err(Errno::ECANCELED) | Ok(_) => {
                    if rearm {
                        arm(&fd.get_ref().0)?;
                    }
                    return Ok(());
                }
                Err(Errno::EAGAIN | Errno::EINTR) => guard.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_sign() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mono = Duration::from_secs(45);
        assert_eq!(drift(mono, t0, t0 + Duration::from_secs(45)), 0.0);
        assert_eq!(drift(mono, t0, t0 + Duration::from_secs(7245)), 7200.0);
        assert_eq!(drift(mono, t0, t0 - Duration::from_secs(15)), -60.0);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_timerfd_signal_arms() {
        let c = ClockChange::new();
        assert!(
            c.fd.is_some(),
            "a timerfd with TFD_TIMER_CANCEL_ON_SET could not be armed"
        );
    }
}
