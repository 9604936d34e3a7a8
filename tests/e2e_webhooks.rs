//! Webhook delivery from the durable outbox to a real HTTP receiver that
//! fails its first attempts: every version of an alert is accepted exactly
//! once, in order, with a valid HMAC-SHA256 signature and the idempotency
//! key `{alert}:{version}`; a subscriber's filter holds back what it does
//! not want; an unreachable subscriber's deliveries end up dead and listed
//! by the API with their error; a subscriber that never answers holds up
//! no other.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{Device, Screen, free_port, get_json, http, river_reading, test_config};
use hmac::{Hmac, Mac};
use ioc_alerts::Webhook;
use serde_json::{Value, json};
use sha2::Sha256;

const GAUGE: &str = "river-to-hieu";
const TOPIC: &str = "ioc/v1/river_gauge/river-to-hieu/telemetry";
const SECRET: &str = "pccc-sonla-0123456789";

/// What the receiver saw: `(path, status answered, headers, body)`.
type Seen = Arc<Mutex<Vec<(String, u16, HeaderMap, Bytes)>>>;

#[derive(Clone)]
struct Receiver {
    seen: Seen,
    attempts: Arc<AtomicUsize>,
    fail_first: usize,
}

impl Receiver {
    /// A receiver on a free port that refuses its first `fail_first`
    /// requests to `/pccc`; and its base URL.
    async fn serve(fail_first: usize) -> (Receiver, String) {
        let receiver = Receiver {
            seen: Arc::default(),
            attempts: Arc::default(),
            fail_first,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/{path}", post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, base)
    }
}

async fn receive(
    State(r): State<Receiver>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let n = r.attempts.fetch_add(1, Ordering::SeqCst);
    let status = if uri.path() == "/pccc" && n < r.fail_first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    };
    r.seen
        .lock()
        .unwrap()
        .push((uri.path().to_owned(), status.as_u16(), headers, body));
    status
}

fn hook(name: &str, url: String) -> Webhook {
    Webhook {
        name: name.into(),
        url,
        secret: SECRET.into(),
        rules: vec!["river_level".into()],
        min_severity: None,
        areas: vec!["sl-to-hieu".into()],
        max_attempts: 12,
        timeout: Duration::from_secs(5),
    }
}

fn valid_signature(headers: &HeaderMap, body: &[u8]) -> bool {
    let given = headers["x-ioc-signature-256"].to_str().unwrap();
    let hex = given.strip_prefix("sha256=").unwrap();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}

