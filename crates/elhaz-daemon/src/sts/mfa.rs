//! MFA, as aws-vault does it: a code comes from the request (the CLI prompted), else the
//! config's command, else the CLI is asked for one (`mfa_required`); a role behind MFA is
//! assumed from an MFA-backed GetSessionToken session shared by every config with the same
//! serial, source and STS endpoint, so background refreshes need no new code until that
//! session ends. The shared session is judged on the local clock (5 minutes of margin).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::SharedCredentialsProvider;
use secrecy::{ExposeSecret, SecretString};

use super::FetchRequest;
use super::answers::{classify, convert};
use super::children::run_child;
use super::fetcher::Inner;
use crate::config::{self, SessionConfig};
use crate::credentials::Credentials;
use crate::protocol::{ErrorCode, WireError};

impl Inner {
    /// An MFA code: from the request, else the configured command, else ask the CLI.
    pub(super) async fn mfa_code(&self, req: &FetchRequest) -> Result<SecretString, WireError> {
        // Invariant: only called for configs with `[mfa]`.
        let Some(mfa) = &req.config.mfa else {
            return Err(WireError::new(ErrorCode::Internal, "no [mfa] section"));
        };
        if let Some(code) = &req.mfa_code {
            return check_code(code.clone());
        }
        if let Some(argv) = &mfa.command {
            let timeout = Duration::from_secs(
                mfa.command_timeout
                    .map_or(config::DEFAULT_MFA_COMMAND_TIMEOUT, |t| t.0),
            );
            return run_mfa_command(argv, timeout).await;
        }
        let mut e = WireError::new(
            ErrorCode::MfaRequired,
            format!("mfa required (serial {})", mfa.serial),
        );
        e.mfa_serial = Some(mfa.serial.0.clone());
        Err(e)
    }

    /// The shared MFA-backed session for (serial, source, STS endpoint), creating it with a
    /// code if needed. The endpoint is part of the key: a session token from one STS (a local
    /// one, a partition's) means nothing to another.
    pub(super) async fn mfa_session(
        &self,
        req: &FetchRequest,
        serial: &str,
        base: SharedCredentialsProvider,
    ) -> Result<Arc<Credentials>, WireError> {
        let key = mfa_key(serial, &req.config);
        let margin = SystemTime::now() + Duration::from_secs(5 * 60);
        let cached = self
            .mfa_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .filter(|c| c.expiration > margin)
            .cloned();
        if let Some(c) = cached {
            return Ok(c);
        }
        let code = self.mfa_code(req).await?;
        let duration = req
            .config
            .mfa
            .as_ref()
            .and_then(|m| m.session_duration)
            .map_or(config::DEFAULT_MFA_SESSION_DURATION, |d| d.0);
        let started = SystemTime::now();
        let out = self
            .client
            .get_session_token()
            .serial_number(serial)
            .token_code(code.expose_secret())
            .duration_seconds(i32::try_from(duration).unwrap_or(i32::MAX))
            .customize()
            .config_override(self.overrides(&req.config, Some(base)))
            .send()
            .await
            .map_err(|e| classify("GetSessionToken (MFA)", e, true))?;
        let fetched = convert(out.credentials(), None, started, None)?;
        let creds = Arc::new(fetched.creds);
        self.mfa_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, creds.clone());
        tracing::info!(session = %req.name, "MFA session established");
        Ok(creds)
    }
}

/// The key of the shared MFA session of a config behind `serial`.
pub(super) fn mfa_key(serial: &str, config: &SessionConfig) -> String {
    format!(
        "{serial}\u{0}{:?}\u{0}{}",
        config.source(),
        config.endpoint_url().unwrap_or_default()
    )
}

pub(super) fn check_code(code: SecretString) -> Result<SecretString, WireError> {
    let c = code.expose_secret();
    if c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit()) {
        Ok(code)
    } else {
        Err(WireError::new(
            ErrorCode::MfaFailed,
            "an MFA code is 6 digits",
        ))
    }
}

pub(super) async fn run_mfa_command(
    argv: &[String],
    timeout: Duration,
) -> Result<SecretString, WireError> {
    let fail = |m: String| WireError::new(ErrorCode::MfaFailed, m);
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| fail("the MFA command is empty".into()))?;
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args);
    let out = run_child(cmd, timeout)
        .await
        .map_err(|e| fail(format!("the MFA command {prog:?} {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(fail(format!(
            "the MFA command {prog:?} exited with {}: {}",
            out.status,
            err.trim().chars().take(300).collect::<String>()
        )));
    }
    let code = String::from_utf8_lossy(&out.stdout);
    let code = code.lines().last().unwrap_or("").trim().to_string();
    check_code(SecretString::from(code)).map_err(|_| {
        fail(format!(
            "the MFA command {prog:?} did not print a 6-digit code"
        ))
    })
}
