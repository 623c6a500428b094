//! The login flows `elhaz sso login` runs in the CLI (never in the daemon): register an OIDC
//! client, then either the device authorization flow (a URL and a code to confirm on any
//! device, polled until confirmed) or the authorization code flow with PKCE and a loopback
//! redirect (`loopback`). Both end in a [`CachedToken`] with the client registration, so the
//! daemon can renew it with the refresh token.

use std::time::{Duration, SystemTime};

use aws_sdk_sso::error::ProvideErrorMetadata;

use super::cache::CachedToken;
use super::loopback::{b64url, callback, enc, pkce_challenge};
use super::{CLIENT_NAME, Target, classify};
use crate::protocol::{ErrorCode, WireError};

/// How `elhaz sso login` signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// OAuth device authorization: a URL and a code to confirm on any device.
    DeviceCode,
    /// Authorization code with PKCE and a loopback redirect (a browser on this machine).
    Pkce,
}

/// Options of a login.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    /// Which flow.
    pub flow: Flow,
    /// Open the URL with `$BROWSER` / `xdg-open` / `open`; otherwise only print it.
    pub open_browser: bool,
    /// Give up after this long.
    pub timeout: Duration,
}

/// Whether this machine looks able to open a browser (a display, macOS, or `$BROWSER`).
pub fn has_display() -> bool {
    cfg!(target_os = "macos")
        || ["DISPLAY", "WAYLAND_DISPLAY", "BROWSER"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

pub(super) fn oidc_region(target: &Target) -> aws_sdk_ssooidc::config::Builder {
    aws_sdk_ssooidc::config::Builder::default()
        .region(aws_sdk_ssooidc::config::Region::new(target.region.clone()))
}

/// The OIDC base URL the authorize page lives on (the SDK's endpoint rules, env overrides
/// first).
pub(super) fn oidc_base_url(target: &Target) -> String {
    ["AWS_ENDPOINT_URL_SSO_OIDC", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| format!("https://oidc.{}.amazonaws.com", target.region))
        .trim_end_matches('/')
        .to_string()
}

pub(super) fn open_url(url: &str) {
    let opener = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| {
            if cfg!(target_os = "macos") {
                "open".into()
            } else {
                "xdg-open".into()
            }
        });
    let spawned = std::process::Command::new(&opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        eprintln!("cannot open a browser with {opener:?} ({e}); open the URL above yourself");
    }
}

/// Runs a login and returns the token (with the client registration, for refreshes).
/// `say` receives the lines to show the user (URL, code).
pub async fn login(
    sdk: &aws_config::SdkConfig,
    target: &Target,
    opts: &LoginOptions,
    say: &mut (dyn FnMut(&str) + Send),
) -> Result<CachedToken, WireError> {
    let signin = SignIn {
        oidc: aws_sdk_ssooidc::Client::new(sdk),
        target,
        opts,
        deadline: tokio::time::Instant::now() + opts.timeout,
    };
    // The PKCE flow's redirect names the listener's port, so it is bound before registering.
    let loopback = match opts.flow {
        Flow::Pkce => Some(loopback_listener().await?),
        Flow::DeviceCode => None,
    };
    let client = signin
        .register(loopback.as_ref().map(|(_, r)| r.as_str()))
        .await?;
    let out = match loopback {
        Some((listener, redirect)) => signin.pkce(&client, &listener, &redirect, say).await?,
        None => signin.device_code(&client, say).await?,
    };
    let lifetime = Duration::from_secs(u64::try_from(out.expires_in()).unwrap_or(0));
    Ok(CachedToken {
        start_url: target.start_url.clone(),
        region: target.region.clone(),
        access_token: out.access_token().unwrap_or_default().to_string(),
        expires_at: crate::credentials::rfc3339(SystemTime::now() + lifetime),
        client_id: Some(client.id),
        client_secret: Some(client.secret),
        registration_expires_at: client.expires_at,
        refresh_token: out.refresh_token().map(str::to_string),
    })
}

/// One login under way: the OIDC client, what it is for, and when it gives up.
struct SignIn<'a> {
    oidc: aws_sdk_ssooidc::Client,
    target: &'a Target,
    opts: &'a LoginOptions,
    deadline: tokio::time::Instant,
}

/// The OIDC client a login registered (kept with the token: the refresh grant needs it).
struct Registration {
    id: String,
    secret: String,
    /// When the registration expires (RFC 3339), if the service said.
    expires_at: Option<String>,
}

type TokenOutput = aws_sdk_ssooidc::operation::create_token::CreateTokenOutput;

/// A listener on a free loopback port and the redirect URI that points at it.
async fn loopback_listener() -> Result<(tokio::net::TcpListener, String), WireError> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| {
            WireError::new(
                ErrorCode::Internal,
                format!("cannot listen on 127.0.0.1: {e}"),
            )
        })?;
    let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
    Ok((l, format!("http://127.0.0.1:{port}/oauth/callback")))
}

