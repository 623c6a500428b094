//! Session configs and global settings: schema, validation and the atomic on-disk store.
//!
//! One TOML file per named session (`configs/NAME.toml`) plus one global `elhaz.toml`. Configs
//! hold no secrets — static keys are not even a field (unknown fields are rejected); long-term
//! keys live in the OS keyring and are referenced by entry name.
//!
//! Validation happens in two layers. Field-local rules (ARN shapes, name charsets, durations
//! that parse) run during deserialization. Rules that depend on several fields or on the
//! environment (duration limits, which only apply against real AWS STS; one source at most)
//! run afterwards and are located by walking the spanned document, so every error still names
//! file, line, column and field.
//!
//! Errors never quote a value: a secret pasted into the wrong field must not reach a terminal,
//! a log or (in shared mode) another uid's client. That is why deserialization does not go
//! through `toml::from_str` — serde's type errors embed the value (`invalid type: string
//! "…"`) and toml quotes the offending line — but through a small deserializer over toml's
//! spanned document (`redacting`) whose error type overrides serde's `invalid_type`,
//! `invalid_value` and `unknown_field` hooks (structured data, no message parsing) to report
//! the kind of value found, the field path and the position. The same deserializer reports
//! every problem in a file rather than the first: after an error it leaves the offending key
//! out and deserializes again (at most twice `MAX_PROBLEMS` attempts over a file of at most
//! 64 KiB: cheap, and bounded for hostile input). Cross-field rules are also collected, but run
//! only once every field parsed (a rule about a field that failed would mislead). A TOML
//! syntax error ends parsing and is reported alone.
//!
//! Writes are atomic: a temp file in the same directory (created 0600), `fsync`, `rename`,
//! `fsync` of the directory — all under an exclusive `flock` on `configs/.lock`, so concurrent
//! `config add` runs lose nothing and a crash leaves either the old file or the new one.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

use crate::fsafe::sync_dir;
pub use crate::fsafe::{MAX_CONFIG_BYTES, atomic_write, open_private, read_config_file};

/// AWS limits for AssumeRole and AssumeRoleWithWebIdentity DurationSeconds.
pub const ROLE_DURATION_LIMITS: (u64, u64) = (900, 43_200);
/// AWS limits for GetSessionToken DurationSeconds.
pub const SESSION_TOKEN_DURATION_LIMITS: (u64, u64) = (900, 129_600);
/// AWS caps a role session assumed with role credentials (role chaining) at one hour.
pub const CHAINED_ROLE_MAX: u64 = 3_600;
/// botocore re-runs credential_process when fewer than this many seconds remain.
pub const BOTOCORE_ADVISORY_WINDOW: u64 = 15 * 60;

/// Checks a session name: `[A-Za-z0-9._-]{1,64}`, not starting with `.` (so `.lock` and temp
/// files can never collide with a config) nor `-` (so a name is never parsed as a flag, e.g.
/// in a generated `credential_process` line).
pub fn validate_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
}

/// The candidate closest to `input` by edit distance, if it is close enough to be a likely
/// typo (at most a third of the longer name's length, and at least one edit): the "did you
/// mean …?" of session names and config fields.
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    /// Edit distance counting a swap of two neighbours as one edit (optimal string alignment).
    fn distance(a: &str, b: &str) -> usize {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for (i, row) in d.iter_mut().enumerate() {
            row[0] = i;
        }
        for (j, cell) in d[0].iter_mut().enumerate() {
            *cell = j;
        }
        for i in 1..=a.len() {
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut best = (d[i - 1][j] + 1)
                    .min(d[i][j - 1] + 1)
                    .min(d[i - 1][j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    best = best.min(d[i - 2][j - 2] + 1);
                }
                d[i][j] = best;
            }
        }
        d[a.len()][b.len()]
    }
    // Names are at most 64 characters; a longer input is not a typo of one.
    if input.len() > 128 {
        return None;
    }
    candidates
        .into_iter()
        .filter(|c| *c != input)
        .map(|c| (distance(&input.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= (input.chars().count().max(c.chars().count()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// A duration in whole seconds, written in TOML as an integer (`3600`) or a string (`"1h"`,
/// `"90m"`, `"1h 30m"`, `"3600"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Secs(pub u64);

impl Secs {
    /// As a `Duration`.
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl std::str::FromStr for Secs {
    type Err = String;
    fn from_str(s: &str) -> Result<Secs, String> {
        let s = s.trim();
        if let Ok(n) = s.parse::<u64>() {
            return Ok(Secs(n));
        }
        // The value is not quoted back (see the module docs on config errors).
        let d = humantime::parse_duration(s)
            .map_err(|_| "invalid duration; use seconds or e.g. 1h, 90m, 1h 30m".to_string())?;
        if d.subsec_nanos() != 0 {
            return Err("invalid duration: use whole seconds".into());
        }
        Ok(Secs(d.as_secs()))
    }
}

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.duration()))
    }
}

impl Serialize for Secs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secs, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: seconds, or a string such as \"1h\" or \"90m\"")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Secs, E> {
                Ok(Secs(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Secs, E> {
                u64::try_from(n)
                    .map(Secs)
                    .map_err(|_| E::custom("duration must not be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Secs, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let s = String::deserialize(d)?;
                $check(&s).map_err(serde::de::Error::custom)?;
                Ok($name(s))
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<$name, String> {
                $check(s)?;
                Ok($name(s.to_string()))
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_string!(
    /// An IAM role ARN: `arn:PARTITION:iam::ACCOUNT:role/PATH/NAME`.
    RoleArn,
    check_role_arn
);
checked_string!(
    /// An IAM managed policy ARN: `arn:PARTITION:iam::(aws|ACCOUNT):policy/NAME`.
    PolicyArn,
    check_policy_arn
);
checked_string!(
    /// An MFA device: a virtual device ARN (`arn:…:iam::ACCOUNT:mfa/NAME`) or a hardware serial.
    MfaSerial,
    check_mfa_serial
);
checked_string!(
    /// A reference to another session config by name.
    SessionName,
    check_session_ref
);
checked_string!(
    /// An AWS region name such as `eu-west-1`.
    Region,
    check_region
);

fn check_session_ref(s: &str) -> Result<(), String> {
    validate_name(s).map_err(|_| {
        "invalid session name: use 1 to 64 characters from A-Z a-z 0-9 . _ - (not starting with '.' or '-')"
            .to_string()
    })
}

fn check_region(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err("invalid region; expected e.g. us-east-1".into())
    }
}

/// Splits `arn:partition:service:region:account:resource`.
fn arn_parts(s: &str) -> Option<[&str; 6]> {
    let mut it = s.splitn(6, ':');
    let parts = [
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
    ];
    (parts[0] == "arn" && parts[1].starts_with("aws")).then_some(parts)
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn iam_arn(s: &str, kind: &str, aws_owned_ok: bool) -> Result<(), String> {
    let example = format!("arn:aws:iam::123456789012:{kind}/NAME");
    let Some([_, _, service, region, account, resource]) = arn_parts(s) else {
        return Err(format!("invalid {kind} ARN; expected {example}"));
    };
    let account_ok = is_account(account) || (aws_owned_ok && account == "aws");
    let name = resource
        .strip_prefix(kind)
        .and_then(|r| r.strip_prefix('/'));
    if service != "iam" || !region.is_empty() || !account_ok || name.is_none_or(str::is_empty) {
        return Err(format!("invalid {kind} ARN; expected {example}"));
    }
    Ok(())
}

fn check_role_arn(s: &str) -> Result<(), String> {
    iam_arn(s, "role", false)
}

fn check_policy_arn(s: &str) -> Result<(), String> {
    iam_arn(s, "policy", true)
}

fn check_mfa_serial(s: &str) -> Result<(), String> {
    if s.starts_with("arn:") {
        return iam_arn(s, "mfa", false);
    }
    let ok = (9..=256).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=/:,.@-_".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(
            "invalid MFA serial; expected arn:aws:iam::123456789012:mfa/NAME or a hardware token serial"
                .into(),
        )
    }
}

/// `[\w+=,.@-]{min,max}` as STS uses for session names and source identities.
fn sts_word(s: &str, what: &str, min: usize, max: usize, extra: &[u8]) -> Result<(), String> {
    let ok = (min..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b) || extra.contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what}: {min} to {max} characters from A-Z a-z 0-9 _ + = , . @ -{}",
            if extra.is_empty() { "" } else { " : /" }
        ))
    }
}

/// Where a session's base credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The daemon's default AWS credential chain.
    Default,
    /// An AWS shared-config profile.
    Profile(String),
    /// Another elhaz session (role chaining).
    Session(String),
    /// Long-term access keys in the OS keyring.
    Keyring(String),
    /// A web identity token file (AssumeRoleWithWebIdentity).
    WebIdentity(PathBuf),
    /// IAM Identity Center: role credentials of an account and role (`[sso]`).
    Sso(SsoConfig),
}

impl Source {
    /// Short name used by `daemon list`.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::Profile(_) => "profile",
            Source::Session(_) => "session",
            Source::Keyring(_) => "keyring",
            Source::WebIdentity(_) => "web_identity",
            Source::Sso(_) => "sso",
        }
    }
}

