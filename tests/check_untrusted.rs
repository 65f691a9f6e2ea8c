//! `issuer-guard check` on a pull request it cannot trust, attacked as the
//! author of that pull request would: committed symlinks to the CI job's
//! secrets, to `/dev/zero` and to FIFOs, and inputs too large to hold.
//! Every case runs the shipped binary with every output format.

mod support;

use std::{
    ffi::CString,
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// What a leak would show: set in the environment of every run, and
/// written in files outside the scanned tree.
const ENV_MARKER: &str = "ci-token-7f3a9c1e5b";
const FILE_MARKER: &str = "ssh-key-2d8e4b6a0c";

const FORMATS: [&str; 3] = ["table", "json", "sarif"];

/// The release binary `scripts/test` builds: the attacks are tried against
/// what ships, not against cargo's test build of it.
fn bin() -> PathBuf {
    support::issuer_guard_bin()
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
    /// Peak resident memory of the process, in KiB.
    peak_kib: u64,
}

/// Runs `check` in `cwd`, killing it after 30 s (a hang fails the test
/// rather than the suite), and measures its peak memory.
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, which also reports its peak memory"
)]
fn check(cwd: &Path, args: &[&str], stdin: Option<&Path>) -> Run {
    let out = tempfile::tempdir().unwrap();
    let (stdout_path, stderr_path) = (out.path().join("out"), out.path().join("err"));
    let started = Instant::now();
    let child = Command::new(bin())
        .arg("check")
        .args(args)
        .current_dir(cwd)
        .env("CI_JOB_TOKEN", ENV_MARKER)
        .env_remove("ISSUER_GUARD_CONFIG")
        .env_remove("ISSUER_GUARD_OUTPUT")
        .env_remove("ISSUER_GUARD_STRICT")
        .env_remove("ISSUER_GUARD_FOLLOW_SYMLINKS")
        .env_remove("ISSUER_GUARD_MAX_FILE_SIZE")
        .stdin(match stdin {
            Some(path) => Stdio::from(fs::File::open(path).unwrap()),
            None => Stdio::null(),
        })
        .stdout(fs::File::create(&stdout_path).unwrap())
        .stderr(fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    loop {
        // SAFETY: our own child; status and usage are valid out-pointers.
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            break;
        }
        assert!(reaped == 0, "wait4 failed");
        if started.elapsed() > Duration::from_secs(30) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("check {args:?} still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Run {
        code,
        stdout: fs::read_to_string(stdout_path).unwrap(),
        stderr: fs::read_to_string(stderr_path).unwrap(),
        took: started.elapsed(),
        peak_kib: u64::try_from(usage.ru_maxrss).unwrap(),
    }
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

const DENIED_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: reader, namespace: app}\nspec:\n  containers:\n  - name: c\n    image: x\n    env:\n    - name: T\n      valueFrom: {secretKeyRef: {name: bot-token, key: token}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: bot-token, namespace: app}\ntype: kubernetes.io/service-account-token\n";

const KEY_ROTATION: &str = "generation: {static: {number: 2, issuer: 'https://new.example.com', keyId: kid-b}}\nrotation: {retiringKeyIds: [kid-a]}\n";

/// A repository as an attacker commits it, and a place outside it holding
/// what must never be read.
/// The job's environment appears nowhere in what `check` printed.
fn assert_env_kept(run: &Run, what: &str) {
    for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        assert!(
            !text.contains(ENV_MARKER),
            "{what}: the environment leaked into {stream}:\n{text}"
        );
    }
}

struct Repo {
    outside: tempfile::TempDir,
    tree: tempfile::TempDir,
    config: PathBuf,
}

impl Repo {
    fn new() -> Repo {
        let outside = tempfile::tempdir().unwrap();
        let o = outside.path();
        // Broken YAML, so that a reader that followed the link would quote
        // the marker's line in its error.
        fs::write(o.join("id_rsa"), format!("{FILE_MARKER}: [\n")).unwrap();
        fs::create_dir(o.join("home")).unwrap();
        fs::write(
            o.join("home/creds.yaml"),
            format!("kind: Pod\nmetadata: {{name: {FILE_MARKER}}}\n"),
        )
        .unwrap();
        let tree = tempfile::tempdir().unwrap();
        let t = tree.path();
        fs::create_dir(t.join("deploy")).unwrap();
        fs::write(t.join("deploy/app.yaml"), DENIED_POD).unwrap();
        // Inside the tree: still judged.
        symlink("app.yaml", t.join("deploy/same.yaml")).unwrap();
        symlink("/proc/self/environ", t.join("deploy/env.yaml")).unwrap();
        symlink(o.join("id_rsa"), t.join("deploy/key.yaml")).unwrap();
        symlink(o.join("home"), t.join("deploy/home")).unwrap();
        let config = o.join("config.yaml");
        fs::write(&config, KEY_ROTATION).unwrap();
        Repo {
            outside,
            tree,
            config,
        }
    }

