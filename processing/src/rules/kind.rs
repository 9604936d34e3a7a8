//! The surface every rule kind implements, and what the engine hands it.
//!
//! A kind is one type implementing [`RuleKind`] in its own module: its
//! settings (the type itself, read from the rules file by
//! [`RuleKind::parse`]), its per-subject state ([`RuleKind::State`], a
//! plain serializable value), and the hooks through which the engine steps
//! that state. Every hook has a default that does nothing, so a kind
//! implements only the moments it cares about:
//!
//! | hook | when | kinds |
//! |---|---|---|
//! | [`RuleKind::on_latest`] | a reading becomes its device's latest | `staleness` (the device is back) |
//! | [`RuleKind::on_plate_read`] | a camera reads a plate | `watchlist` |
//! | [`RuleKind::on_sample`] | the watermark passes a device's reading | `threshold`, `rate_of_change`, `surge`, `congestion` (per reading), `speed_drop` |
//! | [`RuleKind::on_rain_totals`] | a gauge's rolling rainfall totals change | `rainfall` |
//! | [`RuleKind::on_traffic_windows`] | a counter's 5-minute windows close | `congestion` with `window` |
//! | [`RuleKind::on_scan`] | the periodic scan of every device | `staleness` |
//! | [`RuleKind::zone_totals`] | a gauge's rolling total (closed, or running with a reading), sent on to its zones | `zone_rainfall` |
//! | [`RuleKind::on_zone_total`] | a zone gets a gauge's total | `zone_rainfall` |
//! | [`RuleKind::on_track`] | a plate's track gets a read | `cloned_plate` |
//! | [`RuleKind::on_visits`] | a moving subject's zones change (or it dwells) | `geofence` |
//!
//! The engine never names a kind: it calls the hooks through
//! [`Logic`](super::Logic), the closed list in [`super::registry`].
//! States live in [`States`], keyed by rule, one list per device, moving
//! subject or zone; a kind takes its own with [`States::get`].

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use ioc_devices::{DeviceIndex, Registry, Zone, Zones};
use ioc_schemas::{Alert, DeviceInfo, DeviceKind, EngineOutput, Timestamp};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::alert::{Episode, Tracker};
use super::registry::{Registered, RuleState};
use super::{Rule, RuleSet, default_kinds};
use crate::sample::{Field, Sample};

