//! The device registry, live, through the real components: an admin
//! registers a river gauge through the API while the system runs; its
//! reading published through Mosquitto is accepted at once and raises an
//! alert at its BĐ3; changing its BĐ3 moves the open alert's level either
//! way without a reading; retired, its next reading is a `retired_device`
//! dead letter. An unknown device's readings wait in the adoption list and
//! are replayed once it is adopted. Imports are all or nothing with a
//! report naming every row and field; an export imports again unchanged;
//! viewers read and may not write. Everything survives a restart. Once
//! with SQLite, once with PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "../alerts/tests/support/postgres.rs"]
mod postgres;

use common::{Device, Mosquitto, Screen, get_json, http, river_reading, test_config};
use ioc_schemas::RejectReason;
use serde_json::{Value, json};

const NEW: &str = "river-nam-pan-moi";
const STRANGER: &str = "river-chua-dang-ky";
const VIEWER: &str = "viewer-token-0123456789abcdef";

fn gauge(bd: [f64; 3]) -> Value {
    json!({
        "id": NEW,
        "kind": "river_gauge",
        "name": "Trạm thủy văn Nậm Pàn (mới)",
        "pos": [103.95, 21.28],
        "expected_interval_s": 600,
        "thresholds": {"alarm_levels_m": bd},
        "river": "Nậm Pàn",
    })
}

