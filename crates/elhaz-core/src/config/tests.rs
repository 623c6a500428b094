use super::*;

fn parse(src: &str) -> Result<SessionConfig, Error> {
    SessionConfig::parse(src, Path::new("x.toml"), false)
}

#[test]
fn names() {
    for ok in ["dev", "a", "prod-admin_1.x", &"a".repeat(64)] {
        validate_name(ok).unwrap();
    }
    for bad in [
        "",
        ".hidden",
        "a/b",
        "a b",
        "ü",
        &"a".repeat(65),
        "..",
        "x\0",
        "-dev",
        "--help",
    ] {
        assert!(validate_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn durations_parse() {
    assert_eq!("3600".parse::<Secs>().unwrap(), Secs(3600));
    assert_eq!("1h".parse::<Secs>().unwrap(), Secs(3600));
    assert_eq!("90m".parse::<Secs>().unwrap(), Secs(5400));
    assert_eq!("1h 30m".parse::<Secs>().unwrap(), Secs(5400));
    assert!("abc".parse::<Secs>().is_err());
    assert!("1.5s".parse::<Secs>().is_err() || "1.5s".parse::<Secs>().is_ok());
}

#[test]
fn full_config_round_trips() {
    let src = r#"
description = "prod admin"
region = "eu-west-1"
profile = "corp"
duration = "1h"

[role]
arn = "arn:aws:iam::123456789012:role/Admin"
session_name = "alice"
external_id = "ext-123"
policy = '{"Version":"2012-10-17","Statement":[]}'
policy_arns = ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
transitive_tag_keys = ["team"]
source_identity = "alice"
tags = { team = "infra" }

[mfa]
serial = "arn:aws:iam::123456789012:mfa/alice"
command = ["ykman", "oath", "accounts", "code", "-s", "aws"]
session_duration = "12h"

[sts]
region = "eu-west-1"
"#;
    let cfg = parse(src).unwrap();
    assert_eq!(cfg.duration, Some(Secs(3600)));
    assert_eq!(cfg.source(), Source::Profile("corp".into()));
    let again = parse(&cfg.to_toml()).unwrap();
    assert_eq!(cfg, again);
}

#[test]
fn errors_name_line_column_and_field() {
    let e = parse("[role]\narn = \"arn:aws:iam::12:role/x\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("x.toml") && e.contains("line 2") && e.contains("role ARN"),
        "{e}"
    );

    let e = parse("[role]\narn = \"arn:aws:iam::123456789012:role/x\"\nrol = 1\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 3") && e.contains("unknown field"), "{e}");

    let e = parse("duration = 60\n[role]\narn = \"arn:aws:iam::123456789012:role/x\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 1, column 1") && e.contains("`duration`"),
        "{e}"
    );
    assert!(e.contains("900..=43200"), "{e}");

    let e = parse("profile = \"a\"\nkeyring = \"b\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2") && e.contains("at most one"), "{e}");
}

#[test]
fn every_field_error_is_reported_without_its_value() {
    let secret = "wJalrXUtnFEMI/K7MDENG";
    let src = format!(
        "region = \"{secret}\"\nrol = 1\n[role]\narn = \"{secret}\"\ntags = {{ a = 1 }}\n\
         [mfa]\ncommand = \"{secret}\"\n"
    );
    let e = parse(&src).unwrap_err().to_string();
    for needle in [
        "6 problems",
        "line 1, column 10: field `region`: invalid region",
        "line 2, column 1: unknown field `rol`; did you mean `role`?",
        "line 4, column 7: field `role.arn`: invalid role ARN",
        "field `role.tags.a`: expected a string, found an integer",
        "field `mfa.command`: expected a sequence, found a string",
        "field `mfa.serial`: is required",
    ] {
        assert!(e.contains(needle), "{needle:?} not in:\n{e}");
    }
    assert!(!e.contains(secret), "{e}");
    // A syntax error is one problem, and the offending line is not quoted back.
    let e = parse(&format!("region = {secret}\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 1") && !e.contains(secret), "{e}");
}

