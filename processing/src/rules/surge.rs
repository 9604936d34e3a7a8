//! `surge`: a jump of a field within a window (a reservoir's outflow when
//! its spillway gates open), listing the river gauges downstream.
//!
//! ```toml
//! [[rule]]
//! id = "spillway"
//! kind = "surge"
//! field = "outflow_m3s"
//! window = "15m"
//! increase = 500              # the rise within the window that opens it
//! related_within_km = 40      # river gauges this near are listed
//! ```
//!
//! It clears once the rise within the window is below half the increase.

use std::time::Duration;

use ioc_schemas::{Alert, DeviceKind, Evidence, Timestamp};
use serde::Deserialize;

use super::alert::{self, Step};
use super::kind::{Check, DeviceCx, RuleKind, States, severe};
use super::rate_of_change::ChangeState;
use super::{Rule, devices_near};
use crate::sample::{Field, Sample};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    field: Field,
    #[serde(with = "humantime_serde")]
    window: Duration,
    increase: f64,
    #[serde(default)]
    related_within_km: f64,
    #[serde(default = "severe")]
    severity: ioc_schemas::Severity,
}

impl RuleKind for Surge {
    const NAME: &'static str = "surge";
    const TITLE: (&'static str, &'static str) = ("Tăng đột biến", "Surge");
    type State = ChangeState;

    fn parse(check: &mut Check<'_>, at: &str, table: toml::Table) -> Option<Self> {
        let s: Spec = check.spec(at, table)?;
        let window_ms = check.history(at, "window", s.window);
        check.positive(at, "increase", s.increase);
        check.non_negative(at, "related_within_km", s.related_within_km);
        Some(Surge {
            field: s.field,
            window_ms,
            increase: s.increase,
            related_within_km: s.related_within_km,
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
        let (step, rise) = self.observe(state, value, s.ts)?;
        let mut ev = Evidence::new(
            rise,
            self.field.unit(),
            self.increase,
            Timestamp(s.ts),
            s.seq,
        );
        ev.window_s = Some((self.window_ms / 1000) as u32);
        ev.related = devices_near(
            cx.registry,
            cx.device,
            DeviceKind::RiverGauge,
            self.related_within_km,
        );
        Some(alert::one_level(rule, cx.device, step, self.severity, ev))
    }
}

#[cfg(test)]
mod tests {
    use ioc_schemas::Severity;

    use super::*;

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
}
