//! The Sơn La demo catalogue generator.
//!
//! Place names are those of real communes, wards, roads, rivers and dams of
//! Sơn La province; every coordinate is approximate (to within a few
//! kilometres) and every boundary is generated, not surveyed: commune and
//! ward polygons are Voronoi cells of the commune centres clipped to an
//! approximate provincial outline. Thresholds are plausible, not official.
//! Do not use these files for anything but demonstration and testing.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::noise::unit;

/// Approximate outline of Sơn La province, `[lon, lat]`, counter-clockwise.
const OUTLINE: &[[f64; 2]] = &[
    [103.30, 21.50],
    [103.25, 21.30],
    [103.30, 21.12],
    [103.22, 20.98],
    [103.20, 20.80],
    [103.38, 20.70],
    [103.55, 20.62],
    [103.70, 20.70],
    [103.85, 20.85],
    [104.02, 20.90],
    [104.20, 20.88],
    [104.38, 20.80],
    [104.55, 20.68],
    [104.70, 20.70],
    [104.85, 20.66],
    [104.98, 20.72],
    [105.02, 20.90],
    [104.95, 21.05],
    [105.03, 21.18],
    [104.98, 21.33],
    [104.80, 21.42],
    [104.62, 21.50],
    [104.45, 21.60],
    [104.30, 21.74],
    [104.15, 21.80],
    [103.95, 21.83],
    [103.78, 21.96],
    [103.62, 22.02],
    [103.48, 21.90],
    [103.35, 21.72],
];

/// Former districts and the provincial city (before July 2025), with the
/// river their gauges watch when it is known.
const FORMER_DISTRICTS: &[(&str, &str, Option<&str>)] = &[
    ("Thành phố Sơn La", "son-la-city", Some("Nậm La")),
    ("Huyện Quỳnh Nhai", "quynh-nhai", Some("sông Đà")),
    ("Huyện Thuận Châu", "thuan-chau", None),
    ("Huyện Mường La", "muong-la", Some("sông Đà")),
    ("Huyện Bắc Yên", "bac-yen", Some("suối Sập")),
    ("Huyện Phù Yên", "phu-yen", Some("sông Đà")),
    ("Huyện Mai Sơn", "mai-son", Some("Nậm Pàn")),
    ("Huyện Yên Châu", "yen-chau", None),
    ("Thị xã Mộc Châu", "moc-chau", None),
    ("Huyện Vân Hồ", "van-ho", None),
    ("Huyện Sông Mã", "song-ma", Some("sông Mã")),
    ("Huyện Sốp Cộp", "sop-cop", Some("sông Mã")),
];