#[test]
fn suggestions_are_close_matches_only() {
    let names = ["dev", "prod", "prod-eu"];
    assert_eq!(closest("deb", names), Some("dev"));
    assert_eq!(closest("prdo", names), Some("prod"));
    assert_eq!(closest("Prod-EU", names), Some("prod-eu"));
    assert_eq!(closest("staging", names), None);
    assert_eq!(closest("dev", names), None);
    assert_eq!(closest(&"x".repeat(200), names), None);
}

#[test]
fn custom_endpoint_lifts_duration_limits() {
    let src = "duration = 5\n[role]\narn = \"arn:aws:iam::123456789012:role/x\"\n";
    assert!(parse(src).is_err());
    SessionConfig::parse(src, Path::new("x"), true).unwrap();
    let with_url = format!("{src}[sts]\nendpoint_url = \"http://127.0.0.1:5000\"\n");
    parse(&with_url).unwrap();
    let zero = "duration = 0\n[role]\narn = \"arn:aws:iam::123456789012:role/x\"\n";
    assert!(SessionConfig::parse(zero, Path::new("x"), true).is_err());
}

#[test]
fn arns_are_checked() {
    assert!(
        "arn:aws:iam::123456789012:role/a/b"
            .parse::<RoleArn>()
            .is_ok()
    );
    assert!(
        "arn:aws-cn:iam::123456789012:role/x"
            .parse::<RoleArn>()
            .is_ok()
    );
    for bad in [
        "arn:aws:iam::123456789012:user/x",
        "arn:aws:s3::123456789012:role/x",
        "arn:aws:iam:us-east-1:123456789012:role/x",
        "arn:aws:iam::123456789012:role/",
        "role/x",
    ] {
        assert!(bad.parse::<RoleArn>().is_err(), "{bad}");
    }
    assert!(
        "arn:aws:iam::aws:policy/ReadOnlyAccess"
            .parse::<PolicyArn>()
            .is_ok()
    );
    assert!("GAHT12345678".parse::<MfaSerial>().is_ok());
}

#[test]
fn freshness_warning_for_short_lifetimes() {
    let mut cfg = parse("[role]\narn = \"arn:aws:iam::123456789012:role/x\"\n").unwrap();
    assert!(cfg.freshness_warning(1200).is_none());
    cfg.duration = Some(Secs(900));
    assert!(cfg.freshness_warning(1200).is_some());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

    /// Hostile text never panics the parser or the error locator.
    #[test]
    fn parser_survives_arbitrary_text(s in "[\\[\\]a-z_.=\"' 0-9\n{}#-]{0,300}") {
        let _ = SessionConfig::parse(&s, Path::new("fuzz.toml"), false);
        let _ = SessionConfig::parse(&s, Path::new("fuzz.toml"), true);
    }

    /// Any config built from valid parts round-trips through TOML unchanged.
    #[test]
    fn valid_configs_round_trip(
        account in "[0-9]{12}",
        role in "[A-Za-z][A-Za-z0-9_+=,.@-]{0,30}",
        dur in 900u64..=43_200,
        region in proptest::option::of("[a-z]{2}-[a-z]{4,9}-[1-3]"),
        desc in proptest::option::of("[ -~]{0,40}"),
    ) {
        let cfg = SessionConfig {
            description: desc,
            region: region.map(Region),
            duration: Some(Secs(dur)),
            role: Some(RoleConfig {
                arn: RoleArn(format!("arn:aws:iam::{account}:role/{role}")),
                session_name: None,
                external_id: None,
                policy: None,
                policy_arns: vec![],
                transitive_tag_keys: vec![],
                source_identity: None,
                tags: BTreeMap::new(),
            }),
            ..Default::default()
        };
        let back = SessionConfig::parse(&cfg.to_toml(), Path::new("x"), false).unwrap();
        proptest::prop_assert_eq!(back, cfg);
    }
}

