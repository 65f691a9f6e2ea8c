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
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use issuer_guard::config::fields::Shape;
use k8s_openapi::api::{
    admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
        ValidatingWebhookConfiguration,
    },
    apps::v1::Deployment,
    authentication::v1::TokenReview,
    core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount},
    discovery::v1::EndpointSlice,
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{
    ControlPlane, NS, ServiceAccountFlags, api,
    chart::{self, CHART, IMAGE_REPOSITORY, helm, image_values, ok},
    eventually,
    process::{Proc, free_port},
    webhook::{AT_RISK_LABEL, GENERATION_LABEL, write_atomically},
};

const RELEASE: &str = "issuer-guard";
/// The ServiceAccount discovery mints its tokens for, in the release.
const CANARY: &str = "issuer-guard-canary";
/// The Secret discovery keeps its canary tokens in: the ledger's name and
/// `-canary`.
const CANARY_SECRET: &str = "issuer-guard-ledger-canary";
/// The audience of the canary tokens, which no API accepts.
const CANARY_AUDIENCE: &str = "issuer-guard.io/canary";
/// The namespace the READMEs install into.
const RELEASE_NS: &str = "issuer-guard";
/// The inventory's Deployment, Service, ServiceAccount and RBAC in the
/// release [`RELEASE`].
const INVENTORY: &str = "issuer-guard-inventory";
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

/// The one object of `kind` named `name`.
fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} {name}, found {}",
        found.len()
    );
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
    assert!(files.len() >= 7, "{files:?}");
    for file in &files {
        let f = file.to_str().unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        ok(
            &helm(home.path(), &["lint", "--strict", CHART, "-f", f]),
            &format!("helm lint {f}"),
        );
        let objects = render(home.path(), &["-f", f]);
        let deployment = named(&objects, "Deployment", RELEASE);
        assert_restricted(&deployment["spec"]["template"]["spec"]);
        // Discovery is on in every file, so the inventory is there too, as
        // restricted as the webhook.
        assert_restricted(&named(&objects, "Deployment", INVENTORY)["spec"]["template"]["spec"]);
        let validating = one(&objects, "ValidatingWebhookConfiguration");
        let mutating = one(&objects, "MutatingWebhookConfiguration");
        // Only the file that declares a rotation makes the validating
        // webhook fail closed (`auto`).
        let validating_policy = if name == "rotation-values.yaml" {
            "Fail"
        } else {
            "Ignore"
        };
        for (config, policy) in [(validating, validating_policy), (mutating, "Ignore")] {
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

        // Discovery is on in every file: the ledger and the canary Secret
        // are protected, and the chart never renders either itself
        // (issuer-guard writes them), whatever Secrets its TLS mode renders.
        for policy in ["issuer-guard-ledger", "issuer-guard-ledger-canary"] {
            named(&objects, "ValidatingAdmissionPolicy", policy);
            named(&objects, "ValidatingAdmissionPolicyBinding", policy);
        }
        assert_eq!(find(&objects, "ValidatingAdmissionPolicy").len(), 2);
        assert!(
            !objects
                .iter()
                .any(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "issuer-guard-ledger"),
            "{name}: the chart renders the ledger ConfigMap"
        );
        assert!(
            !objects
                .iter()
                .any(|o| o["kind"] == "Secret" && o["metadata"]["name"] == CANARY_SECRET),
            "{name}: the chart renders the canary Secret"
        );

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
            "rotation-values.yaml" => {
                // A bare `off` reaches the binary as the action "off".
                let config = config_file(&objects);
                assert_eq!(config["rules"], json!({"legacy-token-volume": "off"}));
                assert_eq!(
                    config["rotation"]["nextIssuer"], "https://oidc.example.com",
                    "{config}"
                );
            }
            "tls-secret-values.yaml" => {
                assert!(
                    find(&objects, "Secret").is_empty(),
                    "{name}: the chart made a Secret"
                );
                assert!(validating["webhooks"][0]["clientConfig"]["caBundle"].is_string());
            }
            "tls-self-values.yaml" => {
                // issuer-guard makes the Secret and sets the caBundles.
                assert!(
                    find(&objects, "Secret").is_empty(),
                    "{name}: the chart made a Secret"
                );
                for config in [validating, mutating] {
                    for w in config["webhooks"].as_array().expect("webhooks") {
                        assert!(
                            w["clientConfig"].get("caBundle").is_none(),
                            "{name}: a caBundle is rendered: {w}"
                        );
                    }
                }
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
                // The ledger refused: one series per pod, any of them.
                let refused = one(&objects, "PrometheusRule")["spec"]["groups"][0]["rules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["alert"] == "IssuerGuardLedgerRefused")
                    .expect("a ledger alert");
                assert_eq!(
                    refused["expr"],
                    r#"max(issuer_guard_ledger_refused_now{namespace="issuer-guard",job="issuer-guard"}) > 0"#,
                    "{refused}"
                );
                assert_eq!(refused["for"], "5m", "{refused}");
                assert_eq!(refused["labels"]["team"], "platform", "{refused}");
                let said = refused["annotations"]["description"].as_str().unwrap();
                for must in [
                    "issuer-guard/issuer-guard-ledger",
                    "stays in force",
                    "stays unready",
                    "restore the last valid ledger",
                    "delete the ConfigMap: the replicas write back the one they hold",
                    "system:masters",
                ] {
                    assert!(said.contains(must), "{must}: {said}");
                }
                // Without discovery its alerts would never fire, or fire
                // forever: they are not rendered.
                let without = alerts(&render(
                    home.path(),
                    &["-f", f, "--set", "discovery.enabled=false"],
                ));
                // Nor the inventory's, which needs discovery's ledger.
                assert!(
                    !without
                        .iter()
                        .any(|(a, _)| a.starts_with("IssuerGuardDiscovery")
                            || a == "IssuerGuardRotationComing"
                            || a == "IssuerGuardLedgerRefused"
                            || a == "IssuerGuardRetiredWhileBlocked"
                            || a == "IssuerGuardRotationBlocked")
                );
                assert_eq!(without.len() + 5, with.len());
            }
            "inventory-values.yaml" => {
                // Its own ledger name reaches the inventory's flag and Role,
                // and the threshold in days the alert.
                let inventory = named(&objects, "Deployment", INVENTORY);
                let args = inventory["spec"]["template"]["spec"]["containers"][0]["args"].clone();
                for arg in ["--ledger=issuer-guard/generations", "--interval=30s"] {
                    assert!(
                        args.as_array().unwrap().contains(&json!(arg)),
                        "{name}: no {arg} in {args}"
                    );
                }
                assert_eq!(
                    named(&objects, "Role", INVENTORY)["rules"][0]["resourceNames"],
                    json!(["generations"])
                );
                assert!(
                    alert_exprs(&objects)["IssuerGuardRotationBlocked"].ends_with(") > 604800"),
                    "{name}"
                );
                named(&objects, "ServiceMonitor", INVENTORY);
                assert_eq!(
                    inventory["spec"]["template"]["spec"]["tolerations"][0]["key"],
                    "dedicated"
                );
            }
            _ => {}
        }
    }
    // The default: three replicas, a Secret made by the chart, no monitoring
    // objects without their API.
    let objects = render(home.path(), &[]);
    assert_eq!(
        named(&objects, "Deployment", RELEASE)["spec"]["replicas"],
        3
    );
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

/// `helm template` with `extra` (and an image) fails, and its error names
/// `needle`.
fn assert_refused(home: &Path, extra: &[&str], needle: &str) {
    let image = image_values(home);
    let mut args = vec![
        "template",
        RELEASE,
        CHART,
        "--namespace",
        RELEASE_NS,
        "-f",
        image.as_str(),
    ];
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

/// The environment variables `serve` reads for discovery's flags
/// (--service-account, --ledger, --discovery-interval, --discovery-window),
/// as clap defines them: what the chart must set.
fn discovery_env() -> [String; 4] {
    use clap::CommandFactory;
    let cli = issuer_guard::cli::Cli::command();
    let serve = cli.find_subcommand("serve").expect("a serve subcommand");
    [
        "service_account",
        "ledger",
        "discovery_interval",
        "discovery_window",
    ]
    .map(|id| {
        serve
            .get_arguments()
            .find(|a| a.get_id() == id)
            .unwrap_or_else(|| panic!("serve has no argument {id}"))
            .get_env()
            .unwrap_or_else(|| panic!("serve's {id} reads no environment variable"))
            .to_string_lossy()
            .into_owned()
    })
}

/// The environment variable `serve` reads `--apiserver-endpoints` from.
fn apiserver_endpoints_env() -> String {
    use clap::CommandFactory;
    let cli = issuer_guard::cli::Cli::command();
    let serve = cli.find_subcommand("serve").expect("a serve subcommand");
    serve
        .get_arguments()
        .find(|a| a.get_id() == "apiserver_endpoints")
        .expect("serve has --apiserver-endpoints")
        .get_env()
        .expect("--apiserver-endpoints reads an environment variable")
        .to_string_lossy()
        .into_owned()
}

/// Discovery's flags and the RBAC they need come together or not at all,
/// and the RBAC is exactly the least the binary needs: tokens for the
/// canary alone and a read of that account, the two discovery URLs,
/// TokenReviews of the canaries, a list of the EndpointSlices in `default`
/// (unless the API servers are named), and writes to its ledger and its
/// canary Secret by name only (and `create`, which RBAC cannot narrow).
/// The Secret watch can be turned off with discovery still on: then the
/// binary is told not to watch, and the cluster-wide Secret grant goes.
#[test]
fn the_secret_watch_and_its_cluster_wide_grant_go_together() {
    let args = |set: &[&str]| -> Vec<String> {
        let deployment = chart::render(RELEASE, RELEASE_NS, set, "deployment.yaml");
        one(&deployment, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("an arg").to_owned())
            .collect()
    };
    let secrets_rule =
        json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]});
    let on = chart::render(RELEASE, RELEASE_NS, &[], "rbac.yaml");
    assert_eq!(one(&on, "ClusterRole")["rules"][0], secrets_rule);
    assert!(!args(&[]).iter().any(|a| a.starts_with("--watch-secrets")));

    let off = ["secretWatch.enabled=false"];
    assert!(args(&off).contains(&"--watch-secrets=false".to_owned()));
    let rbac = chart::render(RELEASE, RELEASE_NS, &off, "rbac.yaml");
    assert_eq!(
        kinds(&rbac),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding"
        ]
    );
    assert_eq!(
        one(&rbac, "ClusterRole")["rules"],
        json!([
            {"nonResourceURLs": ["/.well-known/openid-configuration", "/openid/v1/jwks"], "verbs": ["get"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        ])
    );
    // No Secret grant is left cluster-wide; discovery keeps its own, in the
    // release namespace: its canary Secret by name, and `create`.
    assert!(
        !one(&rbac, "ClusterRole")
            .to_string()
            .contains("\"secrets\"")
    );
    let secret_rules: Vec<Value> = find(&rbac, "Role")
        .into_iter()
        .flat_map(|r| r["rules"].as_array().cloned().unwrap_or_default())
        .filter(|rule| rule["resources"] == json!(["secrets"]))
        .collect();
    assert_eq!(
        secret_rules,
        [
            json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": [CANARY_SECRET], "verbs": ["get", "update"]}),
            json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}),
        ]
    );
    // With discovery off too, nothing cluster-wide is left to grant.
    let home = tempfile::tempdir().expect("a helm home");
    let all = render(
        home.path(),
        &[
            "--set",
            "secretWatch.enabled=false",
            "--set",
            "discovery.enabled=false",
        ],
    );
    assert!(
        find(&all, "ClusterRole").is_empty() && find(&all, "ClusterRoleBinding").is_empty(),
        "{:?}",
        kinds(&all)
    );
}

#[test]
fn discovery_flags_and_rbac_are_rendered_together_with_least_privilege() {
    // Names that differ from the binary's defaults (issuer-guard-ledger), so
    // a chart that forgot to pass one would be caught.
    let (release, ns) = ("edge", "guard-system");
    let (fullname, ledger) = ("edge-issuer-guard", "edge-issuer-guard-ledger");
    let canary = "edge-issuer-guard-canary";
    let canary_secret = "edge-issuer-guard-ledger-canary";
    let service_account = json!({"kind": "ServiceAccount", "name": fullname, "namespace": ns});

    let rbac = chart::render(release, ns, &[], "rbac.yaml");
    assert_eq!(
        kinds(&rbac),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding"
        ]
    );
    let cluster_role = one(&rbac, "ClusterRole");
    assert_eq!(
        cluster_role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]},
            {"nonResourceURLs": ["/.well-known/openid-configuration", "/openid/v1/jwks"], "verbs": ["get"]},
            // TokenReviews are cluster-scoped, and only ever created.
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        ]),
        "{cluster_role}"
    );
    assert_eq!(
        one(&rbac, "ClusterRoleBinding")["subjects"],
        json!([service_account])
    );
    // The Role in the release namespace: tokens for the canary alone, never
    // for its own account (a token with no audience authenticates as its
    // account), and a read of the canary account alone (its UID); the ledger
    // and the canary Secret by name (a `get` of the Secret, never a list or
    // watch; no `patch` or `delete`), and `create` of each kind.
    let role = named(&rbac, "Role", &format!("{fullname}-discovery"));
    assert_eq!(role["metadata"]["namespace"], ns, "{role}");
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["serviceaccounts/token"], "resourceNames": [canary], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["serviceaccounts"], "resourceNames": [canary], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [ledger], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [ledger], "verbs": ["update", "patch"]},
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [canary_secret], "verbs": ["get", "update"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        ]),
        "{role}"
    );
    let binding = named(&rbac, "RoleBinding", &format!("{fullname}-discovery"));
    assert_eq!(binding["metadata"]["namespace"], ns, "{binding}");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}),
        "{binding}"
    );
    assert_eq!(binding["subjects"], json!([service_account]), "{binding}");
    // The Role in `default`: list EndpointSlices (every API server's
    // address), nothing else; RBAC cannot narrow a list by label.
    let apiservers = format!("{fullname}-apiservers");
    let role = named(&rbac, "Role", &apiservers);
    assert_eq!(role["metadata"]["namespace"], "default", "{role}");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]}]),
        "{role}"
    );
    let binding = named(&rbac, "RoleBinding", &apiservers);
    assert_eq!(binding["metadata"]["namespace"], "default", "{binding}");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": apiservers}),
        "{binding}"
    );
    assert_eq!(binding["subjects"], json!([service_account]), "{binding}");

    let deployments = chart::render(release, ns, &[], "deployment.yaml");
    let env = container_env(one(&deployments, "Deployment"));
    let want: Vec<(String, String)> = discovery_env()
        .into_iter()
        .zip([&format!("{ns}/{canary}"), ledger, "10s", "5m"])
        .map(|(k, v)| (k, v.to_owned()))
        .collect();
    assert_eq!(env, want);

    // Another ServiceAccount and ledger: the flags and the Roles still name
    // the same ones, and the durations are passed through as given. The
    // canary is the chart's whatever account the pods run as.
    let set = [
        "serviceAccount.create=false",
        "serviceAccount.name=shared",
        "discovery.ledger=generations.example",
        "discovery.interval=500ms",
        "discovery.window=2h",
    ];
    let rbac = chart::render(release, ns, &set, "rbac.yaml");
    let role = named(&rbac, "Role", &format!("{fullname}-discovery"));
    assert_eq!(role["rules"][0]["resourceNames"], json!([canary]), "{role}");
    assert_eq!(role["rules"][1]["resourceNames"], json!([canary]), "{role}");
    assert_eq!(
        role["rules"][4]["resourceNames"],
        json!(["generations.example"]),
        "{role}"
    );
    // The canary Secret is the binary's `<ledger>-canary`, whatever the
    // ledger is called.
    assert_eq!(
        role["rules"][5]["resourceNames"],
        json!(["generations.example-canary"]),
        "{role}"
    );
    for binding in find(&rbac, "RoleBinding") {
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "shared", "namespace": ns}]),
            "{binding}"
        );
    }
    let env = container_env(one(
        &chart::render(release, ns, &set, "deployment.yaml"),
        "Deployment",
    ));
    let values: Vec<&str> = env.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(
        values,
        [
            "guard-system/edge-issuer-guard-canary",
            "generations.example",
            "500ms",
            "2h"
        ]
    );

    // The API servers named: passed joined by commas, and no EndpointSlice
    // grant, since nothing reads them.
    let set = [
        "discovery.apiserverEndpoints[0]=https://10.0.0.11:6443",
        "discovery.apiserverEndpoints[1]=https://[fd00::12]:6443",
    ];
    let env = container_env(one(
        &chart::render(release, ns, &set, "deployment.yaml"),
        "Deployment",
    ));
    assert_eq!(
        env.last(),
        Some(&(
            apiserver_endpoints_env(),
            "https://10.0.0.11:6443,https://[fd00::12]:6443".to_owned()
        )),
        "{env:?}"
    );
    assert_eq!(env.len(), 5, "{env:?}");
    let rbac = chart::render(release, ns, &set, "rbac.yaml");
    assert_eq!(
        kinds(&rbac),
        ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
    );
    assert!(
        !serde_json::to_string(&rbac)
            .unwrap()
            .contains("endpointslices"),
        "{rbac:?}"
    );
    let home = tempfile::tempdir().unwrap();
    for bad in [
        "http://10.0.0.11:6443",
        "https://a:1\\,https://b:1",
        "10.0.0.11:6443",
    ] {
        let set = format!("discovery.apiserverEndpoints[0]={bad}");
        assert_refused(
            home.path(),
            &["--set-string", &set],
            "/discovery/apiserverEndpoints/0",
        );
    }

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
        let text = o.to_string();
        assert!(
            !text.contains("nonResourceURLs")
                && !text.contains("tokenreviews")
                && !text.contains("canary"),
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
    // Its canary Secret, `<ledger>-canary`, must still be a valid name (253
    // characters at most): the longest ledger is 246.
    for bad in ["Ledger", "ledger_1", "-ledger", &"l".repeat(247)] {
        let set = format!("discovery.ledger={bad}");
        assert_refused(home.path(), &["--set-string", &set], "/discovery/ledger");
    }
    let longest = "l".repeat(246);
    let set = format!("discovery.ledger={longest}");
    let rbac = chart::render(release, ns, &[set.as_str()], "rbac.yaml");
    let role = named(&rbac, "Role", &format!("{fullname}-discovery"));
    assert_eq!(
        role["rules"][5]["resourceNames"],
        json!([format!("{longest}-canary")]),
        "{role}"
    );
}

