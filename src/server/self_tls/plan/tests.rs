use std::sync::Arc;

use super::*;
use crate::cluster::Stored;

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

fn timing() -> Timing {
    Timing {
        ca_lifetime: 365 * DAY,
        ca_renew_before: 30 * DAY,
        cert_lifetime: 90 * DAY,
        cert_renew_before: 30 * DAY,
        overlap: 10 * 60,
    }
}

fn names() -> Vec<String> {
    vec!["issuer-guard.issuer-guard.svc".into(), "127.0.0.1".into()]
}

fn at<'a>(now: i64, names: &'a [String], bundles: Option<&'a [Vec<u8>]>) -> Context<'a> {
    Context {
        now,
        names,
        timing: timing(),
        bundles,
    }
}

/// Takes `step`, checking it is the one due.
fn take(pki: Option<&Pki>, ctx: &Context<'_>, step: Step) -> Pki {
    assert_eq!(due(pki, ctx), Some(step), "at {}", ctx.now);
    let next = apply(step, pki, ctx).expect("applied");
    // What is written reads back as the same PKI.
    let (data, annotations) = next.contents();
    let stored = Stored {
        data: data
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect(),
        annotations: annotations
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect(),
        ..Stored::default()
    };
    assert_eq!(Pki::read(&stored).expect("reads").as_ref(), Some(&next));
    next
}

const T0: i64 = 1_900_000_000;

#[test]
fn a_fresh_install_gets_a_ca_and_a_certificate_and_then_nothing_is_due() {
    let names = names();
    let pki = take(None, &at(T0, &names, None), Step::Create);
    assert!(pki.serving.cert.issued_by(&pki.active.cert));
    assert!(
        pki.serving.cert.covers(&names),
        "{:?}",
        pki.serving.cert.names
    );
    assert_eq!(pki.active.cert.not_after, T0 + 365 * DAY);
    assert_eq!(pki.serving.cert.not_after, T0 + 90 * DAY);
    assert_eq!(pki.bundle(), pki.active.cert.pem.as_bytes());
    for later in [T0, T0 + DAY, T0 + 59 * DAY] {
        assert_eq!(
            due(Some(&pki), &at(later, &names, None)),
            None,
            "at {later}"
        );
    }
}

#[test]
fn the_serving_certificate_is_renewed_before_it_expires_but_never_beyond_its_ca() {
    let names = names();
    let pki = take(None, &at(T0, &names, None), Step::Create);
    let renewed = take(Some(&pki), &at(T0 + 61 * DAY, &names, None), Step::Renew);
    assert_eq!(renewed.active, pki.active, "a renewal keeps the CA");
    assert_eq!(renewed.bundle(), pki.bundle());
    assert_eq!(renewed.serving.cert.not_after, T0 + 151 * DAY);

    // Near the CA's end a certificate ends with the CA, and renewing it
    // would not make it last longer: it is not renewed again and again, and
    // the CA's rotation (which re-issues it) is what comes next.
    let mut current = renewed;
    let mut now = T0 + 61 * DAY;
    while current.serving.cert.not_after < pki.active.cert.not_after {
        now += 61 * DAY;
        current = take(Some(&current), &at(now, &names, None), Step::Renew);
    }
    assert_eq!(current.serving.cert.not_after, pki.active.cert.not_after);
    let near_the_end = pki.active.cert.not_after - 25 * DAY;
    assert_eq!(
        due(Some(&current), &at(near_the_end, &names, None)),
        Some(Step::Stage)
    );
}

#[test]
fn a_certificate_that_misses_a_name_is_reissued_keeping_the_names_it_had() {
    let names = names();
    let pki = take(None, &at(T0, &names, None), Step::Create);
    let more = vec![names[0].clone(), "issuer-guard.example.internal".to_owned()];
    let reissued = take(Some(&pki), &at(T0 + HOUR, &more, None), Step::Reissue);
    // A replica of the previous version still finds its names.
    assert!(reissued.serving.cert.covers(&names) && reissued.serving.cert.covers(&more));
    assert_eq!(due(Some(&reissued), &at(T0 + HOUR, &names, None)), None);
    assert_eq!(due(Some(&reissued), &at(T0 + HOUR, &more, None)), None);
}

