//! Per-device state on the worker that owns the device: latest state,
//! windows, and every rule's state.
//!
//! A reading takes two paths through [`DeviceTable`]:
//!
//! 1. [`DeviceTable::arrive`], at once: the latest state for the live
//!    screens (duplicates and readings older than the latest are recognised
//!    and counted), camera counts and watch-list reads, which need no
//!    order. A reading that directly follows its device's previous one
//!    (next `seq`, not older, nothing of the device waiting:
//!    [`Outcome::Next`]) is queued for [`DeviceTable::apply_ready`], which
//!    the dataflow calls after each input batch; any other returns its
//!    [`Sample`] for the reorder buffer.
//! 2. [`DeviceTable::release`], once the watermark has passed the reading
//!    (or `apply_ready` for the in-order ones): samples in each device's
//!    event-time order feed the rainfall and traffic windows and the rules.
//!    A rain gauge's running totals are judged with the reading (after the
//!    close before it), as lower bounds that can only raise. A sample older
//!    than one the rules already saw (late) still amends its windows
//!    (emitted again as revisions, and rainfall rules re-evaluate), but
//!    does not rewind the rules' state machines.
//!
//! [`DeviceTable::advance`] runs as the watermark moves: it emits windows
//! that closed, revisions, rainfall rules, and the staleness scan.
//! State is bounded by the registry: one slot per registered device, and
//! windows only for the devices that have them.

use std::sync::Arc;

use ioc_devices::{DeviceIndex, Registry};
use ioc_schemas::{Body, DeviceKind, DeviceState, EngineOutput};

use crate::durable::partition_of;
use crate::reading::Reading;
use crate::reorder::ReorderBuffer;
use crate::rules::alert::removed;
use crate::rules::kind::{DeviceCx, Latest, PlateRead, RainTotal, Scan, States};
use crate::rules::{Rule, RuleSet};
use crate::sample::{Field, Sample, SampleSnap};
use crate::seq_window::SeqWindow;
use crate::windows::{CameraCounts, RAIN_WINDOWS_MS, RainWindows, TrafficWindows};

/// What happened to a reading on arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It updated the device.
    Applied,
    /// It updated the device and directly follows its previous reading
    /// (next `seq`, not older, nothing of the device waiting): its rules
    /// decide at once, and so may whatever follows the device alone.
    Next,
    /// Already taken: its sequence number is marked in the device's
    /// [`SeqWindow`] and its event time is not newer than the device's.
    Duplicate,
    /// Older than the device's latest reading: not shown as the latest,
    /// but it still amends windows.
    OutOfOrder,
}

