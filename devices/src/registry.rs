//! The device registry: every device's kind, position, area, thresholds
//! and lifecycle.
//!
//! Loaded from a GeoJSON FeatureCollection of Point features whose properties
//! are `id`, `kind`, `name`, `expected_interval_s`, optional `thresholds`,
//! optional `area` (an area id that overrides the point-in-polygon lookup),
//! optional `lifecycle`, `river`, `road` and `direction`; or from the
//! store, as [`DeviceSpec`]s. Each device's administrative area chain is
//! resolved once, when it is registered.
//!
//! A registry is a value: a change makes a new one ([`Registry::with`])
//! that keeps every existing device at its index, adds new devices at the
//! end and keeps retired ones (their readings are refused, their index
//! stays), so state keyed by index stays valid across changes.

use std::collections::HashMap;
use std::sync::Arc;

use ioc_schemas::{DeviceInfo, DeviceKind, DeviceSpec, Lifecycle, Thresholds};
use serde::Deserialize;

use crate::CatalogueError;
use crate::areas::Areas;

/// Index of a device in its registry; stable for the registry's lifetime
/// and across [`Registry::with`].
pub type DeviceIndex = u32;

/// The registry the system runs with, replaceable while it runs.
pub type RegistryCell = crate::Current<Registry>;

/// How far outside the areas' bounding box a device may stand, degrees
/// (about 50 km: a gauge across the border on a shared river).
pub const OUTSIDE_MARGIN_DEG: f64 = 0.5;

/// The loaded registry. Cheap to share behind an [`Arc`].
#[derive(Debug)]
pub struct Registry {
    devices: Vec<DeviceInfo>,
    /// The ids again, shared: engine outputs carry them without a copy,
    /// and `by_id` is keyed by them.
    ids: Vec<Arc<str>>,
    /// Keyed by the catalogue's ids only (a lookup of an unknown id adds
    /// nothing), so a fast seeded hash is safe here: input chooses what is
    /// looked up, never what is stored. It is on every message's path.
    by_id: HashMap<Arc<str>, DeviceIndex, foldhash::fast::RandomState>,
    /// Each device's area override, when it has one.
    overrides: HashMap<DeviceIndex, String>,
    areas: Arc<Areas>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceProperties {
    id: String,
    kind: DeviceKind,
    name: String,
    expected_interval_s: u32,
    #[serde(default)]
    thresholds: Thresholds,
    #[serde(default)]
    area: Option<String>,
    #[serde(default)]
    lifecycle: Lifecycle,
    #[serde(default)]
    river: Option<String>,
    #[serde(default)]
    road: Option<String>,
    #[serde(default)]
    direction: Option<String>,
}

/// A problem with one device of a change or an import.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The device's place in what was given, from 1 (a file's data row or
    /// feature; 1 for a single device).
    pub row: usize,
    /// Its id, when it has one.
    pub id: String,
    /// The field at fault (`id`, `kind`, `pos`, `thresholds.alarm_levels_m`...).
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "row {}", self.row)?;
        if !self.id.is_empty() {
            write!(f, " (device {})", self.id)?;
        }
        write!(f, ": {}: {}", self.field, self.problem)
    }
}

