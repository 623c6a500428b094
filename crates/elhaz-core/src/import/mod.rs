//! Converting Python elhaz (0.5.x) YAML session configs into elhaz session configs.
//!
//! Python elhaz stores one YAML file per session (`~/.elhaz/configs/NAME.yaml`), validated by
//! pydantic models that reject unknown keys: `AssumeRole` (required; the boto3 `assume_role`
//! parameters), `STS` (boto3 STS client parameters), `MFA` (a code command), `Session` (boto3
//! session parameters) and `Meta`. [`convert`] maps every field onto a [`SessionConfig`] and
//! explains, in notes, whatever it cannot or will not carry — never quoting a secret: static
//! keys and fixed MFA codes are only ever reported as present.
//!
//! The mapping follows what Python elhaz (through boto3-refresh-session) actually did:
//!
//! - `AssumeRole.*` → `[role]`; `DurationSeconds` → `duration`; `Tags` → `[role.tags]`.
//! - `AssumeRole.SerialNumber` → `[mfa] serial`; `MFA.command` → `[mfa] command`. A command
//!   given as a string was split with Python's `shlex.split` and run without a shell, so it is
//!   split the same way here ([`shlex_split`]); `MFA.timeout` → `[mfa] command_timeout`.
//! - `Session.profile_name` → `profile`; `Session.region_name` → `region`;
//!   `STS.region_name` → `[sts] region` (and `region` when the session sets none);
//!   `STS.endpoint_url` → `[sts] endpoint_url`; `Meta.description` → `description`.
//! - Static keys (`aws_access_key_id` / `aws_secret_access_key` in `STS` or `Session`) are never
//!   written: the config gets `keyring = "NAME"` and a note says to store the keys with
//!   `elhaz keyring set NAME`.
//! - Not carried, with a note: `TokenCode` (a fixed code works once), `ProvidedContexts`,
//!   `STS.verify` / `use_ssl` / `api_version`, `aws_account_id`, session tokens.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml_ng::Value;

mod shlex;
mod yaml;

pub use shlex::shlex_split;
use yaml::{Section, checked, kind, static_keys, untag};

use crate::config::{
    MfaConfig, MfaSerial, PolicyArn, Region, RoleArn, RoleConfig, Secs, SessionConfig, StsConfig,
};

/// A converted config and what the user should know about the conversion.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// The elhaz config (not yet validated as a whole: see [`SessionConfig::parse`]).
    pub config: SessionConfig,
    /// One line each; never contains a secret value.
    pub notes: Vec<String>,
}

/// Why a file was not converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// Not YAML, or not the shape of a Python elhaz config.
    #[error("{0}")]
    Invalid(String),
    /// No `AssumeRole` section: Python elhaz cannot use such a file either.
    #[error(
        "no AssumeRole section (Python elhaz requires one, so this file never worked there); \
         add a session with `elhaz config add NAME` instead"
    )]
    NoAssumeRole,
}

const TOP_KEYS: &[&str] = &["AssumeRole", "STS", "MFA", "Session", "Meta"];
const ASSUME_ROLE_KEYS: &[&str] = &[
    "RoleArn",
    "RoleSessionName",
    "PolicyArns",
    "Policy",
    "DurationSeconds",
    "ExternalId",
    "SerialNumber",
    "TokenCode",
    "Tags",
    "TransitiveTagKeys",
    "SourceIdentity",
    "ProvidedContexts",
];
const STS_KEYS: &[&str] = &[
    "region_name",
    "api_version",
    "use_ssl",
    "verify",
    "endpoint_url",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "aws_account_id",
];
const MFA_KEYS: &[&str] = &["command", "timeout"];
const SESSION_KEYS: &[&str] = &[
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "region_name",
    "profile_name",
    "aws_account_id",
];
const META_KEYS: &[&str] = &["description"];

fn invalid(msg: impl Into<String>) -> ConvertError {
    ConvertError::Invalid(msg.into())
}

