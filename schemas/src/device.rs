//! Devices as the rest of the system sees them: registry facts and live state.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::Body;
use crate::time::Timestamp;

/// What a device is. Also the `{kind}` segment of its MQTT topic.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// Water-level gauge on a river or stream (hydrology body).
    RiverGauge,
    /// Rain gauge (hydrology body, `rainfall_mm`).
    RainGauge,
    /// Reservoir sensor at a dam (hydrology body).
    Reservoir,
    /// Traffic counter on a road (traffic body).
    TrafficCounter,
    /// AI camera (camera body).
    Camera,
}

impl DeviceKind {
    /// Every kind.
    pub const ALL: [DeviceKind; 5] = [
        DeviceKind::RiverGauge,
        DeviceKind::RainGauge,
        DeviceKind::Reservoir,
        DeviceKind::TrafficCounter,
        DeviceKind::Camera,
    ];

    /// The snake_case name used in topics, JSON and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::RiverGauge => "river_gauge",
            DeviceKind::RainGauge => "rain_gauge",
            DeviceKind::Reservoir => "reservoir",
            DeviceKind::TrafficCounter => "traffic_counter",
            DeviceKind::Camera => "camera",
        }
    }

    /// Whether devices of this kind have levels in the registry
    /// (river gauges' BĐ levels, reservoirs' levels).
    pub fn has_registry_levels(self) -> bool {
        matches!(self, DeviceKind::RiverGauge | DeviceKind::Reservoir)
    }

    /// Parses the snake_case name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Whether a reading body fits this kind of device.
    pub fn accepts(self, body: &Body) -> bool {
        matches!(
            (self, body),
            (
                DeviceKind::RiverGauge | DeviceKind::RainGauge | DeviceKind::Reservoir,
                Body::Hydrology(_)
            ) | (DeviceKind::TrafficCounter, Body::Traffic(_))
                | (DeviceKind::Camera, Body::Camera(_))
        )
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The level of an administrative area. Since July 2025 communes and wards
/// sit directly under the province; older data names the former districts,
/// which this hierarchy keeps as an optional level between them.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AreaLevel {
    /// Province (tỉnh).
    Province,
    /// Former district or provincial city (huyện, thành phố; before July 2025).
    FormerDistrict,
    /// Commune (xã).
    Commune,
    /// Ward (phường).
    Ward,
}

impl AreaLevel {
    /// The snake_case name used in JSON and time-series tag keys.
    pub fn as_str(self) -> &'static str {
        match self {
            AreaLevel::Province => "province",
            AreaLevel::FormerDistrict => "former_district",
            AreaLevel::Commune => "commune",
            AreaLevel::Ward => "ward",
        }
    }
}

/// One administrative area in a chain from the smallest area to the province.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AreaRef {
    // Id and name are shared: every device, alert and zone in an area
    // refers to the one copy the area map holds (at 100 000 devices,
    // copies were 38 MB of the process).
    /// Stable area id, e.g. `sl-to-hieu`.
    pub id: std::sync::Arc<str>,
    /// Name with Vietnamese diacritics, e.g. `Phường Tô Hiệu`.
    pub name: std::sync::Arc<str>,
    /// Level in the hierarchy.
    pub level: AreaLevel,
}

impl AreaRef {
    /// Whether a chain of areas lies in any of the areas `ids` (an empty
    /// list takes every chain): how filters and subscriptions match areas.
    pub fn chain_within(chain: &[AreaRef], ids: &[String]) -> bool {
        ids.is_empty() || chain.iter().any(|a| ids.iter().any(|id| **id == *a.id))
    }
}

/// Per-device thresholds from the registry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// River gauges: national flood alarm levels BĐ1, BĐ2, BĐ3 in metres
    /// above the gauge datum, strictly increasing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm_levels_m: Option<[f64; 3]>,
    /// Reservoirs: normal water level (mực nước dâng bình thường), metres above sea level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normal_level_m: Option<f64>,
    /// Reservoirs: flood-control level, metres above sea level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flood_control_level_m: Option<f64>,
}

/// What the registry knows about a device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceInfo {
    /// Device id.
    pub id: String,
    /// Device kind.
    pub kind: DeviceKind,
    /// Human name, e.g. `Trạm thủy văn Nậm La (Tô Hiệu)`.
    pub name: String,
    /// Registered position `[lon, lat]`, degrees WGS 84.
    pub pos: [f64; 2],
    /// Administrative areas containing the position, smallest first.
    pub area: Vec<AreaRef>,
    /// How often the device is expected to report, in seconds.
    pub expected_interval_s: u32,
    /// Thresholds for rules.
    #[serde(default)]
    pub thresholds: Thresholds,
    /// Where the device is in its life: active, in maintenance, retired.
    #[serde(default, skip_serializing_if = "Lifecycle::is_active")]
    pub lifecycle: Lifecycle,
    /// What it watches: its river, road and direction, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<Box<Site>>,
}

impl DeviceInfo {
    /// Whether the device's alerts and staleness are muted at event time
    /// `ts` (in maintenance then, or retired).
    pub fn muted_at(&self, ts: i64) -> bool {
        match &self.lifecycle {
            Lifecycle::Active => false,
            Lifecycle::Maintenance { until, .. } => until.is_none_or(|u| ts < u.millis()),
            Lifecycle::Retired { .. } => true,
        }
    }
}