async fn post_json(addr: std::net::SocketAddr, path: &str, body: Value) -> u16 {
    let (status, _) = http(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_deliveries_survive_a_failing_receiver() {
    let (receiver, base) = Receiver::serve(3).await;

    let port = free_port();
    let mut config = test_config(format!("mqtt://127.0.0.1:{port}"), true);
    let mut extreme = hook("extreme-only", format!("{base}/extreme"));
    extreme.min_severity = Some(ioc_schemas::Severity::Extreme);
    let mut gone = hook("gone", format!("http://127.0.0.1:{}/x", free_port()));
    gone.max_attempts = 2;
    config.alerts.webhooks = vec![hook("pccc", format!("{base}/pccc")), extreme, gone];
    let running = ioc::app::start(config).await.unwrap();
    let addr = running.http_addr;
    let levels = common::alarm_levels(&running.registry, GAUGE);
    let mut screen = Screen::connect(addr).await;
    let device = Device::connect(port).await;

    // Version 1: opened by the rule; 2: acknowledged; 3: escalated; 4: resolved by hand.
    let (opened, mut seq) =
        common::publish_until_open(&device, &mut screen, GAUGE, levels[0] + 0.1).await;
    let id = opened["id"].as_str().unwrap().to_owned();
    assert_eq!(
        post_json(
            addr,
            &format!("/api/v1/alerts/{id}/ack"),
            json!({"by": "Lan"})
        )
        .await,
        200
    );
    seq += 1;
    device
        .publish(TOPIC, river_reading(GAUGE, seq, levels[1] + 0.3))
        .await;
    screen
        .alert_where(|a| a["id"] == id.as_str() && a["version"] == 3)
        .await;
    assert_eq!(
        post_json(
            addr,
            &format!("/api/v1/alerts/{id}/resolve"),
            json!({"by": "Lan"})
        )
        .await,
        200
    );

    let accepted = |seen: &Seen| -> Vec<(String, Value)> {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(path, status, _, _)| path == "/pccc" && *status < 300)
            .map(|(_, _, h, b)| {
                (
                    h["idempotency-key"].to_str().unwrap().to_owned(),
                    serde_json::from_slice(b).unwrap(),
                )
            })
            .collect()
    };
    common::wait_for("four accepted deliveries", 60, || {
        accepted(&receiver.seen).len() >= 4
    })
    .await;
    // Nothing more arrives for the subscriber.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = accepted(&receiver.seen);
    let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    let want: Vec<String> = (1..=4).map(|v| format!("{id}:{v}")).collect();
    assert_eq!(keys, want, "each version once, in order");
    let actions: Vec<&str> = got
        .iter()
        .map(|(_, b)| b["change"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["opened", "acknowledged", "escalated", "resolved"]);
    assert_eq!(got[3].1["alert"]["status"], "resolved");

    let seen = receiver.seen.lock().unwrap().clone();
    let to_pccc: Vec<_> = seen.iter().filter(|(p, _, _, _)| p == "/pccc").collect();
    assert_eq!(
        to_pccc.len(),
        4 + 3,
        "three refused attempts, then four deliveries"
    );
    for (_, _, headers, body) in &to_pccc {
        assert!(valid_signature(headers, body), "bad signature");
    }
    let first_ok = to_pccc.iter().find(|(_, s, _, _)| *s < 300).unwrap();
    assert_eq!(first_ok.2["x-ioc-delivery-attempt"], "4");
    assert!(
        seen.iter().all(|(p, _, _, _)| p != "/extreme"),
        "a moderate alert is not for the extreme-only subscriber"
    );

    // The unreachable subscriber: dead after two attempts, listed with the error.
    common::wait_for_async("a dead delivery listed", 30, async || {
        let dead = get_json(addr, "/api/v1/webhooks/deliveries?state=dead").await;
        dead.as_array().unwrap().iter().any(|d| {
            d["subscriber"] == "gone"
                && d["version"] == 1
                && d["attempts"] == 2
                && d["last_error"].as_str().unwrap().contains("request failed")
        })
    })
    .await;
    let delivered = get_json(addr, "/api/v1/webhooks/deliveries?state=delivered").await;
    assert_eq!(
        delivered
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["subscriber"] == "pccc")
            .count(),
        4
    );
    let (status, _) = http(
        addr,
        "GET",
        "/api/v1/webhooks/deliveries?state=lost",
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 400);
    running.shutdown().await.unwrap();
}

/// A subscriber whose endpoint takes the connection and never answers
/// holds up only its own deliveries: another subscriber gets every version
/// while the silent one's first request is still waiting out its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_subscriber_holds_up_only_itself() {
    // Accepts connections and keeps them, never answering.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}/silent", silent.local_addr().unwrap());
    let held: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
    {
        let held = held.clone();
        std::thread::spawn(move || {
            for stream in silent.incoming().flatten() {
                held.lock().unwrap().push(stream);
            }
        });
    }
    let (receiver, base) = Receiver::serve(0).await;

    let port = free_port();
    let mut config = test_config(format!("mqtt://127.0.0.1:{port}"), true);
    // Named to come first in any order by name.
    let mut slow = hook("a-silent", silent_url);
    slow.timeout = Duration::from_secs(120);
    config.alerts.webhooks = vec![slow, hook("pccc", format!("{base}/pccc"))];
    let running = ioc::app::start(config).await.unwrap();
    let addr = running.http_addr;
    let levels = common::alarm_levels(&running.registry, GAUGE);
    let mut screen = Screen::connect(addr).await;
    let device = Device::connect(port).await;

    // Version 1: opened; 2: acknowledged; 3: resolved by hand.
    let (opened, _) =
        common::publish_until_open(&device, &mut screen, GAUGE, levels[0] + 0.1).await;
    let id = opened["id"].as_str().unwrap().to_owned();
    for action in ["ack", "resolve"] {
        let path = format!("/api/v1/alerts/{id}/{action}");
        assert_eq!(post_json(addr, &path, json!({"by": "Lan"})).await, 200);
    }
    let keys = || -> Vec<String> {
        receiver
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(path, status, _, _)| path == "/pccc" && *status < 300)
            .map(|(_, _, h, _)| h["idempotency-key"].to_str().unwrap().to_owned())
            .collect()
    };
    common::wait_for("three deliveries to pccc", 30, || keys().len() >= 3).await;
    assert_eq!(
        keys(),
        (1..=3).map(|v| format!("{id}:{v}")).collect::<Vec<_>>()
    );
    assert_eq!(
        held.lock().unwrap().len(),
        1,
        "the silent subscriber is still on its first request"
    );
    running.shutdown().await.unwrap();
}
