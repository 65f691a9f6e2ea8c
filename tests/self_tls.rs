//! `tls.mode=self` on the real kube-apiserver: the chart is installed with
//! it, and two issuer-guard processes run on this host the way its pods
//! would (the Deployment's own arguments and environment, the chart's
//! ConfigMap, a token of the chart's ServiceAccount, so the chart's RBAC is
//! all they get), behind one address standing in for the Service.
//!
//! They create the CA and serving certificate in the Secret and set both
//! webhook configurations' caBundle; the API server calls them over TLS;
//! `helm upgrade` and an Argo-CD-style server-side apply of the rendered
//! configurations leave the caBundle alone; then, with lifetimes of seconds
//! (through the chart's values), the CA is rotated while Pods are created
//! every 75 ms against fail-closed webhooks, and none fails.

mod support;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
    apps::v1::Deployment,
    core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use support::{
    ControlPlane, ServiceAccountFlags, api,
    chart::{self, CHART, IMAGE_REPOSITORY, helm, ok},
    eventually,
    process::{Proc, free_port},
    relay::Relay,
    serve::sample,
    webhook::{GENERATION_LABEL, write_atomically},
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const RELEASE: &str = "issuer-guard";
const RELEASE_NS: &str = "issuer-guard";
const SECRET: &str = "issuer-guard-self-tls";
const ISSUER: &str = "https://self-tls.e2e.example";

/// Lifetimes of seconds: the first CA is staged 20 s after it is made
/// (60 s lifetime, rotated 40 s before its end), switched 4 s after every
/// caBundle carries its successor, and dropped 4 s after that. Serving
/// certificates are renewed every 15 s on top. The overlap is kept above
/// what a watch event can take on a loaded two-core machine.
const SELF_VALUES: &str = "tls:\n  mode: self\n  extraIPs: [\"127.0.0.1\"]\n  self:\n    caLifetime: 60s\n    caRenewBefore: 40s\n    certLifetime: 30s\n    certRenewBefore: 15s\n    overlap: 4s\n";
/// `tls.self.overlap` above.
const OVERLAP: Duration = Duration::from_secs(4);

/// What the test's own watches saw, in order: the CA that signs in the
/// Secret, and the CAs every webhook of a configuration trusts. The API
/// server's informers see the same changes in the same order.
#[derive(Debug, Clone)]
enum Seen {
    Signer(Vec<u8>),
    Trusted(&'static str, Vec<Vec<u8>>),
}

type Timeline = Arc<Mutex<Vec<(Instant, Seen)>>>;

/// The CAs every webhook of a configuration trusts.
fn trusted_by_all(bundles: impl Iterator<Item = Vec<u8>>) -> Vec<Vec<u8>> {
    let mut all: Option<Vec<Vec<u8>>> = None;
    for bundle in bundles {
        let cas = ders(&bundle);
        all = Some(match all {
            None => cas,
            Some(before) => before.into_iter().filter(|c| cas.contains(c)).collect(),
        });
    }
    all.unwrap_or_default()
}

/// Watches the Secret and both configurations into `timeline`. With a
/// backoff: a watch that fails at once and forever (the control plane gone
/// at the end of the test) would otherwise never yield, and the runtime
/// could never shut down.
fn record(client: &Client, timeline: &Timeline) -> Vec<tokio::task::JoinHandle<()>> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let by_name = |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
    let secrets = watcher::watcher(
        Api::<Secret>::namespaced(client.clone(), RELEASE_NS),
        by_name(SECRET),
    )
    .default_backoff();
    let mutating = watcher::watcher(
        Api::<MutatingWebhookConfiguration>::all(client.clone()),
        by_name(RELEASE),
    )
    .default_backoff();
    let validating = watcher::watcher(
        Api::<ValidatingWebhookConfiguration>::all(client.clone()),
        by_name(RELEASE),
    )
    .default_backoff();
    let push = |timeline: &Timeline, seen: Seen| {
        timeline.lock().unwrap().push((Instant::now(), seen));
    };
    let t = timeline.clone();
    let a = tokio::spawn(async move {
        let mut events = std::pin::pin!(secrets);
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) = event
                && let Some(ca) = s.data.as_ref().and_then(|d| d.get("ca.crt"))
            {
                push(&t, Seen::Signer(ders(&ca.0).remove(0)));
            }
        }
    });
    let t = timeline.clone();
    let b = tokio::spawn(async move {
        let mut events = std::pin::pin!(mutating);
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) = event {
                let bundles = c.webhooks.unwrap_or_default().into_iter();
                let cas = trusted_by_all(
                    bundles.map(|w| w.client_config.ca_bundle.map(|b| b.0).unwrap_or_default()),
                );
                push(&t, Seen::Trusted("mutating", cas));
            }
        }
    });
    let t = timeline.clone();
    let c = tokio::spawn(async move {
        let mut events = std::pin::pin!(validating);
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) = event {
                let bundles = c.webhooks.unwrap_or_default().into_iter();
                let cas = trusted_by_all(
                    bundles.map(|w| w.client_config.ca_bundle.map(|b| b.0).unwrap_or_default()),
                );
                push(&t, Seen::Trusted("validating", cas));
            }
        }
    });
    vec![a, b, c]
}