/// Discovery mints its tokens for a ServiceAccount of its own, the canary,
/// which the chart creates with discovery and binds to nothing: a token
/// minted with no audience authenticates as it, so it may do nothing. The
/// pods never run as it, and a cloud identity annotation meant for the pods
/// never reaches it.
#[test]
fn the_canary_account_is_made_for_discovery_and_bound_to_nothing() {
    let home = tempfile::tempdir().unwrap();
    let (canary, ledger) = ("issuer-guard-canary", "issuer-guard-ledger");
    let annotated =
        "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/guard";
    let objects = render(home.path(), &["--set", annotated]);
    let account = named(&objects, "ServiceAccount", canary);
    assert_eq!(account["metadata"]["namespace"], RELEASE_NS, "{account}");
    assert_eq!(account["automountServiceAccountToken"], false, "{account}");
    assert!(
        account["metadata"].get("annotations").is_none(),
        "{account}"
    );
    let own = named(&objects, "ServiceAccount", RELEASE);
    assert!(own["metadata"]["annotations"].is_object(), "{own}");
    assert_eq!(pod_spec(&objects)["serviceAccountName"], RELEASE);

    // No binding anywhere in the release (the helm test's hooks included)
    // has it as a subject, and the only rules that name it are the grants
    // to mint its tokens and to read it.
    for binding in objects
        .iter()
        .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
    {
        for subject in binding["subjects"].as_array().expect("subjects") {
            assert_ne!(subject["name"], canary, "{binding}");
        }
    }
    let naming: Vec<Value> = objects
        .iter()
        .filter(|o| o["kind"] == "Role" || o["kind"] == "ClusterRole")
        .flat_map(|r| r["rules"].as_array().into_iter().flatten().cloned())
        .filter(|rule| rule.to_string().contains(canary))
        .collect();
    assert_eq!(
        naming,
        [
            json!({"apiGroups": [""], "resources": ["serviceaccounts/token"], "resourceNames": [canary], "verbs": ["create"]}),
            json!({"apiGroups": [""], "resources": ["serviceaccounts"], "resourceNames": [canary], "verbs": ["get"]}),
        ]
    );
    // Its namespace and name are what discovery is given.
    assert!(
        container_env(named(&objects, "Deployment", RELEASE)).contains(&(
            "ISSUER_GUARD_SERVICE_ACCOUNT".to_owned(),
            format!("{RELEASE_NS}/{canary}")
        ))
    );
    assert!(
        !objects
            .iter()
            .any(|o| o["metadata"]["name"] == ledger && o["kind"] == "ConfigMap")
    );

    // Made with discovery whoever makes the pods' account, and only then.
    let theirs = render(
        home.path(),
        &[
            "--set",
            "serviceAccount.create=false",
            "--set",
            "serviceAccount.name=shared",
        ],
    );
    named(&theirs, "ServiceAccount", canary);
    let off = render(home.path(), &["--set", "discovery.enabled=false"]);
    assert!(
        !serde_json::to_string(&off).unwrap().contains(canary),
        "discovery is off, yet the canary is rendered"
    );
    // The pods may not run as the canary.
    assert_refused(
        home.path(),
        &["--set", &format!("serviceAccount.name={canary}")],
        "is the canary ServiceAccount",
    );
}

/// The ledger and the canary Secret beside it are written by issuer-guard's
/// own ServiceAccount alone: a ValidatingAdmissionPolicy in the chart for
/// each holds every other writer off it (`system:masters` is the break
/// glass), and the chart never renders either itself.
#[test]
fn the_ledger_policy_lets_only_issuer_guards_account_write_the_ledger() {
    let (release, ns) = ("edge", "guard-system");
    let (fullname, ledger) = ("edge-issuer-guard", "edge-issuer-guard-ledger");
    let canary_secret = "edge-issuer-guard-ledger-canary";
    // The ledger's policy and binding, then the canary Secret's.
    let policies_of = |set: &[&str]| -> [Value; 4] {
        let objects = chart::render(release, ns, set, "ledger-policy.yaml");
        assert_eq!(
            kinds(&objects),
            [
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
                "ValidatingAdmissionPolicyBinding"
            ]
        );
        let ledger = format!("{fullname}-ledger");
        let canary = format!("{fullname}-ledger-canary");
        [
            named(&objects, "ValidatingAdmissionPolicy", &ledger).clone(),
            named(&objects, "ValidatingAdmissionPolicyBinding", &ledger).clone(),
            named(&objects, "ValidatingAdmissionPolicy", &canary).clone(),
            named(&objects, "ValidatingAdmissionPolicyBinding", &canary).clone(),
        ]
    };
    let [policy, binding, canary_policy, canary_binding] = policies_of(&[]);
    assert_eq!(policy["apiVersion"], "admissionregistration.k8s.io/v1");
    assert_eq!(policy["metadata"]["name"], format!("{fullname}-ledger"));
    let spec = &policy["spec"];
    assert_eq!(spec["failurePolicy"], "Fail", "{spec}");
    assert_eq!(
        spec["matchConstraints"],
        json!({"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE", "DELETE"], "resources": ["configmaps"]}]}),
        "{spec}"
    );
    // The ledger by name, from the request (set on CREATE too) or from the
    // old object (a deletecollection's DELETE has no request name), every
    // field tested before it is read: with Fail, an error would refuse
    // writes to every ConfigMap in the namespace.
    let is_ledger = format!(
        "(has(request.name) && request.name == '{ledger}') || (oldObject != null && has(oldObject.metadata.name) && oldObject.metadata.name == '{ledger}')"
    );
    assert_eq!(
        spec["matchConditions"],
        json!([{"name": "the-ledger", "expression": is_ledger}]),
        "{spec}"
    );
    let validations = spec["validations"].as_array().expect("validations");
    assert_eq!(validations.len(), 1, "{spec}");
    let writers = format!(
        "request.userInfo.username == 'system:serviceaccount:{ns}:{fullname}' || (has(request.userInfo.groups) && 'system:masters' in request.userInfo.groups)"
    );
    assert_eq!(
        validations[0]["expression"],
        format!(
            "{writers} || (request.operation == 'DELETE' && namespaceObject != null && has(namespaceObject.metadata.deletionTimestamp))"
        ),
        "{spec}"
    );
    let message = validations[0]["message"].as_str().expect("a message");
    for must in [
        &format!("only issuer-guard's ServiceAccount {ns}/{fullname} may create, change or delete"),
        ledger,
        "system:masters is the break glass",
    ] {
        assert!(message.contains(must), "{must}: {message}");
    }
    assert_eq!(validations[0]["reason"], "Forbidden");
    assert_eq!(
        binding["spec"],
        json!({
            "policyName": format!("{fullname}-ledger"),
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}},
        }),
        "{binding}"
    );

    // The canary Secret: the same rule, in a policy of its own that matches
    // Secrets (not ConfigMaps) and this one by name, with the same care:
    // with Fail, an error would refuse writes to every Secret in the
    // namespace, the TLS Secret among them.
    let spec = &canary_policy["spec"];
    assert_eq!(spec["failurePolicy"], "Fail", "{spec}");
    assert_eq!(
        spec["matchConstraints"],
        json!({"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE", "DELETE"], "resources": ["secrets"]}]}),
        "{spec}"
    );
    let is_canary_secret = format!(
        "(has(request.name) && request.name == '{canary_secret}') || (oldObject != null && has(oldObject.metadata.name) && oldObject.metadata.name == '{canary_secret}')"
    );
    assert_eq!(
        spec["matchConditions"],
        json!([{"name": "the-canary-secret", "expression": is_canary_secret}]),
        "{spec}"
    );
    let canary_validations = spec["validations"].as_array().expect("validations");
    assert_eq!(canary_validations.len(), 1, "{spec}");
    // The same writers, and the same terminating-namespace exception.
    assert_eq!(
        canary_validations[0]["expression"], validations[0]["expression"],
        "{spec}"
    );
    let message = canary_validations[0]["message"]
        .as_str()
        .expect("a message");
    for must in [
        &format!("only issuer-guard's ServiceAccount {ns}/{fullname} may create, change or delete"),
        &format!("the canary Secret {canary_secret}"),
        "system:masters is the break glass",
    ] {
        assert!(message.contains(must), "{must}: {message}");
    }
    assert_eq!(canary_validations[0]["reason"], "Forbidden");
    assert_eq!(
        canary_binding["spec"],
        json!({
            "policyName": format!("{fullname}-ledger-canary"),
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}},
        }),
        "{canary_binding}"
    );

    // Another account and ledger: the policies name them, and the canary
    // Secret follows the ledger's name.
    let [policy, _, canary_policy, _] = policies_of(&[
        "serviceAccount.create=false",
        "serviceAccount.name=shared",
        "discovery.ledger=generations.example",
    ]);
    let text = policy["spec"].to_string();
    assert!(
        text.contains("request.name == 'generations.example'")
            && text.contains("'system:serviceaccount:guard-system:shared'")
            && !text.contains(ledger),
        "{text}"
    );
    let text = canary_policy["spec"].to_string();
    assert!(
        text.contains("request.name == 'generations.example-canary'")
            && text.contains("'system:serviceaccount:guard-system:shared'")
            && !text.contains(ledger),
        "{text}"
    );

    // Off with protectLedger=false or without discovery; and the chart never
    // renders the ledger ConfigMap, whatever the values.
    let home = tempfile::tempdir().unwrap();
    for set in ["discovery.protectLedger=false", "discovery.enabled=false"] {
        let objects = render(home.path(), &["--set", set]);
        assert!(
            find(&objects, "ValidatingAdmissionPolicy").is_empty()
                && find(&objects, "ValidatingAdmissionPolicyBinding").is_empty(),
            "{set}: {:?}",
            kinds(&objects)
        );
    }
    let objects = render(home.path(), &[]);
    let config_maps: Vec<&Value> = find(&objects, "ConfigMap");
    assert_eq!(config_maps.len(), 1, "{config_maps:?}");
    assert_eq!(config_maps[0]["metadata"]["name"], "issuer-guard-config");
    // Nor the canary Secret: the one Secret is the TLS pair (and every
    // ci values file is checked the same way).
    let secrets: Vec<&Value> = find(&objects, "Secret");
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    assert_eq!(secrets[0]["metadata"]["name"], "issuer-guard-tls");
    assert_refused(
        home.path(),
        &["--set-string", "discovery.protectLedger=yes"],
        "/discovery/protectLedger",
    );
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

/// A client that authenticates with `token` and trusts the test CA, and
/// its kubeconfig (`sa.kubeconfig` in `dir`).
async fn token_client(cp: &ControlPlane, token: &str, dir: &Path) -> (Client, PathBuf) {
    let path = dir.join("sa.kubeconfig");
    (cp.token_client(token, &path).await, path)
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

    // Tokens for the canary, which may do nothing; never for itself (a
    // token with no audience would authenticate as the webhook), nor for
    // any other account.
    let token_request: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 600}}))
            .unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(sa.clone(), RELEASE_NS);
    accounts
        .create_token_request(CANARY, &PostParams::default(), &token_request)
        .await
        .expect("a token for the canary ServiceAccount");
    for other in [RELEASE, "default"] {
        assert_forbidden(
            &format!("a token for ServiceAccount {other}"),
            accounts
                .create_token_request(other, &PostParams::default(), &token_request)
                .await,
        );
    }

    // A canary: minted for the canary with the audience no API accepts,
    // and reviewed (TokenReview, cluster-scoped) with that audience, it
    // authenticates as the canary.
    let canary_request: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(
            json!({"spec": {"audiences": [CANARY_AUDIENCE], "expirationSeconds": 600}}),
        )
        .unwrap();
    let canary_token = accounts
        .create_token_request(CANARY, &PostParams::default(), &canary_request)
        .await
        .expect("a canary token")
        .status
        .and_then(|s| s.token)
        .expect("a canary token");
    let review: TokenReview = serde_json::from_value(
        json!({"spec": {"token": canary_token, "audiences": [CANARY_AUDIENCE]}}),
    )
    .unwrap();
    let status = Api::<TokenReview>::all(sa.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("a TokenReview of the canary token")
        .status
        .expect("a TokenReview's status");
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    assert_eq!(
        status.user.and_then(|u| u.username),
        Some(format!("system:serviceaccount:{RELEASE_NS}:{CANARY}"))
    );

    // The canary account itself (its UID), and no other account.
    let canary_account = accounts
        .get(CANARY)
        .await
        .expect("read the canary ServiceAccount");
    assert!(canary_account.metadata.uid.is_some(), "{canary_account:?}");
    for other in [RELEASE, "default"] {
        assert_forbidden(
            &format!("reading ServiceAccount {other}"),
            accounts.get(other).await,
        );
    }
    assert_forbidden(
        "listing ServiceAccounts",
        accounts.list(&ListParams::default()).await,
    );

    // The canary Secret: created (RBAC cannot name-limit create), then read
    // and replaced by name, as the binary does; nothing else of it, and no
    // other Secret.
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), RELEASE_NS);
    let secret = |name: &str| -> Secret {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "stringData": {"generation-0": "{}"}}),
        )
        .unwrap()
    };
    secrets
        .create(&PostParams::default(), &secret(CANARY_SECRET))
        .await
        .expect("create the canary Secret");
    let mut stored = secrets
        .get(CANARY_SECRET)
        .await
        .expect("read the canary Secret");
    stored.string_data = Some([("generation-1".to_owned(), "{}".to_owned())].into());
    secrets
        .replace(CANARY_SECRET, &PostParams::default(), &stored)
        .await
        .expect("replace the canary Secret");
    assert_forbidden(
        "patching the canary Secret",
        secrets
            .patch(
                CANARY_SECRET,
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {"generation-2": "{}"}})),
            )
            .await,
    );
    assert_forbidden(
        "deleting the canary Secret",
        secrets.delete(CANARY_SECRET, &Default::default()).await,
    );
    let tls = format!("{RELEASE}-tls");
    assert_forbidden("reading the chart's TLS Secret", secrets.get(&tls).await);
    assert_forbidden(
        "replacing the chart's TLS Secret",
        secrets
            .replace(&tls, &PostParams::default(), &secret(&tls))
            .await,
    );
    assert_forbidden(
        "creating a Secret outside the release namespace",
        Api::<Secret>::namespaced(sa.clone(), NS)
            .create(&PostParams::default(), &secret(CANARY_SECRET))
            .await,
    );

    // Every API server's address: a list of the EndpointSlices in
    // `default`, as discovery sends it, and nothing else of them.
    let slices: Api<EndpointSlice> = Api::namespaced(sa.clone(), "default");
    slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=kubernetes"))
        .await
        .expect("list the kubernetes Service's EndpointSlices");
    assert_forbidden("getting an EndpointSlice", slices.get("kubernetes").await);
    assert_forbidden(
        "listing EndpointSlices outside default",
        Api::<EndpointSlice>::namespaced(sa.clone(), NS)
            .list(&ListParams::default())
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

/// A client holding a fresh token of ServiceAccount `ns/name` (minted by
/// `admin`), with its kubeconfig at `kubeconfig`.
async fn account_client(
    cp: &ControlPlane,
    admin: &Client,
    ns: &str,
    name: &str,
    kubeconfig: &Path,
) -> Client {
    let req = serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))
        .unwrap();
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create_token_request(name, &PostParams::default(), &req)
        .await
        .unwrap_or_else(|e| panic!("a token for {ns}/{name}: {e}"))
        .status
        .expect("a token")
        .token
        .expect("a token");
    cp.token_client(&token, kubeconfig).await
}

/// Whether the API server lets `client` do `verb` on `resource` of API
/// group `group` (`namespace` and `name` empty: any), by a
/// SelfSubjectAccessReview: the authorizer's answer, for the verbs a test
/// cannot simply try (a watch) or must not (a delete).
async fn may(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> bool {
    use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({"spec": {
        "resourceAttributes": {"verb": verb, "group": group, "resource": resource,
            "namespace": namespace, "name": name}}}))
    .unwrap();
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("a SelfSubjectAccessReview")
        .status
        .is_some_and(|s| s.allowed)
}