/// One named session config (`configs/NAME.toml`). See docs/configuration.md for every field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// Free text shown by `config list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Region exported to consumers (`AWS_REGION`), and STS's region unless `[sts]` sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
    /// Source: an AWS shared-config profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Source: another elhaz session (role chaining).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionName>,
    /// Source: an OS keyring entry holding long-term access keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyring: Option<String>,
    /// Lifetime requested from STS for this session's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Secs>,
    /// AssumeRole parameters; without `[role]` the session uses GetSessionToken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<RoleConfig>,
    /// Source: a web identity token (AssumeRoleWithWebIdentity of `[role]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_identity: Option<WebIdentityConfig>,
    /// MFA device and how to get codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa: Option<MfaConfig>,
    /// STS endpoint and region overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts: Option<StsConfig>,
    /// Source: an IAM Identity Center account and role (see `crate::sso`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso: Option<SsoConfig>,
}

/// `[sso]`: an IAM Identity Center account and role, with the start URL and region given here
/// or through `session = "NAME"`, a `[sso_sessions.NAME]` block of `elhaz.toml` (many sessions,
/// one login).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoConfig {
    /// The AWS access portal URL, e.g. `https://my-org.awsapps.com/start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_url: Option<String>,
    /// The region of the IAM Identity Center instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
    /// A `[sso_sessions.NAME]` of `elhaz.toml` (instead of `start_url` and `region`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The 12-digit account id.
    pub account_id: String,
    /// The permission set's role name.
    pub role_name: String,
}

/// `[sso_sessions.NAME]` in `elhaz.toml`: one IAM Identity Center login shared by sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoSession {
    /// The AWS access portal URL.
    pub start_url: String,
    /// The region of the IAM Identity Center instance.
    pub region: Region,
    /// OAuth scopes registered (default `["sso:account:access"]`, which yields a refresh token).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

/// Checks an SSO start URL: `https://…` (or `http://` for a test fake on loopback).
pub fn check_start_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://127.0.0.1"))
        .or_else(|| url.strip_prefix("http://localhost"));
    match rest {
        Some(r) if !r.is_empty() && url.len() <= 512 && !url.contains(char::is_whitespace) => {
            Ok(())
        }
        _ => Err(format!(
            "invalid SSO start URL {url:?}; expected e.g. https://my-org.awsapps.com/start"
        )),
    }
}

/// Checks an `[sso_sessions]` name (the AWS CLI's `sso-session` names).
pub fn check_sso_session_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid SSO session name {name:?}: 1 to 64 characters from A-Z a-z 0-9 - _ ."
        ))
    }
}

/// `[role]`: AssumeRole parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// RoleArn.
    pub arn: RoleArn,
    /// RoleSessionName (default `elhaz-<user>`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_session_name"
    )]
    pub session_name: Option<String>,
    /// ExternalId.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_external_id"
    )]
    pub external_id: Option<String>,
    /// An inline session policy (JSON).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_policy"
    )]
    pub policy: Option<String>,
    /// Managed session policies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_arns: Vec<PolicyArn>,
    /// Session tags passed on to transitive role assumptions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitive_tag_keys: Vec<String>,
    /// SourceIdentity.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_source_identity"
    )]
    pub source_identity: Option<String>,
    /// Session tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

fn de_opt_checked<'de, D: Deserializer<'de>>(
    d: D,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    check(&s).map_err(serde::de::Error::custom)?;
    Ok(Some(s))
}

fn de_session_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    de_opt_checked(d, |s| sts_word(s, "role session name", 2, 64, b""))
}

fn de_source_identity<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    de_opt_checked(d, |s| sts_word(s, "source identity", 2, 64, b""))
}

fn de_external_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    de_opt_checked(d, |s| sts_word(s, "external id", 2, 1224, b":/"))
}

fn de_policy<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    de_opt_checked(d, check_policy)
}

fn check_policy(s: &str) -> Result<(), String> {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err("policy must be a JSON object (an IAM policy document)".into()),
        Err(e) => Err(format!("policy is not valid JSON: {e}")),
    }
}

/// `[web_identity]`: an OIDC token file for AssumeRoleWithWebIdentity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebIdentityConfig {
    /// File holding the token; read at every refresh (tokens rotate).
    pub token_file: PathBuf,
}

/// `[mfa]`: the MFA device and where codes come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MfaConfig {
    /// SerialNumber.
    pub serial: MfaSerial,
    /// A command (argv, no shell) printing a fresh code; otherwise the CLI prompts on the TTY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Timeout for `command` (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_timeout: Option<Secs>,
    /// Lifetime of the MFA-backed GetSessionToken session roles are assumed from (default 12 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_duration: Option<Secs>,
}

/// `[sts]`: endpoint and region overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StsConfig {
    /// A custom STS endpoint (MinIO, LocalStack, moto, a VPC endpoint…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// STS region (default: the config's `region`, else `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
}

/// Default role session lifetime (AWS's own default).
pub const DEFAULT_ROLE_DURATION: u64 = 3_600;
/// Default GetSessionToken lifetime (AWS's own default).
pub const DEFAULT_SESSION_TOKEN_DURATION: u64 = 43_200;
/// Default lifetime of the MFA session roles are assumed from.
pub const DEFAULT_MFA_SESSION_DURATION: u64 = 43_200;
/// Default timeout of the MFA command.
pub const DEFAULT_MFA_COMMAND_TIMEOUT: u64 = 30;