/// Settings of the table.
#[derive(Clone, Copy, Debug)]
pub struct TableConfig {
    /// Rainfall bucket length, ms (divides one hour).
    pub rain_bucket_ms: i64,
    /// How often the staleness scan runs, in event time, ms.
    pub staleness_scan_ms: i64,
    /// Per-device progress: a reading that directly follows its device's
    /// previous one (next `seq`, event time not older, nothing of the
    /// device waiting) goes to the device's windows and rules at once,
    /// and a rolling rainfall total is judged as the reading makes it
    /// grow. Off, every reading waits for the watermark (the oracle the
    /// tests compare with).
    pub immediate: bool,
    /// Event time the engine started listening at, ms: a device never
    /// heard from is overdue only counting from here (or from the first
    /// frontier, if later), so a backfill of old readings does not make
    /// every other device overdue at once.
    pub listening_since_ms: i64,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            rain_bucket_ms: 5 * 60_000,
            staleness_scan_ms: 60_000,
            immediate: true,
            listening_since_ms: i64::MIN,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum Windows {
    Rain(Box<RainWindows>),
    Traffic(Box<TrafficWindows>),
    Camera(Box<CameraCounts>),
}

impl Windows {
    fn bytes(&self) -> usize {
        match self {
            Windows::Rain(w) => w.bytes(),
            Windows::Traffic(w) => w.bytes(),
            Windows::Camera(w) => w.bytes(),
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    /// Latest reading (arrival path).
    last_ts: i64,
    last_seq: u64,
    /// The sequence numbers taken, so that a duplicate is recognised even
    /// when newer readings came between.
    seqs: SeqWindow,
    heard: bool,
    /// Latest event time the rules saw.
    ruled_ts: i64,
    /// The device's samples waiting in the reorder buffer.
    waiting: u32,
    /// Highest open level of the device's threshold rules.
    alarm: u8,
    /// Rule states, keyed by the rule's position in the rules.
    states: States<u16>,
    windows: Option<Windows>,
    /// The latest sample the rules judged, for devices with registry
    /// levels: judged again when the registry changes them. Not in
    /// checkpoints (after a restart, the next reading is judged first).
    last: Option<Box<Sample>>,
}

impl Slot {
    /// Bytes the device's state takes: the slot, its rule states and windows.
    fn bytes(&self) -> usize {
        std::mem::size_of::<Slot>()
            + self.states.heap_bytes()
            + self.windows.as_ref().map_or(0, Windows::bytes)
            + self
                .last
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<Sample>())
    }
}

/// A rain gauge's running totals as one reading made them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunningRain {
    /// The gauge.
    pub gauge: DeviceIndex,
    /// The reading's event time, ms.
    pub ts: i64,
    /// The four windows' totals at the end of the reading's bucket, mm.
    pub totals: [f64; 4],
    /// What the reading added, mm.
    pub added_mm: f64,
}

/// What the devices' state takes, worked out at each staleness scan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateSize {
    /// Bytes over every device of the table.
    pub bytes: usize,
    /// Bytes of the largest device.
    pub largest: usize,
}

/// The state of every device owned by one worker.
#[derive(Debug)]
pub struct DeviceTable {
    registry: Arc<Registry>,
    rules: Arc<RuleSet>,
    config: TableConfig,
    /// One slot per owned device, at `local[device]`.
    slots: Vec<Slot>,
    /// Each registered device's slot here (`u32::MAX`: another worker's).
    local: Vec<u32>,
    /// Devices with windows, for emission at boundaries.
    windowed: Vec<DeviceIndex>,
    /// Devices whose emitted windows a late reading amended.
    revised: Vec<DeviceIndex>,
    /// Devices this worker owns (for the staleness scan).
    owned: Vec<DeviceIndex>,
    /// In-order samples taken but not yet applied ([`DeviceTable::apply_ready`]).
    ready: Vec<Sample>,
    /// Running rainfall totals of readings applied since the last
    /// [`DeviceTable::take_running_rain`], for zone rules.
    running_rain: Vec<RunningRain>,
    /// Last frontier `advance` saw.
    frontier: i64,
    /// Event time the engine started at (the first frontier).
    started: Option<i64>,
    last_scan: i64,
    /// Readings that reached the rules after a newer one (late for the rules).
    pub late_for_rules: u64,
    /// The state's size at the last staleness scan.
    pub size: StateSize,
    /// This worker and how many there are.
    worker: usize,
    peers: usize,
    /// Devices whose registry levels changed, to judge again.
    rejudge: Vec<DeviceIndex>,
}

impl DeviceTable {
    /// An empty table for the devices `worker` of `peers` owns.
    pub fn new(
        registry: Arc<Registry>,
        rules: Arc<RuleSet>,
        config: TableConfig,
        worker: usize,
        peers: usize,
    ) -> Self {
        let peers = peers.max(1);
        let owned: Vec<DeviceIndex> = (0..registry.devices().len() as DeviceIndex)
            .filter(|&d| owner_of(&registry, d, peers) == worker)
            .collect();
        let mut local = vec![u32::MAX; registry.devices().len()];
        for (i, &d) in owned.iter().enumerate() {
            local[d as usize] = i as u32;
        }
        DeviceTable {
            registry,
            rules,
            config,
            slots: std::iter::repeat_with(Slot::default)
                .take(owned.len())
                .collect(),
            local,
            windowed: Vec::new(),
            revised: Vec::new(),
            owned,
            ready: Vec::new(),
            running_rain: Vec::new(),
            frontier: 0,
            started: None,
            last_scan: 0,
            late_for_rules: 0,
            size: StateSize::default(),
            worker,
            peers,
            rejudge: Vec::new(),
        }
    }

