use std::sync::Arc;

use ioc_devices::{Registry, Zones};
use ioc_schemas::{EngineOutput, GeofenceTransition};
use proptest::prelude::*;

use super::*;

const ZONES: &str = r#"{"type":"FeatureCollection","features":[
  {"type":"Feature","properties":{"id":"dam","name":"Đập","kind":"restricted","buffer_m":30,"dwell_s":300},
   "geometry":{"type":"Polygon","coordinates":[[[104.0,21.0],[104.01,21.0],[104.01,21.01],[104.0,21.01],[104.0,21.0]]]}},
  {"type":"Feature","properties":{"id":"slope","name":"Sườn","kind":"landslide_risk"},
   "geometry":{"type":"Polygon","coordinates":[[[104.1,21.0],[104.2,21.0],[104.2,21.1],[104.1,21.1],[104.1,21.0]]]}}
]}"#;

const RULES: &str = r#"
[[rule]]
id = "watchlist"
kind = "watchlist"
plates = ["26A-999.99"]

[[rule]]
id = "intrusion"
kind = "geofence"
zone_kinds = ["restricted"]

[[rule]]
id = "cloned_plate"
kind = "cloned_plate"

[[rule]]
id = "zone_rain"
kind = "zone_rainfall"
zone_kinds = ["landslide_risk"]
window = "1h"
min_gauges = 2
levels = [{ name = "L1", value = 20 }, { name = "L2", value = 40 }]
"#;

fn setup() -> (GeoState, RuleSet, Zones) {
    let registry = Registry::sonla_demo();
    let rules = RuleSet::parse(RULES, &registry, &|_| Err("none".into())).unwrap();
    (
        GeoState::new(registry),
        rules,
        Zones::from_geojson(ZONES).unwrap(),
    )
}

fn at(subject: &str, plate: bool, source: &str, ts: i64, pos: [f64; 2]) -> GeoItem {
    GeoItem::Position {
        next: false,
        subject: subject.into(),
        source: source.into(),
        plate,
        ts,
        pos,
    }
}

fn transitions(out: &[EngineOutput]) -> Vec<(GeofenceTransition, i64)> {
    out.iter()
        .filter_map(|o| match o {
            EngineOutput::Geofence(g) => Some((g.transition, g.ts.millis())),
            _ => None,
        })
        .collect()
}

#[test]
fn enter_dwell_and_exit_beyond_the_buffer() {
    let (mut geo, rules, zones) = setup();
    let mut out = Vec::new();
    geo.apply(
        &mut [at("tracker-1", false, "tracker-1", 0, [104.005, 21.005])],
        &rules,
        &zones,
        &mut out,
    );
    geo.advance(200_000, &rules, &zones, &mut out);
    // 0.0002° east of the edge: about 21 m, inside the 30 m buffer.
    geo.apply(
        &mut [at(
            "tracker-1",
            false,
            "tracker-1",
            250_000,
            [104.0102, 21.005],
        )],
        &rules,
        &zones,
        &mut out,
    );
    geo.advance(400_000, &rules, &zones, &mut out);
    geo.apply(
        &mut [at(
            "tracker-1",
            false,
            "tracker-1",
            500_000,
            [104.0105, 21.005],
        )],
        &rules,
        &zones,
        &mut out,
    );
    use GeofenceTransition::*;
    assert_eq!(
        transitions(&out),
        [(Enter, 0), (Dwell, 300_000), (Exit, 500_000)]
    );
    let alerts: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            EngineOutput::Alert(a) => Some((a.rule.as_str(), a.level, a.version)),
            _ => None,
        })
        .collect();
    assert_eq!(alerts, [("intrusion", 1, 1), ("intrusion", 0, 2)]);
}

