//! The `DeviceState` operator, run by timely and captured, against a plain
//! reference: the same [`DeviceTable`] fed the same readings one at a time
//! in event-time order, no timely, no reorder buffer.
//!
//! Readings come from the simulator's `demo` scenario (floods, rain, a
//! traffic jam, an outage, a watch-listed plate) with every rule of
//! `deploy/rules.toml` on. The operator gets them shuffled within the
//! allowed out-of-orderness, with duplicates (of any of a device's last
//! readings) mixed in, and the frontier following the watermark in batches:
//! its alerts and window results must be exactly the reference's. With
//! readings that arrive behind the watermark (late, within the lateness
//! horizon), every window's final value must still be the reference's;
//! rules do not rewind for late readings, by design, so alerts may differ.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ioc_devices::{Registry, Scenario, Simulator};
use ioc_schemas::{EngineOutput, Timestamp, WindowValue};
use proptest::prelude::*;
use timely::dataflow::operators::capture::{Capture, Event};
use timely::dataflow::operators::{Input, Probe};

use crate::dataflow::DeviceStateOp;
use crate::device_state::{DeviceTable, TableConfig};
use crate::reading::Reading;
use crate::rules::RuleSet;
use crate::watermark::Watermark;
use crate::{EngineStats, RulesCell, Shared};

/// 2026-01-01T00:00Z.
const T0: i64 = 1_767_225_600_000;
const OOO_MS: i64 = 10_000;

fn demo_rules(registry: &Registry) -> Arc<RuleSet> {
    let text = include_str!("../../deploy/rules.toml");
    let read = |name: &str| match name {
        "watchlist.txt" => Ok((include_str!("../../deploy/watchlist.txt").to_owned(), None)),
        other => Err(format!("unknown file {other}")),
    };
    Arc::new(RuleSet::parse(text, registry, &read).unwrap())
}

/// `minutes` of the demo scenario, one reading every 100 ms of event time.
fn readings(registry: &Arc<Registry>, seed: u64, minutes: i64) -> Vec<Reading> {
    let mut sim = Simulator::new(registry.clone(), Scenario::Demo, seed, Timestamp(T0));
    (0..minutes * 600)
        .filter_map(|k| {
            let now = Timestamp(T0 + k * 100);
            let envelope = sim.next_reading(now)?;
            Some(Reading {
                device: registry.lookup(&envelope.device)?,
                received: now,
                envelope,
            })
        })
        .collect()
}

/// What the comparison looks at: alerts and window results, as JSON.
fn judged(out: &EngineOutput) -> Option<String> {
    match out {
        EngineOutput::Alert(_) | EngineOutput::Window(_) => Some(format!("{out:?}")),
        EngineOutput::Geofence(_) | EngineOutput::Track(_) => Some(format!("{out:?}")),
        EngineOutput::Device(_) | EngineOutput::Presence(_) => None,
    }
}

/// The reference: readings in event-time order, one at a time; the
/// frontier is each reading's event time, then `end`.
fn reference(
    registry: &Arc<Registry>,
    rules: &Arc<RuleSet>,
    sorted: &[Reading],
    end: &[i64],
) -> Vec<EngineOutput> {
    reference_with(registry, rules, sorted, end, TableConfig::default())
}

/// [`reference`] with these table settings.
fn reference_with(
    registry: &Arc<Registry>,
    rules: &Arc<RuleSet>,
    sorted: &[Reading],
    end: &[i64],
    config: TableConfig,
) -> Vec<EngineOutput> {
    let mut table = DeviceTable::new(registry.clone(), rules.clone(), config, 0, 1);
    let mut out = Vec::new();
    table.advance(T0, &mut out);
    for r in sorted {
        let (_, sample) = table.arrive(r, &mut out);
        if let Some(s) = sample {
            table.release(&[s], &mut out);
        }
        table.advance(r.envelope.ts.millis(), &mut out);
    }
    for &t in end {
        table.advance(t, &mut out);
    }
    out
}