    /// The registry in force here.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Replaces the registry with a later one (the same devices at the same
    /// indices, maybe changed, and maybe more): new devices this worker
    /// owns get a slot, and a device whose registry levels changed is
    /// noted for [`DeviceTable::rejudge`], once the rules compiled for the
    /// new registry (which hold the levels) are in force too.
    pub fn set_registry(&mut self, registry: Arc<Registry>, out: &mut Vec<EngineOutput>) {
        self.apply_ready(out);
        let old = std::mem::replace(&mut self.registry, registry);
        let count = self.registry.devices().len();
        if count > self.local.len() {
            let first = self.local.len() as DeviceIndex;
            self.local.resize(count, u32::MAX);
            for d in first..count as DeviceIndex {
                if owner_of(&self.registry, d, self.peers) == self.worker {
                    self.local[d as usize] = self.slots.len() as u32;
                    self.slots.push(Slot::default());
                    self.owned.push(d);
                }
            }
        }
        for &index in &self.owned {
            if let Some(before) = old.devices().get(index as usize)
                && before.thresholds != self.registry.device(index).thresholds
            {
                self.rejudge.push(index);
            }
        }
    }

    /// Judges the latest sample of each device whose registry levels
    /// changed again, by the rules that use them, as a new reading at that
    /// value would be, so that its open alert follows the new levels.
    pub fn rejudge(&mut self, out: &mut Vec<EngineOutput>) {
        if self.rejudge.is_empty() {
            return;
        }
        let rules = self.rules.clone();
        for index in std::mem::take(&mut self.rejudge) {
            let Some(slot) = slot_of(&mut self.slots, &self.local, index) else {
                continue;
            };
            let device = self.registry.device(index);
            let Some(s) = slot.last.as_deref() else {
                continue;
            };
            if muted(&rules, device, index, s.ts) {
                continue;
            }
            let cx = DeviceCx {
                rules: &rules,
                registry: &self.registry,
                index,
                device,
            };
            let mut alarm = 0;
            for rule in rules.for_device(index, device) {
                if rule.logic.judges_registry_levels()
                    && let Some(a) = rule.logic.on_sample(rule, &mut slot.states, &cx, s)
                {
                    out.push(EngineOutput::alert(a));
                }
                if rule.logic.sets_device_alarm() {
                    alarm = alarm.max(slot.states.level(rule));
                }
            }
            slot.alarm = alarm;
        }
    }

    /// Replaces the rules, keeping the state of every rule whose id and
    /// kind stay the same. Open alerts of rules that went away (or changed
    /// kind) are resolved.
    pub fn set_rules(&mut self, rules: Arc<RuleSet>, out: &mut Vec<EngineOutput>) {
        // Taken under the rules they arrived under.
        self.apply_ready(out);
        let old = std::mem::replace(&mut self.rules, rules);
        let now = self.frontier;
        // Each old rule's successor: the rule with the same id.
        let successor: Vec<Option<&Rule>> =
            old.rules.iter().map(|r| self.rules.get(&r.id)).collect();
        for (&index, slot) in self.owned.iter().zip(&mut self.slots) {
            let device = self.registry.device(index);
            slot.states.retain_mut(|key, state| {
                let next = successor
                    .get(usize::from(*key))
                    .copied()
                    .flatten()
                    .filter(|r| state.fits(&r.logic) && r.applies(index, device));
                if let Some(r) = next {
                    *key = r.position;
                    return true;
                }
                if let (Some(rule), Some(step)) = (
                    old.rules.get(usize::from(*key)),
                    state.tracker_mut().and_then(|t| t.step(0, now)),
                ) {
                    out.push(EngineOutput::alert(removed(rule, device, step, now)));
                }
                false
            });
        }
    }

