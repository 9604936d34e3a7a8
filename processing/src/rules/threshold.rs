//! `threshold`: a reading's field against ordered levels (BĐ1–BĐ3 from the
//! registry, reservoir levels, fixed values), with hysteresis and a minimum
//! duration; and the level machinery [`LevelState`] that `rainfall` shares.
//!
//! ```toml
//! [[rule]]
//! id = "river_level"
//! kind = "threshold"
//! field = "water_level_m"     # any numeric field of the reading
//! levels = "registry"         # or [{ name = "High", value = 4.5, severity = "moderate" }, ...]
//! hysteresis = 0.2            # how far back past a level to leave it
//! below = false               # true: low values alarm (levels decrease)
//! min_samples = 1             # readings at a higher level before raising it
//! min_duration = "0s"         # time at a higher level before raising it
//! ```
//!
//! A subject is at level k when its value reached the k-th level. It rises
//! as soon as a value reaches a higher level (after `min_samples` readings
//! and `min_duration` at or above it, when configured); it falls from level
//! k only when a value drops more than the hysteresis margin below level
//! k, so readings that wobble around a level never make the alert flap.
//! A `below` threshold (battery low) mirrors all of this.

use std::collections::HashSet;
use std::time::Duration;

use ioc_devices::DeviceIndex;
use ioc_schemas::{Alert, DeviceKind, Evidence, Timestamp};
use serde::{Deserialize, Serialize};

use super::alert::{self, Step, Tracker};
use super::kind::{Check, DeviceCx, LevelSpec, RuleKind, States};
use super::{Level, Levels, Rule, registry_levels};
use crate::sample::{Field, Sample};

/// The level after `value`, given the current level, the level values
/// (strictly increasing) and the hysteresis margin (≥ 0).
#[cfg(test)]
pub fn next_level(current: u8, value: f64, levels: &[f64], margin: f64) -> u8 {
    next_level_by(current, value, levels.len(), |i| levels[i], margin)
}

/// [`next_level`] over `count` levels whose values `level(i)` gives (no
/// allocation on the per-reading path).
fn next_level_by(
    current: u8,
    value: f64,
    count: usize,
    level: impl Fn(usize) -> f64,
    margin: f64,
) -> u8 {
    let reached = (0..count).take_while(|&i| value >= level(i)).count() as u8;
    if reached >= current {
        return reached;
    }
    // Falling: leave level k only when clearly below it.
    let mut k = current.min(count as u8);
    while k > reached && value < level(usize::from(k) - 1) - margin {
        k -= 1;
    }
    k
}

/// A `threshold` rule's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    /// The watched field.
    pub field: Field,
    /// The levels.
    pub levels: Levels,
    /// Whether the alarm is for low values (levels then decrease).
    pub below: bool,
    /// How far back past a level the value must go to leave it.
    pub hysteresis: f64,
    /// Readings at or beyond a higher level before it is raised.
    pub min_samples: u32,
    /// Time at or beyond a higher level before it is raised, ms.
    pub min_duration_ms: i64,
}

/// Per-subject state of a level rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LevelState {
    /// The episode.
    pub tracker: Tracker,
    pending: Option<Pending>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Pending {
    level: u8,
    since_ms: i64,
    samples: u32,
}

super::alert::episode_in!(LevelState, tracker);

impl LevelState {
    /// The current level.
    pub fn level(&self) -> u8 {
        self.tracker.level()
    }

    /// Applies a value: `levels` are the levels (increasing values, times
    /// `sign`); a higher level is raised after `(min_samples,
    /// min_duration_ms)` at or beyond it; `can_fall` is false when the
    /// value is only a lower bound.
    pub fn observe(
        &mut self,
        value: f64,
        ts: i64,
        (levels, sign): (&[Level], f64),
        margin: f64,
        (min_samples, min_duration_ms): (u32, i64),
        can_fall: bool,
    ) -> Option<Step> {
        let current = self.tracker.level();
        let candidate = next_level_by(
            current,
            sign * value,
            levels.len(),
            |i| sign * levels[i].value,
            margin,
        );
        if candidate > current {
            let p = self.pending.get_or_insert(Pending {
                level: candidate,
                since_ms: ts,
                samples: 0,
            });
            p.level = p.level.min(candidate);
            p.samples += 1;
            if p.samples < min_samples.max(1) || ts - p.since_ms < min_duration_ms {
                return None;
            }
            let level = p.level;
            self.pending = None;
            return self.tracker.step(level, ts);
        }
        self.pending = None;
        if candidate < current && !can_fall {
            return None;
        }
        self.tracker.step(candidate, ts)
    }
}

