//! HTTP routes: [`rest`] for devices, alerts and areas, [`live`] for the
//! WebSocket feed, [`web`] for the control-room page, [`ingest`] for
//! telemetry over HTTP.

pub mod ingest;
pub mod live;
pub mod rest;
pub mod web;
