//! The `ioc` binary's library: configuration, the embedded broker and the
//! wiring of the crates into one running system.
//!
//! - [`config`]: layered configuration (defaults → file → `IOC_*` → flags);
//! - [`broker`]: the in-process MQTT broker of the embedded default;
//! - [`rules`]: the rules in force, reloaded on file change or request;
//! - [`backtest`]: `ioc backtest`, what a rules file would have raised
//!   over recorded readings, against the rules in force;
//! - [`checkpoint`]: `ioc checkpoint list|inspect`, what the engine's
//!   durable state holds on disk;
//! - [`outputs`]: the output router: each kind of engine output and each
//!   stored alert change to its consumers (live hub, alert store, time
//!   series, alert channels);
//! - [`app`]: [`app::start`] brings every component up, and
//!   [`app::Running::shutdown`] takes them down in order.
//!
//! The logic lives in the crates: `schemas`, `devices`, `ingest`,
//! `processing`, `alerts`, `dashboard-api`, `timeseries`. This crate
//! only wires them.

pub mod app;
pub mod backtest;
pub mod broker;
pub mod checkpoint;
pub mod config;
pub mod deadletter;
pub mod outputs;
pub mod rules;
