//! Geo work in the dataflow: geofences for moving subjects, plate tracks,
//! zone rules, and the enrichment of every alert with its zones and nearest
//! assets.
//!
//! The device operator turns readings with a position (any device whose
//! envelope has `pos`) and plate reads into [`GeoItem::Position`]s, and
//! closed rainfall windows into [`GeoItem::Rain`]s for each zone a
//! `zone_rainfall` rule watches around the gauge. The geo operator
//! exchanges them by subject (a device id, or `plate-{plate}`) or by zone,
//! holds them until the frontier passes their event time, and applies them
//! to [`GeoState`] sorted by event time, so what it concludes does not
//! depend on arrival order. The zones are the set in force
//! ([`ioc_devices::Current`]), the same on every worker.
//!
//! - **Geofences** (for the zones some `geofence` rule watches). A subject
//!   enters a zone when a position falls inside it
//!   and leaves only when a position lies farther than the zone's buffer
//!   outside, so jitter along an edge does not flap. A subject inside longer
//!   than the zone's `dwell_s` gets one dwell event per visit (checked as
//!   the frontier moves, so a parked subject dwells too). `geofence` rules
//!   raise an alert per subject while it is inside (or has dwelt in) a zone
//!   they watch.
//! - **Tracks.** Each plate's recent reads, in event-time order, with the
//!   speed implied between successive reads; `cloned_plate` rules flag a
//!   speed no vehicle can reach. Tracks of watch-listed plates are output
//!   ([`EngineOutput::Track`]) for the map.
//! - **Zone rules.** `zone_rainfall` keeps the latest rolling total of every
//!   gauge in (or within `within_m` of) a zone and raises one alert for the
//!   zone when at least `min_gauges` of them reach a level.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use ioc_devices::{Registry, Zones};
use ioc_schemas::{
    Alert, EngineOutput, Evidence, GeofenceEvent, GeofenceTransition, Timestamp, Track, TrackPoint,
};

use crate::durable::{PARTITIONS, partition_of};
use crate::reorder::ReorderBuffer;
use crate::rules::RuleSet;
use crate::rules::alert::subject_alert;
use crate::rules::kind::{Sighting, States, TrackCx, Visit, VisitCx, ZoneCx, ZoneTotal};
use crate::rules::watchlist::with_normalised;

/// How long a subject nobody has seen is remembered (its visits, its
/// track), event time.
const SUBJECT_TTL_MS: i64 = 24 * 3_600_000;
/// Most points kept in a plate's track.
const TRACK_POINTS: usize = 32;
/// Most subjects one worker remembers; beyond it the least recently seen
/// tenth is forgotten at once (one pass, not one per new subject).
const MAX_SUBJECTS: usize = 100_000;
/// How often (event time) subjects not seen for [`SUBJECT_TTL_MS`] are
/// forgotten.
const TTL_SCAN_MS: i64 = 60_000;

/// Work for the geo operator.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum GeoItem {
    /// A moving subject was seen.
    Position {
        /// Device id, or `plate-{normalised plate}`.
        subject: Arc<str>,
        /// The device that reported it.
        source: Arc<str>,
        /// Whether the subject is a plate.
        plate: bool,
        /// Whether it directly follows the subject's previous position (a
        /// device's next reading): it may be applied at once.
        next: bool,
        /// Event time, ms.
        ts: i64,
        /// Where.
        pos: [f64; 2],
    },
    /// A gauge's rolling rainfall total, for one zone of one rule.
    Rain {
        /// The rule's id.
        rule: Arc<str>,
        /// The zone's id.
        zone: Arc<str>,
        /// The gauge.
        gauge: Arc<str>,
        /// Event time the window ends, ms.
        end_ms: i64,
        /// Event time it is judged at: the close, or the reading's for a
        /// running total, ms.
        at_ms: i64,
        /// The total, mm.
        total_mm: f64,
        /// Whether it is a running total (a lower bound).
        running: bool,
    },
}

