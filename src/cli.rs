//! Command-line interface. Every flag can also come from an environment
//! variable so that a Deployment can configure the webhook without args.
//! This is the only module that knows clap: it turns flags into the plain
//! settings the runtime and `check` take.

use std::{ffi::OsString, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum, builder::BoolishValueParser};

use crate::{check, cluster, discovery, inventory, logging, restart, server, status};

/// 2 × 3 MiB (object and oldObject at the API server's default request
/// limit) + 1 MiB for the review's envelope.
pub const DEFAULT_MAX_BODY_BYTES: usize = 7 * 1024 * 1024;

/// Two of the largest reviews at once. Judging a body takes about twice its
/// size again, so with the process's own ~10 MiB a burst stays under a
/// 64 MiB container limit (docs/memory.md).
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 16 * 1024 * 1024;

/// Set by the kubelet in every pod; its presence means we run in a cluster.
pub const IN_CLUSTER_ENV: &str = "KUBERNETES_SERVICE_HOST";

#[derive(Debug, Parser)]
#[command(name = "issuer-guard", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the admission webhook over HTTPS, with health and metrics on plain HTTP.
    Serve(Box<ServeArgs>),
    /// Judge manifests offline with the webhook's rules. Exits 1 when a
    /// finding would be denied, 2 on unusable input.
    Check(CheckArgs),
    /// Whether the retiring issuer or key can be retired now, after a time,
    /// or which owners and pods block it, read from the live cluster with
    /// your own credentials. Exits 0 when safe now (or nothing retires), 1
    /// when not yet, 2 when it cannot decide.
    Status(StatusArgs),
    /// Keep the pods' inventory in the cluster and export the `status`
    /// verdict as metrics (the chart's `<release>-inventory` Deployment).
    /// Counts only: which pods block is for `status` to say.
    Inventory(InventoryArgs),
    /// Recreate the pods that block a rotation (what `status` lists), one
    /// owner at a time: rollout restarts, a no-downtime rolling replace of
    /// ReplicationControllers, evictions that honour PodDisruptionBudgets.
    /// Prints the plan only without a terminal, unless --yes. Exits 0 when
    /// done, 1 when an owner failed, 2 when it cannot start.
    Restart(RestartArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RestartStrategy {
    /// One extra pod up and ready before each old one goes.
    Rolling,
    /// Scale to 0 and back: downtime.
    Recreate,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    #[command(flatten)]
    pub status: StatusArgs,
    /// Only this owner, as KIND/NAME (e.g. deployment/web, pod/runner).
    #[arg(long, env = "ISSUER_GUARD_RESTART_OWNER")]
    pub owner: Option<String>,
    /// Only pods stamped with this generation.
    #[arg(long, env = "ISSUER_GUARD_RESTART_GENERATION")]
    pub generation: Option<u64>,
    /// How a ReplicationController's pods are recreated.
    #[arg(long, env = "ISSUER_GUARD_RESTART_STRATEGY", value_enum, default_value_t = RestartStrategy::Rolling)]
    pub strategy: RestartStrategy,
    /// Owners restarted at once.
    #[arg(long, env = "ISSUER_GUARD_RESTART_MAX_IN_FLIGHT", default_value_t = 1)]
    pub max_in_flight: usize,
    /// How long one owner may take (a rollout, an eviction a budget holds
    /// back) before it is reported and the run moves on or stops.
    #[arg(long, env = "ISSUER_GUARD_RESTART_TIMEOUT", default_value = "5m", value_parser = parse_interval)]
    pub timeout: Duration,
    /// Go on after an owner fails.
    #[arg(long, env = "ISSUER_GUARD_RESTART_KEEP_GOING", value_parser = BoolishValueParser::new())]
    pub keep_going: bool,
    /// Print the plan and change nothing (the default when stdout is not a
    /// terminal).
    #[arg(long, env = "ISSUER_GUARD_RESTART_DRY_RUN", value_parser = BoolishValueParser::new(), conflicts_with = "yes")]
    pub dry_run: bool,
    /// Carry the plan out even when stdout is not a terminal.
    #[arg(short = 'y', long, env = "ISSUER_GUARD_RESTART_YES", value_parser = BoolishValueParser::new())]
    pub yes: bool,
    /// Where a bare pod's manifest is kept while it is recreated (and left,
    /// should its replacement fail).
    #[arg(
        long,
        env = "ISSUER_GUARD_RESTART_SAVE_DIR",
        default_value = "issuer-guard-restart"
    )]
    pub save_dir: PathBuf,
}

