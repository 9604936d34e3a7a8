//! Per-device state on the worker that owns the device: latest state,
//! windows, and every rule's state.
//!
//! A reading takes two paths through [`DeviceTable`]:
//!
//! 1. [`DeviceTable::arrive`], at once: the latest state for the live
//!    screens (duplicates and readings older than the latest are recognised
//!    and counted), camera counts and watch-list reads, which need no
//!    order. It returns the reading's [`Sample`] for the reorder buffer.
//! 2. [`DeviceTable::release`], once the watermark has passed the reading:
//!    samples in event-time order feed the rainfall and traffic windows and
//!    the rules, so rules see each device's readings in event-time order
//!    whatever order they arrived in. A sample older than one the rules
//!    already saw (late) still amends its windows (emitted again as
//!    revisions, and rainfall rules re-evaluate), but does not rewind the
//!    rules' state machines.
//!
//! [`DeviceTable::advance`] runs as the watermark moves: it emits windows
//! that closed, revisions, rainfall rules, and the staleness scan.
//! State is bounded by the registry: one slot per registered device, and
//! windows only for the devices that have them.

use std::borrow::Cow;
use std::sync::Arc;

use ioc_devices::{DeviceIndex, Registry};
use ioc_schemas::{
    Alert, AlertStatus, Body, DeviceInfo, DeviceKind, DeviceState, EngineOutput, Evidence,
    Timestamp,
};

use crate::reading::Reading;
use crate::rules::alert::{self, Step, Tracker};
use crate::rules::rate::{ChangeState, projected_at};
use crate::rules::staleness::Staleness;
use crate::rules::threshold::LevelState;
use crate::rules::traffic::{CongestionState, SpeedDropState};
use crate::rules::{Level, Logic, Rule, RuleSet, devices_near};
use crate::sample::{Field, Sample};
use crate::seq_window::SeqWindow;
use crate::windows::{CameraCounts, RainWindows, TrafficWindows};

/// What happened to a reading on arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It updated the device.
    Applied,
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
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            rain_bucket_ms: 5 * 60_000,
            staleness_scan_ms: 60_000,
        }
    }
}

/// A rule's per-device state.
#[derive(Clone, Debug)]
enum RuleState {
    Level(LevelState),
    Change(ChangeState),
    Congestion(CongestionState),
    SpeedDrop(SpeedDropState),
    Stale(Tracker),
}

impl RuleState {
    fn fresh(logic: &Logic) -> Option<RuleState> {
        Some(match logic {
            Logic::Threshold(_) | Logic::Rainfall(_) => RuleState::Level(LevelState::default()),
            Logic::RateOfChange(_) | Logic::Surge(_) => RuleState::Change(ChangeState::default()),
            Logic::Congestion(_) => RuleState::Congestion(CongestionState::default()),
            Logic::SpeedDrop(_) => RuleState::SpeedDrop(SpeedDropState::default()),
            Logic::Staleness(_) => RuleState::Stale(Tracker::default()),
            Logic::Watchlist(_)
            | Logic::Geofence(_)
            | Logic::ClonedPlate(_)
            | Logic::ZoneRainfall(_) => return None,
        })
    }

    fn fits(&self, logic: &Logic) -> bool {
        matches!(
            (self, logic),
            (
                RuleState::Level(_),
                Logic::Threshold(_) | Logic::Rainfall(_)
            ) | (
                RuleState::Change(_),
                Logic::RateOfChange(_) | Logic::Surge(_)
            ) | (RuleState::Congestion(_), Logic::Congestion(_))
                | (RuleState::SpeedDrop(_), Logic::SpeedDrop(_))
                | (RuleState::Stale(_), Logic::Staleness(_))
        )
    }

    /// Bytes the state holds on the heap.
    fn heap_bytes(&self) -> usize {
        match self {
            RuleState::Change(s) => s.history.heap_bytes(),
            RuleState::SpeedDrop(s) => s.heap_bytes(),
            RuleState::Level(_) | RuleState::Congestion(_) | RuleState::Stale(_) => 0,
        }
    }

    fn tracker(&self) -> &Tracker {
        match self {
            RuleState::Level(s) => &s.tracker,
            RuleState::Change(s) => &s.tracker,
            RuleState::Congestion(s) => &s.tracker,
            RuleState::SpeedDrop(s) => &s.tracker,
            RuleState::Stale(t) => t,
        }
    }

