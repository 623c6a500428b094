//! The daemon's logs: tracing to daily-rotated files with a bounded number kept, and the
//! audit trail, written synchronously so that a credential is never served without its line.
//!
//! Two streams: the operational log (`logs/elhaz.YYYY-MM-DD.log`, written by a background
//! thread so logging never blocks a request) and the audit trail (`logs/audit.YYYY-MM-DD.log`),
//! which records every credential served — time, session, peer uid/pid and executable. Nothing
//! secret is ever logged: secret types redact themselves, and events carry names, never values.
//!
//! The operational filter comes from `ELHAZ_LOG` (tracing's env-filter syntax), default
//! `info`; the audit stream is always on.
//!
//! **Under attack.** A hostile peer must not be able to fill the disk through us:
//! - callers validate before they log (a 65 KB session name is logged as its length);
//! - denials (refused peers, sessions, oversized frames) go through [`denial`]: at most
//!   [`DENIAL_BURST`] lines per [`DENIAL_INTERVAL`], then one summary line with the count of
//!   those not logged, written with the next denial after the interval (or at shutdown);
//! - each stream is capped per UTC day (`log_max_mib_per_day`, default 100 MiB): beyond it
//!   operational lines are dropped and counted (one notice when the cap is hit, one line with
//!   the count when the day turns). The cap counts bytes written by this daemon run.
//!
//! **The audit trail fails closed.** [`audit`] writes the line with one `write(2)` before the
//! credential is sent; when that fails (a full disk, the daily cap, an I/O error) the request
//! is refused with [`Error::Audit`] — unless `audit_fail_open = true`, in which case the
//! credential is served and the failure logged. (A write cut short by a full disk can leave a
//! torn last line; its credential is refused.) The line reaches the kernel before the reply
//! (no fsync: a power cut may lose the last lines; a daemon crash cannot). There is no audit
//! thread and no timer, so an idle daemon never wakes for its audit trail; a write per
//! credential costs a few microseconds (`scripts/bench` measures throughput with it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, RollingFileAppender, Rotation};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::error::Error;

/// Operational log file name prefix.
pub const LOG_PREFIX: &str = "elhaz";
/// Audit log file name prefix.
pub const AUDIT_PREFIX: &str = "audit";
/// Log file name suffix.
pub const LOG_SUFFIX: &str = "log";
/// Denial lines logged per [`DENIAL_INTERVAL`] before they are only counted.
pub const DENIAL_BURST: u32 = 20;
/// The denial logging interval.
pub const DENIAL_INTERVAL: Duration = Duration::from_secs(10);

/// Keeps the log writer alive; flushes on drop.
#[derive(Debug)]
pub struct Guards {
    _main: WorkerGuard,
}

impl Drop for Guards {
    fn drop(&mut self) {
        flush_denials();
    }
}

fn utc_day(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

/// A writer with a daily byte cap. Each `write` call is one line (tracing's formatter and
/// [`audit`] write a whole line at once).
#[derive(Debug)]
struct Capped<W> {
    inner: W,
    cap: u64,
    /// Over the cap: fail the write (the audit trail) instead of dropping the line.
    strict: bool,
    day: u64,
    written: u64,
    dropped_lines: u64,
    dropped_bytes: u64,
}

impl<W: Write> Capped<W> {
    fn new(inner: W, cap: u64, strict: bool) -> Capped<W> {
        Capped {
            inner,
            cap,
            strict,
            day: utc_day(SystemTime::now()),
            written: 0,
            dropped_lines: 0,
            dropped_bytes: 0,
        }
    }

    fn note(&mut self, text: &str) {
        let line = format!(
            "{}  WARN elhaz::logging: {text}\n",
            humantime::format_rfc3339_seconds(SystemTime::now())
        );
        // Two notices a day at most; they are not counted against the cap.
        let _ = self.inner.write_all(line.as_bytes());
    }

    fn write_line(&mut self, buf: &[u8], now: SystemTime) -> std::io::Result<usize> {
        let day = utc_day(now);
        if day != self.day {
            let (lines, bytes) = (self.dropped_lines, self.dropped_bytes);
            self.day = day;
            self.written = 0;
            self.dropped_lines = 0;
            self.dropped_bytes = 0;
            if lines > 0 {
                self.note(&format!(
                    "{lines} log lines ({bytes} bytes) were dropped yesterday: daily log cap \
                     (log_max_mib_per_day) reached"
                ));
            }
        }
        if self.written.saturating_add(buf.len() as u64) > self.cap {
            if self.strict {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!(
                        "the daily audit log cap of {} MiB (log_max_mib_per_day) is reached",
                        self.cap / (1024 * 1024)
                    ),
                ));
            }
            if self.dropped_lines == 0 {
                self.note("daily log cap (log_max_mib_per_day) reached: dropping log lines until 00:00 UTC");
            }
            self.dropped_lines += 1;
            self.dropped_bytes += buf.len() as u64;
            return Ok(buf.len());
        }
        self.inner.write_all(buf)?;
        self.written += buf.len() as u64;
        Ok(buf.len())
    }
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_line(buf, SystemTime::now())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The audit trail: one synchronous append per credential served.
#[derive(Debug)]
struct Audit {
    out: Mutex<Capped<RollingFileAppender>>,
    dir: PathBuf,
    fail_open: bool,
}