impl SignIn<'_> {
    fn timed_out(&self) -> WireError {
        WireError::new(
            ErrorCode::Unavailable,
            format!(
                "the login was not completed within {}; run `{}` again",
                crate::config::Secs(self.opts.timeout.as_secs()),
                self.target.login_hint()
            ),
        )
    }

    /// RegisterClient: a public client for the target's scopes; with a `redirect`, one that
    /// may use the authorization code grant (and refresh) with that redirect URI.
    async fn register(&self, redirect: Option<&str>) -> Result<Registration, WireError> {
        let target = self.target;
        let mut reg = self
            .oidc
            .register_client()
            .client_name(CLIENT_NAME)
            .client_type("public")
            .set_scopes(Some(target.scopes.clone()));
        if let Some(r) = redirect {
            reg = reg
                .grant_types("authorization_code")
                .grant_types("refresh_token")
                .redirect_uris(r)
                .issuer_url(&target.start_url);
        }
        let reg = reg
            .customize()
            .config_override(oidc_region(target))
            .send()
            .await
            .map_err(|e| classify("SSO OIDC RegisterClient", &e))?;
        let expires = reg.client_secret_expires_at();
        Ok(Registration {
            id: reg.client_id().unwrap_or_default().to_string(),
            secret: reg.client_secret().unwrap_or_default().to_string(),
            expires_at: (expires > 0).then(|| {
                crate::credentials::rfc3339(
                    SystemTime::UNIX_EPOCH
                        + Duration::from_secs(u64::try_from(expires).unwrap_or(0)),
                )
            }),
        })
    }

    /// The authorization code flow with PKCE: the user signs in in a browser, which is
    /// redirected to `listener` with the code; the code and the verifier buy the token.
    async fn pkce(
        &self,
        client: &Registration,
        listener: &tokio::net::TcpListener,
        redirect: &str,
        say: &mut (dyn FnMut(&str) + Send),
    ) -> Result<TokenOutput, WireError> {
        let target = self.target;
        let verifier = b64url(&rand::random::<[u8; 48]>());
        let state = hex::encode(rand::random::<[u8; 16]>());
        let url = format!(
            "{}/authorize?response_type=code&client_id={}&redirect_uri={}&state={}&code_challenge_method=S256&scopes={}&code_challenge={}",
            oidc_base_url(target),
            enc(&client.id),
            enc(redirect),
            state,
            enc(&target.scopes.join(" ")),
            pkce_challenge(&verifier),
        );
        say(&format!(
            "Sign in to {} in your browser:\n  {url}",
            target.start_url
        ));
        if self.opts.open_browser {
            open_url(&url);
        }
        let code = tokio::time::timeout_at(self.deadline, callback(listener, &state))
            .await
            .map_err(|_| self.timed_out())??;
        self.oidc
            .create_token()
            .grant_type("authorization_code")
            .client_id(&client.id)
            .client_secret(&client.secret)
            .code(code)
            .redirect_uri(redirect)
            .code_verifier(verifier)
            .customize()
            .config_override(oidc_region(target))
            .send()
            .await
            .map_err(|e| classify("SSO OIDC CreateToken", &e))
    }

    /// The device authorization flow: the user confirms a code at a URL on any device while
    /// this polls CreateToken at the service's interval.
    async fn device_code(
        &self,
        client: &Registration,
        say: &mut (dyn FnMut(&str) + Send),
    ) -> Result<TokenOutput, WireError> {
        let target = self.target;
        let auth = self
            .oidc
            .start_device_authorization()
            .client_id(&client.id)
            .client_secret(&client.secret)
            .start_url(&target.start_url)
            .customize()
            .config_override(oidc_region(target))
            .send()
            .await
            .map_err(|e| classify("SSO OIDC StartDeviceAuthorization", &e))?;
        let url = auth
            .verification_uri_complete()
            .or(auth.verification_uri())
            .unwrap_or_default()
            .to_string();
        say(&format!(
            "Sign in to {} and confirm the code {}:\n  {url}",
            target.start_url,
            auth.user_code().unwrap_or_default()
        ));
        if self.opts.open_browser {
            open_url(&url);
        }
        let expires =
            tokio::time::Instant::now() + Duration::from_secs(auth.expires_in().max(1) as u64);
        let interval = Duration::from_secs(auth.interval().clamp(1, 60) as u64);
        let device_code = auth.device_code().unwrap_or_default();
        self.poll(client, device_code, interval, expires).await
    }

    /// Polls CreateToken with the device code until the user confirms, denies, or time runs
    /// out (ours or the code's); slows down when asked to.
    async fn poll(
        &self,
        client: &Registration,
        device_code: &str,
        mut interval: Duration,
        expires: tokio::time::Instant,
    ) -> Result<TokenOutput, WireError> {
        let target = self.target;
        // Bounded by the deadline and the device code's own expiry.
        loop {
            if tokio::time::Instant::now() + interval > self.deadline.min(expires) {
                return Err(if self.deadline <= expires {
                    self.timed_out()
                } else {
                    device_expired(target)
                });
            }
            tokio::time::sleep(interval).await;
            let r = self
                .oidc
                .create_token()
                .grant_type("urn:ietf:params:oauth:grant-type:device_code")
                .client_id(&client.id)
                .client_secret(&client.secret)
                .device_code(device_code)
                .customize()
                .config_override(oidc_region(target))
                .send()
                .await;
            match r {
                Ok(out) => return Ok(out),
                Err(e) => match e.code() {
                    Some("AuthorizationPendingException") => {}
                    Some("SlowDownException") => interval += Duration::from_secs(5),
                    Some("ExpiredTokenException") => return Err(device_expired(target)),
                    Some("AccessDeniedException") => {
                        return Err(WireError::new(
                            ErrorCode::AccessDenied,
                            "the sign-in was denied in the browser",
                        ));
                    }
                    _ => return Err(classify("SSO OIDC CreateToken", &e)),
                },
            }
        }
    }
}

pub(super) fn device_expired(target: &Target) -> WireError {
    WireError::new(
        ErrorCode::Expired,
        format!(
            "the device code expired before the sign-in was confirmed; run `{}` again",
            target.login_hint()
        ),
    )
}
