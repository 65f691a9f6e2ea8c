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
    api::{self, create},
    eventually,
    objects::{audience_pod, env_reader_pod, plain_pod},
    serve::sample,
    webhook::{
        AT_RISK_LABEL, GENERATION_LABEL, ISSUER_ANNOTATION, KEY_ID_ANNOTATION, Launch,
        RISKS_ANNOTATION, wait_secret_known,
    },
};

const OLD: &str = "https://old.issuer.discovery.example";
const NEW: &str = "https://new.issuer.discovery.example";
const ACCOUNT: &str = "issuer-guard";
const LEDGER: &str = "issuer-guard-ledger";
const INTERVAL: Duration = Duration::from_secs(1);
const WINDOW: Duration = Duration::from_secs(4);
const WAIT: Duration = Duration::from_secs(60);

/// Discovery's flags, probing the API servers on `ports` (a test control
/// plane on 127.0.0.1 has no EndpointSlice for itself).
fn discovery_args(ports: &[u16], interval: Duration, window: Duration) -> Vec<String> {
    let endpoints: Vec<String> = ports
        .iter()
        .map(|p| format!("https://127.0.0.1:{p}"))
        .collect();
    vec![
        format!("--service-account={NS}/{ACCOUNT}"),
        format!("--apiserver-endpoints={}", endpoints.join(",")),
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
            args: discovery_args(&[cp.apiserver_port()], INTERVAL, WINDOW),
            ..Launch::default()
        },
    )
    .await
}

/// (generation, issuer, key id) a new Pod is stamped with now, from a
/// dry-run create through the API server.
async fn stamp(cp: &ControlPlane) -> (u64, String, String) {
    let created = create::<Pod>(&cp.client, &plain_pod("stamp-probe"), true).await;
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
    wait_secret_known(&cp, "bot-token", WAIT).await;
    let before = create::<Pod>(&cp.client, &env_reader_pod("env-before", "bot-token"), true).await;
    assert_marked(&before, "legacy-token-env");

    // Stage B: it verifies but does not sign yet.
    cp.restart_apiserver(ServiceAccountFlags {
        verifying: vec![SaKey::A, SaKey::B],
        ..ServiceAccountFlags::issuer(NEW)
    })
    .await;
    wait_key_state(&guard, &kid_b, "staged").await;
    assert_eq!(stamp(&cp).await, (1, NEW.to_owned(), kid_a.clone()));
    let staged = create::<Pod>(&cp.client, &env_reader_pod("env-staged", "bot-token"), true).await;
    assert_marked(&staged, "legacy-token-env");

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
    let denied = create::<Pod>(
        &cp.client,
        &env_reader_pod("env-during", "bot-token"),
        false,
    )
    .await;
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
    let after = create::<Pod>(&cp.client, &env_reader_pod("env-after", "bot-token"), true).await;
    assert_marked(&after, "legacy-token-env");
    assert_eq!(
        generations(&cp.client).await,
        vec![
            (1, NEW.to_owned(), kid_a.clone()),
            (2, NEW.to_owned(), kid_b.clone())
        ]
    );
    let metrics = guard.metrics().await;
    assert_eq!(sample(&metrics, "issuer_guard_generation"), Some(2.0));
    // Every token discovery minted was the README's: for its own
    // ServiceAccount, 10 minutes, audience `issuer-guard.io/discovery` (the
    // default of --discovery-audience).
    assert_minted_only(&cp, "admin", ACCOUNT, "issuer-guard.io/discovery");
}

/// Fails unless `created` was admitted and marked at risk for `rule`,
/// without a denial: what a hazard gets.
#[track_caller]
fn assert_marked(created: &api::Created, rule: &str) {
    let meta = &created.object()["metadata"];
    assert_eq!(meta["labels"][AT_RISK_LABEL], "true", "not marked: {meta}");
    let risks = meta["annotations"][RISKS_ANNOTATION]
        .as_str()
        .unwrap_or_default();
    assert!(
        risks.split(',').any(|r| r == rule),
        "risks lack {rule}: {risks:?}"
    );
}

