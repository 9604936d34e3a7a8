//! The public data contract of the IOC stream processor.
//!
//! Everything that crosses a process boundary is defined here, once:
//!
//! - [`envelope`]: the telemetry envelope v1 that devices publish, with
//!   [`envelope::decode`] turning bytes into a validated [`Envelope`] or a
//!   [`Rejection`] with a stable [`RejectReason`] code;
//! - [`device`]: device kinds, registry facts ([`DeviceInfo`]) and live
//!   state ([`DeviceState`]);
//! - [`alert`]: alerts raised by rules;
//! - [`window`]: rainfall, traffic and camera aggregates over event time;
//! - [`zone`]: zones, assets, geofence events and plate tracks;
//! - [`live`]: messages on the WebSocket feed and the engine's output;
//! - [`time`]: event time as epoch milliseconds, written as RFC 3339;
//! - [`plate`]: Vietnamese licence plate format;
//! - [`json_schema`]: JSON Schema documents generated from these types and
//!   committed under `schemas/json/` for device makers and client authors.
//!
//! Data flows one way: ingest decodes envelopes, processing turns them into
//! device states and alerts, and the dashboard API sends those as live
//! messages. Every other crate depends on this one; it depends on none of them.

pub mod alert;
pub mod device;
pub mod envelope;
pub mod json_schema;
pub mod live;
pub mod plate;
pub mod reject;
pub mod time;
pub mod window;
pub mod zone;

pub use alert::{
    Alert, AlertAction, AlertChange, AlertDetail, AlertStatus, Evidence, Handling, Severity,
};
pub use device::{
    AreaLevel, AreaRef, DeviceInfo, DeviceKind, DeviceSpec, DeviceState, DeviceView, Lifecycle,
    Presence, PresenceChange, PresenceStatus, Site, Thresholds,
};
pub use envelope::{
    Body, Camera, CameraEvent, Envelope, EnvelopeV1, Field, Hydrology, Limits, Traffic,
    VehicleCounts,
};
pub use live::{EngineOutput, LiveFilter, LiveMessage, LiveRequest, Resume, SnapshotReason};
pub use reject::{RejectReason, Rejection, pointer_of};
pub use time::Timestamp;
pub use window::{FlowByClass, WindowResult, WindowValue};
pub use zone::{
    AssetKind, GeofenceEvent, GeofenceTransition, NearbyAsset, Track, TrackPoint, ZoneKind, ZoneRef,
};

#[cfg(test)]
mod tests;
