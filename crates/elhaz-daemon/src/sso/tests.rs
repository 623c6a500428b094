use super::cache::*;
use super::logins::*;
use super::loopback::*;
use super::renewer::*;
use super::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

#[test]
fn pkce_challenge_matches_rfc7636() {
    // RFC 7636 appendix B.
    assert_eq!(
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}

#[test]
fn cache_file_name_is_sha1_of_key() {
    // sha1("my-sso") as botocore computes it.
    use sha1::Digest;
    let f = cache_file(Path::new("/c"), "my-sso");
    let want = hex::encode(sha1::Sha1::digest(b"my-sso"));
    assert_eq!(f, PathBuf::from(format!("/c/{want}.json")));
    assert_eq!(want.len(), 40);
}

#[test]
fn query_coding_round_trips() {
    let s = "http://127.0.0.1:5/oauth/callback?a=b c&d";
    assert_eq!(dec(&enc(s)), s);
    assert_eq!(dec("a+b%2Fc%"), "a b/c%");
}

#[test]
fn cache_times_parse_both_spellings() {
    assert!(parse_time("2030-01-01T00:00:00Z").is_some());
    assert!(parse_time("2030-01-01T00:00:00UTC").is_some());
    assert!(parse_time("2030-01-01T00:00:00.123Z").is_some());
    assert!(parse_time("soon").is_none());
}

fn idle_sso() -> Arc<Sso> {
    // No endpoint is ever called by these tests: the renewer only calls the OIDC service
    // when a token is due, and none is.
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::from_static("us-east-1"))
        .build();
    Arc::new(Sso::new(&sdk))
}

fn test_target(name: &str) -> Target {
    Target {
        // A name no real cache file has (the renewer re-reads the cache when it wakes).
        session_name: Some(format!("elhaz-unit-{name}-{}", std::process::id())),
        start_url: "https://unit.awsapps.com/start".into(),
        region: "eu-west-1".into(),
        scopes: vec![DEFAULT_SCOPE.into()],
    }
}

fn token(valid_for: Duration, refresh: bool) -> CachedToken {
    CachedToken {
        start_url: "https://unit.awsapps.com/start".into(),
        region: "eu-west-1".into(),
        access_token: "unit-access".into(),
        expires_at: crate::credentials::rfc3339(SystemTime::now() + valid_for),
        client_id: Some("cid".into()),
        client_secret: Some("cs".into()),
        registration_expires_at: None,
        refresh_token: refresh.then(|| "unit-refresh".into()),
    }
}

/// Whether the renewer task ends within a (paused-clock) second.
async fn ends(h: tokio::task::JoinHandle<()>) -> bool {
    tokio::time::timeout(Duration::from_secs(1), h)
        .await
        .is_ok()
}

/// With nothing to renew the renewer sleeps without a timer (no wake-up in an hour), and it
/// ends when the last session using the start URL goes.
#[tokio::test(start_paused = true)]
async fn renewer_without_a_token_never_wakes_and_ends_with_its_last_user() {
    let sso = idle_sso();
    let t = test_target("idle");
    let e = sso.entry(&t);
    e.users().insert("a".into());
    e.users().insert("b".into());
    let h = sso
        .ensure_renewer(&e)
        .expect("a renewer starts for a used entry");
    assert!(sso.ensure_renewer(&e).is_none(), "one renewer per entry");
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(
        e.wakeups.load(Ordering::Relaxed),
        0,
        "woke with nothing to renew"
    );
    // A token that cannot be renewed (no refresh token) is nothing to renew either.
    sso.adopt(&t, token(Duration::from_secs(8 * 3600), false))
        .await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(
        e.wakeups.load(Ordering::Relaxed),
        1,
        "only the adopt woke it"
    );
    sso.session_retired("a");
    tokio::task::yield_now().await;
    assert!(!h.is_finished(), "b still uses it");
    sso.session_retired("b");
    assert!(ends(h).await, "the renewer outlived its last session");
    assert!(!e.renewing.load(Ordering::SeqCst));
    // The token stays for the next user, whose first fetch restarts a renewer.
    assert!(e.token.lock().await.is_some());
    e.users().insert("c".into());
    let h = sso
        .ensure_renewer(&e)
        .expect("a new user restarts the renewer");
    let (had, portal) = sso.logout(&t, false).await;
    assert!(had && portal.is_none());
    assert!(ends(h).await, "the renewer outlived `sso logout`");
    assert!(e.token.lock().await.is_none(), "logout keeps the token");
}

/// A renewable token far from expiry: the renewer sleeps until it is due, waking at most
/// once an hour (the cap that survives a suspended laptop's monotonic clock).
#[tokio::test(start_paused = true)]
async fn renewer_with_a_distant_expiry_sleeps_until_due() {
    let sso = idle_sso();
    let t = test_target("distant");
    let e = sso.entry(&t);
    e.users().insert("a".into());
    let h = sso.ensure_renewer(&e).expect("a renewer starts");
    sso.adopt(&t, token(Duration::from_secs(8 * 3600), true))
        .await;
    tokio::time::sleep(Duration::from_secs(59 * 60)).await;
    assert_eq!(
        e.wakeups.load(Ordering::Relaxed),
        1,
        "only the adopt woke it"
    );
    tokio::time::sleep(Duration::from_secs(2 * 60)).await;
    assert_eq!(
        e.wakeups.load(Ordering::Relaxed),
        2,
        "one wake-up in an hour"
    );
    sso.session_retired("a");
    assert!(ends(h).await);
}

#[test]
fn retry_after_backs_off_to_five_minutes() {
    assert_eq!(retry_after(0), Duration::ZERO);
    assert_eq!(retry_after(1), Duration::from_secs(30));
    assert_eq!(retry_after(2), Duration::from_secs(60));
    assert_eq!(retry_after(4), Duration::from_secs(240));
    assert_eq!(retry_after(9), Duration::from_secs(300));
}

#[test]
fn debug_hides_tokens() {
    let mut t = CachedToken::default();
    t.access_token = "SECRET-A".into();
    t.refresh_token = Some("SECRET-R".into());
    t.client_secret = Some("SECRET-C".into());
    let d = format!("{t:?}");
    assert!(!d.contains("SECRET"), "{d}");
}