    /// Takes a reading as it arrives: the latest state, camera counts and
    /// watch-list reads. Returns the sample to release in order later
    /// (`None` for duplicates and camera events).
    pub fn arrive(
        &mut self,
        reading: &Reading,
        out: &mut Vec<EngineOutput>,
    ) -> (Outcome, Option<Sample>) {
        let e = &reading.envelope;
        let index = reading.device;
        let ts = e.ts.millis();
        let device = self.registry.device(index);
        let Some(slot) = slot_of(&mut self.slots, &self.local, index) else {
            return (Outcome::Applied, None);
        };
        if !slot.seqs.first_time(e.seq, ts) {
            return (Outcome::Duplicate, None);
        }
        // Directly after the device's previous reading, with nothing of
        // the device still waiting: in order, whatever comes later.
        let next_in_order = self.config.immediate
            && slot.heard
            && slot.waiting == 0
            && e.seq == slot.last_seq.wrapping_add(1)
            && ts >= slot.last_ts
            && ts >= slot.ruled_ts;
        let outcome = if slot.heard && ts < slot.last_ts {
            Outcome::OutOfOrder
        } else {
            let previous = slot.heard.then_some(slot.last_ts);
            let previous_seq = slot.last_seq;
            slot.last_ts = ts;
            slot.last_seq = e.seq;
            slot.heard = true;
            // The state first: whoever sees an alert can already see the reading behind it.
            out.push(EngineOutput::Device(DeviceState {
                device: self.registry.shared_id(index).clone(),
                ts: e.ts,
                seq: e.seq,
                pos: e.pos.unwrap_or(device.pos),
                reading: e.body.clone(),
                alarm_level: (slot.alarm > 0).then_some(slot.alarm),
            }));
            if let Some(since) = previous.filter(|&p| !muted(&self.rules, device, index, p)) {
                let cx = DeviceCx {
                    rules: &self.rules,
                    registry: &self.registry,
                    index,
                    device,
                };
                let latest = Latest {
                    since,
                    previous_seq,
                    ts: e.ts,
                    seq: e.seq,
                };
                for rule in self.rules.for_device(index, device) {
                    rule.logic
                        .on_latest(rule, &mut slot.states, &cx, &latest, out);
                }
            }
            if next_in_order {
                Outcome::Next
            } else {
                Outcome::Applied
            }
        };
        if let Body::Camera(c) = &e.body {
            if let Windows::Camera(counts) = windows_of(slot, &mut self.windowed, index, || {
                Windows::Camera(Box::default())
            }) {
                counts.add(ts, c.event);
            }
            if ts < self.frontier {
                self.revised.push(index);
            }
            if let Some(plate) = c
                .plate
                .as_deref()
                .filter(|_| !muted(&self.rules, device, index, ts))
            {
                let cx = DeviceCx {
                    rules: &self.rules,
                    registry: &self.registry,
                    index,
                    device,
                };
                let read = PlateRead {
                    plate,
                    pos: e.pos.unwrap_or(device.pos),
                    ts: e.ts,
                    seq: e.seq,
                };
                for rule in self.rules.for_device(index, device) {
                    if let Some(a) = rule.logic.on_plate_read(rule, &cx, &read) {
                        out.push(EngineOutput::alert(a));
                    }
                }
            }
            return (outcome, None);
        }
        let sample = Sample::new(index, ts, e.seq, &e.body);
        if next_in_order {
            self.ready.push(sample);
            return (outcome, None);
        }
        slot.waiting += 1;
        (outcome, Some(sample))
    }

    /// Applies samples the watermark has passed, which must come sorted by
    /// `(event time, device, seq)` (the reorder buffer yields them so).
    pub fn release(&mut self, samples: &[Sample], out: &mut Vec<EngineOutput>) {
        debug_assert!(samples.is_sorted_by_key(|s| (s.ts, s.device, s.seq)));
        self.apply_ready(out);
        let rules = self.rules.clone();
        for s in samples.iter() {
            if let Some(slot) = slot_of(&mut self.slots, &self.local, s.device) {
                slot.waiting = slot.waiting.saturating_sub(1);
            }
            self.apply(s, &rules, out);
        }
    }

