//! Discovery on a real control plane: issuer-guard learns the issuer and
//! signing key from the API server and follows both seed rotations with no
//! configuration edit beyond declaring the plan, keeps one ledger for any
//! number of replicas, does not flap while two differently configured API
//! servers answer in turn, and keeps serving when the API server is gone.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use kube::{Api, Client, api::PostParams};
use serde_json::{Value, json};
use support::{
    ControlPlane, IssuerGuard, NS, SaKey, ServiceAccountFlags,
    alternating::AlternatingRelay,
    api::{self, create},
    eventually,
    serve::sample,
    webhook::{GENERATION_LABEL, ISSUER_ANNOTATION, KEY_ID_ANNOTATION, Launch},
};

const OLD: &str = "https://old.issuer.discovery.example";
const NEW: &str = "https://new.issuer.discovery.example";
const ACCOUNT: &str = "issuer-guard";
const LEDGER: &str = "issuer-guard-ledger";
const IMAGE: &str = "registry.discovery.example/app:1";
const INTERVAL: Duration = Duration::from_secs(1);
const WINDOW: Duration = Duration::from_secs(4);
const WAIT: Duration = Duration::from_secs(60);

fn discovery_args(interval: Duration, window: Duration) -> Vec<String> {
    vec![
        format!("--service-account={NS}/{ACCOUNT}"),
        format!("--discovery-interval={}ms", interval.as_millis()),
        format!("--discovery-window={}ms", window.as_millis()),
    ]
}

async fn create_account(client: &Client, name: &str) {
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("a ServiceAccount");
    Api::<ServiceAccount>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &account)
        .await
        .expect("create issuer-guard's ServiceAccount");
}

/// issuer-guard discovering, registered with the API server.
async fn discovering(cp: &ControlPlane, config: &str) -> IssuerGuard {
    create_account(&cp.client, ACCOUNT).await;
    IssuerGuard::launch(
        cp,
        config,
        Launch {
            args: discovery_args(INTERVAL, WINDOW),
            ..Launch::default()
        },
    )
    .await
}

fn pod(name: &str, containers: Value, volumes: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"containers": containers, "volumes": volumes}
    })
}

