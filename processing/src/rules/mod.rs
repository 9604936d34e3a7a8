//! Rules as data: the rules file, its validation, and each rule kind.
//!
//! A rules file (TOML; `deploy/rules.toml` documents every kind) holds
//! `[[rule]]` tables and `[[maintenance]]` windows. [`RuleSet::parse`]
//! checks the whole file against the registry and reports every problem at
//! once, each with the rule's id.
//!
//! Each kind is one module: its settings, how they are read and checked,
//! its per-subject state (a serializable value), how the engine's moments
//! step it, and the alerts it raises with their titles. All implement
//! [`RuleKind`](kind::RuleKind) ([`kind`] says which hook runs when); [`registry`] is the
//! closed list that makes them a [`Logic`] and a [`RuleState`], the only
//! place besides the modules that names a kind.
//!
//! | kind | module | watches |
//! |---|---|---|
//! | `threshold` | [`threshold`] | a field against ordered levels (BĐ1–BĐ3, reservoir levels, fixed values) with hysteresis and a minimum duration |
//! | `rate_of_change` | [`rate_of_change`] | the least-squares slope of a field over a window, with the projected time to the next level |
//! | `rainfall` | [`rainfall`] | rolling rainfall totals ([`crate::windows`]) against levels |
//! | `staleness` | [`staleness`] | silence longer than k × the expected interval |
//! | `congestion` | [`congestion`] | slow and full segments |
//! | `speed_drop` | [`speed_drop`] | sudden speed drops |
//! | `surge` | [`surge`] | a jump of a field within a window (reservoir outflow: gates opening) |
//! | `watchlist` | [`watchlist`] | watch-listed plates read by a camera |
//! | `geofence` | [`geofence`] | moving subjects (plates, devices with `pos`) inside zones |
//! | `cloned_plate` | [`cloned_plate`] | one plate read in two places too far apart for the time between |
//! | `zone_rainfall` | [`zone_rainfall`] | rolling rainfall at several gauges of one zone |
//!
//! Alerts of every kind share [`alert::Tracker`]: deterministic ids
//! (`{rule}:{subject}:{event time the episode opened}`), levels, versions
//! and bilingual titles.
//!
//! # Adding a kind
//!
//! A new module with a type implementing [`RuleKind`](kind::RuleKind), and one line in
//! [`registry`]. Every hook has a default, so a kind writes only the
//! moments it reacts to. `example.rs` is a whole one, compiled and run by
//! the tests: `battery_low`, a battery below a fixed voltage, read from a
//! rules file and stepped by the engine's device table like every other
//! kind. Then show it in `deploy/rules.toml`.

pub mod alert;
pub mod cloned_plate;
pub mod congestion;
#[cfg(test)]
mod example;
pub mod file;
pub mod geofence;
pub mod history;
pub mod kind;
pub mod rainfall;
pub mod rate_of_change;
pub mod registry;
pub mod speed_drop;
pub mod staleness;
pub mod surge;
pub mod threshold;
pub mod watchlist;
pub mod zone_rainfall;

use std::collections::HashSet;
use std::sync::Arc;

use ioc_devices::{DeviceIndex, Registry};
use ioc_schemas::{AssetKind, DeviceInfo, DeviceKind, Severity, ZoneKind};

pub use file::{RuleErrors, RuleSet};
pub use registry::Logic;

use crate::sample::Field;

/// One configured rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Unique id, the first part of its alerts' ids.
    pub id: Arc<str>,
    /// Device kinds it watches.
    pub kinds: Vec<DeviceKind>,
    /// When set, only these devices.
    pub only: Option<HashSet<DeviceIndex>>,
    /// What the alert is about, in Vietnamese (e.g. `Mực nước sông`).
    pub title_vi: String,
    /// What the alert is about, in English (e.g. `River water level`).
    pub title_en: String,
    /// The kind and its parameters.
    pub logic: Logic,
    /// Its position in the set's rules: the key of its per-device state.
    pub position: u16,
    /// The nearest assets its alerts carry.
    pub nearest: Option<Nearest>,
}

impl Rule {
    /// Whether the rule watches this device.
    pub fn applies(&self, index: DeviceIndex, device: &DeviceInfo) -> bool {
        self.kinds.contains(&device.kind) && self.only.as_ref().is_none_or(|s| s.contains(&index))
    }
}