/// Fails unless `user` (whom issuer-guard authenticates as) asked the API
/// server for tokens of ServiceAccount `account` (of [`NS`]), and every
/// one it asked for was of 600 s (the README's 10 minutes) for exactly
/// `audience`.
#[track_caller]
fn assert_minted_only(cp: &ControlPlane, user: &str, account: &str, audience: &str) {
    let requests: Vec<Value> = cp
        .token_requests()
        .into_iter()
        .filter(|e| {
            e["user"]["username"] == user
                && e["objectRef"]["namespace"] == NS
                && e["objectRef"]["name"] == account
                // Refused ones were never read, so their request is not
                // logged.
                && e["responseStatus"]["code"] == 201
        })
        .collect();
    assert!(
        !requests.is_empty(),
        "no TokenRequest by {user} for {account} in the API server's audit log"
    );
    // Each probe mints two 10-minute tokens: one for its own audience, and
    // one naming none, whose audiences are then the API server's (its
    // issuers); and each generation gets a canary, asked for 7 days, whose
    // audience no API accepts.
    for e in &requests {
        let spec = &e["requestObject"]["spec"];
        let probe = spec["audiences"] == json!([audience])
            || spec.get("audiences").is_none_or(Value::is_null);
        let canary = spec["audiences"] == json!(["issuer-guard.io/canary"]);
        assert!(probe || canary, "{e}");
        let seconds = if canary { 604_800 } else { 600 };
        assert_eq!(spec["expirationSeconds"], seconds, "{e}");
    }
    assert!(
        requests
            .iter()
            .any(|e| e["requestObject"]["spec"]["audiences"] == json!([audience])),
        "no TokenRequest for {audience}"
    );
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

    // [new]: old is no longer accepted. With no --api-audiences the API
    // audiences are the issuers, so the retirement is observed with no
    // edit, and timed by the API server's clock.
    let before = jiff::Timestamp::now().as_second() as f64;
    cp.restart_apiserver(ServiceAccountFlags::issuer(NEW)).await;
    eventually("old observed retired", WAIT, || async {
        (issuer_state(&guard.metrics().await, OLD).as_deref() == Some("retired")).then_some(())
    })
    .await;
    let metrics = guard.metrics().await;
    let series = format!(
        "issuer_guard_retirement_timestamp_seconds{{kind=\"issuer\",name=\"{OLD}\",source=\"observed\"}}"
    );
    let retired_at = sample(&metrics, &series).unwrap_or_else(|| panic!("{series} in {metrics}"));
    let after = jiff::Timestamp::now().as_second() as f64;
    assert!(
        (before - 2.0..=after + 2.0).contains(&retired_at),
        "retired at {retired_at}, between {before} and {after}"
    );
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
    // Declaring it now changes nothing: it was observed first, and the
    // ledger says so.
    guard
        .set_config(&format!(
            "mode: enforce\nrotation: {{retiredIssuers: [\"{OLD}\"]}}\n"
        ))
        .await;
    let l = ledger(&cp.client).await;
    assert_eq!(l["retirements"][0]["source"], "observed", "{l}");
    assert_eq!(l["retiredIssuers"], json!([OLD]), "{l}");
    assert!(sample(&guard.metrics().await, &series).is_some());
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

fn replica(ports: &[u16], name: &str, interval: Duration, window: Duration) -> Launch {
    Launch {
        registration: None,
        args: discovery_args(ports, interval, window),
        name: name.to_owned(),
        ..Launch::default()
    }
}

/// How long after `since` each of `guards` first stamped `want`, all
/// polled together every 50 ms.
async fn first_stamped(
    guards: &[&IssuerGuard],
    want: (u64, &str, &str),
    since: Instant,
) -> Vec<Duration> {
    let mut seen: Vec<Option<Duration>> = vec![None; guards.len()];
    loop {
        for (at, guard) in seen.iter_mut().zip(guards) {
            if at.is_none() {
                let (n, i, k) = replica_generation(guard).await;
                if (n, i.as_str(), k.as_str()) == want {
                    *at = Some(since.elapsed());
                }
            }
        }
        if let Some(all) = seen.iter().copied().collect::<Option<Vec<Duration>>>() {
            return all;
        }
        assert!(
            since.elapsed() < WAIT,
            "replicas at {want:?} after {WAIT:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How far apart replicas may stamp a new generation. The README: "Every
/// replica watches the ledger, so all stamp the same number within a watch
/// event". After an API server restart each replica's ledger watch first
/// reconnects, and a watch retries every failure after at most 2 s (README,
/// `serve`); a relist and this test's polling (50 ms, plus a /metrics
/// request per replica on a loaded machine) come on top. 4 s leaves a
/// margin of the same size again; a replica that only learnt from its own
/// probe would take the follower's whole interval (2 minutes).
const REPLICA_LAG: Duration = Duration::from_secs(4);

/// Replicas share one ledger: started together on an empty one, and seeing
/// every later switch at nearly the same moment, they never number one
/// pair twice or two pairs alike. A third replica probes too rarely to see
/// a switch itself before the test ends; it stamps the new generation
/// through the ledger watch, within [`REPLICA_LAG`] of the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_agree_on_every_generation() {
    let mut cp = ControlPlane::start(ServiceAccountFlags::issuer(OLD)).await;
    let (kid_a, kid_b) = (cp.pki.sa_a.kid.clone(), cp.pki.sa_b.kid.clone());
    create_account(&cp.client, ACCOUNT).await;
    let fast = Duration::from_millis(300);
    let slow = Duration::from_secs(120);
    // The follower probes at its start, then not again for `slow`.
    let started = Instant::now();
    let ports = [cp.apiserver_port()];
    let (one, two, follower) = tokio::join!(
        IssuerGuard::launch(&cp, "{}\n", replica(&ports, "replica-1", fast, WINDOW)),
        IssuerGuard::launch(&cp, "{}\n", replica(&ports, "replica-2", fast, WINDOW)),
        IssuerGuard::launch(&cp, "{}\n", replica(&ports, "follower", slow, slow * 2)),
    );
    for guard in [&one, &two, &follower] {
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
    let replicas = [&one, &two, &follower];
    for (flags, want) in steps {
        // Watched from before the restart, so that each replica's moment is
        // seen, however quickly the API server comes back.
        let restarted = Instant::now();
        let ((), at) = tokio::join!(
            cp.restart_apiserver(flags),
            first_stamped(&replicas, want, restarted),
        );
        let lag = *at.iter().max().expect("replicas") - *at.iter().min().expect("replicas");
        eprintln!("replicas at {want:?} {at:?} after the restart began: {lag:?} apart");
        assert!(
            lag <= REPLICA_LAG,
            "replicas stamped {want:?} {lag:?} apart (at {at:?} after the restart began), more than {REPLICA_LAG:?}"
        );
    }
    // The follower's own probe never came round: what it stamped came from
    // the ledger the others wrote.
    assert!(
        started.elapsed() < slow,
        "the follower may have probed again"
    );
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

/// Replicas whose writes lose races: three replicas refresh their sightings
/// every 100 ms while the test rewrites the ledger's metadata in a loop (its
/// data unchanged), so their read-modify-writes meet a newer
/// resourceVersion, and the loser of each race (409) reads again and applies
/// its round again. Nothing is lost and nothing numbered twice, also when all
/// see a new pair at the same moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_on_the_ledger_lose_nothing() {
    let mut cp = ControlPlane::start(ServiceAccountFlags {
        verifying: vec![SaKey::A, SaKey::B],
        ..ServiceAccountFlags::issuer(NEW)
    })
    .await;
    let (kid_a, kid_b) = (cp.pki.sa_a.kid.clone(), cp.pki.sa_b.kid.clone());
    create_account(&cp.client, ACCOUNT).await;
    let ports = [cp.apiserver_port()];
    let (fast, window) = (Duration::from_millis(50), Duration::from_millis(500));
    let (one, two, three) = tokio::join!(
        IssuerGuard::launch(&cp, "{}\n", replica(&ports, "racer-1", fast, window)),
        IssuerGuard::launch(&cp, "{}\n", replica(&ports, "racer-2", fast, window)),
        IssuerGuard::launch(&cp, "{}\n", replica(&ports, "racer-3", fast, window)),
    );
    let racers = [&one, &two, &three];
    let conflicts = |m: &str| sample(m, "issuer_guard_ledger_write_conflicts_total").unwrap_or(0.0);
    // Another writer, as fast as the API server takes it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let toucher = {
        let api = Api::<ConfigMap>::namespaced(cp.client.clone(), NS);
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                if let Ok(mut map) = api.get(LEDGER).await {
                    n += 1;
                    map.metadata
                        .annotations
                        .get_or_insert_default()
                        .insert("test.issuer-guard.io/touched".into(), n.to_string());
                    let _ = api.replace(LEDGER, &PostParams::default(), &map).await;
                }
            }
        })
    };
    eventually(
        "a write that lost a race and was applied again",
        WAIT,
        || async {
            let mut total = 0.0;
            for guard in racers {
                total += conflicts(&guard.metrics().await);
            }
            (total >= 1.0).then_some(())
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    toucher.await.expect("the other writer");
    cp.restart_apiserver(ServiceAccountFlags {
        signing: SaKey::B,
        verifying: vec![SaKey::A, SaKey::B],
        ..ServiceAccountFlags::issuer(NEW)
    })
    .await;
    for guard in racers {
        wait_replica(guard, (2, NEW, &kid_b)).await;
    }
    assert_eq!(
        generations(&cp.client).await,
        vec![
            (1, NEW.to_owned(), kid_a.clone()),
            (2, NEW.to_owned(), kid_b.clone())
        ],
        "one number per pair"
    );
    let l = ledger(&cp.client).await;
    assert!(l["generations"][1]["completed"].is_string(), "{l}");
}

/// The generation of every Pod admitted while it runs, in order: a flap of
/// a few milliseconds shows here, where a sampled gauge would miss it.
struct Admitted {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Vec<u64>>,
}

impl Admitted {
    fn record(client: &Client) -> Admitted {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (client, flag) = (client.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let pods: Api<Pod> = Api::namespaced(client, NS);
            let params = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            let pod: Pod = serde_json::from_value(plain_pod("admitted")).expect("a Pod");
            let mut seen = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Acquire) {
                // An API server restarting refuses some: those were admitted
                // by nobody.
                if let Ok(created) = pods.create(&params, &pod).await
                    && let Some(n) = created
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(GENERATION_LABEL))
                        .and_then(|n| n.parse().ok())
                {
                    seen.push(n);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        });
        Admitted { stop, task }
    }

    async fn stop(self) -> Vec<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.task.await.expect("the recorder")
    }
}

