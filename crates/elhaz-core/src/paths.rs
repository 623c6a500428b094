//! Every filesystem location elhaz uses, resolved in one place.
//!
//! Two layouts exist. The default follows the platform (via the `directories` crate): session
//! configs and `elhaz.toml` in the config dir, logs in the state dir, and the socket, lock and
//! pid file in the runtime dir (`$XDG_RUNTIME_DIR/elhaz` on Linux). When the runtime dir is not
//! available we fall back to `<state dir>/run`, created 0700 by whoever needs it first.
//!
//! `ELHAZ_HOME=DIR` puts everything under one directory instead, which is what tests and
//! side-by-side installs use: `DIR/configs/`, `DIR/elhaz.toml`, `DIR/run/`, `DIR/logs/`.
//! `ELHAZ_SOCKET=PATH` overrides only the socket path (the lock and pid file stay in the run dir,
//! so single-instance still holds per run dir).
//!
//! Nothing here creates anything: creation, with its modes, and the ssh-style ownership checks
//! live in [`crate::fsafe`], which builds on this module (never the other way round).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Error;

/// The shared daemon's default socket (`[shared] socket` overrides it).
pub const DEFAULT_SHARED_SOCKET: &str = "/run/elhaz/elhaz.sock";

/// Environment variable that relocates every path under one directory.
pub const ENV_HOME: &str = "ELHAZ_HOME";
/// Environment variable that overrides the socket path only.
pub const ENV_SOCKET: &str = "ELHAZ_SOCKET";
/// Environment variable that overrides where a shared daemon's socket is looked for.
pub const ENV_SHARED_SOCKET: &str = "ELHAZ_SHARED_SOCKET";

/// The resolved set of paths.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Paths {
    /// Directory holding one `NAME.toml` per session config.
    pub configs_dir: PathBuf,
    /// Global settings file (`elhaz.toml`).
    pub settings_file: PathBuf,
    /// Directory for the socket, lock and pid file (0700).
    pub run_dir: PathBuf,
    /// The daemon's unix socket.
    pub socket: PathBuf,
    /// `flock`ed while a daemon owns `run_dir`.
    pub lock_file: PathBuf,
    /// The running daemon's pid, written once it holds the lock.
    pub pid_file: PathBuf,
    /// Directory of the daemon's rotated log files.
    pub log_dir: PathBuf,
    /// Names of the sessions cached at the last shutdown, re-warmed at the next start.
    pub warm_file: PathBuf,
    /// Names (never secrets) of keyring entries created by `elhaz keyring set`; some stores
    /// cannot be searched.
    pub keyring_index: PathBuf,
    /// Where a shared daemon listens (`ELHAZ_SHARED_SOCKET`, default `/run/elhaz/elhaz.sock`);
    /// the CLI uses it when no personal daemon runs, `ELHAZ_SOCKET` is unset and `[client]
    /// shared` / `ELHAZ_SHARED` names the user it runs as (or it runs as us).
    pub shared_socket: PathBuf,
    /// Whether `ELHAZ_SOCKET` chose the socket explicitly (then nothing is discovered).
    #[serde(skip)]
    pub socket_explicit: bool,
}

impl Paths {
    /// Resolves paths from the process environment.
    pub fn from_env() -> Result<Paths, Error> {
        Self::resolve(
            std::env::var_os(ENV_HOME),
            std::env::var_os(ENV_SOCKET),
            std::env::var_os("XDG_RUNTIME_DIR"),
        )
    }

    /// Resolves paths from explicit values (used by [`Paths::from_env`] and tests).
    pub fn resolve(
        home: Option<OsString>,
        socket: Option<OsString>,
        xdg_runtime: Option<OsString>,
    ) -> Result<Paths, Error> {
        let nonempty = |v: Option<OsString>| v.filter(|s| !s.is_empty()).map(PathBuf::from);
        let mut paths = match nonempty(home) {
            Some(home) => {
                let home = absolute(&home)?;
                Paths::under(&home)
            }
            None => Paths::platform(nonempty(xdg_runtime))?,
        };
        if let Some(socket) = nonempty(socket) {
            paths.socket = absolute(&socket)?;
            paths.socket_explicit = true;
        }
        if let Some(shared) = nonempty(std::env::var_os(ENV_SHARED_SOCKET)) {
            paths.shared_socket = absolute(&shared)?;
        }
        Ok(paths)
    }