    /// The running rainfall totals since the last call (see the field).
    pub fn take_running_rain(&mut self) -> Vec<RunningRain> {
        std::mem::take(&mut self.running_rain)
    }

    /// The bucket length of rainfall windows, ms.
    pub fn rain_bucket_ms(&self) -> i64 {
        self.config.rain_bucket_ms
    }

    /// Applies the in-order samples taken since the last call (each
    /// directly after its device's previous reading), in arrival order:
    /// after every batch of arrivals, and before anything else moves.
    pub fn apply_ready(&mut self, out: &mut Vec<EngineOutput>) {
        if self.ready.is_empty() {
            return;
        }
        let rules = self.rules.clone();
        let mut ready = std::mem::take(&mut self.ready);
        for s in &ready {
            self.apply(s, &rules, out);
        }
        ready.clear();
        self.ready = ready;
    }

    /// A sample to the device's windows and, unless it is older than one
    /// the rules already saw, to its rules, in its device's event-time order.
    fn apply(&mut self, s: &Sample, rules: &RuleSet, out: &mut Vec<EngineOutput>) {
        let device = self.registry.device(s.device);
        let Some(slot) = slot_of(&mut self.slots, &self.local, s.device) else {
            return;
        };
        // Windows take every sample, late or not.
        let mut rained = 0.0;
        let windowed = match (device.kind, s.get(Field::RainfallMm), s.traffic) {
            (DeviceKind::RainGauge, Some(mm), _) => {
                let bucket = self.config.rain_bucket_ms;
                let w = windows_of(slot, &mut self.windowed, s.device, || {
                    Windows::Rain(Box::new(RainWindows::new(bucket)))
                });
                if let Windows::Rain(r) = w {
                    r.add(s.ts, s.seq, mm);
                    rained = mm;
                }
                true
            }
            (DeviceKind::TrafficCounter, _, Some(t)) => {
                let w = windows_of(slot, &mut self.windowed, s.device, || {
                    Windows::Traffic(Box::default())
                });
                if let Windows::Traffic(w) = w {
                    let (speed, occupancy) = (s.get(Field::SpeedKmh), s.get(Field::OccupancyPct));
                    w.add(s.ts, t.counts, t.interval_s, speed, occupancy);
                }
                true
            }
            _ => false,
        };
        if windowed && s.ts < self.frontier {
            self.revised.push(s.device);
        }
        if s.ts < slot.ruled_ts {
            self.late_for_rules += 1;
            return;
        }
        slot.ruled_ts = s.ts;
        if device.kind.has_registry_levels() {
            match &mut slot.last {
                Some(last) => **last = s.clone(),
                None => slot.last = Some(Box::new(s.clone())),
            }
        }
        if muted(rules, device, s.device, s.ts) {
            return;
        }
        let cx = DeviceCx {
            rules,
            registry: &self.registry,
            index: s.device,
            device,
        };
        // A total only grows within its bucket: the moment it passes a
        // level is this reading's (judged now, or after the close before it).
        let running: Option<[RainTotal; 4]> = match &mut slot.windows {
            Some(Windows::Rain(r)) if rained > 0.0 && self.config.immediate => {
                let (totals, now) = r.running(s.ts);
                // Zones judge it once every gauge is known up to its time.
                self.running_rain.push(RunningRain {
                    gauge: s.device,
                    ts: s.ts,
                    totals,
                    added_mm: rained,
                });
                now.then(|| running_totals(s.ts, totals))
            }
            _ => None,
        };
        let mut alarm = 0;
        for rule in rules.for_device(s.device, device) {
            if let Some(a) = rule.logic.on_sample(rule, &mut slot.states, &cx, s) {
                out.push(EngineOutput::alert(a));
            }
            if let Some(running) = &running {
                rule.logic
                    .on_rain_totals(rule, &mut slot.states, &cx, running, out);
            }
            if rule.logic.sets_device_alarm() {
                alarm = alarm.max(slot.states.level(rule));
            }
        }
        slot.alarm = alarm;
    }

