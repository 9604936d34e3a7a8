//! `cloned_plate`: one plate read in two places too far apart for the time
//! between them (a speed no vehicle reaches): two vehicles carry the same
//! plate.
//!
//! ```toml
//! [[rule]]
//! id = "cloned_plate"
//! kind = "cloned_plate"
//! max_speed_kmh = 150          # faster than this between two reads is implausible
//! min_distance_m = 2000        # reads closer than this never are (one junction's cameras)
//! ```
//!
//! The plate's track (its reads in event-time order, with the speed
//! between them) is kept by the geo operator ([`crate::geo`]), which calls
//! [`RuleKind::on_track`] after each new latest read.

use std::sync::Arc;

use ioc_schemas::{Alert, DeviceKind, Evidence, Timestamp};
use serde::Deserialize;

use super::alert::{Tracker, subject_alert};
use super::kind::{Check, RuleKind, States, TrackCx, severe};
use super::{Level, Rule};

/// A `cloned_plate` rule's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct ClonedPlate {
    /// Fastest plausible speed between two reads, km/h.
    pub max_speed_kmh: f64,
    /// Reads closer than this are never implausible (one junction's
    /// cameras), metres.
    pub min_distance_m: f64,
    /// Severity of its alerts.
    pub severity: ioc_schemas::Severity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    #[serde(default = "max_speed")]
    max_speed_kmh: f64,
    #[serde(default = "min_distance")]
    min_distance_m: f64,
    #[serde(default = "severe")]
    severity: ioc_schemas::Severity,
}

fn max_speed() -> f64 {
    150.0
}

fn min_distance() -> f64 {
    2000.0
}

impl RuleKind for ClonedPlate {
    const NAME: &'static str = "cloned_plate";
    const TITLE: (&'static str, &'static str) = ("Nghi biển số giả", "Suspected cloned plate");
    type State = Tracker;

    fn parse(check: &mut Check<'_>, at: &str, table: toml::Table) -> Option<Self> {
        let s: Spec = check.spec(at, table)?;
        check.positive(at, "max_speed_kmh", s.max_speed_kmh);
        check.non_negative(at, "min_distance_m", s.min_distance_m);
        Some(ClonedPlate {
            max_speed_kmh: s.max_speed_kmh,
            min_distance_m: s.min_distance_m,
            severity: s.severity,
        })
    }

    fn default_devices(&self) -> Vec<DeviceKind> {
        vec![DeviceKind::Camera]
    }

    fn needs_positions(&self) -> bool {
        true
    }

    fn on_track(
        &self,
        rule: &Rule,
        states: &mut States<Arc<str>>,
        cx: &TrackCx<'_>,
    ) -> Option<Alert> {
        let (a, b) = (cx.before, cx.latest);
        let metres = ioc_devices::distance_km(a.pos, b.pos) * 1000.0;
        let speed = b.speed_kmh;
        let implausible =
            metres >= self.min_distance_m && speed.is_some_and(|s| s > self.max_speed_kmh);
        if !implausible {
            return None;
        }
        let step = states.get::<Self>(rule).step(1, b.ts)?;
        let plate = cx.subject.trim_start_matches("plate-").to_owned();
        let shown = speed.map_or(0.0, |s| if s.is_finite() { s } else { 99_999.0 });
        let mut ev = Evidence::new(
            (shown * 10.0).round() / 10.0,
            "km/h",
            self.max_speed_kmh,
            Timestamp(b.ts),
            0,
        );
        ev.plate = Some(plate.clone());
        ev.related = vec![a.camera.to_string(), b.camera.to_string()];
        let levels = [Level {
            name: plate.clone(),
            value: self.max_speed_kmh,
            severity: self.severity,
        }];
        let km = metres / 1000.0;
        let vi = format!("{} và {} cách nhau {km:.1} km", a.camera, b.camera);
        let en = format!("{} and {} are {km:.1} km apart", a.camera, b.camera);
        Some(subject_alert(
            rule,
            cx.subject,
            &plate,
            b.pos,
            cx.registry.areas().chain_at(b.pos),
            step,
            &levels,
            ev,
            (&vi, &en),
        ))
    }
}
