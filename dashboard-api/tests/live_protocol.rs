//! The live protocol through a real WebSocket client on loopback: filters
//! (and changing them), resuming a session, a deliberately slow client
//! (every alert arrives, device states are conflated) and resynchronising
//! a client that cannot keep up. The hub is fed directly: the engine's path
//! to it is covered by the end-to-end tests.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ioc_dashboard_api::auth::{ApiToken, Auth, AuthConfig, Role};
use ioc_dashboard_api::{AppState, LiveHub};
use ioc_devices::Registry;
use ioc_schemas::{
    Alert, AlertStatus, Body, DeviceState, EngineOutput, Evidence, Hydrology, Severity, Timestamp,
};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The videowall's token: a viewer.
const VIEWER: &str = "viewer-token-0123456789";

/// The demo catalogue, parsed once.
fn registry() -> Arc<Registry> {
    static REGISTRY: std::sync::OnceLock<Arc<Registry>> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(Registry::sonla_demo).clone()
}

struct Server {
    addr: SocketAddr,
    hub: Arc<LiveHub>,
    cancel: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn server() -> Server {
    server_with(registry()).await
}

async fn server_with(registry: Arc<Registry>) -> Server {
    let hub = LiveHub::new(registry);
    let cancel = CancellationToken::new();
    let config = AuthConfig {
        tokens: vec![ApiToken {
            name: "wall-1".into(),
            token: VIEWER.into(),
            role: Role::Viewer,
        }],
        ..AuthConfig::default()
    };
    let auth = Auth::new(&config, "admin-token-0123456789").unwrap();
    let state = AppState::new(hub.clone(), cancel.clone(), auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ioc_dashboard_api::serve(listener, None, state));
    Server { addr, hub, cancel }
}

fn state(device: &str, seq: u64, level_m: f64) -> EngineOutput {
    EngineOutput::Device(DeviceState {
        device: device.into(),
        ts: Timestamp(1_000 * seq as i64),
        seq,
        pos: registry().get(device).unwrap().pos,
        reading: Body::Hydrology(Hydrology {
            water_level_m: Some(level_m),
            ..Hydrology::default()
        }),
        alarm_level: None,
    })
}

fn alert(id: &str, subject: &str, severity: Severity, version: u32) -> EngineOutput {
    let registry = registry();
    let device = registry.get(subject).unwrap();
    EngineOutput::alert(Alert {
        id: id.into(),
        rule: "river_level".into(),
        subject: subject.into(),
        status: AlertStatus::Open,
        severity,
        level: 1,
        level_name: "BĐ1".into(),
        peak_level: 1,
        title_vi: "Mực nước".into(),
        title_en: "River level".into(),
        pos: device.pos,
        area: device.area.clone(),
        zones: Vec::new(),
        nearest: Vec::new(),
        evidence: Evidence::new(4.5, "m", 4.3, Timestamp(1000), 7),
        opened_at: Timestamp(1000),
        updated_at: Timestamp(1000 + i64::from(version)),
        resolved_at: None,
        version,
        revision: false,
        handling: Default::default(),
    })
}

async fn connect(addr: SocketAddr) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/live"))
        .await
        .expect("WebSocket connect")
        .0
}

/// Sends a request; a first `subscribe` without a token gets the viewer's.
async fn send(ws: &mut Ws, mut request: Value) {
    if request["type"] == "subscribe" && request.get("token").is_none() {
        request["token"] = VIEWER.into();
    }
    ws.send(Message::Text(request.to_string().into()))
        .await
        .unwrap();
}

