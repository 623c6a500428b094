//! The paths checks: the configs, run and log directories, the socket, `elhaz.toml` and every
//! session config — owned by us, not accessible to others, valid.

use super::*;

pub(super) fn my_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Mode and ownership problems of a file or directory, worst first: (status, what, fix).
pub(super) fn access_problem(
    path: &Path,
    meta: &std::fs::Metadata,
    strict: bool,
) -> Option<(Status, String, String)> {
    let me = my_uid();
    let mode = meta.mode() & 0o7777;
    let shown = path.display();
    if meta.uid() != me {
        return Some((
            Status::Fail,
            format!(
                "{shown} is owned by uid {}, not by you (uid {me})",
                meta.uid()
            ),
            format!("chown {me} {shown}  (or use your own ELHAZ_HOME)"),
        ));
    }
    let want = if meta.is_dir() { "700" } else { "600" };
    if mode & 0o022 != 0 {
        return Some((
            Status::Fail,
            format!("{shown} is writable by group or others (mode {mode:04o})"),
            format!("chmod {want} {shown}"),
        ));
    }
    if mode & 0o077 != 0 {
        return Some((
            if strict { Status::Fail } else { Status::Warn },
            format!("{shown} is accessible to group or others (mode {mode:04o})"),
            format!("chmod {want} {shown}"),
        ));
    }
    None
}

/// A directory that may not exist yet. `strict`: any group/other access is a failure.
pub(super) fn check_dir(r: &mut Report, label: &str, dir: &Path, strict: bool) {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            r.ok(label, format!("{}: not created yet", dir.display()));
            return;
        }
        Err(e) => {
            r.warn(
                label,
                format!("cannot inspect {}: {e}", dir.display()),
                "check the path with `elhaz paths`",
            );
            return;
        }
    };
    // A symlinked configs or log directory (dotfiles) is fine; the run dir must be real.
    let meta = if meta.file_type().is_symlink() && !strict {
        match std::fs::metadata(dir) {
            Ok(m) => m,
            Err(e) => {
                r.fail(
                    label,
                    format!("{} is a dangling symbolic link: {e}", dir.display()),
                    format!("rm {}", dir.display()),
                );
                return;
            }
        }
    } else {
        meta
    };
    if !meta.is_dir() {
        r.fail(
            label,
            format!(
                "{} is not a directory{}",
                dir.display(),
                if meta.file_type().is_symlink() {
                    " (a symbolic link)"
                } else {
                    ""
                }
            ),
            format!("move {} away; elhaz creates it", dir.display()),
        );
        return;
    }
    match access_problem(dir, &meta, strict) {
        Some((status, detail, fix)) => r.add(status, label, detail, Some(fix)),
        None => r.ok(
            label,
            format!("{} (mode {:04o})", dir.display(), meta.mode() & 0o7777),
        ),
    }
}

/// Paths, permissions and config validity. Returns the configs that use a keyring entry.
pub(super) fn check_paths(r: &mut Report, paths: &Paths) -> Vec<String> {
    check_dir(r, "configs dir", &paths.configs_dir, false);
    check_dir(r, "run dir", &paths.run_dir, true);
    check_dir(r, "log dir", &paths.log_dir, false);
    check_socket(r, paths);
    check_settings(r, paths);
    check_configs(r, paths)
}

/// The socket, if present: a socket, ours, private.
fn check_socket(r: &mut Report, paths: &Paths) {
    match std::fs::symlink_metadata(&paths.socket) {
        Err(_) => r.ok(
            "socket",
            format!(
                "{}: not present (no daemon running here)",
                paths.socket.display()
            ),
        ),
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                r.fail(
                    "socket",
                    format!("{} exists but is not a socket", paths.socket.display()),
                    format!("remove it: rm {}", paths.socket.display()),
                );
            } else {
                match access_problem(&paths.socket, &meta, true) {
                    Some((status, detail, _)) => r.add(
                        status,
                        "socket",
                        detail,
                        Some("restart the daemon (`elhaz daemon stop`; it comes back 0600)".into()),
                    ),
                    None => r.ok(
                        "socket",
                        format!(
                            "{} (mode {:04o})",
                            paths.socket.display(),
                            meta.mode() & 0o7777
                        ),
                    ),
                }
            }
        }
    }
}

/// `elhaz.toml`, if present: valid, ours, not writable by others.
fn check_settings(r: &mut Report, paths: &Paths) {
    match std::fs::symlink_metadata(&paths.settings_file) {
        Err(_) => r.ok(
            "settings",
            format!("{}: none (defaults)", paths.settings_file.display()),
        ),
        Ok(meta) => {
            let problem = access_problem(&paths.settings_file, &meta, false);
            match (Settings::load(&paths.settings_file), problem) {
                (Err(e), _) => r.fail(
                    "settings",
                    e.to_string(),
                    "fix the file (docs/configuration.md)",
                ),
                (Ok(_), Some((status, detail, fix))) => {
                    r.add(status, "settings", detail, Some(fix))
                }
                (Ok(_), None) => r.ok(
                    "settings",
                    format!("{}: valid", paths.settings_file.display()),
                ),
            }
        }
    }
}

/// Every session config: valid and private. Returns the ones that use a keyring entry.
fn check_configs(r: &mut Report, paths: &Paths) -> Vec<String> {
    let store = Store::new(paths.configs_dir.clone());
    let custom = config::env_custom_endpoint();
    let mut keyring_users = Vec::new();
    let names = match store.names() {
        Ok(n) => n,
        Err(e) => {
            r.fail(
                "configs",
                e.to_string(),
                "check the configs directory (`elhaz paths`)",
            );
            return keyring_users;
        }
    };
    warn_ignored_files(r, &paths.configs_dir);
    let mut good = 0;
    for name in &names {
        let file = store.file(name);
        let label = format!("config {name}");
        let problem = match std::fs::symlink_metadata(&file) {
            Ok(meta) if meta.file_type().is_symlink() => None, // load() explains
            Ok(meta) => access_problem(&file, &meta, false),
            Err(_) => None,
        };
        match store.load(name, custom) {
            Err(e) => r.fail(label, e.to_string(), format!("elhaz config edit {name}")),
            Ok(cfg) => {
                if cfg.keyring.is_some() {
                    keyring_users.push(name.clone());
                }
                match problem {
                    Some((status, detail, fix)) => r.add(status, label, detail, Some(fix)),
                    None => good += 1,
                }
            }
        }
    }
    if names.is_empty() {
        r.ok(
            "configs",
            "no session configs yet (`elhaz config add NAME --role-arn ARN`)",
        );
    } else if good > 0 {
        r.ok(
            "configs",
            format!(
                "{good} of {} session config{} valid and private",
                names.len(),
                if names.len() == 1 { "" } else { "s" }
            ),
        );
    }
    keyring_users
}

/// Files elhaz ignores because their names are not session names.
fn warn_ignored_files(r: &mut Report, dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut ignored: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .filter(|n| {
                n.strip_suffix(".toml")
                    .is_some_and(|s| config::validate_name(s).is_err())
            })
            .collect();
        ignored.sort();
        for n in ignored {
            r.warn(
                format!("config {n}"),
                "ignored: not a valid session name ([A-Za-z0-9._-], up to 64 characters)",
                "rename the file",
            );
        }
    }
}