/// One rule kind: its settings are the implementing type.
///
/// Adding a kind: a module in `rules/` with a type implementing this
/// trait, and one line in [`super::registry`].
pub trait RuleKind: Clone + fmt::Debug + PartialEq + Send + Sync + Sized + 'static {
    /// The kind's name in the rules file (`kind = "..."`).
    const NAME: &'static str;
    /// What its alerts are about (Vietnamese, English) when the rule gives
    /// no `title_vi`/`title_en`.
    const TITLE: (&'static str, &'static str);
    /// The rule's state for one subject (a device, a moving subject or a
    /// zone): a plain value, bounded in size.
    type State: Clone + fmt::Debug + Default + PartialEq + Serialize + DeserializeOwned + Episode;

    /// Reads and checks the kind's own keys of a `[[rule]]` table (the
    /// common keys are taken out), reporting each problem at `at`.
    fn parse(check: &mut Check<'_>, at: &str, table: toml::Table) -> Option<Self>;

    /// The reading field it watches, if any (sets the default device
    /// kinds, and is checked against the kinds the rule names).
    fn field(&self) -> Option<Field> {
        None
    }

    /// Device kinds it watches when the rule names none.
    fn default_devices(&self) -> Vec<DeviceKind> {
        default_kinds(self.field())
    }

    /// Checks that need the rule's device selection (`kinds`, `only`).
    fn check_devices(
        &self,
        _check: &mut Check<'_>,
        _at: &str,
        _kinds: &[DeviceKind],
        _only: Option<&HashSet<DeviceIndex>>,
    ) {
    }

    /// Bytes a state holds on the heap.
    fn heap_bytes(_state: &Self::State) -> usize {
        0
    }

    /// Whether its level is the device's alarm level on the live screens.
    fn sets_device_alarm(&self) -> bool {
        false
    }

    /// Whether it needs moving subjects' positions (plates, devices with `pos`).
    fn needs_positions(&self) -> bool {
        false
    }

    /// Whether the track of this plate (normalised) is shown on the map.
    fn follows_plate(&self, _plate: &str) -> bool {
        false
    }

    /// Whether it watches this zone for subjects of this sort.
    fn watches_zone(&self, _zone: &Zone, _plate: bool) -> bool {
        false
    }

    /// Whether it runs at the periodic scan.
    fn scans(&self) -> bool {
        false
    }

    /// Whether it takes rolling rainfall totals into zones.
    fn feeds_zones(&self) -> bool {
        false
    }

    /// Whether it judges each sample on its own against the device's
    /// registry levels, so that a device's latest sample judged again
    /// after the registry changed those levels is what a new reading at
    /// that value would do (the engine then does so).
    fn judges_registry_levels(&self) -> bool {
        false
    }

    /// A reading became its device's latest (`latest.since` is the previous
    /// one's event time, outside maintenance).
    fn on_latest(
        &self,
        _rule: &Rule,
        _states: &mut States<u16>,
        _cx: &DeviceCx<'_>,
        _latest: &Latest,
        _out: &mut Vec<EngineOutput>,
    ) {
    }

    /// A camera read a plate (outside maintenance).
    fn on_plate_read(
        &self,
        _rule: &Rule,
        _cx: &DeviceCx<'_>,
        _read: &PlateRead<'_>,
    ) -> Option<Alert> {
        None
    }

    /// A device's reading, in event-time order, once the watermark passed it.
    fn on_sample(
        &self,
        _rule: &Rule,
        _states: &mut States<u16>,
        _cx: &DeviceCx<'_>,
        _sample: &Sample,
    ) -> Option<Alert> {
        None
    }

    /// A rain gauge's rolling totals changed (outside maintenance).
    fn on_rain_totals(
        &self,
        _rule: &Rule,
        _states: &mut States<u16>,
        _cx: &DeviceCx<'_>,
        _totals: &[RainTotal],
        _out: &mut Vec<EngineOutput>,
    ) {
    }

    /// A traffic counter's 5-minute windows closed (outside maintenance),
    /// oldest first; revisions of windows already judged are not passed.
    fn on_traffic_windows(
        &self,
        _rule: &Rule,
        _states: &mut States<u16>,
        _cx: &DeviceCx<'_>,
        _windows: &[TrafficMean],
        _out: &mut Vec<EngineOutput>,
    ) {
    }

    /// The periodic scan (every minute of event time), for every device.
    fn on_scan(
        &self,
        _rule: &Rule,
        _states: &mut States<u16>,
        _cx: &DeviceCx<'_>,
        _scan: &Scan,
        _out: &mut Vec<EngineOutput>,
    ) {
    }

    /// A rain gauge's rolling total: the zones it goes on to.
    fn zone_totals(
        &self,
        _rule: &Rule,
        _cx: &DeviceCx<'_>,
        _total: &GaugeTotal<'_>,
        _zones: &Zones,
        _out: &mut Vec<ZoneTotal>,
    ) {
    }

    /// A zone got a gauge's rolling total (`states` are the zone's).
    fn on_zone_total(
        &self,
        _rule: &Rule,
        _states: &mut States<Arc<str>>,
        _cx: &ZoneCx<'_>,
    ) -> Option<Alert> {
        None
    }

    /// A plate's track got a new latest read (`states` are the plate's).
    fn on_track(
        &self,
        _rule: &Rule,
        _states: &mut States<Arc<str>>,
        _cx: &TrackCx<'_>,
    ) -> Option<Alert> {
        None
    }

    /// A moving subject moved or dwelt (`states` are the subject's).
    fn on_visits(
        &self,
        _rule: &Rule,
        _states: &mut States<Arc<str>>,
        _cx: &VisitCx<'_>,
    ) -> Option<Alert> {
        None
    }
}

/// What a device hook sees: the rules in force and the device.
pub struct DeviceCx<'a> {
    /// The rules in force (levels from the registry, maintenance).
    pub rules: &'a RuleSet,
    /// The registry.
    pub registry: &'a Registry,
    /// The device's registry index.
    pub index: DeviceIndex,
    /// The device.
    pub device: &'a DeviceInfo,
}

impl DeviceCx<'_> {
    /// Whether the device's alerts are muted at event time `ts`: in a
    /// maintenance window of the rules file, or in maintenance (or
    /// retired) in the registry.
    pub fn muted(&self, ts: i64) -> bool {
        self.device.muted_at(ts) || self.rules.in_maintenance(self.index, ts)
    }
}

