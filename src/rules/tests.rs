//! Every rule against realistic manifests, positive and negative.

use serde::Deserialize;
use serde_json::Value;

use super::*;
use crate::{
    object::{Kind, ObjectView, PodSpecRef},
    state::{Pattern, Rotation},
};

const OLD_ISSUER: &str = "https://old.example.com";
const NEW_ISSUER: &str = "https://new.example.com";

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../tests/fixtures/manifests/", $name))
    };
}

fn no_rotation() -> Rotation {
    Rotation {
        grace_seconds: 86_400,
        ..Rotation::default()
    }
}

fn issuer_change() -> Rotation {
    Rotation {
        retiring_issuers: vec![OLD_ISSUER.into()],
        ..no_rotation()
    }
}

fn key_rotation() -> Rotation {
    Rotation {
        retiring_key_ids: vec!["kid-a".into()],
        ..no_rotation()
    }
}

/// Judges the first object of `yaml` that is no Secret or ConfigMap,
/// knowing the file's legacy token Secrets and its ConfigMaps' credential
/// configurations.
fn judge_yaml(yaml: &str, rotation: &Rotation) -> Vec<Finding> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).unwrap();
    let mut secrets = LegacySecrets::default();
    for d in docs.iter().filter(|d| d["kind"] == "Secret") {
        if is_legacy_token_secret(d["type"].as_str()) {
            secrets.insert(
                d["metadata"]["namespace"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap(),
            );
        }
    }
    let mut credentials = CredentialConfigs::default();
    for d in docs.iter().filter(|d| d["kind"] == "ConfigMap") {
        for (key, value) in d["data"].as_object().into_iter().flatten() {
            credentials.insert(
                d["metadata"]["namespace"].as_str().unwrap_or("default"),
                d["metadata"]["name"].as_str().unwrap(),
                key,
                value.as_str().unwrap_or_default(),
            );
        }
    }
    let doc = docs
        .iter()
        .find(|d| d["kind"] != "Secret" && d["kind"] != "ConfigMap")
        .unwrap();
    let kind = Kind::from_api_version(
        doc["apiVersion"].as_str().unwrap(),
        doc["kind"].as_str().unwrap(),
    )
    .unwrap();
    let obj = <ObjectView as Deserialize>::deserialize(doc).unwrap();
    let ns = obj
        .meta()
        .namespace
        .as_deref()
        .unwrap_or("default")
        .to_owned();
    let pod = PodSpecRef::locate(kind, &obj).unwrap();
    let ctx = Context {
        rotation,
        new_issuer: NEW_ISSUER,
        secrets: &secrets,
        credentials: &credentials,
    };
    let mut out = Vec::new();
    judge(&pod, &ctx, &ns, &mut out);
    out
}

/// A legacy token Secret for `account` followed by `rest`, as one stream.
fn with_legacy_secret(namespace: &str, name: &str, account: &str, rest: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}, annotations: {{kubernetes.io/service-account.name: {account}}}}}\ntype: kubernetes.io/service-account-token\n---\n{rest}"
    )
}

fn rules_of(findings: &[Finding]) -> Vec<RuleId> {
    findings.iter().map(|f| f.rule).collect()
}

#[test]
fn legacy_token_env_flags_the_token_key_only() {
    let y = fixture!("token-in-env-deployment.yaml");
    let f = judge_yaml(y, &no_rotation());
    assert_eq!(rules_of(&f), [RuleId::LegacyTokenEnv], "{f:#?}");
    assert_eq!(f[0].path, "spec.template.spec.containers[0].env[1]");
    assert_eq!(f[0].subject, "container \"runner\"");
    assert!(f[0].message.contains("KUBE_TOKEN") && f[0].message.contains("ci-bot-token"));
    assert!(!f[0].certain, "no key is retiring, so this is a hazard");

    let f = judge_yaml(y, &key_rotation());
    assert!(
        f[0].certain,
        "env never refreshes: certain under a key rotation"
    );
    assert!(f[0].message.contains("kid-a"));

    // Legacy tokens carry `kubernetes/serviceaccount` and survive an
    // issuer change: no risk of that rotation at all.
    let f = judge_yaml(y, &issuer_change());
    assert!(f.is_empty(), "{f:#?}");
    // Both at once: the key is what kills it.
    let both = Rotation {
        retiring_key_ids: vec!["kid-a".into()],
        ..issuer_change()
    };
    let f = judge_yaml(y, &both);
    assert_eq!(rules_of(&f), [RuleId::LegacyTokenEnv]);
    assert!(f[0].certain);
}