/// The checks every registered device passes, field by field.
fn check_spec(spec: &DeviceSpec, areas: &Areas, mut problem: impl FnMut(&str, String)) {
    let id = &spec.id;
    if id.is_empty() || id.len() > 128 {
        problem("id", "must be 1 to 128 characters".into());
    } else if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~')))
    {
        problem(
            "id",
            format!(
                "{c:?} is not allowed (letters, digits, '-', '_', '.', '~': it is an MQTT topic level)"
            ),
        );
    }
    if spec.name.trim().is_empty() || spec.name.chars().count() > 200 {
        problem("name", "must be 1 to 200 characters".into());
    }
    match ioc_schemas::envelope::check_position(spec.pos) {
        Err(e) => problem("pos", e.detail),
        Ok(()) => {
            if let Some((lo, hi)) = areas.bounds() {
                let m = OUTSIDE_MARGIN_DEG;
                let [lon, lat] = spec.pos;
                if lon < lo[0] - m || lon > hi[0] + m || lat < lo[1] - m || lat > hi[1] + m {
                    problem(
                        "pos",
                        format!(
                            "[{lon}, {lat}] is more than {m}° outside the province \
                             (lon {:.3}–{:.3}, lat {:.3}–{:.3}); [lon, lat] order?",
                            lo[0], hi[0], lo[1], hi[1]
                        ),
                    );
                }
            }
        }
    }
    if spec.expected_interval_s == 0 {
        problem("expected_interval_s", "must be at least 1 second".into());
    }
    let t = &spec.thresholds;
    match t.alarm_levels_m {
        Some(_) if spec.kind != DeviceKind::RiverGauge => {
            problem(
                "thresholds.alarm_levels_m",
                format!("only river gauges have BĐ levels, not a {}", spec.kind),
            );
        }
        Some(levels)
            if !(levels.iter().all(|l| l.is_finite())
                && levels[0] < levels[1]
                && levels[1] < levels[2]) =>
        {
            problem(
                "thresholds.alarm_levels_m",
                "BĐ1, BĐ2, BĐ3 must be finite and strictly increasing".into(),
            );
        }
        None if spec.kind == DeviceKind::RiverGauge => problem(
            "thresholds.alarm_levels_m",
            "a river gauge needs its BĐ1, BĐ2, BĐ3 levels".into(),
        ),
        _ => {}
    }
    for (field, value) in [
        ("thresholds.normal_level_m", t.normal_level_m),
        ("thresholds.flood_control_level_m", t.flood_control_level_m),
    ] {
        match value {
            Some(_) if spec.kind != DeviceKind::Reservoir => problem(
                field,
                format!("only reservoirs have it, not a {}", spec.kind),
            ),
            Some(v) if !v.is_finite() => problem(field, "must be a finite number".into()),
            _ => {}
        }
    }
    if let (Some(n), Some(f)) = (t.normal_level_m, t.flood_control_level_m)
        && n.is_finite()
        && f.is_finite()
        && f < n
    {
        problem(
            "thresholds.flood_control_level_m",
            format!("{f} is below the normal level {n}"),
        );
    }
    if let Some(a) = &spec.area
        && areas.get(a).is_none()
    {
        problem("area", format!("no area {a:?}"));
    }
    if let Lifecycle::Maintenance { reason, .. } | Lifecycle::Retired { reason, .. } =
        &spec.lifecycle
        && reason.chars().count() > 500
    {
        problem("lifecycle.reason", "at most 500 characters".into());
    }
}

impl Registry {
    /// Loads devices and areas from GeoJSON text, reporting every problem.
    pub fn from_geojson(devices: &str, areas: &str) -> Result<Self, CatalogueError> {
        let areas = Arc::new(Areas::from_geojson(areas)?);
        let (specs, problems) = specs_from_geojson(devices)?;
        let mut problems: Vec<String> = problems.iter().map(|p| p.catalogue_line()).collect();
        match Registry::empty(areas).with(specs.into_iter().map(|(_, s)| s).collect()) {
            Ok(r) if problems.is_empty() => Ok(r),
            Ok(_) => Err(CatalogueError { problems }),
            Err(more) => {
                problems.extend(more.iter().map(Problem::catalogue_line));
                Err(CatalogueError { problems })
            }
        }
    }

    /// A registry of no devices in `areas`.
    pub fn empty(areas: Arc<Areas>) -> Registry {
        Registry::indexed(Vec::new(), HashMap::new(), areas)
    }

    /// The registry of `specs`, in their order (they are checked as by
    /// [`Registry::with`]).
    pub fn from_specs(specs: Vec<DeviceSpec>, areas: Arc<Areas>) -> Result<Registry, Vec<Problem>> {
        Registry::empty(areas).with(specs)
    }

