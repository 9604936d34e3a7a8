//! Why a message was not accepted.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A stable, machine-readable rejection reason. The snake_case name is the
/// value of the `reason` label on `ioc_events_rejected_total`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The payload is larger than the configured limit.
    Oversized,
    /// The payload is not JSON.
    MalformedJson,
    /// A field has the wrong type, is unknown, or is not allowed.
    InvalidField,
    /// A required field is missing.
    MissingField,
    /// The envelope version is not 1.
    UnsupportedVersion,
    /// None of `hydrology`, `traffic`, `camera` is present.
    MissingBody,
    /// More than one body key is present.
    MultipleBodies,
    /// A number is NaN or infinite.
    NonFinite,
    /// A number is outside its physical range.
    OutOfRange,
    /// A position is not a WGS 84 `[lon, lat]`.
    InvalidCoordinates,
    /// The event time cannot be used.
    InvalidTimestamp,
    /// The event time lies further in the future than the allowed skew.
    FutureTimestamp,
    /// The event time lies before the accepted horizon (too old to use).
    StaleTimestamp,
    /// A licence plate is not in Vietnamese format.
    InvalidPlate,
    /// The device is not in the registry.
    UnknownDevice,
    /// The body does not fit the registered device kind.
    KindMismatch,
    /// The topic names another device or is not a telemetry topic.
    TopicMismatch,
    /// The Kafka message key names another device than the envelope.
    KeyMismatch,
    /// The client's token does not cover this device (HTTP ingest).
    Forbidden,
    /// The same device and sequence number was already processed.
    Duplicate,
    /// The event time lies before the engine's watermark minus the lateness
    /// horizon: the windows it belongs to are closed for good.
    Late,
    /// The device is retired in the registry: it no longer reports.
    RetiredDevice,
}

impl RejectReason {
    /// Every reason, for metrics pre-registration and documentation.
    pub const ALL: [RejectReason; 22] = [
        RejectReason::Oversized,
        RejectReason::MalformedJson,
        RejectReason::InvalidField,
        RejectReason::MissingField,
        RejectReason::UnsupportedVersion,
        RejectReason::MissingBody,
        RejectReason::MultipleBodies,
        RejectReason::NonFinite,
        RejectReason::OutOfRange,
        RejectReason::InvalidCoordinates,
        RejectReason::InvalidTimestamp,
        RejectReason::FutureTimestamp,
        RejectReason::StaleTimestamp,
        RejectReason::InvalidPlate,
        RejectReason::UnknownDevice,
        RejectReason::KindMismatch,
        RejectReason::TopicMismatch,
        RejectReason::KeyMismatch,
        RejectReason::Forbidden,
        RejectReason::Duplicate,
        RejectReason::Late,
        RejectReason::RetiredDevice,
    ];

    /// The stable snake_case code.
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::Oversized => "oversized",
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::InvalidField => "invalid_field",
            RejectReason::MissingField => "missing_field",
            RejectReason::UnsupportedVersion => "unsupported_version",
            RejectReason::MissingBody => "missing_body",
            RejectReason::MultipleBodies => "multiple_bodies",
            RejectReason::NonFinite => "non_finite",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::InvalidCoordinates => "invalid_coordinates",
            RejectReason::InvalidTimestamp => "invalid_timestamp",
            RejectReason::FutureTimestamp => "future_timestamp",
            RejectReason::StaleTimestamp => "stale_timestamp",
            RejectReason::InvalidPlate => "invalid_plate",
            RejectReason::UnknownDevice => "unknown_device",
            RejectReason::KindMismatch => "kind_mismatch",
            RejectReason::TopicMismatch => "topic_mismatch",
            RejectReason::KeyMismatch => "key_mismatch",
            RejectReason::Forbidden => "forbidden",
            RejectReason::Duplicate => "duplicate",
            RejectReason::Late => "late",
            RejectReason::RetiredDevice => "retired_device",
        }
    }

    /// The reason with this code.
    pub fn parse(code: &str) -> Option<RejectReason> {
        RejectReason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// Position in [`RejectReason::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A rejected message: the reason code, where in the document the problem
/// is, and a human-readable detail.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}{}: {detail}", pointer.as_deref().map(|p| format!(" at {p}")).unwrap_or_default())]
pub struct Rejection {
    /// The stable reason code.
    pub reason: RejectReason,
    /// JSON pointer (RFC 6901) of the offending field, when one field is to blame.
    pub pointer: Option<String>,
    /// What exactly was wrong, for logs and dead letters.
    pub detail: String,
}

impl Rejection {
    /// A rejection with a reason and detail.
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            pointer: None,
            detail: detail.into(),
        }
    }

    /// The same rejection, blaming the field at this JSON pointer.
    #[must_use]
    pub fn at(mut self, pointer: impl Into<String>) -> Self {
        self.pointer = Some(pointer.into());
        self
    }
}

/// The JSON pointer of a dotted field path: `hydrology.water_level_m` →
/// `/hydrology/water_level_m` (with `~` and `/` escaped).
pub fn pointer_of(dotted: &str) -> String {
    let mut out = String::with_capacity(dotted.len() + 1);
    for part in dotted.split('.').filter(|p| !p.is_empty()) {
        out.push('/');
        out.push_str(&part.replace('~', "~0").replace('/', "~1"));
    }
    out
}