fn series(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    sample(metrics, &format!("{name}{{{labels}}}"))
}

/// Seed 2, the kOps procedure, rolled one API server at a time as an HA
/// control plane is: two kube-apiservers on one etcd, each probed on its
/// own (`--apiserver-endpoints`), with no configuration at all. The switch
/// starts with the first server and completes with the second, timed by
/// the API servers' clock; `issuer_guard_apiservers` shows the split; the
/// stamp moves only at completion and never back; at [new] on both the
/// old issuer's retirement is observed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kops_steps_rolled_one_server_at_a_time() {
    let mut cp = ControlPlane::start(ServiceAccountFlags::issuer(OLD)).await;
    let kid = cp.pki.sa_a.kid.clone();
    let second = cp
        .start_second_apiserver(ServiceAccountFlags::issuer(OLD))
        .await;
    create_account(&cp.client, ACCOUNT).await;
    let ports = [cp.apiserver_port(), second];
    // Longer than a server's restart: a switch must complete on a round of
    // both servers, never because the old pair went quiet while one of them
    // was down.
    let window = Duration::from_secs(120);
    let guard = IssuerGuard::launch(
        &cp,
        "mode: enforce\n",
        Launch {
            args: discovery_args(&ports, INTERVAL, window),
            ..Launch::default()
        },
    )
    .await;
    wait_stamp(&cp, (1, OLD, &kid)).await;
    let admitted = Admitted::record(&cp.client);

    // [old, new], one server then the other: the new issuer is accepted,
    // does not sign, and is shown as a candidate only.
    cp.restart_apiserver(ServiceAccountFlags::issuers(&[OLD, NEW]))
        .await;
    cp.restart_second_apiserver(second, ServiceAccountFlags::issuers(&[OLD, NEW]))
        .await;
    eventually("the new issuer to be a candidate", WAIT, || async {
        (issuer_state(&guard.metrics().await, NEW).as_deref() == Some("candidate")).then_some(())
    })
    .await;
    assert_eq!(stamp(&cp).await.0, 1);

    // [new, old] on the first server: the switch starts, and is not over.
    let before_start = jiff::Timestamp::now().as_second() as f64;
    cp.restart_apiserver(ServiceAccountFlags::issuers(&[NEW, OLD]))
        .await;
    let m = eventually("one server on each generation", WAIT, || async {
        let m = guard.metrics().await;
        let split = series(&m, "issuer_guard_apiservers", "generation=\"1\"") == Some(1.0)
            && series(&m, "issuer_guard_apiservers", "generation=\"2\"") == Some(1.0);
        split.then_some(m)
    })
    .await;
    let started = series(
        &m,
        "issuer_guard_switch_started_timestamp_seconds",
        "generation=\"2\"",
    )
    .expect("the switch to 2 started");
    assert!(
        started >= before_start - 2.0,
        "started {started}, restart at {before_start}"
    );
    assert_eq!(
        series(
            &m,
            "issuer_guard_switch_completed_timestamp_seconds",
            "generation=\"2\""
        ),
        None,
        "not complete while a server signs with the old pair: {m}"
    );
    assert_eq!(
        issuer_state(&m, NEW).as_deref(),
        Some("planned"),
        "the plan is seen, not declared"
    );
    assert_eq!(issuer_state(&m, OLD).as_deref(), Some("retiring"));
    assert_eq!(
        stamp(&cp).await,
        (1, OLD.to_owned(), kid.clone()),
        "mid-roll pods keep the old generation"
    );
    let denied = create::<Pod>(&cp.client, &audience_pod("aud-old-midroll", OLD), false).await;
    assert!(
        denied.denial().contains("[audience-retiring-issuer]"),
        "{}",
        denied.denial()
    );

    // [new, old] on the second: complete.
    let before_done = jiff::Timestamp::now().as_second() as f64;
    cp.restart_second_apiserver(second, ServiceAccountFlags::issuers(&[NEW, OLD]))
        .await;
    wait_stamp(&cp, (2, NEW, &kid)).await;
    let m = guard.metrics().await;
    let done = series(
        &m,
        "issuer_guard_switch_completed_timestamp_seconds",
        "generation=\"2\"",
    )
    .expect("the switch to 2 completed");
    let now = jiff::Timestamp::now().as_second() as f64;
    assert!(
        (before_done - 2.0..=now + 2.0).contains(&done),
        "completed at {done}, between {before_done} and {now}"
    );
    assert_eq!(
        series(&m, "issuer_guard_apiservers", "generation=\"2\""),
        Some(2.0),
        "{m}"
    );

    // [new] on both: the old issuer's retirement is observed.
    cp.restart_apiserver(ServiceAccountFlags::issuer(NEW)).await;
    cp.restart_second_apiserver(second, ServiceAccountFlags::issuer(NEW))
        .await;
    wait_observed_retired(&guard, OLD, "old observed retired").await;
    let stamps = admitted.stop().await;
    assert!(
        stamps.windows(2).all(|w| w[0] <= w[1]),
        "the generation of admitted pods went back: {stamps:?}"
    );
    assert!(stamps.contains(&1) && stamps.contains(&2), "{stamps:?}");
    assert_eq!(
        generations(&cp.client).await,
        vec![
            (1, OLD.to_owned(), kid.clone()),
            (2, NEW.to_owned(), kid.clone())
        ]
    );
    assert_no_token_in(&guard.log());
}

