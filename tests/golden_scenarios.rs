//! Golden scenarios: each simulator scenario, with a fixed seed, runs
//! through the engine (two workers, the demo rules of `deploy/rules.toml`)
//! over 40 minutes of event time, and must produce exactly the alert
//! sequence in `tests/golden/{scenario}.txt`.
//!
//! Times are written relative to the start, so the files do not depend on
//! the day the test runs. After a deliberate change of a rule or a
//! scenario, rewrite them with `IOC_BLESS=1 cargo test --test golden_scenarios`
//! and review the diff.

#![allow(clippy::unwrap_used)]

mod common;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use ioc::rules::{RulesSource, ZonesSource};
use ioc_devices::{Registry, Scenario, Simulator, Zones};
use ioc_processing::{Engine, EngineConfig, Reading, RuleSet, ZonesCell};
use ioc_schemas::{Alert, EngineOutput, Timestamp};

/// 40 minutes: two cycles of every scenario.
const SPAN_MS: i64 = 40 * 60_000;
/// Start of every run, epoch ms.
const T0: i64 = 1_767_225_600_000;
/// One reading every 20 ms of event time over all devices (each device
/// about every 5 s, as in the live demo).
const STEP_MS: i64 = 20;

/// Runs `readings` (in this order) through the engine with two workers,
/// the rules and zones given; every output, sorted by event time.
fn run_engine(
    registry: &Arc<Registry>,
    rules: RuleSet,
    zones: Zones,
    readings: impl Iterator<Item = ioc_schemas::Envelope>,
) -> Vec<EngineOutput> {
    run_engine_with(registry, rules, zones, readings, true)
}

/// The engine the golden runs use: `workers` workers, the rules and zones
/// given, event time from the readings only.
fn golden_config(workers: usize, rules: Arc<RuleSet>, zones: Arc<Zones>) -> EngineConfig {
    EngineConfig {
        workers,
        // Generous: the workers' inputs may drift apart on a busy machine.
        out_of_orderness: Duration::from_secs(60),
        // Never follow the wall clock: event time comes from the readings only.
        idle_timeout: Duration::from_secs(3600),
        rules: Some(rules),
        zones: Some(Arc::new(ZonesCell::new(zones))),
        ..EngineConfig::default()
    }
}

/// [`run_engine`], deciding at each in-order reading or (`false`) only
/// as the watermark passes.
fn run_engine_with(
    registry: &Arc<Registry>,
    rules: RuleSet,
    zones: Zones,
    readings: impl Iterator<Item = ioc_schemas::Envelope>,
    per_device_progress: bool,
) -> Vec<EngineOutput> {
    let config = EngineConfig {
        per_device_progress,
        ..golden_config(2, Arc::new(rules), Arc::new(zones))
    };
    let (tx, rx) = flume::unbounded();
    let (engine, input) = Engine::start(&config, registry.clone(), tx).unwrap();
    for envelope in readings {
        let device = registry.lookup(&envelope.device).unwrap();
        input
            .send_blocking(Reading {
                device,
                received: Timestamp::now(),
                envelope,
            })
            .unwrap();
    }
    // Let the workers' frontiers reach the watermark before the input
    // closes (a closed input ends the dataflow without another step of
    // event time): windows and dwell times up to there are then final.
    std::thread::sleep(Duration::from_millis(500));
    drop(input);
    engine.join().unwrap();
    rx.drain().flatten().collect()
}

