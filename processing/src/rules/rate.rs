//! Change over time: `rate_of_change` (least-squares slope over irregular
//! samples) and `surge` (a jump within a window, e.g. reservoir outflow
//! when spillway gates open).

use serde::{Deserialize, Serialize};

use super::Levels;
use super::alert::{Step, Tracker};
use crate::sample::Field;

/// Most samples a history keeps; older samples are thinned so the history
/// still spans its whole window.
pub const HISTORY_CAP: usize = 32;

/// Recent `(event time ms, value)` samples of one field, oldest first,
/// bounded by [`HISTORY_CAP`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    samples: Vec<(i64, f64)>,
}

impl History {
    /// Adds a sample and forgets those older than `window_ms` before it.
    /// Samples closer than `window_ms / HISTORY_CAP` to the previous one
    /// replace it, so the history spans the window whatever the rate.
    pub fn push(&mut self, ts: i64, value: f64, window_ms: i64) {
        let spacing = window_ms / HISTORY_CAP as i64;
        let at = self.samples.partition_point(|&(t, _)| t <= ts);
        if at == self.samples.len() {
            // The common case: newer than everything.
            let len = self.samples.len();
            if len >= 2 && ts - self.samples[len - 2].0 < spacing {
                self.samples[len - 1] = (ts, value);
            } else {
                self.samples.push((ts, value));
            }
        } else {
            self.samples.insert(at, (ts, value));
        }
        let newest = self.samples.last().map_or(ts, |s| s.0);
        let keep_from = self
            .samples
            .partition_point(|&(t, _)| t <= newest - window_ms);
        self.samples.drain(..keep_from);
        if self.samples.len() > HISTORY_CAP {
            self.samples.remove(1);
        }
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> &[(i64, f64)] {
        &self.samples
    }

    /// Least-squares slope in units per hour, if at least `min_samples`
    /// samples span at least `min_span_ms`.
    pub fn slope_per_h(&self, min_samples: usize, min_span_ms: i64) -> Option<f64> {
        let s = &self.samples;
        let (first, last) = (s.first()?, s.last()?);
        if s.len() < min_samples.max(2) || last.0 - first.0 < min_span_ms.max(1) {
            return None;
        }
        let n = s.len() as f64;
        let hours = |t: i64| (t - last.0) as f64 / 3_600_000.0;
        let mean_t = s.iter().map(|&(t, _)| hours(t)).sum::<f64>() / n;
        let mean_v = s.iter().map(|&(_, v)| v).sum::<f64>() / n;
        let (mut num, mut den) = (0.0, 0.0);
        for &(t, v) in s {
            let dt = hours(t) - mean_t;
            num += dt * (v - mean_v);
            den += dt * dt;
        }
        (den > 0.0).then(|| num / den)
    }

    /// The smallest value in the history.
    pub fn min(&self) -> Option<f64> {
        self.samples.iter().map(|s| s.1).reduce(f64::min)
    }
}

/// A `rate_of_change` rule's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct RateOfChange {
    /// The watched field.
    pub field: Field,
    /// The window the slope is fitted over, ms.
    pub window_ms: i64,
    /// The alert opens when the slope reaches this (units per hour); a
    /// negative value watches falling values.
    pub open_per_h: f64,
    /// The alert resolves when the slope is back below this.
    pub clear_per_h: f64,
    /// Samples needed before a slope is trusted.
    pub min_samples: u32,
    /// Levels the projection looks ahead to (usually the registry's).
    pub projection: Option<Levels>,
    /// Severity of the alert.
    pub severity: ioc_schemas::Severity,
}

/// A `surge` rule's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Surge {
    /// The watched field.
    pub field: Field,
    /// The window, ms.
    pub window_ms: i64,
    /// The rise within the window that opens the alert.
    pub increase: f64,
    /// River gauges within this distance are listed as concerned, km.
    pub related_within_km: f64,
    /// Severity of the alert.
    pub severity: ioc_schemas::Severity,
}

/// Per-subject state of a rate or surge rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeState {
    /// The episode.
    pub tracker: Tracker,
    /// Recent samples.
    pub history: History,
}

impl RateOfChange {
    /// Applies a sample; the step and the slope behind it.
    pub fn observe(&self, state: &mut ChangeState, value: f64, ts: i64) -> Option<(Step, f64)> {
        state.history.push(ts, value, self.window_ms);
        let slope = state
            .history
            .slope_per_h(self.min_samples as usize, self.window_ms / 4)?;
        let sign = self.open_per_h.signum();
        let level = match state.tracker.level() {
            0 if sign * slope >= sign * self.open_per_h => 1,
            1 if sign * slope < sign * self.clear_per_h => 0,
            l => l,
        };
        state.tracker.step(level, ts).map(|s| (s, slope))
    }
}

