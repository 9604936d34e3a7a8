//! Validation tests: one per rejection reason, plus the committed schemas.

use std::path::PathBuf;

use crate::envelope::{Limits, decode};
use crate::{Body, CameraEvent, RejectReason, Timestamp};

const NOW: Timestamp = Timestamp(1_783_998_765_120);

fn reason(json: &str) -> RejectReason {
    match decode(json.as_bytes(), &Limits::default(), NOW) {
        Ok(e) => panic!("accepted {json}: {e:?}"),
        Err(r) => r.reason,
    }
}

#[test]
fn accepts_each_body_kind_and_both_time_forms() {
    let h = decode(
        br#"{"v":1,"device":"g1","ts":"2026-07-14T03:12:40Z","seq":7,"pos":[103.9,21.3],"hydrology":{"water_level_m":3.5,"rainfall_mm":0.4}}"#,
        &Limits::default(),
        NOW,
    )
    .unwrap();
    assert_eq!(h.seq, 7);
    assert!(matches!(h.body, Body::Hydrology(ref b) if b.water_level_m == Some(3.5)));

    let t = decode(
        br#"{"v":1,"device":"t1","ts":1783998760000,"seq":1,"traffic":{"interval_s":300,"counts":{"motorbike":410,"car":52},"speed_kmh":38.5,"occupancy_pct":12}}"#,
        &Limits::default(),
        NOW,
    )
    .unwrap();
    assert_eq!(t.ts, Timestamp(1_783_998_760_000));

    let c = decode(
        br#"{"v":1,"device":"c1","ts":1783998760000,"seq":1,"pos":[103.91,21.32],"camera":{"event":"plate_read","plate":"26A-123.45","confidence":0.93}}"#,
        &Limits::default(),
        NOW,
    )
    .unwrap();
    assert!(matches!(c.body, Body::Camera(ref b) if b.event == CameraEvent::PlateRead));
}

#[test]
fn wire_form_round_trips() {
    let json = r#"{"v":1,"device":"g1","ts":"2026-07-14T03:12:40.000Z","seq":7,"pos":[103.9,21.3],"hydrology":{"water_level_m":3.5}}"#;
    let e = decode(json.as_bytes(), &Limits::default(), NOW).unwrap();
    assert_eq!(String::from_utf8(e.to_json()).unwrap(), json);
}