/// The chart's inventory RBAC as the API server enforces it, for a client
/// holding a token of its ServiceAccount in the release `issuer-guard`:
/// list and watch of pods, ReplicaSets, ServiceAccounts and (metadata of)
/// legacy token Secrets in every namespace, the ledger read by name,
/// `GET /version`, and no write anywhere.
async fn assert_inventory_rbac(inventory: &Client) {
    // The lists the binary sends, in every namespace.
    let lp = ListParams::default().limit(1);
    Api::<Pod>::all(inventory.clone())
        .list_metadata(&lp)
        .await
        .expect("the inventory lists pods");
    Api::<k8s_openapi::api::apps::v1::ReplicaSet>::all(inventory.clone())
        .list_metadata(&lp)
        .await
        .expect("the inventory lists ReplicaSets");
    Api::<ServiceAccount>::all(inventory.clone())
        .list_metadata(&lp)
        .await
        .expect("the inventory lists ServiceAccounts");
    Api::<Secret>::all(inventory.clone())
        .list_metadata(
            &ListParams::default()
                .fields("type=kubernetes.io/service-account-token")
                .limit(1),
        )
        .await
        .expect("the inventory lists legacy token Secrets' metadata");
    // Their watches; no get and no write of any of them.
    for (group, resource) in [
        ("", "pods"),
        ("apps", "replicasets"),
        ("", "serviceaccounts"),
        ("", "secrets"),
    ] {
        for verb in ["list", "watch"] {
            assert!(
                may(inventory, verb, group, resource, "", "").await,
                "the inventory may not {verb} {resource}"
            );
        }
        for verb in [
            "get",
            "create",
            "update",
            "patch",
            "delete",
            "deletecollection",
        ] {
            assert!(
                !may(inventory, verb, group, resource, NS, "").await,
                "the inventory may {verb} {resource}"
            );
        }
    }
    let tls = format!("{RELEASE}-tls");
    assert_forbidden(
        "the inventory reading a Secret",
        Api::<Secret>::namespaced(inventory.clone(), RELEASE_NS)
            .get(&tls)
            .await,
    );
    // The ledger, by name, read only; no other ConfigMap.
    let ledger = format!("{RELEASE}-ledger");
    let maps: Api<ConfigMap> = Api::namespaced(inventory.clone(), RELEASE_NS);
    maps.get_opt(&ledger)
        .await
        .expect("the inventory reads the ledger");
    maps.list(&ListParams::default().fields(&format!("metadata.name={ledger}")))
        .await
        .expect("the inventory lists the ledger by name");
    assert!(may(inventory, "watch", "", "configmaps", RELEASE_NS, &ledger).await);
    for verb in ["create", "update", "patch", "delete"] {
        assert!(
            !may(inventory, verb, "", "configmaps", RELEASE_NS, &ledger).await,
            "the inventory may {verb} the ledger"
        );
    }
    assert_forbidden(
        "the inventory listing every ConfigMap",
        maps.list(&ListParams::default()).await,
    );
    assert_forbidden(
        "the inventory reading the chart's config ConfigMap",
        maps.get("issuer-guard-config").await,
    );
    // None of discovery's grants.
    let req = serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 600}}))
        .unwrap();
    assert_forbidden(
        "the inventory minting a canary token",
        Api::<ServiceAccount>::namespaced(inventory.clone(), RELEASE_NS)
            .create_token_request(CANARY, &PostParams::default(), &req)
            .await,
    );
    assert!(
        !may(
            inventory,
            "create",
            "authentication.k8s.io",
            "tokenreviews",
            "",
            ""
        )
        .await
    );
    // The API server's clock: `GET /version`, which every client may.
    let request = http::Request::get("/version").body(Vec::new()).unwrap();
    let version = inventory
        .request_text(request)
        .await
        .expect("the inventory's GET /version");
    assert!(version.contains("gitVersion"), "{version}");
}

/// The canary, as a token minted for it with no audience authenticates:
/// nothing the chart grants is open to it.
async fn assert_canary_may_do_nothing(canary: &Client) {
    let maps: Api<ConfigMap> = Api::namespaced(canary.clone(), RELEASE_NS);
    assert_forbidden(
        "the canary listing ConfigMaps",
        maps.list(&ListParams::default()).await,
    );
    assert_forbidden(
        "the canary reading the ledger",
        maps.get(&format!("{RELEASE}-ledger")).await,
    );
    let object: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": format!("{RELEASE}-ledger")}})).unwrap();
    assert_forbidden(
        "the canary creating the ledger",
        maps.create(&PostParams::default(), &object).await,
    );
    let req = serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 600}}))
        .unwrap();
    for account in [CANARY, RELEASE] {
        assert_forbidden(
            &format!("the canary minting a token for {account}"),
            Api::<ServiceAccount>::namespaced(canary.clone(), RELEASE_NS)
                .create_token_request(account, &PostParams::default(), &req)
                .await,
        );
    }
    assert_forbidden(
        "the canary listing EndpointSlices",
        Api::<EndpointSlice>::namespaced(canary.clone(), "default")
            .list(&ListParams::default())
            .await,
    );
    assert_forbidden(
        "the canary listing Secrets",
        Api::<Secret>::all(canary.clone())
            .list(&ListParams::default())
            .await,
    );
    assert_forbidden(
        "the canary reading the canary Secret",
        Api::<Secret>::namespaced(canary.clone(), RELEASE_NS)
            .get(CANARY_SECRET)
            .await,
    );
    assert_forbidden(
        "the canary reading its own ServiceAccount",
        Api::<ServiceAccount>::namespaced(canary.clone(), RELEASE_NS)
            .get(CANARY)
            .await,
    );
    let review: TokenReview = serde_json::from_value(
        json!({"spec": {"token": "not-a-token", "audiences": [CANARY_AUDIENCE]}}),
    )
    .unwrap();
    assert_forbidden(
        "the canary creating a TokenReview",
        Api::<TokenReview>::all(canary.clone())
            .create(&PostParams::default(), &review)
            .await,
    );
}

/// The webhook's /metrics at health address `health`.
async fn metrics_text(health: &str) -> String {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(format!("http://{health}/metrics"))
        .send()
        .await
        .expect("the webhook's /metrics")
        .text()
        .await
        .unwrap()
}

/// Every admission review the webhook at health address `health` has
/// answered: the sum of `issuer_guard_admission_requests_total` over all its
/// series.
async fn admission_requests(health: &str) -> f64 {
    metrics_text(health)
        .await
        .lines()
        .filter(|l| l.starts_with("issuer_guard_admission_requests_total{"))
        .map(|l| {
            l.rsplit_once(' ')
                .and_then(|(_, v)| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("a counter: {l}"))
        })
        .sum()
}

/// Writes what `deployment`'s container would find at each of its
/// volumeMounts, read back from the API server, into a directory per
/// mount under `dir`, and returns each mount path with its directory.
/// Only the Secret and ConfigMap volumes the chart mounts are known.
async fn mounted_volumes(
    client: &Client,
    deployment: &Value,
    dir: &Path,
) -> Vec<(String, PathBuf)> {
    let spec = &deployment["spec"]["template"]["spec"];
    let mut mounts = Vec::new();
    for mount in spec["containers"][0]["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
    {
        assert!(mount.get("subPath").is_none(), "{mount}");
        let name = mount["name"].as_str().expect("a volume name");
        let volume = spec["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"));
        let (data, items): (Vec<(String, Vec<u8>)>, &Value) =
            if let Some(secret) = volume["secret"]["secretName"].as_str() {
                (
                    secret_data(client, RELEASE_NS, secret).await,
                    &volume["secret"]["items"],
                )
            } else if let Some(map) = volume["configMap"]["name"].as_str() {
                let map = Api::<ConfigMap>::namespaced(client.clone(), RELEASE_NS)
                    .get(map)
                    .await
                    .unwrap_or_else(|e| panic!("ConfigMap {map}: {e}"));
                (
                    map.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect(),
                    &volume["configMap"]["items"],
                )
            } else {
                panic!("a volume the host cannot stand in for: {volume}");
            };
        let host = dir.join(name);
        std::fs::create_dir_all(&host).unwrap();
        for (key, bytes) in data {
            // With `items`, only the listed keys, under their paths.
            let path = match items.as_array() {
                Some(items) => match items.iter().find(|i| i["key"] == key.as_str()) {
                    Some(item) => item["path"].as_str().expect("an item path").to_owned(),
                    None => continue,
                },
                None => key,
            };
            std::fs::write(host.join(path), bytes).unwrap();
        }
        mounts.push((
            mount["mountPath"].as_str().expect("a mountPath").to_owned(),
            host,
        ));
    }
    mounts
}

/// `arg` (`--flag=VALUE`) with a VALUE under one of `mounts`' paths moved
/// to that mount's directory on this host.
fn remap(arg: &str, mounts: &[(String, PathBuf)]) -> String {
    let Some((flag, value)) = arg.split_once('=') else {
        return arg.to_owned();
    };
    for (path, host) in mounts {
        if let Some(rest) = value
            .strip_prefix(path.as_str())
            .filter(|r| r.starts_with('/'))
        {
            return format!("{flag}={}{rest}", host.display());
        }
    }
    arg.to_owned()
}

fn stamped(obj: &Value) -> Option<&str> {
    obj["metadata"]["labels"][GENERATION_LABEL].as_str()
}

/// A default install whose pods never come up (a bad image, a
/// NetworkPolicy) must not block anyone's deployments: nothing is declared,
/// so nothing is enforced. Once a rotation is declared, the same outage
/// refuses what the webhook judges, as it must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_install_with_no_issuer_guard_running_blocks_nothing() {
    let cp = ControlPlane::start(ServiceAccountFlags::issuer(ISSUER)).await;
    let home = cp.dir().join("helm");
    std::fs::create_dir_all(&home).unwrap();
    let kubeconfig = cp.kubeconfig.to_str().unwrap().to_owned();
    // The webhooks point at a port nothing listens on: issuer-guard is down.
    let values = home.join("values.yaml");
    std::fs::write(
        &values,
        format!(
            "image:\n  repository: {IMAGE_REPOSITORY}\nwebhook:\n  urlOverride: \"https://127.0.0.1:{}\"\ntls:\n  extraIPs: [\"127.0.0.1\"]\n",
            free_port()
        ),
    )
    .unwrap();
    let values = values.to_str().unwrap().to_owned();
    let base = [
        "--kubeconfig",
        kubeconfig.as_str(),
        "--namespace",
        RELEASE_NS,
        "--create-namespace",
        "-f",
        values.as_str(),
    ];
    let mut args = vec!["install", RELEASE, CHART];
    args.extend_from_slice(&base);
    ok(&helm(&home, &args), "helm install");

    let namespaces: Api<Namespace> = Api::all(cp.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "apps"}})).unwrap(),
        )
        .await
        .expect("create a namespace");
    let deployment: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": restricted_pod("x")["spec"]},
        }
    }))
    .unwrap();
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(cp.client.clone(), "apps")
        .create(&PostParams::default(), &deployment)
        .await
        .expect("a Deployment is admitted with issuer-guard down and nothing declared");
    create_in(&cp.client, "apps", &restricted_pod("bare"))
        .await
        .expect("a bare Pod is admitted with issuer-guard down and nothing declared");

    // Declared: the validating webhook now fails closed.
    let mut args = vec![
        "upgrade",
        RELEASE,
        CHART,
        "--set-json",
        "config.rotation={\"retiringKeyIds\":[\"old-kid\"]}",
    ];
    args.extend_from_slice(&base);
    ok(&helm(&home, &args), "helm upgrade");
    let refused = create_in(&cp.client, "apps", &restricted_pod("bare-2")).await;
    match refused {
        Err(kube::Error::Api(status)) => {
            assert!(
                status.message.contains("failed calling webhook"),
                "{status:?}"
            );
        }
        other => panic!("a bare Pod was not refused with a rotation declared: {other:?}"),
    }
}