/// The canary tokens discovery keeps, by generation number: the Secret
/// beside the ledger.
async fn canaries(client: &Client, ledger: &str) -> Vec<(u64, String)> {
    use k8s_openapi::api::core::v1::Secret;
    let secret = Api::<Secret>::namespaced(client.clone(), NS)
        .get_opt(&format!("{ledger}-canary"))
        .await
        .expect("read the canary Secret");
    let mut kept: Vec<(u64, String)> = secret
        .and_then(|s| s.data)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| {
            let n = k.strip_prefix("generation-")?.parse().ok()?;
            let canary: Value = serde_json::from_slice(&v.0).ok()?;
            Some((n, canary["token"].as_str()?.to_owned()))
        })
        .collect();
    kept.sort();
    kept
}

/// Waits until the canary Secret beside `ledger` holds generation `number`'s.
async fn wait_canary(cp: &ControlPlane, ledger: &str, number: u64) {
    eventually(
        &format!("the canary of generation {number}"),
        WAIT,
        || async {
            let kept = canaries(&cp.client, ledger).await;
            kept.iter().any(|(n, _)| *n == number).then_some(())
        },
    )
    .await;
}

/// Where the cluster sets its own `--api-audiences`, the API servers do not
/// show which issuers they accept. The canary of generation 1 does: still
/// accepted at [new, old], refused by the server at [new], for its issuer
/// (its key still verifies), so the old issuer's retirement is observed with
/// no edit. The canaries never appear in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_the_api_audiences_hide_the_issuers_the_canary_sees_the_retirement() {
    let own_audiences = |issuers: &[&str]| ServiceAccountFlags {
        api_audiences: vec!["https://kubernetes.default.svc.cluster.local".to_owned()],
        ..ServiceAccountFlags::issuers(issuers)
    };
    let mut cp = ControlPlane::start(own_audiences(&[OLD])).await;
    let kid = cp.pki.sa_a.kid.clone();
    let guard = discovering(&cp, "{}\n").await;
    wait_stamp(&cp, (1, OLD, &kid)).await;
    wait_canary(&cp, LEDGER, 1).await;
    cp.restart_apiserver(own_audiences(&[NEW, OLD])).await;
    wait_stamp(&cp, (2, NEW, &kid)).await;
    wait_canary(&cp, LEDGER, 2).await;
    // Several rounds with both canaries accepted: nothing is retired.
    tokio::time::sleep(INTERVAL * 4).await;
    let m = guard.metrics().await;
    assert_eq!(issuer_state(&m, OLD).as_deref(), Some("retiring"), "{m}");
    assert_eq!(
        issuer_state(&m, NEW),
        None,
        "no candidate where the audiences are not the issuers"
    );
    cp.restart_apiserver(own_audiences(&[NEW])).await;
    wait_observed_retired(&guard, OLD, "old observed retired by its canary").await;
    assert_eq!(
        issuer_state(&guard.metrics().await, OLD).as_deref(),
        Some("retired")
    );
    let log = guard.log();
    assert_no_token_in(&log);
    for (n, token) in canaries(&cp.client, LEDGER).await {
        let signature = token.rsplit('.').next().unwrap_or_default();
        assert!(!log.contains(signature), "canary {n} in the log");
    }
}

/// Waits until `guard` reports `issuer` retired, observed.
async fn wait_observed_retired(guard: &IssuerGuard, issuer: &str, what: &str) {
    let labels = format!("kind=\"issuer\",name=\"{issuer}\",source=\"observed\"");
    eventually(what, WAIT, || async {
        let m = guard.metrics().await;
        series(&m, "issuer_guard_retirement_timestamp_seconds", &labels).map(drop)
    })
    .await;
}

/// No token discovery minted is ever logged: a JWT's first segment is
/// base64 of `{"alg":`, which starts `eyJhbGci`.
#[track_caller]
fn assert_no_token_in(log: &str) {
    assert!(!log.contains("eyJhbGci"), "a token in the log:\n{log}");
}

