//! Bad telemetry from every source ends in the dead letters with its reason,
//! its original bytes and where it came from, and never stops good telemetry.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{
    Device, Screen, TEST_TOKEN, dead_letters, free_port, http, river_reading, test_config,
};
use ioc_schemas::RejectReason;

const TOPIC: &str = "ioc/v1/river_gauge/river-to-hieu/telemetry";

/// `(topic, payload, reason)` for every reason a message can be rejected
/// for on its own. `seq` keeps the two sources' readings apart.
fn bad_inputs(seq: u64) -> Vec<(&'static str, String, RejectReason)> {
    let now = ioc_schemas::Timestamp::now().millis();
    let river =
        |body: &str| format!(r#"{{"v":1,"device":"river-to-hieu","ts":{now},"seq":{seq},{body}}}"#);
    use RejectReason as R;
    vec![
        (TOPIC, "{not json".into(), R::MalformedJson),
        (
            TOPIC,
            river(r#""hydrology":{"water_level_m":NaN}"#),
            R::MalformedJson,
        ),
        (
            TOPIC,
            format!(r#"{{"v":1,"device":"river-to-hieu","ts":{now},"seq":"x","hydrology":{{}}}}"#),
            R::InvalidField,
        ),
        (
            TOPIC,
            format!(r#"{{"v":1,"device":"river-to-hieu","seq":{seq},"hydrology":{{}}}}"#),
            R::MissingField,
        ),
        (
            TOPIC,
            format!(
                r#"{{"v":2,"device":"river-to-hieu","ts":{now},"seq":{seq},"hydrology":{{}}}}"#
            ),
            R::UnsupportedVersion,
        ),
        (
            TOPIC,
            format!(r#"{{"v":1,"device":"river-to-hieu","ts":{now},"seq":{seq}}}"#),
            R::MissingBody,
        ),
        (
            TOPIC,
            river(r#""hydrology":{},"traffic":{"interval_s":60,"counts":{}}"#),
            R::MultipleBodies,
        ),
        (
            TOPIC,
            river(r#""hydrology":{"water_level_m":1e999}"#),
            R::NonFinite,
        ),
        (
            TOPIC,
            river(r#""hydrology":{"rainfall_mm":-1}"#),
            R::OutOfRange,
        ),
        (
            TOPIC,
            river(r#""pos":[21.3,103.9],"hydrology":{}"#),
            R::InvalidCoordinates,
        ),
        (
            TOPIC,
            river(r#""pos":[105.8,10.0],"hydrology":{}"#),
            R::InvalidCoordinates,
        ),
        (
            TOPIC,
            format!(r#"{{"v":1,"device":"river-to-hieu","ts":0,"seq":{seq},"hydrology":{{}}}}"#),
            R::InvalidTimestamp,
        ),
        (
            TOPIC,
            format!(
                r#"{{"v":1,"device":"river-to-hieu","ts":{},"seq":{seq},"hydrology":{{}}}}"#,
                now + 86_400_000
            ),
            R::FutureTimestamp,
        ),
        (
            TOPIC,
            format!(
                r#"{{"v":1,"device":"river-to-hieu","ts":{},"seq":{seq},"hydrology":{{}}}}"#,
                now - 30 * 86_400_000
            ),
            R::StaleTimestamp,
        ),
        (
            TOPIC,
            // Within max_age, but older than the watermark minus the lateness horizon.
            format!(
                r#"{{"v":1,"device":"river-to-hieu","ts":{},"seq":{seq},"hydrology":{{}}}}"#,
                now - 3 * 3_600_000
            ),
            R::Late,
        ),
        (
            "ioc/v1/camera/cam-son-la-01/telemetry",
            format!(
                r#"{{"v":1,"device":"cam-son-la-01","ts":{now},"seq":{seq},"camera":{{"event":"plate_read","plate":"HELLO","confidence":0.9}}}}"#
            ),
            R::InvalidPlate,
        ),
        (
            "ioc/v1/river_gauge/river-nowhere/telemetry",
            river_reading("river-nowhere", seq, 1.0),
            R::UnknownDevice,
        ),
        (
            TOPIC,
            river(r#""traffic":{"interval_s":60,"counts":{}}"#),
            R::KindMismatch,
        ),
        (
            TOPIC,
            river(&format!(
                r#""hydrology":{{}},"pad":"{}""#,
                "x".repeat(70_000)
            )),
            R::Oversized,
        ),
    ]
}

/// Sends a good reading until the screen shows it: the source is
/// subscribed. Returns the last payload sent.
async fn wait_until_flowing(device: &Device, screen: &mut Screen, seq: &mut u64) -> String {
    loop {
        *seq += 1;
        let payload = river_reading("river-to-hieu", *seq, 1.0);
        device.publish(TOPIC, payload.clone()).await;
        let seen = tokio::time::timeout(
            Duration::from_secs(2),
            screen.device_state("river-to-hieu", None),
        )
        .await;
        if seen.is_ok() {
            return payload;
        }
        assert!(*seq < 10, "source never subscribed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_from_every_source_is_dead_lettered_and_good_input_still_flows() {
    let port = free_port();
    let config = test_config(format!("mqtt://127.0.0.1:{port}"), true);
    let running = ioc::app::start(config.clone()).await.expect("start");
    let mut screen = Screen::connect(running.http_addr).await;
    screen.next().await.unwrap();
    let device = Device::connect(port).await;
    let mut seq = 0;
    let first = wait_until_flowing(&device, &mut screen, &mut seq).await;

    // MQTT: every reason, plus a topic that names another device and a
    // redelivered (duplicate) reading.
    let mut mqtt = bad_inputs(1000);
    mqtt.push((
        "ioc/v1/river_gauge/rain-to-hieu/telemetry",
        river_reading("river-to-hieu", 99, 1.0),
        RejectReason::TopicMismatch,
    ));
    // The very same bytes again, as a broker redelivers them.
    let duplicate = first;
    mqtt.push((TOPIC, duplicate.clone(), RejectReason::Duplicate));
    for (t, payload, _) in &mqtt {
        device.publish(t, payload.clone()).await;
    }
    seq += 1;
    device
        .publish(TOPIC, river_reading("river-to-hieu", seq, 1.5))
        .await;
    screen.device_state("river-to-hieu", Some(seq)).await;

    // HTTP: the same table as one NDJSON batch (the oversized line too),
    // plus the duplicate, then a good line that must be accepted.
    let mut lines = bad_inputs(2000);
    lines.push((TOPIC, duplicate, RejectReason::Duplicate));
    seq += 1;
    let good = river_reading("river-to-hieu", seq, 1.6);
    let mut body = lines
        .iter()
        .map(|(_, p, _)| p.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    body.push('\n');
    body.push_str(&good);
    let auth = format!("Bearer {TEST_TOKEN}");
    let (status, report) = http(
        running.http_addr,
        "POST",
        "/api/v1/ingest",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-ndjson"),
        ],
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["accepted"], 1, "{report}");
    assert_eq!(report["rejected"], lines.len(), "{report}");
    for (i, (_, _, reason)) in lines.iter().enumerate() {
        assert_eq!(report["results"][i]["line"], i + 1);
        assert_eq!(
            report["results"][i]["reason"],
            reason.code(),
            "line {}",
            i + 1
        );
    }
    assert_eq!(report["results"][lines.len()]["status"], "accepted");
    screen.device_state("river-to-hieu", Some(seq)).await;

    // A token scoped to other devices is refused per line; no token at all,
    // or a wrong one, is refused as a whole.
    let (status, _) = http(running.http_addr, "POST", "/api/v1/ingest", &[], b"{}").await;
    assert_eq!(status, 401);
    let (status, _) = http(
        running.http_addr,
        "POST",
        "/api/v1/ingest",
        &[("Authorization", "Bearer wrong-token-0123456789")],
        b"{}",
    )
    .await;
    assert_eq!(status, 401);

    let stats = running.ingest_stats.clone();
    assert_eq!(stats.accepted_count(), seq);
    running.shutdown().await.unwrap();

    let letters = dead_letters(&config);
    assert_eq!(letters.len(), mqtt.len() + lines.len(), "{letters:#?}");
    for (source, table) in [("mqtt", &mqtt), ("http", &lines)] {
        let got: Vec<_> = letters.iter().filter(|d| d.source == source).collect();
        assert_eq!(got.len(), table.len(), "{source}");
        for ((topic, payload, reason), letter) in table.iter().zip(got) {
            assert_eq!(letter.reason, *reason, "{source}: {letter:?}");
            assert_eq!(
                letter.original(),
                payload.as_bytes(),
                "{source}: original bytes kept"
            );
            if source == "mqtt" {
                assert_eq!(letter.topic.as_deref(), Some(*topic));
            } else {
                assert_eq!(letter.client.as_deref(), Some("test-gateway"));
            }
        }
    }
    // Every reason a single MQTT or HTTP message can earn was exercised.
    let seen: BTreeSet<_> = letters.iter().map(|d| d.reason).collect();
    let expected: BTreeSet<_> = RejectReason::ALL
        .into_iter()
        // A retired device's readings: tests/e2e_registry.rs.
        .filter(|r| {
            !matches!(
                r,
                RejectReason::KeyMismatch | RejectReason::Forbidden | RejectReason::RetiredDevice
            )
        })
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_token_covers_its_device_only() {
    let mut config = test_config(format!("mqtt://127.0.0.1:{}", free_port()), true);
    config
        .http_ingest
        .tokens
        .push(ioc_ingest::http::IngestToken {
            name: "gauge-to-hieu".into(),
            token: "device-token-0123456789abcdef".into(),
            devices: vec!["river-to-hieu".into()],
        });
    let running = ioc::app::start(config.clone()).await.expect("start");
    let auth = [("Authorization", "Bearer device-token-0123456789abcdef")];
    let (status, report) = http(
        running.http_addr,
        "POST",
        "/api/v1/ingest",
        &[auth[0], ("Content-Type", "application/json")],
        river_reading("river-to-hieu", 1, 1.0).as_bytes(),
    )
    .await;
    assert_eq!(
        (status, report["accepted"].as_u64()),
        (200, Some(1)),
        "{report}"
    );
    let (_, report) = http(
        running.http_addr,
        "POST",
        "/api/v1/ingest",
        &auth,
        river_reading("river-chieng-an", 1, 1.0).as_bytes(),
    )
    .await;
    assert_eq!(report["results"][0]["reason"], "forbidden", "{report}");
    // Larger than http_ingest.max_body_bytes: refused before reading it all.
    let big = vec![b' '; config.http_ingest.max_body_bytes + 1];
    let (status, _) = http(running.http_addr, "POST", "/api/v1/ingest", &auth, &big).await;
    assert_eq!(status, 413);
    running.shutdown().await.unwrap();
    let letters = dead_letters(&config);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].client.as_deref(), Some("gauge-to-hieu"));
}