impl GeoItem {
    /// The exchange key: the subject, or the zone.
    pub fn key(&self) -> u64 {
        let text = match self {
            GeoItem::Position { subject, .. } => subject,
            GeoItem::Rain { zone, .. } => zone,
        };
        // FNV-1a: stable across runs and workers.
        text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// Event time, ms.
    pub fn ts(&self) -> i64 {
        match self {
            GeoItem::Position { ts, .. } => *ts,
            GeoItem::Rain { at_ms, .. } => *at_ms,
        }
    }

    /// The order items are applied in: event time, then subject or zone,
    /// then source.
    pub fn cmp_order(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }

    /// Event time; a close before a running total of the same instant
    /// (the reading belongs to the bucket the close starts); then subject
    /// or zone, then source.
    fn order(&self) -> (i64, bool, &str, &str) {
        match self {
            GeoItem::Position {
                ts,
                subject,
                source,
                ..
            } => (*ts, false, subject, source),
            GeoItem::Rain {
                at_ms,
                running,
                zone,
                gauge,
                ..
            } => (*at_ms, *running, zone, gauge),
        }
    }
}

/// The geo operator holds items in a reorder buffer, released in
/// [`GeoItem::cmp_order`].
impl crate::reorder::Timed for GeoItem {
    fn ts(&self) -> i64 {
        GeoItem::ts(self)
    }
    fn order(&self, other: &Self) -> std::cmp::Ordering {
        self.cmp_order(other)
    }
}

/// The subject id of a plate: `plate-` and the plate's letters and
/// digits, upper case.
#[cfg(test)]
pub fn plate_subject(plate: &str) -> String {
    with_normalised(PLATE_PREFIX, plate, str::to_owned)
}

/// [`plate_subject`] as a shared id, in one allocation (every camera read
/// makes one).
pub fn plate_subject_id(plate: &str) -> Arc<str> {
    with_normalised(PLATE_PREFIX, plate, |s| Arc::from(s))
}

const PLATE_PREFIX: &str = "plate-";

/// Whether any rule needs positions (geofences, tracks, watch lists).
pub fn wants_positions(rules: &RuleSet) -> bool {
    rules.rules.iter().any(|r| r.logic.needs_positions())
}

/// Whether a rule watches this zone for this kind of subject.
fn watched(rules: &RuleSet, zone: &ioc_devices::Zone, plate: bool) -> bool {
    rules
        .rules
        .iter()
        .any(|r| r.logic.watches_zone(zone, plate))
}

impl From<ZoneTotal> for GeoItem {
    fn from(t: ZoneTotal) -> GeoItem {
        GeoItem::Rain {
            rule: t.rule,
            zone: t.zone,
            gauge: t.gauge,
            end_ms: t.end_ms,
            at_ms: t.at_ms,
            total_mm: t.total_mm,
            running: t.running,
        }
    }
}

/// The operator's maps: their keys are plates and ids from the field,
/// hashed on every read, with foldhash (seeded per process) rather than
/// SipHash.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A read as the map shows it.
fn point(read: &Sighting) -> TrackPoint {
    TrackPoint {
        camera: read.camera.to_string(),
        ts: Timestamp(read.ts),
        pos: read.pos,
        speed_kmh: read.speed_kmh,
    }
}

/// A moving subject's state.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct SubjectState {
    last_ms: i64,
    pos: [f64; 2],
    source: Arc<str>,
    plate: bool,
    visits: Vec<Visit>,
    /// Its recent reads (plates), in event-time order, kept compact (the
    /// camera is the registry's shared id).
    track: VecDeque<Sighting>,
    /// Rule states of this subject, by rule id.
    rules: States<Arc<str>>,
}

/// The geo operator's progress, as a checkpoint keeps it.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct GeoProgress {
    frontier: i64,
    last_scan: i64,
}

impl GeoProgress {
    /// The earliest of several workers' progress.
    pub fn earliest(parts: &[GeoProgress]) -> GeoProgress {
        GeoProgress {
            frontier: parts.iter().map(|p| p.frontier).min().unwrap_or(0),
            last_scan: parts.iter().map(|p| p.last_scan).min().unwrap_or(0),
        }
    }
}

/// One entry of the geo operator's checkpoint.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum GeoEntry {
    /// A moving subject: zones, track, rule states, pending dwell checks.
    Subject {
        /// Device id or `plate-…`.
        id: Arc<str>,
        /// Its state.
        state: SubjectState,
        /// Dwell checks due: (event time, zone).
        dwell: Vec<(i64, Arc<str>)>,
    },
    /// A zone's rule states.
    Zone {
        /// Zone id.
        id: Arc<str>,
        /// Its rule states.
        states: States<Arc<str>>,
    },
    /// An item waiting for the frontier.
    Waiting(GeoItem),
}