impl Threshold {
    /// Applies a reading's value, with this device's levels.
    pub fn observe(
        &self,
        state: &mut LevelState,
        levels: &[Level],
        value: f64,
        ts: i64,
    ) -> Option<Step> {
        let sign = if self.below { -1.0 } else { 1.0 };
        state.observe(
            value,
            ts,
            (levels, sign),
            self.hysteresis,
            (self.min_samples, self.min_duration_ms),
            true,
        )
    }
}

/// The rules file's `levels`: `"registry"` or a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum LevelsSpec {
    Named(String),
    Fixed(Vec<LevelSpec>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    field: Field,
    levels: LevelsSpec,
    #[serde(default)]
    below: bool,
    #[serde(default)]
    hysteresis: f64,
    #[serde(default = "one")]
    min_samples: u32,
    #[serde(default, with = "humantime_serde")]
    min_duration: Option<Duration>,
}

fn one() -> u32 {
    1
}

impl RuleKind for Threshold {
    const NAME: &'static str = "threshold";
    const TITLE: (&'static str, &'static str) = ("Ngưỡng", "Threshold");
    type State = LevelState;

    fn parse(check: &mut Check<'_>, at: &str, table: toml::Table) -> Option<Self> {
        let s: Spec = check.spec(at, table)?;
        check.non_negative(at, "hysteresis", s.hysteresis);
        let levels = match s.levels {
            LevelsSpec::Named(n) if n == "registry" => Levels::Registry,
            LevelsSpec::Named(n) => {
                check.problem(
                    at,
                    format!("levels: {n:?} is neither \"registry\" nor a list"),
                );
                Levels::Fixed(Vec::new())
            }
            LevelsSpec::Fixed(l) => Levels::Fixed(check.levels(at, l, s.below)),
        };
        Some(Threshold {
            field: s.field,
            levels,
            below: s.below,
            hysteresis: s.hysteresis,
            min_samples: s.min_samples.max(1),
            min_duration_ms: s.min_duration.map_or(0, |d| d.as_millis() as i64),
        })
    }

    fn field(&self) -> Option<Field> {
        Some(self.field)
    }

    fn check_devices(
        &self,
        check: &mut Check<'_>,
        at: &str,
        kinds: &[DeviceKind],
        only: Option<&HashSet<DeviceIndex>>,
    ) {
        if self.levels != Levels::Registry {
            return;
        }
        let any = check.registry.devices().iter().enumerate().any(|(i, d)| {
            kinds.contains(&d.kind)
                && only.is_none_or(|s| s.contains(&(i as DeviceIndex)))
                && !registry_levels(d).is_empty()
        });
        if !any {
            check.problem(
                at,
                "levels = \"registry\", but no selected device has levels in the registry",
            );
        }
    }

    fn sets_device_alarm(&self) -> bool {
        true
    }

    fn judges_registry_levels(&self) -> bool {
        self.levels == Levels::Registry
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
        let levels = cx.rules.levels(&self.levels, s.device);
        if levels.is_empty() {
            return None;
        }
        let step = self.observe(state, levels, value, s.ts)?;
        let threshold = alert::level_value(levels, step);
        let ev = Evidence::new(value, self.field.unit(), threshold, Timestamp(s.ts), s.seq);
        Some(alert::build(
            rule,
            cx.device,
            cx.device.pos,
            step,
            levels,
            ev,
        ))
    }
}

#[cfg(test)]
mod tests {
    use ioc_schemas::Severity;
    use proptest::prelude::*;

    use super::*;

    const LEVELS: [f64; 3] = [3.0, 4.0, 5.0];

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

    fn rule(margin: f64) -> Threshold {
        Threshold {
            field: Field::WaterLevelM,
            levels: Levels::Fixed(levels(&LEVELS)),
            below: false,
            hysteresis: margin,
            min_samples: 1,
            min_duration_ms: 0,
        }
    }