/// A reading that became its device's latest, after an earlier one.
#[derive(Clone, Copy, Debug)]
pub struct Latest {
    /// Event time of the previous latest reading, ms.
    pub since: i64,
    /// Its sequence number.
    pub previous_seq: u64,
    /// This reading's event time.
    pub ts: Timestamp,
    /// Its sequence number.
    pub seq: u64,
}

/// A plate read by a camera.
#[derive(Clone, Copy, Debug)]
pub struct PlateRead<'a> {
    /// The plate as read.
    pub plate: &'a str,
    /// Where the read vehicle was.
    pub pos: [f64; 2],
    /// Event time.
    pub ts: Timestamp,
    /// The reading's sequence number.
    pub seq: u64,
}

/// A rolling rainfall total that changed: `(end ms, window ms, total mm,
/// complete, revision)`.
pub type RainTotal = (i64, i64, f64, bool, bool);

/// A closed 5-minute traffic window: `(end ms, mean speed km/h weighted by
/// vehicles, mean occupancy %)`, each `None` when no reading gave it.
pub type TrafficMean = (i64, Option<f64>, Option<f64>);

/// The periodic scan's view of one device.
#[derive(Clone, Copy, Debug)]
pub struct Scan {
    /// The device's latest event time, or when the engine started if it
    /// was never heard from, ms.
    pub since: i64,
    /// The scan's event time, ms.
    pub now: i64,
    /// The latest sequence number, when the device was heard from.
    pub seq: Option<u64>,
}

/// A rain gauge's rolling total: of a window that closed, or running (as
/// a reading makes it, a lower bound of what the window closes at).
#[derive(Clone, Debug, PartialEq)]
pub struct GaugeTotal<'a> {
    /// The gauge.
    pub gauge: &'a Arc<str>,
    /// The window's length, ms.
    pub window_ms: i64,
    /// Event time the window ends (closes), ms.
    pub end_ms: i64,
    /// Event time the total is judged at: the close, or the reading's.
    pub at_ms: i64,
    /// The total, mm.
    pub total_mm: f64,
    /// For a running total, what it was before the reading, mm.
    pub before_mm: f64,
    /// Whether it is a running total.
    pub running: bool,
}

/// A gauge's rolling total for one zone of one rule.
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneTotal {
    /// The rule's id.
    pub rule: Arc<str>,
    /// The zone's id.
    pub zone: Arc<str>,
    /// The gauge.
    pub gauge: Arc<str>,
    /// Event time the window ends, ms.
    pub end_ms: i64,
    /// Event time it is judged at (the close, or the reading's), ms.
    pub at_ms: i64,
    /// The total, mm.
    pub total_mm: f64,
    /// Whether it is a running total (a lower bound: it only raises).
    pub running: bool,
}

/// What a zone hook sees.
pub struct ZoneCx<'a> {
    /// The registry (administrative areas).
    pub registry: &'a Registry,
    /// The zone.
    pub zone: &'a Zone,
    /// The gauge whose total arrived.
    pub gauge: &'a Arc<str>,
    /// Event time its window ends, ms.
    pub end_ms: i64,
    /// Event time it is judged at, ms.
    pub at_ms: i64,
    /// Its total, mm.
    pub total_mm: f64,
    /// Whether it is a running total (a lower bound: it only raises).
    pub running: bool,
}

/// One read in a plate's track.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sighting {
    /// The camera (the registry's shared id).
    pub camera: Arc<str>,
    /// Event time, ms.
    pub ts: i64,
    /// Where.
    pub pos: [f64; 2],
    /// Speed from the read before, km/h.
    pub speed_kmh: Option<f64>,
}

/// What a track hook sees: a plate's two latest reads.
pub struct TrackCx<'a> {
    /// The registry (administrative areas).
    pub registry: &'a Registry,
    /// The subject id (`plate-…`).
    pub subject: &'a Arc<str>,
    /// The read before the latest.
    pub before: &'a Sighting,
    /// The latest read.
    pub latest: &'a Sighting,
}

/// A moving subject's stay in a zone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Visit {
    /// The zone's id.
    pub zone: Arc<str>,
    /// Event time it entered, ms.
    pub since_ms: i64,
    /// Whether it has stayed the zone's `dwell_s`.
    pub dwelt: bool,
}