/// B back to A after the switch to B completed: A's pair gets a new
/// number, and stamps follow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_gets_a_new_number() {
    let mut cp = ControlPlane::start(ServiceAccountFlags {
        verifying: vec![SaKey::A, SaKey::B],
        ..ServiceAccountFlags::issuer(NEW)
    })
    .await;
    let (kid_a, kid_b) = (cp.pki.sa_a.kid.clone(), cp.pki.sa_b.kid.clone());
    let guard = discovering(&cp, "{}\n").await;
    wait_stamp(&cp, (1, NEW, &kid_a)).await;
    let both = |signing| ServiceAccountFlags {
        signing,
        verifying: vec![SaKey::A, SaKey::B],
        ..ServiceAccountFlags::issuer(NEW)
    };
    cp.restart_apiserver(both(SaKey::B)).await;
    wait_stamp(&cp, (2, NEW, &kid_b)).await;
    cp.restart_apiserver(both(SaKey::A)).await;
    wait_stamp(&cp, (3, NEW, &kid_a)).await;
    assert_eq!(
        generations(&cp.client).await,
        vec![
            (1, NEW.to_owned(), kid_a.clone()),
            (2, NEW.to_owned(), kid_b.clone()),
            (3, NEW.to_owned(), kid_a.clone()),
        ]
    );
    assert!(guard.log().contains("(a rollback)"), "{}", guard.log());
}

async fn write_ledger(client: &Client, text: &str) {
    let api = Api::<ConfigMap>::namespaced(client.clone(), NS);
    let mut map = api.get(LEDGER).await.expect("the ledger");
    map.data
        .get_or_insert_default()
        .insert("ledger.json".to_owned(), text.to_owned());
    api.replace(LEDGER, &PostParams::default(), &map)
        .await
        .expect("write the ledger as another user would");
}

/// Edits by someone else are not adopted and never written over: number
/// 999, a lastSeen in 2099, a retired issuer that never signed. Stamps stay,
/// the refusal is counted and alerted on; the valid ledger put back is
/// believed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_ledger_is_refused_and_a_restored_one_believed() {
    let cp = ControlPlane::start(ServiceAccountFlags::issuer(NEW)).await;
    let kid = cp.pki.sa_a.kid.clone();
    let guard = discovering(&cp, "{}\n").await;
    wait_stamp(&cp, (1, NEW, &kid)).await;
    let valid = ledger(&cp.client).await;
    let poisons = {
        let mut renumbered = valid.clone();
        renumbered["generations"][0]["number"] = json!(999);
        let mut future = valid.clone();
        future["generations"][0]["lastSeen"] = json!("2099-01-01T00:00:00Z");
        let mut extra = valid.clone();
        extra["retirements"] = json!([{"kind": "issuer", "name": "https://never.example",
            "at": valid["generations"][0]["firstSeen"], "source": "declared"}]);
        [
            ("diverged", renumbered),
            ("invalid", future),
            ("invalid", extra),
        ]
    };
    for (reason, poison) in poisons {
        write_ledger(&cp.client, &poison.to_string()).await;
        let m = eventually(&format!("the {reason} ledger refused"), WAIT, || async {
            let m = guard.metrics().await;
            (sample(&m, "issuer_guard_ledger_refused_now") == Some(1.0)
                && series(
                    &m,
                    "issuer_guard_ledger_refused_total",
                    &format!("reason=\"{reason}\""),
                )
                .is_some_and(|n| n >= 1.0))
            .then_some(m)
        })
        .await;
        assert_eq!(sample(&m, "issuer_guard_generation"), Some(1.0));
        assert_eq!(stamp(&cp).await, (1, NEW.to_owned(), kid.clone()));
        // Several probes later it is still there: never written over.
        tokio::time::sleep(INTERVAL * 3).await;
        assert_eq!(ledger(&cp.client).await, poison);
        write_ledger(&cp.client, &valid.to_string()).await;
        eventually("the restored ledger believed", WAIT, || async {
            (sample(&guard.metrics().await, "issuer_guard_ledger_refused_now") == Some(0.0))
                .then_some(())
        })
        .await;
    }
    assert!(guard.log().contains("believed again"), "{}", guard.log());
}

/// A replica that starts while the ledger is corrupt holds no valid ledger:
/// it stays unready rather than stamp something else than the replica that
/// holds one. Deleting the ConfigMap makes the other write back its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_ledger_never_splits_the_replicas() {
    let cp = ControlPlane::start(ServiceAccountFlags::issuer(NEW)).await;
    let kid = cp.pki.sa_a.kid.clone();
    create_account(&cp.client, ACCOUNT).await;
    let ports = [cp.apiserver_port()];
    let first = IssuerGuard::launch(&cp, "{}\n", replica(&ports, "first", INTERVAL, WINDOW)).await;
    wait_replica(&first, (1, NEW, &kid)).await;
    write_ledger(&cp.client, "{not json").await;
    let restarted = IssuerGuard::launch(
        &cp,
        "{}\n",
        Launch {
            ready: false,
            ..replica(&ports, "restarted", INTERVAL, WINDOW)
        },
    )
    .await;
    tokio::time::sleep(INTERVAL * 3).await;
    let (code, why) = restarted.readyz_text().await.expect("/readyz answers");
    assert_eq!(code, 503, "{why}");
    assert_eq!(first.readyz().await, 200);
    assert_eq!(replica_generation(&first).await.0, 1);
    assert!(
        restarted
            .log()
            .contains("no valid generation ledger is held"),
        "{}",
        restarted.log()
    );
    Api::<ConfigMap>::namespaced(cp.client.clone(), NS)
        .delete(LEDGER, &Default::default())
        .await
        .expect("delete the corrupt ledger");
    eventually("the restarted replica ready", WAIT, || async {
        (restarted.readyz().await == 200).then_some(())
    })
    .await;
    wait_replica(&restarted, (1, NEW, &kid)).await;
}

