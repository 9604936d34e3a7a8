//! Bad telemetry is counted by reason and never stops good telemetry.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Device, Screen, free_port, river_reading, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_input_is_counted_and_good_input_still_flows() {
    let port = free_port();
    let running = ioc::app::start(test_config(format!("mqtt://127.0.0.1:{port}"), true))
        .await
        .expect("start");
    let mut screen = Screen::connect(running.http_addr).await;
    screen.next().await.unwrap();
    let device = Device::connect(port).await;
    let topic = "ioc/v1/river_gauge/river-to-hieu/telemetry";

    // Wait until the source is subscribed: a good reading shows up.
    let mut seq = 0;
    loop {
        seq += 1;
        device
            .publish(topic, river_reading("river-to-hieu", seq, 1.0))
            .await;
        let seen = tokio::time::timeout(
            Duration::from_secs(2),
            screen.device_state("river-to-hieu", None),
        )
        .await;
        if seen.is_ok() {
            break;
        }
        assert!(seq < 10, "source never subscribed");
    }
    let now = ioc_schemas::Timestamp::now().millis();
    let bad: Vec<(&str, String, &str)> = vec![
        (topic, "{not json".into(), "malformed_json"),
        (
            topic,
            r#"{"v":1,"device":"river-to-hieu","ts":1,"seq":1,"hydrology":{"water_level_m":NaN}}"#
                .into(),
            "malformed_json",
        ),
        (
            topic,
            format!(r#"{{"v":1,"device":"river-to-hieu","ts":{now},"seq":"x","hydrology":{{}}}}"#),
            "invalid_field",
        ),
        (
            topic,
            format!(
                r#"{{"v":1,"device":"river-to-hieu","ts":{now},"seq":9,"hydrology":{{"water_level_m":1e999}}}}"#
            ),
            "non_finite",
        ),
        (
            topic,
            format!(
                r#"{{"v":1,"device":"river-to-hieu","ts":{now},"seq":9,"pos":[21.3,103.9],"hydrology":{{}}}}"#
            ),
            "invalid_coordinates",
        ),
        (
            topic,
            format!(
                r#"{{"v":1,"device":"river-to-hieu","ts":{},"seq":9,"hydrology":{{}}}}"#,
                now + 86_400_000
            ),
            "future_timestamp",
        ),
        (
            "ioc/v1/river_gauge/river-nowhere/telemetry",
            river_reading("river-nowhere", 1, 1.0),
            "unknown_device",
        ),
        (
            "ioc/v1/river_gauge/rain-to-hieu/telemetry",
            river_reading("river-to-hieu", 99, 1.0),
            "topic_mismatch",
        ),
        (
            topic,
            format!(
                r#"{{"v":1,"device":"river-to-hieu","ts":{now},"seq":9,"traffic":{{"interval_s":60,"counts":{{}}}}}}"#
            ),
            "kind_mismatch",
        ),
        (
            topic,
            format!(
                r#"{{"v":1,"device":"river-to-hieu","ts":{now},"seq":9,"hydrology":{{"rainfall_mm":-1}}}}"#
            ),
            "out_of_range",
        ),
        (
            topic,
            format!(
                r#"{{"v":1,"device":"river-to-hieu","ts":{now},"seq":9,"hydrology":{{}},"pad":"{}"}}"#,
                "x".repeat(40_000)
            ),
            "oversized",
        ),
    ];
    for (t, payload, _) in &bad {
        device.publish(t, payload.clone()).await;
    }
    // Then a good reading, which must still arrive.
    seq += 1;
    device
        .publish(topic, river_reading("river-to-hieu", seq, 1.5))
        .await;
    screen.device_state("river-to-hieu", Some(seq)).await;
    let stats = running.ingest_stats.clone();
    for (_, _, reason) in &bad {
        let r: ioc_schemas::RejectReason =
            serde_json::from_value(serde_json::json!(reason)).unwrap();
        assert!(
            stats.rejected_count(r) >= 1,
            "{reason} was not counted: {:?}",
            stats.rejections()
        );
    }
    assert_eq!(
        stats.rejections().iter().map(|(_, n)| n).sum::<u64>(),
        bad.len() as u64,
        "{:?}",
        stats.rejections()
    );
    assert_eq!(stats.accepted_count(), seq);
    running.shutdown().await.unwrap();
}
