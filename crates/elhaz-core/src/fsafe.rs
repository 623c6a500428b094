//! Filesystem safety: every file and directory elhaz trusts, checked the way ssh checks
//! `~/.ssh`, and the private-file helpers that create them.
//!
//! # The rule
//!
//! A directory elhaz reads from or writes to (`ELHAZ_HOME`, `configs/`, `logs/`, `run/`, the
//! socket's directory) and each of its parents up to `$HOME` (inclusive) or `/` must be owned
//! by the effective user or by root, and must not be writable by group or others. The one
//! exception is a root-owned *sticky* parent such as `/tmp`: others may create entries in it
//! but cannot rename or remove ours. Every config file must be a regular file owned by the user
//! (or root) and not group/other writable. Anything else is refused with an
//! [`Error::UnsafePath`] naming the path and the command that fixes it (`chmod go-w PATH`).
//!
//! Why the whole chain: whoever can write to any directory on the way can rename a directory
//! below it and put her own in its place — her `configs/` with an `[mfa] command` that then
//! runs as you, or a `logs/` whose files are symlinks to your `~/.bashrc`. Checking only the
//! leaf (as `run/` was before) is not enough.
//!
//! # Symlinks
//!
//! A symlink on the way is allowed if the directory holding it passes (nobody else can replace
//! it) and its target's own chain passes too: the check walks the path as written (`lstat`
//! per component) and, when a component was a symlink, the canonical path as well. Files whose
//! symlink would be an attack are opened with `O_NOFOLLOW` (configs, the lock, `open_private`)
//! or replaced by `rename` (atomic writes, which replace a symlink rather than follow it).
//! `logs/` and `run/` must be real directories, and no log file may be a symlink: the log
//! appender opens its files by name, so [`check_log_dir`] refuses a planted link before it does.
//!
//! # Trade-offs
//!
//! The check is by path, then the open is by path. That is sound because of the rule itself:
//! once every directory on the way is ours or root's and not writable by others, nobody else
//! can swap a component between the two. The checks cost one `lstat` per path component, a
//! handful of syscalls per config read — nothing on the `credential-process NAME` hot path,
//! which reads no file at all.
//!
//! A root-owned directory writable by group (say `/srv` with mode 0775, group `staff`) is
//! refused even though root owns it: the group's members could rename what is in it. ssh makes
//! the same call.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// Largest config or settings file we read.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// The uid whose files we trust besides root's.
fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// `$HOME`, where the walk up a path stops (ssh stops there too): directories above it belong
/// to the system and are outside what a user can fix.
fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute() && h != Path::new("/"))
}

fn unsafe_path(path: &Path, problem: String, fix: String) -> Error {
    Error::UnsafePath {
        path: path.to_path_buf(),
        problem,
        fix,
    }
}

/// The per-entry rule. `parent` allows the root-owned sticky exception.
fn check_entry(path: &Path, meta: &std::fs::Metadata, parent: bool) -> Result<(), Error> {
    let me = me();
    let owner = meta.uid();
    if owner != me && owner != 0 {
        return Err(unsafe_path(
            path,
            format!("it is owned by uid {owner}, not by you (uid {me}) or root"),
            format!(
                "if it is yours, run `chown {me} {}`; otherwise move it away — someone else \
                 may have put it there",
                path.display()
            ),
        ));
    }
    let mode = meta.mode();
    if mode & 0o022 != 0 {
        let sticky_root_dir = parent && owner == 0 && meta.is_dir() && mode & 0o1000 != 0;
        if !sticky_root_dir {
            return Err(unsafe_path(
                path,
                format!(
                    "it is writable by group or others (mode {:04o})",
                    mode & 0o7777
                ),
                format!("run `chmod go-w {}`", path.display()),
            ));
        }
    }
    Ok(())
}

/// Walks `path` and its parents (as written, without following symlinks) up to `$HOME` or
/// `/`, outermost first — so the error names the directory whose fix matters most (a loose
/// `ELHAZ_HOME` before the `configs/` someone swapped into it). Missing components are skipped
/// (they are created later, with our modes). Returns whether a symlink was seen.
fn check_chain_lexical(path: &Path, home: Option<&Path>) -> Result<bool, Error> {
    let mut chain = Vec::new();
    for p in path.ancestors() {
        if p.as_os_str().is_empty() {
            break;
        }
        chain.push(p);
        if home == Some(p) {
            break;
        }
    }
    let mut saw_link = false;
    for (i, p) in chain.iter().enumerate().rev() {
        match std::fs::symlink_metadata(p) {
            Ok(meta) if meta.file_type().is_symlink() => saw_link = true,
            Ok(meta) => check_entry(p, &meta, i > 0)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("cannot inspect {}", p.display()), e)),
        }
    }
    Ok(saw_link)
}