    /// The watermark moved to `frontier`: emit closed windows and
    /// revisions, run rainfall rules on them, and scan for silent devices.
    pub fn advance(&mut self, frontier: i64, out: &mut Vec<EngineOutput>) {
        self.apply_ready(out);
        if frontier <= self.frontier {
            return;
        }
        let started = *self.started.get_or_insert(frontier);
        let step = self
            .config
            .rain_bucket_ms
            .min(crate::windows::TRAFFIC_WINDOW_MS);
        let crossed = frontier.div_euclid(step) > self.frontier.div_euclid(step);
        self.frontier = frontier;
        let rules = self.rules.clone();
        let mut windows = Vec::new();
        let due: Vec<DeviceIndex> = if crossed {
            self.revised.clear();
            std::mem::take(&mut self.windowed)
        } else {
            let mut d = std::mem::take(&mut self.revised);
            d.sort_unstable();
            d.dedup();
            d
        };
        for &index in &due {
            let device = self.registry.device(index);
            let Some(slot) = slot_of(&mut self.slots, &self.local, index) else {
                continue;
            };
            match &mut slot.windows {
                Some(Windows::Rain(r)) => {
                    let interval = i64::from(device.expected_interval_s) * 1000;
                    let closed = r.emit(
                        self.registry.shared_id(index),
                        frontier,
                        interval,
                        &mut windows,
                    );
                    let mut totals = if muted(&rules, device, index, frontier) {
                        Vec::new()
                    } else {
                        closed
                    };
                    // Running totals that waited for these closes, each
                    // after the closes before it in event time.
                    for (ts, running) in r.judgeable() {
                        let at = totals.partition_point(|c| c.0 <= ts);
                        totals.splice(at..at, running_totals(ts, running));
                    }
                    if totals.is_empty() {
                        continue;
                    }
                    each_rule(
                        &rules,
                        &self.registry,
                        index,
                        &mut slot.states,
                        |r, s, cx| {
                            r.logic.on_rain_totals(r, s, cx, &totals, out);
                        },
                    );
                }
                Some(Windows::Traffic(t)) => {
                    let mut closed = Vec::new();
                    t.emit(
                        self.registry.shared_id(index),
                        frontier,
                        &mut windows,
                        &mut closed,
                    );
                    if closed.is_empty() || muted(&rules, device, index, frontier) {
                        continue;
                    }
                    each_rule(
                        &rules,
                        &self.registry,
                        index,
                        &mut slot.states,
                        |r, s, cx| {
                            r.logic.on_traffic_windows(r, s, cx, &closed, out);
                        },
                    );
                }
                Some(Windows::Camera(c)) => {
                    c.emit(self.registry.shared_id(index), frontier, &mut windows)
                }
                None => {}
            }
        }
        if crossed {
            self.windowed = due;
        }
        out.extend(windows.into_iter().map(EngineOutput::Window));
        if frontier - self.last_scan >= self.config.staleness_scan_ms {
            self.last_scan = frontier;
            self.scan(started, frontier, &rules, out);
        }
    }

    /// The periodic scan: silent devices, and the state's size.
    fn scan(&mut self, started: i64, now: i64, rules: &RuleSet, out: &mut Vec<EngineOutput>) {
        let scanning: Vec<&Rule> = rules.rules.iter().filter(|r| r.logic.scans()).collect();
        let mut size = StateSize {
            bytes: self.slots.capacity() * std::mem::size_of::<Slot>(),
            largest: 0,
        };
        for (&index, slot) in self.owned.iter().zip(&mut self.slots) {
            let bytes = slot.bytes();
            size.bytes += bytes - std::mem::size_of::<Slot>();
            size.largest = size.largest.max(bytes);
            if scanning.is_empty() {
                continue;
            }
            let cx = DeviceCx {
                rules,
                registry: &self.registry,
                index,
                device: self.registry.device(index),
            };
            let scan = Scan {
                // Never heard from: silent since the engine began to
                // listen (the first start; the recording's start for a
                // backtest), not since whatever frontier this worker saw
                // first, which depends on how readings were batched.
                since: if slot.heard {
                    slot.last_ts
                } else if self.config.listening_since_ms > i64::MIN {
                    self.config.listening_since_ms
                } else {
                    started
                },
                now,
                seq: slot.heard.then_some(slot.last_seq),
            };
            for rule in &scanning {
                rule.logic.on_scan(rule, &mut slot.states, &cx, &scan, out);
            }
        }
        self.size = size;
    }
}