/// One line per alert change (and, with `geo`, per geofence event and
/// track), times relative to `t0`.
fn describe(outputs: Vec<EngineOutput>, t0: i64, geo: bool) -> String {
    let mut alerts: Vec<Alert> = Vec::new();
    let mut lines: Vec<(i64, String)> = Vec::new();
    let rel = |ts: Timestamp| (ts.millis() - t0) as f64 / 1000.0;
    for o in outputs {
        match o {
            EngineOutput::Alert(a) => alerts.push(*a),
            EngineOutput::Geofence(g) if geo => lines.push((
                g.ts.millis(),
                format!(
                    "+{:>7.1}s geofence {:<18} {:<6} {} inside {:?}",
                    rel(g.ts),
                    g.subject,
                    g.transition.as_str(),
                    g.zone.id,
                    g.inside_s
                ),
            )),
            EngineOutput::Track(t) if geo => {
                let last = t.points.last().map_or(0, |p| p.ts.millis());
                let points: Vec<String> = t
                    .points
                    .iter()
                    .map(|p| format!("{}@+{:.0}s {:?} km/h", p.camera, rel(p.ts), p.speed_kmh))
                    .collect();
                lines.push((
                    last,
                    format!(
                        "+{:>7.1}s track {} {}",
                        rel(Timestamp(last)),
                        t.plate,
                        points.join(" → ")
                    ),
                ));
            }
            _ => {}
        }
    }
    alerts.sort_by(|a, b| (a.updated_at, &a.id, a.version).cmp(&(b.updated_at, &b.id, b.version)));
    for a in &alerts {
        let opened = rel(a.opened_at);
        let mut line = format!(
            "+{:>7.1}s {:<18} {:<22} opened +{opened:.1}s {:<8} level {} ({}) v{} {} {} {}",
            rel(a.updated_at),
            a.rule,
            a.subject,
            a.status.as_str(),
            a.level,
            a.level_name,
            a.version,
            a.severity.as_str(),
            a.evidence.value,
            a.evidence.unit,
        );
        if !a.evidence.related.is_empty() {
            let _ = write!(line, " related {:?}", a.evidence.related);
        }
        if !a.zones.is_empty() {
            let ids: Vec<&str> = a.zones.iter().map(|z| z.id.as_str()).collect();
            let _ = write!(line, " zones {ids:?}");
        }
        if !a.nearest.is_empty() {
            let near: Vec<String> = a
                .nearest
                .iter()
                .map(|n| format!("{} {} m", n.id, n.distance_m))
                .collect();
            let _ = write!(line, " nearest {near:?}");
        }
        lines.push((a.updated_at.millis(), line));
    }
    // Stable: alerts keep their order among lines of the same time.
    lines.sort_by_key(|(t, _)| *t);
    let mut text = String::new();
    for (_, line) in lines {
        let _ = writeln!(text, "{line}");
    }
    text
}

fn run(scenario: Scenario) -> String {
    run_on(scenario, 1)
}

/// A scenario's golden text from one process (two workers) or a cluster
/// of `processes` ([`run_engine_cluster`]).
fn run_on(scenario: Scenario, processes: usize) -> String {
    let registry = Registry::sonla_demo();
    let rules = RulesSource::new(None, registry.clone()).load().unwrap();
    let zones = ZonesSource::new(None).load().unwrap();
    // A fixed start (2026-01-01T07:00+07:00): the simulator follows the
    // time of day (traffic peaks, diurnal noise), so the alerts would
    // otherwise depend on the hour the test runs.
    let t0 = T0;
    let mut sim = Simulator::new(registry.clone(), scenario, 42, Timestamp(t0));
    let readings =
        (0..SPAN_MS / STEP_MS).filter_map(move |k| sim.next_reading(Timestamp(t0 + k * STEP_MS)));
    let outputs = match processes {
        1 => run_engine(&registry, rules, zones, readings),
        n => run_engine_cluster(&registry, rules, zones, readings, n),
    };
    describe(outputs, t0, false)
}

fn compare(name: &str, text: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.txt"));
    if std::env::var_os("IOC_BLESS").is_some() {
        std::fs::write(&path, text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; write it with IOC_BLESS=1 cargo test --test golden_scenarios",
            path.display()
        )
    });
    assert!(
        text == expected,
        "{name}: the output differs from {}; if the change is deliberate, bless it \
         (IOC_BLESS=1 cargo test --test golden_scenarios) and review the diff.\n--- got ---\n{text}",
        path.display()
    );
}

fn check(scenario: &str) {
    let text = run(scenario.parse().unwrap());
    compare(scenario, &text);
}

#[test]
fn flood() {
    check("flood");
}

#[test]
fn landslide_rain() {
    check("landslide_rain");
}

#[test]
fn traffic_jam() {
    check("traffic_jam");
}

#[test]
fn device_outage() {
    check("device_outage");
}

#[test]
fn watchlist_plate() {
    check("watchlist_plate");
}

// ------------------------------------------------------------------ geo