impl RestartArgs {
    pub fn options(self) -> Result<restart::Options, restart::RestartError> {
        use std::io::IsTerminal;
        let owner = self
            .owner
            .as_deref()
            .map(restart::parse_owner)
            .transpose()?;
        let dry_run = self.dry_run || !(self.yes || std::io::stdout().is_terminal());
        Ok(restart::Options {
            status: self.status.options(),
            owner,
            generation: self.generation,
            strategy: match self.strategy {
                RestartStrategy::Rolling => restart::Strategy::Rolling,
                RestartStrategy::Recreate => restart::Strategy::Recreate,
            },
            max_in_flight: self.max_in_flight,
            timeout: self.timeout,
            keep_going: self.keep_going,
            dry_run,
            save_dir: self.save_dir,
        })
    }
}

#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// Kubeconfig files; else $KUBECONFIG, ~/.kube/config or the in-cluster
    /// account.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<OsString>,
    /// The generation ledger, as NAMESPACE/NAME (the chart's is
    /// <namespace>/<release>-ledger).
    #[arg(
        long,
        env = "ISSUER_GUARD_INVENTORY_LEDGER",
        default_value = "issuer-guard/issuer-guard-ledger"
    )]
    pub ledger: String,
    /// The configuration the webhook runs with; the embedded default when
    /// omitted. Read once at start.
    #[arg(long, env = "ISSUER_GUARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Discovery's window, as the cluster's webhook runs with.
    #[arg(long, env = "ISSUER_GUARD_DISCOVERY_WINDOW", default_value = "5m", value_parser = parse_interval)]
    pub discovery_window: Duration,
    /// Plain-HTTP address of /healthz, /readyz and /metrics [default:
    /// 127.0.0.1:8080, 0.0.0.0:8080 in a cluster]
    #[arg(long, env = "ISSUER_GUARD_INVENTORY_LISTEN", default_value_t = in_cluster_or_local(8080), hide_default_value = true)]
    pub listen: SocketAddr,
    /// How often the verdict is made again from what the watches keep.
    #[arg(long, env = "ISSUER_GUARD_INVENTORY_INTERVAL", default_value = "15s", value_parser = parse_interval)]
    pub interval: Duration,
    #[arg(long, env = "ISSUER_GUARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl InventoryArgs {
    pub fn options(self) -> inventory::Options {
        inventory::Options {
            kubeconfig: self.kubeconfig,
            ledger: self.ledger,
            config: self.config,
            window: self.discovery_window,
            listen: self.listen,
            interval: self.interval,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Kubeconfig files, as kubectl takes them; else $KUBECONFIG or
    /// ~/.kube/config, else the in-cluster account.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<OsString>,
    /// The kubeconfig context to use instead of the current one.
    #[arg(long, env = "ISSUER_GUARD_CONTEXT")]
    pub context: Option<String>,
    /// Judge the pods of this namespace only.
    #[arg(
        short = 'n',
        long,
        env = "ISSUER_GUARD_STATUS_NAMESPACE",
        conflicts_with = "all_namespaces"
    )]
    pub namespace: Option<String>,
    /// Only pods matching this label selector (e.g. app=web).
    #[arg(short = 'l', long, env = "ISSUER_GUARD_SELECTOR")]
    pub selector: Option<String>,
    /// Judge the pods of every namespace (the default).
    #[arg(short = 'A', long, env = "ISSUER_GUARD_ALL_NAMESPACES", value_parser = BoolishValueParser::new())]
    pub all_namespaces: bool,
    /// Output format; `json` is versioned (apiVersion issuer-guard.io/v1).
    #[arg(short = 'o', long, env = "ISSUER_GUARD_OUTPUT", value_enum, default_value_t = StatusFormat::Table)]
    pub output: StatusFormat,
    /// The generation ledger, as NAMESPACE/NAME (the chart's is
    /// <namespace>/<release>-ledger).
    #[arg(
        long,
        env = "ISSUER_GUARD_STATUS_LEDGER",
        default_value = "issuer-guard/issuer-guard-ledger"
    )]
    pub ledger: String,
    /// The configuration the webhook runs with; the embedded default when
    /// omitted.
    #[arg(long, env = "ISSUER_GUARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Discovery's window, as the cluster's webhook runs with.
    #[arg(long, env = "ISSUER_GUARD_DISCOVERY_WINDOW", default_value = "5m", value_parser = parse_interval)]
    pub discovery_window: Duration,
}

