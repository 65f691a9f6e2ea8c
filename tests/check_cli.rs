//! `issuer-guard check` as a user runs it: files, directories, stdin, exit codes.

use std::{
    io::Write,
    path::Path,
    process::{Command, Output, Stdio},
};

use serde_json::Value;

const MANIFESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/manifests");

const KEY_ROTATION: &str = "generation: {static: {number: 2, issuer: 'https://new.example.com', keyId: kid-b}}\nrotation: {retiringKeyIds: [kid-a]}\n";

fn check(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_issuer-guard"))
        .arg("check")
        .args(args)
        .env_remove("ISSUER_GUARD_CONFIG")
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
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let objects = v.as_array().unwrap();
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
    assert!(lines[0].starts_with("ACTION"));
    assert!(
        lines[1].starts_with("label")
            && lines[1].contains("Deployment/ci/runner")
            && lines[1].contains("legacy-token-env")
    );
    assert_eq!(
        lines.last().unwrap(),
        &"1 object(s) judged, 1 with findings: 0 deny, 1 label, 0 warn"
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
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
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
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("bad.yaml: document 2:"), "{err}");

    let out = check(&["/nonexistent/manifests.yaml"], None);
    assert_eq!(out.status.code(), Some(2));

    let config = config_file(dir.path(), "mode: strict\n");
    let out = check(&["--config", &config, &fixture("irsa-pod.yaml")], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("`mode`"));
}
