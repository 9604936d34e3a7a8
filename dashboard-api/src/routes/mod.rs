//! HTTP routes: [`rest`] for devices and areas, [`alerts`] for alerts and
//! operators' actions, [`live`] for the
//! WebSocket feed, [`web`] for the control-room page, [`ingest`] for
//! telemetry over HTTP, [`rules`] for the rules file and backtests.

pub mod alerts;
pub mod ingest;
pub mod live;
pub mod registry;
pub mod rest;
pub mod rules;
pub mod sso;
pub mod web;