impl StatusArgs {
    pub fn options(self) -> status::Options {
        status::Options {
            kubeconfig: self.kubeconfig,
            context: self.context,
            namespace: self.namespace,
            selector: self.selector,
            output: match self.output {
                StatusFormat::Table => status::Format::Table,
                StatusFormat::Json => status::Format::Json,
            },
            ledger: self.ledger,
            config: self.config,
            window: self.discovery_window,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl From<LogFormat> for logging::Format {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Text => logging::Format::Text,
            LogFormat::Json => logging::Format::Json,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    /// SARIF 2.1.0, for code-scanning services.
    Sarif,
}

impl From<OutputFormat> for check::OutputFormat {
    fn from(f: OutputFormat) -> Self {
        match f {
            OutputFormat::Table => check::OutputFormat::Table,
            OutputFormat::Json => check::OutputFormat::Json,
            OutputFormat::Sarif => check::OutputFormat::Sarif,
        }
    }
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Configuration file; the embedded default when omitted.
    #[arg(long, env = "ISSUER_GUARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        env = "ISSUER_GUARD_OUTPUT",
        value_enum,
        default_value = "table"
    )]
    pub output: OutputFormat,
    /// Namespace assumed for objects that name none.
    #[arg(long, env = "ISSUER_GUARD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Manifest files or directories; `-` reads stdin.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Exit 2 on unusable input found in a directory too, not only on
    /// input named on the command line.
    #[arg(long, env = "ISSUER_GUARD_STRICT", value_parser = BoolishValueParser::new())]
    pub strict: bool,
    /// A saved copy of the generation ledger (`kubectl get configmap
    /// issuer-guard-ledger -o yaml`): judge against the generation and
    /// rotation discovered in the cluster, combined with --config.
    #[arg(long, env = "ISSUER_GUARD_SNAPSHOT")]
    pub snapshot: Option<PathBuf>,
    /// Discovery's window, as the cluster's webhook runs with.
    #[arg(long, env = "ISSUER_GUARD_DISCOVERY_WINDOW", default_value = "5m", value_parser = parse_interval)]
    pub discovery_window: Duration,
    /// Follow symlinks that lead out of the tree named on the command line.
    /// Off by default: in CI on a pull request a committed symlink to
    /// /proc/self/environ or ~/.ssh would put the job's secrets in the report.
    #[arg(long, env = "ISSUER_GUARD_FOLLOW_SYMLINKS", value_parser = BoolishValueParser::new())]
    pub follow_symlinks: bool,
    /// Largest file (or standard input) read, e.g. 64Mi, 200Mi, 1Gi; a
    /// larger one is reported as unusable. One document or object is held
    /// to 4 MiB, above what the API server accepts.
    #[arg(long, env = "ISSUER_GUARD_MAX_FILE_SIZE", default_value = "64Mi", value_parser = parse_size)]
    pub max_file_size: usize,
}

impl CheckArgs {
    pub fn options(self) -> check::Options {
        check::Options {
            config: self.config,
            output: self.output.into(),
            namespace: self.namespace,
            paths: self.paths,
            strict: self.strict,
            snapshot: self.snapshot,
            window: self.discovery_window,
            symlinks: if self.follow_symlinks {
                check::Symlinks::Anywhere
            } else {
                check::Symlinks::WithinTree
            },
            limits: check::Limits {
                document: check::DEFAULT_DOCUMENT_LIMIT,
                file: self.max_file_size,
            },
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the HTTPS webhook listener [default: 127.0.0.1:8443, 0.0.0.0:8443 in a cluster]
    #[arg(long, env = "ISSUER_GUARD_LISTEN", default_value_t = in_cluster_or_local(8443), hide_default_value = true)]
    pub listen: SocketAddr,

    /// Address of the plain-HTTP listener for /healthz, /readyz and /metrics [default: 127.0.0.1:8080, 0.0.0.0:8080 in a cluster]
    #[arg(long, env = "ISSUER_GUARD_HEALTH_LISTEN", default_value_t = in_cluster_or_local(8080), hide_default_value = true)]
    pub health_listen: SocketAddr,

    /// PEM certificate chain to serve; reloaded when its content changes. Needs --tls-key.
    #[arg(long, env = "ISSUER_GUARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert; reloaded when its content changes.
    #[arg(long, env = "ISSUER_GUARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM bundle of CAs whose client certificates are required on the
    /// webhook port (mutual TLS); reloaded when its content changes. The API
    /// server presents one when its admission configuration says so.
    #[arg(long, env = "ISSUER_GUARD_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,

    /// Where a development CA and serving certificate are kept when neither
    /// --tls-cert nor --tls-key is given.
    #[arg(long, env = "ISSUER_GUARD_DEV_CERT_DIR", default_value = "certs")]
    pub dev_cert_dir: PathBuf,

    /// Configuration file (YAML); reloaded when its content changes. Without
    /// it the embedded default is used.
    #[arg(long, env = "ISSUER_GUARD_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log line format: `text` for people, `json` for log collectors.
    #[arg(long, env = "ISSUER_GUARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// How long a shutdown may take to let in-flight reviews finish (e.g. 25, 25s, 500ms).
    #[arg(long, env = "ISSUER_GUARD_SHUTDOWN_GRACE", default_value = "25s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// After SIGTERM, how long to keep serving while unready, so that the
    /// Service's endpoints drop this pod before the listener closes and the
    /// drain starts. A second signal cuts it short. [default: 5s in a
    /// cluster, 0s outside]
    #[arg(long, env = "ISSUER_GUARD_SHUTDOWN_DELAY", value_parser = parse_duration, hide_default_value = true,
          default_value = if ServeArgs::in_cluster() { "5s" } else { "0s" })]
    pub shutdown_delay: Duration,

