use super::*;
use crate::server::SelfTlsArgs;

fn args() -> SelfTlsArgs {
    SelfTlsArgs {
        secret: Some("issuer-guard/issuer-guard-self-tls".into()),
        webhook_configurations: Some("issuer-guard".into()),
        names: vec!["issuer-guard.issuer-guard.svc".into(), "::0001".into()],
        ca_lifetime: Duration::from_secs(8760 * 3600),
        ca_renew_before: Duration::from_secs(720 * 3600),
        cert_lifetime: Duration::from_secs(2160 * 3600),
        cert_renew_before: Duration::from_secs(720 * 3600),
        ca_overlap: Duration::from_secs(600),
    }
}

fn refused(args: &SelfTlsArgs, files: bool, cluster: bool) -> String {
    Settings::new(args, files, cluster)
        .expect_err("refused")
        .to_string()
}

#[test]
fn the_flags_are_checked_and_each_refusal_says_what_to_change() {
    let settings = Settings::new(&args(), false, true)
        .expect("valid")
        .expect("on");
    assert_eq!(
        (settings.namespace.as_str(), settings.secret.as_str()),
        ("issuer-guard", "issuer-guard-self-tls")
    );
    assert_eq!(settings.names, ["issuer-guard.issuer-guard.svc", "::1"]);
    assert_eq!(settings.timing.overlap, 600);
    assert_eq!(settings.interval(), Duration::from_secs(30));

    let message = refused(&args(), true, true);
    assert!(
        message.contains("drop --tls-cert and --tls-key"),
        "{message}"
    );
    assert!(refused(&args(), false, false).contains("--kubeconfig"));
    for bad in ["issuer-guard", "/x", "a/b/c"] {
        let mut a = args();
        a.secret = Some(bad.into());
        assert!(refused(&a, false, true).contains("NAMESPACE/NAME"), "{bad}");
    }
    let mut a = args();
    a.webhook_configurations = None;
    assert!(refused(&a, false, true).contains("--webhook-configurations"));
    let mut a = args();
    a.names = vec![" ".into()];
    assert!(refused(&a, false, true).contains("--tls-names"));
    let mut a = args();
    a.ca_renew_before = Duration::from_secs(900);
    assert!(refused(&a, false, true).contains("twice --ca-overlap"));
    let mut a = args();
    a.cert_renew_before = a.cert_lifetime;
    assert!(refused(&a, false, true).contains("shorter than --cert-lifetime"));
    let mut a = args();
    a.ca_renew_before = a.ca_lifetime;
    assert!(refused(&a, false, true).contains("shorter than --ca-lifetime"));

    // Its companions alone are a mistake, not silently ignored.
    let mut a = args();
    a.secret = None;
    assert!(
        refused(&a, true, true).contains("--webhook-configurations is only used with --tls-secret")
    );
    a.webhook_configurations = None;
    assert!(refused(&a, true, true).contains("--tls-names is only used with --tls-secret"));
    a.names.clear();
    assert!(Settings::new(&a, true, false).expect("files").is_none());
}