    fn check(&self, args: &[&str]) -> Run {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        check(self.tree.path(), &all, None)
    }

    /// Neither the environment nor a file outside the tree appears in
    /// what `check` printed, nor the path of anything a link leads to.
    fn assert_nothing_leaked(&self, run: &Run, what: &str) {
        assert_env_kept(run, what);
        for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
            assert!(
                !text.contains(FILE_MARKER),
                "{what}: a file outside the tree leaked into {stream}:\n{text}"
            );
            let outside = self.outside.path().to_str().unwrap();
            let resolved_proc = text
                .match_indices("/proc/")
                .any(|(i, m)| text[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()));
            assert!(
                !text.contains(outside) && !resolved_proc,
                "{what}: a symlink's target was printed in {stream}:\n{text}"
            );
        }
    }
}

#[test]
fn symlinks_out_of_the_tree_are_skipped_and_nothing_outside_is_printed() {
    let repo = Repo::new();
    for format in FORMATS {
        let run = repo.check(&["-o", format, "deploy"]);
        repo.assert_nothing_leaked(&run, format);
        // The Pod is denied, in its file and through the link beside it.
        assert_eq!(run.code, Some(1), "{format}: {}{}", run.stdout, run.stderr);
        let report = format!("{}{}", run.stdout, run.stderr);
        for name in ["deploy/env.yaml", "deploy/key.yaml", "deploy/home"] {
            assert!(
                report.contains(&format!(
                    "{name}: skipped: symlink outside the scanned tree"
                )),
                "{format}: {name} not reported as skipped:\n{report}"
            );
        }
        match format {
            "json" => {
                let report: Value = serde_json::from_str(&run.stdout).unwrap();
                assert_eq!(report["unusable"].as_array().unwrap().len(), 3, "{report}");
                let files: Vec<&str> = report["objects"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|o| o["kind"] == "Pod")
                    .map(|o| o["source"]["file"].as_str().unwrap())
                    .collect();
                assert_eq!(files, ["deploy/app.yaml", "deploy/same.yaml"]);
            }
            "sarif" => {
                let log: Value = serde_json::from_str(&run.stdout).unwrap();
                let notes = log["runs"][0]["invocations"][0]["toolExecutionNotifications"]
                    .as_array()
                    .unwrap()
                    .len();
                assert_eq!(notes, 3, "{}", run.stdout);
            }
            _ => assert!(run.stdout.contains("3 unusable input(s)"), "{}", run.stdout),
        }
    }
    // --strict makes a skipped link fail the run, as any unusable input.
    assert_eq!(repo.check(&["--strict", "deploy"]).code, Some(2));
}

