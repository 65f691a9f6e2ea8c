//! `issuer-guard check` as a user runs it: files, directories, stdin, exit codes.
//! Every run is of the shipped binary (`ISSUER_GUARD_BIN`, which
//! scripts/test builds).

mod support;

use std::{
    collections::BTreeSet,
    io::Write,
    path::Path,
    process::{Command, Output, Stdio},
    sync::Arc,
};

use arc_swap::ArcSwap;
use issuer_guard::{
    admission::{Endpoint, Reply, Webhook},
    config::Config,
    rules::LegacySecrets,
};
use serde_json::{Value, json};

const MANIFESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/manifests");

const KEY_ROTATION: &str = "generation: {static: {number: 2, issuer: 'https://new.example.com', keyId: kid-b}}\nrotation: {retiringKeyIds: [kid-a]}\n";

fn check(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(support::issuer_guard_bin())
        .arg("check")
        .args(args)
        // The flags' variables would change what the tests read.
        .env_remove("ISSUER_GUARD_CONFIG")
        .env_remove("ISSUER_GUARD_OUTPUT")
        .env_remove("ISSUER_GUARD_NAMESPACE")
        .env_remove("ISSUER_GUARD_STRICT")
        .env_remove("ISSUER_GUARD_SNAPSHOT")
        .env_remove("ISSUER_GUARD_DISCOVERY_WINDOW")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn config_file(dir: &Path, text: &str) -> String {
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn fixture(name: &str) -> String {
    format!("{MANIFESTS}/{name}")
}

#[test]
fn json_lists_every_judged_object_and_exit_1_on_deny() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), KEY_ROTATION);
    let out = check(&["--config", &config, "-o", "json", MANIFESTS], None);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects = stdout_json(&out);
    assert_eq!(report_json(&out)["unusable"], json!([]));
    // Secrets are inputs, not judged objects; the 11 workloads are.
    assert_eq!(objects.len(), 11);
    let runner = objects.iter().find(|o| o["name"] == "runner").unwrap();
    assert_eq!(runner["kind"], "Deployment");
    assert_eq!(runner["namespace"], "ci");
    assert_eq!(runner["findings"][0]["rule"], "legacy-token-env");
    assert_eq!(runner["findings"][0]["action"], "deny");
    assert!(
        runner["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("spec.template.spec.containers[0].env[1]")
    );
    let istio = objects
        .iter()
        .find(|o| o["kind"] == "Pod" && o["namespace"] == "bookinfo")
        .unwrap();
    assert_eq!(
        istio["findings"],
        Value::Array(vec![]),
        "judged objects without findings are listed too"
    );
}

#[test]
fn table_without_rotation_warns_and_exits_0() {
    let out = check(&[&fixture("token-in-env-deployment.yaml")], None);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // One line per finding: action, rule, object and where it was read;
    // the explanation wrapped beneath, so that every line fits a terminal.
    assert!(
        lines[0].starts_with("label")
            && lines[0].contains("legacy-token-env")
            && lines[0].contains("Deployment/ci/runner")
            && lines[0].contains("token-in-env-deployment.yaml, document 2)"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("    ") && lines[1].len() <= 96,
        "{text}"
    );
    assert!(lines.iter().all(|l| l.chars().count() <= 160), "{text}");
    assert_eq!(
        lines.last().unwrap(),
        &"1 object(s) judged, 0 exempt, 1 with findings: 0 deny, 1 label, 0 warn; 0 unusable input(s)"
    );
}

#[test]
fn stdin_lists_and_the_namespace_flag() {
    let list = r#"{"apiVersion":"v1","kind":"List","items":[
        {"apiVersion":"v1","kind":"Secret","type":"kubernetes.io/service-account-token","metadata":{"name":"bot-token"}},
        {"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","env":[{"name":"T","valueFrom":{"secretKeyRef":{"name":"bot-token","key":"token"}}}]}]}}
    ]}"#;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), KEY_ROTATION);
    let out = check(
        &[
            "--config",
            &config,
            "--namespace",
            "team-a",
            "-o",
            "json",
            "-",
        ],
        Some(list),
    );
    assert_eq!(out.status.code(), Some(1));
    let v = stdout_json(&out);
    assert_eq!(v[0]["namespace"], "team-a");
    assert_eq!(v[0]["findings"][0]["rule"], "legacy-token-env");
}