#[test]
fn a_ca_rotation_adds_publishes_waits_switches_waits_and_drops() {
    let names = names();
    let overlap = timing().overlap;
    let created = take(None, &at(T0, &names, None), Step::Create);
    // Long after, the first certificate has expired: a new one, which ends
    // with the CA.
    let old = take(
        Some(&created),
        &at(T0 + 296 * DAY, &names, None),
        Step::Reissue,
    );
    assert_eq!(old.serving.cert.not_after, old.active.cert.not_after);
    let old_bundle = old.bundle();

    // 1. Stage: within --ca-renew-before of the CA's end.
    let t1 = T0 + 336 * DAY;
    assert_eq!(
        due(
            Some(&old),
            &at(t1 - DAY, &names, Some(std::slice::from_ref(&old_bundle)))
        ),
        None
    );
    let staged = take(
        Some(&old),
        &at(t1, &names, Some(std::slice::from_ref(&old_bundle))),
        Step::Stage,
    );
    let incoming = staged.next.clone().expect("a staged CA");
    assert_eq!(staged.active, old.active, "the staged CA signs nothing yet");
    assert_eq!(staged.serving, old.serving);
    let both = staged.bundle();
    assert!(pki::contains(&both, &old.active.cert) && pki::contains(&both, &incoming.cert));

    // Not published while a caBundle still lacks it, however long it waits.
    let half = [both.clone(), old_bundle.clone()];
    assert_eq!(due(Some(&staged), &at(t1 + DAY, &names, Some(&half))), None);
    assert_eq!(due(Some(&staged), &at(t1 + DAY, &names, None)), None);
    let everywhere = [both.clone(), both.clone()];
    let published = take(
        Some(&staged),
        &at(t1 + 5, &names, Some(&everywhere)),
        Step::Published,
    );
    assert_eq!(published.next_published_at, Some(t1 + 5));

    // 2. Switch: only once it has been in every caBundle for the overlap.
    let early = at(t1 + 5 + overlap - 1, &names, Some(&everywhere));
    assert_eq!(due(Some(&published), &early), None);
    // A caBundle that lost it (a configuration replaced) restarts the wait.
    let lost = take(
        Some(&published),
        &at(t1 + 6, &names, Some(&half)),
        Step::Unpublished,
    );
    assert_eq!(lost.next_published_at, None);
    let t2 = t1 + 5 + overlap;
    let switched = take(
        Some(&published),
        &at(t2, &names, Some(&everywhere)),
        Step::Switch,
    );
    assert_eq!(switched.active, incoming);
    assert!(switched.serving.cert.issued_by(&incoming.cert));
    assert_eq!(switched.previous.as_ref(), Some(&old.active.cert));
    assert_eq!(switched.bundle(), both, "a switch changes no caBundle");

    // 3. Drop: the overlap after the switch.
    assert_eq!(
        due(
            Some(&switched),
            &at(t2 + overlap - 1, &names, Some(&everywhere))
        ),
        None
    );
    let dropped = take(
        Some(&switched),
        &at(t2 + overlap, &names, Some(&everywhere)),
        Step::Drop,
    );
    assert_eq!(dropped.bundle(), incoming.cert.pem.as_bytes());
    assert!(!pki::contains(&dropped.bundle(), &old.active.cert));
    let after = [dropped.bundle(), dropped.bundle()];
    assert_eq!(
        due(
            Some(&dropped),
            &at(t2 + overlap + DAY, &names, Some(&after))
        ),
        None
    );
}

#[test]
fn an_expired_ca_is_replaced_at_once() {
    let names = names();
    let pki = take(None, &at(T0, &names, None), Step::Create);
    let replaced = take(Some(&pki), &at(T0 + 400 * DAY, &names, None), Step::Replace);
    assert_ne!(replaced.active, pki.active);
    assert_eq!(replaced.previous, None);
}

#[test]
fn a_secret_without_the_keys_is_filled_and_a_broken_one_is_refused() {
    assert_eq!(Pki::read(&Stored::default()), Ok(None));
    let names = names();
    let pki = take(None, &at(T0, &names, None), Step::Create);
    let (data, _) = pki.contents();
    let mut data: std::collections::BTreeMap<String, Vec<u8>> = data
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
    data.remove(pki::key::TLS_KEY);
    let broken = Stored {
        data,
        ..Stored::default()
    };
    let err = Pki::read(&broken).expect_err("no tls.key");
    assert!(err.contains("tls.key"), "{err}");
}

#[test]
fn a_bundle_verifies_what_its_cas_signed_only() {
    let names = names();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let now = crate::server::tls::unix_now();
    let one = take(None, &at(now, &names, None), Step::Create);
    let two = take(None, &at(now, &names, None), Step::Create);
    let name = &names[0];
    assert!(pki::verifies(
        &one.bundle(),
        &one.serving.cert,
        name,
        &provider
    ));
    assert!(pki::verifies(
        &one.bundle(),
        &one.serving.cert,
        "127.0.0.1",
        &provider
    ));
    assert!(!pki::verifies(
        &one.bundle(),
        &two.serving.cert,
        name,
        &provider
    ));
    assert!(!pki::verifies(
        &one.bundle(),
        &one.serving.cert,
        "other.example",
        &provider
    ));
    let both = [one.bundle(), two.bundle()].concat();
    assert!(pki::verifies(&both, &two.serving.cert, name, &provider));
    assert!(!pki::verifies(b"", &one.serving.cert, name, &provider));
}
