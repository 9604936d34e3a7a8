//! What ingest received, accepted and rejected, by reason.

use std::sync::atomic::{AtomicU64, Ordering};

use ioc_schemas::{RejectReason, Rejection};
use tracing::debug;

/// Counters shared by every source; mirrored to Prometheus as
/// `ioc_events_received_total{source}`, `ioc_events_accepted_total{source}`
/// and `ioc_events_rejected_total{source,reason}`.
#[derive(Debug, Default)]
pub struct IngestStats {
    received: AtomicU64,
    accepted: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
}

impl IngestStats {
    /// Counts a message received from `source`.
    pub fn received(&self, source: &'static str) {
        self.received.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ioc_events_received_total", "source" => source).increment(1);
    }

    /// Counts a message handed to processing.
    pub fn accepted(&self, source: &'static str) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ioc_events_accepted_total", "source" => source).increment(1);
    }

    /// Counts and logs a rejected message.
    pub fn rejected(&self, source: &'static str, rejection: &Rejection) {
        self.rejected[rejection.reason.index()].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ioc_events_rejected_total", "source" => source, "reason" => rejection.reason.code())
            .increment(1);
        debug!(source, %rejection, "rejected message");
    }

    /// Messages received.
    pub fn received_count(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Messages accepted.
    pub fn accepted_count(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Rejections of one reason.
    pub fn rejected_count(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()].load(Ordering::Relaxed)
    }

    /// Every reason with a non-zero count.
    pub fn rejections(&self) -> Vec<(RejectReason, u64)> {
        RejectReason::ALL
            .iter()
            .zip(&self.rejected)
            .map(|(r, c)| (*r, c.load(Ordering::Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect()
    }
}