    /// This registry with `specs` registered: a spec whose id is known
    /// replaces that device at its index (its kind cannot change), a new
    /// id is added at the end. Every problem of every spec is reported
    /// (with its place in `specs` as the row) and then nothing changes.
    pub fn with(&self, specs: Vec<DeviceSpec>) -> Result<Registry, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut devices = self.devices.clone();
        let mut overrides = self.overrides.clone();
        let mut added: HashMap<String, usize> = HashMap::new();
        for (n, spec) in specs.into_iter().enumerate() {
            let row = n + 1;
            let before = problems.len();
            check_spec(&spec, &self.areas, |field, problem| {
                problems.push(Problem {
                    row,
                    id: spec.id.clone(),
                    field: field.into(),
                    problem,
                })
            });
            let existing = self.lookup(&spec.id);
            if let Some(i) = existing
                && self.devices[i as usize].kind != spec.kind
            {
                problems.push(Problem {
                    row,
                    id: spec.id.clone(),
                    field: "kind".into(),
                    problem: format!(
                        "is {}; a device's kind cannot change (retire it and register a new id)",
                        self.devices[i as usize].kind
                    ),
                });
            }
            if let Some(first) = added.get(&spec.id) {
                problems.push(Problem {
                    row,
                    id: spec.id.clone(),
                    field: "id".into(),
                    problem: format!("duplicate id (also row {first})"),
                });
            }
            if problems.len() > before {
                added.entry(spec.id.clone()).or_insert(row);
                continue;
            }
            added.insert(spec.id.clone(), row);
            let info = self.resolve(spec.clone());
            let index = match existing {
                Some(i) => {
                    devices[i as usize] = info;
                    i
                }
                None => {
                    devices.push(info);
                    (devices.len() - 1) as DeviceIndex
                }
            };
            match spec.area {
                Some(a) => overrides.insert(index, a),
                None => overrides.remove(&index),
            };
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Registry::indexed(devices, overrides, self.areas.clone()))
    }

    /// The device a checked spec describes, its areas resolved.
    fn resolve(&self, spec: DeviceSpec) -> DeviceInfo {
        let site = spec.site().boxed();
        let area = match &spec.area {
            Some(a) => self.areas.chain_of(a),
            None => self.areas.chain_at(spec.pos),
        };
        DeviceInfo {
            id: spec.id,
            kind: spec.kind,
            name: spec.name,
            pos: spec.pos,
            area,
            expected_interval_s: spec.expected_interval_s,
            thresholds: spec.thresholds,
            lifecycle: spec.lifecycle,
            site,
        }
    }

    /// The device at `index` as it would be registered again.
    pub fn spec(&self, index: DeviceIndex) -> DeviceSpec {
        let d = self.device(index);
        let site = d.site.as_deref().cloned().unwrap_or_default();
        DeviceSpec {
            id: d.id.clone(),
            kind: d.kind,
            name: d.name.clone(),
            pos: d.pos,
            area: self.overrides.get(&index).cloned(),
            expected_interval_s: d.expected_interval_s,
            thresholds: d.thresholds.clone(),
            lifecycle: d.lifecycle.clone(),
            river: site.river,
            road: site.road,
            direction: site.direction,
        }
    }

    /// The built-in Sơn La demo catalogue.
    pub fn sonla_demo() -> Arc<Self> {
        Arc::new(Self::sonla())
    }

    fn sonla() -> Self {
        // The embedded catalogue is checked by the test suite, so loading it
        // cannot fail in a released binary.
        match Self::from_geojson(
            crate::catalogue::SONLA_DEVICES,
            crate::catalogue::SONLA_AREAS,
        ) {
            Ok(r) => r,
            Err(e) => panic!("the embedded Sơn La catalogue is invalid: {e}"),
        }
    }

    /// The Sơn La demo catalogue replicated to `n` devices, for load tests.
    /// Copy `k` of a device gets the id `{id}~{k}` and a position within
    /// about a kilometre of the original; areas are looked up again.
    pub fn sonla_scaled(n: usize) -> Arc<Self> {
        let base = Self::sonla();
        let areas = base.areas;
        let mut devices = Vec::with_capacity(n);
        for i in 0..n {
            let original = &base.devices[i % base.devices.len()];
            let copy = i / base.devices.len();
            let mut d = original.clone();
            if copy > 0 {
                d.id = format!("{}~{copy}", original.id);
                let (a, b) = (
                    crate::noise::unit(3, i as u64, 0) - 0.5,
                    crate::noise::unit(5, i as u64, 0) - 0.5,
                );
                d.pos = [d.pos[0] + a * 0.02, d.pos[1] + b * 0.02];
                let chain = areas.chain_at(d.pos);
                if !chain.is_empty() {
                    d.area = chain;
                }
            }
            devices.push(d);
        }
        Arc::new(Registry::indexed(devices, HashMap::new(), areas))
    }

    /// A registry of `devices` with its id index (a repeated id keeps its
    /// first device in the index).
    fn indexed(
        devices: Vec<DeviceInfo>,
        overrides: HashMap<DeviceIndex, String>,
        areas: Arc<Areas>,
    ) -> Registry {
        let ids: Vec<Arc<str>> = devices.iter().map(|d| Arc::from(d.id.as_str())).collect();
        let mut by_id = HashMap::with_capacity_and_hasher(ids.len(), Default::default());
        for (i, id) in ids.iter().enumerate() {
            by_id.entry(id.clone()).or_insert(i as DeviceIndex);
        }
        Registry {
            devices,
            ids,
            by_id,
            overrides,
            areas,
        }
    }

    /// The index of the device with this id.
    pub fn lookup(&self, id: &str) -> Option<DeviceIndex> {
        self.by_id.get(id).copied()
    }

    /// The device at this index.
    pub fn device(&self, index: DeviceIndex) -> &DeviceInfo {
        &self.devices[index as usize]
    }

    /// The id of the device at this index, shared (cloning it copies no text).
    pub fn shared_id(&self, index: DeviceIndex) -> &Arc<str> {
        &self.ids[index as usize]
    }

    /// The device with this id.
    pub fn get(&self, id: &str) -> Option<&DeviceInfo> {
        self.lookup(id).map(|i| self.device(i))
    }

    /// Every device, by index.
    pub fn devices(&self) -> &[DeviceInfo] {
        &self.devices
    }

    /// The administrative areas.
    pub fn areas(&self) -> &Areas {
        &self.areas
    }

    /// The administrative areas, shared.
    pub fn shared_areas(&self) -> &Arc<Areas> {
        &self.areas
    }
}

