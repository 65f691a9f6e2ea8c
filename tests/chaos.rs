//! Chaos through the real API server. Pods are created and deleted through
//! kube-apiserver at a steady rate, with issuer-guard registered
//! `failurePolicy: Fail` behind one address, while:
//!
//! - both webhook replicas are rolled with SIGTERM, one at a time, twice;
//! - the serving certificate is rotated by a kubelet-style `..data` swap;
//! - the config is edited badly, then well;
//! - kube-apiserver is restarted signing with a new key, which discovery
//!   (on, as the chart runs it) turns into generation 2 with no edit.
//!
//! Every create that failed because of the webhook fails the test; those
//! that failed while kube-apiserver itself was down are counted apart.
//! `CHAOS_SECONDS` sets the length (60 s by default, as CI runs it) and
//! `CHAOS_RATE` the Pods per second (10); `scripts/chaos` runs it longer
//! and prints the report. The API server reaches the two replicas through
//! a test-only TCP relay (tests/support/relay.rs), not a Service: see there.

mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use serde_json::json;
use support::{
    ControlPlane, Deadline, NS, SaKey, ServiceAccountFlags,
    process::{Proc, free_port},
    relay::Relay,
    serve::sample,
    webhook::{GENERATION_LABEL, Registration, register, write_atomically},
};
use tokio::sync::Semaphore;

const ISSUER: &str = "https://chaos.e2e.example";
/// The replicas' own ServiceAccount, which discovery mints tokens for.
const ACCOUNT: &str = "issuer-guard";
/// Pods created per second, unless `CHAOS_RATE` says otherwise.
const RATE: u64 = 10;
/// Creates in flight at most; a slower API server lowers the rate achieved
/// rather than piling up requests.
const IN_FLIGHT: usize = 16;
/// In a cluster the endpoints controller needs about a second to drop an
/// unready pod; the relay needs 200 ms, so 2 s is a margin here.
const SHUTDOWN_DELAY: &str = "2s";
/// After kube-apiserver answers /readyz again, how long failures are still
/// put down to its restart (its clients reconnect in this time).
const RESTART_SETTLING: Duration = Duration::from_secs(3);

/// The replicas' config. Discovery decides the generation; the static
/// block is what a replica would stamp before reading the ledger, which it
/// must never do.
fn config(generation: u64) -> String {
    format!(
        "generation:\n  static: {{number: {generation}, issuer: \"{ISSUER}\", keyId: \"\"}}\nmode: enforce\n"
    )
}

/// Serving certificates in the layout kubelet gives a mounted Secret:
/// `tls.crt` → `..data/tls.crt`, `..data` → a timestamped directory,
/// swapped by one rename.
struct CertDir {
    root: PathBuf,
    versions: u32,
}

impl CertDir {
    fn new(root: PathBuf) -> CertDir {
        std::fs::create_dir_all(&root).expect("create the cert directory");
        for file in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{file}"), root.join(file))
                .expect("link a cert file");
        }
        CertDir { root, versions: 0 }
    }

    fn swap_in(&mut self, pki: &support::pki::Pki) {
        self.versions += 1;
        let version = format!("..2026_11_30_{:02}", self.versions);
        let dir = self.root.join(&version);
        std::fs::create_dir_all(&dir).expect("create a cert version");
        let pair = pki.serving_cert(
            &format!("webhook-{}", self.versions),
            &["127.0.0.1", "localhost"],
        );
        std::fs::copy(&pair.cert, dir.join("tls.crt")).expect("copy the certificate");
        std::fs::copy(&pair.key, dir.join("tls.key")).expect("copy the key");
        let tmp = self.root.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&version, &tmp).expect("link the new version");
        std::fs::rename(&tmp, self.root.join("..data")).expect("swap ..data");
    }
}

/// One webhook replica: a process on fixed ports, restarted in place.
struct Replica {
    name: String,
    webhook: SocketAddr,
    health: SocketAddr,
    args: Vec<String>,
    dir: PathBuf,
    process: Option<Proc>,
    starts: u32,
}

