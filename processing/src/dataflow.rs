//! The timely dataflow: input at event time, exchange by device, state,
//! reorder buffer, windows, rules, output.
//!
//! ```text
//!  flume channel ──► unordered input (time = max(event time to the second, watermark))
//!                     │ Exchange by device index
//!                     ▼
//!                   DeviceState operator
//!                     ├─ at arrival: latest state, camera counts, watch list
//!                     ├─ reorder buffer (by event time) until the frontier passes
//!                     └─ released in event-time order: windows, rules;
//!                        as the frontier moves: closed windows, staleness
//!                     │ Pipeline
//!                     ▼
//!                   output sink ──► flume channel of EngineOutput batches
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

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use flume::TryRecvError;
use ioc_schemas::{EngineOutput, Timestamp};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::UnorderedInput;
use timely::dataflow::{ProbeHandle, StreamVec};
use timely::worker::Worker;

use crate::Shared;
use crate::device_state::{DeviceTable, Outcome};
use crate::reading::Reading;
use crate::reorder::ReorderBuffer;
use crate::sample::Sample;

/// Most readings a worker takes from the channel before stepping the dataflow.
const BATCH: usize = 4096;
/// Resolution of timely timestamps, ms. A reading enters the dataflow at
/// its event time rounded down to the tick (or at the watermark when that
/// is later): progress tracking then costs per tick, not per reading,
/// while the reorder buffer still orders samples by their exact event time.
const TICK_MS: u64 = 1000;
/// How long an idle worker sleeps before re-checking the watermark.
const IDLE_PARK: Duration = Duration::from_millis(100);

/// Keeps per-device state, windows and rules.
pub trait DeviceStateOp<'scope> {
    /// Exchanges readings by device and applies them to the owning worker's
    /// [`DeviceTable`].
    fn device_state(
        self,
        table: DeviceTable,
        shared: Arc<Shared>,
    ) -> StreamVec<'scope, u64, EngineOutput>;
}

impl<'scope> DeviceStateOp<'scope> for StreamVec<'scope, u64, Reading> {
    fn device_state(
        self,
        mut table: DeviceTable,
        shared: Arc<Shared>,
    ) -> StreamVec<'scope, u64, EngineOutput> {
        self.unary_frontier(
            Exchange::new(|r: &Reading| u64::from(r.device)),
            "DeviceState",
            move |capability, _| {
                let mut timer = Some(capability);
                let mut pending = ReorderBuffer::default();
                let mut released: Vec<Sample> = Vec::new();
                let mut out = Vec::new();
                let mut rules_seen = 0u64;
                let mut late_seen = 0u64;
                let mut size_seen = 0u64;
                move |(input, frontier), output| {
                    if let Some(rules) = shared.rules.changed_since(&mut rules_seen) {
                        table.set_rules(rules, &mut out);
                    }
                    input.for_each(|cap, data| {
                        for reading in data.iter() {
                            let (outcome, sample) = table.arrive(reading, &mut out);
                            match outcome {
                                Outcome::Applied => {}
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
                        shared.stats.processed.fetch_add(data.len() as u64, Ordering::Relaxed);
                        if !out.is_empty() {
                            output.session(&cap).give_iterator(out.drain(..));
                        }
                    });
                    // The frontier is the watermark: everything before it is final.
                    let now = frontier.frontier().iter().min().copied();
                    let limit = now.unwrap_or(u64::MAX);
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
                    if let Some(t) = timer.as_mut() {
                        if !out.is_empty() {
                            output.session(t).give_iterator(out.drain(..));
                        }
                        match now {
                            Some(now) if now > *t.time() => t.downgrade(&now),
                            Some(_) => {}
                            None => timer = None,
                        }
                    }
                }
            },
        )
    }
}

/// Runs one worker until every input handle is dropped and the dataflow drained.
pub(crate) fn run_worker(
    worker: &mut Worker,
    shared: &Arc<Shared>,
    output: &flume::Sender<Vec<EngineOutput>>,
) {
    shared.register_thread(worker.index());
    let Some(rx) = shared.rxs.get(worker.index()) else {
        return;
    };
    let probe = ProbeHandle::new();
    let table = DeviceTable::new(
        shared.registry.clone(),
        shared.rules.current(),
        shared.table,
        worker.index(),
        worker.peers(),
    );
    let (mut input, cap) = worker.dataflow::<u64, _, _>(|scope| {
        let ((input, cap), readings) = scope.new_unordered_input::<Reading>();
        let sink = output.clone();
        readings
            .device_state(table, shared.clone())
            .probe_with(&probe)
            .sink(Pipeline, "Output", move |(input, _frontier)| {
                input.for_each(|_, data| {
                    for o in data.iter() {
                        if let EngineOutput::Alert(a) = o {
                            metrics::counter!("ioc_alerts_total", "rule" => a.rule.clone(), "status" => a.status.as_str()).increment(1);
                        }
                    }
                    // The whole message as one batch. A closed output means
                    // the process is shutting down.
                    let _ = sink.send(std::mem::take(data));
                });
            });
        (input, cap)
    });
    let mut cap = Some(cap);
    let mut batch: Vec<(u64, Reading)> = Vec::with_capacity(BATCH);
    // Newest event time this worker has taken from its channel.
    let mut taken = Timestamp(0);
    loop {
        let mut closed = false;
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push((0, r)),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let now = Timestamp::now();
        let Some(c) = cap.as_mut() else { break };
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
                session.give(first);
                while let Some((_, r)) = readings.next_if(|(u, _)| *u == t) {
                    session.give(r);
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
        if wm > *c.time() {
            c.downgrade(&wm);
        }
        if closed {
            cap = None;
            break;
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
