//! Alerts that operators act on, kept durably.
//!
//! - [`lifecycle`]: the rules of the lifecycle as plain functions (open →
//!   acknowledged → resolved; escalation, assignment, notes,
//!   re-notification);
//! - [`store`]: the store, SQLite or PostgreSQL behind one interface;
//! - [`service`]: the running service between the engine, the store, the
//!   API and whoever publishes changes;
//! - [`channels`]: every way an alert leaves the system: retained MQTT
//!   state, a Kafka topic, signed webhooks, and the CAP 1.2 feed.

pub mod channels;
pub mod devices;
pub mod follow;
pub mod lifecycle;
pub mod service;
pub mod store;

pub use channels::webhook::Webhook;
pub use devices::{DeviceChange, DeviceChangeEntry};
pub use lifecycle::{Operation, Refusal};
pub use service::{AlertService, AlertsConfig, KAFKA_SUBSCRIBER, Publish, SinkFn};
pub use store::{
    ActError, AlertFilter, AlertPage, AlertStore, AuditEntry, CHANGES_CHANNEL, Delivery, StoreError,
};