/// A small catalogue for the geo scenarios: a camera at the Sơn La dam,
/// three in the city, one in Mộc Châu, and the three rain gauges of the
/// Bắc Yên – Tà Xùa landslide-risk zone; the demo's areas and zones.
const GEO_DEVICES: &str = r#"{"type":"FeatureCollection","features":[
 {"type":"Feature","properties":{"id":"cam-dap","kind":"camera","name":"Camera đập Sơn La","expected_interval_s":60},"geometry":{"type":"Point","coordinates":[104.044,21.499]}},
 {"type":"Feature","properties":{"id":"cam-a","kind":"camera","name":"Camera A","expected_interval_s":60},"geometry":{"type":"Point","coordinates":[103.91381,21.33601]}},
 {"type":"Feature","properties":{"id":"cam-b","kind":"camera","name":"Camera B","expected_interval_s":60},"geometry":{"type":"Point","coordinates":[103.93087,21.32719]}},
 {"type":"Feature","properties":{"id":"cam-c","kind":"camera","name":"Camera C","expected_interval_s":60},"geometry":{"type":"Point","coordinates":[103.92813,21.32414]}},
 {"type":"Feature","properties":{"id":"cam-moc-chau","kind":"camera","name":"Camera Mộc Châu","expected_interval_s":60},"geometry":{"type":"Point","coordinates":[104.61421,20.86126]}},
 {"type":"Feature","properties":{"id":"rain-ta-xua","kind":"rain_gauge","name":"Tà Xùa","expected_interval_s":300},"geometry":{"type":"Point","coordinates":[104.44614,21.32851]}},
 {"type":"Feature","properties":{"id":"rain-bac-yen","kind":"rain_gauge","name":"Bắc Yên","expected_interval_s":300},"geometry":{"type":"Point","coordinates":[104.42148,21.25016]}},
 {"type":"Feature","properties":{"id":"rain-xim-vang","kind":"rain_gauge","name":"Xím Vàng","expected_interval_s":300},"geometry":{"type":"Point","coordinates":[104.38145,21.4175]}}
]}"#;

const GEO_RULES: &str = r#"
[[rule]]
id = "watchlist"
kind = "watchlist"
plates = ["26A-999.99"]
nearest = { kinds = ["police_post"], count = 1 }

[[rule]]
id = "cloned_plate"
kind = "cloned_plate"
max_speed_kmh = 150
min_distance_m = 2000

[[rule]]
id = "dam_intrusion"
kind = "geofence"
zone_kinds = ["restricted"]
on = "enter"
nearest = { kinds = ["police_post"], count = 1 }

[[rule]]
id = "dam_loitering"
kind = "geofence"
zone_kinds = ["restricted"]
on = "dwell"
severity = "extreme"

[[rule]]
id = "landslide_zone_rain"
kind = "zone_rainfall"
zone_kinds = ["landslide_risk"]
window = "1h"
min_gauges = 2
levels = [
  { name = "Nguy cơ sạt lở", value = 20, severity = "severe" },
  { name = "Nguy cơ sạt lở rất cao", value = 40, severity = "extreme" },
]
nearest = { kinds = ["shelter"], count = 2 }
"#;

fn plate_read(
    camera: &str,
    t: i64,
    seq: u64,
    plate: &str,
    pos: Option<[f64; 2]>,
) -> ioc_schemas::Envelope {
    ioc_schemas::Envelope {
        device: camera.into(),
        ts: Timestamp(T0 + t * 1000),
        seq,
        pos,
        body: ioc_schemas::Body::Camera(ioc_schemas::Camera {
            event: ioc_schemas::CameraEvent::PlateRead,
            plate: Some(plate.into()),
            confidence: 0.95,
            snapshot: None,
        }),
    }
}

/// The four geo scenarios in one stream: an intrusion into the Sơn La dam
/// perimeter (enter, dwell, jitter along the edge within the buffer, exit),
/// a watch-listed plate crossing three cameras (its track), a cloned plate
/// (Sơn La, then Mộc Châu ten minutes later), and heavy rain at two of the
/// three gauges of a landslide-risk zone (one zone alert listing them).
fn geo_readings() -> Vec<ioc_schemas::Envelope> {
    let mut r = Vec::new();
    let mut seq = std::collections::HashMap::<String, u64>::new();
    let mut next = |d: &str| {
        let s = seq.entry(d.to_owned()).or_insert(0);
        *s += 1;
        *s
    };
    // The intruder: inside at +60 s and +200 s, 10 m outside the edge at
    // +600 s (within the 30 m buffer: still inside), far away at +700 s.
    for (t, pos) in [
        (60, [104.045, 21.495]),
        (200, [104.046, 21.4955]),
        (420, [104.0455, 21.4952]),
        (600, [104.052986, 21.499363]),
        (700, [104.06, 21.52]),
    ] {
        r.push(plate_read(
            "cam-dap",
            t,
            next("cam-dap"),
            "26B-111.11",
            Some(pos),
        ));
    }
    for (cam, t) in [("cam-a", 100), ("cam-b", 160), ("cam-c", 220)] {
        r.push(plate_read(cam, t, next(cam), "26A-999.99", None));
    }
    r.push(plate_read("cam-a", 300, next("cam-a"), "26C-222.22", None));
    r.push(plate_read(
        "cam-moc-chau",
        900,
        next("cam-moc-chau"),
        "26C-222.22",
        None,
    ));
    // Rain every 5 minutes for 40 minutes, then dry for two hours.
    for k in 0..=30i64 {
        let t = 60 + k * 300;
        for (gauge, mm) in [
            ("rain-ta-xua", 10.0),
            ("rain-bac-yen", 6.0),
            ("rain-xim-vang", 1.0),
        ] {
            let mm = if k < 8 { mm } else { 0.0 };
            r.push(ioc_schemas::Envelope {
                device: gauge.into(),
                ts: Timestamp(T0 + t * 1000),
                seq: next(gauge),
                pos: None,
                body: ioc_schemas::Body::Hydrology(ioc_schemas::Hydrology {
                    rainfall_mm: Some(mm),
                    ..ioc_schemas::Hydrology::default()
                }),
            });
        }
    }
    r.sort_by_key(|e| e.ts);
    r
}

