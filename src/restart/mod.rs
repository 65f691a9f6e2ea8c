//! `issuer-guard restart`: recreates the pods that block a rotation, the
//! way the seed runbook does by hand, one owner at a time. What it restarts
//! is what `status` lists as blocking (`status::collect`, the same
//! judgement); how, per owner kind, is `plan.rs`; doing it is `act.rs`.
//! Without a terminal (or with `--dry-run`) it only prints the plan, unless
//! `--yes` is given. A run stopped half-way can be run again: an owner whose
//! pods were all made after the switch completed blocks nothing any more,
//! so it is not chosen twice.

mod act;
mod plan;

use std::{
    collections::HashSet,
    io::Write,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::{
    cluster::{Workloads, workload_path},
    status::{self, StatusError},
};
use act::{Act, Outcome};
pub use plan::Strategy;
use plan::{Filters, Method, Step};

pub const EXIT_DONE: u8 = 0;
pub const EXIT_NOT_DONE: u8 = 1;
pub const EXIT_UNUSABLE: u8 = 2;

#[derive(Debug, Clone)]
pub struct Options {
    /// The cluster, the scope (`namespace`, `selector`), the ledger and the
    /// configuration, as `status` takes them.
    pub status: status::Options,
    pub owner: Option<(String, String)>,
    pub generation: Option<u64>,
    pub strategy: Strategy,
    pub max_in_flight: usize,
    pub timeout: Duration,
    pub keep_going: bool,
    /// Print the plan only.
    pub dry_run: bool,
    pub save_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error("--owner must be KIND/NAME (e.g. deployment/web), got {0:?}")]
    Owner(String),
    #[error("cannot write the report: {0}")]
    Write(#[from] std::io::Error),
}

/// Parses `--owner KIND/NAME`.
pub fn parse_owner(text: &str) -> Result<(String, String), RestartError> {
    crate::cluster::split_pair(text).ok_or_else(|| RestartError::Owner(text.to_owned()))
}

/// Runs `restart` and returns its exit code.
pub async fn run(options: &Options) -> Result<u8, RestartError> {
    let json_out = options.status.output == status::Format::Json;
    let collected = status::collect(&options.status, !json_out).await?;
    let assessment = collected.evidence().assess();
    let api = Workloads::new(
        crate::cluster::connect_as_kubectl_once(
            options.status.kubeconfig.as_deref(),
            options.status.context.as_deref(),
        )
        .await
        .map_err(StatusError::from)?,
    );
    let on_delete = on_delete_stateful_sets(&api, &assessment).await;
    let filters = Filters {
        owner: options.owner.clone(),
        generation: options.generation,
    };
    let steps = plan::plan(
        &assessment,
        &collected.judged,
        &filters,
        options.strategy,
        &on_delete,
    );
    let mut out = std::io::stdout().lock();
    if options.dry_run {
        if json_out {
            write_json(&mut out, "RestartPlan", true, &steps, &[])?;
        } else {
            write_plan(&mut out, &steps, true)?;
        }
        return Ok(EXIT_DONE);
    }
    if !json_out {
        write_plan(&mut out, &steps, false)?;
    }
    drop(out);

    // Ctrl-C lets the owners under way finish, then stops.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "issuer-guard restart: stopping after the owners under way; run it again to go on"
            );
            flag.store(true, Ordering::Release);
        }
    });
    let act = Act {
        api: &api,
        timeout: options.timeout,
        save_dir: &options.save_dir,
        at: collected.now,
    };
    let failed = AtomicBool::new(false);
    let total = steps.len();
    let outcomes: Vec<(usize, Outcome)> = futures::stream::iter(steps.iter().enumerate())
        .map(|(i, step)| {
            let (act, stop, failed, api) = (&act, &stop, &failed, &api);
            async move {
                if stop.load(Ordering::Acquire)
                    || (!options.keep_going && failed.load(Ordering::Acquire))
                {
                    return (i, Outcome::Skipped("not started: the run stopped".into()));
                }
                let progress = |what: &str| {
                    if !json_out {
                        eprintln!(
                            "[{}/{total}] {} {}/{}: {what}",
                            i + 1,
                            step.kind,
                            step.namespace,
                            step.name
                        );
                    }
                };
                progress(describe(&step.method));
                let outcome = act.step(step).await;
                if matches!(outcome, Outcome::Failed(_)) {
                    failed.store(true, Ordering::Release);
                }
                record(api, step, &outcome).await;
                progress(&outcome_text(&outcome));
                (i, outcome)
            }
        })
        .buffer_unordered(options.max_in_flight.max(1))
        .collect()
        .await;
    let mut outcomes = outcomes;
    outcomes.sort_by_key(|(i, _)| *i);
    let outcomes: Vec<Outcome> = outcomes.into_iter().map(|(_, o)| o).collect();
    let mut out = std::io::stdout().lock();
    if json_out {
        write_json(&mut out, "RestartResult", false, &steps, &outcomes)?;
    } else {
        write_summary(&mut out, &steps, &outcomes)?;
    }
    let any_failed = outcomes.iter().any(|o| matches!(o, Outcome::Failed(_)));
    Ok(if any_failed { EXIT_NOT_DONE } else { EXIT_DONE })
}

