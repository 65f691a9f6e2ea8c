//! Watches files by polling their contents.
//!
//! Mounted Secrets and ConfigMaps are updated by kubelet swapping a `..data`
//! symlink, which inotify on the file path does not report reliably, and
//! mtimes of the target files need not change. Reading the files through
//! their paths (following symlinks) and comparing bytes sees every change.

use std::{fmt::Display, io, path::PathBuf, time::Duration};

use prometheus_client::metrics::{counter::Counter, family::Family};
use tokio::{task::JoinHandle, time::MissedTickBehavior};

use crate::metrics::ResultLabels;

/// A file of the set could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct ReadError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// Reads every file of the set, in order.
pub(crate) fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, ReadError> {
    paths
        .iter()
        .map(|p| {
            std::fs::read(p).map_err(|source| ReadError {
                path: p.clone(),
                source,
            })
        })
        .collect()
}

/// What one poll found.
#[derive(Debug)]
enum Poll {
    Unchanged,
    Changed(Vec<Vec<u8>>),
    Unreadable(ReadError),
}

/// The state of one watched set of files, separate from the timer so that
/// the decisions can be tested without waiting.
#[derive(Debug)]
struct Watch {
    paths: Vec<PathBuf>,
    /// The contents last handed to the callback, good or bad: a bad pair is
    /// reported once, not on every poll.
    seen: Vec<Vec<u8>>,
    /// The read error last reported, so that a missing file is not reported
    /// on every poll either.
    failing: Option<String>,
}

impl Watch {
    fn poll(&mut self) -> Poll {
        let read = read_all(&self.paths).and_then(|first| {
            // A writer may be between two files of the set (kubelet swaps a
            // directory, an operator copies cert then key); a set read twice
            // with the same result was not torn by such a writer.
            let second = read_all(&self.paths)?;
            Ok((first == second).then_some(first))
        });
        match read {
            Ok(None) => Poll::Unchanged,
            Ok(Some(contents)) => {
                if let Some(error) = self.failing.take() {
                    tracing::info!(files = %self.describe(), %error, "watched files are readable again");
                }
                if contents == self.seen {
                    Poll::Unchanged
                } else {
                    self.seen.clone_from(&contents);
                    Poll::Changed(contents)
                }
            }
            Err(e) => {
                let message = e.to_string();
                if self.failing.as_deref() == Some(message.as_str()) {
                    Poll::Unchanged
                } else {
                    self.failing = Some(message);
                    Poll::Unreadable(e)
                }
            }
        }
    }

    fn describe(&self) -> String {
        self.paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Polls `paths` every `interval` and calls `on_change` with their new
/// contents whenever they differ from `initial` and from every later
/// report, or with the error when they stop being readable.
pub(crate) fn spawn<F>(
    paths: Vec<PathBuf>,
    initial: Vec<Vec<u8>>,
    interval: Duration,
    mut on_change: F,
) -> JoinHandle<()>
where
    F: FnMut(Result<Vec<Vec<u8>>, ReadError>) + Send + 'static,
{
    let mut watch = Watch {
        paths,
        seen: initial,
        failing: None,
    };
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick fires at once; the caller has just read the files.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            // File reads block; keep them off the async workers.
            let polled = tokio::task::spawn_blocking(move || {
                let poll = watch.poll();
                (watch, poll)
            })
            .await;
            let Ok((returned, poll)) = polled else {
                tracing::error!("file watcher task failed; reloads stop");
                return;
            };
            watch = returned;
            match poll {
                Poll::Unchanged => {}
                Poll::Changed(contents) => on_change(Ok(contents)),
                Poll::Unreadable(e) => on_change(Err(e)),
            }
        }
    })
}

/// A set of files whose contents are in force, and how a change to them is
/// taken in. The serving pair, the client CA bundle and the configuration
/// share it, so that each gets the same guarantee: a new value is built and
/// checked before anything is swapped, a value that fails is logged and
/// counted while the previous one stays in force, and every result is
/// counted under `results`.
pub(crate) struct Swap {
    /// Named in the log line when a change is refused ("serving certificate").
    pub what: String,
    pub paths: Vec<PathBuf>,
    /// The contents in force, so that only a change is taken in.
    pub seen: Vec<Vec<u8>>,
    pub interval: Duration,
    pub results: Family<ResultLabels, Counter>,
}

impl Swap {
    /// Polls the files and, on each change, builds the next value with
    /// `build` and hands it to `apply`, which swaps it in and says so.
    pub(crate) fn spawn<T, E, B, A>(self, mut build: B, mut apply: A) -> JoinHandle<()>
    where
        E: From<ReadError> + Display,
        B: FnMut(&[Vec<u8>]) -> Result<T, E> + Send + 'static,
        A: FnMut(T) + Send + 'static,
    {
        let Swap {
            what,
            paths,
            seen,
            interval,
            results,
        } = self;
        spawn(paths, seen, interval, move |read| {
            let result = match read.map_err(E::from).and_then(|c| build(&c)) {
                Ok(next) => {
                    apply(next);
                    "success"
                }
                Err(error) => {
                    tracing::error!(%error, "{what} not reloaded; the previous one stays in use");
                    "error"
                }
            };
            results.get_or_create(&ResultLabels { result }).inc();
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(paths: Vec<PathBuf>) -> Watch {
        let seen = read_all(&paths).expect("readable");
        Watch {
            paths,
            seen,
            failing: None,
        }
    }

    #[test]
    fn reports_changes_once_and_errors_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a");
        std::fs::write(&a, "one").expect("write");
        let mut w = watch(vec![a.clone()]);
        assert!(matches!(w.poll(), Poll::Unchanged));

        std::fs::write(&a, "two").expect("write");
        assert!(matches!(w.poll(), Poll::Changed(c) if c == vec![b"two".to_vec()]));
        assert!(matches!(w.poll(), Poll::Unchanged));

        std::fs::remove_file(&a).expect("remove");
        assert!(matches!(w.poll(), Poll::Unreadable(_)));
        assert!(matches!(w.poll(), Poll::Unchanged), "error reported once");

        // Restored as it was: nothing to apply.
        std::fs::write(&a, "two").expect("write");
        assert!(matches!(w.poll(), Poll::Unchanged));
        std::fs::write(&a, "three").expect("write");
        assert!(matches!(w.poll(), Poll::Changed(_)));
    }

    #[cfg(unix)]
    #[test]
    fn follows_a_swapped_directory_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, content) in [("..v1", "old"), ("..v2", "new")] {
            std::fs::create_dir(dir.path().join(name)).expect("mkdir");
            std::fs::write(dir.path().join(name).join("f"), content).expect("write");
        }
        std::os::unix::fs::symlink("..v1", dir.path().join("..data")).expect("symlink");
        std::os::unix::fs::symlink("..data/f", dir.path().join("f")).expect("symlink");
        let mut w = watch(vec![dir.path().join("f")]);

        std::os::unix::fs::symlink("..v2", dir.path().join("..tmp")).expect("symlink");
        std::fs::rename(dir.path().join("..tmp"), dir.path().join("..data")).expect("rename");
        assert!(matches!(w.poll(), Poll::Changed(c) if c == vec![b"new".to_vec()]));
    }
}
