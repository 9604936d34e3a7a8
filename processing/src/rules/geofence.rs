//! `geofence`: a moving subject (a plate read by cameras, or a device
//! reporting its own `pos`) inside a watched zone, or staying there longer
//! than the zone's `dwell_s`. One alert per subject while it is inside;
//! it clears when the subject has left every watched zone.
//!
//! ```toml
//! [[rule]]
//! id = "intrusion"
//! kind = "geofence"
//! zone_kinds = ["restricted"]  # and/or zones = ["dam-son-la"]
//! on = "enter"                 # enter | dwell
//! subjects = "all"             # all | plates | devices
//! ```
//!
//! Entering, leaving (beyond the zone's buffer) and dwelling are worked out
//! by the geo operator ([`crate::geo`]), which calls [`RuleKind::on_visits`].

use ioc_devices::Zone;
use ioc_schemas::{Alert, Evidence, Timestamp, ZoneKind};
use serde::Deserialize;

use super::alert::{Tracker, subject_alert};
use super::kind::{Check, RuleKind, States, VisitCx, severe};
use super::{Level, Rule, ZoneFilter};

/// When a `geofence` rule raises its alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeofenceOn {
    /// As soon as the subject is inside.
    Enter,
    /// Once it has been inside longer than the zone's `dwell_s`.
    Dwell,
}

/// Which moving subjects a rule looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subjects {
    /// Plates and devices.
    All,
    /// Plates read by cameras.
    Plates,
    /// Devices reporting their own position.
    Devices,
}

impl Subjects {
    /// Whether a subject of this sort is looked at.
    fn take(self, plate: bool) -> bool {
        match self {
            Subjects::All => true,
            Subjects::Plates => plate,
            Subjects::Devices => !plate,
        }
    }
}

/// A `geofence` rule's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Geofence {
    /// The zones it watches.
    pub zones: ZoneFilter,
    /// When it raises.
    pub on: GeofenceOn,
    /// Severity of its alerts.
    pub severity: ioc_schemas::Severity,
    /// Only plates (camera reads), only devices, or both.
    pub subjects: Subjects,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    #[serde(default)]
    zone_kinds: Vec<ZoneKind>,
    #[serde(default)]
    zones: Vec<String>,
    #[serde(default = "on_enter")]
    on: String,
    #[serde(default = "all_subjects")]
    subjects: String,
    #[serde(default = "severe")]
    severity: ioc_schemas::Severity,
}

fn on_enter() -> String {
    "enter".to_owned()
}

fn all_subjects() -> String {
    "all".to_owned()
}

impl RuleKind for Geofence {
    const NAME: &'static str = "geofence";
    const TITLE: (&'static str, &'static str) = ("Xâm nhập vùng giám sát", "Geofence");
    type State = Tracker;

    fn parse(check: &mut Check<'_>, at: &str, table: toml::Table) -> Option<Self> {
        let s: Spec = check.spec(at, table)?;
        let on = match s.on.as_str() {
            "enter" => GeofenceOn::Enter,
            "dwell" => GeofenceOn::Dwell,
            other => {
                check.problem(
                    at,
                    format!("on: {other:?} is neither \"enter\" nor \"dwell\""),
                );
                GeofenceOn::Enter
            }
        };
        let subjects = match s.subjects.as_str() {
            "all" => Subjects::All,
            "plates" => Subjects::Plates,
            "devices" => Subjects::Devices,
            other => {
                check.problem(
                    at,
                    format!("subjects: {other:?} is not \"all\", \"plates\" or \"devices\""),
                );
                Subjects::All
            }
        };
        Some(Geofence {
            zones: ZoneFilter {
                kinds: s.zone_kinds,
                ids: s.zones,
            },
            on,
            severity: s.severity,
            subjects,
        })
    }

    fn needs_positions(&self) -> bool {
        true
    }

    fn watches_zone(&self, zone: &Zone, plate: bool) -> bool {
        self.zones.takes(zone) && self.subjects.take(plate)
    }

    fn on_visits(
        &self,
        rule: &Rule,
        states: &mut States<std::sync::Arc<str>>,
        cx: &VisitCx<'_>,
    ) -> Option<Alert> {
        if !self.subjects.take(cx.plate) {
            return None;
        }
        let inside: Vec<&Zone> = cx
            .visits
            .iter()
            .filter(|v| self.on == GeofenceOn::Enter || v.dwelt)
            .filter_map(|v| cx.zones.find(&v.zone).map(|(_, z)| z))
            .filter(|z| self.zones.takes(z))
            .collect();
        let level = u8::from(!inside.is_empty());
        // Outside every zone and never alerted: nothing to track (a new
        // tracker would step from 0 to 0 and say nothing).
        if level == 0 && states.peek::<Self>(rule).is_none() {
            return None;
        }
        let names: Vec<String> = inside.iter().map(|z| z.reference.name.clone()).collect();
        let ids: Vec<String> = inside.iter().map(|z| z.reference.id.clone()).collect();
        let step = states.get::<Self>(rule).step(level, cx.ts)?;
        let mut ev = Evidence::new(ids.len() as f64, "zones", 1.0, Timestamp(cx.ts), 0);
        ev.related = ids;
        ev.plate = cx
            .plate
            .then(|| cx.subject.trim_start_matches("plate-").to_owned());
        let levels = [Level {
            name: match self.on {
                GeofenceOn::Enter => "Trong vùng".to_owned(),
                GeofenceOn::Dwell => "Lưu lại".to_owned(),
            },
            value: 1.0,
            severity: self.severity,
        }];
        let name = ev.plate.clone().unwrap_or_else(|| cx.subject.to_string());
        let (vi, en) = if names.is_empty() {
            ("đã rời vùng".to_owned(), "has left".to_owned())
        } else {
            (names.join(", "), names.join(", "))
        };
        Some(subject_alert(
            rule,
            cx.subject,
            &name,
            cx.pos,
            cx.registry.areas().chain_at(cx.pos),
            step,
            &levels,
            ev,
            (&vi, &en),
        ))
    }
}