/// Checks directory `dir` and every parent up to `$HOME` or `/` (see the module docs).
/// A missing `dir` is fine as long as what exists above it passes.
pub fn check_dir_chain(dir: &Path) -> Result<(), Error> {
    let dir = std::path::absolute(dir)
        .map_err(|e| Error::io(format!("cannot resolve {}", dir.display()), e))?;
    let home = home_dir();
    if !check_chain_lexical(&dir, home.as_deref())? {
        return Ok(());
    }
    // A symlink on the way: its target's chain must pass too. Canonicalize the deepest part
    // that exists.
    let mut existing = dir.as_path();
    let canonical = loop {
        match std::fs::canonicalize(existing) {
            Ok(c) => break c,
            Err(_) => match existing.parent() {
                Some(p) => existing = p,
                None => return Ok(()),
            },
        }
    };
    let home = home.and_then(|h| std::fs::canonicalize(h).ok());
    check_chain_lexical(&canonical, home.as_deref()).map(|_| ())
}

/// Checks every directory of `paths` elhaz reads from or writes to: the config dir, the
/// settings file's dir, `run/`, `logs/`, the socket's dir (and so their parents).
pub fn check_paths(paths: &crate::paths::Paths) -> Result<(), Error> {
    let dirs = [
        Some(paths.configs_dir.as_path()),
        paths.settings_file.parent(),
        Some(paths.run_dir.as_path()),
        Some(paths.log_dir.as_path()),
        paths.socket.parent(),
    ];
    for d in dirs.into_iter().flatten() {
        check_dir_chain(d)?;
    }
    Ok(())
}

/// `logs/` must be a real directory (not a symlink) whose chain passes, and none of its
/// entries may be a symlink: the appender opens log files by name, following links.
pub fn check_log_dir(log_dir: &Path) -> Result<(), Error> {
    if std::fs::symlink_metadata(log_dir).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(unsafe_path(
            log_dir,
            "it is a symbolic link; elhaz writes its logs only into a real directory".into(),
            format!(
                "remove the link (`rm {}`) and let elhaz create the directory",
                log_dir.display()
            ),
        ));
    }
    check_dir_chain(log_dir)?;
    let Ok(rd) = std::fs::read_dir(log_dir) else {
        return Ok(());
    };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_symlink()) {
            let p = e.path();
            return Err(unsafe_path(
                &p,
                "it is a symbolic link in the log directory; a log write would follow it".into(),
                format!("remove it (`rm {}`)", p.display()),
            ));
        }
    }
    Ok(())
}

/// The per-directory rule, on metadata already taken (e.g. from a descriptor): owned by us or
/// root and not writable by group or others.
pub fn check_dir_meta(dir: &Path, meta: &std::fs::Metadata) -> Result<(), Error> {
    check_entry(dir, meta, false)
}

/// Prefix of the AWS config files `exec --refreshing` writes into `run/`.
pub const GENERATED_AWS_CONFIG_PREFIX: &str = "aws-config-";

/// `run/aws-config-NAME.PID`: the AWS config generated for one `exec --refreshing` by process
/// `pid`. One file per invocation, so that two sessions of the same name never delete each
/// other's file.
pub fn generated_aws_config(run_dir: &Path, name: &str, pid: u32) -> PathBuf {
    run_dir.join(format!("{GENERATED_AWS_CONFIG_PREFIX}{name}.{pid}"))
}

/// Removes generated AWS configs whose `exec --refreshing` process is gone (killed before it
/// could delete its own): run at daemon start-up and before each `exec --refreshing`. A file
/// without a pid suffix (written by an older elhaz) is always stale. Best effort.
pub fn remove_stale_aws_configs(run_dir: &Path) {
    let Ok(rd) = std::fs::read_dir(run_dir) else {
        return;
    };
    for e in rd.flatten() {
        let file_name = e.file_name();
        let Some(rest) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(GENERATED_AWS_CONFIG_PREFIX))
        else {
            continue;
        };
        let pid = rest
            .rsplit_once('.')
            .and_then(|(_, pid)| pid.parse::<i32>().ok())
            .filter(|&p| p > 0);
        let alive = pid.is_some_and(|p| {
            // Signal 0 only checks that the process exists (EPERM: it exists, as another uid).
            !matches!(
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None),
                Err(nix::errno::Errno::ESRCH)
            )
        });
        if !alive {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Creates `dir` (and parents) if missing; a directory we create gets exactly `mode`,
/// whatever the umask. An existing directory is left as it is (the checks above judge it).
pub fn create_dir_mode(dir: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent()
        && !parent.as_os_str().is_empty()
        && !parent.is_dir()
    {
        create_dir_mode(parent, mode)?;
    }
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(source) => {
            return Err(Error::Io {
                context: format!("cannot create directory {}", dir.display()),
                source,
            });
        }
    }
    // The umask may have removed bits from `mode`; set it exactly.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        Error::Io {
            context: format!("cannot set mode of {}", dir.display()),
            source,
        }
    })
}