/// A validation failure: which field (dotted path) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path, e.g. `role.arn`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl SessionConfig {
    /// Parses and validates a config. `file` is used in messages only. Every field problem
    /// is reported (not only the first); cross-field rules run once every field parses.
    pub fn parse(src: &str, file: &Path, custom_endpoint: bool) -> Result<SessionConfig, Error> {
        let (cfg, problems) = redacting::deserialize_all::<SessionConfig>(src);
        match cfg {
            Some(cfg) if problems.is_empty() => match cfg.validate(custom_endpoint) {
                Ok(()) => Ok(cfg),
                Err(errs) => Err(invalid(
                    file,
                    src,
                    errs.iter().map(|e| locate(src, e)).collect(),
                )),
            },
            _ => Err(invalid(file, src, problems)),
        }
    }

    /// Serializes to TOML.
    pub fn to_toml(&self) -> String {
        // Our types are plain strings, integers, arrays and tables; serialization cannot fail.
        toml::to_string_pretty(self).unwrap_or_else(|e| unreachable!("config serializes: {e}"))
    }

    /// Where base credentials come from.
    pub fn source(&self) -> Source {
        if let Some(p) = &self.profile {
            Source::Profile(p.clone())
        } else if let Some(s) = &self.session {
            Source::Session(s.0.clone())
        } else if let Some(k) = &self.keyring {
            Source::Keyring(k.clone())
        } else if let Some(w) = &self.web_identity {
            Source::WebIdentity(w.token_file.clone())
        } else if let Some(sso) = &self.sso {
            Source::Sso(sso.clone())
        } else {
            Source::Default
        }
    }

    /// Whether this session's credentials come from GetSessionToken (no `[role]`).
    pub fn is_session_token(&self) -> bool {
        self.role.is_none()
    }

    /// Lifetime to request from STS (before any chaining cap).
    pub fn effective_duration(&self) -> u64 {
        self.duration
            .map(|d| d.0)
            .unwrap_or(if self.role.is_some() {
                DEFAULT_ROLE_DURATION
            } else {
                DEFAULT_SESSION_TOKEN_DURATION
            })
    }

    /// A custom endpoint set in this config.
    pub fn endpoint_url(&self) -> Option<&str> {
        self.sts.as_ref().and_then(|s| s.endpoint_url.as_deref())
    }

    /// Cross-field and environment-dependent rules. `custom_endpoint` lifts AWS's duration
    /// limits (a custom STS has its own, and its errors pass through).
    pub fn validate(&self, custom_endpoint: bool) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        let mut err =
            |field: &'static str, message: String| errs.push(FieldError { field, message });
        let sources: Vec<&'static str> = [
            ("profile", self.profile.is_some()),
            ("session", self.session.is_some()),
            ("keyring", self.keyring.is_some()),
            ("web_identity", self.web_identity.is_some()),
            ("sso", self.sso.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, set)| set.then_some(n))
        .collect();
        if sources.len() > 1 {
            err(
                sources[1],
                format!(
                    "set at most one credential source; found {}",
                    sources.join(" and ")
                ),
            );
        }
        if let Some(p) = &self.profile
            && p.trim().is_empty()
        {
            err("profile", "profile name is empty".into());
        }
        if let Some(k) = &self.keyring
            && (k.trim().is_empty() || k.len() > 128)
        {
            err(
                "keyring",
                "keyring entry must be 1 to 128 characters".into(),
            );
        }
        if let Some(sso) = &self.sso
            && let Err(e) = validate_sso(sso)
        {
            err(e.field, e.message);
        }
        if self.role.is_none() {
            if self.web_identity.is_some() {
                err(
                    "web_identity",
                    "web identity needs a [role] with the arn to assume".into(),
                );
            }
            if self.session.is_some() {
                err(
                    "session",
                    "chaining from another session needs a [role] to assume".into(),
                );
            }
        }
        if let Some(role) = &self.role {
            if role.policy_arns.len() > 10 {
                err("role.policy_arns", "at most 10 policy ARNs".into());
            }
            if role.tags.len() > 50 {
                err("role.tags", "at most 50 session tags".into());
            }
            if role
                .tags
                .iter()
                .any(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > 256)
            {
                err(
                    "role.tags",
                    "tag keys are 1 to 128 characters, values at most 256".into(),
                );
            }
            for (i, k) in role.transitive_tag_keys.iter().enumerate() {
                if !role.tags.contains_key(k) {
                    err(
                        "role.transitive_tag_keys",
                        format!("entry {} is not a key of [role.tags]", i + 1),
                    );
                }
            }
        }
        if let Some(mfa) = &self.mfa {
            if let Some(cmd) = &mfa.command
                && cmd.first().is_none_or(|c| c.is_empty())
            {
                err(
                        "mfa.command",
                        "give the command as an argv array, e.g. [\"ykman\", \"oath\", \"accounts\", \"code\", \"-s\", \"aws\"]".into(),
                    );
            }
            if let Some(t) = mfa.command_timeout
                && !(1..=600).contains(&t.0)
            {
                err(
                    "mfa.command_timeout",
                    "must be between 1 second and 10 minutes".into(),
                );
            }
        }
        if let Some(url) = self.endpoint_url()
            && (!(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10)
        {
            err("sts.endpoint_url", "is not an http(s) URL".into());
        }
        // Durations: at least one second anywhere; AWS's limits against real AWS STS.
        let custom = custom_endpoint || self.endpoint_url().is_some();
        if let Some(d) = self.duration {
            let (limits, what) = if self.role.is_some() {
                (ROLE_DURATION_LIMITS, "a role session")
            } else {
                (SESSION_TOKEN_DURATION_LIMITS, "GetSessionToken")
            };
            errs.extend(check_duration("duration", d, limits, what, custom).err());
        }
        if let Some(d) = self.mfa.as_ref().and_then(|m| m.session_duration) {
            errs.extend(
                check_duration(
                    "mfa.session_duration",
                    d,
                    SESSION_TOKEN_DURATION_LIMITS,
                    "GetSessionToken",
                    custom,
                )
                .err(),
            );
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// A warning when the credentials' lifetime means SDK clients cannot be handed credentials
    /// with more than botocore's 15-minute window left.
    pub fn freshness_warning(&self, refresh_window: u64) -> Option<String> {
        let mut lifetime = self.effective_duration();
        let mut note = "";
        if self.session.is_some() && lifetime > CHAINED_ROLE_MAX {
            lifetime = CHAINED_ROLE_MAX;
            note = " (capped: AWS limits chained role sessions to 1h)";
        }
        let ahead = refresh_window.min(lifetime / 3);
        (ahead <= BOTOCORE_ADVISORY_WINDOW).then(|| {
            format!(
                "credentials last {}{note} and are refreshed {} before expiry; botocore and the \
                 aws CLI re-run credential_process whenever fewer than 15m remain, so they will \
                 call elhaz on every API call — use a duration of at least 1h",
                Secs(lifetime),
                Secs(ahead)
            )
        })
    }
}

fn validate_sso(sso: &SsoConfig) -> Result<(), FieldError> {
    let err = |field: &'static str, message: String| Err(FieldError { field, message });
    if !is_account(&sso.account_id) {
        return err(
            "sso.account_id",
            format!("{:?} is not a 12-digit AWS account id", sso.account_id),
        );
    }
    if sso.role_name.is_empty()
        || sso.role_name.len() > 64
        || !sso
            .role_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b))
    {
        return err(
            "sso.role_name",
            format!(
                "invalid role name {:?}: 1 to 64 characters from A-Z a-z 0-9 _ + = , . @ -",
                sso.role_name
            ),
        );
    }
    match (&sso.session, &sso.start_url, &sso.region) {
        (Some(name), None, None) => {
            check_sso_session_name(name).map_err(|m| FieldError {
                field: "sso.session",
                message: m,
            })?;
        }
        (Some(_), _, _) => {
            return err(
                "sso.session",
                "set either `session` (a [sso_sessions.NAME] of elhaz.toml) or `start_url` and \
                 `region`, not both"
                    .into(),
            );
        }
        (None, Some(url), Some(_)) => {
            check_start_url(url).map_err(|m| FieldError {
                field: "sso.start_url",
                message: m,
            })?;
        }
        (None, None, _) => {
            return err(
                "sso.start_url",
                "[sso] needs `start_url` and `region`, or `session` naming a [sso_sessions.NAME] \
                 of elhaz.toml"
                    .into(),
            );
        }
        (None, Some(_), None) => {
            return err(
                "sso.region",
                "[sso] needs the `region` of the IAM Identity Center instance".into(),
            );
        }
    }
    Ok(())
}

fn check_duration(
    field: &'static str,
    d: Secs,
    (min, max): (u64, u64),
    what: &str,
    custom_endpoint: bool,
) -> Result<(), FieldError> {
    if d.0 == 0 {
        return Err(FieldError {
            field,
            message: "duration must be at least 1 second".into(),
        });
    }
    if !custom_endpoint && !(min..=max).contains(&d.0) {
        return Err(FieldError {
            field,
            message: format!(
                "{d} ({} s) is outside AWS STS's limits for {what}: {} to {} ({min}..={max} s); \
                 these limits are lifted when a custom STS endpoint is set",
                d.0,
                Secs(min),
                Secs(max)
            ),
        });
    }
    Ok(())
}

