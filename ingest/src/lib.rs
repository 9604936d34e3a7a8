//! Ingest: getting telemetry from devices into the engine.
//!
//! - [`mqtt`]: the MQTT source; subscribes to `ioc/v1/+/+/telemetry`
//!   (QoS 1, persistent session), hands each valid reading to the engine and
//!   acknowledges it only afterwards;
//! - [`decode`]: bytes on a topic → validated [`ioc_processing::Reading`]
//!   or a [`ioc_schemas::Rejection`] (schema checks from `ioc-schemas`, then
//!   registry checks: unknown device, kind and topic mismatches);
//! - [`stats`]: received / accepted / rejected-by-reason counters.
//!
//! This is the only crate that names rumqttc on the receiving side (the
//! simulator in `ioc-devices` publishes with it).

pub mod deadletter;
pub mod decode;
pub mod dedup;
pub mod http;
pub mod kafka;
pub mod mqtt;
pub mod pipeline;
pub mod stats;

pub use deadletter::{DeadLetter, DeadLetters, Origin};
pub use decode::Decoder;
pub use pipeline::Ingestor;
pub use stats::IngestStats;
