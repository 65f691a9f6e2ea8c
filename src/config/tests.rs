//! Parsing and validation of the configuration file, field by field.

use super::*;

fn err(text: &str) -> String {
    Config::parse(text).unwrap_err().to_string()
}

#[test]
fn embedded_default_is_generation_one_enforce_no_rotation() {
    let c = Config::embedded_default();
    assert_eq!(c.generation.number, 1);
    assert_eq!(c.generation.label_value, "1");
    assert_eq!(c.generation.issuer, DEFAULT_ISSUER);
    assert_eq!(c.generation.key_id, "");
    assert_eq!(c.policy.mode, Mode::Enforce);
    assert!(!c.rotation.declared());
    assert_eq!(c.rotation.grace_seconds, 86_400);
    assert!(c.policy.is_exempt("kube-system"));
    assert!(!c.policy.is_exempt("default"));
    assert!(c.policy.overrides.iter().all(Option::is_none));
}

#[test]
fn empty_file_equals_embedded_default() {
    assert_eq!(Config::parse("").unwrap(), Config::embedded_default());
    assert_eq!(Config::parse("{}\n").unwrap(), Config::embedded_default());
}

#[test]
fn full_file_parses() {
    let c = Config::parse(
        r#"
generation:
  static: {number: 3, issuer: "https://new.example.com", keyId: "kid-b"}
rotation:
  retiringIssuers: ["https://old.example.com"]
  retiringKeyIds: ["kid-a"]
  graceSeconds: 3600
  apiAudiences: []
  trustedAudiences: ["sts.amazonaws.com"]
  federatedAudiences: ["vault-jwt-*"]
mode: audit
rules: {token-subpath: deny, refresh-exceeds-grace: off}
exemptNamespaces: [kube-system, issuer-guard]
"#,
    )
    .unwrap();
    assert_eq!(
        c.generation,
        Generation::new(3, "https://new.example.com", "kid-b")
    );
    assert!(c.rotation.issuer_retiring() && c.rotation.key_retiring());
    assert_eq!(c.rotation.grace_seconds, 3600);
    assert!(c.rotation.trusted_audiences[0].matches("sts.amazonaws.com"));
    assert!(c.rotation.federated_audiences[0].matches("vault-jwt-prod"));
    assert_eq!(c.policy.mode, Mode::Audit);
    assert_eq!(
        c.policy.overrides[RuleId::TokenSubpath.index()],
        Some(Action::Deny)
    );
    assert_eq!(
        c.policy.overrides[RuleId::RefreshExceedsGrace.index()],
        Some(Action::Off)
    );
    assert_eq!(c.policy.overrides[RuleId::LegacyTokenEnv.index()], None);
    assert!(c.policy.is_exempt("issuer-guard"));
}

#[test]
fn empty_rotation_is_not_declared() {
    let c = Config::parse("rotation: {graceSeconds: 60}").unwrap();
    assert!(!c.rotation.declared());
}

#[test]
fn unknown_fields_are_named() {
    let e = err("rotation:\n  retiringIssuer: [x]\n");
    assert!(e.contains("rotation"), "{e}");
    assert!(e.contains("retiringIssuer"), "{e}");
    let e = err("generation:\n  static: {number: 1, kid: x}\n");
    assert!(e.contains("generation.static"), "{e}");
    assert!(e.contains("kid"), "{e}");
    let e = err("modes: audit\n");
    assert!(e.contains("modes"), "{e}");
}

#[test]
fn invalid_values_are_named() {
    assert!(err("mode: strict").contains("`mode`"));
    assert!(err("rules: {token-subpath: block}").contains("`rules.token-subpath`"));
    assert!(err("rules: {no-such-rule: deny}").contains("`rules.no-such-rule`"));
    assert!(err("rotation: {graceSeconds: 0}").contains("`rotation.graceSeconds`"));
    assert!(err("rotation: {graceSeconds: -5}").contains("rotation.graceSeconds"));
    assert!(err("rotation: {graceSeconds: soon}").contains("rotation.graceSeconds"));
    assert!(err("generation: {static: {number: 0}}").contains("`generation.static.number`"));
    assert!(err("rotation: {retiringIssuers: ['']}").contains("`rotation.retiringIssuers[0]`"));
    assert!(err("exemptNamespaces: ['']").contains("`exemptNamespaces[0]`"));
}

#[test]
fn current_issuer_or_key_cannot_retire() {
    let e = err(
        "generation: {static: {issuer: 'https://a'}}\nrotation: {retiringIssuers: ['https://b', 'https://a']}",
    );
    assert!(e.contains("`rotation.retiringIssuers[1]`"), "{e}");
    let e = err("generation: {static: {keyId: k1}}\nrotation: {retiringKeyIds: [k1]}");
    assert!(e.contains("`rotation.retiringKeyIds[0]`"), "{e}");
}

#[test]
fn malformed_yaml_is_an_error_not_a_panic() {
    assert!(matches!(
        Config::parse("rotation: [unclosed"),
        Err(ConfigError::Yaml(_))
    ));
    assert!(matches!(
        Config::parse("- a\n- b\n"),
        Err(ConfigError::Field { .. })
    ));
}

#[test]
fn explicit_api_audiences_keep_a_retiring_issuer_alive() {
    let c = Config::parse("rotation: {retiringIssuers: ['https://old']}").unwrap();
    assert!(c.rotation.audience_retires("https://old"));
    assert!(!c.rotation.audience_retires("https://other"));
    let c = Config::parse(
        "rotation: {retiringIssuers: ['https://old'], apiAudiences: ['https://old']}",
    )
    .unwrap();
    assert!(!c.rotation.audience_retires("https://old"));
}

