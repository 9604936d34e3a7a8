//! Alerts raised by rules.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::device::AreaRef;
use crate::time::Timestamp;

/// Where an alert is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The condition holds and nobody has acknowledged it.
    Open,
    /// The condition cleared (with the rule's hysteresis).
    Resolved,
}

impl AlertStatus {
    /// The snake_case name used in JSON and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// Severity, on the scale of the Common Alerting Protocol (CAP 1.2).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Minor threat to life or property.
    Minor,
    /// Possible threat to life or property.
    Moderate,
    /// Significant threat to life or property.
    Severe,
    /// Extraordinary threat to life or property.
    Extreme,
}

impl Severity {
    /// The snake_case name used in JSON, metrics labels and time-series tags.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Minor => "minor",
            Severity::Moderate => "moderate",
            Severity::Severe => "severe",
            Severity::Extreme => "extreme",
        }
    }
}

/// The values that made a rule fire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Evidence {
    /// The observed value.
    pub value: f64,
    /// Unit of `value` and `threshold`, e.g. `m`.
    pub unit: String,
    /// The threshold of the current level.
    pub threshold: f64,
    /// Event time of the reading.
    pub ts: Timestamp,
    /// Sequence number of the reading.
    pub seq: u64,
    /// Length of the window the value was computed over, in seconds
    /// (rainfall totals, rates of change, surges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<u32>,
    /// Rainfall: whether readings covered the whole window. A total over an
    /// incomplete window is a lower bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
    /// Rate of change: the least-squares slope, in `unit` per hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_h: Option<f64>,
    /// Rate of change: the next alarm level the value is heading for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_level: Option<String>,
    /// Rate of change: when the value would reach `next_level` at the
    /// current rate (event time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_level_at: Option<Timestamp>,
    /// Watch list: the plate read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plate: Option<String>,
    /// Other devices concerned, e.g. the gauges downstream of a reservoir
    /// that opened its gates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<String>,
}

impl Evidence {
    /// Evidence of one reading's value against a threshold.
    pub fn new(value: f64, unit: &str, threshold: f64, ts: Timestamp, seq: u64) -> Self {
        Evidence {
            value,
            unit: unit.to_owned(),
            threshold,
            ts,
            seq,
            window_s: None,
            complete: None,
            rate_per_h: None,
            next_level: None,
            next_level_at: None,
            plate: None,
            related: Vec::new(),
        }
    }
}

/// An alert about one subject (a device or a zone) for one episode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Alert {
    /// Deterministic id `{rule}:{subject}:{episode start, epoch ms}`: a replay
    /// of the same readings yields the same id.
    pub id: String,
    /// The rule that raised it, e.g. `river_level`.
    pub rule: String,
    /// The device or zone id the alert is about.
    pub subject: String,
    /// Lifecycle state.
    pub status: AlertStatus,
    /// CAP severity of the current level.
    pub severity: Severity,
    /// Current level, 1-based (1 = the rule's first level, e.g. BĐ1). 0 once resolved.
    pub level: u8,
    /// Name of the current (or, once resolved, the peak) level, e.g. `BĐ2`.
    pub level_name: String,
    /// Highest level reached in this episode.
    pub peak_level: u8,
    /// Title in Vietnamese.
    pub title_vi: String,
    /// Title in English.
    pub title_en: String,
    /// Where: `[lon, lat]`, degrees WGS 84.
    pub pos: [f64; 2],
    /// Administrative areas containing `pos`, smallest first.
    pub area: Vec<AreaRef>,
    /// The reading behind the latest change.
    pub evidence: Evidence,
    /// Event time the episode opened.
    pub opened_at: Timestamp,
    /// Event time of the latest change.
    pub updated_at: Timestamp,
    /// Event time the episode resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
    /// Increments with every change of this alert, starting at 1.
    pub version: u32,
    /// Whether this change was caused by a late reading that amended a
    /// window already evaluated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revision: bool,
}
