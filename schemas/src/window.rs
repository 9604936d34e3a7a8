//! Window results: rolling and tumbling aggregates computed over event time.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::CameraEvent;
use crate::time::Timestamp;

/// One aggregate of one device over `[start, end)` in event time.
///
/// Emitted when the engine's watermark passes `end`. A reading that arrives
/// later but within the lateness horizon amends the window, and the result
/// is emitted again with `revision` set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WindowResult {
    /// Device id.
    // Shared with the registry: the engine emits it without a copy.
    pub device: std::sync::Arc<str>,
    /// Start of the window (inclusive), event time.
    pub start: Timestamp,
    /// End of the window (exclusive), event time.
    pub end: Timestamp,
    /// Whether this amends a result already emitted for the same window.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revision: bool,
    /// The aggregate.
    #[serde(flatten)]
    pub value: WindowValue,
}

impl WindowResult {
    /// Length of the window in seconds.
    pub fn window_s(&self) -> u32 {
        ((self.end.millis() - self.start.millis()) / 1000).max(0) as u32
    }
}

/// What a window holds, by kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WindowValue {
    /// Rain fallen at a gauge over the window.
    Rainfall {
        /// Total rain in millimetres. When `complete` is false this is what
        /// was received: a lower bound, since a gap is not zero rain.
        total_mm: f64,
        /// Whether readings cover the whole window (no missing reading).
        complete: bool,
    },
    /// Traffic at a counter over the window.
    Traffic {
        /// Vehicles per hour, by class.
        flow_vph: FlowByClass,
        /// Mean speed weighted by vehicles, km/h; absent without speed data.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mean_speed_kmh: Option<f64>,
        /// Mean lane occupancy, percent; absent without occupancy data.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        occupancy_pct: Option<f64>,
        /// Vehicles counted.
        vehicles: u64,
    },
    /// Camera analytic events over the window, by type.
    CameraEvents {
        /// Count per event type (types with no event are left out).
        counts: BTreeMap<CameraEvent, u32>,
    },
}

impl WindowValue {
    /// The snake_case kind name (`rainfall`, `traffic`, `camera_events`).
    pub fn kind(&self) -> &'static str {
        match self {
            WindowValue::Rainfall { .. } => "rainfall",
            WindowValue::Traffic { .. } => "traffic",
            WindowValue::CameraEvents { .. } => "camera_events",
        }
    }
}

/// Vehicles per hour by class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FlowByClass {
    /// Motorbikes per hour.
    pub motorbike: f64,
    /// Cars and vans per hour.
    pub car: f64,
    /// Trucks per hour.
    pub truck: f64,
    /// Buses and coaches per hour.
    pub bus: f64,
}

impl FlowByClass {
    /// All vehicles per hour.
    pub fn total(&self) -> f64 {
        self.motorbike + self.car + self.truck + self.bus
    }
}
