//! Rules: plain Rust state machines, tested without timely.
//!
//! Each rule owns a per-subject state type and an `observe` function that
//! takes one reading and returns an alert change, if any. The dataflow
//! (`crate::dataflow`) keeps the states keyed by device on the worker that
//! owns the device and calls the rules in event-time order per device.

pub mod river_level;
