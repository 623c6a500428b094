//! Command-line types (clap derive). No logic lives here.
//!
//! This file holds what the hot path parses (`Cli`, `Command`, `NameArg`, `ExecArgs`, the
//! fast path that skips clap for `credential-process` and `exec`); [`subcommands`] holds the
//! argument types of every other command.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum, ValueHint};
use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};

/// Completes session names from the config directory (dynamic shell completion).
fn complete_sessions(current: &std::ffi::OsStr) -> Vec<CompletionCandidate> {
    let prefix = current.to_string_lossy();
    crate::paths::Paths::from_env()
        .ok()
        .and_then(|p| crate::config::Store::new(p.configs_dir).names().ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with(prefix.as_ref()))
        .map(CompletionCandidate::new)
        .collect()
}

/// Completes the command of `exec` (after `--` or NAME): programs on `$PATH` and files.
/// clap_complete passes no position for the first words reliably, so both are offered.
fn complete_command(current: &std::ffi::OsStr) -> Vec<CompletionCandidate> {
    use clap_complete::engine::{PathCompleter, ValueCompleter};
    use std::os::unix::fs::PermissionsExt;
    let prefix = current.to_string_lossy();
    let mut out = Vec::new();
    if !prefix.contains('/') {
        let mut seen = std::collections::BTreeSet::new();
        let path = std::env::var_os("PATH").unwrap_or_default();
        for dir in std::env::split_paths(&path) {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            // Bounded: a huge directory on PATH must not stall the shell.
            for entry in rd.flatten().take(10_000) {
                let name = entry.file_name().to_string_lossy().into_owned();
                let executable = entry
                    .metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
                if name.starts_with(prefix.as_ref()) && executable {
                    seen.insert(name);
                }
            }
        }
        out.extend(seen.into_iter().map(CompletionCandidate::new));
    }
    out.extend(PathCompleter::any().complete(current));
    out
}

const TOP_EXAMPLES: &str = "\
Examples:
  elhaz config add dev --role-arn arn:aws:iam::123456789012:role/Dev --duration 1h
  elhaz whoami dev                      # who the session's credentials are
  elhaz exec dev -- aws s3 ls           # run one command in the session
  elhaz shell dev                       # a subshell in the session
  elhaz setup aws-profile dev           # credential_process profile in ~/.aws/config
  elhaz help config                     # every field of a session config";

const EXEC_EXAMPLES: &str = "\
Examples:
  elhaz exec dev -- aws s3 ls
  elhaz exec dev aws s3 ls --region eu-west-1     # without `--`: all after NAME is the command
  elhaz exec --refreshing dev -- terraform apply  # long-running: credentials refresh in the child
  elhaz exec -n dev -- env                        # with -n/--name, `--` is required";

const CREDENTIAL_PROCESS_EXAMPLES: &str = "\
Examples:
  In ~/.aws/config (an absolute path to elhaz; `elhaz setup aws-profile dev` writes it):

    [profile dev]
    credential_process = elhaz credential-process dev

  then: aws sts get-caller-identity --profile dev";

const CONFIG_ADD_EXAMPLES: &str = "\
Examples:
  elhaz config add dev --role-arn arn:aws:iam::123456789012:role/Dev --duration 1h
  elhaz config add prod --source-session dev --role-arn arn:aws:iam::210987654321:role/Admin
  elhaz config add mfa --mfa-serial arn:aws:iam::123456789012:mfa/alice --duration 12h
  elhaz config add ci --from-file ci.toml
  elhaz config add ci --from-file - < ci.toml";

const DAEMON_EXAMPLES: &str = "\
Examples:
  elhaz daemon status           # exit 0 when running, 3 when not
  elhaz daemon list             # cached sessions and their expiry
  elhaz daemon logs -f          # follow the log
  elhaz daemon add dev          # warm a session (prompts for MFA if needed)
  elhaz daemon stop";

