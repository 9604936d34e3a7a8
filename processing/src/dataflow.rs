//! The timely dataflow: input at event time, exchange by device, state,
//! reorder buffer, windows, rules, output.
//!
//! ```text
//!  flume channel ──► unordered input (time = max(event time to the second, watermark))
//!                     │ Exchange by device index
//!                     ▼
//!                   DeviceState operator
//!                     ├─ at arrival: latest state, camera counts, watch list,
//!                     │  positions and plate reads for the geo operator
//!                     ├─ in order for its device (next seq): windows, rules,
//!                     │  with its input batch
//!                     ├─ otherwise reorder buffer (by event time) until the
//!                     │  frontier passes, then windows, rules in event-time order
//!                     └─ as the frontier moves: closed windows, staleness;
//!                        rainfall totals (closed, and running ones that pass a
//!                        level) for zone rules
//!          ┌──────────┴──────────────┐ (two outputs)
//!          │ outputs                 │ geo items: Exchange by subject or zone
//!          │                         ▼
//!          │                       Geo operator (held until the frontier
//!          │                       passes, applied in event-time order; a
//!          │                       device's own in-order position at once):
//!          │                       geofences, tracks, zone rules
//!          ▼                         ▼
//!        output sinks (alerts enriched with zones and nearest assets)
//!                     ──► flume channel of EngineOutput batches
//! ```
//!
//! Each worker pulls readings from its own input channel (the readings of
//! the devices it owns, in arrival order), sends each at its event time
//! rounded down to the second (or at the watermark when that is later; a
//! timestamp per millisecond would make progress tracking cost per reading)
//! and holds its input capability at
//! the shared watermark, so the frontier is the watermark. The state
//! operator keeps a capability at the frontier so that it can emit window
//! results and staleness alerts when time passes without input.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use flume::TryRecvError;
use ioc_devices::{Registry, Zones};
use ioc_schemas::{Body, EngineOutput, Timestamp, WindowValue};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::UnorderedInput;
use timely::dataflow::{ProbeHandle, StreamVec};
use timely::worker::Worker;

use crate::device_state::{DeviceTable, Outcome, RunningRain};
use crate::durable::PARTITIONS;
use crate::geo::{GeoItem, GeoState, enrich, plate_subject_id, wants_positions};
use crate::reading::{Blob, Reading};
use crate::reorder::ReorderBuffer;
use crate::rules::RuleSet;
use crate::rules::kind::{DeviceCx, GaugeTotal, ZoneTotal};
use crate::sample::Sample;
use crate::windows::RAIN_WINDOWS_MS;
use crate::{Shared, ZonesCell};

/// What flows on the dataflow's edges: data, or a checkpoint's mark for
/// the operator on worker `to` (see `crate::durable`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Item<T> {
    /// A reading or a geo item.
    Data(T),
    /// The mark of checkpoint `epoch`, for worker `to`.
    Mark {
        /// The checkpoint.
        epoch: u64,
        /// The worker it is for.
        to: u32,
    },
}

/// Most readings a worker takes from the channel before stepping the dataflow.
const BATCH: usize = 4096;
/// Resolution of timely timestamps, ms. A reading enters the dataflow at
/// its event time rounded down to the tick (or at the watermark when that
/// is later): progress tracking then costs per tick, not per reading,
/// while the reorder buffer still orders samples by their exact event time.
const TICK_MS: u64 = 1000;
/// How long an idle worker sleeps before re-checking the watermark.
const IDLE_PARK: Duration = Duration::from_millis(100);

/// The geo item of a reading: a plate read (the plate is the subject) or a
/// reading with a position (the device is; `next` when the reading directly
/// follows the device's previous one).
/// Puts a changed registry, then rules compiled for it, in force in a
/// worker's device table; the new rules, if they changed.
fn catch_up(
    shared: &Shared,
    table: &mut DeviceTable,
    (registry_seen, rules_seen): (&mut u64, &mut u64),
    out: &mut Vec<EngineOutput>,
) -> Option<Arc<RuleSet>> {
    if let Some(new) = shared.registry.changed_since(registry_seen) {
        table.set_registry(new, out);
    }
    let new = shared.rules.changed_since(rules_seen)?;
    table.set_rules(new.clone(), out);
    Some(new)
}

