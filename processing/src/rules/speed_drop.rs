//! `speed_drop`: a traffic counter's speed far below its own recent mean
//! (a suspected incident, before congestion builds up); cleared once the
//! speed is back within half the drop.
//!
//! ```toml
//! [[rule]]
//! id = "incident"
//! kind = "speed_drop"
//! drop_pct = 50                # at least this far below the baseline ...
//! baseline = "15m"             # ... the mean speed over this window before
//! min_baseline_kmh = 30        # no alert on roads already slow
//! ```

use std::time::Duration;

use ioc_schemas::{Alert, Evidence, Timestamp};
use serde::{Deserialize, Serialize};

use super::Rule;
use super::alert::{self, Step, Tracker};
use super::history::History;
use super::kind::{Check, DeviceCx, RuleKind, States, severe};
use crate::sample::{Field, Sample};

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

/// Per-counter state of `speed_drop`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpeedDropState {
    /// The episode.
    pub tracker: Tracker,
    history: History,
    baseline: f64,
}

super::alert::episode_in!(SpeedDropState, tracker);

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    drop_pct: f64,
    #[serde(with = "humantime_serde")]
    baseline: Duration,
    #[serde(default)]
    min_baseline_kmh: f64,
    #[serde(default = "severe")]
    severity: ioc_schemas::Severity,
}

impl RuleKind for SpeedDrop {
    const NAME: &'static str = "speed_drop";
    const TITLE: (&'static str, &'static str) = ("Tốc độ giảm đột ngột", "Sudden speed drop");
    type State = SpeedDropState;

    fn parse(check: &mut Check<'_>, at: &str, table: toml::Table) -> Option<Self> {
        let s: Spec = check.spec(at, table)?;
        if !(s.drop_pct > 0.0 && s.drop_pct < 100.0) {
            check.problem(at, "drop_pct must lie between 0 and 100");
        }
        let baseline_ms = check.history(at, "baseline", s.baseline);
        check.non_negative(at, "min_baseline_kmh", s.min_baseline_kmh);
        Some(SpeedDrop {
            drop_pct: s.drop_pct,
            baseline_ms,
            min_baseline_kmh: s.min_baseline_kmh,
            severity: s.severity,
        })
    }

    fn field(&self) -> Option<Field> {
        Some(Field::SpeedKmh)
    }

    fn heap_bytes(state: &SpeedDropState) -> usize {
        state.heap_bytes()
    }

    fn on_sample(
        &self,
        rule: &Rule,
        states: &mut States<u16>,
        cx: &DeviceCx<'_>,
        s: &Sample,
    ) -> Option<Alert> {
        let state = states.get::<Self>(rule);
        let speed = s.get(Field::SpeedKmh)?;
        let (step, baseline) = self.observe(state, speed, s.ts)?;
        let threshold = (baseline * (1.0 - self.drop_pct / 100.0) * 10.0).round() / 10.0;
        let ev = Evidence::new(speed, "km/h", threshold, Timestamp(s.ts), s.seq);
        Some(alert::one_level(rule, cx.device, step, self.severity, ev))
    }
}

#[cfg(test)]
mod tests {
    use ioc_schemas::Severity;

    use super::*;

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
