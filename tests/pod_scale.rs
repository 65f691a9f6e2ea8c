//! `issuer-guard inventory` and `issuer-guard status` in a cluster with many
//! pods, on the real API server: pods created for real (no dry run) in four
//! shapes, a hundred to a namespace, then the inventory's time to /readyz
//! and its memory, and `status -A -o json`'s run time and peak memory, each
//! beside `kubectl get pods -A -o json` on the same cluster when `KUBECTL`
//! names a kubectl (scripts/build-control-plane --kubectl builds one).
//!
//! CI runs it at `ISSUER_GUARD_SCALE_PODS` (default 500), where the counts
//! must agree and the inventory must stay under 100 MiB;
//! `scripts/bench --scale-pods` runs it at 10,000 and 50,000 and reports
//! the goals there (inventory under 100 MiB, status under 10 s and faster
//! than kubectl) as PASS or MISS without failing on them. docs/scale.md has
//! the method and the figures.

mod support;

use std::{
    io::Read,
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use serde_json::{Value, json};
use support::{ControlPlane, IssuerGuard, NS, ServiceAccountFlags, eventually};

const ISSUER: &str = "https://issuer.pod-scale.example";
const LEDGER: &str = "issuer-guard-ledger";
const PODS_PER_NAMESPACE: usize = 100;
/// Creates in flight at once.
const IN_FLIGHT: usize = 32;
/// What CI runs; the memory budget is asserted at this size only.
const CI_PODS: usize = 500;
const INVENTORY_GOAL_MIB: f64 = 100.0;
const STATUS_GOAL: Duration = Duration::from_secs(10);
/// The inventory's assessment interval here (the chart's is 15 s): /readyz
/// turns 200 at the first tick after every watch has listed, so a short one
/// keeps the time to ready close to the time to sync.
const INVENTORY_INTERVAL: &str = "250ms";

fn pods_wanted() -> usize {
    std::env::var("ISSUER_GUARD_SCALE_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(CI_PODS)
}

/// How many times `status` and `kubectl get` each run (alternating); the
/// median is reported.
fn runs() -> usize {
    std::env::var("ISSUER_GUARD_SCALE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3)
}

/// Whether issuer-guard is registered as the pods' admission webhook while
/// they are created (`ISSUER_GUARD_SCALE_POD_WEBHOOK=0` leaves it out):
/// registered, every pod is stamped with its generation as in a cluster
/// where issuer-guard runs, at the cost of two webhook calls per create.
fn webhook_registered() -> bool {
    std::env::var("ISSUER_GUARD_SCALE_POD_WEBHOOK").map_or(true, |v| v != "0")
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The four shapes, in equal parts: what the API server's default
/// automount gives; a projected token mounted alone with `subPath`; a legacy
/// token Secret read into an env var; and what the EKS pod identity webhook
/// leaves (a projected token for `sts.amazonaws.com`, the AWS env vars).
#[derive(Debug, Clone, Copy)]
enum Shape {
    Plain,
    SubPath,
    LegacyEnv,
    Irsa,
}

const SHAPES: [Shape; 4] = [Shape::Plain, Shape::SubPath, Shape::LegacyEnv, Shape::Irsa];

fn namespace(j: usize) -> String {
    format!("scale-{j:04}")
}

/// A pod as a Deployment's template would make it: labels, annotations,
/// ports, probes, resources, a security context, a ConfigMap and an
/// emptyDir; then what its shape adds. Every pod keeps the default automount,
/// so the API server adds its `kube-api-access-*` volume to each.
fn pod(shape: Shape, ns: &str, i: usize) -> Value {
    let app = format!("svc-{}", i % 10);
    let mut env = vec![
        json!({"name": "LOG_LEVEL", "value": "info"}),
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
    ];
    let mut mounts = vec![
        json!({"name": "config", "mountPath": "/etc/app", "readOnly": true}),
        json!({"name": "tmp", "mountPath": "/tmp"}),
    ];
    let mut volumes = vec![
        json!({"name": "config", "configMap": {"name": format!("{app}-config")}}),
        json!({"name": "tmp", "emptyDir": {}}),
    ];
    let mut account = "default";
    match shape {
        Shape::Plain => {}
        Shape::SubPath => {
            mounts.push(
                json!({"name": "token", "mountPath": "/var/run/secrets/app/token",
                "subPath": "token", "readOnly": true}),
            );
            volumes.push(json!({"name": "token", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}));
        }
        Shape::LegacyEnv => {
            env.push(json!({"name": "KUBE_TOKEN", "valueFrom":
                {"secretKeyRef": {"name": "ci-bot-token", "key": "token"}}}));
        }
        Shape::Irsa => {
            account = "app";
            env.extend([
                json!({"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"}),
                json!({"name": "AWS_DEFAULT_REGION", "value": "eu-west-1"}),
                json!({"name": "AWS_REGION", "value": "eu-west-1"}),
                json!({"name": "AWS_ROLE_ARN", "value": format!("arn:aws:iam::111122223333:role/{ns}-app")}),
                json!({"name": "AWS_WEB_IDENTITY_TOKEN_FILE",
                    "value": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"}),
            ]);
            mounts.push(json!({"name": "aws-iam-token", "readOnly": true,
                "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount"}));
            volumes.push(json!({"name": "aws-iam-token", "projected": {"sources": [
                {"serviceAccountToken": {"audience": "sts.amazonaws.com",
                    "expirationSeconds": 86400, "path": "token"}}]}}));
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("{app}-{i:05}"),
            "labels": {
                "app.kubernetes.io/name": app,
                "app.kubernetes.io/part-of": "shop",
                "pod-template-hash": "7c9d8f6b5d",
            },
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "9090",
                "kubectl.kubernetes.io/restartedAt": "2025-06-01T12:00:00Z",
            },
        },
        "spec": {
            "serviceAccountName": account,
            "terminationGracePeriodSeconds": 30,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "app",
                "image": format!("registry.example/shop/{app}:1.27.3"),
                "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}],
                "env": env,
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 10},
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 20},
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": mounts,
            }],
            "volumes": volumes,
        },
    })
}

