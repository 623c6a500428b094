//! The session config schema (`configs/NAME.toml`): sources, role, MFA, SSO, STS, and the
//! rules that need several fields or the environment (duration limits apply only against real
//! AWS STS; one source at most), each error a [`FieldError`] with its dotted path.

use super::*;

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

pub(super) fn de_opt_checked<'de, D: Deserializer<'de>>(
    d: D,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    check(&s).map_err(serde::de::Error::custom)?;
    Ok(Some(s))
}

pub(super) fn de_session_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    de_opt_checked(d, |s| sts_word(s, "role session name", 2, 64, b""))
}

pub(super) fn de_source_identity<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    de_opt_checked(d, |s| sts_word(s, "source identity", 2, 64, b""))
}

pub(super) fn de_external_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    de_opt_checked(d, |s| sts_word(s, "external id", 2, 1224, b":/"))
}

pub(super) fn de_policy<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    de_opt_checked(d, check_policy)
}

pub(super) fn check_policy(s: &str) -> Result<(), String> {
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
        self.check_sources(&mut errs);
        self.check_role(&mut errs);
        self.check_mfa(&mut errs);
        if let Some(url) = self.endpoint_url()
            && (!(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10)
        {
            push(
                &mut errs,
                "sts.endpoint_url",
                "is not an http(s) URL".into(),
            );
        }
        self.check_durations(custom_endpoint, &mut errs);
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// At most one credential source, each well-formed, and the ones that chain have a role.
    fn check_sources(&self, errs: &mut Vec<FieldError>) {
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
            push(
                errs,
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
            push(errs, "profile", "profile name is empty".into());
        }
        if let Some(k) = &self.keyring
            && (k.trim().is_empty() || k.len() > 128)
        {
            push(
                errs,
                "keyring",
                "keyring entry must be 1 to 128 characters".into(),
            );
        }
        if let Some(sso) = &self.sso
            && let Err(e) = validate_sso(sso)
        {
            errs.push(e);
        }
        if self.role.is_none() {
            if self.web_identity.is_some() {
                push(
                    errs,
                    "web_identity",
                    "web identity needs a [role] with the arn to assume".into(),
                );
            }
            if self.session.is_some() {
                push(
                    errs,
                    "session",
                    "chaining from another session needs a [role] to assume".into(),
                );
            }
        }
    }

    /// `[role]`'s STS limits: policy ARNs, session tags, transitive keys among the tags.
    fn check_role(&self, errs: &mut Vec<FieldError>) {
        let Some(role) = &self.role else {
            return;
        };
        if role.policy_arns.len() > 10 {
            push(errs, "role.policy_arns", "at most 10 policy ARNs".into());
        }
        if role.tags.len() > 50 {
            push(errs, "role.tags", "at most 50 session tags".into());
        }
        if role
            .tags
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > 256)
        {
            push(
                errs,
                "role.tags",
                "tag keys are 1 to 128 characters, values at most 256".into(),
            );
        }
        for (i, k) in role.transitive_tag_keys.iter().enumerate() {
            if !role.tags.contains_key(k) {
                push(
                    errs,
                    "role.transitive_tag_keys",
                    format!("entry {} is not a key of [role.tags]", i + 1),
                );
            }
        }
    }

    /// `[mfa]`: the command is an argv array, its timeout within bounds.
    fn check_mfa(&self, errs: &mut Vec<FieldError>) {
        let Some(mfa) = &self.mfa else {
            return;
        };
        if let Some(cmd) = &mfa.command
            && cmd.first().is_none_or(|c| c.is_empty())
        {
            push(
                errs,
                "mfa.command",
                "give the command as an argv array, e.g. [\"ykman\", \"oath\", \"accounts\", \"code\", \"-s\", \"aws\"]".into(),
            );
        }
        if let Some(t) = mfa.command_timeout
            && !(1..=600).contains(&t.0)
        {
            push(
                errs,
                "mfa.command_timeout",
                "must be between 1 second and 10 minutes".into(),
            );
        }
    }

    /// Durations: at least one second anywhere; AWS's limits against real AWS STS.
    fn check_durations(&self, custom_endpoint: bool, errs: &mut Vec<FieldError>) {
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

/// Records one rule's failure on `field`.
fn push(errs: &mut Vec<FieldError>, field: &'static str, message: String) {
    errs.push(FieldError { field, message });
}

pub(super) fn validate_sso(sso: &SsoConfig) -> Result<(), FieldError> {
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

pub(super) fn check_duration(
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