/// The geo operator's state on one worker: the subjects and zones it owns.
#[derive(Debug)]
pub struct GeoState {
    registry: Arc<Registry>,
    subjects: Map<Arc<str>, SubjectState>,
    /// Pending dwell checks: (due, subject, zone).
    dwell_due: BTreeSet<(i64, Arc<str>, Arc<str>)>,
    /// Rule states of each zone, by zone id.
    zones: Map<Arc<str>, States<Arc<str>>>,
    /// Scratch for zone lookups.
    found: Vec<usize>,
    frontier: i64,
    last_scan: i64,
}

impl GeoState {
    /// Empty state.
    pub fn new(registry: Arc<Registry>) -> Self {
        GeoState {
            registry,
            subjects: Map::default(),
            dwell_due: BTreeSet::new(),
            zones: Map::default(),
            found: Vec::new(),
            frontier: 0,
            last_scan: 0,
        }
    }

    /// Replaces the registry with a later one (devices keep their indices).
    pub fn set_registry(&mut self, registry: Arc<Registry>) {
        self.registry = registry;
    }

    /// Everything this worker holds, by partition (subjects with their
    /// pending dwell checks, zones, and `pending`'s items waiting for the
    /// frontier); and its progress.
    pub fn snapshot(
        &self,
        pending: &mut ReorderBuffer<GeoItem>,
    ) -> (GeoProgress, Vec<(u16, GeoEntry)>) {
        let mut dwell: Map<&Arc<str>, Vec<(i64, Arc<str>)>> = Map::default();
        for (due, subject, zone) in &self.dwell_due {
            dwell.entry(subject).or_default().push((*due, zone.clone()));
        }
        let mut entries =
            Vec::with_capacity(self.subjects.len() + self.zones.len() + pending.len());
        for (id, state) in &self.subjects {
            entries.push((
                partition_of(id),
                GeoEntry::Subject {
                    id: id.clone(),
                    state: state.clone(),
                    dwell: dwell.remove(id).unwrap_or_default(),
                },
            ));
        }
        for (id, states) in &self.zones {
            entries.push((
                partition_of(id),
                GeoEntry::Zone {
                    id: id.clone(),
                    states: states.clone(),
                },
            ));
        }
        for item in pending.items() {
            entries.push((
                (item.key() % u64::from(PARTITIONS)) as u16,
                GeoEntry::Waiting(item.clone()),
            ));
        }
        let progress = GeoProgress {
            frontier: self.frontier,
            last_scan: self.last_scan,
        };
        (progress, entries)
    }

    /// Takes back what a checkpoint kept (entries of this worker's
    /// partitions); items waiting for the frontier go to `pending`.
    /// Returns how many subjects and zones were restored.
    pub fn restore(
        &mut self,
        progress: GeoProgress,
        entries: Vec<GeoEntry>,
        pending: &mut ReorderBuffer<GeoItem>,
    ) -> usize {
        self.frontier = progress.frontier;
        self.last_scan = progress.last_scan;
        let mut restored = 0;
        for e in entries {
            match e {
                GeoEntry::Subject { id, state, dwell } => {
                    for (due, zone) in dwell {
                        self.dwell_due.insert((due, id.clone(), zone));
                    }
                    self.subjects.insert(id, state);
                    restored += 1;
                }
                GeoEntry::Zone { id, states } => {
                    self.zones.insert(id, states);
                    restored += 1;
                }
                GeoEntry::Waiting(item) => pending.push(item),
            }
        }
        restored
    }

