//! HTTPS: the page, the API and the live feed (`wss://`) over TLS with a
//! certificate made by the `openssl` command; TLS 1.1 refused; a renewed
//! certificate is served without a restart; the plain-HTTP port only
//! redirects.

#![allow(clippy::unwrap_used)]

mod support;

#[path = "../../tests/common/cert.rs"]
mod cert;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use ioc_dashboard_api::AppState;
use ioc_dashboard_api::auth::{Auth, AuthConfig};
use ioc_dashboard_api::hub::LiveHub;
use ioc_dashboard_api::tls::TlsConfig;
use ioc_devices::Registry;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "admin-token-0123456789";

/// A client that trusts only the certificate now in `dir`.
fn client(dir: &Path) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("cert.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    connector.connect(name, tcp).await
}

/// The response to a GET, whole.
async fn get<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    path: &str,
    host: &str,
) -> String {
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap_or_default();
    out
}

#[tokio::test]
async fn https_serves_the_api_and_the_live_feed_renews_its_certificate_and_redirects_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    cert::self_signed(dir.path(), "first");
    let redirect: SocketAddr = ([127, 0, 0, 1], support::free_port()).into();
    let tls = TlsConfig {
        cert_file: dir.path().join("cert.pem"),
        key_file: dir.path().join("key.pem"),
        reload_check: Duration::from_millis(100),
        redirect_listen: Some(redirect),
    };
    let cancel = CancellationToken::new();
    let hub = LiveHub::new(Registry::sonla_demo());
    let state = AppState::new(
        hub,
        cancel.clone(),
        Auth::new(&AuthConfig::default(), ADMIN).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ioc_dashboard_api::serve(listener, Some(tls), state));

    // The API over TLS, with HSTS beside the other hardening headers.
    let first = client(dir.path());
    let response = get(
        tls_connect(&first, addr).await.unwrap(),
        "/healthz",
        "127.0.0.1",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let lower = response.to_ascii_lowercase();
    assert!(
        lower.contains("strict-transport-security: max-age=31536000"),
        "{response}"
    );
    assert!(lower.contains("content-security-policy:"), "{response}");
    // TLS 1.1 is refused; the same client speaking TLS 1.2 is served.
    let s_client = move |version: &str| {
        std::process::Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string(), version])
            .args(["-cipher", "DEFAULT:@SECLEVEL=0"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    let (v11, v12) =
        tokio::task::spawn_blocking(move || (s_client("-tls1_1"), s_client("-tls1_2")))
            .await
            .unwrap();
    assert!(!v11, "a TLS 1.1 handshake succeeded");
    assert!(v12, "a TLS 1.2 handshake failed");
    // Plain HTTP on the TLS port gets nothing.
    let plain = get(
        tokio::net::TcpStream::connect(addr).await.unwrap(),
        "/healthz",
        "127.0.0.1",
    )
    .await;
    assert!(!plain.contains("200 OK"), "{plain}");

    // The live feed as wss://: subscribe with the admin token, get the snapshot.
    let stream = tls_connect(&first, addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://{addr}/api/v1/live"), stream)
        .await
        .unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        serde_json::json!({"type": "subscribe", "token": ADMIN})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a frame over wss")
        .unwrap()
        .unwrap();
    assert!(frame.to_text().unwrap().contains("snapshot"), "{frame}");

    // The plain port only redirects, to the same path over HTTPS.
    let moved = get(
        tokio::net::TcpStream::connect(redirect).await.unwrap(),
        "/api/v1/devices?kind=river_gauge",
        "127.0.0.1:8080",
    )
    .await;
    assert!(moved.starts_with("HTTP/1.1 308"), "{moved}");
    let location = format!(
        "location: https://127.0.0.1:{}/api/v1/devices?kind=river_gauge",
        addr.port()
    );
    assert!(moved.to_ascii_lowercase().contains(&location), "{moved}");

    // A renewed certificate is served to new connections without a restart.
    cert::self_signed(dir.path(), "second");
    let second = client(dir.path());
    let mut renewed = false;
    for _ in 0..50 {
        if tls_connect(&second, addr).await.is_ok() {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(renewed, "the renewed certificate was not served within 5 s");
    assert!(
        tls_connect(&first, addr).await.is_err(),
        "the first certificate is still served"
    );
    cancel.cancel();
}
