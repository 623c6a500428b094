//! The daemon's log: tracing to daily-rotated files (`logs/elhaz.YYYY-MM-DD.log`) with a
//! bounded number kept, written by a background thread so logging never blocks a request.
//! Credential-serving events go to the `elhaz::audit` target. Nothing secret is ever logged:
//! secret types redact themselves in `Debug`/`Display`.
//!
//! The filter comes from `ELHAZ_LOG` (tracing's env-filter syntax), default `info`.

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::error::Error;

/// Log file name prefix.
pub const LOG_PREFIX: &str = "elhaz";
/// Log file name suffix.
pub const LOG_SUFFIX: &str = "log";

/// Installs the daemon's subscriber. Keep the guard alive until exit (it flushes on drop).
pub fn init_daemon(log_dir: &Path, keep: usize, also_stderr: bool) -> Result<WorkerGuard, Error> {
    crate::paths::create_dir_mode(log_dir, 0o700)?;
    let appender = Builder::new()
        .rotation(Rotation::DAILY)
        .filename_prefix(LOG_PREFIX)
        .filename_suffix(LOG_SUFFIX)
        .max_log_files(keep)
        .build(log_dir)
        .map_err(|e| {
            Error::io(
                format!("cannot open logs in {}", log_dir.display()),
                std::io::Error::other(e),
            )
        })?;
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let filter = EnvFilter::try_from_env("ELHAZ_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let file_layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false)
        .with_target(true);
    let stderr_layer = also_stderr.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
    });
    // A second init (in-process mode inside tests) is harmless; ignore it.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(file_layer)
        .with(stderr_layer)
        .try_init();
    Ok(guard)
}

/// Log files in `log_dir`, oldest first (names sort by date).
pub fn log_files(log_dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(log_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(LOG_PREFIX) && n.ends_with(LOG_SUFFIX))
        })
        .collect();
    files.sort();
    files
}
