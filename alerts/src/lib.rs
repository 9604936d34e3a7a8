//! Alerts that operators act on, kept durably.
//!
//! - [`lifecycle`]: the rules of the lifecycle as plain functions (open →
//!   acknowledged → resolved; escalation, assignment, notes,
//!   re-notification);
//! - [`store`]: the store, SQLite or PostgreSQL behind one interface;
//! - [`service`]: the running service between the engine, the store, the
//!   API and whoever publishes changes;
//! - [`cap`]: alerts as Common Alerting Protocol 1.2 messages and feed;
//! - [`webhook`]: webhook subscribers, signatures, and delivery from the
//!   durable outbox.

pub mod cap;
pub mod lifecycle;
pub mod service;
pub mod store;
pub mod webhook;

pub use lifecycle::{Operation, Refusal};
pub use service::{AlertService, AlertsConfig, KAFKA_SUBSCRIBER, Publish, SinkFn};
pub use store::{ActError, AlertFilter, AlertPage, AlertStore, AuditEntry, Delivery, StoreError};
pub use webhook::Webhook;