/// Whether the environment points STS at a custom endpoint (`AWS_ENDPOINT_URL_STS` or
/// `AWS_ENDPOINT_URL`), which lifts AWS's duration limits.
pub fn env_custom_endpoint() -> bool {
    ["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// 1-based line and column of a byte offset.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |i| offset - i - 1) + 1;
    (line, col)
}

/// Turns problems into one error naming the file and, for each problem, line, column and
/// field — never the value (a pasted secret must not reach a terminal, a log or, in shared
/// mode, another uid's client).
fn invalid(file: &Path, src: &str, mut problems: Vec<Problem>) -> Error {
    // In document order (tables are not visited in order); unlocated ones last.
    problems.sort_by_key(|p| p.at.unwrap_or(usize::MAX));
    let described: Vec<String> = problems
        .iter()
        .map(|p| {
            let mut s = String::new();
            if let Some(at) = p.at {
                let (line, col) = line_col(src, at);
                s.push_str(&format!("line {line}, column {col}: "));
            }
            if !p.field.is_empty() {
                s.push_str(&format!("field `{}`: ", p.field));
            }
            s.push_str(&p.message);
            s
        })
        .collect();
    let mut message = match described.as_slice() {
        [one] => one.clone(),
        many => format!("{} problems:\n  {}", many.len(), many.join("\n  ")),
    };
    if problems.len() >= MAX_PROBLEMS {
        message.push_str(&format!("\n  (stopped after {MAX_PROBLEMS} problems)"));
    }
    Error::InvalidConfig {
        file: file.to_path_buf(),
        message,
    }
}

/// A cross-field error as a [`Problem`], located at its field's key.
fn locate(src: &str, fe: &FieldError) -> Problem {
    Problem {
        at: field_span(src, fe.field),
        field: fe.field.to_string(),
        message: fe.message.clone(),
    }
}

/// Locates a dotted field in the document (via toml's spanned parse) for a message.
fn located_error(file: &Path, src: &str, fe: &FieldError) -> Error {
    invalid(file, src, vec![locate(src, fe)])
}

fn field_span(src: &str, path: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(src).ok()?;
    let mut table = doc.get_ref();
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let (key, value) = table.iter().find(|(k, _)| k.get_ref() == part)?;
        if parts.peek().is_none() {
            return Some(key.span().start);
        }
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            _ => return Some(key.span().start),
        }
    }
    None
}

/// Global settings (`elhaz.toml`). Every field is optional; see docs/configuration.md.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Maximum number of cached sessions (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<usize>,
    /// Exit after this long without a request (default: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Secs>,
    /// Refresh this long before expiry, or a third of the lifetime if less (default 20 min).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_window: Option<Secs>,
    /// Session used when a consumer is given no name and `ELHAZ_SESSION` is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_session: Option<SessionName>,
    /// Maximum concurrent client connections (default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Number of daily log files kept (default 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_files: Option<usize>,
    /// Re-warm the sessions that were cached when the daemon last stopped (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewarm: Option<bool>,
    /// Most connections one client uid may hold at once (default: no limit beyond
    /// `max_connections`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_client: Option<usize>,
    /// Most credential requests per second for one session (default: unlimited). Bursts up
    /// to the same number are allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<f64>,
    /// Most bytes the daemon writes to its logs (operational and audit, each) per UTC day, in
    /// MiB (default 100); beyond it lines are dropped and counted, never written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_max_mib_per_day: Option<u64>,
    /// Serve credentials even when their audit line cannot be written (default false: the
    /// request is refused with an audit error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_fail_open: Option<bool>,
    /// One overall deadline for each credential fetch, covering every child process it runs
    /// (a profile's `credential_process`, the MFA `command`) and the STS calls (default 2 min).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch_timeout: Option<Secs>,
    /// How long `daemon stop` waits for the daemon to exit (default 10 s); `--timeout`
    /// overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<Secs>,
    /// Whether `daemon stop` SIGKILLs a daemon that has not exited by then, as `--force` does
    /// (default false); `--no-force` overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_force: Option<bool>,
    /// Fraction (0..=1) of the room between the refresh window and botocore's 15-minute
    /// window over which the refresh points of sessions loaded together are spread (default
    /// 1: all of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_spread: Option<f64>,
    /// `[sts]`: how fast the daemon calls STS on its own (re-warm, refresh-ahead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts: Option<StsSettings>,
    /// `daemon start --shared`: a daemon for a dedicated user, serving other users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedSettings>,
    /// `[client]`: which daemon the CLI may use besides your own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientSettings>,
    /// Where IAM Identity Center tokens are kept besides the daemon's memory: `"aws"` (default:
    /// the AWS CLI's cache, `~/.aws/sso/cache/`, shared with the AWS CLI and SDKs) or `"memory"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso_token_cache: Option<SsoTokenCache>,
    /// `[sso_sessions.NAME]`: IAM Identity Center logins shared by sessions (`[sso] session`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sso_sessions: std::collections::BTreeMap<String, SsoSession>,
}

/// `[sts]` in `elhaz.toml`: the rate of the daemon's own STS calls (re-warm after a restart,
/// refresh-ahead), per STS endpoint. Calls a client waits for are never held back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StsSettings {
    /// Background calls per second per endpoint (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Calls an idle endpoint may make at once (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<f64>,
    /// `[sts.endpoints."URL"]`: `rate` and `burst` for one endpoint (its `endpoint_url`, or
    /// `https://sts.REGION.amazonaws.com`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub endpoints: std::collections::BTreeMap<String, StsRate>,
}

/// `rate` and `burst` of one `[sts.endpoints."URL"]`; what is left out comes from `[sts]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StsRate {
    /// Background calls per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Largest burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<f64>,
}

/// Slowest background STS rate `[sts] rate` accepts (calls per second).
pub const MIN_STS_RATE: f64 = 0.5;
/// Fastest background STS rate `[sts] rate` accepts, and the largest `burst`.
pub const MAX_STS_RATE: f64 = 10_000.0;

/// `[client]` in `elhaz.toml`: the CLI uses a shared daemon only when this (or
/// `ELHAZ_SHARED=USER`) names the user it must run as.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// The user (name or numeric uid) a shared daemon runs as; without it no shared daemon is
    /// ever used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<String>,
    /// Where that daemon listens (default: `ELHAZ_SHARED_SOCKET`, else `/run/elhaz/elhaz.sock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_socket: Option<PathBuf>,
}

/// `sso_token_cache` in `elhaz.toml`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SsoTokenCache {
    /// The AWS CLI's cache files (shared with the AWS CLI, botocore and other SDKs).
    #[default]
    Aws,
    /// The daemon's memory only: every daemon restart needs a new `elhaz sso login`.
    Memory,
}

pub use crate::paths::DEFAULT_SHARED_SOCKET;
/// Default mode of a shared daemon's socket.
pub const DEFAULT_SHARED_SOCKET_MODE: u32 = 0o660;
/// Default mode of a shared daemon's socket directory (when the daemon creates it).
pub const DEFAULT_SHARED_DIR_MODE: u32 = 0o750;

/// `[shared]` in `elhaz.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedSettings {
    /// Socket path (default `/run/elhaz/elhaz.sock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// Socket mode (default `0o660`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_mode: Option<u32>,
    /// Mode of the socket directory when the daemon creates it (default `0o750`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_dir_mode: Option<u32>,
    /// Group owning the socket (and the directory, when the daemon creates it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Who besides the daemon's own user may ask, and for which sessions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<AllowRule>,
    /// Most connections one non-owner uid may hold at once (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_peer: Option<usize>,
    /// Most requests per second one non-owner uid may make, over all its connections
    /// (default 20; bursts up to twice that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_rate_limit: Option<f64>,
}

/// One `[[shared.allow]]` rule: a principal (exactly one of `uid`, `user`, `group`) and the
/// sessions it may use (`"*"` for all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// A numeric uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// A user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A group name: its members (primary or supplementary) match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Sessions this principal may fetch; `"*"` allows all.
    #[serde(default)]
    pub sessions: Vec<String>,
}

/// Default cache capacity.
pub const DEFAULT_CAPACITY: usize = 64;
/// Default refresh window.
pub const DEFAULT_REFRESH_WINDOW: u64 = 20 * 60;
/// Default connection cap.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Default number of log files kept.
pub const DEFAULT_LOG_FILES: usize = 7;
/// Default overall deadline of one credential fetch, in seconds.
pub const DEFAULT_FETCH_TIMEOUT: u64 = 120;
/// Default time `daemon stop` waits for the daemon to exit, in seconds.
pub const DEFAULT_STOP_TIMEOUT: u64 = 10;
/// Default daily log volume cap, in MiB.
pub const DEFAULT_LOG_MAX_MIB_PER_DAY: u64 = 100;
/// Default connection cap for one non-owner uid of a shared daemon.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 16;
/// Default request rate (per second) for one non-owner uid of a shared daemon.
pub const DEFAULT_PEER_RATE_LIMIT: f64 = 20.0;