impl Surge {
    /// Applies a sample; the step and the rise within the window.
    pub fn observe(&self, state: &mut ChangeState, value: f64, ts: i64) -> Option<(Step, f64)> {
        state.history.push(ts, value, self.window_ms);
        let rise = value - state.history.min().unwrap_or(value);
        let level = match state.tracker.level() {
            0 if rise >= self.increase => 1,
            1 if rise < self.increase / 2.0 => 0,
            l => l,
        };
        state.tracker.step(level, ts).map(|s| (s, rise))
    }
}

/// When a value changing at `per_h` reaches `target`, from `value` at `ts`.
pub fn projected_at(value: f64, per_h: f64, target: f64, ts: i64) -> Option<i64> {
    let hours = (target - value) / per_h;
    (hours.is_finite() && hours > 0.0 && hours < 24.0 * 365.0)
        .then(|| ts + (hours * 3_600_000.0) as i64)
}

#[cfg(test)]
mod tests {
    use ioc_schemas::Severity;
    use proptest::prelude::*;

    use super::*;

    const H: i64 = 3_600_000;

    fn rule() -> RateOfChange {
        RateOfChange {
            field: Field::WaterLevelM,
            window_ms: H,
            open_per_h: 0.3,
            clear_per_h: 0.15,
            min_samples: 3,
            projection: None,
            severity: Severity::Moderate,
        }
    }

    #[test]
    fn a_steady_rise_has_its_slope() {
        let mut h = History::default();
        for k in 0..10 {
            h.push(k * 600_000, 1.0 + 0.05 * k as f64, H);
        }
        let slope = h.slope_per_h(3, H / 4).unwrap();
        assert!((slope - 0.3).abs() < 1e-9, "{slope}");
        assert!(h.samples().len() <= 7, "older than an hour are gone");
    }

    #[test]
    fn opens_on_a_fast_rise_and_clears_when_it_slows() {
        let r = rule();
        let mut s = ChangeState::default();
        let mut steps = Vec::new();
        let mut level = 2.0;
        for k in 0..30 {
            level += if k < 12 { 0.1 } else { 0.0 };
            if let Some((step, slope)) = r.observe(&mut s, level, k * 300_000) {
                steps.push((step.level, k, slope > 0.3));
            }
        }
        assert_eq!(steps.first().map(|s| s.0), Some(1));
        assert!(steps.first().unwrap().2);
        assert_eq!(steps.last().map(|s| s.0), Some(0));
        assert_eq!(steps.len(), 2);
    }

    #[test]
    fn a_surge_opens_on_a_jump_and_ends_when_the_window_slides_past() {
        let r = Surge {
            field: Field::OutflowM3s,
            window_ms: 15 * 60_000,
            increase: 500.0,
            related_within_km: 0.0,
            severity: Severity::Severe,
        };
        let mut s = ChangeState::default();
        assert!(r.observe(&mut s, 1000.0, 0).is_none());
        assert!(r.observe(&mut s, 1100.0, 60_000).is_none());
        let (step, rise) = r.observe(&mut s, 1800.0, 120_000).unwrap();
        assert_eq!((step.level, rise), (1, 800.0));
        assert!(r.observe(&mut s, 1800.0, 600_000).is_none());
        assert_eq!(r.observe(&mut s, 1800.0, 1_200_000).unwrap().0.level, 0);
    }

    #[test]
    fn projection_looks_ahead_only() {
        assert_eq!(projected_at(3.0, 0.5, 4.0, 0), Some(2 * H));
        assert_eq!(projected_at(3.0, -0.5, 4.0, 0), None);
    }

    proptest! {
        /// The slope does not depend on the order samples arrive in.
        #[test]
        fn slope_is_independent_of_arrival_order(mut pts in prop::collection::vec((0i64..3_000_000, -5.0f64..5.0), 3..20), seed in any::<u64>()) {
            pts.sort_by_key(|p| p.0);
            pts.dedup_by_key(|p| p.0);
            let mut sorted = History::default();
            for &(t, v) in &pts { sorted.samples.push((t, v)); }
            let mut shuffled = pts.clone();
            let n = shuffled.len();
            for i in 0..n { shuffled.swap(i, (seed as usize).wrapping_mul(31).wrapping_add(i * 7) % n); }
            let mut h = History::default();
            for &(t, v) in &shuffled { h.samples.insert(h.samples.partition_point(|s| s.0 <= t), (t, v)); }
            prop_assert_eq!(h.slope_per_h(2, 1), sorted.slope_per_h(2, 1));
        }
    }
}
