//! The whole engine on two workers, fed through its real input.

use std::time::Duration;

use ioc_devices::Registry;
use ioc_schemas::{AlertStatus, EngineOutput, Timestamp};

use super::*;
use crate::reading::water_level;

#[test]
fn two_workers_raise_and_clear_alerts_for_many_gauges() {
    let registry = Registry::sonla_demo();
    let gauges: Vec<_> = registry
        .devices()
        .iter()
        .filter_map(|d| Some((d.id.clone(), d.thresholds.alarm_levels_m?)))
        .collect();
    let (out_tx, out_rx) = flume::unbounded();
    let (engine, input) =
        Engine::start(&EngineConfig::default(), registry.clone(), out_tx).unwrap();
    let t0 = Timestamp::now().millis() - 60_000;
    for (i, (id, levels)) in gauges.iter().enumerate() {
        let t = t0 + i as i64;
        input
            .send_blocking(water_level(&registry, id, t, 1, levels[1] + 0.05))
            .unwrap();
        input
            .send_blocking(water_level(&registry, id, t + 1000, 2, levels[0] - 1.0))
            .unwrap();
        // A duplicate of the last reading changes nothing.
        input
            .send_blocking(water_level(&registry, id, t + 1000, 2, levels[0] - 1.0))
            .unwrap();
    }
    drop(input);
    let stats = engine.stats();
    engine.join().unwrap();
    let alerts: Vec<_> = out_rx
        .drain()
        .flatten()
        .filter_map(|o| match o {
            EngineOutput::Alert(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(alerts.len(), gauges.len() * 2);
    for (id, _) in &gauges {
        let mine: Vec<_> = alerts.iter().filter(|a| &a.subject == id).collect();
        assert_eq!(mine.len(), 2, "{id}");
        assert_eq!((mine[0].status, mine[0].level), (AlertStatus::Open, 2));
        assert_eq!(mine[1].status, AlertStatus::Resolved);
        assert_eq!(mine[0].id, mine[1].id);
        assert!(!mine[0].area.is_empty());
    }
    assert_eq!(
        stats.duplicates.load(Ordering::Relaxed),
        gauges.len() as u64
    );
    assert_eq!(
        stats.processed.load(Ordering::Relaxed),
        3 * gauges.len() as u64
    );
}

/// A gateway back from an outage uploads 40 minutes of three rain gauges'
/// readings (event times 45 to 6 minutes ago, in order): the rainfall
/// alerts open with the readings that pass the level, and no other device
/// is declared never heard (its silence counts from when the engine
/// started listening, not from the oldest reading of the backfill).
#[test]
fn a_backfill_raises_its_rain_alerts_and_makes_no_other_device_overdue() {
    let registry = Registry::sonla_demo();
    let rules = RuleSet::parse(
        r#"
        [[rule]]
        id = "rain_3h"
        kind = "rainfall"
        window = "3h"
        levels = [{ name = "heavy", value = 50 }]
        [[rule]]
        id = "offline"
        kind = "staleness"
        factor = 3
        "#,
        &registry,
        &|_| Err("none".into()),
    )
    .unwrap();
    let config = EngineConfig {
        rules: Some(Arc::new(rules)),
        ..EngineConfig::default()
    };
    let (out_tx, out_rx) = flume::unbounded();
    let (engine, input) = Engine::start(&config, registry.clone(), out_tx).unwrap();
    let gauges = ["rain-ta-xua", "rain-bac-yen", "rain-muong-la"];
    let now = Timestamp::now().millis();
    for k in 0..40 {
        for (g, id) in gauges.iter().enumerate() {
            let ts = now - 45 * 60_000 + k * 60_000 + g as i64;
            let envelope = ioc_schemas::Envelope {
                device: (*id).into(),
                ts: Timestamp(ts),
                seq: k as u64 + 1,
                pos: None,
                body: ioc_schemas::Body::Hydrology(ioc_schemas::Hydrology {
                    rainfall_mm: Some(2.0),
                    ..Default::default()
                }),
            };
            let device = registry.lookup(id).unwrap();
            input
                .send_blocking(Reading {
                    device,
                    received: Timestamp(now),
                    envelope,
                })
                .unwrap();
        }
    }
    // Idle: event time follows the clock, past several staleness scans.
    std::thread::sleep(std::time::Duration::from_secs(4));
    drop(input);
    engine.join().unwrap();
    let alerts: Vec<_> = out_rx
        .drain()
        .flatten()
        .filter_map(|o| match o {
            EngineOutput::Alert(a) => Some(a),
            _ => None,
        })
        .collect();
    let never_heard: Vec<_> = alerts
        .iter()
        .filter(|a| a.level_name == "never_heard")
        .map(|a| &a.subject)
        .collect();
    assert!(
        never_heard.is_empty(),
        "declared never heard: {never_heard:?}"
    );
    for id in gauges {
        let opened: Vec<_> = alerts
            .iter()
            .filter(|a| a.rule == "rain_3h" && a.subject == id && a.version == 1)
            .collect();
        assert_eq!(opened.len(), 1, "{id}: {opened:?}");
        // Opened by the 25th reading (25 × 2 mm = 50 mm), not when its
        // 5-minute bucket closed.
        let g = gauges.iter().position(|g| *g == id).unwrap() as i64;
        assert_eq!(opened[0].evidence.value, 50.0, "{id}");
        assert_eq!(opened[0].opened_at.millis(), now - 21 * 60_000 + g, "{id}");
    }
}

/// Rain on three gauges, two readings of 2 mm a minute apart per gauge,
/// and one river gauge's level going up and down: `(registry, readings)`.
fn rain_and_river(n: u64) -> (Arc<Registry>, Vec<Reading>) {
    let registry = Registry::sonla_demo();
    let rain: Vec<String> = registry
        .devices()
        .iter()
        .filter(|d| d.kind == ioc_schemas::DeviceKind::RainGauge)
        .take(3)
        .map(|d| d.id.clone())
        .collect();
    let (river, levels) = registry
        .devices()
        .iter()
        .find_map(|d| Some((d.id.clone(), d.thresholds.alarm_levels_m?)))
        .unwrap();
    let t0 = Timestamp::now().millis() - 3 * 3_600_000;
    let mut readings = Vec::new();
    for k in 0..n {
        let ts = t0 + k as i64 * 60_000;
        for g in &rain {
            let mut r = water_level(&registry, g, ts, k + 1, 0.0);
            r.envelope.body = ioc_schemas::Body::Hydrology(ioc_schemas::Hydrology {
                rainfall_mm: Some(2.0),
                ..ioc_schemas::Hydrology::default()
            });
            readings.push(r);
        }
        let level = levels[0] - 0.5 + (k as f64 / n as f64) * 2.0 * (levels[2] - levels[0] + 0.5);
        readings.push(water_level(&registry, &river, ts, k + 1, level));
    }
    (registry, readings)
}

/// The alerts and windows among `outputs`, as comparable lines.
fn alerts_and_windows(outputs: Vec<EngineOutput>) -> Vec<String> {
    let mut lines: Vec<String> = outputs
        .into_iter()
        .filter_map(|o| match o {
            EngineOutput::Alert(a) => Some(format!(
                "alert {} v{} {} level {} at {}",
                a.id,
                a.version,
                a.status.as_str(),
                a.level,
                a.updated_at.millis()
            )),
            EngineOutput::Window(w) => Some(format!(
                "window {} {}..{} {:?}",
                w.device,
                w.start.millis(),
                w.end.millis(),
                w.value
            )),
            _ => None,
        })
        .collect();
    lines.sort();
    lines.dedup();
    lines
}

/// The demo rules and a 3-hour rainfall rule; state in `dir`, if any.
fn rain_config(
    registry: &Arc<Registry>,
    workers: usize,
    dir: Option<&std::path::Path>,
) -> EngineConfig {
    EngineConfig {
        workers,
        idle_timeout: Duration::from_secs(3600),
        rules: Some(Arc::new(
            RuleSet::parse(
                &format!(
                    "{BUILTIN_RULES}
[[rule]]
id = \"rain_3h\"
kind = \"rainfall\"
window = \"3h\"
levels = [{{ name = \"heavy\", value = 50, severity = \"severe\" }}]
"
                ),
                registry,
                &|_| Err("no files".into()),
            )
            .unwrap(),
        )),
        durable: dir.map(|d| DurableConfig {
            dir: d.to_owned(),
            interval: Duration::from_millis(20),
            ..DurableConfig::default()
        }),
        ..EngineConfig::default()
    }
}

/// An engine keeping its state in `dir`, with the rules of [`run_durable`].
fn durable_engine(
    registry: &Arc<Registry>,
    workers: usize,
    dir: &std::path::Path,
) -> (Engine, EngineInput, flume::Receiver<Vec<EngineOutput>>) {
    let config = rain_config(registry, workers, Some(dir));
    let (out_tx, out_rx) = flume::unbounded();
    let (mut engine, input) = Engine::start(&config, registry.clone(), out_tx).unwrap();
    engine.replay(&input, |_| {}).unwrap();
    (engine, input, out_rx)
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            // A file removed meanwhile (a pruned checkpoint) is skipped.
            let _ = std::fs::copy(e.path(), to.join(e.file_name()));
        }
    }
}

#[test]
fn a_log_sources_position_in_the_checkpoint_matches_the_state() {
    // A replayable source (Kafka) is not journaled: a restart reads on
    // from the offset the checkpoint keeps. Everything before it must be
    // in the state, nothing after it.
    let (registry, readings) = rain_and_river(40);
    let whole = alerts_and_windows(run_durable(&registry, &readings, 2, None));
    let dir = tempfile::tempdir().unwrap();
    let (engine, input, out_rx) = durable_engine(&registry, 2, dir.path());
    let log = input.log_source().unwrap();
    let feed = |input: &EngineInput, log: &LogSource, from: usize, to: usize| {
        for (offset, r) in readings.iter().enumerate().take(to).skip(from) {
            log.hold_for_checkpoint();
            input.send_unjournaled_blocking(r.clone()).unwrap();
            log.handed("telemetry", 0, offset as i64);
        }
    };
    // A first part surely checkpointed, then a second part at full speed,
    // and the data directory copied as a kill would leave it.
    let crash = readings.len() * 2 / 3;
    feed(&input, &log, 0, readings.len() / 3);
    // An idle source still stops for checkpoints (Kafka's between polls).
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(10));
        log.hold_for_checkpoint();
    }
    feed(&input, &log, readings.len() / 3, crash);
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    drop(log);
    drop(input);
    engine.join().unwrap();
    let mut outputs: Vec<EngineOutput> = out_rx.drain().flatten().collect();
    // The checkpoint is whole (complete ones are renamed into place);
    // the outputs before the "crash" are stored, as the app's hook makes
    // sure; the restarted engine reads on from the kept offset.
    let (engine, input, out_rx) = durable_engine(&registry, 3, copy.path());
    let log = input.log_source().unwrap();
    let from = usize::try_from(log.restored()["telemetry"][&0]).unwrap();
    assert!(
        (readings.len() / 3..=crash).contains(&from),
        "{from} of {}",
        readings.len()
    );
    // Checkpoints written before the source reads again (Kafka waits for
    // its group) keep the restored position.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(10));
        log.hold_for_checkpoint();
    }
    let again = tempfile::tempdir().unwrap();
    copy_dir(copy.path(), again.path());
    let stats = engine.stats();
    feed(&input, &log, from, readings.len());
    drop(log);
    drop(input);
    engine.join().unwrap();
    outputs.extend(out_rx.drain().flatten());
    assert_eq!(stats.duplicates.load(Ordering::Relaxed), 0, "read twice");
    assert_eq!(alerts_and_windows(outputs), whole);
    let (engine, input, _) = durable_engine(&registry, 2, again.path());
    let log = input.log_source().unwrap();
    assert_eq!(log.restored()["telemetry"][&0], from as i64);
    drop(log);
    drop(input);
    engine.join().unwrap();
}

/// Runs `readings` through an engine of `workers` workers keeping its
/// state in `dir` (if any); the outputs.
fn run_durable(
    registry: &Arc<Registry>,
    readings: &[Reading],
    workers: usize,
    dir: Option<&std::path::Path>,
) -> Vec<EngineOutput> {
    let config = rain_config(registry, workers, dir);
    let (out_tx, out_rx) = flume::unbounded();
    let (mut engine, input) = Engine::start(&config, registry.clone(), out_tx).unwrap();
    engine.replay(&input, |_| {}).unwrap();
    for (i, r) in readings.iter().enumerate() {
        input.send_blocking(r.clone()).unwrap().wait().unwrap();
        if i % 17 == 0 {
            // Let checkpoints fall between readings.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    drop(input);
    engine.join().unwrap();
    out_rx.drain().flatten().collect()
}

#[test]
fn a_restart_from_the_checkpoint_continues_as_if_never_stopped() {
    let (registry, readings) = rain_and_river(40);
    // Durable too: a stop leaves what waits for the watermark waiting
    // (in memory only, it is applied at the stop).
    let once = tempfile::tempdir().unwrap();
    let whole = alerts_and_windows(run_durable(&registry, &readings, 2, Some(once.path())));
    assert!(whole.iter().any(|l| l.contains("rain_3h")), "{whole:#?}");
    let dir = tempfile::tempdir().unwrap();
    let half = readings.len() / 2;
    let mut outputs = run_durable(&registry, &readings[..half], 2, Some(dir.path()));
    // The second half on three workers: the state is split by partition.
    outputs.extend(run_durable(
        &registry,
        &readings[half..],
        3,
        Some(dir.path()),
    ));
    let resumed = alerts_and_windows(outputs);
    assert_eq!(resumed, whole);
    // Without the checkpoint, the second half alone misses the heavy rain.
    let forgetful = alerts_and_windows(run_durable(&registry, &readings[half..], 2, None));
    assert_ne!(forgetful, whole);
}

#[test]
fn a_checkpoint_of_the_first_format_still_restores() {
    use crate::durable::coordinator::{DevicePart, GeoPart, decode};
    use crate::durable::store::{Part, Store};
    let (registry, readings) = rain_and_river(40);
    let once = tempfile::tempdir().unwrap();
    let whole = alerts_and_windows(run_durable(&registry, &readings, 2, Some(once.path())));
    let dir = tempfile::tempdir().unwrap();
    let half = readings.len() / 2;
    let mut outputs = run_durable(&registry, &readings[..half], 2, Some(dir.path()));
    // The newest checkpoint written again as the first format wrote it:
    // JSON parts, format 1.
    let store = Store::open(&dir.path().join("checkpoints")).unwrap();
    let loaded = store.load_latest().unwrap().unwrap();
    let mut manifest = loaded.manifest.clone();
    let parts = manifest
        .parts
        .drain(..)
        .zip(&loaded.parts)
        .map(|(meta, data)| {
            let json = match meta.operator.as_str() {
                "device" => serde_json::to_vec(&decode::<DevicePart>(2, &meta.file, data).unwrap()),
                _ => serde_json::to_vec(&decode::<GeoPart>(2, &meta.file, data).unwrap()),
            }
            .unwrap();
            Part {
                operator: if meta.operator == "device" {
                    "device"
                } else {
                    "geo"
                },
                worker: meta.worker,
                data: json,
                partitions: meta.partitions,
            }
        })
        .collect();
    manifest.format = 1;
    manifest.epoch += 1;
    store.write(manifest, parts).unwrap();
    let newest = store.load_latest().unwrap().unwrap();
    assert_eq!(newest.manifest.format, 1);
    assert!(newest.manifest.parts[0].file.ends_with(".json"));
    outputs.extend(run_durable(
        &registry,
        &readings[half..],
        2,
        Some(dir.path()),
    ));
    assert_eq!(alerts_and_windows(outputs), whole);
}

/// The registry changes while the engine runs: a gauge added is judged
/// from its first reading, lowering its BĐ3 under the water raises its
/// open alert to BĐ3 without a reading, and maintenance mutes it; every
/// other device keeps its state.
#[test]
fn registry_changes_reach_the_workers_without_a_restart() {
    let registry = Registry::sonla_demo();
    let cell = Arc::new(RegistryCell::new(registry.clone()));
    let compile =
        |r: &Registry| Arc::new(RuleSet::parse(BUILTIN_RULES, r, &|_| Err("none".into())).unwrap());
    let rules = compile(&registry);
    let config = EngineConfig {
        rules: Some(rules),
        ..EngineConfig::default()
    };
    let (out_tx, out_rx) = flume::unbounded();
    let (engine, input) = Engine::start_live(&config, cell.clone(), out_tx).unwrap();
    let rules_cell = engine.rules();
    let change = |r: &Registry, spec: ioc_schemas::DeviceSpec| {
        let next = Arc::new(r.with(vec![spec]).unwrap());
        rules_cell.replace(compile(&next));
        cell.replace(next.clone());
        next
    };
    let mut gauge = ioc_schemas::DeviceSpec {
        id: "river-new".into(),
        kind: ioc_schemas::DeviceKind::RiverGauge,
        name: "Trạm mới".into(),
        pos: [103.91, 21.32],
        area: None,
        expected_interval_s: 600,
        thresholds: ioc_schemas::Thresholds {
            alarm_levels_m: Some([3.0, 4.0, 5.0]),
            ..Default::default()
        },
        lifecycle: ioc_schemas::Lifecycle::Active,
        river: None,
        road: None,
        direction: None,
    };
    let now = cell.current();
    let other = now
        .devices()
        .iter()
        .find(|d| d.thresholds.alarm_levels_m.is_some())
        .unwrap()
        .clone();
    let t0 = Timestamp::now().millis() - 60_000;
    let send = |r: &Registry, id: &str, ts: i64, seq: u64, m: f64| {
        input.send_blocking(water_level(r, id, ts, seq, m)).unwrap();
    };
    let levels = other.thresholds.alarm_levels_m.unwrap();
    send(&now, &other.id, t0, 1, levels[0] + 0.05);
    let now = change(&now, gauge.clone());
    assert_eq!(now.devices().len(), registry.devices().len() + 1);
    send(&now, "river-new", t0, 1, 4.5);
    // Every alert the engine sent, in order, whichever wait took it.
    let seen = std::cell::RefCell::new(Vec::new());
    let wait_for = |what: &str, test: &dyn Fn(&ioc_schemas::Alert) -> bool| -> ioc_schemas::Alert {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let batch = out_rx.recv_timeout(left).unwrap_or_else(|_| {
                let seen: Vec<_> = seen
                    .borrow()
                    .iter()
                    .map(|a: &ioc_schemas::Alert| {
                        format!("{} {} level {}", a.rule, a.subject, a.level)
                    })
                    .collect();
                panic!("no {what}; the alerts seen: {seen:?}")
            });
            let mut found = None;
            for o in batch {
                if let EngineOutput::Alert(a) = o {
                    if found.is_none() && test(&a) {
                        found = Some((*a).clone());
                    }
                    seen.borrow_mut().push(*a);
                }
            }
            if let Some(a) = found {
                return a;
            }
        }
    };
    let opened = wait_for("BĐ2 alert for the new gauge", &|a| {
        a.subject == "river-new" && a.level == 2
    });
    assert_eq!(opened.status, AlertStatus::Open);
    // BĐ3 lowered under the water: the open alert follows, with no reading.
    gauge.thresholds.alarm_levels_m = Some([3.0, 4.0, 4.4]);
    let now = change(&now, gauge.clone());
    let raised = wait_for("the alert at BĐ3", &|a| {
        a.subject == "river-new" && a.level == 3
    });
    assert_eq!(raised.id, opened.id);
    // Raised back above the water (past the hysteresis): back to BĐ2.
    gauge.thresholds.alarm_levels_m = Some([3.0, 4.0, 6.0]);
    let now = change(&now, gauge.clone());
    let lowered = wait_for("the alert back at BĐ2", &|a| {
        a.subject == "river-new" && a.level == 2
    });
    assert_eq!(lowered.id, opened.id);
    // In maintenance: a reading far above BĐ3 raises nothing.
    gauge.lifecycle = ioc_schemas::Lifecycle::Maintenance {
        until: None,
        reason: "hiệu chuẩn".into(),
    };
    let now = change(&now, gauge.clone());
    let muted_from = seen.borrow().len();
    send(&now, "river-new", t0 + 1000, 2, 9.0);
    // The other gauge kept its state: its next reading resolves its alert.
    send(&now, &other.id, t0 + 1000, 2, levels[0] - 1.0);
    let resolved = wait_for("the other gauge's alert resolved", &|a| {
        a.subject == other.id && a.status == AlertStatus::Resolved
    });
    assert_eq!(resolved.level, 0);
    drop(input);
    engine.join().unwrap();
    for o in out_rx.drain().flatten() {
        if let EngineOutput::Alert(a) = o {
            seen.borrow_mut().push(*a);
        }
    }
    let seen = seen.into_inner();
    let muted: Vec<_> = seen[muted_from..]
        .iter()
        .filter(|a| a.subject == "river-new")
        .collect();
    assert!(muted.is_empty(), "an alert while in maintenance: {muted:?}");
}

/// Free loopback addresses for the processes of a test cluster.
fn cluster_hosts(n: usize) -> Vec<String> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect()
}

/// What a run decided: every alert change in order per alert, and every
/// window result, each sorted so that runs compare whatever process or
/// worker decided them.
fn decisions(outputs: impl IntoIterator<Item = EngineOutput>) -> (Vec<String>, Vec<String>) {
    let (mut alerts, mut windows) = (Vec::new(), Vec::new());
    for o in outputs {
        match o {
            EngineOutput::Alert(a) => alerts.push((
                a.id.clone(),
                a.updated_at,
                format!(
                    "{} {:?} level {} peak {} at {:?}",
                    a.id, a.status, a.level, a.peak_level, a.updated_at
                ),
            )),
            EngineOutput::Window(w) => windows.push(format!("{w:?}")),
            _ => {}
        }
    }
    alerts.sort();
    windows.sort();
    (alerts.into_iter().map(|a| a.2).collect(), windows)
}

/// The same readings through one process, and through a cluster of two
/// processes each taking every other reading (so one device's readings
/// reach both, as from an MQTT shared subscription): the same alerts and
/// windows, and each process sees the other's device states.
#[test]
fn a_cluster_of_two_processes_decides_as_one_process() {
    let registry = Registry::sonla_demo();
    let rules = RuleSet::parse(
        &format!(
            "{BUILTIN_RULES}\n[[rule]]\nid = \"rain_1h\"\nkind = \"rainfall\"\nwindow = \"1h\"\nlevels = [{{ name = \"heavy\", value = 8 }}]\n"
        ),
        &registry,
        &|_| Err("none".into()),
    )
    .unwrap();
    let gauges: Vec<_> = registry
        .devices()
        .iter()
        .filter_map(|d| Some((d.id.clone(), d.thresholds.alarm_levels_m?)))
        .collect();
    let rain = ["rain-ta-xua", "rain-bac-yen", "rain-muong-la"];
    let t0 = Timestamp::now().millis() - 600_000;
    let mut readings = Vec::new();
    for k in 0..6u64 {
        let ts = t0 + k as i64 * 60_000;
        for (i, (id, levels)) in gauges.iter().enumerate() {
            let m = [
                levels[0] - 1.0,
                levels[1] + 0.05,
                levels[2] + 0.5,
                levels[1] + 0.1,
                levels[0] - 1.0,
                levels[0] - 2.0,
            ][k as usize];
            readings.push(water_level(&registry, id, ts + i as i64, k + 1, m));
        }
        for (g, id) in rain.iter().enumerate() {
            let envelope = ioc_schemas::Envelope {
                device: (*id).into(),
                ts: Timestamp(ts + g as i64),
                seq: k + 1,
                pos: None,
                body: ioc_schemas::Body::Hydrology(ioc_schemas::Hydrology {
                    rainfall_mm: Some(3.0),
                    ..Default::default()
                }),
            };
            readings.push(Reading {
                device: registry.lookup(id).unwrap(),
                received: Timestamp::now(),
                envelope,
            });
        }
    }
    // Event time from the readings only (a process that waited for the
    // other to connect would otherwise find itself idle, and its event
    // time would follow the clock past the recording at the end).
    let config = EngineConfig {
        rules: Some(Arc::new(rules)),
        idle_timeout: Duration::from_secs(3600),
        ..EngineConfig::default()
    };
    // One process.
    let (tx, rx) = flume::unbounded();
    let (engine, input) = Engine::start(&config, registry.clone(), tx).unwrap();
    input.send_all_blocking(readings.clone()).unwrap();
    drop(input);
    engine.join().unwrap();
    let alone = decisions(rx.drain().flatten());
    assert!(alone.0.len() >= gauges.len() * 3, "{:?}", alone.0);
    assert!(!alone.1.is_empty());

    // Two processes of one worker each, started together (each waits
    // for the other to connect).
    let hosts = cluster_hosts(2);
    let runs: Vec<_> = (0..2)
        .map(|p| {
            let (tx, rx) = flume::unbounded();
            let (remote_tx, remote_rx) = flume::unbounded();
            let config = EngineConfig {
                workers: 1,
                cluster: Some(ClusterConfig {
                    hosts: hosts.clone(),
                    process: p,
                    remote_outputs: Some(remote_tx),
                    front: Vec::new(),
                }),
                ..config.clone()
            };
            let registry = registry.clone();
            let mine: Vec<Reading> = readings.iter().skip(p).step_by(2).cloned().collect();
            let thread = std::thread::spawn(move || {
                let (engine, input) = Engine::start(&config, registry, tx).unwrap();
                input.send_all_blocking(mine).unwrap();
                drop(input);
                engine.join().unwrap();
            });
            (thread, rx, remote_rx)
        })
        .collect();
    let mut all = Vec::new();
    let mut seen_remote = Vec::new();
    for (thread, rx, remote_rx) in runs {
        thread.join().unwrap();
        all.extend(rx.drain().flatten());
        seen_remote.push(
            remote_rx
                .drain()
                .flatten()
                .filter_map(|o| match o {
                    EngineOutput::Device(d) => Some(d.device.to_string()),
                    _ => None,
                })
                .collect::<std::collections::BTreeSet<_>>(),
        );
    }
    let cluster = decisions(all);
    assert_eq!(cluster.0, alone.0, "alerts differ");
    assert_eq!(cluster.1, alone.1, "windows differ");
    // Each process got the device states of the devices the other owns.
    for (p, seen) in seen_remote.iter().enumerate() {
        assert!(
            seen.len() > gauges.len() / 4,
            "process {p} saw {} remote devices",
            seen.len()
        );
    }
}

/// `congestion` with `window = "5m"` judges each counter's closed 5-minute
/// windows (mean speed weighted by vehicles), not its readings: a slow
/// window raises at its end, a window inside the margin keeps the alert,
/// a window clearly faster clears it at its end.
#[test]
fn windowed_congestion_judges_closed_five_minute_windows() {
    let registry = Registry::sonla_demo();
    let rules = RuleSet::parse(
        r#"
        [[rule]]
        id = "slow"
        kind = "congestion"
        window = "5m"
        speed_below_kmh = 15
        speed_margin_kmh = 5
        "#,
        &registry,
        &|_| Err("none".into()),
    )
    .unwrap();
    let config = EngineConfig {
        rules: Some(Arc::new(rules)),
        idle_timeout: std::time::Duration::from_secs(3600),
        ..EngineConfig::default()
    };
    let (out_tx, out_rx) = flume::unbounded();
    let (engine, input) = Engine::start(&config, registry.clone(), out_tx).unwrap();
    let counter = registry
        .devices()
        .iter()
        .find(|d| d.kind == ioc_schemas::DeviceKind::TrafficCounter)
        .unwrap()
        .id
        .clone();
    let device = registry.lookup(&counter).unwrap();
    let t0 = 1_767_225_600_000; // a window boundary
    // Per minute: (speed, vehicles). Window 1 means 10 km/h, though one
    // reading alone is fast; window 2 means 18 (inside the margin);
    // window 3 means 30.
    let minutes: Vec<(f64, u32)> = [(8.0, 10), (8.0, 10), (8.0, 10), (8.0, 10), (18.0, 10)]
        .into_iter()
        .chain([(18.0, 10); 5])
        .chain([(30.0, 10); 5])
        .collect();
    for (k, (speed, vehicles)) in minutes.into_iter().enumerate() {
        let seq = k as u64 + 1;
        let envelope = ioc_schemas::Envelope {
            device: counter.clone(),
            ts: Timestamp(t0 + k as i64 * 60_000 + 30_000),
            seq,
            pos: None,
            body: ioc_schemas::Body::Traffic(ioc_schemas::Traffic {
                interval_s: 60,
                counts: ioc_schemas::VehicleCounts {
                    car: vehicles,
                    ..Default::default()
                },
                speed_kmh: Some(speed),
                occupancy_pct: None,
            }),
        };
        let received = envelope.ts;
        input
            .send_blocking(Reading {
                device,
                received,
                envelope,
            })
            .unwrap();
    }
    // Another device's reading moves the watermark past window 3's end.
    let other = registry
        .devices()
        .iter()
        .position(|d| d.kind == ioc_schemas::DeviceKind::RainGauge)
        .unwrap();
    let envelope = ioc_schemas::Envelope {
        device: registry.devices()[other].id.clone(),
        ts: Timestamp(t0 + 30 * 60_000),
        seq: 1,
        pos: None,
        body: ioc_schemas::Body::Hydrology(ioc_schemas::Hydrology {
            rainfall_mm: Some(0.0),
            ..Default::default()
        }),
    };
    input
        .send_blocking(Reading {
            device: other as ioc_devices::DeviceIndex,
            received: envelope.ts,
            envelope,
        })
        .unwrap();
    drop(input);
    engine.join().unwrap();
    let changes: Vec<(i64, u8, f64)> = out_rx
        .drain()
        .flatten()
        .filter_map(|o| match o {
            EngineOutput::Alert(a) if a.rule == "slow" => {
                Some((a.evidence.ts.millis() - t0, a.level, a.evidence.value))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        changes,
        vec![(300_000, 1, 10.0), (900_000, 0, 30.0)],
        "(window end after t0, level, mean speed)"
    );
}
