//! Ingest: getting telemetry from devices into the engine.
//!
//! - [`pipeline`]: [`Ingestor`], the one path every source takes: decode
//!   and validate ([`decode`]), drop duplicates ([`dedup`]), then hand the
//!   reading to the engine or the rejection to the [`deadletter`] writer,
//!   and only then let the source acknowledge;
//! - [`mqtt`]: the MQTT source (QoS 1, persistent session, TLS, shared
//!   subscriptions), acking each message after `Ingestor::submit`;
//! - [`kafka`]: the consumer-group source, storing offsets after hand-off,
//!   and the dead-letter producer;
//! - [`http`]: tokens and per-line handling for `POST /api/v1/ingest` (the
//!   route is in the dashboard API);
//! - [`deadletter`]: rejected messages with their bytes and origin, to a
//!   rotated JSON Lines file or a Kafka topic;
//! - [`stats`]: received / accepted / rejected counters by source and reason.
//!
//! This is the only crate that names rumqttc on the receiving side (the
//! simulator in `ioc-devices` publishes with it), and only its `kafka`
//! module names rdkafka.

pub mod deadletter;
pub mod decode;
pub mod dedup;
pub mod http;
pub mod kafka;
pub mod mqtt;
pub mod pipeline;
pub mod stats;
pub mod unregistered;

pub use deadletter::{DeadLetter, DeadLetters, Origin};
pub use decode::Decoder;
pub use pipeline::Ingestor;
pub use stats::IngestStats;