/// POSTs `body` to `path` as the admin, retrying what a loaded API server
/// answers now and then (429, 5xx, a dropped connection); an AlreadyExists
/// after a retry means an earlier try got through. Returns the retries.
async fn create(client: &Client, path: &str, body: &Value) -> Result<usize, String> {
    let bytes = serde_json::to_vec(body).expect("serialize");
    let mut retries = 0;
    loop {
        let req = kube::core::Request::new(path)
            .create(&PostParams::default(), bytes.clone())
            .expect("a create request");
        let error = match client.request_text(req).await {
            Ok(_) => return Ok(retries),
            Err(kube::Error::Api(s)) if s.code == 409 && retries > 0 => return Ok(retries),
            Err(kube::Error::Api(s)) if s.code == 429 || s.code >= 500 => s.to_string(),
            Err(e @ (kube::Error::HyperError(_) | kube::Error::Service(_))) => e.to_string(),
            Err(e) => return Err(format!("POST {path}: {e}")),
        };
        retries += 1;
        if retries > 5 {
            return Err(format!("POST {path}: {error} ({retries} tries)"));
        }
        tokio::time::sleep(Duration::from_millis(200 * retries as u64)).await;
    }
}

/// Runs the `total` `creates` (path, body), made as they are sent, with
/// [`IN_FLIGHT`] at a time; once all are done, fails the test if any failed
/// for good, else returns the retries, summed.
async fn create_all(
    client: &Client,
    what: &str,
    total: usize,
    creates: impl Iterator<Item = (String, Value)>,
) -> usize {
    let done = Arc::new(AtomicUsize::new(0));
    let step = (total / 10).max(1000);
    let results: Vec<Result<usize, String>> = stream::iter(creates)
        .map(|(path, body)| {
            let (client, done) = (client.clone(), done.clone());
            async move {
                let r = create(&client, &path, &body).await;
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % step == 0 && n < total {
                    eprintln!("pod scale: {n}/{total} {what} created");
                }
                r
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let mut retries = 0;
    for r in results {
        match r {
            Ok(n) => retries += n,
            Err(e) => panic!("creating {what}: {e}"),
        }
    }
    retries
}

/// The namespaces, each with the `default` ServiceAccount (which the
/// controller makes, and without which pods are refused), an IRSA-annotated
/// `app` account, and a legacy token Secret `ci-bot-token` of account
/// `ci-bot` for the legacy-env pods to read.
async fn namespaces(cp: &ControlPlane, count: usize) {
    let creates = (0..count).map(|j| {
        (
            "/api/v1/namespaces".to_owned(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace(j)}}),
        )
    });
    create_all(&cp.client, "namespaces", count, creates).await;
    let accounts: Api<ServiceAccount> = Api::all(cp.client.clone());
    let defaults = ListParams::default().fields("metadata.name=default");
    eventually(
        "a default ServiceAccount in every namespace",
        Duration::from_secs(300),
        || async {
            let list = accounts.list_metadata(&defaults).await.ok()?;
            let made = list
                .items
                .iter()
                .filter(|a| {
                    a.metadata
                        .namespace
                        .as_deref()
                        .is_some_and(|n| n.starts_with("scale-"))
                })
                .count();
            (made == count).then_some(())
        },
    )
    .await;
    let mut creates = Vec::new();
    for j in 0..count {
        let ns = namespace(j);
        let accounts = format!("/api/v1/namespaces/{ns}/serviceaccounts");
        creates.push((
            accounts.clone(),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app",
                "annotations": {"eks.amazonaws.com/role-arn": format!("arn:aws:iam::111122223333:role/{ns}-app")}}}),
        ));
        creates.push((
            accounts,
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "ci-bot"}}),
        ));
    }
    create_all(
        &cp.client,
        "ServiceAccounts",
        creates.len(),
        creates.into_iter(),
    )
    .await;
    let creates = (0..count).map(|j| {
        (
            format!("/api/v1/namespaces/{}/secrets", namespace(j)),
            json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                "metadata": {"name": "ci-bot-token",
                    "annotations": {"kubernetes.io/service-account.name": "ci-bot"}}}),
        )
    });
    create_all(&cp.client, "legacy token Secrets", count, creates).await;
}