/// The chart's ValidatingAdmissionPolicies on the real API server: the
/// ledger and the canary Secret are created, changed and deleted by
/// issuer-guard's ServiceAccount and `system:masters` only, even by an
/// account whose RBAC allows every ConfigMap and Secret write in the
/// namespace (a deletecollection included); other ConfigMaps and Secrets
/// are untouched by them; and a namespace being deleted still empties,
/// ledger and canary Secret and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_issuer_guards_account_writes_the_ledger_on_the_real_api_server() {
    let cp = ControlPlane::start(ServiceAccountFlags::issuer(ISSUER)).await;
    let home = cp.dir().join("helm");
    std::fs::create_dir_all(&home).unwrap();
    let kubeconfig = cp.kubeconfig.to_str().unwrap().to_owned();
    // Nothing runs and nothing is declared: both webhooks fail open.
    let values = home.join("values.yaml");
    std::fs::write(
        &values,
        format!(
            "image:\n  repository: {IMAGE_REPOSITORY}\nwebhook:\n  urlOverride: \"https://127.0.0.1:{}\"\ntls:\n  extraIPs: [\"127.0.0.1\"]\n",
            free_port()
        ),
    )
    .unwrap();
    let values = values.to_str().unwrap().to_owned();
    let args = [
        "install",
        RELEASE,
        CHART,
        "--kubeconfig",
        kubeconfig.as_str(),
        "--namespace",
        RELEASE_NS,
        "--create-namespace",
        "-f",
        values.as_str(),
    ];
    ok(&helm(&home, &args), "helm install");

    let dir = cp.dir().join("ledger-policy");
    std::fs::create_dir_all(&dir).unwrap();
    let pp = PostParams::default();
    let admin = cp.client.clone();
    // An intruder whose RBAC allows every ConfigMap and Secret write in the
    // namespace.
    Api::<ServiceAccount>::namespaced(admin.clone(), RELEASE_NS)
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "intruder"}})).unwrap(),
        )
        .await
        .expect("the intruder's ServiceAccount");
    Api::<Role>::namespaced(admin.clone(), RELEASE_NS)
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "intruder"}, "rules": [
                {"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["*"]}]}))
            .unwrap(),
        )
        .await
        .expect("the intruder's Role");
    Api::<RoleBinding>::namespaced(admin.clone(), RELEASE_NS)
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "intruder"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "intruder"},
                "subjects": [{"kind": "ServiceAccount", "name": "intruder", "namespace": RELEASE_NS}]}))
            .unwrap(),
        )
        .await
        .expect("the intruder's RoleBinding");
    let own = account_client(
        &cp,
        &admin,
        RELEASE_NS,
        RELEASE,
        &dir.join("own.kubeconfig"),
    )
    .await;
    let intruder = account_client(
        &cp,
        &admin,
        RELEASE_NS,
        "intruder",
        &dir.join("intruder.kubeconfig"),
    )
    .await;
    let maps = |c: &Client| Api::<ConfigMap>::namespaced(c.clone(), RELEASE_NS);
    let object = |name: &str, value: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": value}})).unwrap()
    };
    let change = |value: &str| Patch::Merge(json!({"data": {"v": value}}));
    let ledger = format!("{RELEASE}-ledger");

    // Another ConfigMap: the intruder's RBAC at work, which the policy
    // leaves alone.
    eventually(
        "the intruder's RBAC to take effect",
        Duration::from_secs(30),
        || async {
            maps(&intruder)
                .create(&pp, &object("other", "1"))
                .await
                .ok()
        },
    )
    .await;
    // issuer-guard's account creates the ledger.
    maps(&own)
        .create(&pp, &object(&ledger, "1"))
        .await
        .expect("issuer-guard's account creates the ledger");
    // Once the API server has loaded the policy, the intruder is refused.
    let refusal = eventually(
        "the policy to refuse the intruder's patch of the ledger",
        Duration::from_secs(60),
        || async {
            match maps(&intruder)
                .patch(&ledger, &PatchParams::default(), &change("forged"))
                .await
            {
                Err(kube::Error::Api(e)) => Some(e),
                Ok(_) => None,
                Err(other) => panic!("patching the ledger: {other}"),
            }
        },
    )
    .await;
    assert_eq!(refusal.code, 403, "{refusal:?}");
    assert!(
        refusal
            .message
            .contains(&format!("ValidatingAdmissionPolicy '{RELEASE}-ledger'"))
            && refusal
                .message
                .contains("system:masters is the break glass"),
        "{refusal:?}"
    );
    let current = maps(&intruder).get(&ledger).await.expect("read the ledger");
    assert_forbidden(
        "the intruder replacing the ledger",
        maps(&intruder).replace(&ledger, &pp, &current).await,
    );
    assert_forbidden(
        "the intruder deleting the ledger",
        maps(&intruder)
            .delete(&ledger, &DeleteParams::default())
            .await,
    );
    // A deletecollection names no object in its request: the policy
    // still sees the ledger among the objects it deletes.
    assert_forbidden(
        "the intruder deleting every ConfigMap",
        maps(&intruder)
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await,
    );
    assert!(maps(&admin).get_opt(&ledger).await.unwrap().is_some());
    // Other ConfigMaps stay the intruder's to write.
    maps(&intruder)
        .create(&pp, &object("other-2", "1"))
        .await
        .expect("the intruder creates another ConfigMap");
    maps(&intruder)
        .patch("other-2", &PatchParams::default(), &change("2"))
        .await
        .expect("the intruder patches another ConfigMap");
    maps(&intruder)
        .delete("other-2", &DeleteParams::default())
        .await
        .expect("the intruder deletes another ConfigMap");

    // issuer-guard's account changes it; system:masters, the break glass,
    // may do anything, and the intruder may not create it anew.
    maps(&own)
        .patch(&ledger, &PatchParams::default(), &change("2"))
        .await
        .expect("issuer-guard's account patches the ledger");
    maps(&admin)
        .patch(&ledger, &PatchParams::default(), &change("3"))
        .await
        .expect("system:masters patches the ledger");
    maps(&admin)
        .delete(&ledger, &DeleteParams::default())
        .await
        .expect("system:masters deletes the ledger");
    assert_forbidden(
        "the intruder creating the ledger",
        maps(&intruder)
            .create(&pp, &object(&ledger, "forged"))
            .await,
    );
    maps(&own)
        .create(&pp, &object(&ledger, "4"))
        .await
        .expect("issuer-guard's account writes the ledger back");

    // The canary Secret, under a policy of its own, the same way.
    let secrets = |c: &Client| Api::<Secret>::namespaced(c.clone(), RELEASE_NS);
    let secret = |name: &str, value: &str| -> Secret {
        serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"v": value}}))
            .unwrap()
    };
    let secret_change = |value: &str| Patch::Merge(json!({"stringData": {"v": value}}));
    // issuer-guard's account creates it.
    secrets(&own)
        .create(&pp, &secret(CANARY_SECRET, "1"))
        .await
        .expect("issuer-guard's account creates the canary Secret");
    let refusal = eventually(
        "the policy to refuse the intruder's patch of the canary Secret",
        Duration::from_secs(60),
        || async {
            match secrets(&intruder)
                .patch(
                    CANARY_SECRET,
                    &PatchParams::default(),
                    &secret_change("forged"),
                )
                .await
            {
                Err(kube::Error::Api(e)) => Some(e),
                Ok(_) => None,
                Err(other) => panic!("patching the canary Secret: {other}"),
            }
        },
    )
    .await;
    assert_eq!(refusal.code, 403, "{refusal:?}");
    assert!(
        refusal.message.contains(&format!(
            "ValidatingAdmissionPolicy '{RELEASE}-ledger-canary'"
        )) && refusal.message.contains(CANARY_SECRET)
            && refusal
                .message
                .contains("system:masters is the break glass"),
        "{refusal:?}"
    );
    // issuer-guard's account replaces it under the policy (its Role has
    // `get` and `update` on it, no `patch`), as the binary does.
    let mut mine = secrets(&own)
        .get(CANARY_SECRET)
        .await
        .expect("issuer-guard's account reads the canary Secret");
    mine.string_data = Some([("v".to_owned(), "2".to_owned())].into());
    secrets(&own)
        .replace(CANARY_SECRET, &pp, &mine)
        .await
        .expect("issuer-guard's account replaces the canary Secret");
    // Reading is not the policy's: the intruder's RBAC lets it read, and
    // only read.
    let current = secrets(&intruder)
        .get(CANARY_SECRET)
        .await
        .expect("the intruder reads the canary Secret");
    assert_forbidden(
        "the intruder replacing the canary Secret",
        secrets(&intruder)
            .replace(CANARY_SECRET, &pp, &current)
            .await,
    );
    assert_forbidden(
        "the intruder deleting the canary Secret",
        secrets(&intruder)
            .delete(CANARY_SECRET, &DeleteParams::default())
            .await,
    );
    // A deletecollection names no object in its request: the policy sees
    // the Secret among the objects it deletes. (Narrowed to it by name, so
    // that the chart's TLS Secret is not taken on the way.)
    assert_forbidden(
        "the intruder deleting the canary Secret by deletecollection",
        secrets(&intruder)
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().fields(&format!("metadata.name={CANARY_SECRET}")),
            )
            .await,
    );
    let kept = secrets(&admin)
        .get(CANARY_SECRET)
        .await
        .expect("the canary Secret is still there");
    assert_eq!(
        kept.data.unwrap_or_default().get("v").map(|v| v.0.clone()),
        Some(b"2".to_vec()),
        "the canary Secret is issuer-guard's write"
    );
    // Other Secrets stay the intruder's to write.
    secrets(&intruder)
        .create(&pp, &secret("other-secret", "1"))
        .await
        .expect("the intruder creates another Secret");
    secrets(&intruder)
        .patch("other-secret", &PatchParams::default(), &secret_change("2"))
        .await
        .expect("the intruder patches another Secret");
    let other = secrets(&intruder).get("other-secret").await.unwrap();
    secrets(&intruder)
        .replace("other-secret", &pp, &other)
        .await
        .expect("the intruder replaces another Secret");
    secrets(&intruder)
        .delete("other-secret", &DeleteParams::default())
        .await
        .expect("the intruder deletes another Secret");
    // system:masters, the break glass, may do anything, and the intruder
    // may not create it anew.
    secrets(&admin)
        .patch(CANARY_SECRET, &PatchParams::default(), &secret_change("3"))
        .await
        .expect("system:masters patches the canary Secret");
    secrets(&admin)
        .delete(CANARY_SECRET, &DeleteParams::default())
        .await
        .expect("system:masters deletes the canary Secret");
    assert_forbidden(
        "the intruder creating the canary Secret",
        secrets(&intruder)
            .create(&pp, &secret(CANARY_SECRET, "forged"))
            .await,
    );
    secrets(&own)
        .create(&pp, &secret(CANARY_SECRET, "4"))
        .await
        .expect("issuer-guard's account writes the canary Secret back");

    // The namespace going away takes the ledger with it. No namespace
    // controller runs here: the namespace stays Terminating, and the
    // deletecollection that controller sends is sent by the intruder,
    // whose RBAC allows it: let through now.
    Api::<Namespace>::all(admin.clone())
        .delete(RELEASE_NS, &DeleteParams::default())
        .await
        .expect("delete the release namespace");
    eventually(
        "the terminating namespace's ConfigMaps deleted, ledger included",
        Duration::from_secs(30),
        || async {
            maps(&intruder)
                .delete_collection(&DeleteParams::default(), &ListParams::default())
                .await
                .ok()
        },
    )
    .await;
    assert!(maps(&admin).get_opt(&ledger).await.unwrap().is_none());
    eventually(
        "the terminating namespace's Secrets deleted, canary Secret included",
        Duration::from_secs(30),
        || async {
            secrets(&intruder)
                .delete_collection(&DeleteParams::default(), &ListParams::default())
                .await
                .ok()
        },
    )
    .await;
    assert!(
        secrets(&admin)
            .get_opt(CANARY_SECRET)
            .await
            .unwrap()
            .is_none()
    );
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
            "image:\n  repository: {IMAGE_REPOSITORY}\nwebhookPort: {port}\nwebhook:\n  urlOverride: \"https://127.0.0.1:{port}\"\ntls:\n  extraIPs: [\"127.0.0.1\"]\n\
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
    // And which failure policy `auto` chose, and why.
    assert!(
        notes.contains("failurePolicy Fail (auto: a rotation is declared in config)"),
        "{notes}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("violate PodSecurity"), "{stderr}");

    // The ReplicaSet controller creates the chart's pods, and Pod Security
    // admission enforces `restricted` on each: three webhook pods and the
    // inventory's one mean it passed.
    let pods: Api<Pod> = Api::namespaced(cp.client.clone(), RELEASE_NS);
    for (name, want) in [("issuer-guard", 3), (INVENTORY, 1)] {
        let labels = format!("app.kubernetes.io/instance={RELEASE},app.kubernetes.io/name={name}");
        eventually(
            &format!("{want} {name} pods admitted under restricted"),
            Duration::from_secs(60),
            || async {
                let list = pods
                    .list(&ListParams::default().labels(&labels))
                    .await
                    .ok()?;
                (list.items.len() == want).then_some(())
            },
        )
        .await;
    }

    // The chart's ServiceAccount, through a TokenRequest: its RBAC is all
    // the host process gets.
    let dir = cp.dir().join("host-webhook");
    std::fs::create_dir_all(&dir).unwrap();
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
    // Discovery's grants (on by default), used with the ServiceAccount's own
    // token: what the binary needs works, and one step beside it is refused.
    // Checked before issuer-guard runs, because the check writes the ledger
    // ConfigMap by hand; the one it leaves is removed for issuer-guard's own.
    assert_discovery_rbac(&cp.client, &sa_client).await;
    let canary = account_client(
        &cp,
        &cp.client,
        RELEASE_NS,
        CANARY,
        &dir.join("canary.kubeconfig"),
    )
    .await;
    assert_canary_may_do_nothing(&canary).await;
    // The inventory's account: it lists and watches, reads the ledger, and
    // writes nothing.
    let inventory = account_client(
        &cp,
        &cp.client,
        RELEASE_NS,
        INVENTORY,
        &dir.join("inventory.kubeconfig"),
    )
    .await;
    assert_inventory_rbac(&inventory).await;
    // And the webhook's account none of the inventory's grants.
    for resource in ["pods", "serviceaccounts"] {
        assert!(
            !may(&sa_client, "list", "", resource, "", "").await,
            "the webhook's account may list {resource}"
        );
    }
    assert!(!may(&sa_client, "list", "apps", "replicasets", "", "").await);
    Api::<ConfigMap>::namespaced(cp.client.clone(), RELEASE_NS)
        .delete(&format!("{RELEASE}-ledger"), &Default::default())
        .await
        .expect("remove the ledger the RBAC check wrote");
    Api::<Secret>::namespaced(cp.client.clone(), RELEASE_NS)
        .delete(CANARY_SECRET, &Default::default())
        .await
        .expect("remove the canary Secret the RBAC check wrote");

    // The container as installed runs on this host with exactly its args
    // and env; what it mounts is read back from the API server into a
    // directory per volume, which its args are pointed at.
    let deployments: Api<Deployment> = Api::namespaced(cp.client.clone(), RELEASE_NS);
    let installed = serde_json::to_value(
        deployments
            .get(RELEASE)
            .await
            .expect("the chart's Deployment"),
    )
    .unwrap();
    let mounts = mounted_volumes(&cp.client, &installed, &dir).await;
    let container = &installed["spec"]["template"]["spec"]["containers"][0];
    let mut args: Vec<String> = container["args"]
        .as_array()
        .expect("the container's args")
        .iter()
        .map(|a| remap(a.as_str().expect("an arg"), &mounts))
        .collect();
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let value = e["value"]
                .as_str()
                .unwrap_or_else(|| panic!("an env var the host cannot give: {e}"));
            (
                e["name"].as_str().expect("a name").to_owned(),
                value.to_owned(),
            )
        })
        .collect();
    assert_eq!(
        env.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        discovery_env(),
        "discovery is on by default"
    );
    let config_path = PathBuf::from(
        args.iter()
            .find_map(|a| a.strip_prefix("--config="))
            .expect("the chart passes --config"),
    );
    // Two additions, for a process on a shared host rather than in a pod:
    // the ServiceAccount's credentials by --kubeconfig, where the pod reads
    // them from the kubelet's mount in-cluster; and the health listener on
    // a free loopback port, where the pod takes the in-cluster default
    // 0.0.0.0:8080, which anything else on this host may hold.
    args.extend([
        format!("--kubeconfig={}", sa_kubeconfig.display()),
        format!("--health-listen=127.0.0.1:{health_port}"),
    ]);
    let config_text = |cm: &ConfigMap| {
        cm.data
            .as_ref()
            .and_then(|d| d.get("config.yaml"))
            .cloned()
            .expect("config.yaml in the ConfigMap")
    };
    let mut host = Proc::spawn_with_env(
        "issuer-guard",
        &support::issuer_guard_bin(),
        &args,
        &env,
        dir.join("issuer-guard.log"),
    );
    // Ready means the Secret watch synced (list and watch are allowed) and
    // the ledger was read.
    host.wait_ready(&format!("127.0.0.1:{health_port}")).await;
    // Discovery succeeds with the chart's grants: tokens minted for the
    // canary, the API servers listed from `default`'s EndpointSlices.
    eventually(
        "a discovery round that succeeded",
        Duration::from_secs(60),
        || async {
            let text = metrics_text(&format!("127.0.0.1:{health_port}")).await;
            text.lines()
                .any(|l| {
                    l.starts_with("issuer_guard_discovery_last_success_timestamp_seconds ")
                        && !l.ends_with(" 0")
                })
                .then_some(())
        },
    )
    .await;
    let log = std::fs::read_to_string(dir.join("issuer-guard.log")).expect("the log");
    assert!(
        !log.contains("cannot list the default/kubernetes EndpointSlices"),
        "the chart's EndpointSlice grant is missing:\n{log}"
    );
    // And the canary of the generation in force is minted and kept: the
    // binary creates its Secret under the chart's grants (and policy).
    let kept = eventually(
        "the canary Secret written by issuer-guard",
        Duration::from_secs(60),
        || async {
            let secret = Api::<Secret>::namespaced(cp.client.clone(), RELEASE_NS)
                .get_opt(CANARY_SECRET)
                .await
                .ok()??;
            let keys: Vec<String> = secret.data.unwrap_or_default().into_keys().collect();
            (!keys.is_empty()).then_some(keys)
        },
    )
    .await;
    assert!(
        kept.iter().all(|k| k.starts_with("generation-")),
        "{kept:?}"
    );

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

    // The release namespace and kube-system are never sent to the webhook:
    // it counts no review while Pods are created there...
    let health = format!("127.0.0.1:{health_port}");
    let reviewed = admission_requests(&health).await;
    assert!(reviewed > 0.0, "the reviews above were not counted");
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
    assert_eq!(
        admission_requests(&health).await,
        reviewed,
        "a Pod in {RELEASE_NS} or kube-system was sent to the webhook"
    );
    // ...and counts the same Pod in another namespace, once per webhook.
    create_in(&cp.client, NS, &plain("counted"))
        .await
        .expect("a Pod in e2e");
    assert_eq!(admission_requests(&health).await, reviewed + 2.0);

    // The ServiceAccount may list and watch Secrets' metadata, never get one.
    let err = Api::<Secret>::namespaced(sa_client.clone(), NS)
        .get("app-token")
        .await
        .expect_err("the chart's ServiceAccount read a Secret");
    assert!(
        matches!(&err, kube::Error::Api(e) if e.code == 403),
        "{err}"
    );

    // `helm test`, as its Pod would run it: through the API server, in a
    // namespace the webhooks judge, with the test's own narrow grant.
    let said = helm_test_as_its_pod_would(&cp, &home, &values, &dir).await;
    assert!(
        said.contains("the dry-run Pod in namespace issuer-guard-test was stamped generation 1"),
        "{said}"
    );

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
        "config.mode=audit",
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
    // (With discovery on, the generation is the ledger's: the mode is what
    // a config edit visibly changes.) In audit mode the Deployment denied
    // above is admitted, and marked.
    let admitted = eventually(
        "the denied Deployment admitted in audit mode after the upgrade",
        Duration::from_secs(30),
        || async {
            let c = api::create::<Deployment>(&cp.client, &deployment, true).await;
            (200..300).contains(&c.status).then_some(c.body)
        },
    )
    .await;
    assert_eq!(
        admitted["metadata"]["labels"][AT_RISK_LABEL], "true",
        "{admitted}"
    );

    // The API server's metrics the chart's webhook alerts select, as this
    // API server writes them. With issuer-guard gone, the mutating webhook
    // fails open (Ignore), and the validating one refuses (Fail: a key
    // rotation is declared), which counts as a rejection instead.
    host.stop();
    let refused = api::create::<Pod>(&cp.client, &plain("unreachable"), true).await;
    assert!(
        refused.denial().contains("validate.issuer-guard.io"),
        "{}",
        refused.body
    );
    let rule = chart::template(
        &home,
        RELEASE,
        RELEASE_NS,
        &[
            "-f",
            values.as_str(),
            "--set",
            "monitoring.prometheusRule.force=true",
            "--show-only",
            "templates/prometheusrule.yaml",
        ],
    );
    let exprs = alert_exprs(&rule);
    for (alert, metric, webhook) in [
        (
            "IssuerGuardWebhookCallsFailing",
            "apiserver_admission_webhook_rejection_count",
            "validate.issuer-guard.io",
        ),
        (
            "IssuerGuardWebhookFailingOpen",
            "apiserver_admission_webhook_fail_open_count",
            "mutate.issuer-guard.io",
        ),
    ] {
        let matchers = selector(&exprs[alert], metric);
        let samples = apiserver_samples(&cp.client, metric).await;
        assert!(
            samples
                .iter()
                .any(|s| s.get("name").map(String::as_str) == Some(webhook)
                    && matchers.iter().all(|m| m.matches(s))),
            "{alert} selects none of the API server's {metric} samples for {webhook}: {matchers:?} vs {samples:?}"
        );
    }

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
    // The canary Secret is issuer-guard's, like the ledger: left behind,
    // and nothing else.
    assert_eq!(left, [CANARY_SECRET], "Secrets left behind");
    assert!(
        Api::<ClusterRole>::all(cp.client.clone())
            .get_opt(INVENTORY)
            .await
            .unwrap()
            .is_none()
            && Api::<ClusterRoleBinding>::all(cp.client.clone())
                .get_opt(INVENTORY)
                .await
                .unwrap()
                .is_none()
            && Api::<Deployment>::namespaced(cp.client.clone(), RELEASE_NS)
                .get_opt(INVENTORY)
                .await
                .unwrap()
                .is_none(),
        "the inventory left behind"
    );
    for account in [RELEASE, CANARY, INVENTORY] {
        assert!(
            Api::<ServiceAccount>::namespaced(cp.client.clone(), RELEASE_NS)
                .get_opt(account)
                .await
                .unwrap()
                .is_none(),
            "ServiceAccount {account} left behind"
        );
    }
    let ledger_policy = format!("{RELEASE}-ledger");
    assert!(
        Api::<ValidatingAdmissionPolicy>::all(cp.client.clone())
            .get_opt(&ledger_policy)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<ValidatingAdmissionPolicyBinding>::all(cp.client.clone())
            .get_opt(&ledger_policy)
            .await
            .unwrap()
            .is_none()
    );
    let apiservers = format!("{RELEASE}-apiservers");
    assert!(
        Api::<Role>::namespaced(cp.client.clone(), "default")
            .get_opt(&apiservers)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<RoleBinding>::namespaced(cp.client.clone(), "default")
            .get_opt(&apiservers)
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

/// The issuer-guard configuration file the chart renders into its ConfigMap.
fn config_file(objects: &[Value]) -> Value {
    let text = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "issuer-guard-config")
        .and_then(|c| c["data"]["config.yaml"].as_str())
        .expect("the chart's ConfigMap with config.yaml");
    issuer_guard::config::Config::parse(text)
        .unwrap_or_else(|e| panic!("the binary refuses the rendered config: {e}\n{text}"));
    serde_saphyr::from_str(text).expect("the rendered config is YAML")
}

