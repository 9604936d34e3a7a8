//! The Grafana dashboard in `deploy/` asks only for measurements and fields
//! the sink writes.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use ioc_devices::{Registry, Scenario, Simulator};
use ioc_schemas::{Alert, AlertStatus, Evidence, Severity, Timestamp};
use ioc_timeseries::line::LineEncoder;

/// `(measurement, field)` pairs in the sink's output for a day of the demo.
fn written() -> BTreeSet<(String, String)> {
    let registry = Registry::sonla_demo();
    let encoder = LineEncoder::new(&registry);
    let t0 = Timestamp::now().millis() - 86_400_000;
    let mut sim = Simulator::new(registry.clone(), Scenario::Flood, 1, Timestamp(t0));
    let mut out = Vec::new();
    for k in 0..20_000 {
        let e = sim.next_reading(Timestamp(t0 + k * 4000)).unwrap();
        encoder.reading(&mut out, registry.lookup(&e.device).unwrap(), &e);
    }
    // An alert change, as the hub hands it over.
    let gauge = registry.get("river-to-hieu").unwrap();
    let alert = Alert {
        id: "river_level:river-to-hieu:1".into(),
        rule: "river_level".into(),
        subject: gauge.id.clone(),
        status: AlertStatus::Open,
        severity: Severity::Moderate,
        level: 2,
        level_name: "BĐ2".into(),
        peak_level: 2,
        title_vi: "Mực nước".into(),
        title_en: "River level".into(),
        pos: gauge.pos,
        area: gauge.area.clone(),
        zones: Vec::new(),
        nearest: Vec::new(),
        evidence: Evidence::new(3.1, "m", 3.0, Timestamp(t0), 9),
        opened_at: Timestamp(t0),
        updated_at: Timestamp(t0),
        resolved_at: None,
        version: 2,
        revision: false,
        handling: Default::default(),
    };
    encoder.alert(&mut out, &alert);
    // A geofence event, as the hub hands it over.
    let camera = registry
        .devices()
        .iter()
        .find(|d| d.kind == ioc_schemas::DeviceKind::Camera)
        .unwrap();
    encoder.geofence(
        &mut out,
        &ioc_schemas::GeofenceEvent {
            subject: "plate:29A12345".into(),
            zone: ioc_schemas::ZoneRef {
                id: "restricted-thuy-dien-son-la".into(),
                name: "Thủy điện Sơn La".into(),
                kind: ioc_schemas::ZoneKind::Restricted,
            },
            transition: ioc_schemas::GeofenceTransition::Enter,
            ts: Timestamp(t0),
            pos: camera.pos,
            source: camera.id.clone(),
            inside_s: None,
        },
    );
    let mut pairs = BTreeSet::new();
    for line in String::from_utf8(out).unwrap().lines() {
        let mut parts = line.splitn(3, ' ');
        let measurement = parts.next().unwrap().split(',').next().unwrap();
        for field in parts.next().unwrap().split(',') {
            let name = field.split('=').next().unwrap();
            pairs.insert((measurement.to_owned(), name.to_owned()));
        }
    }
    pairs
}

/// Every `"…"` after `needle` in `text`.
fn quoted_after<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.match_indices(needle)
        .filter_map(|(i, _)| {
            let rest = &text[i + needle.len()..];
            let rest = rest.trim_start().strip_prefix('"')?;
            Some(&rest[..rest.find('"')?])
        })
        .collect()
}

#[test]
fn dashboard_queries_name_written_fields() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/dashboards/ioc-timeseries.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let written = written();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let query = target["query"].as_str().unwrap();
            let measurements = quoted_after(query, "r._measurement ==");
            let fields = quoted_after(query, "r._field ==");
            assert!(!measurements.is_empty() && !fields.is_empty(), "{query}");
            for m in &measurements {
                for f in &fields {
                    assert!(
                        written.contains(&((*m).to_owned(), (*f).to_owned())),
                        "panel {:?} asks for {m}.{f}, which the sink does not write",
                        panel["title"]
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 8);
}