/// Communes (`false`) and wards (`true`) with approximate centres and the
/// former district they were part of.
const COMMUNES: &[(&str, bool, f64, f64, &str)] = &[
    ("Tô Hiệu", true, 103.908, 21.327, "son-la-city"),
    ("Chiềng An", true, 103.935, 21.345, "son-la-city"),
    ("Chiềng Cơi", true, 103.915, 21.298, "son-la-city"),
    ("Chiềng Sinh", true, 103.955, 21.300, "son-la-city"),
    ("Quỳnh Nhai", false, 103.570, 21.840, "quynh-nhai"),
    ("Mường Chiên", false, 103.470, 21.740, "quynh-nhai"),
    ("Mường Giôn", false, 103.600, 21.730, "quynh-nhai"),
    ("Mường Sại", false, 103.730, 21.620, "quynh-nhai"),
    ("Thuận Châu", false, 103.690, 21.430, "thuan-chau"),
    ("Bình Thuận", false, 103.760, 21.410, "thuan-chau"),
    ("Mường É", false, 103.550, 21.450, "thuan-chau"),
    ("Chiềng La", false, 103.600, 21.520, "thuan-chau"),
    ("Nậm Lầu", false, 103.640, 21.330, "thuan-chau"),
    ("Muổi Nọi", false, 103.780, 21.520, "thuan-chau"),
    ("Mường Khiêng", false, 103.820, 21.600, "thuan-chau"),
    ("Co Mạ", false, 103.500, 21.350, "thuan-chau"),
    ("Long Hẹ", false, 103.450, 21.490, "thuan-chau"),
    ("Mường Bám", false, 103.500, 21.250, "thuan-chau"),
    ("Mường La", false, 104.040, 21.520, "muong-la"),
    ("Chiềng Lao", false, 103.900, 21.620, "muong-la"),
    ("Mường Bú", false, 104.100, 21.420, "muong-la"),
    ("Chiềng Hoa", false, 104.220, 21.550, "muong-la"),
    ("Ngọc Chiến", false, 104.250, 21.670, "muong-la"),
    ("Bắc Yên", false, 104.420, 21.250, "bac-yen"),
    ("Tà Xùa", false, 104.450, 21.330, "bac-yen"),
    ("Tạ Khoa", false, 104.330, 21.150, "bac-yen"),
    ("Xím Vàng", false, 104.380, 21.420, "bac-yen"),
    ("Pắc Ngà", false, 104.270, 21.280, "bac-yen"),
    ("Chiềng Sại", false, 104.520, 21.190, "bac-yen"),
    ("Phù Yên", false, 104.640, 21.260, "phu-yen"),
    ("Gia Phù", false, 104.580, 21.150, "phu-yen"),
    ("Tường Hạ", false, 104.700, 21.320, "phu-yen"),
    ("Mường Cơi", false, 104.760, 21.200, "phu-yen"),
    ("Mường Bang", false, 104.640, 21.050, "phu-yen"),
    ("Tân Phong", false, 104.850, 21.100, "phu-yen"),
    ("Kim Bon", false, 104.540, 21.010, "phu-yen"),
    ("Mai Sơn", false, 104.100, 21.200, "mai-son"),
    ("Chiềng Mung", false, 104.040, 21.240, "mai-son"),
    ("Phiêng Cằm", false, 104.020, 21.000, "mai-son"),
    ("Mường Chanh", false, 103.990, 21.100, "mai-son"),
    ("Tà Hộc", false, 104.200, 21.330, "mai-son"),
    ("Chiềng Mai", false, 103.960, 21.190, "mai-son"),
    ("Phiêng Pằn", false, 104.140, 21.050, "mai-son"),
    ("Chiềng Sung", false, 104.190, 21.210, "mai-son"),
    ("Yên Châu", false, 104.300, 21.050, "yen-chau"),
    ("Chiềng Hặc", false, 104.240, 21.110, "yen-chau"),
    ("Lóng Phiêng", false, 104.340, 20.960, "yen-chau"),
    ("Yên Sơn", false, 104.420, 21.080, "yen-chau"),
    ("Phiêng Khoài", false, 104.400, 20.900, "yen-chau"),
    ("Mộc Châu", true, 104.630, 20.850, "moc-chau"),
    ("Mộc Sơn", true, 104.600, 20.880, "moc-chau"),
    ("Vân Sơn", true, 104.690, 20.820, "moc-chau"),
    ("Thảo Nguyên", true, 104.670, 20.890, "moc-chau"),
    ("Đoàn Kết", false, 104.780, 20.950, "moc-chau"),
    ("Lóng Sập", false, 104.550, 20.760, "moc-chau"),
    ("Chiềng Sơn", false, 104.730, 20.760, "moc-chau"),
    ("Tân Lập", false, 104.560, 20.950, "moc-chau"),
    ("Vân Hồ", false, 104.800, 20.780, "van-ho"),
    ("Song Khủa", false, 104.880, 20.880, "van-ho"),
    ("Tô Múa", false, 104.950, 20.960, "van-ho"),
    ("Xuân Nha", false, 104.920, 20.740, "van-ho"),
    ("Sông Mã", false, 103.740, 21.060, "song-ma"),
    ("Bó Sinh", false, 103.600, 21.150, "song-ma"),
    ("Chiềng Khương", false, 103.660, 20.980, "song-ma"),
    ("Mường Hung", false, 103.850, 21.100, "song-ma"),
    ("Chiềng Khoong", false, 103.800, 20.980, "song-ma"),
    ("Mường Lầm", false, 103.900, 21.000, "song-ma"),
    ("Nậm Ty", false, 103.750, 21.200, "song-ma"),
    ("Huổi Một", false, 103.880, 21.230, "song-ma"),
    ("Chiềng Sơ", false, 103.680, 21.110, "song-ma"),
    ("Sốp Cộp", false, 103.540, 20.930, "sop-cop"),
    ("Púng Bánh", false, 103.460, 20.990, "sop-cop"),
    ("Mường Lạn", false, 103.600, 20.800, "sop-cop"),
    ("Mường Lèo", false, 103.320, 20.950, "sop-cop"),
];