/// issuer-guard discovering from the one API server (so that it writes the
/// ledger `status` and the inventory read), as tests/status.rs starts it;
/// registered as the pods' admission webhook when `registered`.
async fn discovering(cp: &ControlPlane, registered: bool) -> IssuerGuard {
    support::rotation::discovering_with(cp, "mode: audit\n", registered).await
}

/// GNU time, which reports the peak RSS of the command it runs.
const GNU_TIME: &str = "/usr/bin/time";

/// What one run of a command cost: wall time from spawn to exit, its CPU
/// time (wait4's rusage), and its peak resident memory as GNU time reports
/// it (`None` without GNU time).
///
/// Not wait4's `ru_maxrss` of a child of this process: Linux keeps the
/// high-water mark of the image a child was forked from (this test
/// process, hundreds of MiB after making 50,000 pods) across the exec, so
/// it reports that instead of the command's own peak. GNU time is a small
/// process, and the command is its child.
struct Run {
    wall: Duration,
    /// The part of `wall` the API server spent answering its LISTs of pods,
    /// and how many it answered ([`pod_lists`]).
    server: Duration,
    lists: u64,
    peak_kib: Option<u64>,
    cpu: Duration,
    code: i32,
    /// What it wrote to stdout: all of it when kept, else only the count.
    stdout: Vec<u8>,
    stdout_bytes: u64,
    stderr: String,
}

