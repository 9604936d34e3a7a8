//! The whole engine on two workers, fed through its real input.

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
