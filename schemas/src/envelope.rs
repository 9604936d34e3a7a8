//! The telemetry envelope v1: one reading from one device.
//!
//! ```json
//! {"v":1,"device":"river-nam-la-to-hieu","ts":"2026-07-14T03:12:45Z","seq":42,
//!  "pos":[103.91,21.33],"hydrology":{"water_level_m":3.42,"rainfall_mm":1.5}}
//! ```
//!
//! Exactly one body key among `hydrology`, `traffic` and `camera`. Units are in
//! the field names. [`decode`] parses and validates in one step and returns a
//! [`Rejection`] with a stable reason code for anything it will not accept.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::plate::is_vietnamese_plate;
use crate::reject::{RejectReason, Rejection, pointer_of};
use crate::time::Timestamp;

/// Largest payload [`decode`] accepts, in bytes, unless configured otherwise.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// A validated reading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "Telemetry envelope v1",
    description = "One reading from one device. Exactly one of `hydrology`, `traffic`, `camera` is present.",
    extend("oneOf" = [
        {"required": ["hydrology"]},
        {"required": ["traffic"]},
        {"required": ["camera"]}
    ])
)]
pub struct EnvelopeV1 {
    /// Envelope version; always `1`.
    #[schemars(range(min = 1, max = 1))]
    pub v: u8,
    /// Device id as registered in the device registry.
    #[schemars(length(min = 1, max = 128))]
    pub device: String,
    /// Event time: when the reading was taken.
    pub ts: Timestamp,
    /// Per-device sequence number, increasing by one per reading.
    pub seq: u64,
    /// Position `[longitude, latitude]` in WGS 84 degrees. For cameras, the
    /// position of the observed object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pos: Option<[f64; 2]>,
    /// Hydrological or reservoir reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hydrology: Option<Hydrology>,
    /// Traffic counter reading over an interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Traffic>,
    /// AI-camera analytic event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera: Option<Camera>,
}

/// A decoded, validated reading with its body as one enum.
///
/// Its serde form is internal (the engine exchanges it between workers);
/// the public wire form is [`EnvelopeV1`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Device id.
    pub device: String,
    /// Event time.
    #[serde(with = "crate::time::as_millis")]
    pub ts: Timestamp,
    /// Per-device sequence number.
    pub seq: u64,
    /// Optional position `[lon, lat]`, degrees WGS 84.
    pub pos: Option<[f64; 2]>,
    /// The typed body.
    pub body: Body,
}

/// The body of a reading, by device family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// River, rain and reservoir gauges.
    Hydrology(Hydrology),
    /// Traffic counters.
    Traffic(Traffic),
    /// AI cameras.
    Camera(Camera),
}

/// A numeric field of a reading that a rule can watch. The names are the
/// envelope's field names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
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

    /// Every field, in order.
    pub const ALL: [Field; Field::COUNT] = [
        Field::WaterLevelM,
        Field::RainfallMm,
        Field::FlowM3s,
        Field::InflowM3s,
        Field::OutflowM3s,
        Field::GatesOpen,
        Field::BatteryV,
        Field::SignalDbm,
        Field::SpeedKmh,
        Field::OccupancyPct,
        Field::FlowVph,
    ];

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

impl Body {
    /// The value of a numeric field, if this reading has it.
    pub fn field(&self, field: Field) -> Option<f64> {
        match (self, field) {
            (Body::Hydrology(h), Field::WaterLevelM) => h.water_level_m,
            (Body::Hydrology(h), Field::RainfallMm) => h.rainfall_mm,
            (Body::Hydrology(h), Field::FlowM3s) => h.flow_m3s,
            (Body::Hydrology(h), Field::InflowM3s) => h.inflow_m3s,
            (Body::Hydrology(h), Field::OutflowM3s) => h.outflow_m3s,
            (Body::Hydrology(h), Field::GatesOpen) => h.gates_open.map(f64::from),
            (Body::Hydrology(h), Field::BatteryV) => h.battery_v,
            (Body::Hydrology(h), Field::SignalDbm) => h.signal_dbm,
            (Body::Traffic(t), Field::SpeedKmh) => t.speed_kmh,
            (Body::Traffic(t), Field::OccupancyPct) => t.occupancy_pct,
            (Body::Traffic(t), Field::FlowVph) => {
                Some(t.counts.total() as f64 * 3600.0 / f64::from(t.interval_s.max(1)))
            }
            _ => None,
        }
    }