/// The state after each event of `timeline`: the signing CA, and the CAs
/// both configurations trust.
struct State {
    signer: Option<Vec<u8>>,
    mutating: Vec<Vec<u8>>,
    validating: Vec<Vec<u8>>,
}

impl State {
    fn trusted(&self, ca: &[u8]) -> bool {
        self.mutating.iter().any(|c| c == ca) && self.validating.iter().any(|c| c == ca)
    }
    fn trusted_nowhere(&self, ca: &[u8]) -> bool {
        !self.mutating.iter().any(|c| c == ca) && !self.validating.iter().any(|c| c == ca)
    }
}

/// The first moment of `timeline` at which `holds`.
fn first(timeline: &[(Instant, Seen)], holds: impl Fn(&State) -> bool) -> Option<Instant> {
    let mut state = State {
        signer: None,
        mutating: Vec::new(),
        validating: Vec::new(),
    };
    for (at, seen) in timeline {
        match seen {
            Seen::Signer(ca) => state.signer = Some(ca.clone()),
            Seen::Trusted("mutating", cas) => state.mutating.clone_from(cas),
            Seen::Trusted(_, cas) => state.validating.clone_from(cas),
        }
        if holds(&state) {
            return Some(*at);
        }
    }
    None
}

/// The caBundle of every webhook of both configurations, mutating first.
async fn ca_bundles(client: &Client) -> Vec<Vec<u8>> {
    let m = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(RELEASE)
        .await
        .expect("the mutating webhook configuration");
    let v = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get(RELEASE)
        .await
        .expect("the validating webhook configuration");
    let mut all: Vec<Vec<u8>> = Vec::new();
    for w in m.webhooks.unwrap_or_default() {
        all.push(w.client_config.ca_bundle.map(|b| b.0).unwrap_or_default());
    }
    for w in v.webhooks.unwrap_or_default() {
        all.push(w.client_config.ca_bundle.map(|b| b.0).unwrap_or_default());
    }
    all
}

async fn secret_data(client: &Client) -> BTreeMap<String, Vec<u8>> {
    Api::<Secret>::namespaced(client.clone(), RELEASE_NS)
        .get_opt(SECRET)
        .await
        .expect("read the TLS Secret")
        .and_then(|s| s.data)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

fn ders(pem: &[u8]) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem)
        .map(|c| c.expect("a PEM certificate").to_vec())
        .collect()
}