/// Calls `hook` with each rule of device `index`, its states and context.
fn each_rule(
    rules: &RuleSet,
    registry: &Registry,
    index: DeviceIndex,
    states: &mut States<u16>,
    mut hook: impl FnMut(&Rule, &mut States<u16>, &DeviceCx<'_>),
) {
    let device = registry.device(index);
    let cx = DeviceCx {
        rules,
        registry,
        index,
        device,
    };
    for rule in rules.for_device(index, device) {
        hook(rule, states, &cx);
    }
}

/// A reading's running totals as the rules take them: lower bounds
/// (incomplete), so they only raise.
fn running_totals(ts: i64, totals: [f64; 4]) -> [RainTotal; 4] {
    std::array::from_fn(|w| (ts, RAIN_WINDOWS_MS[w], totals[w], false, false))
}

/// The slot of a device this worker owns (`None` for any other device,
/// which the exchange never sends here).
fn slot_of<'a>(slots: &'a mut [Slot], local: &[u32], index: DeviceIndex) -> Option<&'a mut Slot> {
    let i = *local.get(index as usize)?;
    slots.get_mut(i as usize)
}

/// Whether a device's alerts are muted at event time `ts` (see
/// [`DeviceCx::muted`]).
fn muted(rules: &RuleSet, device: &ioc_schemas::DeviceInfo, index: DeviceIndex, ts: i64) -> bool {
    device.muted_at(ts) || rules.in_maintenance(index, ts)
}

/// The worker of `peers` that owns a device: its partition's.
pub fn owner_of(registry: &Registry, index: DeviceIndex, peers: usize) -> usize {
    usize::from(partition_of(registry.shared_id(index))) % peers.max(1)
}

/// A device's state as a checkpoint keeps it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct DeviceSnap {
    id: Arc<str>,
    last_ts: i64,
    last_seq: u64,
    seqs: SeqWindow,
    heard: bool,
    ruled_ts: i64,
    alarm: u8,
    /// Rule states by rule id (positions change with the rules file).
    states: States<Arc<str>>,
    windows: Option<Windows>,
    /// Emitted windows a late reading amended since the last boundary.
    #[serde(default)]
    revised: bool,
    /// Its samples waiting for the watermark (their count is the slot's
    /// `waiting`).
    #[serde(default)]
    pending: Vec<SampleSnap>,
}

/// The table's own progress, as a checkpoint keeps it.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct TableSnap {
    frontier: i64,
    started: Option<i64>,
    last_scan: i64,
}

impl TableSnap {
    /// The earliest progress of several workers' (restoring into another
    /// number of workers: nothing is skipped, a scan may come early).
    pub fn earliest(parts: &[TableSnap]) -> TableSnap {
        let mut it = parts.iter();
        let Some(first) = it.next() else {
            return TableSnap::default();
        };
        it.fold(*first, |a, b| TableSnap {
            frontier: a.frontier.min(b.frontier),
            started: match (a.started, b.started) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            },
            last_scan: a.last_scan.min(b.last_scan),
        })
    }
}