/// `helm template` of the test release with `values` (YAML text, read by
/// helm as a values file would be) after the image.
fn render_values(home: &Path, values: &str, extra: &[&str]) -> Vec<Value> {
    let file = home.join(format!("values-{}.yaml", render_count()));
    std::fs::write(&file, values).unwrap();
    let file = file.to_str().unwrap().to_owned();
    let mut args = vec!["-f", file.as_str()];
    args.extend_from_slice(extra);
    render(home, &args)
}

/// A new number each call, for file names.
fn render_count() -> usize {
    static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn webhook_policies(objects: &[Value]) -> (Value, Value) {
    (
        one(objects, "MutatingWebhookConfiguration")["webhooks"][0]["failurePolicy"].clone(),
        one(objects, "ValidatingWebhookConfiguration")["webhooks"][0]["failurePolicy"].clone(),
    )
}

/// `auto` fails closed exactly while `config.rotation` declares something
/// to enforce; an explicit policy is kept whatever is declared, and the
/// mutating webhook always fails open.
#[test]
fn the_validating_webhook_fails_closed_only_while_a_rotation_is_declared() {
    let home = tempfile::tempdir().unwrap();
    let cases: [(&str, &str); 10] = [
        ("{}", "Ignore"),
        ("config: {rotation: null}", "Ignore"),
        (
            "config: {rotation: {retiringIssuers: [https://old.example]}}",
            "Fail",
        ),
        ("config: {rotation: {retiringKeyIds: [kid-a]}}", "Fail"),
        (
            "config: {rotation: {nextIssuer: https://new.example}}",
            "Fail",
        ),
        // Refinements and the word that a rotation is over declare nothing.
        (
            "config: {rotation: {retiredIssuers: [https://old.example], graceSeconds: 60, trustedAudiences: [sts.amazonaws.com], newKeyPublished: true}}",
            "Ignore",
        ),
        (
            "config: {rotation: {retiringIssuers: [], retiringKeyIds: []}}",
            "Ignore",
        ),
        ("webhook: {validating: {failurePolicy: Fail}}", "Fail"),
        (
            "webhook: {validating: {failurePolicy: Ignore}}\nconfig: {rotation: {retiringKeyIds: [kid-a]}}",
            "Ignore",
        ),
        (
            "webhook: {validating: {failurePolicy: auto}}\nconfig: {rotation: {retiringKeyIds: [kid-a]}}",
            "Fail",
        ),
    ];
    for (values, want) in cases {
        let objects = render_values(home.path(), values, &[]);
        assert_eq!(
            webhook_policies(&objects),
            (json!("Ignore"), json!(want)),
            "{values}"
        );
    }
    assert_refused(
        home.path(),
        &["--set", "webhook.validating.failurePolicy=Never"],
        "/webhook/validating/failurePolicy",
    );
}

/// No default image: a render without one fails saying what to set, and
/// the one given is used as given.
#[test]
fn the_image_repository_has_no_default() {
    let home = tempfile::tempdir().unwrap();
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(Path::new(CHART).join("values.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(values["image"]["repository"], "");
    for extra in [&[][..], &["--set", "image.repository="][..]] {
        let mut args = vec!["template", RELEASE, CHART, "--namespace", RELEASE_NS];
        args.extend_from_slice(extra);
        let out = helm(home.path(), &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} rendered without an image");
        assert!(
            stderr.contains("set image.repository to the image you built from the Dockerfile"),
            "{extra:?}: {stderr}"
        );
    }
    let image = |objects: &[Value]| {
        named(objects, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]["image"]
            .clone()
    };
    assert_eq!(
        image(&render(home.path(), &[])),
        json!(format!("{IMAGE_REPOSITORY}:0.1.0"))
    );
    let digest = format!("sha256:{}", "a".repeat(64));
    assert_eq!(
        image(&render(
            home.path(),
            &["--set", &format!("image.digest={digest}")]
        )),
        json!(format!("{IMAGE_REPOSITORY}@{digest}"))
    );
}

/// The READMEs install the way a production SRE would: into the namespace
/// everything else assumes, waiting for the pods; and they name the ledger
/// as the chart and the binary do.
#[test]
fn the_readmes_install_into_issuer_guard_and_name_the_ledger_as_the_chart_does() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut installs = 0;
    for readme in ["README.md", "charts/issuer-guard/README.md"] {
        let text = std::fs::read_to_string(root.join(readme)).unwrap();
        assert!(!text.contains("issuer-guard-system"), "{readme}");
        // A command continued over lines with `\` is one command.
        let joined = text.replace("\\\n", " ");
        for command in joined
            .lines()
            .filter(|l| l.trim_start().starts_with("helm install "))
        {
            installs += 1;
            let words: Vec<&str> = command.split_whitespace().collect();
            assert!(words.contains(&"--wait"), "{readme}: {command}");
            assert!(
                words
                    .windows(2)
                    .any(|w| w == ["--namespace", "issuer-guard"]),
                "{readme}: {command}"
            );
            assert!(
                words.iter().any(|w| w.starts_with("image.repository=")),
                "{readme}: {command}"
            );
        }
    }
    assert!(installs >= 2, "no helm install found in the READMEs");

    // The ledger: the binary's default, the chart's name for the release
    // `issuer-guard`, and what the READMEs tell people to read.
    let serve = {
        use clap::CommandFactory;
        issuer_guard::cli::Cli::command()
    };
    let ledger_default: Vec<String> = serve
        .find_subcommand("serve")
        .and_then(|s| s.get_arguments().find(|a| a.get_id() == "ledger"))
        .expect("serve --ledger")
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    assert_eq!(ledger_default, ["issuer-guard-ledger"]);
    let deployment = chart::render(RELEASE, RELEASE_NS, &[], "deployment.yaml");
    assert!(container_env(one(&deployment, "Deployment")).contains(&(
        "ISSUER_GUARD_LEDGER".to_owned(),
        "issuer-guard-ledger".to_owned()
    )));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("kubectl get configmap issuer-guard-ledger -n issuer-guard"));
    let chart_readme = std::fs::read_to_string(root.join("charts/issuer-guard/README.md")).unwrap();
    let chart_readme = chart_readme
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        chart_readme.contains("For the release `issuer-guard` that is `issuer-guard-ledger`"),
        "the chart README does not say what the ledger of the release issuer-guard is called"
    );
}

/// Where a schema node points (`$ref` into `definitions`).
fn resolve<'a>(schema: &'a Value, node: &'a Value) -> &'a Value {
    match node["$ref"].as_str() {
        Some(r) => {
            let name = r.strip_prefix("#/definitions/").expect("a local $ref");
            resolve(schema, &schema["definitions"][name])
        }
        None => node,
    }
}

fn types(node: &Value) -> Vec<&str> {
    match &node["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Values the schema accepts for `node`, one of each kind it allows: every
/// enum member and const, a string, the bounds of an integer, both booleans,
/// a one-item list, null.
fn samples(schema: &Value, node: &Value, name: &str) -> Vec<Value> {
    let node = resolve(schema, node);
    if let Some(members) = node["enum"].as_array() {
        return members.clone();
    }
    if let Some(branches) = node["anyOf"].as_array() {
        return branches
            .iter()
            .flat_map(|b| samples(schema, b, name))
            .collect();
    }
    if let Some(value) = node.get("const") {
        return vec![value.clone()];
    }
    let mut out = Vec::new();
    for t in types(node) {
        match t {
            "string" => out.push(json!(format!("https://{}.example", name.to_lowercase()))),
            "integer" => {
                out.push(node["minimum"].clone());
                if !node["maximum"].is_null() {
                    out.push(node["maximum"].clone());
                }
            }
            "boolean" => out.extend([json!(true), json!(false)]),
            "array" => out.push(Value::Array(
                samples(schema, &node["items"], name)[..1].to_vec(),
            )),
            "null" => out.push(Value::Null),
            other => panic!("{name}: no sample for type {other}"),
        }
    }
    assert!(!out.is_empty(), "{name}: no sample from {node}");
    out
}

/// Sets `value` at the dotted `path` in `root`, making objects on the way.
fn set_path(root: &mut Value, path: &str, value: Value) {
    let mut at = root;
    for part in path.split('.') {
        if !at.is_object() {
            *at = json!({});
        }
        at = at
            .as_object_mut()
            .expect("an object")
            .entry(part)
            .or_insert(Value::Null);
    }
    *at = value;
}

/// The fields of the schema's `config`, the way [`issuer_guard::config::fields`]
/// lists the file's, and the allowed keys of each free-keyed map.
fn schema_config_fields(
    schema: &Value,
    node: &Value,
    prefix: &str,
    maps: &BTreeSet<String>,
    fields: &mut Vec<(String, Shape)>,
    map_keys: &mut BTreeMap<String, Vec<String>>,
) {
    let node = resolve(schema, node);
    for (name, child) in node["properties"].as_object().expect("properties") {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let child = resolve(schema, child);
        let t = types(child);
        let shape = if t.contains(&"object") {
            if maps.contains(&path) {
                Shape::Map
            } else {
                Shape::Struct
            }
        } else if t.contains(&"array") {
            Shape::Seq
        } else {
            Shape::Scalar
        };
        fields.push((path.clone(), shape));
        match shape {
            Shape::Map => {
                let keys = child["properties"].as_object().expect("a map's keys");
                map_keys.insert(path, keys.keys().cloned().collect());
            }
            Shape::Struct => schema_config_fields(schema, child, &path, maps, fields, map_keys),
            Shape::Seq | Shape::Scalar => {}
        }
    }
}

fn values_schema() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(Path::new(CHART).join("values.schema.json")).unwrap(),
    )
    .expect("values.schema.json is JSON")
}

/// The schema's `config` and the binary's configuration file have the same
/// fields, of the same shape, and the rule map the same rule ids: a field
/// added to either and not to the other fails here.
#[test]
fn the_values_schema_has_every_field_of_the_configuration_file_and_no_other() {
    let schema = values_schema();
    let file = issuer_guard::config::fields::file_fields().expect("the file's fields");
    let maps: BTreeSet<String> = file
        .iter()
        .filter(|(_, shape)| *shape == Shape::Map)
        .map(|(path, _)| path.clone())
        .collect();
    let mut in_schema = Vec::new();
    let mut map_keys = BTreeMap::new();
    schema_config_fields(
        &schema,
        &schema["properties"]["config"],
        "",
        &maps,
        &mut in_schema,
        &mut map_keys,
    );
    let sorted = |mut v: Vec<(String, Shape)>| {
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let (file, in_schema) = (sorted(file), sorted(in_schema));
    // The walk must have reached the nested and the renamed fields, or the
    // comparison proves little.
    for must in [
        "generation.static.keyId",
        "rotation.nextIssuer",
        "rotation.retiredIssuers",
    ] {
        assert!(
            file.iter().any(|(p, _)| p == must),
            "{must} not in {file:?}"
        );
    }
    assert_eq!(
        in_schema, file,
        "values.schema.json `config` vs src/config/file.rs"
    );
    let rule_ids: Vec<String> = issuer_guard::rules::RuleId::ALL
        .iter()
        .map(|r| r.as_str().to_owned())
        .collect();
    assert_eq!(map_keys.keys().collect::<Vec<_>>(), ["rules"]);
    let mut in_schema_rules = map_keys["rules"].clone();
    in_schema_rules.sort();
    let mut known = rule_ids;
    known.sort();
    assert_eq!(
        in_schema_rules, known,
        "the schema's rule ids vs RuleId::ALL"
    );
}

/// Every value the schema lets through for `config` is one the binary
/// loads, as written in values and as the chart renders it.
#[test]
fn every_config_value_the_schema_accepts_the_binary_loads() {
    let schema = values_schema();
    let config = &schema["properties"]["config"];
    let mut leaves: Vec<(String, Vec<Value>)> = Vec::new();
    fn walk(schema: &Value, node: &Value, prefix: &str, out: &mut Vec<(String, Vec<Value>)>) {
        let node = resolve(schema, node);
        for (name, child) in node["properties"].as_object().expect("properties") {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            let child_node = resolve(schema, child);
            if types(child_node).contains(&"object") && child_node["properties"].is_object() {
                walk(schema, child_node, &path, out);
            } else {
                out.push((path, samples(schema, child, name)));
            }
        }
    }
    walk(&schema, config, "", &mut leaves);
    assert!(leaves.len() >= 20, "{leaves:?}");

    // Each sample on its own, as a file the binary reads. A bare `off`
    // (false) exists only in Helm's YAML 1.1 and is rendered below.
    for (path, values) in &leaves {
        for value in values
            .iter()
            .filter(|v| **v != json!(false) || !path.starts_with("rules."))
        {
            let mut file = json!({});
            set_path(&mut file, path, value.clone());
            if let Err(e) = issuer_guard::config::Config::parse(&file.to_string()) {
                panic!("the schema accepts {path}: {value}, the binary refuses {file}: {e}");
            }
        }
    }
    // All of them at once through the chart, as many renders as the most
    // samples any field has: the i-th sample of every field in the i-th.
    let home = tempfile::tempdir().unwrap();
    let most = leaves.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    for i in 0..most {
        let mut values = json!({"config": {}});
        for (path, samples) in &leaves {
            set_path(
                &mut values["config"],
                path,
                samples[i % samples.len()].clone(),
            );
        }
        let objects = render_values(home.path(), &values.to_string(), &[]);
        let rendered = config_file(&objects);
        for (path, samples) in &leaves {
            let sent = &samples[i % samples.len()];
            let got = path.split('.').fold(&rendered, |v, k| &v[k]);
            let want = match sent {
                Value::Bool(false) if path.starts_with("rules.") => json!("off"),
                Value::Null => Value::Null,
                other => other.clone(),
            };
            if path == "exemptNamespaces" {
                continue;
            }
            assert_eq!(*got, want, "{path} rendered from {sent}");
        }
    }
}

/// A bare `off`, which Helm reads as false, reaches the binary as the
/// action "off"; a bare `on` (true) is refused.
#[test]
fn a_bare_off_rule_action_is_rendered_as_off() {
    let home = tempfile::tempdir().unwrap();
    let objects = render_values(
        home.path(),
        "config:\n  rules:\n    token-subpath: off\n    legacy-token-env: \"off\"\n    legacy-token-volume: warn\n",
        &["--show-only", "templates/configmap.yaml"],
    );
    let text = objects[0]["data"]["config.yaml"].as_str().unwrap();
    assert!(text.contains("token-subpath: \"off\""), "{text}");
    assert_eq!(
        config_file(&objects)["rules"],
        json!({"legacy-token-env": "off", "legacy-token-volume": "warn", "token-subpath": "off"})
    );
    let file = home.path().join("on.yaml");
    std::fs::write(&file, "config:\n  rules:\n    token-subpath: on\n").unwrap();
    assert_refused(
        home.path(),
        &["-f", file.to_str().unwrap()],
        "/config/rules/token-subpath",
    );
}

/// The YAML blocks of a Markdown file, dedented, with their line numbers.
fn yaml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut open {
            None if trimmed == "```yaml" => open = Some((i + 1, indent, String::new())),
            Some((start, fence, text)) => {
                if trimmed == "```" && indent == *fence {
                    blocks.push((*start, std::mem::take(text)));
                    open = None;
                } else {
                    text.push_str(line.get(*fence..).unwrap_or("").trim_end());
                    text.push('\n');
                }
            }
            None => {}
        }
    }
    assert!(open.is_none(), "an unclosed ```yaml block");
    blocks
}

/// The README's registration (`## Rules`, **Registration**) is what the
/// chart renders once a rotation is declared, and its `matchConditions`
/// are the ones in the code, byte for byte once YAML has folded them: the
/// README says the end-to-end tests register exactly this condition.
#[test]
fn the_readme_registration_is_the_charts_and_its_condition_the_codes() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let registration: Vec<Value> = yaml_blocks(&readme)
        .into_iter()
        .map(|(_, block)| chart::objects(&block))
        .find(|docs| {
            docs.iter()
                .any(|d| d["kind"] == "ValidatingWebhookConfiguration")
        })
        .expect("the README shows the registration");
    let readme_webhook = |kind: &str| -> Value {
        let docs: Vec<&Value> = registration.iter().filter(|d| d["kind"] == kind).collect();
        assert_eq!(docs.len(), 1, "one {kind} in the README");
        assert_eq!(docs[0]["webhooks"].as_array().map(Vec::len), Some(1));
        docs[0]["webhooks"][0].clone()
    };
    let (mutating, validating) = (
        readme_webhook("MutatingWebhookConfiguration"),
        readme_webhook("ValidatingWebhookConfiguration"),
    );
    assert_eq!(
        validating["matchConditions"],
        json!([{
            "name": issuer_guard::admission::MATCH_CONDITION_NAME,
            "expression": issuer_guard::admission::MATCH_CONDITION_NOT_CONTROLLER_MADE,
        }]),
        "the README's matchConditions and src/admission/mod.rs"
    );
    assert!(mutating.get("matchConditions").is_none(), "{mutating}");

    // The chart, for the README's release and namespace, with a rotation
    // declared (the README's `failurePolicy: Fail`): every field the README
    // shows, as the README shows it.
    let home = tempfile::tempdir().unwrap();
    let objects = render(
        home.path(),
        &[
            "--set-json",
            "config.rotation={\"retiringKeyIds\":[\"old-kid\"]}",
            "--show-only",
            "templates/webhooks.yaml",
        ],
    );
    for (kind, readme) in [
        ("MutatingWebhookConfiguration", &mutating),
        ("ValidatingWebhookConfiguration", &validating),
    ] {
        let rendered = &one(&objects, kind)["webhooks"][0];
        for (field, value) in readme.as_object().expect("a webhook") {
            match field.as_str() {
                // The chart's caBundle is its CA; the README writes <CA>.
                // Its Service reference adds the port (443, the default).
                "clientConfig" => {
                    let service = &rendered["clientConfig"]["service"];
                    for key in ["name", "namespace", "path"] {
                        assert_eq!(
                            service[key], value["service"][key],
                            "{kind} clientConfig.service.{key}"
                        );
                    }
                }
                _ => assert_eq!(&rendered[field], value, "{kind} {field}"),
            }
        }
    }
}

