//! Event time: milliseconds since the Unix epoch, written as RFC 3339.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, stored as milliseconds since the Unix epoch (UTC).
///
/// Serialized as an RFC 3339 string with millisecond precision
/// (`2026-07-14T03:12:45.120Z`); deserialized from either that form or an
/// integer number of epoch milliseconds, as device makers choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_millis())
    }

    /// Parses RFC 3339 text (any offset; converted to UTC).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| Timestamp(t.timestamp_millis()))
    }

    /// The time as RFC 3339 text in UTC with milliseconds.
    pub fn to_rfc3339(self) -> String {
        match DateTime::<Utc>::from_timestamp_millis(self.0) {
            Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
            None => self.0.to_string(),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

/// What a producer may send for a time: RFC 3339 text or epoch milliseconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum TimeInput<'a> {
    Millis(i64),
    #[serde(borrow)]
    Text(Cow<'a, str>),
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match TimeInput::deserialize(deserializer)? {
            TimeInput::Millis(ms) => Ok(Timestamp(ms)),
            TimeInput::Text(text) => Timestamp::parse_rfc3339(&text).ok_or_else(|| {
                serde::de::Error::custom(format_args!(
                    "invalid timestamp {text:?}: expected RFC 3339 or epoch milliseconds"
                ))
            }),
        }
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "RFC 3339 date-time (any offset) or integer milliseconds since the Unix epoch. Output is always RFC 3339 in UTC with milliseconds.",
            "anyOf": [
                { "type": "string", "format": "date-time" },
                { "type": "integer", "minimum": 0 }
            ]
        })
    }
}

/// Serde helpers that write a [`Timestamp`] as plain epoch milliseconds, for
/// internal formats (binary exchange between workers, spools).
pub mod as_millis {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Timestamp;

    /// Writes the milliseconds.
    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(t.0)
    }

    /// Reads the milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        i64::deserialize(d).map(Timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_writes_rfc3339() {
        let a: Timestamp = serde_json::from_str("\"2026-07-14T10:12:45.120+07:00\"").unwrap();
        let b: Timestamp = serde_json::from_str("1783998765120").unwrap();
        assert_eq!(a, b);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            "\"2026-07-14T03:12:45.120Z\""
        );
    }

    #[test]
    fn rejects_garbage_text() {
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}