/// `elhaz help config` / `elhaz config --help`: the session config schema, so a `cargo
/// install` user (who has no docs/ directory) can look fields up from the binary.
const CONFIG_SCHEMA: &str = r#"Session configs are TOML files, one per session: configs/NAME.toml (see `elhaz paths`).
Every field is optional unless marked; unknown fields are errors. Durations are seconds or
strings such as "1h", "90m", "1h 30m".

  description = "..."          free text shown by `config list`
  region = "eu-west-1"         exported as AWS_REGION; STS's region unless [sts] sets one
  duration = "1h"              lifetime (role: 15m..12h; GetSessionToken: 15m..36h)
  # the credential source, at most one (default: the daemon's AWS default chain):
  profile = "corp"             an AWS shared-config profile
  session = "base"             another elhaz session (role chaining; needs [role])
  keyring = "ENTRY"            long-term keys stored with `elhaz keyring set ENTRY`

  [role]                       AssumeRole; without it the session uses GetSessionToken
  arn = "arn:aws:iam::123456789012:role/NAME"                  (required)
  session_name = "...", external_id = "...", source_identity = "..."
  policy = '{...}'             an inline session policy (JSON)
  policy_arns = ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
  tags = { team = "infra" }    session tags; transitive_tag_keys = ["team"]

  [web_identity]               AssumeRoleWithWebIdentity of [role]
  token_file = "/path/to/token"

  [mfa]
  serial = "arn:aws:iam::123456789012:mfa/NAME"                (required)
  command = ["ykman", "oath", "accounts", "code", "-s", "aws"] (else the CLI prompts)
  command_timeout = "30s", session_duration = "12h"

  [sts]
  endpoint_url = "https://..." a custom STS (lifts AWS's duration limits); region = "..."

Errors name the file, line, column and field (never the value), all at once. The full
reference, with elhaz.toml's global settings, is docs/configuration.md in the source
repository."#;

/// A credential-refreshing session authority for AWS.
#[derive(Debug, Parser)]
#[command(
    name = "elhaz",
    version,
    about,
    propagate_version = true,
    max_term_width = 100,
    after_help = TOP_EXAMPLES
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The two hot paths in their plain spellings, recognised without clap by the same grammar
/// as the lean `elhaz` ([`elhaz_core::front::parse`]): `credential-process [--] NAME` and
/// `exec NAME -- CMD [ARGS…]`. Anything else returns `None` and goes through clap as usual, so
/// behaviour is identical.
pub fn fast_path(args: impl IntoIterator<Item = std::ffi::OsString>) -> Option<Cli> {
    use elhaz_core::front::Hot;
    let name_arg = |name| NameArg {
        name: Some(name),
        name_flag: None,
    };
    let command = match elhaz_core::front::parse(args)? {
        Hot::CredentialProcess(name) => Command::CredentialProcess(name_arg(name)),
        Hot::Exec(name, command) => Command::Exec(ExecArgs {
            name: name_arg(name),
            refreshing: false,
            force: false,
            ecs: EcsExecArgs::default(),
            command,
            trailing: Vec::new(),
        }),
    };
    Some(Cli { command })
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the daemon.
    #[command(subcommand, after_help = DAEMON_EXAMPLES)]
    Daemon(DaemonCmd),
    /// Manage session configs (`elhaz help config` lists every field).
    #[command(subcommand, after_long_help = CONFIG_SCHEMA)]
    Config(ConfigCmd),
    /// Print credentials as AWS credential_process JSON (the hot path).
    #[command(after_help = CREDENTIAL_PROCESS_EXAMPLES)]
    CredentialProcess(NameArg),
    /// Run a command with the session's credentials in its environment.
    #[command(after_help = EXEC_EXAMPLES, arg_required_else_help = true)]
    Exec(ExecArgs),
    /// Print the session's credentials (env lines, JSON or credential_process JSON).
    Export {
        #[command(flatten)]
        name: NameArg,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Env)]
        format: Format,
    },
    /// Show the identity (account, ARN, user id) behind a session's credentials.
    Whoami {
        #[command(flatten)]
        name: NameArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start a subshell whose AWS SDK calls fetch (and refresh) credentials through elhaz.
    Shell {
        #[command(flatten)]
        name: NameArg,
        /// Start even inside an elhaz session of the same name.
        #[arg(long)]
        force: bool,
        /// Give the shell an ECS credentials endpoint (see `exec --ecs`) instead of a profile.
        #[arg(long)]
        ecs: bool,
    },
    /// Wire elhaz into other tools.
    #[command(subcommand)]
    Setup(SetupCmd),
    /// Manage long-term access keys in the OS keyring.
    #[command(subcommand)]
    Keyring(KeyringCmd),
    /// Check paths, permissions, the daemon, the keyring, AWS profile wiring and clock skew.
    Doctor {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (session names complete too).
    Completions {
        /// Shell.
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print the man page (roff).
    Man,
    /// Print shell integration defining `elhaz_use [NAME]` (or direnv's `use elhaz NAME`).
    Hook {
        /// Shell.
        #[arg(value_enum)]
        shell: HookShell,
    },
    /// Show every resolved path.
    Paths {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve a session's credentials to programs that cannot reach the socket.
    #[command(subcommand)]
    Serve(ServeCmd),
    /// Open the AWS console signed in as the session (federation sign-in).
    Console(ConsoleArgs),
    /// IAM Identity Center: log in, status, log out, populate session configs.
    #[command(subcommand)]
    Sso(SsoCmd),
}

/// A session name, positional or as `-n/--name`.
#[derive(Debug, Args)]
pub struct NameArg {
    /// Session name (default: $ELHAZ_SESSION, then `default_session`, then the only config).
    #[arg(value_name = "NAME", conflicts_with = "name_flag", add = ArgValueCompleter::new(complete_sessions))]
    pub name: Option<String>,
    /// Session name (as Python elhaz users type it).
    #[arg(short = 'n', long = "name", value_name = "NAME", add = ArgValueCompleter::new(complete_sessions))]
    pub name_flag: Option<String>,
}

impl NameArg {
    /// The name given, if any.
    pub fn given(&self) -> Option<&str> {
        self.name.as_deref().or(self.name_flag.as_deref())
    }
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub name: NameArg,
    /// Let the child's AWS SDKs fetch (and refresh) credentials through elhaz via a
    /// generated credential_process profile, instead of static environment variables.
    #[arg(long)]
    pub refreshing: bool,
    /// Run even inside an elhaz session of the same name.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub ecs: EcsExecArgs,
    /// `exec NAME CMD…` without `--`: everything after NAME (flags and `--` included) is the
    /// command — once this argument has a value, clap hands it every later word.
    #[arg(
        hide = true,
        value_name = "CMD",
        num_args = 1..,
        allow_hyphen_values = true,
        add = ArgValueCompleter::new(complete_command)
    )]
    pub trailing: Vec<std::ffi::OsString>,
    /// The command and its arguments, after `--` (or directly after a positional NAME).
    #[arg(
        last = true,
        value_name = "CMD",
        value_hint = ValueHint::CommandWithArguments,
        add = ArgValueCompleter::new(complete_command)
    )]
    pub command: Vec<std::ffi::OsString>,
}

