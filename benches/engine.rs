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
//!
//! `IOC_BENCH_PROCESSES=P` runs a cluster of P engines of WORKERS workers
//! each, connected over loopback TCP by timely's networking exactly as
//! separate processes are (their threads share this process, so its CPU
//! time counts all of them): each takes every P-th reading, as from an MQTT
//! shared subscription, so (P-1)/P of the readings cross to another
//! process, and each process gets the others' outputs (what its screens
//! would show). Compare `-- 100000 2000000 1` with `IOC_BENCH_PROCESSES=2`
//! against `-- 100000 2000000 2` alone: the same two cores.
//! `IOC_BENCH_SPLIT=device` sends each device's readings to one process
//! instead (as Kafka's partitioning by key does; still (P-1)/P cross);
//! `IOC_BENCH_FRONT=0` makes process 0 the only one that shows the whole
//! deployment.
//!
//! `IOC_BENCH_CHECKPOINT=1` runs with durable state (every reading to the
//! journal, a checkpoint every second: ten times the default rate;
//! `IOC_BENCH_CHECKPOINT_INTERVAL_MS` changes it), then
//! starts a second engine on what a kill at 90 % of the readings would
//! have left (the data directory hard-linked at that moment: the newest
//! checkpoint and the journal after it, which the run keeps appending to)
//! and times the restore and the replay; the result gets the checkpoint's
//! size and the recovery time.

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
    let state_dir = std::env::var_os("IOC_BENCH_CHECKPOINT").map(|_| tempfile::tempdir().unwrap());
    let config = EngineConfig {
        durable: state_dir.as_ref().map(|d| ioc_processing::DurableConfig {
            dir: d.path().to_owned(),
            interval: std::time::Duration::from_millis(
                std::env::var("IOC_BENCH_CHECKPOINT_INTERVAL_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1000),
            ),
            ..ioc_processing::DurableConfig::default()
        }),
        ..config
    };
    let processes: usize = std::env::var("IOC_BENCH_PROCESSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    if processes > 1 {
        return cluster(
            config, registry, readings, processes, devices, out_tx, drain,
        );
    }
    let started = Instant::now();
    let cpu_before = common::process_cpu_seconds();
    let (mut engine, input) = Engine::start(&config, registry.clone(), out_tx).expect("engine");
    engine.replay(&input, |_| {}).expect("nothing to replay");
    let crash_at = events * 9 / 10;
    let crashed = state_dir.as_ref().map(|_| tempfile::tempdir().unwrap());
    for (i, r) in readings.into_iter().enumerate() {
        // The receipt (journal on disk) matters to a source's
        // acknowledgement, not to throughput: not waited for.
        drop(input.send_blocking(r).expect("engine open"));
        if i == crash_at
            && let (Some(from), Some(to)) = (&state_dir, &crashed)
        {
            link_tree(from.path(), to.path());
        }
    }
    drop(input);
    let stats = engine.stats();
    engine.join().expect("engine");
    let outputs = drain.join().expect("drain");
    let secs = started.elapsed().as_secs_f64();
    // CPU of the whole process while the engine ran: the workers, the
    // producer and the drain thread. Steadier than wall time on a shared VM.
    let cpu = common::process_cpu_seconds() - cpu_before;
    // The state left behind: its size, and how long a start takes to load it.
    let durable = state_dir.as_ref().map(|d| {
        let store =
            ioc_processing::durable::store::Store::open(&d.path().join("checkpoints")).unwrap();
        let listed = store.list().unwrap();
        let newest = listed.iter().rev().find(|l| l.manifest.is_ok()).unwrap();
        let epochs = newest.epoch;
        let bytes = newest.bytes;
        let (tx, rx) = flume::unbounded();
        let config = EngineConfig {
            durable: config
                .durable
                .clone()
                .map(|c| ioc_processing::DurableConfig {
                    dir: crashed.as_ref().unwrap().path().to_owned(),
                    ..c
                }),
            ..config.clone()
        };
        let restore = Instant::now();
        let (mut again, input) = Engine::start(&config, registry.clone(), tx).expect("restart");
        let recovered = again.replay(&input, |_| {}).expect("replay");
        let recovery_s = restore.elapsed().as_secs_f64();
        drop(input);
        again.join().expect("restarted engine");
        drop(rx);
        serde_json::json!({
            "checkpoints": epochs,
            "checkpoint_bytes": bytes,
            "checkpoint_bytes_per_device": bytes as f64 / devices as f64,
            "recovery_s": recovery_s,
            "replayed": recovered.readings,
        })
    });
    let processed = stats.processed.load(std::sync::atomic::Ordering::Relaxed);
    // As of the workers' last scan (a minute of event time before the end).
    let state_bytes = stats.state_bytes.load(std::sync::atomic::Ordering::Relaxed);
    let largest = stats
        .largest_device_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut result = throughput(devices, events, workers, secs, cpu, outputs, processed);
    // Readings behind the watermark when they arrived: the input is in
    // event-time order, so anything here means event time ran ahead.
    result["late"] = stats.late.load(std::sync::atomic::Ordering::Relaxed).into();
    result["state_bytes"] = state_bytes.into();
    result["state_bytes_per_device"] = (state_bytes as f64 / devices as f64).into();
    result["largest_device_bytes"] = largest.into();
    result["durable"] = durable.unwrap_or_default();
    let out = common::write_bench_result("engine", &result);
    println!(
        "engine: {events} events of {devices} devices, {workers} workers: {:.0} events/s, {:.2} µs CPU per event\n\
         state: {:.0} bytes per device, {largest} for the largest\nwritten to {}",
        events as f64 / secs,
        cpu * 1e6 / events as f64,
        state_bytes as f64 / devices as f64,
        out.display()
    );
    if let Some(d) = result.get("durable").filter(|d| !d.is_null()) {
        println!("durable state: {d}");
    }
}

