//! Child processes that cannot outlive their test: killed on drop (also
//! while a test panics), their output kept in a log file that is printed
//! when the test fails, and their peak memory reported when they stop.

use std::{
    collections::HashSet,
    fs::File,
    io::{Read, Seek, SeekFrom},
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
};

/// How much of a log a failing test prints; the file keeps the rest.
const LOG_TAIL_BYTES: u64 = 12 * 1024;

pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    stopped: bool,
}

impl Proc {
    /// Starts `program` with its stdout and stderr in `log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: PathBuf) -> Proc {
        Self::spawn_in(name, Command::new(program), program, args, log)
    }

    /// [`Proc::spawn`] with `env` added to the test runner's environment.
    pub fn spawn_adding_env(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: PathBuf,
    ) -> Proc {
        let mut cmd = Command::new(program);
        cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        Self::spawn_in(name, cmd, program, args, log)
    }

    /// [`Proc::spawn`] with exactly the environment `env` and nothing the
    /// test runner's environment holds.
    pub fn spawn_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: PathBuf,
    ) -> Proc {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        Self::spawn_in(name, cmd, program, args, log)
    }

    fn spawn_in(
        name: &str,
        mut cmd: Command,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Proc {
        let out = File::create(&log).expect("create a log file");
        let err = out.try_clone().expect("clone a log file handle");
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        // If the test process dies without unwinding (SIGKILL, abort), the
        // kernel kills the child instead of leaving it running. Children are
        // spawned from runtime worker or test threads, which live until the
        // fixtures holding the children are gone.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        Proc {
            name: name.to_owned(),
            child,
            log,
            stopped: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails the test with the process's log if it has exited: waiting on a
    /// dead process until a timeout would hide why it died.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}); its log {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log)
            );
        }
    }

    /// Waits until `/readyz` on the health listener `health` (host:port)
    /// answers 200, failing the test at once if the process dies.
    pub async fn wait_ready(&mut self, health: &str) {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(2))
            .build()
            .expect("an HTTP client");
        let deadline = super::Deadline::new(
            format!("{} /readyz", self.name),
            std::time::Duration::from_secs(60),
        );
        loop {
            self.assert_running();
            if http
                .get(format!("http://{health}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return;
            }
            deadline.tick().await;
        }
    }

    /// Sends SIGTERM, as the kubelet does, and waits for the exit.
    pub async fn terminate(&mut self, within: std::time::Duration) -> std::process::ExitStatus {
        let pid = libc::pid_t::try_from(self.pid()).expect("a pid");
        // SAFETY: kill only sends a signal to our own child.
        assert_eq!(
            unsafe { libc::kill(pid, libc::SIGTERM) },
            0,
            "SIGTERM {}",
            self.name
        );
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.stopped = true;
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not exit within {within:?} of SIGTERM",
                self.name
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Everything the process has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident memory so far (VmHWM), in KiB.
    pub fn peak_memory_kib(&self) -> Option<u64> {
        if self.stopped {
            // The pid may belong to another process by now.
            return None;
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    /// Reports peak memory and kills the process. Idempotent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        if let Some(kib) = self.peak_memory_kib() {
            eprintln!(
                "peak memory (VmHWM) of {} [pid {}]: {} MiB",
                self.name,
                self.pid(),
                kib / 1024
            );
        }
        // SIGKILL: nothing these processes hold needs a clean shutdown, and
        // a graceful one (kube-apiserver drains for seconds) would only slow
        // every test down.
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stopped = true;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "---- {} log {} (last {} KiB) ----\n{}\n---- end of {} log ----",
                self.name,
                self.log.display(),
                LOG_TAIL_BYTES / 1024,
                tail(&self.log),
                self.name
            );
        }
    }
}

fn tail(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return "(no log)".to_owned();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// A loopback port that was free a moment ago and that no other test in
/// this process has been given. Another process could still take it before
/// the child binds it; that window is small and the child then fails loudly.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind a loopback port")
            .port();
        if given.insert(port) {
            return port;
        }
    }
}
