//! Session configs and global settings: schema, validation and the atomic on-disk store.
//!
//! One TOML file per named session (`configs/NAME.toml`) plus one global `elhaz.toml`. Configs
//! hold no secrets — static keys are not even a field (unknown fields are rejected); long-term
//! keys live in the OS keyring and are referenced by entry name.
//!
//! Validation happens in two layers. Field-local rules (ARN shapes, name charsets, durations
//! that parse) run during deserialization, so `toml` reports them with the exact span. Rules
//! that depend on several fields or on the environment (duration limits, which only apply
//! against real AWS STS; one source at most) run afterwards and are located by walking the
//! spanned document, so every error still names file, line, column and field.
//!
//! Writes are atomic: a temp file in the same directory (created 0600), `fsync`, `rename`,
//! `fsync` of the directory — all under an exclusive `flock` on `configs/.lock`, so concurrent
//! `config add` runs lose nothing and a crash leaves either the old file or the new one.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// Largest config or settings file we read.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// AWS limits for AssumeRole and AssumeRoleWithWebIdentity DurationSeconds.
pub const ROLE_DURATION_LIMITS: (u64, u64) = (900, 43_200);
/// AWS limits for GetSessionToken DurationSeconds.
pub const SESSION_TOKEN_DURATION_LIMITS: (u64, u64) = (900, 129_600);
/// AWS caps a role session assumed with role credentials (role chaining) at one hour.
pub const CHAINED_ROLE_MAX: u64 = 3_600;
/// botocore re-runs credential_process when fewer than this many seconds remain.
pub const BOTOCORE_ADVISORY_WINDOW: u64 = 15 * 60;

/// Checks a session name: `[A-Za-z0-9._-]{1,64}`, not starting with `.` (so `.lock` and temp
/// files can never collide with a config).
pub fn validate_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
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
        let d = humantime::parse_duration(s)
            .map_err(|e| format!("invalid duration {s:?} ({e}); use seconds or e.g. 1h, 90m"))?;
        if d.subsec_nanos() != 0 {
            return Err(format!("invalid duration {s:?}: use whole seconds"));
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
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) if n >= 0 => Ok(Secs(n as u64)),
            Raw::Int(n) => Err(serde::de::Error::custom(format!(
                "duration must not be negative (got {n})"
            ))),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
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
    validate_name(s).map_err(|e| e.to_string())
}

