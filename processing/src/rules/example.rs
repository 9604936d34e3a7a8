//! `battery_low`, a worked example of a rule kind (compiled for tests
//! only): a device's battery below a fixed voltage, cleared once it is
//! `margin` above it again.
//!
//! ```toml
//! [[rule]]
//! id = "battery"
//! kind = "battery_low"
//! volts = 11.5
//! margin = 0.3
//! ```
//!
//! Everything about the kind is here: its settings and how they are read
//! and checked, its state, how a reading steps it and the alert it raises.
//! Registering it is one line in `registry.rs`.

use ioc_schemas::{Alert, Evidence, Severity, Timestamp};
use serde::Deserialize;

use super::alert::{self, Tracker};
use super::kind::{Check, DeviceCx, RuleKind, States};
use super::{Level, Rule};
use crate::sample::{Field, Sample};

/// A `battery_low` rule's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct BatteryLow {
    /// Below this the battery is low, volts.
    pub volts: f64,
    /// Cleared at `volts + margin`, volts.
    pub margin: f64,
}

/// The keys of the kind in the rules file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    volts: f64,
    #[serde(default)]
    margin: f64,
}

impl RuleKind for BatteryLow {
    const NAME: &'static str = "battery_low";
    const TITLE: (&'static str, &'static str) = ("Pin yếu", "Battery low");
    /// The episode is all it keeps.
    type State = Tracker;

    fn parse(check: &mut Check<'_>, at: &str, table: toml::Table) -> Option<Self> {
        let s: Spec = check.spec(at, table)?;
        check.positive(at, "volts", s.volts);
        check.non_negative(at, "margin", s.margin);
        Some(BatteryLow {
            volts: s.volts,
            margin: s.margin,
        })
    }

    /// Devices that report a battery are watched unless the rule says.
    fn field(&self) -> Option<Field> {
        Some(Field::BatteryV)
    }

    fn on_sample(
        &self,
        rule: &Rule,
        states: &mut States<u16>,
        cx: &DeviceCx<'_>,
        s: &Sample,
    ) -> Option<Alert> {
        let volts = s.get(Field::BatteryV)?;
        let tracker = states.get::<Self>(rule);
        let low = match tracker.level() {
            0 => volts < self.volts,
            _ => volts < self.volts + self.margin,
        };
        let step = tracker.step(u8::from(low), s.ts)?;
        let level = [Level {
            name: "Pin yếu".to_owned(),
            value: self.volts,
            severity: Severity::Minor,
        }];
        let ev = Evidence::new(volts, "V", self.volts, Timestamp(s.ts), s.seq);
        Some(alert::build(
            rule,
            cx.device,
            cx.device.pos,
            step,
            &level,
            ev,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ioc_devices::Registry;
    use ioc_schemas::{AlertStatus, Body, EngineOutput, Envelope, Hydrology};

    use crate::device_state::{DeviceTable, TableConfig};
    use crate::reading::Reading;
    use crate::rules::RuleSet;

    use super::*;

    #[test]
    fn a_kind_registered_in_one_line_runs_from_a_rules_file() {
        let registry = Registry::sonla_demo();
        let rules = RuleSet::parse(
            "[[rule]]\nid = \"battery\"\nkind = \"battery_low\"\nvolts = 11.5\nmargin = 0.3\n",
            &registry,
            &|_| Err("none".into()),
        )
        .unwrap();
        assert_eq!(rules.rules[0].logic.kind(), "battery_low");
        let bad = RuleSet::parse(
            "[[rule]]\nid = \"b\"\nkind = \"battery_low\"\nvolts = -1\n",
            &registry,
            &|_| Err("none".into()),
        )
        .unwrap_err();
        assert!(
            bad.to_string()
                .contains("rule b: volts must be a positive number")
        );

        let gauge = registry.lookup("river-to-hieu").unwrap();
        let mut table = DeviceTable::new(
            registry.clone(),
            Arc::new(rules),
            TableConfig::default(),
            0,
            1,
        );
        let mut out = Vec::new();
        let mut alerts = Vec::new();
        for (seq, volts) in [(1, 12.4), (2, 11.2), (3, 11.6), (4, 11.9)] {
            let reading = Reading {
                device: gauge,
                received: Timestamp(seq * 60_000),
                envelope: Envelope {
                    device: "river-to-hieu".into(),
                    ts: Timestamp(seq * 60_000),
                    seq: seq as u64,
                    pos: None,
                    body: Body::Hydrology(Hydrology {
                        battery_v: Some(volts),
                        ..Default::default()
                    }),
                },
            };
            // In order after the first: decided at once; the first waits
            // for the watermark, here at once.
            if let (_, Some(sample)) = table.arrive(&reading, &mut out) {
                table.release(&[sample], &mut out);
            }
            table.apply_ready(&mut out);
            alerts.extend(out.drain(..).filter_map(|o| match o {
                EngineOutput::Alert(a) => Some((a.status, a.evidence.value)),
                _ => None,
            }));
        }
        assert_eq!(
            alerts,
            [(AlertStatus::Open, 11.2), (AlertStatus::Resolved, 11.9)],
            "opens below 11.5 V, stays at 11.6 (inside the margin), clears at 11.9"
        );
    }
}
