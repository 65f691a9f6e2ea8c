//! issuer-guard as a local process, registered with the test's API server
//! through the MutatingWebhookConfiguration and ValidatingWebhookConfiguration
//! the chart renders, so that the chart's rules, matchConditions, failure
//! policies and timeout are what the tests exercise.

use std::{path::PathBuf, time::Duration};

use k8s_openapi::api::{
    admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
    core::v1::Pod,
};
use kube::{Api, Client, api::PostParams};
use serde_json::{Value, json};

use super::{
    ControlPlane, Deadline, api, chart, eventually, objects,
    process::{Proc, free_port},
};

pub use issuer_guard::object::{
    AT_RISK_LABEL, GENERATION_LABEL, ISSUER_ANNOTATION, KEY_ID_ANNOTATION, RISKS_ANNOTATION,
};

/// How the webhook configurations are registered: always the chart's, as
/// [`register`] says; each field here is a named deviation from the
/// chart's defaults, made through the chart's own values.
#[derive(Debug, Clone, Copy)]
pub struct Registration {
    /// The chart's `webhook.validating.matchConditions`, which keep
    /// controller-made objects away from the validating webhook (true), or
    /// none (false: `webhook.validating.matchConditions=[]`), as an API
    /// server without match conditions would call it. Without them the
    /// handler's own check is all that stands.
    pub match_conditions: bool,
}

impl Default for Registration {
    fn default() -> Self {
        Registration {
            match_conditions: true,
        }
    }
}

/// The name both configurations are registered under. Mutating webhooks
/// are called in the order of their configurations' names, which puts a
/// later-named injector after issuer-guard.
pub const CONFIGURATION_NAME: &str = "issuer-guard";

const TIMEOUT: Duration = Duration::from_secs(60);

pub struct IssuerGuard {
    process: Proc,
    client: Client,
    config: PathBuf,
    health: String,
    http: reqwest::Client,
    /// The webhook port, and the dev CA its certificate is signed by.
    pub port: u16,
    pub ca: PathBuf,
}

/// How [`IssuerGuard::launch`] starts issuer-guard.
pub struct Launch {
    /// Register the webhooks with this; `None` leaves them unregistered
    /// (a second replica, or a process watched through its metrics).
    pub registration: Option<Registration>,
    /// Flags beyond the ones every test gives.
    pub args: Vec<String>,
    /// The directory and log file name under the control plane's directory.
    pub name: String,
    /// Another kubeconfig than the admin's.
    pub kubeconfig: Option<PathBuf>,
    /// Wait for /readyz to answer 200 before returning (and registering).
    /// `false` returns once the process runs, for tests of readiness
    /// itself; it cannot be combined with a registration.
    pub ready: bool,
    /// Environment variables added to the test runner's.
    pub env: Vec<(String, String)>,
}

impl Default for Launch {
    fn default() -> Self {
        Launch {
            registration: Some(Registration::default()),
            env: Vec::new(),
            args: Vec::new(),
            name: "issuer-guard".to_owned(),
            kubeconfig: None,
            ready: true,
        }
    }
}

impl IssuerGuard {
    /// Starts issuer-guard against `cp` with `config` (YAML), registers it,
    /// and returns once the API server calls it.
    pub async fn start(cp: &ControlPlane, config: &str) -> IssuerGuard {
        Self::start_with(cp, config, Registration::default()).await
    }

    /// [`IssuerGuard::start`] with a chosen registration.
    pub async fn start_with(
        cp: &ControlPlane,
        config: &str,
        registration: Registration,
    ) -> IssuerGuard {
        Self::launch(
            cp,
            config,
            Launch {
                registration: Some(registration),
                ..Launch::default()
            },
        )
        .await
    }