#[test]
fn legacy_token_env_from_in_a_cronjob() {
    let y = &with_legacy_secret(
        "ops",
        "deployer-token",
        "deployer",
        r#"apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly, namespace: ops}
spec:
  schedule: "0 2 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers:
          - name: deploy
            image: deployer:1
            envFrom:
            - configMapRef: {name: settings}
            - secretRef: {name: deployer-token}
"#,
    );
    let f = judge_yaml(y, &key_rotation());
    assert_eq!(rules_of(&f), [RuleId::LegacyTokenEnv]);
    assert_eq!(
        f[0].path,
        "spec.jobTemplate.spec.template.spec.containers[0].envFrom[1]"
    );
    assert!(f[0].certain);
}

#[test]
fn opaque_secret_named_like_a_token_is_not_flagged() {
    let y = fixture!("opaque-secret-named-like-a-token.yaml");
    for r in [no_rotation(), issuer_change(), key_rotation()] {
        assert!(judge_yaml(y, &r).is_empty());
    }
}

#[test]
fn pre_124_default_token_volume_is_a_hazard() {
    let y = fixture!("pre-1.24-default-token-pod.yaml");
    let f = judge_yaml(y, &key_rotation());
    assert_eq!(rules_of(&f), [RuleId::LegacyTokenVolume], "{f:#?}");
    assert_eq!(f[0].path, "spec.volumes[0]");
    assert_eq!(f[0].subject, "volume \"default-token-rxbqq\"");
    assert!(
        !f[0].certain,
        "a Secret volume follows a regenerated Secret"
    );
    assert_eq!(
        rules_of(&judge_yaml(y, &no_rotation())),
        [RuleId::LegacyTokenVolume]
    );
    assert!(
        judge_yaml(y, &issuer_change()).is_empty(),
        "legacy tokens survive an issuer change"
    );
}

#[test]
fn legacy_secret_volume_with_only_the_ca_is_not_a_token() {
    let y = &with_legacy_secret(
        "legacy",
        "default-token-abcde",
        "default",
        r#"apiVersion: v1
kind: Pod
metadata: {name: ca-reader, namespace: legacy}
spec:
  containers: [{name: c, image: busybox}]
  volumes:
  - name: ca
    secret: {secretName: default-token-abcde, items: [{key: ca.crt, path: ca.crt}]}
  - name: both
    projected:
      sources:
      - secret: {name: default-token-abcde, items: [{key: token, path: sa/token}]}
"#,
    );
    let f = judge_yaml(y, &key_rotation());
    assert_eq!(rules_of(&f), [RuleId::LegacyTokenVolume]);
    assert_eq!(f[0].path, "spec.volumes[1].projected.sources[0].secret");
}

#[test]
fn subpath_token_is_flagged_but_subpath_ca_is_not() {
    let y = fixture!("subpath-token-pod.yaml");
    let f = judge_yaml(y, &no_rotation());
    assert_eq!(rules_of(&f), [RuleId::TokenSubpath], "{f:#?}");
    assert_eq!(f[0].path, "spec.containers[0].volumeMounts[0]");
    assert_eq!(f[0].subject, "container \"client\"");
    assert!(!f[0].certain);
    let f = judge_yaml(y, &issuer_change());
    assert_eq!(rules_of(&f), [RuleId::TokenSubpath]);
    assert!(
        f[0].certain,
        "a frozen bound token dies with the retiring issuer"
    );
    assert!(f[0].message.contains(OLD_ISSUER));
}

