//! The Helm chart: lint and render every `ci/*-values.yaml`, reject bad
//! values, and install, upgrade and uninstall it on the real kube-apiserver
//! in a namespace that enforces the `restricted` Pod Security Standard.
//!
//! No kubelet runs, so the chart's pods are created (which is where Pod
//! Security is enforced) but never start. The webhook instead runs on the
//! host with what the chart installed: its TLS Secret and ConfigMap read
//! back from the API server, and a token of its ServiceAccount, so the
//! chart's RBAC is what the process gets. The two webhook configurations
//! point at it through the chart's test-only `webhook.urlOverride`.

mod support;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
    apps::v1::Deployment,
    core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::{Value, json};
use support::{
    ControlPlane, NS, ServiceAccountFlags, api,
    chart::{self, CHART, helm, ok},
    eventually,
    process::{Proc, free_port},
    webhook::{GENERATION_LABEL, write_atomically},
};

const RELEASE: &str = "issuer-guard";
const RELEASE_NS: &str = "issuer-guard-system";
const ISSUER: &str = "https://helm.e2e.example";
const IMAGE: &str = "registry.e2e.example/app:1";

fn ci_values() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(CHART).join("ci"))
        .expect("the chart's ci directory")
        .map(|e| e.expect("a ci entry").path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    files.sort();
    files
}

