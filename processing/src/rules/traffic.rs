//! Traffic rules on counter readings: `congestion` (slow and occupied for
//! a while) and `speed_drop` (speed far below its recent mean: a suspected
//! incident).

use serde::{Deserialize, Serialize};

use super::alert::{Step, Tracker};
use super::rate::History;

/// A `congestion` rule's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Congestion {
    /// Congested while the speed is below this, km/h.
    pub speed_below_kmh: f64,
    /// ... and occupancy above this, percent.
    pub occupancy_above_pct: f64,
    /// For at least this long, ms.
    pub for_ms: i64,
    /// Cleared once speed exceeds the limit by this much, km/h ...
    pub speed_margin_kmh: f64,
    /// ... or occupancy falls this far below its limit, percent.
    pub occupancy_margin_pct: f64,
    /// Severity of the alert.
    pub severity: ioc_schemas::Severity,
}

/// A `speed_drop` rule's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct SpeedDrop {
    /// A drop of at least this percentage below the baseline opens the alert.
    pub drop_pct: f64,
    /// The baseline is the mean speed over this window before the reading, ms.
    pub baseline_ms: i64,
    /// No alert when the baseline itself is slower than this, km/h.
    pub min_baseline_kmh: f64,
    /// Severity of the alert.
    pub severity: ioc_schemas::Severity,
}

/// Per-counter state of `congestion`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CongestionState {
    /// The episode.
    pub tracker: Tracker,
    since_ms: Option<i64>,
}

/// Per-counter state of `speed_drop`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpeedDropState {
    /// The episode.
    pub tracker: Tracker,
    history: History,
    baseline: f64,
}

impl Congestion {
    /// Applies a reading's speed and occupancy.
    pub fn observe(
        &self,
        s: &mut CongestionState,
        speed: f64,
        occupancy: f64,
        ts: i64,
    ) -> Option<Step> {
        if s.tracker.level() == 0 {
            if speed < self.speed_below_kmh && occupancy > self.occupancy_above_pct {
                let since = *s.since_ms.get_or_insert(ts);
                if ts - since >= self.for_ms {
                    s.since_ms = None;
                    return s.tracker.step(1, ts);
                }
            } else {
                s.since_ms = None;
            }
            return None;
        }
        let cleared = speed >= self.speed_below_kmh + self.speed_margin_kmh
            || occupancy <= self.occupancy_above_pct - self.occupancy_margin_pct;
        if cleared { s.tracker.step(0, ts) } else { None }
    }
}

impl SpeedDropState {
    /// Bytes the state holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.history.heap_bytes()
    }
}

impl SpeedDrop {
    /// Applies a reading's speed; the step and the baseline it was judged against.
    pub fn observe(&self, s: &mut SpeedDropState, speed: f64, ts: i64) -> Option<(Step, f64)> {
        let (sum, n) = s
            .history
            .samples()
            .filter(|&(t, _)| t < ts && t >= ts - self.baseline_ms)
            .fold((0.0, 0usize), |(sum, n), (_, v)| (sum + v, n + 1));
        s.history.push(ts, speed, self.baseline_ms);
        let step = if s.tracker.level() == 0 {
            if n < 2 {
                return None;
            }
            let baseline = sum / n as f64;
            if baseline < self.min_baseline_kmh || speed > baseline * (1.0 - self.drop_pct / 100.0)
            {
                return None;
            }
            s.baseline = baseline;
            s.tracker.step(1, ts)
        } else if speed >= s.baseline * (1.0 - self.drop_pct / 200.0) {
            s.tracker.step(0, ts)
        } else {
            None
        };
        step.map(|st| (st, s.baseline))
    }
}

#[cfg(test)]
mod tests {
    use ioc_schemas::Severity;

    use super::*;

    #[test]
    fn congestion_needs_its_duration_and_clears_with_margin() {
        let r = Congestion {
            speed_below_kmh: 15.0,
            occupancy_above_pct: 30.0,
            for_ms: 600_000,
            speed_margin_kmh: 5.0,
            occupancy_margin_pct: 5.0,
            severity: Severity::Moderate,
        };
        let mut s = CongestionState::default();
        assert_eq!(r.observe(&mut s, 10.0, 40.0, 0), None);
        assert_eq!(r.observe(&mut s, 10.0, 40.0, 300_000), None);
        assert_eq!(
            r.observe(&mut s, 10.0, 40.0, 600_000).map(|s| s.level),
            Some(1)
        );
        assert_eq!(
            r.observe(&mut s, 17.0, 40.0, 900_000),
            None,
            "inside the margin"
        );
        assert_eq!(
            r.observe(&mut s, 21.0, 40.0, 1_200_000).map(|s| s.level),
            Some(0)
        );
        // A break in the condition restarts the clock.
        assert_eq!(r.observe(&mut s, 10.0, 40.0, 1_500_000), None);
        assert_eq!(r.observe(&mut s, 40.0, 10.0, 1_800_000), None);
        assert_eq!(r.observe(&mut s, 10.0, 40.0, 2_100_000), None);
    }

    #[test]
    fn a_sudden_drop_opens_and_recovery_clears() {
        let r = SpeedDrop {
            drop_pct: 50.0,
            baseline_ms: 900_000,
            min_baseline_kmh: 30.0,
            severity: Severity::Severe,
        };
        let mut s = SpeedDropState::default();
        for k in 0..3 {
            assert!(r.observe(&mut s, 60.0, k * 300_000).is_none());
        }
        let (open, baseline) = r.observe(&mut s, 20.0, 900_000).unwrap();
        assert_eq!((open.level, baseline), (1, 60.0));
        assert!(r.observe(&mut s, 40.0, 1_200_000).is_none());
        assert_eq!(r.observe(&mut s, 50.0, 1_500_000).unwrap().0.level, 0);
    }
}