/// What a visit hook sees: a moving subject and the zones it is in.
pub struct VisitCx<'a> {
    /// The registry (administrative areas).
    pub registry: &'a Registry,
    /// The zones in force.
    pub zones: &'a Zones,
    /// The subject id (a device id, or `plate-…`).
    pub subject: &'a Arc<str>,
    /// Whether it is a plate.
    pub plate: bool,
    /// Where it is.
    pub pos: [f64; 2],
    /// Event time, ms.
    pub ts: i64,
    /// The zones it is in.
    pub visits: &'a [Visit],
}

/// Which rule a state belongs to: a device keeps its rules' states by
/// their position in the rules, a moving subject or a zone by rule id.
pub trait RuleKey: Sized {
    /// The key of `rule`.
    fn of(rule: &Rule) -> Self;
    /// Whether this is the key of `rule`.
    fn is(&self, rule: &Rule) -> bool;
}

impl RuleKey for u16 {
    fn of(rule: &Rule) -> Self {
        rule.position
    }
    fn is(&self, rule: &Rule) -> bool {
        *self == rule.position
    }
}

impl RuleKey for Arc<str> {
    fn of(rule: &Rule) -> Self {
        rule.id.clone()
    }
    fn is(&self, rule: &Rule) -> bool {
        **self == *rule.id
    }
}

/// One subject's rule states, by rule. A subject has a handful of rules,
/// so a list: no room to spare, no hashing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct States<K> {
    entries: Vec<(K, RuleState)>,
}

impl<K: RuleKey> States<K> {
    /// The state of `rule` of kind `R`, if there is one of that kind.
    pub fn peek<R: Registered>(&self, rule: &Rule) -> Option<&R::State> {
        self.entries
            .iter()
            .find(|(k, _)| k.is(rule))
            .and_then(|(_, s)| R::project(s))
    }

    /// The state of `rule` of kind `R`: created, or reset when the rule's
    /// state was of another kind.
    pub fn get<R: Registered>(&mut self, rule: &Rule) -> &mut R::State {
        let i = match self.entries.iter().position(|(k, _)| k.is(rule)) {
            Some(i) => {
                if R::project(&self.entries[i].1).is_none() {
                    self.entries[i].1 = R::wrap(R::State::default());
                }
                i
            }
            None => {
                self.entries.reserve_exact(1);
                self.entries
                    .push((K::of(rule), R::wrap(R::State::default())));
                self.entries.len() - 1
            }
        };
        match R::project_mut(&mut self.entries[i].1) {
            Some(s) => s,
            // Just made of this kind.
            None => unreachable!("a state of the kind just stored"),
        }
    }

    /// Whether `rule` has an open episode.
    pub fn is_open(&self, rule: &Rule) -> bool {
        self.entries
            .iter()
            .find(|(k, _)| k.is(rule))
            .and_then(|(_, s)| s.tracker())
            .is_some_and(|t| t.level() > 0)
    }

    /// The level of `rule`'s episode (0 when none).
    pub fn level(&self, rule: &Rule) -> u8 {
        self.entries
            .iter()
            .find(|(k, _)| k.is(rule))
            .and_then(|(_, s)| s.tracker())
            .map_or(0, Tracker::level)
    }
}

impl<K> States<K> {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps the states `keep` says to (it may re-key them).
    pub fn retain_mut(&mut self, keep: impl FnMut(&mut K, &mut RuleState) -> bool) {
        let mut keep = keep;
        self.entries.retain_mut(|(k, s)| keep(k, s));
    }

    /// The same states under other keys (`None` drops a state).
    pub fn rekey<L>(&self, mut key: impl FnMut(&K) -> Option<L>) -> States<L>
    where
        RuleState: Clone,
    {
        States {
            entries: self
                .entries
                .iter()
                .filter_map(|(k, s)| Some((key(k)?, s.clone())))
                .collect(),
        }
    }

    /// Every state with its key.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut RuleState)> {
        self.entries.iter_mut().map(|(k, s)| (&*k, s))
    }

    /// Bytes the list takes beyond its own size.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(K, RuleState)>()
            + self
                .entries
                .iter()
                .map(|(_, s)| s.heap_bytes())
                .sum::<usize>()
    }
}

/// Reads a file the rules name: its text, with its path when it is a file.
pub type ReadResult = Result<(String, Option<PathBuf>), String>;

/// Collects problems while a rules file is checked, and reads the files
/// it names.
pub struct Check<'a> {
    /// The registry the rules are checked against.
    pub registry: &'a Registry,
    pub(crate) problems: Vec<String>,
    pub(crate) read: &'a (dyn Fn(&str) -> ReadResult + 'a),
    pub(crate) files: Vec<PathBuf>,
}