/// The objects of `helm template` of the test release, as JSON.
fn render(home: &Path, extra: &[&str]) -> Vec<Value> {
    chart::template(home, RELEASE, RELEASE_NS, extra)
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = find(objects, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

/// Every field the `restricted` Pod Security Standard checks, on a pod spec.
fn assert_restricted(spec: &Value) {
    let pod = &spec["securityContext"];
    assert_eq!(pod["runAsNonRoot"], true, "{pod}");
    assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault", "{pod}");
    for c in spec["containers"].as_array().expect("containers") {
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{sc}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{sc}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{sc}");
        assert!(sc["privileged"] != true, "{sc}");
    }
    assert!(spec["hostNetwork"] != true && spec["hostPID"] != true);
    for v in spec["volumes"].as_array().into_iter().flatten() {
        assert!(v.get("hostPath").is_none(), "{v}");
    }
}

fn excluded_namespaces(webhook: &Value) -> Vec<String> {
    webhook["namespaceSelector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
        .flat_map(|e| e["values"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn every_ci_values_file_lints_and_renders() {
    let home = tempfile::tempdir().unwrap();
    let files = ci_values();
    assert!(files.len() >= 6, "{files:?}");
    for file in &files {
        let f = file.to_str().unwrap();
        ok(
            &helm(home.path(), &["lint", "--strict", CHART, "-f", f]),
            &format!("helm lint {f}"),
        );
        let objects = render(home.path(), &["-f", f]);
        let deployment = one(&objects, "Deployment");
        assert_restricted(&deployment["spec"]["template"]["spec"]);
        let validating = one(&objects, "ValidatingWebhookConfiguration");
        let mutating = one(&objects, "MutatingWebhookConfiguration");
        for (config, policy) in [(validating, "Fail"), (mutating, "Ignore")] {
            for w in config["webhooks"].as_array().expect("webhooks") {
                assert_eq!(w["failurePolicy"], policy, "{f}: {w}");
                assert_eq!(w["sideEffects"], "None");
                assert_eq!(w["admissionReviewVersions"], json!(["v1"]));
                assert_eq!(w["matchPolicy"], "Equivalent");
                assert_eq!(w["timeoutSeconds"], 5);
                let excluded = excluded_namespaces(w);
                assert!(
                    excluded.iter().any(|n| n == "kube-system")
                        && excluded.iter().any(|n| n == RELEASE_NS),
                    "{f}: the webhook can be called for kube-system or its own namespace: {excluded:?}"
                );
            }
        }
        let conditions = &validating["webhooks"][0]["matchConditions"];
        assert_eq!(
            conditions[0]["name"],
            issuer_guard::admission::MATCH_CONDITION_NAME
        );
        assert_eq!(
            conditions[0]["expression"],
            issuer_guard::admission::MATCH_CONDITION_NOT_CONTROLLER_MADE,
            "{f}: the chart's matchCondition differs from the binary's"
        );
        assert_eq!(mutating["webhooks"][0]["reinvocationPolicy"], "IfNeeded");

        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let replicas = deployment["spec"]["replicas"].as_u64().unwrap_or(1);
        assert_eq!(
            find(&objects, "PodDisruptionBudget").len(),
            usize::from(replicas > 1),
            "{name}: a PDB exactly when replicas > 1"
        );
        match name.as_str() {
            "tls-cert-manager-values.yaml" => {
                assert!(!find(&objects, "Certificate").is_empty(), "{name}");
                for config in [validating, mutating] {
                    assert!(
                        config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
                            .is_string(),
                        "{name}: {config}"
                    );
                }
            }
            "tls-secret-values.yaml" => {
                assert!(
                    find(&objects, "Secret").is_empty(),
                    "{name}: the chart made a Secret"
                );
                assert!(validating["webhooks"][0]["clientConfig"]["caBundle"].is_string());
            }
            "monitoring-values.yaml" => {
                for kind in ["ServiceMonitor", "PrometheusRule", "NetworkPolicy"] {
                    assert!(!find(&objects, kind).is_empty(), "{name}: no {kind}");
                }
                let alerts = |objects: &[Value]| -> Vec<(String, String)> {
                    one(objects, "PrometheusRule")["spec"]["groups"][0]["rules"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| {
                            let field = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                            (field("alert"), field("expr"))
                        })
                        .collect()
                };
                let with = alerts(&objects);
                let stale = with
                    .iter()
                    .find(|(a, _)| a == "IssuerGuardDiscoveryStale")
                    .expect("a discovery alert");
                assert!(
                    stale.1.contains("issuer_guard_discovery_age_seconds")
                        && stale.1.ends_with("> 300"),
                    "{stale:?}"
                );
                assert!(with.iter().any(|(a, e)| a == "IssuerGuardRotationComing"
                    && e.contains("state=\"staged\"")
                    && e.contains("state=\"planned\"")));
                // Without discovery its alerts would never fire, or fire
                // forever: they are not rendered.
                let without = alerts(&render(
                    home.path(),
                    &["-f", f, "--set", "discovery.enabled=false"],
                ));
                assert!(
                    !without
                        .iter()
                        .any(|(a, _)| a.starts_with("IssuerGuardDiscovery")
                            || a == "IssuerGuardRotationComing")
                );
                assert_eq!(without.len() + 2, with.len());
            }
            _ => {}
        }
    }
    // The default: three replicas, a Secret made by the chart, no monitoring
    // objects without their API.
    let objects = render(home.path(), &[]);
    assert_eq!(one(&objects, "Deployment")["spec"]["replicas"], 3);
    let secret = one(&objects, "Secret");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert!(find(&objects, "ServiceMonitor").is_empty());
}

#[test]
fn bad_values_are_refused_with_a_clear_message() {
    let home = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["--set", "replicaCount=3"], "replicaCount"),
        (&["--set", "config.mode=enforse"], "/config/mode"),
        (&["--set", "webhook.timeoutSeconds=31"], "timeoutSeconds"),
        (&["--set-string", "replicas=three"], "replicas"),
        (
            &[
                "--set",
                "tls.mode=secret",
                "--set",
                "tls.existingSecret=mine",
            ],
            "caBundle",
        ),
    ];
    for (extra, needle) in cases {
        assert_refused(home.path(), extra, needle);
    }
}

/// `helm template` with `extra` fails, and its error names `needle`.
fn assert_refused(home: &Path, extra: &[&str], needle: &str) {
    let mut args = vec!["template", RELEASE, CHART, "--namespace", RELEASE_NS];
    args.extend_from_slice(extra);
    let out = helm(home, &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{extra:?} was accepted");
    assert!(
        stderr.contains(needle),
        "{extra:?}: the error does not name {needle}:\n{stderr}"
    );
}

/// The container's environment as (name, value) pairs, in order.
fn container_env(deployment: &Value) -> Vec<(String, String)> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().expect("an env name").to_owned(),
                e["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn kinds(objects: &[Value]) -> Vec<&str> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().expect("a kind"))
        .collect()
}

const DISCOVERY_ENV: [&str; 4] = [
    "ISSUER_GUARD_SERVICE_ACCOUNT",
    "ISSUER_GUARD_LEDGER",
    "ISSUER_GUARD_DISCOVERY_INTERVAL",
    "ISSUER_GUARD_DISCOVERY_WINDOW",
];

/// Discovery's flags and the RBAC they need come together or not at all,
/// and the RBAC is exactly the least the binary needs: its own token, the
/// two discovery URLs, and writes to its ledger by name only.
#[test]
fn discovery_flags_and_rbac_are_rendered_together_with_least_privilege() {
    // Names that differ from the binary's defaults (issuer-guard-ledger), so
    // a chart that forgot to pass one would be caught.
    let (release, ns) = ("edge", "guard-system");
    let (fullname, ledger) = ("edge-issuer-guard", "edge-issuer-guard-ledger");
    let service_account = json!({"kind": "ServiceAccount", "name": fullname, "namespace": ns});

    let rbac = chart::render(release, ns, &[], "rbac.yaml");
    assert_eq!(
        kinds(&rbac),
        ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
    );
    let cluster_role = one(&rbac, "ClusterRole");
    assert_eq!(
        cluster_role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]},
            {"nonResourceURLs": ["/.well-known/openid-configuration", "/openid/v1/jwks"], "verbs": ["get"]},
        ]),
        "{cluster_role}"
    );
    assert_eq!(
        one(&rbac, "ClusterRoleBinding")["subjects"],
        json!([service_account])
    );
    let role = one(&rbac, "Role");
    assert_eq!(role["metadata"]["namespace"], ns, "{role}");
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["serviceaccounts/token"], "resourceNames": [fullname], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [ledger], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [ledger], "verbs": ["update", "patch"]},
        ]),
        "{role}"
    );
    let binding = one(&rbac, "RoleBinding");
    assert_eq!(binding["metadata"]["namespace"], ns, "{binding}");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}),
        "{binding}"
    );
    assert_eq!(binding["subjects"], json!([service_account]), "{binding}");

    let deployments = chart::render(release, ns, &[], "deployment.yaml");
    let env = container_env(one(&deployments, "Deployment"));
    let want: Vec<(String, String)> = DISCOVERY_ENV
        .iter()
        .zip([&format!("{ns}/{fullname}"), ledger, "10s", "5m"])
        .map(|(k, v)| ((*k).to_owned(), v.to_owned()))
        .collect();
    assert_eq!(env, want);

    // Another ServiceAccount and ledger: the flags and the Role still name
    // the same ones, and the durations are passed through as given.
    let set = [
        "serviceAccount.create=false",
        "serviceAccount.name=shared",
        "discovery.ledger=generations.example",
        "discovery.interval=500ms",
        "discovery.window=2h",
    ];
    let role = chart::render(release, ns, &set, "rbac.yaml")
        .into_iter()
        .find(|o| o["kind"] == "Role")
        .expect("a Role");
    assert_eq!(
        role["rules"][0]["resourceNames"],
        json!(["shared"]),
        "{role}"
    );
    assert_eq!(
        role["rules"][3]["resourceNames"],
        json!(["generations.example"]),
        "{role}"
    );
    let env = container_env(one(
        &chart::render(release, ns, &set, "deployment.yaml"),
        "Deployment",
    ));
    let values: Vec<&str> = env.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(
        values,
        ["guard-system/shared", "generations.example", "500ms", "2h"]
    );

    // Off: no Role, no discovery URLs, no flags; the Secret watch's grant
    // and the user's own environment stay.
    let off = ["discovery.enabled=false"];
    let rbac = chart::render(release, ns, &off, "rbac.yaml");
    assert_eq!(kinds(&rbac), ["ClusterRole", "ClusterRoleBinding"]);
    assert_eq!(
        one(&rbac, "ClusterRole")["rules"],
        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]}])
    );
    for o in &rbac {
        assert!(
            !o.to_string().contains("nonResourceURLs"),
            "discovery is off but {o}"
        );
    }
    let deployment = chart::render(release, ns, &off, "deployment.yaml");
    let spec = &one(&deployment, "Deployment")["spec"]["template"]["spec"];
    assert!(spec["containers"][0].get("env").is_none(), "{spec}");
    let env = container_env(one(
        &chart::render(
            release,
            ns,
            &[
                off[0],
                "extraEnv[0].name=RUST_BACKTRACE",
                "extraEnv[0].value=full",
            ],
            "deployment.yaml",
        ),
        "Deployment",
    ));
    assert_eq!(env, [("RUST_BACKTRACE".to_owned(), "full".to_owned())]);

    // Durations the binary would refuse at start-up are refused at install:
    // Go's compound and fractional forms, zero, days, no unit.
    let home = tempfile::tempdir().unwrap();
    for bad in ["1h30m", "1.5s", "0s", "2d", "10", "ten seconds"] {
        for key in ["interval", "window"] {
            let set = format!("discovery.{key}={bad}");
            assert_refused(
                home.path(),
                &["--set-string", &set],
                &format!("/discovery/{key}"),
            );
        }
    }
    for bad in ["Ledger", "ledger_1", "-ledger", &"l".repeat(254)] {
        let set = format!("discovery.ledger={bad}");
        assert_refused(home.path(), &["--set-string", &set], "/discovery/ledger");
    }
}

