//! The rules file: parsing, validation (every problem at once), loading.
//!
//! ```toml
//! [[rule]]
//! id = "river_level"          # unique; the first part of its alerts' ids
//! kind = "threshold"          # threshold | rate_of_change | rainfall | staleness
//!                             # | congestion | speed_drop | surge | watchlist
//! devices = ["river_gauge"]   # device kinds (default: those carrying the field)
//! ids = ["river-to-hieu"]     # optional: only these devices
//! title_vi = "Mực nước sông"  # what the alert is about, in both languages
//! title_en = "River water level"
//! field = "water_level_m"     # then the kind's own keys
//! levels = "registry"
//! hysteresis = 0.2
//!
//! [[maintenance]]
//! ids = ["traffic-ql6-mai-son"]
//! from = "2026-11-20T01:00:00Z"
//! to = "2026-11-20T05:00:00Z"
//! reason = "Thay cảm biến"
//! ```
//!
//! `deploy/rules.toml` configures every kind for the Sơn La demo and
//! explains each key.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ioc_devices::{DeviceIndex, Registry};
use ioc_schemas::{AssetKind, DeviceInfo, DeviceKind, Severity, Timestamp, ZoneKind};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::rate::{MAX_HISTORY_MS, RateOfChange, Surge};
use super::staleness::Staleness;
use super::threshold::{Rainfall, Threshold};
use super::traffic::{Congestion, SpeedDrop};
use super::watchlist::{Watchlist, normalise};
use super::{Level, Levels, Logic, Maintenance, Rule, default_kinds, registry_levels};
use crate::geo::{ClonedPlate, Geofence, GeofenceOn, Nearest, Subjects, ZoneFilter, ZoneRainfall};
use crate::sample::Field;
use crate::windows::RAIN_WINDOWS_MS;

/// A validated rules file.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    /// The rules, in file order.
    pub rules: Vec<Rule>,
    /// Maintenance windows.
    pub maintenance: Vec<Maintenance>,
    /// Files the set was read from (the rules file and watch lists), for
    /// reloading when one changes.
    pub files: Vec<PathBuf>,
    /// Positions in `rules` of the rules watching each device kind (in
    /// `DeviceKind::ALL` order), so a reading only meets its own rules.
    by_kind: [Vec<usize>; DeviceKind::ALL.len()],
    /// Each device's levels from the registry, worked out once.
    registry_levels: Vec<Box<[Level]>>,
}

/// Every problem found in a rules file.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct RuleErrors(pub Vec<String>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s) in the rules:", self.0.len())?;
        for p in &self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Keys every rule has; the rest belong to its kind.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    id: String,
    kind: String,
    #[serde(default)]
    devices: Option<Vec<DeviceKind>>,
    #[serde(default)]
    ids: Option<Vec<String>>,
    #[serde(default)]
    title_vi: Option<String>,
    #[serde(default)]
    title_en: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    nearest: Option<NearestSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NearestSpec {
    kinds: Vec<AssetKind>,
    #[serde(default = "three_assets")]
    count: usize,
    #[serde(default)]
    within_m: Option<f64>,
}