    /// The `ELHAZ_HOME` layout rooted at `home`.
    pub fn under(home: &Path) -> Paths {
        let run_dir = home.join("run");
        Paths {
            configs_dir: home.join("configs"),
            settings_file: home.join("elhaz.toml"),
            socket: run_dir.join("elhaz.sock"),
            lock_file: run_dir.join("elhaz.lock"),
            pid_file: run_dir.join("elhaz.pid"),
            warm_file: home.join("logs").join("warm-sessions"),
            keyring_index: home.join("keyring-entries"),
            shared_socket: PathBuf::from(DEFAULT_SHARED_SOCKET),
            socket_explicit: false,
            log_dir: home.join("logs"),
            run_dir,
        }
    }

    fn platform(xdg_runtime: Option<PathBuf>) -> Result<Paths, Error> {
        let dirs = directories::ProjectDirs::from("", "", "elhaz").ok_or(Error::NoHome)?;
        let config = dirs.config_dir().to_path_buf();
        let state = dirs
            .state_dir()
            .unwrap_or_else(|| dirs.data_local_dir())
            .to_path_buf();
        // `runtime_dir()` reads XDG_RUNTIME_DIR on Linux; we take the value explicitly so that
        // resolution is a pure function of its inputs.
        let run_dir = match xdg_runtime {
            Some(rt) if rt.is_absolute() => rt.join("elhaz"),
            _ => state.join("run"),
        };
        Ok(Paths {
            configs_dir: config.join("configs"),
            settings_file: config.join("elhaz.toml"),
            socket: run_dir.join("elhaz.sock"),
            lock_file: run_dir.join("elhaz.lock"),
            pid_file: run_dir.join("elhaz.pid"),
            warm_file: state.join("warm-sessions"),
            keyring_index: config.join("keyring-entries"),
            shared_socket: PathBuf::from(DEFAULT_SHARED_SOCKET),
            socket_explicit: false,
            log_dir: state.join("logs"),
            run_dir,
        })
    }

    /// Path of one session config file.
    pub fn config_file(&self, name: &str) -> PathBuf {
        self.configs_dir.join(format!("{name}.toml"))
    }
}

fn absolute(p: &Path) -> Result<PathBuf, Error> {
    std::path::absolute(p).map_err(|source| Error::Io {
        context: format!("cannot resolve path {}", p.display()),
        source,
    })
}

/// Whether some daemon holds the lock of `paths.run_dir` right now.
pub fn lock_is_held(paths: &Paths) -> bool {
    let Ok(file) = std::fs::File::open(&paths.lock_file) else {
        return false;
    };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// The pid recorded in the pid file.
pub fn read_pid(paths: &Paths) -> Option<u32> {
    std::fs::read_to_string(&paths.pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_layout() {
        let p = Paths::resolve(Some("/h".into()), None, Some("/run/user/1".into())).unwrap();
        assert_eq!(p.configs_dir, PathBuf::from("/h/configs"));
        assert_eq!(p.settings_file, PathBuf::from("/h/elhaz.toml"));
        assert_eq!(p.socket, PathBuf::from("/h/run/elhaz.sock"));
        assert_eq!(p.lock_file, PathBuf::from("/h/run/elhaz.lock"));
        assert_eq!(p.log_dir, PathBuf::from("/h/logs"));
        assert_eq!(p.config_file("dev"), PathBuf::from("/h/configs/dev.toml"));
    }

    #[test]
    fn socket_override_only_moves_socket() {
        let p = Paths::resolve(Some("/h".into()), Some("/tmp/s.sock".into()), None).unwrap();
        assert_eq!(p.socket, PathBuf::from("/tmp/s.sock"));
        assert_eq!(p.lock_file, PathBuf::from("/h/run/elhaz.lock"));
    }

    #[test]
    fn platform_layout_uses_runtime_dir_or_falls_back() {
        let p = Paths::resolve(None, None, Some("/run/user/1000".into())).unwrap();
        assert_eq!(p.socket, PathBuf::from("/run/user/1000/elhaz/elhaz.sock"));
        let q = Paths::resolve(None, None, None).unwrap();
        assert!(q.run_dir.ends_with("run"), "{:?}", q.run_dir);
        assert!(q.run_dir.starts_with(q.log_dir.parent().unwrap()));
    }
}
