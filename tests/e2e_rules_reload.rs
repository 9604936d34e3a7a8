//! Rules reloaded while readings flow: a threshold changes in the rules
//! file while a gauge keeps reporting over MQTT. Once through the file
//! watcher, once through `POST /api/v1/rules/reload` (admin only). The open
//! alert keeps its episode (same id, next version: no state lost), the
//! device keeps its latest state, and the next reading is judged by the new
//! threshold. A broken file is refused with every problem, and the rules in
//! force stay.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Device, Screen, free_port, get_json, http, river_reading, test_config};
use serde_json::Value;

const GAUGE: &str = "river-to-hieu";
const TOPIC: &str = "ioc/v1/river_gauge/river-to-hieu/telemetry";
/// The admin token of [`test_config`].
const ADMIN: &str = common::TEST_ADMIN;
/// An operator's token: operators may not reload.
const OPERATOR: &str = "operator-token-of-the-reload-test";
/// What the gauge reports all along.
const LEVEL_M: f64 = 4.0;

/// A rules file with one threshold rule on the gauge: L1 at 3 m, L2 at `l2`.
fn rules(l2: f64) -> String {
    format!(
        r#"
[[rule]]
id = "level"
kind = "threshold"
devices = ["river_gauge"]
ids = ["{GAUGE}"]
field = "water_level_m"
levels = [
  {{ name = "L1", value = 3.0, severity = "minor" }},
  {{ name = "L2", value = {l2}, severity = "severe" }},
]
hysteresis = 0.2
"#
    )
}

