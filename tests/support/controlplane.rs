//! etcd, kube-apiserver and kube-controller-manager for one test, on free
//! loopback ports with a generated PKI. No kubelet or scheduler: Pods stay
//! Pending, and admission is what the tests observe.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, LazyLock},
    time::Duration,
};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::{
    Api, Client,
    api::PostParams,
    config::{KubeConfigOptions, Kubeconfig},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{
    Deadline, NS, binaries,
    pki::{Pki, SaKey},
    process::{Proc, free_port},
};

const SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/24";
/// The first address of the range: the `kubernetes` Service's ClusterIP.
const SERVICE_IP: &str = "10.0.0.1";
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// The controllers the scenarios need: workload controllers that create
/// Pods (StatefulSets and DaemonSets included, which `restart` rolls), the
/// disruption controller (without it every eviction a PodDisruptionBudget
/// covers is refused, and a budget test would pass for the wrong reason),
/// the service-account controllers that make `default` and fill legacy
/// token Secrets, the root CA publisher for kube-root-ca.crt, and the
/// garbage collector, which deletes objects whose controlling owner is gone.
const CONTROLLERS: &str = "serviceaccount-controller,serviceaccount-token-controller,\
root-ca-certificate-publisher-controller,replicaset-controller,\
replicationcontroller-controller,deployment-controller,statefulset-controller,\
daemonset-controller,disruption-controller,job-controller,cronjob-controller,\
garbage-collector-controller";

/// How many control planes run at once in one test process. Each
/// kube-apiserver start costs several CPU-seconds; on a small machine,
/// starting all of them together makes every start slower than the timeouts.
fn concurrency() -> usize {
    std::env::var("ISSUER_GUARD_E2E_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3)
}

static SLOTS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(concurrency())));

/// The API server's service-account flags: what a rotation changes.
#[derive(Debug, Clone)]
pub struct ServiceAccountFlags {
    /// `--service-account-issuer`, in order: the first one signs.
    pub issuers: Vec<String>,
    /// `--service-account-key-file`: every key that verifies.
    pub verifying: Vec<SaKey>,
    /// `--service-account-signing-key-file`.
    pub signing: SaKey,
    /// `--api-audiences`; empty leaves the default (the issuers).
    pub api_audiences: Vec<String>,
}

impl ServiceAccountFlags {
    /// One issuer, signing and verifying with key A.
    pub fn issuer(issuer: &str) -> Self {
        Self::issuers(&[issuer])
    }

    pub fn issuers(issuers: &[&str]) -> Self {
        Self {
            issuers: issuers.iter().map(|i| i.to_string()).collect(),
            verifying: vec![SaKey::A],
            signing: SaKey::A,
            api_audiences: Vec::new(),
        }
    }
}

