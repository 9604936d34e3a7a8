//! The time-series sink against VictoriaMetrics through the InfluxDB v2
//! write API: a known stream read back point by point, a database outage
//! in the middle of a stream, `kill -9` while the spool holds data, and a
//! batch the database refuses.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::{
    Series, TEST_ADMIN, TEST_TOKEN, Victoria, free_port, get_json, test_config, wait_for,
};
use ioc::app::Running;
use ioc::config::Config;
use ioc_devices::Registry;
use ioc_schemas::{DeviceKind, Timestamp};
use ioc_timeseries::{InfluxConfig, SinkStats};

/// A configuration with HTTP ingest, no MQTT, and the sink writing small,
/// frequent batches to `victoria`.
fn config(victoria: &Victoria, spool: &Path) -> Config {
    let mut c = test_config("mqtt://127.0.0.1:1".into(), false);
    c.mqtt.enabled = false;
    // The streams below are hours old: a gateway uploading its backlog.
    c.processing.lateness = Duration::from_secs(7 * 86_400);
    // River levels only: the point counts below are exact (with the demo
    // rules, hours-old gauges would also be flagged offline, rightly).
    let rules = spool.with_extension("rules.toml");
    std::fs::write(&rules, ioc_processing::BUILTIN_RULES).unwrap();
    c.rules.file = Some(rules);
    c.influx = InfluxConfig {
        enabled: true,
        url: victoria.url(),
        batch_size: 100,
        flush_interval: Duration::from_millis(100),
        max_backoff: Duration::from_millis(300),
        spool_dir: spool.to_owned(),
        ..InfluxConfig::default()
    };
    c
}

/// River gauges of the demo with their alarm levels.
fn gauges(registry: &Registry) -> Vec<(String, [f64; 3])> {
    registry
        .devices()
        .iter()
        .filter(|d| d.kind == DeviceKind::RiverGauge)
        .filter_map(|d| Some((d.id.clone(), d.thresholds.alarm_levels_m?)))
        .collect()
}

fn cm(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A reading: `(device, seq, level, ts)`.
type Sent = (String, u64, f64, i64);

/// Posts readings through `POST /api/v1/ingest`, all of which must be accepted.
async fn ingest(addr: SocketAddr, readings: &[Sent]) {
    for chunk in readings.chunks(500) {
        let body = common::river_ndjson(
            chunk
                .iter()
                .map(|(d, seq, level, ts)| (d.as_str(), *seq, *level, *ts)),
        );
        let (status, report) = common::post_ingest(addr, &body).await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["accepted"], chunk.len(), "{report}");
    }
}

/// Steady readings for `devices`, seq `from..to`, one every 10 s of event time.
fn steady(devices: &[(String, [f64; 3])], from: u64, to: u64, base: i64) -> Vec<Sent> {
    let mut out = Vec::new();
    for seq in from..to {
        for (k, (d, levels)) in devices.iter().enumerate() {
            let level = cm(levels[0] - 1.0 - 0.01 * (seq % 50) as f64 - 0.1 * k as f64);
            out.push((d.clone(), seq, level, base + seq as i64 * 10_000));
        }
    }
    out
}

/// The series of `name` for `device`.
fn series<'a>(all: &'a [Series], name: &str, device: &str) -> &'a Series {
    all.iter()
        .find(|s| {
            s.metric["__name__"] == name
                && s.metric.get("device").map(String::as_str) == Some(device)
        })
        .unwrap_or_else(|| panic!("no {name} series for {device}"))
}

