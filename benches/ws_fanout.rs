//! WebSocket fan-out: live updates to many clients on loopback.
//!
//! ```sh
//! cargo bench --bench ws_fanout -- [CLIENTS] [UPDATES_PER_S] [SECONDS] [DEVICES]
//! ```
//!
//! The dashboard's server (the real router, live sessions and hub) serves
//! on a loopback port from its own 2-thread runtime. A feeder thread applies
//! device states to the hub at `UPDATES_PER_S` (in batches every
//! millisecond) for `SECONDS`, over a catalogue of `DEVICES` (the demo
//! scaled; default 2 000). `CLIENTS` WebSocket clients (their own runtime,
//! one thread) subscribe to everything and count every device state they
//! receive (a delivery). Each state carries the time it was applied (as
//! its `seq`, in µs since the start), so a client measures the latency from
//! the hub to the frame's arrival. Reports deliveries per second, the
//! latency percentiles, and how many states conflation saved: a client
//! that falls behind gets the latest state per device, not every state.
//! Writes `target/bench/ws_fanout.json` (or `$IOC_BENCH_OUT`).
//!
//! Clients and server share the machine's cores, and the clients' own
//! work (reading and scanning every frame) is part of the load; CPU is
//! reported per side (server threads: sessions and sockets; the feeder:
//! building states and the hub's apply; the clients).

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ioc_dashboard_api::{AppState, LiveHub};
use ioc_devices::Registry;
use ioc_schemas::{Body, DeviceState, EngineOutput, Hydrology, Timestamp};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// What one client saw.
#[derive(Default)]
struct Seen {
    deliveries: u64,
    frames: u64,
    /// Latency of every delivery, µs.
    latency_us: Vec<u32>,
}

/// The applied-at times (µs since `start`) of the device states in a delta,
/// read without parsing the whole frame: every `"seq":` after `"devices":[`
/// is a device state's (the bench sends no other items).
fn stamps(frame: &str, mut each: impl FnMut(u64)) {
    let Some(at) = frame.find(r#""devices":["#) else {
        return;
    };
    let mut rest = &frame[at..];
    while let Some(i) = rest.find(r#""seq":"#) {
        rest = &rest[i + 6..];
        let end = rest
            .bytes()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(rest.len());
        if let Ok(v) = rest[..end].parse() {
            each(v);
        }
        rest = &rest[end..];
    }
}