fn env_reader(name: &str, secret: &str) -> Value {
    pod(
        name,
        json!([{"name": "runner", "image": IMAGE, "env": [{"name": "TOKEN",
            "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}}}]}]),
        json!([]),
    )
}

fn audience_pod(name: &str, audience: &str) -> Value {
    pod(
        name,
        json!([{"name": "app", "image": IMAGE, "volumeMounts": [{"name": "tok", "mountPath": "/var/run/tok"}]}]),
        json!([{"name": "tok", "projected": {"sources": [{"serviceAccountToken": {
            "audience": audience, "expirationSeconds": 3600, "path": "token"}}]}}]),
    )
}

/// (generation, issuer, key id) a new Pod is stamped with now, from a
/// dry-run create through the API server.
async fn stamp(cp: &ControlPlane) -> (u64, String, String) {
    let probe = pod(
        "stamp-probe",
        json!([{"name": "c", "image": IMAGE}]),
        json!([]),
    );
    let created = create::<Pod>(&cp.client, &probe, true).await;
    let meta = &created.object()["metadata"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        text(&meta["labels"][GENERATION_LABEL]).parse().unwrap_or(0),
        text(&meta["annotations"][ISSUER_ANNOTATION]),
        text(&meta["annotations"][KEY_ID_ANNOTATION]),
    )
}

async fn wait_stamp(cp: &ControlPlane, want: (u64, &str, &str)) -> Duration {
    let started = Instant::now();
    eventually(&format!("new pods stamped {want:?}"), WAIT, || async {
        let (n, i, k) = stamp(cp).await;
        ((n, i.as_str(), k.as_str()) == want).then_some(())
    })
    .await;
    started.elapsed()
}

/// Waits until issuer-guard's Secret watch knows legacy token `secret`:
/// a dry-run Pod `pod` reading it through env comes back marked at risk.
async fn wait_secret_known(cp: &ControlPlane, pod: &str, secret: &str) {
    eventually(&format!("{secret} known"), WAIT, || async {
        let c = create::<Pod>(&cp.client, &env_reader(pod, secret), true).await;
        c.object()["metadata"]["labels"]["issuer-guard.io/at-risk"]
            .is_string()
            .then_some(())
    })
    .await;
}

/// The state `metrics` gives key `kid`, if any.
fn key_state(metrics: &str, kid: &str) -> Option<String> {
    let tail = format!(",key_id=\"{kid}\"}} 1");
    metrics.lines().find_map(|l| {
        let state = l.strip_prefix("issuer_guard_rotation_keys{state=\"")?;
        let state = state.strip_suffix(&tail)?;
        Some(state.trim_end_matches('"').to_owned())
    })
}

fn issuer_state(metrics: &str, issuer: &str) -> Option<String> {
    let tail = format!(",issuer=\"{issuer}\"}} 1");
    metrics.lines().find_map(|l| {
        let state = l.strip_prefix("issuer_guard_rotation_issuers{state=\"")?;
        Some(state.strip_suffix(&tail)?.trim_end_matches('"').to_owned())
    })
}

async fn wait_key_state(guard: &IssuerGuard, kid: &str, state: &str) {
    eventually(&format!("key {kid} reported {state}"), WAIT, || async {
        (key_state(&guard.metrics().await, kid).as_deref() == Some(state)).then_some(())
    })
    .await;
}

/// The ledger as stored in the cluster.
async fn ledger(client: &Client) -> Value {
    let map = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .get(LEDGER)
        .await
        .expect("the ledger ConfigMap");
    let text = map
        .data
        .as_ref()
        .and_then(|d| d.get("ledger.json"))
        .expect("ledger.json");
    serde_json::from_str(text).expect("the ledger is JSON")
}

/// The ledger's (number, issuer, key id) entries.
async fn generations(client: &Client) -> Vec<(u64, String, String)> {
    let ledger = ledger(client).await;
    ledger["generations"]
        .as_array()
        .expect("generations")
        .iter()
        .map(|g| {
            (
                g["number"].as_u64().expect("a number"),
                g["issuer"].as_str().expect("an issuer").to_owned(),
                g["keyId"].as_str().expect("a key id").to_owned(),
            )
        })
        .collect()
}

/// Seed 1: the signing key is staged, switched and retired on the API
/// server alone; issuer-guard's configuration never changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_is_followed_with_no_configuration_edit() {
    let mut cp = ControlPlane::start(ServiceAccountFlags::issuer(NEW)).await;
    let (kid_a, kid_b) = (cp.pki.sa_a.kid.clone(), cp.pki.sa_b.kid.clone());
    let guard = discovering(&cp, "mode: enforce\n").await;
    wait_stamp(&cp, (1, NEW, &kid_a)).await;
    api::legacy_token(&cp.client, "bot", "bot-token").await;
    // No rotation: a pod that froze a legacy token is marked, not denied.
    // Waiting for the mark also waits for the Secret watch.
    wait_secret_known(&cp, "env-before", "bot-token").await;

    // Stage B: it verifies but does not sign yet.
    cp.restart_apiserver(ServiceAccountFlags {
        verifying: vec![SaKey::A, SaKey::B],
        ..ServiceAccountFlags::issuer(NEW)
    })
    .await;
    wait_key_state(&guard, &kid_b, "staged").await;
    assert_eq!(stamp(&cp).await, (1, NEW.to_owned(), kid_a.clone()));
    let staged = create::<Pod>(&cp.client, &env_reader("env-staged", "bot-token"), true).await;
    staged.object();

    // Switch signing to B, legacy tokens too.
    cp.restart_apiserver(ServiceAccountFlags {
        signing: SaKey::B,
        verifying: vec![SaKey::A, SaKey::B],
        ..ServiceAccountFlags::issuer(NEW)
    })
    .await;
    cp.restart_controller_manager(SaKey::B);
    let took = wait_stamp(&cp, (2, NEW, &kid_b)).await;
    eprintln!(
        "stamp moved to generation 2 {took:?} after the API server was ready (interval {INTERVAL:?})"
    );
    assert!(
        took <= INTERVAL * 3,
        "the stamp took {took:?} to follow the switch, discovery interval {INTERVAL:?}"
    );
    wait_key_state(&guard, &kid_a, "retiring").await;
    let denied = create::<Pod>(&cp.client, &env_reader("env-during", "bot-token"), false).await;
    assert!(
        denied.denial().contains("[legacy-token-env]"),
        "{}",
        denied.denial()
    );

    // Retire A: once it has been out of the JWKS for the window, the
    // rotation is over and the same pod is only marked again.
    cp.restart_apiserver(ServiceAccountFlags {
        signing: SaKey::B,
        verifying: vec![SaKey::B],
        ..ServiceAccountFlags::issuer(NEW)
    })
    .await;
    wait_key_state(&guard, &kid_a, "retired").await;
    let after = create::<Pod>(&cp.client, &env_reader("env-after", "bot-token"), true).await;
    after.object();
    assert_eq!(
        generations(&cp.client).await,
        vec![
            (1, NEW.to_owned(), kid_a.clone()),
            (2, NEW.to_owned(), kid_b.clone())
        ]
    );
    let metrics = guard.metrics().await;
    assert_eq!(sample(&metrics, "issuer_guard_generation"), Some(2.0));
}

/// Seed 2, the kOps procedure: [old] -> [old, new] -> [new, old] -> [new].
/// The plan is declared at [old, new], before the swap: that is when
/// federated parties must be made to trust the new issuer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kops_issuer_change_is_followed_from_the_declared_plan() {
    let mut cp = ControlPlane::start(ServiceAccountFlags::issuer(OLD)).await;
    let kid = cp.pki.sa_a.kid.clone();
    let mut guard = discovering(&cp, "mode: enforce\n").await;
    wait_stamp(&cp, (1, OLD, &kid)).await;
    let irsa = |name: &str| audience_pod(name, "sts.amazonaws.com");
    let admitted = create::<Pod>(&cp.client, &irsa("irsa-before"), true).await;
    admitted.object();

    // [old, new]: the new issuer is accepted but does not sign. The plan.
    cp.restart_apiserver(ServiceAccountFlags::issuers(&[OLD, NEW]))
        .await;
    guard
        .set_config(&format!(
            "mode: enforce\nrotation: {{nextIssuer: \"{NEW}\"}}\n"
        ))
        .await;
    assert_eq!(stamp(&cp).await, (1, OLD.to_owned(), kid.clone()));
    let denied = create::<Pod>(&cp.client, &irsa("irsa-planned"), false).await;
    assert!(
        denied.denial().contains("[federated-audience-untrusted]") && denied.denial().contains(NEW),
        "a federated audience must be flagged before the swap: {}",
        denied.denial()
    );
    let denied = create::<Pod>(&cp.client, &audience_pod("aud-old", OLD), false).await;
    assert!(
        denied.denial().contains("[audience-retiring-issuer]"),
        "{}",
        denied.denial()
    );
    let metrics = guard.metrics().await;
    assert_eq!(issuer_state(&metrics, NEW).as_deref(), Some("planned"));
    assert_eq!(issuer_state(&metrics, OLD).as_deref(), Some("retiring"));

    // [new, old]: the swap. No edit.
    cp.restart_apiserver(ServiceAccountFlags::issuers(&[NEW, OLD]))
        .await;
    wait_stamp(&cp, (2, NEW, &kid)).await;
    let denied = create::<Pod>(&cp.client, &audience_pod("aud-old-2", OLD), false).await;
    assert!(
        denied.denial().contains("[audience-retiring-issuer]"),
        "{}",
        denied.denial()
    );
    let metrics = guard.metrics().await;
    assert_eq!(issuer_state(&metrics, OLD).as_deref(), Some("retiring"));
    assert_eq!(issuer_state(&metrics, NEW), None, "the plan is done");

    // [new]: old is gone from the API server, which cannot say so; the
    // operator does, and the generation does not move.
    cp.restart_apiserver(ServiceAccountFlags::issuer(NEW)).await;
    guard
        .set_config(&format!(
            "mode: enforce\nrotation: {{nextIssuer: \"{NEW}\", retiredIssuers: [\"{OLD}\"]}}\n"
        ))
        .await;
    eventually("old reported retired", WAIT, || async {
        (issuer_state(&guard.metrics().await, OLD).as_deref() == Some("retired")).then_some(())
    })
    .await;
    assert_eq!(stamp(&cp).await, (2, NEW.to_owned(), kid.clone()));
    let admitted = create::<Pod>(&cp.client, &irsa("irsa-after"), true).await;
    admitted.object();
    assert_eq!(
        generations(&cp.client).await,
        vec![
            (1, OLD.to_owned(), kid.clone()),
            (2, NEW.to_owned(), kid.clone())
        ]
    );
    // The word goes into the ledger, so it outlives the configuration.
    eventually("the ledger to record old as retired", WAIT, || async {
        (ledger(&cp.client).await["retiredIssuers"] == json!([OLD])).then_some(())
    })
    .await;
}

/// The generation a replica stamps, from its metrics: (number, issuer, key).
async fn replica_generation(guard: &IssuerGuard) -> (u64, String, String) {
    let metrics = guard.metrics().await;
    let number = sample(&metrics, "issuer_guard_generation").unwrap_or(0.0) as u64;
    let info = metrics
        .lines()
        .find_map(|l| l.strip_prefix("issuer_guard_generation_info{issuer=\""))
        .and_then(|l| l.strip_suffix("\"} 1"))
        .and_then(|l| l.split_once("\",key_id=\""))
        .map(|(i, k)| (i.to_owned(), k.to_owned()))
        .unwrap_or_default();
    (number, info.0, info.1)
}

async fn wait_replica(guard: &IssuerGuard, want: (u64, &str, &str)) {
    eventually(
        &format!("replica {} at {want:?}", guard.pid()),
        WAIT,
        || async {
            let (n, i, k) = replica_generation(guard).await;
            ((n, i.as_str(), k.as_str()) == want).then_some(())
        },
    )
    .await;
}

fn replica(name: &str, interval: Duration, window: Duration) -> Launch {
    Launch {
        registration: None,
        args: discovery_args(interval, window),
        name: name.to_owned(),
        kubeconfig: None,
    }
}

/// Replicas share one ledger: started together on an empty one, and seeing
/// every later switch at nearly the same moment, they never number one
/// pair twice or two pairs alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_agree_on_every_generation() {
    let mut cp = ControlPlane::start(ServiceAccountFlags::issuer(OLD)).await;
    let (kid_a, kid_b) = (cp.pki.sa_a.kid.clone(), cp.pki.sa_b.kid.clone());
    create_account(&cp.client, ACCOUNT).await;
    let fast = Duration::from_millis(300);
    let (one, two) = tokio::join!(
        IssuerGuard::launch(&cp, "{}\n", replica("replica-1", fast, WINDOW)),
        IssuerGuard::launch(&cp, "{}\n", replica("replica-2", fast, WINDOW)),
    );
    for guard in [&one, &two] {
        wait_replica(guard, (1, OLD, &kid_a)).await;
    }
    let steps = [
        (
            ServiceAccountFlags {
                signing: SaKey::B,
                verifying: vec![SaKey::A, SaKey::B],
                ..ServiceAccountFlags::issuer(OLD)
            },
            (2, OLD, kid_b.as_str()),
        ),
        (
            ServiceAccountFlags {
                signing: SaKey::B,
                verifying: vec![SaKey::A, SaKey::B],
                ..ServiceAccountFlags::issuers(&[NEW, OLD])
            },
            (3, NEW, kid_b.as_str()),
        ),
    ];
    for (flags, want) in steps {
        cp.restart_apiserver(flags).await;
        let started = Instant::now();
        wait_replica(&one, want).await;
        wait_replica(&two, want).await;
        eprintln!(
            "both replicas at {want:?} {:?} after the API server was ready",
            started.elapsed()
        );
    }
    let ledger = generations(&cp.client).await;
    assert_eq!(
        ledger,
        vec![
            (1, OLD.to_owned(), kid_a.clone()),
            (2, OLD.to_owned(), kid_b.clone()),
            (3, NEW.to_owned(), kid_b.clone()),
        ],
        "one number per pair, given once"
    );
}

/// A control plane rolled one API server at a time: one still on the old
/// issuer and key, one already on the new ones, behind one address that
/// alternates between them. The stamp moves to the new pair when first
/// seen and never back, and the old pair gets no new number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_roll_does_not_make_the_generation_flap() {
    let mut cp = ControlPlane::start(ServiceAccountFlags::issuer(OLD)).await;
    let (kid_a, kid_b) = (cp.pki.sa_a.kid.clone(), cp.pki.sa_b.kid.clone());
    create_account(&cp.client, ACCOUNT).await;
    let window = Duration::from_secs(5);
    let fast = Duration::from_millis(200);
    // issuer-guard ran before the roll began, and knows generation 1.
    {
        let before = IssuerGuard::launch(&cp, "{}\n", replica("before-roll", fast, window)).await;
        wait_replica(&before, (1, OLD, &kid_a)).await;
    }
    // Both servers accept both issuers and keys; each signs with its own.
    cp.restart_apiserver(ServiceAccountFlags {
        verifying: vec![SaKey::A, SaKey::B],
        ..ServiceAccountFlags::issuers(&[OLD, NEW])
    })
    .await;
    let second = cp
        .start_second_apiserver(ServiceAccountFlags {
            signing: SaKey::B,
            verifying: vec![SaKey::A, SaKey::B],
            ..ServiceAccountFlags::issuers(&[NEW, OLD])
        })
        .await;
    let relay = AlternatingRelay::start(
        vec![
            format!("127.0.0.1:{}", cp.apiserver_port())
                .parse()
                .expect("an address"),
            format!("127.0.0.1:{second}").parse().expect("an address"),
        ],
        Duration::from_millis(300),
    )
    .await;
    let kubeconfig = cp.dir().join("relay.kubeconfig");
    relay.write_kubeconfig(&cp.pki, &kubeconfig);
    let roll_started = jiff::Timestamp::now();
    let guard = IssuerGuard::launch(
        &cp,
        "{}\n",
        Launch {
            kubeconfig: Some(kubeconfig),
            ..replica("during-roll", fast, window)
        },
    )
    .await;
    let mut seen = Vec::new();
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let (n, _, _) = replica_generation(&guard).await;
        if seen.last() != Some(&n) {
            seen.push(n);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It may have moved to 2 before the first sample; it must never move back.
    assert!(
        seen == [1, 2] || seen == [2],
        "the generation over the roll (1 = old pair, 2 = new): {seen:?}"
    );
    assert_eq!(
        replica_generation(&guard).await,
        (2, NEW.to_owned(), kid_b.clone())
    );
    let connections = relay.connections();
    assert!(
        connections.iter().all(|c| *c > 0),
        "both API servers answered: {connections:?}"
    );
    let ledger = ledger(&cp.client).await;
    let entries = ledger["generations"].as_array().expect("generations");
    assert_eq!(entries.len(), 2, "{ledger}");
    // The old pair was seen again during the roll, and got no new number.
    let old_last_seen: jiff::Timestamp = entries[0]["lastSeen"]
        .as_str()
        .expect("lastSeen")
        .parse()
        .expect("a timestamp");
    assert!(
        old_last_seen > roll_started,
        "the old signer was seen during the roll: {ledger}"
    );
}

/// With the API server gone, the webhook keeps stamping the last known
/// generation, stays ready, and says in its metrics how stale that is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_leaves_the_last_known_generation() {
    let mut cp = ControlPlane::start(ServiceAccountFlags::issuer(NEW)).await;
    let kid = cp.pki.sa_a.kid.clone();
    let guard = discovering(&cp, "{}\n").await;
    wait_stamp(&cp, (1, NEW, &kid)).await;
    cp.stop_apiserver();
    let metrics = eventually("discovery to report the API server gone", WAIT, || async {
        let m = guard.metrics().await;
        let errors: f64 = m
            .lines()
            .filter(|l| l.starts_with("issuer_guard_discovery_errors_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        let age = sample(&m, "issuer_guard_discovery_age_seconds").unwrap_or(0.0);
        (errors >= 2.0 && age >= 3.0).then_some(m)
    })
    .await;
    assert_eq!(sample(&metrics, "issuer_guard_generation"), Some(1.0));
    assert_eq!(
        guard.readyz().await,
        200,
        "the last known generation is still served"
    );
    // A review sent straight to the webhook, as the API server would.
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "offline-1", "operation": "CREATE", "namespace": NS,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "object": pod("offline", json!([{"name": "c", "image": IMAGE}]), json!([])),
        }
    });
    let answer: Value = support::serve::client(&guard.ca, false)
        .post(format!("https://127.0.0.1:{}/mutate", guard.port))
        .json(&review)
        .send()
        .await
        .expect("the webhook answers")
        .json()
        .await
        .expect("an AdmissionReview");
    use base64::Engine as _;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(answer["response"]["patch"].as_str().expect("a patch"))
        .expect("base64");
    let patch = String::from_utf8(patch).expect("UTF-8");
    assert!(
        patch.contains(&format!("\"{kid}\"")) && patch.contains(NEW),
        "stamped with the last known generation: {patch}"
    );
    // Back: discovery recovers and the age drops.
    cp.restart_apiserver(ServiceAccountFlags::issuer(NEW)).await;
    eventually("discovery to recover", WAIT, || async {
        let m = guard.metrics().await;
        (sample(&m, "issuer_guard_discovery_age_seconds").unwrap_or(99.0) < 2.0).then_some(())
    })
    .await;
    // Three parts retried against the missing API server every few hundred
    // milliseconds; the log said so once, and once that it was back.
    eventually("the log to say the API server is back", WAIT, || async {
        guard
            .log()
            .contains("API server reachable again")
            .then_some(())
    })
    .await;
    let log = guard.log();
    let lines = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(lines("API server unreachable"), 1, "{log}");
    assert_eq!(lines("API server reachable again"), 1, "{log}");
    assert_eq!(lines(" ERROR "), 0, "{log}");
    assert_eq!(lines("discovery failed"), 0, "{log}");
}