fn position_item(reading: &Reading, registry: &Registry, next: bool) -> Option<GeoItem> {
    let e = &reading.envelope;
    let source = registry.shared_id(reading.device).clone();
    let ts = e.ts.millis();
    match &e.body {
        Body::Camera(c) => {
            let plate = c.plate.as_deref()?;
            Some(GeoItem::Position {
                subject: plate_subject_id(plate),
                pos: e.pos.unwrap_or(registry.device(reading.device).pos),
                source,
                plate: true,
                // A plate is read by many cameras: no one sequence.
                next: false,
                ts,
            })
        }
        _ => Some(GeoItem::Position {
            subject: source.clone(),
            pos: e.pos?,
            source,
            plate: false,
            next,
            ts,
        }),
    }
}

/// The rainfall totals that rules take into zones (`zone_rainfall`), one
/// item per rule and zone around the gauge: those of windows that closed
/// (among `out`) and the running ones of readings.
fn rain_items(
    out: &[EngineOutput],
    running: &[RunningRain],
    bucket_ms: i64,
    rules: &RuleSet,
    cell: &ZonesCell,
    registry: &Registry,
    geo: &mut Vec<GeoItem>,
) {
    let zone_rules: Vec<&crate::rules::Rule> = rules
        .rules
        .iter()
        .filter(|r| r.logic.feeds_zones())
        .collect();
    let mut totals = Vec::new();
    // The zones in force, taken at the first rainfall total only.
    let mut zones: Option<Arc<Zones>> = None;
    let mut send = |index, total: &GaugeTotal<'_>, totals: &mut Vec<ZoneTotal>| {
        let zones = zones.get_or_insert_with(|| cell.current());
        let cx = DeviceCx {
            rules,
            registry,
            index,
            device: registry.device(index),
        };
        for rule in &zone_rules {
            rule.logic.zone_totals(rule, &cx, total, zones, totals);
        }
    };
    for o in out {
        let EngineOutput::Window(w) = o else { continue };
        let WindowValue::Rainfall { total_mm, .. } = w.value else {
            continue;
        };
        let Some(index) = registry.lookup(&w.device) else {
            continue;
        };
        let end_ms = w.end.millis();
        let total = GaugeTotal {
            gauge: &w.device,
            window_ms: end_ms - w.start.millis(),
            end_ms,
            at_ms: end_ms,
            total_mm,
            before_mm: total_mm,
            running: false,
        };
        send(index, &total, &mut totals);
    }
    for r in running {
        let end_ms = (r.ts.div_euclid(bucket_ms) + 1) * bucket_ms;
        for (&window_ms, total_mm) in RAIN_WINDOWS_MS.iter().zip(r.totals) {
            let total = GaugeTotal {
                gauge: registry.shared_id(r.gauge),
                window_ms,
                end_ms,
                at_ms: r.ts,
                total_mm,
                before_mm: total_mm - r.added_mm,
                running: true,
            };
            send(r.gauge, &total, &mut totals);
        }
    }
    geo.extend(totals.drain(..).map(GeoItem::from));
}

/// Keeps per-device state, windows and rules.
pub trait DeviceStateOp<'scope> {
    /// Exchanges readings by device and applies them to the owning worker's
    /// [`DeviceTable`].
    /// Returns the outputs, and the work for the geo operator.
    fn device_state(
        self,
        table: DeviceTable,
        shared: Arc<Shared>,
    ) -> (
        StreamVec<'scope, u64, Item<EngineOutput>>,
        StreamVec<'scope, u64, Item<GeoItem>>,
    );
}

