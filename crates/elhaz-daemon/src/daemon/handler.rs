//! One handler per request variant. Each returns a typed [`Response`] or a [`WireError`];
//! nothing here panics on bad input or touches the connection.

use std::sync::Arc;

use crate::daemon::State;
pub use crate::daemon::policy::Access;
use crate::protocol::{ErrorCode, PROTOCOL_VERSION, Request, Response, StatusInfo, WireError};

/// Who is asking, from the socket's peer credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Peer uid.
    pub uid: u32,
    /// Peer pid, when the OS reports it.
    pub pid: Option<i32>,
    /// What the policy lets this peer do.
    pub access: Access,
    /// The peer's executable name, looked up once per connection when first needed.
    pub exe: std::sync::OnceLock<String>,
    /// The 8-hex-character hash prefix of the token this request was admitted by.
    pub token: Option<String>,
}

impl Peer {
    /// A peer with the given identity.
    pub fn new(uid: u32, pid: Option<i32>, access: Access) -> Peer {
        Peer {
            uid,
            pid,
            access,
            exe: std::sync::OnceLock::new(),
            token: None,
        }
    }

    /// The executable name of the peer, for the audit trail (best effort).
    pub fn exe(&self) -> &str {
        self.exe.get_or_init(|| {
            self.pid
                .and_then(|p| std::fs::read_link(format!("/proc/{p}/exe")).ok())
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "?".into())
        })
    }
}

/// Applies a request's token (`--require-token`; see `daemon::tokens`) and returns the peer
/// the request is judged as. The rules:
/// - a request that carries a token is judged by the token alone, whoever sends it — the
///   owner and an allowlisted uid too: a valid token gives its sessions (all, if unscoped)
///   and never admin; an unknown or revoked one is refused;
/// - without a token, the daemon's own uid is the owner (no token needed, admin kept) and
///   every other uid is refused;
/// - a daemon started without `--require-token` refuses any token (a token the daemon would
///   ignore must not look like it worked).
pub fn authorize(
    state: &State,
    mut peer: Peer,
    token: Option<&crate::protocol::Token>,
) -> Result<Peer, WireError> {
    use crate::daemon::tokens::TokenSet;
    match (token, &state.tokens) {
        (None, None) => Ok(peer),
        (Some(_), None) => Err(WireError::new(
            ErrorCode::PermissionDenied,
            "permission denied: this daemon takes no tokens (it was started without \
             --require-token); unset ELHAZ_TOKEN and ELHAZ_TOKEN_FILE",
        )),
        (None, Some(_)) if peer.access == Access::Owner => Ok(peer),
        (None, Some(_)) => {
            crate::logging::denial(|| {
                tracing::warn!(
                    peer_uid = peer.uid,
                    peer_pid = peer.pid.unwrap_or(-1),
                    "refused a request without a token (--require-token)"
                );
            });
            Err(WireError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "permission denied: this daemon requires a token from uid {} (set \
                     ELHAZ_TOKEN or ELHAZ_TOKEN_FILE)",
                    peer.uid
                ),
            ))
        }
        (Some(t), Some(tokens)) => match tokens.current().check(t.expose()) {
            Some(grant) => {
                peer.access = Access::Sessions(grant.sessions);
                peer.token = Some(grant.prefix);
                Ok(peer)
            }
            None => {
                let prefix = TokenSet::prefix(t.expose());
                crate::logging::denial(|| {
                    tracing::warn!(
                        peer_uid = peer.uid,
                        peer_pid = peer.pid.unwrap_or(-1),
                        token = %prefix,
                        "refused an unknown or revoked token"
                    );
                });
                Err(WireError::new(
                    ErrorCode::PermissionDenied,
                    format!(
                        "permission denied: token {prefix}… is not valid for this daemon \
                         (unknown, or revoked from its token file)"
                    ),
                ))
            }
        },
    }
}

fn denied(what: &str) -> WireError {
    WireError::new(
        ErrorCode::PermissionDenied,
        format!("permission denied: {what} is reserved for the daemon's owner"),
    )
}

fn check_session(state: &State, peer: &Peer, name: &str) -> Result<(), WireError> {
    if !peer.access.allows_session(name) {
        // Validated before logging: a hostile name is logged as its length, and denials are
        // rate-limited (see crate::logging).
        let shown = crate::logging::name_for_log(name);
        crate::logging::denial(|| {
            tracing::warn!(
                peer_uid = peer.uid,
                token = peer.token.as_deref().unwrap_or("-"),
                session = %shown,
                "refused a session outside the peer's allow rule or token"
            );
        });
        return Err(WireError::new(
            ErrorCode::PermissionDenied,
            format!(
                "permission denied: uid {} may not use session {:?}",
                peer.uid, shown
            ),
        ));
    }
    if !state.policy.take_token(name) {
        return Err(WireError::new(
            ErrorCode::RateLimited,
            format!("rate limit for session {name:?} reached; retry shortly"),
        ));
    }
    Ok(())
}