proptest! {
    /// Positions jittering along an edge, never farther out than the
    /// buffer, enter once and never leave.
    #[test]
    fn jitter_within_the_buffer_never_flaps(offsets in prop::collection::vec(-0.0002f64..0.00025, 1..60)) {
        let (mut geo, rules, zones) = setup();
        let mut out = Vec::new();
        for (k, dx) in offsets.iter().enumerate() {
            // The east edge is at 104.01; 0.00025° is about 26 m there.
            let item = at("v", false, "v", k as i64 * 1000, [104.01 + dx, 21.005]);
            geo.apply(&mut [item], &rules, &zones, &mut out);
        }
        let t = transitions(&out);
        prop_assert!(t.iter().all(|(tr, _)| *tr == GeofenceTransition::Enter));
        prop_assert!(t.len() <= 1);
        let entered_once = offsets.iter().any(|dx| *dx <= 0.0);
        prop_assert_eq!(t.len() == 1, entered_once);
    }

    /// A plate's track is the same whatever order its reads arrive in.
    #[test]
    fn tracks_do_not_depend_on_arrival_order(order in Just((0..8usize).collect::<Vec<_>>()).prop_shuffle()) {
        let cams = ["cam-son-la-01", "cam-son-la-02", "cam-son-la-03", "cam-son-la-04"];
        let reads: Vec<GeoItem> = (0..8)
            .map(|k| at("plate-26A99999", true, cams[k % 4], k as i64 * 60_000, [103.9 + 0.01 * (k % 4) as f64, 21.3]))
            .collect();
        let last_track = |items: Vec<GeoItem>| {
            let (mut geo, rules, zones) = setup();
            let mut out = Vec::new();
            for item in items {
                geo.apply(&mut [item], &rules, &zones, &mut out);
            }
            out.into_iter().rev().find_map(|o| match o {
                EngineOutput::Track(t) => Some(t),
                _ => None,
            })
        };
        let sorted = last_track(reads.clone()).unwrap();
        prop_assert_eq!(sorted.points.len(), 8);
        let shuffled = last_track(order.iter().map(|&i| reads[i].clone()).collect()).unwrap();
        prop_assert_eq!(shuffled, sorted);
    }
}

#[test]
fn a_plate_too_fast_between_two_cameras_is_cloned() {
    let (mut geo, rules, zones) = setup();
    let mut out = Vec::new();
    // Sơn La, then Mộc Châu (about 80 km) ten minutes later.
    let mut items = [
        at(
            "plate-26C22222",
            true,
            "cam-son-la-01",
            0,
            [103.9138, 21.336],
        ),
        at(
            "plate-26C22222",
            true,
            "cam-moc-chau-01",
            600_000,
            [104.6142, 20.8613],
        ),
    ];
    geo.apply(&mut items, &rules, &zones, &mut out);
    let cloned: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            EngineOutput::Alert(a) if a.rule == "cloned_plate" => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(cloned.len(), 1);
    assert!(
        cloned[0].evidence.value > 400.0,
        "{}",
        cloned[0].evidence.value
    );
    assert_eq!(
        cloned[0].evidence.related,
        ["cam-son-la-01", "cam-moc-chau-01"]
    );
}

#[test]
fn one_zone_alert_when_enough_gauges_reach_a_level() {
    let (mut geo, rules, zones) = setup();
    let mut out = Vec::new();
    let rain = |gauge: &str, end_ms: i64, total_mm: f64| GeoItem::Rain {
        rule: Arc::from("zone_rain"),
        zone: Arc::from("slope"),
        gauge: gauge.into(),
        end_ms,
        at_ms: end_ms,
        total_mm,
        running: false,
    };
    let mut items = [
        rain("g1", 1000, 25.0),
        rain("g2", 1000, 10.0),
        rain("g3", 1000, 30.0),
        rain("g1", 2000, 45.0),
        rain("g3", 2000, 41.0),
        rain("g1", 3000, 5.0),
    ];
    for item in items.iter_mut() {
        geo.apply(std::slice::from_mut(item), &rules, &zones, &mut out);
    }
    let alerts: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            EngineOutput::Alert(a) => {
                Some((a.level, a.evidence.related.clone(), a.subject.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        alerts,
        [
            (
                1,
                vec!["g3".to_owned(), "g1".to_owned()],
                "slope".to_owned()
            ),
            (
                2,
                vec!["g1".to_owned(), "g3".to_owned()],
                "slope".to_owned()
            ),
            // Resolved once only g3 is still above the first level.
            (0, vec!["g3".to_owned()], "slope".to_owned()),
        ]
    );
}

proptest! {
    /// A plate's subject and shared id are `plate-` and the plate
    /// normalised, whatever its length or characters (the stack buffer's
    /// fallback included).
    #[test]
    fn plate_subject_id_is_plate_subject(plate in "\\PC{0,64}") {
        let expected = format!("plate-{}", crate::rules::watchlist::normalise(&plate));
        let (id, subject) = (plate_subject_id(&plate), plate_subject(&plate));
        prop_assert_eq!(&*id, expected.as_str());
        prop_assert_eq!(subject, expected);
    }
}
