//! What `serve` runs with, as plain values: the command line (or anything
//! else) builds them, and the runtime never sees how they were given.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::cluster;

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub health_listen: SocketAddr,
    /// The serving pair; both or neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM bundle (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// Where a development pair is kept when no pair is given.
    pub dev_cert_dir: PathBuf,
    /// The configuration file; the embedded default without one.
    pub config: Option<PathBuf>,
    pub shutdown_grace: Duration,
    /// After a signal: unready but still serving, before the drain.
    pub shutdown_delay: Duration,
    pub reload_interval: Duration,
    /// Warn (log and metric) when the served certificate expires within this.
    pub cert_expiry_warning: Duration,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// Bytes of request bodies read at once; more wait for room.
    pub max_inflight_bytes: usize,
    /// The API server to watch Secrets on; none runs without a cluster.
    pub cluster: Option<cluster::Credentials>,
    /// Whether the legacy token Secrets are watched on that API server.
    pub watch_secrets: bool,
    /// Discovery, when a service account is given.
    pub discovery: Option<DiscoveryArgs>,
    /// Issuing its own certificate into a Secret (`--tls-secret`) and the
    /// flags that go with it; checked when `serve` starts.
    pub self_tls: SelfTlsArgs,
}

/// `--tls-secret` and its companions as given.
#[derive(Debug, Clone)]
pub struct SelfTlsArgs {
    /// NAMESPACE/NAME; none serves --tls-cert/--tls-key or a development pair.
    pub secret: Option<String>,
    pub webhook_configurations: Option<String>,
    pub names: Vec<String>,
    pub ca_lifetime: Duration,
    pub ca_renew_before: Duration,
    pub cert_lifetime: Duration,
    pub cert_renew_before: Duration,
    pub ca_overlap: Duration,
}

/// Discovery's flags as given; checked when `serve` starts.
#[derive(Debug, Clone)]
pub struct DiscoveryArgs {
    /// NAMESPACE/NAME.
    pub account: String,
    pub ledger: String,
    pub interval: Duration,
    pub window: Duration,
    pub audience: String,
    /// `--apiserver-endpoints`; empty reads the EndpointSlices.
    pub apiserver_endpoints: Vec<String>,
}