/// Dispatches a request to its handler.
pub async fn handle(
    state: &Arc<State>,
    peer: Peer,
    request: Request,
) -> Result<Response, WireError> {
    if (request.is_admin() || matches!(request, Request::List { .. }))
        && peer.access != Access::Owner
    {
        return Err(denied(request.op()));
    }
    if let Request::Credentials { name, .. }
    | Request::Whoami { name, .. }
    | Request::ConsoleCredentials { name, .. } = &request
    {
        check_session(state, &peer, name)?;
    }
    if let Some(prefix) = &peer.token
        && !matches!(
            request,
            Request::Credentials { .. } | Request::ConsoleCredentials { .. }
        )
    {
        // Credentials are in the audit trail (with the prefix); every other use is logged.
        tracing::info!(
            peer_uid = peer.uid,
            token = %prefix,
            op = request.op(),
            "request by token"
        );
    }
    match request {
        Request::Ping => ping(state),
        Request::Status => status(state),
        Request::Stop => stop(state, &peer),
        Request::List {
            state: wanted,
            pattern,
        } => list(state, wanted.as_deref(), pattern.as_deref()),
        Request::Add { name } => add(state, &name).await,
        Request::Remove { name } => remove(state, &name),
        Request::Credentials { name, mfa_code } => credentials(state, &peer, &name, mfa_code).await,
        Request::Whoami { name, mfa_code } => whoami(state, &name, mfa_code).await,
        Request::ConsoleCredentials { name, duration_s } => {
            console_credentials(state, &peer, &name, duration_s).await
        }
        Request::SsoLogin { sso, sso_token } => sso_login(state, &sso, &sso_token).await,
        Request::SsoStatus => sso_status(state).await,
        Request::SsoAssignments { sso } => sso_assignments(state, &sso).await,
        Request::SsoLogout { sso, portal_logout } => sso_logout(state, &sso, portal_logout).await,
    }
}

/// The daemon's IAM Identity Center state and the target a wire name stands for, resolved
/// against the current `elhaz.toml` (re-read: `[sso_sessions]` may have changed).
async fn sso_of(
    state: &State,
    sso: &crate::protocol::SsoTarget,
) -> Result<(Arc<crate::sso::Sso>, crate::sso::Target), WireError> {
    let engine = state.sessions.sso().await.ok_or_else(|| {
        WireError::new(
            ErrorCode::Internal,
            "this daemon's credential engine has no IAM Identity Center support",
        )
    })?;
    let settings =
        crate::config::Settings::load(&state.paths.settings_file).map_err(|e| e.to_wire())?;
    Ok((engine, crate::sso::Target::from_wire(sso, &settings)?))
}

/// `sso_login`: the owner's CLI hands over the token of a login it ran. The token is logged
/// nowhere (not even its prefix): only the start URL and the expiry.
async fn sso_login(
    state: &State,
    sso: &crate::protocol::SsoTarget,
    token: &crate::protocol::SsoToken,
) -> Result<Response, WireError> {
    let (engine, target) = sso_of(state, sso).await?;
    let cached = crate::sso::CachedToken::from_wire(&target, token);
    if cached.remaining().is_zero() {
        return Err(WireError::new(
            ErrorCode::BadRequest,
            "sso_login: the token is already expired (or its expires_at is not RFC 3339)",
        ));
    }
    let expires_at = cached.expires_at.clone();
    engine.adopt(&target, cached).await;
    Ok(Response::SsoLoggedIn {
        sso: target.to_wire(),
        expires_at,
    })
}

async fn sso_status(state: &State) -> Result<Response, WireError> {
    let logins = match state.sessions.sso().await {
        Some(engine) => engine.status().await,
        None => Vec::new(),
    };
    Ok(Response::SsoStatus { logins })
}

async fn sso_assignments(
    state: &State,
    sso: &crate::protocol::SsoTarget,
) -> Result<Response, WireError> {
    let (engine, target) = sso_of(state, sso).await?;
    let assignments = engine
        .assignments(&target)
        .await?
        .into_iter()
        .map(|a| crate::protocol::SsoAssignment {
            account_id: a.account_id,
            account_name: a.account_name,
            role_name: a.role_name,
        })
        .collect();
    Ok(Response::SsoAssignments { assignments })
}

async fn sso_logout(
    state: &State,
    sso: &crate::protocol::SsoTarget,
    portal: bool,
) -> Result<Response, WireError> {
    let (engine, target) = sso_of(state, sso).await?;
    let (had_token, portal_error) = engine.logout(&target, portal).await;
    Ok(Response::SsoLoggedOut {
        sso: target.to_wire(),
        had_token,
        portal_error,
    })
}