/// The certificate `addr` serves, if a client trusting only `roots` (PEM)
/// accepts it for 127.0.0.1, the name the API server calls. A full
/// handshake every time: a resumed session would show no certificate.
async fn served(addr: SocketAddr, roots: &[u8]) -> Result<Vec<u8>, String> {
    let mut store = RootCertStore::empty();
    for der in ders(roots) {
        store
            .add(CertificateDer::from(der))
            .map_err(|e| e.to_string())?;
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(store)
            .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").expect("a name");
    let tls = tokio::time::timeout(
        Duration::from_secs(5),
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    let (_, session) = tls.get_ref();
    session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or_else(|| "no peer certificate".to_owned())
}

/// A kubeconfig that authenticates with `token` and trusts the test CA.
fn token_kubeconfig(cp: &ControlPlane, token: &str, path: &Path) {
    let admin: Value = serde_saphyr::from_str(&std::fs::read_to_string(&cp.kubeconfig).unwrap())
        .expect("the admin kubeconfig");
    let url = admin["clusters"][0]["cluster"]["server"]
        .as_str()
        .expect("a server");
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster: {{server: \"{url}\", certificate-authority: \"{}\"}}\n\
             users:\n- name: sa\n  user: {{token: \"{token}\"}}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: sa}}\ncurrent-context: e2e\n",
            cp.pki.ca_cert.display()
        ),
    )
    .unwrap();
}

/// One replica: the chart's container as the kubelet would run it, on this
/// host.
struct Replica {
    proc: Proc,
    webhook: SocketAddr,
    health: SocketAddr,
}

impl Replica {
    async fn metrics(&self) -> String {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
            .get(format!("http://{}/metrics", self.health))
            .send()
            .await
            .expect("/metrics")
            .text()
            .await
            .unwrap()
    }

    async fn readyz(&self) -> (u16, String) {
        let resp = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap()
            .get(format!("http://{}/readyz", self.health))
            .send()
            .await;
        match resp {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.proc.pid()).unwrap();
        // SAFETY: kill only sends a signal to our own child.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Starts the Deployment's container (`deployment`, as the API server
/// stores it) on this host: its arguments, but for the listeners (on
/// `webhook` and `health`) and the config file's path, its environment,
/// and `extra` arguments.
fn start_replica(
    dir: &Path,
    name: &str,
    deployment: &Deployment,
    config: &Path,
    (webhook, health): (SocketAddr, SocketAddr),
    extra: &[String],
) -> Replica {
    let container = &deployment.spec.template.spec.as_ref().unwrap().containers[0];
    let mut args: Vec<String> = container
        .args
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|a| {
            if a.starts_with("--listen=") {
                format!("--listen={webhook}")
            } else if a.starts_with("--config=") {
                format!("--config={}", config.display())
            } else {
                a
            }
        })
        .collect();
    args.push(format!("--health-listen={health}"));
    args.extend_from_slice(extra);
    let env: Vec<(String, String)> = container
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect();
    let proc = Proc::spawn_with_env(
        name,
        &support::issuer_guard_bin(),
        &args,
        &env,
        dir.join(format!("{name}.log")),
    );
    Replica {
        proc,
        webhook,
        health,
    }
}

fn probe_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "probe-"},
        "spec": {"containers": [{"name": "c", "image": "registry.e2e.example/app:1"}]}
    })
}

/// `helm ARGS` as support::chart::helm runs it, but killed, failing the
/// test, after a minute: a helm that hangs says so.
async fn helm_within(home: &Path, args: &[&str]) -> std::process::Output {
    let (out, err) = (home.join("helm.stdout"), home.join("helm.stderr"));
    let mut child = std::process::Command::new(&support::binaries::get().helm)
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("run helm");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for helm") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "helm {args:?} did not finish within a minute:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    std::process::Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    }
}

