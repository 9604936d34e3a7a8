//! What ingest received, accepted and rejected, by source and reason.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ioc_schemas::{RejectReason, Rejection};
use metrics::Counter;

/// Where a message entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// An MQTT subscription.
    Mqtt,
    /// A Kafka consumer group.
    Kafka,
    /// `POST /api/v1/ingest`.
    Http,
}

impl Source {
    /// Every source, in [`Source::index`] order.
    pub const ALL: [Source; 3] = [Source::Mqtt, Source::Kafka, Source::Http];

    /// The `source` label: `mqtt`, `kafka` or `http`.
    pub fn label(self) -> &'static str {
        match self {
            Source::Mqtt => "mqtt",
            Source::Kafka => "kafka",
            Source::Http => "http",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One source's Prometheus counters, registered once so the per-message
/// path only increments.
#[derive(Debug)]
struct SourceCounters {
    received: Counter,
    accepted: Counter,
    rejected: [Counter; RejectReason::ALL.len()],
}

impl SourceCounters {
    fn register(source: Source) -> Self {
        let s = source.label();
        SourceCounters {
            received: metrics::counter!("ioc_events_received_total", "source" => s),
            accepted: metrics::counter!("ioc_events_accepted_total", "source" => s),
            rejected: RejectReason::ALL.map(|r| {
                metrics::counter!("ioc_events_rejected_total", "source" => s, "reason" => r.code())
            }),
        }
    }
}

/// Counters shared by every source; mirrored to Prometheus as
/// `ioc_events_received_total{source}`, `ioc_events_accepted_total{source}`
/// and `ioc_events_rejected_total{source,reason}` (every combination
/// registered at zero). Create it after the metrics recorder is installed.
#[derive(Debug)]
pub struct IngestStats {
    received: AtomicU64,
    accepted: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
    metrics: [SourceCounters; Source::ALL.len()],
    mqtt_subscribed: AtomicBool,
}

impl Default for IngestStats {
    fn default() -> Self {
        IngestStats {
            received: AtomicU64::default(),
            accepted: AtomicU64::default(),
            rejected: Default::default(),
            metrics: Source::ALL.map(SourceCounters::register),
            mqtt_subscribed: AtomicBool::new(false),
        }
    }
}

impl IngestStats {
    /// Counts a message received from `source`.
    pub fn received(&self, source: Source) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.metrics[source.index()].received.increment(1);
    }

    /// Counts a message handed to processing.
    pub fn accepted(&self, source: Source) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.metrics[source.index()].accepted.increment(1);
    }

    /// Counts a rejected message.
    pub fn rejected(&self, source: Source, rejection: &Rejection) {
        let reason = rejection.reason.index();
        self.rejected[reason].fetch_add(1, Ordering::Relaxed);
        self.metrics[source.index()].rejected[reason].increment(1);
    }

    /// The MQTT source's subscriptions were granted (`true`) or its
    /// connection was lost (`false`).
    pub fn set_mqtt_subscribed(&self, subscribed: bool) {
        self.mqtt_subscribed.store(subscribed, Ordering::Relaxed);
    }

    /// Whether the MQTT source holds its subscriptions: messages published
    /// from now on reach this process (or, with a shared subscription, one
    /// of the group). A broker drops what is published to nobody.
    pub fn mqtt_subscribed(&self) -> bool {
        self.mqtt_subscribed.load(Ordering::Relaxed)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_index_is_the_position_in_all() {
        for (i, s) in Source::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
        }
    }
}