/// Converts the text of one Python elhaz YAML config. `name` (the file stem) is used in notes
/// and as the keyring entry name suggested for static keys.
pub fn convert(yaml: &str, name: &str) -> Result<Converted, ConvertError> {
    let doc: Value =
        serde_yaml_ng::from_str(yaml).map_err(|e| invalid(format!("invalid YAML: {e}")))?;
    let s = sections(&doc)?;
    let mut out = Converted {
        config: SessionConfig::default(),
        notes: Vec::new(),
    };
    convert_role(&s.assume_role, &mut out)?;
    convert_mfa(&s.assume_role, s.mfa.as_ref(), &mut out)?;
    if let Some(session) = &s.session {
        convert_session(session, &mut out)?;
    }
    if let Some(sts) = &s.sts {
        convert_sts(sts, &mut out)?;
    }
    note_static_keys(s.sts.as_ref(), s.session.as_ref(), name, &mut out);
    out.config.description = match &s.meta {
        Some(m) => m.string("description")?,
        None => None,
    };
    Ok(out)
}

/// The document's sections, each with only the keys its Python model knows.
struct Sections<'a> {
    assume_role: Section<'a>,
    sts: Option<Section<'a>>,
    mfa: Option<Section<'a>>,
    session: Option<Section<'a>>,
    meta: Option<Section<'a>>,
}

/// Splits the document into its sections, rejecting what Python elhaz rejects.
fn sections(doc: &Value) -> Result<Sections<'_>, ConvertError> {
    let top = match untag(doc) {
        Value::Null => return Err(ConvertError::NoAssumeRole),
        Value::Mapping(map) => Section {
            name: "the document",
            map,
        },
        other => {
            return Err(invalid(format!(
                "the document must be a mapping of sections ({}), not {}",
                TOP_KEYS.join(", "),
                kind(other)
            )));
        }
    };
    top.check_keys(TOP_KEYS)?;
    let Some(ar) = top.section("AssumeRole")? else {
        return Err(ConvertError::NoAssumeRole);
    };
    let sts = top.section("STS")?;
    let mfa = top.section("MFA")?;
    let session = top.section("Session")?;
    let meta = top.section("Meta")?;
    ar.check_keys(ASSUME_ROLE_KEYS)?;
    for sec in [&sts, &mfa, &session, &meta].into_iter().flatten() {
        sec.check_keys(match sec.name {
            "STS" => STS_KEYS,
            "MFA" => MFA_KEYS,
            "Session" => SESSION_KEYS,
            _ => META_KEYS,
        })?;
    }
    Ok(Sections {
        assume_role: ar,
        sts,
        mfa,
        session,
        meta,
    })
}

/// `AssumeRole` → `[role]` and `duration`, with notes on what is not carried.
fn convert_role(ar: &Section<'_>, out: &mut Converted) -> Result<(), ConvertError> {
    let arn: RoleArn = checked("AssumeRole.RoleArn", ar.string("RoleArn")?)?
        .ok_or_else(|| invalid("AssumeRole.RoleArn is missing (Python elhaz requires it)"))?;
    let policy_arns: Vec<PolicyArn> = ar
        .strings("PolicyArns")?
        .into_iter()
        .map(|p| {
            p.parse()
                .map_err(|e| invalid(format!("AssumeRole.PolicyArns: {e}")))
        })
        .collect::<Result<_, _>>()?;
    if !policy_arns.is_empty() {
        out.notes.push(
            "AssumeRole.PolicyArns: Python elhaz 0.5.6 sent these in a form STS rejects, so the \
             session never worked with them; elhaz sends them correctly — check they are the \
             session policies you want"
                .into(),
        );
    }
    let tags = role_tags(ar)?;
    out.config.role = Some(RoleConfig {
        arn,
        session_name: ar.string("RoleSessionName")?,
        external_id: ar.string("ExternalId")?,
        policy: ar.string("Policy")?,
        policy_arns,
        transitive_tag_keys: ar.strings("TransitiveTagKeys")?,
        source_identity: ar.string("SourceIdentity")?,
        tags,
    });
    out.config.duration = ar.int("DurationSeconds")?.map(Secs);
    if ar.has("TokenCode") {
        out.notes.push(
            "AssumeRole.TokenCode is not carried: a fixed MFA code is only valid once; elhaz asks \
             for a fresh code (on the terminal, or from [mfa] command)"
                .into(),
        );
    }
    if ar.has("ProvidedContexts") {
        out.notes
            .push("AssumeRole.ProvidedContexts is not supported by elhaz and was dropped".into());
    }
    Ok(())
}

