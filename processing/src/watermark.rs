//! Event-time progress shared by the workers.
//!
//! The watermark is the largest event time seen minus the allowed
//! out-of-orderness: the engine promises that readings older than it are
//! late. When no reading has arrived for the idle timeout, the watermark
//! follows the wall clock minus the out-of-orderness, so that quiet
//! sources do not hold time back (and an alert from a lone gauge is not
//! kept waiting for the next reading). That assumes device clocks and
//! transport are within the out-of-orderness of the wall clock; a reading
//! that is not arrives late and takes the late path (windows amended, no
//! reading lost). Every worker advances its input to the same
//! watermark, so a worker that happens to receive no readings does not
//! stall the dataflow's frontier either.

use std::sync::atomic::{AtomicI64, Ordering};

use ioc_schemas::Timestamp;

/// Shared watermark state.
#[derive(Debug)]
pub struct Watermark {
    max_event_ms: AtomicI64,
    last_arrival_ms: AtomicI64,
    out_of_orderness_ms: i64,
    idle_ms: i64,
}

impl Watermark {
    /// A watermark allowing `out_of_orderness_ms` of disorder that follows the
    /// clock after `idle_ms` without arrivals (the first time `idle_ms` after
    /// `start`).
    pub fn new(out_of_orderness_ms: i64, idle_ms: i64, start: Timestamp) -> Self {
        Watermark {
            max_event_ms: AtomicI64::new(0),
            // Start counts as an arrival: idleness is measured from it.
            last_arrival_ms: AtomicI64::new(start.millis()),
            out_of_orderness_ms,
            idle_ms,
        }
    }

    /// Records a reading's event time, received at `now`.
    pub fn observe(&self, event: Timestamp, now: Timestamp) {
        self.max_event_ms
            .fetch_max(event.millis(), Ordering::Relaxed);
        self.last_arrival_ms
            .fetch_max(now.millis(), Ordering::Relaxed);
    }

    /// The watermark a worker that has taken readings up to event time
    /// `newest` but still has a backlog may promise: it cannot vouch for
    /// what is queued behind.
    pub fn with_backlog(&self, now: Timestamp, newest: Timestamp) -> u64 {
        self.at(now)
            .min((newest.millis() - self.out_of_orderness_ms).max(0) as u64)
    }

    /// The watermark at wall-clock time `now`, in epoch milliseconds (≥ 0).
    pub fn at(&self, now: Timestamp) -> u64 {
        let max = self.max_event_ms.load(Ordering::Relaxed);
        let mut wm = max - self.out_of_orderness_ms;
        if now.millis() - self.last_arrival_ms.load(Ordering::Relaxed) >= self.idle_ms {
            wm = wm.max(now.millis() - self.out_of_orderness_ms);
        }
        wm.max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trails_the_newest_event_then_follows_the_clock_when_idle() {
        let w = Watermark::new(5_000, 30_000, Timestamp(0));
        w.observe(Timestamp(100_000), Timestamp(100_000));
        w.observe(Timestamp(90_000), Timestamp(100_500));
        assert_eq!(w.at(Timestamp(101_000)), 95_000);
        // Idle for 40 s: the clock takes over.
        assert_eq!(w.at(Timestamp(140_500)), 140_500 - 5_000);
    }
}