async fn secret_data(client: &Client, ns: &str, name: &str) -> Vec<(String, Vec<u8>)> {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("Secret {ns}/{name}: {e}"));
    let mut data: Vec<(String, Vec<u8>)> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    data.sort();
    data
}

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

/// A client that authenticates with `token` and trusts the test CA.
async fn token_client(cp: &ControlPlane, token: &str, dir: &Path) -> (Client, PathBuf) {
    let admin: Value = serde_saphyr::from_str(&std::fs::read_to_string(&cp.kubeconfig).unwrap())
        .expect("the admin kubeconfig");
    let url = admin["clusters"][0]["cluster"]["server"]
        .as_str()
        .expect("a server")
        .to_owned();
    let path = dir.join("sa.kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster: {{server: \"{url}\", certificate-authority: \"{}\"}}\n\
             users:\n- name: sa\n  user: {{token: \"{token}\"}}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: sa}}\ncurrent-context: e2e\n",
            cp.pki.ca_cert.display()
        ),
    )
    .unwrap();
    let kc = Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    (Client::try_from(config).unwrap(), path)
}

/// A Pod that passes the `restricted` standard, for the release namespace.
fn restricted_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": IMAGE, "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]
        }
    })
}

async fn create_in(client: &Client, ns: &str, obj: &Value) -> Result<Value, kube::Error> {
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::discovery::ApiResource::erase::<Pod>(&()),
    );
    let object = serde_json::from_value(obj.clone()).expect("an object");
    api.create(&PostParams::default(), &object)
        .await
        .map(|o| serde_json::to_value(o).expect("JSON"))
}