/// The operator under timely: `arrivals` in order, in batches of `batch`;
/// after each batch the frontier moves to the watermark (newest event time
/// minus the out-of-orderness), then to each of `end`.
fn operator(
    registry: &Arc<Registry>,
    rules: &Arc<RuleSet>,
    arrivals: &[Reading],
    batch: usize,
    end: &[i64],
) -> Vec<EngineOutput> {
    run_operators(registry, rules, arrivals, batch, end, Stage::Device, true).0
}

/// Which operator's outputs [`run_operators`] captures.
#[derive(Clone, Copy, PartialEq)]
enum Stage {
    /// The device-state operator's.
    Device,
    /// The geo operator's after it (with the demo zones).
    Geo,
}

/// [`operator`], deciding at each in-order reading or (`immediate` false)
/// only at the watermark, capturing `stage`'s outputs; also the counters.
fn run_operators(
    registry: &Arc<Registry>,
    rules: &Arc<RuleSet>,
    arrivals: &[Reading],
    batch: usize,
    end: &[i64],
    stage: Stage,
    immediate: bool,
) -> (Vec<EngineOutput>, Arc<EngineStats>) {
    let registry = registry.clone();
    let rules = rules.clone();
    let arrivals = arrivals.to_vec();
    let end = end.to_vec();
    let stats = Arc::new(EngineStats::default());
    let counters = stats.clone();
    let outputs = timely::execute_directly(move |worker| {
        let zones = match stage {
            Stage::Device => Arc::default(),
            Stage::Geo => Arc::new(crate::ZonesCell::new(Arc::new(
                ioc_devices::Zones::from_geojson(ioc_devices::catalogue::SONLA_ZONES).unwrap(),
            ))),
        };
        let config = TableConfig {
            immediate,
            ..TableConfig::default()
        };
        let shared = Arc::new(Shared {
            rxs: Vec::new(),
            registry: Arc::new(ioc_devices::RegistryCell::new(registry.clone())),
            rules: Arc::new(RulesCell::new(rules.clone())),
            zones,
            table: config,
            watermark: Watermark::new(OOO_MS, i64::MAX / 4, Timestamp(T0)),
            lateness_ms: 3_600_000,
            threads: Vec::new(),
            stats: counters.clone(),
            control: crate::durable::Control::default(),
            durable: None,
            restore: Vec::new(),
            outputs_sent: AtomicU64::new(0),
            inputs_closed: std::sync::atomic::AtomicUsize::new(0),
            base: 0,
            peers: 1,
            remote_outputs: None,
            fronts: Vec::new(),
        });
        let table = DeviceTable::new(registry.clone(), rules.clone(), config, 0, 1);
        let (mut input, probe, captured) = worker.dataflow::<u64, _, _>(|scope| {
            use crate::dataflow::GeoOp;
            let (input, stream) = scope.new_input::<Vec<crate::dataflow::Item<Reading>>>();
            let (outputs, geo) = stream.device_state(table, shared.clone());
            let captured = match stage {
                Stage::Device => outputs,
                Stage::Geo => geo.geo(shared.clone()),
            };
            let (probe, out) = captured.probe();
            (input, probe, out.capture())
        });
        input.advance_to(T0 as u64);
        let mut newest = T0;
        for chunk in arrivals.chunks(batch) {
            for r in chunk {
                newest = newest.max(r.envelope.ts.millis());
                input.send(crate::dataflow::Item::Data(r.clone()));
            }
            let watermark = (newest - OOO_MS) as u64;
            if watermark > *input.time() {
                input.advance_to(watermark);
            }
            worker.step_while(|| probe.less_than(input.time()));
        }
        for &t in &end {
            input.advance_to(t as u64);
            worker.step_while(|| probe.less_than(input.time()));
        }
        drop(input);
        worker.step_while(|| !probe.done());
        assert_eq!(
            shared.stats.processed.load(Ordering::Relaxed),
            arrivals.len() as u64
        );
        captured
            .try_iter()
            .flat_map(|e| match e {
                Event::Messages(_, data) => data
                    .into_iter()
                    .filter_map(|i| match i {
                        crate::dataflow::Item::Data(o) => Some(o),
                        crate::dataflow::Item::Mark { .. } => None,
                    })
                    .collect(),
                Event::Progress(_) => Vec::new(),
            })
            .collect::<Vec<_>>()
    });
    (outputs, stats)
}