#[test]
fn unusable_input_exits_2_naming_file_and_document() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: ok}\n---\nkind: [broken\n",
    )
    .unwrap();
    let out = check(&[bad.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    // The rest of the file is still judged; the broken document is named.
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("bad.yaml: document 2:"), "{text}");
    assert!(text.contains("1 object(s) judged"), "{text}");
    let out = check(&["-o", "json", bad.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("bad.yaml: document 2:"), "{err}");
    assert!(
        err.contains("bad.yaml (document 2), line"),
        "the snippet names the file: {err}"
    );
    assert_eq!(stdout_json(&out).len(), 1);
    // Scripts see what could not be used in the report itself.
    let unusable = &report_json(&out)["unusable"];
    assert_eq!(unusable.as_array().unwrap().len(), 1, "{unusable}");
    assert_eq!(unusable[0]["file"], bad.to_str().unwrap());
    assert_eq!(unusable[0]["document"], 2);
    assert_eq!(unusable[0]["explicit"], true);
    assert!(
        unusable[0]["error"]
            .as_str()
            .unwrap()
            .contains("bad.yaml: document 2:"),
        "{unusable}"
    );
    // Nothing judged at all still reads as the same shape.
    let out = check(&["-o", "json", "/nonexistent/manifests.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    let report = report_json(&out);
    assert_eq!(report["objects"], json!([]));
    assert_eq!(report["unusable"][0]["file"], "/nonexistent/manifests.yaml");
    assert_eq!(report["unusable"][0]["document"], Value::Null);

    let out = check(&["/nonexistent/manifests.yaml"], None);
    assert_eq!(out.status.code(), Some(2));

    let config = config_file(dir.path(), "mode: strict\n");
    let out = check(&["--config", &config, &fixture("irsa-pod.yaml")], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("`mode`"));
}

/// A bare Pod whose projected token is mounted alone with `subPath`: under
/// any declared rotation, `token-subpath` is certain and denied.
const SUBPATH_POD: &str = "apiVersion: v1
kind: Pod
metadata: {name: NAME}
spec:
  containers:
  - name: c
    image: busybox
    volumeMounts:
    - {name: kube-api-access-abcde, mountPath: /token, subPath: token}
  volumes:
  - name: kube-api-access-abcde
    projected:
      sources:
      - serviceAccountToken: {expirationSeconds: 3607, path: token}
";

const PLAIN_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: NAME}\nspec: {containers: [{name: c, image: busybox}]}\n";

fn pod(template: &str, name: &str) -> String {
    template.replace("NAME", name)
}

/// The judged objects of a `-o json` report.
fn stdout_json(out: &Output) -> Vec<Value> {
    report_json(out)["objects"]
        .as_array()
        .expect("a JSON array of objects")
        .clone()
}

fn report_json(out: &Output) -> Value {
    serde_json::from_slice::<Value>(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn names(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_owned())
        .collect()
}

fn rules_of(object: &Value) -> Vec<&str> {
    object["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect()
}

#[test]
fn directories_are_read_recursively() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), KEY_ROTATION);
    let manifests = dir.path().join("manifests");
    let deep = manifests.join("team/apps/base");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(manifests.join("top.yaml"), pod(PLAIN_POD, "top")).unwrap();
    std::fs::write(deep.join("deep.yaml"), pod(SUBPATH_POD, "deep")).unwrap();

    let out = check(
        &[
            "--config",
            &config,
            "-o",
            "json",
            manifests.to_str().unwrap(),
        ],
        None,
    );
    // Only the nested Pod has a finding that is denied.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects = stdout_json(&out);
    assert_eq!(
        names(&objects),
        BTreeSet::from(["deep".into(), "top".into()])
    );
    let deep = objects.iter().find(|o| o["name"] == "deep").unwrap();
    assert_eq!(rules_of(deep), ["token-subpath"]);
    assert_eq!(deep["findings"][0]["action"], "deny");
}

#[test]
fn directories_yield_only_yaml_yml_and_json_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), KEY_ROTATION);
    let manifests = dir.path().join("manifests");
    let nested = manifests.join("nested");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::write(manifests.join("a.yaml"), pod(PLAIN_POD, "a")).unwrap();
    std::fs::write(nested.join("b.yml"), pod(PLAIN_POD, "b")).unwrap();
    std::fs::write(
        manifests.join("c.json"),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "c"},
               "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
        .to_string(),
    )
    .unwrap();
    // Unusable input (exit 2) or a denied Pod (exit 1) if any of these were read.
    std::fs::write(manifests.join("notes.txt"), "kind: [broken\n\u{1}garbage").unwrap();
    let denied_txt = manifests.join("denied.txt");
    std::fs::write(&denied_txt, pod(SUBPATH_POD, "from-txt")).unwrap();
    std::fs::write(manifests.join("Makefile"), pod(SUBPATH_POD, "no-extension")).unwrap();
    std::fs::write(nested.join("old.yaml.bak"), pod(SUBPATH_POD, "backup")).unwrap();

    let out = check(
        &[
            "--config",
            &config,
            "-o",
            "json",
            manifests.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {} stderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        names(&stdout_json(&out)),
        BTreeSet::from(["a".into(), "b".into(), "c".into()])
    );

    // The filter is for directories: a file named on the command line is
    // read whatever its extension.
    let out = check(
        &[
            "--config",
            &config,
            "-o",
            "json",
            denied_txt.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        names(&stdout_json(&out)),
        BTreeSet::from(["from-txt".into()])
    );
}

#[test]
fn objects_without_a_namespace_are_in_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), KEY_ROTATION);
    // Neither the Secret nor the Pod that reads it names a namespace: both
    // are in `default`, so the Secret is found and the env read is denied.
    let input = "apiVersion: v1
