//! Zones, assets, geofence events and plate tracks.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// What a zone is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ZoneKind {
    /// Slopes where heavy rain triggers landslides.
    LandslideRisk,
    /// Land that floods when a river rises.
    FloodProne,
    /// A perimeter nobody may enter without leave (dam sites, the
    /// administrative centre).
    Restricted,
    /// A stretch of road: a line and the buffer around it.
    RoadSegment,
}

impl ZoneKind {
    /// Every kind, in declaration order.
    pub const ALL: [ZoneKind; 4] = [
        ZoneKind::LandslideRisk,
        ZoneKind::FloodProne,
        ZoneKind::Restricted,
        ZoneKind::RoadSegment,
    ];

    /// The snake_case name used in files and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneKind::LandslideRisk => "landslide_risk",
            ZoneKind::FloodProne => "flood_prone",
            ZoneKind::Restricted => "restricted",
            ZoneKind::RoadSegment => "road_segment",
        }
    }

    /// The kind named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What an asset is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AssetKind {
    /// An evacuation shelter.
    Shelter,
    /// A fire and rescue station.
    FireStation,
    /// A hospital or health centre.
    Hospital,
    /// A police post.
    PolicePost,
    /// A camera (fixed, not necessarily one of ours).
    Camera,
}

impl AssetKind {
    /// Every kind, in declaration order.
    pub const ALL: [AssetKind; 5] = [
        AssetKind::Shelter,
        AssetKind::FireStation,
        AssetKind::Hospital,
        AssetKind::PolicePost,
        AssetKind::Camera,
    ];

    /// The snake_case name used in files and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AssetKind::Shelter => "shelter",
            AssetKind::FireStation => "fire_station",
            AssetKind::Hospital => "hospital",
            AssetKind::PolicePost => "police_post",
            AssetKind::Camera => "camera",
        }
    }

    /// The kind named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A zone by id, name and kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct ZoneRef {
    /// Zone id from the zones file, e.g. `restricted-thuy-dien-son-la`.
    pub id: String,
    /// Name shown to operators.
    pub name: String,
    /// What it is.
    pub kind: ZoneKind,
}

/// An asset near something, with its distance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NearbyAsset {
    /// Asset id from the zones file.
    pub id: String,
    /// Name shown to operators.
    pub name: String,
    /// What it is.
    pub kind: AssetKind,
    /// Where: `[lon, lat]`, degrees WGS 84.
    pub pos: [f64; 2],
    /// Great-circle distance, metres.
    pub distance_m: f64,
}

/// What a moving subject did at a zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GeofenceTransition {
    /// It was seen inside the zone, having been outside.
    Enter,
    /// It was seen farther outside than the zone's buffer, having been inside.
    Exit,
    /// It has been inside longer than the dwell time (once per visit).
    Dwell,
}

impl GeofenceTransition {
    /// The snake_case name used in JSON and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            GeofenceTransition::Enter => "enter",
            GeofenceTransition::Exit => "exit",
            GeofenceTransition::Dwell => "dwell",
        }
    }
}

/// A geofence event: a subject entered, left or lingered in a zone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GeofenceEvent {
    /// The subject: a device id, or `plate:{normalised plate}` for a
    /// vehicle read by cameras.
    pub subject: String,
    /// The zone.
    pub zone: ZoneRef,
    /// What happened.
    pub transition: GeofenceTransition,
    /// Event time of the position that caused it.
    pub ts: Timestamp,
    /// That position, `[lon, lat]`.
    pub pos: [f64; 2],
    /// The device that reported the position (the camera for a plate).
    pub source: String,
    /// Seconds inside the zone at this event (dwell and exit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inside_s: Option<u64>,
}

/// One read of a plate in a track.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrackPoint {
    /// The camera that read it.
    pub camera: String,
    /// Event time of the read.
    pub ts: Timestamp,
    /// Where: the object's position when the camera gave one, else the camera's.
    pub pos: [f64; 2],
    /// Speed implied by the distance and time from the previous point, km/h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_kmh: Option<f64>,
}

/// The reads of one plate at successive cameras, in event-time order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Track {
    /// The plate, normalised (letters and digits, upper case).
    pub plate: String,
    /// The reads, oldest first (the most recent ones, bounded).
    pub points: Vec<TrackPoint>,
}
