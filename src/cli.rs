//! Command-line types (clap derive). No logic lives here.

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

/// The two hot paths in their plain spellings, recognised without clap:
/// `credential-process [--] NAME` and `exec NAME -- CMD [ARGS…]`. Anything else (flags, `-n`,
/// missing parts) returns `None` and goes through clap as usual, so behaviour is identical.
pub fn fast_path(args: impl IntoIterator<Item = std::ffi::OsString>) -> Option<Cli> {
    let mut it = args.into_iter().skip(1).peekable();
    let sub = it.next()?;
    // `credential-process -- NAME`, as `setup aws-profile` writes it.
    if sub == "credential-process" && it.peek().is_some_and(|a| a == "--") {
        it.next();
    }
    let name = it.next()?.into_string().ok()?;
    if name.is_empty() || name.starts_with('-') {
        return None;
    }
    let name_arg = NameArg {
        name: Some(name),
        name_flag: None,
    };
    match sub.to_str()? {
        "credential-process" if it.next().is_none() => Some(Cli {
            command: Command::CredentialProcess(name_arg),
        }),
        "exec" if it.next().is_some_and(|d| d == "--") => {
            let command: Vec<std::ffi::OsString> = it.collect();
            if command.is_empty() {
                return None;
            }
            Some(Cli {
                command: Command::Exec(ExecArgs {
                    name: name_arg,
                    refreshing: false,
                    force: false,
                    ecs: EcsExecArgs::default(),
                    command,
                    trailing: Vec::new(),
                }),
            })
        }
        _ => None,
    }
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

#[derive(Debug, Subcommand)]
pub enum SsoCmd {
    /// Log in to IAM Identity Center and share the token with the daemon (and the AWS CLI).
    Login(SsoLoginArgs),
    /// Each start URL: token expiry, refresh token present, sessions using it.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Log out of the portal, remove the cached token and drop the sessions using it.
    Logout {
        #[command(flatten)]
        target: SsoTarget,
    },
    /// Write one session config per account and role the portal lists (idempotent).
    Populate {
        #[command(flatten)]
        target: SsoTarget,
        /// Show what would be written.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Which IAM Identity Center login: an `[sso_sessions.NAME]` of elhaz.toml, or a start URL.
#[derive(Debug, Args)]
pub struct SsoTarget {
    /// A `[sso_sessions.NAME]` of elhaz.toml (default: the only one).
    #[arg(value_name = "SSO_SESSION", conflicts_with = "start_url")]
    pub sso_session: Option<String>,
    /// The AWS access portal URL (instead of an SSO session).
    #[arg(long, value_name = "URL", requires = "region")]
    pub start_url: Option<String>,
    /// The IAM Identity Center region (with --start-url).
    #[arg(long, value_name = "REGION", requires = "start_url")]
    pub region: Option<String>,
}

#[derive(Debug, Args)]
pub struct SsoLoginArgs {
    #[command(flatten)]
    pub target: SsoTarget,
    /// Use the device-code flow (the default where no browser can be opened).
    #[arg(long)]
    pub use_device_code: bool,
    /// Print the URL (and code) instead of opening a browser.
    #[arg(long)]
    pub no_browser: bool,
    /// Give up after this long (seconds or e.g. 5m).
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub timeout: String,
    /// Log in even if a valid token is cached.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum DaemonCmd {
    /// Start the daemon (detached unless --foreground).
    Start(StartArgs),
    /// Stop the daemon and wait until it has exited.
    Stop {
        /// Seconds to wait for the daemon to exit (default: `stop_timeout` of elhaz.toml,
        /// else 10).
        #[arg(long)]
        timeout: Option<u64>,
        /// SIGKILL the daemon if it has not exited by then, and remove its stale socket and
        /// pid file (the default when elhaz.toml says `stop_force = true`).
        #[arg(long, conflicts_with = "no_force")]
        force: bool,
        /// Never SIGKILL, even when elhaz.toml says `stop_force = true`.
        #[arg(long)]
        no_force: bool,
    },
    /// Show whether the daemon runs (exit 0) or not (exit 3).
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List cached sessions (any number: long lists arrive in several frames).
    List {
        /// Only sessions whose name matches this glob (`*`, `?`; quote it in the shell).
        pattern: Option<String>,
        /// Only sessions in this state.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(crate::protocol::SessionState::NAMES))]
        state: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the daemon's log.
    Logs {
        /// Show the last N lines.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
        /// Keep printing new lines (across rotation).
        #[arg(short, long)]
        follow: bool,
        /// Show the audit trail (every credential served) instead.
        #[arg(long)]
        audit: bool,
    },
    /// Load a session into the daemon and warm its credentials.
    Add {
        /// Session name.
        #[arg(add = ArgValueCompleter::new(complete_sessions))]
        name: String,
    },
    /// Evict a session from the daemon, dropping its credentials.
    Remove {
        /// Session name.
        #[arg(add = ArgValueCompleter::new(complete_sessions))]
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Run in the foreground (for systemd, launchd and tests).
    #[arg(long)]
    pub foreground: bool,
    /// Serve one request, then exit. A test harness switch (the protocol and frame tests drive
    /// a daemon through exactly one request), hidden from `--help` and the docs.
    #[arg(long, hide = true)]
    pub once: bool,
    /// Maximum number of cached sessions (overrides elhaz.toml).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub capacity: Option<u64>,
    /// Exit after this long without requests, e.g. 30m (overrides elhaz.toml).
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Serve other users on the shared socket per `[shared]` in elhaz.toml.
    #[arg(long)]
    pub shared: bool,
    /// Shared socket mode, octal (default 0660).
    #[arg(
        long,
        env = "ELHAZ_SOCKET_MODE",
        value_name = "MODE",
        requires = "shared"
    )]
    pub socket_mode: Option<String>,
    /// Shared socket directory mode when elhaz creates it, octal (default 0750).
    #[arg(
        long,
        env = "ELHAZ_SOCKET_DIR_MODE",
        value_name = "MODE",
        requires = "shared"
    )]
    pub socket_dir_mode: Option<String>,
    /// Group owning the shared socket.
    #[arg(long, value_name = "GROUP", requires = "shared")]
    pub group: Option<String>,
    /// Every peer but the daemon's own uid must present a token from --token-file
    /// (`ELHAZ_TOKEN` / `ELHAZ_TOKEN_FILE` on its side); SIGHUP reloads the file.
    #[arg(long, requires = "token_file")]
    pub require_token: bool,
    /// The delegates' tokens: one `token[:session,…]` line each, mode 0600, owned by the
    /// daemon user.
    #[arg(long, value_name = "FILE", requires = "require_token")]
    pub token_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Add a session config from flags or a TOML file (no TTY needed).
    #[command(after_help = CONFIG_ADD_EXAMPLES)]
    Add(Box<ConfigAddArgs>),
    /// Remove a session config.
    Remove {
        /// Session name.
        #[arg(add = ArgValueCompleter::new(complete_sessions))]
        name: String,
        /// Do not ask for confirmation (required without a TTY).
        #[arg(short, long)]
        yes: bool,
        /// Also remove the AWS profile(s) whose credential_process runs this session (as
        /// `setup aws-profile` writes them) without asking.
        #[arg(long, conflicts_with = "keep_profile")]
        remove_profile: bool,
        /// Keep those AWS profiles without asking.
        #[arg(long)]
        keep_profile: bool,
    },
    /// List session configs.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one session config.
    Show {
        /// Session name.
        #[arg(add = ArgValueCompleter::new(complete_sessions))]
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Convert Python elhaz YAML configs (~/.elhaz/configs/*.yaml) into elhaz TOML configs.
    ImportElhaz {
        /// Directory (or one .yaml file) to import (default ~/.elhaz/configs).
        path: Option<PathBuf>,
        /// Overwrite existing configs of the same name.
        #[arg(long)]
        force: bool,
        /// Show what would be written without writing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Edit a session config in $VISUAL / $EDITOR; an invalid result is rejected.
    Edit {
        /// Session name.
        #[arg(add = ArgValueCompleter::new(complete_sessions))]
        name: String,
    },
    /// Convert the profiles and sso-sessions of ~/.aws/config into session configs.
    ImportAws {
        /// The AWS config file (default: $AWS_CONFIG_FILE, then ~/.aws/config).
        path: Option<PathBuf>,
        /// Overwrite existing configs of the same name.
        #[arg(long)]
        force: bool,
        /// Show what would be written without writing.
        #[arg(long)]
        dry_run: bool,
        /// Also switch each converted profile to `credential_process = elhaz
        /// credential-process NAME` (the original is kept as FILE.elhaz-backup).
        #[arg(long, conflicts_with = "dry_run")]
        rewrite: bool,
    },
}

#[derive(Debug, Args)]
pub struct ConfigAddArgs {
    /// Session name ([A-Za-z0-9._-], up to 64 characters).
    pub name: String,
    /// Read the whole config from a TOML file, or `-` for stdin.
    #[arg(long, value_name = "PATH|-", conflicts_with_all = [
        "role_arn", "session_name", "duration", "external_id", "region", "source_profile",
        "source_session", "keyring", "web_identity_token_file", "mfa_serial", "mfa_command",
        "description", "policy_arn", "policy", "tag", "transitive_tag_key", "source_identity",
        "sts_endpoint_url", "sts_region"])]
    pub from_file: Option<PathBuf>,
    /// Overwrite an existing config.
    #[arg(long)]
    pub force: bool,
    /// Role to assume (without it the session uses GetSessionToken).
    #[arg(long, value_name = "ARN")]
    pub role_arn: Option<String>,
    /// RoleSessionName.
    #[arg(long, value_name = "NAME")]
    pub session_name: Option<String>,
    /// Credential lifetime: seconds or e.g. 1h, 90m.
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,
    /// ExternalId for AssumeRole.
    #[arg(long, value_name = "ID")]
    pub external_id: Option<String>,
    /// Region exported to consumers and used for STS.
    #[arg(long)]
    pub region: Option<String>,
    /// Source: an AWS shared-config profile.
    #[arg(long, value_name = "PROFILE", group = "source")]
    pub source_profile: Option<String>,
    /// Source: another elhaz session (role chaining).
    #[arg(long, value_name = "SESSION", group = "source")]
    pub source_session: Option<String>,
    /// Source: long-term keys stored with `elhaz keyring set ENTRY`.
    #[arg(long, value_name = "ENTRY", group = "source")]
    pub keyring: Option<String>,
    /// Source: a web identity token file (AssumeRoleWithWebIdentity).
    #[arg(long, value_name = "PATH", group = "source", requires = "role_arn")]
    pub web_identity_token_file: Option<PathBuf>,
    /// MFA device serial or ARN.
    #[arg(long, value_name = "ARN")]
    pub mfa_serial: Option<String>,
    /// Command printing an MFA code (argv, split on whitespace; no shell).
    #[arg(long, value_name = "CMD", requires = "mfa_serial")]
    pub mfa_command: Option<String>,
    /// Free-text description.
    #[arg(long)]
    pub description: Option<String>,
    /// Managed session policy ARN (repeatable).
    #[arg(long, value_name = "ARN")]
    pub policy_arn: Vec<String>,
    /// Inline session policy (JSON).
    #[arg(long, value_name = "JSON")]
    pub policy: Option<String>,
    /// Session tag KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub tag: Vec<String>,
    /// Transitive session tag key (repeatable).
    #[arg(long, value_name = "KEY")]
    pub transitive_tag_key: Vec<String>,
    /// SourceIdentity.
    #[arg(long, value_name = "ID")]
    pub source_identity: Option<String>,
    /// Custom STS endpoint URL.
    #[arg(long, value_name = "URL")]
    pub sts_endpoint_url: Option<String>,
    /// STS region.
    #[arg(long, value_name = "REGION")]
    pub sts_region: Option<String>,
    /// Source: IAM Identity Center; the AWS access portal URL (with --sso-region).
    #[arg(long, value_name = "URL", group = "source", requires_all = ["sso_region", "sso_account_id", "sso_role_name"])]
    pub sso_start_url: Option<String>,
    /// Region of the IAM Identity Center instance.
    #[arg(long, value_name = "REGION", requires = "sso_start_url")]
    pub sso_region: Option<String>,
    /// Source: IAM Identity Center through a `[sso_sessions.NAME]` of elhaz.toml.
    #[arg(long, value_name = "NAME", group = "source", conflicts_with = "sso_start_url", requires_all = ["sso_account_id", "sso_role_name"])]
    pub sso_session: Option<String>,
    /// IAM Identity Center account id (12 digits).
    #[arg(long, value_name = "ID")]
    pub sso_account_id: Option<String>,
    /// IAM Identity Center role (permission set) name.
    #[arg(long, value_name = "NAME")]
    pub sso_role_name: Option<String>,
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

/// `console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    #[command(flatten)]
    pub name: NameArg,
    /// Print the sign-in URL on stdout instead of opening a browser (the URL is a secret).
    #[arg(long)]
    pub print: bool,
    /// Console page to land on [default: the partition's console home].
    #[arg(long, value_name = "URL")]
    pub destination: Option<String>,
    /// Console session length, 15m..12h (e.g. 1h) [default: the endpoint's].
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,
}

/// `serve …` targets.
#[derive(Debug, Subcommand)]
pub enum ServeCmd {
    /// Serve a session as an ECS container credentials endpoint (for containers), in the
    /// foreground until SIGINT/SIGTERM.
    Ecs(ServeEcsArgs),
}

/// `serve ecs`.
#[derive(Debug, Args)]
pub struct ServeEcsArgs {
    #[command(flatten)]
    pub name: NameArg,
    /// Address to listen on (loopback unless --allow-remote).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Allow a non-loopback --listen address (prints a warning).
    #[arg(long)]
    pub allow_remote: bool,
    /// Where to write the token (mode 0600, removed on stop).
    #[arg(long, value_name = "FILE")]
    pub token_file: PathBuf,
    /// Also print the token on stdout.
    #[arg(long)]
    pub print_token: bool,
}

/// Shells for `completions`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompletionShell {
    /// Bash.
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
}

/// Targets for `hook`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HookShell {
    /// Bash.
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
    /// direnv (`use elhaz NAME` in .envrc).
    Direnv,
}

#[derive(Debug, Subcommand)]
pub enum SetupCmd {
    /// Add or update a `credential_process` profile for a session in the AWS config file
    /// ($AWS_CONFIG_FILE or ~/.aws/config), keeping every other line; backs up the old file.
    AwsProfile {
        /// Session name.
        #[arg(add = ArgValueCompleter::new(complete_sessions))]
        name: String,
        /// Profile name (default: the session name; `default` for [default]).
        #[arg(long)]
        profile: Option<String>,
        /// Only print the stanza.
        #[arg(long)]
        print: bool,
    },
    /// Write a systemd unit running `elhaz daemon start --foreground` with hardening.
    Systemd {
        /// A user unit (~/.config/systemd/user/elhaz.service) — the default.
        #[arg(long, conflicts_with = "system")]
        user: bool,
        /// A system unit for a shared daemon run by a dedicated user.
        #[arg(long, requires = "daemon_user")]
        system: bool,
        /// The dedicated daemon user (with --system).
        #[arg(long, value_name = "USER")]
        daemon_user: Option<String>,
        /// Group of the shared socket (with --system; default elhaz).
        #[arg(long, value_name = "GROUP", default_value = "elhaz")]
        group: String,
        /// Only print the unit.
        #[arg(long)]
        print: bool,
    },
    /// As root: create the group and socket directory that let AGENT use DAEMON's shared daemon.
    AgentAccess {
        /// The user agents run as (gets socket access only).
        #[arg(long, value_name = "USER")]
        agent_user: String,
        /// The dedicated user running the daemon (owns configs, logs, keyring).
        #[arg(long, value_name = "USER")]
        daemon_user: String,
        /// Group shared by the socket and the agent.
        #[arg(long, value_name = "GROUP", default_value = "elhaz")]
        group: String,
        /// Socket directory.
        #[arg(long, value_name = "DIR", default_value = "/run/elhaz")]
        socket_dir: PathBuf,
        /// Only print what would be done.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyringCmd {
    /// Store long-term access keys (read from the terminal, or two lines on stdin:
    /// access key id, then secret access key).
    Set {
        /// Entry name.
        entry: String,
    },
    /// Delete an entry.
    Remove {
        /// Entry name.
        entry: String,
    },
    /// List entries created with `elhaz keyring set` (names only).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rotate the entry's IAM user access key: create a new one, store it, wait until STS
    /// accepts it, delete the old one, and drop the daemon's sessions that used the entry.
    Rotate {
        /// Entry name.
        entry: String,
        /// How long to wait for STS to accept the new key (IAM is eventually consistent).
        #[arg(long, value_name = "DURATION", default_value = "60s")]
        verify_timeout: String,
    },
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