impl Run {
    /// Its time, the API server's share, CPU and peak, as every run's line
    /// gives them.
    fn measures(&self) -> String {
        format!(
            "{:.2} s (API server {:.2} s over {} pod LISTs), {:.2} s CPU, peak {}",
            self.wall.as_secs_f64(),
            self.server.as_secs_f64(),
            self.lists,
            self.cpu.as_secs_f64(),
            peak(self.peak_kib)
        )
    }
}

/// Runs `cmd` under GNU time (writing its peak into `peak_file`) when
/// there is one, with stdout read through a pipe (kept when `keep`, else
/// only counted), and reaps it with wait4 for its CPU time.
fn run_measured(cmd: Command, keep: bool, peak_file: &Path) -> Run {
    let timed = Path::new(GNU_TIME).is_file();
    let mut cmd = if timed {
        let mut t = Command::new(GNU_TIME);
        t.arg("-f")
            .arg("%M")
            .arg("-o")
            .arg(peak_file)
            .arg(cmd.get_program())
            .args(cmd.get_args());
        t
    } else {
        cmd
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    #[expect(
        clippy::zombie_processes,
        reason = "reaped by wait4 below, which also gives its rusage"
    )]
    let mut child = cmd.spawn().expect("spawn a measured command");
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let stdout = std::thread::spawn(move || {
        let (mut kept, mut total) = (Vec::new(), 0u64);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    total += n as u64;
                    if keep {
                        kept.extend_from_slice(&buf[..n]);
                    }
                }
            }
        }
        (kept, total)
    });
    let mut status = 0;
    // SAFETY: rusage is plain data; zeroed is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child, writing into the two locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "wait4: {e}");
    }
    let wall = started.elapsed();
    let (stdout, stdout_bytes) = stdout.join().expect("the stdout reader");
    let stderr = stderr.join().expect("the stderr reader");
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    // GNU time writes "%M" (KiB) last, after a line on a non-zero exit.
    let peak_kib = timed
        .then(|| std::fs::read_to_string(peak_file).ok())
        .flatten()
        .and_then(|t| t.lines().last()?.trim().parse().ok());
    Run {
        wall,
        server: Duration::ZERO,
        lists: 0,
        peak_kib,
        cpu: time(usage.ru_utime) + time(usage.ru_stime),
        code: if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        },
        stdout,
        stdout_bytes,
        stderr,
    }
}

fn status_command(kubeconfig: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(support::issuer_guard_bin());
    cmd.arg("status")
        .args(args)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--ledger={NS}/{LEDGER}"));
    cmd
}

fn kubectl_command(kubectl: &Path, kubeconfig: &Path, cache: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(kubectl);
    cmd.args(args)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--cache-dir={}", cache.display()));
    cmd
}

/// The seconds kube-apiserver has spent answering LISTs of pods so far, and
/// how many it answered, from its own request-duration histogram
/// (`apiserver_request_duration_seconds`, which ends when the response is
/// written).
async fn pod_lists(client: &Client) -> (f64, f64) {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("a request");
    let text = client
        .request_text(req)
        .await
        .expect("the API server's /metrics");
    let (mut sum, mut count) = (0.0, 0.0);
    for line in text.lines() {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if !(key.contains("resource=\"pods\"")
            && key.contains("subresource=\"\"")
            && key.contains("verb=\"LIST\""))
        {
            continue;
        }
        let v: f64 = value.parse().unwrap_or(0.0);
        if key.starts_with("apiserver_request_duration_seconds_sum{") {
            sum += v;
        } else if key.starts_with("apiserver_request_duration_seconds_count{") {
            count += v;
        }
    }
    (sum, count)
}