/// Hydropower reservoirs: name, dam position, normal and flood-control level (m a.s.l.).
const RESERVOIRS: &[(&str, &str, f64, f64, f64, f64)] = &[
    (
        "son-la",
        "Hồ thủy điện Sơn La (đập Ít Ong)",
        104.045,
        21.495,
        215.0,
        217.83,
    ),
    (
        "huoi-quang",
        "Hồ thủy điện Huội Quảng",
        103.985,
        21.625,
        370.0,
        371.0,
    ),
    (
        "nam-chien",
        "Hồ thủy điện Nậm Chiến",
        104.270,
        21.640,
        955.0,
        957.0,
    ),
];

/// National roads with approximate waypoints and the number of counters on them.
const ROADS: &[(&str, &str, usize, &[[f64; 2]])] = &[
    (
        "ql6",
        "Quốc lộ 6",
        30,
        &[
            [104.880, 20.780],
            [104.630, 20.850],
            [104.450, 20.960],
            [104.300, 21.050],
            [104.100, 21.200],
            [103.910, 21.330],
            [103.690, 21.430],
            [103.420, 21.580],
        ],
    ),
    (
        "ql37",
        "Quốc lộ 37",
        12,
        &[
            [104.170, 21.130],
            [104.330, 21.150],
            [104.420, 21.250],
            [104.640, 21.260],
            [104.900, 21.350],
        ],
    ),
    (
        "ql279",
        "Quốc lộ 279",
        8,
        &[
            [103.800, 21.600],
            [103.700, 21.720],
            [103.570, 21.830],
            [103.450, 21.900],
        ],
    ),
];

/// Camera clusters: slug, name, centre, count.
const CAMERAS: &[(&str, &str, [f64; 2], usize)] = &[
    ("son-la", "Sơn La", [103.912, 21.325], 40),
    ("moc-chau", "Mộc Châu", [104.635, 20.855], 20),
];

/// ASCII slug of a Vietnamese name: `Chiềng Cơi` → `chieng-coi`.
pub fn slug(name: &str) -> String {
    let ascii = deunicode::deunicode(&name.replace(['Đ', 'đ'], "d"));
    let mut out = String::with_capacity(ascii.len());
    for c in ascii.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

fn round5(x: f64) -> f64 {
    (x * 1e5).round() / 1e5
}

fn point(lon: f64, lat: f64) -> Value {
    json!({"type": "Point", "coordinates": [round5(lon), round5(lat)]})
}

/// Sutherland–Hodgman: the part of `poly` on `p`'s side of the perpendicular
/// bisector between `p` and `q`.
fn clip_towards(poly: &[[f64; 2]], p: [f64; 2], q: [f64; 2]) -> Vec<[f64; 2]> {
    // Keep x where (x - m) · (q - p) <= 0, m the midpoint.
    let m = [(p[0] + q[0]) / 2.0, (p[1] + q[1]) / 2.0];
    let d = [q[0] - p[0], q[1] - p[1]];
    let side = |x: [f64; 2]| (x[0] - m[0]) * d[0] + (x[1] - m[1]) * d[1];
    let mut out = Vec::with_capacity(poly.len() + 1);
    for i in 0..poly.len() {
        let a = poly[i];
        let b = poly[(i + 1) % poly.len()];
        let (sa, sb) = (side(a), side(b));
        if sa <= 0.0 {
            out.push(a);
        }
        if (sa <= 0.0) != (sb <= 0.0) {
            let t = sa / (sa - sb);
            out.push([a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])]);
        }
    }
    out
}

fn ring(points: &[[f64; 2]]) -> Value {
    let mut coords: Vec<Value> = points
        .iter()
        .map(|p| json!([round5(p[0]), round5(p[1])]))
        .collect();
    coords.dedup();
    if let Some(first) = coords.first().cloned() {
        coords.push(first);
    }
    json!([coords])
}