impl DeviceTable {
    /// The state of every device that has any, by partition, with its
    /// samples waiting in `pending`; and the table's progress. Call after
    /// [`DeviceTable::apply_ready`].
    pub fn snapshot(
        &self,
        pending: &mut ReorderBuffer<Sample>,
    ) -> (TableSnap, Vec<(u16, DeviceSnap)>) {
        let mut waiting: std::collections::HashMap<DeviceIndex, Vec<SampleSnap>> =
            std::collections::HashMap::new();
        for s in pending.items() {
            waiting.entry(s.device).or_default().push(s.snap());
        }
        let mut revised = self.revised.clone();
        revised.sort_unstable();
        let mut entries = Vec::new();
        for (&index, slot) in self.owned.iter().zip(&self.slots) {
            let pending = waiting.remove(&index).unwrap_or_default();
            if !slot.heard && slot.windows.is_none() && pending.is_empty() && slot.states.is_empty()
            {
                continue;
            }
            let id = self.registry.shared_id(index).clone();
            let rules = &self.rules.rules;
            let states = slot
                .states
                .rekey(|&p| rules.get(usize::from(p)).map(|r| r.id.clone()));
            entries.push((
                partition_of(&id),
                DeviceSnap {
                    id,
                    last_ts: slot.last_ts,
                    last_seq: slot.last_seq,
                    seqs: slot.seqs,
                    heard: slot.heard,
                    ruled_ts: slot.ruled_ts,
                    alarm: slot.alarm,
                    states,
                    windows: slot.windows.clone(),
                    revised: revised.binary_search(&index).is_ok(),
                    pending,
                },
            ));
        }
        let table = TableSnap {
            frontier: self.frontier,
            started: self.started,
            last_scan: self.last_scan,
        };
        (table, entries)
    }

    /// Takes back what a checkpoint kept. Devices this worker does not own,
    /// or the registry no longer has, are skipped (counted in the result's
    /// second number); rule states of rules that went away are dropped.
    pub fn restore(
        &mut self,
        table: TableSnap,
        entries: Vec<DeviceSnap>,
        pending: &mut ReorderBuffer<Sample>,
    ) -> (usize, usize) {
        self.frontier = table.frontier;
        self.started = table.started;
        self.last_scan = table.last_scan;
        let (mut restored, mut skipped) = (0, 0);
        let rules = self.rules.clone();
        for e in entries {
            let Some(index) = self.registry.lookup(&e.id) else {
                skipped += 1;
                continue;
            };
            let device = self.registry.device(index);
            let Some(slot) = slot_of(&mut self.slots, &self.local, index) else {
                skipped += 1;
                continue;
            };
            slot.last_ts = e.last_ts;
            slot.last_seq = e.last_seq;
            slot.seqs = e.seqs;
            slot.heard = e.heard;
            slot.ruled_ts = e.ruled_ts;
            slot.waiting = e.pending.len() as u32;
            slot.alarm = e.alarm;
            slot.states = e.states.rekey(|id| {
                rules
                    .get(id)
                    .filter(|r| r.applies(index, device))
                    .map(|r| r.position)
            });
            slot.states.retain_mut(|k, state| {
                rules
                    .rules
                    .get(usize::from(*k))
                    .is_some_and(|r| state.fits(&r.logic))
            });
            if let Some(w) = e.windows {
                slot.windows = Some(w);
                self.windowed.push(index);
            }
            if e.revised {
                self.revised.push(index);
            }
            for s in &e.pending {
                pending.push(Sample::from_snap(index, s));
            }
            restored += 1;
        }
        self.windowed.sort_unstable();
        (restored, skipped)
    }
}

/// The device's windows, created with `make` (and listed for emission)
/// on first use.
fn windows_of<'a>(
    slot: &'a mut Slot,
    windowed: &mut Vec<DeviceIndex>,
    index: DeviceIndex,
    make: impl FnOnce() -> Windows,
) -> &'a mut Windows {
    slot.windows.get_or_insert_with(|| {
        windowed.push(index);
        make()
    })
}

/// What a device table takes back from a checkpoint.
#[derive(Debug)]
pub struct DeviceRestore {
    /// The table's progress.
    pub table: TableSnap,
    /// Its devices.
    pub devices: Vec<DeviceSnap>,
}