/// The nearest assets a rule's alerts carry.
#[derive(Clone, Debug, PartialEq)]
pub struct Nearest {
    /// Asset kinds.
    pub kinds: Vec<AssetKind>,
    /// How many.
    pub count: usize,
    /// No farther than this, metres.
    pub within_m: Option<f64>,
}

/// The zones a rule watches: by kind, and optionally only these ids.
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneFilter {
    /// Kinds; empty means every kind.
    pub kinds: Vec<ZoneKind>,
    /// Ids; empty means every zone of the kinds.
    pub ids: Vec<String>,
}

impl ZoneFilter {
    /// Whether the filter takes this zone.
    pub fn takes(&self, zone: &ioc_devices::Zone) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&zone.reference.kind))
            && (self.ids.is_empty() || self.ids.contains(&zone.reference.id))
    }
}

/// One level of a rule: its name, the value that reaches it, its severity.
#[derive(Clone, Debug, PartialEq)]
pub struct Level {
    /// Name shown to operators, e.g. `BĐ2` or `Mưa rất to`.
    pub name: String,
    /// The value at or beyond which the level is reached.
    pub value: f64,
    /// CAP severity while at this level.
    pub severity: Severity,
}

/// Where a rule's levels come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Levels {
    /// The same levels for every device, strictly increasing (or decreasing
    /// for a `below` threshold).
    Fixed(Vec<Level>),
    /// Each device's own levels from the registry: BĐ1–BĐ3 for river gauges,
    /// normal and flood-control levels for reservoirs.
    Registry,
}

/// A device's levels from the registry.
pub fn registry_levels(device: &DeviceInfo) -> Vec<Level> {
    let t = &device.thresholds;
    if let Some(bd) = t.alarm_levels_m {
        let sev = [Severity::Minor, Severity::Moderate, Severity::Severe];
        return bd
            .iter()
            .zip(["BĐ1", "BĐ2", "BĐ3"])
            .zip(sev)
            .map(|((&value, name), severity)| Level {
                name: name.to_owned(),
                value,
                severity,
            })
            .collect();
    }
    let mut levels = Vec::new();
    if let Some(v) = t.normal_level_m {
        levels.push(Level {
            name: "MNDBT".to_owned(),
            value: v,
            severity: Severity::Moderate,
        });
    }
    if let Some(v) = t.flood_control_level_m
        && levels.last().is_none_or(|l| v > l.value)
    {
        levels.push(Level {
            name: "MN phòng lũ".to_owned(),
            value: v,
            severity: Severity::Severe,
        });
    }
    levels
}

/// A period during which a device's rules are not evaluated.
#[derive(Clone, Debug, PartialEq)]
pub struct Maintenance {
    /// The devices.
    pub devices: HashSet<DeviceIndex>,
    /// Start, event time (epoch ms), inclusive.
    pub from_ms: i64,
    /// End, event time (epoch ms), exclusive.
    pub to_ms: i64,
}

/// The default device kinds of a rule kind's field: those that report it.
pub fn default_kinds(field: Option<Field>) -> Vec<DeviceKind> {
    match field {
        Some(f) if f.is_traffic() => vec![DeviceKind::TrafficCounter],
        Some(Field::RainfallMm) => vec![DeviceKind::RainGauge],
        Some(Field::InflowM3s | Field::OutflowM3s | Field::GatesOpen) => {
            vec![DeviceKind::Reservoir]
        }
        Some(Field::WaterLevelM | Field::FlowM3s) => vec![DeviceKind::RiverGauge],
        Some(Field::BatteryV | Field::SignalDbm) => vec![
            DeviceKind::RiverGauge,
            DeviceKind::RainGauge,
            DeviceKind::Reservoir,
        ],
        Some(_) | None => DeviceKind::ALL.to_vec(),
    }
}

/// Devices of `kind` within `within_km` of `of`, nearest first (a surge's
/// downstream gauges).
pub(crate) fn devices_near(
    registry: &Registry,
    of: &DeviceInfo,
    kind: DeviceKind,
    within_km: f64,
) -> Vec<String> {
    if within_km <= 0.0 {
        return Vec::new();
    }
    let mut near: Vec<(f64, &str)> = registry
        .devices()
        .iter()
        .filter(|d| d.kind == kind && d.id != of.id)
        .map(|d| (ioc_devices::distance_km(of.pos, d.pos), d.id.as_str()))
        .filter(|(km, _)| *km <= within_km)
        .collect();
    near.sort_by(|a, b| a.0.total_cmp(&b.0));
    near.into_iter().map(|(_, id)| id.to_owned()).collect()
}
