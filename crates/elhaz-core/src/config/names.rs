//! Names and small value types: session names and their check, the duration type (`Secs`),
//! and the checked strings (ARNs, MFA serials, regions) that validate while they deserialize,
//! so a bad value never reaches the rest of the config.

use super::*;

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

pub(super) fn check_session_ref(s: &str) -> Result<(), String> {
    validate_name(s).map_err(|_| {
        "invalid session name: use 1 to 64 characters from A-Z a-z 0-9 . _ - (not starting with '.' or '-')"
            .to_string()
    })
}

pub(super) fn check_region(s: &str) -> Result<(), String> {
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
pub(super) fn arn_parts(s: &str) -> Option<[&str; 6]> {
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

pub(super) fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

pub(super) fn iam_arn(s: &str, kind: &str, aws_owned_ok: bool) -> Result<(), String> {
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

pub(super) fn check_role_arn(s: &str) -> Result<(), String> {
    iam_arn(s, "role", false)
}

pub(super) fn check_policy_arn(s: &str) -> Result<(), String> {
    iam_arn(s, "policy", true)
}

pub(super) fn check_mfa_serial(s: &str) -> Result<(), String> {
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
pub(super) fn sts_word(
    s: &str,
    what: &str,
    min: usize,
    max: usize,
    extra: &[u8],
) -> Result<(), String> {
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