    /// Warn, in the log and the issuer_guard_tls_cert_expiring metric, when
    /// the served certificate expires within this (e.g. 168h is 7 days).
    #[arg(long, env = "ISSUER_GUARD_CERT_EXPIRY_WARNING", default_value = "168h", value_parser = parse_duration)]
    pub cert_expiry_warning: Duration,

    /// How often the certificate and config files are re-read (e.g. 2s, 200ms).
    #[arg(long, env = "ISSUER_GUARD_RELOAD_INTERVAL", default_value = "2s", value_parser = parse_interval)]
    pub reload_interval: Duration,

    /// Deadline for one request, and for a client's TLS handshake (e.g. 10s).
    #[arg(long, env = "ISSUER_GUARD_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_interval)]
    pub request_timeout: Duration,

    /// Largest request body accepted; larger ones get HTTP 413. The default
    /// holds the largest review the API server sends with its default 3 MiB
    /// request limit: an UPDATE carries the object and the old object, each
    /// up to 3 MiB, plus the envelope.
    #[arg(long, env = "ISSUER_GUARD_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Bytes of request bodies being read and judged at once. Requests over
    /// it wait for room, within their deadline, instead of growing the
    /// process past its memory limit. At least --max-body-bytes.
    #[arg(long, env = "ISSUER_GUARD_MAX_INFLIGHT_BYTES", default_value_t = DEFAULT_MAX_INFLIGHT_BYTES)]
    pub max_inflight_bytes: usize,

