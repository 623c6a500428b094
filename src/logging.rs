//! The daemon's logs: tracing to daily-rotated files with a bounded number kept, written by
//! background threads so logging never blocks a request.
//!
//! Two streams: the operational log (`logs/elhaz.YYYY-MM-DD.log`) and the audit trail
//! (`logs/audit.YYYY-MM-DD.log`), which records every credential served — time, session,
//! peer uid/pid and executable — from events on the `elhaz::audit` target. Nothing secret is
//! ever logged: secret types redact themselves, and events carry names, never values.
//!
//! The operational filter comes from `ELHAZ_LOG` (tracing's env-filter syntax), default
//! `info`; the audit stream is always on.

use std::path::{Path, PathBuf};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{Targets, filter_fn};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::error::Error;

/// Operational log file name prefix.
pub const LOG_PREFIX: &str = "elhaz";
/// Audit log file name prefix.
pub const AUDIT_PREFIX: &str = "audit";
/// Log file name suffix.
pub const LOG_SUFFIX: &str = "log";
/// The tracing target of audit events.
pub const AUDIT_TARGET: &str = "elhaz::audit";

/// Keeps the log writers alive; flushes on drop.
#[derive(Debug)]
pub struct Guards {
    _main: WorkerGuard,
    audit: AuditFlusher,
}

impl Drop for Guards {
    fn drop(&mut self) {
        self.audit.stop();
    }
}

/// Audit lines wait in memory and are written by a background thread once a second, or
/// sooner when [`AUDIT_FLUSH_BYTES`] accumulate — one append per batch instead of a thread
/// wake-up and a write per credential served (that cost a third of the daemon's throughput).
/// A crash loses at most the last second of the trail; a normal stop flushes everything.
const AUDIT_FLUSH_BYTES: usize = 64 * 1024;

#[derive(Clone)]
struct AuditBuffer {
    buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    flusher: std::sync::Arc<std::sync::OnceLock<std::thread::Thread>>,
}

impl std::io::Write for AuditBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let len = {
            let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
            buf.extend_from_slice(bytes);
            buf.len()
        };
        if len >= AUDIT_FLUSH_BYTES
            && let Some(t) = self.flusher.get()
        {
            t.unpark();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for AuditBuffer {
    type Writer = AuditBuffer;
    fn make_writer(&'a self) -> AuditBuffer {
        self.clone()
    }
}

#[derive(Debug)]
struct AuditFlusher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AuditFlusher {
    fn start(
        buffer: &AuditBuffer,
        mut out: tracing_appender::rolling::RollingFileAppender,
    ) -> AuditFlusher {
        use std::io::Write;
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (buf, stopping) = (buffer.buf.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("elhaz-audit".into())
            .spawn(move || {
                loop {
                    std::thread::park_timeout(std::time::Duration::from_secs(1));
                    let batch = std::mem::take(&mut *buf.lock().unwrap_or_else(|p| p.into_inner()));
                    if !batch.is_empty() {
                        let _ = out.write_all(&batch);
                        let _ = out.flush();
                    }
                    if stopping.load(Ordering::Acquire) {
                        return;
                    }
                }
            })
            .ok();
        if let Some(t) = &thread {
            let _ = buffer.flusher.set(t.thread().clone());
        }
        AuditFlusher { stop, thread }
    }

    fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
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

/// Installs the daemon's subscriber. Keep the guards alive until exit.
pub fn init_daemon(log_dir: &Path, keep: usize, also_stderr: bool) -> Result<Guards, Error> {
    // The appender opens its files by name: no symlinked `logs/`, no planted link inside it.
    crate::fsafe::check_log_dir(log_dir)?;
    crate::paths::create_dir_mode(log_dir, 0o700)?;
    // The default queue preallocates 128,000 lines (megabytes of idle RSS); a daemon that
    // logs a few lines a minute needs far less, and a burst beyond it is dropped, not blocked on.
    let (main, main_guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(1024)
        .finish(appender(log_dir, LOG_PREFIX, keep)?);
    let audit = AuditBuffer {
        buf: Default::default(),
        flusher: Default::default(),
    };
    let flusher = AuditFlusher::start(&audit, appender(log_dir, AUDIT_PREFIX, keep)?);
    let filter = EnvFilter::try_from_env("ELHAZ_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let not_audit = filter_fn(|m| m.target() != AUDIT_TARGET);
    let main_layer = tracing_subscriber::fmt::layer()
        .with_writer(main)
        .with_ansi(false)
        .with_target(true)
        .with_filter(filter)
        .with_filter(not_audit.clone());
    let audit_layer = tracing_subscriber::fmt::layer()
        .with_writer(audit)
        .with_ansi(false)
        .with_target(false)
        .with_filter(Targets::new().with_target(AUDIT_TARGET, tracing::Level::INFO));
    let stderr_layer = also_stderr.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_filter(
                EnvFilter::try_from_env("ELHAZ_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
            )
            .with_filter(not_audit)
    });
    // A second init (the in-process broker inside a test) is harmless; ignore it.
    let _ = tracing_subscriber::registry()
        .with(main_layer)
        .with(audit_layer)
        .with(stderr_layer)
        .try_init();
    Ok(Guards {
        _main: main_guard,
        audit: flusher,
    })
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
