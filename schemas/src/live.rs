//! Messages on the live WebSocket feed (`/api/v1/live`) and engine output.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::alert::Alert;
use crate::device::{DeviceState, DeviceView, PresenceChange};
use crate::window::WindowResult;
use crate::zone::{GeofenceEvent, Track};

/// A message from the server on `/api/v1/live`. Every message has a `type`.
///
/// The server sends one `snapshot`, then `delta`s. `seq` increases by one per
/// message; a delta with `seq` n follows the message with `seq` n - 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveMessage {
    /// Everything the client should show: every device with its latest state
    /// and every open alert.
    Snapshot {
        /// Sequence number of this message.
        seq: u64,
        /// All devices.
        devices: Vec<DeviceView>,
        /// Open alerts.
        alerts: Vec<Alert>,
        /// Recent tracks of watch-listed plates.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tracks: Vec<Track>,
    },
    /// What changed since the previous message.
    Delta {
        /// Sequence number of this message.
        seq: u64,
        /// Devices whose state changed (latest state only).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        devices: Vec<DeviceState>,
        /// Alerts that opened, changed level or resolved.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        alerts: Vec<Alert>,
        /// Devices whose connection status changed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        presence: Vec<PresenceChange>,
        /// Window results that closed (or were revised).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        windows: Vec<WindowResult>,
        /// Geofence events (enter, exit, dwell).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        geofence: Vec<GeofenceEvent>,
        /// Tracks of watch-listed plates that moved.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tracks: Vec<Track>,
    },
}

/// What the processing engine emits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EngineOutput {
    /// A device's latest state changed.
    Device(DeviceState),
    /// An alert opened, changed or resolved.
    Alert(Box<Alert>),
    /// A device came online or went offline (from ingest, not the dataflow).
    Presence(PresenceChange),
    /// A window closed or was revised.
    Window(WindowResult),
    /// A moving subject entered, left or lingered in a zone.
    Geofence(GeofenceEvent),
    /// A watch-listed plate was read again: its whole recent track.
    Track(Track),
}

impl EngineOutput {
    /// The output of an alert change.
    pub fn alert(alert: Alert) -> Self {
        EngineOutput::Alert(Box::new(alert))
    }
}