#[test]
fn subpath_of_a_legacy_token_and_subpath_expr() {
    let y = &with_legacy_secret(
        "legacy",
        "default-token-abcde",
        "default",
        r#"apiVersion: v1
kind: Pod
metadata: {name: frozen, namespace: legacy}
spec:
  initContainers:
  - name: init
    image: busybox
    volumeMounts:
    - {name: legacy, mountPath: /token, subPath: token}
  containers:
  - name: main
    image: busybox
    volumeMounts:
    - {name: bound, mountPath: /tokens, subPathExpr: "$(POD_NAME)"}
    - {name: bound, mountPath: /elsewhere, subPath: other}
  volumes:
  - name: legacy
    secret: {secretName: default-token-abcde}
  - name: bound
    projected:
      sources:
      - serviceAccountToken: {path: sa/token, expirationSeconds: 3600}
"#,
    );
    let f = judge_yaml(y, &key_rotation());
    assert_eq!(
        rules_of(&f),
        [
            RuleId::LegacyTokenVolume,
            RuleId::TokenSubpath,
            RuleId::TokenSubpath
        ],
        "{f:#?}"
    );
    let at = |path: &str| f.iter().find(|f| f.path == path).unwrap();
    let legacy = at("spec.initContainers[0].volumeMounts[0]");
    assert!(legacy.certain && legacy.message.contains("legacy"));
    let expr = at("spec.containers[0].volumeMounts[0]");
    assert!(expr.certain && expr.message.contains("subPathExpr"));

    // Under an issuer change only the frozen bound token is at risk: the
    // legacy volume and its subPath copy still verify.
    let f = judge_yaml(y, &issuer_change());
    assert_eq!(rules_of(&f), [RuleId::TokenSubpath], "{f:#?}");
    assert_eq!(f[0].path, "spec.containers[0].volumeMounts[0]");
}

#[test]
fn ephemeral_containers_are_inspected() {
    let y = &with_legacy_secret(
        "prod",
        "debug-token",
        "debugger",
        r#"apiVersion: v1
kind: Pod
metadata: {name: app, namespace: prod}
spec:
  containers: [{name: app, image: app:1}]
  ephemeralContainers:
  - name: debugger-x7k
    image: busybox
    env:
    - name: TOKEN
      valueFrom: {secretKeyRef: {name: debug-token, key: token}}
"#,
    );
    let f = judge_yaml(y, &no_rotation());
    assert_eq!(rules_of(&f), [RuleId::LegacyTokenEnv]);
    assert_eq!(f[0].path, "spec.ephemeralContainers[0].env[0]");
}

#[test]
fn refresh_exceeds_grace_only_while_a_rotation_is_declared() {
    let y = fixture!("irsa-pod.yaml");
    // With the new key published, IRSA's audience is no risk of a key
    // rotation, which leaves the refresh rule alone to test.
    let published = Rotation {
        new_key_published: true,
        ..key_rotation()
    };
    let short_grace = Rotation {
        grace_seconds: 3600,
        ..published.clone()
    };
    let f = judge_yaml(y, &short_grace);
    assert_eq!(rules_of(&f), [RuleId::RefreshExceedsGrace], "{f:#?}");
    assert_eq!(
        f[0].path,
        "spec.volumes[0].projected.sources[0].serviceAccountToken"
    );
    assert!(f[0].message.contains("69120") && f[0].message.contains("4500"));
    assert!(!f[0].certain);
    // 3607s tokens refresh after 2885s, inside the hour; a day fits 86400s tokens.
    assert!(judge_yaml(y, &published).is_empty());
    let no_decl = Rotation {
        grace_seconds: 60,
        ..Rotation::default()
    };
    assert!(judge_yaml(y, &no_decl).is_empty());
}

#[test]
fn refresh_interval_follows_kubelet() {
    assert_eq!(facts::refresh_interval_seconds(3600), 2880);
    assert_eq!(facts::refresh_interval_seconds(3607), 2885);
    assert_eq!(facts::refresh_interval_seconds(172_800), 86_400);
    assert_eq!(facts::refresh_interval_seconds(i64::MAX), 86_400);
}

