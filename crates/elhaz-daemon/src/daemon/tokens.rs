//! Scoped delegates by token (`daemon start --require-token --token-file FILE`).
//!
//! For a process that cannot get its own uid onto the allowlist — a container with a mapped
//! uid, a sandboxed agent — the owner hands out a bearer token. The token file has one
//! `token[:session,…]` line per delegate (`#` comments and blank lines are fine); a token
//! without `:` is *unscoped* (every session). The file must be a regular file owned by the
//! daemon user with no group or other permission bits (0600 or 0400), in a directory chain
//! that passes [`crate::fsafe`]; anything else is refused at start with an error naming the
//! file.
//!
//! # What is kept
//!
//! Only each token's SHA-256: the file's text is zeroized as soon as it is parsed. A
//! presented token is hashed and compared with *every* entry in constant time (no early exit,
//! no branch on the bytes), so neither the position of a match nor the length of a common
//! prefix shows in the timing. Logs and the audit trail name a token by the first 8 hex
//! characters of its hash ([`TokenSet::prefix`]): enough to tell delegates apart, useless for
//! guessing the token (a token must be at least [`MIN_TOKEN_LEN`] characters).
//!
//! # Reload
//!
//! SIGHUP re-reads the file (see `daemon::lifecycle`). A file that fails to load keeps the
//! old set and logs an error: a typo must not lock every delegate out — nor silently let a
//! revoked one back in, which keeping the old set cannot do either, since the old set is what
//! was in force. Each request reads the set once, so a reload takes effect with the next
//! request (also on an open connection).
//!
//! # Trade-off
//!
//! A token is privilege separation for a delegate of a *different* uid. A process of the
//! daemon's own uid can read the token file, the daemon's memory is closed to it only by
//! `PR_SET_DUMPABLE`, and it can simply not present a token and be the owner: tokens are no
//! defence against the owner's own processes (docs/security.md).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::Error;

/// The shortest token accepted in the file: 16 characters (a `openssl rand -hex 16` token has
/// 32).
pub const MIN_TOKEN_LEN: usize = 16;
/// The longest token accepted (in the file and on the wire).
pub const MAX_TOKEN_LEN: usize = 512;
/// Most lines (delegates) in a token file.
pub const MAX_TOKENS: usize = 4096;

/// One delegate: its token's hash and the sessions it may use (`None`: all).
#[derive(Clone)]
struct Entry {
    digest: [u8; 32],
    sessions: Option<Vec<String>>,
}

/// A parsed token file.
#[derive(Clone, Default)]
pub struct TokenSet {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSet({} tokens)", self.entries.len())
    }
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The first 8 hex characters of the token's SHA-256, for logs and the audit trail.
    pub prefix: String,
    /// Sessions it may use (`None`: all).
    pub sessions: Option<Vec<String>>,
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// Constant-time equality of two digests.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // `black_box` keeps the optimiser from turning the fold into an early-exit compare.
    std::hint::black_box(diff) == 0
}