/// Sums a counter over the replicas.
async fn total(replicas: &[Replica], series: &str) -> f64 {
    let mut sum = 0.0;
    for r in replicas {
        sum += sample(&r.metrics().await, series).unwrap_or(0.0);
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_make_and_rotate_their_own_ca_while_pods_are_created() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cp = ControlPlane::start(ServiceAccountFlags::issuer(ISSUER)).await;
    let home = cp.dir().join("helm");
    let dir = cp.dir().join("replicas");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    Api::<Namespace>::all(cp.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": RELEASE_NS}})).unwrap(),
        )
        .await
        .expect("create the release namespace");

    // Two replicas behind one address, as behind the Service: the relay
    // sends each new connection to a replica whose /readyz says 200.
    let ports: Vec<(SocketAddr, SocketAddr)> = (0..2).map(|_| (loopback(), loopback())).collect();
    let relay = Relay::start(&ports).await;

    // Both webhooks fail closed, so any call the API server cannot make
    // (TLS included) fails the create instead of passing unstamped.
    let values = home.join("values.yaml");
    std::fs::write(
        &values,
        format!(
            "image:\n  repository: {IMAGE_REPOSITORY}\nreplicas: 2\nwebhook:\n  urlOverride: \"https://{}\"\n  mutating: {{failurePolicy: Fail}}\n  validating: {{failurePolicy: Fail}}\n{SELF_VALUES}",
            relay.addr
        ),
    )
    .unwrap();
    let values = values.to_str().unwrap().to_owned();
    let kubeconfig = cp.kubeconfig.to_str().unwrap().to_owned();
    let base = [
        "--kubeconfig",
        kubeconfig.as_str(),
        "--namespace",
        RELEASE_NS,
        "-f",
        values.as_str(),
    ];
    let mut args = vec!["install", RELEASE, CHART];
    args.extend_from_slice(&base);
    let notes = ok(&helm_within(&home, &args).await, "helm install");
    assert!(notes.contains(&format!("Secret \"{SECRET}\"")), "{notes}");
    let timeline: Timeline = Arc::default();
    let watches = record(&cp.client, &timeline);
    // Registered with no caBundle: nothing is trusted until issuer-guard
    // has made its CA.
    assert!(
        ca_bundles(&cp.client).await.iter().all(Vec::is_empty),
        "the chart rendered a caBundle"
    );

    // What the pods would run with, read back from the API server.
    let deployment = Api::<Deployment>::namespaced(cp.client.clone(), RELEASE_NS)
        .get(RELEASE)
        .await
        .expect("the chart's Deployment");
    let config_map = Api::<ConfigMap>::namespaced(cp.client.clone(), RELEASE_NS)
        .get("issuer-guard-config")
        .await
        .expect("the chart's ConfigMap");
    let config = dir.join("config.yaml");
    write_atomically(&config, &config_map.data.unwrap()["config.yaml"]);
    let token = {
        let accounts: Api<ServiceAccount> = Api::namespaced(cp.client.clone(), RELEASE_NS);
        let req =
            serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))
                .unwrap();
        let resp = accounts
            .create_token_request(RELEASE, &PostParams::default(), &req)
            .await
            .expect("a token for the chart's ServiceAccount");
        resp.status.expect("a token").token.expect("a token")
    };
    let sa_kubeconfig = dir.join("sa.kubeconfig");
    token_kubeconfig(&cp, &token, &sa_kubeconfig);
    let kubeconfig_arg = format!("--kubeconfig={}", sa_kubeconfig.display());

    let mut replicas: Vec<Replica> = Vec::new();
    for (i, ports) in ports.iter().enumerate() {
        replicas.push(start_replica(
            &dir,
            &format!("issuer-guard-{i}"),
            &deployment,
            &config,
            *ports,
            std::slice::from_ref(&kubeconfig_arg),
        ));
    }
    for r in &mut replicas {
        let health = r.health.to_string();
        r.proc.wait_ready(&health).await;
    }

    // Ready means: the Secret exists, every caBundle carries its bundle,
    // and that bundle verifies what each replica serves.
    let data = secret_data(&cp.client).await;
    let first_ca = data["ca.crt"].clone();
    assert_eq!(
        ders(&data["ca-bundle.crt"]),
        ders(&first_ca),
        "a fresh install trusts one CA"
    );
    for bundle in ca_bundles(&cp.client).await {
        assert_eq!(ders(&bundle), ders(&first_ca));
    }
    for r in &replicas {
        let leaf = served(r.webhook, &first_ca)
            .await
            .expect("served, chaining to the CA");
        assert_eq!(leaf, ders(&data["tls.crt"])[0], "the Secret's certificate");
    }
    // The API server calls them over TLS.
    let stamped = eventually("a dry-run Pod stamped", Duration::from_secs(30), || async {
        let c = api::create::<Pod>(&cp.client, &probe_pod(), true).await;
        c.body["metadata"]["labels"][GENERATION_LABEL]
            .is_string()
            .then_some(c)
    })
    .await;
    assert_eq!(stamped.status, 201, "{:?}", stamped.body);

    // A `helm upgrade` and a server-side apply of the rendered
    // configurations (how Argo CD syncs) leave the caBundle as it is. The
    // replicas are frozen meanwhile, so that none could put it back.
    let updates_before = total(&replicas, "issuer_guard_tls_ca_bundle_updates_total").await;
    for r in &replicas {
        r.signal(libc::SIGSTOP);
    }
    let before = ca_bundles(&cp.client).await;
    let mut args = vec![
        "upgrade",
        RELEASE,
        CHART,
        "--set",
        "webhook.timeoutSeconds=10",
    ];
    args.extend_from_slice(&base);
    ok(&helm_within(&home, &args).await, "helm upgrade");
    assert_eq!(
        ca_bundles(&cp.client).await,
        before,
        "helm upgrade changed the caBundle"
    );
    let v = Api::<ValidatingWebhookConfiguration>::all(cp.client.clone())
        .get(RELEASE)
        .await
        .unwrap();
    assert_eq!(
        v.webhooks.unwrap()[0].timeout_seconds,
        Some(10),
        "the upgrade applied"
    );
    let rendered = chart::objects(&ok(
        &helm(
            &home,
            &[
                "template",
                RELEASE,
                CHART,
                "--namespace",
                RELEASE_NS,
                "-f",
                &values,
                "--set",
                "webhook.timeoutSeconds=12",
                "--show-only",
                "templates/webhooks.yaml",
            ],
        ),
        "helm template",
    ));
    let apply = PatchParams::apply("argocd-controller").force();
    for object in &rendered {
        let name = object["metadata"]["name"].as_str().unwrap();
        if object["kind"] == "MutatingWebhookConfiguration" {
            Api::<MutatingWebhookConfiguration>::all(cp.client.clone())
                .patch(name, &apply, &Patch::Apply(object))
                .await
                .expect("server-side apply of the mutating configuration");
        } else {
            Api::<ValidatingWebhookConfiguration>::all(cp.client.clone())
                .patch(name, &apply, &Patch::Apply(object))
                .await
                .expect("server-side apply of the validating configuration");
        }
    }
    assert_eq!(
        ca_bundles(&cp.client).await,
        before,
        "a server-side apply changed the caBundle"
    );
    for r in &replicas {
        r.signal(libc::SIGCONT);
    }

    // Pods created every 75 ms through both fail-closed webhooks, while a
    // checker makes sure, every 250 ms, that every caBundle verifies what
    // each replica serves (the invariant the rotation keeps).
    let stop = Arc::new(AtomicBool::new(false));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let load = {
        let (client, stop, failures) = (cp.client.clone(), stop.clone(), failures.clone());
        tokio::spawn(async move {
            let mut made = 0u32;
            while !stop.load(Ordering::Acquire) {
                let c = api::create::<Pod>(&client, &probe_pod(), true).await;
                made += 1;
                if c.status != 201 || !c.body["metadata"]["labels"][GENERATION_LABEL].is_string() {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{}: {}", c.status, c.body));
                }
                tokio::time::sleep(Duration::from_millis(75)).await;
            }
            made
        })
    };
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let checker = {
        let (client, stop, violations) = (cp.client.clone(), stop.clone(), violations.clone());
        let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.webhook).collect();
        tokio::spawn(async move {
            let mut checks = 0u32;
            while !stop.load(Ordering::Acquire) {
                let bundles = ca_bundles(&client).await;
                for (i, addr) in addrs.iter().enumerate() {
                    for bundle in &bundles {
                        if let Err(e) = served(*addr, bundle).await {
                            violations
                                .lock()
                                .unwrap()
                                .push(format!("replica {i}: a caBundle does not verify it: {e}"));
                        }
                    }
                }
                checks += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            checks
        })
    };

    // The rotation: the first CA leaves the Secret and every caBundle, and
    // both replicas serve a certificate that chains to the new one.
    let relay_drops_before = relay.dropped.lock().unwrap().len();
    let rotated = eventually(
        "the first CA rotated out",
        Duration::from_secs(120),
        || async {
            let data = secret_data(&cp.client).await;
            let ca = data.get("ca.crt")?.clone();
            let gone = ca != first_ca
                && !data.contains_key("previous-ca.crt")
                && ders(&data["ca-bundle.crt"])
                    .iter()
                    .all(|c| *c != ders(&first_ca)[0]);
            if !gone {
                return None;
            }
            let bundles = ca_bundles(&cp.client).await;
            if !bundles
                .iter()
                .all(|b| !ders(b).contains(&ders(&first_ca)[0]))
            {
                return None;
            }
            for r in &replicas {
                served(r.webhook, &ca).await.ok()?;
            }
            Some(ca)
        },
    )
    .await;
    stop.store(true, Ordering::Release);

    // The order of the rotation as the API server saw it: the new CA was
    // in both caBundles well before it signed the served certificate, and
    // the old one left them only well after.
    let (old, new) = (ders(&first_ca).remove(0), ders(&rotated).remove(0));
    let seen = timeline.lock().unwrap().clone();
    for watch in &watches {
        watch.abort();
    }
    let trusted_new = first(&seen, |s| s.trusted(&new)).expect("the new CA trusted");
    let signing_new =
        first(&seen, |s| s.signer.as_ref() == Some(&new)).expect("the new CA signing");
    let old_gone = first(&seen, |s| {
        s.signer.as_ref() == Some(&new) && s.trusted_nowhere(&old)
    })
    .expect("the old CA gone");
    assert!(
        signing_new >= trusted_new + OVERLAP / 2,
        "the new CA signed {:?} after both caBundles trusted it; the overlap is {OVERLAP:?}",
        signing_new.checked_duration_since(trusted_new)
    );
    assert!(
        old_gone >= signing_new + OVERLAP / 2,
        "the old CA left the caBundles {:?} after the new one signed; the overlap is {OVERLAP:?}",
        old_gone.checked_duration_since(signing_new)
    );
    let made = load.await.unwrap();
    let checks = checker.await.unwrap();

    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {made} Pod creations failed during the rotation: {failures:#?}",
        failures.len()
    );
    let violations = violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(
        made >= 50 && checks >= 20,
        "made {made} Pods, {checks} checks"
    );
    let drops = relay.dropped.lock().unwrap().len() - relay_drops_before;
    assert_eq!(drops, 0, "connections found no ready replica");
    for bundle in ca_bundles(&cp.client).await {
        assert!(
            !ders(&bundle).contains(&ders(&first_ca)[0]),
            "the old CA is still trusted"
        );
    }
    for r in &replicas {
        served(r.webhook, &rotated)
            .await
            .expect("chains to the new CA");
        assert!(
            served(r.webhook, &first_ca).await.is_err(),
            "a replica still serves a certificate of the first CA"
        );
    }

    // Each step was taken once, by one replica or the other; the caBundle
    // of both configurations changed for the new CA and again without the
    // old one.
    for step in ["create", "stage", "published", "switch", "drop"] {
        let n = total(
            &replicas,
            &format!("issuer_guard_tls_rotation_steps_total{{step=\"{step}\"}}"),
        )
        .await;
        assert!(n >= 1.0, "step {step}: {n}");
    }
    assert!(
        total(
            &replicas,
            "issuer_guard_tls_rotation_steps_total{step=\"renew\"}"
        )
        .await
            >= 1.0
    );
    let updates = total(&replicas, "issuer_guard_tls_ca_bundle_updates_total").await;
    assert!(
        updates - updates_before >= 4.0,
        "caBundle updates: {updates_before} then {updates}"
    );
    for r in &replicas {
        let m = r.metrics().await;
        let ca_end = sample(&m, "issuer_guard_tls_ca_not_after_timestamp_seconds").unwrap();
        let cert_end = sample(&m, "issuer_guard_tls_cert_not_after_timestamp_seconds").unwrap();
        assert!(
            ca_end > 0.0 && cert_end > 0.0 && cert_end <= ca_end,
            "{ca_end} {cert_end}"
        );
    }
    eprintln!("{made} Pods created and {checks} checks during the rotation, none failed");

    // A Secret deleted while the replicas run comes back from what they
    // serve: the CA every caBundle trusts is still the one that signs.
    let secrets = Api::<Secret>::namespaced(cp.client.clone(), RELEASE_NS);
    let signing = secret_data(&cp.client).await["ca.crt"].clone();
    secrets
        .delete(SECRET, &Default::default())
        .await
        .expect("delete the TLS Secret");
    let back = eventually("the TLS Secret back", Duration::from_secs(30), || async {
        let data = secret_data(&cp.client).await;
        data.contains_key("ca-bundle.crt").then_some(data)
    })
    .await;
    assert!(
        ders(&back["ca-bundle.crt"]).contains(&ders(&signing)[0]),
        "the Secret came back with another CA"
    );
    assert!(
        total(
            &replicas,
            "issuer_guard_tls_rotation_steps_total{step=\"restore\"}"
        )
        .await
            >= 1.0
    );
    let created = api::create::<Pod>(&cp.client, &probe_pod(), true).await;
    assert!(
        created.body["metadata"]["labels"][GENERATION_LABEL].is_string(),
        "{:?}",
        created.body
    );

    // The chart's grants, with its ServiceAccount's token: nothing beside
    // the Secret and the two configurations it names.
    let sa = {
        let kc = kube::config::Kubeconfig::read_from(&sa_kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        Client::try_from(config).unwrap()
    };
    let forbidden = |what: &str, code: Option<u16>| {
        assert_eq!(code, Some(403), "{what}: expected 403 Forbidden");
    };
    let code = |r: Result<_, kube::Error>| match r {
        Err(kube::Error::Api(e)) => Some(e.code),
        Ok(()) => None,
        Err(e) => panic!("{e}"),
    };
    let sa_secrets = Api::<Secret>::namespaced(sa.clone(), RELEASE_NS);
    sa_secrets.get(SECRET).await.expect("its own Secret");
    forbidden(
        "reading the chart's other Secrets",
        code(
            sa_secrets
                .get("sh.helm.release.v1.issuer-guard.v1")
                .await
                .map(|_| ()),
        ),
    );
    forbidden(
        "deleting its Secret",
        code(
            sa_secrets
                .delete(SECRET, &Default::default())
                .await
                .map(|_| ()),
        ),
    );
    let bundle_patch = Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}));
    Api::<ValidatingWebhookConfiguration>::all(sa.clone())
        .patch(RELEASE, &PatchParams::default(), &bundle_patch)
        .await
        .expect("patch its own configuration");
    let someone_elses: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": "someone-else"},
        "webhooks": [{
            "name": "else.example.com",
            "clientConfig": {"url": "https://127.0.0.1:1/x"},
            "objectSelector": {"matchLabels": {"issuer-guard.io/never": "true"}},
            "sideEffects": "None", "admissionReviewVersions": ["v1"], "failurePolicy": "Ignore",
        }]
    }))
    .unwrap();
    Api::<ValidatingWebhookConfiguration>::all(cp.client.clone())
        .create(&PostParams::default(), &someone_elses)
        .await
        .unwrap();
    forbidden(
        "patching another webhook configuration",
        code(
            Api::<ValidatingWebhookConfiguration>::all(sa.clone())
                .patch("someone-else", &PatchParams::default(), &bundle_patch)
                .await
                .map(|_| ()),
        ),
    );
    let own = Api::<ValidatingWebhookConfiguration>::all(sa.clone())
        .get(RELEASE)
        .await
        .unwrap();
    forbidden(
        "replacing its configuration (update)",
        code(
            Api::<ValidatingWebhookConfiguration>::all(sa.clone())
                .replace(RELEASE, &PostParams::default(), &own)
                .await
                .map(|_| ()),
        ),
    );

    // Readiness waits for the caBundle: a replica whose configurations do
    // not exist yet makes and serves its Secret's pair, but is not ready
    // until both exist and carry a bundle that verifies it.
    let lone = start_replica(
        &dir,
        "issuer-guard-lone",
        &deployment,
        &config,
        (loopback(), loopback()),
        &[
            format!("--kubeconfig={}", cp.kubeconfig.display()),
            "--tls-secret=issuer-guard/lone-self-tls".to_owned(),
            "--webhook-configurations=lone".to_owned(),
        ],
    );
    let lone_secret = eventually(
        "the lone replica's Secret",
        Duration::from_secs(30),
        || async {
            Api::<Secret>::namespaced(cp.client.clone(), RELEASE_NS)
                .get_opt("lone-self-tls")
                .await
                .unwrap()
        },
    )
    .await;
    let lone_ca = lone_secret.data.unwrap()["ca.crt"].0.clone();
    eventually(
        "the lone replica to serve its Secret's pair",
        Duration::from_secs(30),
        || async { served(lone.webhook, &lone_ca).await.ok() },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, reasons) = lone.readyz().await;
    assert_eq!(status, 503, "{reasons}");
    assert!(reasons.contains("caBundle"), "{reasons}");
    let lone_config = |kind: &str| -> Value {
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
            "metadata": {"name": "lone"},
            "webhooks": [{
                "name": "lone.issuer-guard.io",
                "clientConfig": {"url": format!("https://{}/validate", lone.webhook)},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}],
                // Called for nothing: only the caBundle matters here.
                "objectSelector": {"matchLabels": {"issuer-guard.io/never": "true"}},
                "sideEffects": "None", "admissionReviewVersions": ["v1"], "failurePolicy": "Ignore",
            }]
        })
    };
    Api::<MutatingWebhookConfiguration>::all(cp.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(lone_config("MutatingWebhookConfiguration")).unwrap(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        lone.readyz().await.0,
        503,
        "ready with one configuration missing"
    );
    Api::<ValidatingWebhookConfiguration>::all(cp.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(lone_config("ValidatingWebhookConfiguration")).unwrap(),
        )
        .await
        .unwrap();
    eventually(
        "the lone replica ready",
        Duration::from_secs(60),
        || async { (lone.readyz().await.0 == 200).then_some(()) },
    )
    .await;
    let v = Api::<ValidatingWebhookConfiguration>::all(cp.client.clone())
        .get("lone")
        .await
        .unwrap();
    let bundle = v.webhooks.unwrap()[0]
        .client_config
        .ca_bundle
        .clone()
        .unwrap()
        .0;
    served(lone.webhook, &bundle)
        .await
        .expect("its caBundle verifies it");
}