fn pod_with_audience(audience: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: p, namespace: app}}
spec:
  containers: [{{name: c, image: c:1}}]
  volumes:
  - name: tok
    projected:
      sources:
      - serviceAccountToken: {{audience: "{audience}", expirationSeconds: 3600, path: token}}
"#
    )
}

#[test]
fn audience_of_a_retiring_issuer() {
    let y = pod_with_audience(OLD_ISSUER);
    let f = judge_yaml(&y, &issuer_change());
    assert_eq!(rules_of(&f), [RuleId::AudienceRetiringIssuer]);
    assert!(f[0].certain && f[0].message.contains(NEW_ISSUER));
    let kept = Rotation {
        api_audiences: vec![OLD_ISSUER.into(), NEW_ISSUER.into()],
        ..issuer_change()
    };
    assert!(judge_yaml(&y, &kept).is_empty(), "--api-audiences keeps it");
    assert!(judge_yaml(&y, &key_rotation()).is_empty());
    assert!(judge_yaml(&pod_with_audience(NEW_ISSUER), &issuer_change()).is_empty());
}

#[test]
fn federated_audiences_that_do_not_trust_the_new_issuer() {
    for (file, party) in [
        (fixture!("irsa-pod.yaml"), "AWS"),
        (fixture!("azure-workload-identity-deployment.yaml"), "Azure"),
        (fixture!("gcp-workload-identity-federation-job.yaml"), "GCP"),
    ] {
        let f = judge_yaml(file, &issuer_change());
        assert_eq!(
            rules_of(&f),
            [RuleId::FederatedAudienceUntrusted],
            "{party}: {f:#?}"
        );
        assert!(f[0].certain);
        assert!(f[0].message.contains(party), "{}", f[0].message);
        // A key rotation keeps the issuer, but the party sees the new key
        // only where the JWKS it fetches has it: a hazard until the
        // operator says the key is published.
        let f = judge_yaml(file, &key_rotation());
        assert_eq!(
            rules_of(&f),
            [RuleId::FederatedAudienceUntrusted],
            "{party}"
        );
        assert!(!f[0].certain, "{party}");
        assert!(
            f[0].message.contains("rotation.newKeyPublished"),
            "{}",
            f[0].message
        );
        let published = Rotation {
            new_key_published: true,
            ..key_rotation()
        };
        assert!(judge_yaml(file, &published).is_empty(), "{party}");
        assert!(judge_yaml(file, &no_rotation()).is_empty(), "{party}");
    }
    let f = judge_yaml(
        fixture!("azure-workload-identity-deployment.yaml"),
        &issuer_change(),
    );
    assert_eq!(
        f[0].path,
        "spec.template.spec.volumes[0].projected.sources[0].serviceAccountToken"
    );
}

#[test]
fn trusted_audiences_are_not_flagged() {
    let trusted = Rotation {
        trusted_audiences: vec![Pattern::new("sts.amazonaws.com")],
        ..issuer_change()
    };
    assert!(judge_yaml(fixture!("irsa-pod.yaml"), &trusted).is_empty());
}

#[test]
fn in_cluster_relying_parties_survive_an_issuer_change() {
    for file in [
        fixture!("istio-sidecar-pod.yaml"),
        fixture!("linkerd-pod.yaml"),
        fixture!("spire-agent-daemonset.yaml"),
        fixture!("vault-agent-pod.yaml"),
    ] {
        let f = judge_yaml(file, &issuer_change());
        assert!(f.is_empty(), "{f:#?}");
    }
}

#[test]
fn configured_federated_audience_patterns() {
    let r = Rotation {
        federated_audiences: vec![Pattern::new("vault")],
        ..issuer_change()
    };
    let f = judge_yaml(fixture!("vault-agent-pod.yaml"), &r);
    assert_eq!(rules_of(&f), [RuleId::FederatedAudienceUntrusted]);
    assert!(f[0].message.contains("rotation.federatedAudiences"));
}