#[test]
fn every_reason_has_a_case() {
    let cases: &[(RejectReason, &str)] = &[
        (RejectReason::MalformedJson, r#"{"v":1,"device":"g1""#),
        (
            RejectReason::MalformedJson,
            r#"{"v":1,"device":"g1","ts":1,"seq":1,"hydrology":{"water_level_m":NaN}}"#,
        ),
        (
            RejectReason::InvalidField,
            r#"{"v":1,"device":"g1","ts":1783998760000,"seq":"one","hydrology":{}}"#,
        ),
        (
            RejectReason::InvalidField,
            r#"{"v":1,"device":"g1","ts":1783998760000,"seq":1,"hydrology":{"water_level_m":"high"}}"#,
        ),
        (
            RejectReason::InvalidField,
            r#"{"v":1,"device":"g1","ts":1783998760000,"seq":1,"colour":"red","hydrology":{}}"#,
        ),
        (
            RejectReason::InvalidField,
            r#"{"v":1,"device":"g1","ts":1783998760000,"seq":-1,"hydrology":{}}"#,
        ),
        (
            RejectReason::InvalidField,
            r#"{"v":1,"device":"g1","ts":"last tuesday","seq":1,"hydrology":{}}"#,
        ),
        (
            RejectReason::InvalidField,
            r#"{"v":1,"device":"","ts":1783998760000,"seq":1,"hydrology":{}}"#,
        ),
        (
            RejectReason::NonFinite,
            r#"{"v":1,"device":"g1","ts":1783998760000,"seq":1,"hydrology":{"water_level_m":1e400}}"#,
        ),
        (
            RejectReason::MissingField,
            r#"{"v":1,"device":"g1","seq":1,"hydrology":{}}"#,
        ),
        (
            RejectReason::MissingField,
            r#"{"v":1,"device":"c1","ts":1783998760000,"seq":1,"camera":{"event":"plate_read","confidence":0.9}}"#,
        ),
        (
            RejectReason::UnsupportedVersion,
            r#"{"v":2,"device":"g1","ts":1783998760000,"seq":1,"hydrology":{}}"#,
        ),
        (
            RejectReason::MissingBody,
            r#"{"v":1,"device":"g1","ts":1783998760000,"seq":1}"#,
        ),
        (
            RejectReason::MultipleBodies,
            r#"{"v":1,"device":"g1","ts":1783998760000,"seq":1,"hydrology":{},"camera":{"event":"fire_smoke","confidence":0.5}}"#,
        ),
        (
            RejectReason::OutOfRange,
            r#"{"v":1,"device":"g1","ts":1783998760000,"seq":1,"hydrology":{"rainfall_mm":-3}}"#,
        ),
        (
            RejectReason::OutOfRange,
            r#"{"v":1,"device":"t1","ts":1783998760000,"seq":1,"traffic":{"interval_s":300,"counts":{},"occupancy_pct":140}}"#,
        ),
        (
            RejectReason::OutOfRange,
            r#"{"v":1,"device":"t1","ts":1783998760000,"seq":1,"traffic":{"interval_s":0,"counts":{}}}"#,
        ),
        (
            RejectReason::OutOfRange,
            r#"{"v":1,"device":"c1","ts":1783998760000,"seq":1,"camera":{"event":"crowd","confidence":1.5}}"#,
        ),
        (
            RejectReason::InvalidCoordinates,
            r#"{"v":1,"device":"g1","ts":1783998760000,"seq":1,"pos":[21.3,103.9],"hydrology":{}}"#,
        ),
        (
            RejectReason::InvalidCoordinates,
            r#"{"v":1,"device":"g1","ts":1783998760000,"seq":1,"pos":[200,10],"hydrology":{}}"#,
        ),
        (
            RejectReason::InvalidTimestamp,
            r#"{"v":1,"device":"g1","ts":0,"seq":1,"hydrology":{}}"#,
        ),
        (
            RejectReason::FutureTimestamp,
            r#"{"v":1,"device":"g1","ts":"2027-01-01T00:00:00Z","seq":1,"hydrology":{}}"#,
        ),
        (
            RejectReason::StaleTimestamp,
            r#"{"v":1,"device":"g1","ts":"2026-06-01T00:00:00Z","seq":1,"hydrology":{}}"#,
        ),
        (
            RejectReason::InvalidPlate,
            r#"{"v":1,"device":"c1","ts":1783998760000,"seq":1,"camera":{"event":"plate_read","plate":"HELLO","confidence":0.9}}"#,
        ),
    ];
    for (expected, json) in cases {
        assert_eq!(reason(json), *expected, "{json}");
    }
    let big = format!(
        r#"{{"v":1,"device":"g1","ts":1783998760000,"seq":1,"camera":{{"event":"crowd","confidence":0.5,"snapshot":"{}"}}}}"#,
        "x".repeat(70_000)
    );
    assert_eq!(reason(&big), RejectReason::Oversized);
    // The remaining reasons need the registry or state and are tested where
    // they are decided (ingest, processing).
}

#[test]
fn rejections_point_at_the_bad_field() {
    let pointer = |json: &str| {
        decode(json.as_bytes(), &Limits::default(), NOW)
            .unwrap_err()
            .pointer
    };
    let cases = [
        (
            r#"{"v":1,"device":"g1","ts":1783998760000,"seq":1,"hydrology":{"water_level_m":"high"}}"#,
            Some("/hydrology/water_level_m"),
        ),
        (
            r#"{"v":1,"device":"g1","ts":1783998760000,"seq":"one","hydrology":{}}"#,
            Some("/seq"),
        ),
        (
            r#"{"v":1,"device":"t1","ts":1783998760000,"seq":1,"traffic":{"interval_s":300,"counts":{"car":-1}}}"#,
            Some("/traffic/counts/car"),
        ),
        (
            r#"{"v":1,"device":"g1","ts":1783998760000,"seq":1,"hydrology":{"rainfall_mm":-3}}"#,
            Some("/hydrology/rainfall_mm"),
        ),
        (
            r#"{"v":1,"device":"g1","ts":1783998760000,"seq":1,"pos":[200,10],"hydrology":{}}"#,
            Some("/pos"),
        ),
        (
            r#"{"v":1,"device":"g1","ts":"2027-01-01T00:00:00Z","seq":1,"hydrology":{}}"#,
            Some("/ts"),
        ),
        (r#"{"v":1,"device":"g1""#, None),
    ];
    for (json, expected) in cases {
        assert_eq!(pointer(json).as_deref(), expected, "{json}");
    }
    assert_eq!(crate::pointer_of("a.b/c.d~e"), "/a/b~1c/d~0e");
}

#[test]
fn reason_index_is_the_position_in_all() {
    for (i, r) in RejectReason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
        assert_eq!(RejectReason::parse(r.code()), Some(*r));
    }
}

#[test]
fn non_finite_numbers_are_named() {
    // JSON itself cannot carry NaN; the check guards values built in code.
    let err = crate::envelope::check_position([f64::NAN, 21.0]).unwrap_err();
    assert_eq!(err.reason, RejectReason::NonFinite);
}

#[test]
fn reason_codes_are_unique_snake_case() {
    let mut codes: Vec<_> = RejectReason::ALL.iter().map(|r| r.code()).collect();
    for (r, code) in RejectReason::ALL.iter().zip(&codes) {
        assert_eq!(serde_json::to_value(r).unwrap(), serde_json::json!(code));
    }
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), RejectReason::ALL.len());
}