impl Problem {
    /// The line a catalogue file's error shows.
    fn catalogue_line(&self) -> String {
        if self.id.is_empty() {
            format!("devices feature #{}: {}", self.row - 1, self.problem)
        } else {
            format!("device {}: {}: {}", self.id, self.field, self.problem)
        }
    }
}

/// Devices read from a file: each with its row or feature (from 1), and
/// every problem of one that does not describe a device.
pub type Read = (Vec<(usize, DeviceSpec)>, Vec<Problem>);

/// The devices of a GeoJSON FeatureCollection, each with its feature's
/// place (from 1), and a problem for each feature that does not describe
/// one. Fails when the text is not a FeatureCollection.
pub fn specs_from_geojson(text: &str) -> Result<Read, CatalogueError> {
    let collection = crate::collection(text, "devices")?;
    let mut specs = Vec::with_capacity(collection.features.len());
    let mut problems = Vec::new();
    for (n, feature) in collection.features.into_iter().enumerate() {
        let row = n + 1;
        let bad = |field: &str, problem: String, id: &str| Problem {
            row,
            id: id.into(),
            field: field.into(),
            problem,
        };
        let Some(props) = feature.properties else {
            problems.push(bad("properties", "missing".into(), ""));
            continue;
        };
        let id = props
            .get("id")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let props =
            match serde_json::from_value::<DeviceProperties>(serde_json::Value::Object(props)) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(bad("properties", e.to_string(), &id));
                    continue;
                }
            };
        let pos = match feature.geometry.map(|g| g.value) {
            Some(geojson::GeometryValue::Point { coordinates }) if coordinates.len() >= 2 => {
                [coordinates[0], coordinates[1]]
            }
            _ => {
                problems.push(bad("geometry", "must be a Point".into(), &id));
                continue;
            }
        };
        specs.push((
            row,
            DeviceSpec {
                id: props.id,
                kind: props.kind,
                name: props.name,
                pos,
                area: props.area,
                expected_interval_s: props.expected_interval_s,
                thresholds: props.thresholds,
                lifecycle: props.lifecycle,
                river: props.river,
                road: props.road,
                direction: props.direction,
            },
        ));
    }
    Ok((specs, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_catalogue_loads_and_every_device_has_an_area() {
        let r = Registry::sonla_demo();
        assert!(r.devices().len() >= 200, "{} devices", r.devices().len());
        for kind in DeviceKind::ALL {
            assert!(r.devices().iter().any(|d| d.kind == kind), "no {kind}");
        }
        for d in r.devices() {
            assert!(
                d.area.len() >= 2,
                "{} at {:?} has area {:?}",
                d.id,
                d.pos,
                d.area
            );
            assert_eq!(d.area.last().map(|a| &*a.id), Some("sl"), "{}", d.id);
            assert_eq!(r.lookup(&d.id).map(|i| &r.device(i).id), Some(&d.id));
        }
    }

    #[test]
    fn scaled_catalogue_has_unique_ids_and_areas() {
        let r = Registry::sonla_scaled(1000);
        assert_eq!(r.devices().len(), 1000);
        for (i, d) in r.devices().iter().enumerate() {
            assert_eq!(r.lookup(&d.id), Some(i as DeviceIndex));
            assert!(!d.area.is_empty(), "{}", d.id);
        }
    }

    #[test]
    fn reports_every_device_problem() {
        let areas = r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"id":"p","name":"P","level":"province"},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1],[0,0]]]}}]}"#;
        let devices = r#"{"type":"FeatureCollection","features":[
          {"type":"Feature","properties":{"id":"g","kind":"river_gauge","name":"G","expected_interval_s":600},"geometry":{"type":"Point","coordinates":[0.5,0.5]}},
          {"type":"Feature","properties":{"id":"h","kind":"river_gauge","name":"H","expected_interval_s":600,"thresholds":{"alarm_levels_m":[3,2,4]}},"geometry":{"type":"Point","coordinates":[0.5,0.5]}},
          {"type":"Feature","properties":{"id":"t","kind":"toaster","name":"T","expected_interval_s":60},"geometry":{"type":"Point","coordinates":[0.5,0.5]}},
          {"type":"Feature","properties":{"id":"r","kind":"rain_gauge","name":"R","expected_interval_s":60},"geometry":{"type":"Point","coordinates":[0.5,95]}},
          {"type":"Feature","properties":{"id":"r2","kind":"rain_gauge","name":"R2","expected_interval_s":60,"area":"atlantis"},"geometry":{"type":"Point","coordinates":[0.5,0.5]}},
          {"type":"Feature","properties":{"id":"ok","kind":"rain_gauge","name":"OK","expected_interval_s":60},"geometry":{"type":"Point","coordinates":[0.5,0.5]}},
          {"type":"Feature","properties":{"id":"ok","kind":"rain_gauge","name":"OK2","expected_interval_s":60},"geometry":{"type":"Point","coordinates":[0.5,0.5]}}
        ]}"#;
        let text = Registry::from_geojson(devices, areas)
            .unwrap_err()
            .to_string();
        for needle in [
            "device g: thresholds.alarm_levels_m: a river gauge needs",
            "device h: thresholds.alarm_levels_m",
            "device t: properties: unknown variant `toaster`",
            "device r: pos",
            "device r2: area: no area \"atlantis\"",
            "device ok: id: duplicate id",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }
}
