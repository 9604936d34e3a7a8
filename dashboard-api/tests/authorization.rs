//! The authorization matrix: every endpoint × every role, and no, an
//! invalid or an expired token, over real HTTP. Endpoints whose feature
//! this server lacks (no alert store, no rules) answer 404 or 503 once the
//! caller is through: what is checked is that the gate lets through exactly
//! the roles it should (401 without a valid token, 403 with a lesser role).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use ioc_dashboard_api::auth::{ApiToken, Auth, AuthConfig, JwtConfig, RateLimit, Refusals, Role};
use ioc_dashboard_api::{AppState, LiveHub};
use ioc_devices::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "admin-token-0123456789";
const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";
/// Another site whose pages may call.
const GRAFANA: &str = "https://grafana.sonla.example";

/// Every endpoint, with the least role it needs (`None`: open).
const ENDPOINTS: &[(&str, &str, Option<Role>)] = &[
    ("GET", "/", None),
    ("GET", "/app.js", None),
    ("GET", "/style.css", None),
    ("GET", "/healthz", None),
    ("GET", "/api/v1/openapi.json", None),
    ("GET", "/api/v1/auth/oidc", None),
    ("POST", "/api/v1/auth/oidc/token", None),
    ("GET", "/metrics", Some(Role::Viewer)),
    ("GET", "/api/v1/whoami", Some(Role::Viewer)),
    ("GET", "/api/v1/devices", Some(Role::Viewer)),
    ("GET", "/api/v1/devices/river-to-hieu", Some(Role::Viewer)),
    (
        "GET",
        "/api/v1/devices/river-to-hieu/history",
        Some(Role::Viewer),
    ),
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
    ("GET", "/api/v1/rules/file", Some(Role::Admin)),
    ("PUT", "/api/v1/rules/file", Some(Role::Admin)),
    ("POST", "/api/v1/backtest", Some(Role::Admin)),
    ("GET", "/api/v1/audit", Some(Role::Admin)),
    ("GET", "/api/v1/registry/devices", Some(Role::Viewer)),
    (
        "GET",
        "/api/v1/registry/devices/river-to-hieu",
        Some(Role::Viewer),
    ),
    ("GET", "/api/v1/registry/export", Some(Role::Viewer)),
    ("GET", "/api/v1/registry/unregistered", Some(Role::Viewer)),
    (
        "POST",
        "/api/v1/registry/devices/river-to-hieu/maintenance",
        Some(Role::Operator),
    ),
    (
        "DELETE",
        "/api/v1/registry/devices/river-to-hieu/maintenance",
        Some(Role::Operator),
    ),
    ("POST", "/api/v1/registry/devices", Some(Role::Admin)),
    (
        "PUT",
        "/api/v1/registry/devices/river-to-hieu",
        Some(Role::Admin),
    ),
    (
        "POST",
        "/api/v1/registry/devices/river-to-hieu/retire",
        Some(Role::Admin),
    ),
    ("POST", "/api/v1/registry/import", Some(Role::Admin)),
    (
        "POST",
        "/api/v1/registry/unregistered/river-x/adopt",
        Some(Role::Admin),
    ),
    ("GET", "/api/v1/registry/changes", Some(Role::Admin)),
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

/// A server whose refusals never slow an address down: these tests look at
/// each caller's answer (`refusals_slow_one_address_down` at the slowing).
async fn server() -> (SocketAddr, CancellationToken) {
    server_with(RateLimit::default()).await
}

async fn server_with(rate_limit: RateLimit) -> (SocketAddr, CancellationToken) {
    let never = Refusals {
        free: 0,
        ..Refusals::default()
    };
    server_full(rate_limit, never).await
}

async fn server_full(rate_limit: RateLimit, refusals: Refusals) -> (SocketAddr, CancellationToken) {
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
        oidc: None,
        anonymous: None,
        rate_limit,
        cors_origins: vec![GRAFANA.into()],
        refusals,
    };
    let cancel = CancellationToken::new();
    let hub = LiveHub::new(Registry::sonla_demo());
    let state = AppState::new(hub, cancel.clone(), Auth::new(&config, ADMIN).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ioc_dashboard_api::serve(listener, None, state));
    (addr, cancel)
}

