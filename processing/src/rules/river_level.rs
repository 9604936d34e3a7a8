//! River-gauge alarm levels (BĐ1, BĐ2, BĐ3) with hysteresis.
//!
//! A gauge is at level k when its water level reached BĐk. It rises to a
//! higher level as soon as a reading reaches that level's threshold; it
//! falls from level k only when a reading drops more than `margin` below
//! BĐk. Readings that oscillate inside the margin never change the level,
//! so an alert neither flaps nor floods operators with notifications.
//!
//! [`RiverLevelRule::observe`] turns the level change into an [`Alert`]:
//! opened on the first level, updated (escalated or lowered) on a change of
//! level, resolved when the level returns to zero. The alert id is
//! `river_level:{device}:{event time the episode opened, epoch ms}`, so a
//! replay of the same readings yields the same alerts.

use ioc_schemas::{Alert, AlertStatus, DeviceInfo, Evidence, Severity, Timestamp};
use serde::{Deserialize, Serialize};

/// The rule name in alert ids and metrics.
pub const RULE: &str = "river_level";

/// Names of the national flood alarm levels.
pub const LEVEL_NAMES: [&str; 4] = ["", "BĐ1", "BĐ2", "BĐ3"];

/// The alarm level after `value`, given the current level, the thresholds
/// (strictly increasing) and the hysteresis margin (metres, ≥ 0).
pub fn next_level(current: u8, value: f64, levels: &[f64; 3], margin: f64) -> u8 {
    let reached = levels.iter().filter(|&&l| value >= l).count() as u8;
    if reached >= current {
        return reached;
    }
    // Falling: leave level k only when clearly below BĐk.
    let mut k = current.min(3);
    while k > reached && value < levels[usize::from(k) - 1] - margin {
        k -= 1;
    }
    k
}

fn severity(level: u8) -> Severity {
    match level {
        0 | 1 => Severity::Minor,
        2 => Severity::Moderate,
        _ => Severity::Severe,
    }
}

/// Per-gauge state: the current level and the open episode, if any.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GaugeState {
    level: u8,
    episode: Option<Episode>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Episode {
    opened_ms: i64,
    peak: u8,
    version: u32,
}

impl GaugeState {
    /// The current level (0 = below BĐ1 with hysteresis).
    pub fn level(&self) -> u8 {
        self.level
    }
}

/// The river-level rule with its configuration.
#[derive(Clone, Copy, Debug)]
pub struct RiverLevelRule {
    /// How far below a level the water must fall to leave it, in metres.
    pub margin_m: f64,
}

impl RiverLevelRule {
    /// Applies one reading to a gauge's state and returns the alert change, if any.
    pub fn observe(
        &self,
        state: &mut GaugeState,
        device: &DeviceInfo,
        value: f64,
        ts: Timestamp,
        seq: u64,
    ) -> Option<Alert> {
        let levels = device.thresholds.alarm_levels_m?;
        let next = next_level(state.level, value, &levels, self.margin_m);
        if next == state.level {
            return None;
        }
        let previous = state.level;
        state.level = next;
        let episode = match (&mut state.episode, next) {
            (None, 0) => return None,
            (None, _) => state.episode.insert(Episode {
                opened_ms: ts.millis(),
                peak: next,
                version: 1,
            }),
            (Some(e), _) => {
                e.peak = e.peak.max(next);
                e.version += 1;
                e
            }
        };
        let shown = if next == 0 { episode.peak } else { next };
        let threshold = levels[usize::from(shown) - 1];
        let name = &device.name;
        let (title_vi, title_en) = if next == 0 {
            (
                format!("Mực nước {name} đã xuống dưới BĐ1: {value:.2} m"),
                format!("Water level at {name} back below alarm level 1 (BĐ1): {value:.2} m"),
            )
        } else {
            let level = LEVEL_NAMES[usize::from(next)];
            let (vi, en) = if next > previous {
                ("vượt", "above")
            } else {
                ("giảm về", "down to")
            };
            (
                format!("Mực nước {name} {vi} {level}: {value:.2} m"),
                format!("Water level at {name} {en} alarm level {next} ({level}): {value:.2} m"),
            )
        };
        let alert = Alert {
            id: format!("{RULE}:{}:{}", device.id, episode.opened_ms),
            rule: RULE.to_owned(),
            subject: device.id.clone(),
            status: if next == 0 {
                AlertStatus::Resolved
            } else {
                AlertStatus::Open
            },
            severity: severity(shown),
            level: next,
            level_name: LEVEL_NAMES[usize::from(shown)].to_owned(),
            peak_level: episode.peak,
            title_vi,
            title_en,
            pos: device.pos,
            area: device.area.clone(),
            evidence: Evidence {
                value,
                unit: "m".to_owned(),
                threshold,
                ts,
                seq,
            },
            opened_at: Timestamp(episode.opened_ms),
            updated_at: ts,
            resolved_at: (next == 0).then_some(ts),
            version: episode.version,
        };
        if next == 0 {
            state.episode = None;
        }
        Some(alert)
    }
}