    /// The envelope key of this body (`hydrology`, `traffic`, `camera`).
    pub fn key(&self) -> &'static str {
        match self {
            Body::Hydrology(_) => "hydrology",
            Body::Traffic(_) => "traffic",
            Body::Camera(_) => "camera",
        }
    }
}

/// Hydrological, rain-gauge or reservoir reading. Every field is optional;
/// a device sends what it measures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hydrology {
    /// Water level in metres above the gauge datum (reservoirs: above sea level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -500.0, max = 9000.0))]
    pub water_level_m: Option<f64>,
    /// Rain fallen since the previous reading, in millimetres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 500.0))]
    pub rainfall_mm: Option<f64>,
    /// River discharge in cubic metres per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1000000.0))]
    pub flow_m3s: Option<f64>,
    /// Reservoir inflow in cubic metres per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1000000.0))]
    pub inflow_m3s: Option<f64>,
    /// Reservoir outflow in cubic metres per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1000000.0))]
    pub outflow_m3s: Option<f64>,
    /// Number of spillway gates open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 64))]
    pub gates_open: Option<u16>,
    /// Battery voltage in volts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 60.0))]
    pub battery_v: Option<f64>,
    /// Radio signal strength in dBm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -150.0, max = 0.0))]
    pub signal_dbm: Option<f64>,
}

/// Vehicle counts per class over the reporting interval.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VehicleCounts {
    /// Motorbikes (the bulk of Vietnamese traffic).
    #[serde(default)]
    pub motorbike: u32,
    /// Cars and vans.
    #[serde(default)]
    pub car: u32,
    /// Trucks.
    #[serde(default)]
    pub truck: u32,
    /// Buses and coaches.
    #[serde(default)]
    pub bus: u32,
}

impl VehicleCounts {
    /// All vehicles.
    pub fn total(&self) -> u64 {
        u64::from(self.motorbike)
            + u64::from(self.car)
            + u64::from(self.truck)
            + u64::from(self.bus)
    }
}

/// Traffic counter reading over an interval that ends at the event time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// Length of the counting interval in seconds.
    #[schemars(range(min = 1, max = 86400))]
    pub interval_s: u32,
    /// Vehicles counted per class.
    pub counts: VehicleCounts,
    /// Mean speed in km/h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 300.0))]
    pub speed_kmh: Option<f64>,
    /// Lane occupancy in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub occupancy_pct: Option<f64>,
}

/// What an AI camera's analytics detected.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CameraEvent {
    /// A licence plate was read.
    PlateRead,
    /// A person or vehicle entered a watched area.
    Intrusion,
    /// Fire or smoke was detected.
    FireSmoke,
    /// A crowd formed.
    Crowd,
    /// Traffic congestion.
    Congestion,
    /// A traffic accident.
    Accident,
    /// A vehicle drove against the traffic direction.
    WrongWay,
    /// Illegal parking or stopping.
    IllegalParking,
}

impl CameraEvent {
    /// Every event type, in declaration order: `ALL[e as usize] == e`.
    pub const ALL: [CameraEvent; 8] = [
        CameraEvent::PlateRead,
        CameraEvent::Intrusion,
        CameraEvent::FireSmoke,
        CameraEvent::Crowd,
        CameraEvent::Congestion,
        CameraEvent::Accident,
        CameraEvent::WrongWay,
        CameraEvent::IllegalParking,
    ];
}

/// AI-camera analytic event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Camera {
    /// Event type.
    pub event: CameraEvent,
    /// Licence plate text in Vietnamese format (`26A-123.45`, `29B1-234.56`,
    /// `26C-1234`); required for `plate_read`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub plate: Option<String>,
    /// Detector confidence, 0 to 1.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence: f64,
    /// Reference to the stored snapshot image (URL or object key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub snapshot: Option<String>,
}

/// Limits applied by [`decode`].
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest accepted payload in bytes.
    pub max_payload_bytes: usize,
    /// How far in the future an event time may lie, in milliseconds, to allow
    /// for device clock skew.
    pub max_future_skew_ms: i64,
    /// How far in the past an event time may lie, in milliseconds: the
    /// horizon before which a reading is too old to use (devices that
    /// buffer through an outage upload late, but not forever).
    pub max_age_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_future_skew_ms: 5 * 60 * 1000,
            max_age_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// Parses and validates one envelope. `now` is the receive time used for the