#[test]
fn identities_survive_reordering() {
    let y = fixture!("token-in-env-deployment.yaml");
    let before = judge_yaml(y, &key_rotation());
    let moved = y.replace(
        "        - {name: RUNNER_NAME, value: shared}\n",
        "        - {name: A, value: a}\n        - {name: B, value: b}\n        - {name: RUNNER_NAME, value: shared}\n",
    );
    let after = judge_yaml(&moved, &key_rotation());
    assert_ne!(before[0].path, after[0].path);
    assert_eq!(before[0].identity(), after[0].identity());
}

/// A Pod whose container `app` mounts a token for `audience` at
/// /var/run/secrets/tokens/web-identity (or, with `sub_path`, that file
/// alone) and sets `env` to `value`.
fn consumer_pod(audience: &str, env: &str, value: &str, sub_path: bool) -> String {
    let mount = if sub_path {
        "{name: federated, mountPath: /var/run/secrets/tokens/web-identity, subPath: web-identity}"
    } else {
        "{name: federated, mountPath: /var/run/secrets/tokens/}"
    };
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: app, namespace: prod}}
spec:
  containers:
  - name: app
    image: app:1
    env:
    - {{name: {env}, value: "{value}"}}
    volumeMounts:
    - {mount}
  - name: sidecar
    image: proxy:1
  volumes:
  - name: federated
    projected:
      sources:
      - serviceAccountToken: {{audience: "{audience}", expirationSeconds: 3600, path: web-identity}}
"#
    )
}

#[test]
fn federation_recognised_by_the_sdk_that_reads_the_token() {
    let file = "/var/run/secrets/tokens/web-identity";
    for (env, party, sub_path) in [
        ("AWS_WEB_IDENTITY_TOKEN_FILE", "AWS", false),
        ("AZURE_FEDERATED_TOKEN_FILE", "Azure", true),
    ] {
        // A custom audience names no party; the SDK variable does.
        // (A subPath mount is also a frozen token of its own.)
        let y = consumer_pod("my-company-aud", env, file, sub_path);
        let federated = |r: &Rotation| -> Vec<Finding> {
            judge_yaml(&y, r)
                .into_iter()
                .filter(|f| f.rule == RuleId::FederatedAudienceUntrusted)
                .collect()
        };
        let f = federated(&issuer_change());
        assert_eq!(f.len(), 1, "{env}: {f:#?}");
        assert!(f[0].certain);
        assert!(
            f[0].message.contains(party) && f[0].message.contains(env),
            "the finding names the signal: {}",
            f[0].message
        );
        // Trusting the audience is what clears it, as for any party.
        let trusted = Rotation {
            trusted_audiences: vec![Pattern::new("my-company-aud")],
            ..issuer_change()
        };
        assert!(federated(&trusted).is_empty(), "{env}");
        assert!(federated(&no_rotation()).is_empty(), "{env}");
    }
    // The variable names another file, or the token is mounted elsewhere.
    for y in [
        consumer_pod(
            "my-company-aud",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "/other/token",
            false,
        ),
        consumer_pod(
            "my-company-aud",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "/var/run/secrets/tokens",
            false,
        ),
        consumer_pod("my-company-aud", "SOME_OTHER_FILE", file, false),
    ] {
        let f = judge_yaml(&y, &issuer_change());
        assert!(f.is_empty(), "{y}\n{f:#?}");
    }
}

#[test]
fn a_token_copied_into_an_ordinary_volume_is_a_hazard() {
    // An init container copies the token into an emptyDir; the app mounts
    // that copy by subPath where clients read a token.
    let y = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: legacy-client, namespace: prod}