/// Discovery, the ledger and both watches with exactly the permissions the
/// chart grants, and without Kubernetes' default binding of the discovery
/// ClusterRole, which some clusters remove.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_works_with_exactly_the_charts_permissions() {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    let mut cp = ControlPlane::start(ServiceAccountFlags::issuer(NEW)).await;
    let (kid_a, kid_b) = (cp.pki.sa_a.kid.clone(), cp.pki.sa_b.kid.clone());
    // The API server binds the discovery ClusterRole to every service
    // account by default; the chart must not lean on that.
    Api::<ClusterRoleBinding>::all(cp.client.clone())
        .delete(
            "system:service-account-issuer-discovery",
            &Default::default(),
        )
        .await
        .expect("the default binding of the discovery ClusterRole exists, and goes");
    let mut objects = support::chart::render("issuer-guard", NS, &[], "serviceaccount.yaml");
    objects.extend(support::chart::render("issuer-guard", NS, &[], "rbac.yaml"));
    let mut account = None;
    let pp = PostParams::default();
    for object in objects {
        let kind = object["kind"].as_str().expect("a kind").to_owned();
        let what = format!("create the chart's {kind}");
        let c = cp.client.clone();
        match kind.as_str() {
            "ServiceAccount" => {
                let sa: ServiceAccount = serde_json::from_value(object).expect("a ServiceAccount");
                account = sa.metadata.name.clone();
                Api::<ServiceAccount>::namespaced(c, NS)
                    .create(&pp, &sa)
                    .await
                    .map(drop)
            }
            "ClusterRole" => {
                let r: ClusterRole = serde_json::from_value(object).expect(&what);
                Api::<ClusterRole>::all(c).create(&pp, &r).await.map(drop)
            }
            "ClusterRoleBinding" => {
                let r: ClusterRoleBinding = serde_json::from_value(object).expect(&what);
                Api::<ClusterRoleBinding>::all(c)
                    .create(&pp, &r)
                    .await
                    .map(drop)
            }
            "Role" => {
                let r: Role = serde_json::from_value(object).expect(&what);
                Api::<Role>::namespaced(c, NS)
                    .create(&pp, &r)
                    .await
                    .map(drop)
            }
            "RoleBinding" => {
                let r: RoleBinding = serde_json::from_value(object).expect(&what);
                Api::<RoleBinding>::namespaced(c, NS)
                    .create(&pp, &r)
                    .await
                    .map(drop)
            }
            other => panic!("the chart's RBAC renders an unexpected {other}"),
        }
        .expect(&what);
    }
    let account = account.expect("the chart renders a ServiceAccount");
    let token = api::token_request(&cp.client, &account).await;
    let kubeconfig = cp.dir().join("chart-account.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster: {{server: \"https://127.0.0.1:{port}\", certificate-authority: \"{ca}\"}}\nusers:\n- name: chart\n  user: {{token: \"{token}\"}}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: chart}}\ncurrent-context: e2e\n",
            port = cp.apiserver_port(),
            ca = cp.pki.ca_cert.display(),
        ),
    )
    .expect("write the kubeconfig");
    // New bindings reach the authorizer's cache within moments; wait for
    // them so that a 403 below means a missing permission.
    let chart_client = {
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).expect("the kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("a client config");
        Client::try_from(config).expect("a client")
    };
    eventually("the chart's bindings to take effect", WAIT, || async {
        let get = http::Request::get("/.well-known/openid-configuration")
            .body(Vec::new())
            .expect("a request");
        chart_client.request_text(get).await.ok().map(drop)
    })
    .await;
    let guard = IssuerGuard::launch(
        &cp,
        "mode: enforce\n",
        Launch {
            args: vec![
                format!("--service-account={NS}/{account}"),
                format!("--ledger={account}-ledger"),
                format!("--discovery-interval={}ms", INTERVAL.as_millis()),
                format!("--discovery-window={}ms", WINDOW.as_millis()),
            ],
            kubeconfig: Some(kubeconfig),
            ..Launch::default()
        },
    )
    .await;
    wait_stamp(&cp, (1, NEW, &kid_a)).await;
    // The Secret watch works with the chart's list/watch.
    api::legacy_token(&cp.client, "bot", "bot-token").await;
    wait_secret_known(&cp, "env", "bot-token").await;
    // Until here nothing may have been refused. (An API server that has
    // just restarted refuses requests until its RBAC caches load, so the
    // rest of the log is not held to this.)
    let log = std::fs::read_to_string(cp.dir().join("issuer-guard.log")).expect("the log");
    assert!(!log.contains(" 403"), "a permission was missing:\n{log}");
    // The ledger is written again, under the chart's update rule.
    cp.restart_apiserver(ServiceAccountFlags {
        signing: SaKey::B,
        verifying: vec![SaKey::A, SaKey::B],
        ..ServiceAccountFlags::issuer(NEW)
    })
    .await;
    wait_stamp(&cp, (2, NEW, &kid_b)).await;
    drop(guard);
}