impl Check<'_> {
    /// Reports a problem at `at` (`rule {id}`).
    pub fn problem(&mut self, at: &str, text: impl fmt::Display) {
        self.problems.push(format!("{at}: {text}"));
    }

    /// A file the rules name (a watch list): its text. Watched for
    /// changes from then on.
    pub fn read(&mut self, name: &str) -> Result<String, String> {
        let (text, path) = (self.read)(name)?;
        self.files.extend(path);
        Ok(text)
    }

    /// The kind's keys as its spec type, or the problem.
    pub fn spec<T: DeserializeOwned>(&mut self, at: &str, table: toml::Table) -> Option<T> {
        match T::deserialize(toml::Value::Table(table)) {
            Ok(t) => Some(t),
            Err(e) => {
                self.problem(at, e.to_string().trim());
                None
            }
        }
    }

    /// `v` must be a positive number.
    pub fn positive(&mut self, at: &str, key: &str, v: f64) {
        if !(v.is_finite() && v > 0.0) {
            self.problem(at, format!("{key} must be a positive number, not {v}"));
        }
    }

    /// `v` must be zero or more.
    pub fn non_negative(&mut self, at: &str, key: &str, v: f64) {
        if !(v.is_finite() && v >= 0.0) {
            self.problem(at, format!("{key} must be zero or more, not {v}"));
        }
    }

    /// A duration longer than zero, in ms.
    pub fn duration(&mut self, at: &str, key: &str, d: std::time::Duration) -> i64 {
        if d.is_zero() {
            self.problem(at, format!("{key} must be longer than zero"));
        }
        d.as_millis().min(i64::MAX as u128) as i64
    }

    /// A duration a sample history spans (rate, surge, speed-drop
    /// baseline), in ms.
    pub fn history(&mut self, at: &str, key: &str, d: std::time::Duration) -> i64 {
        let ms = self.duration(at, key, d);
        if ms > super::history::MAX_HISTORY_MS {
            self.problem(at, format!("{key} must be at most 7 days"));
        }
        ms
    }

    /// Levels from the file, checked: named, finite, strictly increasing
    /// (decreasing when `decreasing`).
    pub fn levels(
        &mut self,
        at: &str,
        specs: Vec<LevelSpec>,
        decreasing: bool,
    ) -> Vec<super::Level> {
        if specs.is_empty() {
            self.problem(at, "levels: give at least one level");
        }
        let levels: Vec<super::Level> = specs
            .into_iter()
            .map(|l| super::Level {
                name: l.name,
                value: l.value,
                severity: l.severity,
            })
            .collect();
        for pair in levels.windows(2) {
            let ordered = if decreasing {
                pair[1].value < pair[0].value
            } else {
                pair[1].value > pair[0].value
            };
            if !ordered {
                let way = if decreasing { "decrease" } else { "increase" };
                self.problem(
                    at,
                    format!(
                        "levels must strictly {way}: {} then {}",
                        pair[0].value, pair[1].value
                    ),
                );
            }
        }
        for l in &levels {
            if !l.value.is_finite() {
                self.problem(
                    at,
                    format!("level {}: value must be a finite number", l.name),
                );
            }
            if l.name.trim().is_empty() {
                self.problem(at, "every level needs a name");
            }
        }
        levels
    }

    /// Device ids from the file, each looked up in the registry.
    pub fn devices(&mut self, at: &str, ids: &[String]) -> HashSet<DeviceIndex> {
        let mut out = HashSet::new();
        for id in ids {
            match self.registry.lookup(id) {
                Some(i) => {
                    out.insert(i);
                }
                None => self.problem(at, format!("device {id:?} is not in the registry")),
            }
        }
        out
    }
}

/// One level as the rules file writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelSpec {
    name: String,
    value: f64,
    #[serde(default = "minor")]
    severity: ioc_schemas::Severity,
}

/// Default severities of the rules file.
pub fn minor() -> ioc_schemas::Severity {
    ioc_schemas::Severity::Minor
}

/// See [`minor`].
pub fn moderate() -> ioc_schemas::Severity {
    ioc_schemas::Severity::Moderate
}

/// See [`minor`].
pub fn severe() -> ioc_schemas::Severity {
    ioc_schemas::Severity::Severe
}
