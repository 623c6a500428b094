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

pub(super) fn check_aws_profiles(r: &mut Report, paths: &Paths) {
    let Ok(file) = aws_config::file() else {
        r.ok("aws profiles", "no home directory, so no AWS config file");
        return;
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            r.ok(
                "aws profiles",
                format!("no AWS config file at {}", file.display()),
            );
            return;
        }
        Err(e) => {
            r.warn(
                "aws profiles",
                format!("cannot read {}: {e}", file.display()),
                "check AWS_CONFIG_FILE",
            );
            return;
        }
    };
    let store = Store::new(paths.configs_dir.clone());
    let custom = config::env_custom_endpoint();
    let mut found = 0;
    for p in aws_config::credential_processes(&text) {
        let Ok(argv) = elhaz::import::shlex_split(&p.command) else {
            continue;
        };
        let Some(prog) = argv.first() else { continue };
        let base = Path::new(prog)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // `python -m elhaz.cli …` is how the Python elhaz's own `shell` wired itself.
        let python_module = base.starts_with("python")
            && argv
                .windows(2)
                .any(|w| w[0] == "-m" && (w[1] == "elhaz" || w[1].starts_with("elhaz.")));
        if !base.starts_with("elhaz") && !python_module {
            continue;
        }
        found += 1;
        let label = format!("aws profile {}", p.profile);
        let at = format!("{}:{}", file.display(), p.line);
        let rewire = |session: &str| {
            format!(
                "elhaz setup aws-profile {session} --profile {}  (writes this elhaz's path)",
                p.profile
            )
        };
        let session = aws_config::requested_session(&argv[1..]);
        let fix_name = session
            .clone()
            .ok()
            .flatten()
            .or_else(|| name_flag(&argv))
            .unwrap_or_else(|| "NAME".into());
        if python_module {
            r.warn(
                label,
                format!("{at}: `{}` runs the Python elhaz", p.command),
                rewire(&fix_name),
            );
            continue;
        }
        let Some(bin) = resolve_program(prog) else {
            r.fail(
                label,
                format!("{at}: `{prog}` is not on PATH"),
                rewire(&fix_name),
            );
            continue;
        };
        if !bin.exists() {
            r.fail(
                label,
                format!("{at}: {} does not exist", bin.display()),
                rewire(&fix_name),
            );
            continue;
        }
        if !is_executable(&bin) {
            r.fail(
                label,
                format!("{at}: {} is not executable", bin.display()),
                format!("chmod +x {}  (or {})", bin.display(), rewire(&fix_name)),
            );
            continue;
        }
        if is_python_script(&bin) {
            r.warn(
                label,
                format!("{at}: {} is the Python elhaz", bin.display()),
                rewire(&fix_name),
            );
            continue;
        }
        let session = match session {
            Ok(s) => s,
            Err(why) => {
                r.fail(
                    label,
                    format!("{at}: `{}`: {why}", p.command),
                    rewire(&fix_name),
                );
                continue;
            }
        };
        let name = match session {
            Some(n) => n,
            None => {
                let default = Settings::load(&paths.settings_file)
                    .ok()
                    .and_then(|s| s.default_session.map(|d| d.0));
                let only = store
                    .names()
                    .ok()
                    .filter(|n| n.len() == 1)
                    .and_then(|mut n| n.pop());
                match default.or(only) {
                    Some(n) => n,
                    None => {
                        r.fail(
                            label,
                            format!(
                                "{at}: `{}` names no session and there is no default",
                                p.command
                            ),
                            rewire("NAME"),
                        );
                        continue;
                    }
                }
            }
        };
        match store.load(&name, custom) {
            Ok(_) => {
                let conflicts: Vec<&str> = p
                    .other_keys
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
                        format!("remove those keys from [profile {}]", p.profile),
                    );
                }
            }
            Err(elhaz::Error::ConfigNotFound { .. }) => r.fail(
                label,
                format!("{at}: session {name:?} has no config"),
                format!("elhaz config add {name} --role-arn ARN  (or point the profile at another session)"),
            ),
            Err(e) => r.fail(label, format!("{at}: session {name:?}: {e}"), format!("elhaz config edit {name}")),
        }
    }
    if found == 0 {
        r.ok(
            "aws profiles",
            format!("no credential_process in {} runs elhaz (wire one with `elhaz setup aws-profile NAME`)", file.display()),
        );
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