pub struct ControlPlane {
    // Fields drop in order: the processes go before the directory they
    // write into.
    kcm: Option<Proc>,
    /// API servers started by [`ControlPlane::start_second_apiserver`].
    extra_apiservers: Vec<(u16, Proc)>,
    apiserver: Proc,
    etcd: Proc,
    /// The API server as the admin user.
    pub client: Client,
    pub pki: Pki,
    pub kubeconfig: PathBuf,
    etcd_port: u16,
    apiserver_port: u16,
    restarts: u32,
    dir: tempfile::TempDir,
    _slot: OwnedSemaphorePermit,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver with `flags` and kube-controller-manager
    /// signing legacy tokens with key A, and creates the namespace [`NS`]
    /// with its `default` ServiceAccount.
    pub async fn start(flags: ServiceAccountFlags) -> ControlPlane {
        let bins = binaries::get();
        let slot = SLOTS.clone().acquire_owned().await.expect("semaphore open");
        let dir = tempfile::Builder::new()
            .prefix("issuer-guard-e2e-")
            .tempdir()
            .expect("create a temp dir");
        let root = dir.path();
        let pki = Pki::generate(&root.join("pki"), SERVICE_IP);

        let (etcd_port, peer_port) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = Proc::spawn(
            "etcd",
            &bins.etcd,
            &[
                "--name=e2e".into(),
                format!("--data-dir={}", root.join("etcd").display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=e2e={peer_url}"),
                // Test data need not survive a power cut; fsync dominates
                // etcd's latency on shared disks.
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
            root.join("etcd.log"),
        );

        let apiserver_port = free_port();
        let kubeconfig = root.join("admin.kubeconfig");
        pki.write_kubeconfig(&kubeconfig, &format!("https://127.0.0.1:{apiserver_port}"));
        let args = apiserver_args(root, &pki, etcd_port, apiserver_port, &flags);
        let apiserver = Proc::spawn(
            "kube-apiserver",
            &bins.kube_apiserver,
            &args,
            root.join("kube-apiserver.log"),
        );
        let client = admin_client(&kubeconfig).await;
        let mut cp = ControlPlane {
            kcm: None,
            extra_apiservers: Vec::new(),
            apiserver,
            etcd,
            client,
            pki,
            kubeconfig,
            etcd_port,
            apiserver_port,
            restarts: 0,
            dir,
            _slot: slot,
        };
        cp.wait_ready().await;
        cp.restart_controller_manager(SaKey::A);

        let namespaces: Api<Namespace> = Api::all(cp.client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": NS}}))
            .expect("a Namespace");
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("create the test namespace");
        // The ServiceAccount admission plugin refuses Pods until their
        // service account exists, and the controller makes it.
        cp.wait_for_service_account("default").await;
        cp
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The port of the API server that `client` and `kubeconfig` reach.
    pub fn apiserver_port(&self) -> u16 {
        self.apiserver_port
    }

    /// Starts one more kube-apiserver, on a new port, against the same etcd
    /// and with the same PKI and serving certificate, but with `flags` of
    /// its own: two API servers configured differently are what clients
    /// meet while a control plane is rolled one server at a time. Returns
    /// its port once its /readyz answers ok. It stops with the control
    /// plane or at [`ControlPlane::stop_second_apiservers`].
    pub async fn start_second_apiserver(&mut self, flags: ServiceAccountFlags) -> u16 {
        let port = free_port();
        self.start_extra(port, flags).await;
        port
    }

    /// Restarts the second API server on `port` with other flags: one step
    /// of a roll, one server at a time.
    pub async fn restart_second_apiserver(&mut self, port: u16, flags: ServiceAccountFlags) {
        // The old process must release the port before the new one binds it.
        self.extra_apiservers.retain(|(p, _)| *p != port);
        self.start_extra(port, flags).await;
    }

    async fn start_extra(&mut self, port: u16, flags: ServiceAccountFlags) {
        // apiserver_args puts --cert-dir under the directory it is given; a
        // directory per server keeps two of them from writing the same files.
        // Named by port, so a server started after a stop has its own too.
        let root = self.dir.path().join(format!("apiserver-{port}"));
        std::fs::create_dir_all(&root).expect("create the second API server's directory");
        let args = apiserver_args(&root, &self.pki, self.etcd_port, port, &flags);
        // One log per start: a restarted server's first log is kept.
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let log = self
            .dir
            .path()
            .join(format!("kube-apiserver-{port}.{started}.log"));
        let kubeconfig = root.join("admin.kubeconfig");
        self.pki
            .write_kubeconfig(&kubeconfig, &format!("https://127.0.0.1:{port}"));
        self.extra_apiservers.push((
            port,
            Proc::spawn(
                "kube-apiserver",
                &binaries::get().kube_apiserver,
                &args,
                log,
            ),
        ));
        let client = admin_client(&kubeconfig).await;
        let deadline = Deadline::new(format!("kube-apiserver :{port} /readyz"), START_TIMEOUT);
        loop {
            self.extra_apiservers
                .last_mut()
                .expect("the server just started")
                .1
                .assert_running();
            self.etcd.assert_running();
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("a request");
            if let Ok(body) = client.request_text(req).await
                && body.trim() == "ok"
            {
                return;
            }
            deadline.tick().await;
        }
    }

    /// Kills every API server [`ControlPlane::start_second_apiserver`]
    /// started: the end of a roll.
    pub fn stop_second_apiservers(&mut self) {
        self.extra_apiservers.clear();
    }

    /// Restarts kube-apiserver on the same port with other service-account
    /// flags, keeping etcd and its data: one step of a rotation.
    pub async fn restart_apiserver(&mut self, flags: ServiceAccountFlags) {
        self.restarts += 1;
        let args = apiserver_args(
            self.dir.path(),
            &self.pki,
            self.etcd_port,
            self.apiserver_port,
            &flags,
        );
        let log = self
            .dir
            .path()
            .join(format!("kube-apiserver.{}.log", self.restarts));
        // The old process must release the port before the new one binds it.
        self.apiserver.stop();
        self.apiserver = Proc::spawn(
            "kube-apiserver",
            &binaries::get().kube_apiserver,
            &args,
            log,
        );
        self.wait_ready().await;
    }

    /// Kills kube-apiserver, leaving etcd and the controller-manager up, as
    /// an API server that cannot be reached; `restart_apiserver` brings it
    /// back.
    pub fn stop_apiserver(&mut self) {
        self.apiserver.stop();
    }

    /// (Re)starts kube-controller-manager with `key` as
    /// `--service-account-private-key-file`, the key of new legacy tokens.
    pub fn restart_controller_manager(&mut self, key: SaKey) {
        self.restarts += 1;
        drop(self.kcm.take());
        let root = self.dir.path();
        let args = vec![
            format!("--kubeconfig={}", self.kubeconfig.display()),
            format!(
                "--service-account-private-key-file={}",
                self.pki.sa_key(key).private.display()
            ),
            format!("--root-ca-file={}", self.pki.ca_cert.display()),
            "--leader-elect=false".into(),
            format!("--controllers={CONTROLLERS}"),
            "--secure-port=0".into(),
            // Controllers act as the admin; RBAC for per-controller
            // service accounts is not what these tests are about.
            "--use-service-account-credentials=false".into(),
        ];
        self.kcm = Some(Proc::spawn(
            "kube-controller-manager",
            &binaries::get().kube_controller_manager,
            &args,
            root.join(format!("kube-controller-manager.{}.log", self.restarts)),
        ));
    }

    pub async fn wait_for_service_account(&mut self, name: &str) -> ServiceAccount {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), NS);
        let deadline = Deadline::new(format!("ServiceAccount {NS}/{name}"), START_TIMEOUT);
        loop {
            if let Some(kcm) = self.kcm.as_mut() {
                kcm.assert_running();
            }
            if let Ok(Some(sa)) = accounts.get_opt(name).await {
                return sa;
            }
            deadline.tick().await;
        }
    }

    /// Waits until /readyz answers ok to the admin client.
    async fn wait_ready(&mut self) {
        let deadline = Deadline::new("kube-apiserver /readyz", START_TIMEOUT);
        loop {
            self.apiserver.assert_running();
            self.etcd.assert_running();
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("a request");
            if let Ok(body) = self.client.request_text(req).await
                && body.trim() == "ok"
            {
                return;
            }
            deadline.tick().await;
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep every log and the PKI for a post-mortem.
            self.dir.disable_cleanup(true);
            eprintln!("control-plane files kept in {}", self.dir.path().display());
        }
    }
}

fn apiserver_args(
    root: &Path,
    pki: &Pki,
    etcd_port: u16,
    port: u16,
    flags: &ServiceAccountFlags,
) -> Vec<String> {
    let key = |k| pki.sa_key(k);
    let mut args = vec![
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
        format!("--cert-dir={}", root.join("apiserver-certs").display()),
        format!("--tls-cert-file={}", pki.apiserver.cert.display()),
        format!("--tls-private-key-file={}", pki.apiserver.key.display()),
        format!("--client-ca-file={}", pki.ca_cert.display()),
        "--authorization-mode=RBAC".into(),
        format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
        format!(
            "--service-account-signing-key-file={}",
            key(flags.signing).private.display()
        ),
        // A loopback address cannot be a Service endpoint, so the default
        // reconciler would only log errors.
        "--endpoint-reconciler-type=none".into(),
        "--profiling=false".into(),
    ];
    args.extend(audit_args(root));
    args.extend(
        flags
            .issuers
            .iter()
            .map(|i| format!("--service-account-issuer={i}")),
    );
    args.extend(
        flags
            .verifying
            .iter()
            .map(|k| format!("--service-account-key-file={}", key(*k).public.display())),
    );
    if !flags.api_audiences.is_empty() {
        args.push(format!("--api-audiences={}", flags.api_audiences.join(",")));
    }
    args
}

/// What the API server's audit log keeps: the TokenRequests it answered
/// (the request, not the token it returned), and nothing else, so that a
/// test can see the audience and lifetime of the tokens issuer-guard mints
/// for itself.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Request
    verbs: [create]
    resources: [{group: \"\", resources: [serviceaccounts/token]}]
  - level: None
";

/// The audit flags of an API server writing under `root`; the log is
/// appended to across restarts.
fn audit_args(root: &Path) -> Vec<String> {
    let policy = root.join("audit-policy.yaml");
    std::fs::write(&policy, AUDIT_POLICY).expect("write the audit policy");
    vec![
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", root.join("audit.log").display()),
        "--audit-log-format=json".into(),
    ]
}

impl ControlPlane {
    /// Writes a kubeconfig at `path` for this API server that authenticates
    /// with the bearer `token` (a ServiceAccount's, say) and trusts the
    /// test CA, and returns a client made from it.
    pub async fn token_client(&self, token: &str, path: &Path) -> Client {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster: {{server: \"https://127.0.0.1:{port}\", certificate-authority: \"{ca}\"}}\n\
                 users:\n- name: token\n  user: {{token: \"{token}\"}}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: token}}\ncurrent-context: e2e\n",
                port = self.apiserver_port,
                ca = self.pki.ca_cert.display(),
            ),
        )
        .expect("write a token kubeconfig");
        admin_client(path).await
    }

    /// The TokenRequests the API server (the first one, across its
    /// restarts) has answered so far, as audit events: `user.username`, the
    /// `objectRef` of the ServiceAccount, the `requestObject` (its `spec`
    /// with `audiences` and `expirationSeconds`) and
    /// `responseStatus.code`.
    pub fn token_requests(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.path().join("audit.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["objectRef"]["subresource"] == "token")
            .collect()
    }
}

/// A client from the kubeconfig file at `kubeconfig`.
async fn admin_client(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("read a kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("a client config from a kubeconfig");
    Client::try_from(config).expect("a client")
}
