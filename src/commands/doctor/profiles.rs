//! The AWS profiles check: every `credential_process` in the AWS config file that runs elhaz
//! points at an executable elhaz and at a session that has a valid config.

use super::*;

/// The value of `-n NAME` / `--name NAME` / `--name=NAME` anywhere in a command line.
pub(super) fn name_flag(argv: &[String]) -> Option<String> {
    argv.iter().enumerate().find_map(|(i, a)| match a.as_str() {
        "-n" | "--name" => argv.get(i + 1).cloned(),
        a => a.strip_prefix("--name=").map(str::to_string),
    })
}

/// Finds `prog` like a shell would (a path if it has a slash, else along `$PATH`).
pub(super) fn resolve_program(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

pub(super) fn is_executable(p: &Path) -> bool {
    p.is_file() && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok()
}

/// Whether `p` is a Python script (the Python elhaz's entry point).
pub(super) fn is_python_script(p: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 128];
    let n = std::fs::File::open(p)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    head[..n].starts_with(b"#!")
        && String::from_utf8_lossy(&head[..n])
            .lines()
            .next()
            .is_some_and(|l| l.contains("python"))
}

/// Every `credential_process` in the AWS config file that runs elhaz.
pub(super) fn check_aws_profiles(r: &mut Report, paths: &Paths) {
    let Some((file, text)) = read_aws_config(r) else {
        return;
    };
    let targets = Targets {
        paths,
        store: Store::new(paths.configs_dir.clone()),
        custom: config::env_custom_endpoint(),
    };
    let mut found = 0;
    for p in aws_config::credential_processes(&text) {
        let Ok(argv) = elhaz::import::shlex_split(&p.command) else {
            continue;
        };
        let Some(python_module) = elhaz_command(&argv) else {
            continue;
        };
        found += 1;
        let wired = Wired {
            label: format!("aws profile {}", p.profile),
            at: format!("{}:{}", file.display(), p.line),
            p: &p,
        };
        check_profile(r, &targets, &wired, &argv, python_module);
    }
    if found == 0 {
        r.ok(
            "aws profiles",
            format!("no credential_process in {} runs elhaz (wire one with `elhaz setup aws-profile NAME`)", file.display()),
        );
    }
}

/// The AWS config file and its text; `None` (reported) when there is none or it is unreadable.
fn read_aws_config(r: &mut Report) -> Option<(PathBuf, String)> {
    let Ok(file) = aws_config::file() else {
        r.ok("aws profiles", "no home directory, so no AWS config file");
        return None;
    };
    match std::fs::read_to_string(&file) {
        Ok(t) => Some((file, t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            r.ok(
                "aws profiles",
                format!("no AWS config file at {}", file.display()),
            );
            None
        }
        Err(e) => {
            r.warn(
                "aws profiles",
                format!("cannot read {}: {e}", file.display()),
                "check AWS_CONFIG_FILE",
            );
            None
        }
    }
}

/// Whether a `credential_process` command line runs elhaz: `Some(true)` for the Python
/// elhaz's `python -m elhaz.cli …` (how its own `shell` wired itself), `Some(false)` for a
/// program named `elhaz…`, `None` for anything else.
fn elhaz_command(argv: &[String]) -> Option<bool> {
    let prog = argv.first()?;
    let base = Path::new(prog)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let python_module = base.starts_with("python")
        && argv
            .windows(2)
            .any(|w| w[0] == "-m" && (w[1] == "elhaz" || w[1].starts_with("elhaz.")));
    (base.starts_with("elhaz") || python_module).then_some(python_module)
}

/// The sessions a profile may name: the configs, and the default when it names none.
struct Targets<'a> {
    paths: &'a Paths,
    store: Store,
    custom: bool,
}

/// One profile whose `credential_process` runs elhaz: its check's label and its place.
struct Wired<'a> {
    label: String,
    /// `FILE:LINE`.
    at: String,
    p: &'a aws_config::ProfileProcess,
}

impl Wired<'_> {
    /// The fix that rewires the profile to this elhaz.
    fn rewire(&self, session: &str) -> String {
        format!(
            "elhaz setup aws-profile {session} --profile {}  (writes this elhaz's path)",
            self.p.profile
        )
    }
}

