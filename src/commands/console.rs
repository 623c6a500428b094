//! `elhaz console NAME`: the AWS console, signed in as the session, through the federation
//! sign-in flow: `GET …/federation?Action=getSigninToken&Session={json}` with the session's
//! credentials, then the login URL `…/federation?Action=login&Issuer=elhaz&Destination=…&
//! SigninToken=…`, opened with `xdg-open` / `open` or printed with `--print`.
//!
//! Not a hot path, so it may build a (current-thread) runtime: the request goes through the
//! AWS SDK's own HTTP client (rustls, the system roots), not a second TLS stack. The
//! credentials travel only in that HTTPS request (never argv, logs or disk); the login URL is
//! itself a secret (it signs the browser in for the session's duration) and is written only to
//! stdout, or handed to the opener as its argument (the one place it appears in argv, as with
//! every tool that opens a browser).
//!
//! Partitions: the region (the config's, else `AWS_REGION`) picks the sign-in and console
//! hosts: `cn-*` → aws-cn, `us-gov-*` → aws-us-gov, anything else → aws.
//! `ELHAZ_FEDERATION_URL` overrides the federation endpoint (tests serve a fake one).
//!
//! The federation endpoint only accepts role (or federated-user) credentials, so the CLI asks
//! the daemon for `console_credentials`: for a session whose credentials come from
//! GetSessionToken (an IAM user without a role) the daemon calls GetFederationToken with the
//! long-term keys it holds — the CLI never sees them — with an allow-all session policy (the
//! federated user gets exactly the IAM user's permissions; see `sts::federation_policy`) and
//! `--duration` as its lifetime; every other session gets its usual credentials.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use elhaz::paths::Paths;
use zeroize::Zeroizing;

use super::consume::{fetch, resolve_name};
use elhaz::cli::ConsoleArgs;

/// Environment variable overriding the federation endpoint (for tests).
pub const ENV_FEDERATION_URL: &str = "ELHAZ_FEDERATION_URL";

/// (federation endpoint, default console destination) for a region.
pub fn partition_hosts(region: Option<&str>) -> (&'static str, &'static str) {
    match region {
        Some(r) if r.starts_with("cn-") => (
            "https://signin.amazonaws.cn/federation",
            "https://console.amazonaws.cn/",
        ),
        Some(r) if r.starts_with("us-gov-") => (
            "https://signin.amazonaws-us-gov.com/federation",
            "https://console.amazonaws-us-gov.com/",
        ),
        _ => (
            "https://signin.aws.amazon.com/federation",
            "https://console.aws.amazon.com/",
        ),
    }
}

/// RFC 3986 unreserved characters kept, everything else percent-encoded.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn run(paths: &Paths, args: ConsoleArgs) -> Result<ExitCode> {
    let name = resolve_name(paths, args.name.given())?;
    let duration = console_duration(args.duration.as_deref())?;
    // In range (900..=43200), so it fits.
    let creds = console_credentials(paths, &name, duration.and_then(|d| u32::try_from(d).ok()))?;
    let region = creds
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()));
    let (default_fed, default_dest) = partition_hosts(region.as_deref());
    let federation = std::env::var(ENV_FEDERATION_URL)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default_fed.to_string());
    let destination = args
        .destination
        .clone()
        .unwrap_or_else(|| default_dest.to_string());
    if !(destination.starts_with("https://") || destination.starts_with("http://")) {
        bail!("--destination {destination:?}: expected an https:// console URL");
    }
    let token = signin_token(&federation, creds, duration)?;
    let login = Zeroizing::new(format!(
        "{federation}?Action=login&Issuer=elhaz&Destination={}&SigninToken={}",
        urlencode(&destination),
        urlencode(&token)
    ));
    if args.print {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", login.as_str())?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    open_in_browser(&login)?;
    eprintln!("elhaz: opened the AWS console for session {name:?}");
    Ok(ExitCode::SUCCESS)
}

/// `--duration`, in seconds, within the console's 15m..12h.
fn console_duration(arg: Option<&str>) -> Result<Option<u64>> {
    arg.map(|d| {
        d.parse::<elhaz::config::Secs>()
            .map_err(|e| anyhow!("--duration: {e}"))
            .and_then(|s| {
                if (900..=43200).contains(&s.0) {
                    Ok(s.0)
                } else {
                    bail!("--duration: the console session lasts 15m..12h (900..43200 s)")
                }
            })
    })
    .transpose()
}