fn area_feature(id: &str, name: &str, level: &str, parent: Option<&str>, geometry: Value) -> Value {
    let mut props = json!({"id": id, "name": name, "level": level});
    if let Some(p) = parent {
        props["parent"] = json!(p);
    }
    json!({"type": "Feature", "properties": props, "geometry": geometry})
}

fn areas() -> Value {
    let mut features = vec![area_feature(
        "sl",
        "Tỉnh Sơn La",
        "province",
        None,
        json!({"type": "Polygon", "coordinates": ring(OUTLINE)}),
    )];
    for (name, id, _) in FORMER_DISTRICTS {
        features.push(area_feature(
            &format!("sl-former-{id}"),
            name,
            "former_district",
            Some("sl"),
            Value::Null,
        ));
    }
    for (i, &(name, ward, lon, lat, district)) in COMMUNES.iter().enumerate() {
        let mut cell = OUTLINE.to_vec();
        for (j, other) in COMMUNES.iter().enumerate() {
            if i != j {
                cell = clip_towards(&cell, [lon, lat], [other.2, other.3]);
            }
        }
        let (level, prefix) = if ward {
            ("ward", "Phường")
        } else {
            ("commune", "Xã")
        };
        features.push(area_feature(
            &format!("sl-{}", slug(name)),
            &format!("{prefix} {name}"),
            level,
            Some(&format!("sl-former-{district}")),
            json!({"type": "Polygon", "coordinates": ring(&cell)}),
        ));
    }
    json!({
        "type": "FeatureCollection",
        "name": "Sơn La administrative areas (demo)",
        "note": "APPROXIMATE DEMO DATA. Names are real communes and wards of Sơn La province after July 2025 (74 of 75) and the former districts they belonged to; centres are approximate and the boundaries are generated Voronoi cells clipped to an approximate provincial outline, not official boundaries. Generated by devices/src/catalogue/sonla.rs.",
        "features": features,
    })
}

fn device(id: &str, kind: &str, name: &str, pos: [f64; 2], interval_s: u32, extra: Value) -> Value {
    let mut props =
        json!({"id": id, "kind": kind, "name": name, "expected_interval_s": interval_s});
    if let (Value::Object(p), Value::Object(e)) = (&mut props, extra) {
        p.extend(e);
    }
    json!({"type": "Feature", "properties": props, "geometry": point(pos[0], pos[1])})
}

/// Points spread evenly along a polyline.
fn along(waypoints: &[[f64; 2]], n: usize) -> Vec<[f64; 2]> {
    let seg: Vec<f64> = waypoints
        .windows(2)
        .map(|w| ((w[1][0] - w[0][0]).powi(2) + (w[1][1] - w[0][1]).powi(2)).sqrt())
        .collect();
    let total: f64 = seg.iter().sum();
    (0..n)
        .map(|k| {
            let mut s = total * (k as f64 + 0.5) / n as f64;
            for (i, len) in seg.iter().enumerate() {
                if s <= *len || i == seg.len() - 1 {
                    let t = (s / len).min(1.0);
                    let (a, b) = (waypoints[i], waypoints[i + 1]);
                    return [a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])];
                }
                s -= len;
            }
            waypoints[0]
        })
        .collect()
}