/// Every YAML block of both READMEs is one of: Kubernetes objects, an
/// issuer-guard configuration file (the project README's, which is the
/// chart's `config:`), chart values, or the rendered matchConditions; each
/// configuration and values block renders through the chart into a
/// configuration the binary loads, with the fields it wrote.
#[test]
fn every_readme_configuration_and_values_snippet_renders_through_the_chart() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema = values_schema();
    let keys_of = |node: &Value| -> BTreeSet<String> {
        node["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let (config_keys, values_keys) = (keys_of(&schema["properties"]["config"]), keys_of(&schema));
    let home = tempfile::tempdir().unwrap();
    let mut rendered = (0, 0);
    for readme in ["README.md", "charts/issuer-guard/README.md"] {
        let text = std::fs::read_to_string(root.join(readme)).unwrap();
        for (line, block) in yaml_blocks(&text) {
            let at = format!("{readme}:{line}");
            // Read as the binary reads YAML (1.2: `off` is a string); Helm's
            // reading is what the render below is for.
            let mut yaml_1_2 = serde_saphyr::Options::default();
            yaml_1_2.strict_booleans = true;
            let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(&block, yaml_1_2)
                .unwrap_or_else(|e| panic!("{at}: not YAML: {e}"));
            if docs
                .iter()
                .all(|d| d["apiVersion"].is_string() && d["kind"].is_string())
            {
                continue;
            }
            assert_eq!(docs.len(), 1, "{at}");
            let top: BTreeSet<String> = docs[0]
                .as_object()
                .unwrap_or_else(|| panic!("{at}: not a mapping"))
                .keys()
                .cloned()
                .collect();
            let (values, wrote) = if readme == "README.md" && top.is_subset(&config_keys) {
                issuer_guard::config::Config::parse(&block)
                    .unwrap_or_else(|e| panic!("{at}: the binary refuses it: {e}"));
                let indented: String = block.lines().map(|l| format!("  {l}\n")).collect();
                rendered.0 += 1;
                (format!("config:\n{indented}"), docs[0].clone())
            } else if readme != "README.md" && top.is_subset(&values_keys) {
                rendered.1 += 1;
                (block.clone(), docs[0]["config"].clone())
            } else if top == BTreeSet::from(["matchConditions".to_owned()]) {
                let objects = render(home.path(), &[]);
                assert_eq!(
                    docs[0]["matchConditions"],
                    one(&objects, "ValidatingWebhookConfiguration")["webhooks"][0]["matchConditions"],
                    "{at}"
                );
                continue;
            } else {
                panic!(
                    "{at}: a YAML block that is neither Kubernetes objects, a configuration nor chart values: {top:?}"
                );
            };
            let objects = render_values(home.path(), &values, &[]);
            let config = config_file(&objects);
            for (key, value) in wrote.as_object().into_iter().flatten() {
                if key == "exemptNamespaces" {
                    continue;
                }
                assert_eq!(&config[key], value, "{at}: config.{key}");
            }
        }
    }
    assert!(rendered.0 >= 3 && rendered.1 >= 2, "{rendered:?}");
}

/// The webhook's pod spec, in a render of the release [`RELEASE`].
fn pod_spec(objects: &[Value]) -> &Value {
    &named(objects, "Deployment", RELEASE)["spec"]["template"]["spec"]
}

/// Scheduling defaults: a critical priority, Linux nodes, spread over zones
/// and nodes beside the node anti-affinity.
#[test]
fn pods_are_critical_linux_and_spread_over_zones_and_nodes() {
    let home = tempfile::tempdir().unwrap();
    let objects = render(home.path(), &[]);
    let spec = pod_spec(&objects);
    let selector = json!({"matchLabels": {
        "app.kubernetes.io/name": "issuer-guard", "app.kubernetes.io/instance": RELEASE}});
    assert_eq!(spec["priorityClassName"], "system-cluster-critical");
    assert_eq!(spec["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    assert_eq!(
        spec["topologySpreadConstraints"],
        json!([
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": selector, "matchLabelKeys": ["pod-template-hash"]},
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": selector, "matchLabelKeys": ["pod-template-hash"]},
        ])
    );
    assert_eq!(
        spec["affinity"],
        json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": selector}}]}})
    );
    // A PriorityClass of your own, or none; the OS key dropped by null.
    let objects = render_values(
        home.path(),
        "priorityClassName: issuer-guard-critical\nnodeSelector: {kubernetes.io/os: null, pool: system}\n",
        &[],
    );
    let spec = pod_spec(&objects);
    assert_eq!(spec["priorityClassName"], "issuer-guard-critical");
    assert_eq!(spec["nodeSelector"], json!({"pool": "system"}));
    let spec = pod_spec(&render_values(
        home.path(),
        "priorityClassName: \"\"\n",
        &[],
    ))
    .clone();
    assert!(spec.get("priorityClassName").is_none(), "{spec}");
}

/// The webhook port reaches the binary's --listen, the container port the
/// Service targets and the NetworkPolicy; host networking comes with the
/// DNS policy that keeps cluster names resolving.
#[test]
fn the_webhook_port_and_host_network_reach_the_pod_and_the_service() {
    let home = tempfile::tempdir().unwrap();
    for (values, port) in [("", 8443), ("webhookPort: 9443\nhostNetwork: true\n", 9443)] {
        let objects = render_values(
            home.path(),
            &format!("{values}\nnetworkPolicy: {{enabled: true}}\n"),
            &[],
        );
        let spec = pod_spec(&objects);
        let container = &spec["containers"][0];
        let listen: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .filter(|a| a.starts_with("--listen"))
            .collect();
        assert_eq!(listen, [format!("--listen=0.0.0.0:{port}")], "{values}");
        assert_eq!(
            container["ports"][0],
            json!({"name": "https", "containerPort": port, "protocol": "TCP"}),
            "{values}"
        );
        let service = named(&objects, "Service", RELEASE);
        assert_eq!(
            service["spec"]["ports"][0],
            json!({"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"})
        );
        assert_eq!(
            named(&objects, "NetworkPolicy", RELEASE)["spec"]["ingress"][0]["ports"],
            json!([{"port": "https", "protocol": "TCP"}])
        );
        if port == 8443 {
            assert!(spec.get("hostNetwork").is_none() && spec.get("dnsPolicy").is_none());
        } else {
            assert_eq!(spec["hostNetwork"], true);
            assert_eq!(spec["dnsPolicy"], "ClusterFirstWithHostNet");
        }
    }
    assert_refused(home.path(), &["--set", "webhookPort=0"], "/webhookPort");
}

/// Each alert's expression, by name.
fn alert_exprs(objects: &[Value]) -> BTreeMap<String, String> {
    one(objects, "PrometheusRule")["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            (
                r["alert"].as_str().expect("an alert").to_owned(),
                r["expr"].as_str().expect("an expr").to_owned(),
            )
        })
        .collect()
}

/// One label matcher of a PromQL selector.
#[derive(Debug)]
struct Matcher {
    label: String,
    op: String,
    value: String,
}

impl Matcher {
    fn matches(&self, sample: &BTreeMap<String, String>) -> bool {
        let got = sample.get(&self.label).map(String::as_str).unwrap_or("");
        match self.op.as_str() {
            "=" => got == self.value,
            "=~" => literal_alternatives(&self.value).iter().any(|a| a == got),
            op => panic!("matcher {op} not understood by this test"),
        }
    }
}

/// A regex that is an alternation of escaped literals (what the chart
/// renders), as its literals; anything else fails the test.
fn literal_alternatives(regex: &str) -> Vec<String> {
    regex
        .split('|')
        .map(|alt| {
            let literal = alt.replace("\\.", ".");
            assert!(
                !literal.contains(['\\', '*', '+', '?', '(', ')', '[', ']', '{', '}', '^', '$']),
                "{regex} is not an alternation of literals"
            );
            literal
        })
        .collect()
}

/// The matchers of the selector of `metric` in `expr`.
fn selector(expr: &str, metric: &str) -> Vec<Matcher> {
    let start = expr
        .find(&format!("{metric}{{"))
        .unwrap_or_else(|| panic!("{expr} does not select {metric}"))
        + metric.len()
        + 1;
    let mut matchers = Vec::new();
    let mut rest = &expr[start..];
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if rest.starts_with('}') {
            break;
        }
        let op_at = rest.find(['=', '!']).expect("a matcher");
        let label = rest[..op_at].trim().to_owned();
        let op_len = if rest[op_at..].starts_with("=~") || rest[op_at..].starts_with("!") {
            2
        } else {
            1
        };
        let op = rest[op_at..op_at + op_len].to_owned();
        let (value, after) = promql_string(&rest[op_at + op_len..]);
        matchers.push(Matcher { label, op, value });
        rest = after;
    }
    matchers
}

/// A double-quoted PromQL string at the start of `text`, unescaped, and the
/// text after it.
fn promql_string(text: &str) -> (String, &str) {
    let body = text.strip_prefix('"').expect("a quoted value");
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => value.push(chars.next().expect("an escaped character").1),
            '"' => return (value, &body[i + 1..]),
            c => value.push(c),
        }
    }
    panic!("an unterminated string in {text}");
}

/// The samples of `metric` the API server exposes on /metrics, as label maps.
async fn apiserver_samples(client: &Client, metric: &str) -> Vec<BTreeMap<String, String>> {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client
        .request_text(request)
        .await
        .expect("the API server's /metrics");
    text.lines()
        .filter_map(|l| l.strip_prefix(metric)?.strip_prefix('{'))
        .map(|labels| {
            let mut sample = BTreeMap::new();
            let mut rest = labels;
            while let Some(eq) = rest.find('=') {
                let label = rest[..eq].trim_start_matches(',').to_owned();
                let (value, after) = promql_string(&rest[eq + 1..]);
                sample.insert(label, value);
                rest = after;
                if rest.starts_with('}') {
                    break;
                }
            }
            sample
        })
        .collect()
}

/// The alerts on the API server's own webhook metrics select this chart's
/// webhooks by the names it registers, and the readiness alert fires with
/// no pod at all.
#[test]
fn alerts_watch_the_api_servers_calls_to_the_webhooks_and_the_absence_of_pods() {
    let home = tempfile::tempdir().unwrap();
    let objects = render(
        home.path(),
        &["--set", "monitoring.prometheusRule.force=true"],
    );
    let exprs = alert_exprs(&objects);
    let names: Vec<String> = [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ]
    .iter()
    .flat_map(|kind| one(&objects, kind)["webhooks"].as_array().unwrap().clone())
    .map(|w| w["name"].as_str().unwrap().to_owned())
    .collect();
    assert_eq!(
        names,
        ["mutate.issuer-guard.io", "validate.issuer-guard.io"]
    );
    let webhooks = r#"name=~"mutate\\.issuer-guard\\.io|validate\\.issuer-guard\\.io""#;
    assert_eq!(
        exprs["IssuerGuardWebhookCallsFailing"],
        format!(
            r#"sum by (name, type) (rate(apiserver_admission_webhook_rejection_count{{{webhooks},error_type="calling_webhook_error"}}[5m])) > 0"#
        )
    );
    assert_eq!(
        exprs["IssuerGuardWebhookFailingOpen"],
        format!(
            r#"sum by (name, type) (rate(apiserver_admission_webhook_fail_open_count{{{webhooks}}}[5m])) > 0"#
        )
    );
    for alert in [
        "IssuerGuardWebhookCallsFailing",
        "IssuerGuardWebhookFailingOpen",
    ] {
        let metric = if alert.ends_with("CallsFailing") {
            "apiserver_admission_webhook_rejection_count"
        } else {
            "apiserver_admission_webhook_fail_open_count"
        };
        let name = selector(&exprs[alert], metric)
            .into_iter()
            .find(|m| m.label == "name")
            .expect("a name matcher");
        assert_eq!(literal_alternatives(&name.value), names, "{alert}");
    }
    let ready = r#"kube_pod_status_ready{namespace="issuer-guard",pod=~"issuer-guard-[a-z0-9]+-[a-z0-9]{5}",condition="true"}"#;
    assert_eq!(
        exprs["IssuerGuardReplicasNotReady"],
        format!("sum({ready}) < 2 or absent({ready})")
    );
    // Each can be left out by name.
    let fewer = alert_exprs(&render(
        home.path(),
        &[
            "--set",
            "monitoring.prometheusRule.force=true",
            "--set",
            "monitoring.prometheusRule.disabledAlerts={IssuerGuardWebhookCallsFailing,IssuerGuardWebhookFailingOpen}",
        ],
    ));
    assert_eq!(fewer.len() + 2, exprs.len());
}

/// `helm test` goes through the API server: a dry-run Pod in a namespace the
/// webhooks judge, made and granted by hooks that go away with the test.
#[test]
fn helm_test_creates_a_dry_run_pod_through_the_api_server_with_least_rbac() {
    let home = tempfile::tempdir().unwrap();
    let test = "templates/tests/test-webhook.yaml";
    let hooks = render(home.path(), &["--show-only", test]);
    assert_eq!(
        kinds(&hooks),
        ["Namespace", "ServiceAccount", "Role", "RoleBinding", "Pod"]
    );
    let test_ns = "issuer-guard-test";
    for hook in &hooks {
        let annotations = &hook["metadata"]["annotations"];
        assert_eq!(annotations["helm.sh/hook"], "test", "{hook}");
        assert_eq!(
            annotations["helm.sh/hook-delete-policy"], "before-hook-creation,hook-succeeded",
            "{hook}"
        );
    }
    // Created first: the namespace, then what lives in it, then the Pod.
    let weight =
        |kind: &str| one(&hooks, kind)["metadata"]["annotations"]["helm.sh/hook-weight"].clone();
    assert_eq!(weight("Namespace"), "-10");
    assert_eq!(weight("Role"), "-5");
    assert_eq!(weight("Pod"), Value::Null);
    let namespace = one(&hooks, "Namespace");
    assert_eq!(namespace["metadata"]["name"], test_ns);
    let account = one(&hooks, "ServiceAccount");
    assert_eq!(account["metadata"]["namespace"], RELEASE_NS);
    let role = one(&hooks, "Role");
    assert_eq!(role["metadata"]["namespace"], test_ns);
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}])
    );
    let binding = one(&hooks, "RoleBinding");
    assert_eq!(binding["metadata"]["namespace"], test_ns);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "issuer-guard-test", "namespace": RELEASE_NS}])
    );
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let pod = one(&hooks, "Pod");
    assert_eq!(pod["metadata"]["namespace"], RELEASE_NS);
    assert_eq!(pod["spec"]["serviceAccountName"], "issuer-guard-test");
    assert_eq!(pod["spec"]["automountServiceAccountToken"], true);
    assert_restricted(&pod["spec"]);
    let env: BTreeMap<String, String> = container_env_of(&pod["spec"]["containers"][0]);
    assert_eq!(env["NAMESPACE"], test_ns);
    let probe: Value = serde_json::from_str(&env["PROBE"]).expect("the dry-run Pod as JSON");
    assert_eq!(probe["kind"], "Pod");
    assert_eq!(probe["spec"]["automountServiceAccountToken"], false);
    assert_restricted(&probe["spec"]);
    let script = pod["spec"]["containers"][0]["command"][2].as_str().unwrap();
    assert!(
        script.contains("/api/v1/namespaces/$NAMESPACE/pods?dryRun=All"),
        "{script}"
    );
    // The test reaches nothing the webhooks never see.
    for leaked in ["/validate", "/mutate", ".svc"] {
        assert!(!script.contains(leaked), "{script}");
    }

    // An opt-in namespaceSelector and an objectSelector: the namespace and
    // the dry-run Pod carry what selects them.
    let hooks = render_values(
        home.path(),
        "webhook:\n  namespaceSelector: {matchLabels: {issuer-guard.io/enabled: \"true\"}}\n  objectSelector: {matchLabels: {team: platform}}\ntests:\n  namespace: {labels: {zone: test}}\n",
        &["--show-only", test],
    );
    let labels = &one(&hooks, "Namespace")["metadata"]["labels"];
    assert_eq!(labels["issuer-guard.io/enabled"], "true", "{labels}");
    assert_eq!(labels["zone"], "test", "{labels}");
    let env = container_env_of(&one(&hooks, "Pod")["spec"]["containers"][0]);
    let probe: Value = serde_json::from_str(&env["PROBE"]).unwrap();
    assert_eq!(probe["metadata"]["labels"]["team"], "platform", "{probe}");

    // An existing namespace: no Namespace hook, the grant goes there.
    let hooks = render(
        home.path(),
        &[
            "--set",
            "tests.namespace.name=canary",
            "--set",
            "tests.namespace.create=false",
            "--show-only",
            test,
        ],
    );
    assert_eq!(
        kinds(&hooks),
        ["ServiceAccount", "Role", "RoleBinding", "Pod"]
    );
    assert_eq!(one(&hooks, "Role")["metadata"]["namespace"], "canary");

    // Namespaces where the webhooks would leave the Pod untouched.
    for (set, needle) in [
        (
            "tests.namespace.name=kube-system",
            "never sent to the webhooks",
        ),
        (
            "tests.namespace.name=issuer-guard",
            "never sent to the webhooks",
        ),
        (
            "webhook.excludeNamespaces={canary}",
            "never sent to the webhooks",
        ),
        (
            "config.exemptNamespaces={canary}",
            "config.exemptNamespaces",
        ),
    ] {
        assert_refused(
            home.path(),
            &["--set", "tests.namespace.name=canary", "--set", set],
            needle,
        );
    }
}