/// The federation endpoint's `getSigninToken` for `creds` (consumed: the JSON holding them is
/// zeroized once sent).
fn signin_token(
    federation: &str,
    creds: elhaz::protocol::WireCredentials,
    duration: Option<u64>,
) -> Result<String> {
    let session = Zeroizing::new(
        serde_json::json!({
            "sessionId": creds.access_key_id,
            "sessionKey": creds.secret_access_key,
            "sessionToken": creds.session_token,
        })
        .to_string(),
    );
    drop(creds);
    let mut url = Zeroizing::new(format!(
        "{federation}?Action=getSigninToken&Session={}",
        urlencode(&session)
    ));
    if let Some(d) = duration {
        url.push_str(&format!("&SessionDuration={d}"));
    }
    let body = http_get(&url).with_context(|| format!("getSigninToken at {federation}"))?;
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        anyhow!("getSigninToken at {federation}: the reply is not JSON with a SigninToken ({e})")
    })?;
    let token = v["SigninToken"]
        .as_str()
        .ok_or_else(|| anyhow!("getSigninToken at {federation}: no SigninToken in the reply"))?;
    Ok(token.to_string())
}

/// Hands the login URL to `xdg-open` (`open` on macOS).
fn open_in_browser(login: &str) -> Result<()> {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let status = std::process::Command::new(opener)
        .arg(login)
        .status()
        .map_err(|e| anyhow!("cannot run {opener} ({e}); use --print to get the URL instead"))?;
    if !status.success() {
        bail!("{opener} failed ({status}); use --print to get the URL instead");
    }
    Ok(())
}

/// The daemon's `console_credentials` for `name`: federated-user credentials for an IAM-user
/// session (GetFederationToken, made by the daemon with the keys only it holds), the session's
/// own credentials otherwise. A session that needs an MFA code first goes through the usual
/// prompt ([`fetch`]), then is asked again.
fn console_credentials(
    paths: &Paths,
    name: &str,
    duration_s: Option<u32>,
) -> Result<elhaz::protocol::WireCredentials> {
    use elhaz::protocol::{ErrorCode, Request, Response};
    let request = || Request::ConsoleCredentials {
        name: name.to_string(),
        duration_s,
    };
    let mut c = elhaz::client::connect_or_start(paths)?;
    let reply = match c.call(request()) {
        Err(elhaz::Error::Remote(e)) if e.code == ErrorCode::MfaRequired => {
            drop(fetch(paths, name)?);
            c.call(request())
        }
        other => other,
    };
    match reply? {
        Response::Credentials(creds) => Ok(creds),
        other => bail!("unexpected reply to a console_credentials request: {other:?}"),
    }
}

/// One GET through the AWS SDK's HTTP client; the body of a 2xx reply.
fn http_get(url: &str) -> Result<Vec<u8>> {
    use aws_smithy_http_client::Connector;
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    use aws_smithy_runtime_api::client::http::HttpConnector;
    use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
    use aws_smithy_types::body::SdkBody;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let connector = Connector::builder()
            .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
            .build();
        let mut req = HttpRequest::new(SdkBody::empty());
        req.set_uri(url)
            .map_err(|_| anyhow!("the federation endpoint is not a valid URL"))?;
        let call = connector.call(req);
        let resp = tokio::time::timeout(std::time::Duration::from_secs(30), call)
            .await
            .map_err(|_| anyhow!("no reply within 30s"))?
            .map_err(|e| anyhow!("request failed: {e}"))?;
        let status = resp.status().as_u16();
        let bytes = aws_smithy_types::byte_stream::ByteStream::new(resp.into_body())
            .collect()
            .await
            .map_err(|e| anyhow!("cannot read the reply: {e}"))?
            .into_bytes()
            .to_vec();
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&bytes);
            let text: String = text.chars().take(300).collect();
            bail!("HTTP {status}: {}", text.trim());
        }
        Ok(bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_pick_their_sign_in_host() {
        assert!(
            partition_hosts(Some("cn-north-1"))
                .0
                .contains("amazonaws.cn")
        );
        assert!(
            partition_hosts(Some("us-gov-west-1"))
                .0
                .contains("amazonaws-us-gov.com")
        );
        assert!(
            partition_hosts(Some("eu-west-1"))
                .0
                .contains("signin.aws.amazon.com")
        );
        assert!(partition_hosts(None).1.contains("console.aws.amazon.com"));
    }

    #[test]
    fn urlencoding() {
        assert_eq!(urlencode("a b/+={}\"~"), "a%20b%2F%2B%3D%7B%7D%22~");
    }
}
