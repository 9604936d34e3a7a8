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

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use ioc::rules::RulesSource;
use ioc_devices::{Registry, Scenario, Simulator};
use ioc_processing::{Engine, EngineConfig, Reading};
use ioc_schemas::{Alert, EngineOutput, Timestamp};

/// 40 minutes: two cycles of every scenario.
const SPAN_MS: i64 = 40 * 60_000;
/// Start of every run, epoch ms.
const T0: i64 = 1_767_225_600_000;
/// One reading every 20 ms of event time over all devices (each device
/// about every 5 s, as in the live demo).
const STEP_MS: i64 = 20;

fn run(scenario: Scenario) -> String {
    let registry = Registry::sonla_demo();
    let rules = RulesSource::new(None, registry.clone()).load().unwrap();
    // A fixed start (2026-01-01T07:00+07:00): the simulator follows the
    // time of day (traffic peaks, diurnal noise), so the alerts would
    // otherwise depend on the hour the test runs.
    let t0 = T0;
    let config = EngineConfig {
        workers: 2,
        // Generous: the two workers' inputs may drift apart on a busy machine.
        out_of_orderness: Duration::from_secs(60),
        // Never follow the wall clock: event time comes from the readings only.
        idle_timeout: Duration::from_secs(3600),
        rules: Some(Arc::new(rules)),
        ..EngineConfig::default()
    };
    let (tx, rx) = flume::unbounded();
    let (engine, input) = Engine::start(&config, registry.clone(), tx).unwrap();
    let mut sim = Simulator::new(registry.clone(), scenario, 42, Timestamp(t0));
    let mut t = t0;
    while t < t0 + SPAN_MS {
        if let Some(envelope) = sim.next_reading(Timestamp(t)) {
            let device = registry.lookup(&envelope.device).unwrap();
            input
                .send_blocking(Reading {
                    device,
                    received: Timestamp::now(),
                    envelope,
                })
                .unwrap();
        }
        t += STEP_MS;
    }
    drop(input);
    engine.join().unwrap();
    let mut alerts: Vec<Alert> = rx
        .drain()
        .flatten()
        .filter_map(|o| match o {
            EngineOutput::Alert(a) => Some(*a),
            _ => None,
        })
        .collect();
    alerts.sort_by(|a, b| (a.updated_at, &a.id, a.version).cmp(&(b.updated_at, &b.id, b.version)));
    let rel = |ts: Timestamp| (ts.millis() - t0) as f64 / 1000.0;
    let mut text = String::new();
    for a in &alerts {
        let opened = rel(a.opened_at);
        let _ = writeln!(
            text,
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
    }
    text
}

fn check(scenario: &str) {
    let text = run(scenario.parse().unwrap());
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{scenario}.txt"));
    if std::env::var_os("IOC_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
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
        "{scenario}: the alerts differ from {}; if the change is deliberate, bless it \
         (IOC_BLESS=1 cargo test --test golden_scenarios) and review the diff.\n--- got ---\n{text}",
        path.display()
    );
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