#[test]
fn load_names_a_missing_file() {
    let e = Config::load(Path::new("/nonexistent/issuer-guard.yaml")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/issuer-guard.yaml"));
}

#[test]
fn a_file_without_a_document_is_an_error_not_the_default() {
    for text in [
        "",
        "   \n\t\n",
        "# rotation: {retiringKeyIds: [a]}\n# all commented out\n",
        "---\n",
        "~\n",
    ] {
        let e = Config::from_bytes(text.as_bytes()).unwrap_err();
        assert!(matches!(e, ConfigError::Empty), "{text:?}: {e}");
        assert!(e.to_string().contains("`{}`"), "{e}");
    }
    // An explicit empty mapping asks for the defaults.
    assert_eq!(
        Config::from_bytes(b"{}\n").unwrap(),
        Config::embedded_default()
    );
}

#[test]
fn a_planned_issuer_declares_the_signing_one_retiring_before_the_switch() {
    let c = Config::parse(
        "generation: {static: {issuer: 'https://old'}}\nrotation: {nextIssuer: 'https://new'}",
    )
    .unwrap();
    assert_eq!(c.rotation.retiring_issuers, vec!["https://old"]);
    assert!(c.rotation.declared());
    assert_eq!(c.rotation.new_issuer(&c.generation.issuer), "https://new");
    let secrets = crate::rules::LegacySecrets::default();
    assert_eq!(c.context(&secrets).new_issuer, "https://new");
    // Once the switch is done, the plan names what signs and adds nothing.
    let done = Config::parse(
        "generation: {static: {issuer: 'https://new'}}\nrotation: {nextIssuer: 'https://new'}",
    )
    .unwrap();
    assert!(!done.rotation.declared());
    assert_eq!(done.rotation.next_issuer, None);
    let e = err(
        "generation: {static: {issuer: 'https://old'}}\nrotation: {nextIssuer: 'https://new', retiringIssuers: ['https://new']}",
    );
    assert!(e.contains("`rotation.retiringIssuers[0]`"), "{e}");
    let e = err(
        "generation: {static: {issuer: 'https://a'}}\nrotation: {retiringIssuers: ['https://a']}",
    );
    assert!(e.contains("rotation.nextIssuer"), "{e}");
}

fn discovered(issuer: &str, kid: &str, retiring: &[&str], keys: &[(&str, KeyState)]) -> Discovered {
    Discovered {
        generation: Generation::new(7, issuer, kid),
        retiring_issuers: retiring.iter().map(|s| s.to_string()).collect(),
        retired_issuers: Vec::new(),
        next_issuer: None,
        keys: keys.iter().map(|(k, s)| (k.to_string(), *s)).collect(),
        switches: Vec::new(),
        retirements: Vec::new(),
        candidate_issuers: Vec::new(),
        observed_at: 0,
    }
}

#[test]
fn discovery_replaces_the_static_generation_and_adds_to_the_rotation() {
    let c = Config::parse(
        "generation: {static: {number: 3, issuer: 'https://old', keyId: a}}\nrotation: {retiringKeyIds: [z], graceSeconds: 60}",
    )
    .unwrap();
    let found = discovered(
        "https://new",
        "b",
        &["https://old"],
        &[
            ("a", KeyState::Retiring),
            ("b", KeyState::Signing),
            ("c", KeyState::Staged),
        ],
    );
    let e = c.with_discovered(&found);
    assert_eq!(e.generation, Generation::new(7, "https://new", "b"));
    assert_eq!(e.rotation.retiring_issuers, vec!["https://old"]);
    assert_eq!(e.rotation.retiring_key_ids, vec!["z", "a"]);
    assert_eq!(e.rotation.grace_seconds, 60);
    assert_eq!(
        e.declared, c.declared,
        "the declaration is kept to combine again"
    );
    // The operator retires an issuer; a declared key that now signs is not
    // retiring, whatever the file says.
    let c =
        Config::parse("rotation: {retiredIssuers: ['https://old'], retiringKeyIds: [b]}").unwrap();
    let e = c.with_discovered(&found);
    assert!(e.rotation.retiring_issuers.is_empty());
    assert_eq!(e.rotation.retiring_key_ids, vec!["a"]);
}

#[test]
fn a_plan_combines_with_discovery_until_the_switch_fulfils_it() {
    let c = Config::parse("rotation: {nextIssuer: 'https://new'}").unwrap();
    let before = c.with_discovered(&discovered("https://old", "a", &[], &[]));
    assert_eq!(before.rotation.retiring_issuers, vec!["https://old"]);
    assert_eq!(before.rotation.next_issuer.as_deref(), Some("https://new"));
    let after = c.with_discovered(&discovered("https://new", "a", &["https://old"], &[]));
    assert_eq!(after.rotation.retiring_issuers, vec!["https://old"]);
    assert_eq!(after.rotation.next_issuer, None);
    // Nothing known: discovery saw one issuer, nothing planned.
    let quiet = Config::parse("{}").unwrap();
    let e = quiet.with_discovered(&discovered(
        "https://old",
        "a",
        &[],
        &[("a", KeyState::Signing)],
    ));
    assert!(!e.rotation.declared());
}
