//! What the consumers hand out, written once for both binaries: the `credential_process` JSON,
//! the variables a session exports, the request that says on a terminal what it waits for.
//!
//! The lean `elhaz` ([`front`](crate::front)) serves `credential-process` and `exec` from
//! these, and `elhaz-full`'s commands (`export`, `exec --refreshing`, `shell`, the slow paths)
//! from the same functions — so the two cannot drift into printing different JSON or exporting
//! different variables.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use crate::client::{Client, Served};
use crate::config::{self, Store};
use crate::error::Error;
use crate::paths::Paths;
use crate::protocol::{Request, Response, WireCredentials};

/// Environment variable naming the current elhaz session (set by `exec`/`shell`).
pub const ENV_SESSION: &str = "ELHAZ_SESSION";

/// Variables that would make an SDK ignore (or fight with) the ones we set.
pub const OVERRIDING: &[&str] = &[
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CREDENTIAL_EXPIRATION",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
];

/// The variables a session exports.
pub fn session_env(name: &str, c: &WireCredentials) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("AWS_ACCESS_KEY_ID", c.access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY", c.secret_access_key.clone()),
        ("AWS_SESSION_TOKEN", c.session_token.clone()),
        ("AWS_CREDENTIAL_EXPIRATION", c.expiration.clone()),
    ];
    if let Some(r) = &c.region {
        v.push(("AWS_REGION", r.clone()));
        v.push(("AWS_DEFAULT_REGION", r.clone()));
    }
    v.push((ENV_SESSION, name.to_string()));
    v
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ProcessOutput<'a> {
    version: u8,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    session_token: &'a str,
    expiration: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
}

/// The `credential_process` JSON object for `c` (one line, no newline).
pub fn process_json(c: &WireCredentials) -> String {
    let out = ProcessOutput {
        version: 1,
        access_key_id: &c.access_key_id,
        secret_access_key: &c.secret_access_key,
        session_token: &c.session_token,
        expiration: &c.expiration,
        account_id: c.account_id.as_deref(),
    };
    // Plain strings: serialization cannot fail.
    serde_json::to_string(&out).unwrap_or_default()
}

/// Whether `exec`/`shell` into `name` would nest a session in itself (`ELHAZ_SESSION` is
/// `name`); refused unless forced.
pub fn nests(name: &str) -> bool {
    std::env::var(ENV_SESSION).is_ok_and(|s| s == name)
}

/// `exec` says on stderr when a shared daemon (not your own) serves it; your own daemon is
/// the default and says nothing.
pub fn note_shared(c: &Client) {
    if matches!(c.served(), Served::Shared { .. }) {
        eprintln!("elhaz: served by {}", c.served());
    }
}

/// Exit code: the daemon is not running (`daemon status`, or no daemon and no autostart).
pub const EXIT_NOT_RUNNING: u8 = 3;

/// The exit code for an error that ends a command, decided here for both binaries: 3 when no
/// daemon runs, 1 for everything else.
pub fn exit_code(err: &Error) -> ExitCode {
    match err {
        Error::NotRunning(_) => ExitCode::from(EXIT_NOT_RUNNING),
        _ => ExitCode::FAILURE,
    }
}

/// "did you mean `dev`?" when `name` is not one of this user's configs and one is close.
pub fn did_you_mean(paths: &Paths, name: &str) -> Option<String> {
    let names = Store::new(paths.configs_dir.clone()).names().ok()?;
    if names.iter().any(|n| n == name) {
        // It exists: what is missing is something else (e.g. a chained source).
        return None;
    }
    config::closest(name, names.iter().map(String::as_str)).map(|s| format!("did you mean `{s}`?"))
}

/// How long a request may take before the CLI says what it is waiting for.
const SLOW_NOTICE: Duration = Duration::from_secs(2);

/// One request; when stderr is a terminal and the answer takes longer than [`SLOW_NOTICE`],
/// prints a one-line "waiting for STS (endpoint)…" on stderr (never on stdout, which
/// `credential-process` reserves for its JSON). Without a terminal nothing extra runs.
pub fn call_noting_waits(
    paths: &Paths,
    name: &str,
    c: &mut Client,
    request: Request,
) -> Result<Response, Error> {
    if !std::io::stderr().is_terminal() {
        return c.call(request);
    }
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let (configs, name_owned) = (paths.configs_dir.clone(), name.to_string());
    let notice = std::thread::spawn(move || {
        if wait.recv_timeout(SLOW_NOTICE) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            // Read off the hot path: only once the wait is already long.
            let endpoint = sts_endpoint_of(&Store::new(configs), &name_owned);
            eprintln!("elhaz: waiting for STS ({endpoint}) for session {name_owned}…");
        }
    });
    let out = c.call(request);
    let _ = done.send(());
    let _ = notice.join();
    out
}

/// The STS endpoint a session's config points at, as far as the CLI can tell.
fn sts_endpoint_of(store: &Store, name: &str) -> String {
    let Ok(cfg) = store.load(name, config::env_custom_endpoint()) else {
        return "endpoint unknown".into();
    };
    if let Some(url) = cfg.endpoint_url() {
        return url.to_string();
    }
    let region = cfg
        .sts
        .as_ref()
        .and_then(|s| s.region.as_ref())
        .or(cfg.region.as_ref())
        .map(|r| r.0.clone());
    match region {
        Some(r) => format!("https://sts.{r}.amazonaws.com"),
        None => "the daemon's default region".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(account: Option<&str>, region: Option<&str>) -> WireCredentials {
        WireCredentials {
            access_key_id: "AKID".into(),
            secret_access_key: "SECRET".into(),
            session_token: "TOKEN".into(),
            expiration: "2026-12-07T12:00:00Z".into(),
            account_id: account.map(str::to_string),
            region: region.map(str::to_string),
        }
    }

    /// The exact bytes SDKs parse: `Version` first, `AccountId` only when known.
    #[test]
    fn process_json_is_the_sdk_format() {
        assert_eq!(
            process_json(&creds(None, None)),
            r#"{"Version":1,"AccessKeyId":"AKID","SecretAccessKey":"SECRET","SessionToken":"TOKEN","Expiration":"2026-12-07T12:00:00Z"}"#
        );
        assert!(
            process_json(&creds(Some("123456789012"), None))
                .ends_with(r#""Expiration":"2026-12-07T12:00:00Z","AccountId":"123456789012"}"#)
        );
    }

    #[test]
    fn session_env_sets_the_region_only_when_known() {
        let keys = |c| -> Vec<&str> { session_env("dev", &c).iter().map(|(k, _)| *k).collect() };
        assert_eq!(
            keys(creds(None, None)),
            [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "AWS_CREDENTIAL_EXPIRATION",
                ENV_SESSION
            ]
        );
        assert!(keys(creds(None, Some("eu-west-1"))).contains(&"AWS_DEFAULT_REGION"));
    }
}