kind: Secret
type: kubernetes.io/service-account-token
metadata: {name: bot-token}
---
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  containers:
  - name: c
    image: busybox
    env:
    - name: TOKEN
      valueFrom: {secretKeyRef: {name: bot-token, key: token}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: placed, namespace: prod}
spec:
  selector: {matchLabels: {app: placed}}
  template:
    metadata: {labels: {app: placed}}
    spec: {containers: [{name: c, image: busybox}]}
";
    let out = check(&["--config", &config, "-o", "json", "-"], Some(input));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects = stdout_json(&out);
    assert_eq!(objects.len(), 2, "{objects:?}");
    let reader = objects.iter().find(|o| o["name"] == "reader").unwrap();
    assert_eq!(reader["namespace"], "default");
    assert_eq!(rules_of(reader), ["legacy-token-env"]);
    assert_eq!(reader["findings"][0]["action"], "deny");
    let placed = objects.iter().find(|o| o["name"] == "placed").unwrap();
    assert_eq!(
        placed["namespace"], "prod",
        "a namespace the object names is kept"
    );
}

/// Both a key and an issuer retiring, in enforce mode.
const ROTATION_ENFORCED: &str = r#"
generation: {static: {number: 2, issuer: "https://new.example", keyId: kid-b}}
rotation: {retiringIssuers: ["https://old.example"], retiringKeyIds: [kid-a]}
mode: enforce
"#;

const NAMESPACE: &str = "apps";

/// One object for the agreement test, with what the README says it gets.
struct Case {
    object: Value,
    /// `(rule, action)` the README's rule table and modes lead to.
    expected: &'static [(&'static str, &'static str)],
}

fn containers_with(extra: Value) -> Value {
    let mut c = json!({"name": "app", "image": "registry.example.com/app:1"});
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!([c])
}

fn pod_object(name: &str, metadata: Value, spec: Value) -> Value {
    let mut meta = json!({"name": name, "namespace": NAMESPACE});
    meta.as_object_mut()
        .unwrap()
        .extend(metadata.as_object().unwrap().clone());
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
}

fn workload(api_version: &str, kind: &str, name: &str, template_meta: Value, spec: Value) -> Value {
    let mut tmeta = json!({"labels": {"app": name}});
    tmeta
        .as_object_mut()
        .unwrap()
        .extend(template_meta.as_object().unwrap().clone());
    let template = json!({"metadata": tmeta, "spec": spec});
    let spec = if kind == "Job" {
        json!({"template": template})
    } else {
        json!({"selector": {"matchLabels": {"app": name}}, "template": template})
    };
    json!({"apiVersion": api_version, "kind": kind,
           "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec})
}

fn subpath_spec() -> Value {
    json!({
        "containers": containers_with(json!({"volumeMounts": [
            {"name": "kube-api-access-x1y2z", "mountPath": "/token", "subPath": "token"}
        ]})),
        "volumes": [{"name": "kube-api-access-x1y2z", "projected": {"sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
        ]}}]
    })
}

fn audience_spec(audience: &str) -> Value {
    json!({
        "containers": containers_with(json!({"volumeMounts": [
            {"name": "aud-token", "mountPath": "/var/run/aud"}
        ]})),
        "volumes": [{"name": "aud-token", "projected": {"sources": [
            {"serviceAccountToken": {"audience": audience, "expirationSeconds": 3600, "path": "token"}}
        ]}}]
    })
}

fn env_token_spec() -> Value {
    json!({"containers": containers_with(json!({"env": [
        {"name": "KUBE_TOKEN", "valueFrom": {"secretKeyRef": {"name": "bot-token", "key": "token"}}}
    ]}))})
}

fn cases() -> Vec<Case> {
    let plain = json!({"containers": containers_with(json!({}))});
    vec![
        Case {
            object: pod_object("subpath-token", json!({}), subpath_spec()),
            expected: &[("token-subpath", "deny")],
        },
        Case {
            object: workload(
                "apps/v1",
                "Deployment",
                "old-issuer-audience",
                json!({}),
                audience_spec("https://old.example"),
            ),
            expected: &[("audience-retiring-issuer", "deny")],
        },
        Case {
            object: pod_object("irsa", json!({}), audience_spec("sts.amazonaws.com")),
            expected: &[("federated-audience-untrusted", "deny")],
        },
        Case {
            object: workload(
                "apps/v1",
                "Deployment",
                "istio-audience",
                json!({}),
                audience_spec("istio-ca"),
            ),
            expected: &[],
        },
        Case {
            object: pod_object("plain", json!({}), plain.clone()),
            expected: &[],
        },
        Case {
            object: workload(
                "apps/v1",
                "Deployment",
                "env-token",
                json!({}),
                env_token_spec(),
            ),
            expected: &[("legacy-token-env", "deny")],
        },
        Case {
            object: workload(
                "batch/v1",
                "Job",
                "env-from-token",
                json!({}),
                json!({"restartPolicy": "Never", "containers": containers_with(json!({
                    "envFrom": [{"secretRef": {"name": "bot-token"}}]
                }))}),
            ),
            expected: &[("legacy-token-env", "deny")],
        },
        Case {
            object: pod_object(
                "legacy-volume",
                json!({}),
                json!({
                    "containers": containers_with(json!({"volumeMounts": [
                        {"name": "bot", "mountPath": "/var/run/bot"}
                    ]})),
                    "volumes": [{"name": "bot", "secret": {"secretName": "bot-token"}}]
                }),
            ),
            // A hazard: labelled, not denied.
            expected: &[("legacy-token-volume", "label")],
        },
        Case {
            object: pod_object(
                "opted-out",
                json!({"annotations": {"issuer-guard.io/ignore": "token-subpath"}}),
                subpath_spec(),
            ),
            expected: &[],
        },
        Case {
            object: workload(
                "apps/v1",
                "Deployment",
                "opted-out-template",
                json!({"annotations": {"issuer-guard.io/ignore": "legacy-token-env"}}),
                env_token_spec(),
            ),
            expected: &[],
        },
        Case {
            object: pod_object(
                "made-by-replicaset",
                json!({"ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9f",
                    "uid": "0d3c1f7e-0000-4000-8000-000000000001", "controller": true
                }]}),
                subpath_spec(),
            ),
            // What a controller makes is marked, never denied.
            expected: &[("token-subpath", "label")],
        },
    ]
}

