//! Every way an alert leaves the system, in one place.
//!
//! | channel | module | fed by | what a subscriber gets |
//! |---|---|---|---|
//! | MQTT | [`mqtt`] | the store's publish callback, after each commit | the state of every active alert retained at `{prefix}/{id}` (cleared when resolved), every change on `{prefix}/events`; reconciled with the store at start |
//! | Kafka | [`kafka`] | the durable outbox (retried, in order per alert) | every change on a topic keyed by alert id |
//! | webhooks | [`webhook`] | the durable outbox (retried with backoff, dead-lettered after the last try) | every change POSTed, signed (HMAC-SHA256) with an idempotency key |
//! | CAP 1.2 | [`cap`] | read on request by the HTTP API | an alert as a CAP message, and the Atom feed of alerts |
//!
//! The outbox is the store's ([`crate::store`]); one worker per subscriber
//! delivers from it ([`crate::service`]). Which changes reach which channel
//! is decided by the binary's output router (`src/outputs.rs`).

pub mod cap;
pub mod kafka;
pub mod mqtt;
pub mod webhook;
