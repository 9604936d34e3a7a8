//! Per-device state on the worker that owns the device.
//!
//! [`DeviceTable::apply`] takes one reading and produces the device's new
//! latest state and any alert change. Readings are recognised as duplicates
//! (same sequence number and event time as the latest) or as out of order
//! (older than the latest); neither changes state, and both are counted.
//! State is bounded by the registry: one small slot per registered device.

use std::collections::HashMap;
use std::sync::Arc;

use ioc_devices::{DeviceIndex, Registry};
use ioc_schemas::{Body, DeviceKind, DeviceState, EngineOutput};

use crate::reading::Reading;
use crate::rules::river_level::{GaugeState, RiverLevelRule};

/// What happened to a reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It updated the device.
    Applied,
    /// Same device, sequence number and event time as the latest reading.
    Duplicate,
    /// Older than the device's latest reading; kept out of state.
    OutOfOrder,
}

#[derive(Debug, Default)]
struct Slot {
    last_ts: i64,
    last_seq: u64,
    gauge: GaugeState,
}

/// The state of every device owned by one worker.
#[derive(Debug)]
pub struct DeviceTable {
    registry: Arc<Registry>,
    river: RiverLevelRule,
    slots: HashMap<DeviceIndex, Slot>,
}

impl DeviceTable {
    /// An empty table.
    pub fn new(registry: Arc<Registry>, river: RiverLevelRule) -> Self {
        DeviceTable {
            registry,
            river,
            slots: HashMap::new(),
        }
    }

    /// Applies one reading, pushing outputs to `out`.
    pub fn apply(&mut self, reading: &Reading, out: &mut Vec<EngineOutput>) -> Outcome {
        let e = &reading.envelope;
        let slot = self.slots.entry(reading.device).or_default();
        let ts = e.ts.millis();
        if ts == slot.last_ts && e.seq == slot.last_seq {
            return Outcome::Duplicate;
        }
        if ts < slot.last_ts {
            return Outcome::OutOfOrder;
        }
        slot.last_ts = ts;
        slot.last_seq = e.seq;
        let device = self.registry.device(reading.device);
        let alert = match &e.body {
            Body::Hydrology(h) if device.kind == DeviceKind::RiverGauge => {
                h.water_level_m.and_then(|level| {
                    self.river
                        .observe(&mut slot.gauge, device, level, e.ts, e.seq)
                })
            }
            _ => None,
        };
        let alarm_level = slot.gauge.level();
        // The state first: whoever sees the alert can already see the reading behind it.
        out.push(EngineOutput::Device(DeviceState {
            device: device.id.clone(),
            ts: e.ts,
            seq: e.seq,
            pos: e.pos.unwrap_or(device.pos),
            reading: e.body.clone(),
            alarm_level: (alarm_level > 0).then_some(alarm_level),
        }));
        out.extend(alert.map(EngineOutput::Alert));
        Outcome::Applied
    }

    /// Number of devices with state on this worker.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no device has state on this worker.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use ioc_schemas::AlertStatus;

    use super::*;
    use crate::reading::water_level;

    #[test]
    fn duplicates_and_old_readings_do_not_touch_state() {
        let r = Registry::sonla_demo();
        let bd = r
            .get("river-to-hieu")
            .unwrap()
            .thresholds
            .alarm_levels_m
            .unwrap();
        let mut t = DeviceTable::new(r.clone(), RiverLevelRule { margin_m: 0.2 });
        let mut out = Vec::new();
        assert_eq!(
            t.apply(
                &water_level(&r, "river-to-hieu", 2000, 2, bd[1] + 0.1),
                &mut out
            ),
            Outcome::Applied
        );
        assert!(matches!(&out[0], EngineOutput::Device(d) if d.alarm_level == Some(2)));
        assert!(
            matches!(&out[1], EngineOutput::Alert(a) if a.level == 2 && a.status == AlertStatus::Open)
        );
        out.clear();
        assert_eq!(
            t.apply(
                &water_level(&r, "river-to-hieu", 2000, 2, bd[1] + 0.1),
                &mut out
            ),
            Outcome::Duplicate
        );
        assert_eq!(
            t.apply(&water_level(&r, "river-to-hieu", 1000, 1, 0.0), &mut out),
            Outcome::OutOfOrder
        );
        assert!(out.is_empty());
        assert_eq!(t.len(), 1);
    }
}