fn resource_of(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "Pod" => ("", "pods"),
        "Deployment" => ("apps", "deployments"),
        "Job" => ("batch", "jobs"),
        other => panic!("no resource for {other}"),
    }
}

/// What one path decided about one object.
#[derive(Debug, PartialEq, Eq)]
struct Decision {
    denied: bool,
    findings: BTreeSet<(String, String)>,
    /// Rules that mark the object at risk (label or deny).
    at_risk: BTreeSet<String>,
}

fn webhook_decision(webhook: &Webhook, uid: &str, object: &Value) -> Decision {
    let kind = object["kind"].as_str().unwrap();
    let (group, resource) = resource_of(kind);
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "requestKind": {"group": group, "version": "v1", "kind": kind},
            "namespace": NAMESPACE,
            "name": object["metadata"]["name"],
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": object,
            "oldObject": null,
            "dryRun": false,
        }
    });
    let reviewed = webhook.review(Endpoint::Validate, review.to_string().as_bytes());
    let Reply::Review(bytes) = reviewed.reply else {
        panic!("{uid}: unusable review: {:?}", reviewed.reply);
    };
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    let response = &answer["response"];
    assert_eq!(response["uid"], uid);
    let allowed = response["allowed"].as_bool().expect("allowed");
    let at_risk = response["auditAnnotations"]["risks"]
        .as_str()
        .map(|r| r.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    Decision {
        denied: !allowed,
        findings: reviewed
            .findings
            .iter()
            .map(|(rule, action)| (rule.as_str().to_owned(), action.as_str().to_owned()))
            .collect(),
        at_risk,
    }
}

fn check_decision(object: &Value) -> Decision {
    let findings: BTreeSet<(String, String)> = object["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_owned(),
                f["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    Decision {
        denied: findings.iter().any(|(_, action)| action == "deny"),
        at_risk: findings
            .iter()
            .filter(|(_, action)| action == "deny" || action == "label")
            .map(|(rule, _)| rule.clone())
            .collect(),
        findings,
    }
}

#[test]
fn check_and_the_webhook_decide_alike() {
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "bot-token", "namespace": NAMESPACE,
                     "annotations": {"kubernetes.io/service-account.name": "bot"}}
    });
    let cases = cases();

    // check: every object and the Secret in one file.
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), ROTATION_ENFORCED);
    let input = dir.path().join("objects.json");
    let mut documents = vec![secret];
    documents.extend(cases.iter().map(|c| c.object.clone()));
    std::fs::write(&input, Value::Array(documents).to_string()).unwrap();
    let out = check(
        &["--config", &config, "-o", "json", input.to_str().unwrap()],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "some objects are denied; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let judged = stdout_json(&out);
    assert_eq!(
        judged.len(),
        cases.len(),
        "the Secret is not judged: {judged:#?}"
    );

    // The webhook, in-process, knowing the same Secret.
    let mut secrets = LegacySecrets::default();
    secrets.insert(NAMESPACE, "bot-token");
    let webhook = Webhook::new(
        Arc::new(ArcSwap::from_pointee(
            Config::parse(ROTATION_ENFORCED).unwrap(),
        )),
        Arc::new(secrets),
    );

    let (mut denied, mut allowed) = (0, 0);
    for (i, case) in cases.iter().enumerate() {
        let kind = case.object["kind"].as_str().unwrap();
        let name = case.object["metadata"]["name"].as_str().unwrap();
        let label = format!("{kind}/{name}");
        let from_check = judged
            .iter()
            .find(|o| o["kind"] == kind && o["name"] == name)
            .unwrap_or_else(|| panic!("check did not judge {label}"));
        assert_eq!(from_check["namespace"], NAMESPACE, "{label}");
        let from_check = check_decision(from_check);
        let from_webhook = webhook_decision(&webhook, &format!("uid-{i}"), &case.object);
        assert_eq!(from_check, from_webhook, "{label}: check vs webhook");

        // The row exercises what it is there for.
        let expected: BTreeSet<(String, String)> = case
            .expected
            .iter()
            .map(|&(r, a)| (r.to_owned(), a.to_owned()))
            .collect();
        assert_eq!(from_webhook.findings, expected, "{label}");
        if from_webhook.denied {
            denied += 1;
        } else {
            allowed += 1;
        }
    }
    assert!(
        denied >= 1 && allowed >= 1,
        "{denied} denied, {allowed} allowed"
    );
}