impl<'scope> DeviceStateOp<'scope> for StreamVec<'scope, u64, Item<Reading>> {
    fn device_state(
        self,
        mut table: DeviceTable,
        shared: Arc<Shared>,
    ) -> (
        StreamVec<'scope, u64, Item<EngineOutput>>,
        StreamVec<'scope, u64, Item<GeoItem>>,
    ) {
        // Two outputs, so that outputs go to the sink as they are (no copy
        // through a partition) and geo items to the geo operator.
        let (worker, peers) = (self.scope().index(), self.scope().peers());
        let durable = shared.durable.is_some();
        let mut builder = OperatorBuilder::new("DeviceState".to_owned(), self.scope());
        let mut input = builder.new_input(
            self,
            Exchange::new(move |i: &Item<Reading>| match i {
                Item::Data(r) => u64::from(crate::durable::partition_of(&r.envelope.device)),
                Item::Mark { to, .. } => u64::from(*to),
            }),
        );
        let (main_out, main_stream) = builder.new_output::<Vec<Item<EngineOutput>>>();
        let (geo_out, geo_stream) = builder.new_output::<Vec<Item<GeoItem>>>();
        let mut main_out = OutputBuilder::from(main_out);
        let mut geo_out = OutputBuilder::from(geo_out);
        builder.build(
            move |capabilities| {
                // One capability per output, held at the frontier.
                let mut timer = Some(capabilities);
                let mut pending = ReorderBuffer::default();
                let mut released: Vec<Sample> = Vec::new();
                let mut out = Vec::new();
                let mut geo: Vec<GeoItem> = Vec::new();
                let mut rules_seen = 0u64;
                // The table took its registry when it was made, which may
                // be a replacement or more before this operator is built:
                // the first activation puts the one in force in place.
                let mut registry_seen = u64::MAX;
                let mut late_seen = 0u64;
                let mut size_seen = 0u64;
                let mut rules = shared.rules.current();
                let mut positions = wants_positions(&rules);
                let mut zone_rules = rules.rules.iter().any(|r| r.logic.feeds_zones());
                if let Some(r) = shared.restore_for(worker - shared.base) {
                    let (restored, skipped) = table.restore(r.table, r.devices, &mut pending);
                    tracing::debug!(worker, restored, skipped, "device state restored");
                }
                // The checkpoint this operator took its part of and waits
                // to complete: nothing moves meanwhile.
                let mut frozen: Option<u64> = None;
                let mut marked: Option<u64> = None;
                move |frontiers| {
                    let mut output = main_out.activate();
                    let mut geo_output = geo_out.activate();
                    if let Some(epoch) = frozen {
                        if shared.control.taken.load(Ordering::Acquire) < epoch {
                            return;
                        }
                        frozen = None;
                    }
                    // The registry before the rules: rules compiled for a
                    // new registry are put in force first.
                    let seen = (&mut registry_seen, &mut rules_seen);
                    if let Some(new) = catch_up(&shared, &mut table, seen, &mut out) {
                        positions = wants_positions(&new);
                        zone_rules = new.rules.iter().any(|r| r.logic.feeds_zones());
                        rules = new;
                    }
                    table.rejudge(&mut out);
                    let mut registry = table.registry().clone();
                    let mut in_order = 0u64;
                    input.for_each(|cap, data| {
                        for item in data.iter() {
                            let reading = match item {
                                Item::Data(r) => r,
                                Item::Mark { epoch, .. } => {
                                    marked = Some(*epoch);
                                    continue;
                                }
                            };
                            if reading.device as usize >= registry.devices().len() {
                                // A device added after this activation
                                // looked at the registry: its reading was
                                // decoded against the newer one.
                                let seen = (&mut registry_seen, &mut rules_seen);
                                if let Some(new) = catch_up(&shared, &mut table, seen, &mut out) {
                                    positions = wants_positions(&new);
                                    zone_rules = new.rules.iter().any(|r| r.logic.feeds_zones());
                                    rules = new;
                                }
                                registry = table.registry().clone();
                                if reading.device as usize >= registry.devices().len() {
                                    tracing::warn!(
                                        device = reading.device,
                                        "a reading of a device the registry does not have; dropped"
                                    );
                                    continue;
                                }
                            }
                            let (outcome, sample) = table.arrive(reading, &mut out);
                            match outcome {
                                Outcome::Applied | Outcome::Next => {
                                    in_order += u64::from(outcome == Outcome::Next);
                                    if positions {
                                        let next = outcome == Outcome::Next;
                                        geo.extend(position_item(reading, &registry, next));
                                    }
                                }
                                Outcome::Duplicate => {
                                    shared.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                                    metrics::counter!("ioc_events_rejected_total", "reason" => "duplicate").increment(1);
                                }
                                Outcome::OutOfOrder => {
                                    shared.stats.out_of_order.fetch_add(1, Ordering::Relaxed);
                                    metrics::counter!("ioc_events_out_of_order_total").increment(1);
                                }
                            }
                            if let Some(s) = sample {
                                // Released once the frontier passes its event
                                // time (at once when late).
                                pending.push(s);
                            }
                        }
                        // In-order readings: their rules now, with the batch.
                        table.apply_ready(&mut out);
                        shared.stats.processed.fetch_add(data.len() as u64, Ordering::Relaxed);
                        // Counted per batch: the counters are shared by every worker.
                        shared.stats.in_order.fetch_add(std::mem::take(&mut in_order), Ordering::Relaxed);
                        if !out.is_empty() {
                            output.session(&cap).give_iterator(out.drain(..).map(Item::Data));
                        }
                        if !geo.is_empty() {
                            geo_output.session(&cap).give_iterator(geo.drain(..).map(Item::Data));
                        }
                    });
                    // The frontier is the watermark: everything before it is final.
                    let now = frontiers[0].frontier().iter().min().copied();
                    // The inputs closed: in memory, what waits for the
                    // watermark is applied now; with durable state it stays
                    // waiting in the last checkpoint, and the next start
                    // applies it in its event-time order.
                    let limit = now.unwrap_or(if durable { 0 } else { u64::MAX });
                    pending.release(limit.min(i64::MAX as u64) as i64, &mut released);
                    if !released.is_empty() {
                        table.release(&released, &mut out);
                        released.clear();
                        if table.late_for_rules > late_seen {
                            metrics::counter!("ioc_events_late_for_rules_total").increment(table.late_for_rules - late_seen);
                            late_seen = table.late_for_rules;
                        }
                    }
                    if let Some(now) = now {
                        table.advance(now as i64, &mut out);
                    }
                    let size = (table.size.bytes
                        + pending.len() * std::mem::size_of::<Sample>()) as u64;
                    if size != size_seen && table.size.bytes > 0 {
                        let stats = &shared.stats;
                        if size > size_seen {
                            stats.state_bytes.fetch_add(size - size_seen, Ordering::Relaxed);
                        } else {
                            stats.state_bytes.fetch_sub(size_seen - size, Ordering::Relaxed);
                        }
                        stats.largest_device_bytes.fetch_max(table.size.largest as u64, Ordering::Relaxed);
                        metrics::gauge!("ioc_engine_state_bytes").set(stats.state_bytes.load(Ordering::Relaxed) as f64);
                        size_seen = size;
                    }
                    let running = table.take_running_rain();
                    if zone_rules && (!out.is_empty() || !running.is_empty()) {
                        let bucket = table.rain_bucket_ms();
                        rain_items(&out, &running, bucket, &rules, &shared.zones, &registry, &mut geo);
                    }
                    if let Some(caps) = timer.as_mut() {
                        if !out.is_empty() {
                            output.session(&caps[0]).give_iterator(out.drain(..).map(Item::Data));
                        }
                        if !geo.is_empty() {
                            geo_output.session(&caps[1]).give_iterator(geo.drain(..).map(Item::Data));
                        }
                        // A mark: this worker's readings before it are all
                        // taken and their effects sent on. The part, then
                        // the marks to every geo operator; then wait.
                        if let Some(epoch) = marked.take() {
                            let part = crate::durable::coordinator::device_part(&table, &mut pending, worker);
                            shared.hand_part(epoch, part);
                            let mut session = geo_output.session(&caps[1]);
                            for to in 0..peers as u32 {
                                session.give(Item::Mark { epoch, to });
                            }
                            // Behind this part's outputs, to the sink.
                            output.session(&caps[0]).give(Item::Mark { epoch, to: worker as u32 });
                            frozen = Some(epoch);
                            return;
                        }
                        match now {
                            Some(now) => {
                                for c in caps.iter_mut() {
                                    if now > *c.time() {
                                        c.downgrade(&now);
                                    }
                                }
                            }
                            None => timer = None,
                        }
                    }
                }
            },
        );
        (main_stream, geo_stream)
    }
}