impl Replica {
    fn new(name: &str, dir: &Path, certs: &Path, config: &Path, kubeconfig: &Path) -> Replica {
        let webhook: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let health: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let args = vec![
            "serve".into(),
            format!("--listen={webhook}"),
            format!("--health-listen={health}"),
            format!("--tls-cert={}", certs.join("tls.crt").display()),
            format!("--tls-key={}", certs.join("tls.key").display()),
            format!("--config={}", config.display()),
            format!("--kubeconfig={}", kubeconfig.display()),
            "--reload-interval=200ms".into(),
            format!("--shutdown-delay={SHUTDOWN_DELAY}"),
            "--shutdown-grace=10s".into(),
            "--log-format=json".into(),
            format!("--service-account={NS}/{ACCOUNT}"),
            "--discovery-interval=500ms".into(),
            "--discovery-window=5s".into(),
        ];
        Replica {
            name: name.to_owned(),
            webhook,
            health,
            args,
            dir: dir.to_owned(),
            process: None,
            starts: 0,
        }
    }

    async fn start(&mut self) {
        self.starts += 1;
        let log = self.dir.join(format!("{}.{}.log", self.name, self.starts));
        let mut process = Proc::spawn(&self.name, &support::issuer_guard_bin(), &self.args, log);
        process.wait_ready(&self.health.to_string()).await;
        self.process = Some(process);
    }

    /// SIGTERM, as a rolling update sends it; the replica must exit 0.
    async fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let status = p.terminate(Duration::from_secs(30)).await;
            assert!(status.success(), "{} exited with {status}", self.name);
        }
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let resp = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .ok()?
            .get(format!("http://{}{path}", self.health))
            .send()
            .await
            .ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.ok()?))
    }

    async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get("/metrics").await.expect("a replica's /metrics");
        sample(&text, series).unwrap_or(0.0)
    }
}

/// What the load generator saw.
#[derive(Default)]
struct Tally {
    attempts: u64,
    admitted: u64,
    /// Failures that name a webhook: what this test exists to find.
    webhook: Vec<String>,
    /// Failures while kube-apiserver was restarting.
    apiserver: u64,
    /// Failures at any other time, for any other reason.
    other: Vec<String>,
    /// Admitted Pods the mutating webhook did not stamp.
    unstamped: Vec<String>,
    /// (seconds since the start when the create was sent, and when it was
    /// answered; the generation stamped).
    stamps: Vec<(f64, f64, u64)>,
}

struct Load {
    tally: Mutex<Tally>,
    apiserver_down: AtomicBool,
    started: Instant,
}

impl Load {
    async fn create_one(self: Arc<Self>, pods: Api<Pod>) {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"generateName": "load-"},
            "spec": {"containers": [{"name": "app", "image": "registry.e2e.example/app:1"}]}
        }))
        .expect("a Pod");
        let at = self.started.elapsed().as_secs_f64();
        let result = pods.create(&PostParams::default(), &pod).await;
        let answered = self.started.elapsed().as_secs_f64();
        let down = self.apiserver_down.load(Ordering::Acquire);
        let admitted = {
            let mut tally = self.tally.lock().unwrap();
            tally.attempts += 1;
            match result {
                Ok(created) => {
                    tally.admitted += 1;
                    let name = created.metadata.name.clone().unwrap_or_default();
                    let generation = created
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(GENERATION_LABEL))
                        .and_then(|g| g.parse().ok());
                    match generation {
                        Some(g) => tally.stamps.push((at, answered, g)),
                        None => tally.unstamped.push(name.clone()),
                    }
                    Some(name)
                }
                Err(e) => {
                    let text = format!("[{at:.1}s] {e}");
                    if text.contains("webhook") {
                        tally.webhook.push(text);
                    } else if down {
                        tally.apiserver += 1;
                    } else {
                        tally.other.push(text);
                    }
                    None
                }
            }
        };
        if let Some(name) = admitted {
            // Pods without a node go at once; a failed delete (the API
            // server restarting) only leaves a Pending pod behind.
            let _ = pods.delete(&name, &DeleteParams::default()).await;
        }
    }
}