#[test]
fn a_repository_scan_keeps_going_and_says_where_each_object_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), KEY_ROTATION);
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("chart")).unwrap();
    std::fs::write(
        repo.join("app.yaml"),
        format!(
            "{}---\n{}",
            pod(PLAIN_POD, "first"),
            pod(SUBPATH_POD, "second")
        ),
    )
    .unwrap();
    // What a repository also holds: a values file, broken YAML, a
    // duplicate key, and an object in an exempt namespace.
    std::fs::write(
        repo.join("chart/values.yaml"),
        "replicas: 3\nimage: {tag: v1}\n",
    )
    .unwrap();
    std::fs::write(repo.join("broken.YML"), "kind: [oops\n").unwrap();
    std::fs::write(
        repo.join("dup.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nmetadata: {name: b}\n",
    )
    .unwrap();
    std::fs::write(
        repo.join("system.yaml"),
        pod(SUBPATH_POD, "sys").replace(
            "metadata: {name: sys}",
            "metadata: {name: sys, namespace: kube-system}",
        ),
    )
    .unwrap();
    let args = ["--config", &config, "-o", "json", repo.to_str().unwrap()];

    let out = check(&args, None);
    // Found in a directory, unusable files are reported, not fatal: the
    // exit code is the denial's.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects = stdout_json(&out);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let by_name = |n: &str| {
        objects
            .iter()
            .find(|o| o["name"] == n)
            .unwrap_or_else(|| panic!("{n}: {objects:?}"))
    };
    let second = by_name("second");
    assert!(
        second["source"]["file"]
            .as_str()
            .unwrap()
            .ends_with("app.yaml")
    );
    assert_eq!(second["source"]["document"], 2);
    assert_eq!(second["findings"][0]["rule"], "token-subpath");
    assert_eq!(by_name("first")["source"]["document"], 1);
    let sys = by_name("sys");
    assert_eq!(sys["exempt"], true);
    assert_eq!(sys["findings"], json!([]));
    for file in ["values.yaml", "broken.YML", "dup.yaml"] {
        assert!(
            err.lines()
                .any(|l| l.starts_with("unusable: ") && l.contains(file)),
            "{file} not reported: {err}"
        );
    }
    assert!(err.contains("no kind"), "{err}");
    assert!(
        err.contains("remove or rename one of them") && !err.contains("DuplicateKeyPolicy"),
        "{err}"
    );

    // --strict makes any unusable input fail the run.
    let mut strict = args.to_vec();
    strict.insert(0, "--strict");
    assert_eq!(check(&strict, None).status.code(), Some(2));

    // The table reports the exempt object and the unusable files too.
    let out = check(&["--config", &config, repo.to_str().unwrap()], None);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("exempt") && l.contains("Pod/kube-system/sys")),
        "{text}"
    );
    assert!(text.contains("2 object(s) judged, 1 exempt, 1 with findings: 1 deny, 0 label, 0 warn; 3 unusable input(s)"), "{text}");
}