impl Settings {
    /// Loads `elhaz.toml`; a missing file means defaults. Every problem is reported at once.
    pub fn load(file: &Path) -> Result<Settings, Error> {
        let Some(src) = read_config_file(file)? else {
            return Ok(Settings::default());
        };
        let (s, problems) = redacting::deserialize_all::<Settings>(&src);
        let s = match s {
            Some(s) if problems.is_empty() => s,
            _ => return Err(invalid(file, &src, problems)),
        };
        let mut errs = Vec::new();
        let mut bad = |field: &'static str, message: &str| {
            errs.push(FieldError {
                field,
                message: message.into(),
            })
        };
        if s.capacity.is_some_and(|c| !(1..=100_000).contains(&c)) {
            bad("capacity", "must be between 1 and 100000");
        }
        if s.max_connections
            .is_some_and(|c| !(1..=65_536).contains(&c))
        {
            bad("max_connections", "must be between 1 and 65536");
        }
        if s.log_files.is_some_and(|c| !(1..=365).contains(&c)) {
            bad("log_files", "must be between 1 and 365");
        }
        if s.refresh_window.is_some_and(|w| w.0 == 0) {
            bad("refresh_window", "must be at least 1 second");
        }
        if s.max_connections_per_client.is_some_and(|c| c == 0) {
            bad("max_connections_per_client", "must be at least 1");
        }
        if s.rate_limit.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            bad(
                "rate_limit",
                "must be a positive number of requests per second",
            );
        }
        if s.fetch_timeout.is_some_and(|t| !(1..=3600).contains(&t.0)) {
            bad("fetch_timeout", "must be between 1 second and 1 hour");
        }
        if s.stop_timeout.is_some_and(|t| t.0 > 3600) {
            bad("stop_timeout", "must be at most 1 hour");
        }
        if s.log_max_mib_per_day
            .is_some_and(|m| !(1..=1_048_576).contains(&m))
        {
            bad("log_max_mib_per_day", "must be between 1 and 1048576 (MiB)");
        }
        if let Some(sh) = &s.shared {
            if sh.max_connections_per_peer.is_some_and(|c| c == 0) {
                bad("shared.max_connections_per_peer", "must be at least 1");
            }
            if sh
                .peer_rate_limit
                .is_some_and(|r| !(r > 0.0 && r.is_finite()))
            {
                bad(
                    "shared.peer_rate_limit",
                    "must be a positive number of requests per second",
                );
            }
            for (field, mode) in [
                ("shared.socket_mode", sh.socket_mode),
                ("shared.socket_dir_mode", sh.socket_dir_mode),
            ] {
                if mode.is_some_and(|m| m > 0o777) {
                    bad(field, "must be a permission mode such as 0o660");
                }
            }
            for rule in &sh.allow {
                let principals = [
                    rule.uid.is_some(),
                    rule.user.is_some(),
                    rule.group.is_some(),
                ];
                if principals.iter().filter(|p| **p).count() != 1 {
                    bad(
                        "shared.allow",
                        "each rule names exactly one of uid, user or group",
                    );
                }
                if rule.sessions.is_empty() {
                    bad(
                        "shared.allow",
                        "each rule lists the sessions it may use (\"*\" for all)",
                    );
                }
                if rule
                    .sessions
                    .iter()
                    .any(|n| n != "*" && validate_name(n).is_err())
                {
                    bad(
                        "shared.allow",
                        "a rule lists an invalid session name (use \"*\" or names of [A-Za-z0-9._-])",
                    );
                }
            }
        }
        if s.client
            .as_ref()
            .and_then(|c| c.shared.as_deref())
            .is_some_and(|u| u.trim().is_empty())
        {
            bad(
                "client.shared",
                "names the user a shared daemon runs as, e.g. \"elhaz\"",
            );
        }
        for (name, sso) in &s.sso_sessions {
            if let Err(m) =
                check_sso_session_name(name).and_then(|()| check_start_url(&sso.start_url))
            {
                bad("sso_sessions", &format!("[sso_sessions.{name}]: {m}"));
            }
        }
        if s.refresh_spread.is_some_and(|f| !(0.0..=1.0).contains(&f)) {
            bad(
                "refresh_spread",
                "must be a fraction between 0 and 1 (1 spreads over all the room)",
            );
        }
        if let Some(sts) = &s.sts {
            let own = ("sts.rate", "sts.burst", String::new(), sts.rate, sts.burst);
            let per_endpoint = sts.endpoints.iter().map(|(url, r)| {
                let (rate, burst) = ("sts.endpoints.rate", "sts.endpoints.burst");
                (
                    rate,
                    burst,
                    format!("[sts.endpoints.{url:?}]: "),
                    r.rate,
                    r.burst,
                )
            });
            for (rate_field, burst_field, at, rate, burst) in
                std::iter::once(own).chain(per_endpoint)
            {
                if rate.is_some_and(|r| !(MIN_STS_RATE..=MAX_STS_RATE).contains(&r)) {
                    let m =
                        format!("{at}must be a number of calls per second between 0.5 and 10000");
                    bad(rate_field, &m);
                }
                if burst.is_some_and(|b| !(1.0..=MAX_STS_RATE).contains(&b)) {
                    let m = format!("{at}must be a number of calls between 1 and 10000");
                    bad(burst_field, &m);
                }
            }
        }
        if s.idle_timeout.is_some_and(|w| w.0 == 0) {
            bad(
                "idle_timeout",
                "must be at least 1 second (omit it to never exit)",
            );
        }
        if errs.is_empty() {
            Ok(s)
        } else {
            Err(invalid(
                file,
                &src,
                errs.iter().map(|e| locate(&src, e)).collect(),
            ))
        }
    }

    /// Cache capacity.
    pub fn capacity(&self) -> usize {
        self.capacity.unwrap_or(DEFAULT_CAPACITY)
    }
    /// Refresh window in seconds.
    pub fn refresh_window(&self) -> u64 {
        self.refresh_window.map_or(DEFAULT_REFRESH_WINDOW, |s| s.0)
    }
    /// Connection cap.
    pub fn max_connections(&self) -> usize {
        self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS)
    }
    /// Log files kept.
    pub fn log_files(&self) -> usize {
        self.log_files.unwrap_or(DEFAULT_LOG_FILES)
    }
    /// The refresh spread fraction.
    pub fn refresh_spread(&self) -> f64 {
        self.refresh_spread.unwrap_or(1.0)
    }
    /// Whether to re-warm sessions after a restart.
    pub fn rewarm(&self) -> bool {
        self.rewarm.unwrap_or(true)
    }
    /// The overall deadline of one credential fetch.
    pub fn fetch_timeout(&self) -> Duration {
        Duration::from_secs(self.fetch_timeout.map_or(DEFAULT_FETCH_TIMEOUT, |t| t.0))
    }
    /// How long `daemon stop` waits for the exit when `--timeout` is not given.
    pub fn stop_timeout(&self) -> Duration {
        Duration::from_secs(self.stop_timeout.map_or(DEFAULT_STOP_TIMEOUT, |t| t.0))
    }
    /// Whether `daemon stop` SIGKILLs after the timeout when neither `--force` nor
    /// `--no-force` is given.
    pub fn stop_force(&self) -> bool {
        self.stop_force.unwrap_or(false)
    }
    /// Daily log volume cap in bytes (per stream).
    pub fn log_max_bytes_per_day(&self) -> u64 {
        self.log_max_mib_per_day
            .unwrap_or(DEFAULT_LOG_MAX_MIB_PER_DAY)
            .saturating_mul(1024 * 1024)
    }
    /// Whether credentials are served when their audit line cannot be written.
    pub fn audit_fail_open(&self) -> bool {
        self.audit_fail_open.unwrap_or(false)
    }
}

/// The directory of session configs.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// One entry of [`Store::list`].
#[derive(Debug)]
pub struct Listed {
    /// Session name.
    pub name: String,
    /// The config, or why it could not be loaded.
    pub config: Result<SessionConfig, Error>,
}