    /// Starts issuer-guard as `launch` says, and once it is ready registers
    /// it when asked to (waiting until the API server calls it).
    pub async fn launch(cp: &ControlPlane, config: &str, launch: Launch) -> IssuerGuard {
        let dir = cp.dir().join(&launch.name);
        std::fs::create_dir_all(&dir).expect("create issuer-guard's directory");
        let config_path = dir.join("config.yaml");
        write_atomically(&config_path, config);
        let (port, health_port) = (free_port(), free_port());
        // reqwest is built without a TLS provider of its own; only one is
        // compiled in, and another test may have installed it already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certs = dir.join("certs");
        let kubeconfig = launch.kubeconfig.unwrap_or_else(|| cp.kubeconfig.clone());
        let mut args = vec![
            "serve".into(),
            format!("--listen=127.0.0.1:{port}"),
            format!("--health-listen=127.0.0.1:{health_port}"),
            format!("--dev-cert-dir={}", certs.display()),
            format!("--config={}", config_path.display()),
            "--reload-interval=100ms".into(),
            format!("--kubeconfig={}", kubeconfig.display()),
        ];
        args.extend(launch.args);
        let process = Proc::spawn_adding_env(
            "issuer-guard",
            &super::issuer_guard_bin(),
            &args,
            &launch.env,
            cp.dir().join(format!("{}.log", launch.name)),
        );
        let mut guard = IssuerGuard {
            process,
            client: cp.client.clone(),
            config: config_path,
            health: format!("http://127.0.0.1:{health_port}"),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("an HTTP client"),
            port,
            ca: certs.join("ca.crt"),
        };
        if !launch.ready {
            assert!(
                launch.registration.is_none(),
                "a registration waits for a ready issuer-guard"
            );
            guard.process.assert_running();
            return guard;
        }
        guard.wait_ready().await;
        if let Some(registration) = launch.registration {
            let ca = std::fs::read(&guard.ca).expect("issuer-guard's dev CA");
            register(&cp.client, port, &ca, registration).await;
            guard.wait_called().await;
        }
        guard
    }

    /// Everything issuer-guard has logged so far.
    pub fn log(&self) -> String {
        self.process.log_text()
    }

    /// Peak resident memory so far, in KiB.
    pub fn peak_memory_kib(&self) -> Option<u64> {
        self.process.peak_memory_kib()
    }

    /// issuer-guard's /metrics text.
    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .await
            .map(|(_, t)| t)
            .expect("issuer-guard's /metrics")
    }

    /// /readyz's status code.
    pub async fn readyz(&self) -> u16 {
        self.get("/readyz").await.map_or(0, |(s, _)| s)
    }

    /// /readyz's status code and text, or `None` while it does not answer.
    pub async fn readyz_text(&self) -> Option<(u16, String)> {
        self.get("/readyz").await
    }

    pub fn assert_running(&mut self) {
        self.process.assert_running();
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Replaces the config file and waits until issuer-guard has reloaded it.
    pub async fn set_config(&mut self, config: &str) {
        let before = self.reloads("success").await;
        let failed = self.reloads("error").await;
        write_atomically(&self.config, config);
        let deadline = Deadline::new("issuer-guard to reload its config", TIMEOUT);
        loop {
            self.process.assert_running();
            assert_eq!(
                self.reloads("error").await,
                failed,
                "issuer-guard rejected the config:\n{config}"
            );
            if self.reloads("success").await > before {
                return;
            }
            deadline.tick().await;
        }
    }

    /// A counter of `issuer_guard_config_reloads` from /metrics.
    async fn reloads(&self, result: &str) -> u64 {
        let text = self
            .get("/metrics")
            .await
            .map(|(_, t)| t)
            .unwrap_or_default();
        let prefix = format!("issuer_guard_config_reloads_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    /// Admission reviews answered by `webhook` (mutate, validate) for
    /// objects of `kind`, summed over decisions, or of `decision` alone.
    pub async fn requests(&self, webhook: &str, kind: &str, decision: Option<&str>) -> u64 {
        let text = self
            .get("/metrics")
            .await
            .map(|(_, t)| t)
            .expect("issuer-guard's /metrics");
        let wanted = [
            Some(format!("webhook=\"{webhook}\"")),
            Some(format!("kind=\"{kind}\"")),
            decision.map(|d| format!("decision=\"{d}\"")),
        ];
        text.lines()
            .filter_map(|l| l.strip_prefix("issuer_guard_admission_requests_total{"))
            .filter_map(|l| l.split_once("} "))
            .filter(|(labels, _)| {
                let labels: Vec<&str> = labels.split(',').collect();
                wanted
                    .iter()
                    .flatten()
                    .all(|w| labels.contains(&w.as_str()))
            })
            .map(|(_, v)| v.trim().parse::<f64>().expect("a counter value") as u64)
            .sum()
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let resp = self
            .http
            .get(format!("{}{path}", self.health))
            .send()
            .await
            .ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.ok()?))
    }

    async fn wait_ready(&mut self) {
        let deadline = Deadline::new("issuer-guard /readyz", TIMEOUT);
        loop {
            self.process.assert_running();
            if self
                .get("/readyz")
                .await
                .is_some_and(|(status, _)| status == 200)
            {
                return;
            }
            deadline.tick().await;
        }
    }

    /// Waits until a dry-run Pod comes back stamped: the API server has
    /// loaded the registration and reaches the webhook over TLS.
    pub async fn wait_called(&mut self) {
        let deadline = Deadline::new("the API server to call issuer-guard", TIMEOUT);
        loop {
            self.process.assert_running();
            let created = api::create::<Pod>(&self.client, &probe_pod(), true).await;
            if created.body["metadata"]["labels"][GENERATION_LABEL].is_string() {
                return;
            }
            deadline.tick().await;
        }
    }
}