    /// Kubeconfig file(s) for the Secret watch, separated like $PATH. Without
    /// it, the in-cluster service account is used when in a cluster.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<OsString>,

    /// Run without an API server even if one is configured; the legacy-token
    /// rules then know no Secrets.
    #[arg(long, env = "ISSUER_GUARD_NO_CLUSTER", value_parser = BoolishValueParser::new())]
    pub no_cluster: bool,

    /// Watch the cluster's legacy token Secrets (type
    /// kubernetes.io/service-account-token) for the legacy-token rules.
    /// `false` turns the watch off, and with it the need for a cluster-wide
    /// Secret grant: those rules then know no Secrets. Discovery stays on.
    #[arg(long, env = "ISSUER_GUARD_WATCH_SECRETS", default_value_t = true, action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub watch_secrets: bool,

    /// The ServiceAccount discovery mints its tokens for, as NAMESPACE/NAME:
    /// one with no permissions (the chart's `<release>-canary`). Given, it
    /// turns discovery on: the issuer and signing key are learnt from every
    /// API server (TokenRequests for this account, verified against each
    /// server's JWKS) and recorded in the ledger ConfigMap in NAMESPACE.
    /// Needs a cluster.
    #[arg(long, env = "ISSUER_GUARD_SERVICE_ACCOUNT")]
    pub service_account: Option<String>,

    /// Name of the generation ledger ConfigMap, in the service account's namespace.
    #[arg(long, env = "ISSUER_GUARD_LEDGER", default_value = discovery::DEFAULT_LEDGER)]
    pub ledger: String,

    /// How often discovery asks the API server what it signs with (e.g. 10s).
    #[arg(long, env = "ISSUER_GUARD_DISCOVERY_INTERVAL", default_value = "10s", value_parser = parse_interval)]
    pub discovery_interval: Duration,

    /// What was seen within this long counts as seen now. Must span a
    /// rolling control-plane upgrade, during which probes can see the old
    /// and the new signer in turn; a key is retired once it has been out of
    /// the JWKS this long.
    #[arg(long, env = "ISSUER_GUARD_DISCOVERY_WINDOW", default_value = "5m", value_parser = parse_interval)]
    pub discovery_window: Duration,

    /// Audience of the tokens issuer-guard mints for itself.
    #[arg(long, env = "ISSUER_GUARD_DISCOVERY_AUDIENCE", default_value = discovery::DEFAULT_AUDIENCE)]
    pub discovery_audience: String,

    /// The API servers to probe, as comma-separated HTTPS URLs, each reached
    /// on its own connection. Unset, they are read from the
    /// `default/kubernetes` EndpointSlices (each address reached with the
    /// name kubernetes.default.svc); where those cannot be read, through
    /// the client's one address, and a switch then completes only once the
    /// old pair has been unseen for a discovery window.
    #[arg(long, env = "ISSUER_GUARD_APISERVER_ENDPOINTS", value_delimiter = ',')]
    pub apiserver_endpoints: Vec<String>,

    /// A Secret, as NAMESPACE/NAME, in which issuer-guard creates, rotates
    /// and serves its own CA and serving certificate, keeping the caBundle
    /// of --webhook-configurations current; all replicas share it. Instead
    /// of --tls-cert/--tls-key; needs a cluster.
    #[arg(long, env = "ISSUER_GUARD_TLS_SECRET")]
    pub tls_secret: Option<String>,