/// libfaketime, which `scripts/test` installs from the distribution's
/// packages. Missing, the test fails and says so: it is never skipped.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// A replica whose wall clock runs 10 minutes ahead (libfaketime, with the
/// monotonic clock left alone) believes the API server's tokens and records
/// the same switch times as a replica on time: nothing discovery records
/// or checks is read from a replica's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_ten_minutes_ahead_records_the_api_servers_times() {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: run the tests through scripts/test, which installs libfaketime"
    );
    let mut cp = ControlPlane::start(ServiceAccountFlags {
        verifying: vec![SaKey::A, SaKey::B],
        ..ServiceAccountFlags::issuer(NEW)
    })
    .await;
    let (kid_a, kid_b) = (cp.pki.sa_a.kid.clone(), cp.pki.sa_b.kid.clone());
    create_account(&cp.client, ACCOUNT).await;
    let ports = [cp.apiserver_port()];
    let fast = IssuerGuard::launch(
        &cp,
        "{}\n",
        Launch {
            env: vec![
                ("LD_PRELOAD".into(), LIBFAKETIME.into()),
                ("FAKETIME".into(), "+10m".into()),
                ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ],
            ..replica(&ports, "ten-minutes-ahead", INTERVAL, WINDOW)
        },
    )
    .await;
    // It alone saw the first pair: it wrote generation 1.
    wait_replica(&fast, (1, NEW, &kid_a)).await;
    let on_time =
        IssuerGuard::launch(&cp, "{}\n", replica(&ports, "on-time", INTERVAL, WINDOW)).await;
    wait_replica(&on_time, (1, NEW, &kid_a)).await;
    let before = jiff::Timestamp::now().as_second() as f64;
    cp.restart_apiserver(ServiceAccountFlags {
        signing: SaKey::B,
        verifying: vec![SaKey::A, SaKey::B],
        ..ServiceAccountFlags::issuer(NEW)
    })
    .await;
    for guard in [&fast, &on_time] {
        wait_replica(guard, (2, NEW, &kid_b)).await;
    }
    let now = jiff::Timestamp::now().as_second() as f64;
    let completed = |m: &str| {
        series(
            m,
            "issuer_guard_switch_completed_timestamp_seconds",
            "generation=\"2\"",
        )
        .expect("the switch completed")
    };
    let (a, b) = (
        completed(&fast.metrics().await),
        completed(&on_time.metrics().await),
    );
    assert_eq!(a, b, "both replicas hold one timeline");
    assert!(
        (before - 2.0..=now + 2.0).contains(&a),
        "completed at {a}: the API server's clock, between {before} and {now}, not the fast replica's"
    );
    let l = ledger(&cp.client).await;
    for g in l["generations"].as_array().expect("generations") {
        let first: jiff::Timestamp = g["firstSeen"]
            .as_str()
            .expect("firstSeen")
            .parse()
            .expect("a time");
        assert!(
            (first.as_second() as f64) <= now + 2.0,
            "a time from the fast replica's clock: {l}"
        );
    }
    assert_no_token_in(&fast.log());
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
            "object": plain_pod("offline"),
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

/// The API server's default binding of the discovery ClusterRole
/// (`system:service-account-issuer-discovery`, to every ServiceAccount),
/// which some clusters remove and kube-apiserver puts back at each start.
const DEFAULT_DISCOVERY_BINDING: &str = "system:service-account-issuer-discovery";

/// Deletes the default discovery binding (which must exist: the API server
/// has just (re)started) and waits until it is gone from the authorizer
/// too: a ServiceAccount bound to nothing is refused the discovery
/// document. Until then a success proves nothing about other grants.
async fn remove_default_discovery_binding(cp: &ControlPlane) {
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    Api::<ClusterRoleBinding>::all(cp.client.clone())
        .delete(DEFAULT_DISCOVERY_BINDING, &Default::default())
        .await
        .expect("the default binding of the discovery ClusterRole exists, and goes");
    let token = api::token_request(&cp.client, "default").await;
    let unbound = cp
        .token_client(&token, &cp.dir().join("unbound.kubeconfig"))
        .await;
    eventually(
        "a ServiceAccount bound to nothing to be refused the discovery document",
        WAIT,
        || async {
            let get = http::Request::get("/.well-known/openid-configuration")
                .body(Vec::new())
                .expect("a request");
            match unbound.request_text(get).await {
                Err(kube::Error::Api(e)) if e.code == 403 => Some(()),
                _ => None,
            }
        },
    )
    .await;
}

/// The value of `issuer_guard_discovery_errors_total{stage="<stage>"}`, or
/// `None` while that series does not exist.
fn stage_errors(metrics: &str, stage: &str) -> Option<f64> {
    sample(
        metrics,
        &format!("issuer_guard_discovery_errors_total{{stage=\"{stage}\"}}"),
    )
}

