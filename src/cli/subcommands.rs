//! The argument types of the commands off the hot path: daemon, config, sso, setup, keyring,
//! console, serve, completions.

use super::*;

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