static AUDIT: OnceLock<Audit> = OnceLock::new();

/// One audit record: a credential served to a peer.
#[derive(Debug)]
pub struct AuditRecord<'a> {
    /// The session.
    pub session: &'a str,
    /// The peer's uid.
    pub peer_uid: u32,
    /// The peer's pid (-1: unknown).
    pub peer_pid: i32,
    /// The peer's executable name.
    pub peer_exe: &'a str,
    /// The hash prefix of the delegate token the request was admitted by.
    pub token: Option<&'a str>,
    /// The credential's expiration.
    pub expiration: &'a str,
}

/// Appends an audit line (before the credential is sent). `Err` means the credential must not
/// be served. In a process where [`init_daemon`] did not run (an in-process test broker),
/// there is no audit trail and this is a no-op.
pub fn audit(rec: &AuditRecord<'_>) -> Result<(), Error> {
    let Some(a) = AUDIT.get() else {
        return Ok(());
    };
    // `Debug` quoting keeps one record on one line whatever the executable is called.
    let line = format!(
        "{}  INFO credentials served session={} peer_uid={} peer_pid={} peer_exe={:?}{} \
         expiration={}\n",
        humantime::format_rfc3339_micros(SystemTime::now()),
        rec.session,
        rec.peer_uid,
        rec.peer_pid,
        rec.peer_exe,
        rec.token.map(|t| format!(" token={t}")).unwrap_or_default(),
        rec.expiration
    );
    let written = {
        let mut out = a.out.lock().unwrap_or_else(|p| p.into_inner());
        out.write_line(line.as_bytes(), SystemTime::now())
    };
    match written {
        Ok(_) => Ok(()),
        Err(e) if a.fail_open => {
            denial(|| {
                tracing::error!(
                    error = %e,
                    session = rec.session,
                    "cannot write the audit trail; serving anyway (audit_fail_open = true)"
                );
            });
            Ok(())
        }
        Err(source) => {
            denial(|| {
                tracing::error!(error = %source, session = rec.session, "cannot write the audit trail; credential refused");
            });
            Err(Error::Audit {
                dir: a.dir.clone(),
                source,
            })
        }
    }
}