    /// The naive definition: the highest k whose level was reached, except
    /// that a level is kept while the value stays within the margin below it.
    fn reference(current: u8, value: f64, margin: f64) -> u8 {
        (0..=3u8)
            .rev()
            .find(|&k| {
                k == 0
                    || value >= LEVELS[usize::from(k) - 1]
                    || (k <= current && value >= LEVELS[usize::from(k) - 1] - margin)
            })
            .unwrap_or(0)
    }

    #[test]
    fn opens_escalates_lowers_and_resolves_one_episode() {
        let r = rule(0.2);
        let l = levels(&LEVELS);
        let mut s = LevelState::default();
        let steps: Vec<_> = [2.0, 3.1, 4.2, 3.9, 3.7, 2.9, 2.7]
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| r.observe(&mut s, &l, v, 1000 * i as i64))
            .map(|s| (s.level, s.version, s.opened_ms))
            .collect();
        assert_eq!(
            steps,
            vec![(1, 1, 1000), (2, 2, 1000), (1, 3, 1000), (0, 4, 1000)]
        );
    }

    #[test]
    fn below_thresholds_mirror_above() {
        let r = Threshold {
            below: true,
            ..rule(0.1)
        };
        let l = levels(&[11.8, 11.2]);
        let mut s = LevelState::default();
        assert_eq!(r.observe(&mut s, &l, 12.4, 0), None);
        assert_eq!(r.observe(&mut s, &l, 11.7, 1).map(|s| s.level), Some(1));
        assert_eq!(r.observe(&mut s, &l, 11.85, 2), None, "inside the margin");
        assert_eq!(r.observe(&mut s, &l, 11.0, 3).map(|s| s.level), Some(2));
        assert_eq!(r.observe(&mut s, &l, 12.0, 4).map(|s| s.level), Some(0));
    }

    #[test]
    fn minimum_samples_and_duration_delay_opening() {
        let r = Threshold {
            min_samples: 3,
            min_duration_ms: 10_000,
            ..rule(0.0)
        };
        let l = levels(&LEVELS);
        let mut s = LevelState::default();
        assert_eq!(r.observe(&mut s, &l, 4.5, 0), None);
        assert_eq!(r.observe(&mut s, &l, 3.5, 5_000), None);
        // Three samples, but only 9 s.
        assert_eq!(r.observe(&mut s, &l, 4.5, 9_000), None);
        // The level granted is the lowest seen while pending.
        let step = r.observe(&mut s, &l, 4.5, 10_000).unwrap();
        assert_eq!((step.level, step.opened_ms), (1, 10_000));
        // A dip resets a pending escalation.
        assert_eq!(r.observe(&mut s, &l, 4.1, 11_000), None);
        assert_eq!(r.observe(&mut s, &l, 3.5, 12_000), None);
        assert_eq!(r.observe(&mut s, &l, 4.1, 13_000), None);
    }

    proptest! {
        #[test]
        fn matches_the_reference(values in prop::collection::vec(0.0f64..7.0, 1..200), margin in 0.0f64..0.9) {
            let mut level = 0;
            for v in values {
                let expected = reference(level, v, margin);
                level = next_level(level, v, &LEVELS, margin);
                prop_assert_eq!(level, expected);
            }
        }

        #[test]
        fn no_flapping_inside_the_margin(k in 1u8..=3, margin in 0.05f64..0.9, wiggle in prop::collection::vec(0.0f64..1.0, 1..300)) {
            let r = rule(margin);
            let l = levels(&LEVELS);
            let mut s = LevelState::default();
            let low = LEVELS[usize::from(k) - 1] - margin;
            let high = if k == 3 { 7.0 } else { LEVELS[usize::from(k)] - 1e-9 };
            prop_assert!(r.observe(&mut s, &l, LEVELS[usize::from(k) - 1], 1).is_some());
            for (i, w) in wiggle.into_iter().enumerate() {
                let v = low + w * (high - low);
                prop_assert!(r.observe(&mut s, &l, v, 2 + i as i64).is_none(), "changed at {}", v);
                prop_assert_eq!(s.level(), k);
            }
        }
    }
}
