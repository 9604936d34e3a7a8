//! `rainfall`: a rain gauge's rolling total (1 h, 3 h, 6 h or 24 h, from
//! [`crate::windows`]) against ordered levels, with hysteresis.
//!
//! ```toml
//! [[rule]]
//! id = "rain_3h"
//! kind = "rainfall"
//! window = "3h"                                  # 1h | 3h | 6h | 24h
//! levels = [{ name = "Mưa to", value = 50 }, { name = "Mưa rất to", value = 100, severity = "severe" }]
//! hysteresis = 5                                 # mm; default a tenth of the first level
//! ```
//!
//! A total still missing part of its window (the gauge started reporting
//! within it) is a lower bound: it can raise the level, never lower it.

use std::time::Duration;

use ioc_schemas::{Evidence, Timestamp};
use serde::Deserialize;

use super::alert::{self, Step};
use super::kind::{Check, DeviceCx, LevelSpec, RainTotal, RuleKind, States};
use super::threshold::LevelState;
use super::{Level, Rule};
use crate::sample::Field;
use crate::windows::RAIN_WINDOWS_MS;
use ioc_schemas::EngineOutput;

/// A `rainfall` rule's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Rainfall {
    /// Window length, ms (a multiple of the rainfall bucket).
    pub window_ms: i64,
    /// Levels of the total, in mm, increasing.
    pub levels: Vec<Level>,
    /// How far below a level the total must fall to leave it, mm.
    pub hysteresis: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    #[serde(with = "humantime_serde")]
    window: Duration,
    levels: Vec<LevelSpec>,
    #[serde(default)]
    hysteresis: Option<f64>,
}

impl Rainfall {
    /// A rolling window with its levels and hysteresis (default: a tenth
    /// of the first level), checked; `zone_rainfall` reads the same keys.
    pub(crate) fn checked(
        check: &mut Check<'_>,
        at: &str,
        window: Duration,
        levels: Vec<LevelSpec>,
        hysteresis: Option<f64>,
    ) -> Rainfall {
        let window_ms = window.as_millis() as i64;
        if !RAIN_WINDOWS_MS.contains(&window_ms) {
            check.problem(at, "window must be one of 1h, 3h, 6h, 24h");
        }
        let levels = check.levels(at, levels, false);
        let hysteresis =
            hysteresis.unwrap_or_else(|| levels.first().map_or(0.0, |l| l.value * 0.1));
        check.non_negative(at, "hysteresis", hysteresis);
        Rainfall {
            window_ms,
            levels,
            hysteresis,
        }
    }

    /// Applies a window total. An incomplete total is a lower bound: it
    /// can raise the level, never lower it.
    pub fn observe(
        &self,
        state: &mut LevelState,
        total_mm: f64,
        complete: bool,
        ts: i64,
    ) -> Option<Step> {
        state.observe(
            total_mm,
            ts,
            (&self.levels, 1.0),
            self.hysteresis,
            (1, 0),
            complete,
        )
    }
}

impl RuleKind for Rainfall {
    const NAME: &'static str = "rainfall";
    const TITLE: (&'static str, &'static str) = ("Lượng mưa", "Rainfall");
    type State = LevelState;

    fn parse(check: &mut Check<'_>, at: &str, table: toml::Table) -> Option<Self> {
        let s: Spec = check.spec(at, table)?;
        Some(Rainfall::checked(
            check,
            at,
            s.window,
            s.levels,
            s.hysteresis,
        ))
    }

    fn field(&self) -> Option<Field> {
        Some(Field::RainfallMm)
    }

    fn on_rain_totals(
        &self,
        rule: &Rule,
        states: &mut States<u16>,
        cx: &DeviceCx<'_>,
        totals: &[RainTotal],
        out: &mut Vec<EngineOutput>,
    ) {
        let state = states.get::<Self>(rule);
        for &(ts, window, total, complete, revision) in
            totals.iter().filter(|c| c.1 == self.window_ms)
        {
            if let Some(step) = self.observe(state, total, complete, ts) {
                let mut ev = Evidence::new(
                    total,
                    "mm",
                    alert::level_value(&self.levels, step),
                    Timestamp(ts),
                    0,
                );
                ev.window_s = Some((window / 1000) as u32);
                ev.complete = Some(complete);
                let mut a = alert::build(rule, cx.device, cx.device.pos, step, &self.levels, ev);
                a.revision = revision;
                out.push(EngineOutput::alert(a));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ioc_schemas::Severity;

    use super::*;

    fn levels(values: &[f64]) -> Vec<Level> {
        values
            .iter()
            .enumerate()
            .map(|(i, &value)| Level {
                name: format!("L{}", i + 1),
                value,
                severity: Severity::Minor,
            })
            .collect()
    }

    #[test]
    fn an_incomplete_rainfall_total_only_raises() {
        let r = Rainfall {
            window_ms: 3_600_000,
            levels: levels(&[50.0, 100.0]),
            hysteresis: 5.0,
        };
        let mut s = LevelState::default();
        assert_eq!(r.observe(&mut s, 60.0, false, 0).map(|s| s.level), Some(1));
        assert_eq!(r.observe(&mut s, 10.0, false, 1), None);
        assert_eq!(r.observe(&mut s, 10.0, true, 2).map(|s| s.level), Some(0));
    }
}
