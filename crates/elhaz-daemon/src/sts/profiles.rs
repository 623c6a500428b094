//! The shared config and credentials files, read just enough to find a profile whose
//! credentials come from a `credential_process` (directly or at the root of a `role_arn` +
//! `source_profile` chain), walked by the SDK's rules. Every other shape is left to the SDK's
//! profile provider, so its errors stay the SDK's. Re-read at each fetch: edits are picked up.

/// An INI file as `(section, key) -> value` (top-level keys only; nested ones are skipped).
pub(super) fn ini_lookup(text: &str, section: &str, key: &str) -> Option<String> {
    let mut current = None::<String>;
    let mut found = None;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            continue; // a sub-property
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.split_whitespace().collect::<Vec<_>>().join(" "));
            continue;
        }
        if current.as_deref() == Some(section)
            && let Some((k, v)) = line.split_once('=')
            && k.trim().eq_ignore_ascii_case(key)
        {
            found = Some(v.trim().to_string());
        }
    }
    found
}

/// Whether the environment holds static keys, which the SDK's default chain takes before any
/// profile.
pub(super) fn env_keys_present() -> bool {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    (set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY"))
        || (set("AWS_ACCESS_KEY") && set("AWS_SECRET_KEY"))
}

/// The profile the SDK's default chain reads: `AWS_PROFILE`, else `default`.
pub(super) fn default_profile() -> String {
    std::env::var("AWS_PROFILE")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// The longest `source_profile` chain elhaz walks itself; a longer one is left to the SDK.
pub(super) const MAX_PROFILE_CHAIN: usize = 16;

/// A role of a profile chain: one profile's `role_arn` and the settings that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ProfileRole {
    pub(super) profile: String,
    pub(super) arn: String,
    pub(super) external_id: Option<String>,
    pub(super) session_name: Option<String>,
    pub(super) duration_seconds: Option<i32>,
}

/// A profile whose credentials come from a `credential_process`: run `command` (of profile
/// `root`), then assume `roles` in order (empty for a plain `credential_process` profile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ProcessChain {
    pub(super) root: String,
    pub(super) command: String,
    pub(super) roles: Vec<ProfileRole>,
}

/// The text of the shared config and credentials files, read once per fetch (so edits are
/// picked up), as the SDK finds them (`AWS_CONFIG_FILE`, `AWS_SHARED_CREDENTIALS_FILE`, else
/// under `$HOME/.aws`).
pub(super) struct ProfileFiles {
    pub(super) config: String,
    pub(super) creds: String,
}

impl ProfileFiles {
    pub(super) fn load() -> ProfileFiles {
        let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
        let config = std::env::var_os("AWS_CONFIG_FILE")
            .map(std::path::PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/config")));
        let creds = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
            .map(std::path::PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials")));
        let read = |p: Option<std::path::PathBuf>| {
            p.and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_default()
        };
        ProfileFiles {
            config: read(config),
            creds: read(creds),
        }
    }

    /// Key `key` of profile `name` (the credentials file wins over the config file, as in the
    /// SDK); empty values count as unset.
    pub(super) fn get(&self, name: &str, key: &str) -> Option<String> {
        let section = if name == "default" {
            "default".to_string()
        } else {
            format!("profile {name}")
        };
        ini_lookup(&self.creds, name, key)
            .or_else(|| ini_lookup(&self.config, &section, key))
            // The SDK reads the default profile from `[profile default]` as well.
            .or_else(|| {
                (name == "default")
                    .then(|| ini_lookup(&self.config, "profile default", key))
                    .flatten()
            })
            .filter(|v| !v.is_empty())
    }

    /// The chain of profile `name` when it ends in a `credential_process`, walked as the SDK's
    /// profile provider walks it (`aws-config`'s `resolve_chain`): a profile with `role_arn`
    /// (and no `web_identity_token_file`) chains to its `source_profile` (itself: its own
    /// base credentials); after the first profile, static keys end the chain; a profile
    /// without `role_arn` is the base. `None` whenever the base is anything else (static
    /// keys, SSO, web identity, `credential_source`) or the chain is invalid (a loop, both or
    /// neither of `source_profile`/`credential_source`, a missing profile): the SDK then
    /// resolves it, and reports the errors, as before. No child process is run on that path.
    pub(super) fn process_chain(&self, name: &str) -> Option<ProcessChain> {
        let mut visited: Vec<String> = Vec::new();
        let mut roles = Vec::new();
        let mut current = name.to_string();
        let base = loop {
            if visited.contains(&current) || visited.len() >= MAX_PROFILE_CHAIN {
                return None;
            }
            visited.push(current.clone());
            let get = |k: &str| self.get(&current, k);
            if visited.len() > 1
                && get("aws_access_key_id").is_some()
                && get("aws_secret_access_key").is_some()
            {
                return None;
            }
            let Some(arn) = get("role_arn").filter(|_| get("web_identity_token_file").is_none())
            else {
                break current;
            };
            roles.push(ProfileRole {
                profile: current.clone(),
                arn,
                external_id: get("external_id"),
                session_name: get("role_session_name"),
                duration_seconds: get("duration_seconds").and_then(|d| d.parse().ok()),
            });
            match (get("source_profile"), get("credential_source")) {
                (Some(src), None) if src == current => break current,
                (Some(src), None) => current = src,
                _ => return None,
            }
        };
        let get = |k: &str| self.get(&base, k);
        let other_base = [
            "credential_source",
            "web_identity_token_file",
            "sso_session",
            "sso_start_url",
            "sso_account_id",
            "sso_region",
            "sso_role_name",
            "login_session",
        ]
        .iter()
        .any(|k| get(k).is_some());
        if other_base {
            return None;
        }
        let command = get("credential_process")?;
        roles.reverse();
        Some(ProcessChain {
            root: base,
            command,
            roles,
        })
    }
}