    fn tracker_mut(&mut self) -> &mut Tracker {
        match self {
            RuleState::Level(s) => &mut s.tracker,
            RuleState::Change(s) => &mut s.tracker,
            RuleState::Congestion(s) => &mut s.tracker,
            RuleState::SpeedDrop(s) => &mut s.tracker,
            RuleState::Stale(t) => t,
        }
    }
}

#[derive(Debug)]
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
    /// Highest open level of the device's threshold rules.
    alarm: u8,
    /// Rule states, keyed by the rule's position in the rules.
    states: Vec<(u16, RuleState)>,
    windows: Option<Windows>,
}

impl Slot {
    /// Bytes the device's state takes: the slot, its rule states and windows.
    fn bytes(&self) -> usize {
        std::mem::size_of::<Slot>()
            + self.states.capacity() * std::mem::size_of::<(u16, RuleState)>()
            + self
                .states
                .iter()
                .map(|(_, s)| s.heap_bytes())
                .sum::<usize>()
            + self.windows.as_ref().map_or(0, Windows::bytes)
    }
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
    /// One slot per owned device: device `i` is at `i / peers`.
    slots: Vec<Slot>,
    /// This worker's index and the number of workers.
    place: (usize, usize),
    /// Devices with windows, for emission at boundaries.
    windowed: Vec<DeviceIndex>,
    /// Devices whose emitted windows a late reading amended.
    revised: Vec<DeviceIndex>,
    /// Devices this worker owns (for the staleness scan).
    owned: Vec<DeviceIndex>,
    /// Last frontier `advance` saw.
    frontier: i64,
    /// Event time the engine started at (the first frontier).
    started: Option<i64>,
    last_scan: i64,
    /// Readings that reached the rules after a newer one (late for the rules).
    pub late_for_rules: u64,
    /// The state's size at the last staleness scan.
    pub size: StateSize,
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
            .filter(|&d| d as usize % peers == worker)
            .collect();
        DeviceTable {
            registry,
            rules,
            config,
            slots: std::iter::repeat_with(Slot::default)
                .take(owned.len())
                .collect(),
            place: (worker, peers),
            windowed: Vec::new(),
            revised: Vec::new(),
            owned,
            frontier: 0,
            started: None,
            last_scan: 0,
            late_for_rules: 0,
            size: StateSize::default(),
        }
    }

    /// Replaces the rules, keeping the state of every rule whose id and
    /// kind stay the same. Open alerts of rules that went away (or changed
    /// kind) are resolved.
    pub fn set_rules(&mut self, rules: Arc<RuleSet>, out: &mut Vec<EngineOutput>) {
        let old = std::mem::replace(&mut self.rules, rules);
        let now = self.frontier;
        // Each old rule's successor: the rule with the same id.
        let successor: Vec<Option<&Rule>> =
            old.rules.iter().map(|r| self.rules.get(&r.id)).collect();
        for (&index, slot) in self.owned.iter().zip(&mut self.slots) {
            let device = self.registry.device(index);
            slot.states.retain_mut(|(key, state)| {
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
                    state.tracker_mut().step(0, now),
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
        let Some(slot) = slot_of(&mut self.slots, self.place, index) else {
            return (Outcome::Applied, None);
        };
        if !slot.seqs.first_time(e.seq, ts) {
            return (Outcome::Duplicate, None);
        }
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
            // A device offline is back with this reading. A gap the scan
            // has not seen yet (the watermark trails arrivals) opens and
            // resolves its alert here, so the result does not depend on timing.
            if let Some(since) = previous.filter(|&p| !self.rules.in_maintenance(index, p)) {
                for rule in self.rules.for_device(index, device) {
                    let Logic::Staleness(st) = &rule.logic else {
                        continue;
                    };
                    let allowed = st.allowed_ms(device.expected_interval_s);
                    // Usually neither a gap nor an open alert.
                    if ts - since <= allowed && !is_open(slot, rule) {
                        continue;
                    }
                    let Some(RuleState::Stale(tracker)) = state_of(slot, rule) else {
                        continue;
                    };
                    if tracker.level() == 0 && ts - since > allowed {
                        if let Some(step) = tracker.step(1, since + allowed + 1) {
                            let at = Timestamp(step.opened_ms);
                            out.push(offline_alert(
                                rule,
                                st,
                                device,
                                step,
                                allowed,
                                at,
                                Some(previous_seq),
                            ));
                        }
                    }
                    if let Some(step) = tracker.step(0, ts) {
                        out.push(offline_alert(rule, st, device, step, 0, e.ts, Some(e.seq)));
                    }
                }
            }
            Outcome::Applied
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
                .filter(|_| !self.rules.in_maintenance(index, ts))
            {
                for rule in self.rules.for_device(index, device) {
                    if let Logic::Watchlist(w) = &rule.logic
                        && w.contains(plate)
                    {
                        let pos = e.pos.unwrap_or(device.pos);
                        out.push(EngineOutput::alert(watchlist_alert(
                            rule, w.severity, device, pos, plate, e.ts, e.seq,
                        )));
                    }
                }
            }
            return (outcome, None);
        }
        (outcome, Some(Sample::new(index, ts, e.seq, &e.body)))
    }

    /// Applies samples the watermark has passed, which must come sorted by
    /// `(event time, device, seq)` (the reorder buffer yields them so).
    pub fn release(&mut self, samples: &[Sample], out: &mut Vec<EngineOutput>) {
        debug_assert!(samples.is_sorted_by_key(|s| (s.ts, s.device, s.seq)));
        let rules = self.rules.clone();
        for s in samples.iter() {
            let device = self.registry.device(s.device);
            let Some(slot) = slot_of(&mut self.slots, self.place, s.device) else {
                continue;
            };
            // Windows take every sample, late or not.
            let windowed = match (device.kind, s.get(Field::RainfallMm), s.traffic) {
                (DeviceKind::RainGauge, Some(mm), _) => {
                    let bucket = self.config.rain_bucket_ms;
                    let w = windows_of(slot, &mut self.windowed, s.device, || {
                        Windows::Rain(Box::new(RainWindows::new(bucket)))
                    });
                    if let Windows::Rain(r) = w {
                        r.add(s.ts, s.seq, mm);
                    }
                    true
                }
                (DeviceKind::TrafficCounter, _, Some(t)) => {
                    let w = windows_of(slot, &mut self.windowed, s.device, || {
                        Windows::Traffic(Box::default())
                    });
                    if let Windows::Traffic(w) = w {
                        let (speed, occupancy) =
                            (s.get(Field::SpeedKmh), s.get(Field::OccupancyPct));
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
                continue;
            }
            slot.ruled_ts = s.ts;
            if rules.in_maintenance(s.device, s.ts) {
                continue;
            }
            let mut alarm = 0;
            for rule in rules.for_device(s.device, device) {
                let Some(state) = state_of(slot, rule) else {
                    continue;
                };
                if let Some(a) = evaluate(rule, state, &rules, &self.registry, s, device) {
                    out.push(EngineOutput::alert(a));
                }
                if let Logic::Threshold(_) = rule.logic {
                    alarm = alarm.max(state.tracker().level());
                }
            }
            slot.alarm = alarm;
        }
    }

    /// The watermark moved to `frontier`: emit closed windows and
    /// revisions, run rainfall rules on them, and scan for silent devices.
    pub fn advance(&mut self, frontier: i64, out: &mut Vec<EngineOutput>) {
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
            let Some(slot) = slot_of(&mut self.slots, self.place, index) else {
                continue;
            };
            match &mut slot.windows {
                Some(Windows::Rain(r)) => {
                    let interval = i64::from(device.expected_interval_s) * 1000;
                    let changed = r.emit(
                        self.registry.shared_id(index),
                        frontier,
                        interval,
                        &mut windows,
                    );
                    if changed.is_empty() || rules.in_maintenance(index, frontier) {
                        continue;
                    }
                    for rule in rules.for_device(index, device) {
                        let Logic::Rainfall(rain) = &rule.logic else {
                            continue;
                        };
                        let Some(RuleState::Level(state)) = state_of(slot, rule) else {
                            continue;
                        };
                        for &(ts, window, total, complete, revision) in
                            changed.iter().filter(|c| c.1 == rain.window_ms)
                        {
                            if let Some(step) = rain.observe(state, total, complete, ts) {
                                let mut ev = Evidence::new(
                                    total,
                                    "mm",
                                    alert::level_value(&rain.levels, step),
                                    Timestamp(ts),
                                    0,
                                );
                                ev.window_s = Some((window / 1000) as u32);
                                ev.complete = Some(complete);
                                let mut a =
                                    alert::build(rule, device, device.pos, step, &rain.levels, ev);
                                a.revision = revision;
                                out.push(EngineOutput::alert(a));
                            }
                        }
                    }
                }
                Some(Windows::Traffic(t)) => {
                    t.emit(self.registry.shared_id(index), frontier, &mut windows)
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
        let staleness: Vec<(&Rule, &Staleness)> = rules
            .rules
            .iter()
            .filter_map(|r| match &r.logic {
                Logic::Staleness(st) => Some((r, st)),
                _ => None,
            })
            .collect();
        let mut size = StateSize {
            bytes: self.slots.capacity() * std::mem::size_of::<Slot>(),
            largest: 0,
        };
        for (&index, slot) in self.owned.iter().zip(&mut self.slots) {
            let bytes = slot.bytes();
            size.bytes += bytes - std::mem::size_of::<Slot>();
            size.largest = size.largest.max(bytes);
            let device = self.registry.device(index);
            let (heard, seq) = (slot.heard, slot.last_seq);
            let since = if heard { slot.last_ts } else { started };
            for &(rule, st) in &staleness {
                // Most devices are neither silent nor offline: settled
                // without looking their rule state up.
                let silent = now - since > st.allowed_ms(device.expected_interval_s);
                if !silent && !is_open(slot, rule) || !rule.applies(index, device) {
                    continue;
                }
                if rules.in_maintenance(index, now) {
                    break;
                }
                let Some(RuleState::Stale(tracker)) = state_of(slot, rule) else {
                    continue;
                };
                if let Some(step) = st.check(tracker, since, now, device.expected_interval_s) {
                    // The silence when the alert opened; 0 once the device is heard again.
                    let (silent_ms, at) = if step.level == 0 {
                        (0, since)
                    } else {
                        (step.opened_ms - since, step.opened_ms)
                    };
                    out.push(offline_alert(
                        rule,
                        st,
                        device,
                        step,
                        silent_ms,
                        Timestamp(at),
                        heard.then_some(seq),
                    ));
                }
            }
        }
        self.size = size;
    }
}

/// Whether `rule` has an open alert in a slot.
fn is_open(slot: &Slot, rule: &Rule) -> bool {
    slot.states
        .iter()
        .find(|(key, _)| *key == rule.position)
        .is_some_and(|(_, s)| s.tracker().level() > 0)
}

/// The slot of a device this worker owns (`None` for any other device,
/// which the exchange never sends here).
fn slot_of(
    slots: &mut [Slot],
    (worker, peers): (usize, usize),
    index: DeviceIndex,
) -> Option<&mut Slot> {
    let i = index as usize;
    if i % peers == worker {
        slots.get_mut(i / peers)
    } else {
        None
    }
}

/// The state of `rule` in a slot, created (or reset, if the rule changed
/// kind) as needed.
fn state_of<'a>(slot: &'a mut Slot, rule: &Rule) -> Option<&'a mut RuleState> {
    let at = slot
        .states
        .iter()
        .position(|(key, _)| *key == rule.position);
    let i = match at {
        Some(i) if slot.states[i].1.fits(&rule.logic) => i,
        Some(i) => {
            slot.states[i].1 = RuleState::fresh(&rule.logic)?;
            i
        }
        None => {
            let fresh = RuleState::fresh(&rule.logic)?;
            // A device has a handful of rules: no room to spare per slot.
            slot.states.reserve_exact(1);
            slot.states.push((rule.position, fresh));
            slot.states.len() - 1
        }
    };
    slot.states.get_mut(i).map(|(_, s)| s)
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

/// A change of a device-offline alert: `silent_ms` is how long the device
/// was silent when it changed; `seq` its latest sequence number, `None`
/// when it was never heard from.
fn offline_alert(
    rule: &Rule,
    st: &Staleness,
    device: &DeviceInfo,
    step: Step,
    silent_ms: i64,
    at: Timestamp,
    seq: Option<u64>,
) -> EngineOutput {
    let heard = seq.is_some();
    let allowed_s = (st.allowed_ms(device.expected_interval_s) / 1000) as f64;
    let ev = Evidence::new(
        (silent_ms / 1000) as f64,
        "s",
        allowed_s,
        at,
        seq.unwrap_or(0),
    );
    let level = [Level {
        name: if heard { "offline" } else { "never_heard" }.to_owned(),
        value: allowed_s,
        severity: st.severity,
    }];
    EngineOutput::alert(alert::build(rule, device, device.pos, step, &level, ev))
}

/// Runs one rule on one in-order sample.
fn evaluate(
    rule: &Rule,
    state: &mut RuleState,
    rules: &RuleSet,
    registry: &Registry,
    s: &Sample,
    device: &DeviceInfo,
) -> Option<Alert> {
    let ts = Timestamp(s.ts);
    let single = |severity| {
        Cow::Owned(vec![Level {
            name: String::new(),
            value: 0.0,
            severity,
        }])
    };
    let (step, levels, ev): (Step, Cow<'_, [Level]>, Evidence) = match (&rule.logic, state) {
        (Logic::Threshold(t), RuleState::Level(st)) => {
            let value = s.get(t.field)?;
            let levels = rules.levels(&t.levels, s.device);
            if levels.is_empty() {
                return None;
            }
            let step = t.observe(st, levels, value, s.ts)?;
            let threshold = alert::level_value(levels, step);
            let ev = Evidence::new(value, t.field.unit(), threshold, ts, s.seq);
            (step, Cow::Borrowed(levels), ev)
        }
        (Logic::RateOfChange(r), RuleState::Change(st)) => {
            let value = s.get(r.field)?;
            let (step, slope) = r.observe(st, value, s.ts)?;
            let mut ev = Evidence::new(value, r.field.unit(), r.open_per_h, ts, s.seq);
            ev.window_s = Some((r.window_ms / 1000) as u32);
            ev.rate_per_h = Some((slope * 1000.0).round() / 1000.0);
            let ahead = r.projection.as_ref().and_then(|l| {
                rules.levels(l, s.device).iter().find(|l| {
                    if slope > 0.0 {
                        l.value > value
                    } else {
                        l.value < value
                    }
                })
            });
            if let Some(next) = ahead {
                ev.next_level = Some(next.name.clone());
                ev.next_level_at = projected_at(value, slope, next.value, s.ts).map(Timestamp);
            }
            (step, single(r.severity), ev)
        }
        (Logic::Surge(r), RuleState::Change(st)) => {
            let value = s.get(r.field)?;
            let (step, rise) = r.observe(st, value, s.ts)?;
            let mut ev = Evidence::new(rise, r.field.unit(), r.increase, ts, s.seq);
            ev.window_s = Some((r.window_ms / 1000) as u32);
            ev.related = devices_near(
                registry,
                device,
                DeviceKind::RiverGauge,
                r.related_within_km,
            );
            (step, single(r.severity), ev)
        }
        (Logic::Congestion(c), RuleState::Congestion(st)) => {
            let speed = s.get(Field::SpeedKmh)?;
            let occupancy = s.get(Field::OccupancyPct)?;
            let step = c.observe(st, speed, occupancy, s.ts)?;
            let ev = Evidence::new(speed, "km/h", c.speed_below_kmh, ts, s.seq);
            (step, single(c.severity), ev)
        }
        (Logic::SpeedDrop(d), RuleState::SpeedDrop(st)) => {
            let speed = s.get(Field::SpeedKmh)?;
            let (step, baseline) = d.observe(st, speed, s.ts)?;
            let threshold = (baseline * (1.0 - d.drop_pct / 100.0) * 10.0).round() / 10.0;
            let ev = Evidence::new(speed, "km/h", threshold, ts, s.seq);
            (step, single(d.severity), ev)
        }
        _ => return None,
    };
    Some(alert::build(rule, device, device.pos, step, &levels, ev))
}

fn watchlist_alert(
    rule: &Rule,
    severity: ioc_schemas::Severity,
    device: &DeviceInfo,
    pos: [f64; 2],
    plate: &str,
    ts: Timestamp,
    seq: u64,
) -> Alert {
    let mut ev = Evidence::new(1.0, "read", 1.0, ts, seq);
    ev.plate = Some(plate.to_owned());
    Alert {
        id: format!("{}:{}:{}", rule.id, device.id, ts.millis()),
        rule: rule.id.to_string(),
        subject: device.id.clone(),
        status: AlertStatus::Open,
        severity,
        level: 1,
        level_name: plate.to_owned(),
        peak_level: 1,
        title_vi: format!("{}: {plate} tại {}", rule.title_vi, device.name),
        title_en: format!("{}: {plate} at {}", rule.title_en, device.name),
        pos,
        area: device.area.clone(),
        zones: Vec::new(),
        nearest: Vec::new(),
        evidence: ev,
        opened_at: ts,
        updated_at: ts,
        resolved_at: None,
        version: 1,
        revision: false,
        handling: Default::default(),
    }
}

/// The resolution of an open alert whose rule was removed from the rules.
fn removed(rule: &Rule, device: &DeviceInfo, step: Step, now: i64) -> Alert {
    let ev = Evidence::new(0.0, "", 0.0, Timestamp(now), 0);
    let mut a = alert::build(rule, device, device.pos, step, &[], ev);
    a.title_vi = format!("Đã hết: quy tắc {} đã bị gỡ bỏ ({})", rule.id, device.name);
    a.title_en = format!("Cleared: rule {} was removed ({})", rule.id, device.name);
    a
}
