//! The rules file: parsing, validation (every problem at once), loading.
//!
//! ```toml
//! [[rule]]
//! id = "river_level"          # unique; the first part of its alerts' ids
//! kind = "threshold"          # one of the kinds in `registry.rs`
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
//! Each kind's module reads and checks its own keys; this file reads the
//! common ones and the maintenance windows. `deploy/rules.toml`
//! configures every kind for the Sơn La demo and explains each key.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ioc_devices::{DeviceIndex, Registry};
use ioc_schemas::{AssetKind, DeviceInfo, DeviceKind, Timestamp};
use serde::Deserialize;

use super::kind::Check;
use super::{Level, Levels, Maintenance, Nearest, Rule, registry, registry_levels};

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

fn yes() -> bool {
    true
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

impl RuleSet {
    /// Reads and validates a rules file; watch-list files are read relative
    /// to its folder.
    pub fn load(path: &Path, registry: &Registry) -> Result<RuleSet, RuleErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RuleErrors(vec![format!("{}: cannot read: {e}", path.display())]))?;
        let mut set = RuleSet::parse_at(&text, path, registry)?;
        set.files.insert(0, path.to_path_buf());
        Ok(set)
    }

    /// Parses and validates `text` as if it were the rules file at `path`:
    /// the files it names (watch lists) are read beside `path`.
    pub fn parse_at(text: &str, path: &Path, registry: &Registry) -> Result<RuleSet, RuleErrors> {
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        RuleSet::parse(text, registry, &|name| {
            let p = base.join(name);
            std::fs::read_to_string(&p)
                .map(|t| (t, Some(p.clone())))
                .map_err(|e| format!("cannot read {}: {e}", p.display()))
        })
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
            read,
            files: Vec::new(),
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
            if let Some(rule) = rule(&mut check, &fallback, value) {
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
            let Some(m) = check.spec::<MaintenanceSpec>(&at, value) else {
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
        set.files = std::mem::take(&mut check.files);
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

/// One `[[rule]]` table: the common keys here, the kind's own keys by
/// the kind ([`registry::parse`]).
fn rule(check: &mut Check<'_>, fallback: &str, mut table: toml::Table) -> Option<Rule> {
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
    let common: Common = check.spec(&at_id, common)?;
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
    let logic = match registry::parse(&common.kind, check, at, table) {
        Some(logic) => logic?,
        None => {
            let names = registry::names();
            let (last, rest) = names.split_last().unwrap_or((&"", &[]));
            check.problem(
                at,
                format!(
                    "unknown kind {:?}; expected {} or {last}",
                    common.kind,
                    rest.join(", ")
                ),
            );
            return None;
        }
    };
    let field = logic.field();
    let kinds = common.devices.unwrap_or_else(|| logic.default_devices());
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
    logic.check_devices(check, at, &kinds, only.as_ref());
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
    let title = logic.title();
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
    use std::collections::HashSet;

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
        let Some(w) = set.rules[0]
            .logic
            .get::<super::super::watchlist::Watchlist>()
        else {
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