/// Makes sure `dir` exists, is a real directory owned by us, not accessible to others, and
/// that its parents pass [`check_dir_chain`]. A directory of ours that others may only read or
/// enter is tightened to 0700; one they may write to is refused (they may have planted
/// something in it), as is one owned by another uid (we never change what we do not own).
pub fn ensure_private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = dir.parent() {
        check_dir_chain(parent)?;
    }
    create_dir_mode(dir, 0o700)?;
    let meta = std::fs::symlink_metadata(dir).map_err(|source| Error::Io {
        context: format!("cannot inspect {}", dir.display()),
        source,
    })?;
    if !meta.is_dir() {
        return Err(unsafe_path(
            dir,
            "it is not a directory (a symlink?)".into(),
            format!(
                "remove it (`rm {}`) and let elhaz create the directory",
                dir.display()
            ),
        ));
    }
    let me = me();
    if meta.uid() != me {
        return Err(unsafe_path(
            dir,
            format!("it is owned by uid {}, not by you (uid {me})", meta.uid()),
            "move it away — someone else may have put it there — and let elhaz create it".into(),
        ));
    }
    check_entry(dir, &meta, false)?;
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| Error::Io {
                context: format!("cannot set mode of {}", dir.display()),
                source,
            },
        )?;
    }
    Ok(())
}

/// Opens (creating if needed) a file readable only by us, never through a symlink.
pub fn open_private(path: &Path) -> Result<std::fs::File, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))
}

/// Writes `bytes` to `path` atomically: temp file (0600) in the same directory, fsync, rename
/// over `path`, fsync the directory. On any failure the old file is untouched and the temp file
/// removed. A symlink at `path` is replaced, never followed.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let stem = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", stem.unwrap_or_default()))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io(format!("cannot create a temp file in {}", dir.display()), e))?;
    let ctx = || format!("cannot write {}", path.display());
    tmp.write_all(bytes).map_err(|e| Error::io(ctx(), e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(ctx(), e))?;
    tmp.persist(path).map_err(|e| Error::io(ctx(), e.error))?;
    sync_dir(dir)
}

/// `fsync`s a directory (after a rename or unlink in it).
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("cannot sync {}", dir.display()), e))
}

/// Reads one of elhaz's own config files (`configs/NAME.toml`, `elhaz.toml`): its directory
/// chain must pass [`check_dir_chain`] and the file itself must be a regular file (opened with
/// `O_NOFOLLOW`) owned by us or root and not group/other writable. `Ok(None)` when it does not
/// exist.
pub fn read_config_file(file: &Path) -> Result<Option<String>, Error> {
    if let Some(dir) = file.parent() {
        check_dir_chain(dir)?;
    }
    read_file_checked(file, true)
}

/// Reads a file the user names (`config add --from-file`): no symlinks, regular files only,
/// bounded size, UTF-8 — but no ownership rule, as it is input, not state elhaz trusts later.
pub fn read_input_file(file: &Path) -> Result<Option<String>, Error> {
    read_file_checked(file, false)
}

/// Reads a secret the daemon trusts (the `--token-file`): its directory chain must pass
/// [`check_dir_chain`], and the file must be a regular file (`O_NOFOLLOW`) owned by the
/// effective user — not root, not anyone else — with no group or other permission bits
/// (0600 or 0400). A missing file is an error naming it.
pub fn read_private_file(file: &Path) -> Result<String, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        check_dir_chain(dir)?;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(file)
        .map_err(|e| Error::io(format!("cannot open {}", file.display()), e))?;
    let meta = f
        .metadata()
        .map_err(|e| Error::io(format!("cannot inspect {}", file.display()), e))?;
    if !meta.is_file() {
        return Err(unsafe_path(
            file,
            "it is not a regular file".into(),
            "point the option at a regular file".into(),
        ));
    }
    let me = me();
    if meta.uid() != me {
        return Err(unsafe_path(
            file,
            format!(
                "it is owned by uid {}, not by the daemon user (uid {me})",
                meta.uid()
            ),
            format!("run `chown {me} {}`", file.display()),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(unsafe_path(
            file,
            format!(
                "it is readable or writable by group or others (mode {:04o}; 0600 is required)",
                meta.mode() & 0o7777
            ),
            format!("run `chmod 600 {}`", file.display()),
        ));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(Error::InvalidConfig {
            file: file.to_path_buf(),
            message: format!("is {} bytes; the limit is {MAX_CONFIG_BYTES}", meta.len()),
        });
    }
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("cannot read {}", file.display()), e))?;
    match std::str::from_utf8(&bytes) {
        Ok(s) => Ok(s.to_string()),
        Err(e) => Err(Error::InvalidConfig {
            file: file.to_path_buf(),
            message: format!("is not valid UTF-8 (at byte {})", e.valid_up_to()),
        }),
    }
}