    /// With --tls-secret: the name of the MutatingWebhookConfiguration and
    /// the ValidatingWebhookConfiguration whose caBundle it keeps.
    #[arg(long, env = "ISSUER_GUARD_WEBHOOK_CONFIGURATIONS")]
    pub webhook_configurations: Option<String>,

    /// With --tls-secret: the DNS names and IP addresses of the serving
    /// certificate, comma-separated, first the one the API server calls
    /// (e.g. issuer-guard.issuer-guard.svc).
    #[arg(long, env = "ISSUER_GUARD_TLS_NAMES", value_delimiter = ',')]
    pub tls_names: Vec<String>,

    /// With --tls-secret: how long a new CA is valid.
    #[arg(long, env = "ISSUER_GUARD_CA_LIFETIME", default_value = "8760h", value_parser = parse_interval)]
    pub ca_lifetime: Duration,

    /// With --tls-secret: a new CA is rotated in this long before the
    /// current one expires. At least twice --ca-overlap.
    #[arg(long, env = "ISSUER_GUARD_CA_RENEW_BEFORE", default_value = "720h", value_parser = parse_interval)]
    pub ca_renew_before: Duration,

    /// With --tls-secret: how long a serving certificate is valid (never
    /// beyond its CA).
    #[arg(long, env = "ISSUER_GUARD_CERT_LIFETIME", default_value = "2160h", value_parser = parse_interval)]
    pub cert_lifetime: Duration,

    /// With --tls-secret: the serving certificate is renewed this long
    /// before it expires.
    #[arg(long, env = "ISSUER_GUARD_CERT_RENEW_BEFORE", default_value = "720h", value_parser = parse_interval)]
    pub cert_renew_before: Duration,

    /// With --tls-secret: how long a new CA is in the webhook
    /// configurations' caBundle before it signs the served certificate, and
    /// how long the old CA stays after.
    #[arg(long, env = "ISSUER_GUARD_CA_OVERLAP", default_value = "10m", value_parser = parse_interval)]
    pub ca_overlap: Duration,
}

impl ServeArgs {
    pub fn in_cluster() -> bool {
        std::env::var_os(IN_CLUSTER_ENV).is_some_and(|v| !v.is_empty())
    }

    /// The runtime's settings. The cluster is picked here, where the
    /// environment is read: `--no-cluster`, then `--kubeconfig`, then the
    /// in-cluster service account.
    pub fn settings(self) -> server::Settings {
        let cluster = if self.no_cluster {
            None
        } else {
            cluster::Credentials::pick(self.kubeconfig.as_deref(), Self::in_cluster())
        };
        server::Settings {
            listen: self.listen,
            health_listen: self.health_listen,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            client_ca: self.client_ca,
            dev_cert_dir: self.dev_cert_dir,
            config: self.config,
            shutdown_grace: self.shutdown_grace,
            shutdown_delay: self.shutdown_delay,
            reload_interval: self.reload_interval,
            cert_expiry_warning: self.cert_expiry_warning,
            request_timeout: self.request_timeout,
            max_body_bytes: self.max_body_bytes,
            max_inflight_bytes: self.max_inflight_bytes,
            cluster,
            watch_secrets: self.watch_secrets,
            discovery: self.service_account.map(|account| server::DiscoveryArgs {
                account,
                ledger: self.ledger,
                interval: self.discovery_interval,
                window: self.discovery_window,
                audience: self.discovery_audience,
                apiserver_endpoints: self.apiserver_endpoints,
            }),
            self_tls: server::SelfTlsArgs {
                secret: self.tls_secret,
                webhook_configurations: self.webhook_configurations,
                names: self.tls_names,
                ca_lifetime: self.ca_lifetime,
                ca_renew_before: self.ca_renew_before,
                cert_lifetime: self.cert_lifetime,
                cert_renew_before: self.cert_renew_before,
                ca_overlap: self.ca_overlap,
            },
        }
    }
}

fn in_cluster_or_local(port: u16) -> SocketAddr {
    // In a pod the kubelet and the API server reach us through the pod IP,
    // so loopback would make the webhook unreachable; outside a cluster
    // loopback keeps a developer's webhook off the network.
    let ip = if ServeArgs::in_cluster() {
        [0, 0, 0, 0]
    } else {
        [127, 0, 0, 1]
    };
    SocketAddr::from((ip, port))
}

/// A duration as `<n>ms`, `<n>s`, `<n>m`, `<n>h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; use e.g. 500ms, 2s, 1m or 2"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => n
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{s:?} is too long")),
        "h" => n
            .checked_mul(3600)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{s:?} is too long")),
        _ => Err(format!(
            "{s:?} has unknown unit {unit:?}; use ms, s, m or h"
        )),
    }
}

