//! How the Secret watch waits between failed tries. kube's default grows
//! from 0.8 s to 30 s and resets only after 120 s without errors, so on a
//! quiet cluster consecutive API server restarts (a control-plane roll,
//! exactly when a rotation happens) leave the cache stale for half a minute.
//! Here the wait is short and capped, and every success resets it.

use std::time::Duration;

use kube::runtime::utils::Backoff;

/// The first wait after a failure.
pub(super) const FIRST: Duration = Duration::from_millis(200);
/// The longest wait: an API server back from a restart is found within it.
pub(super) const MAX: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub(crate) struct CappedBackoff {
    next: Duration,
}

impl Default for CappedBackoff {
    fn default() -> Self {
        Self { next: FIRST }
    }
}

impl Iterator for CappedBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let wait = self.next;
        self.next = (self.next * 2).min(MAX);
        Some(wait)
    }
}

impl Backoff for CappedBackoff {
    fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        // The README's promise, not this module's constant: the watch
        // retries every failure "after at most 2 s".
        let readme_cap = Duration::from_secs(2);
        assert!(include_str!("../../README.md").contains("after at most 2 s"));
        let mut b = CappedBackoff::default();
        let waits: Vec<Duration> = b.by_ref().take(20).collect();
        assert_eq!(waits[0], FIRST);
        assert_eq!(waits[1], FIRST * 2);
        assert!(waits.iter().all(|w| *w <= readme_cap), "{waits:?}");
        assert_eq!(waits[19], readme_cap, "{waits:?}");
        b.reset();
        assert_eq!(b.next(), Some(FIRST));
    }
}
