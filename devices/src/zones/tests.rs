use super::*;
use crate::noise::unit;

const FILE: &str = r#"{"type":"FeatureCollection","features":[
  {"type":"Feature","properties":{"id":"dam","name":"Đập","kind":"restricted","buffer_m":50,"dwell_s":600},
   "geometry":{"type":"Polygon","coordinates":[[[0,0],[0.01,0],[0.01,0.01],[0,0.01],[0,0]]]}},
  {"type":"Feature","properties":{"id":"slope","name":"Sườn","kind":"landslide_risk"},
   "geometry":{"type":"Polygon","coordinates":[[[0.005,0],[0.02,0],[0.02,0.01],[0.005,0.01],[0.005,0]],
     [[0.012,0.002],[0.015,0.002],[0.015,0.004],[0.012,0.004],[0.012,0.002]]]}},
  {"type":"Feature","properties":{"id":"ql6","name":"QL6","kind":"road_segment","buffer_m":30},
   "geometry":{"type":"LineString","coordinates":[[0,0.05],[0.1,0.05]]}},
  {"type":"Feature","properties":{"id":"fire-1","name":"PCCC 1","kind":"fire_station"},
   "geometry":{"type":"Point","coordinates":[0.03,0.0]}},
  {"type":"Feature","properties":{"id":"fire-2","name":"PCCC 2","kind":"fire_station"},
   "geometry":{"type":"Point","coordinates":[0.001,0.001]}},
  {"type":"Feature","properties":{"id":"shelter-1","name":"Nhà văn hoá","kind":"shelter"},
   "geometry":{"type":"Point","coordinates":[0.0,0.002]}}
]}"#;

/// The reference: every zone tested exactly, no index.
fn brute_force_at(zones: &Zones, pos: [f64; 2]) -> Vec<usize> {
    use geo::Intersects;
    let p = geo::Point::new(pos[0], pos[1]);
    (0..zones.all().len())
        .filter(|&i| match &zones.zone(i).shape {
            Shape::Area(mp) => mp.intersects(&p),
            Shape::Road(_) => zones.distance_m(i, pos) <= 0.0,
        })
        .collect()
}

fn ids(zones: &Zones, pos: [f64; 2]) -> Vec<String> {
    zones.at(pos).into_iter().map(|z| z.id).collect()
}

#[test]
fn points_find_their_zones_holes_and_road_corridors() {
    let zones = Zones::from_geojson(FILE).unwrap();
    assert_eq!(ids(&zones, [0.002, 0.005]), ["dam"]);
    assert_eq!(ids(&zones, [0.007, 0.005]), ["dam", "slope"]);
    assert!(ids(&zones, [0.013, 0.003]).is_empty(), "inside the hole");
    // 0.0002° of latitude is about 22 m: inside the 30 m corridor.
    assert_eq!(ids(&zones, [0.05, 0.0502]), ["ql6"]);
    assert!(
        ids(&zones, [0.05, 0.0506]).is_empty(),
        "about 67 m off the road"
    );
    assert!(ids(&zones, [0.5, 0.5]).is_empty());
    let d = zones.distance_m(0, [0.0105, 0.005]);
    assert!((d - 55.6).abs() < 1.0, "0.0005° east of the edge: {d} m");
}

#[test]
fn nearest_assets_by_kind_and_distance() {
    let zones = Zones::from_geojson(FILE).unwrap();
    let near = zones.nearest([0.0, 0.0], &[AssetKind::FireStation], 5, None);
    let got: Vec<_> = near.iter().map(|a| (a.id.as_str(), a.distance_m)).collect();
    assert_eq!(got, [("fire-2", 157.0), ("fire-1", 3336.0)]);
    let near = zones.nearest(
        [0.0, 0.0],
        &[AssetKind::FireStation, AssetKind::Shelter],
        2,
        Some(1000.0),
    );
    let got: Vec<_> = near.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(got, ["fire-2", "shelter-1"]);
}

#[test]
fn every_problem_is_reported_with_its_feature() {
    let bad = r#"{"type":"FeatureCollection","features":[
      {"type":"Feature","properties":{"id":"open","name":"O","kind":"flood_prone"},
       "geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1]]]}},
      {"type":"Feature","properties":{"id":"bowtie","name":"B","kind":"restricted"},
       "geometry":{"type":"Polygon","coordinates":[[[0,0],[1,1],[1,0],[0,1],[0,0]]]}},
      {"type":"Feature","properties":{"id":"far","name":"F","kind":"restricted"},
       "geometry":{"type":"Polygon","coordinates":[[[0,0],[200,0],[1,1],[0,0]]]}},
      {"type":"Feature","properties":{"id":"road","name":"R","kind":"road_segment"},
       "geometry":{"type":"LineString","coordinates":[[0,0],[1,1]]}},
      {"type":"Feature","properties":{"id":"what","name":"W","kind":"volcano"},"geometry":null},
      {"type":"Feature","properties":{"id":"h","name":"H","kind":"hospital"},
       "geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}},
      {"type":"Feature","properties":{"id":"dup","name":"D","kind":"shelter"},"geometry":{"type":"Point","coordinates":[0,0]}},
      {"type":"Feature","properties":{"id":"dup","name":"D","kind":"shelter"},"geometry":{"type":"Point","coordinates":[0,0]}}
    ]}"#;
    let text = Zones::from_geojson(bad).unwrap_err().to_string();
    for needle in [
        "zone open: exterior ring is not closed",
        "zone bowtie: invalid polygon",
        "zone far: coordinate [200.0, 0.0]",
        "zone road: a road_segment needs buffer_m",
        "zone what: unknown kind \"volcano\"",
        "zone h: an asset (hospital) must be a Point",
        "zone dup: duplicate id",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from {text}");
    }
}

/// The index answers exactly what testing every zone would, for random
/// points over random star-shaped zones (large ones cut into pieces).
#[test]
fn index_equals_brute_force_over_random_points() {
    for (n, vertices, seed) in [(200, (32, 64), 1), (50, (100, 400), 2), (300, (4, 12), 3)] {
        let text = synthetic(n, vertices, 0.05, [103.0, 20.5, 105.0, 22.0], seed);
        let zones = Zones::from_geojson(&text).unwrap();
        let mut found = Vec::new();
        for k in 0..4_000u64 {
            let pos = [
                103.0 + 2.0 * unit(seed + 100, k, 0),
                20.5 + 1.5 * unit(seed + 100, k, 1),
            ];
            zones.indices_at(pos, &mut found);
            assert_eq!(found, brute_force_at(&zones, pos), "at {pos:?}");
        }
    }
}

#[test]
fn the_demo_zones_are_valid() {
    let zones = Zones::from_geojson(crate::catalogue::SONLA_ZONES).unwrap();
    for kind in ZoneKind::ALL {
        assert!(
            zones.all().iter().any(|z| z.reference.kind == kind),
            "{kind:?}"
        );
    }
    for kind in AssetKind::ALL {
        assert!(zones.assets().iter().any(|a| a.kind == kind), "{kind:?}");
    }
}
