//! `congestion`: a traffic counter's segment slow and occupied for a
//! while; cleared once speed or occupancy is clearly back.
//!
//! ```toml
//! [[rule]]
//! id = "congestion"
//! kind = "congestion"
//! speed_below_kmh = 15
//! occupancy_above_pct = 30
//! for = "10m"                  # both must hold this long
//! speed_margin_kmh = 5         # cleared at speed_below_kmh + this ...
//! occupancy_margin_pct = 5     # ... or occupancy_above_pct - this
//! ```
//!
//! With `window = "5m"` the rule judges each counter's closed 5-minute
//! windows (mean speed weighted by vehicles, mean occupancy weighted by
//! time), as traffic engineers report them, instead of every reading; `for`
//! then counts consecutive windows' time (default: one window is enough).
//! `occupancy_above_pct` may be left out: speed alone then decides, for
//! counters that report no occupancy. A window is judged once, when the
//! watermark passes its end; a late reading that revises it changes the
//! window output, not the alert.

use std::time::Duration;

use ioc_schemas::{Alert, EngineOutput, Evidence, Timestamp};
use serde::{Deserialize, Serialize};

use super::Rule;
use super::alert::{self, Step, Tracker};
use super::kind::{Check, DeviceCx, RuleKind, States, TrafficMean, moderate};
use crate::sample::{Field, Sample};

/// A `congestion` rule's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Congestion {
    /// Congested while the speed is below this, km/h.
    pub speed_below_kmh: f64,
    /// ... and occupancy above this, percent (none: speed alone).
    pub occupancy_above_pct: Option<f64>,
    /// For at least this long, ms.
    pub for_ms: i64,
    /// Cleared once speed exceeds the limit by this much, km/h ...
    pub speed_margin_kmh: f64,
    /// ... or occupancy falls this far below its limit, percent.
    pub occupancy_margin_pct: f64,
    /// Severity of the alert.
    pub severity: ioc_schemas::Severity,
    /// Judges closed 5-minute windows instead of readings.
    pub windowed: bool,
}

/// Per-counter state of `congestion`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CongestionState {
    /// The episode.
    pub tracker: Tracker,
    since_ms: Option<i64>,
}

super::alert::episode_in!(CongestionState, tracker);

