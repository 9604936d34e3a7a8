//! What every rule kind shares: the episode tracker and the alert it builds.
//!
//! A rule computes a level for a subject (0 = nothing to report, 1.. = its
//! levels). [`Tracker::step`] turns a change of level into an episode step:
//! the first level opens an episode (its event time becomes part of the
//! alert id), later changes escalate or lower it, level 0 resolves it.
//! [`build`] makes the [`Alert`] of a step.

use ioc_schemas::{Alert, AlertStatus, DeviceInfo, Evidence, Severity, Timestamp};
use serde::{Deserialize, Serialize};

use super::{Level, Rule};

/// A subject's current level and open episode under one rule (16 bytes:
/// there is one per device and rule).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tracker {
    /// Event time the open episode opened.
    opened_ms: i64,
    /// Version of the open episode's alert; 0 when none is open.
    version: u32,
    level: u8,
    /// Highest level of the open episode.
    peak: u8,
}

/// Where a rule's state keeps its episode (none for a kind whose every
/// event is an alert of its own).
pub trait Episode {
    /// The episode.
    fn episode(&self) -> Option<&Tracker>;
    /// The episode, to change it.
    fn episode_mut(&mut self) -> Option<&mut Tracker>;
}

impl Episode for Tracker {
    fn episode(&self) -> Option<&Tracker> {
        Some(self)
    }
    fn episode_mut(&mut self) -> Option<&mut Tracker> {
        Some(self)
    }
}

impl Episode for () {
    fn episode(&self) -> Option<&Tracker> {
        None
    }
    fn episode_mut(&mut self) -> Option<&mut Tracker> {
        None
    }
}

/// `episode_in!(State.field)`: the state's episode is its `Tracker` field.
macro_rules! episode_in {
    ($state:ty, $field:ident) => {
        impl $crate::rules::alert::Episode for $state {
            fn episode(&self) -> Option<&$crate::rules::alert::Tracker> {
                Some(&self.$field)
            }
            fn episode_mut(&mut self) -> Option<&mut $crate::rules::alert::Tracker> {
                Some(&mut self.$field)
            }
        }
    };
}
pub(crate) use episode_in;

/// A change of level within an episode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// Level before the change.
    pub previous: u8,
    /// Level after it (0 = resolved).
    pub level: u8,
    /// Highest level of the episode.
    pub peak: u8,
    /// Event time the episode opened.
    pub opened_ms: i64,
    /// Version of the alert after this change.
    pub version: u32,
}

impl Step {
    /// The level an alert of this step shows: the new level, or the
    /// episode's peak once resolved.
    pub fn shown(&self) -> u8 {
        if self.level == 0 {
            self.peak
        } else {
            self.level
        }
    }
}

/// The value of the level an alert of `step` shows (0 when none).
pub fn level_value(levels: &[Level], step: Step) -> f64 {
    levels
        .get(usize::from(step.shown()).saturating_sub(1))
        .map_or(0.0, |l| l.value)
}

impl Tracker {
    /// The current level (0 = none).
    pub fn level(&self) -> u8 {
        self.level
    }

    /// Moves to `level` at event time `ts`; the step, if the level changed.
    pub fn step(&mut self, level: u8, ts: i64) -> Option<Step> {
        if level == self.level {
            return None;
        }
        let previous = self.level;
        self.level = level;
        if self.version == 0 {
            if level == 0 {
                return None;
            }
            self.opened_ms = ts;
            self.peak = level;
        } else {
            self.peak = self.peak.max(level);
        }
        self.version += 1;
        let step = Step {
            previous,
            level,
            peak: self.peak,
            opened_ms: self.opened_ms,
            version: self.version,
        };
        if level == 0 {
            self.version = 0;
            self.peak = 0;
        }
        Some(step)
    }
}

/// The alert of a step: `levels` are the rule's levels for this device
/// (the level shown once resolved is the episode's peak).
pub fn build(
    rule: &Rule,
    device: &DeviceInfo,
    pos: [f64; 2],
    step: Step,
    levels: &[Level],
    evidence: Evidence,
) -> Alert {
    let name = &device.name;
    let value = format!("{} {}", fmt_value(evidence.value), evidence.unit);
    let titles = |level_name: &str| {
        if step.level == 0 {
            (
                format!(
                    "Đã hết: {} ({level_name}) tại {name}, hiện {value}",
                    rule.title_vi
                ),
                format!(
                    "Cleared: {} ({level_name}) at {name}, now {value}",
                    rule.title_en
                ),
            )
        } else {
            let (vi, en) = if step.level > step.previous {
                ("lên", "up to")
            } else {
                ("giảm về", "down to")
            };
            let lv = if level_name.is_empty() {
                String::new()
            } else {
                format!(" {vi} {level_name}")
            };
            let le = if level_name.is_empty() {
                String::new()
            } else {
                format!(" {en} {level_name}")
            };
            (
                format!("{}{lv} tại {name}: {value}", rule.title_vi),
                format!("{}{le} at {name}: {value}", rule.title_en),
            )
        }
    };
    assemble(
        rule,
        &device.id,
        pos,
        device.area.clone(),
        step,
        levels,
        evidence,
        titles,
    )
}