/// One elhaz profile: the program it runs, then the session it asks for.
fn check_profile(
    r: &mut Report,
    targets: &Targets<'_>,
    w: &Wired<'_>,
    argv: &[String],
    python_module: bool,
) {
    let session = aws_config::requested_session(&argv[1..]);
    let fix_name = session
        .clone()
        .ok()
        .flatten()
        .or_else(|| name_flag(argv))
        .unwrap_or_else(|| "NAME".into());
    let Some(bin) = check_program(r, w, &argv[0], python_module, &fix_name) else {
        return;
    };
    let session = match session {
        Ok(s) => s,
        Err(why) => {
            r.fail(
                w.label.clone(),
                format!("{}: `{}`: {why}", w.at, w.p.command),
                w.rewire(&fix_name),
            );
            return;
        }
    };
    let Some(name) = session.or_else(|| targets.default_session()) else {
        r.fail(
            w.label.clone(),
            format!(
                "{}: `{}` names no session and there is no default",
                w.at, w.p.command
            ),
            w.rewire("NAME"),
        );
        return;
    };
    check_session(r, targets, w, &bin, &name);
}

/// The program a profile runs: `Some` when it is an executable, non-Python elhaz; otherwise
/// the problem is reported.
fn check_program(
    r: &mut Report,
    w: &Wired<'_>,
    prog: &str,
    python_module: bool,
    fix_name: &str,
) -> Option<PathBuf> {
    let (label, at) = (w.label.clone(), &w.at);
    if python_module {
        r.warn(
            label,
            format!("{at}: `{}` runs the Python elhaz", w.p.command),
            w.rewire(fix_name),
        );
        return None;
    }
    let Some(bin) = resolve_program(prog) else {
        r.fail(
            label,
            format!("{at}: `{prog}` is not on PATH"),
            w.rewire(fix_name),
        );
        return None;
    };
    if !bin.exists() {
        r.fail(
            label,
            format!("{at}: {} does not exist", bin.display()),
            w.rewire(fix_name),
        );
        return None;
    }
    if !is_executable(&bin) {
        r.fail(
            label,
            format!("{at}: {} is not executable", bin.display()),
            format!("chmod +x {}  (or {})", bin.display(), w.rewire(fix_name)),
        );
        return None;
    }
    if is_python_script(&bin) {
        r.warn(
            label,
            format!("{at}: {} is the Python elhaz", bin.display()),
            w.rewire(fix_name),
        );
        return None;
    }
    Some(bin)
}

impl Targets<'_> {
    /// The session used when a command names none: `default_session`, else the only config.
    fn default_session(&self) -> Option<String> {
        let default = Settings::load(&self.paths.settings_file)
            .ok()
            .and_then(|s| s.default_session.map(|d| d.0));
        let only = self
            .store
            .names()
            .ok()
            .filter(|n| n.len() == 1)
            .and_then(|mut n| n.pop());
        default.or(only)
    }
}

/// The session a profile asks for has a valid config, and the profile sets no key SDKs would
/// use instead of `credential_process`.
fn check_session(r: &mut Report, targets: &Targets<'_>, w: &Wired<'_>, bin: &Path, name: &str) {
    let (label, at) = (w.label.clone(), &w.at);
    match targets.store.load(name, targets.custom) {
        Ok(_) => {
            let conflicts: Vec<&str> =
                w.p.other_keys
                    .iter()
                    .map(String::as_str)
                    .filter(|k| aws_config::CONFLICTING_KEYS.contains(k))
                    .collect();
            if conflicts.is_empty() {
                r.ok(label, format!("{} → session {name}", bin.display()));
            } else {
                r.warn(
                    label,
                    format!(
                        "{at}: the profile also sets {}, which SDKs may use instead of credential_process",
                        conflicts.join(", ")
                    ),
                    format!("remove those keys from [profile {}]", w.p.profile),
                );
            }
        }
        Err(elhaz::Error::ConfigNotFound { .. }) => r.fail(
            label,
            format!("{at}: session {name:?} has no config"),
            format!(
                "elhaz config add {name} --role-arn ARN  (or point the profile at another session)"
            ),
        ),
        Err(e) => r.fail(
            label,
            format!("{at}: session {name:?}: {e}"),
            format!("elhaz config edit {name}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn name_flags_in_python_command_lines() {
        assert_eq!(
            name_flag(&v(&["python3", "-m", "elhaz.cli", "export", "-n", "dev"])),
            Some("dev".into())
        );
    }
}