/// `--tls-secret` beside a certificate from files, or without what it
/// needs, is refused at start-up with a message that says what to change,
/// whether the flags come from the command line or the environment.
#[test]
fn conflicting_tls_flags_are_start_up_errors_that_say_what_to_change() {
    let run = |args: &[&str], env: &[(&str, &str)]| -> String {
        let out = std::process::Command::new(support::issuer_guard_bin())
            .arg("serve")
            .args(["--listen=127.0.0.1:0", "--health-listen=127.0.0.1:0"])
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .expect("run issuer-guard");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{args:?} {env:?} started:\n{text}");
        text
    };
    let complete = [
        "--tls-secret=issuer-guard/issuer-guard-self-tls",
        "--webhook-configurations=issuer-guard",
        "--tls-names=issuer-guard.issuer-guard.svc",
    ];
    let with_files = [
        &complete[..],
        &["--tls-cert=/x/tls.crt", "--tls-key=/x/tls.key"],
    ]
    .concat();
    let said = run(&with_files, &[]);
    assert!(said.contains("drop --tls-cert and --tls-key"), "{said}");
    let said = run(
        &complete,
        &[
            ("ISSUER_GUARD_TLS_CERT", "/x/tls.crt"),
            ("ISSUER_GUARD_TLS_KEY", "/x/tls.key"),
        ],
    );
    assert!(said.contains("drop --tls-cert and --tls-key"), "{said}");
    let said = run(&[&complete[..], &["--no-cluster"]].concat(), &[]);
    assert!(said.contains("needs an API server"), "{said}");
    let said = run(
        &["--webhook-configurations=issuer-guard", "--no-cluster"],
        &[],
    );
    assert!(
        said.contains("--webhook-configurations is only used with --tls-secret"),
        "{said}"
    );
}
