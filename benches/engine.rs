//! Engine-only throughput: simulated readings of N devices pushed through
//! the real input into the timely workers with every rule of the demo
//! rules file (`deploy/rules.toml`) and the demo zones on, every output
//! drained.
//!
//! ```sh
//! cargo bench --bench engine -- [DEVICES] [EVENTS] [WORKERS]
//! ```
//!
//! Defaults: 100000 devices, 2000000 events, 2 workers. Prints the result
//! and writes it to `target/bench/engine.json` (or `$IOC_BENCH_OUT`).

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use ioc_devices::{Registry, Scenario, Simulator};
use ioc_processing::{Engine, EngineConfig, Reading};
use ioc_schemas::Timestamp;

fn main() {
    let devices: usize = common::arg(0, 100_000);
    let events: usize = common::arg(1, 2_000_000);
    let workers: usize = common::arg(2, 2);
    let registry = Registry::sonla_scaled(devices);
    // A fixed start (2026-01-01T00:00Z) keeps the input identical between runs.
    let t0 = 1_767_225_600_000;
    let mut sim = Simulator::new(registry.clone(), Scenario::Flood, 7, Timestamp(t0));
    let readings: Vec<Reading> = (0..events)
        .map(|k| {
            // Event time advances 1 ms per reading over all devices.
            let now = Timestamp(t0 + k as i64);
            let envelope = sim.next_reading(now).expect("devices");
            let device = registry.lookup(&envelope.device).expect("registered");
            Reading {
                device,
                received: now,
                envelope,
            }
        })
        .collect();

    let (out_tx, out_rx) = flume::bounded(1 << 16);
    let drain = std::thread::spawn(move || out_rx.iter().map(|b: Vec<_>| b.len()).sum::<usize>());
    let rules = ioc::rules::RulesSource::new(None, registry.clone())
        .load()
        .expect("the demo rules fit the scaled catalogue");
    let config = EngineConfig {
        workers,
        // Event time here is a replayed day in January: it must come from
        // the readings only, not follow the wall clock when the input
        // pauses (that would make every reading late).
        idle_timeout: std::time::Duration::from_secs(3600),
        rules: Some(std::sync::Arc::new(rules)),
        zones: Some(std::sync::Arc::new(ioc_processing::ZonesCell::new(
            std::sync::Arc::new(
                ioc::rules::ZonesSource::new(None)
                    .load()
                    .expect("the demo zones"),
            ),
        ))),
        ..EngineConfig::default()
    };
    let started = Instant::now();
    let cpu_before = common::process_cpu_seconds();
    let (engine, input) = Engine::start(&config, registry, out_tx).expect("engine");
    for r in readings {
        input.send_blocking(r).expect("engine open");
    }
    drop(input);
    let stats = engine.stats();
    engine.join().expect("engine");
    let outputs = drain.join().expect("drain");
    let secs = started.elapsed().as_secs_f64();
    // CPU of the whole process while the engine ran: the workers, the
    // producer and the drain thread. Steadier than wall time on a shared VM.
    let cpu = common::process_cpu_seconds() - cpu_before;
    let processed = stats.processed.load(std::sync::atomic::Ordering::Relaxed);
    // As of the workers' last scan (a minute of event time before the end).
    let state_bytes = stats.state_bytes.load(std::sync::atomic::Ordering::Relaxed);
    let largest = stats
        .largest_device_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    let result = serde_json::json!({
        "benchmark": "engine",
        "date": Timestamp::now(),
        "machine": common::bench_machine(),
        "commit": common::bench_commit(),
        "devices": devices,
        "events": events,
        "workers": workers,
        "seconds": secs,
        "events_per_s": events as f64 / secs,
        "cpu_s": cpu,
        "cpu_us_per_event": cpu * 1e6 / events as f64,
        "rules": "deploy/rules.toml",
        "outputs": outputs,
        "processed": processed,
        "state_bytes": state_bytes,
        "state_bytes_per_device": state_bytes as f64 / devices as f64,
        "largest_device_bytes": largest,
    });
    let out = common::write_bench_result("engine", &result);
    println!(
        "engine: {events} events of {devices} devices, {workers} workers: {:.0} events/s, {:.2} µs CPU per event\n\
         state: {:.0} bytes per device, {largest} for the largest\nwritten to {}",
        events as f64 / secs,
        cpu * 1e6 / events as f64,
        state_bytes as f64 / devices as f64,
        out.display()
    );
}