impl ExecArgs {
    /// The command to run: after `--`, or everything after a positional NAME.
    pub fn command(&self) -> &[std::ffi::OsString] {
        if self.command.is_empty() {
            &self.trailing
        } else {
            &self.command
        }
    }
}

/// `exec --ecs` and its stop options.
#[derive(Debug, Default, Args)]
pub struct EcsExecArgs {
    /// Serve the ECS container credentials contract on 127.0.0.1 (random port, random token)
    /// for the child only; elhaz stays its parent and every request is answered by the daemon.
    #[arg(long, conflicts_with = "refreshing")]
    pub ecs: bool,
    /// With --ecs: seconds from the stop signal to SIGKILL when elhaz gets SIGTERM [default: 10].
    #[arg(long, value_name = "SECS", requires = "ecs")]
    pub stop_timeout: Option<u64>,
    /// With --ecs: the signal the child gets when elhaz gets SIGTERM [default: TERM].
    #[arg(long, value_name = "SIGNAL", requires = "ecs")]
    pub stop_signal: Option<String>,
}

/// Output format of `export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// `export VAR=…` lines.
    Env,
    /// A JSON object.
    Json,
    /// The credential_process JSON.
    CredentialProcess,
    /// `set -gx VAR …` lines for fish.
    Fish,
}