/// The StatefulSets among the blockers whose `updateStrategy` is
/// `OnDelete`: a template change does not roll them.
async fn on_delete_stateful_sets(
    api: &Workloads,
    assessment: &crate::retirement::Assessment,
) -> HashSet<(String, String)> {
    let mut found = HashSet::new();
    for v in &assessment.verdicts {
        let crate::retirement::Verdict::BlockedBy { blockers } = &v.verdict else {
            continue;
        };
        for b in blockers.iter().filter(|b| b.kind == "StatefulSet") {
            let Some(path) = workload_path(&b.kind, &b.namespace, &b.name) else {
                continue;
            };
            if let Ok(set) = api.get(&path).await
                && set["spec"]["updateStrategy"]["type"] == "OnDelete"
            {
                found.insert((b.namespace.clone(), b.name.clone()));
            }
        }
    }
    found
}

/// An Event on the owner (or the pod) saying what was done.
async fn record(api: &Workloads, step: &Step, outcome: &Outcome) {
    let (reason, message) = match outcome {
        Outcome::Restarted(m) => ("IssuerGuardRestarted", m),
        Outcome::Skipped(m) => ("IssuerGuardRestartSkipped", m),
        Outcome::Failed(m) => ("IssuerGuardRestartFailed", m),
    };
    let Some(path) = workload_path(&step.kind, &step.namespace, &step.name) else {
        return;
    };
    let Ok(object) = api.get(&path).await else {
        return;
    };
    let uid = object["metadata"]["uid"].as_str().unwrap_or_default();
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let message = format!(
        "issuer-guard restart ({}): {message}",
        describe(&step.method)
    );
    if let Err(error) = api
        .event(
            (&step.kind, &step.namespace, &step.name, uid),
            api_version,
            reason,
            &message,
        )
        .await
    {
        tracing::warn!(%error, "cannot record the Event");
    }
}

fn describe(method: &Method) -> &'static str {
    match method {
        Method::RolloutRestart => "rollout restart",
        Method::RollingReplace => "rolling replace",
        Method::ScaleToZero => "scale to 0 and back",
        Method::Recreate => "evict and create again",
        Method::Evict => "evict its pods",
        Method::Skip(_) => "left alone",
    }
}

fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Restarted(m) => format!("done: {m}"),
        Outcome::Skipped(m) => format!("skipped: {m}"),
        Outcome::Failed(m) => format!("FAILED: {m}"),
    }
}

fn write_plan(out: &mut impl Write, steps: &[Step], dry_run: bool) -> std::io::Result<()> {
    if steps.is_empty() {
        return writeln!(out, "Nothing blocks a retirement: nothing to restart.");
    }
    let head = if dry_run {
        "Plan (dry run: nothing is changed; --yes to carry it out):"
    } else {
        "Plan:"
    };
    writeln!(out, "{head}")?;
    for s in steps {
        writeln!(
            out,
            "  {} {}/{} ({} pods; {}): {}; disruption: {}",
            s.kind,
            s.namespace,
            s.name,
            s.pods.len(),
            s.rules.join(", "),
            match &s.method {
                Method::Skip(why) => format!("left alone: {why}"),
                m => describe(m).to_owned(),
            },
            s.disruption
        )?;
    }
    Ok(())
}

fn write_summary(
    out: &mut impl Write,
    steps: &[Step],
    outcomes: &[Outcome],
) -> std::io::Result<()> {
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let pods = |f: fn(&Outcome) -> bool| -> usize {
        steps
            .iter()
            .zip(outcomes)
            .filter(|(_, o)| f(o))
            .map(|(s, _)| s.pods.len())
            .sum()
    };
    let restarted = |o: &Outcome| matches!(o, Outcome::Restarted(_));
    let skipped = |o: &Outcome| matches!(o, Outcome::Skipped(_));
    let failed = |o: &Outcome| matches!(o, Outcome::Failed(_));
    writeln!(
        out,
        "Restarted {} owners ({} pods), skipped {} ({} pods), failed {} ({} pods).",
        count(restarted),
        pods(restarted),
        count(skipped),
        pods(skipped),
        count(failed),
        pods(failed)
    )?;
    for (s, o) in steps.iter().zip(outcomes) {
        if !restarted(o) {
            writeln!(
                out,
                "  {} {}/{}: {}",
                s.kind,
                s.namespace,
                s.name,
                outcome_text(o)
            )?;
        }
    }
    Ok(())
}

fn write_json(
    out: &mut impl Write,
    kind: &str,
    dry_run: bool,
    steps: &[Step],
    outcomes: &[Outcome],
) -> std::io::Result<()> {
    let steps: Vec<Value> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut v = json!(s);
            if let Some(o) = outcomes.get(i) {
                let (outcome, message) = match o {
                    Outcome::Restarted(m) => ("restarted", m),
                    Outcome::Skipped(m) => ("skipped", m),
                    Outcome::Failed(m) => ("failed", m),
                };
                v["outcome"] = json!(outcome);
                v["message"] = json!(message);
            }
            v
        })
        .collect();
    let value = json!({
        "apiVersion": "issuer-guard.io/v1",
        "kind": kind,
        "dryRun": dry_run,
        "steps": steps,
    });
    serde_json::to_writer_pretty(&mut *out, &value)?;
    writeln!(out)
}