    /// Applies items the frontier has passed, in any order (they are sorted
    /// here by event time, then subject or zone, then source).
    pub fn apply(
        &mut self,
        items: &mut [GeoItem],
        rules: &RuleSet,
        zones: &Zones,
        out: &mut Vec<EngineOutput>,
    ) {
        // Usually sorted already (the operator releases them in order).
        items.sort_by(GeoItem::cmp_order);
        for item in items.iter() {
            // Dwell times that ran out before this item, first.
            self.dwells(item.ts(), rules, zones, out);
            match item {
                GeoItem::Position {
                    subject,
                    source,
                    plate,
                    ts,
                    pos,
                    ..
                } => self.position(subject, source, *plate, *ts, *pos, rules, zones, out),
                GeoItem::Rain {
                    rule,
                    zone,
                    gauge,
                    end_ms,
                    at_ms,
                    total_mm,
                    running,
                } => {
                    let total = ZoneTotal {
                        rule: rule.clone(),
                        zone: zone.clone(),
                        gauge: gauge.clone(),
                        end_ms: *end_ms,
                        at_ms: *at_ms,
                        total_mm: *total_mm,
                        running: *running,
                    };
                    self.rain(&total, rules, zones, out);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn position(
        &mut self,
        subject: &Arc<str>,
        source: &Arc<str>,
        plate: bool,
        ts: i64,
        pos: [f64; 2],
        rules: &RuleSet,
        zones: &Zones,
        out: &mut Vec<EngineOutput>,
    ) {
        if !self.subjects.contains_key(subject) {
            if self.subjects.len() >= MAX_SUBJECTS {
                self.forget_oldest(rules, out);
            }
            self.subjects
                .insert(subject.clone(), SubjectState::default());
        }
        // Looked up by reference: a subject seen before costs no reference
        // count traffic on its shared id.
        let Some(state) = self.subjects.get_mut(subject) else {
            return;
        };
        if ts < state.last_ms {
            // Older than what the subject's state already reflects (a read
            // later than the engine waits for): the track takes it, the
            // geofences do not go back in time.
            if plate {
                insert_track(state, source, ts, pos);
                track_output(subject, state, rules, out);
            }
            return;
        }
        state.last_ms = ts;
        state.pos = pos;
        if !Arc::ptr_eq(&state.source, source) {
            state.source = source.clone();
        }
        state.plate = plate;
        zones.indices_at(pos, &mut self.found);
        // Geofencing covers the zones some geofence rule watches.
        self.found
            .retain(|&zi| watched(rules, zones.zone(zi), plate));
        let event = |zone: &ioc_devices::Zone, transition, inside_s| {
            EngineOutput::Geofence(GeofenceEvent {
                subject: subject.to_string(),
                zone: zone.reference.clone(),
                transition,
                ts: Timestamp(ts),
                pos,
                source: source.to_string(),
                inside_s,
            })
        };
        // Leaving: only beyond the buffer.
        let found = &self.found;
        state.visits.retain(|visit| {
            let Some((zi, zone)) = zones.find(&visit.zone) else {
                return false;
            };
            if found.contains(&zi) || zones.distance_m(zi, pos) <= zone.buffer_m {
                return true;
            }
            let inside_s = ((ts - visit.since_ms).max(0) / 1000) as u64;
            out.push(event(zone, GeofenceTransition::Exit, Some(inside_s)));
            false
        });
        for &zi in &self.found {
            let zone = zones.zone(zi);
            if state.visits.iter().any(|v| *v.zone == *zone.reference.id) {
                continue;
            }
            let id: Arc<str> = zone.reference.id.as_str().into();
            if let Some(d) = zone.dwell_s {
                self.dwell_due
                    .insert((ts + d as i64 * 1000, subject.clone(), id.clone()));
            }
            state.visits.push(Visit {
                zone: id,
                since_ms: ts,
                dwelt: false,
            });
            out.push(event(zone, GeofenceTransition::Enter, None));
        }
        if plate {
            insert_track(state, source, ts, pos);
            let n = state.track.len();
            if n >= 2 {
                let cx = TrackCx {
                    registry: &self.registry,
                    subject,
                    before: &state.track[n - 2],
                    latest: &state.track[n - 1],
                };
                for rule in &rules.rules {
                    if let Some(a) = rule.logic.on_track(rule, &mut state.rules, &cx) {
                        out.push(EngineOutput::alert(a));
                    }
                }
            }
            track_output(subject, state, rules, out);
        }
        visit_rules(subject, state, ts, rules, zones, &self.registry, out);
    }

    fn rain(&mut self, t: &ZoneTotal, rules: &RuleSet, zones: &Zones, out: &mut Vec<EngineOutput>) {
        let Some(rule) = rules.get(&t.rule) else {
            return;
        };
        let Some((_, zone)) = zones.find(&t.zone) else {
            return;
        };
        let states = self.zones.entry(t.zone.clone()).or_default();
        let cx = ZoneCx {
            registry: &self.registry,
            zone,
            gauge: &t.gauge,
            end_ms: t.end_ms,
            at_ms: t.at_ms,
            total_mm: t.total_mm,
            running: t.running,
        };
        if let Some(a) = rule.logic.on_zone_total(rule, states, &cx) {
            out.push(EngineOutput::alert(a));
        }
    }

    /// Moves the frontier: dwell events that fell due, and subjects not
    /// seen for a day forgotten (their alerts resolved).
    pub fn advance(
        &mut self,
        frontier: i64,
        rules: &RuleSet,
        zones: &Zones,
        out: &mut Vec<EngineOutput>,
    ) {
        if frontier <= self.frontier {
            return;
        }
        self.frontier = frontier;
        self.dwells(frontier, rules, zones, out);
        if frontier - self.last_scan < TTL_SCAN_MS {
            return;
        }
        self.last_scan = frontier;
        let stale: Vec<Arc<str>> = self
            .subjects
            .iter()
            .filter(|(_, s)| s.last_ms < frontier - SUBJECT_TTL_MS)
            .map(|(k, _)| k.clone())
            .collect();
        for subject in stale {
            self.forget(&subject, frontier, rules, out);
        }
    }

    /// Dwell events due before `until`.
    fn dwells(&mut self, until: i64, rules: &RuleSet, zones: &Zones, out: &mut Vec<EngineOutput>) {
        while let Some(first) = self.dwell_due.first() {
            if first.0 >= until {
                break;
            }
            let Some((due, subject, zone_id)) = self.dwell_due.pop_first() else {
                break;
            };
            self.dwell(due, &subject, &zone_id, rules, zones, out);
        }
    }

    /// A position that directly follows its subject's previous one (a
    /// device's next reading, nothing of the subject waiting), applied
    /// ahead of the frontier: the subject's own dwell times that ran out
    /// before it first, then the position. Other subjects are untouched,
    /// so what it concludes is what applying it in event-time order would.
    pub fn apply_now(
        &mut self,
        item: &GeoItem,
        rules: &RuleSet,
        zones: &Zones,
        out: &mut Vec<EngineOutput>,
    ) {
        let GeoItem::Position {
            subject,
            source,
            plate,
            ts,
            pos,
            ..
        } = item
        else {
            return;
        };
        let due: Vec<(i64, Arc<str>, Arc<str>)> = self
            .dwell_due
            .iter()
            .take_while(|d| d.0 < *ts)
            .filter(|d| d.1 == *subject)
            .cloned()
            .collect();
        for d in due {
            self.dwell_due.remove(&d);
            self.dwell(d.0, &d.1, &d.2, rules, zones, out);
        }
        self.position(subject, source, *plate, *ts, *pos, rules, zones, out);
    }

    /// One dwell check that fell due.
    fn dwell(
        &mut self,
        due: i64,
        subject: &Arc<str>,
        zone_id: &Arc<str>,
        rules: &RuleSet,
        zones: &Zones,
        out: &mut Vec<EngineOutput>,
    ) {
        let Some(state) = self.subjects.get_mut(subject) else {
            return;
        };
        let Some((_, zone)) = zones.find(zone_id) else {
            return;
        };
        let Some(visit) = state
            .visits
            .iter_mut()
            .find(|v| v.zone == *zone_id && !v.dwelt)
        else {
            return;
        };
        if zone
            .dwell_s
            .is_none_or(|d| visit.since_ms + d as i64 * 1000 > due)
        {
            return;
        }
        visit.dwelt = true;
        let inside_s = ((due - visit.since_ms).max(0) / 1000) as u64;
        out.push(EngineOutput::Geofence(GeofenceEvent {
            subject: subject.to_string(),
            zone: zone.reference.clone(),
            transition: GeofenceTransition::Dwell,
            ts: Timestamp(due),
            pos: state.pos,
            source: state.source.to_string(),
            inside_s: Some(inside_s),
        }));
        visit_rules(subject, state, due, rules, zones, &self.registry, out);
    }

    /// Forgets the least recently seen tenth of the subjects.
    fn forget_oldest(&mut self, rules: &RuleSet, out: &mut Vec<EngineOutput>) {
        // The cutoff from the times alone, then one pass over the map: no
        // copy of a hundred thousand keys.
        let mut seen: Vec<i64> = self.subjects.values().map(|s| s.last_ms).collect();
        let n = (seen.len() / 10).max(1);
        let (_, &mut cutoff, _) = seen.select_nth_unstable(n - 1);
        metrics::counter!("ioc_geo_subjects_evicted_total").increment(n as u64);
        let mut left = n;
        let mut alerted = Vec::new();
        self.subjects.retain(|subject, state| {
            if left == 0 || state.last_ms > cutoff {
                return true;
            }
            left -= 1;
            // Only a subject with a rule's tracker may have an alert to resolve.
            if !state.rules.is_empty() {
                alerted.push((subject.clone(), std::mem::take(state)));
            }
            false
        });
        let at = self.frontier;
        for (subject, state) in alerted {
            self.resolve(&subject, state, at, rules, out);
        }
    }

    /// Forgets a subject; its open alerts are resolved.
    fn forget(
        &mut self,
        subject: &Arc<str>,
        at: i64,
        rules: &RuleSet,
        out: &mut Vec<EngineOutput>,
    ) {
        if let Some(state) = self.subjects.remove(subject) {
            self.resolve(subject, state, at, rules, out);
        }
    }

    /// Resolves the open alerts of a subject being forgotten.
    fn resolve(
        &self,
        subject: &Arc<str>,
        mut state: SubjectState,
        at: i64,
        rules: &RuleSet,
        out: &mut Vec<EngineOutput>,
    ) {
        let last_ms = state.last_ms;
        for (rule_id, rule_state) in state.rules.iter_mut() {
            let Some(rule) = rules.get(rule_id) else {
                continue;
            };
            let step = rule_state
                .tracker_mut()
                .and_then(|t| t.step(0, at.max(last_ms)));
            if let Some(step) = step {
                let mut ev = Evidence::new(0.0, "", 0.0, Timestamp(at), 0);
                ev.plate = state
                    .plate
                    .then(|| subject.trim_start_matches("plate-").to_owned());
                out.push(EngineOutput::alert(subject_alert(
                    rule,
                    subject,
                    subject,
                    state.pos,
                    self.registry.areas().chain_at(state.pos),
                    step,
                    &[],
                    ev,
                    ("không còn thấy", "no longer seen"),
                )));
            }
        }
    }
}

/// The whole track of a watch-listed plate, for the map.
fn track_output(subject: &str, state: &SubjectState, rules: &RuleSet, out: &mut Vec<EngineOutput>) {
    let plate = subject.trim_start_matches("plate-");
    if rules.rules.iter().any(|r| r.logic.follows_plate(plate)) {
        out.push(EngineOutput::Track(Track {
            plate: plate.to_owned(),
            points: state.track.iter().map(point).collect(),
        }));
    }
}

fn insert_track(state: &mut SubjectState, source: &Arc<str>, ts: i64, pos: [f64; 2]) {
    let at = state.track.partition_point(|p| p.ts <= ts);
    if at > 0 && state.track[at - 1].ts == ts && state.track[at - 1].camera == *source {
        return;
    }
    state.track.insert(
        at,
        Sighting {
            camera: source.clone(),
            ts,
            pos,
            speed_kmh: None,
        },
    );
    while state.track.len() > TRACK_POINTS
        || state
            .track
            .front()
            .is_some_and(|p| p.ts < ts - SUBJECT_TTL_MS)
    {
        state.track.pop_front();
    }
    // Speeds of the new point and of the one after it.
    for i in [at, at + 1] {
        if i == 0 || i >= state.track.len() {
            if let Some(p) = state.track.get_mut(i) {
                p.speed_kmh = None;
            }
            continue;
        }
        let (a, b) = (&state.track[i - 1], &state.track[i]);
        let km = ioc_devices::distance_km(a.pos, b.pos);
        let h = (b.ts - a.ts) as f64 / 3_600_000.0;
        let speed = if h > 0.0 {
            km / h
        } else if km > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        state.track[i].speed_kmh = Some((speed * 10.0).round() / 10.0);
    }
}

/// The rules that follow a subject's zones (geofences), after it moved
/// or dwelt.
fn visit_rules(
    subject: &Arc<str>,
    state: &mut SubjectState,
    ts: i64,
    rules: &RuleSet,
    zones: &Zones,
    registry: &Registry,
    out: &mut Vec<EngineOutput>,
) {
    let cx = VisitCx {
        registry,
        zones,
        subject,
        plate: state.plate,
        pos: state.pos,
        ts,
        visits: &state.visits,
    };
    for rule in &rules.rules {
        if let Some(a) = rule.logic.on_visits(rule, &mut state.rules, &cx) {
            out.push(EngineOutput::alert(a));
        }
    }
}

/// Fills an alert's zones (those containing its position, plus the zone it
/// is about) and the nearest assets its rule asks for.
pub fn enrich(alert: &mut Alert, rules: &RuleSet, zones: &Zones) {
    let mut found = zones.at(alert.pos);
    if let Some((_, z)) = zones.find(&alert.subject)
        && !found.iter().any(|f| f.id == z.reference.id)
    {
        found.insert(0, z.reference.clone());
    }
    alert.zones = found;
    if let Some(n) = rules.get(&alert.rule).and_then(|r| r.nearest.as_ref()) {
        alert.nearest = zones.nearest(alert.pos, &n.kinds, n.count, n.within_m);
    }
}

#[cfg(test)]
mod tests;