fn assert_forbidden<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// The chart's discovery RBAC as the API server enforces it, for `sa`, the
/// chart's ServiceAccount in the release `issuer-guard`.
async fn assert_discovery_rbac(admin: &Client, sa: &Client) {
    // The API server binds the discovery URLs to every ServiceAccount by
    // default; hardened clusters remove that binding. Without it, the
    // chart's own ClusterRole rule is what is checked below. The API server
    // only restores it when it restarts, which this one does not.
    Api::<ClusterRoleBinding>::all(admin.clone())
        .delete(
            "system:service-account-issuer-discovery",
            &Default::default(),
        )
        .await
        .expect("delete the default issuer discovery binding");
    for path in ["/.well-known/openid-configuration", "/openid/v1/jwks"] {
        let request = http::Request::get(path).body(Vec::new()).unwrap();
        let body = sa
            .request_text(request)
            .await
            .unwrap_or_else(|e| panic!("GET {path} with the chart's ServiceAccount: {e}"));
        assert!(
            body.contains(if path.ends_with("jwks") {
                "keys"
            } else {
                ISSUER
            }),
            "{path}: {body}"
        );
    }

    let token_request: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 600}}))
            .unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(sa.clone(), RELEASE_NS);
    accounts
        .create_token_request(RELEASE, &PostParams::default(), &token_request)
        .await
        .expect("a token for its own ServiceAccount");
    assert_forbidden(
        "a token for another ServiceAccount",
        accounts
            .create_token_request("default", &PostParams::default(), &token_request)
            .await,
    );

    let ledger = format!("{RELEASE}-ledger");
    let config_maps: Api<ConfigMap> = Api::namespaced(sa.clone(), RELEASE_NS);
    let object = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}, "data": {"generation": "1"}}))
            .unwrap()
    };
    config_maps
        .create(&PostParams::default(), &object(&ledger))
        .await
        .expect("create the ledger");
    let change = Patch::Merge(json!({"data": {"generation": "2"}}));
    config_maps
        .patch(&ledger, &PatchParams::default(), &change)
        .await
        .expect("patch the ledger");
    // Listing is allowed for the ledger's name alone, as its watch asks.
    assert_forbidden(
        "listing every ConfigMap in the release namespace",
        config_maps.list(&ListParams::default()).await,
    );
    let listed = config_maps
        .list(&ListParams::default().fields(&format!("metadata.name={ledger}")))
        .await
        .expect("list the ledger by name");
    assert!(
        listed
            .items
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some(ledger.as_str()))
    );
    assert_forbidden(
        "patching the chart's own config ConfigMap",
        config_maps
            .patch("issuer-guard-config", &PatchParams::default(), &change)
            .await,
    );
    assert_forbidden(
        "deleting the ledger",
        config_maps.delete(&ledger, &Default::default()).await,
    );
    assert_forbidden(
        "creating a ConfigMap outside the release namespace",
        Api::<ConfigMap>::namespaced(sa.clone(), NS)
            .create(&PostParams::default(), &object(&ledger))
            .await,
    );
    assert_forbidden(
        "reading ConfigMaps outside the release namespace",
        Api::<ConfigMap>::namespaced(sa.clone(), NS)
            .list(&ListParams::default())
            .await,
    );
}

