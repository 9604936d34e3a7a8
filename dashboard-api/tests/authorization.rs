//! The authorization matrix: every endpoint × every role, and no, an
//! invalid or an expired token, over real HTTP. Endpoints whose feature
//! this server lacks (no alert store, no rules) answer 404 or 503 once the
//! caller is through: what is checked is that the gate lets through exactly
//! the roles it should (401 without a valid token, 403 with a lesser role).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use ioc_dashboard_api::auth::{ApiToken, Auth, AuthConfig, JwtConfig, Role};
use ioc_dashboard_api::{AppState, LiveHub};
use ioc_devices::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "admin-token-0123456789";
const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";

/// Every endpoint, with the least role it needs (`None`: open).
const ENDPOINTS: &[(&str, &str, Option<Role>)] = &[
    ("GET", "/", None),
    ("GET", "/app.js", None),
    ("GET", "/style.css", None),
    ("GET", "/healthz", None),
    ("GET", "/metrics", Some(Role::Viewer)),
    ("GET", "/api/v1/whoami", Some(Role::Viewer)),
    ("GET", "/api/v1/devices", Some(Role::Viewer)),
    ("GET", "/api/v1/devices/river-to-hieu", Some(Role::Viewer)),
    ("GET", "/api/v1/alerts", Some(Role::Viewer)),
    ("GET", "/api/v1/alerts.cap", Some(Role::Viewer)),
    ("GET", "/api/v1/alerts/some-id", Some(Role::Viewer)),
    ("GET", "/api/v1/areas", Some(Role::Viewer)),
    ("GET", "/api/v1/zones", Some(Role::Viewer)),
    ("GET", "/api/v1/tracks", Some(Role::Viewer)),
    ("GET", "/api/v1/stats", Some(Role::Viewer)),
    ("POST", "/api/v1/alerts/some-id/ack", Some(Role::Operator)),
    (
        "POST",
        "/api/v1/alerts/some-id/resolve",
        Some(Role::Operator),
    ),
    (
        "POST",
        "/api/v1/alerts/some-id/assign",
        Some(Role::Operator),
    ),
    ("POST", "/api/v1/alerts/some-id/notes", Some(Role::Operator)),
    ("GET", "/api/v1/webhooks/deliveries", Some(Role::Admin)),
    ("POST", "/api/v1/rules/reload", Some(Role::Admin)),
];

fn jwt(role: &str, expires_in: i64) -> String {
    let exp = jsonwebtoken::get_current_timestamp() as i64 + expires_in;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "mai", "role": role, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn server() -> (SocketAddr, CancellationToken) {
    let config = AuthConfig {
        tokens: vec![
            ApiToken {
                name: "wall".into(),
                token: "viewer-token-0123456789".into(),
                role: Role::Viewer,
            },
            ApiToken {
                name: "desk".into(),
                token: "operator-token-0123456789".into(),
                role: Role::Operator,
            },
        ],
        jwt: Some(JwtConfig {
            hs256_secret: Some(SECRET.into()),
            ..JwtConfig::default()
        }),
        anonymous: None,
    };
    let cancel = CancellationToken::new();
    let hub = LiveHub::new(Registry::sonla_demo());
    let state = AppState::new(hub, cancel.clone(), Auth::new(&config, ADMIN).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ioc_dashboard_api::serve(listener, state));
    (addr, cancel)
}

async fn status(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let body = if method == "POST" { "{}" } else { "" };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_for_every_role_and_bad_token() {
    let (addr, cancel) = server().await;
    let viewer_jwt = jwt("viewer", 600);
    let operator_jwt = jwt("operator", 600);
    let admin_jwt = jwt("admin", 600);
    let expired = jwt("admin", -3600);
    let callers: Vec<(&str, Option<&str>, Option<Role>)> = vec![
        ("no token", None, None),
        ("an unknown token", Some("not-a-token-0123456789"), None),
        ("an expired JWT", Some(&expired), None),
        (
            "a viewer token",
            Some("viewer-token-0123456789"),
            Some(Role::Viewer),
        ),
        (
            "an operator token",
            Some("operator-token-0123456789"),
            Some(Role::Operator),
        ),
        ("the admin token", Some(ADMIN), Some(Role::Admin)),
        ("a viewer JWT", Some(&viewer_jwt), Some(Role::Viewer)),
        ("an operator JWT", Some(&operator_jwt), Some(Role::Operator)),
        ("an admin JWT", Some(&admin_jwt), Some(Role::Admin)),
    ];
    let mut wrong = Vec::new();
    for (method, path, needs) in ENDPOINTS {
        for (who, token, role) in &callers {
            let got = status(addr, method, path, *token).await;
            let ok = match (needs, role) {
                (None, _) => got == 200,
                (Some(_), None) => got == 401,
                (Some(need), Some(have)) if have < need => got == 403,
                (Some(_), Some(_)) => got != 401 && got != 403,
            };
            if !ok {
                wrong.push(format!("{method} {path} with {who}: {got}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "unexpected statuses:\n{}",
        wrong.join("\n")
    );
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused() {
    let (addr, cancel) = server().await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = vec![b' '; ioc_dashboard_api::MAX_REQUEST_BODY + 1];
    let head = format!(
        "POST /api/v1/alerts/x/notes HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {ADMIN}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let _ = s.write_all(&body).await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    cancel.cancel();
}
