//! Who may use the daemon, for what, and how much.
//!
//! A personal daemon serves its own uid and nobody else. A shared daemon (`daemon start
//! --shared`) also serves the principals of `[[shared.allow]]` — by uid, user name or group
//! membership (the peer's primary gid from SO_PEERCRED plus the supplementary groups of its
//! user) — and only for the sessions each rule lists. Admin requests (`stop`, `add`, `remove`,
//! `list`) stay with the owner. Everything is decided from the kernel's peer credentials;
//! nothing the client says about itself is trusted.
//!
//! Limits: a per-client (uid) connection cap and a per-session token-bucket rate limit, both
//! optional, both from `elhaz.toml`.

use std::collections::HashMap;
use std::sync::Mutex;

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
    rate: Option<f64>,
    conns: Mutex<HashMap<u32, usize>>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
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
        Ok(Policy {
            owner,
            rules,
            max_per_client: settings.max_connections_per_client,
            rate: settings.rate_limit,
            conns: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// What `uid`/`gid` may do, or `None` (refused).
    pub fn admit(&self, uid: u32, gid: u32) -> Option<Access> {
        if uid == self.owner {
            return Some(Access::Owner);
        }
        if self.rules.is_empty() {
            return None;
        }
        let groups = groups_of(uid, gid);
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

    /// Takes a connection slot for `uid`; `false` when over its cap.
    pub fn connect(&self, uid: u32) -> bool {
        let Some(max) = self.max_per_client else {
            return true;
        };
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let n = conns.entry(uid).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    /// Returns a slot taken by [`Policy::connect`].
    pub fn disconnect(&self, uid: u32) {
        if self.max_per_client.is_none() {
            return;
        }
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = conns.get_mut(&uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                conns.remove(&uid);
            }
        }
    }

    /// Takes a token from `session`'s bucket; `false` when it is empty.
    pub fn take_token(&self, session: &str) -> bool {
        let Some(rate) = self.rate else {
            return true;
        };
        let burst = rate.max(1.0);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = buckets.entry(session.to_string()).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Access {
    /// Whether this access covers credential requests for `session`.
    pub fn allows_session(&self, session: &str) -> bool {
        match self {
            Access::Owner | Access::Sessions(None) => true,
            Access::Sessions(Some(list)) => list.iter().any(|s| s == session),
        }
    }
}

/// The peer's groups: its primary gid plus its user's supplementary groups.
fn groups_of(uid: u32, gid: u32) -> Vec<u32> {
    let mut groups = vec![gid];
    if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        && let Ok(name) = std::ffi::CString::new(user.name)
        && let Ok(list) = nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid))
    {
        groups.extend(list.into_iter().map(|g| g.as_raw()));
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AllowRule, SharedSettings};

    #[test]
    fn personal_daemon_admits_only_its_owner() {
        let p = Policy::new(1000, &Settings::default(), false).unwrap();
        assert_eq!(p.admit(1000, 1000), Some(Access::Owner));
        assert_eq!(p.admit(1001, 1001), None);
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
                .admit(4242, 4242),
            None
        );
        let p = Policy::new(1000, &settings, true).unwrap();
        let a = p.admit(4242, 4242).unwrap();
        assert!(a.allows_session("ci") && !a.allows_session("prod"));
        assert_eq!(p.admit(4243, 4243), None);
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
        assert!(p.connect(7) && !p.connect(7));
        p.disconnect(7);
        assert!(p.connect(7));
    }
}