/// future-skew check.
pub fn decode(payload: &[u8], limits: &Limits, now: Timestamp) -> Result<Envelope, Rejection> {
    if payload.len() > limits.max_payload_bytes {
        return Err(Rejection::new(
            RejectReason::Oversized,
            format!(
                "payload is {} bytes, limit is {}",
                payload.len(),
                limits.max_payload_bytes
            ),
        ));
    }
    let raw: EnvelopeV1 = serde_json::from_slice(payload).map_err(|e| {
        // The fast path carries no field path; on failure only, parse again
        // tracking the path so the rejection can name the field.
        let pointer = match serde_path_to_error::deserialize::<_, EnvelopeV1>(
            &mut serde_json::Deserializer::from_slice(payload),
        ) {
            Err(e) if e.inner().classify() == serde_json::error::Category::Data => {
                Some(pointer_of(&e.path().to_string()))
            }
            _ => None,
        };
        let message = e.to_string();
        let reason = if message.starts_with("missing field") {
            RejectReason::MissingField
        } else if message.starts_with("number out of range") {
            RejectReason::NonFinite
        } else if e.classify() == serde_json::error::Category::Data {
            RejectReason::InvalidField
        } else {
            RejectReason::MalformedJson
        };
        let rejection = Rejection::new(reason, message);
        match pointer {
            Some(p) if !p.is_empty() => rejection.at(p),
            _ => rejection,
        }
    })?;
    raw.validate(limits, now)
}

fn check_range(field: &'static str, value: f64, min: f64, max: f64) -> Result<(), Rejection> {
    if !value.is_finite() {
        return Err(Rejection::new(
            RejectReason::NonFinite,
            format!("{field} is not a finite number"),
        )
        .at(pointer_of(field)));
    }
    if value < min || value > max {
        return Err(Rejection::new(
            RejectReason::OutOfRange,
            format!("{field} = {value} is outside [{min}, {max}]"),
        )
        .at(pointer_of(field)));
    }
    Ok(())
}

fn check_opt(field: &'static str, value: Option<f64>, min: f64, max: f64) -> Result<(), Rejection> {
    value.map_or(Ok(()), |v| check_range(field, v, min, max))
}

/// Checks that `[lon, lat]` is a finite WGS 84 position.
pub fn check_position(pos: [f64; 2]) -> Result<(), Rejection> {
    let [lon, lat] = pos;
    if !(lon.is_finite() && lat.is_finite()) {
        return Err(
            Rejection::new(RejectReason::NonFinite, "pos holds a non-finite number").at("/pos"),
        );
    }
    if !(-180.0..=180.0).contains(&lon) || !(-90.0..=90.0).contains(&lat) {
        return Err(Rejection::new(
            RejectReason::InvalidCoordinates,
            format!("pos [{lon}, {lat}] is not [longitude, latitude] in WGS 84"),
        )
        .at("/pos"));
    }
    Ok(())
}

impl Hydrology {
    fn validate(&self) -> Result<(), Rejection> {
        check_opt(
            "hydrology.water_level_m",
            self.water_level_m,
            -500.0,
            9000.0,
        )?;
        check_opt("hydrology.rainfall_mm", self.rainfall_mm, 0.0, 500.0)?;
        check_opt("hydrology.flow_m3s", self.flow_m3s, 0.0, 1.0e6)?;
        check_opt("hydrology.inflow_m3s", self.inflow_m3s, 0.0, 1.0e6)?;
        check_opt("hydrology.outflow_m3s", self.outflow_m3s, 0.0, 1.0e6)?;
        check_opt("hydrology.battery_v", self.battery_v, 0.0, 60.0)?;
        check_opt("hydrology.signal_dbm", self.signal_dbm, -150.0, 0.0)?;
        if let Some(g) = self.gates_open
            && g > 64
        {
            return Err(Rejection::new(
                RejectReason::OutOfRange,
                format!("hydrology.gates_open = {g} is above 64"),
            ));
        }
        Ok(())
    }
}

impl Traffic {
    fn validate(&self) -> Result<(), Rejection> {
        if !(1..=86_400).contains(&self.interval_s) {
            return Err(Rejection::new(
                RejectReason::OutOfRange,
                format!(
                    "traffic.interval_s = {} is outside [1, 86400]",
                    self.interval_s
                ),
            ));
        }
        check_opt("traffic.speed_kmh", self.speed_kmh, 0.0, 300.0)?;
        check_opt("traffic.occupancy_pct", self.occupancy_pct, 0.0, 100.0)
    }
}

