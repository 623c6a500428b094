//! One function per subcommand. This is the binary layer: it uses `anyhow`, prints, and
//! decides exit codes (in [`exit_code_for`] and the few `ExitCode`s returned directly).

use std::process::ExitCode;

use anyhow::Result;
use elhaz::paths::Paths;

use elhaz::cli::{Cli, Command, ConfigCmd, DaemonCmd, SetupCmd};

mod aws_config;
mod config;
mod console;
mod consume;
mod daemon;
mod doctor;
mod ecs;
mod import;
mod import_aws;
mod keyring;
mod ops;
mod rotate;
mod setup;
mod sso;

pub use elhaz::consume::{EXIT_NOT_RUNNING, did_you_mean};

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    if !matches!(cli.command, Command::Daemon(DaemonCmd::Start(_))) {
        elhaz::front::restore_sigpipe();
    }
    let paths = Paths::from_env()?;
    let given = given_name(&cli.command);
    let result = match cli.command {
        Command::Daemon(cmd) => run_daemon(&paths, cmd),
        Command::Config(cmd) => run_config(&paths, cmd),
        Command::CredentialProcess(name) => consume::credential_process(&paths, &name),
        Command::Exec(args) => consume::exec(&paths, args),
        Command::Export { name, format } => consume::export(&paths, &name, format),
        Command::Whoami { name, json } => consume::whoami(&paths, &name, json),
        Command::Shell {
            name,
            force,
            ecs: true,
        } => ecs::shell(&paths, &name, force),
        Command::Shell { name, force, .. } => consume::shell(&paths, &name, force),
        Command::Setup(SetupCmd::AwsProfile {
            name,
            profile,
            print,
        }) => setup::aws_profile(&paths, &name, profile.as_deref(), print),
        Command::Keyring(cmd) => keyring::run(&paths, cmd),
        Command::Doctor { json } => doctor::run(&paths, json),
        Command::Completions { shell } => ops::completions(shell),
        Command::Man => ops::man(),
        Command::Hook { shell } => ops::hook(shell),
        Command::Setup(SetupCmd::Systemd {
            user: _,
            system,
            daemon_user,
            group,
            print,
        }) => ops::systemd(&paths, system, daemon_user.as_deref(), &group, print),
        Command::Setup(SetupCmd::AgentAccess {
            agent_user,
            daemon_user,
            group,
            socket_dir,
            dry_run,
        }) => ops::agent_access(&agent_user, &daemon_user, &group, &socket_dir, dry_run),
        Command::Paths { json } => show_paths(&paths, json),
        Command::Serve(elhaz::cli::ServeCmd::Ecs(args)) => ecs::serve(&paths, args),
        Command::Console(args) => console::run(&paths, args),
        Command::Sso(cmd) => sso::run(&paths, cmd),
    };
    result.map_err(|e| with_suggestion(&paths, given.as_deref(), e))
}

/// Runs `elhaz daemon …`.
fn run_daemon(paths: &Paths, cmd: DaemonCmd) -> Result<ExitCode> {
    match cmd {
        DaemonCmd::Start(args) => daemon::start(paths, args),
        DaemonCmd::Stop {
            timeout,
            force,
            no_force,
        } => daemon::stop_cmd(paths, timeout, force, no_force),
        DaemonCmd::Status { json } => daemon::status(paths, json),
        DaemonCmd::List {
            pattern,
            state,
            json,
        } => daemon::list(paths, pattern, state, json),
        DaemonCmd::Logs {
            lines,
            follow,
            audit,
        } => daemon::logs(paths, lines, follow, audit),
        DaemonCmd::Add { name } => daemon::add(paths, &name),
        DaemonCmd::Remove { name } => daemon::remove(paths, &name),
    }
}

/// Runs `elhaz config …`.
fn run_config(paths: &Paths, cmd: ConfigCmd) -> Result<ExitCode> {
    match cmd {
        ConfigCmd::Add(args) => config::add(paths, *args),
        ConfigCmd::Remove {
            name,
            yes,
            remove_profile,
            keep_profile,
        } => {
            let profile = match (remove_profile, keep_profile) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            config::remove(paths, &name, yes, profile)
        }
        ConfigCmd::List { json } => config::list(paths, json),
        ConfigCmd::Show { name, json } => config::show(paths, &name, json),
        ConfigCmd::Edit { name } => config::edit(paths, &name),
        ConfigCmd::ImportElhaz {
            path,
            force,
            dry_run,
        } => import::import_elhaz(paths, path.as_deref(), force, dry_run),
        ConfigCmd::ImportAws {
            path,
            force,
            dry_run,
            rewrite,
        } => import_aws::run(paths, path.as_deref(), force, dry_run, rewrite),
    }
}

/// The session name given on the command line, if the command takes one.
fn given_name(cmd: &Command) -> Option<String> {
    let name = match cmd {
        Command::CredentialProcess(n)
        | Command::Export { name: n, .. }
        | Command::Whoami { name: n, .. }
        | Command::Shell { name: n, .. } => n.given(),
        Command::Exec(a) => a.name.given(),
        Command::Daemon(DaemonCmd::Add { name } | DaemonCmd::Remove { name })
        | Command::Config(
            ConfigCmd::Show { name, .. }
            | ConfigCmd::Edit { name }
            | ConfigCmd::Remove { name, .. },
        ) => Some(name.as_str()),
        _ => None,
    };
    name.map(str::to_string)
}

/// Adds "did you mean `dev`?" to an error saying a session config does not exist — found by
/// the error's type and code, never its text. Suggestions come from this user's configs.
fn with_suggestion(paths: &Paths, given: Option<&str>, err: anyhow::Error) -> anyhow::Error {
    let missing = match err.downcast_ref::<elhaz::Error>() {
        Some(elhaz::Error::ConfigNotFound { name, .. }) => Some(name.as_str()),
        Some(elhaz::Error::Remote(w)) if w.code == elhaz::protocol::ErrorCode::NotFound => given,
        _ => None,
    };
    match missing.and_then(|m| did_you_mean(paths, m)) {
        Some(hint) => anyhow::anyhow!("{err:#}; {hint}"),
        None => err,
    }
}

/// The exit code for an error that reached `main` ([`elhaz::consume::exit_code`]).
pub fn exit_code_for(err: &anyhow::Error) -> ExitCode {
    err.downcast_ref::<elhaz::Error>()
        .map_or(ExitCode::FAILURE, elhaz::consume::exit_code)
}

fn show_paths(paths: &Paths, json: bool) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(paths)?);
    } else {
        for (k, v) in [
            ("configs", &paths.configs_dir),
            ("settings", &paths.settings_file),
            ("run dir", &paths.run_dir),
            ("socket", &paths.socket),
            ("lock", &paths.lock_file),
            ("pid file", &paths.pid_file),
            ("logs", &paths.log_dir),
        ] {
            println!("{k:<9} {}", v.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks a yes/no question on the terminal; default no.
pub(crate) fn confirm(question: &str) -> Result<bool> {
    use std::io::Write;
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// "3m 20s" style, at most two units.
pub(crate) fn human_secs(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) if s == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) if m == 0 => format!("{h}h"),
        (0, _, _) => format!("{h}h {m}m"),
        _ if h == 0 => format!("{d}d"),
        _ => format!("{d}d {h}h"),
    }
}