fn probe_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "probe-"},
        "spec": {"containers": [{"name": "c", "image": "registry.example/probe:1"}]}
    })
}

/// Write then rename, so the reloader never reads a half-written file.
pub fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write the config");
    std::fs::rename(&tmp, path).expect("replace the config");
}

/// Registers both webhooks at `https://127.0.0.1:{port}`, trusting `ca`,
/// with the configurations the chart renders ([`chart::webhook_configurations`]):
/// the chart's rules, operations, namespaceSelector, matchConditions,
/// reinvocation policy and `timeoutSeconds`, and its mutating webhook's
/// `failurePolicy: Ignore`. Beyond what `registration` asks for, one value
/// differs from the chart's defaults, on purpose:
///
/// - `webhook.validating.failurePolicy=Fail`. The chart's `auto` renders
///   `Fail` exactly while its `config.rotation` declares one; the tests
///   declare rotations in the config file they hand the process, which the
///   chart never sees, so they ask for the policy a declared rotation gets.
///
/// The configurations are named [`CONFIGURATION_NAME`], which a later-named
/// injector sorts after.
pub async fn register(client: &Client, port: u16, ca: &[u8], registration: Registration) {
    let mut set = vec!["webhook.validating.failurePolicy=\"Fail\""];
    if !registration.match_conditions {
        set.push("webhook.validating.matchConditions=[]");
    }
    let (mutating, validating) =
        chart::webhook_configurations(&format!("https://127.0.0.1:{port}"), ca, &set);
    for rendered in [&mutating, &validating] {
        assert_eq!(
            rendered["metadata"]["name"], CONFIGURATION_NAME,
            "the chart names its configurations after the release"
        );
        for webhook in rendered["webhooks"].as_array().expect("webhooks") {
            assert_eq!(
                webhook["clientConfig"]["caBundle"],
                base64_encode(ca),
                "the chart's caBundle is the test's CA"
            );
        }
    }
    let conditions = &validating["webhooks"][0]["matchConditions"];
    assert_eq!(
        conditions.is_array(),
        registration.match_conditions,
        "matchConditions as asked: {conditions}"
    );
    let m: MutatingWebhookConfiguration =
        serde_json::from_value(mutating).expect("the chart's MutatingWebhookConfiguration");
    let v: ValidatingWebhookConfiguration =
        serde_json::from_value(validating).expect("the chart's ValidatingWebhookConfiguration");
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &m)
        .await
        .expect("register the mutating webhook");
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &v)
        .await
        .expect("register the validating webhook");
}

/// Waits, up to `within`, until issuer-guard's Secret watch knows legacy
/// token Secret `secret`: a dry-run Pod that reads it through env comes back
/// marked at risk (no rotation declared) or is denied (a key rotation
/// declared), either way for `legacy-token-env`. Until the watch has it,
/// the Secret is unknown and such a Pod is neither.
pub async fn wait_secret_known(cp: &ControlPlane, secret: &str, within: Duration) {
    let probe = objects::env_reader_pod(&format!("knows-{secret}"), secret);
    eventually(
        &format!("issuer-guard to know legacy token Secret {secret}"),
        within,
        || async {
            let c = api::create::<Pod>(&cp.client, &probe, true).await;
            let marked = c.body["metadata"]["labels"][AT_RISK_LABEL] == "true"
                && c.body["metadata"]["annotations"][RISKS_ANNOTATION]
                    .as_str()
                    .is_some_and(|r| r.split(',').any(|r| r == "legacy-token-env"));
            let denied = c.status == 403
                && c.body["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("[legacy-token-env]"));
            (marked || denied).then_some(())
        },
    )
    .await;
}

pub fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