fn read_file_checked(file: &Path, owned: bool) -> Result<Option<String>, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(file);
    let f = match f {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(Error::InvalidConfig {
                file: file.to_path_buf(),
                message: "is a symbolic link; elhaz only reads regular files it owns".into(),
            });
        }
        Err(e) => return Err(Error::io(format!("cannot open {}", file.display()), e)),
    };
    let meta = f
        .metadata()
        .map_err(|e| Error::io(format!("cannot inspect {}", file.display()), e))?;
    if !meta.is_file() {
        return Err(Error::InvalidConfig {
            file: file.to_path_buf(),
            message: "is not a regular file".into(),
        });
    }
    if owned {
        // Checked on the descriptor we read from, so it is the file we read.
        check_entry(file, &meta, false)?;
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(Error::InvalidConfig {
            file: file.to_path_buf(),
            message: format!(
                "is {} bytes; config files are limited to {MAX_CONFIG_BYTES}",
                meta.len()
            ),
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("cannot read {}", file.display()), e))?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|e| Error::InvalidConfig {
            file: file.to_path_buf(),
            message: format!(
                "is not valid UTF-8 (at byte {})",
                e.utf8_error().valid_up_to()
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn writable_dirs_are_refused_with_the_fix() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("home");
        std::fs::create_dir(&d).unwrap();
        chmod(&d, 0o700);
        check_dir_chain(&d.join("configs")).unwrap();
        chmod(&d, 0o777);
        let e = check_dir_chain(&d.join("configs")).unwrap_err().to_string();
        assert!(e.contains(&format!("chmod go-w {}", d.display())), "{e}");
        assert!(e.contains("0777"), "{e}");
        chmod(&d, 0o755);
        check_dir_chain(&d).unwrap();
    }

    #[test]
    fn sticky_root_dirs_pass_only_as_parents() {
        let tmp = Path::new("/tmp");
        let meta = std::fs::symlink_metadata(tmp).unwrap();
        if meta.uid() != 0 || meta.mode() & 0o1000 == 0 {
            eprintln!("SKIPPED-CHECK: /tmp is not a root-owned sticky directory here");
            return;
        }
        assert!(check_entry(tmp, &meta, true).is_ok());
        assert!(check_entry(tmp, &meta, false).is_err());
    }

    #[test]
    fn a_symlinked_component_checks_its_target_too() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("target");
        std::fs::create_dir(&target).unwrap();
        chmod(&target, 0o777);
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = check_dir_chain(&link).unwrap_err().to_string();
        assert!(e.contains("target"), "{e}");
        chmod(&target, 0o700);
        check_dir_chain(&link).unwrap();
    }

    #[test]
    fn config_files_writable_by_others_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("dev.toml");
        std::fs::write(&f, "x = 1\n").unwrap();
        chmod(&f, 0o644);
        assert_eq!(read_config_file(&f).unwrap().as_deref(), Some("x = 1\n"));
        chmod(&f, 0o666);
        let e = read_config_file(&f).unwrap_err().to_string();
        assert!(e.contains(&format!("chmod go-w {}", f.display())), "{e}");
        // Input files are not state: only the shape rules apply.
        assert!(read_input_file(&f).unwrap().is_some());
    }

    #[test]
    fn log_dir_symlinks_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let logs = t.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        check_log_dir(&logs).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", logs.join("elhaz.2026-01-01.log")).unwrap();
        assert!(
            check_log_dir(&logs)
                .unwrap_err()
                .to_string()
                .contains("symbolic link")
        );
        let link = t.path().join("logs2");
        std::os::unix::fs::symlink(&logs, &link).unwrap();
        assert!(
            check_log_dir(&link)
                .unwrap_err()
                .to_string()
                .contains("symbolic link")
        );
    }
}
