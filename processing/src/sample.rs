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
