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
    Alert, AreaRef, AssetKind, EngineOutput, Evidence, GeofenceEvent, GeofenceTransition, Severity,
    Timestamp, Track, TrackPoint, ZoneKind,
};

use crate::rules::alert::{Step, Tracker};
use crate::rules::watchlist::with_normalised;
use crate::rules::{Level, Logic, Rule, RuleSet};

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

/// The zones a rule watches: by kind, and optionally only these ids.
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneFilter {
    /// Kinds; empty means every kind.
    pub kinds: Vec<ZoneKind>,
    /// Ids; empty means every zone of the kinds.
    pub ids: Vec<String>,
}

impl ZoneFilter {
    /// Whether the filter takes this zone.
    pub fn takes(&self, zone: &ioc_devices::Zone) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&zone.reference.kind))
            && (self.ids.is_empty() || self.ids.contains(&zone.reference.id))
    }
}

/// When a `geofence` rule raises its alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeofenceOn {
    /// As soon as the subject is inside.
    Enter,
    /// Once it has been inside longer than the zone's `dwell_s`.
    Dwell,
}

/// A `geofence` rule's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Geofence {
    /// The zones it watches.
    pub zones: ZoneFilter,
    /// When it raises.
    pub on: GeofenceOn,
    /// Severity of its alerts.
    pub severity: Severity,
    /// Only plates (camera reads), only devices, or both.
    pub subjects: Subjects,
}

/// Which moving subjects a rule looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subjects {
    /// Plates and devices.
    All,
    /// Plates read by cameras.
    Plates,
    /// Devices reporting their own position.
    Devices,
}

/// A `cloned_plate` rule's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct ClonedPlate {
    /// Fastest plausible speed between two reads, km/h.
    pub max_speed_kmh: f64,
    /// Reads closer than this are never implausible (one junction's
    /// cameras), metres.
    pub min_distance_m: f64,
    /// Severity of its alerts.
    pub severity: Severity,
}

/// A `zone_rainfall` rule's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneRainfall {
    /// The zones it watches.
    pub zones: ZoneFilter,
    /// Gauges this far outside a zone count for it too, metres.
    pub within_m: f64,
    /// The rolling window, its levels (increasing) and how far below a
    /// level a total must fall to stop counting for it.
    pub rain: crate::rules::threshold::Rainfall,
    /// How many gauges must reach a level.
    pub min_gauges: usize,
}