#[test]
fn geo_scenarios() {
    let registry =
        Arc::new(Registry::from_geojson(GEO_DEVICES, ioc_devices::catalogue::SONLA_AREAS).unwrap());
    let rules = RuleSet::parse(GEO_RULES, &registry, &|_| Err("no files".into())).unwrap();
    let zones = Zones::from_geojson(ioc_devices::catalogue::SONLA_ZONES).unwrap();
    let text = describe(
        run_engine(&registry, rules, zones, geo_readings().into_iter()),
        T0,
        true,
    );
    compare("geo", &text);
}

/// The geo outputs do not depend on the order readings arrive in, within
/// the allowed out-of-orderness.
#[test]
fn geo_scenarios_in_any_arrival_order() {
    let registry =
        Arc::new(Registry::from_geojson(GEO_DEVICES, ioc_devices::catalogue::SONLA_AREAS).unwrap());
    let run_in = |readings: Vec<ioc_schemas::Envelope>| {
        let rules = RuleSet::parse(GEO_RULES, &registry, &|_| Err("no files".into())).unwrap();
        let zones = Zones::from_geojson(ioc_devices::catalogue::SONLA_ZONES).unwrap();
        describe(
            run_engine(&registry, rules, zones, readings.into_iter()),
            T0,
            true,
        )
    };
    let sorted = run_in(geo_readings());
    // Swap neighbours less than 30 s apart: out of order, within the 60 s
    // the engine waits.
    let mut shuffled = geo_readings();
    for i in (1..shuffled.len()).step_by(2) {
        if shuffled[i].ts.millis() - shuffled[i - 1].ts.millis() < 30_000 {
            shuffled.swap(i - 1, i);
        }
    }
    shuffled.reverse();
    shuffled.sort_by_key(|e| e.ts.millis() / 60_000);
    assert_eq!(run_in(shuffled), sorted);
}

/// Per rule and subject, each episode's opening time, last level and
/// whether it resolved.
type Episodes = std::collections::BTreeMap<(String, String), Vec<(i64, u8, bool)>>;

