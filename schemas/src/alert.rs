//! Alerts raised by rules.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::device::AreaRef;
use crate::time::Timestamp;
use crate::zone::{NearbyAsset, ZoneRef};

/// Where an alert is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The condition holds and nobody has acknowledged it.
    Open,
    /// An operator has acknowledged it; the condition may still hold. An
    /// escalation makes it `open` again.
    Acknowledged,
    /// The condition cleared (with the rule's hysteresis), or an operator
    /// resolved it.
    Resolved,
}

impl AlertStatus {
    /// The snake_case name used in JSON and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
        }
    }

    /// The status named `s` (as in JSON), if any.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Open, Self::Acknowledged, Self::Resolved]
            .into_iter()
            .find(|v| v.as_str() == s)
    }

    /// Open or acknowledged: the alert still wants attention.
    pub fn is_active(self) -> bool {
        self != AlertStatus::Resolved
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

    /// The severity named `s` (as in JSON), if any.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Minor, Self::Moderate, Self::Severe, Self::Extreme]
            .into_iter()
            .find(|v| v.as_str() == s)
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
    /// Zones containing `pos` (or the zone the alert is about).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<ZoneRef>,
    /// The nearest assets of the kinds the rule asks for, nearest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nearest: Vec<NearbyAsset>,
    /// The reading behind the latest change.
    pub evidence: Evidence,
    /// Event time the episode opened.
    pub opened_at: Timestamp,
    /// Event time of the latest change.
    pub updated_at: Timestamp,
    /// Event time the episode resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
    /// Increments with every change of this alert, starting at 1: changes
    /// of the rule's judgement and, once stored, operators' actions too.
    pub version: u32,
    /// Whether this change was caused by a late reading that amended a
    /// window already evaluated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revision: bool,
    /// What operators did with it (kept by the alert store).
    #[serde(default, skip_serializing_if = "Handling::is_empty")]
    pub handling: Handling,
}

/// What operators did with an alert.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Handling {
    /// Who acknowledged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    /// When it was acknowledged (wall clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<Timestamp>,
    /// Who it is assigned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// Who resolved it: an operator, or `rule` when its condition cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    /// How many notes operators added (the notes are in the history).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub notes: u32,
    /// When subscribers were last notified of it (wall clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified_at: Option<Timestamp>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Handling {
    /// Nothing done yet.
    pub fn is_empty(&self) -> bool {
        self == &Handling::default()
    }
}

/// What a change in an alert's history did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertAction {
    /// The rule opened it.
    Opened,
    /// The rule raised its level.
    Escalated,
    /// The rule lowered its level (still above the first).
    Lowered,
    /// The rule amended it without a change of level (new evidence, a revision).
    Updated,
    /// The rule's condition cleared.
    Cleared,
    /// An escalation reopened an alert an operator had resolved.
    Reopened,
    /// An operator acknowledged it.
    Acknowledged,
    /// An operator resolved it.
    Resolved,
    /// An operator assigned it.
    Assigned,
    /// An operator added a note.
    Noted,
    /// Still open and unacknowledged after the re-notification interval.
    Renotified,
}

impl AlertAction {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertAction::Opened => "opened",
            AlertAction::Escalated => "escalated",
            AlertAction::Lowered => "lowered",
            AlertAction::Updated => "updated",
            AlertAction::Cleared => "cleared",
            AlertAction::Reopened => "reopened",
            AlertAction::Acknowledged => "acknowledged",
            AlertAction::Resolved => "resolved",
            AlertAction::Assigned => "assigned",
            AlertAction::Noted => "noted",
            AlertAction::Renotified => "renotified",
        }
    }
}

/// One entry of an alert's history: who changed what, when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlertChange {
    /// The alert's id.
    pub alert: String,
    /// The alert's version after this change.
    pub version: u32,
    /// When the change was recorded (wall clock).
    pub at: Timestamp,
    /// Who made it: `rule` for the engine, else the operator.
    pub by: String,
    /// What it did.
    pub action: AlertAction,
    /// Status after the change.
    pub status: AlertStatus,
    /// Level after the change.
    pub level: u8,
    /// The operator's note, or the assignee for `assigned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// An alert with its whole history, oldest change first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlertDetail {
    /// The alert as it is now.
    pub alert: Alert,
    /// Every change, oldest first.
    pub history: Vec<AlertChange>,
}
