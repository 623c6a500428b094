//! The AWS CLI v2's (and botocore's) SSO token cache: `~/.aws/sso/cache/<sha1(key)>.json`,
//! one file per sso-session name (or start URL), written 0600 through a temp file and a
//! rename. A missing or unparsable file reads as "no token" — the AWS CLI's own rule. The
//! token type zeroizes its strings on drop and never shows a secret in `Debug`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::Target;

/// A token as the AWS CLI v2 and botocore cache it (`~/.aws/sso/cache/<sha1>.json`). Every
/// string is zeroized on drop; `Debug` shows no secret.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(rename_all = "camelCase")]
pub struct CachedToken {
    /// The start URL the token belongs to.
    #[serde(default)]
    pub start_url: String,
    /// The IAM Identity Center region.
    #[serde(default)]
    pub region: String,
    /// The bearer token for the portal.
    pub access_token: String,
    /// When the access token expires (RFC 3339, UTC, `Z`).
    pub expires_at: String,
    /// The registered OIDC client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The registered client's secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// When the client registration expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_expires_at: Option<String>,
    /// The refresh token (only with the `sso:account:access` scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("start_url", &self.start_url)
            .field("expires_at", &self.expires_at)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[REDACTED]"),
            )
            .finish_non_exhaustive()
    }
}

impl CachedToken {
    /// The access token's expiry (`None`: unparsable, treated as expired).
    pub fn expiry(&self) -> Option<SystemTime> {
        parse_time(&self.expires_at)
    }

    /// Time left on the access token.
    pub fn remaining(&self) -> Duration {
        self.expiry()
            .and_then(|e| e.duration_since(SystemTime::now()).ok())
            .unwrap_or(Duration::ZERO)
    }

    /// Whether a refresh-token grant can be attempted.
    pub fn can_refresh(&self) -> bool {
        let registered = self
            .registration_expires_at
            .as_deref()
            .and_then(parse_time)
            .is_none_or(|t| t > SystemTime::now());
        self.refresh_token.is_some()
            && self.client_id.is_some()
            && self.client_secret.is_some()
            && registered
    }
}

impl CachedToken {
    /// The token as `sso_login` carries it.
    pub fn to_wire(&self) -> crate::protocol::SsoToken {
        crate::protocol::SsoToken {
            access_token: self.access_token.clone(),
            expires_at: self.expires_at.clone(),
            refresh_token: self.refresh_token.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            registration_expires_at: self.registration_expires_at.clone(),
        }
    }

    /// The token an `sso_login` carried, for `target`.
    pub fn from_wire(target: &Target, t: &crate::protocol::SsoToken) -> CachedToken {
        CachedToken {
            start_url: target.start_url.clone(),
            region: target.region.clone(),
            access_token: t.access_token.clone(),
            expires_at: t.expires_at.clone(),
            client_id: t.client_id.clone(),
            client_secret: t.client_secret.clone(),
            registration_expires_at: t.registration_expires_at.clone(),
            refresh_token: t.refresh_token.clone(),
        }
    }
}

/// Parses the cache's times: RFC 3339 (`…Z`, or botocore's `…UTC`).
pub(super) fn parse_time(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let s = s
        .strip_suffix("UTC")
        .map_or_else(|| s.to_string(), |t| format!("{t}Z"));
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
        .ok()
        .or_else(|| humantime::parse_rfc3339(&s).ok())
}

/// `~/.aws/sso/cache` (from `HOME`).
pub fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".aws/sso/cache"))
}

/// The cache file of a key: `sha1(key)` in hex, `.json`.
pub fn cache_file(dir: &Path, key: &str) -> PathBuf {
    use sha1::Digest;
    dir.join(format!(
        "{}.json",
        hex::encode(sha1::Sha1::digest(key.as_bytes()))
    ))
}

/// Reads a cache file; a missing or unparsable file is `None` (the AWS CLI's own rule: a
/// broken cache means "log in again").
pub fn read_cache(file: &Path) -> Option<CachedToken> {
    let mut text = std::fs::read_to_string(file).ok()?;
    let t = serde_json::from_str(&text).ok();
    text.zeroize();
    t
}

/// Writes a cache file atomically with mode 0600 (temp file in the same dir, then rename).
pub fn write_cache(file: &Path, token: &CachedToken) -> Result<(), crate::Error> {
    use std::os::unix::fs::DirBuilderExt;
    let io = |context: String| move |source| crate::Error::Io { context, source };
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(format!("cannot create {}", dir.display())))?;
    // tempfile creates its file 0600.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(format!(
        "cannot create a temp file in {}",
        dir.display()
    )))?;
    let mut json = serde_json::to_vec_pretty(token).unwrap_or_default();
    let written = tmp.write_all(&json).and_then(|()| tmp.as_file().sync_all());
    json.zeroize();
    written.map_err(io(format!("cannot write {}", file.display())))?;
    tmp.persist(file)
        .map_err(|e| io(format!("cannot write {}", file.display()))(e.error))?;
    Ok(())
}

/// The cache file of a target under `HOME`, if a home is known.
pub fn target_cache_file(target: &Target) -> Option<PathBuf> {
    cache_dir().map(|d| cache_file(&d, target.cache_key()))
}
