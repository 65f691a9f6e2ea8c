//! `status`' cost per pod: one list page of 500 copies of the pod-large
//! fixture (each with a name of its own), judged the way `status` reads a
//! page (each item's text through the webhook's reader) and the way it did
//! before (a `serde_json::Value` per item).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use issuer_guard::{config::Config, status};

const POD_LARGE: &str = include_str!("../tests/fixtures/reviews/pod-large.json");
const PODS: usize = 500;
/// A key rotation in progress, so that every rule runs.
const CONFIG: &str = "generation: {static: {number: 2, issuer: 'https://kubernetes.default.svc.cluster.local', keyId: kid-b}}\nrotation: {retiringKeyIds: [kid-a], graceSeconds: 3600}\n";

/// A PodList as the API server writes it: the items carry no kind.
fn page() -> String {
    let review: serde_json::Value = serde_json::from_str(POD_LARGE).expect("fixture");
    let mut pod = review["request"]["object"].clone();
    let map = pod.as_object_mut().expect("an object");
    map.remove("apiVersion");
    map.remove("kind");
    let items: Vec<serde_json::Value> = (0..PODS)
        .map(|i| {
            let mut p = pod.clone();
            p["metadata"]["name"] = format!("checkout-7c9f8b6d5-{i:05}").into();
            p
        })
        .collect();
    serde_json::json!({"kind": "PodList", "apiVersion": "v1",
        "metadata": {"resourceVersion": "12345", "continue": "eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ"},
        "items": items})
    .to_string()
}

fn judge_page(c: &mut Criterion) {
    let config = Config::parse(CONFIG).expect("bench config");
    let page = page();
    // Both ways must judge every pod, or the comparison means nothing.
    for fast in [true, false] {
        assert_eq!(
            status::judge_page(&config, &page, fast),
            PODS,
            "fast: {fast}"
        );
    }
    let mut group = c.benchmark_group("status-page");
    group.throughput(Throughput::Elements(PODS as u64));
    group.sample_size(20);
    group.bench_function("text", |b| {
        b.iter(|| status::judge_page(&config, black_box(&page), true))
    });
    group.bench_function("value", |b| {
        b.iter(|| status::judge_page(&config, black_box(&page), false))
    });
    group.finish();
}

criterion_group!(benches, judge_page);
criterion_main!(benches);
