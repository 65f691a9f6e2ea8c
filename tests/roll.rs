//! A control plane mid-roll: two kube-apiservers on one etcd, configured
//! with different service-account issuers, behind one address
//! (tests/support/alternating.rs). A client of that address sees both
//! configurations from one request to the next, as clients of a real
//! control plane do while its API servers are upgraded one at a time. The
//! control-plane binaries come from scripts/build-control-plane (or
//! KUBE_APISERVER, KUBE_CONTROLLER_MANAGER and ETCD).

mod support;

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    time::{Duration, Instant},
};

use kube::{
    Client,
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::Value;
use support::{ControlPlane, SaKey, ServiceAccountFlags, alternating::AlternatingRelay};

const OLD: &str = "https://old.example";
const NEW: &str = "https://new.example";

async fn client_for(kubeconfig: &std::path::Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("read the relay's kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("a client config for the relay");
    Client::try_from(config).expect("a client for the relay")
}

/// How many requests in a run may be lost to the relay cutting their
/// connection: one the client sends just as `hold` runs out fails without
/// an answer, and is sent again. On a loaded machine a first request's TLS
/// handshake can push the second one close to the cut; more lost requests
/// than this would mean something other than the timer is wrong.
const CUTS_ALLOWED: u32 = 3;

/// The issuer the answering API server advertises in its discovery
/// document. `cuts` counts the requests the relay cut and that were sent
/// again.
async fn discovered_issuer(client: &Client, cuts: &mut u32) -> String {
    loop {
        let req = http::Request::get("/.well-known/openid-configuration")
            .body(Vec::new())
            .expect("a request");
        match client.request_text(req).await {
            Ok(body) => {
                let doc: Value = serde_json::from_str(&body).expect("a JSON discovery document");
                return doc["issuer"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no issuer in {doc}"))
                    .to_owned();
            }
            Err(e @ (kube::Error::HyperError(_) | kube::Error::Service(_)))
                if *cuts < CUTS_ALLOWED =>
            {
                *cuts += 1;
                eprintln!("request lost on a cut connection, sending it again: {e}");
            }
            Err(e) => panic!("GET /.well-known/openid-configuration through the relay: {e}"),
        }
    }
}

/// Both servers answer through one address, each with its own issuer,
/// and a pooling client is moved between them by the relay's cuts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_in_front_of_two_differently_configured_apiservers() {
    let started = Instant::now();
    let mut cp = ControlPlane::start(ServiceAccountFlags::issuer(OLD)).await;
    let first_ready = started.elapsed();
    let second = cp
        .start_second_apiserver(ServiceAccountFlags {
            issuers: vec![NEW.into(), OLD.into()],
            signing: SaKey::B,
            verifying: vec![SaKey::A, SaKey::B],
            api_audiences: vec![],
        })
        .await;
    let second_ready = started.elapsed();
    let backends: Vec<SocketAddr> = [cp.apiserver_port(), second]
        .iter()
        .map(|port| SocketAddr::from(([127, 0, 0, 1], *port)))
        .collect();
    let relay = AlternatingRelay::start(backends, Duration::from_millis(300)).await;
    let kubeconfig = cp.dir().join("relay.kubeconfig");
    relay.write_kubeconfig(&cp.pki, &kubeconfig);
    let client = client_for(&kubeconfig).await;

    let (mut seen, mut cuts) = (Vec::new(), 0);
    for _ in 0..20 {
        seen.push(discovered_issuer(&client, &mut cuts).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let distinct: BTreeSet<&str> = seen.iter().map(String::as_str).collect();
    let connections = relay.connections();
    eprintln!(
        "first API server ready after {first_ready:?}, second after {second_ready:?}; \
         issuers seen in order: {seen:?}; connections per backend: {connections:?}; \
         requests sent again after a cut: {cuts}"
    );
    assert_eq!(
        distinct,
        BTreeSet::from([NEW, OLD]),
        "issuers seen through the relay: {seen:?}"
    );
    assert!(
        connections.iter().all(|&n| n > 0),
        "connections per backend: {connections:?}"
    );

    cp.stop_second_apiservers();
}