/// Where a device is in its life.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum Lifecycle {
    /// Reporting and watched.
    #[default]
    Active,
    /// Being worked on: its readings are taken and shown, but its rules
    /// raise nothing and it is not reported silent, until `until` (event
    /// time; without it, until it is put back in service).
    Maintenance {
        /// When the maintenance ends.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<Timestamp>,
        /// Why, for the operators.
        #[serde(default)]
        reason: String,
    },
    /// Out of service for good: its readings are refused (`retired`); its
    /// history and alerts are kept.
    Retired {
        /// When it was retired.
        at: Timestamp,
        /// Why.
        #[serde(default)]
        reason: String,
    },
}

impl Lifecycle {
    /// Whether it is [`Lifecycle::Active`].
    pub fn is_active(&self) -> bool {
        matches!(self, Lifecycle::Active)
    }

    /// Whether it is [`Lifecycle::Retired`].
    pub fn is_retired(&self) -> bool {
        matches!(self, Lifecycle::Retired { .. })
    }

    /// `active`, `maintenance` or `retired`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Lifecycle::Active => "active",
            Lifecycle::Maintenance { .. } => "maintenance",
            Lifecycle::Retired { .. } => "retired",
        }
    }
}

/// What a device watches, when known (descriptive: shown and exported,
/// not used by the rules).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// The river (gauges, reservoirs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub river: Option<String>,
    /// The road (traffic counters, cameras).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub road: Option<String>,
    /// The direction of traffic counted, e.g. `Hà Nội → Điện Biên`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
}

impl Site {
    /// `None` when nothing is known.
    pub fn boxed(self) -> Option<Box<Site>> {
        (self != Site::default()).then(|| Box::new(self))
    }
}

/// A device as an operator registers it: [`DeviceInfo`] with the area as
/// an optional override (found from the position otherwise).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// Device id: letters, digits, `-`, `_`, `.`, `~`, at most 128.
    pub id: String,
    /// Device kind.
    pub kind: DeviceKind,
    /// Human name.
    pub name: String,
    /// Position `[lon, lat]`, degrees WGS 84.
    pub pos: [f64; 2],
    /// The smallest administrative area's id, when the position's own is
    /// not the right one (a gauge on a border river).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<String>,
    /// How often it is expected to report, seconds (at least 1).
    pub expected_interval_s: u32,
    /// Thresholds: `alarm_levels_m` (BĐ1–BĐ3) for river gauges,
    /// `normal_level_m` and `flood_control_level_m` for reservoirs.
    #[serde(default)]
    pub thresholds: Thresholds,
    /// Active (default), in maintenance or retired.
    #[serde(default, skip_serializing_if = "Lifecycle::is_active")]
    pub lifecycle: Lifecycle,
    /// The river it watches (gauges, reservoirs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub river: Option<String>,
    /// The road it watches (traffic counters, cameras).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub road: Option<String>,
    /// The direction of traffic counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
}

impl DeviceSpec {
    /// The river, road and direction.
    pub fn site(&self) -> Site {
        Site {
            river: self.river.clone(),
            road: self.road.clone(),
            direction: self.direction.clone(),
        }
    }
}

/// The latest reading of a device, as the engine last saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceState {
    /// Device id.
    // Shared with the registry: the engine emits it without a copy.
    pub device: std::sync::Arc<str>,
    /// Event time of the latest reading.
    pub ts: Timestamp,
    /// Sequence number of the latest reading.
    pub seq: u64,
    /// Current position `[lon, lat]`: the reported one, else the registered one.
    pub pos: [f64; 2],
    /// The latest reading's body.
    pub reading: Body,
    /// The highest open alarm level on this device (1 = BĐ1 ...), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm_level: Option<u8>,
}

/// A device with its latest state, as listed by the API and live snapshots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceView {
    /// Registry facts.
    #[serde(flatten)]
    pub info: DeviceInfo,
    /// Latest state; absent until the device has reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DeviceState>,
    /// Whether the device is connected, from its MQTT status topic; absent
    /// until the device (or its last will) has said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<Presence>,
    /// The latest result of each of the device's windows (e.g. rainfall
    /// over 1 h, 3 h, 6 h and 24 h).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<crate::window::WindowResult>,
    /// Zones containing the device's latest position.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<crate::zone::ZoneRef>,
}

/// A device's connection status, from its retained MQTT status topic
/// `ioc/v1/{kind}/{device}/status` (payload `online` or `offline`; devices
/// set `offline` as their last will, so the broker publishes it when the
/// connection drops).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    /// Connected to the broker.
    Online,
    /// Disconnected: said so, or its last will was published.
    Offline,
}

impl PresenceStatus {
    /// `online` or `offline`, as on the status topic.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceStatus::Online => "online",
            PresenceStatus::Offline => "offline",
        }
    }
}

/// A device's connection status and when it was received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Presence {
    /// Online or offline.
    pub status: PresenceStatus,
    /// When the processor received this status. MQTT carries no time, so
    /// for a retained status this is when the processor subscribed, not
    /// when the device changed.
    pub received: Timestamp,
}

/// A device's presence changed (an entry of a live `delta`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PresenceChange {
    /// Device id.
    pub device: String,
    /// The new presence.
    #[serde(flatten)]
    pub presence: Presence,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_is_within_any_of_its_areas() {
        let area = |id: &str, level| AreaRef {
            id: id.into(),
            name: id.into(),
            level,
        };
        let chain = [
            area("sl-to-hieu", AreaLevel::Commune),
            area("sl", AreaLevel::Province),
        ];
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(AreaRef::chain_within(&chain, &[]));
        assert!(AreaRef::chain_within(&chain, &ids(&["sl"])));
        assert!(AreaRef::chain_within(&chain, &ids(&["lc", "sl-to-hieu"])));
        assert!(!AreaRef::chain_within(&chain, &ids(&["sl-chieng-an"])));
        assert!(!AreaRef::chain_within(&[], &ids(&["sl"])));
    }
}
