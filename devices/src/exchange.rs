//! The registry as files: CSV and GeoJSON, read for imports and written
//! for exports, so that an export imports again unchanged.
//!
//! CSV has a header row; `id`, `kind`, `name`, `lon`, `lat` and
//! `expected_interval_s` are required, the other [`CSV_COLUMNS`] optional
//! and empty cells absent. GeoJSON is the catalogue's format
//! ([`crate::registry::specs_from_geojson`]).

use ioc_schemas::{DeviceKind, DeviceSpec, Lifecycle, Thresholds, Timestamp};

use crate::registry::{DeviceIndex, Problem, Read, Registry};

/// The columns of a registry CSV file, in the order exports write them.
pub const CSV_COLUMNS: [&str; 19] = [
    "id",
    "kind",
    "name",
    "lon",
    "lat",
    "area",
    "expected_interval_s",
    "bd1_m",
    "bd2_m",
    "bd3_m",
    "normal_level_m",
    "flood_control_level_m",
    "lifecycle",
    "maintenance_until",
    "retired_at",
    "lifecycle_reason",
    "river",
    "road",
    "direction",
];

const REQUIRED: [&str; 6] = ["id", "kind", "name", "lon", "lat", "expected_interval_s"];

/// The devices of a CSV file. Fails, with one problem, when the header
/// is not usable.
pub fn specs_from_csv(text: &str) -> Result<Read, Problem> {
    let whole = |field: &str, problem: String| Problem {
        row: 0,
        id: String::new(),
        field: field.into(),
        problem,
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| whole("header", e.to_string()))?
        .iter()
        .map(str::to_owned)
        .collect();
    if let Some(unknown) = header.iter().find(|h| !CSV_COLUMNS.contains(&h.as_str())) {
        return Err(whole(
            "header",
            format!(
                "unknown column {unknown:?}; the columns are {}",
                CSV_COLUMNS.join(", ")
            ),
        ));
    }
    if let Some(missing) = REQUIRED.iter().find(|r| !header.iter().any(|h| h == *r)) {
        return Err(whole("header", format!("column {missing:?} is required")));
    }
    let mut specs = Vec::new();
    let mut problems = Vec::new();
    for (n, record) in reader.records().enumerate() {
        let row = n + 1;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                problems.push(Problem {
                    row,
                    id: String::new(),
                    field: "row".into(),
                    problem: e.to_string(),
                });
                continue;
            }
        };
        let cell = |name: &str| {
            header
                .iter()
                .position(|h| h == name)
                .and_then(|i| record.get(i))
                .filter(|v| !v.is_empty())
        };
        let id = cell("id").unwrap_or_default().to_owned();
        let before = problems.len();
        let mut bad = |field: &str, problem: String| {
            problems.push(Problem {
                row,
                id: id.clone(),
                field: field.into(),
                problem,
            })
        };
        let number = |name: &str, bad: &mut dyn FnMut(&str, String)| -> Option<f64> {
            let text = cell(name)?;
            match text.parse::<f64>() {
                Ok(v) => Some(v),
                Err(_) => {
                    bad(name, format!("{text:?} is not a number"));
                    None
                }
            }
        };
        let time = |name: &str, bad: &mut dyn FnMut(&str, String)| -> Option<Timestamp> {
            let text = cell(name)?;
            let t = Timestamp::parse_rfc3339(text);
            if t.is_none() {
                bad(name, format!("{text:?} is not an RFC 3339 time"));
            }
            t
        };
        let kind = match cell("kind") {
            Some(k) => DeviceKind::parse(k).or_else(|| {
                bad(
                    "kind",
                    format!(
                        "unknown kind {k:?}; one of {}",
                        DeviceKind::ALL.map(DeviceKind::as_str).join(", ")
                    ),
                );
                None
            }),
            None => {
                bad("kind", "missing".into());
                None
            }
        };
        let lon = number("lon", &mut bad);
        let lat = number("lat", &mut bad);
        let interval = match cell("expected_interval_s").map(str::parse::<u32>) {
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => {
                bad(
                    "expected_interval_s",
                    "must be a whole number of seconds".into(),
                );
                None
            }
            None => {
                bad("expected_interval_s", "missing".into());
                None
            }
        };
        let bd = [
            number("bd1_m", &mut bad),
            number("bd2_m", &mut bad),
            number("bd3_m", &mut bad),
        ];
        let alarm_levels_m = match bd {
            [Some(a), Some(b), Some(c)] => Some([a, b, c]),
            [None, None, None] => None,
            _ => {
                bad(
                    "bd1_m",
                    "give all three of bd1_m, bd2_m, bd3_m or none".into(),
                );
                None
            }
        };
        let thresholds = Thresholds {
            alarm_levels_m,
            normal_level_m: number("normal_level_m", &mut bad),
            flood_control_level_m: number("flood_control_level_m", &mut bad),
        };
        let reason = cell("lifecycle_reason").unwrap_or_default().to_owned();
        let lifecycle = match cell("lifecycle").unwrap_or("active") {
            "active" => Lifecycle::Active,
            "maintenance" => Lifecycle::Maintenance {
                until: time("maintenance_until", &mut bad),
                reason,
            },
            "retired" => Lifecycle::Retired {
                at: time("retired_at", &mut bad).unwrap_or_else(Timestamp::now),
                reason,
            },
            other => {
                bad(
                    "lifecycle",
                    format!("{other:?}: one of active, maintenance, retired"),
                );
                Lifecycle::Active
            }
        };
        if cell("name").is_none() {
            bad("name", "missing".into());
        }
        if id.is_empty() {
            bad("id", "missing".into());
        }
        if problems.len() > before {
            continue;
        }
        let (Some(kind), Some(lon), Some(lat), Some(expected_interval_s)) =
            (kind, lon, lat, interval)
        else {
            continue;
        };
        let owned = |name: &str| cell(name).map(str::to_owned);
        specs.push((
            row,
            DeviceSpec {
                id: id.clone(),
                kind,
                name: owned("name").unwrap_or_default(),
                pos: [lon, lat],
                area: owned("area"),
                expected_interval_s,
                thresholds,
                lifecycle,
                river: owned("river"),
                road: owned("road"),
                direction: owned("direction"),
            },
        ));
    }
    Ok((specs, problems))
}