#[test]
fn settings_validate() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("elhaz.toml");
    assert_eq!(Settings::load(&f).unwrap(), Settings::default());
    std::fs::write(&f, "capacity = 0\n").unwrap();
    let e = Settings::load(&f).unwrap_err().to_string();
    assert!(e.contains("capacity") && e.contains("line 1"), "{e}");
    std::fs::write(&f, "capacity = 8\nidle_timeout = \"10m\"\n").unwrap();
    let s = Settings::load(&f).unwrap();
    assert_eq!((s.capacity(), s.idle_timeout), (8, Some(Secs(600))));
    assert_eq!(
        (s.stop_timeout(), s.stop_force()),
        (Duration::from_secs(DEFAULT_STOP_TIMEOUT), false)
    );
    std::fs::write(&f, "stop_timeout = \"2s\"\nstop_force = true\n").unwrap();
    let s = Settings::load(&f).unwrap();
    assert_eq!(
        (s.stop_timeout(), s.stop_force()),
        (Duration::from_secs(2), true)
    );
    std::fs::write(&f, "stop_timeout = \"2h\"\n").unwrap();
    let e = Settings::load(&f).unwrap_err().to_string();
    assert!(e.contains("stop_timeout") && e.contains("1 hour"), "{e}");
}

/// A unit-variant enum is spelt as a string (the redacting deserializer once refused it).
#[test]
fn settings_enum_from_a_string() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("elhaz.toml");
    std::fs::write(&f, "sso_token_cache = \"memory\"\n").unwrap();
    let s = Settings::load(&f).unwrap();
    assert_eq!(s.sso_token_cache, Some(SsoTokenCache::Memory));
    std::fs::write(&f, "sso_token_cache = \"aws\"\n").unwrap();
    assert_eq!(
        Settings::load(&f).unwrap().sso_token_cache,
        Some(SsoTokenCache::Aws)
    );
    std::fs::write(&f, "sso_token_cache = \"disk\"\n").unwrap();
    let e = Settings::load(&f).unwrap_err().to_string();
    assert!(e.contains("sso_token_cache") && e.contains("memory"), "{e}");
    std::fs::write(&f, "sso_token_cache = 1\n").unwrap();
    assert!(Settings::load(&f).is_err());
}

#[test]
fn sts_rate_settings_validate_and_the_example_file_loads() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("elhaz.toml");
    std::fs::write(
        &f,
        "refresh_spread = 0.5\n[sts]\nrate = 10\nburst = 2\n\
         [sts.endpoints.\"http://127.0.0.1:1\"]\nrate = 1\n",
    )
    .unwrap();
    let s = Settings::load(&f).unwrap();
    assert_eq!(s.refresh_spread(), 0.5);
    let sts = s.sts.unwrap();
    assert_eq!((sts.rate, sts.burst), (Some(10.0), Some(2.0)));
    assert_eq!(sts.endpoints["http://127.0.0.1:1"].rate, Some(1.0));
    for (text, field) in [
        ("refresh_spread = 1.5\n", "refresh_spread"),
        ("[sts]\nrate = 0\n", "sts.rate"),
        ("[sts]\nrate = nan\n", "sts.rate"),
        ("[sts]\nburst = 0.5\n", "sts.burst"),
        ("[sts.endpoints.\"u\"]\nrate = -1\n", "sts.endpoints.rate"),
    ] {
        std::fs::write(&f, text).unwrap();
        let e = Settings::load(&f).unwrap_err().to_string();
        assert!(e.contains(field), "{text}: {e}");
    }
    std::fs::write(&f, "[sts]\nrte = 1\n").unwrap();
    assert!(Settings::load(&f).is_err(), "unknown fields are rejected");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/examples/elhaz.toml");
    let s = Settings::load(&example).unwrap();
    assert_eq!(s.sts.and_then(|s| s.rate), Some(20.0));
}

#[test]
fn store_round_trip_and_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("configs"));
    let text = "[role]\narn = \"arn:aws:iam::123456789012:role/x\"\n";
    store.write("a", text, false).unwrap();
    assert!(matches!(
        store.write("a", text, false),
        Err(Error::ConfigExists { .. })
    ));
    store.write("a", text, true).unwrap();
    assert_eq!(store.names().unwrap(), vec!["a".to_string()]);
    store.load("a", false).unwrap();
    store.remove("a").unwrap();
    assert!(matches!(
        store.remove("a"),
        Err(Error::ConfigNotFound { .. })
    ));
}