/// The fields of every engine result: what ran and how fast.
fn throughput(
    devices: usize,
    events: usize,
    workers: usize,
    secs: f64,
    cpu: f64,
    outputs: usize,
    processed: u64,
) -> serde_json::Value {
    serde_json::json!({
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
    })
}

/// The run of `IOC_BENCH_PROCESSES`: `processes` engines of one cluster,
/// each fed every `processes`-th reading from its own thread.
fn cluster(
    config: EngineConfig,
    registry: std::sync::Arc<Registry>,
    readings: Vec<Reading>,
    processes: usize,
    devices: usize,
    out_tx: flume::Sender<Vec<ioc_schemas::EngineOutput>>,
    drain: std::thread::JoinHandle<usize>,
) {
    let events = readings.len();
    let workers = config.workers;
    let hosts = common::cluster_hosts(processes);
    let (remote_tx, remote_rx) = flume::bounded(1 << 16);
    let remote = std::thread::spawn(move || {
        remote_rx
            .iter()
            .map(|b: Vec<ioc_schemas::EngineOutput>| b.len())
            .sum::<usize>()
    });
    // `IOC_BENCH_SPLIT=device`: each device's readings all to one process
    // (as Kafka's partitioning by key does), by its registry index, so
    // (P-1)/P of them still cross but each device's stay in order.
    let by_device = std::env::var("IOC_BENCH_SPLIT").is_ok_and(|v| v == "device");
    let mut shares: Vec<Vec<Reading>> = (0..processes).map(|_| Vec::new()).collect();
    for (i, r) in readings.into_iter().enumerate() {
        let p = if by_device { r.device as usize } else { i };
        shares[p % processes].push(r);
    }
    // Every process connected before the clock starts.
    let ready = std::sync::Arc::new(std::sync::Barrier::new(processes + 1));
    let go = std::sync::Arc::new(std::sync::Barrier::new(processes + 1));
    let threads: Vec<_> = shares
        .into_iter()
        .enumerate()
        .map(|(p, share)| {
            let config = EngineConfig {
                cluster: Some(ioc_processing::ClusterConfig {
                    hosts: hosts.clone(),
                    process: p,
                    // `IOC_BENCH_UNSHARED=1`: without the outputs for other
                    // processes' screens, to see what they cost.
                    remote_outputs: std::env::var_os("IOC_BENCH_UNSHARED")
                        .is_none()
                        .then(|| remote_tx.clone()),
                    // `IOC_BENCH_FRONT=0`: only process 0 shows the whole
                    // deployment (gets the others' outputs).
                    front: std::env::var("IOC_BENCH_FRONT")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .into_iter()
                        .collect(),
                }),
                ..config.clone()
            };
            let (registry, out_tx) = (registry.clone(), out_tx.clone());
            let (ready, go) = (ready.clone(), go.clone());
            std::thread::spawn(move || {
                let (engine, input) = Engine::start(&config, registry, out_tx).expect("engine");
                ready.wait();
                go.wait();
                input.send_all_blocking(share).expect("engine open");
                drop(input);
                let stats = engine.stats();
                engine.join().expect("engine");
                stats
            })
        })
        .collect();
    drop((out_tx, remote_tx));
    ready.wait();
    let cpu_before = common::process_cpu_seconds();
    let started = Instant::now();
    go.wait();
    let stats: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("process"))
        .collect();
    let outputs = drain.join().expect("drain");
    let shared = remote.join().expect("remote drain");
    let secs = started.elapsed().as_secs_f64();
    let cpu = common::process_cpu_seconds() - cpu_before;
    let processed: u64 = stats
        .iter()
        .map(|s| s.processed.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    let mut result = throughput(devices, events, workers, secs, cpu, outputs, processed);
    result["processes"] = processes.into();
    result["outputs_shared_with_other_processes"] = shared.into();
    let out = common::write_bench_result("engine", &result);
    println!(
        "engine: {events} events of {devices} devices, {processes} processes of {workers} workers: \
         {:.0} events/s, {:.2} µs CPU per event; {shared} outputs shown on other processes\nwritten to {}",
        events as f64 / secs,
        cpu * 1e6 / events as f64,
        out.display()
    );
}

/// `to` as a copy of `from` whose files are hard links (immediate; a file
/// appended to later is seen longer in both).
fn link_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (path, target) = (e.path(), to.join(e.file_name()));
        if path.is_dir() {
            link_tree(&path, &target);
        } else {
            // A file removed meanwhile (a pruned checkpoint) is skipped.
            let _ = std::fs::hard_link(&path, &target);
        }
    }
}
