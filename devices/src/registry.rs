//! The device registry: every device's kind, position, area and thresholds.
//!
//! Loaded from a GeoJSON FeatureCollection of Point features whose properties
//! are `id`, `kind`, `name`, `expected_interval_s`, optional `thresholds`
//! and optional `area` (an area id that overrides the point-in-polygon
//! lookup). Each device's administrative area chain is resolved once, at load.

use std::collections::HashMap;
use std::sync::Arc;

use ioc_schemas::{DeviceInfo, DeviceKind, Thresholds};
use serde::Deserialize;

use crate::CatalogueError;
use crate::areas::Areas;

/// Index of a device in its registry; stable for the registry's lifetime.
pub type DeviceIndex = u32;

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
    areas: Areas,
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
    /// Descriptive fields, accepted and not used.
    #[serde(default, rename = "river")]
    _river: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "road")]
    _road: Option<serde::de::IgnoredAny>,
}

impl Registry {
    /// Loads devices and areas from GeoJSON text, reporting every problem.
    pub fn from_geojson(devices: &str, areas: &str) -> Result<Self, CatalogueError> {
        let areas = Areas::from_geojson(areas)?;
        let mut problems = Vec::new();
        let parsed = crate::features::<DeviceProperties>(devices, "devices", &mut problems)?;
        let mut list = Vec::with_capacity(parsed.len());
        for (props, geometry) in parsed {
            let id = props.id;
            let pos = match geometry.map(|g| g.value) {
                Some(geojson::GeometryValue::Point { coordinates }) if coordinates.len() >= 2 => {
                    [coordinates[0], coordinates[1]]
                }
                _ => {
                    problems.push(format!("device {id}: geometry must be a Point"));
                    continue;
                }
            };
            if let Err(e) = ioc_schemas::envelope::check_position(pos) {
                problems.push(format!("device {id}: {}", e.detail));
                continue;
            }
            if props.expected_interval_s == 0 {
                problems.push(format!("device {id}: expected_interval_s must be positive"));
            }
            if let Some(levels) = props.thresholds.alarm_levels_m
                && !(levels.iter().all(|l| l.is_finite())
                    && levels[0] < levels[1]
                    && levels[1] < levels[2])
            {
                problems.push(format!(
                    "device {id}: alarm_levels_m must be finite and strictly increasing"
                ));
            }
            if props.kind == DeviceKind::RiverGauge && props.thresholds.alarm_levels_m.is_none() {
                problems.push(format!(
                    "device {id}: a river gauge needs thresholds.alarm_levels_m (BĐ1, BĐ2, BĐ3)"
                ));
            }
            let area = match &props.area {
                Some(a) if areas.get(a).is_none() => {
                    problems.push(format!("device {id}: area {a} does not exist"));
                    continue;
                }
                Some(a) => areas.chain_of(a),
                None => areas.chain_at(pos),
            };
            list.push(DeviceInfo {
                id,
                kind: props.kind,
                name: props.name,
                pos,
                area,
                expected_interval_s: props.expected_interval_s,
                thresholds: props.thresholds,
            });
        }
        let registry = Registry::indexed(list, areas);
        let counted = registry.by_id.len();
        if counted < registry.devices.len() {
            let mut seen = std::collections::HashSet::new();
            for d in &registry.devices {
                if !seen.insert(d.id.as_str()) {
                    problems.push(format!("device {}: duplicate id", d.id));
                }
            }
        }
        if !problems.is_empty() {
            return Err(CatalogueError { problems });
        }
        Ok(registry)
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
        Arc::new(Registry::indexed(devices, areas))
    }

    /// A registry of `devices` with its id index (a repeated id keeps its
    /// first device in the index).
    fn indexed(devices: Vec<DeviceInfo>, areas: Areas) -> Registry {
        let ids: Vec<Arc<str>> = devices.iter().map(|d| Arc::from(d.id.as_str())).collect();
        let mut by_id = HashMap::with_capacity_and_hasher(ids.len(), Default::default());
        for (i, id) in ids.iter().enumerate() {
            by_id.entry(id.clone()).or_insert(i as DeviceIndex);
        }
        Registry {
            devices,
            ids,
            by_id,
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
            "device g: a river gauge needs",
            "device h: alarm_levels_m",
            "feature #2",
            "device r: pos",
            "device r2: area atlantis",
            "device ok: duplicate id",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }
}
