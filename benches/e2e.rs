//! End to end: load generator → Mosquitto (or a Kafka topic) → the `ioc`
//! process → live WebSocket → latency probe, all on loopback, measured the
//! same way every time.
//!
//! ```sh
//! cargo bench --bench e2e -- [RATE] [SECONDS] [DEVICES] [QOS]           # MQTT
//! cargo bench --bench e2e -- --kafka [RATE] [SECONDS] [DEVICES]         # Kafka
//! cargo bench --bench e2e -- --node-red [RATE] [SECONDS] [DEVICES] [QOS] # baseline
//! cargo bench --bench e2e -- --import=100000 [RATE] [SECONDS] [DEVICES]   # registry import under load
//! cargo bench --bench e2e -- --cluster=2 [RATE] [SECONDS] [DEVICES]      # a cluster of processes
//! ```
//!
//! `--cluster=N` runs N `ioc` processes of one worker as one cluster
//! (MQTT through a shared subscription, alerts in a PostgreSQL started on
//! a free port) with the screen on the last process, and reports the
//! latency of the readings, and of the alert changes, of devices another
//! process owns apart (`latency_other_owner_ms`): what a control room
//! pointed at one process sees of the rest. RSS and CPU are the screen's process's.
//!
//! `--import=N` posts a CSV of N new devices to `POST /api/v1/registry/import`
//! a third of the way into the load, and reports how long the import took
//! and the reading → screen p99 of the readings handed off while it was
//! applied against that of the readings before it.
//!
//! `--node-red` runs the baseline instead of `ioc`: what a user would
//! otherwise deploy for the river-gauge alarm, a Node-RED flow (MQTT in →
//! JSON → BĐ1–BĐ3 threshold → WebSocket out, `benches/node-red/`) on the
//! same Mosquitto with the same load, each reading sent to the screen with
//! its alarm level. Node-RED comes from npm (`tests/run.sh` installs it in
//! `~/.cache/ioc-tools/node-red`, or set `IOC_NODE_RED_HOME`).
//!
//! Defaults: 10000 readings/s for 20 s over 100000 devices, QoS 1; RATE 0
//! sends as fast as the broker takes it. For MQTT the harness starts
//! Mosquitto on a free port (in-flight window 1000 and a deep queue, as a
//! production broker for this load would be set); for Kafka, Tansu (in
//! memory) with a 4-partition `ioc.telemetry` topic, produced to with the
//! device id as key. It runs the `ioc` binary as its own process (no
//! simulator, no embedded broker, `catalogue.scale` = DEVICES, only the
//! source under test), connects a WebSocket client to `/api/v1/live`, then
//! sends.
//!
//! Latency is timed from the moment the load generator hands a reading to
//! its MQTT or Kafka client to the moment the WebSocket frame carrying that
//! reading's state arrives, with the clock of this process (no clock skew).
//! Over MQTT the harness also times what an operator acts on: 20 river
//! gauges that the load leaves alone are driven by the harness above BĐ3
//! and back, 20 alert changes a second inside the load (each gauge's
//! readings in order, after one unmeasured first reading), and each is
//! timed from the reading's hand-off to the frame carrying the alert
//! change it caused (stored in the alert store first, as every alert is).
//! A device state superseded by a newer one in the same delta is
//! `conflated` (the hub sends only the latest per device); anything else
//! not seen is `missing`. The ioc process's RSS and CPU time are sampled
//! from /proc every 250 ms; RSS growth from idle to peak per device bounds
//! the state a device costs (`state_bytes_per_device`). The process keeps
//! durable state (`checkpoint.dir`: every reading journaled and synced
//! before its acknowledgement); `IOC_BENCH_MEMORY_ONLY=1` runs it with
//! state in memory only, to see what durability costs. Prints a summary and writes JSON to
//! `target/bench/e2e-mqtt.json` or `e2e-kafka.json` (or `$IOC_BENCH_OUT`).

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../alerts/tests/support/postgres.rs"]
mod postgres;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ioc_devices::loadgen::{self, LoadSpec, Observer};
use ioc_devices::{DeviceIndex, Registry};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// RSS in KiB and CPU seconds (user + system) of a process.
fn sample(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let cpu = common::stat_cpu_seconds(format!("/proc/{pid}/stat").as_ref())?;
    Some((rss, cpu))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

const TOPIC: &str = "ioc.telemetry";

/// The broker the readings travel through (stopped on drop).
enum Broker {
    Mqtt(common::Mosquitto),
    Kafka(common::Tansu),
}

/// Sends in flight: (device, seq) → when it was handed to the MQTT client.
type Pending = Arc<Mutex<HashMap<(DeviceIndex, u64), Instant>>>;

/// Readings that should change an alert: (device id, seq) → when each was
/// handed to the MQTT client.
type AlertPending = Arc<Mutex<HashMap<(String, u64), Instant>>>;

/// Gauges driven to provoke alerts, and alert changes per second.
const PROVOKED_GAUGES: usize = 20;
const ALERT_CHANGES_PER_S: f64 = 20.0;

#[derive(Default)]
struct Probe {
    latencies_us: Vec<u64>,
    /// Reading → the frame with the alert change it caused.
    alert_latencies_us: Vec<u64>,
    /// The same readings → the frame with their device state.
    provoked_state_us: Vec<u64>,
    /// Highest seq seen per device.
    newest: HashMap<DeviceIndex, u64>,
    frames: u64,
    resyncs: u64,
    /// When the last frame carrying a reading we sent arrived.
    last_delivery: Option<Instant>,
    /// Each delivered reading's hand-off and latency.
    timed: Vec<(Instant, u64)>,
    /// In a cluster, the latencies of devices another process owns.
    other_owner_us: Vec<u64>,
    /// In a cluster, the reading → alert latencies of gauges another
    /// process owns (the alert an operator on this screen acts on).
    other_owner_alert_us: Vec<u64>,
}

/// Whose screen the probe is.
#[derive(Clone, Copy)]
struct ScreenOf {
    /// The Node-RED baseline's.
    node_red: bool,
    /// In a cluster, which devices the screen's process owns.
    owner: Option<Owner>,
}

/// In a cluster: whether the screen's process (`screen` of `processes`,
/// one worker each) owns a device, by the engine's routing.
#[derive(Clone, Copy)]
struct Owner {
    processes: usize,
    screen: usize,
}

impl Owner {
    fn owns(&self, id: &str) -> bool {
        usize::from(ioc_processing::durable::partition_of(id)) % self.processes == self.screen
    }
}

async fn probe(
    http: std::net::SocketAddr,
    registry: Arc<Registry>,
    pending: Pending,
    alert_pending: AlertPending,
    ready: tokio::sync::oneshot::Sender<()>,
    stop: CancellationToken,
    screen: ScreenOf,
) -> Probe {
    let ScreenOf { node_red, owner } = screen;
    let mut ws = if node_red {
        node_red_screen(http).await
    } else {
        common::live_subscriber(http).await
    };
    let mut out = Probe::default();
    let mut ready = Some(ready);
    // Node-RED sends no snapshot: ready once connected.
    if node_red && let Some(r) = ready.take() {
        let _ = r.send(());
    }
    loop {
        let msg = tokio::select! {
            () = stop.cancelled() => break,
            m = ws.next() => m,
        };
        let Some(Ok(Message::Text(text))) = msg else {
            if msg.is_none() {
                break;
            }
            continue;
        };
        let arrived = Instant::now();
        out.frames += 1;
        let v: Value = serde_json::from_str(text.as_str()).unwrap();
        // A snapshot of 100 000 devices comes in parts: the probe is ready
        // once the last has arrived; a later snapshot is a resync.
        let snapshot = v["type"] == "snapshot";
        if snapshot || v["type"] == "snapshot_part" {
            if snapshot && ready.is_none() {
                out.resyncs += 1;
            }
            if v["more"] != true
                && let Some(r) = ready.take()
            {
                let _ = r.send(());
            }
            continue;
        }
        if let Some(alerts) = v["alerts"].as_array() {
            let mut waiting = alert_pending.lock().unwrap();
            for a in alerts {
                let (Some(subject), Some(seq)) =
                    (a["subject"].as_str(), a["evidence"]["seq"].as_u64())
                else {
                    continue;
                };
                if let Some(sent) = waiting.remove(&(subject.to_owned(), seq)) {
                    let us = arrived.duration_since(sent).as_micros() as u64;
                    out.alert_latencies_us.push(us);
                    if owner.is_some_and(|o| !o.owns(subject)) {
                        out.other_owner_alert_us.push(us);
                    }
                }
            }
        }
        // Node-RED: one reading per frame.
        let single;
        let states = if node_red {
            single = [v];
            &single[..]
        } else if let Some(states) = v["devices"].as_array() {
            &states[..]
        } else {
            continue;
        };
        let mut pending = pending.lock().unwrap();
        let provoked = alert_pending.lock().unwrap();
        for s in states {
            let (Some(id), Some(seq)) = (s["device"].as_str(), s["seq"].as_u64()) else {
                continue;
            };
            if let Some(sent) = provoked.get(&(id.to_owned(), seq)) {
                out.provoked_state_us
                    .push(arrived.duration_since(*sent).as_micros() as u64);
            }
            let Some(index) = registry.lookup(id) else {
                continue;
            };
            if let Some(sent) = pending.remove(&(index, seq)) {
                let us = arrived.duration_since(sent).as_micros() as u64;
                out.latencies_us.push(us);
                if owner.is_some_and(|o| !o.owns(id)) {
                    out.other_owner_us.push(us);
                }
                out.timed.push((sent, us));
                out.last_delivery = Some(arrived);
            }
            let newest = out.newest.entry(index).or_default();
            *newest = (*newest).max(seq);
        }
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rate = common::arg(0, 10_000.0);
    let seconds = common::arg(1, 20.0);
    let devices: usize = common::arg(2, 100_000);
    let qos: u8 = common::arg(3, 1);
    let kafka = std::env::args().any(|a| a == "--kafka");
    let import: Option<usize> =
        std::env::args().find_map(|a| a.strip_prefix("--import=").and_then(|n| n.parse().ok()));
    let node_red = std::env::args().any(|a| a == "--node-red");
    let cluster: Option<usize> =
        std::env::args().find_map(|a| a.strip_prefix("--cluster=").and_then(|n| n.parse().ok()));
    let transport = match (kafka, node_red) {
        (true, _) => "kafka",
        (false, true) => "node_red",
        (false, false) => "mqtt",
    };

    let broker = if kafka {
        let tansu = common::Tansu::start();
        tansu.create_topic(TOPIC, 4).await;
        Broker::Kafka(tansu)
    } else {
        Broker::Mqtt(common::Mosquitto::start_with(|port, _| {
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_inflight_messages 1000\nmax_queued_messages 10000000\n"
            )
        }))
    };
    let source = match &broker {
        Broker::Mqtt(m) => format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nclient_id = \"ioc-bench\"\nqos = {qos}\n",
            m.port
        ),
        Broker::Kafka(t) => format!(
            "[mqtt]\nenabled = false\n\
             [kafka]\nenabled = true\nbootstrap_servers = \"{}\"\ntopics = [\"{TOPIC}\"]\n\
             group_id = \"ioc-bench\"\n",
            t.bootstrap()
        ),
    };
    let dir = tempfile::tempdir().unwrap();
    let http_port = common::free_port();
    let registry = Registry::sonla_scaled(devices);
    // A cluster's database, and its other processes (the screen is on the last).
    let pg = cluster.map(|_| postgres::Postgres::start());
    let mut others = Vec::new();
    let (mut ioc, http) = match (&broker, cluster) {
        (Broker::Mqtt(m), _) if node_red => {
            start_node_red(dir.path(), http_port, m.port, qos, &registry)
        }
        (Broker::Mqtt(m), Some(n)) => {
            let db = pg.as_ref().unwrap().database("bench");
            let mut members = start_cluster(dir.path(), n, m.port, qos, &db, devices);
            let last = members.pop().unwrap();
            others = members;
            last
        }
        _ => start_ioc(dir.path(), http_port, &source, devices),
    };
    let owner = cluster.map(|n| Owner {
        processes: n,
        screen: n - 1,
    });
    let pid = ioc.id();

    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    let alert_pending: AlertPending = Arc::new(Mutex::new(HashMap::new()));
    let stop = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let probe_task = tokio::spawn(probe(
        http,
        registry.clone(),
        pending.clone(),
        alert_pending.clone(),
        ready_tx,
        stop.clone(),
        ScreenOf { node_red, owner },
    ));
    // The gauges the harness drives itself (MQTT into ioc only).
    let provoked: Vec<(DeviceIndex, [f64; 3])> = match &broker {
        Broker::Mqtt(_) if !node_red => registry
            .devices()
            .iter()
            .enumerate()
            .filter_map(|(i, d)| Some((i as DeviceIndex, d.thresholds.alarm_levels_m?)))
            .take(PROVOKED_GAUGES)
            .collect(),
        _ => Vec::new(),
    };
    ready_rx.await.expect("no snapshot from the live feed");
    // Let the processor's MQTT subscription settle, or its Kafka consumer
    // join the group.
    tokio::time::sleep(Duration::from_secs(if kafka { 4 } else { 1 })).await;

    let sampling = CancellationToken::new();
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let (mut peak_kib, mut last) = (0u64, (0u64, 0.0f64));
            while !sampling.is_cancelled() {
                if let Some(s) = sample(pid) {
                    peak_kib = peak_kib.max(s.0);
                    last = s;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            (peak_kib, last)
        })
    };
    let (rss_before_kib, cpu_before) = sample(pid).unwrap_or_default();
    let observer: Observer = {
        let pending = pending.clone();
        Arc::new(move |device, seq| {
            pending
                .lock()
                .unwrap()
                .insert((device, seq), Instant::now());
        })
    };
    let spec = LoadSpec {
        rate,
        duration: Duration::from_secs_f64(seconds),
        qos,
        exclude: provoked.iter().map(|p| p.0).collect(),
        ..LoadSpec::default()
    };
    let provoking = CancellationToken::new();
    let provoker = match &broker {
        Broker::Mqtt(m) if !provoked.is_empty() => Some(tokio::spawn(provoke(
            registry.clone(),
            provoked.clone(),
            m.port,
            alert_pending.clone(),
            provoking.clone(),
        ))),
        _ => None,
    };
    let load_started = Instant::now();
    let importer = import.map(|n| {
        let wait = Duration::from_secs_f64(seconds / 3.0);
        tokio::spawn(import_devices(http, n, wait))
    });
    let sent = match &broker {
        Broker::Mqtt(m) => {
            loadgen::mqtt(
                registry.clone(),
                "127.0.0.1",
                m.port,
                &spec,
                Some(observer),
                CancellationToken::new(),
            )
            .await
        }
        Broker::Kafka(t) => {
            let config = ioc_ingest::kafka::KafkaConfig {
                bootstrap_servers: t.bootstrap(),
                statistics_interval: Duration::ZERO,
                ..Default::default()
            };
            let registry = registry.clone();
            tokio::task::spawn_blocking(move || {
                ioc_ingest::kafka::loadgen::produce(
                    &config,
                    TOPIC,
                    registry,
                    &spec,
                    Some(observer),
                    &CancellationToken::new(),
                )
                .expect("producing to Tansu")
            })
            .await
            .unwrap()
        }
    };
    let imported = match importer {
        Some(i) => Some(i.await.unwrap()),
        None => None,
    };
    provoking.cancel();
    let provoked_changes = match provoker {
        Some(p) => p.await.unwrap(),
        None => 0,
    };
    // Wait for the tail to arrive (or give up after 20 s).
    let drain_deadline = Instant::now() + Duration::from_secs(20);
    while (!pending.lock().unwrap().is_empty() || !alert_pending.lock().unwrap().is_empty())
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, cpu_after) = sample(pid).unwrap_or_default();
    sampling.cancel();
    let (rss_peak_kib, _) = sampler.await.unwrap();
    stop.cancel();
    let probe = probe_task.await.unwrap();

    let left = std::mem::take(&mut *pending.lock().unwrap());
    let (mut conflated, mut missing) = (0u64, 0u64);
    for (device, seq) in left.keys() {
        if probe.newest.get(device).is_some_and(|n| n > seq) {
            conflated += 1;
        } else {
            missing += 1;
        }
    }
    // Readings processed per second, from the first send to the last frame.
    let throughput = probe.last_delivery.map_or(0.0, |t| {
        (sent.sent - missing) as f64 / t.duration_since(load_started).as_secs_f64()
    });
    let mut lat = probe.latencies_us.clone();
    lat.sort_unstable();
    let mut other_lat = probe.other_owner_us.clone();
    other_lat.sort_unstable();
    let mut other_alert_lat = probe.other_owner_alert_us.clone();
    other_alert_lat.sort_unstable();
    let mut alert_lat = probe.alert_latencies_us.clone();
    alert_lat.sort_unstable();
    let alerts_missing = alert_pending.lock().unwrap().len();
    let mut provoked_state = probe.provoked_state_us.clone();
    provoked_state.sort_unstable();
    let cpu = cpu_after - cpu_before;
    let stats = if node_red {
        Value::Null
    } else {
        common::get_json(http, "/api/v1/stats").await
    };
    // Where an alert change spends its time in the store: waiting for the
    // alert service, then being stored (quantiles from /metrics).
    let store_metrics: Vec<String> = if node_red {
        Vec::new()
    } else {
        let text = reqwest::Client::new()
            .get(format!("http://{http}/metrics"))
            .bearer_auth(common::TEST_ADMIN)
            .send()
            .await
            .ok();
        let text = match text {
            Some(r) => r.text().await.unwrap_or_default(),
            None => String::new(),
        };
        text.lines()
            .filter(|l| {
                l.starts_with("ioc_alert_store_wait_seconds")
                    || l.starts_with("ioc_alert_store_apply_seconds")
            })
            .map(str::to_owned)
            .collect()
    };
    // A clean stop, or a hard one if it does not stop within 10 s.
    let _ = Command::new("kill").arg(pid.to_string()).status();
    // A cluster stops together.
    for (o, _) in &others {
        let _ = Command::new("kill").arg(o.id().to_string()).status();
    }
    let stopping = Instant::now();
    while ioc.try_wait().ok().flatten().is_none() {
        if stopping.elapsed() > Duration::from_secs(10) {
            eprintln!("{transport} did not stop within 10 s of SIGTERM; killing it");
            let _ = ioc.kill();
            let _ = ioc.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (mut o, _) in others {
        let deadline = Instant::now() + Duration::from_secs(10);
        while o.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = o.kill();
        let _ = o.wait();
    }
    let ioc_log = std::fs::read_to_string(dir.path().join("process.log")).unwrap_or_default();
    let warnings: Vec<&str> = ioc_log
        .lines()
        .filter(|l| {
            l.contains("WARN")
                || l.contains("ERROR")
                || l.contains("[warn]")
                || l.contains("[error]")
        })
        .take(20)
        .collect();
    let registry_log: Vec<&str> = ioc_log
        .lines()
        .filter(|l| l.contains("registry changed"))
        .collect();
    for l in &registry_log {
        println!("{l}");
    }

    let result = json!({
        "benchmark": format!("e2e_{transport}"),
        "date": ioc_schemas::Timestamp::now(),
        "machine": common::bench_machine(),
        "commit": common::bench_commit(),
        "load": {"transport": transport, "rate": rate, "seconds": seconds, "devices": devices, "qos": if kafka { None } else { Some(qos) }},
        "system": if node_red { "node-red" } else { "ioc" },
        "sent": sent,
        "delivered": lat.len(),
        "conflated": conflated,
        "missing": missing,
        "throughput_per_s": throughput,
        "latency_ms": {
            "p50": percentile(&lat, 0.5), "p90": percentile(&lat, 0.9),
            "p99": percentile(&lat, 0.99), "p999": percentile(&lat, 0.999),
            "max": lat.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
        },
        "cluster": cluster,
        // In a cluster, the readings of devices another process owns.
        "latency_other_owner_ms": cluster.map(|_| json!({
            "readings": other_lat.len(),
            "p50": percentile(&other_lat, 0.5), "p90": percentile(&other_lat, 0.9),
            "p99": percentile(&other_lat, 0.99),
            "max": other_lat.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
            "alerts": other_alert_lat.len(),
            "alert_p50": percentile(&other_alert_lat, 0.5),
            "alert_p99": percentile(&other_alert_lat, 0.99),
            "alert_max": other_alert_lat.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
        })),
        // Reading → the frame with the alert change it caused (MQTT only).
        "alert_latency_ms": (provoked_changes > 0).then(|| json!({
            "provoked": provoked_changes,
            "delivered": alert_lat.len(),
            "missing": alerts_missing,
            "p50": percentile(&alert_lat, 0.5), "p90": percentile(&alert_lat, 0.9),
            "p99": percentile(&alert_lat, 0.99),
            "max": alert_lat.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
            // The same readings to their device state: what the alert adds.
            "state_p50": percentile(&provoked_state, 0.5),
            "state_p99": percentile(&provoked_state, 0.99),
            "state_max": provoked_state.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
        })),
        "ioc": {
            "rss_before_mib": rss_before_kib as f64 / 1024.0,
            "rss_peak_mib": rss_peak_kib as f64 / 1024.0,
            // Growth from idle (catalogue loaded, no device heard from) to
            // the peak, per device: an upper bound of the state a device
            // costs once it has reported (queues and buffers included).
            // Meaningful when every device sent at least once.
            "state_bytes_per_device": (sent.sent >= devices as u64)
                .then(|| rss_peak_kib.saturating_sub(rss_before_kib) as f64 * 1024.0 / devices as f64),
            "cpu_seconds": cpu,
            "cpu_seconds_per_million": cpu / (sent.sent as f64 / 1e6),
            "accepted": stats["ingest"]["accepted"],
            "rejected": stats["ingest"]["rejected"],
        },
        "probe": {"frames": probe.frames, "resyncs": probe.resyncs},
        "import": imported.map(|(n, began, ended, report)| {
            let window = |from: Instant, to: Instant| {
                let mut l: Vec<u64> = probe.timed.iter().filter(|(t, _)| *t >= from && *t < to).map(|(_, us)| *us).collect();
                l.sort_unstable();
                l
            };
            // What the import costs screens lands as it is put in force
            // and just after (the screens' resync): the readings handed
            // off from its start to 3 s after its answer.
            let during = window(began, ended + Duration::from_secs(3));
            let before = window(load_started + Duration::from_secs(1), began);
            let (p_during, p_before) = (percentile(&during, 0.99), percentile(&before, 0.99));
            println!(
                "import of {n} devices: {:.2} s; reading → screen p99 {p_during:.2} ms from its start to 3 s after it ({} readings), {p_before:.2} ms before it ({} readings): {:.2}×",
                ended.duration_since(began).as_secs_f64(), during.len(), before.len(), p_during / p_before
            );
            json!({
                "devices": n,
                "seconds": ended.duration_since(began).as_secs_f64(),
                "report": report,
                "p99_during_ms": p_during, "readings_during": during.len(),
                "p99_before_ms": p_before, "readings_before": before.len(),
                "ratio": p_during / p_before,
            })
        }),
        "alert_store_metrics": store_metrics,
        "ioc_warnings": warnings,
        "registry_log": registry_log,
    });
    let out = common::write_bench_result(&format!("e2e-{}", transport.replace('_', "-")), &result);
    if cluster.is_some() {
        println!(
            "cluster: readings of devices another process owns: {}, latency ms p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            other_lat.len(),
            percentile(&other_lat, 0.5),
            percentile(&other_lat, 0.9),
            percentile(&other_lat, 0.99),
            other_lat.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
        );
        println!(
            "cluster: alert changes of gauges another process owns: {}, reading → alert ms p50 {:.2}  p99 {:.2}  max {:.2}",
            other_alert_lat.len(),
            percentile(&other_alert_lat, 0.5),
            percentile(&other_alert_lat, 0.99),
            other_alert_lat
                .last()
                .map_or(f64::NAN, |m| *m as f64 / 1000.0),
        );
    }
    println!(
        "e2e_{transport}: sent {} at {:.0}/s ({devices} devices); delivered {}, conflated {conflated}, missing {missing}; {throughput:.0} readings/s end to end\n\
         latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\n\
         {}\n\
         ioc: RSS peak {:.0} MiB, {:.1} CPU-s per million readings\n\
         written to {}",
        sent.sent,
        sent.rate,
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
        lat.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
        if provoked_changes > 0 {
            format!(
                "reading → alert ms ({} of {provoked_changes} alert changes, {alerts_missing} missing): p50 {:.2}  p99 {:.2}  max {:.2}",
                alert_lat.len(),
                percentile(&alert_lat, 0.5),
                percentile(&alert_lat, 0.99),
                alert_lat.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
            )
        } else {
            "reading → alert: not measured (MQTT into ioc only)".to_owned()
        },
        rss_peak_kib as f64 / 1024.0,
        cpu / (sent.sent as f64 / 1e6),
        out.display()
    );
    drop(broker);
}

/// After `wait`, imports `n` new rain gauges (CSV, one request) into the
/// running ioc: how many, when the request went and when it was answered,
/// and the import's report without its problems.
async fn import_devices(
    http: std::net::SocketAddr,
    n: usize,
    wait: Duration,
) -> (usize, Instant, Instant, Value) {
    let mut csv = String::from("id,kind,name,lon,lat,expected_interval_s\n");
    for i in 0..n {
        let (x, y) = (i % 400, i / 400);
        csv.push_str(&format!(
            "import-{i},rain_gauge,Trạm đo mưa nhập {i},{:.5},{:.5},600\n",
            103.6 + x as f64 * 0.002,
            21.0 + (y % 250) as f64 * 0.002
        ));
    }
    tokio::time::sleep(wait).await;
    let began = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("http://{http}/api/v1/registry/import?format=csv"))
        .bearer_auth(common::TEST_ADMIN)
        .header("Content-Type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("import request");
    let status = response.status();
    let mut report: Value =
        serde_json::from_str(&response.text().await.unwrap_or_default()).unwrap_or(Value::Null);
    let ended = Instant::now();
    assert!(status.is_success(), "import refused: {status} {report}");
    if let Some(o) = report.as_object_mut() {
        o.remove("problems");
    }
    (n, began, ended, report)
}

/// Drives `gauges` (which the load leaves alone) over the broker at
/// `port`: one first reading each below BĐ1 (not measured: a device's first
/// reading waits for the watermark), then, round-robin, above BĐ3 and back
/// below BĐ1, [`ALERT_CHANGES_PER_S`] readings a second, each meant to open
/// or resolve its gauge's alert and recorded in `pending` as it is handed
/// to the client. Returns how many were sent.
async fn provoke(
    registry: Arc<Registry>,
    gauges: Vec<(DeviceIndex, [f64; 3])>,
    port: u16,
    pending: AlertPending,
    stop: CancellationToken,
) -> u64 {
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    let mut o = MqttOptions::new(
        format!("ioc-bench-alerts-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(o, 1024);
    let poll = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let send = |index: DeviceIndex, seq: u64, level: f64| {
        let d = registry.device(index);
        let body = json!({"v": 1, "device": d.id, "ts": ioc_schemas::Timestamp::now().millis(),
                          "seq": seq, "hydrology": {"water_level_m": level}});
        (
            ioc_devices::simulator::mqtt::telemetry_topic(d.kind, &d.id),
            d.id.clone(),
            body.to_string(),
        )
    };
    for &(index, levels) in &gauges {
        let (topic, _, body) = send(index, 1, levels[0] - 1.0);
        client
            .publish(topic, QoS::AtLeastOnce, false, body)
            .await
            .unwrap();
    }
    // Past the watermark (out-of-orderness and the idle timeout: 2 s each).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / ALERT_CHANGES_PER_S));
    let mut seqs = vec![1u64; gauges.len()];
    let mut k = 0usize;
    // Rounds alternate, all gauges up then all down; once stopped, the
    // round under way is finished at once so that every gauge ends resolved.
    while !(stop.is_cancelled() && k.is_multiple_of(2 * gauges.len())) {
        if !stop.is_cancelled() {
            tokio::select! {
                () = stop.cancelled() => continue,
                _ = interval.tick() => {}
            }
        }
        let g = k % gauges.len();
        let (index, levels) = gauges[g];
        let up = (k / gauges.len()).is_multiple_of(2);
        seqs[g] += 1;
        let level = if up { levels[2] + 0.5 } else { levels[0] - 1.0 };
        let (topic, id, body) = send(index, seqs[g], level);
        pending
            .lock()
            .unwrap()
            .insert((id, seqs[g]), Instant::now());
        client
            .publish(topic, QoS::AtLeastOnce, false, body)
            .await
            .unwrap();
        k += 1;
    }
    let sent = k as u64;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = client.disconnect().await;
    poll.abort();
    sent
}

/// Starts `n` `ioc` processes of one cluster of one worker each (MQTT
/// through a shared subscription, alerts in `db`); their processes and
/// HTTP addresses, in process order.
fn start_cluster(
    dir: &std::path::Path,
    n: usize,
    mqtt_port: u16,
    qos: u8,
    db: &str,
    devices: usize,
) -> Vec<(std::process::Child, std::net::SocketAddr)> {
    let hosts = common::toml_strings(&common::cluster_hosts(n));
    let config = dir.join("cluster.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nhosts = [{hosts}]\n[http]\nadmin_token = \"{admin}\"\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{mqtt_port}\"\nclient_id = \"ioc-bench\"\nqos = {qos}\n\
             topics = [\"$share/ioc/ioc/v1/+/+/telemetry\"]\n\
             [embedded_broker]\nenabled = false\n[simulator]\nenabled = false\n\
             [processing]\nworkers = 1\n[catalogue]\nscale = {devices}\n\
             [dead_letter]\nfile = \"{}\"\n\
             [alerts]\ndatabase = \"{db}\"\n[checkpoint]\nenabled = false\n",
            dir.join("dead-letters.jsonl").display(),

            admin = common::TEST_ADMIN,
        ),
    )
    .unwrap();
    let members: Vec<_> = (0..n)
        .map(|p| {
            let port = common::free_port();
            let log = std::fs::File::create(dir.join(format!("process-{p}.log"))).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_ioc"))
                .arg("--config")
                .arg(&config)
                .env("IOC_CLUSTER__PROCESS", p.to_string())
                .env("IOC_HTTP__LISTEN", format!("127.0.0.1:{port}"))
                .env("RUST_LOG", "warn")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("cannot start ioc");
            (child, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        })
        .collect();
    for (_, addr) in &members {
        common::wait_for_port(*addr, "a cluster process");
    }
    members
}

/// Starts `ioc` with the source under test; its process and HTTP address.
fn start_ioc(
    dir: &std::path::Path,
    http_port: u16,
    source: &str,
    devices: usize,
) -> (std::process::Child, std::net::SocketAddr) {
    let config = dir.join("ioc.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http_port}\"\nadmin_token = \"{admin}\"\n{source}\
             [embedded_broker]\nenabled = false\n[simulator]\nenabled = false\n\
             [catalogue]\nscale = {devices}\n\
             [dead_letter]\nfile = \"{}\"\n\
             [alerts]\ndatabase = \"sqlite://{}\"\n\
             {durable}",
            dir.join("dead-letters.jsonl").display(),
            dir.join("alerts.db").display(),
            admin = common::TEST_ADMIN,
            durable = if std::env::var("IOC_BENCH_MEMORY_ONLY").is_ok_and(|v| v == "1") {
                String::new()
            } else {
                format!("[checkpoint]\ndir = \"{}\"\n", dir.join("state").display())
            },
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("process.log")).unwrap();
    // IOC_BENCH_WRAP runs ioc under a profiler (e.g. `heaptrack -o
    // /tmp/ioc`); the RSS and CPU figures are then the wrapper's.
    let wrap = std::env::var("IOC_BENCH_WRAP").unwrap_or_default();
    let mut wrap = wrap.split_whitespace();
    let ioc = match wrap.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(wrap).arg(env!("CARGO_BIN_EXE_ioc"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_ioc")),
    }
    .arg("--config")
    .arg(&config)
    // Warnings, and registry changes (an import's phases) for `--import`.
    .env("RUST_LOG", "warn,ioc_dashboard_api::routes::registry=info")
    .stdout(log.try_clone().unwrap())
    .stderr(log)
    .spawn()
    .expect("cannot start ioc");
    let http: std::net::SocketAddr = ([127, 0, 0, 1], http_port).into();
    common::wait_for_port(http, "ioc");

    (ioc, http)
}

/// Starts the Node-RED baseline (`benches/node-red/`) on the broker at
/// `mqtt_port`; its process and HTTP address.
fn start_node_red(
    dir: &std::path::Path,
    http_port: u16,
    mqtt_port: u16,
    qos: u8,
    registry: &Registry,
) -> (std::process::Child, std::net::SocketAddr) {
    let home = std::env::var_os("IOC_NODE_RED_HOME").map_or_else(
        || {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/ioc-tools/node-red")
        },
        std::path::PathBuf::from,
    );
    let red = home.join("node_modules/node-red/red.js");
    assert!(
        red.exists(),
        "Node-RED is not installed at {}: run tests/run.sh (it installs node-red from npm) \
         or set IOC_NODE_RED_HOME",
        home.display()
    );
    let flows = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/node-red");
    std::fs::copy(format!("{flows}/flows.json"), dir.join("flows.json")).unwrap();
    // The gauges' BĐ1-BĐ3, from the same catalogue ioc uses.
    let levels: serde_json::Map<String, Value> = registry
        .devices()
        .iter()
        .filter_map(|d| Some((d.id.to_string(), json!(d.thresholds.alarm_levels_m?))))
        .collect();
    let levels_file = dir.join("levels.json");
    std::fs::write(&levels_file, Value::Object(levels).to_string()).unwrap();
    let log = std::fs::File::create(dir.join("process.log")).unwrap();
    let child = Command::new("node")
        .arg(&red)
        .arg("--settings")
        .arg(format!("{flows}/settings.js"))
        .arg("--userDir")
        .arg(dir)
        .env("IOC_NODE_RED_PORT", http_port.to_string())
        .env("IOC_NODE_RED_LEVELS", &levels_file)
        .env("IOC_MQTT_PORT", mqtt_port.to_string())
        .env("IOC_MQTT_QOS", qos.to_string())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("cannot start node (Node.js): install the Debian package nodejs");
    let http: std::net::SocketAddr = ([127, 0, 0, 1], http_port).into();
    common::wait_for_port(http, "node-red");
    (child, http)
}

/// A screen on the Node-RED flow's WebSocket, once its flows have started
/// (the path answers 404 until then).
async fn node_red_screen(
    http: std::net::SocketAddr,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("ws://{http}/ws/live");
    for _ in 0..200 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(&url).await {
            return ws;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("Node-RED's flow never opened {url}");
}
