//! Who may use the daemon, for what, and how much.
//!
//! A personal daemon serves its own uid and nobody else. A shared daemon (`daemon start
//! --shared`) also serves the principals of `[[shared.allow]]` — by uid, user name or group
//! — and only for the sessions each rule lists. Admin requests (`stop`, `add`, `remove`,
//! `list`) stay with the owner. Everything is decided from the kernel's peer credentials;
//! nothing the client says about itself is trusted.
//!
//! Groups are the peer's *real* groups at connect time: on Linux `SO_PEERGROUPS` (the
//! supplementary groups of the connecting process) plus the gid from `SO_PEERCRED`, so a
//! process that dropped a group (`setpriv --clear-groups`, a sandbox) loses that group's
//! sessions. Elsewhere there is no such socket option; `daemon::groups` falls back to the
//! user's groups from the group database (`getgrouplist`), which cannot see a dropped group —
//! documented in docs/security.md — looked up off the runtime and cached per (uid, gid). Reading the
//! socket option costs one syscall and no NSS lookup, so it never blocks a connection task on
//! LDAP; the NSS lookups of the rules (`user = …`, `group = …`) happen once, when the policy
//! is built at start-up.
//!
//! With `--require-token` ([`Policy::require_tokens`]) the uid stops deciding for non-owners:
//! every uid that can reach the socket is admitted as an [`Access::Delegate`], which gets
//! nothing until a request carries a valid token; the token's scope is then its access (see
//! `daemon::tokens` and `handler::authorize`). The allow rules are not consulted then.
//!
//! Limits, all from `elhaz.toml`: an optional per-client (uid) connection cap for everyone,
//! a per-session token-bucket rate limit, and — in shared mode, always on for non-owner uids
//! — a per-uid connection cap (`[shared] max_connections_per_peer`, default 16) and a per-uid
//! request rate (`[shared] peer_rate_limit`, default 20/s). A connection's per-uid slot is a
//! [`ConnGuard`]: dropping it (a finished task, a panic unwinding) returns the slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::config::Settings;
use crate::error::Error;

/// What a peer may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The daemon's own user: everything.
    Owner,
    /// An allowed principal: credential requests for these sessions (`None`: all).
    Sessions(Option<Vec<String>>),
    /// Any other uid of a daemon started with `--require-token`: admitted only to present a
    /// token; every request without a valid one is refused (see `handler::authorize`).
    Delegate,
}

#[derive(Debug)]
enum Principal {
    Uid(u32),
    Gid(u32),
}

/// The compiled access policy.
#[derive(Debug)]
pub struct Policy {
    owner: u32,
    rules: Vec<(Principal, Option<Vec<String>>)>,
    max_per_client: Option<usize>,
    /// Shared mode: the cap of a non-owner uid.
    max_per_peer: Option<usize>,
    rate: Option<f64>,
    /// Shared mode: requests per second of a non-owner uid.
    peer_rate: Option<f64>,
    /// `--require-token`: every non-owner uid is admitted as a [`Access::Delegate`].
    delegates: bool,
    conns: Arc<Mutex<HashMap<u32, usize>>>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    peer_buckets: Mutex<HashMap<u32, (f64, Instant)>>,
}

/// A connection's per-uid slot; dropping it returns the slot.
#[derive(Debug)]
pub struct ConnGuard {
    uid: u32,
    conns: Option<Arc<Mutex<HashMap<u32, usize>>>>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let Some(conns) = &self.conns else {
            return;
        };
        let mut conns = conns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = conns.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                conns.remove(&self.uid);
            }
        }
    }
}

/// Takes a token from the bucket of `key`: refills at `rate` per second up to `burst`.
fn take<K: std::hash::Hash + Eq>(
    buckets: &Mutex<HashMap<K, (f64, Instant)>>,
    key: K,
    rate: f64,
    burst: f64,
) -> bool {
    let now = Instant::now();
    let mut buckets = buckets.lock().unwrap_or_else(|p| p.into_inner());
    // Bound the table: a full refill forgets nothing that matters.
    if buckets.len() > 4096 {
        buckets.retain(|_, (t, last)| {
            *t + now.saturating_duration_since(*last).as_secs_f64() * rate < burst
        });
    }
    let (tokens, last) = buckets.entry(key).or_insert((burst, now));
    *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * rate).min(burst);
    *last = now;
    if *tokens >= 1.0 {
        *tokens -= 1.0;
        true
    } else {
        false
    }
}