/// Every sent reading is in the database exactly once, with its event time
/// and value, and nothing else is.
async fn assert_exactly_once(victoria: &Victoria, sent: &[Sent]) {
    let levels = victoria
        .export(r#"{__name__="river_gauge_water_level_m"}"#)
        .await;
    let seqs = victoria.export(r#"{__name__="river_gauge_seq"}"#).await;
    let mut devices: Vec<&str> = sent.iter().map(|s| s.0.as_str()).collect();
    devices.sort_unstable();
    devices.dedup();
    assert_eq!(levels.len(), devices.len(), "one level series per device");
    for device in devices {
        let mut expected: Vec<&Sent> = sent.iter().filter(|s| s.0 == device).collect();
        expected.sort_by_key(|s| s.3);
        let level = series(&levels, "river_gauge_water_level_m", device);
        let seq = series(&seqs, "river_gauge_seq", device);
        assert_eq!(
            level.timestamps,
            expected.iter().map(|s| s.3).collect::<Vec<_>>(),
            "{device}: event times"
        );
        assert_eq!(
            level.values,
            expected.iter().map(|s| s.2).collect::<Vec<_>>(),
            "{device}: levels"
        );
        assert_eq!(
            seq.values,
            expected.iter().map(|s| s.1 as f64).collect::<Vec<_>>(),
            "{device}: every sequence number once, in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_and_alert_changes_arrive_point_by_point() {
    let victoria = Victoria::start();
    let spool = tempfile::tempdir().unwrap();
    let running: Running = ioc::app::start(config(&victoria, spool.path()))
        .await
        .unwrap();
    let registry = running.registry.clone();
    let devices = gauges(&registry);
    assert!(
        devices.len() >= 3,
        "the demo has river gauges with alarm levels"
    );
    let devices = &devices[..3];
    let base = Timestamp::now().millis() - 2 * 3600 * 1000;

    // Two gauges stay low; the first rises through BĐ1 and BĐ2 and falls
    // back: an alert opens, escalates and resolves.
    let mut sent = steady(&devices[1..], 1, 201, base);
    let (flooded, levels) = &devices[0];
    for seq in 1..201u64 {
        let x = seq as f64 / 200.0 * std::f64::consts::PI;
        let level = cm(levels[0] - 1.0 + (levels[1] - levels[0] + 1.5) * x.sin());
        sent.push((flooded.clone(), seq, level, base + seq as i64 * 10_000));
    }
    ingest(running.http_addr, &sent).await;

    let stats = running.influx_stats.clone().unwrap();
    wait_for("every point written", 30, || {
        stats.written.load(Relaxed) == stats.queued.load(Relaxed)
            && stats.queued.load(Relaxed) > sent.len() as u64
    })
    .await;
    assert_exactly_once(&victoria, &sent).await;

    // Tags: device, kind and the administrative chain from the catalogue.
    let levels_series = victoria
        .export(r#"{__name__="river_gauge_water_level_m"}"#)
        .await;
    let s = series(&levels_series, "river_gauge_water_level_m", flooded);
    assert_eq!(s.metric["kind"], "river_gauge");
    let info = registry.get(flooded).unwrap();
    for area in &info.area {
        assert_eq!(
            s.metric.get(area.level.as_str()).map(String::as_str),
            Some(&*area.id),
            "{:?}",
            s.metric
        );
    }

    // Every change of the alert, version by version.
    let versions = victoria.export(r#"{__name__="alert_version"}"#).await;
    let mut seen: Vec<(i64, f64, String)> = versions
        .iter()
        .filter(|s| s.metric["subject"] == *flooded)
        .flat_map(|s| {
            s.timestamps
                .iter()
                .zip(&s.values)
                .map(|(t, v)| (*t, *v, s.metric["status"].clone()))
        })
        .collect();
    seen.sort_by(|a, b| a.1.total_cmp(&b.1));
    let numbers: Vec<f64> = seen.iter().map(|s| s.1).collect();
    assert!(numbers.len() >= 3, "open, escalate, resolve: {seen:?}");
    assert_eq!(
        numbers,
        (1..=numbers.len()).map(|v| v as f64).collect::<Vec<_>>()
    );
    assert_eq!(seen.last().unwrap().2, "resolved", "{seen:?}");
    assert!(
        versions.iter().all(|s| s.metric["subject"] == *flooded),
        "only the flooded gauge alerts"
    );
    assert_eq!(stats.retries.load(Relaxed), 0);
    assert_eq!(stats.dropped.load(Relaxed), 0);

    running.shutdown().await.unwrap();
    assert_eq!(
        std::fs::read_dir(spool.path())
            .unwrap()
            .filter(|e| { e.as_ref().unwrap().file_type().unwrap().is_file() })
            .count(),
        0,
        "nothing left in the spool"
    );
}

/// A plate read inside a watched zone: its geofence event is written as
/// the `geofence` measurement, tagged with the zone, its kind, the
/// transition and the camera, at the read's event time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geofence_events_are_written() {
    let victoria = Victoria::start();
    let spool = tempfile::tempdir().unwrap();
    let mut config = config(&victoria, spool.path());
    // A camera of the demo and a point near it inside one of the demo zones.
    let registry = Registry::sonla_demo();
    let zones = ioc_devices::Zones::from_geojson(ioc_devices::catalogue::SONLA_ZONES).unwrap();
    let (camera, pos, zone) = registry
        .devices()
        .iter()
        .filter(|d| d.kind == DeviceKind::Camera)
        .find_map(|d| {
            let mut steps = (-20..=20).flat_map(|i| (-20..=20).map(move |j| (i, j)));
            steps.find_map(|(i, j)| {
                let pos = [
                    d.pos[0] + 0.001 * f64::from(i),
                    d.pos[1] + 0.001 * f64::from(j),
                ];
                let zone = zones.at(pos).into_iter().next()?;
                Some((d.id.clone(), pos, zone))
            })
        })
        .expect("a demo zone within 2 km of a demo camera");
    let rules = spool.path().with_extension("geo-rules.toml");
    std::fs::write(
        &rules,
        format!(
            "{}\n[[rule]]\nid = \"watch\"\nkind = \"geofence\"\nzone_kinds = [\"{}\"]\non = \"enter\"\n",
            ioc_processing::BUILTIN_RULES,
            zone.kind.as_str()
        ),
    )
    .unwrap();
    config.rules.file = Some(rules);
    let running: Running = ioc::app::start(config).await.unwrap();

    // The read, then another one a minute later (event time moves on).
    let t = Timestamp::now().millis() - 120_000;
    let body: String = [(1, t, "29A-123.45"), (2, t + 60_000, "29A-678.90")]
        .iter()
        .map(|(seq, ts, plate)| {
            let read = serde_json::json!({
                "v": 1, "device": camera, "ts": Timestamp(*ts).to_rfc3339(), "seq": seq, "pos": pos,
                "camera": {"event": "plate_read", "plate": plate, "confidence": 0.9}
            });
            format!("{read}\n")
        })
        .collect();
    let (status, report) = common::post_ingest(running.http_addr, body.as_bytes()).await;
    assert_eq!(status, 200, "{report}");

    let mut events = Vec::new();
    for _ in 0..100 {
        events = victoria.export(r#"{__name__="geofence_events"}"#).await;
        if !events.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first = events
        .iter()
        .find(|s| s.timestamps.contains(&t))
        .unwrap_or_else(|| panic!("no geofence event at {t}: {events:?}"));
    assert_eq!(first.metric["zone"], zone.id);
    assert_eq!(first.metric["zone_kind"], zone.kind.as_str());
    assert_eq!(first.metric["transition"], "enter");
    assert_eq!(first.metric["source"], camera);
    assert!(first.values.iter().all(|&v| v == 1.0));
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_loses_and_duplicates_nothing() {
    let mut victoria = Victoria::start();
    let spool = tempfile::tempdir().unwrap();
    let running: Running = ioc::app::start(config(&victoria, spool.path()))
        .await
        .unwrap();
    let devices = gauges(&running.registry);
    let stats = running.influx_stats.clone().unwrap();
    let base = Timestamp::now().millis() - 3 * 3600 * 1000;

    let before = steady(&devices, 1, 101, base);
    ingest(running.http_addr, &before).await;
    wait_for("the first part written", 30, || {
        stats.written.load(Relaxed) == before.len() as u64
    })
    .await;

    victoria.stop();
    let during = steady(&devices, 101, 301, base);
    ingest(running.http_addr, &during).await;
    // While the database is down, everything unwritten is on disk, not in
    // memory: the spool holds exactly the points not yet written.
    wait_for("the outage part spooled", 30, || {
        stats.retries.load(Relaxed) > 0
            && stats.spool_points.load(Relaxed) == during.len() as u64
            && stats.queued.load(Relaxed) - stats.written.load(Relaxed) == during.len() as u64
    })
    .await;
    let files = std::fs::read_dir(spool.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".lp.gz")
        })
        .count();
    assert!(
        files >= during.len() / 100,
        "{files} batch files for {} points",
        during.len()
    );
    let body = get_json(running.http_addr, "/api/v1/stats").await;
    assert_eq!(body["influx"]["spool_points"], during.len(), "{body}");

    victoria.run();
    let after = steady(&devices, 301, 401, base);
    ingest(running.http_addr, &after).await;
    let total = (before.len() + during.len() + after.len()) as u64;
    wait_for("the spool drained", 60, || {
        stats.written.load(Relaxed) == total && stats.spool_points.load(Relaxed) == 0
    })
    .await;

    let sent: Vec<Sent> = before.into_iter().chain(during).chain(after).collect();
    assert_exactly_once(&victoria, &sent).await;
    assert_eq!(stats.dropped.load(Relaxed), 0);
    assert_eq!(stats.batches_rejected.load(Relaxed), 0);
    running.shutdown().await.unwrap();
}

/// The `ioc` binary with a configuration file in `dir`.
fn spawn_ioc(dir: &Path, http_port: u16, victoria: &Victoria) -> Child {
    let config = dir.join("ioc.toml");
    std::fs::write(dir.join("rules.toml"), ioc_processing::BUILTIN_RULES).unwrap();
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http_port}\"\nadmin_token = \"{TEST_ADMIN}\"\n\
             [mqtt]\nenabled = false\n\
             [embedded_broker]\nenabled = false\n\
             [processing]\nlateness = \"7days\"\n\
             [rules]\nfile = \"{dir}/rules.toml\"\n\
             [simulator]\nenabled = false\n\
             [dead_letter]\nfile = \"{dir}/dead-letters.jsonl\"\n\
             [alerts]\ndatabase = \"sqlite://{dir}/alerts.db\"\n\
             [checkpoint]\ndir = \"{dir}/state\"\n\
             [influx]\nenabled = true\nurl = \"{url}\"\nspool_dir = \"{dir}/spool\"\n\
             batch_size = 100\nflush_interval = \"100ms\"\nmax_backoff = \"300ms\"\n\
             [http_ingest]\nenabled = true\n\
             [[http_ingest.tokens]]\nname = \"gateway\"\ntoken = \"{TEST_TOKEN}\"\ndevices = [\"*\"]\n",
            dir = dir.display(),
            url = victoria.url(),
        ),
    )
    .unwrap();
    common::run_ioc(&config, http_port)
}

async fn influx_stat(addr: SocketAddr, key: &str) -> u64 {
    get_json(addr, "/api/v1/stats").await["influx"][key]
        .as_u64()
        .unwrap_or(0)
}

/// Polls the `ioc` process's `influx.{key}` counter until it is `value`;
/// fails the test after 30 s.
async fn wait_for_influx_stat(addr: SocketAddr, key: &str, value: u64, what: &str) {
    common::wait_for_async(what, 30, async || influx_stat(addr, key).await == value).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_survives_kill_9_and_drains_after_restart() {
    // The database is not up yet: everything goes to the spool.
    let mut victoria = Victoria::reserve();
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], http_port).into();
    let mut ioc = spawn_ioc(dir.path(), http_port, &victoria);

    let registry = Registry::sonla_demo();
    let devices = gauges(&registry);
    let base = Timestamp::now().millis() - 4 * 3600 * 1000;
    let sent = steady(&devices, 1, 151, base);
    ingest(addr, &sent).await;
    wait_for_influx_stat(
        addr,
        "spool_points",
        sent.len() as u64,
        "readings never reached the spool",
    )
    .await;
    ioc.kill().unwrap();
    ioc.wait().unwrap();

    victoria.run();
    let mut ioc = spawn_ioc(dir.path(), http_port, &victoria);
    // The engine's journal replay writes the readings after its last
    // checkpoint once more (the same points: the database keeps one).
    common::wait_for_async(
        "the spool did not drain after the restart",
        30,
        async || {
            influx_stat(addr, "written").await >= sent.len() as u64
                && influx_stat(addr, "spool_points").await == 0
        },
    )
    .await;
    assert_exactly_once(&victoria, &sent).await;
    let _ = Command::new("kill").arg(ioc.id().to_string()).status();
    ioc.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_is_set_aside_with_the_servers_message() {
    let victoria = Victoria::start();
    let spool = tempfile::tempdir().unwrap();
    // A batch that claims to be gzip and is not, as a damaged disk might leave it.
    let now = Timestamp::now().millis();
    std::fs::write(
        spool.path().join(format!("0000000000000000-3-{now}.lp.gz")),
        b"not gzip",
    )
    .unwrap();
    let running: Running = ioc::app::start(config(&victoria, spool.path()))
        .await
        .unwrap();
    let stats: Arc<SinkStats> = running.influx_stats.clone().unwrap();
    let devices = gauges(&running.registry);
    let sent = steady(&devices[..1], 1, 11, now - 3600 * 1000);
    ingest(running.http_addr, &sent).await;
    wait_for("the good batch written after the bad one", 30, || {
        stats.written.load(Relaxed) == sent.len() as u64
    })
    .await;
    assert_eq!(stats.batches_rejected.load(Relaxed), 1);
    assert_eq!(stats.points_rejected.load(Relaxed), 3);
    let reason: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            spool
                .path()
                .join(format!("rejected/0000000000000000-3-{now}.lp.json")),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(reason["status"], 400, "{reason}");
    assert!(
        reason["message"].as_str().unwrap().contains("gzip"),
        "{reason}"
    );
    assert!(
        spool
            .path()
            .join(format!("rejected/0000000000000000-3-{now}.lp.gz"))
            .exists()
    );
    assert_exactly_once(&victoria, &sent).await;
    running.shutdown().await.unwrap();
}