/// `AssumeRole.Tags` (a list of `{Key, Value}`) → `[role.tags]`.
fn role_tags(ar: &Section<'_>) -> Result<BTreeMap<String, String>, ConvertError> {
    let mut tags = BTreeMap::new();
    match ar.get("Tags") {
        None => {}
        Some(Value::Sequence(items)) => {
            for item in items {
                let Value::Mapping(map) = untag(item) else {
                    return Err(invalid(format!(
                        "AssumeRole.Tags must be a list of {{Key, Value}} mappings; found {}",
                        kind(item)
                    )));
                };
                let tag = Section { name: "Tags", map };
                tag.check_keys(&["Key", "Value"])?;
                let key = tag
                    .string("Key")?
                    .ok_or_else(|| invalid("AssumeRole.Tags: a tag has no Key"))?;
                let value = tag
                    .string("Value")?
                    .ok_or_else(|| invalid(format!("AssumeRole.Tags: tag {key:?} has no Value")))?;
                if tags.insert(key.clone(), value).is_some() {
                    return Err(invalid(format!(
                        "AssumeRole.Tags: tag key {key:?} appears twice (STS rejects that)"
                    )));
                }
            }
        }
        Some(other) => {
            return Err(invalid(format!(
                "AssumeRole.Tags must be a list of {{Key, Value}} mappings, not {}",
                kind(other)
            )));
        }
    }
    Ok(tags)
}

/// `AssumeRole.SerialNumber` and the `MFA` section → `[mfa]`.
fn convert_mfa(
    ar: &Section<'_>,
    mfa: Option<&Section<'_>>,
    out: &mut Converted,
) -> Result<(), ConvertError> {
    let notes = &mut out.notes;
    let serial: Option<MfaSerial> = checked("AssumeRole.SerialNumber", ar.string("SerialNumber")?)?;
    let mut command = None;
    let mut timeout = None;
    if let Some(m) = mfa {
        command = mfa_command(m, notes)?;
        timeout = match m.int("timeout")? {
            Some(t) if (1..=600).contains(&t) => Some(Secs(t)),
            Some(t) => {
                let clamped = t.clamp(1, 600);
                notes.push(format!(
                    "MFA.timeout {t} is outside elhaz's 1..=600 s; using {clamped}"
                ));
                Some(Secs(clamped))
            }
            None => None,
        };
        if serial.is_none() {
            notes.push(
                "an MFA section without AssumeRole.SerialNumber: elhaz needs the MFA device's \
                 serial (ARN) — add an [mfa] section with `serial` and `command`; the command was \
                 not carried"
                    .into(),
            );
        }
    }
    if let Some(serial) = serial {
        if command.is_none() {
            notes.push(
                "MFA codes will be asked for on the terminal; set [mfa] command to supply them \
                 without one"
                    .into(),
            );
        }
        notes.push(
            "with MFA, elhaz assumes the role from an MFA-backed GetSessionToken session (12 h by \
             default, [mfa] session_duration): a code is needed once per MFA session, not at \
             every refresh, and the source must be IAM user keys (not SSO or role credentials)"
                .into(),
        );
        out.config.mfa = Some(MfaConfig {
            serial,
            command_timeout: timeout.filter(|_| command.is_some()),
            command,
            session_duration: None,
        });
    }
    Ok(())
}