/// Geofences, tracks and zone rules.
pub trait GeoOp<'scope> {
    /// Exchanges geo items by subject or zone and applies them to the
    /// owning worker's [`GeoState`] once the frontier passes their event time.
    fn geo(self, shared: Arc<Shared>) -> StreamVec<'scope, u64, Item<EngineOutput>>;
}

impl<'scope> GeoOp<'scope> for StreamVec<'scope, u64, Item<GeoItem>> {
    fn geo(self, shared: Arc<Shared>) -> StreamVec<'scope, u64, Item<EngineOutput>> {
        let key = |i: &Item<GeoItem>| match i {
            Item::Data(g) => g.key() % u64::from(PARTITIONS),
            Item::Mark { to, .. } => u64::from(*to),
        };
        let peers = self.scope().peers();
        let worker = self.scope().index();
        let durable = shared.durable.is_some();
        self.unary_frontier(Exchange::new(key), "Geo", move |capability, _| {
            let mut timer = Some(capability);
            // The generation before the value: a replacement in between is
            // picked up (again) at the first activation.
            let mut registry_seen = shared.registry.generation();
            let mut state = GeoState::new(shared.registry.current());
            // Items until the frontier passes their event time, kept in
            // `apply`'s order (event time, subject, source).
            let mut pending: ReorderBuffer<GeoItem> = ReorderBuffer::default();
            if let Some(r) = shared.restore_geo_for(worker - shared.base) {
                let restored = state.restore(r.0, r.1, &mut pending);
                tracing::debug!(worker, restored, "geo state restored");
            }
            // Marks received, per checkpoint.
            let mut marks: Vec<(u64, usize)> = Vec::new();
            // Devices' positions waiting in `pending`, by subject: a device's
            // next position is applied at once only when none is.
            // Device ids from the field, hashed per position: foldhash, as
            // the geo state's own maps.
            let mut waiting: HashMap<Arc<str>, u32, foldhash::fast::RandomState> =
                HashMap::default();
            let immediate = shared.table.immediate;
            let mut ready = Vec::new();
            let mut out = Vec::new();
            // Devices' positions waiting, rebuilt from what was restored.
            for g in pending.items() {
                if let GeoItem::Position {
                    subject,
                    plate: false,
                    ..
                } = g
                {
                    *waiting.entry(subject.clone()).or_default() += 1;
                }
            }
            move |(input, frontier), output| {
                if let Some(new) = shared.registry.changed_since(&mut registry_seen) {
                    state.set_registry(new);
                }
                let rules = shared.rules.current();
                let zones = shared.zones.current();
                let mut complete = None;
                input.for_each(|_, data| {
                    for g in data.drain(..) {
                        let g = match g {
                            Item::Data(g) => g,
                            Item::Mark { epoch, .. } => {
                                shared.peer_marked(epoch);
                                match marks.iter_mut().find(|m| m.0 == epoch) {
                                    Some(m) => m.1 += 1,
                                    None => marks.push((epoch, 1)),
                                }
                                continue;
                            }
                        };
                        if let GeoItem::Position {
                            subject,
                            plate: false,
                            next,
                            ..
                        } = &g
                        {
                            if immediate && *next && !waiting.contains_key(subject) {
                                state.apply_now(&g, &rules, &zones, &mut out);
                                shared
                                    .stats
                                    .positions_at_once
                                    .fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            *waiting.entry(subject.clone()).or_default() += 1;
                        }
                        pending.push(g);
                    }
                });
                let now = frontier.frontier().iter().min().copied();
                let limit = now.map_or(if durable { i64::MIN } else { i64::MAX }, |n| {
                    n.min(i64::MAX as u64) as i64
                });
                pending.release(limit, &mut ready);
                for g in &ready {
                    if let GeoItem::Position {
                        subject,
                        plate: false,
                        ..
                    } = g
                        && let Some(n) = waiting.get_mut(subject)
                    {
                        *n -= 1;
                        if *n == 0 {
                            waiting.remove(subject);
                        }
                    }
                }
                if !ready.is_empty() {
                    state.apply(&mut ready, &rules, &zones, &mut out);
                    ready.clear();
                }
                if let Some(now) = now {
                    state.advance(now as i64, &rules, &zones, &mut out);
                }
                // Every device operator's mark is in: nothing after the cut
                // has come (they wait), so this is the geo part.
                if let Some(i) = marks.iter().position(|m| m.1 == peers) {
                    complete = Some(marks.swap_remove(i).0);
                }
                if let Some(epoch) = complete {
                    let part = crate::durable::coordinator::geo_part(&state, &mut pending, worker);
                    shared.hand_part(epoch, part);
                }
                if let Some(t) = timer.as_mut() {
                    if !out.is_empty() || complete.is_some() {
                        let mut session = output.session(t);
                        session.give_iterator(out.drain(..).map(Item::Data));
                        if let Some(epoch) = complete {
                            // Behind the outputs of the cut, to the sink.
                            session.give(Item::Mark {
                                epoch,
                                to: worker as u32,
                            });
                        }
                    }
                    match now {
                        Some(now) if now > *t.time() => t.downgrade(&now),
                        Some(_) => {}
                        None => timer = None,
                    }
                }
            }
        })
    }
}