/// Discovery, the ledger and both watches with exactly the permissions the
/// chart grants, and without Kubernetes' default binding of the discovery
/// ClusterRole, which some clusters remove: also after an API server
/// restart, which puts that binding back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_works_with_exactly_the_charts_permissions() {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    let mut cp = ControlPlane::start(ServiceAccountFlags::issuer(NEW)).await;
    let (kid_a, kid_b) = (cp.pki.sa_a.kid.clone(), cp.pki.sa_b.kid.clone());
    // The chart must not lean on the default binding.
    remove_default_discovery_binding(&cp).await;
    let mut objects = support::chart::render("issuer-guard", NS, &[], "serviceaccount.yaml");
    objects.extend(support::chart::render("issuer-guard", NS, &[], "rbac.yaml"));
    let (mut account, mut canary) = (None, None);
    let pp = PostParams::default();
    for object in objects {
        let kind = object["kind"].as_str().expect("a kind").to_owned();
        let what = format!("create the chart's {kind}");
        let c = cp.client.clone();
        match kind.as_str() {
            "ServiceAccount" => {
                let sa: ServiceAccount = serde_json::from_value(object).expect("a ServiceAccount");
                let name = sa.metadata.name.clone().expect("a name");
                if name.ends_with("-canary") {
                    canary = Some(name);
                } else {
                    account = Some(name);
                }
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
            // In the namespace each names: the EndpointSlice grant is in
            // `default`.
            "Role" => {
                let r: Role = serde_json::from_value(object).expect(&what);
                let ns = r
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| NS.to_owned());
                Api::<Role>::namespaced(c, &ns)
                    .create(&pp, &r)
                    .await
                    .map(drop)
            }
            "RoleBinding" => {
                let r: RoleBinding = serde_json::from_value(object).expect(&what);
                let ns = r
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| NS.to_owned());
                Api::<RoleBinding>::namespaced(c, &ns)
                    .create(&pp, &r)
                    .await
                    .map(drop)
            }
            other => panic!("the chart's RBAC renders an unexpected {other}"),
        }
        .expect(&what);
    }
    let account = account.expect("the chart renders a ServiceAccount");
    let canary = canary.expect("the chart renders the canary ServiceAccount");
    let token = api::token_request(&cp.client, &account).await;
    let kubeconfig = cp.dir().join("chart-account.kubeconfig");
    let chart_client = cp.token_client(&token, &kubeconfig).await;
    // New bindings reach the authorizer's cache within moments; wait for
    // them so that a 403 below means a missing permission.
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
            // No --apiserver-endpoints: the EndpointSlices are listed
            // under the chart's grant (a test control plane has none for
            // itself, so probes then go through the one address).
            args: vec![
                format!("--service-account={NS}/{canary}"),
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
    // The canary is minted, read back and kept under the chart's grants.
    wait_canary(&cp, &format!("{account}-ledger"), 1).await;
    // The Secret watch works with the chart's list/watch.
    api::legacy_token(&cp.client, "bot", "bot-token").await;
    wait_secret_known(&cp, "bot-token", WAIT).await;
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
    // The restarted API server bound the discovery ClusterRole to every
    // ServiceAccount again; without that binding, only a discovery that
    // succeeds from now on shows the chart's own grants at work.
    remove_default_discovery_binding(&cp).await;
    let unbound_at = jiff::Timestamp::now().as_second();
    eventually(
        "a discovery that succeeded with the chart's grants alone",
        WAIT,
        || async {
            let m = guard.metrics().await;
            let last = sample(&m, "issuer_guard_discovery_last_success_timestamp_seconds")?;
            (last > unbound_at as f64).then_some(())
        },
    )
    .await;
    wait_stamp(&cp, (2, NEW, &kid_b)).await;
    assert_eq!(
        generations(&cp.client).await,
        vec![
            (1, NEW.to_owned(), kid_a.clone()),
            (2, NEW.to_owned(), kid_b.clone())
        ]
    );
}

/// Creates `objects` (RBAC kinds, in any namespace they name) as admin.
async fn grant(cp: &ControlPlane, objects: Value) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    let pp = PostParams::default();
    for object in objects.as_array().expect("a list of RBAC objects").clone() {
        let c = cp.client.clone();
        let what = format!("grant {object}");
        match object["kind"].as_str().expect("a kind") {
            "ClusterRole" => Api::<ClusterRole>::all(c)
                .create(&pp, &serde_json::from_value(object).expect(&what))
                .await
                .map(drop),
            "ClusterRoleBinding" => Api::<ClusterRoleBinding>::all(c)
                .create(&pp, &serde_json::from_value(object).expect(&what))
                .await
                .map(drop),
            "Role" => Api::<Role>::namespaced(c, NS)
                .create(&pp, &serde_json::from_value(object).expect(&what))
                .await
                .map(drop),
            "RoleBinding" => Api::<RoleBinding>::namespaced(c, NS)
                .create(&pp, &serde_json::from_value(object).expect(&what))
                .await
                .map(drop),
            other => panic!("not an RBAC kind: {other}"),
        }
        .expect(&what);
    }
}

/// A Role in [`NS`] named `name` with `rules`, bound to ServiceAccount
/// `account`.
fn role(name: &str, account: &str, rules: Value) -> Value {
    json!([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": name, "namespace": NS}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": name, "namespace": NS},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": NS}]},
    ])
}

/// A ClusterRole named `name` allowing GET of `urls`, bound to
/// ServiceAccount `account`.
fn url_grant(name: &str, account: &str, urls: &[&str]) -> Value {
    json!([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": name}, "rules": [{"nonResourceURLs": urls, "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": NS}]},
    ])
}

/// Waits until `issuer_guard_discovery_errors_total{stage}` counts, and
/// returns the metrics it was seen in.
async fn wait_stage_failing(guard: &IssuerGuard, stage: &str) -> String {
    eventually(&format!("discovery failing at {stage}"), WAIT, || async {
        let m = guard.metrics().await;
        (stage_errors(&m, stage)? >= 1.0).then_some(m)
    })
    .await
}