fn devices() -> Value {
    let mut features = Vec::new();
    for (i, &(name, _, lon, lat, district)) in COMMUNES.iter().enumerate() {
        let s = slug(name);
        let river = FORMER_DISTRICTS
            .iter()
            .find(|d| d.1 == district)
            .and_then(|d| d.2);
        // Gauge datum chosen so that BĐ1 sits 1.5 m above the dry-season stage.
        let base = 1.0 + (unit(7, i as u64, 0) * 30.0).round() / 10.0;
        let jitter = |salt: u64| (unit(11, i as u64, salt) - 0.5) * 0.012;
        let mut extra =
            json!({"thresholds": {"alarm_levels_m": [base + 1.5, base + 2.5, base + 3.5]}});
        let gauge_name = match river {
            Some(r) => {
                extra["river"] = json!(r);
                format!("Trạm thủy văn {name} ({r})")
            }
            None => format!("Trạm thủy văn {name}"),
        };
        features.push(device(
            &format!("river-{s}"),
            "river_gauge",
            &gauge_name,
            [lon + jitter(1), lat + jitter(2)],
            600,
            extra,
        ));
        features.push(device(
            &format!("rain-{s}"),
            "rain_gauge",
            &format!("Trạm đo mưa {name}"),
            [lon + jitter(3), lat + jitter(4)],
            600,
            json!({}),
        ));
    }
    for &(id, name, lon, lat, normal, flood) in RESERVOIRS {
        features.push(device(
            &format!("reservoir-{id}"),
            "reservoir",
            name,
            [lon, lat],
            300,
            json!({"river": "sông Đà", "thresholds": {"normal_level_m": normal, "flood_control_level_m": flood}}),
        ));
    }
    for &(id, name, n, waypoints) in ROADS {
        for (k, p) in along(waypoints, n).into_iter().enumerate() {
            features.push(device(
                &format!("traffic-{id}-{:02}", k + 1),
                "traffic_counter",
                &format!("Đếm xe {name} #{:02}", k + 1),
                p,
                300,
                json!({"road": name}),
            ));
        }
    }
    for &(id, name, centre, n) in CAMERAS {
        for k in 0..n {
            let (a, b) = (
                unit(13, k as u64, id.len() as u64),
                unit(17, k as u64, id.len() as u64),
            );
            let p = [centre[0] + (a - 0.5) * 0.05, centre[1] + (b - 0.5) * 0.04];
            features.push(device(
                &format!("cam-{id}-{:02}", k + 1),
                "camera",
                &format!("Camera AI {name} #{:02}", k + 1),
                p,
                60,
                json!({}),
            ));
        }
    }
    json!({
        "type": "FeatureCollection",
        "name": "Sơn La demo devices",
        "note": "APPROXIMATE DEMO DATA. Devices are simulated. Places, roads, rivers and dams are real; positions are approximate and thresholds are plausible values, not official alarm levels. Generated by devices/src/catalogue/sonla.rs.",
        "features": features,
    })
}

fn to_text(value: &Value) -> String {
    // One feature per line keeps diffs readable without bloating the file.
    let mut out = String::new();
    let Value::Object(map) = value else {
        return value.to_string();
    };
    out.push_str("{\n");
    for (k, v) in map {
        if k == "features" {
            continue;
        }
        let _ = writeln!(out, "{}: {},", Value::String(k.clone()), v);
    }
    out.push_str("\"features\": [\n");
    let features = map
        .get("features")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, f) in features.iter().enumerate() {
        out.push_str(&f.to_string());
        out.push_str(if i + 1 < features.len() { ",\n" } else { "\n" });
    }
    out.push_str("]}\n");
    out
}

/// Generates `(devices.geojson, areas.geojson)`.
pub fn generate() -> (String, String) {
    (to_text(&devices()), to_text(&areas()))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use geo::{Contains, Point, Polygon};

    use super::*;

    #[test]
    fn slugs_are_ascii() {
        assert_eq!(slug("Chiềng Cơi"), "chieng-coi");
        assert_eq!(slug("Đoàn Kết"), "doan-ket");
        assert_eq!(slug("Quốc lộ 6"), "quoc-lo-6");
    }

    #[test]
    fn every_commune_centre_lies_inside_the_outline() {
        let outline = Polygon::new(
            OUTLINE
                .iter()
                .map(|p| (p[0], p[1]))
                .collect::<Vec<_>>()
                .into(),
            vec![],
        );
        for (name, _, lon, lat, _) in COMMUNES {
            assert!(outline.contains(&Point::new(*lon, *lat)), "{name}");
        }
    }

    #[test]
    fn committed_catalogue_matches_the_generator() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/sonla");
        let (devices, areas) = generate();
        if std::env::var_os("IOC_BLESS").is_some() {
            std::fs::write(dir.join("devices.geojson"), &devices).unwrap();
            std::fs::write(dir.join("areas.geojson"), &areas).unwrap();
        }
        assert!(
            devices == crate::catalogue::SONLA_DEVICES && areas == crate::catalogue::SONLA_AREAS,
            "devices/data/sonla is out of date: run `IOC_BLESS=1 cargo test -p ioc-devices` and commit the result"
        );
    }
}