/// `MFA.command` as an argv: a string is split like `shlex.split`; an empty or unsplittable
/// command is dropped with a note.
fn mfa_command(
    m: &Section<'_>,
    notes: &mut Vec<String>,
) -> Result<Option<Vec<String>>, ConvertError> {
    Ok(match m.get("command") {
        None => None,
        Some(Value::String(s)) => match shlex_split(s) {
            Ok(argv) if !argv.is_empty() => Some(argv),
            Ok(_) => {
                notes.push("MFA.command is empty and was dropped".into());
                None
            }
            Err(e) => {
                notes.push(format!(
                    "MFA.command cannot be split into arguments ({e}) and was dropped; set \
                     [mfa] command as an argv array"
                ));
                None
            }
        },
        Some(Value::Sequence(_)) => {
            let argv = m.strings("command")?;
            if argv.first().is_none_or(|a| a.is_empty()) {
                notes.push("MFA.command is empty and was dropped".into());
                None
            } else {
                Some(argv)
            }
        }
        Some(other) => {
            return Err(invalid(format!(
                "MFA.command must be a string or a list of strings, not {}",
                kind(other)
            )));
        }
    })
}

/// `Session`: the source profile and the region.
fn convert_session(s: &Section<'_>, out: &mut Converted) -> Result<(), ConvertError> {
    out.config.profile = s.string("profile_name")?;
    out.config.region = checked("Session.region_name", s.string("region_name")?)?;
    if s.has("aws_account_id") {
        out.notes
            .push("Session.aws_account_id is not needed by elhaz (not carried)".into());
    }
    Ok(())
}

/// `STS` → `[sts]` (and `region` when the session sets none).
fn convert_sts(s: &Section<'_>, out: &mut Converted) -> Result<(), ConvertError> {
    let region: Option<Region> = checked("STS.region_name", s.string("region_name")?)?;
    if out.config.region.is_none() {
        out.config.region = region.clone();
    }
    let endpoint_url = s.string("endpoint_url")?;
    if region.is_some() || endpoint_url.is_some() {
        out.config.sts = Some(StsConfig {
            endpoint_url,
            region,
        });
    }
    for (key, why) in [
        ("verify", "elhaz always verifies TLS certificates"),
        ("use_ssl", "the scheme of endpoint_url decides"),
        ("api_version", "elhaz uses the current STS API"),
        ("aws_account_id", "elhaz does not need it"),
    ] {
        if s.has(key) {
            out.notes.push(format!("STS.{key} is not carried ({why})"));
        }
    }
    Ok(())
}

/// Static keys: never written; long-term keys point at the keyring instead.
fn note_static_keys(
    sts: Option<&Section<'_>>,
    session: Option<&Section<'_>>,
    name: &str,
    out: &mut Converted,
) {
    let sts_keys = static_keys(sts);
    let session_keys = static_keys(session);
    if sts_keys.is_empty() && session_keys.is_empty() {
        return;
    }
    let mut where_ = Vec::new();
    if !sts_keys.is_empty() {
        where_.push(format!("STS ({})", sts_keys.join(", ")));
    }
    if !session_keys.is_empty() {
        where_.push(format!("Session ({})", session_keys.join(", ")));
    }
    let long_term = |keys: &[&str]| {
        keys.contains(&"aws_access_key_id")
            && keys.contains(&"aws_secret_access_key")
            && !keys.contains(&"aws_session_token")
    };
    if long_term(&sts_keys) || long_term(&session_keys) {
        let entry = keyring_entry(name);
        if let Some(p) = out.config.profile.take() {
            out.notes.push(format!(
                "Session.profile_name {p:?} dropped: the static keys took precedence over \
                 it in Python elhaz"
            ));
        }
        out.config.keyring = Some(entry.clone());
        out.notes.push(format!(
            "static keys found in {}: not written anywhere; store them with `elhaz keyring \
             set {entry}` (this config already says `keyring = \"{entry}\"`)",
            where_.join(" and ")
        ));
    } else {
        out.notes.push(format!(
            "static keys found in {}: not written anywhere; a session token (or a lone key) \
             is temporary and cannot be imported — give the session a `profile`, or store \
             long-term keys with `elhaz keyring set NAME` and set `keyring = \"NAME\"`",
            where_.join(" and ")
        ));
    }
}