#[test]
fn committed_json_schemas_match_the_code() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json");
    let bless = std::env::var_os("IOC_BLESS").is_some();
    let mut stale = Vec::new();
    for (name, schema) in crate::json_schema::all() {
        let path = dir.join(name);
        let text = crate::json_schema::to_text(&schema);
        if bless {
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "schemas/json is out of date for {stale:?}: run `IOC_BLESS=1 cargo test -p ioc-schemas` and commit the result"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn decode_never_panics_on_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let _ = decode(&bytes, &Limits::default(), NOW);
    }

    /// Valid envelopes with one byte changed, cut short, or a field replaced
    /// by an odd value never panic the decoder, and a rejection always
    /// carries a reason and a detail.
    #[test]
    fn decode_never_panics_on_near_valid_input(
        pos in 0usize..160,
        byte in proptest::prelude::any::<u8>(),
        cut in 0usize..160,
        odd in proptest::sample::select(vec!["null", "-1", "1e308", "\"\"", "[]", "{}", "true", "18446744073709551616", "-0.0", "\"\\u0000\""]),
    ) {
        let valid = r#"{"v":1,"device":"g1","ts":1783998760000,"seq":7,"pos":[103.9,21.3],"hydrology":{"water_level_m":3.5,"rainfall_mm":0.4}}"#;
        let mut flipped = valid.as_bytes().to_vec();
        let i = pos % flipped.len();
        flipped[i] = byte;
        let short = &valid.as_bytes()[..cut % valid.len()];
        let replaced = valid.replace("3.5", odd).replace("\"g1\"", odd);
        for input in [&flipped[..], short, replaced.as_bytes()] {
            if let Err(r) = decode(input, &Limits::default(), NOW) {
                proptest::prop_assert!(!r.detail.is_empty());
            }
        }
    }
}