impl Policy {
    /// Builds the policy; `shared` enables the allow rules.
    pub fn new(owner: u32, settings: &Settings, shared: bool) -> Result<Policy, Error> {
        let mut rules = Vec::new();
        if shared && let Some(sh) = &settings.shared {
            for r in &sh.allow {
                let principal = if let Some(uid) = r.uid {
                    Principal::Uid(uid)
                } else if let Some(user) = &r.user {
                    let u = nix::unistd::User::from_name(user)
                        .ok()
                        .flatten()
                        .ok_or_else(|| {
                            Error::Insecure(format!("[[shared.allow]] names unknown user {user:?}"))
                        })?;
                    Principal::Uid(u.uid.as_raw())
                } else if let Some(group) = &r.group {
                    let g = nix::unistd::Group::from_name(group)
                        .ok()
                        .flatten()
                        .ok_or_else(|| {
                            Error::Insecure(format!(
                                "[[shared.allow]] names unknown group {group:?}"
                            ))
                        })?;
                    Principal::Gid(g.gid.as_raw())
                } else {
                    continue; // validated away at load
                };
                let sessions = (!r.sessions.iter().any(|s| s == "*")).then(|| r.sessions.clone());
                rules.push((principal, sessions));
            }
        }
        let sh = settings.shared.as_ref().filter(|_| shared);
        Ok(Policy {
            owner,
            rules,
            max_per_client: settings.max_connections_per_client,
            max_per_peer: shared.then(|| {
                sh.and_then(|s| s.max_connections_per_peer)
                    .unwrap_or(crate::config::DEFAULT_MAX_CONNECTIONS_PER_PEER)
            }),
            rate: settings.rate_limit,
            peer_rate: shared.then(|| {
                sh.and_then(|s| s.peer_rate_limit)
                    .unwrap_or(crate::config::DEFAULT_PEER_RATE_LIMIT)
            }),
            delegates: false,
            conns: Arc::new(Mutex::new(HashMap::new())),
            buckets: Mutex::new(HashMap::new()),
            peer_buckets: Mutex::new(HashMap::new()),
        })
    }

    /// `--require-token`: any uid may connect (as a [`Access::Delegate`], which can do nothing
    /// without a token), and every non-owner uid gets the shared mode's per-uid connection cap
    /// and request rate, configured or not.
    pub fn require_tokens(&mut self, settings: &Settings) {
        let sh = settings.shared.as_ref();
        self.delegates = true;
        self.max_per_peer.get_or_insert(
            sh.and_then(|s| s.max_connections_per_peer)
                .unwrap_or(crate::config::DEFAULT_MAX_CONNECTIONS_PER_PEER),
        );
        self.peer_rate.get_or_insert(
            sh.and_then(|s| s.peer_rate_limit)
                .unwrap_or(crate::config::DEFAULT_PEER_RATE_LIMIT),
        );
    }

    /// Whether any rule can admit a non-owner uid (a personal daemon: none). Under
    /// `--require-token` the rules are not consulted, so none can.
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty() && !self.delegates
    }

    /// The daemon owner's uid.
    pub fn owner(&self) -> u32 {
        self.owner
    }

    /// What `uid` with `groups` (the peer's real groups, from
    /// [`peer_groups`](crate::daemon::groups::peer_groups)) may do, or
    /// `None` (refused).
    pub fn admit(&self, uid: u32, groups: &[u32]) -> Option<Access> {
        if uid == self.owner {
            return Some(Access::Owner);
        }
        if self.delegates {
            // The token, not the uid, decides (docs/security.md).
            return Some(Access::Delegate);
        }
        if self.rules.is_empty() {
            return None;
        }
        let mut all = false;
        let mut allowed: Vec<String> = Vec::new();
        let mut matched = false;
        for (p, sessions) in &self.rules {
            let hit = match p {
                Principal::Uid(u) => *u == uid,
                Principal::Gid(g) => groups.contains(g),
            };
            if hit {
                matched = true;
                match sessions {
                    None => all = true,
                    Some(list) => allowed.extend(list.iter().cloned()),
                }
            }
        }
        matched.then(|| Access::Sessions((!all).then_some(allowed)))
    }

    /// The connection cap of `uid`: `max_connections_per_client` for everyone, and for a
    /// non-owner of a shared daemon also `max_connections_per_peer`.
    fn cap_of(&self, uid: u32) -> Option<usize> {
        let peer = self.max_per_peer.filter(|_| uid != self.owner);
        match (self.max_per_client, peer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes a connection slot for `uid`; `None` when it is at its cap. Checked before a
    /// global slot is taken, so one uid can never hold more than its cap of those.
    pub fn connect(&self, uid: u32) -> Option<ConnGuard> {
        let Some(max) = self.cap_of(uid) else {
            return Some(ConnGuard { uid, conns: None });
        };
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let n = conns.entry(uid).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ConnGuard {
            uid,
            conns: Some(self.conns.clone()),
        })
    }

    /// Takes a token from `session`'s bucket; `false` when it is empty.
    pub fn take_token(&self, session: &str) -> bool {
        let Some(rate) = self.rate else {
            return true;
        };
        take(&self.buckets, session.to_string(), rate, rate.max(1.0))
    }

    /// Takes a token from the request bucket of `uid` (non-owners of a shared daemon only;
    /// bursts up to twice the rate); `false` when it is empty.
    pub fn take_peer_token(&self, uid: u32) -> bool {
        match self.peer_rate {
            Some(rate) if uid != self.owner => {
                take(&self.peer_buckets, uid, rate, (2.0 * rate).max(1.0))
            }
            _ => true,
        }
    }
}

