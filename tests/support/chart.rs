//! The Helm chart in charts/issuer-guard: helm run with a private home, and
//! what `helm template` renders, as JSON objects to assert on.

use std::{path::Path, process::Output};

use serde_json::Value;

use super::binaries;

pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/issuer-guard");

/// Runs helm with its own cache, config and data directories under `home`,
/// so tests in parallel never share helm's state.
pub fn helm(home: &Path, args: &[&str]) -> Output {
    std::process::Command::new(&binaries::get().helm)
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("run helm")
}

/// helm's stdout, failing the test with its stderr when it failed.
pub fn ok(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed:\n{stderr}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The objects of a multi-document YAML stream. Documents that are empty
/// (helm prints one for a template that renders nothing) or not a mapping
/// are left out.
pub fn objects(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .expect("rendered YAML")
        .into_iter()
        .filter(Value::is_object)
        .collect()
}

/// The image repository the tests install: the chart has none by default.
pub const IMAGE_REPOSITORY: &str = "registry.e2e.example/issuer-guard";

/// A values file under `home` that sets only [`IMAGE_REPOSITORY`], as the
/// `-f` to give helm before a test's own values, which then win over it.
pub fn image_values(home: &Path) -> String {
    let path = home.join("image-values.yaml");
    std::fs::create_dir_all(home).expect("the helm home");
    std::fs::write(&path, format!("image:\n  repository: {IMAGE_REPOSITORY}\n"))
        .expect("write the image values");
    path.to_str().expect("a UTF-8 path").to_owned()
}

/// `helm template RELEASE <chart> --namespace NAMESPACE -f <image values>
/// EXTRA...`, as JSON objects.
pub fn template(home: &Path, release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
    let image = image_values(home);
    let mut args = vec![
        "template",
        release,
        CHART,
        "--namespace",
        namespace,
        "-f",
        image.as_str(),
    ];
    args.extend_from_slice(extra);
    objects(&ok(&helm(home, &args), &format!("helm template {extra:?}")))
}

/// The objects one template renders with `--set` for each of `set`.
/// `show_only` is the template's file name (`rbac.yaml`) or its path in the
/// chart (`templates/rbac.yaml`). helm refuses `--show-only` for a template
/// that renders nothing, which fails the test.
pub fn render(release: &str, namespace: &str, set: &[&str], show_only: &str) -> Vec<Value> {
    let home = tempfile::tempdir().expect("a helm home");
    let show_only = if show_only.starts_with("templates/") {
        show_only.to_owned()
    } else {
        format!("templates/{show_only}")
    };
    let mut extra: Vec<&str> = Vec::with_capacity(2 * set.len() + 2);
    for s in set {
        extra.extend(["--set", s]);
    }
    extra.extend(["--show-only", show_only.as_str()]);
    template(home.path(), release, namespace, &extra)
}

/// The release the end-to-end tests render the chart's webhook
/// configurations for, and its namespace: the chart names the
/// configurations after the release and keeps its own namespace (and
/// kube-system) away from both webhooks, so the tests' namespace is judged.
pub const WEBHOOK_RELEASE: &str = "issuer-guard";
pub const WEBHOOK_RELEASE_NS: &str = "issuer-guard";

/// The chart's MutatingWebhookConfiguration and
/// ValidatingWebhookConfiguration, as `helm template` renders them with
/// the chart's defaults and these values only:
///
/// - `webhook.urlOverride=<url>`: both webhooks call `<url>/mutate` and
///   `<url>/validate` instead of the Service, which a test on loopback
///   cannot have;
/// - `tls.mode=secret` with `tls.caBundle=<ca>`: both trust the test's CA;
///   the Secret the chart would mount is never rendered here;
/// - `set`: each `KEY=VALUE` given with `--set-json`, the caller's named
///   deviations from the chart.
pub fn webhook_configurations(url: &str, ca_pem: &[u8], set: &[&str]) -> (Value, Value) {
    let home = tempfile::tempdir().expect("a helm home");
    let ca = home.path().join("ca.crt");
    std::fs::write(&ca, ca_pem).expect("write the CA bundle");
    let url_override = format!("webhook.urlOverride={url}");
    let ca_bundle = format!("tls.caBundle={}", ca.display());
    let mut extra = vec![
        "--set-string",
        url_override.as_str(),
        "--set",
        "tls.mode=secret",
        "--set",
        "tls.existingSecret=unused-by-the-webhook-configurations",
        "--set-file",
        ca_bundle.as_str(),
    ];
    for s in set {
        extra.extend(["--set-json", s]);
    }
    extra.extend(["--show-only", "templates/webhooks.yaml"]);
    let objects = template(home.path(), WEBHOOK_RELEASE, WEBHOOK_RELEASE_NS, &extra);
    let one = |kind: &str| {
        let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
        assert_eq!(found.len(), 1, "the chart renders one {kind}: {objects:?}");
        found[0].clone()
    };
    (
        one("MutatingWebhookConfiguration"),
        one("ValidatingWebhookConfiguration"),
    )
}