/// A keyring entry name for static keys found in config `name` (entries are 1..=128 chars).
fn keyring_entry(name: &str) -> String {
    name.chars().take(128).collect()
}

/// The TOML text to write for a converted config: a header naming the source file and
/// repeating the notes as comments, then the config.
pub fn render(conv: &Converted, source: &Path) -> String {
    let one_line = |s: &str| s.replace(['\n', '\r'], " ");
    let mut out = format!(
        "# Imported from Python elhaz by `elhaz config import-elhaz`.\n# Source: {}\n",
        one_line(&format!("{:?}", source.display().to_string()))
    );
    if !conv.notes.is_empty() {
        out.push_str("# Import notes:\n");
        for n in &conv.notes {
            out.push_str(&format!("# - {}\n", one_line(n)));
        }
    }
    out.push_str("# Every field is described in docs/configuration.md.\n\n");
    out.push_str(&conv.config.to_toml());
    out
}

/// Converts, renders and validates in one step: the text to write and the notes, or why the
/// file cannot be imported. `file` names the destination in validation messages.
pub fn import_text(
    yaml: &str,
    name: &str,
    source: &Path,
    file: &Path,
    custom_endpoint: bool,
) -> Result<(String, Converted), ConvertError> {
    let conv = convert(yaml, name)?;
    let text = render(&conv, source);
    SessionConfig::parse(&text, file, custom_endpoint).map_err(|e| {
        invalid(format!(
            "the converted config is not valid: {}",
            match &e {
                crate::Error::InvalidConfig { message, .. } => message.clone(),
                other => other.to_string(),
            }
        ))
    })?;
    Ok((text, conv))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
AssumeRole:
  RoleArn: arn:aws:iam::123456789012:role/Admin
  RoleSessionName: alice
  DurationSeconds: 7200
  ExternalId: ext-123
  Policy: '{"Version":"2012-10-17","Statement":[]}'
  PolicyArns:
  - arn:aws:iam::aws:policy/ReadOnlyAccess
  Tags:
  - Key: team
    Value: infra
  - Key: cost
    Value: '42'
  TransitiveTagKeys: [team]
  SourceIdentity: alice
STS:
  region_name: eu-west-1
  endpoint_url: https://sts.eu-west-1.amazonaws.com
Meta:
  description: prod admin
"#;

    fn parse(text: &str) -> SessionConfig {
        SessionConfig::parse(text, Path::new("x.toml"), false).unwrap()
    }

    #[test]
    fn full_assume_role_maps_every_field() {
        let c = convert(FULL, "prod").unwrap();
        let role = c.config.role.as_ref().unwrap();
        assert_eq!(role.arn.0, "arn:aws:iam::123456789012:role/Admin");
        assert_eq!(role.session_name.as_deref(), Some("alice"));
        assert_eq!(role.external_id.as_deref(), Some("ext-123"));
        assert_eq!(role.policy_arns.len(), 1);
        assert_eq!(role.tags.get("cost").map(String::as_str), Some("42"));
        assert_eq!(role.transitive_tag_keys, vec!["team".to_string()]);
        assert_eq!(c.config.duration, Some(Secs(7200)));
        assert_eq!(c.config.region.as_ref().unwrap().0, "eu-west-1");
        let sts = c.config.sts.as_ref().unwrap();
        assert_eq!(sts.region.as_ref().unwrap().0, "eu-west-1");
        assert_eq!(c.config.description.as_deref(), Some("prod admin"));
        let text = render(&c, Path::new("/h/.elhaz/configs/prod.yaml"));
        assert!(text.starts_with("# Imported from Python elhaz"), "{text}");
        assert!(text.contains("/h/.elhaz/configs/prod.yaml"));
        assert_eq!(parse(&text), c.config);
    }

    #[test]
    fn static_keys_are_never_carried() {
        let y = "AssumeRole:\n  RoleArn: arn:aws:iam::123456789012:role/x\nSession:\n  \
                 aws_access_key_id: AKIAEXAMPLEKEY000001\n  aws_secret_access_key: SEKRIT/value+1\n  \
                 profile_name: corp\n";
        let c = convert(y, "dev").unwrap();
        let text = render(&c, Path::new("dev.yaml"));
        assert!(
            !text.contains("SEKRIT") && !text.contains("AKIAEXAMPLEKEY"),
            "{text}"
        );
        assert!(c.notes.iter().all(|n| !n.contains("SEKRIT")));
        assert_eq!(c.config.keyring.as_deref(), Some("dev"));
        assert_eq!(c.config.profile, None);
        assert!(c.notes.iter().any(|n| n.contains("elhaz keyring set dev")));
        parse(&text);
        // A session token: nothing to store, no keyring reference.
        let y = "AssumeRole:\n  RoleArn: arn:aws:iam::123456789012:role/x\nSTS:\n  \
                 aws_access_key_id: ASIAX\n  aws_secret_access_key: S\n  aws_session_token: T\n";
        let c = convert(y, "dev").unwrap();
        assert_eq!(c.config.keyring, None);
        assert!(c.notes.iter().any(|n| n.contains("cannot be imported")));
    }

    #[test]
    fn mfa_command_is_split_like_shlex() {
        let y = "AssumeRole:\n  RoleArn: arn:aws:iam::123456789012:role/x\n  SerialNumber: \
                 arn:aws:iam::123456789012:mfa/alice\n  TokenCode: '654321'\nMFA:\n  command: \
                 op item get 'AWS MFA' --otp\n  timeout: 20\n";
        let c = convert(y, "m").unwrap();
        let mfa = c.config.mfa.as_ref().unwrap();
        assert_eq!(
            mfa.command.as_deref().unwrap(),
            ["op", "item", "get", "AWS MFA", "--otp"]
        );
        assert_eq!(mfa.command_timeout, Some(Secs(20)));
        assert!(c.notes.iter().any(|n| n.contains("TokenCode")));
        assert!(c.notes.iter().all(|n| !n.contains("654321")));
        // Without a serial the command cannot be carried.
        let y = "AssumeRole:\n  RoleArn: arn:aws:iam::123456789012:role/x\nMFA:\n  command: [ykman, oath]\n";
        let c = convert(y, "m").unwrap();
        assert!(c.config.mfa.is_none());
        assert!(
            c.notes
                .iter()
                .any(|n| n.contains("needs the MFA device's serial"))
        );
    }

    #[test]
    fn rejects_what_python_rejects() {
        assert_eq!(convert("", "x"), Err(ConvertError::NoAssumeRole));
        assert_eq!(
            convert("Meta:\n  description: d\n", "x"),
            Err(ConvertError::NoAssumeRole)
        );
        for (bad, needle) in [
            ("AssumeRole: [\n", "invalid YAML"),
            ("- a\n", "mapping of sections"),
            (
                "AssumeRole:\n  RoleArn: arn:aws:iam::123456789012:role/x\nExtra: 1\n",
                "`Extra`",
            ),
            (
                "AssumeRole:\n  RoleArn: arn:aws:iam::123456789012:role/x\n  Bogus: 1\n",
                "`Bogus`",
            ),
            ("AssumeRole:\n  RoleSessionName: x\n", "RoleArn is missing"),
            ("AssumeRole:\n  RoleArn: nope\n", "role ARN"),
            (
                "AssumeRole:\n  RoleArn: arn:aws:iam::123456789012:role/x\n  DurationSeconds: -5\n",
                "DurationSeconds",
            ),
            (
                "AssumeRole:\n  RoleArn: arn:aws:iam::123456789012:role/x\n  ExternalId: 5\n",
                "must be a string",
            ),
        ] {
            match convert(bad, "x") {
                Err(ConvertError::Invalid(m)) => assert!(m.contains(needle), "{bad:?}: {m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