#[cfg(test)]
mod tests {
    use ioc_schemas::{DeviceKind, Thresholds};
    use proptest::prelude::*;

    use super::*;

    const LEVELS: [f64; 3] = [3.0, 4.0, 5.0];

    fn gauge() -> DeviceInfo {
        DeviceInfo {
            id: "river-x".into(),
            kind: DeviceKind::RiverGauge,
            name: "Trạm X".into(),
            pos: [103.9, 21.3],
            area: vec![],
            expected_interval_s: 600,
            thresholds: Thresholds {
                alarm_levels_m: Some(LEVELS),
                ..Thresholds::default()
            },
        }
    }

    /// The naive definition: the level is the highest k whose threshold was
    /// reached, except that a level is kept while the value stays within the
    /// margin below its threshold.
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
    fn opens_escalates_lowers_and_resolves_one_alert() {
        let rule = RiverLevelRule { margin_m: 0.2 };
        let g = gauge();
        let mut s = GaugeState::default();
        let mut seen = Vec::new();
        for (i, v) in [2.0, 3.1, 4.2, 3.9, 3.7, 2.9, 2.7].into_iter().enumerate() {
            if let Some(a) = rule.observe(&mut s, &g, v, Timestamp(1000 * i as i64), i as u64) {
                seen.push((
                    a.id.clone(),
                    a.status,
                    a.level,
                    a.level_name.clone(),
                    a.version,
                ));
            }
        }
        let id = "river_level:river-x:1000".to_string();
        assert_eq!(
            seen,
            vec![
                (id.clone(), AlertStatus::Open, 1, "BĐ1".into(), 1),
                (id.clone(), AlertStatus::Open, 2, "BĐ2".into(), 2),
                (id.clone(), AlertStatus::Open, 1, "BĐ1".into(), 3),
                (id, AlertStatus::Resolved, 0, "BĐ2".into(), 4),
            ]
        );
    }

    #[test]
    fn a_new_episode_gets_a_new_id() {
        let rule = RiverLevelRule { margin_m: 0.1 };
        let g = gauge();
        let mut s = GaugeState::default();
        let a = rule.observe(&mut s, &g, 3.5, Timestamp(10), 1).unwrap();
        rule.observe(&mut s, &g, 1.0, Timestamp(20), 2).unwrap();
        let b = rule.observe(&mut s, &g, 3.5, Timestamp(30), 3).unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(b.version, 1);
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
            // Reach level k, then oscillate between BĐk - margin and just under BĐ(k+1).
            let rule = RiverLevelRule { margin_m: margin };
            let g = gauge();
            let mut s = GaugeState::default();
            let low = LEVELS[usize::from(k) - 1] - margin;
            let high = if k == 3 { 7.0 } else { LEVELS[usize::from(k)] - 1e-9 };
            let first = rule.observe(&mut s, &g, LEVELS[usize::from(k) - 1], Timestamp(1), 1);
            prop_assert!(first.is_some());
            for (i, w) in wiggle.into_iter().enumerate() {
                let v = low + w * (high - low);
                prop_assert!(rule.observe(&mut s, &g, v, Timestamp(2 + i as i64), 2 + i as u64).is_none(), "changed at {v}");
                prop_assert_eq!(s.level(), k);
            }
        }
    }
}