fn ping(state: &State) -> Result<Response, WireError> {
    Ok(Response::Pong {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: state.pid,
    })
}

fn status(state: &State) -> Result<Response, WireError> {
    Ok(Response::Status(StatusInfo {
        pid: state.pid,
        version: env!("CARGO_PKG_VERSION").to_string(),
        protocol: PROTOCOL_VERSION,
        socket: state.paths.socket.display().to_string(),
        uptime_s: state.started.elapsed().as_secs(),
        sessions: state.sessions.len(),
        capacity: state.sessions.capacity(),
        idle_timeout_s: state.idle_timeout().map(|d| d.as_secs()),
    }))
}

/// The connection task cancels `state.shutdown` once this reply is written.
fn stop(state: &State, peer: &Peer) -> Result<Response, WireError> {
    tracing::info!(
        peer_uid = peer.uid,
        peer_pid = peer.pid.unwrap_or(-1),
        "stop requested"
    );
    Ok(Response::Stopping { pid: state.pid })
}

fn list(state: &State, wanted: Option<&str>, pattern: Option<&str>) -> Result<Response, WireError> {
    let wanted: Option<crate::protocol::SessionState> = wanted
        .map(str::parse)
        .transpose()
        .map_err(|m| WireError::new(ErrorCode::BadRequest, format!("list: {m}")))?;
    if let Some(p) = pattern
        && p.len() > 256
    {
        return Err(WireError::new(
            ErrorCode::BadRequest,
            "list: the name pattern is longer than 256 bytes",
        ));
    }
    let mut sessions = state.sessions.list();
    sessions.retain(|s| {
        wanted.is_none_or(|w| s.state == w) && pattern.is_none_or(|p| glob_match(p, &s.name))
    });
    Ok(Response::Sessions {
        sessions,
        more: false,
    })
}

/// Shell-style glob over a session name: `*` matches any run (also empty), `?` one character,
/// everything else itself. Iterative with one backtrack point, so it is linear in practice and
/// never recurses on hostile patterns.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was and how much of the name it has swallowed.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

async fn add(state: &State, name: &str) -> Result<Response, WireError> {
    let session = state.sessions.add(name).await?;
    Ok(Response::Added { session })
}

fn remove(state: &State, name: &str) -> Result<Response, WireError> {
    crate::config::validate_name(name).map_err(|e| e.to_wire())?;
    let was_cached = state.sessions.remove(name);
    Ok(Response::Removed {
        name: name.to_string(),
        was_cached,
    })
}

async fn credentials(
    state: &State,
    peer: &Peer,
    name: &str,
    mfa_code: Option<String>,
) -> Result<Response, WireError> {
    let creds = state.sessions.credentials(name, mfa_code).await?;
    audited(peer, name, creds)
}

/// The credential reply, once its audit line is written: the line is written before the
/// credential leaves; no line, no credential (unless `audit_fail_open`).
fn audited(
    peer: &Peer,
    name: &str,
    creds: crate::protocol::WireCredentials,
) -> Result<Response, WireError> {
    crate::logging::audit(&crate::logging::AuditRecord {
        session: name,
        peer_uid: peer.uid,
        peer_pid: peer.pid.unwrap_or(-1),
        peer_exe: peer.exe(),
        token: peer.token.as_deref(),
        expiration: &creds.expiration,
    })
    .map_err(|e| e.to_wire())?;
    Ok(Response::Credentials(creds))
}

async fn console_credentials(
    state: &State,
    peer: &Peer,
    name: &str,
    duration_s: Option<u32>,
) -> Result<Response, WireError> {
    if let Some(d) = duration_s
        && !(900..=129_600).contains(&d)
    {
        return Err(WireError::new(
            ErrorCode::BadRequest,
            "console_credentials: duration_s must be 900..129600 (GetFederationToken's range)",
        ));
    }
    let creds = state.sessions.console_credentials(name, duration_s).await?;
    audited(peer, name, creds)
}

async fn whoami(
    state: &State,
    name: &str,
    mfa_code: Option<String>,
) -> Result<Response, WireError> {
    state
        .sessions
        .whoami(name, mfa_code)
        .await
        .map(Response::Identity)
}

pub use crate::protocol::protocol_mismatch;

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "dev"));
        assert!(glob_match("dev", "dev"));
        assert!(!glob_match("dev", "devx"));
        assert!(glob_match("dev*", "dev-eu"));
        assert!(glob_match("*-eu", "dev-eu"));
        assert!(glob_match("d?v", "dev"));
        assert!(!glob_match("d?v", "dv"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("prod-*-admin", "prod-123456789012-admin"));
        // Pathological patterns stay fast (no exponential backtracking).
        let long = "a".repeat(64);
        assert!(!glob_match("*a*a*a*a*a*a*a*b", &long));
    }
}