fn container_env_of(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// What `helm test` does, without a kubelet to run its Pod: the hooks it
/// creates before the Pod are created as admin, and the Pod's own script
/// runs on this host with the Pod's environment and a token of the test's
/// ServiceAccount, so the request, its RBAC and its check are the chart's.
/// Returns what the script printed.
async fn helm_test_as_its_pod_would(
    cp: &ControlPlane,
    home: &Path,
    values: &str,
    dir: &Path,
) -> String {
    let hooks = chart::template(
        home,
        RELEASE,
        RELEASE_NS,
        &[
            "-f",
            values,
            "--show-only",
            "templates/tests/test-webhook.yaml",
        ],
    );
    let pp = PostParams::default();
    let c = cp.client.clone();
    let namespace = one(&hooks, "Namespace");
    let test_ns = namespace["metadata"]["name"].as_str().unwrap().to_owned();
    Api::<Namespace>::all(c.clone())
        .create(&pp, &serde_json::from_value(namespace.clone()).unwrap())
        .await
        .expect("the test namespace");
    Api::<ServiceAccount>::namespaced(c.clone(), RELEASE_NS)
        .create(
            &pp,
            &serde_json::from_value(one(&hooks, "ServiceAccount").clone()).unwrap(),
        )
        .await
        .expect("the test ServiceAccount");
    Api::<Role>::namespaced(c.clone(), &test_ns)
        .create(
            &pp,
            &serde_json::from_value(one(&hooks, "Role").clone()).unwrap(),
        )
        .await
        .expect("the test Role");
    Api::<RoleBinding>::namespaced(c.clone(), &test_ns)
        .create(
            &pp,
            &serde_json::from_value(one(&hooks, "RoleBinding").clone()).unwrap(),
        )
        .await
        .expect("the test RoleBinding");

    let pod = one(&hooks, "Pod");
    let account = pod["spec"]["serviceAccountName"].as_str().unwrap();
    let token = {
        let req =
            serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 600}}))
                .unwrap();
        Api::<ServiceAccount>::namespaced(c.clone(), RELEASE_NS)
            .create_token_request(account, &pp, &req)
            .await
            .expect("a token for the test's ServiceAccount")
            .status
            .expect("a token")
            .token
            .expect("a token")
    };
    // Where the kubelet would mount them.
    let mounted = dir.join("helm-test");
    std::fs::create_dir_all(&mounted).unwrap();
    std::fs::write(mounted.join("token"), &token).unwrap();
    std::fs::copy(&cp.pki.ca_cert, mounted.join("ca.crt")).unwrap();

    let container = &pod["spec"]["containers"][0];
    const MOUNT: &str = "sa=/var/run/secrets/kubernetes.io/serviceaccount";
    let script = container["command"][2].as_str().unwrap();
    assert!(script.contains(MOUNT), "{script}");
    let script = script.replace(MOUNT, &format!("sa={}", mounted.display()));
    let mut sh = std::process::Command::new("sh");
    sh.args(["-ec", &script])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", cp.apiserver_port().to_string())
        .envs(container_env_of(container));
    let out = tokio::task::spawn_blocking(move || sh.output())
        .await
        .unwrap()
        .expect("run the helm test's script");
    let said = ok(&out, "the helm test's script");

    // The token creates Pods in the test namespace and does nothing else.
    let (client, _) = token_client(cp, &token, &mounted).await;
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let probe: Pod = serde_json::from_value(restricted_pod("rbac-probe")).unwrap();
    for ns in [NS, RELEASE_NS, "default"] {
        assert_forbidden(
            &format!("a dry-run Pod in {ns}"),
            Api::<Pod>::namespaced(client.clone(), ns)
                .create(&dry_run, &probe)
                .await,
        );
    }
    assert_forbidden(
        "listing Pods in the test namespace",
        Api::<Pod>::namespaced(client.clone(), &test_ns)
            .list(&ListParams::default())
            .await,
    );
    assert_forbidden(
        "listing Secrets in the test namespace",
        Api::<Secret>::namespaced(client.clone(), &test_ns)
            .list(&ListParams::default())
            .await,
    );
    said
}

/// The docs name no command the binary lacks,
/// and the chart README's rotation examples lean on discovery instead of
/// numbering generations by hand.
#[test]
fn the_docs_name_only_real_commands_and_rotate_through_discovery() {
    use clap::CommandFactory;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cli = issuer_guard::cli::Cli::command();
    // Every command the docs offer exists, the remediation one included.
    assert!(cli.find_subcommand("restart").is_some());
    let mut docs = vec![
        root.join("README.md"),
        root.join("charts/issuer-guard/README.md"),
    ];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for (i, line) in text.lines().enumerate() {
            let at = format!("{}:{}", doc.display(), i + 1);
            // `issuer-guard <subcommand>` in code names a real one.
            for code in line.split('`').skip(1).step_by(2) {
                if let Some(rest) = code.strip_prefix("issuer-guard ") {
                    let word = rest.split_whitespace().next().unwrap_or_default();
                    if word.chars().all(|c| c.is_ascii_lowercase()) && !word.is_empty() {
                        assert!(
                            cli.find_subcommand(word).is_some(),
                            "{at}: `issuer-guard {word}` is no command: {line}"
                        );
                    }
                }
            }
        }
    }
    let chart_readme = std::fs::read_to_string(root.join("charts/issuer-guard/README.md")).unwrap();
    let values_blocks: Vec<String> = yaml_blocks(&chart_readme)
        .into_iter()
        .map(|(_, b)| b)
        .filter(|b| b.starts_with("config:"))
        .collect();
    assert!(!values_blocks.is_empty());
    for block in values_blocks {
        assert!(
            !block.contains("generation:"),
            "a chart README rotation example numbers generations by hand:\n{block}"
        );
    }
}

/// The first line at which two renders differ, for a readable failure.
fn first_difference(a: &str, b: &str) -> String {
    a.lines()
        .zip(b.lines())
        .enumerate()
        .find(|(_, (x, y))| x != y)
        .map_or_else(
            || format!("lengths {} and {}", a.len(), b.len()),
            |(i, (x, y))| format!("line {}: {x:?} vs {y:?}", i + 1),
        )
}

/// `tls.mode=self` renders nothing that changes from one render to the
/// next: no certificate and no caBundle, which issuer-guard makes and sets
/// itself. So two `helm template` runs (how Argo CD renders, with no API
/// server to `lookup`) are byte for byte the same, and a GitOps sync never
/// replaces the CA. As a control, `tls.mode=helm` renders differ: without
/// `lookup` it generates a new CA every time.
#[test]
fn self_tls_renders_the_same_twice_and_leaves_the_certificate_to_the_binary() {
    let (release, ns) = ("edge", "guard-system");
    let (fullname, secret) = ("edge-issuer-guard", "edge-issuer-guard-self-tls");
    let home = tempfile::tempdir().unwrap();
    let image = image_values(home.path());
    let raw = |mode: &str| {
        let mode = format!("tls.mode={mode}");
        let args = [
            "template",
            release,
            CHART,
            "--namespace",
            ns,
            "-f",
            &image,
            "--set",
            &mode,
        ];
        ok(&helm(home.path(), &args), &format!("helm template {mode}"))
    };
    let (first, second) = (raw("self"), raw("self"));
    assert!(
        first == second,
        "two renders in tls.mode=self differ: {}",
        first_difference(&first, &second)
    );
    let (helm_first, helm_second) = (raw("helm"), raw("helm"));
    assert!(
        helm_first != helm_second,
        "control: two renders in tls.mode=helm are the same, so the comparison above proves nothing"
    );

    let objects = chart::objects(&first);
    assert!(find(&objects, "Secret").is_empty(), "{:?}", kinds(&objects));
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let config = one(&objects, kind);
        assert_eq!(
            config["metadata"]["annotations"]["issuer-guard.io/ca-bundle-from"],
            format!("{ns}/{secret}"),
            "{config}"
        );
        for w in config["webhooks"].as_array().unwrap() {
            // Rendered without the field, Helm's three-way merge and Argo
            // CD's apply leave the value issuer-guard set alone.
            assert!(w["clientConfig"].get("caBundle").is_none(), "{w}");
        }
    }
    let deployment = named(&objects, "Deployment", fullname);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert!(
        !container["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().starts_with("--tls-")),
        "{container}"
    );
    assert!(!pod.to_string().contains("\"tls\""), "a tls volume: {pod}");
    let env: Vec<(String, String)> = container_env(deployment)
        .into_iter()
        .filter(|(k, _)| !discovery_env().contains(k))
        .collect();
    let want = [
        ("ISSUER_GUARD_TLS_SECRET", format!("{ns}/{secret}")),
        ("ISSUER_GUARD_WEBHOOK_CONFIGURATIONS", fullname.to_owned()),
        (
            "ISSUER_GUARD_TLS_NAMES",
            format!(
                "{fullname}.{ns}.svc,{fullname}.{ns}.svc.cluster.local,{fullname}.{ns},{fullname}"
            ),
        ),
        ("ISSUER_GUARD_CA_LIFETIME", "8760h".to_owned()),
        ("ISSUER_GUARD_CA_RENEW_BEFORE", "720h".to_owned()),
        ("ISSUER_GUARD_CERT_LIFETIME", "2160h".to_owned()),
        ("ISSUER_GUARD_CERT_RENEW_BEFORE", "720h".to_owned()),
        ("ISSUER_GUARD_CA_OVERLAP", "10m".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    assert_eq!(env, want);

    // The values reach the binary as given; the extra names and IPs join
    // the certificate's names.
    let set = [
        "tls.mode=self",
        "tls.self.caLifetime=60s",
        "tls.self.caRenewBefore=40s",
        "tls.self.certLifetime=30s",
        "tls.self.certRenewBefore=15s",
        "tls.self.overlap=4s",
        "tls.extraDnsNames[0]=webhook.example.internal",
        "tls.extraIPs[0]=127.0.0.1",
    ];
    let env: BTreeMap<String, String> = container_env(one(
        &chart::render(release, ns, &set, "deployment.yaml"),
        "Deployment",
    ))
    .into_iter()
    .collect();
    assert_eq!(
        [
            "ISSUER_GUARD_CA_LIFETIME",
            "ISSUER_GUARD_CA_RENEW_BEFORE",
            "ISSUER_GUARD_CERT_LIFETIME",
            "ISSUER_GUARD_CERT_RENEW_BEFORE",
            "ISSUER_GUARD_CA_OVERLAP"
        ]
        .map(|k| env[k].as_str()),
        ["60s", "40s", "30s", "15s", "4s"]
    );
    assert!(
        env["ISSUER_GUARD_TLS_NAMES"].ends_with(",webhook.example.internal,127.0.0.1"),
        "{env:?}"
    );

    // What the binary would refuse at start-up is refused at install, with
    // its words.
    for (set, needle) in [
        (
            "tls.self.certRenewBefore=3000h",
            "shorter than tls.self.certLifetime",
        ),
        (
            "tls.self.caRenewBefore=9000h",
            "shorter than tls.self.caLifetime",
        ),
        ("tls.self.caRenewBefore=15m", "twice tls.self.overlap"),
        ("tls.self.overlap=1h30m", "/tls/self/overlap"),
    ] {
        assert_refused(
            home.path(),
            &["--set", "tls.mode=self", "--set", set],
            needle,
        );
    }
}

/// `tls.mode=self` adds exactly what the binary needs: its own Secret by
/// name (and `create` in the release namespace, which RBAC cannot narrow by
/// name), and its own two webhook configurations by name. Other modes get
/// none of it.
#[test]
fn self_tls_rbac_is_its_secret_and_its_two_webhook_configurations_by_name() {
    let (release, ns) = ("edge", "guard-system");
    let (fullname, secret) = ("edge-issuer-guard", "edge-issuer-guard-self-tls");
    let service_account = json!({"kind": "ServiceAccount", "name": fullname, "namespace": ns});
    let webhooks_rule = json!({
        "apiGroups": ["admissionregistration.k8s.io"],
        "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
        "resourceNames": [fullname],
        "verbs": ["get", "patch"],
    });
    let secret_rules = json!([
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret], "verbs": ["get", "list", "watch", "update"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    ]);

    // Alone: nothing but the two.
    let alone = chart::render(
        release,
        ns,
        &[
            "tls.mode=self",
            "secretWatch.enabled=false",
            "discovery.enabled=false",
        ],
        "rbac.yaml",
    );
    assert_eq!(
        kinds(&alone),
        ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
    );
    assert_eq!(one(&alone, "ClusterRole")["rules"], json!([webhooks_rule]));
    assert_eq!(
        one(&alone, "ClusterRoleBinding")["subjects"],
        json!([service_account])
    );
    let role = one(&alone, "Role");
    assert_eq!(
        role["metadata"]["name"],
        format!("{fullname}-tls"),
        "{role}"
    );
    assert_eq!(role["metadata"]["namespace"], ns, "{role}");
    assert_eq!(role["rules"], secret_rules, "{role}");
    let binding = one(&alone, "RoleBinding");
    assert_eq!(binding["metadata"]["namespace"], ns, "{binding}");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("{fullname}-tls")})
    );
    assert_eq!(binding["subjects"], json!([service_account]));

    // Beside the defaults: added to them, which are otherwise unchanged.
    let with = chart::render(release, ns, &["tls.mode=self"], "rbac.yaml");
    let without = chart::render(release, ns, &[], "rbac.yaml");
    let cluster_rules = |objects: &[Value]| one(objects, "ClusterRole")["rules"].clone();
    let mut expected = cluster_rules(&without).as_array().unwrap().clone();
    expected.push(webhooks_rule.clone());
    assert_eq!(cluster_rules(&with), json!(expected));
    let roles: Vec<&Value> = find(&with, "Role");
    // -discovery, -apiservers (in default) and -tls.
    assert_eq!(roles.len(), 3, "{roles:?}");
    assert_eq!(
        roles
            .iter()
            .find(|r| r["metadata"]["name"] == format!("{fullname}-tls"))
            .expect("the tls Role")["rules"],
        secret_rules
    );
    for other in ["helm", "cert-manager"] {
        let mode = format!("tls.mode={other}");
        let rbac = chart::render(release, ns, &[&mode], "rbac.yaml");
        let text = serde_json::to_string(&rbac).unwrap();
        assert!(
            !text.contains("admissionregistration") && !text.contains(&format!("{fullname}-tls")),
            "{mode}: {text}"
        );
    }
}

/// Whether `selector` (a `matchLabels` map) selects an object with `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .expect("matchLabels")
        .iter()
        .all(|(k, v)| labels[k] == *v)
}

/// The args of a Deployment's first container.
fn container_args(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("an arg").to_owned())
        .collect()
}