/// The README's readiness and metrics of discovery, with issuer-guard's
/// permissions granted one at a time. Without the ledger's grant the
/// replica is unready, saying "generation ledger not read from the API
/// server yet"; reading it (and learning there is none) makes it ready.
/// Each probe step fails in turn, counted under its `stage` label
/// (openid-configuration, jwks, token-request, ledger, and verify when the
/// API server signs with a key its JWKS lacks), and
/// `issuer_guard_discovery_last_success_timestamp_seconds` says when it
/// last succeeded. The tokens it mints carry `--discovery-audience`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_ledger_and_failures_are_named_by_stage() {
    const PROBER: &str = "prober";
    const PROBER_LEDGER: &str = "prober-ledger";
    const AUDIENCE: &str = "stages.issuer-guard.example";
    let mut cp = ControlPlane::start(ServiceAccountFlags::issuer(NEW)).await;
    let kid_a = cp.pki.sa_a.kid.clone();
    remove_default_discovery_binding(&cp).await;
    create_account(&cp.client, PROBER).await;
    let token = api::token_request(&cp.client, PROBER).await;
    let kubeconfig = cp.dir().join("prober.kubeconfig");
    cp.token_client(&token, &kubeconfig).await;
    let guard = IssuerGuard::launch(
        &cp,
        "{}\n",
        Launch {
            registration: None,
            ready: false,
            name: "prober".to_owned(),
            kubeconfig: Some(kubeconfig),
            args: vec![
                format!("--service-account={NS}/{PROBER}"),
                format!("--ledger={PROBER_LEDGER}"),
                format!("--discovery-audience={AUDIENCE}"),
                // No Secret watch: the ledger is the one thing readiness
                // waits for here.
                "--watch-secrets=false".to_owned(),
                "--discovery-interval=300ms".to_owned(),
                "--discovery-window=2s".to_owned(),
            ],
            env: Vec::new(),
        },
    )
    .await;

    // Nothing granted: unready, for the ledger, and discovery fails at its
    // first step. Before any success the timestamp is 0.
    let why = eventually("/readyz to answer", WAIT, || guard.readyz_text()).await;
    assert_eq!(why.0, 503, "{why:?}");
    assert!(
        why.1
            .contains("generation ledger not read from the API server yet")
            && !why.1.contains("Secret cache"),
        "{why:?}"
    );
    let m = wait_stage_failing(&guard, "openid-configuration").await;
    assert_eq!(
        sample(&m, "issuer_guard_discovery_last_success_timestamp_seconds"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(guard.readyz().await, 503);

    // The ledger may be read: there is none yet, and knowing that is
    // enough to be ready, though discovery still fails.
    grant(
        &cp,
        role(
            "prober-ledger-read",
            PROBER,
            json!([{"apiGroups": [""], "resources": ["configmaps"],
                    "resourceNames": [PROBER_LEDGER], "verbs": ["get", "list", "watch"]}]),
        ),
    )
    .await;
    eventually("ready once the ledger was read", WAIT, || async {
        (guard.readyz().await == 200).then_some(())
    })
    .await;

    // Each grant moves the failure to the next step.
    grant(
        &cp,
        url_grant(
            "prober-openid",
            PROBER,
            &["/.well-known/openid-configuration"],
        ),
    )
    .await;
    wait_stage_failing(&guard, "jwks").await;
    grant(&cp, url_grant("prober-jwks", PROBER, &["/openid/v1/jwks"])).await;
    wait_stage_failing(&guard, "token-request").await;
    grant(
        &cp,
        role(
            "prober-token",
            PROBER,
            json!([{"apiGroups": [""], "resources": ["serviceaccounts/token"],
                    "resourceNames": [PROBER], "verbs": ["create"]}]),
        ),
    )
    .await;
    wait_stage_failing(&guard, "ledger").await;
    let before = jiff::Timestamp::now().as_second() as f64;
    grant(
        &cp,
        role(
            "prober-ledger-write",
            PROBER,
            json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
                   {"apiGroups": [""], "resources": ["configmaps"],
                    "resourceNames": [PROBER_LEDGER], "verbs": ["update", "patch"]}]),
        ),
    )
    .await;
    wait_replica(&guard, (1, NEW, &kid_a)).await;
    let m = guard.metrics().await;
    let last = sample(&m, "issuer_guard_discovery_last_success_timestamp_seconds")
        .expect("the last success's timestamp");
    let now = jiff::Timestamp::now().as_second() as f64;
    assert!(
        before <= last && last <= now,
        "last success at {last}, between {before} and {now}"
    );
    // No stage failed that the grants did not predict (the prober has no
    // grant for the canary Secret), and no stage but these six exists.
    assert_eq!(stage_errors(&m, "verify"), None, "{m}");
    let stages: Vec<&str> = m
        .lines()
        .filter_map(|l| l.strip_prefix("issuer_guard_discovery_errors_total{stage=\""))
        .filter_map(|l| l.split_once('"').map(|(s, _)| s))
        .collect();
    assert_eq!(
        stages.len(),
        5,
        "openid-configuration, jwks, token-request, ledger, canary: {stages:?}"
    );
    // It minted 10-minute tokens for itself, for --discovery-audience.
    assert_minted_only(
        &cp,
        &format!("system:serviceaccount:{NS}:{PROBER}"),
        PROBER,
        AUDIENCE,
    );

    // An API server that signs with a key its JWKS does not list: the
    // token cannot be believed.
    cp.restart_apiserver(ServiceAccountFlags {
        signing: SaKey::B,
        verifying: vec![SaKey::A],
        ..ServiceAccountFlags::issuer(NEW)
    })
    .await;
    wait_stage_failing(&guard, "verify").await;
    assert_eq!(
        replica_generation(&guard).await,
        (1, NEW.to_owned(), kid_a.clone()),
        "a token that does not verify starts no generation"
    );
}

/// A new ledger numbers its first generation `generation.static.number`,
/// so a cluster stamped with static numbers before keeps counting up; and
/// a ledger deleted while issuer-guard runs is written back from what it
/// remembers, history included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_ledger_starts_at_the_static_number_and_a_deleted_one_comes_back() {
    let mut cp = ControlPlane::start(ServiceAccountFlags::issuer(NEW)).await;
    let (kid_a, kid_b) = (cp.pki.sa_a.kid.clone(), cp.pki.sa_b.kid.clone());
    let guard = discovering(
        &cp,
        "generation:\n  static: {number: 7, issuer: \"https://static.discovery.example\", keyId: static-kid}\n",
    )
    .await;
    // Discovery's issuer and key, under the static number.
    wait_stamp(&cp, (7, NEW, &kid_a)).await;
    cp.restart_apiserver(ServiceAccountFlags {
        signing: SaKey::B,
        verifying: vec![SaKey::A, SaKey::B],
        ..ServiceAccountFlags::issuer(NEW)
    })
    .await;
    wait_stamp(&cp, (8, NEW, &kid_b)).await;
    let history = vec![
        (7, NEW.to_owned(), kid_a.clone()),
        (8, NEW.to_owned(), kid_b.clone()),
    ];
    assert_eq!(generations(&cp.client).await, history);

    let maps: Api<ConfigMap> = Api::namespaced(cp.client.clone(), NS);
    let uid = |m: ConfigMap| m.metadata.uid.expect("a uid");
    let deleted = uid(maps.get(LEDGER).await.expect("the ledger"));
    maps.delete(LEDGER, &Default::default())
        .await
        .expect("delete the ledger");
    // Back, as another object, with both generations: a ledger started over
    // would hold only the signing pair, numbered 7.
    eventually("the ledger written back", WAIT, || async {
        let back = maps.get_opt(LEDGER).await.ok()??;
        (uid(back) != deleted).then_some(())
    })
    .await;
    assert_eq!(generations(&cp.client).await, history);
    assert_eq!(stamp(&cp).await, (8, NEW.to_owned(), kid_b.clone()));
    drop(guard);
}