fn stamped(obj: &Value) -> Option<&str> {
    obj["metadata"]["labels"][GENERATION_LABEL].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installs_upgrades_and_uninstalls_on_the_real_api_server_under_restricted_pss() {
    let cp = ControlPlane::start(ServiceAccountFlags::issuer(ISSUER)).await;
    let home = cp.dir().join("helm");
    std::fs::create_dir_all(&home).unwrap();
    let kubeconfig = cp.kubeconfig.to_str().unwrap().to_owned();
    let namespaces: Api<Namespace> = Api::all(cp.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": RELEASE_NS, "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/warn": "restricted",
            }}}))
            .unwrap(),
        )
        .await
        .expect("create the release namespace");

    let (port, health_port) = (free_port(), free_port());
    let values = home.join("values.yaml");
    std::fs::write(
        &values,
        format!(
            "webhook:\n  urlOverride: \"https://127.0.0.1:{port}\"\ntls:\n  extraIPs: [\"127.0.0.1\"]\n\
             config:\n  generation:\n    static: {{number: 1, issuer: \"{ISSUER}\", keyId: \"\"}}\n  rotation: {{retiringKeyIds: [old-kid]}}\n"
        ),
    )
    .unwrap();
    let values = values.to_str().unwrap().to_owned();
    let base = [
        "--kubeconfig",
        kubeconfig.as_str(),
        "--namespace",
        RELEASE_NS,
    ];

    let started = Instant::now();
    let mut args = vec!["install", RELEASE, CHART, "-f", values.as_str()];
    args.extend_from_slice(&base);
    let out = helm(&home, &args);
    let install_time = started.elapsed();
    let notes = ok(&out, "helm install");
    // The notes tell an operator where the discovered generation lives.
    assert!(
        notes.contains("generation discovered from the API server")
            && notes.contains(&format!("get configmap {RELEASE}-ledger")),
        "{notes}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("violate PodSecurity"), "{stderr}");

    // The ReplicaSet controller creates the chart's pods, and Pod Security
    // admission enforces `restricted` on each: three pods mean it passed.
    let pods: Api<Pod> = Api::namespaced(cp.client.clone(), RELEASE_NS);
    eventually(
        "the chart's 3 pods admitted under restricted",
        Duration::from_secs(60),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app.kubernetes.io/instance=issuer-guard"))
                .await
                .ok()?;
            (list.items.len() == 3).then_some(())
        },
    )
    .await;

    // What the pods would mount, read back from the API server.
    let dir = cp.dir().join("host-webhook");
    std::fs::create_dir_all(&dir).unwrap();
    let tls = secret_data(&cp.client, RELEASE_NS, "issuer-guard-tls").await;
    for (key, bytes) in &tls {
        std::fs::write(dir.join(key), bytes).unwrap();
    }
    let config_map = Api::<ConfigMap>::namespaced(cp.client.clone(), RELEASE_NS)
        .get("issuer-guard-config")
        .await
        .expect("the chart's ConfigMap");
    let config_path = dir.join("config.yaml");
    let config_text = |cm: &ConfigMap| {
        cm.data
            .as_ref()
            .and_then(|d| d.get("config.yaml"))
            .cloned()
            .expect("config.yaml in the ConfigMap")
    };
    write_atomically(&config_path, &config_text(&config_map));

    // The chart's ServiceAccount, through a TokenRequest: its RBAC is all
    // the host process gets.
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
    let (sa_client, sa_kubeconfig) = token_client(&cp, &token, &dir).await;

    let mut host = Proc::spawn(
        "issuer-guard",
        &support::issuer_guard_bin(),
        &[
            "serve".into(),
            format!("--listen=127.0.0.1:{port}"),
            format!("--health-listen=127.0.0.1:{health_port}"),
            format!("--tls-cert={}", dir.join("tls.crt").display()),
            format!("--tls-key={}", dir.join("tls.key").display()),
            format!("--config={}", config_path.display()),
            format!("--kubeconfig={}", sa_kubeconfig.display()),
            "--reload-interval=200ms".into(),
        ],
        dir.join("issuer-guard.log"),
    );
    // Ready means the Secret watch synced: list and watch are allowed.
    host.wait_ready(&format!("127.0.0.1:{health_port}")).await;

    let plain = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": IMAGE}]}})
    };
    let pod = eventually(
        "a Pod stamped through the installed webhooks",
        Duration::from_secs(30),
        || async {
            let c = api::create::<Pod>(&cp.client, &plain("probe"), true).await;
            stamped(&c.body).is_some().then_some(c.body)
        },
    )
    .await;
    assert_eq!(stamped(&pod), Some("1"), "{pod}");
    let created = create_in(&cp.client, NS, &plain("stamped"))
        .await
        .expect("a Pod in e2e");
    assert_eq!(stamped(&created), Some("1"), "{created}");

    // A legacy token read from the environment by a bare Deployment is
    // certain to break under the declared key rotation: denied.
    api::legacy_token_secret(&cp.client, "default", "app-token").await;
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "env-dep"},
        "spec": {"selector": {"matchLabels": {"app": "env-dep"}}, "template": {
            "metadata": {"labels": {"app": "env-dep"}},
            "spec": {"containers": [{"name": "c", "image": IMAGE, "env": [{"name": "TOKEN",
                "valueFrom": {"secretKeyRef": {"name": "app-token", "key": "token"}}}]}]}}}
    });
    let denial = eventually("the Deployment denied", Duration::from_secs(30), || async {
        let c = api::create::<Deployment>(&cp.client, &deployment, true).await;
        (!(200..300).contains(&c.status))
            .then(|| c.body["message"].as_str().unwrap_or_default().to_owned())
    })
    .await;
    assert!(denial.contains("legacy-token-env"), "{denial}");

    // The release namespace and kube-system are never sent to the webhook.
    let own = create_in(&cp.client, RELEASE_NS, &restricted_pod("own"))
        .await
        .expect("a Pod in the release namespace");
    assert_eq!(stamped(&own), None, "{own}");
    let system = eventually("a Pod in kube-system", Duration::from_secs(30), || async {
        create_in(&cp.client, "kube-system", &plain("system"))
            .await
            .ok()
    })
    .await;
    assert_eq!(stamped(&system), None, "{system}");

    // The ServiceAccount may list and watch Secrets' metadata, never get one.
    let err = Api::<Secret>::namespaced(sa_client.clone(), NS)
        .get("app-token")
        .await
        .expect_err("the chart's ServiceAccount read a Secret");
    assert!(
        matches!(&err, kube::Error::Api(e) if e.code == 403),
        "{err}"
    );

    // Discovery's grants (on by default), used with the ServiceAccount's own
    // token: what the binary needs works, and one step beside it is refused.
    assert_discovery_rbac(&cp.client, &sa_client).await;

    // An upgrade that changes only the config and the webhooks keeps the
    // certificate, the CA and the pods.
    let tls_before = secret_data(&cp.client, RELEASE_NS, "issuer-guard-tls").await;
    let bundles_before = ca_bundles(&cp.client).await;
    let deployments: Api<Deployment> = Api::namespaced(cp.client.clone(), RELEASE_NS);
    let generation_before = deployments.get(RELEASE).await.unwrap().metadata.generation;
    let started = Instant::now();
    let mut args = vec![
        "upgrade",
        RELEASE,
        CHART,
        "-f",
        values.as_str(),
        "--set",
        "config.generation.static.number=2",
        "--set",
        "webhook.timeoutSeconds=10",
    ];
    args.extend_from_slice(&base);
    ok(&helm(&home, &args), "helm upgrade");
    let upgrade_time = started.elapsed();
    assert_eq!(
        secret_data(&cp.client, RELEASE_NS, "issuer-guard-tls").await,
        tls_before,
        "the upgrade changed the TLS Secret"
    );
    assert_eq!(
        ca_bundles(&cp.client).await,
        bundles_before,
        "the upgrade changed the caBundle"
    );
    assert_eq!(
        deployments.get(RELEASE).await.unwrap().metadata.generation,
        generation_before,
        "a config-only upgrade changed the pod template, which restarts every pod"
    );
    let v = Api::<ValidatingWebhookConfiguration>::all(cp.client.clone())
        .get(RELEASE)
        .await
        .unwrap();
    assert_eq!(v.webhooks.unwrap()[0].timeout_seconds, Some(10));
    // The new config reaches the running webhook as kubelet would deliver
    // it, without a restart.
    let config_map = Api::<ConfigMap>::namespaced(cp.client.clone(), RELEASE_NS)
        .get("issuer-guard-config")
        .await
        .unwrap();
    write_atomically(&config_path, &config_text(&config_map));
    eventually(
        "generation 2 stamped after the upgrade",
        Duration::from_secs(30),
        || async {
            let c = api::create::<Pod>(&cp.client, &plain("after-upgrade"), true).await;
            (stamped(&c.body) == Some("2")).then_some(())
        },
    )
    .await;

    let mut args = vec!["uninstall", RELEASE, "--wait"];
    args.extend_from_slice(&base);
    ok(&helm(&home, &args), "helm uninstall");
    assert!(
        Api::<MutatingWebhookConfiguration>::all(cp.client.clone())
            .get_opt(RELEASE)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<ValidatingWebhookConfiguration>::all(cp.client.clone())
            .get_opt(RELEASE)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<ClusterRole>::all(cp.client.clone())
            .get_opt(RELEASE)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<ClusterRoleBinding>::all(cp.client.clone())
            .get_opt(RELEASE)
            .await
            .unwrap()
            .is_none()
    );
    let left: Vec<String> = Api::<Secret>::namespaced(cp.client.clone(), RELEASE_NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .filter(|n| n.starts_with(RELEASE))
        .collect();
    assert!(left.is_empty(), "Secrets left behind: {left:?}");
    assert!(
        Api::<ServiceAccount>::namespaced(cp.client.clone(), RELEASE_NS)
            .get_opt(RELEASE)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<ConfigMap>::namespaced(cp.client.clone(), RELEASE_NS)
            .get_opt("issuer-guard-config")
            .await
            .unwrap()
            .is_none()
    );
    eprintln!("helm install took {install_time:?}, helm upgrade {upgrade_time:?}");
}
