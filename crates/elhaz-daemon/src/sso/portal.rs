//! The portal calls the CLI makes with a token — the accounts and roles it may use (`sso
//! populate`), logout — and the SDK config for them (no credentials: these APIs take a bearer
//! token). The daemon lists assignments with its own token through the same function.

use std::time::Duration;

use super::cache::CachedToken;
use super::{Target, classify};
use crate::protocol::WireError;

/// Portal logout with a token (best effort: the local state is dropped regardless).
pub async fn portal_logout(
    sdk: &aws_config::SdkConfig,
    target: &Target,
    token: &CachedToken,
) -> Result<(), WireError> {
    aws_sdk_sso::Client::new(sdk)
        .logout()
        .access_token(&token.access_token)
        .customize()
        .config_override(
            aws_sdk_sso::config::Builder::default()
                .region(aws_sdk_sso::config::Region::new(target.region.clone())),
        )
        .send()
        .await
        .map_err(|e| classify("SSO Logout", &e))?;
    Ok(())
}

/// One account and role the portal lists for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Account id.
    pub account_id: String,
    /// Account name.
    pub account_name: String,
    /// Role name.
    pub role_name: String,
}

/// Every account and role of a token (ListAccounts, ListAccountRoles), paginated, bounded.
pub async fn assignments(
    sdk: &aws_config::SdkConfig,
    target: &Target,
    token: &CachedToken,
) -> Result<Vec<Assignment>, WireError> {
    list_assignments(&aws_sdk_sso::Client::new(sdk), target, &token.access_token).await
}

/// [`assignments`] with a portal client and a bearer token.
pub(super) async fn list_assignments(
    portal: &aws_sdk_sso::Client,
    target: &Target,
    access_token: &str,
) -> Result<Vec<Assignment>, WireError> {
    let region = || {
        aws_sdk_sso::config::Builder::default()
            .region(aws_sdk_sso::config::Region::new(target.region.clone()))
    };
    let mut accounts = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..100 {
        let out = portal
            .list_accounts()
            .access_token(access_token)
            .set_next_token(next.take())
            .customize()
            .config_override(region())
            .send()
            .await
            .map_err(|e| classify("SSO ListAccounts", &e))?;
        for a in out.account_list() {
            accounts.push((
                a.account_id().unwrap_or_default().to_string(),
                a.account_name().unwrap_or_default().to_string(),
            ));
        }
        next = out.next_token().map(str::to_string);
        if next.is_none() {
            break;
        }
    }
    let mut all = Vec::new();
    for (id, name) in accounts {
        let mut next: Option<String> = None;
        for _ in 0..100 {
            let out = portal
                .list_account_roles()
                .access_token(access_token)
                .account_id(&id)
                .set_next_token(next.take())
                .customize()
                .config_override(region())
                .send()
                .await
                .map_err(|e| classify("SSO ListAccountRoles", &e))?;
            for r in out.role_list() {
                all.push(Assignment {
                    account_id: id.clone(),
                    account_name: name.clone(),
                    role_name: r.role_name().unwrap_or_default().to_string(),
                });
            }
            next = out.next_token().map(str::to_string);
            if next.is_none() {
                break;
            }
        }
    }
    Ok(all)
}

/// An SDK config for the CLI's SSO calls (no credentials: these APIs take a bearer token).
pub async fn cli_sdk_config() -> aws_config::SdkConfig {
    use aws_config::timeout::TimeoutConfig;
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::from_static("us-east-1"))
        .no_credentials()
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        )
        .load()
        .await
}
