//! The numeric view of a reading that windows and rules work on.
//!
//! Readings wait in the reorder buffer until the watermark passes them, so
//! the buffer holds this compact form (device, time, sequence number and
//! the numeric fields) rather than whole envelopes.

use ioc_devices::DeviceIndex;
use ioc_schemas::{Body, CameraEvent};
use serde::{Deserialize, Serialize};

/// A numeric field of a reading that a rule can watch. The names are the
/// envelope's field names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// `hydrology.water_level_m`.
    WaterLevelM,
    /// `hydrology.rainfall_mm`.
    RainfallMm,
    /// `hydrology.flow_m3s`.
    FlowM3s,
    /// `hydrology.inflow_m3s`.
    InflowM3s,
    /// `hydrology.outflow_m3s`.
    OutflowM3s,
    /// `hydrology.gates_open`.
    GatesOpen,
    /// `hydrology.battery_v`.
    BatteryV,
    /// `hydrology.signal_dbm`.
    SignalDbm,
    /// `traffic.speed_kmh`.
    SpeedKmh,
    /// `traffic.occupancy_pct`.
    OccupancyPct,
    /// Vehicles per hour over the counting interval (from `traffic.counts`).
    FlowVph,
}

impl Field {
    /// Number of fields.
    pub const COUNT: usize = 11;

    /// The unit shown in alerts.
    pub fn unit(self) -> &'static str {
        match self {
            Field::WaterLevelM => "m",
            Field::RainfallMm => "mm",
            Field::FlowM3s | Field::InflowM3s | Field::OutflowM3s => "m³/s",
            Field::GatesOpen => "gates",
            Field::BatteryV => "V",
            Field::SignalDbm => "dBm",
            Field::SpeedKmh => "km/h",
            Field::OccupancyPct => "%",
            Field::FlowVph => "veh/h",
        }
    }

    /// Whether readings of this body family carry the field.
    pub fn is_traffic(self) -> bool {
        matches!(self, Field::SpeedKmh | Field::OccupancyPct | Field::FlowVph)
    }
}

/// A reading reduced to what windows and rules need.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The device's registry index.
    pub device: DeviceIndex,
    /// Event time, epoch milliseconds.
    pub ts: i64,
    /// Sequence number.
    pub seq: u64,
    /// Field values; NaN where the reading has none.
    values: [f64; Field::COUNT],
    /// Traffic: vehicles per class and the counting interval.
    pub traffic: Option<TrafficCounts>,
    /// Camera: the event type.
    pub camera: Option<CameraEvent>,
}

/// Counts of one traffic reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrafficCounts {
    /// Motorbike, car, truck, bus.
    pub counts: [u32; 4],
    /// Counting interval, seconds.
    pub interval_s: u32,
}

impl Sample {
    /// The sample of a reading body.
    pub fn new(device: DeviceIndex, ts: i64, seq: u64, body: &Body) -> Sample {
        let mut values = [f64::NAN; Field::COUNT];
        let mut set = |f: Field, v: Option<f64>| {
            if let Some(v) = v {
                values[f as usize] = v;
            }
        };
        let (mut traffic, mut camera) = (None, None);
        match body {
            Body::Hydrology(h) => {
                set(Field::WaterLevelM, h.water_level_m);
                set(Field::RainfallMm, h.rainfall_mm);
                set(Field::FlowM3s, h.flow_m3s);
                set(Field::InflowM3s, h.inflow_m3s);
                set(Field::OutflowM3s, h.outflow_m3s);
                set(Field::GatesOpen, h.gates_open.map(f64::from));
                set(Field::BatteryV, h.battery_v);
                set(Field::SignalDbm, h.signal_dbm);
            }
            Body::Traffic(t) => {
                set(Field::SpeedKmh, t.speed_kmh);
                set(Field::OccupancyPct, t.occupancy_pct);
                let c = &t.counts;
                set(
                    Field::FlowVph,
                    Some(c.total() as f64 * 3600.0 / f64::from(t.interval_s.max(1))),
                );
                traffic = Some(TrafficCounts {
                    counts: [c.motorbike, c.car, c.truck, c.bus],
                    interval_s: t.interval_s,
                });
            }
            Body::Camera(c) => camera = Some(c.event),
        }
        Sample {
            device,
            ts,
            seq,
            values,
            traffic,
            camera,
        }
    }

    /// The value of a field, if the reading has it.
    pub fn get(&self, field: Field) -> Option<f64> {
        let v = self.values[field as usize];
        (!v.is_nan()).then_some(v)
    }
}