impl Congestion {
    /// Applies a reading's speed and occupancy.
    pub fn observe(
        &self,
        s: &mut CongestionState,
        speed: f64,
        occupancy: Option<f64>,
        ts: i64,
    ) -> Option<Step> {
        let occupied = |above: f64| occupancy.is_none_or(|o| o > above);
        if s.tracker.level() == 0 {
            if speed < self.speed_below_kmh && self.occupancy_above_pct.is_none_or(occupied) {
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
            || self
                .occupancy_above_pct
                .is_some_and(|above| !occupied(above - self.occupancy_margin_pct));
        if cleared { s.tracker.step(0, ts) } else { None }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    speed_below_kmh: f64,
    #[serde(default)]
    occupancy_above_pct: Option<f64>,
    #[serde(default, rename = "for", with = "humantime_serde")]
    for_: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    window: Option<Duration>,
    #[serde(default = "five")]
    speed_margin_kmh: f64,
    #[serde(default = "five")]
    occupancy_margin_pct: f64,
    #[serde(default = "moderate")]
    severity: ioc_schemas::Severity,
}

fn five() -> f64 {
    5.0
}

impl RuleKind for Congestion {
    const NAME: &'static str = "congestion";
    const TITLE: (&'static str, &'static str) = ("Ùn tắc giao thông", "Traffic congestion");
    type State = CongestionState;

    fn parse(check: &mut Check<'_>, at: &str, table: toml::Table) -> Option<Self> {
        let s: Spec = check.spec(at, table)?;
        check.positive(at, "speed_below_kmh", s.speed_below_kmh);
        if let Some(o) = s.occupancy_above_pct {
            check.non_negative(at, "occupancy_above_pct", o);
        }
        let window_ms = crate::windows::TRAFFIC_WINDOW_MS;
        if s.window.is_some_and(|w| w.as_millis() as i64 != window_ms) {
            check.problem(at, "window must be 5m (the traffic windows' length)");
        }
        if s.window.is_none() && (s.for_.is_none() || s.occupancy_above_pct.is_none()) {
            check.problem(
                at,
                "judging each reading needs `for` and `occupancy_above_pct` (or set window = \"5m\")",
            );
        }
        if s.window.is_some()
            && s.for_
                .is_some_and(|f| (f.as_millis() as i64) % window_ms != 0)
        {
            check.problem(at, "with a window, `for` must be a whole number of windows");
        }
        check.non_negative(at, "speed_margin_kmh", s.speed_margin_kmh);
        check.non_negative(at, "occupancy_margin_pct", s.occupancy_margin_pct);
        Some(Congestion {
            speed_below_kmh: s.speed_below_kmh,
            occupancy_above_pct: s.occupancy_above_pct,
            // Windows are judged at their ends: the first congested window
            // already covers one window's length of the time.
            for_ms: s.for_.map_or(0, |f| f.as_millis() as i64)
                - if s.window.is_some() { window_ms } else { 0 },
            speed_margin_kmh: s.speed_margin_kmh,
            occupancy_margin_pct: s.occupancy_margin_pct,
            severity: s.severity,
            windowed: s.window.is_some(),
        })
    }

    fn field(&self) -> Option<Field> {
        Some(Field::SpeedKmh)
    }

    fn on_sample(
        &self,
        rule: &Rule,
        states: &mut States<u16>,
        cx: &DeviceCx<'_>,
        s: &Sample,
    ) -> Option<Alert> {
        if self.windowed {
            return None;
        }
        let state = states.get::<Self>(rule);
        let speed = s.get(Field::SpeedKmh)?;
        let occupancy = s.get(Field::OccupancyPct)?;
        let step = self.observe(state, speed, Some(occupancy), s.ts)?;
        let ev = Evidence::new(speed, "km/h", self.speed_below_kmh, Timestamp(s.ts), s.seq);
        Some(alert::one_level(rule, cx.device, step, self.severity, ev))
    }

    fn on_traffic_windows(
        &self,
        rule: &Rule,
        states: &mut States<u16>,
        cx: &DeviceCx<'_>,
        windows: &[TrafficMean],
        out: &mut Vec<EngineOutput>,
    ) {
        if !self.windowed {
            return;
        }
        let state = states.get::<Self>(rule);
        for &(end, speed, occupancy) in windows {
            // A window without speeds (no vehicles) says nothing.
            let Some(speed) = speed else { continue };
            if let Some(step) = self.observe(state, speed, occupancy, end) {
                let mut ev = Evidence::new(speed, "km/h", self.speed_below_kmh, Timestamp(end), 0);
                ev.window_s = Some((crate::windows::TRAFFIC_WINDOW_MS / 1000) as u32);
                out.push(EngineOutput::alert(alert::one_level(
                    rule,
                    cx.device,
                    step,
                    self.severity,
                    ev,
                )));
            }
        }
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
            occupancy_above_pct: Some(30.0),
            for_ms: 600_000,
            speed_margin_kmh: 5.0,
            occupancy_margin_pct: 5.0,
            severity: Severity::Moderate,
            windowed: false,
        };
        let mut s = CongestionState::default();
        assert_eq!(r.observe(&mut s, 10.0, Some(40.0), 0), None);
        assert_eq!(r.observe(&mut s, 10.0, Some(40.0), 300_000), None);
        assert_eq!(
            r.observe(&mut s, 10.0, Some(40.0), 600_000)
                .map(|s| s.level),
            Some(1)
        );
        assert_eq!(
            r.observe(&mut s, 17.0, Some(40.0), 900_000),
            None,
            "inside the margin"
        );
        assert_eq!(
            r.observe(&mut s, 21.0, Some(40.0), 1_200_000)
                .map(|s| s.level),
            Some(0)
        );
        // A break in the condition restarts the clock.
        assert_eq!(r.observe(&mut s, 10.0, Some(40.0), 1_500_000), None);
        assert_eq!(r.observe(&mut s, 40.0, Some(10.0), 1_800_000), None);
        assert_eq!(r.observe(&mut s, 10.0, Some(40.0), 2_100_000), None);
    }
}
