//! One probe round over the API servers, and what it tells the operator.

use std::time::Duration;

use kube::Client;

use super::{DiscoveryError, Settings, probe};
use crate::{
    cluster::{ApiServers, Targets},
    metrics::{Metrics, NumberLabels},
    state::ledger::{Coverage, Event, Ledger, Round},
};

/// One server's probe, with the client that made it.
type Probe = (Client, Result<probe::Probed, DiscoveryError>);

/// A round, and the clients of the servers that answered it (for the
/// canaries' reviews).
pub(super) struct Probed {
    pub round: Round,
    pub answered: Vec<Client>,
}

/// Probes every API server at once. A server that fails leaves the round
/// short (it records what the others showed, and completes no switch on
/// its own); a round with no answer at all is the first server's error.
pub(super) async fn probe_all(
    client: &Client,
    servers: &ApiServers,
    settings: &Settings,
    timeout: Duration,
) -> Result<Probed, DiscoveryError> {
    let targets = servers
        .targets(client)
        .await
        .map_err(|e| DiscoveryError::Request {
            stage: super::Stage::OpenIdConfiguration,
            message: e.to_string(),
        })?;
    let probe = |c: Client| async move {
        let probed = probe::probe(&c, &settings.account, &settings.audience, timeout).await;
        (c, probed)
    };
    let (results, listed): (Vec<(String, Probe)>, bool) = match targets {
        Targets::Each(list) => {
            let runs = list.into_iter().map(|(url, c)| {
                let run = probe(c);
                async move { (url, run.await) }
            });
            (futures::future::join_all(runs).await, true)
        }
        Targets::One(c) => (vec![(String::new(), probe(c).await)], false),
    };
    let mut seen = Vec::with_capacity(results.len());
    let mut answered = Vec::with_capacity(results.len());
    let mut first_error = None;
    let mut failed = 0;
    for (url, (client, result)) in results {
        match result {
            Ok(p) => {
                seen.push(p);
                answered.push(client);
            }
            Err(e) => {
                failed += 1;
                if !url.is_empty() {
                    tracing::debug!(server = %url, error = %e, "an API server did not answer the probe");
                }
                first_error.get_or_insert(e);
            }
        }
    }
    let Some(at) = seen.iter().map(|p| p.at).max() else {
        return Err(first_error.unwrap_or(DiscoveryError::Request {
            stage: super::Stage::OpenIdConfiguration,
            message: "no API server to probe".to_owned(),
        }));
    };
    let round = Round {
        at,
        servers: seen.into_iter().map(|p| p.seen).collect(),
        canaries: Vec::new(),
        coverage: match (listed, failed) {
            (false, _) => Coverage::OneAddress,
            (true, 0) => Coverage::Every,
            (true, _) => Coverage::Partial,
        },
    };
    Ok(Probed { round, answered })
}

/// Says what a round changed: switches, rollbacks and retirements at INFO
/// or WARN, with the numbers an operator looks for.
pub(super) fn tell(events: &[Event], metrics: &Metrics) {
    for event in events {
        match event {
            Event::SwitchStarted {
                number,
                issuer,
                key_id,
            } => {
                tracing::info!(generation = number, %issuer, %key_id, "a switch started: an API server signs with a new pair; stamps move when every server does")
            }
            Event::SwitchCompleted {
                number,
                issuer,
                key_id,
            } => {
                tracing::info!(generation = number, %issuer, %key_id, "a switch completed: every API server signs with this pair; new pods are stamped with it")
            }
            Event::SignsAgain { number, was } => tracing::warn!(
                generation = number,
                was,
                "a pair signs again after the switch away from it completed (a rollback): it gets a new number"
            ),
            Event::Retired { kind, name, source } => {
                tracing::info!(kind = kind.as_str(), %name, source = source.as_str(), "retired")
            }
            Event::DeclaredButAccepted { issuer } => {
                metrics.timeline.declared_contradicted.inc();
                tracing::warn!(%issuer, "rotation.retiredIssuers declares an issuer retired that the API servers still accept; tokens of that issuer still authenticate");
            }
            Event::OrderUnknown { pairs } => tracing::warn!(
                pairs,
                "a new ledger sees several signing pairs at once and nothing declares which is newer (rotation.nextIssuer, rotation.retiringKeyIds): none is numbered until one pair is on every server"
            ),
        }
    }
}

/// `issuer_guard_apiservers{generation}`: how many servers signed with each
/// generation in this round.
pub(super) fn count_servers(round: &Round, ledger: &Ledger, metrics: &Metrics) {
    let family = &metrics.timeline.apiservers;
    family.clear();
    let in_force = ledger.in_force().map(|g| g.number);
    let progress = ledger.in_progress().map(|g| g.number);
    for server in &round.servers {
        let number = ledger
            .generations
            .iter()
            .filter(|g| g.issuer == server.issuer && g.key_id == server.key_id)
            .filter(|g| Some(g.number) == in_force || Some(g.number) == progress)
            .map(|g| g.number.to_string())
            .next()
            .unwrap_or_else(|| "unknown".to_owned());
        family
            .get_or_create(&NumberLabels { generation: number })
            .inc();
    }
    metrics
        .timeline
        .order_unknown
        .set(i64::from(ledger.unordered.len() > 1));
}