fn three_assets() -> usize {
    3
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GeofenceSpec {
    #[serde(default)]
    zone_kinds: Vec<ZoneKind>,
    #[serde(default)]
    zones: Vec<String>,
    #[serde(default = "on_enter")]
    on: String,
    #[serde(default = "all_subjects")]
    subjects: String,
    #[serde(default = "severe")]
    severity: Severity,
}

fn on_enter() -> String {
    "enter".to_owned()
}

fn all_subjects() -> String {
    "all".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClonedPlateSpec {
    #[serde(default = "max_speed")]
    max_speed_kmh: f64,
    #[serde(default = "min_distance")]
    min_distance_m: f64,
    #[serde(default = "severe")]
    severity: Severity,
}

fn max_speed() -> f64 {
    150.0
}

fn min_distance() -> f64 {
    2000.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneRainfallSpec {
    #[serde(default)]
    zone_kinds: Vec<ZoneKind>,
    #[serde(default)]
    zones: Vec<String>,
    #[serde(default)]
    within_m: f64,
    #[serde(with = "humantime_serde")]
    window: Duration,
    levels: Vec<LevelSpec>,
    #[serde(default)]
    hysteresis: Option<f64>,
    #[serde(default = "two")]
    min_gauges: usize,
}

fn two() -> usize {
    2
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LevelsSpec {
    Named(String),
    Fixed(Vec<LevelSpec>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelSpec {
    name: String,
    value: f64,
    #[serde(default = "minor")]
    severity: Severity,
}

fn minor() -> Severity {
    Severity::Minor
}
fn moderate() -> Severity {
    Severity::Moderate
}
fn severe() -> Severity {
    Severity::Severe
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdSpec {
    field: Field,
    levels: LevelsSpec,
    #[serde(default)]
    below: bool,
    #[serde(default)]
    hysteresis: f64,
    #[serde(default = "one")]
    min_samples: u32,
    #[serde(default, with = "humantime_serde")]
    min_duration: Option<Duration>,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateSpec {
    field: Field,
    #[serde(with = "humantime_serde")]
    window: Duration,
    per_hour: f64,
    #[serde(default)]
    clear_per_hour: Option<f64>,
    #[serde(default = "three")]
    min_samples: u32,
    #[serde(default)]
    project_to: Option<String>,
    #[serde(default = "moderate")]
    severity: Severity,
}

fn three() -> u32 {
    3
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RainfallSpec {
    #[serde(with = "humantime_serde")]
    window: Duration,
    levels: Vec<LevelSpec>,
    #[serde(default)]
    hysteresis: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StalenessSpec {
    #[serde(default = "factor")]
    factor: f64,
    #[serde(default = "minor")]
    severity: Severity,
}

fn factor() -> f64 {
    3.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CongestionSpec {
    speed_below_kmh: f64,
    occupancy_above_pct: f64,
    #[serde(rename = "for", with = "humantime_serde")]
    for_: Duration,
    #[serde(default = "five")]
    speed_margin_kmh: f64,
    #[serde(default = "five")]
    occupancy_margin_pct: f64,
    #[serde(default = "moderate")]
    severity: Severity,
}

fn five() -> f64 {
    5.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpeedDropSpec {
    drop_pct: f64,
    #[serde(with = "humantime_serde")]
    baseline: Duration,
    #[serde(default)]
    min_baseline_kmh: f64,
    #[serde(default = "severe")]
    severity: Severity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SurgeSpec {
    field: Field,
    #[serde(with = "humantime_serde")]
    window: Duration,
    increase: f64,
    #[serde(default)]
    related_within_km: f64,
    #[serde(default = "severe")]
    severity: Severity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchlistSpec {
    #[serde(default)]
    plates: Vec<String>,
    #[serde(default)]
    file: Option<String>,
    #[serde(default = "severe")]
    severity: Severity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceSpec {
    ids: Vec<String>,
    from: Timestamp,
    to: Timestamp,
    #[serde(default)]
    #[allow(dead_code)]
    reason: Option<String>,
}

/// Collects problems while a file is checked.
struct Check<'a> {
    registry: &'a Registry,
    problems: Vec<String>,
}

impl Check<'_> {
    fn problem(&mut self, at: &str, text: impl fmt::Display) {
        self.problems.push(format!("{at}: {text}"));
    }

    fn kind_spec<T: DeserializeOwned>(&mut self, at: &str, rest: toml::Table) -> Option<T> {
        match T::deserialize(toml::Value::Table(rest)) {
            Ok(t) => Some(t),
            Err(e) => {
                self.problem(at, e.to_string().trim());
                None
            }
        }
    }

    fn positive(&mut self, at: &str, key: &str, v: f64) {
        if !(v.is_finite() && v > 0.0) {
            self.problem(at, format!("{key} must be a positive number, not {v}"));
        }
    }

    fn non_negative(&mut self, at: &str, key: &str, v: f64) {
        if !(v.is_finite() && v >= 0.0) {
            self.problem(at, format!("{key} must be zero or more, not {v}"));
        }
    }

    fn duration(&mut self, at: &str, key: &str, d: Duration) -> i64 {
        if d.is_zero() {
            self.problem(at, format!("{key} must be longer than zero"));
        }
        d.as_millis().min(i64::MAX as u128) as i64
    }

    /// A duration a sample history spans (rate, surge, speed-drop baseline).
    fn history(&mut self, at: &str, key: &str, d: Duration) -> i64 {
        let ms = self.duration(at, key, d);
        if ms > MAX_HISTORY_MS {
            self.problem(at, format!("{key} must be at most 7 days"));
        }
        ms
    }

    fn levels(&mut self, at: &str, specs: Vec<LevelSpec>, decreasing: bool) -> Vec<Level> {
        if specs.is_empty() {
            self.problem(at, "levels: give at least one level");
        }
        let levels: Vec<Level> = specs
            .into_iter()
            .map(|l| Level {
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

    /// A rolling rainfall window with its levels and hysteresis (default: a
    /// tenth of the first level).
    fn rainfall(
        &mut self,
        at: &str,
        window: Duration,
        levels: Vec<LevelSpec>,
        hysteresis: Option<f64>,
    ) -> Rainfall {
        let window_ms = window.as_millis() as i64;
        if !RAIN_WINDOWS_MS.contains(&window_ms) {
            self.problem(at, "window must be one of 1h, 3h, 6h, 24h");
        }
        let levels = self.levels(at, levels, false);
        let hysteresis =
            hysteresis.unwrap_or_else(|| levels.first().map_or(0.0, |l| l.value * 0.1));
        self.non_negative(at, "hysteresis", hysteresis);
        Rainfall {
            window_ms,
            levels,
            hysteresis,
        }
    }

    fn devices(&mut self, at: &str, ids: &[String]) -> HashSet<DeviceIndex> {
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

impl RuleSet {
    /// Reads and validates a rules file; watch-list files are read relative
    /// to its folder.
    pub fn load(path: &Path, registry: &Registry) -> Result<RuleSet, RuleErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RuleErrors(vec![format!("{}: cannot read: {e}", path.display())]))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut set = RuleSet::parse(&text, registry, &|name| {
            let p = base.join(name);
            std::fs::read_to_string(&p)
                .map(|t| (t, Some(p.clone())))
                .map_err(|e| format!("cannot read {}: {e}", p.display()))
        })?;
        set.files.insert(0, path.to_path_buf());
        Ok(set)
    }

    /// Parses and validates rules text. `read` returns the text of a file
    /// the rules name (watch lists), with its path when it is one.
    #[allow(clippy::type_complexity)]
    pub fn parse(
        text: &str,
        registry: &Registry,
        read: &dyn Fn(&str) -> Result<(String, Option<PathBuf>), String>,
    ) -> Result<RuleSet, RuleErrors> {
        let mut top: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| RuleErrors(vec![e.to_string().trim().to_owned()]))?;
        let mut check = Check {
            registry,
            problems: Vec::new(),
        };
        let mut set = RuleSet::default();
        let rules = top.remove("rule");
        let maintenance = top.remove("maintenance");
        for key in top.keys() {
            check.problem(key, "unknown section; expected [[rule]] or [[maintenance]]");
        }
        let mut seen = HashMap::new();
        for (n, value) in as_tables(&mut check, "rule", rules).into_iter().enumerate() {
            let fallback = format!("rule #{}", n + 1);
            if let Some(rule) = rule(&mut check, &fallback, value, read, &mut set.files) {
                if let Some(first) = seen.insert(rule.id.clone(), n) {
                    check.problem(
                        &format!("rule {}", rule.id),
                        format!("the id is also used by rule #{}", first + 1),
                    );
                }
                set.rules.push(rule);
            }
        }
        for (n, value) in as_tables(&mut check, "maintenance", maintenance)
            .into_iter()
            .enumerate()
        {
            let at = format!("maintenance #{}", n + 1);
            let Some(m) = check.kind_spec::<MaintenanceSpec>(&at, value) else {
                continue;
            };
            if m.to <= m.from {
                check.problem(&at, "`to` must be after `from`");
            }
            let devices = check.devices(&at, &m.ids);
            set.maintenance.push(Maintenance {
                devices,
                from_ms: m.from.millis(),
                to_ms: m.to.millis(),
            });
        }
        if set.rules.len() > usize::from(u16::MAX) {
            check.problem("rules", "at most 65535 rules");
        }
        if check.problems.is_empty() {
            for (i, rule) in set.rules.iter_mut().enumerate() {
                rule.position = i as u16;
            }
            for (k, kind) in DeviceKind::ALL.into_iter().enumerate() {
                set.by_kind[k] = (0..set.rules.len())
                    .filter(|&r| set.rules[r].kinds.contains(&kind))
                    .collect();
            }
            set.registry_levels = registry
                .devices()
                .iter()
                .map(|d| registry_levels(d).into_boxed_slice())
                .collect();
            Ok(set)
        } else {
            Err(RuleErrors(check.problems))
        }
    }

    /// Whether a device is in maintenance at event time `ts`.
    pub fn in_maintenance(&self, device: DeviceIndex, ts: i64) -> bool {
        self.maintenance
            .iter()
            .any(|m| ts >= m.from_ms && ts < m.to_ms && m.devices.contains(&device))
    }

    /// The rule with this id.
    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| &*r.id == id)
    }

    /// The rules that watch this device, in file order.
    pub fn for_device<'a>(
        &'a self,
        index: DeviceIndex,
        device: &'a DeviceInfo,
    ) -> impl Iterator<Item = &'a Rule> + 'a {
        let k = DeviceKind::ALL
            .iter()
            .position(|&k| k == device.kind)
            .unwrap_or(0);
        self.by_kind[k]
            .iter()
            .map(|&r| &self.rules[r])
            .filter(move |r| r.only.as_ref().is_none_or(|s| s.contains(&index)))
    }

    /// The levels that apply to a device, lowest first; empty when it has none.
    pub fn levels<'a>(&'a self, levels: &'a Levels, index: DeviceIndex) -> &'a [Level] {
        match levels {
            Levels::Fixed(l) => l,
            Levels::Registry => self
                .registry_levels
                .get(index as usize)
                .map_or(&[], |l| &l[..]),
        }
    }
}

fn as_tables(check: &mut Check<'_>, key: &str, value: Option<toml::Value>) -> Vec<toml::Table> {
    match value {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .filter_map(|(n, v)| match v {
                toml::Value::Table(t) => Some(t),
                _ => {
                    check.problem(&format!("{key} #{}", n + 1), "expected a table");
                    None
                }
            })
            .collect(),
        Some(_) => {
            check.problem(key, format!("expected [[{key}]] tables"));
            Vec::new()
        }
    }
}

const COMMON: [&str; 8] = [
    "id", "kind", "devices", "ids", "title_vi", "title_en", "enabled", "nearest",
];

#[allow(clippy::type_complexity)]
fn rule(
    check: &mut Check<'_>,
    fallback: &str,
    mut table: toml::Table,
    read: &dyn Fn(&str) -> Result<(String, Option<PathBuf>), String>,
    files: &mut Vec<PathBuf>,
) -> Option<Rule> {
    let mut common = toml::Table::new();
    for key in COMMON {
        if let Some(v) = table.remove(key) {
            common.insert(key.to_owned(), v);
        }
    }
    let at_id = common
        .get("id")
        .and_then(toml::Value::as_str)
        .map_or_else(|| fallback.to_owned(), |id| format!("rule {id}"));
    let common: Common = check.kind_spec(&at_id, common)?;
    let at = at_id.as_str();
    if common.id.is_empty()
        || !common
            .id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        check.problem(at, "id must be lower-case letters, digits and `_`");
    }
    let only = common.ids.as_deref().map(|ids| check.devices(at, ids));
    let (logic, field, title) = match common.kind.as_str() {
        "threshold" => {
            let s: ThresholdSpec = check.kind_spec(at, table)?;
            check.non_negative(at, "hysteresis", s.hysteresis);
            let levels = match s.levels {
                LevelsSpec::Named(n) if n == "registry" => Levels::Registry,
                LevelsSpec::Named(n) => {
                    check.problem(
                        at,
                        format!("levels: {n:?} is neither \"registry\" nor a list"),
                    );
                    Levels::Fixed(Vec::new())
                }
                LevelsSpec::Fixed(l) => Levels::Fixed(check.levels(at, l, s.below)),
            };
            let t = Threshold {
                field: s.field,
                levels,
                below: s.below,
                hysteresis: s.hysteresis,
                min_samples: s.min_samples.max(1),
                min_duration_ms: s.min_duration.map_or(0, |d| d.as_millis() as i64),
            };
            (Logic::Threshold(t), Some(s.field), ("Ngưỡng", "Threshold"))
        }
        "rate_of_change" => {
            let s: RateSpec = check.kind_spec(at, table)?;
            let window_ms = check.history(at, "window", s.window);
            if !(s.per_hour.is_finite() && s.per_hour != 0.0) {
                check.problem(at, "per_hour must be a non-zero number");
            }
            let clear = s.clear_per_hour.unwrap_or(s.per_hour / 2.0);
            if clear.abs() > s.per_hour.abs() || clear.signum() * s.per_hour.signum() < 0.0 {
                check.problem(at, "clear_per_hour must lie between 0 and per_hour");
            }
            let projection = match s.project_to.as_deref() {
                None => None,
                Some("registry") => Some(Levels::Registry),
                Some(other) => {
                    check.problem(at, format!("project_to: {other:?} is not \"registry\""));
                    None
                }
            };
            let r = RateOfChange {
                field: s.field,
                window_ms,
                open_per_h: s.per_hour,
                clear_per_h: clear,
                min_samples: s.min_samples.max(2),
                projection,
                severity: s.severity,
            };
            (
                Logic::RateOfChange(r),
                Some(s.field),
                ("Tốc độ thay đổi", "Rate of change"),
            )
        }
        "rainfall" => {
            let s: RainfallSpec = check.kind_spec(at, table)?;
            let r = check.rainfall(at, s.window, s.levels, s.hysteresis);
            (
                Logic::Rainfall(r),
                Some(Field::RainfallMm),
                ("Lượng mưa", "Rainfall"),
            )
        }
        "staleness" => {
            let s: StalenessSpec = check.kind_spec(at, table)?;
            check.positive(at, "factor", s.factor);
            let r = Staleness {
                factor: s.factor,
                severity: s.severity,
            };
            (
                Logic::Staleness(r),
                None,
                ("Mất tín hiệu thiết bị", "Device offline"),
            )
        }
        "congestion" => {
            let s: CongestionSpec = check.kind_spec(at, table)?;
            check.positive(at, "speed_below_kmh", s.speed_below_kmh);
            check.non_negative(at, "occupancy_above_pct", s.occupancy_above_pct);
            check.non_negative(at, "speed_margin_kmh", s.speed_margin_kmh);
            check.non_negative(at, "occupancy_margin_pct", s.occupancy_margin_pct);
            let r = Congestion {
                speed_below_kmh: s.speed_below_kmh,
                occupancy_above_pct: s.occupancy_above_pct,
                for_ms: s.for_.as_millis() as i64,
                speed_margin_kmh: s.speed_margin_kmh,
                occupancy_margin_pct: s.occupancy_margin_pct,
                severity: s.severity,
            };
            (
                Logic::Congestion(r),
                Some(Field::SpeedKmh),
                ("Ùn tắc giao thông", "Traffic congestion"),
            )
        }
        "speed_drop" => {
            let s: SpeedDropSpec = check.kind_spec(at, table)?;
            if !(s.drop_pct > 0.0 && s.drop_pct < 100.0) {
                check.problem(at, "drop_pct must lie between 0 and 100");
            }
            let baseline_ms = check.history(at, "baseline", s.baseline);
            check.non_negative(at, "min_baseline_kmh", s.min_baseline_kmh);
            let r = SpeedDrop {
                drop_pct: s.drop_pct,
                baseline_ms,
                min_baseline_kmh: s.min_baseline_kmh,
                severity: s.severity,
            };
            (
                Logic::SpeedDrop(r),
                Some(Field::SpeedKmh),
                ("Tốc độ giảm đột ngột", "Sudden speed drop"),
            )
        }
        "surge" => {
            let s: SurgeSpec = check.kind_spec(at, table)?;
            let window_ms = check.history(at, "window", s.window);
            check.positive(at, "increase", s.increase);
            check.non_negative(at, "related_within_km", s.related_within_km);
            let r = Surge {
                field: s.field,
                window_ms,
                increase: s.increase,
                related_within_km: s.related_within_km,
                severity: s.severity,
            };
            (Logic::Surge(r), Some(s.field), ("Tăng đột biến", "Surge"))
        }
        "watchlist" => {
            let s: WatchlistSpec = check.kind_spec(at, table)?;
            let mut plates: Vec<String> = s.plates;
            if let Some(file) = &s.file {
                match read(file) {
                    Ok((text, path)) => {
                        files.extend(path);
                        plates.extend(
                            text.lines()
                                .map(|l| l.split('#').next().unwrap_or("").trim())
                                .filter(|l| !l.is_empty())
                                .map(str::to_owned),
                        );
                    }
                    Err(e) => check.problem(at, format!("file: {e}")),
                }
            }
            for p in &plates {
                if !ioc_schemas::plate::is_vietnamese_plate(p) {
                    check.problem(
                        at,
                        format!("{p:?} is not a Vietnamese plate (e.g. 26A-123.45)"),
                    );
                }
            }
            let r = Watchlist {
                plates: plates.iter().map(|p| normalise(p)).collect(),
                severity: s.severity,
            };
            (
                Logic::Watchlist(r),
                None,
                (
                    "Phương tiện trong danh sách theo dõi",
                    "Watch-listed vehicle",
                ),
            )
        }
        "geofence" => {
            let s: GeofenceSpec = check.kind_spec(at, table)?;
            let on = match s.on.as_str() {
                "enter" => GeofenceOn::Enter,
                "dwell" => GeofenceOn::Dwell,
                other => {
                    check.problem(
                        at,
                        format!("on: {other:?} is neither \"enter\" nor \"dwell\""),
                    );
                    GeofenceOn::Enter
                }
            };
            let subjects = match s.subjects.as_str() {
                "all" => Subjects::All,
                "plates" => Subjects::Plates,
                "devices" => Subjects::Devices,
                other => {
                    check.problem(
                        at,
                        format!("subjects: {other:?} is not \"all\", \"plates\" or \"devices\""),
                    );
                    Subjects::All
                }
            };
            let g = Geofence {
                zones: ZoneFilter {
                    kinds: s.zone_kinds,
                    ids: s.zones,
                },
                on,
                severity: s.severity,
                subjects,
            };
            (
                Logic::Geofence(g),
                None,
                ("Xâm nhập vùng giám sát", "Geofence"),
            )
        }
        "cloned_plate" => {
            let s: ClonedPlateSpec = check.kind_spec(at, table)?;
            check.positive(at, "max_speed_kmh", s.max_speed_kmh);
            check.non_negative(at, "min_distance_m", s.min_distance_m);
            let c = ClonedPlate {
                max_speed_kmh: s.max_speed_kmh,
                min_distance_m: s.min_distance_m,
                severity: s.severity,
            };
            (
                Logic::ClonedPlate(c),
                None,
                ("Nghi biển số giả", "Suspected cloned plate"),
            )
        }
        "zone_rainfall" => {
            let s: ZoneRainfallSpec = check.kind_spec(at, table)?;
            let rain = check.rainfall(at, s.window, s.levels, s.hysteresis);
            check.non_negative(at, "within_m", s.within_m);
            if s.min_gauges == 0 {
                check.problem(at, "min_gauges must be at least 1");
            }
            let z = ZoneRainfall {
                zones: ZoneFilter {
                    kinds: s.zone_kinds,
                    ids: s.zones,
                },
                within_m: s.within_m,
                rain,
                min_gauges: s.min_gauges,
            };
            (
                Logic::ZoneRainfall(z),
                None,
                ("Mưa lớn diện rộng", "Widespread heavy rain"),
            )
        }
        other => {
            check.problem(
                at,
                format!(
                    "unknown kind {other:?}; expected threshold, rate_of_change, rainfall, \
                     staleness, congestion, speed_drop, surge, watchlist, geofence, \
                     cloned_plate or zone_rainfall"
                ),
            );
            return None;
        }
    };
    let kinds = common.devices.unwrap_or_else(|| match &logic {
        Logic::Watchlist(_) | Logic::ClonedPlate(_) => vec![DeviceKind::Camera],
        Logic::ZoneRainfall(_) => vec![DeviceKind::RainGauge],
        _ => default_kinds(field),
    });
    if kinds.is_empty() {
        check.problem(at, "devices: name at least one device kind");
    }
    if let Some(f) = field {
        let family_ok = kinds.iter().all(|k| match k {
            DeviceKind::TrafficCounter => f.is_traffic(),
            DeviceKind::Camera => false,
            _ => !f.is_traffic(),
        });
        if !family_ok {
            check.problem(at, format!("devices: {kinds:?} do not report {f:?}"));
        }
    }
    if matches!(&logic, Logic::Watchlist(_)) && kinds != [DeviceKind::Camera] {
        check.problem(at, "devices: a watch list applies to cameras only");
    }
    let registry_needed = match &logic {
        Logic::Threshold(t) => t.levels == Levels::Registry,
        _ => false,
    };
    if registry_needed {
        let any = check.registry.devices().iter().enumerate().any(|(i, d)| {
            kinds.contains(&d.kind)
                && only
                    .as_ref()
                    .is_none_or(|s| s.contains(&(i as DeviceIndex)))
                && !registry_levels(d).is_empty()
        });
        if !any {
            check.problem(
                at,
                "levels = \"registry\", but no selected device has levels in the registry",
            );
        }
    }
    let nearest = common.nearest.map(|n| {
        if n.kinds.is_empty() || n.count == 0 {
            check.problem(
                at,
                "nearest: name at least one asset kind and a count of 1 or more",
            );
        }
        if let Some(w) = n.within_m {
            check.positive(at, "nearest.within_m", w);
        }
        Nearest {
            kinds: n.kinds,
            count: n.count.min(20),
            within_m: n.within_m,
        }
    });
    if !common.enabled {
        return None;
    }
    Some(Rule {
        nearest,
        id: Arc::from(common.id.as_str()),
        kinds,
        only,
        title_vi: common.title_vi.unwrap_or_else(|| title.0.to_owned()),
        title_en: common.title_en.unwrap_or_else(|| title.1.to_owned()),
        logic,
        position: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RuleSet, RuleErrors> {
        RuleSet::parse(text, &Registry::sonla_demo(), &|name| match name {
            "watch.txt" => Ok(("# plates\n26A-123.45\n29B1-234.56 # stolen\n".into(), None)),
            _ => Err("no such file".into()),
        })
    }

    #[test]
    fn the_demo_rules_are_valid_and_use_every_kind() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules.toml");
        let set = RuleSet::load(&dir, &Registry::sonla_demo()).unwrap();
        let kinds: HashSet<_> = set.rules.iter().map(|r| r.logic.kind()).collect();
        for k in [
            "threshold",
            "rate_of_change",
            "rainfall",
            "staleness",
            "congestion",
            "speed_drop",
            "surge",
            "watchlist",
            "geofence",
            "cloned_plate",
            "zone_rainfall",
        ] {
            assert!(kinds.contains(k), "deploy/rules.toml has no {k} rule");
        }
        assert!(set.files.len() >= 2, "the watch list is watched too");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = parse(
            r#"
            [[rule]]
            id = "a"
            kind = "threshold"
            field = "water_level_m"
            levels = [{ name = "x", value = 2 }, { name = "y", value = 1 }]
            [[rule]]
            id = "a"
            kind = "rainfall"
            window = "2h"
            levels = [{ name = "heavy", value = 50 }]
            [[rule]]
            id = "b"
            kind = "watchlist"
            plates = ["nope"]
            [[rule]]
            id = "c"
            kind = "thresold"
            [[rule]]
            id = "d"
            kind = "congestion"
            speed_below_kmh = 15
            occupancy_above_pct = 30
            for = "10m"
            colour = "red"
            [[maintenance]]
            ids = ["no-such-device"]
            from = "2026-01-02T00:00:00Z"
            to = "2026-01-01T00:00:00Z"
            "#,
        )
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "rule a: levels must strictly increase",
            "rule a: window must be one of",
            "the id is also used by rule #1",
            "rule b: \"nope\" is not a Vietnamese plate",
            "rule c: unknown kind",
            "rule d: unknown field `colour`",
            "maintenance #1: `to` must be after `from`",
            "maintenance #1: device \"no-such-device\" is not in the registry",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert_eq!(err.0.len(), 8, "{text}");
    }

    #[test]
    fn watch_lists_come_from_files_too() {
        let set = parse(
            r#"
            [[rule]]
            id = "wanted"
            kind = "watchlist"
            file = "watch.txt"
            plates = ["26C-1234"]
            "#,
        )
        .unwrap();
        let Logic::Watchlist(w) = &set.rules[0].logic else {
            panic!("not a watch list")
        };
        assert!(w.contains("26A-123.45") && w.contains("29B1-234.56") && w.contains("26C-1234"));
    }

    #[test]
    fn disabled_rules_are_checked_but_not_run() {
        let set = parse(
            r#"
            [[rule]]
            id = "off"
            kind = "staleness"
            enabled = false
            "#,
        )
        .unwrap();
        assert!(set.rules.is_empty());
    }
}