/// The inventory: one pod of the webhook's image running `inventory`, with
/// the webhook's ledger (as `<namespace>/<name>`), configuration and
/// discovery window, replaced by Recreate, as restricted as the webhook,
/// and labelled so that nothing of the webhook's selects it. Rendered only
/// with discovery (it reads the ledger) and `inventory.enabled`.
#[test]
fn the_inventory_runs_the_webhooks_image_with_its_ledger_and_config() {
    let (release, ns) = ("edge", "guard-system");
    let (fullname, inventory) = ("edge-issuer-guard", "edge-issuer-guard-inventory");
    let home = tempfile::tempdir().unwrap();
    let objects = chart::template(home.path(), release, ns, &[]);
    let webhook = named(&objects, "Deployment", fullname);
    let deployment = named(&objects, "Deployment", inventory);
    assert_eq!(deployment["metadata"]["namespace"], ns);
    assert_eq!(deployment["spec"]["replicas"], 1, "{deployment}");
    assert_eq!(
        deployment["spec"]["strategy"],
        json!({"type": "Recreate"}),
        "{deployment}"
    );
    let spec = &deployment["spec"]["template"]["spec"];
    assert_restricted(spec);
    let (mine, theirs) = (
        &spec["containers"][0],
        &webhook["spec"]["template"]["spec"]["containers"][0],
    );
    assert_eq!(mine["image"], theirs["image"]);
    assert_eq!(
        spec["securityContext"],
        webhook["spec"]["template"]["spec"]["securityContext"]
    );
    assert_eq!(mine["securityContext"], theirs["securityContext"]);
    assert_eq!(spec["serviceAccountName"], inventory);
    assert_eq!(spec["automountServiceAccountToken"], true);
    assert!(spec.get("priorityClassName").is_none(), "{spec}");

    // The flags: the webhook's ledger, as NAMESPACE/NAME; its config file,
    // from the same ConfigMap at the same path; its discovery window.
    let args = container_args(deployment);
    let webhook_ledger = container_env(webhook)
        .into_iter()
        .find(|(k, _)| k == "ISSUER_GUARD_LEDGER")
        .map(|(_, v)| v)
        .expect("the webhook's ledger");
    assert_eq!(webhook_ledger, "edge-issuer-guard-ledger");
    let webhook_config = container_args(webhook)
        .into_iter()
        .find(|a| a.starts_with("--config="))
        .expect("the webhook's --config");
    assert_eq!(
        args,
        [
            "inventory".to_owned(),
            "--listen=0.0.0.0:8080".to_owned(),
            format!("--ledger={ns}/{webhook_ledger}"),
            webhook_config,
            "--discovery-window=5m".to_owned(),
            "--interval=15s".to_owned(),
            "--log-format=json".to_owned(),
        ]
    );
    let config_volume = |d: &Value| -> (Value, Value) {
        let spec = &d["spec"]["template"]["spec"];
        let mount = spec["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "config")
            .cloned()
            .expect("a config mount");
        let volume = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "config")
            .cloned()
            .expect("a config volume");
        (mount, volume)
    };
    assert_eq!(config_volume(deployment), config_volume(webhook));
    assert_eq!(
        spec["volumes"].as_array().map(Vec::len),
        Some(1),
        "only the config is mounted: {spec}"
    );
    // The binary takes these flags as the chart writes them (clap, without
    // running anything).
    {
        use clap::Parser;
        let mut argv = vec!["issuer-guard".to_owned()];
        argv.extend(args.iter().cloned());
        issuer_guard::cli::Cli::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("the binary refuses the chart's inventory args: {e}"));
    }
    // /healthz and /readyz on the 8080 port the Service targets.
    assert_eq!(
        mine["ports"],
        json!([{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        mine["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "metrics"})
    );
    assert_eq!(
        mine["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "metrics"})
    );
    assert_eq!(
        mine["resources"],
        json!({"requests": {"cpu": "10m", "memory": "50Mi"}, "limits": {"memory": "256Mi"}})
    );
    let service = named(&objects, "Service", inventory);
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}])
    );

    // Its own labels: the webhook's Service, PDB and Deployment select none
    // of its pods, and its Service and Deployment none of the webhook's.
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let webhook_pod_labels = &webhook["spec"]["template"]["metadata"]["labels"];
    let webhook_service = named(&objects, "Service", fullname);
    for selector in [
        &webhook_service["spec"]["selector"],
        &webhook["spec"]["selector"]["matchLabels"],
        &named(&objects, "PodDisruptionBudget", fullname)["spec"]["selector"]["matchLabels"],
    ] {
        assert!(selects(selector, webhook_pod_labels), "{selector}");
        assert!(
            !selects(selector, pod_labels),
            "{selector} selects the inventory"
        );
    }
    for selector in [
        &service["spec"]["selector"],
        &deployment["spec"]["selector"]["matchLabels"],
    ] {
        assert!(selects(selector, pod_labels), "{selector}");
        assert!(
            !selects(selector, webhook_pod_labels),
            "{selector} selects the webhook"
        );
    }
    assert_eq!(
        deployment["metadata"]["labels"]["app.kubernetes.io/component"],
        "inventory"
    );

    // The configuration is read once at start: a change of it changes the
    // pod template (a restart), anything else does not.
    let annotation = |set: &[&str]| {
        let mut extra = vec!["--show-only", "templates/inventory.yaml"];
        for s in set {
            extra.extend(["--set", s]);
        }
        let objects = chart::template(home.path(), release, ns, &extra);
        named(&objects, "Deployment", inventory)["spec"]["template"]["metadata"]["annotations"]
            ["issuer-guard.io/config"]
            .clone()
    };
    let before = annotation(&[]);
    assert!(before.is_string(), "{before}");
    assert_eq!(
        annotation(&["webhook.timeoutSeconds=10", "replicas=5"]),
        before
    );
    assert_ne!(annotation(&["config.mode=audit"]), before);

    // Values reach its flags and pod as given: another ledger (its Role
    // follows), durations, scheduling.
    let set = [
        "discovery.ledger=generations.example",
        "discovery.window=2h",
        "inventory.interval=500ms",
        "logFormat=text",
        "inventory.tolerations[0].key=dedicated",
        "inventory.tolerations[0].operator=Exists",
        "inventory.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool",
        "inventory.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        "podLabels.team=platform",
    ];
    let objects = chart::render(release, ns, &set, "inventory.yaml");
    let deployment = named(&objects, "Deployment", inventory);
    let args = container_args(deployment);
    for want in [
        "--ledger=guard-system/generations.example",
        "--discovery-window=2h",
        "--interval=500ms",
        "--log-format=text",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} not in {args:?}");
    }
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        spec["tolerations"],
        json!([{"key": "dedicated", "operator": "Exists"}])
    );
    assert_eq!(spec["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    assert!(spec["affinity"]["nodeAffinity"].is_object(), "{spec}");
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["team"],
        "platform"
    );
    assert_eq!(
        named(&objects, "Role", inventory)["rules"][0]["resourceNames"],
        json!(["generations.example"])
    );

    // Off with discovery, or by itself: nothing of it is rendered,
    // anywhere in the chart (monitoring forced, so its ServiceMonitor,
    // NetworkPolicy and alerts would show).
    for off in ["discovery.enabled=false", "inventory.enabled=false"] {
        let objects = chart::template(
            home.path(),
            release,
            ns,
            &[
                "--set",
                off,
                "--set",
                "monitoring.serviceMonitor.force=true",
                "--set",
                "monitoring.prometheusRule.force=true",
                "--set",
                "networkPolicy.enabled=true",
            ],
        );
        let text = serde_json::to_string(&objects).unwrap();
        assert!(
            !text.contains("inventory"),
            "{off}: the inventory is rendered: {:?}",
            kinds(&objects)
        );
        assert_eq!(find(&objects, "Deployment").len(), 1, "{off}");
    }
    // rbac.create=false: the pod and its account, no grant.
    let objects = chart::render(release, ns, &["rbac.create=false"], "inventory.yaml");
    assert_eq!(kinds(&objects), ["ServiceAccount", "Service", "Deployment"]);

    // What the binary would refuse, and an account already taken, are
    // refused at install.
    for (set, needle) in [
        ("inventory.interval=1h30m", "/inventory/interval"),
        ("inventory.interval=0s", "/inventory/interval"),
        (
            "inventory.blockedAlertAfter=1.5h",
            "/inventory/blockedAlertAfter",
        ),
        (
            "inventory.blockedAlertAfter=0d",
            "/inventory/blockedAlertAfter",
        ),
        ("inventory.replicas=2", "replicas"),
    ] {
        assert_refused(home.path(), &["--set-string", set], needle);
    }
    assert_refused(
        home.path(),
        &["--set", &format!("serviceAccount.name={INVENTORY}")],
        "is the inventory's own ServiceAccount",
    );
}

/// The inventory's RBAC is read only: list and watch of pods, ReplicaSets,
/// ServiceAccounts and Secrets cluster-wide, and get, list and watch of the
/// ledger by name in the release namespace; bound to its own account only,
/// which the webhook's grants never name.
#[test]
fn the_inventory_may_only_list_watch_and_read_its_ledger() {
    let (release, ns) = ("edge", "guard-system");
    let inventory = "edge-issuer-guard-inventory";
    let account = json!([{"kind": "ServiceAccount", "name": inventory, "namespace": ns}]);
    let objects = chart::render(release, ns, &[], "inventory.yaml");
    assert_eq!(
        kinds(&objects),
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment"
        ]
    );
    assert_eq!(
        named(&objects, "ServiceAccount", inventory)["automountServiceAccountToken"],
        false
    );
    let cluster_role = named(&objects, "ClusterRole", inventory);
    assert_eq!(
        cluster_role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
            {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["list", "watch"]},
            {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["list", "watch"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]},
        ]),
        "{cluster_role}"
    );
    let role = named(&objects, "Role", inventory);
    assert_eq!(role["metadata"]["namespace"], ns);
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["configmaps"],
            "resourceNames": ["edge-issuer-guard-ledger"], "verbs": ["get", "list", "watch"]}]),
        "{role}"
    );
    for (kind, role_kind) in [
        ("ClusterRoleBinding", "ClusterRole"),
        ("RoleBinding", "Role"),
    ] {
        let binding = named(&objects, kind, inventory);
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": inventory}),
            "{binding}"
        );
        assert_eq!(binding["subjects"], account, "{binding}");
    }
    // No write verb, no wildcard, no non-resource URL in any of its rules.
    for rule in [cluster_role, role]
        .iter()
        .flat_map(|r| r["rules"].as_array().unwrap().iter())
    {
        for verb in rule["verbs"].as_array().unwrap() {
            assert!(
                ["get", "list", "watch"].contains(&verb.as_str().unwrap()),
                "{rule}"
            );
        }
        assert!(rule.get("nonResourceURLs").is_none(), "{rule}");
        assert!(!rule.to_string().contains('*'), "{rule}");
    }
    // The webhook's grants are unchanged by it and never name its account.
    let rbac = chart::render(release, ns, &[], "rbac.yaml");
    assert!(
        !serde_json::to_string(&rbac).unwrap().contains("inventory"),
        "{rbac:?}"
    );
}

/// With monitoring, the inventory is scraped under its own job, its
/// NetworkPolicy opens only its metrics port to the webhook's metrics
/// peers, and its two alerts select that job with the values' thresholds;
/// each can be left out by name.
#[test]
fn the_inventory_alerts_select_its_job_with_the_values_thresholds() {
    let home = tempfile::tempdir().unwrap();
    let monitoring = Path::new(CHART).join("ci/monitoring-values.yaml");
    let monitoring = monitoring.to_str().unwrap();
    let objects = render(home.path(), &["-f", monitoring]);

    // The ServiceMonitors: each selects its own Service, whose name is the
    // job of the series it scrapes.
    let service = named(&objects, "Service", INVENTORY);
    let webhook_service = named(&objects, "Service", RELEASE);
    let monitor = named(&objects, "ServiceMonitor", INVENTORY);
    let webhook_monitor = named(&objects, "ServiceMonitor", RELEASE);
    let labels = &service["metadata"]["labels"];
    let webhook_labels = &webhook_service["metadata"]["labels"];
    assert!(selects(&monitor["spec"]["selector"]["matchLabels"], labels));
    assert!(!selects(
        &monitor["spec"]["selector"]["matchLabels"],
        webhook_labels
    ));
    assert!(!selects(
        &webhook_monitor["spec"]["selector"]["matchLabels"],
        labels
    ));
    assert_eq!(
        monitor["spec"]["endpoints"],
        webhook_monitor["spec"]["endpoints"]
    );
    assert!(monitor["spec"].get("jobLabel").is_none(), "{monitor}");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");

    // Its NetworkPolicy: the metrics port from the webhook's metrics peers,
    // the same egress, and only its own pod.
    let policy = named(&objects, "NetworkPolicy", INVENTORY);
    let webhook_policy = named(&objects, "NetworkPolicy", RELEASE);
    assert_eq!(
        policy["spec"]["ingress"],
        json!([webhook_policy["spec"]["ingress"][1]]),
        "{policy}"
    );
    assert_eq!(
        policy["spec"]["ingress"][0]["ports"],
        json!([{"port": "metrics", "protocol": "TCP"}])
    );
    let pod_labels =
        &named(&objects, "Deployment", INVENTORY)["spec"]["template"]["metadata"]["labels"];
    assert!(selects(
        &policy["spec"]["podSelector"]["matchLabels"],
        pod_labels
    ));
    assert!(!selects(
        &webhook_policy["spec"]["podSelector"]["matchLabels"],
        pod_labels
    ));
    let egress = [
        json!({"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}], "ports": [{"port": 6443, "protocol": "TCP"}]}),
    ];
    let with_egress = render(
        home.path(),
        &[
            "-f",
            monitoring,
            "--set-json",
            &format!("networkPolicy.egress={}", json!(egress)),
        ],
    );
    let policy = named(&with_egress, "NetworkPolicy", INVENTORY);
    assert_eq!(policy["spec"]["egress"], json!(egress));
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        named(&with_egress, "NetworkPolicy", RELEASE)["spec"]["egress"],
        policy["spec"]["egress"]
    );

    // The alerts, as rendered for the default release.
    let rules = one(&objects, "PrometheusRule")["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .clone();
    let rule = |name: &str| {
        rules
            .iter()
            .find(|r| r["alert"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .clone()
    };
    let sel = r#"namespace="issuer-guard",job="issuer-guard-inventory""#;
    let retired = rule("IssuerGuardRetiredWhileBlocked");
    assert_eq!(
        retired["expr"],
        format!("max by (kind, name) (issuer_guard_inventory_broken_pods{{{sel}}}) > 0")
    );
    assert_eq!(retired["for"], "1m");
    assert_eq!(
        retired["labels"],
        json!({"severity": "critical", "team": "platform"})
    );
    let blocked = rule("IssuerGuardRotationBlocked");
    assert_eq!(
        blocked["expr"],
        format!(
            "max by (kind, name) (issuer_guard_inventory_blocked_for_seconds{{{sel}}}) > 172800"
        )
    );
    assert!(blocked.get("for").is_none(), "{blocked}");
    assert_eq!(
        blocked["labels"],
        json!({"severity": "warning", "team": "platform"})
    );
    for alert in [&retired, &blocked] {
        let said = alert["annotations"]["description"].as_str().unwrap();
        assert!(
            said.contains("issuer-guard status") && said.contains("kubectl issuer-guard status"),
            "{said}"
        );
    }
    // Their job is the inventory Service's name, in the release namespace;
    // the webhook's alerts keep the webhook's.
    let exprs = alert_exprs(&objects);
    for (alert, metric) in [
        (
            "IssuerGuardRetiredWhileBlocked",
            "issuer_guard_inventory_broken_pods",
        ),
        (
            "IssuerGuardRotationBlocked",
            "issuer_guard_inventory_blocked_for_seconds",
        ),
    ] {
        let sample: BTreeMap<String, String> = [
            ("namespace", RELEASE_NS),
            ("job", service["metadata"]["name"].as_str().unwrap()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert!(
            selector(&exprs[alert], metric)
                .iter()
                .all(|m| m.matches(&sample)),
            "{alert}"
        );
    }
    assert!(exprs["IssuerGuardLedgerRefused"].contains(r#"job="issuer-guard""#));

    // The threshold in s, m, h or d.
    for (after, seconds) in [
        ("2d", 172_800),
        ("90m", 5_400),
        ("30s", 30),
        ("36h", 129_600),
    ] {
        let exprs = alert_exprs(&render(
            home.path(),
            &[
                "-f",
                monitoring,
                "--set",
                &format!("inventory.blockedAlertAfter={after}"),
            ],
        ));
        assert!(
            exprs["IssuerGuardRotationBlocked"].ends_with(&format!(") > {seconds}")),
            "{after}: {}",
            exprs["IssuerGuardRotationBlocked"]
        );
    }
    // Each can be left out by name.
    for disabled in [
        "IssuerGuardRetiredWhileBlocked",
        "IssuerGuardRotationBlocked",
    ] {
        let fewer = alert_exprs(&render(
            home.path(),
            &[
                "-f",
                monitoring,
                "--set",
                &format!("monitoring.prometheusRule.disabledAlerts={{{disabled}}}"),
            ],
        ));
        assert_eq!(fewer.len() + 1, exprs.len(), "{disabled}");
        assert!(!fewer.contains_key(disabled));
    }
}

/// `restart`'s ClusterRole is opt-in and bound to nobody; it may patch
/// workloads, evict and create pods, but never delete anything, and the
/// webhook's own roles get none of it.
#[test]
fn the_restart_role_is_opt_in_bound_to_nobody_and_deletes_nothing() {
    let (release, ns) = ("edge", "guard-system");
    let home = tempfile::tempdir().expect("a helm home");
    let by_default = chart::template(home.path(), release, ns, &[]);
    assert!(
        !by_default
            .iter()
            .any(|o| o["metadata"]["name"] == "edge-issuer-guard-restart")
    );
    let objects = chart::render(
        release,
        ns,
        &["restart.clusterRole=true"],
        "restart-rbac.yaml",
    );
    assert_eq!(kinds(&objects), ["ClusterRole"]);
    let role = named(&objects, "ClusterRole", "edge-issuer-guard-restart");
    let rules = role["rules"].as_array().expect("rules");
    let verbs: Vec<&str> = rules
        .iter()
        .flat_map(|r| r["verbs"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    assert!(
        !verbs
            .iter()
            .any(|v| ["delete", "deletecollection", "update", "*"].contains(v)),
        "{role}"
    );
    let grants = |resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r["resources"]
                .as_array()
                .is_some_and(|x| x.contains(&json!(resource)))
                && r["verbs"]
                    .as_array()
                    .is_some_and(|x| x.contains(&json!(verb)))
        })
    };
    for (resource, verb) in [
        ("pods/eviction", "create"),
        ("pods", "create"),
        ("deployments", "patch"),
        ("statefulsets", "patch"),
        ("daemonsets", "patch"),
        ("replicationcontrollers", "patch"),
        ("events", "create"),
        ("pods", "list"),
    ] {
        assert!(grants(resource, verb), "{resource} {verb}: {role}");
    }
    // Nothing in the full render binds it, and the webhook's roles cannot
    // evict.
    let all = chart::template(
        home.path(),
        release,
        ns,
        &["--set", "restart.clusterRole=true"],
    );
    for binding in all
        .iter()
        .filter(|o| o["kind"] == "ClusterRoleBinding" || o["kind"] == "RoleBinding")
    {
        assert_ne!(binding["roleRef"]["name"], "edge-issuer-guard-restart");
        assert!(
            !serde_json::to_string(binding)
                .unwrap_or_default()
                .contains("eviction")
        );
    }
    for role in all
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
        .filter(|o| o["metadata"]["name"] != "edge-issuer-guard-restart")
    {
        let text = serde_json::to_string(&role["rules"]).unwrap_or_default();
        assert!(!text.contains("pods/eviction"), "{role}");
    }
}