impl TokenSet {
    /// Parses the text of a token file; `file` only names it in errors (never a token).
    pub fn parse(file: &Path, text: &str) -> Result<TokenSet, Error> {
        let bad = |line: usize, message: String| Error::InvalidConfig {
            file: file.to_path_buf(),
            message: format!("line {line}: {message}"),
        };
        let mut entries: Vec<Entry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (token, scope) = match line.split_once(':') {
                Some((t, s)) => (t.trim(), Some(s)),
                None => (line, None),
            };
            if token.len() < MIN_TOKEN_LEN || token.len() > MAX_TOKEN_LEN {
                return Err(bad(
                    n,
                    format!(
                        "a token must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} characters (this one \
                         has {})",
                        token.len()
                    ),
                ));
            }
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad(
                    n,
                    "a token may not contain spaces or control characters".into(),
                ));
            }
            let sessions = match scope {
                None => None,
                Some(s) => {
                    let list: Vec<String> = s
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect();
                    if list.is_empty() {
                        return Err(bad(
                            n,
                            "`token:` names no session (drop the `:` for an unscoped token)".into(),
                        ));
                    }
                    for s in &list {
                        crate::config::validate_name(s).map_err(|e| bad(n, e.to_string()))?;
                    }
                    Some(list)
                }
            };
            let d = digest(token.as_bytes());
            if entries.iter().any(|e| ct_eq(&e.digest, &d)) {
                return Err(bad(
                    n,
                    "this token is already listed on an earlier line".into(),
                ));
            }
            if entries.len() >= MAX_TOKENS {
                return Err(bad(n, format!("more than {MAX_TOKENS} tokens")));
            }
            entries.push(Entry {
                digest: d,
                sessions,
            });
        }
        Ok(TokenSet { entries })
    }

    /// Reads and parses `file`, which must be owned by the daemon user and mode 0600 or 0400.
    pub fn load(file: &Path) -> Result<TokenSet, Error> {
        let text = Zeroizing::new(crate::fsafe::read_private_file(file)?);
        TokenSet::parse(file, &text)
    }

    /// How many tokens the set holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set holds no token.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The 8-hex-character prefix of `token`'s SHA-256 (what logs show).
    pub fn prefix(token: &[u8]) -> String {
        hex::encode(&digest(token)[..4])
    }

    /// What `token` grants, or `None`. Compares with every entry, in constant time each.
    pub fn check(&self, token: &[u8]) -> Option<Grant> {
        let d = digest(token);
        let mut found: Option<&Entry> = None;
        for e in &self.entries {
            // No early exit: every entry is compared whatever matched before.
            if ct_eq(&e.digest, &d) && found.is_none() {
                found = Some(e);
            }
        }
        found.map(|e| Grant {
            prefix: hex::encode(&d[..4]),
            sessions: e.sessions.clone(),
        })
    }
}

/// The token file and the set in force, swapped whole on reload.
#[derive(Debug)]
pub struct Tokens {
    file: PathBuf,
    set: RwLock<Arc<TokenSet>>,
}

impl Tokens {
    /// Loads `file` (at start: an error refuses to start).
    pub fn load(file: &Path) -> Result<Tokens, Error> {
        let set = TokenSet::load(file)?;
        Ok(Tokens {
            file: file.to_path_buf(),
            set: RwLock::new(Arc::new(set)),
        })
    }

    /// The token file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The set in force (a snapshot; the lock is held only for the clone).
    pub fn current(&self) -> Arc<TokenSet> {
        self.set.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the file; on failure the old set stays in force and the error is returned.
    pub fn reload(&self) -> Result<usize, Error> {
        let set = TokenSet::load(&self.file)?;
        let n = set.len();
        *self.set.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn parses_scoped_and_unscoped_tokens() {
        let text = format!("# delegates\n\n{A}:ci, dev\n  {B}  \n");
        let set = TokenSet::parse(Path::new("t"), &text).unwrap();
        assert_eq!(set.len(), 2);
        let a = set.check(A.as_bytes()).unwrap();
        assert_eq!(a.sessions, Some(vec!["ci".to_string(), "dev".to_string()]));
        assert_eq!(a.prefix, TokenSet::prefix(A.as_bytes()));
        assert_eq!(a.prefix.len(), 8);
        assert_eq!(set.check(B.as_bytes()).unwrap().sessions, None);
        assert!(set.check(b"cccccccccccccccccccccc").is_none());
        assert!(set.check(&A.as_bytes()[1..]).is_none());
        // Only hashes are kept: the Debug form says nothing about the tokens.
        assert!(!format!("{set:?}").contains('a'));
    }

    #[test]
    fn refuses_bad_lines_naming_the_line_but_not_the_token() {
        for (text, want) in [
            ("short:ci".to_string(), "line 1: a token must be"),
            (format!("{A}:"), "names no session"),
            (format!("{A}:../x"), "invalid session name"),
            (
                format!("{A}\n{A}:ci"),
                "line 2: this token is already listed",
            ),
            (format!("{A} x"), "spaces"),
        ] {
            let e = TokenSet::parse(Path::new("/etc/t"), &text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want) && e.contains("/etc/t"), "{text:?}: {e}");
            assert!(!e.contains(A), "{e}");
        }
    }

    #[test]
    fn digests_compare_in_constant_time_shape() {
        let x = digest(b"x");
        let mut y = x;
        assert!(ct_eq(&x, &y));
        y[31] ^= 1;
        assert!(!ct_eq(&x, &y));
    }
}