/// The response's head (status line and headers) to a raw request.
async fn request(addr: SocketAddr, method: &str, path: &str, headers: &str) -> String {
    request_from([127, 0, 0, 1].into(), addr, method, path, headers).await
}

/// [`request`] from the loopback address `from` (any of 127.0.0.0/8).
async fn request_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    let body = if method == "POST" { "{}" } else { "" };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 16 << 10];
    let mut got = 0;
    // Up to the end of the head (a WebSocket upgrade does not close).
    while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf[got..]).await.unwrap();
        assert!(n > 0, "connection closed before the response's head");
        got += n;
    }
    String::from_utf8_lossy(&buf[..got]).into_owned()
}

async fn status(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> u16 {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = request(addr, method, path, &format!("Connection: close\r\n{auth}")).await;
    head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap()
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
                // No provider here: its sign-in endpoints answer 404 or
                // 400, never refuse.
                (None, _) if path.starts_with("/api/v1/auth/oidc") => got != 401 && got != 403,
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

/// Whether `path` is an instance of the OpenAPI path template `template`.
fn instance_of(path: &str, template: &str) -> bool {
    let (p, t): (Vec<&str>, Vec<&str>) = (path.split('/').collect(), template.split('/').collect());
    p.len() == t.len()
        && p.iter()
            .zip(&t)
            .all(|(p, t)| p == t || (t.starts_with('{') && t.ends_with('}')))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_endpoint_with_its_role() {
    let (addr, cancel) = server().await;
    let body = get_body(addr, "/api/v1/openapi.json").await;
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut documented = Vec::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.push((
                method.to_uppercase(),
                template.clone(),
                op["x-role"].as_str(),
            ));
        }
    }
    // The page's own files are not API; the live feed and ingest check
    // their callers themselves (their own tests cover them).
    let page_files = ["/app.js", "/style.css"];
    let own_checks = ["/api/v1/live", "/api/v1/ingest"];
    for (method, path, role) in ENDPOINTS {
        if page_files.contains(path) {
            continue;
        }
        let found: Vec<_> = documented
            .iter()
            .filter(|(m, t, _)| m == method && instance_of(path, t))
            .collect();
        let [(_, template, documented_role)] = found[..] else {
            panic!("{method} {path} is documented {} times", found.len());
        };
        assert_eq!(
            *documented_role,
            role.map(Role::as_str),
            "{method} {path} ({template}): the document's role differs"
        );
    }
    for (method, template, _) in &documented {
        if own_checks.contains(&template.as_str()) {
            continue;
        }
        assert!(
            ENDPOINTS
                .iter()
                .any(|(m, p, _)| m == method && instance_of(p, template)),
            "{method} {template} is documented but not in the matrix"
        );
    }
    cancel.cancel();
}

/// The body of a GET with no token.
async fn get_body(addr: SocketAddr, path: &str) -> String {
    get_with(addr, path, "").await.1
}

/// A GET with extra `headers` that must succeed: its head and body.
async fn get_with(addr: SocketAddr, path: &str, headers: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    (head.to_owned(), body.to_owned())
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
    // In the shared error shape, like every error.
    assert!(
        text.contains(r#"{"error":{"code":"payload_too_large""#),
        "{text}"
    );
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_has_its_own_allowance() {
    let (addr, cancel) = server_with(RateLimit {
        per_second: 1,
        burst: 3,
    })
    .await;
    let viewer = Some("viewer-token-0123456789");
    for _ in 0..3 {
        assert_eq!(status(addr, "GET", "/api/v1/stats", viewer).await, 200);
    }
    let head = request(
        addr,
        "GET",
        "/api/v1/stats",
        "Connection: close\r\nAuthorization: Bearer viewer-token-0123456789\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    // Another caller is not held back.
    assert_eq!(status(addr, "GET", "/api/v1/stats", Some(ADMIN)).await, 200);
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_sites_pages_only_when_listed() {
    let (addr, cancel) = server().await;
    let upgrade = |origin: String| {
        format!(
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: {origin}\r\n"
        )
    };
    for (origin, expect) in [
        (format!("http://{addr}"), "HTTP/1.1 101"),
        (GRAFANA.to_string(), "HTTP/1.1 101"),
        ("https://evil.example".to_string(), "HTTP/1.1 403"),
    ] {
        let head = request(addr, "GET", "/api/v1/live", &upgrade(origin.clone())).await;
        assert!(head.starts_with(expect), "{origin}: {head}");
    }
    // CORS: the listed site's preflight is answered; another's is not.
    let preflight = |origin: &str| {
        format!(
            "Connection: close\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: GET\r\n\
             Access-Control-Request-Headers: authorization\r\n"
        )
    };
    let head = request(addr, "OPTIONS", "/api/v1/alerts", &preflight(GRAFANA)).await;
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains(&format!("access-control-allow-origin: {GRAFANA}")),
        "{head}"
    );
    let head = request(
        addr,
        "OPTIONS",
        "/api/v1/alerts",
        &preflight("https://evil.example"),
    )
    .await;
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{head}"
    );
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_is_audited_allowed_or_refused() {
    let (addr, cancel) = server().await;
    let desk = Some("operator-token-0123456789");
    let wall = Some("viewer-token-0123456789");
    status(addr, "POST", "/api/v1/alerts/a1/ack", desk).await;
    assert_eq!(
        status(addr, "POST", "/api/v1/alerts/a1/resolve", wall).await,
        403
    );
    assert_eq!(
        status(addr, "POST", "/api/v1/rules/reload", None).await,
        401
    );
    status(addr, "GET", "/api/v1/alerts", desk).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET /api/v1/audit HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {ADMIN}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    let body = text.split_once("\r\n\r\n").unwrap().1;
    let log: serde_json::Value = serde_json::from_str(body).unwrap();
    let seen: Vec<(String, String, String, u64, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().into(),
                e["role"].as_str().unwrap().into(),
                e["path"].as_str().unwrap().into(),
                e["status"].as_u64().unwrap(),
                e["source"].as_str().unwrap().into(),
            )
        })
        .collect();
    let local = "127.0.0.1".to_string();
    // Newest first; reads are not writes. Without a store the ack answers 503.
    assert_eq!(
        seen,
        [
            (
                "unauthenticated".into(),
                "".into(),
                "/api/v1/rules/reload".into(),
                401,
                local.clone()
            ),
            (
                "wall".into(),
                "viewer".into(),
                "/api/v1/alerts/a1/resolve".into(),
                403,
                local.clone()
            ),
            (
                "desk".into(),
                "operator".into(),
                "/api/v1/alerts/a1/ack".into(),
                503,
                local
            ),
        ]
    );
    cancel.cancel();
}

/// The status code of a response head.
fn code(head: &str) -> u16 {
    head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_slow_one_address_down_and_no_other() {
    let policy = Refusals {
        free: 5,
        ..Refusals::default()
    };
    let (addr, cancel) = server_full(RateLimit::default(), policy).await;
    let guesser: std::net::IpAddr = [127, 0, 0, 7].into();
    let other: std::net::IpAddr = [127, 0, 0, 8].into();
    let wrong = "Connection: close\r\nAuthorization: Bearer not-a-token-0123456789\r\n";
    let good = "Connection: close\r\nAuthorization: Bearer viewer-token-0123456789\r\n";
    let mut codes = Vec::new();
    let begun = std::time::Instant::now();
    for _ in 0..100 {
        let head = request_from(guesser, addr, "GET", "/api/v1/stats", wrong).await;
        if code(&head) == 429 {
            let retry = head
                .lines()
                .find_map(|l| l.strip_prefix("retry-after: "))
                .expect("a 429 says when to retry");
            assert!(retry.trim().parse::<u64>().unwrap() >= 1, "{head}");
        }
        codes.push(code(&head));
        // Another address is served at full speed meanwhile.
        let head = request_from(other, addr, "GET", "/api/v1/stats", good).await;
        assert_eq!(code(&head), 200, "{head}");
    }
    // Five refusals answered, the sixth starts the wait (1 s, doubling with
    // each refusal after it): a guess gets through at most once per wait.
    let elapsed = begun.elapsed().as_secs_f64();
    assert_eq!(codes[..6], [401; 6], "{codes:?}");
    let answered = codes[6..].iter().filter(|c| **c == 401).count();
    let most = (elapsed + 1.0).log2().floor() as usize + 1;
    assert!(
        answered <= most && codes[6..].iter().all(|c| *c == 401 || *c == 429),
        "{answered} guesses answered in {elapsed:.1} s (at most {most}): {codes:?}"
    );
    // While it waits, even a right token is not looked at.
    while code(&request_from(guesser, addr, "GET", "/api/v1/stats", wrong).await) != 401 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let head = request_from(guesser, addr, "GET", "/api/v1/stats", good).await;
    assert_eq!(code(&head), 429, "a right token does not skip the wait");
    // Nor does the live feed.
    let upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let head = request_from(guesser, addr, "GET", "/api/v1/live", upgrade).await;
    assert_eq!(code(&head), 429, "{head}");
    let head = request_from(other, addr, "GET", "/api/v1/live", upgrade).await;
    assert_eq!(code(&head), 101, "{head}");
    // The other address's own refusals count for it alone.
    let head = request_from(other, addr, "GET", "/api/v1/stats", wrong).await;
    assert_eq!(code(&head), 401);
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_browser_hardening_headers() {
    let (addr, cancel) = server().await;
    let mut paths: Vec<(&str, &str)> = ENDPOINTS.iter().map(|(m, p, _)| (*m, *p)).collect();
    paths.push(("GET", "/no/such/route"));
    for (method, path) in paths {
        let auth = format!("Connection: close\r\nAuthorization: Bearer {ADMIN}\r\n");
        let head = request(addr, method, path, &auth).await.to_lowercase();
        for expected in [
            "content-security-policy: default-src 'self'",
            "frame-ancestors 'none'",
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
            "x-frame-options: deny",
        ] {
            assert!(
                head.contains(expected),
                "{method} {path} lacks {expected:?}:\n{head}"
            );
        }
        assert!(!head.contains("unsafe-inline"), "{method} {path}:\n{head}");
    }
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_is_exported_as_json_lines() {
    let (addr, cancel) = server().await;
    let viewer = "Connection: close\r\nAuthorization: Bearer viewer-token-0123456789\r\n";
    assert_eq!(
        code(&request(addr, "POST", "/api/v1/rules/reload", viewer).await),
        403
    );
    let admin = format!("Authorization: Bearer {ADMIN}\r\n");
    let (head, body) = get_with(addr, "/api/v1/audit?format=ndjson", &admin).await;
    assert!(
        head.contains("content-type: application/x-ndjson"),
        "{head}"
    );
    let entries: Vec<serde_json::Value> = body
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        entries.iter().any(|e| e["actor"] == "wall"
            && e["status"] == 403
            && e["path"] == "/api/v1/rules/reload"),
        "{body}"
    );
    let bad = request(
        addr,
        "GET",
        "/api/v1/audit?format=xml",
        &format!("Connection: close\r\nAuthorization: Bearer {ADMIN}\r\n"),
    )
    .await;
    assert_eq!(code(&bad), 400, "{bad}");
    cancel.cancel();
}
