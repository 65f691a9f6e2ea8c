//! decode → judge → patch → encode for each review fixture, in process, with
//! the configuration under which each fixture does real work; and, to tell
//! how much of it is reading JSON, the decode alone and serde_json's floor
//! for merely scanning the same bytes.

use std::{hint::black_box, sync::Arc};

use arc_swap::ArcSwap;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use issuer_guard::{
    admission::{Decision, Endpoint, Reply, Webhook, review::ReviewIn},
    config::Config,
    object::{self, ObjectView},
    rules::LegacySecrets,
};

const FIXTURES: [(&str, &str); 4] = [
    (
        "pod-small",
        include_str!("../tests/fixtures/reviews/pod-small.json"),
    ),
    (
        "pod-large",
        include_str!("../tests/fixtures/reviews/pod-large.json"),
    ),
    (
        "deployment-denied",
        include_str!("../tests/fixtures/reviews/deployment-denied.json"),
    ),
    (
        "deployment-update",
        include_str!("../tests/fixtures/reviews/deployment-update.json"),
    ),
];

/// A key rotation in progress, so the deployment fixtures are denied or
/// grandfathered and every rule runs.
const CONFIG: &str = "generation: {static: {number: 2, issuer: 'https://kubernetes.default.svc.cluster.local', keyId: kid-b}}\nrotation: {retiringKeyIds: [kid-a], graceSeconds: 3600}\n";

fn admission(c: &mut Criterion) {
    let mut secrets = LegacySecrets::default();
    for i in 0..1000 {
        secrets.insert("shop", &format!("legacy-{i}-token"));
    }
    let webhook = Webhook::new(
        Arc::new(ArcSwap::from_pointee(
            Config::parse(CONFIG).expect("bench config"),
        )),
        Arc::new(secrets),
    );
    // What is measured must be the real answer: deployment-denied is denied
    // on /validate, nothing else is, and every new Pod gets a patch.
    for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
        for (name, body) in FIXTURES {
            let reviewed = webhook.review(endpoint, body.as_bytes());
            let Reply::Review(json) = &reviewed.reply else {
                panic!("{name} on {endpoint:?}: no review answered");
            };
            let denied = name == "deployment-denied" && endpoint == Endpoint::Validate;
            assert_eq!(
                reviewed.decision == Decision::Denied,
                denied,
                "{name} on {endpoint:?}: {}",
                reviewed.decision.as_str()
            );
            assert_ne!(reviewed.decision, Decision::Error, "{name} on {endpoint:?}");
            if endpoint == Endpoint::Mutate && name.starts_with("pod") {
                let answer: serde_json::Value = serde_json::from_slice(json).expect("JSON");
                assert!(answer["response"]["patch"].is_string(), "{name}: no patch");
            }
        }
    }
    for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
        let mut group = c.benchmark_group(endpoint.as_str());
        for (name, body) in FIXTURES {
            group.throughput(Throughput::Bytes(body.len() as u64));
            group.bench_function(name, |b| {
                b.iter(|| webhook.review(endpoint, black_box(body.as_bytes())))
            });
        }
        group.finish();
    }

    // What the review reads, and the least any serde_json reader pays to
    // get past the same bytes: the gap is what a leaner view could save.
    let mut group = c.benchmark_group("decode");
    for (name, body) in FIXTURES {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let review: ReviewIn<ObjectView> =
                    serde_json::from_str(black_box(body)).expect("fixture parses");
                review
            })
        });
    }
    group.finish();
    // The same through the reader the review uses, which hands what it
    // declines to serde_json.
    let mut group = c.benchmark_group("decode-fast");
    for (name, body) in FIXTURES {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let review: ReviewIn<ObjectView> =
                    object::from_json(black_box(body)).expect("fixture read fast");
                review
            })
        });
    }
    group.finish();
    let mut group = c.benchmark_group("scan-floor");
    for (name, body) in FIXTURES {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                serde_json::from_str::<serde::de::IgnoredAny>(black_box(body))
                    .expect("fixture parses")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, admission);
criterion_main!(benches);
