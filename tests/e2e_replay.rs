//! Dead letters replayed after a fix: readings from a gauge that was not yet
//! in the catalogue are accepted once the catalogue has it.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Device, TEST_TOKEN, free_port, get_json, river_reading, test_config, wait_for};
use ioc_schemas::RejectReason;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_device_letters_are_accepted_after_the_device_is_registered() {
    let port = free_port();
    let mut config = test_config(format!("mqtt://127.0.0.1:{port}"), true);
    let running = ioc::app::start(config.clone()).await.unwrap();
    let device = Device::connect(port).await;
    let topic = "ioc/v1/river_gauge/river-new-bridge/telemetry";
    let stats = running.ingest_stats.clone();
    // The source may not be subscribed yet: publish until the first is seen.
    let mut seq = 0;
    while stats.rejected_count(RejectReason::UnknownDevice) == 0 {
        seq += 1;
        assert!(seq < 50, "the source never received a reading");
        device
            .publish(
                topic,
                river_reading("river-new-bridge", seq, 2.0 + seq as f64 / 10.0),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Readings published before the subscription are gone; count from here.
    let seen = stats.rejected_count(RejectReason::UnknownDevice);
    for _ in 0..3 {
        seq += 1;
        device
            .publish(
                topic,
                river_reading("river-new-bridge", seq, 2.0 + seq as f64 / 10.0),
            )
            .await;
    }
    wait_for("the three readings after subscribing", 10, || {
        stats.rejected_count(RejectReason::UnknownDevice) >= seen + 3
    })
    .await;
    running.shutdown().await.unwrap();
    // Counted after the stop, so that a straggler still in flight at the
    // wait above is in both the count and the dead-letter file.
    let rejected = stats.rejected_count(RejectReason::UnknownDevice) as usize;

    // The gauge is added to the catalogue and the processor restarted.
    let dir = tempfile::tempdir().unwrap();
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("devices/data/sonla");
    let mut devices: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("devices.geojson")).unwrap())
            .unwrap();
    let features = devices["features"].as_array_mut().unwrap();
    let mut new = features
        .iter()
        .find(|f| f["properties"]["id"] == "river-to-hieu")
        .unwrap()
        .clone();
    new["properties"]["id"] = "river-new-bridge".into();
    new["properties"]["name"] = "Cầu Mới".into();
    features.push(new);
    config.catalogue.devices = Some(dir.path().join("devices.geojson"));
    config.catalogue.areas = Some(data.join("areas.geojson"));
    std::fs::write(
        config.catalogue.devices.as_ref().unwrap(),
        devices.to_string(),
    )
    .unwrap();
    // The embedded broker of the first run keeps its port until the process ends.
    config.mqtt.url = format!("mqtt://127.0.0.1:{}", free_port());
    let running = ioc::app::start(config.clone()).await.unwrap();

    let filter = ioc::deadletter::Filter {
        reason: Some(RejectReason::UnknownDevice),
        ..Default::default()
    };
    let letters = ioc::deadletter::load(&config.dead_letter.file, &filter).unwrap();
    assert_eq!(letters.len(), rejected);
    let url = format!("http://{}", running.http_addr);
    let done = ioc::deadletter::replay(&letters, &url, TEST_TOKEN, 2)
        .await
        .unwrap();
    assert_eq!((done.sent, done.accepted), (rejected, rejected));
    // Replaying again changes nothing: they are duplicates now.
    let again = ioc::deadletter::replay(&letters, &url, TEST_TOKEN, 100)
        .await
        .unwrap();
    assert_eq!(again.accepted, 0);
    assert_eq!(
        again.rejected.get(&RejectReason::Duplicate),
        Some(&rejected)
    );

    let mut state = serde_json::Value::Null;
    for _ in 0..100 {
        state = get_json(running.http_addr, "/api/v1/devices/river-new-bridge").await;
        if state["state"]["seq"] == seq {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state["state"]["seq"], seq, "{state}");
    running.shutdown().await.unwrap();
}
