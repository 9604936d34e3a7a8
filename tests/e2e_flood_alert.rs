//! A gauge reading above BĐ2 travels device → MQTT → engine → WebSocket as
//! an alert with the gauge's administrative area, and clears with hysteresis.
//! Once with the embedded broker, once with Mosquitto.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Device, Mosquitto, Screen, free_port, get_json, river_reading, test_config};

const GAUGE: &str = "river-to-hieu";
const TOPIC: &str = "ioc/v1/river_gauge/river-to-hieu/telemetry";

async fn flood_alert_round_trip(config: ioc::config::Config, mqtt_port: u16) {
    let running = ioc::app::start(config).await.expect("start");
    let levels = common::alarm_levels(&running.registry, GAUGE);
    let mut screen = Screen::connect(running.http_addr).await;
    let snapshot = screen.next().await.unwrap();
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(
        snapshot["devices"].as_array().unwrap().len(),
        running.registry.devices().len()
    );

    let device = Device::connect(mqtt_port).await;
    // The source subscribes right after connecting; retry the first reading
    // until it is seen rather than guessing how long that takes.
    let (opened, mut seq) =
        common::publish_until_open(&device, &mut screen, GAUGE, levels[1] + 0.25).await;
    assert_eq!(opened["level"], 2);
    assert_eq!(opened["level_name"], "BĐ2");
    assert_eq!(opened["rule"], "river_level");
    assert_eq!(opened["area"][0]["id"], "sl-to-hieu");
    assert_eq!(opened["area"][0]["name"], "Phường Tô Hiệu");
    assert_eq!(
        opened["area"].as_array().unwrap().last().unwrap()["id"],
        "sl"
    );
    let id = opened["id"].as_str().unwrap().to_owned();

    // Inside the hysteresis margin (0.2 m) below BĐ2: no change.
    seq += 1;
    device
        .publish(TOPIC, river_reading(GAUGE, seq, levels[1] - 0.1))
        .await;
    // Clearly below BĐ2: the same alert is lowered to BĐ1.
    seq += 1;
    device
        .publish(TOPIC, river_reading(GAUGE, seq, levels[1] - 0.3))
        .await;
    let lowered = screen.alert(GAUGE, "open").await;
    assert_eq!(
        (lowered["id"].as_str(), lowered["level"].as_u64()),
        (Some(id.as_str()), Some(1))
    );
    assert_eq!(
        lowered["version"], 2,
        "the reading inside the margin must not have changed the alert"
    );
    // Inside the margin below BĐ1: still open.
    seq += 1;
    device
        .publish(TOPIC, river_reading(GAUGE, seq, levels[0] - 0.1))
        .await;
    // Below BĐ1 by more than the margin: resolved, same alert.
    seq += 1;
    device
        .publish(TOPIC, river_reading(GAUGE, seq, levels[0] - 1.0))
        .await;
    let cleared = screen.alert(GAUGE, "resolved").await;
    assert_eq!(cleared["id"].as_str(), Some(id.as_str()));
    assert_eq!(cleared["peak_level"], 2);
    assert_eq!(cleared["version"], 3);

    // The REST view agrees.
    let open: serde_json::Value = get_json(running.http_addr, "/api/v1/alerts?status=open").await;
    assert!(
        open.as_array()
            .unwrap()
            .iter()
            .all(|a| a["subject"] != GAUGE)
    );
    let dev: serde_json::Value =
        get_json(running.http_addr, &format!("/api/v1/devices/{GAUGE}")).await;
    assert_eq!(dev["state"]["seq"], seq);

    // The chart's history, from memory: every row lies within the levels
    // published, and a bad step is refused in the shared error shape.
    let history: serde_json::Value = get_json(
        running.http_addr,
        &format!("/api/v1/devices/{GAUGE}/history?step=1m"),
    )
    .await;
    assert_eq!(history["device"], GAUGE);
    assert_eq!(history["step_s"], 60);
    assert_eq!(history["metrics"][0]["name"], "water_level_m");
    assert_eq!(history["metrics"][0]["aggregate"], "mean");
    let rows = history["values"][0].as_array().unwrap();
    assert!(!rows.is_empty() && rows.len() == history["t"].as_array().unwrap().len());
    for v in rows {
        let v = v.as_f64().unwrap();
        assert!(
            (levels[0] - 1.0 - 1e-6..=levels[1] + 0.25 + 1e-6).contains(&v),
            "{v}"
        );
    }
    let (status, err) = common::http(
        running.http_addr,
        "GET",
        &format!("/api/v1/devices/{GAUGE}/history?step=soon"),
        &[],
        b"",
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );

    running.shutdown().await.expect("clean shutdown");
    // Deltas still in flight may arrive first; then the server closes the socket.
    while let Some(v) = screen.next().await {
        assert_eq!(v["type"], "delta", "only deltas may precede the close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker() {
    let port = free_port();
    flood_alert_round_trip(test_config(format!("mqtt://127.0.0.1:{port}"), true), port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_broker() {
    let broker = Mosquitto::start();
    flood_alert_round_trip(
        test_config(format!("mqtt://127.0.0.1:{}", broker.port), false),
        broker.port,
    )
    .await;
}
