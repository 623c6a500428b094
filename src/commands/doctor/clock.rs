//! The clock check: the `Date` of an (unsigned-for-real) STS reply against the local clock.

use super::*;

/// The STS endpoint doctor asks: `AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL`, or global STS.
pub(super) fn sts_endpoint() -> String {
    ["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "https://sts.amazonaws.com".into())
}

/// Sends one GetCallerIdentity with dummy credentials and returns the server's `Date` and the
/// local time it arrived.
pub(super) fn probe_sts_date(endpoint: &str) -> Result<(SystemTime, SystemTime), String> {
    use aws_sdk_sts::config::{
        BehaviorVersion, Credentials, Region, retry::RetryConfig, timeout::TimeoutConfig,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "us-east-1".into());
    let capture = elhaz::sts::DateCapture::default();
    let conf = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("doctor", "doctor", None, None, "doctor"))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(SKEW_TIMEOUT)
                .operation_timeout(SKEW_TIMEOUT)
                .build(),
        )
        .interceptor(capture.clone())
        .build();
    let client = aws_sdk_sts::Client::from_conf(conf);
    let sent = runtime.block_on(async {
        tokio::time::timeout(SKEW_TIMEOUT, client.get_caller_identity().send()).await
    });
    let Some((date, local)) = capture.header() else {
        return Err(match sent {
            Err(_) => format!("no answer within {}s", SKEW_TIMEOUT.as_secs()),
            Ok(Err(e)) => elhaz::error::display_chain(&e),
            Ok(Ok(_)) => "the reply has no Date header".into(),
        });
    };
    let server = elhaz::sts::parse_http_date(&date)
        .ok_or_else(|| format!("cannot parse the reply's Date header {date:?}"))?;
    Ok((server, local))
}

pub(super) fn check_clock(r: &mut Report) {
    let endpoint = sts_endpoint();
    let (server, local) = match probe_sts_date(&endpoint) {
        Ok(v) => v,
        Err(e) => {
            r.warn(
                "clock skew",
                format!("cannot check clock skew against {endpoint}: {e}"),
                "check your network; or ignore this when offline",
            );
            return;
        }
    };
    // `Date` has whole seconds: a clock in sync reads up to one second behind.
    let (skew, direction) = match local.duration_since(server) {
        Ok(ahead) => (ahead.saturating_sub(Duration::from_secs(1)), "ahead of"),
        Err(e) => (e.duration(), "behind"),
    };
    let secs = skew.as_secs();
    let detail = format!("the local clock is {secs}s {direction} {endpoint}");
    let fix = "sync the clock (e.g. `timedatectl set-ntp true`, or restart chrony/ntpd)";
    if skew > SKEW_FAIL {
        r.fail(
            "clock skew",
            format!("{detail}: STS rejects signatures more than 5 minutes off"),
            fix,
        );
    } else if skew > SKEW_WARN {
        r.warn("clock skew", detail, fix);
    } else {
        r.ok("clock skew", detail);
    }
}