/// A size as a number of bytes with an optional binary unit (`Ki`, `Mi`,
/// `Gi`, with or without a trailing `B`).
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size; use e.g. 64Mi, 512Ki or 1Gi"))?;
    let shift = match unit.trim().trim_end_matches('B') {
        "" => 0,
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        other => {
            return Err(format!(
                "{s:?} has unknown unit {other:?}; use Ki, Mi or Gi"
            ));
        }
    };
    match n.checked_mul(1 << shift) {
        Some(0) => Err("must be greater than zero".to_owned()),
        Some(bytes) => Ok(bytes),
        None => Err(format!("{s:?} is too large")),
    }
}

/// A duration that must not be zero: a zero poll interval would spin and a
/// zero deadline would refuse every request.
fn parse_interval(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be greater than zero".to_owned()),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("25"), Ok(Duration::from_secs(25)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("150ms"), Ok(Duration::from_millis(150)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("").is_err());
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("2d").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_interval("0ms").is_err());
        assert_eq!(parse_size("64Mi"), Ok(64 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err() && parse_size("5MB").is_err() && parse_size("x").is_err());
    }

    #[test]
    fn serve_flags_parse() {
        let cli = Cli::try_parse_from([
            "issuer-guard",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--reload-interval",
            "50ms",
            "--no-cluster",
        ])
        .expect("parses");
        // Other subcommands exist beside serve; this test only parses serve.
        #[allow(irrefutable_let_patterns)]
        let Command::Serve(args) = cli.command else {
            panic!("parsed as another subcommand");
        };
        assert_eq!(args.listen, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(args.reload_interval, Duration::from_millis(50));
        assert_eq!(args.shutdown_grace, Duration::from_secs(25));
        assert_eq!(args.max_body_bytes, 7 * 1024 * 1024);
        assert!(args.no_cluster);
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// Flags (not positional arguments, not clap's help and version) of every
    /// subcommand, as `(subcommand, --flag, env)`.
    fn flags() -> Vec<(String, String, Option<String>)> {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        // Built, so that clap's generated arguments are there to be skipped
        // rather than missed.
        cli.build();
        let mut out = Vec::new();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_positional() || id == "help" || id == "version" {
                    continue;
                }
                let flag = match arg.get_long() {
                    Some(long) => format!("--{long}"),
                    None => format!("-{}", arg.get_short().unwrap_or('?')),
                };
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                out.push((sub.get_name().to_owned(), flag, env));
            }
        }
        out
    }

    #[test]
    fn every_flag_reads_an_environment_variable() {
        let flags = flags();
        let serve: Vec<&str> = flags
            .iter()
            .filter(|(sub, ..)| sub == "serve")
            .map(|(_, flag, _)| flag.as_str())
            .collect();
        // The walk must see both subcommands' flags, or it proves nothing.
        assert!(serve.contains(&"--listen") && serve.contains(&"--kubeconfig"));
        assert!(
            flags
                .iter()
                .any(|(sub, f, _)| sub == "check" && f == "--output")
        );

        let without_env: Vec<String> = flags
            .iter()
            .filter(|(.., env)| env.is_none())
            .map(|(sub, flag, _)| format!("{sub} {flag}"))
            .collect();
        assert!(
            without_env.is_empty(),
            "flags without an environment variable: {without_env:?}"
        );

        let misnamed: Vec<String> = flags
            .iter()
            .filter_map(|(sub, flag, env)| {
                let env = env.as_deref()?;
                let ok = if flag == "--kubeconfig" {
                    env == "KUBECONFIG"
                } else {
                    env.starts_with("ISSUER_GUARD_")
                };
                (!ok).then(|| format!("{sub} {flag} reads {env}"))
            })
            .collect();
        assert!(
            misnamed.is_empty(),
            "environment variables outside ISSUER_GUARD_ (only --kubeconfig reads KUBECONFIG): {misnamed:?}"
        );
    }

    #[test]
    fn readme_serve_table_names_every_flag_and_its_variable() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("\n## `serve`\n")
            .nth(1)
            .expect("README has a `serve` section");
        let section = section.split("\n#").next().unwrap_or(section);
        let mut documented: Vec<(String, String)> = Vec::new();
        for row in section.lines().filter(|l| l.starts_with("| `--")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let ticked = |cell: &str| -> Vec<String> {
                cell.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect()
            };
            let (names, envs) = (ticked(cells[1]), ticked(cells[2]));
            assert_eq!(names.len(), envs.len(), "README row {row:?}");
            documented.extend(names.into_iter().zip(envs));
        }
        let mut actual: Vec<(String, String)> = flags()
            .into_iter()
            .filter(|(sub, ..)| sub == "serve")
            .map(|(_, flag, env)| (flag, env.unwrap_or_default()))
            .collect();
        documented.sort();
        actual.sort();
        assert!(
            documented.len() >= 10,
            "README table not found: {documented:?}"
        );
        assert_eq!(documented, actual, "README `serve` table vs the flags");
    }

    #[test]
    fn listeners_default_to_loopback_outside_a_cluster_and_all_addresses_in_one() {
        use clap::CommandFactory;
        let in_cluster = std::env::var_os(IN_CLUSTER_ENV).is_some_and(|v| !v.is_empty());
        let ip = if in_cluster {
            [0, 0, 0, 0]
        } else {
            [127, 0, 0, 1]
        };
        let expected = |port| SocketAddr::from((ip, port));

        // The default clap holds, whatever the environment overrides.
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").expect("serve");
        for (id, port) in [("listen", 8443), ("health_listen", 8080)] {
            let arg = serve
                .get_arguments()
                .find(|a| a.get_id() == id)
                .unwrap_or_else(|| panic!("serve has no {id}"));
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            assert_eq!(
                defaults,
                [expected(port).to_string()],
                "default of {id} with {IN_CLUSTER_ENV} {}",
                if in_cluster { "set" } else { "unset" }
            );
        }

        // And what parsing gives when no variable overrides it.
        let cli = Cli::try_parse_from(["issuer-guard", "serve", "--no-cluster"]).expect("parses");
        #[allow(irrefutable_let_patterns)]
        let Command::Serve(args) = cli.command else {
            panic!("parsed as another subcommand");
        };
        for (var, got, port) in [
            ("ISSUER_GUARD_LISTEN", args.listen, 8443),
            ("ISSUER_GUARD_HEALTH_LISTEN", args.health_listen, 8080),
        ] {
            match std::env::var(var) {
                Ok(set) => assert_eq!(Ok(got), set.parse(), "{var} overrides the default"),
                Err(_) => assert_eq!(got, expected(port), "{var} unset"),
            }
        }
        assert_ne!(args.listen, args.health_listen);
    }
}
