//! Runs the real `issuer-guard serve` binary for integration tests and
//! talks to it over TLS.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Variables that would change how the server starts if the test runner's
/// environment happened to set them: every variable a flag of the binary
/// reads (from clap, so a new flag cannot be missed), the in-cluster
/// marker, and the log filter.
pub fn scrubbed_env() -> Vec<String> {
    use clap::CommandFactory;
    let mut cli = issuer_guard::cli::Cli::command();
    cli.build();
    let mut vars: Vec<String> = cli
        .get_subcommands()
        .flat_map(|s| s.get_arguments())
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    vars.extend([
        issuer_guard::cli::IN_CLUSTER_ENV.to_owned(),
        "RUST_LOG".to_owned(),
    ]);
    vars.sort();
    vars.dedup();
    vars
}

/// A running server. Killed on drop; its log is printed when the test
/// fails so that the cause is visible.
pub struct Server {
    child: Child,
    pub webhook: SocketAddr,
    pub health: SocketAddr,
    /// The CA that signed the serving certificate.
    pub ca: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
    exited: Option<ExitStatus>,
}

impl Server {
    /// Serves with development certificates made under `dir/certs`.
    pub fn dev(dir: &Path, extra: &[&str]) -> Server {
        let certs = dir.join("certs");
        let mut args = vec!["--dev-cert-dir".to_owned(), certs.display().to_string()];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Server::start(&args, certs.join("ca.crt"))
    }

    /// Serves with `args` added to the defaults of every test, without a
    /// cluster.
    pub fn start(args: &[String], ca: PathBuf) -> Server {
        let mut all = vec!["--no-cluster".to_owned()];
        all.extend_from_slice(args);
        Server::start_with_env(&all, ca, &[])
    }

    /// Serves with `args` (which decide about the cluster) and extra
    /// environment variables, on top of a scrubbed environment.
    pub fn start_with_env(
        args: &[String],
        ca: PathBuf,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Server {
        Server::launch(args, ca, env, None, None)
    }

    /// [`Server::start_with_env`] run in the working directory `cwd`.
    pub fn start_in(
        cwd: &Path,
        args: &[String],
        ca: PathBuf,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Server {
        Server::launch(args, ca, env, None, Some(cwd))
    }

    /// [`Server::start`] with both limits on open files set to `nofile`, as
    /// a container runtime might set them.
    pub fn start_with_open_files(args: &[String], ca: PathBuf, nofile: u64) -> Server {
        let mut all = vec!["--no-cluster".to_owned()];
        all.extend_from_slice(args);
        Server::launch(&all, ca, &[], Some(nofile), None)
    }

    fn launch(
        args: &[String],
        ca: PathBuf,
        env: &[(&str, &std::ffi::OsStr)],
        nofile: Option<u64>,
        cwd: Option<&Path>,
    ) -> Server {
        let mut cmd = Command::new(super::issuer_guard_bin());
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and reads only the
            // struct on this stack.
            unsafe {
                cmd.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--health-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--reload-interval",
            "100ms",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for var in scrubbed_env() {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().expect("spawn issuer-guard");
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addrs) = listening(&line) {
                        let _ = tx.send(addrs);
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let mut server = Server {
            child,
            webhook: SocketAddr::from(([0, 0, 0, 0], 0)),
            health: SocketAddr::from(([0, 0, 0, 0], 0)),
            ca,
            logs,
            exited: None,
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok((webhook, health)) => {
                server.webhook = webhook;
                server.health = health;
                server
            }
            Err(e) => panic!("server did not start ({e}):\n{}", server.log()),
        }
    }

    pub fn log(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.webhook.port())
    }

    pub fn health_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.health)
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exited = Some(status);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn client(&self) -> reqwest::Client {
        client(&self.ca, false)
    }

    pub async fn metrics(&self) -> String {
        let resp = plain_client()
            .get(self.health_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status(), 200);
        resp.text().await.expect("metrics text")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- issuer-guard log ----\n{}\n----", self.log());
        }
    }
}

fn listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("message")?.as_str()? != "listening" {
        return None;
    }
    let addr = |k: &str| v.get(k)?.as_str()?.parse().ok();
    Some((addr("webhook")?, addr("health")?))
}

/// A client for the plain-HTTP health listener.
pub fn plain_client() -> reqwest::Client {
    // reqwest is built without a default crypto provider; even a plain-HTTP
    // client needs one to exist.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

pub fn tls_config(ca: &Path) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read CA") {
        roots.add(cert.expect("CA PEM")).expect("add root");
    }
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A client trusting only `ca`. With `fresh`, every request opens a new
/// connection (and handshake) and the peer certificate is recorded.
pub fn client(ca: &Path, fresh: bool) -> reqwest::Client {
    let mut tls = tls_config(ca);
    if fresh {
        // A resumed session carries no certificate; only a full handshake
        // shows which one the server serves now.
        tls.resumption = rustls::client::Resumption::disabled();
    }
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .timeout(Duration::from_secs(10));
    if fresh {
        builder = builder.pool_max_idle_per_host(0).tls_info(true);
    }
    builder.build().expect("reqwest client")
}

pub fn peer_certificate(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("TLS info with a peer certificate")
        .to_vec()
}

/// The value of one sample, e.g. `issuer_guard_tls_reloads_total{result="success"}`.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// A raw TLS connection, for tests that need control over the bytes.
pub async fn tls_connect(addr: SocketAddr, ca: &Path) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    TlsConnector::from(Arc::new(tls_config(ca)))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake")
}

pub fn request_head(path: &str, content_length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {content_length}\r\n\r\n"
    )
}

/// Reads one HTTP/1.1 response with a content-length; returns the status and body.
pub async fn read_response(stream: &mut TlsStream<TcpStream>) -> (u16, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.expect("read response");
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("content-length");
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    (status, buf[head_end..head_end + length].to_vec())
}

/// Sends a whole request on an open connection and reads the response.
pub async fn roundtrip(
    stream: &mut TlsStream<TcpStream>,
    path: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    stream
        .write_all(request_head(path, body.len()).as_bytes())
        .await
        .expect("write head");
    stream.write_all(body).await.expect("write body");
    stream.flush().await.expect("flush");
    read_response(stream).await
}