/// Sends each message of `outputs` as one batch, alerts enriched with their
/// zones and nearest assets.
fn sink<'scope>(
    outputs: StreamVec<'scope, u64, Item<EngineOutput>>,
    shared: &Arc<Shared>,
    output: &flume::Sender<Vec<EngineOutput>>,
    probe: &ProbeHandle<u64>,
) {
    let sink = output.clone();
    let shared = shared.clone();
    outputs
        .probe_with(probe)
        .sink(Pipeline, "Output", move |(input, _frontier)| {
            input.for_each(|_, data| {
                let mut context = None;
                let mut batch = Vec::with_capacity(data.len());
                let mut marked = false;
                for o in data.drain(..) {
                    let mut o = match o {
                        Item::Data(o) => o,
                        Item::Mark { .. } => {
                            marked = true;
                            continue;
                        }
                    };
                    if let EngineOutput::Alert(a) = &mut o {
                        let (rules, zones) = context
                            .get_or_insert_with(|| (shared.rules.current(), shared.zones.current()));
                        enrich(a, rules, zones);
                        metrics::counter!("ioc_alerts_total", "rule" => a.rule.clone(), "status" => a.status.as_str()).increment(1);
                    }
                    if let EngineOutput::Geofence(g) = &o {
                        metrics::counter!("ioc_geofence_events_total", "transition" => g.transition.as_str()).increment(1);
                    }
                    batch.push(o);
                }
                // The whole message as one batch. A closed output means
                // the process is shutting down.
                if !batch.is_empty() {
                    // Counted before it is sent: a checkpoint waits for it.
                    shared.outputs_sent.fetch_add(1, Ordering::Release);
                    let _ = sink.send(batch);
                }
                if marked {
                    // Everything before the cut is in the output channel.
                    shared.hand_flushed();
                }
            });
        });
}

