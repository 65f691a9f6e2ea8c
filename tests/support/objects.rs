//! The objects the end-to-end tests create, shared so that one name means
//! one shape in every test file.

use serde_json::{Value, json};

/// The image of every container the tests create; nothing pulls it.
pub const IMAGE: &str = "registry.e2e.example/app:1";

/// A Pod named `name` with `containers` and `volumes`.
pub fn pod(name: &str, containers: Value, volumes: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": containers, "volumes": volumes},
    })
}

/// A Pod with one container and no volume of its own: nothing to find.
pub fn plain_pod(name: &str) -> Value {
    pod(name, json!([{"name": "app", "image": IMAGE}]), json!([]))
}

/// A Pod whose container `app` mounts volume `token`: a projected
/// service-account token for `audience`.
pub fn audience_pod(name: &str, audience: &str) -> Value {
    pod(
        name,
        json!([{"name": "app", "image": IMAGE,
                "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets/tokens"}]}]),
        json!([{"name": "token", "projected": {"sources": [{"serviceAccountToken":
            {"audience": audience, "expirationSeconds": 3600, "path": "token"}}]}}]),
    )
}

/// A container `runner` that reads the legacy token of Secret `secret` into
/// the env var `KUBE_TOKEN`.
pub fn env_reader(secret: &str) -> Value {
    json!({"name": "runner", "image": IMAGE, "env": [
        {"name": "KUBE_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}}}
    ]})
}

/// A Pod named `name` whose one container is [`env_reader`] of `secret`.
pub fn env_reader_pod(name: &str, secret: &str) -> Value {
    pod(name, json!([env_reader(secret)]), json!([]))
}