/// Checks `log` against the SARIF 2.1.0 JSON schema through serde-sarif,
/// whose types are generated from that schema at build time: a missing
/// required property, a value outside an enum or of the wrong type fails to
/// read, and a property the schema does not define is dropped, so it shows
/// as a difference once the typed log is written back.
fn assert_conforms_to_sarif_schema(log: &Value) {
    let typed: serde_sarif::sarif::Sarif = serde_json::from_value(log.clone())
        .unwrap_or_else(|e| panic!("not a SARIF 2.1.0 log: {e}\n{log:#}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &back, log,
        "properties the SARIF 2.1.0 schema does not define (left: as the schema reads it)"
    );
}

#[test]
fn the_sarif_schema_check_can_fail() {
    let good =
        json!({"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "x"}}, "results": []}]});
    assert_conforms_to_sarif_schema(&good);
    for bad in [
        json!({"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "x", "colour": 1}}}]}),
        json!({"version": "2.1.0", "runs": [{"tool": {}}]}),
        json!({"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "x"}},
               "results": [{"message": {"text": "m"}, "level": "fatal"}]}]}),
    ] {
        let caught = std::panic::catch_unwind(|| assert_conforms_to_sarif_schema(&bad));
        assert!(caught.is_err(), "accepted {bad}");
    }
}

#[test]
fn sarif_points_at_the_line_of_each_finding() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), KEY_ROTATION);
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    // The denied mount is in the second document, well down the file.
    let text = format!(
        "# comment\n{}---\n{}",
        pod(PLAIN_POD, "first"),
        pod(SUBPATH_POD, "second")
    );
    std::fs::write(repo.join("app.yaml"), &text).unwrap();
    std::fs::write(repo.join("values.yaml"), "replicas: 3\n").unwrap();
    let want_line = text
        .lines()
        .position(|l| l.contains("subPath: token"))
        .unwrap()
        + 1;

    let out = check(
        &["--config", &config, "-o", "sarif", repo.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let sarif: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_conforms_to_sarif_schema(&sarif);
    // What SARIF 2.1.0 requires of a log, a run, its tool and each result.
    assert_eq!(sarif["version"], "2.1.0");
    assert!(sarif["$schema"].as_str().unwrap().contains("sarif-2.1.0"));
    let run = &sarif["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "issuer-guard");
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{sarif:#}");
    let r = &results[0];
    assert_eq!(r["ruleId"], "token-subpath");
    assert_eq!(
        rules[r["ruleIndex"].as_u64().unwrap() as usize]["id"],
        r["ruleId"]
    );
    assert_eq!(r["level"], "error");
    assert!(
        r["message"]["text"]
            .as_str()
            .unwrap()
            .contains("Pod/default/second")
    );
    let location = &r["locations"][0]["physicalLocation"];
    assert!(
        location["artifactLocation"]["uri"]
            .as_str()
            .unwrap()
            .ends_with("repo/app.yaml")
    );
    assert_eq!(location["region"]["startLine"], want_line, "{text}");
    // The values file is a notification of the run, not a result.
    let notes = run["invocations"][0]["toolExecutionNotifications"]
        .as_array()
        .unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["level"], "warning");
    assert!(
        notes[0]["message"]["text"]
            .as_str()
            .unwrap()
            .contains("values.yaml")
    );
}

/// `check -o json` on `dir` as `FILE OBJECT RULE ACTION` lines (and
/// `FILE OBJECT exempt`), with the stderr it wrote.
fn finding_lines(config: &str, dir: &str) -> (Vec<String>, String) {
    let out = check(&["--config", config, "-o", "json", dir], None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut lines = Vec::new();
    for o in stdout_json(&out) {
        let file = o["source"]["file"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        let object = format!(
            "{}/{}/{}",
            o["kind"].as_str().unwrap(),
            o["namespace"].as_str().unwrap(),
            o["name"].as_str().unwrap()
        );
        if o["exempt"] == true {
            lines.push(format!("{file} {object} exempt"));
        }
        for f in o["findings"].as_array().unwrap() {
            lines.push(format!(
                "{file} {object} {} {}",
                f["rule"].as_str().unwrap(),
                f["action"].as_str().unwrap()
            ));
        }
    }
    (lines, stderr)
}

#[test]
fn real_manifests_from_public_projects_judged_as_expected() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/real");
    let manifests: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(manifests.len() >= 15, "{}", manifests.len());
    for m in &manifests {
        let text = std::fs::read_to_string(m).unwrap();
        assert!(
            text.starts_with("# Source: https://github.com/"),
            "{} cites no source",
            m.display()
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    for (rotation, expected) in [
        (
            "{retiringIssuers: ['https://old.example.com']}",
            "expected-issuer-change.txt",
        ),
        ("{retiringKeyIds: [kid-a]}", "expected-key-rotation.txt"),
    ] {
        let config = config_file(
            tmp.path(),
            &format!(
                "generation: {{static: {{number: 2, issuer: 'https://new.example.com', keyId: kid-b}}}}\nrotation: {rotation}\nmode: enforce\n"
            ),
        );
        let (got, stderr) = finding_lines(&config, dir);
        assert!(stderr.is_empty(), "every real manifest is usable: {stderr}");
        let want: Vec<String> = std::fs::read_to_string(std::path::Path::new(dir).join(expected))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        assert_eq!(got, want, "{expected}");
    }
}

/// A ledger ConfigMap as `kubectl get -o yaml` saves it: key kid-a signed,
/// then kid-b; both still in the JWKS, so kid-a is retiring.
const LEDGER_SNAPSHOT: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: issuer-guard-ledger
  namespace: issuer-guard
data:
  ledger.json: |
    {"generations": [
      {"number": 4, "issuer": "https://old.example.com", "keyId": "kid-a", "firstSeen": "2026-11-01T00:00:00Z", "lastSeen": "2026-11-20T00:00:00Z"},
      {"number": 5, "issuer": "https://old.example.com", "keyId": "kid-b", "firstSeen": "2026-11-20T00:00:00Z", "lastSeen": "2026-11-20T00:10:00Z"}],
     "keys": [
      {"keyId": "kid-a", "firstSeen": "2026-11-01T00:00:00Z", "lastSeen": "2026-11-20T00:10:00Z"},
      {"keyId": "kid-b", "firstSeen": "2026-11-10T00:00:00Z", "lastSeen": "2026-11-20T00:10:00Z"}]}
"#;

#[test]
fn a_ledger_snapshot_judges_against_the_discovered_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("pod.json");
    std::fs::write(
        &manifest,
        pod_object("frozen", json!({}), subpath_spec()).to_string(),
    )
    .unwrap();
    let manifest = manifest.to_str().unwrap();
    // Without the snapshot nothing is retiring: a hazard, not a denial.
    let quiet = check(&["-o", "json", manifest], None);
    assert_eq!(quiet.status.code(), Some(0), "{quiet:?}");

    let snapshot = dir.path().join("ledger.yaml");
    std::fs::write(&snapshot, LEDGER_SNAPSHOT).unwrap();
    let snapshot = snapshot.to_str().unwrap();
    let out = check(&["--snapshot", snapshot, "-o", "json", manifest], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let judged = stdout_json(&out);
    assert_eq!(rules_of(&judged[0]), vec!["token-subpath"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("generation 5") && stderr.contains("kid-a"),
        "{stderr}"
    );

    // The plan declared in the configuration combines with the snapshot:
    // before the switch, an audience naming the signing issuer dies with it.
    let audience = dir.path().join("audience.json");
    std::fs::write(
        &audience,
        pod_object("aud", json!({}), audience_spec("https://old.example.com")).to_string(),
    )
    .unwrap();
    let config = config_file(
        dir.path(),
        "rotation: {nextIssuer: 'https://new.example.com'}\n",
    );
    let out = check(
        &[
            "--config",
            &config,
            "--snapshot",
            snapshot,
            "-o",
            "json",
            audience.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        rules_of(&stdout_json(&out)[0]),
        vec!["audience-retiring-issuer"]
    );

    // The ledger's JSON alone is a snapshot too; a broken one says how to
    // save a good one.
    let json_only = dir.path().join("ledger.json");
    let text: String = LEDGER_SNAPSHOT
        .lines()
        .skip_while(|l| !l.contains("ledger.json"))
        .skip(1)
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&json_only, text).unwrap();
    let out = check(&["--snapshot", json_only.to_str().unwrap(), manifest], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    std::fs::write(&json_only, "{not json").unwrap();
    let out = check(&["--snapshot", json_only.to_str().unwrap(), manifest], None);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kubectl get configmap"), "{stderr}");
}

/// Boolean environment variables read the usual spellings, in any case,
/// and refuse what they cannot read: never the opposite of what was meant.
#[test]
fn boolean_variables_read_the_usual_spellings_or_refuse() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.yaml"), "kind: [broken\n").unwrap();
    std::fs::write(dir.path().join("pod.yaml"), pod(PLAIN_POD, "p")).unwrap();
    let run = |value: &str| {
        Command::new(support::issuer_guard_bin())
            .args(["check", dir.path().to_str().unwrap()])
            .env("ISSUER_GUARD_STRICT", value)
            .env_remove("ISSUER_GUARD_CONFIG")
            .output()
            .unwrap()
    };
    // A broken file met in a directory fails the run only under --strict.
    for on in ["1", "true", "TRUE", "yes", "Yes", "on", "ON", "y"] {
        assert_eq!(run(on).status.code(), Some(2), "ISSUER_GUARD_STRICT={on}");
    }
    for off in ["0", "false", "FALSE", "no", "No", "off", "OFF", "n"] {
        let out = run(off);
        assert_eq!(
            out.status.code(),
            Some(0),
            "ISSUER_GUARD_STRICT={off}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run("maybe");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'maybe'"), "{err}");
}

/// `--discovery-window` (or `ISSUER_GUARD_DISCOVERY_WINDOW`) is the window
/// the snapshot is read with: a key last listed in the JWKS 10 minutes
/// before the ledger's newest observation is retired under the default 5m
/// (the rotation is over) and still retiring under 15m (it is not).
#[test]
fn the_discovery_window_decides_whether_a_saved_key_is_retired() {
    let snapshot = LEDGER_SNAPSHOT.replace(
        r#"{"keyId": "kid-a", "firstSeen": "2026-11-01T00:00:00Z", "lastSeen": "2026-11-20T00:10:00Z"}"#,
        r#"{"keyId": "kid-a", "firstSeen": "2026-11-01T00:00:00Z", "lastSeen": "2026-11-20T00:00:00Z"}"#,
    );
    assert_ne!(snapshot, LEDGER_SNAPSHOT, "kid-a's lastSeen was not moved");
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.yaml");
    std::fs::write(&ledger, snapshot).unwrap();
    let manifest = dir.path().join("pod.json");
    std::fs::write(
        &manifest,
        pod_object("frozen", json!({}), subpath_spec()).to_string(),
    )
    .unwrap();
    let (ledger, manifest) = (ledger.to_str().unwrap(), manifest.to_str().unwrap());
    let action = |out: &Output| -> String {
        let judged = stdout_json(out);
        assert_eq!(rules_of(&judged[0]), vec!["token-subpath"], "{out:?}");
        judged[0]["findings"][0]["action"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    let default = check(&["--snapshot", ledger, "-o", "json", manifest], None);
    assert_eq!(default.status.code(), Some(0), "{default:?}");
    assert_eq!(
        action(&default),
        "label",
        "kid-a retired: nothing is retiring"
    );

    let wide = check(
        &[
            "--snapshot",
            ledger,
            "--discovery-window",
            "15m",
            "-o",
            "json",
            manifest,
        ],
        None,
    );
    assert_eq!(wide.status.code(), Some(1), "{wide:?}");
    assert_eq!(action(&wide), "deny", "kid-a retiring: a key rotation");

    let from_env = Command::new(support::issuer_guard_bin())
        .args(["check", "--snapshot", ledger, "-o", "json", manifest])
        .env("ISSUER_GUARD_DISCOVERY_WINDOW", "15m")
        .env_remove("ISSUER_GUARD_CONFIG")
        .env_remove("ISSUER_GUARD_OUTPUT")
        .env_remove("ISSUER_GUARD_STRICT")
        .output()
        .unwrap();
    assert_eq!(from_env.status.code(), Some(1), "{from_env:?}");
    assert_eq!(action(&from_env), "deny");
}

/// Standard input that is not YAML or JSON is input named on the command
/// line: exit 2, reported under `<stdin>`.
#[test]
fn unusable_standard_input_exits_2() {
    let out = check(&["-"], Some("apiVersion: v1\nkind: [broken\n"));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("<stdin>"), "{text}");
    assert!(text.contains("1 unusable input(s)"), "{text}");
    let out = check(
        &["-o", "json", "-"],
        Some("apiVersion: v1\nkind: [broken\n"),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let unusable = &report_json(&out)["unusable"];
    assert_eq!(unusable.as_array().map(Vec::len), Some(1), "{unusable}");
    assert_eq!(unusable[0]["file"], "<stdin>", "{unusable}");
    // The same input, well formed, is judged and exits 0.
    let out = check(&["-"], Some(&pod(PLAIN_POD, "fine")));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// `token-subpath` follows the path a `--token-file` argument names, as it
/// does `--token-path`: a file mounted there by subPath from a volume that
/// carries no token is a copied token. Written as two arguments or one,
/// with a prefix (`--vault-token-file`) or underscores, in `command` or
/// `args`; an argument that names another file, or names this one for
/// something else, is no such finding.
#[test]
fn a_subpath_file_at_a_token_file_argument_is_a_copied_token() {
    let agent = |command: Value, args: Value| -> Value {
        workload(
            "apps/v1",
            "Deployment",
            "agent",
            json!({}),
            json!({
                "containers": [{"name": "agent", "image": "agent:1", "command": command, "args": args,
                    "volumeMounts": [{"name": "tokens", "mountPath": "/etc/agent/sa-token", "subPath": "sa-token"}]}],
                "volumes": [{"name": "tokens", "configMap": {"name": "agent-tokens"}}]
            }),
        )
    };
    let judged = |object: Value| -> Vec<String> {
        let out = check(&["-o", "json", "-"], Some(&object.to_string()));
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        rules_of(&stdout_json(&out)[0])
            .into_iter()
            .map(str::to_owned)
            .collect()
    };
    let copied = ["token-subpath".to_owned()];
    for (command, args) in [
        (json!([]), json!(["--token-file", "/etc/agent/sa-token"])),
        (json!([]), json!(["--token-file=/etc/agent/sa-token"])),
        (
            json!(["agent", "--vault-token-file", "/etc/agent/sa-token"]),
            json!([]),
        ),
        (json!([]), json!(["--TOKEN_FILE=/etc/agent/sa-token"])),
    ] {
        assert_eq!(
            judged(agent(command.clone(), args.clone())),
            copied,
            "{command} {args}"
        );
    }
    for args in [
        json!(["--token-file", "/etc/agent/other"]),
        json!(["--config", "/etc/agent/sa-token"]),
        json!(["--token-files", "/etc/agent/sa-token"]),
    ] {
        assert!(judged(agent(json!([]), args.clone())).is_empty(), "{args}");
    }
}