/// Rate limiter for denial lines: a burst per interval, then counting.
#[derive(Debug)]
struct Throttle {
    window: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl Throttle {
    /// Whether a denial at `now` may be logged, and how many went unlogged before it.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.window {
            Some(start) if now.saturating_duration_since(start) < DENIAL_INTERVAL => {
                if self.logged < DENIAL_BURST {
                    self.logged += 1;
                    Some(0)
                } else {
                    self.suppressed += 1;
                    None
                }
            }
            _ => {
                self.window = Some(now);
                self.logged = 1;
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

static DENIALS: Mutex<Throttle> = Mutex::new(Throttle {
    window: None,
    logged: 0,
    suppressed: 0,
});

/// Logs a denial through `log`, rate-limited: [`DENIAL_BURST`] per [`DENIAL_INTERVAL`], the
/// rest counted and summarised in one line.
pub fn denial(log: impl FnOnce()) {
    let verdict = DENIALS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .allow(Instant::now());
    match verdict {
        None => {}
        Some(0) => log(),
        Some(n) => {
            tracing::warn!(
                suppressed = n,
                "{n} more denials were not logged in the last interval (rate limit)"
            );
            log();
        }
    }
}

/// Writes the summary of denials not yet logged (at shutdown).
pub fn flush_denials() {
    let n = std::mem::take(&mut DENIALS.lock().unwrap_or_else(|p| p.into_inner()).suppressed);
    if n > 0 {
        tracing::warn!(
            suppressed = n,
            "{n} more denials were not logged (rate limit)"
        );
    }
}

/// A loggable stand-in for an untrusted name: the name when it is a valid session name,
/// otherwise its length only.
pub fn name_for_log(name: &str) -> std::borrow::Cow<'_, str> {
    if crate::config::validate_name(name).is_ok() {
        std::borrow::Cow::Borrowed(name)
    } else {
        std::borrow::Cow::Owned(format!("<invalid name, {} bytes>", name.len()))
    }
}

fn appender(
    log_dir: &Path,
    prefix: &str,
    keep: usize,
) -> Result<tracing_appender::rolling::RollingFileAppender, Error> {
    Builder::new()
        .rotation(Rotation::DAILY)
        .filename_prefix(prefix)
        .filename_suffix(LOG_SUFFIX)
        .max_log_files(keep)
        .build(log_dir)
        .map_err(|e| {
            Error::io(
                format!("cannot open logs in {}", log_dir.display()),
                std::io::Error::other(e),
            )
        })
}

/// Log settings of [`init_daemon`].
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// Daily log files kept per stream.
    pub keep: usize,
    /// Bytes per UTC day per stream.
    pub max_bytes_per_day: u64,
    /// Serve credentials when the audit line cannot be written.
    pub audit_fail_open: bool,
    /// Also log to stderr (a foreground daemon).
    pub also_stderr: bool,
}

/// Installs the daemon's subscriber and audit trail. Keep the guards alive until exit.
pub fn init_daemon(log_dir: &Path, opts: LogOptions) -> Result<Guards, Error> {
    // The appender opens its files by name: no symlinked `logs/`, no planted link inside it.
    crate::fsafe::check_log_dir(log_dir)?;
    crate::fsafe::create_dir_mode(log_dir, 0o700)?;
    // The default queue preallocates 128,000 lines (megabytes of idle RSS); a daemon that
    // logs a few lines a minute needs far less, and a burst beyond it is dropped, not blocked on.
    let (main, main_guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(1024)
        .finish(Capped::new(
            appender(log_dir, LOG_PREFIX, opts.keep)?,
            opts.max_bytes_per_day,
            false,
        ));
    let audit = Audit {
        out: Mutex::new(Capped::new(
            appender(log_dir, AUDIT_PREFIX, opts.keep)?,
            opts.max_bytes_per_day,
            true,
        )),
        dir: log_dir.to_path_buf(),
        fail_open: opts.audit_fail_open,
    };
    // A second init (the in-process broker inside a test) keeps the first trail.
    let _ = AUDIT.set(audit);
    let filter = EnvFilter::try_from_env("ELHAZ_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let main_layer = tracing_subscriber::fmt::layer()
        .with_writer(main)
        .with_ansi(false)
        .with_target(true)
        .with_filter(filter);
    let stderr_layer = opts.also_stderr.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_filter(
                EnvFilter::try_from_env("ELHAZ_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
            )
    });
    // A second init (the in-process broker inside a test) is harmless; ignore it.
    let _ = tracing_subscriber::registry()
        .with(main_layer)
        .with(stderr_layer)
        .try_init();
    Ok(Guards { _main: main_guard })
}

/// Log files with `prefix` in `log_dir`, oldest first (names sort by date).
pub fn files_with_prefix(log_dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(log_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{prefix}.")) && n.ends_with(LOG_SUFFIX))
        })
        .collect();
    files.sort();
    files
}

/// Operational log files, oldest first.
pub fn log_files(log_dir: &Path) -> Vec<PathBuf> {
    files_with_prefix(log_dir, LOG_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_writer_drops_and_counts_then_resets_daily() {
        let day0 = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 20_000);
        let mut c = Capped::new(Vec::new(), 100, false);
        c.day = utc_day(day0);
        for _ in 0..50 {
            assert_eq!(c.write_line(&[b'x'; 10], day0).unwrap(), 10);
        }
        let text = String::from_utf8_lossy(&c.inner).into_owned();
        assert!(text.contains("daily log cap"), "{text}");
        assert_eq!(text.matches("xxxxxxxxxx").count(), 10, "{text}");
        assert_eq!(c.dropped_lines, 40);
        // The next day: the count is reported and lines are written again.
        let day1 = day0 + Duration::from_secs(86_400);
        c.write_line(b"next\n", day1).unwrap();
        let text = String::from_utf8_lossy(&c.inner).into_owned();
        assert!(
            text.contains("40 log lines (400 bytes) were dropped"),
            "{text}"
        );
        assert!(text.ends_with("next\n"), "{text}");
    }

    #[test]
    fn strict_capped_writer_fails_instead_of_dropping() {
        let mut c = Capped::new(Vec::new(), 15, true);
        let now = SystemTime::now();
        c.write_line(b"0123456789", now).unwrap();
        let e = c.write_line(b"0123456789", now).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
        assert!(e.to_string().contains("log_max_mib_per_day"));
    }

    #[test]
    fn denial_throttle_logs_a_burst_then_counts() {
        let mut t = Throttle {
            window: None,
            logged: 0,
            suppressed: 0,
        };
        let t0 = Instant::now();
        let allowed = (0..1000).filter(|_| t.allow(t0).is_some()).count();
        assert_eq!(allowed, DENIAL_BURST as usize);
        assert_eq!(
            t.allow(t0 + DENIAL_INTERVAL),
            Some(1000 - u64::from(DENIAL_BURST))
        );
        assert_eq!(t.allow(t0 + DENIAL_INTERVAL), Some(0));
    }

    #[test]
    fn invalid_names_are_logged_by_length() {
        assert_eq!(name_for_log("dev"), "dev");
        let long = "a".repeat(65_000);
        assert_eq!(name_for_log(&long), "<invalid name, 65000 bytes>");
    }
}
