//! `--tls-secret` and its companions, checked at start-up: every refusal
//! says what to change.

use std::time::Duration;

use super::{SelfTlsError, plan::Timing};
use crate::server::SelfTlsArgs;

/// `--tls-secret` and its companions, checked.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub namespace: String,
    pub secret: String,
    pub configurations: String,
    /// DNS names and IP addresses, IPs in their canonical form; the first
    /// is the one caBundles are checked against.
    pub names: Vec<String>,
    pub timing: Timing,
}

impl Settings {
    /// Checks the flags as given. `files` says whether --tls-cert or
    /// --tls-key was given, `cluster` whether an API server is configured.
    pub(crate) fn new(
        args: &SelfTlsArgs,
        files: bool,
        cluster: bool,
    ) -> Result<Option<Settings>, SelfTlsError> {
        let Some(secret) = &args.secret else {
            if args.webhook_configurations.is_some() {
                return Err(SelfTlsError::WithoutSecret("--webhook-configurations"));
            }
            if !args.names.is_empty() {
                return Err(SelfTlsError::WithoutSecret("--tls-names"));
            }
            return Ok(None);
        };
        if files {
            return Err(SelfTlsError::WithFiles);
        }
        if !cluster {
            return Err(SelfTlsError::WithoutCluster);
        }
        let (namespace, name) = match secret.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                (ns.to_owned(), name.to_owned())
            }
            _ => return Err(SelfTlsError::SecretName(secret.clone())),
        };
        let configurations = args
            .webhook_configurations
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or(SelfTlsError::NoConfigurations)?;
        let mut names: Vec<String> = Vec::new();
        for n in args
            .names
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
        {
            let canonical = n
                .parse::<std::net::IpAddr>()
                .map_or_else(|_| n.to_ascii_lowercase(), |ip| ip.to_string());
            if !names.contains(&canonical) {
                names.push(canonical);
            }
        }
        if names.is_empty() {
            return Err(SelfTlsError::NoNames);
        }
        let seconds = |d: Duration| {
            i64::try_from(d.as_secs() + u64::from(d.subsec_nanos() > 0)).unwrap_or(i64::MAX)
        };
        let timing = Timing {
            ca_lifetime: seconds(args.ca_lifetime),
            ca_renew_before: seconds(args.ca_renew_before),
            cert_lifetime: seconds(args.cert_lifetime),
            cert_renew_before: seconds(args.cert_renew_before),
            overlap: seconds(args.ca_overlap),
        };
        if timing.cert_renew_before >= timing.cert_lifetime {
            return Err(SelfTlsError::Timing(format!(
                "--cert-renew-before ({:?}) must be shorter than --cert-lifetime ({:?}), or every certificate is renewed as soon as it is issued",
                args.cert_renew_before, args.cert_lifetime
            )));
        }
        if timing.ca_renew_before >= timing.ca_lifetime {
            return Err(SelfTlsError::Timing(format!(
                "--ca-renew-before ({:?}) must be shorter than --ca-lifetime ({:?}), or every CA is rotated as soon as it is made",
                args.ca_renew_before, args.ca_lifetime
            )));
        }
        if timing.ca_renew_before < timing.overlap.saturating_mul(2) {
            return Err(SelfTlsError::Timing(format!(
                "--ca-renew-before ({:?}) must be at least twice --ca-overlap ({:?}): a rotation takes two overlaps, and the old CA must still be valid until it ends",
                args.ca_renew_before, args.ca_overlap
            )));
        }
        Ok(Some(Settings {
            namespace,
            secret: name,
            configurations,
            names,
            timing,
        }))
    }

    /// How often the loop looks without being woken by the watch: a
    /// quarter of the overlap, so a step is taken soon after it is due and
    /// a caBundle someone replaced is set again soon, between 200 ms and
    /// 30 s (two GETs per replica each time).
    pub(crate) fn interval(&self) -> Duration {
        let quarter = Duration::from_millis(u64::try_from(self.timing.overlap).unwrap_or(0) * 250);
        quarter.clamp(Duration::from_millis(200), Duration::from_secs(30))
    }

    /// The Secret as NAMESPACE/NAME, for messages.
    pub(crate) fn secret_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.secret)
    }
}

#[cfg(test)]
mod tests;
