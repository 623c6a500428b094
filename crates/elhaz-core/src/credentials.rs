//! Secret-holding types. Every secret is a `secrecy::SecretString`: `Debug` prints
//! `[REDACTED]`, nothing implements `Display`, and the memory is zeroized when the last
//! reference is dropped (eviction, refresh, shutdown).

use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};

use crate::protocol::WireCredentials;

/// Temporary AWS credentials as the daemon holds them.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Access key id (not secret on its own).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: SecretString,
    /// Session token.
    pub session_token: SecretString,
    /// Wall-clock expiry as STS reported it.
    pub expiration: SystemTime,
    /// The account, when known (parsed from the assumed-role ARN).
    pub account_id: Option<String>,
    /// The assumed-role ARN, when known.
    pub arn: Option<String>,
}

impl Credentials {
    /// The wire form, for one reply.
    pub fn to_wire(&self, region: Option<String>) -> WireCredentials {
        WireCredentials {
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.expose_secret().to_string(),
            session_token: self.session_token.expose_secret().to_string(),
            expiration: rfc3339(self.expiration),
            account_id: self.account_id.clone(),
            region,
        }
    }
}

/// Fresh credentials and how long they live.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The credentials.
    pub creds: Credentials,
    /// Lifetime: `Expiration − Date` on STS's clock when the answer carried a `Date`, else
    /// `Expiration` minus when the request was sent on our clock. The engine anchors it at the
    /// start of the fetch on both its clocks, so it never outlives the real expiration, and
    /// `creds.expiration − lifetime` is STS's clock at the request (the skew's basis).
    pub lifetime: Duration,
    /// A note for `daemon list`, e.g. the chaining cap.
    pub note: Option<String>,
}

/// Long-term access keys read once from the OS keyring.
#[derive(Debug, Clone)]
pub struct LongTermKeys {
    /// Access key id (`AKIA…`).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: SecretString,
}

/// RFC 3339 in UTC with a trailing `Z`, whole seconds — the spelling every SDK accepts.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The account id inside an ARN (`arn:aws:sts::123456789012:assumed-role/…`).
pub fn account_of_arn(arn: &str) -> Option<String> {
    let account = arn.split(':').nth(4)?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())).then(|| account.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_trailing_z() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_788_264_000);
        assert_eq!(rfc3339(t), "2026-09-01T12:00:00Z");
    }

    #[test]
    fn debug_redacts() {
        let c = Credentials {
            access_key_id: "ASIAX".into(),
            secret_access_key: "sekrit".into(),
            session_token: "tokken".into(),
            expiration: SystemTime::now(),
            account_id: None,
            arn: None,
        };
        let d = format!("{c:?}");
        assert!(!d.contains("sekrit") && !d.contains("tokken"), "{d}");
    }

    #[test]
    fn account_from_arn() {
        assert_eq!(
            account_of_arn("arn:aws:sts::123456789012:assumed-role/r/s").as_deref(),
            Some("123456789012")
        );
        assert_eq!(account_of_arn("nope"), None);
    }
}