impl Access {
    /// Whether this access covers credential requests for `session`.
    pub fn allows_session(&self, session: &str) -> bool {
        match self {
            Access::Owner | Access::Sessions(None) => true,
            Access::Sessions(Some(list)) => list.iter().any(|s| s == session),
            Access::Delegate => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AllowRule, SharedSettings};

    #[test]
    fn personal_daemon_admits_only_its_owner() {
        let p = Policy::new(1000, &Settings::default(), false).unwrap();
        assert_eq!(p.admit(1000, &[1000]), Some(Access::Owner));
        assert_eq!(p.admit(1001, &[1001]), None);
    }

    #[test]
    fn shared_rules_by_uid_and_sessions() {
        let settings = Settings {
            shared: Some(SharedSettings {
                allow: vec![AllowRule {
                    uid: Some(4242),
                    sessions: vec!["ci".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        // Rules apply only in shared mode.
        assert_eq!(
            Policy::new(1000, &settings, false)
                .unwrap()
                .admit(4242, &[4242]),
            None
        );
        let p = Policy::new(1000, &settings, true).unwrap();
        let a = p.admit(4242, &[4242]).unwrap();
        assert!(a.allows_session("ci") && !a.allows_session("prod"));
        assert_eq!(p.admit(4243, &[4243]), None);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_and_connection_cap() {
        let settings = Settings {
            rate_limit: Some(2.0),
            max_connections_per_client: Some(1),
            ..Default::default()
        };
        let p = Policy::new(1, &settings, false).unwrap();
        assert!(p.take_token("a") && p.take_token("a"));
        assert!(!p.take_token("a"));
        assert!(p.take_token("b"), "buckets are per session");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(p.take_token("a"));
        let first = p.connect(7);
        assert!(first.is_some() && p.connect(7).is_none());
        drop(first);
        assert!(p.connect(7).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn shared_mode_caps_non_owners_by_default() {
        let settings = Settings {
            shared: Some(SharedSettings {
                max_connections_per_peer: Some(2),
                peer_rate_limit: Some(1.0),
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = Policy::new(1, &settings, true).unwrap();
        let held: Vec<_> = (0..2)
            .map(|_| p.connect(9).expect("under the cap"))
            .collect();
        assert!(p.connect(9).is_none(), "a third connection of uid 9");
        let owner: Vec<_> = (0..50).filter_map(|_| p.connect(1)).collect();
        assert_eq!(owner.len(), 50, "the owner has no per-peer cap");
        // A guard dropped while unwinding still returns its slot.
        let g = p.connect(10).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _g = g;
            panic!("task panicked");
        }));
        assert!(r.is_err());
        assert!(p.connect(10).is_some() && p.connect(10).is_some());
        drop(held);
        assert!(p.connect(9).is_some());
        // Rate: a burst of 2, then 1/s; the owner is never limited.
        assert!(p.take_peer_token(9) && p.take_peer_token(9) && !p.take_peer_token(9));
        assert!((0..100).all(|_| p.take_peer_token(1)));
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert!(p.take_peer_token(9));
    }
}