/// Every device of `registry` as CSV, [`CSV_COLUMNS`] in order.
pub fn to_csv(registry: &Registry) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(CSV_COLUMNS);
    for i in 0..registry.devices().len() {
        let s = registry.spec(i as DeviceIndex);
        let num = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        let bd = |k: usize| num(s.thresholds.alarm_levels_m.map(|l| l[k]));
        let (until, at, reason) = match &s.lifecycle {
            Lifecycle::Active => (String::new(), String::new(), String::new()),
            Lifecycle::Maintenance { until, reason } => (
                until.map(|t| t.to_rfc3339()).unwrap_or_default(),
                String::new(),
                reason.clone(),
            ),
            Lifecycle::Retired { at, reason } => (String::new(), at.to_rfc3339(), reason.clone()),
        };
        let _ = w.write_record([
            s.id.clone(),
            s.kind.as_str().to_owned(),
            s.name.clone(),
            s.pos[0].to_string(),
            s.pos[1].to_string(),
            s.area.clone().unwrap_or_default(),
            s.expected_interval_s.to_string(),
            bd(0),
            bd(1),
            bd(2),
            num(s.thresholds.normal_level_m),
            num(s.thresholds.flood_control_level_m),
            s.lifecycle.as_str().to_owned(),
            until,
            at,
            reason,
            s.river.clone().unwrap_or_default(),
            s.road.clone().unwrap_or_default(),
            s.direction.clone().unwrap_or_default(),
        ]);
    }
    w.into_inner()
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default()
}

/// Every device of `registry` as a GeoJSON FeatureCollection of points,
/// the catalogue's format.
pub fn to_geojson(registry: &Registry) -> String {
    let features: Vec<serde_json::Value> = (0..registry.devices().len())
        .map(|i| {
            let s = registry.spec(i as DeviceIndex);
            let pos = s.pos;
            let mut props = match serde_json::to_value(&s) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => serde_json::Map::new(),
            };
            props.remove("pos");
            serde_json::json!({
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": pos},
                "properties": props,
            })
        })
        .collect();
    serde_json::json!({"type": "FeatureCollection", "features": features}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_import_again_unchanged() {
        let registry = Registry::sonla_demo();
        let all = |specs: Vec<(usize, DeviceSpec)>| -> Vec<DeviceSpec> {
            specs.into_iter().map(|(_, s)| s).collect()
        };
        let want: Vec<DeviceSpec> = (0..registry.devices().len())
            .map(|i| registry.spec(i as DeviceIndex))
            .collect();
        let (csv, problems) = specs_from_csv(&to_csv(&registry)).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(all(csv), want);
        let (geo, problems) = crate::registry::specs_from_geojson(&to_geojson(&registry)).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(all(geo), want);
    }

    #[test]
    fn every_bad_cell_is_named() {
        let text = "id,kind,name,lon,lat,expected_interval_s,bd1_m,bd2_m,bd3_m,lifecycle\n\
                    g1,river_gauge,G,103.9,21.3,600,3,4,5,active\n\
                    g2,toaster,G,103.9,21.3,600,,,,\n\
                    g3,river_gauge,G,east,21.3,0,3,,,\n\
                    g4,rain_gauge,G,103.9,21.3,60,,,,sleeping\n";
        let (specs, problems) = specs_from_csv(text).unwrap();
        assert_eq!(specs.len(), 1);
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        for needle in [
            "row 2 (device g2): kind: unknown kind \"toaster\"",
            "row 3 (device g3): lon: \"east\" is not a number",
            "row 3 (device g3): bd1_m: give all three",
            "row 4 (device g4): lifecycle: \"sleeping\"",
        ] {
            assert!(
                lines.iter().any(|l| l.starts_with(needle)),
                "{needle} not in {lines:#?}"
            );
        }
        let unknown = specs_from_csv("id,kind,colour\n").unwrap_err();
        assert!(
            unknown.problem.contains("unknown column \"colour\""),
            "{unknown}"
        );
    }
}