/// The next JSON message; `None` when the server closed.
async fn next(ws: &mut Ws) -> Option<Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no live message within 10 s")?;
        match msg.ok()? {
            Message::Text(t) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

fn ids(items: &Value, key: &str) -> Vec<String> {
    let mut v: Vec<String> = items
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i[key].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_narrow_snapshots_and_deltas_and_change_without_reconnecting() {
    let server = server().await;
    let hub = &server.hub;
    hub.apply(vec![alert(
        "a-moderate",
        "river-to-hieu",
        Severity::Moderate,
        1,
    )]);
    let mut ws = connect(server.addr).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "filter": {"kinds": ["river_gauge"], "min_severity": "severe"}}),
    )
    .await;
    let snapshot = next(&mut ws).await.unwrap();
    assert_eq!(
        (&snapshot["type"], &snapshot["seq"], &snapshot["reason"]),
        (&json!("snapshot"), &json!(1), &json!("subscribe"))
    );
    assert!(snapshot["session"].as_str().is_some_and(|s| s.len() == 32));
    let devices = snapshot["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 74, "only river gauges");
    assert!(devices.iter().all(|d| d["kind"] == "river_gauge"));
    assert_eq!(
        snapshot["alerts"],
        json!([]),
        "a moderate alert is below the filter"
    );

    hub.apply(vec![
        state("rain-to-hieu", 1, 0.0),
        state("river-to-hieu", 1, 4.0),
        alert("a-moderate", "river-to-hieu", Severity::Moderate, 2),
        alert("a-severe", "river-chieng-an", Severity::Severe, 1),
    ]);
    let delta = next(&mut ws).await.unwrap();
    assert_eq!(
        (&delta["type"], &delta["seq"]),
        (&json!("delta"), &json!(2))
    );
    assert_eq!(ids(&delta["devices"], "device"), ["river-to-hieu"]);
    assert_eq!(ids(&delta["alerts"], "id"), ["a-severe"]);

    // A box around one gauge: the map zoomed in on Tô Hiệu.
    let [x, y] = registry().get("river-to-hieu").unwrap().pos;
    send(
        &mut ws,
        json!({"type": "subscribe", "filter": {"bbox": [x - 0.001, y - 0.001, x + 0.001, y + 0.001]}}),
    )
    .await;
    let snapshot = next(&mut ws).await.unwrap();
    assert_eq!(
        (&snapshot["type"], &snapshot["seq"], &snapshot["reason"]),
        (&json!("snapshot"), &json!(3), &json!("filter"))
    );
    assert_eq!(ids(&snapshot["devices"], "id"), ["river-to-hieu"]);
    assert_eq!(
        ids(&snapshot["alerts"], "id"),
        ["a-moderate", "a-severe"],
        "alerts are shown wherever the map looks"
    );

    // A refused filter keeps the one in force, and the connection.
    send(
        &mut ws,
        json!({"type": "subscribe", "filter": {"areas": ["atlantis"]}}),
    )
    .await;
    let refused = next(&mut ws).await.unwrap();
    assert_eq!(refused["type"], "error");
    assert!(refused["message"].as_str().unwrap().contains("atlantis"));
    hub.apply(vec![
        state("river-chieng-an", 2, 3.0),
        state("river-to-hieu", 2, 4.1),
    ]);
    let delta = next(&mut ws).await.unwrap();
    assert_eq!(delta["seq"], 4);
    assert_eq!(ids(&delta["devices"], "device"), ["river-to-hieu"]);

    // An area (a ward) narrows devices and alerts alike.
    let area = &registry().get("river-chieng-an").unwrap().area[0]
        .id
        .clone();
    send(
        &mut ws,
        json!({"type": "subscribe", "filter": {"areas": [area]}}),
    )
    .await;
    let snapshot = next(&mut ws).await.unwrap();
    assert!(
        snapshot["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["area"][0]["id"] == **area)
    );
    assert_eq!(ids(&snapshot["alerts"], "id"), ["a-severe"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_message_must_be_a_valid_subscribe() {
    let server = server().await;
    for bad in [
        json!({"type": "hello"}),
        json!({"type": "subscribe", "filter": {"kinds": ["submarine"]}}),
        json!({"type": "subscribe", "filter": {"bbox": [105, 22, 103, 21]}}),
        json!({"type": "subscribe", "filter": {"bbox": [103, 21, 105, 95]}}),
    ] {
        let mut ws = connect(server.addr).await;
        send(&mut ws, bad.clone()).await;
        let refused = next(&mut ws).await.unwrap();
        assert_eq!(refused["type"], "error", "{bad}");
        assert_eq!(refused["code"], "bad_request");
        assert!(next(&mut ws).await.is_none(), "closed after refusing {bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_needed_in_the_header_or_the_first_message() {
    let server = server().await;
    for token in [json!(null), json!("wrong-token-0123456789")] {
        let mut ws = connect(server.addr).await;
        send(&mut ws, json!({"type": "subscribe", "token": token})).await;
        let refused = next(&mut ws).await.unwrap();
        assert_eq!(refused["code"], "unauthorized", "{token}");
        assert!(next(&mut ws).await.is_none(), "closed");
    }
    // By header, as non-browser clients do.
    let mut request = format!("ws://{}/api/v1/live", server.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {VIEWER}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::Text(r#"{"type":"subscribe"}"#.into()))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await.unwrap()["type"], "snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_gets_what_it_missed() {
    let server = server().await;
    let hub = &server.hub;
    let mut ws = connect(server.addr).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "filter": {"kinds": ["river_gauge"]}}),
    )
    .await;
    let snapshot = next(&mut ws).await.unwrap();
    let session = snapshot["session"].as_str().unwrap().to_string();
    hub.apply(vec![state("river-to-hieu", 1, 4.0)]);
    let delta = next(&mut ws).await.unwrap();
    assert_eq!(delta["seq"], 2);
    drop(ws);

    // While the client is away: a new level, an alert, and a rain gauge
    // it does not follow.
    hub.apply(vec![state("river-to-hieu", 2, 4.4)]);
    hub.apply(vec![
        state("river-to-hieu", 3, 4.6),
        alert("a1", "river-to-hieu", Severity::Severe, 1),
        state("rain-to-hieu", 1, 0.0),
    ]);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let resume = |seq: u64| {
        json!({"type": "subscribe", "filter": {"kinds": ["river_gauge"]},
               "resume": {"session": session, "seq": seq}})
    };
    // The missed messages from seq 3: the connection may have sent one
    // more before it noticed its client was gone, so the state and the
    // alert may come in one or two deltas, but in sequence and conflated.
    let mut ws = connect(server.addr).await;
    send(&mut ws, resume(2)).await;
    let (mut last, mut latest, mut alerts) = (2, 0, Vec::new());
    while latest < 3 || alerts.is_empty() {
        let missed = next(&mut ws).await.unwrap();
        assert_eq!(
            (&missed["type"], &missed["seq"]),
            (&json!("delta"), &json!(last + 1))
        );
        last += 1;
        let devices = missed["devices"].as_array().cloned().unwrap_or_default();
        assert!(devices.len() <= 1, "conflated while away: {devices:?}");
        if let Some(d) = devices.first() {
            latest = d["seq"].as_u64().unwrap();
        }
        alerts.extend(ids(&missed["alerts"], "id"));
    }
    assert_eq!(alerts, ["a1"]);
    hub.apply(vec![state("river-to-hieu", 4, 4.7)]);
    assert_eq!(next(&mut ws).await.unwrap()["seq"], last + 1);
    last += 1;
    drop(ws);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // From further back: every message after the one named, again.
    let mut ws = connect(server.addr).await;
    send(&mut ws, resume(1)).await;
    for seq in 2..=last {
        assert_eq!(next(&mut ws).await.unwrap()["seq"], seq);
    }
    drop(ws);

    // A session the server does not have: a fresh snapshot, saying so.
    let mut ws = connect(server.addr).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "resume": {"session": "0123", "seq": 7}}),
    )
    .await;
    let fresh = next(&mut ws).await.unwrap();
    assert_eq!(
        (&fresh["type"], &fresh["reason"], &fresh["seq"]),
        (&json!("snapshot"), &json!("resume_unavailable"), &json!(1))
    );
    assert_ne!(fresh["session"], json!(session));
    assert_eq!(ids(&fresh["alerts"], "id"), ["a1"]);
}

/// Connects a client whose socket receive buffer is fixed (64 KiB, no
/// autotuning), so that the server's writes block soon after it stops
/// reading (once the server's send buffer, at most 4 MiB here, is full).
async fn slow_client(addr: SocketAddr, request: Value) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 << 10).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20));
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(
        format!("ws://{addr}/api/v1/live"),
        MaybeTlsStream::Plain(tcp),
        Some(config),
    )
    .await
    .unwrap();
    send(&mut ws, request).await;
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_gets_every_alert_and_the_latest_state_of_each_device() {
    let server = server().await;
    let hub = &server.hub;
    let mut ws = slow_client(server.addr, json!({"type": "subscribe"})).await;
    assert_eq!(next(&mut ws).await.unwrap()["type"], "snapshot");
    let gauges: Vec<String> = registry()
        .devices()
        .iter()
        .filter(|d| d.kind == ioc_schemas::DeviceKind::RiverGauge)
        .map(|d| d.id.clone())
        .collect();
    // The client stops reading; the hub goes on: 2 000 batches of a state
    // of every gauge (about 30 MB of JSON), with a new version of one
    // alert every 8 batches.
    let (batches, every) = (2000u64, 8u64);
    for b in 1..=batches {
        let mut batch: Vec<EngineOutput> = gauges
            .iter()
            .map(|g| state(g, b, 3.0 + b as f64 / 1000.0))
            .collect();
        if b % every == 0 {
            batch.push(alert(
                "a1",
                "river-to-hieu",
                Severity::Severe,
                (b / every) as u32,
            ));
        }
        hub.apply(batch);
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Now it reads everything.
    let mut latest: HashMap<String, u64> = HashMap::new();
    let (mut device_items, mut versions, mut last_seq) = (0usize, Vec::new(), 1u64);
    while latest.len() < gauges.len() || latest.values().any(|&s| s < batches) {
        let msg = next(&mut ws).await.expect("live feed closed");
        assert_eq!(msg["type"], "delta", "no resync was needed");
        assert_eq!(msg["seq"], last_seq + 1, "no gap");
        last_seq += 1;
        for d in msg["devices"].as_array().into_iter().flatten() {
            device_items += 1;
            let seq = d["seq"].as_u64().unwrap();
            let before = latest.insert(d["device"].as_str().unwrap().into(), seq);
            assert!(before.is_none_or(|b| b < seq), "states arrive in order");
        }
        for a in msg["alerts"].as_array().into_iter().flatten() {
            versions.push(a["version"].as_u64().unwrap());
        }
    }
    assert_eq!(
        versions,
        (1..=batches / every).collect::<Vec<_>>(),
        "every version of the alert, in order"
    );
    let applied = gauges.len() * batches as usize;
    assert!(
        device_items * 3 < applied,
        "device states were conflated: {device_items} sent of {applied} applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_cannot_keep_up_is_resynced_with_a_snapshot() {
    let server = server().await;
    let hub = &server.hub;
    let mut ws = slow_client(server.addr, json!({"type": "subscribe"})).await;
    assert_eq!(next(&mut ws).await.unwrap()["type"], "snapshot");
    // Enough large messages to fill the socket, then more alert changes
    // than a client may have waiting.
    let gauges: Vec<String> = registry().devices().iter().map(|d| d.id.clone()).collect();
    for b in 1..=200 {
        hub.apply(gauges.iter().map(|g| state(g, b, 3.0)).collect());
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let alerts = ioc_dashboard_api::live::session::MAX_PENDING_EVENTS as u32 + 500;
    for v in 1..=alerts {
        hub.apply(vec![alert(
            &format!("a{}", v % 7),
            "river-to-hieu",
            Severity::Severe,
            v,
        )]);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut resynced = None;
    for _ in 0..10_000 {
        let msg = next(&mut ws).await.expect("live feed closed");
        if msg["type"] == "snapshot" {
            resynced = Some(msg);
            break;
        }
    }
    let snapshot = resynced.expect("a resync snapshot");
    assert_eq!(snapshot["reason"], "resync");
    assert_eq!(
        snapshot["alerts"].as_array().unwrap().len(),
        7,
        "every open alert"
    );
    hub.apply(vec![state("river-to-hieu", 99, 5.0)]);
    loop {
        let msg = next(&mut ws).await.unwrap();
        if msg["devices"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| d["seq"] == 99)
        {
            break;
        }
    }
}

/// A province's snapshot comes in parts of at most 2 000 devices, with
/// consecutive sequence numbers, before any delta; together they hold
/// every device once.
#[tokio::test]
async fn a_large_snapshot_comes_in_parts_before_any_delta() {
    let scaled = Registry::sonla_scaled(5_000);
    let first = scaled.devices()[0].clone();
    let s = server_with(scaled.clone()).await;
    let mut ws = connect(s.addr).await;
    send(&mut ws, json!({"type": "subscribe"})).await;
    let snapshot = next(&mut ws).await.unwrap();
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["more"], true);
    // A change while the parts go out arrives after them, in a delta.
    s.hub.apply(vec![EngineOutput::Device(DeviceState {
        device: first.id.as_str().into(),
        ts: Timestamp(5_000),
        seq: 5,
        pos: first.pos,
        reading: Body::Hydrology(Hydrology {
            water_level_m: Some(1.5),
            ..Hydrology::default()
        }),
        alarm_level: None,
    })]);
    let mut seen: Vec<String> = ids(&snapshot["devices"], "id");
    let mut parts = vec![seen.len()];
    let mut seq = snapshot["seq"].as_u64().unwrap();
    loop {
        let part = next(&mut ws).await.unwrap();
        assert_eq!(part["type"], "snapshot_part", "{part}");
        seq += 1;
        assert_eq!(part["seq"], seq);
        let devices = ids(&part["devices"], "id");
        parts.push(devices.len());
        seen.extend(devices);
        if part["more"] != true {
            break;
        }
    }
    assert_eq!(parts, [2_000, 2_000, 1_000]);
    let unique: std::collections::HashSet<&String> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (5_000, 5_000));
    let delta = next(&mut ws).await.unwrap();
    assert_eq!(
        (&delta["type"], &delta["seq"]),
        (&json!("delta"), &json!(seq + 1))
    );
    assert_eq!(delta["devices"][0]["device"], first.id.as_str());
}