async fn send(addr: std::net::SocketAddr, method: &str, path: &str, body: &Value) -> (u16, Value) {
    http(
        addr,
        method,
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}

async fn registry_flow(mut config: ioc::config::Config, mqtt_port: u16) {
    config
        .http
        .auth
        .tokens
        .push(ioc_dashboard_api::auth::ApiToken {
            name: "wall-screen".into(),
            token: VIEWER.into(),
            role: ioc_dashboard_api::auth::Role::Viewer,
        });
    let running = ioc::app::start(config.clone()).await.expect("start");
    let addr = running.http_addr;
    let before = running.registry.devices().len();
    let mut screen = Screen::connect(addr).await;
    assert_eq!(screen.next().await.unwrap()["type"], "snapshot");

    // Bad input names the field; nothing changes.
    let mut bad = gauge([3.0, 5.0, 4.0]);
    bad["pos"] = json!([21.28, 103.95]);
    let (status, body) = send(addr, "POST", "/api/v1/registry/devices", &bad).await;
    assert_eq!(status, 422, "{status} {body}");
    let problems = body["error"]["problems"].to_string();
    assert!(problems.contains("pos:"), "{problems}");
    assert!(problems.contains("thresholds.alarm_levels_m"), "{problems}");

    // Registered while running: on the screens at once.
    let (status, body) = send(
        addr,
        "POST",
        "/api/v1/registry/devices",
        &gauge([3.0, 4.0, 5.0]),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["areas"].as_array().unwrap().last().unwrap()["id"],
        "sl"
    );
    let (status, _) = send(
        addr,
        "POST",
        "/api/v1/registry/devices",
        &gauge([3.0, 4.0, 5.0]),
    )
    .await;
    assert_eq!(status, 409);
    loop {
        let m = screen.next().await.expect("live feed");
        if m["registry"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| d["id"] == NEW)
        {
            break;
        }
    }

    // Its first reading is accepted and raises the alert at BĐ3.
    let device = Device::connect(mqtt_port).await;
    let (opened, mut seq) = common::publish_until_open(&device, &mut screen, NEW, 5.2).await;
    assert_eq!(
        (opened["level"].as_u64(), opened["level_name"].as_str()),
        (Some(3), Some("BĐ3"))
    );
    let alert = opened["id"].as_str().unwrap().to_owned();
    // BĐ3 raised over the water (beyond the 0.2 m margin): the alert
    // drops to BĐ2 with no new reading; lowered again: back to BĐ3.
    for (bd3, level) in [(5.5, 2), (5.0, 3)] {
        let (status, body) = send(
            addr,
            "PUT",
            &format!("/api/v1/registry/devices/{NEW}"),
            &gauge([3.0, 4.0, bd3]),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let moved = screen
            .alert_where(|a| a["subject"] == NEW && a["level"] == level)
            .await;
        assert_eq!(moved["id"], alert.as_str(), "the same alert follows");
    }

    // Viewers read the registry and change nothing.
    let viewer = [
        ("Authorization", &*format!("Bearer {VIEWER}")),
        ("Content-Type", "application/json"),
    ];
    let (status, page) = http(
        addr,
        "GET",
        &format!("/api/v1/registry/devices?q={NEW}"),
        &viewer,
        b"",
    )
    .await;
    assert_eq!((status, page["total"].as_u64()), (200, Some(1)), "{page}");
    let (status, _) = http(
        addr,
        "PUT",
        &format!("/api/v1/registry/devices/{NEW}"),
        &viewer,
        gauge([1.0, 2.0, 3.0]).to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = http(
        addr,
        "POST",
        &format!("/api/v1/registry/devices/{NEW}/retire"),
        &viewer,
        b"",
    )
    .await;
    assert_eq!(status, 403);

    // Retired: its next reading is refused with its own reason.
    let (status, body) = send(
        addr,
        "POST",
        &format!("/api/v1/registry/devices/{NEW}/retire"),
        &json!({"reason": "thay trạm"}),
    )
    .await;
    assert_eq!(
        (status, body["lifecycle"]["state"].as_str()),
        (200, Some("retired")),
        "{body}"
    );
    seq += 1;
    device
        .publish(
            &format!("ioc/v1/river_gauge/{NEW}/telemetry"),
            river_reading(NEW, seq, 6.0),
        )
        .await;
    common::wait_for("the retired gauge's reading refused", 10, || {
        running
            .ingest_stats
            .rejected_count(RejectReason::RetiredDevice)
            == 1
    })
    .await;

    // A device nobody registered: its readings wait in the adoption list.
    let topic = format!("ioc/v1/river_gauge/{STRANGER}/telemetry");
    for s in 1..=3u64 {
        let mut r: Value =
            serde_json::from_str(&river_reading(STRANGER, s, 2.0 + s as f64)).unwrap();
        r["pos"] = json!([103.93, 21.31]);
        device.publish(&topic, r.to_string()).await;
    }
    let mut listed = Value::Null;
    common::wait_for_async("the stranger in the adoption list", 10, async || {
        listed = get_json(addr, "/api/v1/registry/unregistered").await;
        listed[0]["count"] == 3
    })
    .await;
    assert_eq!(listed[0]["id"], STRANGER);
    assert_eq!(listed[0]["kind"], "river_gauge");
    assert_eq!(listed[0]["last_pos"], json!([103.93, 21.31]));
    // Adopted with what the readings did not say; its readings replayed.
    let (status, adopted) = send(
        addr,
        "POST",
        &format!("/api/v1/registry/unregistered/{STRANGER}/adopt"),
        &json!({"name": "Trạm mới nhận", "thresholds": {"alarm_levels_m": [3.0, 4.0, 4.5]}}),
    )
    .await;
    assert_eq!(status, 200, "{adopted}");
    assert_eq!(adopted["replayed"], 3, "{adopted}");
    let stranger_alert = screen
        .alert_where(|a| a["subject"] == STRANGER && a["level"] == 2)
        .await;
    assert_eq!(stranger_alert["status"], "open");
    let view = get_json(addr, &format!("/api/v1/devices/{STRANGER}")).await;
    assert_eq!(view["state"]["seq"], 3, "{view}");
    assert_eq!(
        get_json(addr, "/api/v1/registry/unregistered").await,
        json!([])
    );

    // An import with bad rows applies nothing and names every problem.
    let csv = "id,kind,name,lon,lat,expected_interval_s,bd1_m,bd2_m,bd3_m\n\
               rain-import-1,rain_gauge,Mưa 1,103.90,21.30,300,,,\n\
               river-import-2,river_gauge,Sông 2,103.91,21.31,600,3,2,4\n\
               cam-import-3,toaster,Cam 3,103.92,21.32,60,,,\n";
    let (status, report) = http(
        addr,
        "POST",
        "/api/v1/registry/import?format=csv",
        &[("Content-Type", "text/csv")],
        csv.as_bytes(),
    )
    .await;
    assert_eq!(
        (status, report["applied"].as_bool()),
        (422, Some(false)),
        "{report}"
    );
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["row"] == 2 && p["field"] == "thresholds.alarm_levels_m"),
        "{report}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p["row"] == 3 && p["field"] == "kind"),
        "{report}"
    );
    let (_, page) = http(addr, "GET", "/api/v1/registry/devices?q=import", &[], b"").await;
    assert_eq!(page["total"], 0, "nothing applied");
    // In partial mode the valid row goes in.
    let (status, report) = http(
        addr,
        "POST",
        "/api/v1/registry/import?format=csv&mode=partial",
        &[("Content-Type", "text/csv")],
        csv.as_bytes(),
    )
    .await;
    assert_eq!(
        (
            status,
            report["applied"].as_bool(),
            report["added"].as_u64()
        ),
        (200, Some(true), Some(1)),
        "{report}"
    );

    // Who changed what, before and after.
    let (_, changes) = http(
        addr,
        "GET",
        &format!("/api/v1/registry/changes?device={NEW}"),
        &[],
        b"",
    )
    .await;
    let actions: Vec<&str> = changes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["retire", "update", "update", "create"],
        "{changes}"
    );
    assert_eq!(changes[1]["before"]["thresholds"]["alarm_levels_m"][2], 5.5);
    assert_eq!(changes[1]["after"]["thresholds"]["alarm_levels_m"][2], 5.0);

    // An export imports again unchanged.
    let (status, exported) = http(
        addr,
        "GET",
        "/api/v1/registry/export?format=geojson",
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    let total = exported["features"].as_array().unwrap().len();
    assert_eq!(total, before + 3);
    let (status, report) = http(
        addr,
        "POST",
        "/api/v1/registry/import?format=geojson",
        &[("Content-Type", "application/geo+json")],
        exported.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (
            report["added"].as_u64(),
            report["changed"].as_u64(),
            report["unchanged"].as_u64()
        ),
        (Some(0), Some(0), Some(total as u64)),
        "{report}"
    );

    // The registry survives a restart: stored, not the catalogue's.
    running.shutdown().await.unwrap();
    let running = ioc::app::start(config.clone()).await.expect("restart");
    let registry = running.registry_cell.current();
    assert_eq!(registry.devices().len(), before + 3);
    assert!(registry.get(NEW).unwrap().lifecycle.is_retired());
    assert_eq!(registry.get(STRANGER).unwrap().name, "Trạm mới nhận");
    running.shutdown().await.unwrap();
    // `ioc validate`, `ioc rules check` and `ioc backtest` check against it too.
    let (tools, from) = ioc::app::registry_for_tools(&config).await.unwrap();
    assert_eq!(
        (tools.devices().len(), from),
        (before + 3, "the registry in the store")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_with_sqlite() {
    let broker = Mosquitto::start();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    registry_flow(test_config(url, false), broker.port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_with_postgresql() {
    let pg = postgres::Postgres::start();
    let broker = Mosquitto::start();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let mut config = test_config(url, false);
    config.alerts.database = pg.url.clone();
    registry_flow(config, broker.port).await;
}
