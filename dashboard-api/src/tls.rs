//! HTTPS: the listener that makes TLS connections of accepted TCP ones,
//! with a certificate read again when its files change (a renewal needs no
//! restart).
//!
//! Handshakes run in their own tasks (10 s at most each), so a client that
//! opens a connection and says nothing holds no one else back.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// `http.tls`: serve HTTPS (and the live feed as `wss://`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM: the certificate, then its chain.
    pub cert_file: PathBuf,
    /// PEM: its private key.
    pub key_file: PathBuf,
    /// How often the files are checked for a renewal.
    #[serde(default = "reload_check", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub reload_check: Duration,
    /// A plain-HTTP address that only redirects to HTTPS (e.g.
    /// `0.0.0.0:80`). Unset: none.
    #[serde(default)]
    pub redirect_listen: Option<SocketAddr>,
}

fn reload_check() -> Duration {
    Duration::from_secs(10)
}

impl TlsConfig {
    /// The files it names.
    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.cert_file.clone(),
            key: self.key_file.clone(),
        }
    }
}

/// Where the certificate and its key are.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM: the certificate, then its chain.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The server configuration these files make: TLS 1.2 and 1.3, HTTP/1.1.
    pub fn load(&self) -> Result<ServerConfig, String> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .and_then(Iterator::collect)
            .map_err(|e| format!("{}: {e}", self.cert.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate in it", self.cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("{}: {e}", self.key.display()))?;
        // ring: no post-quantum key exchange (hence deprecated in rustls),
        // but no cmake or C++ toolchain to build either, unlike aws-lc-rs.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("{} and {}: {e}", self.cert.display(), self.key.display()))?;
        // WebSockets upgrade over HTTP/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    fn modified(&self) -> Option<(SystemTime, SystemTime)> {
        let m = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
        Some((m(&self.cert)?, m(&self.key)?))
    }
}

/// Accepts TLS connections on a TCP listener.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Serves `files` on `listener`, reading them again every `check` when
    /// they changed (a bad new pair is logged and the old one kept), until
    /// `cancel` fires.
    pub fn new(
        listener: TcpListener,
        files: TlsFiles,
        check: Duration,
        cancel: CancellationToken,
    ) -> Result<TlsListener, String> {
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let current = Arc::new(RwLock::new(Arc::new(files.load()?)));
        tokio::spawn(watch(files, current.clone(), check, cancel.clone()));
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, addr) = tokio::select! {
                    () = cancel.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: wait a little.
                            warn!(error = %e, "cannot accept a connection");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                // Nagle's algorithm would hold small WebSocket frames back.
                let _ = tcp.set_nodelay(true);
                let config = current
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let handshake = TlsAcceptor::from(config).accept(tcp);
                    match tokio::time::timeout(Duration::from_secs(10), handshake).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => {
                            metrics::counter!("ioc_http_tls_handshake_failures_total").increment(1);
                            tracing::debug!(%addr, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            metrics::counter!("ioc_http_tls_handshake_failures_total").increment(1);
                        }
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The acceptor stopped (shutting down): wait for the end.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn watch(
    files: TlsFiles,
    current: Arc<RwLock<Arc<ServerConfig>>>,
    check: Duration,
    cancel: CancellationToken,
) {
    let mut seen = files.modified();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(check) => {}
        }
        let now = files.modified();
        if now == seen || now.is_none() {
            continue;
        }
        match files.load() {
            Ok(config) => {
                *current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
                seen = now;
                info!(cert = %files.cert.display(), "TLS certificate reloaded");
            }
            // Perhaps half written (the certificate renewed, the key not
            // yet): tried again at the next check.
            Err(e) => warn!(error = %e, "TLS certificate not reloaded; the current one stays"),
        }
    }
}

/// Serves, on `listener` until `cancel` fires, a redirect of every request
/// to the same path over HTTPS on port `https_port`.
pub async fn redirect(
    listener: TcpListener,
    https_port: u16,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    use axum::http::{HeaderMap, StatusCode, Uri, header};
    use axum::response::IntoResponse as _;
    let app = axum::Router::new().fallback(move |headers: HeaderMap, uri: Uri| async move {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<axum::http::uri::Authority>().ok());
        let Some(host) = host else {
            return (StatusCode::BAD_REQUEST, "a Host header is needed").into_response();
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let port = if https_port == 443 {
            String::new()
        } else {
            format!(":{https_port}")
        };
        let to = format!("https://{}{port}{path}", host.host());
        (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, to)]).into_response()
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}
