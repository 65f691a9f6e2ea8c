//! The Secret watch in a cluster with many Secrets, on the real API server:
//! Secrets as `kubectl apply` leaves them, each with a 20 KB
//! `last-applied-configuration`; the first list (what every replica does at
//! start-up, and after an API server restart that refuses to resume its
//! watch), then a restart. issuer-guard must stay under half the chart's
//! 64 Mi memory limit. CI runs it at `ISSUER_GUARD_SCALE_SECRETS` (default
//! 2,000); `scripts/bench --scale` runs it at 20,000 and 50,000.

mod support;

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::{Api, api::PostParams};
use serde_json::json;
use support::{
    ControlPlane, IssuerGuard, NS, ServiceAccountFlags, api, eventually, serve::sample,
    webhook::Launch,
};

const ISSUER: &str = "https://issuer.scale.example";
/// Half the chart's `resources.limits.memory` (64Mi).
const BUDGET_KIB: u64 = 32 * 1024;
const ANNOTATION_BYTES: usize = 20 * 1024;
/// The legacy token Secrets among them, which the watch must still find.
const TOKENS: usize = 5;

fn secrets_wanted() -> usize {
    std::env::var("ISSUER_GUARD_SCALE_SECRETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn applied_secret(i: usize) -> Secret {
    // What `kubectl apply` leaves: the whole object again in an annotation.
    let filler = "x".repeat(ANNOTATION_BYTES);
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("app-config-{i}"),
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration":
                    format!("{{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"data\":{{\"v\":\"{filler}\"}}}}"),
            },
        },
        "type": "Opaque",
        "data": {"v": "dmFsdWU="},
    }))
    .expect("a Secret")
}

async fn legacy_tokens(cp: &ControlPlane) {
    let accounts: Api<ServiceAccount> = Api::namespaced(cp.client.clone(), NS);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "bot"}})).expect("an SA"),
        )
        .await
        .expect("create a ServiceAccount");
    for i in 0..TOKENS {
        api::legacy_token_secret(&cp.client, "bot", &format!("bot-token-{i}")).await;
    }
}

async fn known_tokens(guard: &IssuerGuard) -> Option<f64> {
    sample(&guard.metrics().await, "issuer_guard_legacy_token_secrets")
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_annotated_secrets_and_a_relist_stay_within_half_the_memory_limit() {
    let count = secrets_wanted();
    let mut cp = ControlPlane::start(ServiceAccountFlags::issuer(ISSUER)).await;
    let started = Instant::now();
    let secrets: Api<Secret> = Api::namespaced(cp.client.clone(), NS);
    let failures = stream::iter(0..count)
        .map(|i| {
            let secrets = secrets.clone();
            async move {
                secrets
                    .create(&PostParams::default(), &applied_secret(i))
                    .await
                    .err()
            }
        })
        .buffer_unordered(16)
        .filter_map(|e| async move { e })
        .collect::<Vec<_>>()
        .await;
    assert!(failures.is_empty(), "creates failed: {:?}", &failures[..1]);
    legacy_tokens(&cp).await;
    eprintln!(
        "{count} Secrets with {} KiB annotations created in {:?}",
        ANNOTATION_BYTES / 1024,
        started.elapsed()
    );

    let mut guard = IssuerGuard::launch(
        &cp,
        "{}\n",
        Launch {
            registration: None,
            ..Launch::default()
        },
    )
    .await;
    // Ready means the first list is done; the tokens are all found.
    assert_eq!(known_tokens(&guard).await, Some(TOKENS as f64));
    let after_list = guard.peak_memory_kib().expect("VmHWM");

    // After an API server restart every replica resumes its watch, or
    // relists when the resume is refused (410 Gone); start-up, measured
    // above, is such a relist.
    cp.restart_apiserver(ServiceAccountFlags::issuer(ISSUER))
        .await;
    // A token made after the restart is seen: the watch is live again.
    api::legacy_token_secret(&cp.client, "bot", "bot-token-late").await;
    eventually(
        "the late token to be known",
        Duration::from_secs(60),
        || async { (known_tokens(&guard).await? == (TOKENS + 1) as f64).then_some(()) },
    )
    .await;
    let peak = guard.peak_memory_kib().expect("VmHWM");
    let resident = resident_kib(guard.pid());
    eprintln!(
        "secret watch at {count} Secrets: peak {:.1} MiB after the first list, {:.1} MiB after the API server restart; {:.1} MiB resident",
        after_list as f64 / 1024.0,
        peak as f64 / 1024.0,
        resident as f64 / 1024.0
    );
    assert!(
        peak < BUDGET_KIB,
        "peak {} KiB is over half the chart's memory limit ({BUDGET_KIB} KiB)",
        peak
    );
    guard.assert_running();
}
