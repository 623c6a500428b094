//! Operations: completions, man page, shell hooks, systemd units, agent access.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::CommandFactory;
use elhaz::paths::Paths;

use elhaz::cli::{Cli, CompletionShell, HookShell};

/// The registration script of clap's dynamic completion: the shell calls `elhaz` back with
/// `COMPLETE=<shell>` to complete, so session names come from the configs on disk.
pub fn completions(shell: CompletionShell) -> Result<ExitCode> {
    let name = match shell {
        CompletionShell::Bash => "bash",
        CompletionShell::Zsh => "zsh",
        CompletionShell::Fish => "fish",
    };
    let exe = std::env::current_exe().context("cannot find the elhaz executable")?;
    let out = std::process::Command::new(&exe)
        .env("COMPLETE", name)
        .output()
        .context("cannot generate completions")?;
    if !out.status.success() {
        bail!(
            "generating {name} completions failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    std::io::stdout().write_all(&out.stdout)?;
    Ok(ExitCode::SUCCESS)
}

/// The man page, rendered by clap_mangen from the CLI definition.
pub fn man() -> Result<ExitCode> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    std::io::stdout().write_all(&out)?;
    Ok(ExitCode::SUCCESS)
}

const HOOK_POSIX: &str = r#"# elhaz shell integration: `elhaz_use [NAME]` loads a session's variables into this shell.
# The values come from `elhaz export` when you call it; nothing secret is in this snippet.
elhaz_use() {
    __elhaz_env="$(command elhaz export ${1:+"$1"} --format env)" || return
    eval "$__elhaz_env"
    unset __elhaz_env
}
"#;

const HOOK_FISH: &str = r#"# elhaz shell integration: `elhaz_use [NAME]` loads a session's variables into this shell.
# The values come from `elhaz export` when you call it; nothing secret is in this snippet.
function elhaz_use
    set -l __elhaz_env (command elhaz export $argv --format fish); or return
    string join \n -- $__elhaz_env | source
    return 0
end
"#;

const HOOK_DIRENV: &str = r#"# elhaz for direnv: put this in ~/.config/direnv/direnvrc, then `use elhaz NAME` in .envrc.
# The values come from `elhaz export` each time direnv loads; nothing secret is stored here.
use_elhaz() {
    local env
    env="$(elhaz export "$@" --format env)" || return
    eval "$env"
}
"#;

/// Prints the shell integration snippet.
pub fn hook(shell: HookShell) -> Result<ExitCode> {
    let text = match shell {
        HookShell::Bash | HookShell::Zsh => HOOK_POSIX,
        HookShell::Fish => HOOK_FISH,
        HookShell::Direnv => HOOK_DIRENV,
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// The `elhaz` a unit runs: the lean binary users run (it hands `daemon start` to
/// `elhaz-full` in the same process, so systemd supervises the daemon's own pid).
fn exe_path() -> Result<String> {
    let exe = elhaz::front::front_binary().context("cannot find the elhaz executable")?;
    let exe = exe.to_string_lossy().into_owned();
    if exe.contains(char::is_whitespace) {
        bail!(
            "the elhaz executable path {exe:?} contains spaces; install it elsewhere for systemd"
        );
    }
    Ok(exe)
}

/// The unit text.
pub fn unit_text(exe: &str, system: Option<(&str, &str)>) -> String {
    let common = "\
Restart=on-failure
RestartSec=2
TimeoutStopSec=15
KillSignal=SIGTERM
UMask=0077
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=strict
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes
LimitCORE=0
";
    match system {
        None => format!(
            "\
[Unit]
Description=elhaz AWS credential daemon

[Service]
Type=simple
ExecStart={exe} daemon start --foreground
RuntimeDirectory=elhaz
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=no
ReadWritePaths=%h/.local/state/elhaz %h/.config/elhaz
{common}
[Install]
WantedBy=default.target
"
        ),
        Some((user, group)) => format!(
            "\
[Unit]
Description=elhaz shared AWS credential daemon
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User={user}
Group={group}
ExecStart={exe} daemon start --foreground --shared --group {group}
Environment=ELHAZ_HOME=/var/lib/elhaz
Environment=ELHAZ_SHARED_SOCKET=/run/elhaz/elhaz.sock
StateDirectory=elhaz
StateDirectoryMode=0700
RuntimeDirectory=elhaz
RuntimeDirectoryMode=0750
ProtectHome=yes
KeyringMode=private
{common}
[Install]
WantedBy=multi-user.target
"
        ),
    }
}

/// `setup systemd`.
pub fn systemd(
    _paths: &Paths,
    system: bool,
    daemon_user: Option<&str>,
    group: &str,
    print: bool,
) -> Result<ExitCode> {
    let exe = exe_path()?;
    let text = unit_text(&exe, daemon_user.filter(|_| system).map(|u| (u, group)));
    if print {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let (file, next) = if system {
        (
            std::path::PathBuf::from("/etc/systemd/system/elhaz.service"),
            "systemctl daemon-reload && systemctl enable --now elhaz",
        )
    } else {
        let base = directories::BaseDirs::new().context("cannot find your home directory")?;
        (
            base.config_dir().join("systemd/user/elhaz.service"),
            "systemctl --user daemon-reload && systemctl --user enable --now elhaz",
        )
    };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    elhaz::config::atomic_write(&file, text.as_bytes())?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
    }
    println!("wrote {}\nnext: {next}", file.display());
    Ok(ExitCode::SUCCESS)
}

fn run(dry_run: bool, argv: &[&str]) -> Result<()> {
    println!("+ {}", argv.join(" "));
    if dry_run {
        return Ok(());
    }
    let status = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .status()
        .with_context(|| format!("cannot run {}", argv[0]))?;
    if !status.success() {
        bail!("`{}` failed ({status})", argv.join(" "));
    }
    Ok(())
}

/// `setup agent-access`: the group, the agent's membership and the socket directory, plus a
/// tmpfiles.d entry so the directory comes back after a reboot.
pub fn agent_access(
    agent: &str,
    daemon: &str,
    group: &str,
    socket_dir: &Path,
    dry_run: bool,
) -> Result<ExitCode> {
    use nix::unistd::{Group, User};
    if !dry_run && !nix::unistd::geteuid().is_root() {
        bail!("setup agent-access changes users and groups: run it as root (or with --dry-run)");
    }
    let d = User::from_name(daemon)?.with_context(|| {
        format!("--daemon-user {daemon:?} does not exist (create it first: useradd -r -m {daemon})")
    })?;
    User::from_name(agent)?.with_context(|| format!("--agent-user {agent:?} does not exist"))?;
    if agent == daemon {
        bail!(
            "the agent user must differ from the daemon user: the point is that agents cannot read the daemon's files"
        );
    }
    if Group::from_name(group)?.is_none() {
        run(dry_run, &["groupadd", "--system", group])?;
    } else {
        println!("group {group} exists");
    }
    run(dry_run, &["usermod", "-aG", group, agent])?;
    run(dry_run, &["usermod", "-aG", group, daemon])?;
    let dir = socket_dir.to_string_lossy();
    if socket_dir.exists() {
        println!("{dir} exists; leaving its ownership and mode as they are");
    } else {
        run(
            dry_run,
            &[
                "install", "-d", "-m", "0750", "-o", daemon, "-g", group, &dir,
            ],
        )?;
    }
    let tmpfiles = format!("d {dir} 0750 {daemon} {group} -\n");
    println!("+ write /etc/tmpfiles.d/elhaz.conf: {}", tmpfiles.trim());
    if !dry_run {
        std::fs::write("/etc/tmpfiles.d/elhaz.conf", &tmpfiles)
            .context("cannot write /etc/tmpfiles.d/elhaz.conf")?;
    }
    let home = d.dir.display();
    println!(
        "\nNow, as {daemon}, allow the agent in its elhaz.toml ({home}/.config/elhaz/elhaz.toml, or \
         $ELHAZ_HOME/elhaz.toml), then start the daemon with `elhaz daemon start --shared --group {group}` \
         (or `elhaz setup systemd --system --daemon-user {daemon} --group {group}`):\n\n\
         [shared]\nsocket = \"{dir}/elhaz.sock\"\ngroup = \"{group}\"\n\n[[shared.allow]]\nuser = \"{agent}\"\nsessions = [\"SESSION\"]\n\n\
         Verify: `runuser -u {agent} -- elhaz credential-process SESSION` works, and \
         `runuser -u {agent} -- ls {home}` is refused."
    );
    Ok(ExitCode::SUCCESS)
}