impl Store {
    /// A store rooted at `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of `name`'s file.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.toml"))
    }

    /// Reads a config's raw text.
    pub fn read(&self, name: &str) -> Result<String, Error> {
        validate_name(name)?;
        let file = self.file(name);
        read_config_file(&file)?.ok_or_else(|| Error::ConfigNotFound {
            name: name.to_string(),
            file,
        })
    }

    /// Loads and validates a config.
    pub fn load(&self, name: &str, custom_endpoint: bool) -> Result<SessionConfig, Error> {
        let src = self.read(name)?;
        let file = self.file(name);
        let cfg = SessionConfig::parse(&src, &file, custom_endpoint)?;
        if cfg.session.as_ref().is_some_and(|s| s.0 == name) {
            return Err(located_error(
                &file,
                &src,
                &FieldError {
                    field: "session",
                    message: "a session cannot chain from itself".into(),
                },
            ));
        }
        Ok(cfg)
    }

    /// Names of every config, sorted.
    pub fn names(&self) -> Result<Vec<String>, Error> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("cannot list {}", self.dir.display()), e)),
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let stem = name.strip_suffix(".toml")?;
                validate_name(stem).ok()?;
                Some(stem.to_string())
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Every config with its load result.
    pub fn list(&self, custom_endpoint: bool) -> Result<Vec<Listed>, Error> {
        Ok(self
            .names()?
            .into_iter()
            .map(|name| Listed {
                config: self.load(&name, custom_endpoint),
                name,
            })
            .collect())
    }

    /// Takes the store's write lock (blocking until it is free).
    fn lock(&self) -> Result<std::fs::File, Error> {
        // Writes go only into a directory nobody else can swap or plant files in.
        crate::fsafe::check_dir_chain(&self.dir)?;
        crate::fsafe::create_dir_mode(&self.dir, 0o700)?;
        let path = self.dir.join(".lock");
        let f = open_private(&path)?;
        f.lock()
            .map_err(|e| Error::io(format!("cannot lock {}", path.display()), e))?;
        Ok(f)
    }

    /// Atomically writes `text` (already validated) as `name`'s config. Without `force`, an
    /// existing config is an error.
    pub fn write(&self, name: &str, text: &str, force: bool) -> Result<PathBuf, Error> {
        validate_name(name)?;
        let _lock = self.lock()?;
        let file = self.file(name);
        if !force && std::fs::symlink_metadata(&file).is_ok() {
            return Err(Error::ConfigExists {
                name: name.into(),
                file,
            });
        }
        atomic_write(&file, text.as_bytes())?;
        Ok(file)
    }

    /// Removes `name`'s config.
    pub fn remove(&self, name: &str) -> Result<PathBuf, Error> {
        validate_name(name)?;
        let _lock = self.lock()?;
        let file = self.file(name);
        match std::fs::remove_file(&file) {
            Ok(()) => {
                sync_dir(&self.dir)?;
                Ok(file)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::ConfigNotFound {
                name: name.into(),
                file,
            }),
            Err(e) => Err(Error::io(format!("cannot remove {}", file.display()), e)),
        }
    }
}

/// How many problems one file reports before stopping (each costs a re-parse).
const MAX_PROBLEMS: usize = 20;

/// One problem found in a config file: where (byte span), which field (dotted path) and what.
/// Never holds the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    /// Byte offset the problem is reported at, if known.
    at: Option<usize>,
    /// Dotted field path, e.g. `role.arn` or `shared.allow[1].user`; empty for syntax errors.
    field: String,
    /// What is wrong (no config values).
    message: String,
}

/// A deserializer over toml's spanned document whose errors never quote a value and know
/// their field path and position; see [`deserialize_all`].
mod redacting {
    use std::collections::HashSet;
    use std::fmt;
    use std::ops::Range;

    use serde::de::{self, DeserializeSeed, Expected, IntoDeserializer, Unexpected, Visitor};
    use toml::Spanned;
    use toml::de::{DeTable, DeValue};

    use super::{Problem, closest};

    /// A path segment, innermost first while an error travels outwards.
    #[derive(Debug)]
    enum Seg {
        Key(String),
        Index(usize),
    }

    /// A deserialization error without the value that caused it.
    #[derive(Debug)]
    pub(super) struct DeError {
        /// Innermost segment first.
        path: Vec<Seg>,
        span: Option<Range<usize>>,
        message: String,
        /// Start of the key to leave out on the next attempt (the innermost key involved).
        skip: Option<usize>,
    }

    impl DeError {
        fn new(message: String) -> DeError {
            DeError {
                path: Vec::new(),
                span: None,
                message,
                skip: None,
            }
        }

        fn at(mut self, span: Range<usize>) -> DeError {
            self.span.get_or_insert(span);
            self
        }

        fn in_key(
            mut self,
            key: &Spanned<toml::de::DeString<'_>>,
            value_span: Range<usize>,
        ) -> DeError {
            self.path.push(Seg::Key(key.get_ref().to_string()));
            self.span.get_or_insert(value_span);
            self.skip.get_or_insert(key.span().start);
            self
        }

        fn field(&self) -> String {
            let mut s = String::new();
            for seg in self.path.iter().rev() {
                match seg {
                    Seg::Key(k) if s.is_empty() => s.push_str(k),
                    Seg::Key(k) => {
                        s.push('.');
                        s.push_str(k);
                    }
                    Seg::Index(i) => s.push_str(&format!("[{i}]")),
                }
            }
            s
        }
    }

