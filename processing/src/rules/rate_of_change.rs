//! `rate_of_change`: the least-squares slope of a field over a window of
//! irregular samples (a river rising in cm/h), with the projected time to
//! the next level.
//!
//! ```toml
//! [[rule]]
//! id = "river_rise"
//! kind = "rate_of_change"
//! field = "water_level_m"
//! window = "1h"               # the slope is fitted over this window
//! per_hour = 0.3              # opens at this slope (negative: falling)
//! clear_per_hour = 0.15       # clears below this (default: half)
//! min_samples = 3
//! project_to = "registry"     # say when the next registry level is reached
//! ```

use std::time::Duration;

use ioc_schemas::{Alert, Evidence, Timestamp};
use serde::{Deserialize, Serialize};

use super::alert::{self, Step, Tracker};
use super::history::History;
use super::kind::{Check, DeviceCx, RuleKind, States, moderate};
use super::{Levels, Rule};
use crate::sample::{Field, Sample};

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

/// Per-subject state of a rate or surge rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeState {
    /// The episode.
    pub tracker: Tracker,
    /// Recent samples.
    pub history: History,
}

super::alert::episode_in!(ChangeState, tracker);

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

/// When a value changing at `per_h` reaches `target`, from `value` at `ts`.
pub fn projected_at(value: f64, per_h: f64, target: f64, ts: i64) -> Option<i64> {
    let hours = (target - value) / per_h;
    (hours.is_finite() && hours > 0.0 && hours < 24.0 * 365.0)
        .then(|| ts + (hours * 3_600_000.0) as i64)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    field: Field,
    #[serde(with = "humantime_serde")]
    window: Duration,
    per_hour: f64,
    #[serde(default)]
    clear_per_hour: Option<f64>,
    #[serde(default = "three")]
    min_samples: u32,
    #[serde(default)]
    project_to: Option<String>,
    #[serde(default = "moderate")]
    severity: ioc_schemas::Severity,
}

fn three() -> u32 {
    3
}

impl RuleKind for RateOfChange {
    const NAME: &'static str = "rate_of_change";
    const TITLE: (&'static str, &'static str) = ("Tốc độ thay đổi", "Rate of change");
    type State = ChangeState;

    fn parse(check: &mut Check<'_>, at: &str, table: toml::Table) -> Option<Self> {
        let s: Spec = check.spec(at, table)?;
        let window_ms = check.history(at, "window", s.window);
        if !(s.per_hour.is_finite() && s.per_hour != 0.0) {
            check.problem(at, "per_hour must be a non-zero number");
        }
        let clear = s.clear_per_hour.unwrap_or(s.per_hour / 2.0);
        if clear.abs() > s.per_hour.abs() || clear.signum() * s.per_hour.signum() < 0.0 {
            check.problem(at, "clear_per_hour must lie between 0 and per_hour");
        }
        let projection = match s.project_to.as_deref() {
            None => None,
            Some("registry") => Some(Levels::Registry),
            Some(other) => {
                check.problem(at, format!("project_to: {other:?} is not \"registry\""));
                None
            }
        };
        Some(RateOfChange {
            field: s.field,
            window_ms,
            open_per_h: s.per_hour,
            clear_per_h: clear,
            min_samples: s.min_samples.max(2),
            projection,
            severity: s.severity,
        })
    }

    fn field(&self) -> Option<Field> {
        Some(self.field)
    }

    fn heap_bytes(state: &ChangeState) -> usize {
        state.history.heap_bytes()
    }

    fn on_sample(
        &self,
        rule: &Rule,
        states: &mut States<u16>,
        cx: &DeviceCx<'_>,
        s: &Sample,
    ) -> Option<Alert> {
        let state = states.get::<Self>(rule);
        let value = s.get(self.field)?;
        let (step, slope) = self.observe(state, value, s.ts)?;
        let mut ev = Evidence::new(
            value,
            self.field.unit(),
            self.open_per_h,
            Timestamp(s.ts),
            s.seq,
        );
        ev.window_s = Some((self.window_ms / 1000) as u32);
        ev.rate_per_h = Some((slope * 1000.0).round() / 1000.0);
        let ahead = self.projection.as_ref().and_then(|l| {
            cx.rules.levels(l, s.device).iter().find(|l| {
                if slope > 0.0 {
                    l.value > value
                } else {
                    l.value < value
                }
            })
        });
        if let Some(next) = ahead {
            ev.next_level = Some(next.name.clone());
            ev.next_level_at = projected_at(value, slope, next.value, s.ts).map(Timestamp);
        }
        Some(alert::one_level(rule, cx.device, step, self.severity, ev))
    }
}

#[cfg(test)]
mod tests {
    use ioc_schemas::Severity;

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
    fn projection_looks_ahead_only() {
        assert_eq!(projected_at(3.0, 0.5, 4.0, 0), Some(2 * H));
        assert_eq!(projected_at(3.0, -0.5, 4.0, 0), None);
    }
}
