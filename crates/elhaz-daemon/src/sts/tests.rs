use super::profiles::*;
use super::*;
use std::time::Duration;

fn files(config: &str, creds: &str) -> ProfileFiles {
    ProfileFiles {
        config: config.into(),
        creds: creds.into(),
    }
}

#[test]
fn a_plain_credential_process_profile_is_a_chain_without_roles() {
    let f = files("[profile p]\ncredential_process = /bin/tool a\n", "");
    assert_eq!(
        f.process_chain("p"),
        Some(ProcessChain {
            root: "p".into(),
            command: "/bin/tool a".into(),
            roles: vec![],
        })
    );
}

#[test]
fn a_source_profile_chain_to_a_credential_process_is_walked_root_first() {
    let f = files(
        "[profile top]\nrole_arn = arn:aws:iam::1:role/top\nsource_profile = mid\n\
         external_id = ext\nrole_session_name = me\nduration_seconds = 1800\n\n\
         [profile mid]\nrole_arn = arn:aws:iam::1:role/mid\nsource_profile = root\n\n\
         [profile root]\ncredential_process = /bin/tool\n",
        "",
    );
    let chain = f.process_chain("top").expect("a process chain");
    assert_eq!(chain.root, "root");
    assert_eq!(chain.command, "/bin/tool");
    let arns: Vec<_> = chain.roles.iter().map(|r| r.arn.as_str()).collect();
    assert_eq!(arns, ["arn:aws:iam::1:role/mid", "arn:aws:iam::1:role/top"]);
    let top = &chain.roles[1];
    assert_eq!(top.external_id.as_deref(), Some("ext"));
    assert_eq!(top.session_name.as_deref(), Some("me"));
    assert_eq!(top.duration_seconds, Some(1800));
    assert_eq!(chain.roles[0].duration_seconds, None);
}

#[test]
fn a_self_referencing_role_profile_uses_its_own_credential_process() {
    let f = files(
        "[profile s]\nrole_arn = arn:aws:iam::1:role/s\nsource_profile = s\n\
         credential_process = /bin/tool\n",
        "",
    );
    let chain = f.process_chain("s").expect("a process chain");
    assert_eq!(chain.root, "s");
    assert_eq!(chain.roles.len(), 1);
}

#[test]
fn chains_without_a_credential_process_are_left_to_the_sdk() {
    // Static keys in a source profile win over its credential_process (as in the SDK).
    let f = files(
        "[profile a]\nrole_arn = arn:aws:iam::1:role/a\nsource_profile = b\n\n\
         [profile b]\ncredential_process = /bin/tool\n",
        "[b]\naws_access_key_id = AKIA\naws_secret_access_key = s\n",
    );
    assert_eq!(f.process_chain("a"), None);
    // A loop, a credential_source, SSO and a missing profile: the SDK reports them.
    let f = files(
        "[profile x]\nrole_arn = r\nsource_profile = y\n\n\
         [profile y]\nrole_arn = r\nsource_profile = x\ncredential_process = t\n\n\
         [profile e]\nrole_arn = r\ncredential_source = Environment\n\n\
         [profile o]\nsso_session = s\ncredential_process = t\n\n\
         [profile m]\nrole_arn = r\nsource_profile = nowhere\n",
        "",
    );
    for p in ["x", "e", "o", "m", "absent"] {
        assert_eq!(f.process_chain(p), None, "{p}");
    }
}

#[test]
fn lifetime_is_measured_on_sts_clock_when_it_says_it() {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let exp = t + Duration::from_secs(3600);
    // Our clock ten minutes slow: against our clock the credential would seem to live
    // 70 minutes; STS's Date says 60 (less Date's truncated second).
    let ours = t - Duration::from_secs(600);
    assert_eq!(lifetime_of(exp, ours, None), Duration::from_secs(4200));
    assert_eq!(lifetime_of(exp, ours, Some(t)), Duration::from_secs(3599));
    // Our clock two hours fast: not "already expired".
    let fast = t + Duration::from_secs(7200);
    assert_eq!(lifetime_of(exp, fast, None), Duration::ZERO);
    assert_eq!(lifetime_of(exp, fast, Some(t)), Duration::from_secs(3599));
}

#[test]
fn throttling_codes_include_slow_down_and_exclude_outages() {
    for c in [
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "SlowDown",
        "TooManyRequestsException",
    ] {
        assert!(is_throttling(c), "{c}");
    }
    for c in ["ServiceUnavailable", "InternalFailure", "AccessDenied", ""] {
        assert!(!is_throttling(c), "{c}");
    }
}

#[test]
fn date_capture_parses_http_dates() {
    let c = DateCapture::default();
    assert_eq!(c.date(), None);
    *c.0.lock().unwrap() = Some(("Wed, 02 Dec 2026 05:27:26 GMT".into(), SystemTime::now()));
    assert_eq!(
        c.date().map(crate::credentials::rfc3339).as_deref(),
        Some("2026-12-02T05:27:26Z")
    );
    *c.0.lock().unwrap() = Some(("yesterday".into(), SystemTime::now()));
    assert_eq!(c.date(), None);
}
