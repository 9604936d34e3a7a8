//! The numeric view of a reading that windows and rules work on.
//!
//! Readings wait in the reorder buffer until the watermark passes them, so
//! the buffer holds this compact form (device, time, sequence number and
//! the numeric fields) rather than whole envelopes.

use ioc_devices::DeviceIndex;
use ioc_schemas::{Body, CameraEvent};

pub use ioc_schemas::Field;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrafficCounts {
    /// Motorbike, car, truck, bus.
    pub counts: [u32; 4],
    /// Counting interval, seconds.
    pub interval_s: u32,
}

/// A sample as a checkpoint keeps it (the device is the entry's; absent
/// fields are `null`, where the sample has NaN).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SampleSnap {
    ts: i64,
    seq: u64,
    values: Vec<Option<f64>>,
    #[serde(default)]
    traffic: Option<TrafficCounts>,
    #[serde(default)]
    camera: Option<CameraEvent>,
}

impl Sample {
    /// The checkpoint's form of the sample.
    pub fn snap(&self) -> SampleSnap {
        SampleSnap {
            ts: self.ts,
            seq: self.seq,
            values: self
                .values
                .iter()
                .map(|v| (!v.is_nan()).then_some(*v))
                .collect(),
            traffic: self.traffic,
            camera: self.camera,
        }
    }

    /// The sample of device `device` a checkpoint kept.
    pub fn from_snap(device: DeviceIndex, s: &SampleSnap) -> Sample {
        let mut values = [f64::NAN; Field::COUNT];
        for (v, s) in values.iter_mut().zip(&s.values) {
            *v = s.unwrap_or(f64::NAN);
        }
        Sample {
            device,
            ts: s.ts,
            seq: s.seq,
            values,
            traffic: s.traffic,
            camera: s.camera,
        }
    }

    /// The sample of a reading body.
    pub fn new(device: DeviceIndex, ts: i64, seq: u64, body: &Body) -> Sample {
        let mut values = [f64::NAN; Field::COUNT];
        for f in Field::ALL {
            if let Some(v) = body.field(f) {
                values[f as usize] = v;
            }
        }
        let (mut traffic, mut camera) = (None, None);
        match body {
            Body::Hydrology(_) => {}
            Body::Traffic(t) => {
                let c = &t.counts;
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