/// In a cluster, sends each message of `outputs` but its alerts to the
/// worker of the same local index in every other front process, where it
/// goes to that process's `remote_outputs`; each process thus shows the whole
/// deployment (alerts reach other processes through the alert store they
/// share). Device states, nearly all of it, travel in the journal's
/// binary form (`durable::codec::encode_state`), the rest as JSON.
fn share<'scope>(
    outputs: &StreamVec<'scope, u64, Item<EngineOutput>>,
    shared: &Arc<Shared>,
    remote: Option<flume::Sender<Vec<EngineOutput>>>,
) {
    let workers = shared.rxs.len();
    let fronts = shared.fronts.clone();
    let local = outputs.scope().index() % workers.max(1);
    outputs
        .clone()
        .unary(Pipeline, "Share", move |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    // No other process shows the whole deployment.
                    if fronts.is_empty() {
                        return;
                    }
                    let (mut states, mut other) = (Vec::new(), Vec::new());
                    for item in data.iter() {
                        match item {
                            Item::Data(EngineOutput::Device(s)) => {
                                crate::durable::codec::encode_state(&mut states, s);
                            }
                            Item::Data(EngineOutput::Alert(_)) | Item::Mark { .. } => {}
                            Item::Data(o) => other.push(o),
                        }
                    }
                    if states.is_empty() && other.is_empty() {
                        return;
                    }
                    let other = if other.is_empty() {
                        Vec::new()
                    } else {
                        serde_json::to_vec(&other).unwrap_or_default()
                    };
                    metrics::counter!("ioc_cluster_shared_bytes_total")
                        .increment(((states.len() + other.len()) * fronts.len()) as u64);
                    let mut session = output.session(&cap);
                    for &p in &fronts {
                        let to = (p * workers + local) as u64;
                        session.give((to, Blob(states.clone()), Blob(other.clone())));
                    }
                });
            }
        })
        .sink(
            Exchange::new(|(to, _, _): &(u64, Blob, Blob)| *to),
            "Remote",
            move |(input, _frontier)| {
                input.for_each(|_, data| {
                    let Some(remote) = &remote else {
                        return;
                    };
                    for (_, states, other) in data.drain(..) {
                        let mut batch: Vec<EngineOutput> =
                            match crate::durable::codec::decode_states(&states.0) {
                                Ok(s) => s.into_iter().map(EngineOutput::Device).collect(),
                                Err(e) => {
                                    tracing::error!(error = %e, "device states from another process do not decode");
                                    Vec::new()
                                }
                            };
                        if !other.0.is_empty() {
                            match serde_json::from_slice::<Vec<EngineOutput>>(&other.0) {
                                Ok(more) => batch.extend(more),
                                Err(e) => {
                                    tracing::error!(error = %e, "outputs from another process do not decode");
                                }
                            }
                        }
                        if !batch.is_empty() {
                            let _ = remote.send(batch);
                        }
                    }
                });
            },
        );
}

