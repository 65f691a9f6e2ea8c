//! A stand-in for the EKS pod identity webhook (IRSA): a mutating webhook in
//! the test process that adds a projected token for `sts.amazonaws.com` to
//! Pods. It is registered under a name that sorts after issuer-guard's, so
//! the API server calls it after issuer-guard and, because it changes the
//! Pod, calls issuer-guard again (`reinvocationPolicy: IfNeeded`).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use k8s_openapi::api::{admissionregistration::v1::MutatingWebhookConfiguration, core::v1::Pod};
use kube::{
    Api,
    api::PostParams,
    core::{
        DynamicObject,
        admission::{AdmissionRequest, AdmissionResponse, AdmissionReview},
    },
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_rustls::TlsAcceptor;

use super::{ControlPlane, Deadline, api, webhook::base64_encode};

/// Pods with this label get the injection, like pods of an annotated
/// ServiceAccount do with the real webhook.
pub const INJECT_LABEL: &str = "irsa.e2e.test/inject";
pub const VOLUME: &str = "aws-iam-token";
pub const AUDIENCE: &str = "sts.amazonaws.com";
const MOUNT_PATH: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";
/// Sorts after [`super::webhook::CONFIGURATION_NAME`].
const CONFIGURATION_NAME: &str = "zz-irsa-injector";

pub struct Injector {
    server: JoinHandle<()>,
    calls: Arc<AtomicUsize>,
}

impl Injector {
    /// Serves the injector on a loopback port with a certificate from the
    /// control plane's CA, registers it, and waits until it is called.
    pub async fn start(cp: &ControlPlane) -> Injector {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the injector");
        let addr = listener.local_addr().expect("injector address");
        let cert = cp.pki.serving_cert("injector", &["127.0.0.1"]);
        let tls = TlsAcceptor::from(Arc::new(server_config(&cert.cert, &cert.key)));
        let calls = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .route("/mutate", post(mutate))
            .with_state(calls.clone());
        let server = tokio::spawn(serve(listener, tls, app));
        let injector = Injector { server, calls };
        register(cp, addr).await;
        injector.wait_called(cp).await;
        injector
    }

    /// How many admission reviews it has answered.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn wait_called(&self, cp: &ControlPlane) {
        let deadline = Deadline::new(
            "the API server to call the injector",
            Duration::from_secs(60),
        );
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "probe-", "labels": {INJECT_LABEL: "true"}},
            "spec": {"containers": [{"name": "c", "image": "registry.example/probe:1"}]}
        });
        loop {
            let created = api::create::<Pod>(&cp.client, &pod, true).await;
            if volume_count(&created.body, VOLUME) > 0 {
                return;
            }
            deadline.tick().await;
        }
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// How many volumes of `pod` are named `name`.
pub fn volume_count(pod: &Value, name: &str) -> usize {
    pod["spec"]["volumes"]
        .as_array()
        .map_or(0, |v| v.iter().filter(|v| v["name"] == name).count())
}

fn server_config(cert: &std::path::Path, key: &std::path::Path) -> rustls::ServerConfig {
    let certs = CertificateDer::pem_file_iter(cert)
        .expect("read the injector certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("parse the injector certificate");
    let key = PrivateKeyDer::from_pem_file(key).expect("read the injector key");
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("the injector TLS config")
}

async fn serve(listener: TcpListener, tls: TlsAcceptor, app: Router) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (tls, app) = (tls.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(stream) = tls.accept(tcp).await else {
                return;
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
                .await;
        });
    }
}

async fn mutate(State(calls): State<Arc<AtomicUsize>>, body: Bytes) -> Response {
    calls.fetch_add(1, Ordering::SeqCst);
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut response = AdmissionResponse::from(&req);
    if let Some(obj) = &req.object {
        let before = serde_json::to_value(obj).expect("a pod as JSON");
        let mut after = before.clone();
        inject(&mut after);
        response = response
            .with_patch(json_patch::diff(&before, &after))
            .expect("a patch");
    }
    let body = serde_json::to_vec(&response.into_review()).expect("encode a review");
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// What the pod identity webhook adds: the token volume, its mount in every
/// container, and the variables the AWS SDKs read. Idempotent.
fn inject(pod: &mut Value) {
    if volume_count(pod, VOLUME) > 0 {
        return;
    }
    let spec = &mut pod["spec"];
    let volume = json!({"name": VOLUME, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"audience": AUDIENCE, "expirationSeconds": 86400, "path": "token"}}
    ]}});
    push(&mut spec["volumes"], volume);
    for field in ["initContainers", "containers"] {
        let Some(containers) = spec[field].as_array_mut() else {
            continue;
        };
        for c in containers {
            push(
                &mut c["volumeMounts"],
                json!({"name": VOLUME, "mountPath": MOUNT_PATH, "readOnly": true}),
            );
            for (name, value) in [
                ("AWS_STS_REGIONAL_ENDPOINTS", "regional".to_owned()),
                (
                    "AWS_ROLE_ARN",
                    "arn:aws:iam::111122223333:role/e2e".to_owned(),
                ),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", format!("{MOUNT_PATH}/token")),
            ] {
                push(&mut c["env"], json!({"name": name, "value": value}));
            }
        }
    }
}

fn push(list: &mut Value, item: Value) {
    match list.as_array_mut() {
        Some(items) => items.push(item),
        None => *list = json!([item]),
    }
}

async fn register(cp: &ControlPlane, addr: SocketAddr) {
    let config: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": CONFIGURATION_NAME},
        "webhooks": [{
            "name": "irsa.e2e.test",
            "clientConfig": {
                "url": format!("https://{addr}/mutate"),
                "caBundle": base64_encode(cp.pki.ca_pem.as_bytes()),
            },
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"],
                       "operations": ["CREATE"], "resources": ["pods"]}],
            "objectSelector": {"matchLabels": {INJECT_LABEL: "true"}},
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "failurePolicy": "Fail",
            "timeoutSeconds": 5,
            "reinvocationPolicy": "Never",
        }]
    }))
    .expect("a MutatingWebhookConfiguration");
    Api::<MutatingWebhookConfiguration>::all(cp.client.clone())
        .create(&PostParams::default(), &config)
        .await
        .expect("register the injector");
}