/// Per rule and subject, the episodes: for each, the levels it went
/// through and whether it was resolved.
type Episodes = BTreeMap<(String, String), Vec<(Vec<u8>, bool)>>;

/// The [`Episodes`] of the alerts of `rules` among `outputs`.
fn episodes(outputs: &[EngineOutput], rules: &[&str]) -> Episodes {
    let mut alerts: Vec<&ioc_schemas::Alert> = outputs
        .iter()
        .filter_map(|o| match o {
            EngineOutput::Alert(a) if rules.contains(&a.rule.as_str()) => Some(&**a),
            _ => None,
        })
        .collect();
    alerts.sort_by_key(|a| (a.opened_at, a.version));
    let mut out = Episodes::new();
    for a in alerts {
        let list = out.entry((a.rule.clone(), a.subject.clone())).or_default();
        if a.version == 1 {
            list.push((Vec::new(), false));
        }
        if let Some((levels, resolved)) = list.last_mut() {
            if a.level == 0 {
                *resolved = true;
            } else {
                levels.push(a.level);
            }
        }
    }
    out
}

/// Sorted JSON of the judged outputs.
fn canonical(outputs: &[EngineOutput]) -> Vec<String> {
    let mut v: Vec<String> = outputs.iter().filter_map(judged).collect();
    v.sort();
    v
}

/// The last value each window took: per device and window length, and
/// for tumbling traffic windows per start as well.
fn final_windows(outputs: &[EngineOutput]) -> BTreeMap<(String, i64, i64), String> {
    let mut last = BTreeMap::new();
    for o in outputs {
        if let EngineOutput::Window(w) = o {
            let len = w.end.millis() - w.start.millis();
            let start = match w.value {
                WindowValue::Traffic { .. } => w.start.millis(),
                _ => 0,
            };
            last.insert((w.device.to_string(), len, start), format!("{:?}", w.value));
        }
    }
    last
}