/// Creates Pods at [`RATE`] until `stop` is set.
async fn generate(load: Arc<Load>, client: Client, rate: u64, stop: Arc<AtomicBool>) {
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = Vec::new();
    while !stop.load(Ordering::Acquire) {
        tick.tick().await;
        let permit = slots.clone().acquire_owned().await.expect("open");
        let (load, pods) = (load.clone(), pods.clone());
        tasks.push(tokio::spawn(async move {
            load.create_one(pods).await;
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.expect("a create task");
    }
}

/// Rolls the replicas one at a time, each back in the relay's rotation
/// before the next goes, as a Deployment with `maxUnavailable: 0` would.
async fn roll(replicas: &mut [Replica], relay: &Relay) {
    for (i, r) in replicas.iter_mut().enumerate() {
        r.stop().await;
        r.start().await;
        let deadline = Deadline::new(
            format!("{} back behind the relay", r.name),
            Duration::from_secs(30),
        );
        while !relay.is_ready(i) {
            deadline.tick().await;
        }
    }
}

/// Waits until every replica's `series` is at least `at_least`.
async fn all_reach(replicas: &[Replica], series: &str, at_least: f64) {
    let deadline = Deadline::new(
        format!("every replica's {series} ≥ {at_least}"),
        Duration::from_secs(20),
    );
    loop {
        let mut all = true;
        for r in replicas {
            all &= r.metric(series).await >= at_least;
        }
        if all {
            return;
        }
        deadline.tick().await;
    }
}

async fn until(started: Instant, at: Duration) {
    tokio::time::sleep_until((started + at).into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_survives_webhook_rolls_cert_and_config_changes_and_apiserver_restarts() {
    let seconds: u64 = std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let length = Duration::from_secs(seconds);
    let rate: u64 = std::env::var("CHAOS_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(RATE);
    let at = |fraction: f64| length.mul_f64(fraction);

    let mut cp = ControlPlane::start(ServiceAccountFlags::issuer(ISSUER)).await;
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": ACCOUNT}})).unwrap();
    Api::<ServiceAccount>::namespaced(cp.client.clone(), NS)
        .create(&PostParams::default(), &account)
        .await
        .expect("create issuer-guard's ServiceAccount");
    let dir = cp.dir().join("chaos");
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("config.yaml");
    write_atomically(&config_path, &config(1));
    let mut certs = CertDir::new(dir.join("certs"));
    certs.swap_in(&cp.pki);
    let mut replicas = vec![
        Replica::new(
            "issuer-guard-a",
            &dir,
            &certs.root,
            &config_path,
            &cp.kubeconfig,
        ),
        Replica::new(
            "issuer-guard-b",
            &dir,
            &certs.root,
            &config_path,
            &cp.kubeconfig,
        ),
    ];
    for r in &mut replicas {
        r.start().await;
    }
    all_reach(&replicas, "issuer_guard_generation", 1.0).await;
    let relay = Relay::start(
        &replicas
            .iter()
            .map(|r| (r.webhook, r.health))
            .collect::<Vec<_>>(),
    )
    .await;
    // As a Service has endpoints only once its pods are ready.
    let deadline = Deadline::new("both replicas behind the relay", Duration::from_secs(30));
    while !(relay.is_ready(0) && relay.is_ready(1)) {
        deadline.tick().await;
    }
    register(
        &cp.client,
        relay.addr.port(),
        cp.pki.ca_pem.as_bytes(),
        Registration::default(),
    )
    .await;
    // The API server loads registrations asynchronously; start the clock
    // once a Pod comes back stamped.
    let probe_deadline = Deadline::new(
        "the API server to call issuer-guard",
        Duration::from_secs(60),
    );
    loop {
        let c = support::api::create::<Pod>(
            &cp.client,
            &json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "probe-"},
                "spec": {"containers": [{"name": "c", "image": "registry.e2e.example/probe:1"}]}
            }),
            true,
        )
        .await;
        if c.body["metadata"]["labels"][GENERATION_LABEL].is_string() {
            break;
        }
        probe_deadline.tick().await;
    }

    let started = Instant::now();
    let load = Arc::new(Load {
        tally: Mutex::new(Tally::default()),
        apiserver_down: AtomicBool::new(false),
        started,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let generator = tokio::spawn(generate(
        load.clone(),
        cp.client.clone(),
        rate,
        stop.clone(),
    ));
    let mut events: Vec<(f64, &str)> = Vec::new();
    let mark = |events: &mut Vec<(f64, &'static str)>, what| {
        events.push((started.elapsed().as_secs_f64(), what));
    };

    until(started, at(0.10)).await;
    mark(&mut events, "roll both replicas");
    roll(&mut replicas, &relay).await;

    until(started, at(0.30)).await;
    mark(&mut events, "swap the certificate");
    certs.swap_in(&cp.pki);
    all_reach(
        &replicas,
        "issuer_guard_tls_reloads_total{result=\"success\"}",
        1.0,
    )
    .await;

    until(started, at(0.45)).await;
    mark(&mut events, "break the config");
    let bad_at = started.elapsed().as_secs_f64();
    write_atomically(
        &config_path,
        "generation:\n  static: {number: 2, issuer: [\n",
    );
    all_reach(
        &replicas,
        "issuer_guard_config_reloads_total{result=\"error\"}",
        1.0,
    )
    .await;

    until(started, at(0.55)).await;
    mark(&mut events, "fix the config");
    // Another static number: discovery's generation must win over it.
    write_atomically(&config_path, &config(7));
    all_reach(
        &replicas,
        "issuer_guard_config_reloads_total{result=\"success\"}",
        1.0,
    )
    .await;

    until(started, at(0.65)).await;
    mark(&mut events, "restart kube-apiserver signing with key B");
    let switch_at = started.elapsed().as_secs_f64();
    load.apiserver_down.store(true, Ordering::Release);
    cp.restart_apiserver(ServiceAccountFlags {
        signing: SaKey::B,
        verifying: vec![SaKey::A, SaKey::B],
        ..ServiceAccountFlags::issuer(ISSUER)
    })
    .await;
    let settled = tokio::time::Instant::now() + RESTART_SETTLING;
    all_reach(&replicas, "issuer_guard_generation", 2.0).await;
    let gen2_at = started.elapsed().as_secs_f64();
    mark(&mut events, "both replicas at generation 2");
    tokio::time::sleep_until(settled).await;
    load.apiserver_down.store(false, Ordering::Release);

    until(started, at(0.80)).await;
    mark(&mut events, "roll both replicas again");
    roll(&mut replicas, &relay).await;

    until(started, length).await;
    stop.store(true, Ordering::Release);
    generator.await.expect("the load generator");
    let elapsed = started.elapsed().as_secs_f64();

    let tally = std::mem::take(&mut *load.tally.lock().unwrap());
    let dropped: Vec<String> = relay
        .dropped
        .lock()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "[{:.1}s] {}",
                d.at.duration_since(started).as_secs_f64(),
                d.why
            )
        })
        .collect();
    let report = json!({
        "seconds": elapsed,
        "target_rate": rate,
        "attempts": tally.attempts,
        "admitted": tally.admitted,
        "rate_achieved": tally.admitted as f64 / elapsed,
        "failed_because_of_the_webhook": tally.webhook.len(),
        "failed_while_apiserver_restarted": tally.apiserver,
        "failed_otherwise": tally.other.len(),
        "unstamped": tally.unstamped.len(),
        "relay_connections_dropped": dropped,
        "events": events.iter().map(|(t, e)| json!({"at": t, "event": e})).collect::<Vec<_>>(),
    });
    eprintln!("chaos report: {report}");
    if let Some(path) = std::env::var_os("CHAOS_REPORT") {
        std::fs::write(path, report.to_string()).expect("write the chaos report");
    }

    assert!(
        tally.webhook.is_empty(),
        "admissions failed because of the webhook:\n{}",
        tally.webhook.join("\n")
    );
    assert!(
        tally.other.is_empty(),
        "admissions failed outside the API server's restart:\n{}",
        tally.other.join("\n")
    );
    assert!(
        tally.unstamped.is_empty(),
        "admitted without a stamp: {:?}",
        tally.unstamped
    );
    assert!(
        dropped.is_empty(),
        "the relay could not pass on: {dropped:?}"
    );
    // The load must have been real: most of the planned creates happened.
    let planned = rate as f64 * elapsed;
    assert!(
        tally.admitted as f64 >= 0.8 * planned,
        "only {} of {planned:.0} planned creates were admitted",
        tally.admitted
    );
    // Neither rolls nor a broken or edited config move the stamp: until the
    // key switch, generation 1 held; once both replicas had seen it,
    // generation 2, through the second roll too. A create in flight while
    // the switch was discovered may get either.
    for &(sent, answered, g) in &tally.stamps {
        if answered < switch_at {
            assert_eq!(
                g, 1,
                "a Pod created at {sent:.1}s (config broken at {bad_at:.1}s, key switched at {switch_at:.1}s) got generation {g}"
            );
        } else if sent > gen2_at {
            assert_eq!(
                g, 2,
                "a Pod created at {sent:.1}s, after every replica had generation 2 at {gen2_at:.1}s, got {g}"
            );
        }
    }
    for r in &mut replicas {
        r.stop().await;
    }
}
