//! The alert lifecycle through the real components: readings over MQTT
//! (Mosquitto) open an alert, operators act on it over REST, every version
//! reaches the control room over the WebSocket, and the store (SQLite, then
//! PostgreSQL) keeps the history. Then the crash test: the `ioc` binary is
//! killed with SIGKILL while readings flow, after operators' actions that
//! got a success response; after a restart every alert and its history are
//! as they were, the webhook outbox and the broker's retained alerts agree
//! with the store, and the rule's next episode continues the same alerts.

#![allow(clippy::unwrap_used)]

mod common;

#[path = "../alerts/tests/support/postgres.rs"]
mod postgres;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use common::{
    Device, Mosquitto, Screen, TEST_ADMIN, TEST_TOKEN, Watcher, free_port, get_json, http,
    post_ingest, river_ndjson, river_reading, test_config,
};
use ioc_devices::Registry;
use ioc_schemas::{DeviceKind, Timestamp};
use serde_json::{Value, json};

const GAUGE: &str = "river-to-hieu";
const TOPIC: &str = "ioc/v1/river_gauge/river-to-hieu/telemetry";

async fn post(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    http(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}

/// Reads the live feed until `subject`'s alert arrives at `version`.
async fn alert_version(screen: &mut Screen, subject: &str, version: u64) -> Value {
    let want = |a: &Value| a["subject"] == subject && a["version"] == version;
    tokio::time::timeout(Duration::from_secs(10), screen.alert_where(want))
        .await
        .unwrap_or_else(|_| panic!("no version {version} of {subject}'s alert on the live feed"))
}

async fn operators_act_and_screens_follow(
    mut config: ioc::config::Config,
    mqtt_port: u16,
    database: Option<String>,
) {
    if let Some(d) = database {
        config.alerts.database = d;
    }
    // A retained alert left from before (resolved while the processor was
    // down): cleared at start.
    common::retain(mqtt_port, "ioc/v1/alerts/stale:gone:1", b"{}").await;
    let events = Watcher::subscribe(mqtt_port, "ioc/v1/alerts/events").await;
    let running = ioc::app::start(config).await.expect("start");
    let addr = running.http_addr;
    let levels = common::alarm_levels(&running.registry, GAUGE);
    let mut screen = Screen::connect(addr).await;
    assert_eq!(screen.next().await.unwrap()["type"], "snapshot");
    let device = Device::connect(mqtt_port).await;
    let (opened, mut seq) =
        common::publish_until_open(&device, &mut screen, GAUGE, levels[0] + 0.1).await;
    let id = opened["id"].as_str().unwrap().to_owned();
    let path = |action: &str| format!("/api/v1/alerts/{id}/{action}");
    assert_eq!(
        (opened["level"].as_u64(), opened["version"].as_u64()),
        (Some(1), Some(1))
    );

    let (status, acked) = post(addr, &path("ack"), json!({"by": "Lò Văn Lan"})).await;
    assert_eq!(status, 200, "{acked}");
    assert_eq!(acked["status"], "acknowledged");
    let seen = alert_version(&mut screen, GAUGE, 2).await;
    assert_eq!(seen["status"], "acknowledged");
    // Who typed it, and the token it came with.
    assert_eq!(seen["handling"]["acknowledged_by"], "Lò Văn Lan (admin)");

    // Above BĐ2: the same alert escalates and wants attention again.
    seq += 1;
    device
        .publish(TOPIC, river_reading(GAUGE, seq, levels[1] + 0.3))
        .await;
    let escalated = alert_version(&mut screen, GAUGE, 3).await;
    assert_eq!(
        (escalated["status"].as_str(), escalated["level"].as_u64()),
        (Some("open"), Some(2))
    );
    assert_eq!(escalated["id"].as_str(), Some(id.as_str()));

    // While active, the broker holds its latest version, retained.
    common::wait_for_async("the alert retained on MQTT", 10, async || {
        let w = Watcher::subscribe(mqtt_port, &format!("ioc/v1/alerts/{id}")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        w.messages().iter().any(|(_, p, retained)| {
            *retained && serde_json::from_slice::<Value>(p).is_ok_and(|a| a["version"] == 3)
        })
    })
    .await;

    let (status, _) = post(
        addr,
        &path("notes"),
        json!({"by": "Minh", "note": "Đã báo UBND phường"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, assigned) = post(
        addr,
        &path("assign"),
        json!({"by": "Minh", "assignee": "Đội 2"}),
    )
    .await;
    assert_eq!(
        (status, assigned["handling"]["assignee"].as_str()),
        (200, Some("Đội 2"))
    );
    let (status, resolved) = post(addr, &path("resolve"), json!({"by": "Minh"})).await;
    assert_eq!(
        (status, resolved["status"].as_str()),
        (200, Some("resolved"))
    );
    let seen = alert_version(&mut screen, GAUGE, 6).await;
    assert_eq!(seen["handling"]["resolved_by"], "Minh (admin)");

    // Refusals, each with its code.
    let (status, err) = post(addr, &path("ack"), json!({"by": "Lan"})).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("alert_resolved"))
    );
    let (status, err) = post(addr, "/api/v1/alerts/nope/ack", json!({"by": "Lan"})).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = post(addr, &path("notes"), json!({"by": "Lan"})).await;
    assert_eq!(status, 400, "a note needs its text");
    // Without a body the token's holder acts: here on a resolved alert.
    let (status, _) = post(addr, &path("ack"), json!({})).await;
    assert_eq!(status, 409, "the token names who acts");
    let (status, _) = post(addr, &path("ack"), json!({"by": "Lan", "colour": "red"})).await;
    assert_eq!(status, 400, "unknown fields are refused");
    let (status, _) = post(addr, &path("frobnicate"), json!({"by": "Lan"})).await;
    assert_eq!(status, 404);
    let (status, _) = http(addr, "GET", "/api/v1/alerts?status=lost", &[], b"").await;
    assert_eq!(status, 400);

    // Every change went out on the events topic, in order; once resolved
    // the retained state is cleared, and the stale one is gone.
    common::wait_for("six alert events on MQTT", 10, || {
        events
            .messages()
            .iter()
            .filter(|(t, _, _)| t == "ioc/v1/alerts/events")
            .count()
            >= 6
    })
    .await;
    let versions: Vec<u64> = events
        .messages()
        .iter()
        .map(|(_, p, _)| serde_json::from_slice::<Value>(p).unwrap())
        .filter(|e| e["alert"]["id"] == id.as_str())
        .map(|e| e["alert"]["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
    let all = Watcher::subscribe(mqtt_port, "ioc/v1/alerts/+").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let retained: Vec<String> = all
        .messages()
        .into_iter()
        .filter(|m| m.2)
        .map(|m| m.0)
        .collect();
    assert!(
        !retained
            .iter()
            .any(|t| t.ends_with(id.as_str()) || t.contains("stale")),
        "retained after resolution: {retained:?}"
    );

    let detail = get_json(addr, &format!("/api/v1/alerts/{id}")).await;
    let history: Vec<(&str, &str)> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["action"].as_str().unwrap(), c["by"].as_str().unwrap()))
        .collect();
    assert_eq!(
        history,
        [
            ("opened", "rule"),
            ("acknowledged", "Lò Văn Lan (admin)"),
            ("escalated", "rule"),
            ("noted", "Minh (admin)"),
            ("assigned", "Minh (admin)"),
            ("resolved", "Minh (admin)"),
        ]
    );
    // Every write is in the audit log (kept in the same database): who,
    // what, from where, and the answer; the refused one too.
    let audit = get_json(addr, "/api/v1/audit?limit=1000").await;
    let acks: Vec<_> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["path"] == format!("/api/v1/alerts/{id}/ack"))
        .map(|e| (e["actor"].clone(), e["status"].clone(), e["source"].clone()))
        .collect();
    assert!(
        acks.contains(&(json!("admin"), json!(200), json!("127.0.0.1"))),
        "{audit}"
    );
    assert!(acks.contains(&(json!("admin"), json!(409), json!("127.0.0.1"))));

    // The alert as CAP 1.2, valid against the OASIS schema; the feed of
    // active alerts is well-formed.
    let cap = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/alerts/{id}.cap"))
        .bearer_auth(TEST_ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(cap.status(), 200);
    let cap = cap.text().await.unwrap();
    assert!(
        cap.contains("<responseType>AllClear</responseType>"),
        "{cap}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alert.cap.xml");
    std::fs::write(&file, &cap).unwrap();
    let xsd = concat!(env!("CARGO_MANIFEST_DIR"), "/alerts/cap/CAP-v1.2.xsd");
    let lint = Command::new("xmllint")
        .args(["--noout", "--schema", xsd])
        .arg(&file)
        .output()
        .expect("xmllint (Debian's libxml2-utils; tests/run.sh installs it)");
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stderr)
    );
    let feed = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/alerts.cap"))
        .bearer_auth(TEST_ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    std::fs::write(dir.path().join("feed.xml"), &feed).unwrap();
    let lint = Command::new("xmllint")
        .arg("--noout")
        .arg(dir.path().join("feed.xml"))
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stderr)
    );

    let listed = get_json(
        addr,
        "/api/v1/alerts?status=resolved&area=sl-to-hieu&rule=river_level",
    )
    .await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == id.as_str())
    );
    let active = get_json(addr, "/api/v1/alerts").await;
    assert!(
        active
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["id"] != id.as_str())
    );
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_with_sqlite() {
    let broker = Mosquitto::start();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    operators_act_and_screens_follow(test_config(url, false), broker.port, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_with_postgresql() {
    let pg = postgres::Postgres::start();
    let broker = Mosquitto::start();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    operators_act_and_screens_follow(test_config(url, false), broker.port, Some(pg.url.clone()))
        .await;
}

/// The `ioc` binary with its configuration and alert database in `dir`.
/// The engine keeps no state across restarts here: what survives a kill
/// is the alert store's alone (`e2e_durable` covers the engine's).
fn spawn_ioc(dir: &Path, http_port: u16, mqtt_port: u16) -> Child {
    let config = dir.join("ioc.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http_port}\"\nadmin_token = \"{TEST_ADMIN}\"\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{mqtt_port}\"\nclient_id = \"ioc-crash-test\"\n\
             [embedded_broker]\nenabled = false\n\
             [simulator]\nenabled = false\n\
             [dead_letter]\nfile = \"{dir}/dead-letters.jsonl\"\n\
             [alerts]\ndatabase = \"sqlite://{dir}/alerts.db\"\n\
             [checkpoint]\nenabled = false\n\
             [[alerts.webhooks]]\nname = \"agency\"\nurl = \"http://127.0.0.1:{closed}/hook\"\n\
             secret = \"agency-secret-0123456789\"\nrules = [\"river_level\"]\nmax_attempts = 1000\n\
             [http_ingest]\nenabled = true\n\
             [[http_ingest.tokens]]\nname = \"gateway\"\ntoken = \"{TEST_TOKEN}\"\ndevices = [\"*\"]\n",
            dir = dir.display(),
            // Nobody listens: every webhook delivery stays in the outbox.
            closed = free_port(),
        ),
    )
    .unwrap();
    common::run_ioc(&config, http_port)
}

async fn ingest(addr: SocketAddr, readings: &[(&str, u64, f64)]) {
    let now = Timestamp::now().millis();
    let body = river_ndjson(
        readings
            .iter()
            .map(|(d, seq, level)| (*d, *seq, *level, now)),
    );
    let (status, report) = post_ingest(addr, &body).await;
    assert_eq!(status, 200, "{report}");
}

/// The active `river_level` alerts, by subject.
async fn river_alerts(addr: SocketAddr) -> Vec<Value> {
    get_json(addr, "/api/v1/alerts?rule=river_level")
        .await
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_alert_and_no_acknowledged_action() {
    let registry = Registry::sonla_demo();
    let gauges: Vec<(&str, [f64; 3])> = registry
        .devices()
        .iter()
        .filter(|d| d.kind == DeviceKind::RiverGauge)
        .filter_map(|d| Some((d.id.as_str(), d.thresholds.alarm_levels_m?)))
        .collect();
    assert!(gauges.len() >= 5);
    let (watched, others) = gauges.split_at(3);
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], http_port).into();
    let broker = Mosquitto::start();
    let mut ioc = spawn_ioc(dir.path(), http_port, broker.port);

    // Three gauges between BĐ1 and BĐ2: three open alerts.
    let first: Vec<_> = watched.iter().map(|(d, l)| (*d, 1, l[0] + 0.1)).collect();
    ingest(addr, &first).await;
    common::wait_for_async("three open alerts", 30, async || {
        river_alerts(addr).await.len() == 3
    })
    .await;
    let id_of = |alerts: &[Value], d: &str| {
        alerts.iter().find(|a| a["subject"] == d).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let alerts = river_alerts(addr).await;
    let ids: Vec<String> = watched.iter().map(|(d, _)| id_of(&alerts, d)).collect();

    // Operators act (each answered 200), and the second gauge escalates.
    let (s, _) = post(
        addr,
        &format!("/api/v1/alerts/{}/ack", ids[0]),
        json!({"by": "Lan"}),
    )
    .await;
    assert_eq!(s, 200);
    ingest(addr, &[(watched[1].0, 2, watched[1].1[1] + 0.3)]).await;
    common::wait_for_async("the escalation", 30, async || {
        get_json(addr, &format!("/api/v1/alerts/{}", ids[1])).await["alert"]["level"] == 2
    })
    .await;
    let (s, _) = post(
        addr,
        &format!("/api/v1/alerts/{}/notes", ids[2]),
        json!({"by": "Minh", "note": "Kiểm tra camera cầu"}),
    )
    .await;
    assert_eq!(s, 200);
    let mut before = Vec::new();
    for id in &ids {
        before.push(get_json(addr, &format!("/api/v1/alerts/{id}")).await);
    }

    // Readings of the other gauges keep flowing; kill -9 in the middle.
    let stream = tokio::spawn({
        let others: Vec<(String, f64)> = others
            .iter()
            .map(|(d, l)| (d.to_string(), l[0] - 1.0))
            .collect();
        async move {
            for seq in 1.. {
                let now = Timestamp::now().millis();
                let body = river_ndjson(others.iter().map(|(d, l)| (d.as_str(), seq, *l, now)));
                let ok = tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::net::TcpStream::connect(addr),
                )
                .await
                .is_ok_and(|c| c.is_ok());
                if !ok {
                    break;
                }
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), post_ingest(addr, &body)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    ioc.kill().unwrap();
    ioc.wait().unwrap();
    stream.abort();

    // While it is down, a retained alert the store does not know appears.
    common::retain(broker.port, "ioc/v1/alerts/stray:x:1", b"{}").await;
    let mut ioc = spawn_ioc(dir.path(), http_port, broker.port);
    for (id, was) in ids.iter().zip(&before) {
        let now = get_json(addr, &format!("/api/v1/alerts/{id}")).await;
        assert_eq!(&now, was, "alert {id} changed across the crash");
    }
    // The webhook outbox agrees with the store: one pending delivery per
    // version of each alert, none twice, none missing.
    let pending = get_json(addr, "/api/v1/webhooks/deliveries?state=pending&limit=1000").await;
    for (id, was) in ids.iter().zip(&before) {
        let mut versions: Vec<u64> = pending
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["alert"] == id.as_str())
            .map(|d| d["version"].as_u64().unwrap())
            .collect();
        versions.sort_unstable();
        let last = was["alert"]["version"].as_u64().unwrap();
        assert_eq!(versions, (1..=last).collect::<Vec<_>>(), "outbox of {id}");
    }
    // The broker's retained alerts agree with the store: each active alert
    // at its stored version, and nothing else.
    common::wait_for_async("retained alerts reconciled", 30, async || {
        let w = Watcher::subscribe(broker.port, "ioc/v1/alerts/+").await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut retained: Vec<(String, u64)> = w
            .messages()
            .into_iter()
            .filter(|m| m.2)
            .map(|(t, p, _)| {
                let v = serde_json::from_slice::<Value>(&p).unwrap_or_default();
                (t, v["version"].as_u64().unwrap_or(0))
            })
            .collect();
        retained.sort();
        let mut want: Vec<(String, u64)> = before
            .iter()
            .map(|d| {
                let a = &d["alert"];
                (
                    format!("ioc/v1/alerts/{}", a["id"].as_str().unwrap()),
                    a["version"].as_u64().unwrap(),
                )
            })
            .collect();
        want.sort();
        retained == want
    })
    .await;
    assert_eq!(before[0]["alert"]["status"], "acknowledged");
    assert_eq!(before[1]["alert"]["level"], 2);
    assert_eq!(before[2]["alert"]["handling"]["notes"], 1);

    // The engine starts afresh: its next episode of each gauge continues
    // the stored alert instead of opening a second one.
    let again: Vec<_> = watched.iter().map(|(d, l)| (*d, 10, l[0] + 0.15)).collect();
    ingest(addr, &again).await;
    common::wait_for_async("the rule's new episodes applied", 30, async || {
        let mut done = true;
        for id in &ids {
            let d = get_json(addr, &format!("/api/v1/alerts/{id}")).await;
            done &= d["history"].as_array().unwrap().last().unwrap()["by"] == "rule"
                && d["alert"]["evidence"]["seq"] == 10;
        }
        done
    })
    .await;
    let alerts = river_alerts(addr).await;
    assert_eq!(alerts.len(), 3, "one active alert per gauge: {alerts:#?}");
    let acked = get_json(addr, &format!("/api/v1/alerts/{}", ids[0])).await;
    assert_eq!(
        acked["alert"]["status"], "acknowledged",
        "the acknowledgement holds"
    );
    let (s, _) = post(
        addr,
        &format!("/api/v1/alerts/{}/resolve", ids[2]),
        json!({"by": "Minh"}),
    )
    .await;
    assert_eq!(s, 200);
    let _ = Command::new("kill").arg(ioc.id().to_string()).status();
    ioc.wait().unwrap();
}
