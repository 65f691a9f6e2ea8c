//! The memory budget for request bodies. One review can be 7 MiB, and the
//! API server may send many at once during a rollout; without a bound, a
//! burst of large reviews would take the webhook past its memory limit and
//! get it OOM-killed, which with `failurePolicy: Fail` blocks admission.
//! A request reserves its declared length from the budget before its body
//! is read and waits, within its deadline, while the budget is spent.
//! After a burst of large bodies the allocator is asked to give the freed
//! memory back, so the resident size falls again instead of staying at its
//! peak.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::Response,
};
use prometheus_client::metrics::counter::Counter;
use tokio::{sync::Semaphore, task::JoinHandle};

/// A body larger than this marks the heap worth trimming afterwards.
const LARGE_BODY: usize = 1 << 20;
/// How often an idle process checks whether to trim.
const TRIM_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub(super) struct Budget {
    bytes: Arc<Semaphore>,
    total: usize,
    max_body: usize,
    large_seen: Arc<AtomicBool>,
    waits: Counter,
}

impl Budget {
    /// `total` must be at least `max_body`, or a largest request could
    /// never be admitted.
    pub(super) fn new(total: usize, max_body: usize, waits: Counter) -> Self {
        // A semaphore holds at most MAX_PERMITS; more would be no bound.
        let total = total.min(Semaphore::MAX_PERMITS);
        Self {
            bytes: Arc::new(Semaphore::new(total)),
            total,
            max_body,
            large_seen: Arc::new(AtomicBool::new(false)),
            waits,
        }
    }

    /// Trims the heap once nothing is in flight after large bodies were seen.
    pub(super) fn trim_after_bursts(&self) -> JoinHandle<()> {
        let budget = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TRIM_EVERY);
            loop {
                tick.tick().await;
                if budget.bytes.available_permits() == budget.total
                    && budget.large_seen.swap(false, Ordering::AcqRel)
                {
                    super::allocator::trim();
                }
            }
        })
    }
}

/// Reserves the request's body size (its declared length, or the largest
/// body allowed when it declares none) for as long as it is handled.
pub(super) async fn reserve(
    State(budget): State<Budget>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let want = declared.unwrap_or(budget.max_body).min(budget.max_body);
    // u32 bounds a single reservation; the body limit is far below it.
    let permits = u32::try_from(want.max(1)).unwrap_or(u32::MAX);
    let reserved = match budget.bytes.clone().try_acquire_many_owned(permits) {
        Ok(reserved) => Ok(reserved),
        Err(_) => {
            budget.waits.inc();
            budget.bytes.clone().acquire_many_owned(permits).await
        }
    };
    let Ok(_reserved) = reserved else {
        // The semaphore is never closed; answer rather than panic.
        return next.run(request).await;
    };
    if want >= LARGE_BODY {
        budget.large_seen.store(true, Ordering::Release);
    }
    next.run(request).await
}