/// The alert of a step of a rule with one unnamed level of `severity`
/// (rate of change, surge, congestion, speed drop) about a device.
pub fn one_level(
    rule: &Rule,
    device: &DeviceInfo,
    step: Step,
    severity: Severity,
    evidence: Evidence,
) -> Alert {
    let level = [Level {
        name: String::new(),
        value: 0.0,
        severity,
    }];
    build(rule, device, device.pos, step, &level, evidence)
}

/// The alert of a step about any subject (a device, a plate, a zone):
/// `titles` gets the name of the level shown and returns the Vietnamese
/// and English titles.
#[allow(clippy::too_many_arguments)]
pub fn assemble(
    rule: &Rule,
    subject: &str,
    pos: [f64; 2],
    area: Vec<ioc_schemas::AreaRef>,
    step: Step,
    levels: &[Level],
    evidence: Evidence,
    titles: impl FnOnce(&str) -> (String, String),
) -> Alert {
    let level = levels.get(usize::from(step.shown()).saturating_sub(1));
    let (level_name, severity) =
        level.map_or(("", Severity::Minor), |l| (l.name.as_str(), l.severity));
    let (title_vi, title_en) = titles(level_name);
    let ts = evidence.ts;
    Alert {
        id: format!("{}:{}:{}", rule.id, subject, step.opened_ms),
        rule: rule.id.to_string(),
        subject: subject.to_owned(),
        status: if step.level == 0 {
            AlertStatus::Resolved
        } else {
            AlertStatus::Open
        },
        severity,
        level: step.level,
        level_name: level_name.to_owned(),
        peak_level: step.peak,
        title_vi,
        title_en,
        pos,
        area,
        zones: Vec::new(),
        nearest: Vec::new(),
        evidence,
        opened_at: Timestamp(step.opened_ms),
        updated_at: ts,
        resolved_at: (step.level == 0).then_some(ts),
        version: step.version,
        revision: false,
        handling: Default::default(),
    }
}

/// The alert of a step about a subject that is not a registered device (a
/// plate, a zone): titled `{rule} – {name}: {what}`.
#[allow(clippy::too_many_arguments)]
pub fn subject_alert(
    rule: &Rule,
    subject: &str,
    name: &str,
    pos: [f64; 2],
    area: Vec<ioc_schemas::AreaRef>,
    step: Step,
    levels: &[Level],
    evidence: Evidence,
    what: (&str, &str),
) -> Alert {
    let cleared = if step.level == 0 {
        ("Đã hết: ", "Cleared: ")
    } else {
        ("", "")
    };
    assemble(rule, subject, pos, area, step, levels, evidence, |_| {
        (
            format!("{}{} – {name}: {}", cleared.0, rule.title_vi, what.0),
            format!("{}{} – {name}: {}", cleared.1, rule.title_en, what.1),
        )
    })
}

/// The resolution of an open alert whose rule was removed from the rules
/// (or changed kind), about a registered device.
pub fn removed(rule: &Rule, device: &DeviceInfo, step: Step, now: i64) -> Alert {
    let ev = Evidence::new(0.0, "", 0.0, Timestamp(now), 0);
    let mut a = build(rule, device, device.pos, step, &[], ev);
    a.title_vi = format!("Đã hết: quy tắc {} đã bị gỡ bỏ ({})", rule.id, device.name);
    a.title_en = format!("Cleared: rule {} was removed ({})", rule.id, device.name);
    a
}

/// A value with at most two decimals and no trailing zeros.
pub fn fmt_value(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_episode_one_id_versions_count_changes() {
        let mut t = Tracker::default();
        assert_eq!(t.step(0, 1), None);
        let a = t.step(1, 10).unwrap();
        let b = t.step(3, 20).unwrap();
        let c = t.step(0, 30).unwrap();
        assert_eq!((a.opened_ms, a.version, a.peak), (10, 1, 1));
        assert_eq!((b.opened_ms, b.version, b.peak, b.previous), (10, 2, 3, 1));
        assert_eq!((c.opened_ms, c.version, c.level), (10, 3, 0));
        assert_eq!(t.step(2, 40).unwrap().opened_ms, 40);
    }

    #[test]
    fn values_print_short() {
        assert_eq!(fmt_value(3.0), "3");
        assert_eq!(fmt_value(3.456), "3.46");
        assert_eq!(fmt_value(-0.001), "0");
    }
}