/// A deterministic shuffle: each reading moves by less than `within_ms`
/// of event time, and some readings (`dup_every`) come again later.
fn disorder(sorted: &[Reading], seed: u64, within_ms: i64, dup_every: usize) -> Vec<Reading> {
    let mut rng = seed | 1;
    let mut next = move || {
        // xorshift64
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut keyed: Vec<(i64, usize, Reading)> = Vec::new();
    for (i, r) in sorted.iter().enumerate() {
        let ts = r.envelope.ts.millis();
        let delay = (next() % within_ms.max(1) as u64) as i64;
        keyed.push((ts + delay, i, r.clone()));
        if dup_every > 0 && next() % dup_every as u64 == 0 {
            let again = (next() % (3 * within_ms.max(1)) as u64) as i64;
            keyed.push((ts + delay + again, i, r.clone()));
        }
    }
    keyed.sort_by_key(|(arrival, i, _)| (*arrival, *i));
    keyed.into_iter().map(|(_, _, r)| r).collect()
}

type Case = (
    Vec<EngineOutput>,
    Vec<Reading>,
    Vec<i64>,
    Arc<Registry>,
    Arc<RuleSet>,
);

/// The reference's outputs for `minutes` of the scenario with this seed,
/// the readings in order, the final frontiers, the registry and rules.
fn run_case(seed: u64, minutes: i64) -> Case {
    let registry = Registry::sonla_demo();
    let rules = demo_rules(&registry);
    let sorted = readings(&registry, seed, minutes);
    let last = T0 + minutes * 60_000;
    // Past every window and a last staleness scan at the same instant in both.
    let end = vec![last + OOO_MS + 1, last + OOO_MS + 61_000];
    let expected = reference(&registry, &rules, &sorted, &end);
    (expected, sorted, end, registry, rules)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Out of order within the watermark's allowance, duplicated, in
    /// batches of any size: exactly the reference's alerts and windows.
    #[test]
    fn shuffled_and_duplicated_input_gives_the_sorted_result(
        seed in any::<u64>(),
        batch in 1usize..3000,
    ) {
        let (expected, sorted, end, registry, rules) = run_case(seed % 1000, 25);
        let arrivals = disorder(&sorted, seed, OOO_MS / 2, 7);
        prop_assert!(arrivals.len() > sorted.len());
        let got = operator(&registry, &rules, &arrivals, batch, &end);
        let (want, got) = (canonical(&expected), canonical(&got));
        prop_assert!(expected.iter().any(|o| matches!(o, EngineOutput::Alert(_))), "no alert to compare");
        let missing: Vec<_> = want.iter().filter(|o| !got.contains(o)).take(3).collect();
        let extra: Vec<_> = got.iter().filter(|o| !want.contains(o)).take(3).collect();
        prop_assert!(want == got, "{} outputs expected, {} got; missing {missing:#?}; extra {extra:#?}", want.len(), got.len());
    }

    /// Readings up to ten minutes behind the watermark amend their windows:
    /// every window ends at the reference's value.
    #[test]
    fn late_input_ends_with_the_sorted_windows(
        seed in any::<u64>(),
        batch in 1usize..3000,
    ) {
        let (expected, sorted, end, registry, rules) = run_case(seed % 1000, 25);
        let arrivals = disorder(&sorted, seed, 10 * 60_000, 5);
        let got = operator(&registry, &rules, &arrivals, batch, &end);
        let (want, got) = (final_windows(&expected), final_windows(&got));
        let differ: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(*v))
            .take(3)
            .map(|(k, v)| format!("{k:?}: want {v}, got {:?}", got.get(k)))
            .collect();
        prop_assert!(differ.is_empty() && want.len() == got.len(), "{} windows, {} differ; first: {differ:#?}", want.len(), differ.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    /// Per-device progress against the watermark-only engine (the oracle):
    /// shuffled, duplicated input decided at each in-order reading gives
    /// exactly the oracle's windows and its alerts of every rule but
    /// rainfall (same transitions, same ids: a decision moved to the
    /// reading behind it, which the oracle also names); rainfall episodes
    /// are the oracle's, each opened no later, and the levels each went
    /// through include the oracle's (a total that passed two levels within
    /// one bucket is raised through both as it passed them).
    #[test]
    fn deciding_at_each_reading_matches_the_watermark_oracle(
        seed in any::<u64>(),
        batch in 1usize..3000,
    ) {
        let registry = Registry::sonla_demo();
        let rules = demo_rules(&registry);
        let sorted = readings(&registry, seed % 1000, 25);
        let last = T0 + 25 * 60_000;
        let end = vec![last + OOO_MS + 1, last + OOO_MS + 61_000];
        let oracle = reference_with(
            &registry,
            &rules,
            &sorted,
            &end,
            TableConfig { immediate: false, ..TableConfig::default() },
        );
        let arrivals = disorder(&sorted, seed, OOO_MS / 2, 7);
        let (got, stats) = run_operators(&registry, &rules, &arrivals, batch, &end, Stage::Device, true);
        prop_assert!(stats.in_order.load(Ordering::Relaxed) > 0, "no reading was decided at once");
        let rainfall: Vec<&str> = rules
            .rules
            .iter()
            .filter(|r| r.logic.kind() == "rainfall")
            .map(|r| &*r.id)
            .collect();
        let not_rain = |o: &EngineOutput| !matches!(o, EngineOutput::Alert(a) if rainfall.contains(&a.rule.as_str()));
        let want = canonical(&oracle.iter().filter(|o| not_rain(o)).cloned().collect::<Vec<_>>());
        let have = canonical(&got.iter().filter(|o| not_rain(o)).cloned().collect::<Vec<_>>());
        let missing: Vec<_> = want.iter().filter(|o| !have.contains(o)).take(3).collect();
        let extra: Vec<_> = have.iter().filter(|o| !want.contains(o)).take(3).collect();
        prop_assert!(want == have, "seed {seed}: {} outputs expected, {} got; missing {missing:#?}; extra {extra:#?}", want.len(), have.len());
        let (want, have) = (episodes(&oracle, &rainfall), episodes(&got, &rainfall));
        prop_assert!(want.values().any(|e| !e.is_empty()), "no rainfall alert to compare");
        prop_assert_eq!(want.len(), have.len(), "seed {}: rainfall subjects differ", seed);
        for (key, episodes) in &want {
            let other = &have[key];
            prop_assert_eq!(episodes.len(), other.len(), "seed {}: {:?}: {:?} against {:?}", seed, key, episodes, other);
            for ((levels, resolved), (got_levels, got_resolved)) in episodes.iter().zip(other) {
                prop_assert_eq!(resolved, got_resolved, "seed {}: {:?}", seed, key);
                prop_assert!(
                    levels.iter().all(|l| got_levels.contains(l)) && levels.last() == got_levels.last(),
                    "seed {}: {:?}: levels {:?} against {:?}", seed, key, levels, got_levels
                );
            }
        }
        // Each rainfall episode opened no later than the oracle's.
        let opened = |outs: &[EngineOutput]| -> Vec<(String, String, i64)> {
            let mut v: Vec<_> = outs.iter().filter_map(|o| match o {
                EngineOutput::Alert(a) if a.version == 1 && rainfall.contains(&a.rule.as_str()) => Some((a.rule.clone(), a.subject.clone(), a.opened_at.millis())),
                _ => None,
            }).collect();
            v.sort();
            v
        };
        for (w, h) in opened(&oracle).iter().zip(opened(&got)) {
            prop_assert!(h.2 <= w.2, "seed {}: {:?} opened at {} after the oracle's {}", seed, h, h.2, w.2);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    /// A river gauge carried into the Sơn La dam's perimeter for ten
    /// minutes, among the demo scenario's plates, shuffled and in batches:
    /// its positions, geofenced at once when they follow its previous
    /// reading, give exactly the geofence events and alerts (its own and
    /// every plate's) of the watermark-only engine on the same input.
    #[test]
    fn positions_geofenced_at_once_match_the_watermark_oracle(
        seed in any::<u64>(),
        batch in 1usize..400,
    ) {
        let registry = Registry::sonla_demo();
        let rules = demo_rules(&registry);
        let mut sorted = readings(&registry, seed % 1000, 20);
        for r in sorted.iter_mut().filter(|r| r.envelope.device == "river-to-hieu") {
            let minute = (r.envelope.ts.millis() - T0) / 60_000;
            if (5..15).contains(&minute) {
                r.envelope.pos = Some([104.045, 21.495]);
            } else {
                r.envelope.pos = Some([103.91, 21.33]);
            }
        }
        let last = T0 + 20 * 60_000;
        let end = vec![last + OOO_MS + 1, last + OOO_MS + 61_000];
        let arrivals = disorder(&sorted, seed, OOO_MS / 2, 7);
        let (oracle, _) = run_operators(&registry, &rules, &arrivals, batch, &end, Stage::Geo, false);
        let (got, stats) = run_operators(&registry, &rules, &arrivals, batch, &end, Stage::Geo, true);
        let gauge = |outs: &[EngineOutput]| -> Vec<String> {
            let mut v: Vec<String> = outs
                .iter()
                .filter(|o| match o {
                    EngineOutput::Geofence(g) => g.subject == "river-to-hieu",
                    EngineOutput::Alert(a) => a.subject == "river-to-hieu",
                    _ => false,
                })
                .map(|o| format!("{o:?}"))
                .collect();
            v.sort();
            v
        };
        prop_assert!(!gauge(&oracle).is_empty(), "the gauge never entered the dam's perimeter");
        prop_assert!(stats.positions_at_once.load(Ordering::Relaxed) > 0, "no position was applied at once");
        // Zone rainfall rises with running totals by design (its own test in
        // tests/golden_scenarios.rs): everything else is the oracle's.
        let zone_rules: Vec<&str> = rules
            .rules
            .iter()
            .filter(|r| r.logic.kind() == "zone_rainfall")
            .map(|r| &*r.id)
            .collect();
        let not_zone = |outs: &[EngineOutput]| -> Vec<EngineOutput> {
            outs.iter()
                .filter(|o| !matches!(o, EngineOutput::Alert(a) if zone_rules.contains(&a.rule.as_str())))
                .cloned()
                .collect()
        };
        prop_assert_eq!(canonical(&not_zone(&got)), canonical(&not_zone(&oracle)));
    }
}