fn check_region(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("invalid region {s:?}; expected e.g. us-east-1"))
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
        return Err(format!("invalid {kind} ARN {s:?}; expected {example}"));
    };
    let account_ok = is_account(account) || (aws_owned_ok && account == "aws");
    let name = resource
        .strip_prefix(kind)
        .and_then(|r| r.strip_prefix('/'));
    if service != "iam" || !region.is_empty() || !account_ok || name.is_none_or(str::is_empty) {
        return Err(format!("invalid {kind} ARN {s:?}; expected {example}"));
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
        Err(format!(
            "invalid MFA serial {s:?}; expected arn:aws:iam::123456789012:mfa/NAME or a hardware token serial"
        ))
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
            "invalid {what} {s:?}: {min} to {max} characters from A-Z a-z 0-9 _ + = , . @ -{}",
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
    /// Parses and validates a config. `file` is used in messages only.
    pub fn parse(src: &str, file: &Path, custom_endpoint: bool) -> Result<SessionConfig, Error> {
        let cfg: SessionConfig = toml::from_str(src).map_err(|e| toml_error(file, src, &e))?;
        if let Err(fe) = cfg.validate(custom_endpoint) {
            return Err(located_error(file, src, &fe));
        }
        Ok(cfg)
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
    pub fn validate(&self, custom_endpoint: bool) -> Result<(), FieldError> {
        let err = |field: &'static str, message: String| Err(FieldError { field, message });
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
            return err(
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
            return err("profile", "profile name is empty".into());
        }
        if let Some(k) = &self.keyring
            && (k.trim().is_empty() || k.len() > 128)
        {
            return err(
                "keyring",
                "keyring entry must be 1 to 128 characters".into(),
            );
        }
        if let Some(sso) = &self.sso {
            validate_sso(sso)?;
        }
        if self.role.is_none() {
            if self.web_identity.is_some() {
                return err(
                    "web_identity",
                    "web identity needs a [role] with the arn to assume".into(),
                );
            }
            if self.session.is_some() {
                return err(
                    "session",
                    "chaining from another session needs a [role] to assume".into(),
                );
            }
        }
        if let Some(role) = &self.role {
            if role.policy_arns.len() > 10 {
                return err("role.policy_arns", "at most 10 policy ARNs".into());
            }
            if role.tags.len() > 50 {
                return err("role.tags", "at most 50 session tags".into());
            }
            for (k, v) in &role.tags {
                if k.is_empty() || k.len() > 128 || v.len() > 256 {
                    return err(
                        "role.tags",
                        format!("tag {k:?}: keys are 1 to 128 characters, values at most 256"),
                    );
                }
            }
            for k in &role.transitive_tag_keys {
                if !role.tags.contains_key(k) {
                    return err(
                        "role.transitive_tag_keys",
                        format!("transitive tag key {k:?} is not one of [role.tags]"),
                    );
                }
            }
        }
        if let Some(mfa) = &self.mfa {
            if let Some(cmd) = &mfa.command
                && cmd.first().is_none_or(|c| c.is_empty())
            {
                return err(
                        "mfa.command",
                        "give the command as an argv array, e.g. [\"ykman\", \"oath\", \"accounts\", \"code\", \"-s\", \"aws\"]".into(),
                    );
            }
            if let Some(t) = mfa.command_timeout
                && !(1..=600).contains(&t.0)
            {
                return err(
                    "mfa.command_timeout",
                    "must be between 1 second and 10 minutes".into(),
                );
            }
        }
        if let Some(url) = self.endpoint_url()
            && (!(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10)
        {
            return err("sts.endpoint_url", format!("{url:?} is not an http(s) URL"));
        }
        // Durations: at least one second anywhere; AWS's limits against real AWS STS.
        let custom = custom_endpoint || self.endpoint_url().is_some();
        if let Some(d) = self.duration {
            let (limits, what) = if self.role.is_some() {
                (ROLE_DURATION_LIMITS, "a role session")
            } else {
                (SESSION_TOKEN_DURATION_LIMITS, "GetSessionToken")
            };
            check_duration("duration", d, limits, what, custom)?;
        }
        if let Some(d) = self.mfa.as_ref().and_then(|m| m.session_duration) {
            check_duration(
                "mfa.session_duration",
                d,
                SESSION_TOKEN_DURATION_LIMITS,
                "GetSessionToken",
                custom,
            )?;
        }
        Ok(())
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

fn toml_error(file: &Path, src: &str, e: &toml::de::Error) -> Error {
    let message = match e.span() {
        Some(span) => {
            let (line, col) = line_col(src, span.start);
            let text = src.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line}, column {col} (`{text}`): {}", e.message())
        }
        None => e.message().to_string(),
    };
    Error::InvalidConfig {
        file: file.to_path_buf(),
        message,
    }
}

/// Locates a dotted field in the document (via toml's spanned parse) for a message.
fn located_error(file: &Path, src: &str, fe: &FieldError) -> Error {
    let mut message = format!("field `{}`: {}", fe.field, fe.message);
    if let Some(start) = field_span(src, fe.field) {
        let (line, col) = line_col(src, start);
        message = format!("line {line}, column {col}: {message}");
    }
    Error::InvalidConfig {
        file: file.to_path_buf(),
        message,
    }
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
    /// `daemon start --shared`: a daemon for a dedicated user, serving other users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedSettings>,
    /// Where IAM Identity Center tokens are kept besides the daemon's memory: `"aws"` (default:
    /// the AWS CLI's cache, `~/.aws/sso/cache/`, shared with the AWS CLI and SDKs) or `"memory"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso_token_cache: Option<SsoTokenCache>,
    /// `[sso_sessions.NAME]`: IAM Identity Center logins shared by sessions (`[sso] session`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sso_sessions: std::collections::BTreeMap<String, SsoSession>,
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

/// Default socket of a shared daemon (discovered by the CLI when no personal daemon runs).
pub const DEFAULT_SHARED_SOCKET: &str = "/run/elhaz/elhaz.sock";
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

impl Settings {
    /// Loads `elhaz.toml`; a missing file means defaults.
    pub fn load(file: &Path) -> Result<Settings, Error> {
        let Some(src) = read_config_file(file)? else {
            return Ok(Settings::default());
        };
        let s: Settings = toml::from_str(&src).map_err(|e| toml_error(file, &src, &e))?;
        let bad = |field: &'static str, message: &str| {
            Err(located_error(
                file,
                &src,
                &FieldError {
                    field,
                    message: message.into(),
                },
            ))
        };
        if s.capacity.is_some_and(|c| !(1..=100_000).contains(&c)) {
            return bad("capacity", "must be between 1 and 100000");
        }
        if s.max_connections
            .is_some_and(|c| !(1..=65_536).contains(&c))
        {
            return bad("max_connections", "must be between 1 and 65536");
        }
        if s.log_files.is_some_and(|c| !(1..=365).contains(&c)) {
            return bad("log_files", "must be between 1 and 365");
        }
        if s.refresh_window.is_some_and(|w| w.0 == 0) {
            return bad("refresh_window", "must be at least 1 second");
        }
        if s.max_connections_per_client.is_some_and(|c| c == 0) {
            return bad("max_connections_per_client", "must be at least 1");
        }
        if s.rate_limit.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return bad(
                "rate_limit",
                "must be a positive number of requests per second",
            );
        }
        if let Some(sh) = &s.shared {
            for (field, mode) in [
                ("shared.socket_mode", sh.socket_mode),
                ("shared.socket_dir_mode", sh.socket_dir_mode),
            ] {
                if mode.is_some_and(|m| m > 0o777) {
                    return bad(field, "must be a permission mode such as 0o660");
                }
            }
            for rule in &sh.allow {
                let principals = [
                    rule.uid.is_some(),
                    rule.user.is_some(),
                    rule.group.is_some(),
                ];
                if principals.iter().filter(|p| **p).count() != 1 {
                    return bad(
                        "shared.allow",
                        "each rule names exactly one of uid, user or group",
                    );
                }
                if rule.sessions.is_empty() {
                    return bad(
                        "shared.allow",
                        "each rule lists the sessions it may use (\"*\" for all)",
                    );
                }
                if let Some(bad_name) = rule
                    .sessions
                    .iter()
                    .find(|n| *n != "*" && validate_name(n).is_err())
                {
                    return Err(located_error(
                        file,
                        &src,
                        &FieldError {
                            field: "shared.allow",
                            message: format!("invalid session name {bad_name:?}"),
                        },
                    ));
                }
            }
        }
        for (name, sso) in &s.sso_sessions {
            if let Err(m) =
                check_sso_session_name(name).and_then(|()| check_start_url(&sso.start_url))
            {
                return Err(located_error(
                    file,
                    &src,
                    &FieldError {
                        field: "sso_sessions",
                        message: format!("[sso_sessions.{name}]: {m}"),
                    },
                ));
            }
        }
        if s.idle_timeout.is_some_and(|w| w.0 == 0) {
            return bad(
                "idle_timeout",
                "must be at least 1 second (omit it to never exit)",
            );
        }
        Ok(s)
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
    /// Whether to re-warm sessions after a restart.
    pub fn rewarm(&self) -> bool {
        self.rewarm.unwrap_or(true)
    }
}

/// Reads a config-like file safely: no symlinks, regular files only, bounded size, UTF-8.
/// `Ok(None)` when it does not exist.
pub fn read_config_file(file: &Path) -> Result<Option<String>, Error> {
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
        crate::paths::create_dir_mode(&self.dir, 0o700)?;
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

/// Opens (creating if needed) a file readable only by us.
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
/// removed.
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

fn sync_dir(dir: &Path) -> Result<(), Error> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("cannot sync {}", dir.display()), e))
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