mod subcommands;

pub use subcommands::*;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Option<String> {
        fast_path(args.iter().map(std::ffi::OsString::from)).map(|c| format!("{:?}", c.command))
    }

    /// The fast path must agree with clap on everything it accepts.
    #[test]
    fn fast_path_matches_clap() {
        for args in [
            &["elhaz", "credential-process", "dev"][..],
            &["elhaz", "credential-process", "--", "dev"],
            &["elhaz", "exec", "dev", "--", "aws", "s3", "ls", "--", "-x"],
            &["elhaz", "exec", "dev", "--", "true"],
        ] {
            let fast = parse(args).expect("fast path taken");
            let slow = format!("{:?}", Cli::try_parse_from(args).unwrap().command);
            assert_eq!(fast, slow, "{args:?}");
        }
        for args in [
            &["elhaz", "credential-process"][..],
            &["elhaz", "credential-process", "-n", "dev"],
            &["elhaz", "credential-process", "dev", "extra"],
            &["elhaz", "credential-process", "--", "-dev"],
            &["elhaz", "exec", "dev", "--refreshing", "--", "x"],
            &["elhaz", "exec", "dev", "--"],
            &["elhaz", "exec", "--", "x"],
            &["elhaz", "--", "credential-process", "dev"],
            &["elhaz"],
        ] {
            assert!(parse(args).is_none(), "{args:?}");
        }
    }

    fn exec_parts(args: &[&str]) -> (Option<String>, Vec<String>) {
        let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let Command::Exec(a) = cli.command else {
            panic!("{args:?} is not exec")
        };
        let cmd = a
            .command()
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        (a.name.given().map(str::to_string), cmd)
    }

    /// `exec NAME CMD…` works without `--` (everything after NAME is the command, flags
    /// included); with `--`, as before; `-n` needs `--`.
    #[test]
    fn exec_command_with_or_without_double_dash() {
        let dev = Some("dev".to_string());
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            exec_parts(&["elhaz", "exec", "dev", "--", "aws", "s3", "ls"]),
            (dev.clone(), v(&["aws", "s3", "ls"]))
        );
        assert_eq!(
            exec_parts(&[
                "elhaz", "exec", "dev", "aws", "s3", "ls", "--region", "x", "--", "-y"
            ]),
            (
                dev.clone(),
                v(&["aws", "s3", "ls", "--region", "x", "--", "-y"])
            )
        );
        assert_eq!(
            exec_parts(&["elhaz", "exec", "--refreshing", "dev", "env"]),
            (dev.clone(), v(&["env"]))
        );
        assert_eq!(
            exec_parts(&["elhaz", "exec", "-n", "dev", "--", "env"]),
            (dev.clone(), v(&["env"]))
        );
        assert_eq!(
            exec_parts(&["elhaz", "exec", "--", "env", "-i"]),
            (None, v(&["env", "-i"]))
        );
        assert_eq!(exec_parts(&["elhaz", "exec", "dev"]), (dev, vec![]));
        // Bare `elhaz exec` is a usage error showing the help (as it was with CMD required).
        assert!(Cli::try_parse_from(["elhaz", "exec"]).is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