async fn client(
    addr: std::net::SocketAddr,
    start: Instant,
    ready: Arc<AtomicU64>,
    stop: CancellationToken,
) -> Seen {
    let mut ws = common::live_subscriber(addr).await;
    let mut seen = Seen::default();
    let mut snapshot = true;
    loop {
        let msg = tokio::select! {
            () = stop.cancelled() => break,
            m = ws.next() => m,
        };
        let Some(Ok(msg)) = msg else { break };
        let Message::Text(text) = msg else { continue };
        if snapshot {
            // An error here (a refused token) would leave every client
            // counting nothing.
            assert!(
                text.as_str().starts_with(r#"{"type":"snapshot""#),
                "expected a snapshot, got {}",
                &text.as_str()[..text.len().min(200)]
            );
            snapshot = false;
            ready.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        if text.as_str().starts_with(r#"{"type":"snapshot_part""#) {
            // The rest of a snapshot over 2 000 devices: no deliveries.
            continue;
        }
        let now = start.elapsed().as_micros() as u64;
        seen.frames += 1;
        stamps(text.as_str(), |sent| {
            seen.deliveries += 1;
            seen.latency_us
                .push(now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
        });
    }
    seen
}

fn state(registry: &Registry, i: u32, stamp_us: u64, level: f64) -> EngineOutput {
    EngineOutput::Device(DeviceState {
        device: registry.shared_id(i).clone(),
        ts: Timestamp(1_700_000_000_000 + (stamp_us / 1000) as i64),
        seq: stamp_us,
        pos: registry.device(i).pos,
        reading: Body::Hydrology(Hydrology {
            water_level_m: Some(level),
            ..Hydrology::default()
        }),
        alarm_level: None,
    })
}

fn percentiles(mut us: Vec<u32>) -> serde_json::Value {
    if us.is_empty() {
        return json!(null);
    }
    us.sort_unstable();
    let at = |p: f64| us[((us.len() as f64 * p) as usize).min(us.len() - 1)] as f64 / 1000.0;
    json!({"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "p999": at(0.999), "max": at(1.0)})
}

fn main() {
    let clients: usize = common::arg(0, 100);
    let rate: u64 = common::arg(1, 20_000);
    let seconds: u64 = common::arg(2, 10);
    let devices: usize = common::arg(3, 2_000);
    let registry = Registry::sonla_scaled(devices);
    let hub = LiveHub::new(registry.clone());

    // The server: its own runtime of two threads.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("server")
        .enable_all()
        .build()
        .unwrap();
    let cancel = CancellationToken::new();
    let addr = server_rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // The clients present the tests' admin token.
        let config = ioc_dashboard_api::auth::AuthConfig::default();
        let auth = ioc_dashboard_api::auth::Auth::new(&config, common::TEST_ADMIN).unwrap();
        let state = AppState::new(hub.clone(), cancel.clone(), auth);
        tokio::spawn(ioc_dashboard_api::serve(listener, None, state));
        addr
    });

    // Every device has a state before the clients connect.
    hub.apply(
        (0..registry.devices().len() as u32)
            .map(|i| state(&registry, i, 0, 1.0))
            .collect(),
    );
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("clients")
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let ready = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let tasks: Vec<_> = (0..clients)
        .map(|_| client_rt.spawn(client(addr, start, ready.clone(), stop.clone())))
        .collect();
    let t = Instant::now();
    while ready.load(Ordering::SeqCst) < clients as u64 {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "only {} of {clients} clients got their snapshot",
            ready.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "{clients} clients subscribed in {:.2} s ({} devices each)",
        t.elapsed().as_secs_f64(),
        registry.devices().len()
    );

    // The feeder: a batch every millisecond, round robin over the devices.
    let cpu0 = [
        common::threads_cpu_seconds("server"),
        common::threads_cpu_seconds("clients"),
    ];
    let feeding = Arc::new(AtomicBool::new(true));
    let applied = {
        let (hub, registry, feeding) = (hub.clone(), registry.clone(), feeding.clone());
        std::thread::Builder::new()
            .name("feeder".into())
            .spawn(move || {
                let n = registry.devices().len() as u32;
                let (mut next, mut applied) = (0u32, 0u64);
                let begin = Instant::now();
                let mut tick = 0u64;
                while begin.elapsed() < Duration::from_secs(seconds) {
                    tick += 1;
                    let due = rate * tick / 1000;
                    let mut batch = Vec::with_capacity((due - applied) as usize);
                    while applied < due {
                        let stamp = start.elapsed().as_micros() as u64;
                        batch.push(state(
                            &registry,
                            next,
                            stamp,
                            (applied % 1000) as f64 / 100.0,
                        ));
                        next = (next + 1) % n;
                        applied += 1;
                    }
                    hub.apply(batch);
                    let wake = begin + Duration::from_micros(tick * 1000);
                    if let Some(wait) = wake.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                feeding.store(false, Ordering::SeqCst);
                (applied, begin.elapsed(), common::own_thread_cpu_seconds())
            })
            .unwrap()
            .join()
            .unwrap()
    };
    let (applied, fed_for, feeder_cpu) = applied;
    // Let what is in flight arrive.
    std::thread::sleep(Duration::from_millis(500));
    let [server_cpu, clients_cpu] = [
        common::threads_cpu_seconds("server") - cpu0[0],
        common::threads_cpu_seconds("clients") - cpu0[1],
    ];
    stop.cancel();
    let seen: Vec<Seen> = client_rt.block_on(async {
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.unwrap());
        }
        all
    });
    cancel.cancel();
    let deliveries: u64 = seen.iter().map(|s| s.deliveries).sum();
    let frames: u64 = seen.iter().map(|s| s.frames).sum();
    let offered = applied * clients as u64;
    let latency: Vec<u32> = seen.into_iter().flat_map(|s| s.latency_us).collect();
    let secs = fed_for.as_secs_f64();
    let per_s = deliveries as f64 / secs;
    let latency = percentiles(latency);
    println!(
        "{clients} clients, {applied} states applied in {secs:.1} s ({:.0}/s): \
         {deliveries} deliveries ({per_s:.0}/s) in {frames} frames, {:.1}% conflated away, \
         latency ms {latency}; CPU s: server {server_cpu:.1}, hub feeder {feeder_cpu:.1}, clients {clients_cpu:.1}",
        applied as f64 / secs,
        100.0 * (1.0 - deliveries as f64 / offered.max(1) as f64),
    );
    let result = json!({
        "benchmark": "ws_fanout",
        "date": Timestamp::now(),
        "machine": common::bench_machine(),
        "commit": common::bench_commit(),
        "clients": clients,
        "devices": registry.devices().len(),
        "applied_per_s": applied as f64 / secs,
        "deliveries": deliveries,
        "deliveries_per_s": per_s,
        "offered": offered,
        "conflated_fraction": 1.0 - deliveries as f64 / offered.max(1) as f64,
        "frames": frames,
        "items_per_frame": deliveries as f64 / frames.max(1) as f64,
        "latency_ms": latency,
        "cpu_s": {"server": server_cpu, "hub_feeder": feeder_cpu, "clients": clients_cpu},
        "server_cpu_us_per_delivery": server_cpu * 1e6 / deliveries.max(1) as f64,
    });
    let name = format!("ws_fanout_{clients}");
    let out = common::write_bench_result(&name, &result);
    println!("written to {}", out.display());
    drop(server_rt);
}
