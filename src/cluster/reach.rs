//! Whether the API server answers, as all of issuer-guard sees it. The
//! Secret watch, the ledger watch and the discovery probe each meet an
//! outage on their own and retry every few hundred milliseconds; the log
//! says once that the API server is unreachable and once that it is back,
//! whichever of them notices first.

use std::sync::atomic::{AtomicBool, Ordering};

use kube::runtime::watcher;

#[derive(Debug, Default)]
pub(crate) struct Reachability {
    down: AtomicBool,
}

/// Who met the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    SecretWatch,
    LedgerWatch,
    Discovery,
    TlsSecret,
}

impl Caller {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Caller::SecretWatch => "Secret watch",
            Caller::LedgerWatch => "ledger watch",
            Caller::Discovery => "discovery",
            Caller::TlsSecret => "TLS Secret",
        }
    }
}

impl Reachability {
    /// A request that got no answer. Returns whether this started the
    /// outage (and was logged).
    pub(crate) fn no_answer(&self, caller: Caller, error: &dyn std::fmt::Display) -> bool {
        let first = !self.down.swap(true, Ordering::AcqRel);
        if first {
            tracing::warn!(
                caller = caller.as_str(),
                %error,
                "API server unreachable; reviews are judged with the last known generation and legacy token Secrets until it is back"
            );
        } else {
            tracing::debug!(caller = caller.as_str(), %error, "API server still unreachable");
        }
        first
    }

    /// A request that got an answer, whatever it said.
    pub(crate) fn answered(&self, caller: Caller) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!(caller = caller.as_str(), "API server reachable again");
        }
    }

    #[cfg(test)]
    fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }
}

/// The API server did not answer at all (no connection, a broken stream),
/// as opposed to answering with a refusal: a 403 is not an outage.
pub(crate) fn no_answer(error: &kube::Error) -> bool {
    matches!(
        error,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_)
    )
}

/// [`no_answer`] for a watch's error.
pub(crate) fn watch_no_answer(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => no_answer(e),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_down_one_line_back() {
        let reach = Reachability::default();
        assert!(reach.no_answer(Caller::SecretWatch, &"refused"));
        assert!(!reach.no_answer(Caller::Discovery, &"refused"));
        assert!(!reach.no_answer(Caller::LedgerWatch, &"refused"));
        assert!(reach.is_down());
        reach.answered(Caller::Discovery);
        assert!(!reach.is_down());
        assert!(reach.no_answer(Caller::LedgerWatch, &"refused"));
    }

    #[test]
    fn a_refusal_is_an_answer() {
        let forbidden = kube::Error::Api(Box::new(kube::core::Status::failure(
            "forbidden",
            "Forbidden",
        )));
        assert!(!no_answer(&forbidden));
        assert!(!watch_no_answer(&watcher::Error::InitialListFailed(
            forbidden
        )));
        assert!(!watch_no_answer(&watcher::Error::NoResourceVersion));
    }
}