/// Rainfall over a landslide zone, decided as totals pass the levels,
/// against the watermark-only engine: the same episodes of the rainfall
/// and zone rules at every gauge and zone, each at the level the oracle
/// ends it at, opened no later; every other alert is the oracle's.
#[test]
fn landslide_rain_decided_at_the_readings_matches_the_watermark_oracle() {
    let registry = Registry::sonla_demo();
    let outputs = |per_device_progress: bool| {
        let rules = RulesSource::new(None, registry.clone()).load().unwrap();
        let zones = ZonesSource::new(None).load().unwrap();
        let mut sim = Simulator::new(registry.clone(), Scenario::LandslideRain, 42, Timestamp(T0));
        let readings = (0..SPAN_MS / STEP_MS)
            .filter_map(move |k| sim.next_reading(Timestamp(T0 + k * STEP_MS)));
        let alerts: Vec<Alert> =
            run_engine_with(&registry, rules, zones, readings, per_device_progress)
                .into_iter()
                .filter_map(|o| match o {
                    EngineOutput::Alert(a) => Some(*a),
                    _ => None,
                })
                .collect();
        alerts
    };
    let (oracle, now) = (outputs(false), outputs(true));
    // Per rule and subject: each episode's opening time, last level and
    // whether it resolved.
    let episodes = |alerts: &[Alert]| {
        let mut by: Episodes = Default::default();
        let mut sorted: Vec<&Alert> = alerts.iter().collect();
        sorted.sort_by_key(|a| (a.opened_at, a.version));
        for a in sorted {
            let list = by.entry((a.rule.clone(), a.subject.clone())).or_default();
            if a.version == 1 {
                list.push((a.opened_at.millis(), a.level, false));
            }
            if let Some(last) = list.last_mut() {
                if a.level == 0 {
                    last.2 = true;
                } else {
                    last.1 = a.level;
                }
            }
        }
        by
    };
    let (want, got) = (episodes(&oracle), episodes(&now));
    assert!(
        want.keys().any(|(rule, _)| rule == "landslide_zone_rain"),
        "the scenario raises no zone alert to compare"
    );
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "the same rules and subjects"
    );
    for (key, episodes) in &want {
        let other = &got[key];
        assert_eq!(
            episodes.len(),
            other.len(),
            "{key:?}: {episodes:?} against {other:?}"
        );
        for (w, g) in episodes.iter().zip(other) {
            assert_eq!((w.1, w.2), (g.1, g.2), "{key:?}: last level and resolution");
            assert!(
                g.0 <= w.0,
                "{key:?}: opened at {} after the oracle's {}",
                g.0,
                w.0
            );
        }
    }
}

/// [`run_engine`] on a cluster of `processes` engines of one worker each,
/// connected over loopback by timely's networking as separate processes
/// are: each takes the readings of the devices whose registry index is
/// its own modulo `processes` (as a Kafka topic partitioned by device
/// hands them out), and the exchange takes each to its owner. Every
/// process's own outputs, together.
fn run_engine_cluster(
    registry: &Arc<Registry>,
    rules: RuleSet,
    zones: Zones,
    readings: impl Iterator<Item = ioc_schemas::Envelope>,
    processes: usize,
) -> Vec<EngineOutput> {
    let hosts = common::cluster_hosts(processes);
    let mut shares: Vec<Vec<Reading>> = (0..processes).map(|_| Vec::new()).collect();
    for envelope in readings {
        let device = registry.lookup(&envelope.device).unwrap();
        shares[device as usize % processes].push(Reading {
            device,
            received: Timestamp::now(),
            envelope,
        });
    }
    let rules = Arc::new(rules);
    let zones = Arc::new(zones);
    let runs: Vec<_> = shares
        .into_iter()
        .enumerate()
        .map(|(process, share)| {
            let config = EngineConfig {
                cluster: Some(ioc_processing::ClusterConfig {
                    hosts: hosts.clone(),
                    process,
                    remote_outputs: None,
                    front: Vec::new(),
                }),
                ..golden_config(1, rules.clone(), zones.clone())
            };
            let registry = registry.clone();
            std::thread::spawn(move || {
                let (tx, rx) = flume::unbounded();
                let (engine, input) = Engine::start(&config, registry, tx).unwrap();
                input.send_all_blocking(share).unwrap();
                std::thread::sleep(Duration::from_millis(500));
                drop(input);
                engine.join().unwrap();
                rx.drain().flatten().collect::<Vec<_>>()
            })
        })
        .collect();
    runs.into_iter().flat_map(|r| r.join().unwrap()).collect()
}

/// The golden scenarios on a cluster of three processes, each device's
/// readings taken in by one of them: exactly the golden alert sequences
/// (rain windows, zone totals across processes, traffic, geofences and
/// tracks included).
#[test]
fn golden_scenarios_on_a_cluster_of_three_processes() {
    let golden = |name: &str| {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/golden")
                .join(format!("{name}.txt")),
        )
        .unwrap()
    };
    for name in ["flood", "landslide_rain", "traffic_jam"] {
        let text = run_on(name.parse().unwrap(), 3);
        assert!(text == golden(name), "{name} on three processes:\n{text}");
    }
    let registry =
        Arc::new(Registry::from_geojson(GEO_DEVICES, ioc_devices::catalogue::SONLA_AREAS).unwrap());
    let rules = RuleSet::parse(GEO_RULES, &registry, &|_| Err("no files".into())).unwrap();
    let zones = Zones::from_geojson(ioc_devices::catalogue::SONLA_ZONES).unwrap();
    let text = describe(
        run_engine_cluster(&registry, rules, zones, geo_readings().into_iter(), 3),
        T0,
        true,
    );
    assert!(text == golden("geo"), "geo on three processes:\n{text}");
}