/// Runs one worker until every input handle is dropped and the dataflow drained.
pub(crate) fn run_worker(
    worker: &mut Worker,
    shared: &Arc<Shared>,
    output: &flume::Sender<Vec<EngineOutput>>,
) {
    // Its index among this process's workers (the dataflow's index less
    // the process's first).
    let local = worker.index() - shared.base;
    shared.register_thread(local);
    let Some(rx) = shared.rxs.get(local) else {
        return;
    };
    let probe = ProbeHandle::new();
    let table = DeviceTable::new(
        shared.registry.current(),
        shared.rules.current(),
        shared.table,
        worker.index(),
        worker.peers(),
    );
    let mut journal = shared.journal_writer(local);
    let mut tickets = Vec::new();
    let control = &shared.control;
    // The newest checkpoint this worker marked its input for.
    let mut marked = 0u64;
    let mut closing_told = false;
    let mut full_logged = false;
    let (mut input, cap) = worker.dataflow::<u64, _, _>(|scope| {
        let ((input, cap), readings) = scope.new_unordered_input::<Item<Reading>>();
        let (outputs, geo) = readings.device_state(table, shared.clone());
        let geo = geo.geo(shared.clone());
        // In a cluster, every process builds the same dataflow (timely
        // requires it): each shares, with no one when no other process is
        // a front one, and receives, when it has somewhere to put it.
        if shared.peers > shared.rxs.len() {
            share(&outputs, shared, shared.remote_outputs.clone());
            share(&geo, shared, shared.remote_outputs.clone());
        }
        sink(outputs, shared, output, &probe);
        sink(geo, shared, output, &probe);
        (input, cap)
    });
    let mut cap = cap;
    let mut batch: Vec<(u64, Reading)> = Vec::with_capacity(BATCH);
    // Newest event time this worker has taken from its channel.
    let mut taken = Timestamp(0);
    let mut closed = false;
    // Readings still to take before the mark: those in the channel when
    // every replayable source had stopped for the checkpoint.
    let mut drain: Option<usize> = None;
    loop {
        let c = &mut cap;
        // A checkpoint asked for: once the replayable sources (Kafka) have
        // stopped, take what they handed over, then mark the input, close
        // the journal segment, and take nothing until every part is in.
        // Until they have, readings are taken as usual.
        let pending = control.pending();
        let mut cutting = false;
        if let Some(epoch) = pending
            && marked < epoch
            && (drain.is_some() || control.logs.paused(epoch))
        {
            let left = *drain.get_or_insert_with(|| if control.logs.any() { rx.len() } else { 0 });
            cutting = left > 0;
        }
        if let Some(epoch) = pending.filter(|_| !cutting)
            && (marked >= epoch || drain.is_some())
        {
            if marked < epoch {
                drain = None;
                marked = epoch;
                let closed_segment = journal.as_mut().and_then(|j| j.roll(epoch));
                // The frontier this worker vouches for at the cut: the
                // watermark a restart starts from is the lowest of these.
                shared.hand_cut(epoch, closed_segment, *c.time());
                let mut handle = input.activate();
                let at = c.delayed(c.time());
                handle.session(&at).give(Item::Mark {
                    epoch,
                    to: worker.index() as u32,
                });
            }
            worker.step_or_park(Some(Duration::from_millis(1)));
            continue;
        }
        if closed && shared.durable.is_none() {
            // Inputs closed, state in memory only: once every worker has
            // taken its last reading, event time ends where they leave the
            // watermark, and what it decides (overdue devices, closed
            // windows) is decided before the dataflow ends, whichever
            // worker closed first.
            if !closing_told {
                closing_told = true;
                shared.inputs_closed.fetch_add(1, Ordering::AcqRel);
            }
            if shared.inputs_closed.load(Ordering::Acquire) < shared.rxs.len() {
                worker.step_or_park(Some(Duration::from_millis(1)));
                continue;
            }
            let wm = shared.watermark.at(Timestamp::now());
            if wm > *c.time() {
                c.downgrade(&wm);
            }
            while probe.less_than(c.time()) {
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
            break;
        }
        if closed {
            // Inputs closed: with a journal, the coordinator writes a last
            // checkpoint (this worker takes part) before the dataflow ends.
            if control.finished.load(Ordering::Acquire) {
                break;
            }
            if !closing_told {
                closing_told = true;
                shared.hand_closing();
            }
            worker.step_or_park(Some(Duration::from_millis(5)));
            continue;
        }
        // Taking what a cut needs is not held back by a full journal (it
        // is a bounded number; the checkpoint then cuts the journal).
        let full = control.journal_full.load(Ordering::Relaxed) && drain.is_none();
        if full && !full_logged {
            tracing::warn!(
                worker = worker.index(),
                "the journal is at journal_max_bytes: readings wait until a checkpoint cuts it"
            );
        }
        full_logged = full;
        let limit = drain.map_or(BATCH, |d| d.min(BATCH));
        while batch.len() < limit && !full {
            match rx.try_recv() {
                Ok(i) => {
                    if let (Some(j), Some(t)) = (journal.as_mut(), i.ticket) {
                        j.append(&i.reading);
                        tickets.push(t);
                    }
                    batch.push((0, i.reading));
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if let Some(d) = drain.as_mut() {
            // The channel may be shorter than it was (a closed input).
            *d = if closed {
                0
            } else {
                d.saturating_sub(batch.len())
            };
        }
        if let Some(j) = journal.as_mut() {
            j.commit(std::mem::take(&mut tickets), control);
        }
        let now = Timestamp::now();
        if !batch.is_empty() {
            let floor = *c.time();
            let (mut newest, mut latest_arrival, mut late) = (Timestamp(0), Timestamp(0), 0u64);
            for (time, r) in batch.iter_mut() {
                newest = newest.max(r.envelope.ts);
                latest_arrival = latest_arrival.max(r.received);
                let ts = r.envelope.ts.millis().max(0) as u64;
                late += u64::from(ts < floor);
                *time = (ts - ts % TICK_MS).max(floor);
            }
            // Shared counters once per batch, not per reading.
            shared.watermark.observe(newest, latest_arrival);
            taken = taken.max(newest);
            if late > 0 {
                shared.stats.late.fetch_add(late, Ordering::Relaxed);
                metrics::counter!("ioc_events_late_total").increment(late);
            }
            // One message per run of readings with the same tick (in
            // arrival order; usually the whole batch).
            let mut handle = input.activate();
            let mut readings = batch.drain(..).peekable();
            while let Some((t, first)) = readings.next() {
                let at = c.delayed(&t);
                let mut session = handle.session(&at);
                session.give(Item::Data(first));
                while let Some((_, r)) = readings.next_if(|(u, _)| *u == t) {
                    session.give(Item::Data(r));
                }
            }
            drop(readings);
            drop(handle);
        }
        // A worker with a backlog holds the frontier back to what it has
        // taken, so its queued readings are not late because another
        // worker ran ahead (and its devices do not look silent).
        let wm = if rx.is_empty() {
            shared.watermark.at(now)
        } else {
            shared.watermark.with_backlog(now, taken)
        };
        // While the journal is replayed event time stays where the
        // checkpoint left it: readings of one worker's segment must not
        // make another's late, whatever order they are read back in.
        if wm > *c.time() && control.replayed.load(Ordering::Acquire) {
            c.downgrade(&wm);
        }
        if closed {
            continue;
        }
        let busy = !rx.is_empty();
        worker.step_or_park(if busy {
            Some(Duration::ZERO)
        } else {
            Some(IDLE_PARK)
        });
    }
    drop(cap);
    drop(input);
    while !probe.done() {
        worker.step();
    }
}