#[test]
fn a_named_path_through_a_symlink_out_of_the_working_directory_is_skipped() {
    let repo = Repo::new();
    for format in FORMATS {
        for named in [
            "/proc/self/environ",
            "deploy/key.yaml",
            "deploy/home",
            "deploy/home/creds.yaml",
        ] {
            let run = repo.check(&["-o", format, named]);
            repo.assert_nothing_leaked(&run, &format!("{format} {named}"));
            assert_eq!(run.code, Some(2), "{format} {named}: named input unusable");
            let report = format!("{}{}", run.stdout, run.stderr);
            assert!(
                report.contains(&format!(
                    "{named}: skipped: symlink outside the scanned tree"
                )),
                "{format} {named}:\n{report}"
            );
        }
    }
    // Inside the working directory a named link is followed.
    let run = repo.check(&["-o", "json", "deploy/same.yaml"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
}

#[test]
fn followed_on_request_a_secret_file_is_described_never_quoted() {
    let repo = Repo::new();
    for format in FORMATS {
        let run = repo.check(&["-o", format, "--follow-symlinks", "deploy"]);
        // Files outside are read now, as asked; binary ones still never shown.
        assert_env_kept(&run, &format!("{format} --follow-symlinks"));
        let report = format!("{}{}", run.stdout, run.stderr);
        // The environment block has NUL bytes: refused as not text.
        assert!(
            report.contains("deploy/env.yaml: not text (control byte 0x00"),
            "{format}:\n{report}"
        );
    }
}

#[test]
fn dev_zero_fifos_and_oversized_input_end_at_once_and_the_rest_is_judged() {
    let repo = Repo::new();
    let t = repo.tree.path();
    symlink("/dev/zero", t.join("deploy/zero.yaml")).unwrap();
    mkfifo(&t.join("deploy/pipe.yaml"));
    fs::write(
        t.join("deploy/big.yaml"),
        format!("kind: ConfigMap\ndata: {{x: '{}'}}\n", "y".repeat(4096)),
    )
    .unwrap();
    for format in FORMATS {
        // Met in a walk: reported; the Pod beside them still denied.
        let run = repo.check(&["-o", format, "--max-file-size", "2Ki", "deploy"]);
        assert!(
            run.took < Duration::from_secs(10),
            "{format}: {:?}",
            run.took
        );
        assert_eq!(run.code, Some(1), "{format}: {}{}", run.stdout, run.stderr);
        let report = format!("{}{}", run.stdout, run.stderr);
        for note in [
            "deploy/zero.yaml: skipped: symlink outside the scanned tree",
            "deploy/pipe.yaml: skipped: a FIFO, not a regular file",
            "deploy/big.yaml: over the 2 KiB limit for one file (--max-file-size raises it)",
        ] {
            assert!(report.contains(note), "{format}: no {note:?} in\n{report}");
        }
        repo.assert_nothing_leaked(&run, format);
        // Named: each fails the run with exit 2, the named Pod still judged.
        for named in ["/dev/zero", "deploy/pipe.yaml", "deploy/big.yaml"] {
            let run = repo.check(&[
                "-o",
                format,
                "--max-file-size",
                "2Ki",
                named,
                "deploy/app.yaml",
            ]);
            assert!(
                run.took < Duration::from_secs(10),
                "{named}: {:?}",
                run.took
            );
            assert_eq!(run.code, Some(2), "{format} {named}: {}", run.stderr);
            let judged = match format {
                "json" => run.stdout.contains("\"name\": \"reader\""),
                "sarif" => run.stdout.contains("app/reader"),
                _ => run.stdout.contains("Pod/app/reader"),
            };
            assert!(
                judged,
                "{format} {named}: the Pod was not judged:\n{}",
                run.stdout
            );
        }
    }
    // Followed on request, /dev/zero is still a device: never read.
    let run = repo.check(&["--follow-symlinks", "deploy/zero.yaml"]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stdout
            .contains("deploy/zero.yaml: skipped: a character device, not a regular file"),
        "{}",
        run.stdout
    );
}

#[test]
fn standard_input_has_the_same_limit() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    fs::write(
        &big,
        format!("kind: Pod\nmetadata: {{name: '{}'}}\n", "x".repeat(8192)),
    )
    .unwrap();
    let run = check(dir.path(), &["--max-file-size", "4Ki", "-"], Some(&big));
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("<stdin>: over the 4 KiB limit for one file (--max-file-size raises it)"),
        "{}",
        run.stdout
    );
    let run = check(dir.path(), &["--max-file-size", "16Ki", "-"], Some(&big));
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    // An environment block on stdin is described, not quoted.
    let run = check(dir.path(), &["-"], Some(Path::new("/proc/self/environ")));
    assert_eq!(run.code, Some(2));
    assert_env_kept(&run, "stdin");
    assert!(run.stdout.contains("<stdin>: not text"), "{}", run.stdout);
}

/// The measure: 200,000 small Pods in one 18 MB file.
#[test]
fn memory_follows_the_largest_document_not_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pods.yaml");
    let mut text = String::with_capacity(20 << 20);
    for i in 0..200_000 {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}}}\nspec: {{containers: [{{name: c, image: x}}]}}\n"
        ));
    }
    // The legacy token Secret comes last: judging the first Pod needs it.
    text.push_str("---\napiVersion: v1\nkind: Secret\nmetadata: {name: bot-token}\ntype: kubernetes.io/service-account-token\n");
    text.push_str("---\napiVersion: v1\nkind: Pod\nmetadata: {name: reader}\nspec: {containers: [{name: c, image: x, env: [{name: T, valueFrom: {secretKeyRef: {name: bot-token, key: token}}}]}]}\n");
    assert!(text.len() > 18_000_000, "{}", text.len());
    fs::write(&path, &text).unwrap();
    drop(text);
    let config = dir.path().join("config.yaml");
    fs::write(&config, KEY_ROTATION).unwrap();
    for format in FORMATS {
        let run = check(
            dir.path(),
            &[
                "--config",
                config.to_str().unwrap(),
                "-o",
                format,
                "pods.yaml",
            ],
            None,
        );
        assert_eq!(run.code, Some(1), "{format}: {}", run.stderr);
        assert!(
            run.peak_kib < 100 * 1024,
            "{format}: peak {} MiB, over the 100 MiB goal",
            run.peak_kib / 1024
        );
        eprintln!(
            "{format}: 200,001 Pods in {:?}, peak {} MiB",
            run.took,
            run.peak_kib / 1024
        );
        if format == "json" {
            // Read as text: parsing 60 MB of report would measure the test.
            assert_eq!(run.stdout.matches("\"kind\": \"Pod\"").count(), 200_001);
            let last = &run.stdout[run.stdout.rfind("\"name\": \"reader\"").unwrap()..];
            assert!(last.contains("\"rule\": \"legacy-token-env\""), "{last}");
        }
    }
}