/// [`run_measured`] off the runtime, with the API server's share of it.
async fn run_with_server_share(
    client: &Client,
    cmd: Command,
    keep: bool,
    peak_file: std::path::PathBuf,
) -> Run {
    let before = pod_lists(client).await;
    let mut run = tokio::task::spawn_blocking(move || run_measured(cmd, keep, &peak_file))
        .await
        .expect("a measured run");
    let after = pod_lists(client).await;
    run.server = Duration::from_secs_f64((after.0 - before.0).max(0.0));
    run.lists = (after.1 - before.1).max(0.0) as u64;
    run
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// VmRSS and VmHWM of `pid`, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// User plus system CPU time of the running process `pid`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // The fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// The sum of every series `name` (whatever its labels) in a metrics text,
/// and each one's labels and value.
fn series_sum(text: &str, name: &str) -> (f64, Vec<String>) {
    let mut sum = 0.0;
    let mut each = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, labels) = key.split_once('{').unwrap_or((key, ""));
        if n == name
            && let Ok(v) = value.parse::<f64>()
        {
            sum += v;
            each.push(format!("{{{labels} {v}"));
        }
    }
    (sum, each)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

/// A peak RSS, or why there is none.
fn peak(kib: Option<u64>) -> String {
    kib.map_or_else(
        || format!("n/a (no {GNU_TIME})"),
        |k| format!("{:.1} MiB", mib(k)),
    )
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_and_status_over_many_pods_of_four_shapes() {
    let count = pods_wanted();
    let runs = runs();
    let registered = webhook_registered();
    let namespaces_wanted = count.div_ceil(PODS_PER_NAMESPACE);
    let kubectl = std::env::var_os("KUBECTL")
        .filter(|k| !k.is_empty())
        .map(std::path::PathBuf::from);
    eprintln!(
        "pod scale: {count} pods in {namespaces_wanted} namespaces, webhook {}; load average before: {}",
        if registered {
            "registered"
        } else {
            "not registered"
        },
        load_average()
    );
    let cp = ControlPlane::start(ServiceAccountFlags::issuer(ISSUER)).await;
    let mut guard = discovering(&cp, registered).await;
    // The ledger, written by discovery: `status` answers 0 once it holds a
    // completed switch.
    eventually("the ledger", Duration::from_secs(60), || async {
        let out = status_command(&cp.kubeconfig, &["-n", NS, "-o", "json"])
            .output()
            .expect("run status");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code() == Some(0) && report["generation"]["keyId"].is_string()).then_some(())
    })
    .await;

    let started = Instant::now();
    namespaces(&cp, namespaces_wanted).await;
    eprintln!(
        "pod scale: {namespaces_wanted} namespaces with their accounts and legacy token Secrets in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Round-robin over the namespaces, the shapes in equal parts in each;
    // each pod made as it is sent.
    let creates = (0..count).map(|i| {
        let ns = namespace(i % namespaces_wanted);
        let shape = SHAPES[(i / namespaces_wanted) % SHAPES.len()];
        (format!("/api/v1/namespaces/{ns}/pods"), pod(shape, &ns, i))
    });
    let load = load_average();
    let started = Instant::now();
    let retries = create_all(&cp.client, "pods", count, creates).await;
    let creation = started.elapsed();
    let rate = count as f64 / creation.as_secs_f64();
    eprintln!(
        "pod scale: {count} pods created in {:.1} s: {rate:.0} pods/s ({IN_FLIGHT} in flight, {retries} retries; load average before: {load})",
        creation.as_secs_f64()
    );
    guard.assert_running();
    let etcd_db = std::fs::metadata(cp.dir().join("etcd/member/snap/db")).map_or(0, |m| m.len());

    // The inventory, from its start to /readyz: every watch listed and one
    // assessment made.
    let load = load_average();
    let started = Instant::now();
    let (mut inventory, health) = support::rotation::spawn_inventory(&cp, INVENTORY_INTERVAL);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let ready_within = Duration::from_secs(120) + Duration::from_millis(20 * count as u64);
    loop {
        inventory.assert_running();
        if http
            .get(format!("http://{health}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        assert!(
            started.elapsed() < ready_within,
            "the inventory was not ready within {ready_within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = started.elapsed();
    let ready_cpu = cpu_time(inventory.pid());
    let (_, ready_hwm) = memory_kib(inventory.pid());
    // A few more assessments, then the memory it keeps.
    tokio::time::sleep(Duration::from_secs(5)).await;
    inventory.assert_running();
    let (inventory_rss, inventory_hwm) = memory_kib(inventory.pid());
    let metrics = support::rotation::metrics_text(&http, &health).await;
    let (inventory_pods, per_generation) = series_sum(&metrics, "issuer_guard_inventory_pods");
    let (_, inventory_at_risk) = series_sum(&metrics, "issuer_guard_inventory_at_risk_pods");
    eprintln!(
        "pod scale: inventory: ready in {:.2} s ({:.2} s CPU), peak {:.1} MiB at ready; 5 s later RSS {:.1} MiB, peak {:.1} MiB; pods {per_generation:?}, at risk {inventory_at_risk:?} (load average before: {load})",
        ready.as_secs_f64(),
        ready_cpu.as_secs_f64(),
        mib(ready_hwm),
        mib(inventory_rss),
        mib(inventory_hwm)
    );
    // It is stopped before `status` and kubectl are timed: its assessments
    // every 250 ms would take CPU from them.
    inventory.terminate(Duration::from_secs(10)).await;

    // `status -A -o json` and `kubectl get pods -A -o json`, alternating.
    let load = load_average();
    let cache = cp.dir().join("kubectl-cache");
    if let Some(kubectl) = &kubectl {
        // Discovery into kubectl's cache first, as on any workstation that
        // has used kubectl before.
        let out = kubectl_command(kubectl, &cp.kubeconfig, &cache, &["get", "namespace", NS])
            .output()
            .expect("run kubectl");
        assert!(out.status.success(), "kubectl get namespace: {out:?}");
    }
    let mut status_runs = Vec::new();
    let mut kubectl_runs = Vec::new();
    for i in 0..runs {
        let run = run_with_server_share(
            &cp.client,
            status_command(&cp.kubeconfig, &["-A", "-o", "json"]),
            true,
            cp.dir().join("status.peak"),
        )
        .await;
        eprintln!(
            "pod scale: status run {}: {}, exit {}",
            i + 1,
            run.measures(),
            run.code
        );
        assert!(
            run.code == 0 || run.code == 1,
            "status exited {}: {}",
            run.code,
            run.stderr
        );
        status_runs.push(run);
        if let Some(kubectl) = &kubectl {
            let cmd = kubectl_command(
                kubectl,
                &cp.kubeconfig,
                &cache,
                &["get", "pods", "-A", "-o", "json"],
            );
            let run =
                run_with_server_share(&cp.client, cmd, false, cp.dir().join("kubectl.peak")).await;
            eprintln!(
                "pod scale: kubectl get run {}: {}, {:.1} MiB of JSON, exit {}",
                i + 1,
                run.measures(),
                run.stdout_bytes as f64 / 1024.0 / 1024.0,
                run.code
            );
            assert_eq!(run.code, 0, "kubectl get pods failed: {}", run.stderr);
            kubectl_runs.push(run);
        }
    }
    let report: Value =
        serde_json::from_slice(&status_runs[0].stdout).expect("status -o json is JSON");
    let status_time = median(status_runs.iter().map(|r| r.wall).collect());
    let status_cpu = median(status_runs.iter().map(|r| r.cpu).collect());
    let status_server = median(status_runs.iter().map(|r| r.server).collect());
    let status_peak = status_runs.iter().filter_map(|r| r.peak_kib).max();
    let at_risk: Vec<String> = report["atRisk"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let pods: u64 = r["owners"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o["pods"].as_u64())
                .sum();
            format!("{}: {pods}", r["rule"].as_str().unwrap_or("?"))
        })
        .collect();
    eprintln!(
        "pod scale: status reports {} pods listed, per generation {}, at risk {at_risk:?}",
        report["pods"]["listed"], report["pods"]["perGeneration"]
    );

    let kubectl_line;
    let mut goals = vec![
        (
            format!("inventory peak RSS < {INVENTORY_GOAL_MIB} MiB"),
            mib(inventory_hwm) < INVENTORY_GOAL_MIB,
            format!("{:.1} MiB", mib(inventory_hwm)),
        ),
        (
            format!("status < {} s", STATUS_GOAL.as_secs()),
            status_time < STATUS_GOAL,
            format!("{:.2} s", status_time.as_secs_f64()),
        ),
    ];
    if kubectl_runs.is_empty() {
        kubectl_line = "kubectl get skipped (KUBECTL not set)".to_owned();
    } else {
        let kubectl_time = median(kubectl_runs.iter().map(|r| r.wall).collect());
        let kubectl_cpu = median(kubectl_runs.iter().map(|r| r.cpu).collect());
        let kubectl_server = median(kubectl_runs.iter().map(|r| r.server).collect());
        let kubectl_peak = kubectl_runs.iter().filter_map(|r| r.peak_kib).max();
        let bytes = kubectl_runs[0].stdout_bytes;
        kubectl_line = format!(
            "kubectl get {:.2} s ({:.2} s CPU, API server {:.2} s), peak {}, {:.1} MiB of JSON; status/kubectl time {}, CPU {}, peak RSS {}; inventory/kubectl ready time {}, RSS {}",
            kubectl_time.as_secs_f64(),
            kubectl_cpu.as_secs_f64(),
            kubectl_server.as_secs_f64(),
            peak(kubectl_peak),
            bytes as f64 / 1024.0 / 1024.0,
            ratio(
                Some(status_time.as_secs_f64()),
                Some(kubectl_time.as_secs_f64())
            ),
            ratio(
                Some(status_cpu.as_secs_f64()),
                Some(kubectl_cpu.as_secs_f64())
            ),
            ratio(status_peak.map(mib), kubectl_peak.map(mib)),
            ratio(Some(ready.as_secs_f64()), Some(kubectl_time.as_secs_f64())),
            ratio(Some(mib(inventory_hwm)), kubectl_peak.map(mib)),
        );
        goals.push((
            "status faster than kubectl get".to_owned(),
            status_time < kubectl_time,
            format!(
                "{:.2} s vs {:.2} s",
                status_time.as_secs_f64(),
                kubectl_time.as_secs_f64()
            ),
        ));
    }
    eprintln!(
        "pod scale: {count} pods: created at {rate:.0}/s; inventory ready in {:.2} s ({:.2} s CPU), RSS {:.1} MiB, peak {:.1} MiB; status {:.2} s ({:.2} s CPU, API server {:.2} s), peak {}; {kubectl_line}; etcd db {:.0} MiB; median of {runs} (load average before: {load}); test process peak {:.0} MiB",
        ready.as_secs_f64(),
        ready_cpu.as_secs_f64(),
        mib(inventory_rss),
        mib(inventory_hwm),
        status_time.as_secs_f64(),
        status_cpu.as_secs_f64(),
        status_server.as_secs_f64(),
        peak(status_peak),
        etcd_db as f64 / 1024.0 / 1024.0,
        mib(memory_kib(std::process::id()).1),
    );
    for (goal, pass, figure) in &goals {
        eprintln!(
            "pod scale goal at {count} pods: {goal}: {} ({figure})",
            verdict(*pass)
        );
    }

    // What can fail: both saw every pod.
    assert_eq!(
        report["pods"]["listed"].as_u64(),
        Some(count as u64),
        "status listed another number of pods"
    );
    assert_eq!(
        inventory_pods, count as f64,
        "the inventory counts another number of pods: {per_generation:?}"
    );
    if count <= CI_PODS {
        assert!(
            mib(inventory_hwm) < INVENTORY_GOAL_MIB,
            "the inventory's peak RSS is {:.1} MiB at {count} pods",
            mib(inventory_hwm)
        );
    }
    guard.assert_running();
}
