//! Messages on the live WebSocket feed (`/api/v1/live`) and engine output.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::alert::{Alert, Severity};
use crate::device::{DeviceKind, DeviceState, DeviceView, PresenceChange};
use crate::window::WindowResult;
use crate::zone::{GeofenceEvent, Track};

/// A message from the server on `/api/v1/live`. Every message has a `type`.
///
/// After the client's `subscribe` the server sends a `snapshot`, then
/// `delta`s. `seq` is the connection's own: it increases by one per message,
/// so a delta with `seq` n follows the message with `seq` n - 1, and a
/// client that resumes its `session` after the `seq` it last saw gets what
/// it missed. See `docs/live-protocol.md`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveMessage {
    /// Everything the client should show for its filter: every device that
    /// passes it with its latest state, and every open alert that passes it.
    /// It replaces whatever the client held. Beyond 2 000 devices the
    /// devices come in parts: this message carries the first and `more`,
    /// and `snapshot_part` messages the rest, before any delta.
    Snapshot {
        /// Sequence number of this message.
        seq: u64,
        /// The session to name when resuming after a lost connection.
        #[serde(default)]
        session: String,
        /// Why a snapshot was sent.
        #[serde(default)]
        reason: SnapshotReason,
        /// The devices that pass the filter.
        devices: Vec<DeviceView>,
        /// Open alerts that pass the filter.
        alerts: Vec<Alert>,
        /// Recent tracks of watch-listed plates.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tracks: Vec<Track>,
        /// More devices follow in `snapshot_part` messages.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more: bool,
    },
    /// The next devices of the snapshot in progress, added to those the
    /// client holds (keeping a province's snapshot to messages of about a
    /// megabyte).
    SnapshotPart {
        /// Sequence number of this message.
        seq: u64,
        /// The next devices that pass the filter.
        devices: Vec<DeviceView>,
        /// More devices follow in another `snapshot_part`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more: bool,
    },
    /// What changed since the previous message.
    Delta {
        /// Sequence number of this message.
        seq: u64,
        /// Devices registered, changed, put in maintenance or retired since
        /// the previous message: their whole view. Before `devices`, so a
        /// new device's first state finds it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        registry: Vec<crate::DeviceView>,
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
    /// The client's message was refused; the connection closes after it
    /// unless the message was a later `subscribe` (the filter in force then
    /// stays).
    Error {
        /// A stable code: `bad_request`, `unauthorized`.
        code: String,
        /// What was wrong.
        message: String,
    },
}

/// Why the server sent a snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotReason {
    /// A new session.
    #[default]
    Subscribe,
    /// The client changed its filter.
    Filter,
    /// The client asked to resume a session the server no longer has, or
    /// from a message it no longer keeps.
    ResumeUnavailable,
    /// The client fell too far behind for the deltas it missed to be kept
    /// (its alerts lane overflowed, or it lagged the hub): the snapshot
    /// replaces them.
    Resync,
}

impl SnapshotReason {
    /// The snake_case name, as in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotReason::Subscribe => "subscribe",
            SnapshotReason::Filter => "filter",
            SnapshotReason::ResumeUnavailable => "resume_unavailable",
            SnapshotReason::Resync => "resync",
        }
    }
}

/// A message from the client on `/api/v1/live`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LiveRequest {
    /// Starts the feed, or changes its filter. The first message on a
    /// connection must be a `subscribe`; later ones replace the filter and
    /// are answered with a new snapshot.
    Subscribe {
        /// What the client wants to see; empty means everything.
        #[serde(default)]
        filter: LiveFilter,
        /// Resume this session after a lost connection (first message only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<Resume>,
        /// A bearer token, for clients (browsers) that cannot send an
        /// `Authorization` header on a WebSocket.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
}

/// Where a resumed session continues.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resume {
    /// The session named in the first snapshot.
    pub session: String,
    /// The last `seq` the client received.
    pub seq: u64,
}

/// What a live client wants to see. Every field narrows it; an empty field
/// does not. Devices (and their presence, windows), geofence events and
/// tracks pass when they pass every field given; alerts pass on `kinds`
/// (when their subject is a device), `areas`, `zones` and `min_severity`,
/// never on `bbox`: an alert is shown wherever the map is looking.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LiveFilter {
    /// Device kinds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<DeviceKind>,
    /// Administrative area ids: a device or alert in any of them (at any
    /// level: a province id takes all its communes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub areas: Vec<String>,
    /// Zone ids: a device, alert or geofence event in any of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// The map's viewport `[west, south, east, north]`, degrees WGS 84.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f64; 4]>,
    /// The least severity of alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
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
