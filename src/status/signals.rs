//! What the API server itself counts about tokens, where the caller may
//! read its `/metrics`: `serviceaccount_stale_tokens_total` counts requests
//! made with an injected token past its `warnafter` claim. The expiration
//! extension keeps such a token valid for a year, so the application that
//! sends it read its token once and never again: it looks refreshed from
//! its pod's spec, and breaks at the retirement all the same. Which
//! application it is, only the audit log says (the
//! `authentication.k8s.io/stale-token` annotation).

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Signals {
    /// Requests with a stale injected token since this API server started.
    pub stale_tokens_total: Option<f64>,
    /// Requests with a legacy Secret token since it started.
    pub legacy_tokens_total: Option<f64>,
    /// Why they could not be read, when they could not.
    pub unreadable: Option<String>,
}

impl Signals {
    pub(super) fn unreadable(why: String) -> Self {
        Signals {
            stale_tokens_total: None,
            legacy_tokens_total: None,
            unreadable: Some(why),
        }
    }

    /// Reads the two counters from the text exposition format.
    pub(super) fn parse(text: &str) -> Self {
        let sum = |name: &str| {
            let mut found = None::<f64>;
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                let Some((key, value)) = line.rsplit_once(' ') else {
                    continue;
                };
                let metric = key.split('{').next().unwrap_or(key);
                if metric == name
                    && let Ok(v) = value.parse::<f64>()
                {
                    found = Some(found.unwrap_or(0.0) + v);
                }
            }
            found
        };
        Signals {
            stale_tokens_total: sum("serviceaccount_stale_tokens_total"),
            legacy_tokens_total: sum("serviceaccount_legacy_tokens_total"),
            unreadable: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_and_missing_ones_are_none() {
        let text = "# HELP serviceaccount_stale_tokens_total [ALPHA] Cumulative stale projected service account tokens used\n\
            # TYPE serviceaccount_stale_tokens_total counter\n\
            serviceaccount_stale_tokens_total 3\n\
            serviceaccount_valid_tokens_total 323\n";
        let s = Signals::parse(text);
        assert_eq!(s.stale_tokens_total, Some(3.0));
        assert_eq!(s.legacy_tokens_total, None);
        assert_eq!(s.unreadable, None);
    }
}