spec:
  template:
    spec:
      automountServiceAccountToken: false
      initContainers:
      - name: copy
        image: busybox
        command: [sh, -c, "cp /src/token /copy/token"]
        volumeMounts:
        - {name: copy, mountPath: /copy}
      containers:
      - name: app
        image: app:1
        volumeMounts:
        - {name: copy, mountPath: /var/run/secrets/kubernetes.io/serviceaccount/token, subPath: token}
      - name: agent
        image: agent:1
        args: [--server=https://vault, --token-path, /etc/agent/sa-token]
        volumeMounts:
        - {name: tokens, mountPath: /etc/agent/sa-token, subPath: sa-token}
      volumes:
      - name: copy
        emptyDir: {}
      - name: tokens
        configMap: {name: agent-tokens}
"#;
    for r in [no_rotation(), issuer_change(), key_rotation()] {
        let f = judge_yaml(y, &r);
        assert_eq!(
            rules_of(&f),
            [RuleId::TokenSubpath, RuleId::TokenSubpath],
            "{f:#?}"
        );
        assert!(f.iter().all(|f| !f.certain), "what was copied is unknown");
        assert_eq!(
            f[0].path,
            "spec.template.spec.containers[0].volumeMounts[0]"
        );
        assert_eq!(
            f[1].path,
            "spec.template.spec.containers[1].volumeMounts[0]"
        );
        assert!(f[0].message.contains("carries no service-account token"));
    }
    // The same volumes mounted by subPath elsewhere hold no token.
    let elsewhere = y
        .replace(
            "/var/run/secrets/kubernetes.io/serviceaccount/token, subPath",
            "/etc/app/settings, subPath",
        )
        .replace(
            "--token-path, /etc/agent/sa-token",
            "--config, /etc/agent/other",
        );
    assert!(judge_yaml(&elsewhere, &key_rotation()).is_empty());
    // `--token-path=PATH` counts like `--token-path PATH`.
    let joined = y.replace(
        "--token-path, /etc/agent/sa-token",
        "--token-path=/etc/agent/sa-token",
    );
    assert_eq!(judge_yaml(&joined, &key_rotation()).len(), 2);
}

/// A GKE-style workload identity federation Pod: an `external_account`
/// credential configuration in a ConfigMap names the projected token file.
fn google_pod(audience: &str, credential_file: &str, mounted_as: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: gcp-creds, namespace: prod}}
data:
  config: |
    {{"type": "external_account", "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k",
      "subject_token_type": "urn:ietf:params:oauth:token-type:jwt", "token_url": "https://sts.googleapis.com/v1/token",
      "credential_source": {{"file": "{credential_file}"}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: app, namespace: prod}}
spec:
  containers:
  - name: app
    image: app:1
    env:
    - {{name: GOOGLE_APPLICATION_CREDENTIALS, value: /etc/gcp/{mounted_as}}}
    volumeMounts:
    - {{name: token, mountPath: /var/run/secrets/tokens/gcp-ksa}}
    - {{name: creds, mountPath: /etc/gcp}}
  volumes:
  - name: token
    projected:
      sources:
      - serviceAccountToken: {{audience: "{audience}", expirationSeconds: 3600, path: token}}
  - name: creds
    configMap:
      name: gcp-creds
      items: [{{key: config, path: credential-configuration.json}}]
"#
    )
}

#[test]
fn google_federation_recognised_by_its_credential_configuration() {
    let token = "/var/run/secrets/tokens/gcp-ksa/token";
    let y = google_pod("custom-aud", token, "credential-configuration.json");
    let f = judge_yaml(&y, &issuer_change());
    assert_eq!(rules_of(&f), [RuleId::FederatedAudienceUntrusted], "{f:#?}");
    assert!(f[0].message.contains("GCP"), "{}", f[0].message);
    assert!(
        f[0].message.contains("GOOGLE_APPLICATION_CREDENTIALS")
            && f[0].message.contains("gcp-creds"),
        "the finding names the signal: {}",
        f[0].message
    );
    // The configuration reads another file, or the variable names a file
    // that is not the configuration: not this token's reader.
    for y in [
        google_pod(
            "custom-aud",
            "/var/run/secrets/other/token",
            "credential-configuration.json",
        ),
        google_pod("custom-aud", token, "config"),
    ] {
        assert!(judge_yaml(&y, &issuer_change()).is_empty(), "{y}");
    }
}

#[test]
fn a_legacy_token_secret_is_known_by_its_type_alone() {
    assert!(is_legacy_token_secret(Some(
        "kubernetes.io/service-account-token"
    )));
    assert!(!is_legacy_token_secret(Some("Opaque")));
    assert!(!is_legacy_token_secret(None));
    assert_eq!(
        legacy_token_selector(),
        "type=kubernetes.io/service-account-token"
    );
}