impl Camera {
    fn validate(&self) -> Result<(), Rejection> {
        check_range("camera.confidence", self.confidence, 0.0, 1.0)?;
        match &self.plate {
            Some(p) if !is_vietnamese_plate(p) => Err(Rejection::new(
                RejectReason::InvalidPlate,
                format!("camera.plate {p:?} is not a Vietnamese plate (e.g. 26A-123.45)"),
            )),
            None if self.event == CameraEvent::PlateRead => Err(Rejection::new(
                RejectReason::MissingField,
                "camera.plate is required for plate_read",
            )),
            _ => Ok(()),
        }?;
        if self.snapshot.as_ref().is_some_and(|s| s.len() > 512) {
            return Err(Rejection::new(
                RejectReason::OutOfRange,
                "camera.snapshot is longer than 512 bytes",
            ));
        }
        Ok(())
    }
}

impl EnvelopeV1 {
    /// Validates the parsed envelope and turns it into an [`Envelope`].
    pub fn validate(self, limits: &Limits, now: Timestamp) -> Result<Envelope, Rejection> {
        if self.v != 1 {
            return Err(Rejection::new(
                RejectReason::UnsupportedVersion,
                format!("envelope version {} is not supported (expected 1)", self.v),
            )
            .at("/v"));
        }
        if self.device.is_empty() || self.device.len() > 128 {
            return Err(Rejection::new(
                RejectReason::InvalidField,
                "device id must be 1 to 128 bytes",
            )
            .at("/device"));
        }
        if self.ts.millis() <= 0 {
            return Err(Rejection::new(
                RejectReason::InvalidTimestamp,
                format!("ts {} is not after 1970", self.ts.millis()),
            )
            .at("/ts"));
        }
        if self.ts.millis() > now.millis().saturating_add(limits.max_future_skew_ms) {
            return Err(Rejection::new(
                RejectReason::FutureTimestamp,
                format!(
                    "ts {} is {} s ahead of the receive time; allowed skew is {} s",
                    self.ts,
                    (self.ts.millis() - now.millis()) / 1000,
                    limits.max_future_skew_ms / 1000
                ),
            )
            .at("/ts"));
        }
        if self.ts.millis() < now.millis().saturating_sub(limits.max_age_ms) {
            return Err(Rejection::new(
                RejectReason::StaleTimestamp,
                format!(
                    "ts {} is {} s before the receive time; the horizon is {} s",
                    self.ts,
                    (now.millis() - self.ts.millis()) / 1000,
                    limits.max_age_ms / 1000
                ),
            )
            .at("/ts"));
        }
        if let Some(pos) = self.pos {
            check_position(pos)?;
        }
        let body = match (self.hydrology, self.traffic, self.camera) {
            (Some(h), None, None) => {
                h.validate()?;
                Body::Hydrology(h)
            }
            (None, Some(t), None) => {
                t.validate()?;
                Body::Traffic(t)
            }
            (None, None, Some(c)) => {
                c.validate()?;
                Body::Camera(c)
            }
            (None, None, None) => {
                return Err(Rejection::new(
                    RejectReason::MissingBody,
                    "no body: expected one of hydrology, traffic, camera",
                ));
            }
            _ => {
                return Err(Rejection::new(
                    RejectReason::MultipleBodies,
                    "more than one body: send exactly one of hydrology, traffic, camera",
                ));
            }
        };
        Ok(Envelope {
            device: self.device,
            ts: self.ts,
            seq: self.seq,
            pos: self.pos,
            body,
        })
    }
}

impl Envelope {
    /// The wire form of this envelope.
    pub fn to_wire(&self) -> EnvelopeV1 {
        let (mut hydrology, mut traffic, mut camera) = (None, None, None);
        match &self.body {
            Body::Hydrology(h) => hydrology = Some(h.clone()),
            Body::Traffic(t) => traffic = Some(t.clone()),
            Body::Camera(c) => camera = Some(c.clone()),
        }
        EnvelopeV1 {
            v: 1,
            device: self.device.clone(),
            ts: self.ts,
            seq: self.seq,
            pos: self.pos,
            hydrology,
            traffic,
            camera,
        }
    }

    /// The envelope as JSON bytes, ready to publish.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain structs of numbers and strings cannot fail.
        serde_json::to_vec(&self.to_wire()).unwrap_or_default()
    }
}