/// Replaces the file in one step, as editors and config tools do.
fn write_rules(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Publishes the same level every 50 ms until stopped; returns the
/// sequence number of the last reading sent.
struct Feed {
    stop: Arc<AtomicBool>,
    seq: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Feed {
    fn start(device: Arc<Device>) -> Feed {
        let stop = Arc::new(AtomicBool::new(false));
        let seq = Arc::new(AtomicU64::new(0));
        let (s, q) = (stop.clone(), seq.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                let n = q.fetch_add(1, Ordering::Relaxed) + 1;
                device
                    .publish(TOPIC, river_reading(GAUGE, n, LEVEL_M))
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Feed { stop, seq, task }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        self.seq.load(Ordering::Relaxed)
    }
}

/// Starts the process with the rules file in `dir` (L2 above the level),
/// waits for the L1 alert and returns everything the test needs.
async fn start(
    dir: &Path,
    watch: Duration,
) -> (ioc::app::Running, Screen, Feed, Value, std::path::PathBuf) {
    let path = dir.join("rules.toml");
    write_rules(&path, &rules(5.0));
    let port = free_port();
    let mut config = test_config(format!("mqtt://127.0.0.1:{port}"), true);
    config.rules.file = Some(path.clone());
    config.rules.watch_interval = watch;
    config.http.auth.tokens = vec![ioc_dashboard_api::auth::ApiToken {
        name: "duty-officer".into(),
        token: OPERATOR.into(),
        role: ioc_dashboard_api::auth::Role::Operator,
    }];
    let running = ioc::app::start(config).await.expect("start");
    let mut screen = Screen::connect(running.http_addr).await;
    let device = Arc::new(Device::connect(port).await);
    let feed = Feed::start(device);
    let opened = tokio::time::timeout(Duration::from_secs(20), screen.alert(GAUGE, "open"))
        .await
        .expect("no L1 alert while the gauge reports above L1");
    assert_eq!(
        (opened["level_name"].as_str(), opened["version"].as_u64()),
        (Some("L1"), Some(1))
    );
    (running, screen, feed, opened, path)
}

/// The first alert change after the reload: the same episode, raised to L2
/// by the next readings although the water did not move.
async fn escalated(screen: &mut Screen, opened: &Value) {
    let raised = tokio::time::timeout(Duration::from_secs(20), screen.alert(GAUGE, "open"))
        .await
        .expect("the new threshold did not judge the next readings");
    assert_eq!(
        raised["id"], opened["id"],
        "the episode must survive the reload"
    );
    assert_eq!(raised["opened_at"], opened["opened_at"]);
    assert_eq!(raised["level_name"], "L2");
    assert_eq!(raised["version"], 2);
    assert_eq!(raised["evidence"]["value"], LEVEL_M);
}

/// The device's latest state survived and kept moving.
async fn state_kept(running: &ioc::app::Running, last_seq: u64) {
    let dev = get_json(running.http_addr, &format!("/api/v1/devices/{GAUGE}")).await;
    let seq = dev["state"]["seq"].as_u64().unwrap();
    assert!(
        seq > 1 && seq <= last_seq,
        "latest seq {seq}, last sent {last_seq}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_picked_up_while_readings_flow() {
    let dir = tempfile::tempdir().unwrap();
    let (running, mut screen, feed, opened, path) =
        start(dir.path(), Duration::from_millis(100)).await;

    write_rules(&path, &rules(3.8));
    escalated(&mut screen, &opened).await;

    // A broken edit is refused; the rules in force (L2 at 3.8 m) stay, so
    // the open alert does not move.
    write_rules(
        &path,
        "[[rule]]\nid = \"level\"\nkind = \"threshold\"\nlevels = []\n",
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let alerts = get_json(running.http_addr, "/api/v1/alerts?status=open").await;
    let open: Vec<&Value> = alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["subject"] == GAUGE)
        .collect();
    assert_eq!(open.len(), 1, "{alerts}");
    assert_eq!(
        (open[0]["level_name"].as_str(), open[0]["version"].as_u64()),
        (Some("L2"), Some(2))
    );

    let last = feed.stop().await;
    state_kept(&running, last).await;
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_reloads_and_refuses_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    // No watching: only the API reloads.
    let (running, mut screen, feed, opened, path) = start(dir.path(), Duration::ZERO).await;
    let addr = running.http_addr;
    let reload = |token: Option<&'static str>| async move {
        let auth = token.map(|t| format!("Bearer {t}")).unwrap_or_default();
        http(
            addr,
            "POST",
            "/api/v1/rules/reload",
            &[("Authorization", &auth)],
            b"",
        )
        .await
    };

    write_rules(&path, &rules(3.8));
    assert_eq!(reload(None).await.0, 401, "reloading is for admins only");
    assert_eq!(reload(Some("not-the-token")).await.0, 401);
    assert_eq!(
        reload(Some(OPERATOR)).await.0,
        403,
        "operators may not reload"
    );
    let (status, summary) = reload(Some(ADMIN)).await;
    assert_eq!(status, 200, "{summary}");
    escalated(&mut screen, &opened).await;

    // Every problem of a broken file at once; nothing changes.
    write_rules(
        &path,
        "[[rule]]\nid = \"level\"\nkind = \"threshold\"\nlevels = []\n\n\
         [[rule]]\nid = \"x\"\nkind = \"no_such_kind\"\n",
    );
    let (status, body) = reload(Some(ADMIN)).await;
    assert_eq!(status, 422, "{body}");
    let problems = body["error"]["problems"].as_array().unwrap();
    assert!(problems.len() >= 2, "{body}");
    assert!(body.to_string().contains("no_such_kind"), "{body}");

    // The old rules still judge: lowering L2 back above the level through
    // a valid file resolves nothing but lowers the alert to L1.
    write_rules(&path, &rules(5.0));
    let (status, _) = reload(Some(ADMIN)).await;
    assert_eq!(status, 200);
    let lowered = tokio::time::timeout(Duration::from_secs(20), screen.alert(GAUGE, "open"))
        .await
        .expect("no change after moving L2 above the level again");
    assert_eq!(
        (
            lowered["id"].clone(),
            lowered["level_name"].as_str(),
            lowered["version"].as_u64()
        ),
        (opened["id"].clone(), Some("L1"), Some(3))
    );

    let last = feed.stop().await;
    state_kept(&running, last).await;
    running.shutdown().await.expect("clean shutdown");
}