/// The nearest assets a rule's alerts carry.
#[derive(Clone, Debug, PartialEq)]
pub struct Nearest {
    /// Asset kinds.
    pub kinds: Vec<AssetKind>,
    /// How many.
    pub count: usize,
    /// No farther than this, metres.
    pub within_m: Option<f64>,
}

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
        /// The total, mm.
        total_mm: f64,
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
            GeoItem::Rain { end_ms, .. } => *end_ms,
        }
    }

    /// The order items are applied in: event time, then subject or zone,
    /// then source.
    pub fn cmp_order(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }

    fn order(&self) -> (i64, &str, &str) {
        match self {
            GeoItem::Position {
                ts,
                subject,
                source,
                ..
            } => (*ts, subject, source),
            GeoItem::Rain {
                end_ms,
                zone,
                gauge,
                ..
            } => (*end_ms, zone, gauge),
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
    rules.rules.iter().any(|r| {
        matches!(
            r.logic,
            Logic::Geofence(_) | Logic::ClonedPlate(_) | Logic::Watchlist(_)
        )
    })
}

/// Whether a geofence rule watches this zone for this kind of subject.
fn watched(rules: &RuleSet, zone: &ioc_devices::Zone, plate: bool) -> bool {
    rules.rules.iter().any(|r| match &r.logic {
        Logic::Geofence(g) => {
            g.zones.takes(zone)
                && match g.subjects {
                    Subjects::All => true,
                    Subjects::Plates => plate,
                    Subjects::Devices => !plate,
                }
        }
        _ => false,
    })
}

/// The operator's maps: their keys are plates and ids from the field,
/// hashed on every read, with foldhash (seeded per process) rather than
/// SipHash.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A visit of a subject to a zone.
#[derive(Clone, Debug)]
struct Visit {
    zone: Arc<str>,
    since_ms: i64,
    dwelt: bool,
}

/// One read in a track, kept compact (the camera is the registry's
/// shared id); a [`TrackPoint`] only when a track is output.
#[derive(Clone, Debug)]
struct Read {
    camera: Arc<str>,
    ts: i64,
    pos: [f64; 2],
    speed_kmh: Option<f64>,
}

impl Read {
    fn point(&self) -> TrackPoint {
        TrackPoint {
            camera: self.camera.to_string(),
            ts: Timestamp(self.ts),
            pos: self.pos,
            speed_kmh: self.speed_kmh,
        }
    }
}

#[derive(Debug, Default)]
struct SubjectState {
    last_ms: i64,
    pos: [f64; 2],
    source: Arc<str>,
    plate: bool,
    visits: Vec<Visit>,
    track: VecDeque<Read>,
    /// Alert trackers of this subject, by rule id.
    trackers: Vec<(Arc<str>, Tracker)>,
}

#[derive(Debug, Default)]
struct ZoneRainState {
    totals: Map<Arc<str>, (i64, f64)>,
    /// Level each gauge counts for (with hysteresis), by gauge.
    tracker: Tracker,
}

/// The geo operator's state on one worker: the subjects and zones it owns.
#[derive(Debug)]
pub struct GeoState {
    registry: Arc<Registry>,
    subjects: Map<Arc<str>, SubjectState>,
    /// Pending dwell checks: (due, subject, zone).
    dwell_due: BTreeSet<(i64, Arc<str>, Arc<str>)>,
    zone_rain: Map<(Arc<str>, Arc<str>), ZoneRainState>,
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
            zone_rain: Map::default(),
            found: Vec::new(),
            frontier: 0,
            last_scan: 0,
        }
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
                } => self.position(subject, source, *plate, *ts, *pos, rules, zones, out),
                GeoItem::Rain {
                    rule,
                    zone,
                    gauge,
                    end_ms,
                    total_mm,
                } => self.rain(rule, zone, gauge, *end_ms, *total_mm, rules, zones, out),
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
            let speed = state.track.back().and_then(|p| p.speed_kmh);
            cloned_plate(subject, state, speed, rules, &self.registry, out);
            track_output(subject, state, rules, out);
        }
        geofence_rules(subject, state, ts, rules, zones, &self.registry, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn rain(
        &mut self,
        rule_id: &Arc<str>,
        zone_id: &Arc<str>,
        gauge: &Arc<str>,
        end_ms: i64,
        total_mm: f64,
        rules: &RuleSet,
        zones: &Zones,
        out: &mut Vec<EngineOutput>,
    ) {
        let Some(rule) = rules.get(rule_id) else {
            return;
        };
        let Logic::ZoneRainfall(spec) = &rule.logic else {
            return;
        };
        let Some((_, zone)) = zones.find(zone_id) else {
            return;
        };
        let state = self
            .zone_rain
            .entry((rule_id.clone(), zone_id.clone()))
            .or_default();
        match state.totals.get(gauge) {
            Some((end, _)) if *end > end_ms => return,
            _ => {
                state.totals.insert(gauge.clone(), (end_ms, total_mm));
            }
        }
        // Totals of gauges that stopped reporting a window ago no longer count.
        state
            .totals
            .retain(|_, (end, _)| *end > end_ms - spec.rain.window_ms);
        let current = state.tracker.level();
        let counted = |level: &Level, index: usize| {
            // Staying at a level takes a total above it minus the hysteresis.
            let floor = if index < usize::from(current) {
                level.value - spec.rain.hysteresis
            } else {
                level.value
            };
            let mut over: Vec<(&Arc<str>, f64)> = state
                .totals
                .iter()
                .filter(|(_, (_, t))| *t >= floor)
                .map(|(g, (_, t))| (g, *t))
                .collect();
            over.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
            over
        };
        let mut level = 0u8;
        let mut gauges = Vec::new();
        for (i, l) in spec.rain.levels.iter().enumerate() {
            let over = counted(l, i);
            if over.len() >= spec.min_gauges {
                level = (i + 1) as u8;
                gauges = over;
            }
        }
        if level == 0 {
            gauges = counted(&spec.rain.levels[0], 0);
        }
        let Some(step) = state.tracker.step(level, end_ms) else {
            return;
        };
        let value = gauges
            .get(spec.min_gauges.saturating_sub(1))
            .map_or(0.0, |g| g.1);
        let mut ev = Evidence::new(
            value,
            "mm",
            crate::rules::alert::level_value(&spec.rain.levels, step),
            Timestamp(end_ms),
            0,
        );
        ev.window_s = Some((spec.rain.window_ms / 1000) as u32);
        ev.related = gauges.iter().map(|g| g.0.to_string()).collect();
        let n = ev.related.len();
        let what_vi = format!("{n} trạm đo mưa");
        let what_en = format!("{n} rain gauges");
        out.push(EngineOutput::alert(subject_alert(
            rule,
            &zone.reference.id,
            &zone.reference.name,
            zone.centre,
            self.registry.areas().chain_at(zone.centre),
            step,
            &spec.rain.levels,
            ev,
            (&what_vi, &what_en),
        )));
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
            let Some(state) = self.subjects.get_mut(&subject) else {
                continue;
            };
            let Some((_, zone)) = zones.find(&zone_id) else {
                continue;
            };
            let Some(visit) = state
                .visits
                .iter_mut()
                .find(|v| v.zone == zone_id && !v.dwelt)
            else {
                continue;
            };
            if zone
                .dwell_s
                .is_none_or(|d| visit.since_ms + d as i64 * 1000 > due)
            {
                continue;
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
            geofence_rules(&subject, state, due, rules, zones, &self.registry, out);
        }
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
            if !state.trackers.is_empty() {
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
        for (rule_id, tracker) in state.trackers.iter_mut() {
            let Some(rule) = rules.get(rule_id) else {
                continue;
            };
            if let Some(step) = tracker.step(0, at.max(state.last_ms)) {
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
    // Already normalised: look it up as it is.
    let watched = rules.rules.iter().any(|r| match &r.logic {
        Logic::Watchlist(w) => w.plates.contains(plate),
        _ => false,
    });
    if watched {
        out.push(EngineOutput::Track(Track {
            plate: plate.to_owned(),
            points: state.track.iter().map(Read::point).collect(),
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
        Read {
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

fn cloned_plate(
    subject: &Arc<str>,
    state: &mut SubjectState,
    speed: Option<f64>,
    rules: &RuleSet,
    registry: &Registry,
    out: &mut Vec<EngineOutput>,
) {
    let n = state.track.len();
    if n < 2 {
        return;
    }
    let (a, b) = (state.track[n - 2].clone(), state.track[n - 1].clone());
    let metres = ioc_devices::distance_km(a.pos, b.pos) * 1000.0;
    for rule in &rules.rules {
        let Logic::ClonedPlate(spec) = &rule.logic else {
            continue;
        };
        let implausible =
            metres >= spec.min_distance_m && speed.is_some_and(|s| s > spec.max_speed_kmh);
        if !implausible {
            continue;
        }
        let tracker = tracker_of(state, &rule.id);
        let Some(step) = tracker.step(1, b.ts) else {
            continue;
        };
        let plate = subject.trim_start_matches("plate-").to_owned();
        let shown = speed.map_or(0.0, |s| if s.is_finite() { s } else { 99_999.0 });
        let mut ev = Evidence::new(
            (shown * 10.0).round() / 10.0,
            "km/h",
            spec.max_speed_kmh,
            Timestamp(b.ts),
            0,
        );
        ev.plate = Some(plate.clone());
        ev.related = vec![a.camera.to_string(), b.camera.to_string()];
        let levels = [Level {
            name: plate.clone(),
            value: spec.max_speed_kmh,
            severity: spec.severity,
        }];
        let vi = format!(
            "{} và {} cách nhau {:.1} km",
            a.camera,
            b.camera,
            metres / 1000.0
        );
        let en = format!(
            "{} and {} are {:.1} km apart",
            a.camera,
            b.camera,
            metres / 1000.0
        );
        out.push(EngineOutput::alert(subject_alert(
            rule,
            subject,
            &plate,
            b.pos,
            registry.areas().chain_at(b.pos),
            step,
            &levels,
            ev,
            (&vi, &en),
        )));
    }
}

fn tracker_of<'a>(state: &'a mut SubjectState, rule: &Arc<str>) -> &'a mut Tracker {
    let at = match state.trackers.iter().position(|(r, _)| r == rule) {
        Some(i) => i,
        None => {
            state.trackers.push((rule.clone(), Tracker::default()));
            state.trackers.len() - 1
        }
    };
    &mut state.trackers[at].1
}

fn geofence_rules(
    subject: &Arc<str>,
    state: &mut SubjectState,
    ts: i64,
    rules: &RuleSet,
    zones: &Zones,
    registry: &Registry,
    out: &mut Vec<EngineOutput>,
) {
    for rule in &rules.rules {
        let Logic::Geofence(spec) = &rule.logic else {
            continue;
        };
        let applies = match spec.subjects {
            Subjects::All => true,
            Subjects::Plates => state.plate,
            Subjects::Devices => !state.plate,
        };
        if !applies {
            continue;
        }
        let inside: Vec<&ioc_devices::Zone> = state
            .visits
            .iter()
            .filter(|v| spec.on == GeofenceOn::Enter || v.dwelt)
            .filter_map(|v| zones.find(&v.zone).map(|(_, z)| z))
            .filter(|z| spec.zones.takes(z))
            .collect();
        let level = u8::from(!inside.is_empty());
        // Outside every zone and never alerted: nothing to track (a new
        // tracker would step from 0 to 0 and say nothing).
        if level == 0 && !state.trackers.iter().any(|(r, _)| *r == rule.id) {
            continue;
        }
        let names: Vec<String> = inside.iter().map(|z| z.reference.name.clone()).collect();
        let ids: Vec<String> = inside.iter().map(|z| z.reference.id.clone()).collect();
        let pos = state.pos;
        let plate = state.plate;
        let tracker = tracker_of(state, &rule.id);
        let Some(step) = tracker.step(level, ts) else {
            continue;
        };
        let mut ev = Evidence::new(ids.len() as f64, "zones", 1.0, Timestamp(ts), 0);
        ev.related = ids;
        ev.plate = plate.then(|| subject.trim_start_matches("plate-").to_owned());
        let levels = [Level {
            name: match spec.on {
                GeofenceOn::Enter => "Trong vùng".to_owned(),
                GeofenceOn::Dwell => "Lưu lại".to_owned(),
            },
            value: 1.0,
            severity: spec.severity,
        }];
        let name = ev.plate.clone().unwrap_or_else(|| subject.to_string());
        let (vi, en) = if names.is_empty() {
            ("đã rời vùng".to_owned(), "has left".to_owned())
        } else {
            (names.join(", "), names.join(", "))
        };
        out.push(EngineOutput::alert(subject_alert(
            rule,
            subject,
            &name,
            pos,
            registry.areas().chain_at(pos),
            step,
            &levels,
            ev,
            (&vi, &en),
        )));
    }
}

/// The alert of a step about a subject that is not a registered device (a
/// plate, a zone): titled `{rule} – {name}: {what}`.
#[allow(clippy::too_many_arguments)]
fn subject_alert(
    rule: &Rule,
    subject: &str,
    name: &str,
    pos: [f64; 2],
    area: Vec<AreaRef>,
    step: Step,
    levels: &[Level],
    evidence: Evidence,
    what: (&str, &str),
) -> Alert {
    let cleared = if step.level == 0 {
        ("Đã hết: ", "Cleared: ")
    } else {
        ("", "")
    };
    crate::rules::alert::assemble(rule, subject, pos, area, step, levels, evidence, |_| {
        (
            format!("{}{} – {name}: {}", cleared.0, rule.title_vi, what.0),
            format!("{}{} – {name}: {}", cleared.1, rule.title_en, what.1),
        )
    })
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