    impl fmt::Display for DeError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.message)
        }
    }

    impl std::error::Error for DeError {}

    /// What kind of value was found, without the value itself.
    fn kind(u: &Unexpected<'_>) -> &'static str {
        match u {
            Unexpected::Bool(_) => "a boolean",
            Unexpected::Unsigned(_) | Unexpected::Signed(_) => "an integer",
            Unexpected::Float(_) => "a float",
            Unexpected::Char(_) | Unexpected::Str(_) => "a string",
            Unexpected::Bytes(_) => "bytes",
            Unexpected::Unit => "nothing",
            Unexpected::Option => "an optional value",
            Unexpected::NewtypeStruct | Unexpected::NewtypeVariant => "a value",
            Unexpected::Seq => "an array",
            Unexpected::Map | Unexpected::StructVariant => "a table",
            Unexpected::Enum | Unexpected::UnitVariant | Unexpected::TupleVariant => "a variant",
            Unexpected::Other(_) => "a value of another type",
        }
    }

    impl de::Error for DeError {
        fn custom<T: fmt::Display>(msg: T) -> DeError {
            DeError::new(msg.to_string())
        }
        fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> DeError {
            DeError::new(format!("expected {exp}, found {}", kind(&unexp)))
        }
        fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> DeError {
            DeError::new(format!("invalid value ({}): expected {exp}", kind(&unexp)))
        }
        fn invalid_length(len: usize, exp: &dyn Expected) -> DeError {
            DeError::new(format!("has {len} elements; expected {exp}"))
        }
        fn unknown_variant(_variant: &str, expected: &'static [&'static str]) -> DeError {
            DeError::new(format!(
                "unknown value; expected one of {}",
                expected.join(", ")
            ))
        }
        fn unknown_field(field: &str, expected: &'static [&'static str]) -> DeError {
            let hint = match closest(field, expected.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "expected one of {}",
                    expected
                        .iter()
                        .map(|e| format!("`{e}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            // The path stays the enclosing table's: "field `role`: unknown field `rol`".
            DeError::new(format!("unknown field `{field}`; {hint}"))
        }
        fn missing_field(field: &'static str) -> DeError {
            let mut e = DeError::new("is required".into());
            e.path.push(Seg::Key(field.to_string()));
            e
        }
        fn duplicate_field(field: &'static str) -> DeError {
            let mut e = DeError::new("is set twice".into());
            e.path.push(Seg::Key(field.to_string()));
            e
        }
    }

    /// A value of the document plus the keys to leave out.
    struct Node<'a, 'i> {
        v: &'a Spanned<DeValue<'i>>,
        skip: &'a HashSet<usize>,
    }

    impl<'de> de::Deserializer<'de> for Node<'_, '_> {
        type Error = DeError;

        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let span = self.v.span();
            let out = match self.v.get_ref() {
                DeValue::String(s) => visitor.visit_str(s),
                DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                    Ok(n) => visitor.visit_i64(n),
                    Err(_) => match u64::from_str_radix(i.as_str(), i.radix()) {
                        Ok(n) => visitor.visit_u64(n),
                        Err(_) => Err(DeError::new("integer out of range".into())),
                    },
                },
                DeValue::Float(f) => match f.as_str().parse::<f64>() {
                    Ok(x) => visitor.visit_f64(x),
                    Err(_) => Err(DeError::new("invalid float".into())),
                },
                DeValue::Boolean(b) => visitor.visit_bool(*b),
                DeValue::Datetime(_) => Err(de::Error::invalid_type(
                    Unexpected::Other("a datetime"),
                    &visitor,
                )),
                DeValue::Array(a) => visitor.visit_seq(Seq {
                    iter: a.iter().enumerate(),
                    skip: self.skip,
                }),
                DeValue::Table(t) => visitor.visit_map(Map {
                    iter: t.iter(),
                    pending: None,
                    skip: self.skip,
                }),
            };
            out.map_err(|e| e.at(span))
        }

        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let span = self.v.span();
            visitor.visit_some(self).map_err(|e| e.at(span))
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            visitor: V,
        ) -> Result<V::Value, DeError> {
            let span = self.v.span();
            visitor.visit_newtype_struct(self).map_err(|e| e.at(span))
        }

        /// A unit variant is spelt as a string (`sso_token_cache = "memory"`); anything else
        /// goes through `deserialize_any` (and is refused by the enum's visitor).
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            name: &'static str,
            variants: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, DeError> {
            let span = self.v.span();
            match self.v.get_ref() {
                DeValue::String(s) => {
                    let d: de::value::StrDeserializer<'_, DeError> = s.as_ref().into_deserializer();
                    visitor.visit_enum(d).map_err(|e| e.at(span))
                }
                _ => {
                    let _ = (name, variants);
                    self.deserialize_any(visitor)
                }
            }
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
            ignored_any
        }
    }

    struct Seq<'a, I> {
        iter: I,
        skip: &'a HashSet<usize>,
    }

    impl<'de, 'a, 'i: 'a, I> de::SeqAccess<'de> for Seq<'a, I>
    where
        I: Iterator<Item = (usize, &'a Spanned<DeValue<'i>>)>,
    {
        type Error = DeError;
        fn next_element_seed<T: DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<Option<T::Value>, DeError> {
            let Some((i, v)) = self.iter.next() else {
                return Ok(None);
            };
            seed.deserialize(Node { v, skip: self.skip })
                .map(Some)
                .map_err(|mut e| {
                    e.path.push(Seg::Index(i));
                    e.at(v.span())
                })
        }
    }

    struct Map<'a, 'i, I> {
        iter: I,
        pending: Option<(
            &'a Spanned<toml::de::DeString<'i>>,
            &'a Spanned<DeValue<'i>>,
        )>,
        skip: &'a HashSet<usize>,
    }

    impl<'de, 'a, 'i: 'a, I> de::MapAccess<'de> for Map<'a, 'i, I>
    where
        I: Iterator<
            Item = (
                &'a Spanned<toml::de::DeString<'i>>,
                &'a Spanned<DeValue<'i>>,
            ),
        >,
    {
        type Error = DeError;
        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, DeError> {
            let Some((k, v)) = self
                .iter
                .by_ref()
                .find(|(k, _)| !self.skip.contains(&k.span().start))
            else {
                return Ok(None);
            };
            self.pending = Some((k, v));
            let key: de::value::StrDeserializer<'_, DeError> =
                k.get_ref().as_ref().into_deserializer();
            seed.deserialize(key).map(Some).map_err(|mut e| {
                // The key itself is the problem (unknown field): report and skip the key.
                e.span.get_or_insert(k.span());
                e.skip.get_or_insert(k.span().start);
                e
            })
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(
            &mut self,
            seed: V,
        ) -> Result<V::Value, DeError> {
            let (k, v) = self
                .pending
                .take()
                .ok_or_else(|| DeError::new("value requested before its key".into()))?;
            seed.deserialize(Node { v, skip: self.skip })
                .map_err(|e| e.in_key(k, v.span()))
        }
    }

    /// Deserializes `T` from `src`, reporting every field problem rather than only the first:
    /// after an error the offending key is left out and the document is deserialized again
    /// (at most [`super::MAX_PROBLEMS`] times). A syntax error is reported alone. Returns the
    /// value built without the offending keys, if any could be built, and the problems.
    pub(super) fn deserialize_all<T: de::DeserializeOwned>(src: &str) -> (Option<T>, Vec<Problem>) {
        let doc = match DeTable::parse(src) {
            Ok(doc) => doc,
            Err(e) => {
                return (
                    None,
                    vec![Problem {
                        at: e.span().map(|s| s.start),
                        field: String::new(),
                        message: e.message().to_string(),
                    }],
                );
            }
        };
        let span = doc.span();
        let root = Spanned::new(span, DeValue::Table(doc.into_inner()));
        let mut skip = HashSet::new();
        let mut problems = Vec::new();
        // Each attempt leaves out one more key; bounded twice over (see the dedup below).
        for _ in 0..2 * super::MAX_PROBLEMS {
            if problems.len() >= super::MAX_PROBLEMS {
                break;
            }
            match T::deserialize(Node {
                v: &root,
                skip: &skip,
            }) {
                Ok(t) => return (Some(t), problems),
                Err(e) => {
                    let again = e.skip.is_some_and(|s| skip.insert(s));
                    let field = e.field();
                    // A key left out for being invalid is then "missing": one report is enough.
                    if !problems
                        .iter()
                        .any(|p: &Problem| p.field == field && !field.is_empty())
                    {
                        problems.push(Problem {
                            at: e.span.as_ref().map(|s| s.start),
                            field,
                            message: e.message,
                        });
                    }
                    if !again {
                        break;
                    }
                }
            }
        }
        (None, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<SessionConfig, Error> {
        SessionConfig::parse(src, Path::new("x.toml"), false)
    }

    #[test]
    fn names() {
        for ok in ["dev", "a", "prod-admin_1.x", &"a".repeat(64)] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            ".hidden",
            "a/b",
            "a b",
            "ü",
            &"a".repeat(65),
            "..",
            "x\0",
            "-dev",
            "--help",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!("3600".parse::<Secs>().unwrap(), Secs(3600));
        assert_eq!("1h".parse::<Secs>().unwrap(), Secs(3600));
        assert_eq!("90m".parse::<Secs>().unwrap(), Secs(5400));
        assert_eq!("1h 30m".parse::<Secs>().unwrap(), Secs(5400));
        assert!("abc".parse::<Secs>().is_err());
        assert!("1.5s".parse::<Secs>().is_err() || "1.5s".parse::<Secs>().is_ok());
    }

    #[test]
    fn full_config_round_trips() {
        let src = r#"
description = "prod admin"
region = "eu-west-1"
profile = "corp"
duration = "1h"

[role]
arn = "arn:aws:iam::123456789012:role/Admin"
session_name = "alice"
external_id = "ext-123"
policy = '{"Version":"2012-10-17","Statement":[]}'
policy_arns = ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
transitive_tag_keys = ["team"]
source_identity = "alice"
tags = { team = "infra" }

[mfa]
serial = "arn:aws:iam::123456789012:mfa/alice"
command = ["ykman", "oath", "accounts", "code", "-s", "aws"]
session_duration = "12h"

[sts]
region = "eu-west-1"
"#;
        let cfg = parse(src).unwrap();
        assert_eq!(cfg.duration, Some(Secs(3600)));
        assert_eq!(cfg.source(), Source::Profile("corp".into()));
        let again = parse(&cfg.to_toml()).unwrap();
        assert_eq!(cfg, again);
    }

    #[test]
    fn errors_name_line_column_and_field() {
        let e = parse("[role]\narn = \"arn:aws:iam::12:role/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.toml") && e.contains("line 2") && e.contains("role ARN"),
            "{e}"
        );

        let e = parse("[role]\narn = \"arn:aws:iam::123456789012:role/x\"\nrol = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("unknown field"), "{e}");

        let e = parse("duration = 60\n[role]\narn = \"arn:aws:iam::123456789012:role/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 1, column 1") && e.contains("`duration`"),
            "{e}"
        );
        assert!(e.contains("900..=43200"), "{e}");

        let e = parse("profile = \"a\"\nkeyring = \"b\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("at most one"), "{e}");
    }

    #[test]
    fn every_field_error_is_reported_without_its_value() {
        let secret = "wJalrXUtnFEMI/K7MDENG";
        let src = format!(
            "region = \"{secret}\"\nrol = 1\n[role]\narn = \"{secret}\"\ntags = {{ a = 1 }}\n\
             [mfa]\ncommand = \"{secret}\"\n"
        );
        let e = parse(&src).unwrap_err().to_string();
        for needle in [
            "6 problems",
            "line 1, column 10: field `region`: invalid region",
            "line 2, column 1: unknown field `rol`; did you mean `role`?",
            "line 4, column 7: field `role.arn`: invalid role ARN",
            "field `role.tags.a`: expected a string, found an integer",
            "field `mfa.command`: expected a sequence, found a string",
            "field `mfa.serial`: is required",
        ] {
            assert!(e.contains(needle), "{needle:?} not in:\n{e}");
        }
        assert!(!e.contains(secret), "{e}");
        // A syntax error is one problem, and the offending line is not quoted back.
        let e = parse(&format!("region = {secret}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && !e.contains(secret), "{e}");
    }

    #[test]
    fn suggestions_are_close_matches_only() {
        let names = ["dev", "prod", "prod-eu"];
        assert_eq!(closest("deb", names), Some("dev"));
        assert_eq!(closest("prdo", names), Some("prod"));
        assert_eq!(closest("Prod-EU", names), Some("prod-eu"));
        assert_eq!(closest("staging", names), None);
        assert_eq!(closest("dev", names), None);
        assert_eq!(closest(&"x".repeat(200), names), None);
    }

    #[test]
    fn custom_endpoint_lifts_duration_limits() {
        let src = "duration = 5\n[role]\narn = \"arn:aws:iam::123456789012:role/x\"\n";
        assert!(parse(src).is_err());
        SessionConfig::parse(src, Path::new("x"), true).unwrap();
        let with_url = format!("{src}[sts]\nendpoint_url = \"http://127.0.0.1:5000\"\n");
        parse(&with_url).unwrap();
        let zero = "duration = 0\n[role]\narn = \"arn:aws:iam::123456789012:role/x\"\n";
        assert!(SessionConfig::parse(zero, Path::new("x"), true).is_err());
    }

    #[test]
    fn arns_are_checked() {
        assert!(
            "arn:aws:iam::123456789012:role/a/b"
                .parse::<RoleArn>()
                .is_ok()
        );
        assert!(
            "arn:aws-cn:iam::123456789012:role/x"
                .parse::<RoleArn>()
                .is_ok()
        );
        for bad in [
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:s3::123456789012:role/x",
            "arn:aws:iam:us-east-1:123456789012:role/x",
            "arn:aws:iam::123456789012:role/",
            "role/x",
        ] {
            assert!(bad.parse::<RoleArn>().is_err(), "{bad}");
        }
        assert!(
            "arn:aws:iam::aws:policy/ReadOnlyAccess"
                .parse::<PolicyArn>()
                .is_ok()
        );
        assert!("GAHT12345678".parse::<MfaSerial>().is_ok());
    }

    #[test]
    fn freshness_warning_for_short_lifetimes() {
        let mut cfg = parse("[role]\narn = \"arn:aws:iam::123456789012:role/x\"\n").unwrap();
        assert!(cfg.freshness_warning(1200).is_none());
        cfg.duration = Some(Secs(900));
        assert!(cfg.freshness_warning(1200).is_some());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// Hostile text never panics the parser or the error locator.
        #[test]
        fn parser_survives_arbitrary_text(s in "[\\[\\]a-z_.=\"' 0-9\n{}#-]{0,300}") {
            let _ = SessionConfig::parse(&s, Path::new("fuzz.toml"), false);
            let _ = SessionConfig::parse(&s, Path::new("fuzz.toml"), true);
        }

        /// Any config built from valid parts round-trips through TOML unchanged.
        #[test]
        fn valid_configs_round_trip(
            account in "[0-9]{12}",
            role in "[A-Za-z][A-Za-z0-9_+=,.@-]{0,30}",
            dur in 900u64..=43_200,
            region in proptest::option::of("[a-z]{2}-[a-z]{4,9}-[1-3]"),
            desc in proptest::option::of("[ -~]{0,40}"),
        ) {
            let cfg = SessionConfig {
                description: desc,
                region: region.map(Region),
                duration: Some(Secs(dur)),
                role: Some(RoleConfig {
                    arn: RoleArn(format!("arn:aws:iam::{account}:role/{role}")),
                    session_name: None,
                    external_id: None,
                    policy: None,
                    policy_arns: vec![],
                    transitive_tag_keys: vec![],
                    source_identity: None,
                    tags: BTreeMap::new(),
                }),
                ..Default::default()
            };
            let back = SessionConfig::parse(&cfg.to_toml(), Path::new("x"), false).unwrap();
            proptest::prop_assert_eq!(back, cfg);
        }
    }

    #[test]
    fn settings_validate() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("elhaz.toml");
        assert_eq!(Settings::load(&f).unwrap(), Settings::default());
        std::fs::write(&f, "capacity = 0\n").unwrap();
        let e = Settings::load(&f).unwrap_err().to_string();
        assert!(e.contains("capacity") && e.contains("line 1"), "{e}");
        std::fs::write(&f, "capacity = 8\nidle_timeout = \"10m\"\n").unwrap();
        let s = Settings::load(&f).unwrap();
        assert_eq!((s.capacity(), s.idle_timeout), (8, Some(Secs(600))));
        assert_eq!(
            (s.stop_timeout(), s.stop_force()),
            (Duration::from_secs(DEFAULT_STOP_TIMEOUT), false)
        );
        std::fs::write(&f, "stop_timeout = \"2s\"\nstop_force = true\n").unwrap();
        let s = Settings::load(&f).unwrap();
        assert_eq!(
            (s.stop_timeout(), s.stop_force()),
            (Duration::from_secs(2), true)
        );
        std::fs::write(&f, "stop_timeout = \"2h\"\n").unwrap();
        let e = Settings::load(&f).unwrap_err().to_string();
        assert!(e.contains("stop_timeout") && e.contains("1 hour"), "{e}");
    }

    /// A unit-variant enum is spelt as a string (the redacting deserializer once refused it).
    #[test]
    fn settings_enum_from_a_string() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("elhaz.toml");
        std::fs::write(&f, "sso_token_cache = \"memory\"\n").unwrap();
        let s = Settings::load(&f).unwrap();
        assert_eq!(s.sso_token_cache, Some(SsoTokenCache::Memory));
        std::fs::write(&f, "sso_token_cache = \"aws\"\n").unwrap();
        assert_eq!(
            Settings::load(&f).unwrap().sso_token_cache,
            Some(SsoTokenCache::Aws)
        );
        std::fs::write(&f, "sso_token_cache = \"disk\"\n").unwrap();
        let e = Settings::load(&f).unwrap_err().to_string();
        assert!(e.contains("sso_token_cache") && e.contains("memory"), "{e}");
        std::fs::write(&f, "sso_token_cache = 1\n").unwrap();
        assert!(Settings::load(&f).is_err());
    }

    #[test]
    fn sts_rate_settings_validate_and_the_example_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("elhaz.toml");
        std::fs::write(
            &f,
            "refresh_spread = 0.5\n[sts]\nrate = 10\nburst = 2\n\
             [sts.endpoints.\"http://127.0.0.1:1\"]\nrate = 1\n",
        )
        .unwrap();
        let s = Settings::load(&f).unwrap();
        assert_eq!(s.refresh_spread(), 0.5);
        let sts = s.sts.unwrap();
        assert_eq!((sts.rate, sts.burst), (Some(10.0), Some(2.0)));
        assert_eq!(sts.endpoints["http://127.0.0.1:1"].rate, Some(1.0));
        for (text, field) in [
            ("refresh_spread = 1.5\n", "refresh_spread"),
            ("[sts]\nrate = 0\n", "sts.rate"),
            ("[sts]\nrate = nan\n", "sts.rate"),
            ("[sts]\nburst = 0.5\n", "sts.burst"),
            ("[sts.endpoints.\"u\"]\nrate = -1\n", "sts.endpoints.rate"),
        ] {
            std::fs::write(&f, text).unwrap();
            let e = Settings::load(&f).unwrap_err().to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
        std::fs::write(&f, "[sts]\nrte = 1\n").unwrap();
        assert!(Settings::load(&f).is_err(), "unknown fields are rejected");
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/examples/elhaz.toml");
        let s = Settings::load(&example).unwrap();
        assert_eq!(s.sts.and_then(|s| s.rate), Some(20.0));
    }

    #[test]
    fn store_round_trip_and_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("configs"));
        let text = "[role]\narn = \"arn:aws:iam::123456789012:role/x\"\n";
        store.write("a", text, false).unwrap();
        assert!(matches!(
            store.write("a", text, false),
            Err(Error::ConfigExists { .. })
        ));
        store.write("a", text, true).unwrap();
        assert_eq!(store.names().unwrap(), vec!["a".to_string()]);
        store.load("a", false).unwrap();
        store.remove("a").unwrap();
        assert!(matches!(
            store.remove("a"),
            Err(Error::ConfigNotFound { .. })
        ));
    }
}
