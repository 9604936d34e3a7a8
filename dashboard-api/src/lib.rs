//! The dashboard API: what control-room screens talk to.
//!
//! - [`hub`]: the live hub, fed by the engine's outputs ([`hub::run`]),
//!   holding every device's latest state and the open alerts, and
//!   broadcasting ordered deltas;
//! - [`routes`]: REST (`/api/v1/devices`, `/api/v1/alerts` with the
//!   operators' actions on one alert, `/api/v1/areas`, `/api/v1/zones`, `/api/v1/tracks`, `/healthz`, `/metrics`, the admin-only
//!   `POST /api/v1/rules/reload`), the WebSocket feed
//!   (`/api/v1/live`), HTTP ingest (`POST /api/v1/ingest`) and the embedded
//!   control-room page (`/`);
//! - [`error`]: the JSON error shape.
//!
//! [`serve`] runs the server until the cancellation token fires, then closes
//! every WebSocket (axum does not track upgraded connections, so the
//! [`AppState::tracker`] does) and stops accepting requests.

pub mod audit;
pub mod auth;
pub mod error;
pub mod history;
pub mod hub;
pub mod live;
pub mod oidc;
pub mod openapi;
pub mod routes;
pub mod syslog;
pub mod tls;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::serve::ListenerExt;
use ioc_ingest::http::HttpIngest;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use hub::LiveHub;

/// Renders a text document on demand (Prometheus metrics).
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;
/// Produces a JSON value on demand (counters).
pub type StatsFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;
/// Reloads the rules: a summary of the new rules, or every problem found
/// (the rules in force then stay). Blocking; called off the async threads.
pub type ReloadFn = Arc<dyn Fn() -> Result<serde_json::Value, Vec<String>> + Send + Sync>;

/// State shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// The live hub.
    pub hub: Arc<LiveHub>,
    /// The live sessions following the hub (make with [`live::Sessions::new`]).
    pub live: Arc<live::Sessions>,
    /// Fires when the server shuts down.
    pub cancel: CancellationToken,
    /// Tracks WebSocket tasks so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Prometheus text renderer, when a recorder is installed.
    pub metrics: Option<Render>,
    /// Counters for `/api/v1/stats`.
    pub stats: StatsFn,
    /// HTTP ingest, when enabled.
    pub ingest: Option<Arc<HttpIngest>>,
    /// Rules reload, when the engine has reloadable rules.
    pub rules_reload: Option<ReloadFn>,
    /// The rules file's text, applying a new one and backtests, when the
    /// engine has reloadable rules.
    pub rules_admin: Option<Arc<routes::rules::RulesAdmin>>,
    /// Who may do what.
    pub auth: Arc<auth::Auth>,
    /// The audit log, when there is no alert store to keep it.
    pub audit: Arc<audit::MemoryLog>,
    /// A syslog collector each audit entry goes to as well.
    pub syslog: Option<syslog::Syslog>,
    /// The alert store; without it alerts come from the hub's memory and
    /// operators' actions are unavailable.
    pub alerts: Option<Arc<ioc_alerts::AlertService>>,
    /// The device registry's administration, when it is kept in a store.
    pub registry: Option<Arc<routes::registry::RegistryAdmin>>,
}

impl AppState {
    /// The state of a server of the live hub alone: live sessions, no
    /// metrics, ingest, rules reload or alert store.
    pub fn new(hub: Arc<LiveHub>, cancel: CancellationToken, auth: auth::Auth) -> Self {
        AppState {
            live: live::Sessions::new(hub.clone(), cancel.clone()),
            hub,
            cancel,
            tracker: TaskTracker::new(),
            metrics: None,
            stats: Arc::new(|| serde_json::json!({})),
            ingest: None,
            rules_reload: None,
            rules_admin: None,
            auth: Arc::new(auth),
            audit: Arc::default(),
            syslog: None,
            alerts: None,
            registry: None,
        }
    }
}

/// The router with every route.
pub fn router(state: AppState) -> Router {
    // Disabled ingest still answers with its JSON 404, not a body-size 413.
    let max_body = state.ingest.as_ref().map_or_else(
        || ioc_ingest::http::HttpIngestConfig::default().max_body_bytes,
        |i| i.config().max_body_bytes,
    );
    let gate = |role| {
        axum::middleware::from_fn_with_state(
            auth::Gate {
                auth: state.auth.clone(),
                role,
            },
            auth::gate,
        )
    };
    // Open: the page (it asks for a token), health, the live feed (it
    // authenticates its first message) and ingest (device tokens).
    let open = Router::new()
        .route("/", get(routes::web::index))
        .route("/app.js", get(routes::web::script))
        .route("/style.css", get(routes::web::style))
        .route("/healthz", get(routes::rest::healthz))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .route("/api/v1/live", get(routes::live::live))
        .route("/api/v1/auth/oidc", get(routes::sso::config))
        .route("/api/v1/auth/oidc/token", post(routes::sso::token))
        .route(
            "/api/v1/ingest",
            post(routes::ingest::ingest).layer(DefaultBodyLimit::max(max_body)),
        );
    let viewer = Router::new()
        .route("/metrics", get(routes::rest::metrics))
        .route("/api/v1/devices", get(routes::rest::devices))
        .route("/api/v1/devices/{id}", get(routes::rest::device))
        .route("/api/v1/devices/{id}/history", get(routes::rest::history))
        .route("/api/v1/alerts", get(routes::alerts::list))
        .route("/api/v1/alerts.cap", get(routes::alerts::cap_feed))
        .route("/api/v1/alerts/{id}", get(routes::alerts::detail))
        .route("/api/v1/areas", get(routes::rest::areas))
        .route("/api/v1/zones", get(routes::rest::zones))
        .route("/api/v1/tracks", get(routes::rest::tracks))
        .route("/api/v1/stats", get(routes::rest::stats))
        .route("/api/v1/whoami", get(routes::rest::whoami))
        .route("/api/v1/registry/devices", get(routes::registry::list))
        .route(
            "/api/v1/registry/devices/{id}",
            get(routes::registry::detail),
        )
        .route("/api/v1/registry/export", get(routes::registry::export))
        .route(
            "/api/v1/registry/unregistered",
            get(routes::registry::unregistered),
        )
        .route_layer(gate(auth::Role::Viewer));
    let operator = Router::new()
        .route("/api/v1/alerts/{id}/{action}", post(routes::alerts::act))
        .route(
            "/api/v1/registry/devices/{id}/maintenance",
            post(routes::registry::maintenance).delete(routes::registry::end_maintenance),
        )
        .route_layer(gate(auth::Role::Operator));
    let admin = Router::new()
        .route(
            "/api/v1/webhooks/deliveries",
            get(routes::alerts::deliveries),
        )
        .route("/api/v1/rules/reload", post(routes::rest::reload_rules))
        .route(
            "/api/v1/rules/file",
            get(routes::rules::file).put(routes::rules::apply),
        )
        .route("/api/v1/backtest", post(routes::rules::backtest))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/registry/devices", post(routes::registry::create))
        .route(
            "/api/v1/registry/devices/{id}",
            put(routes::registry::update),
        )
        .route(
            "/api/v1/registry/devices/{id}/retire",
            post(routes::registry::retire),
        )
        .route(
            "/api/v1/registry/import",
            post(routes::registry::import)
                .layer(DefaultBodyLimit::max(routes::registry::MAX_IMPORT_BYTES)),
        )
        .route(
            "/api/v1/registry/unregistered/{id}/adopt",
            post(routes::registry::adopt),
        )
        .route("/api/v1/registry/changes", get(routes::registry::changes))
        .route_layer(gate(auth::Role::Admin));
    let origins: Vec<axum::http::HeaderValue> = state
        .auth
        .cors_origins()
        .iter()
        .filter_map(|o| o.parse().ok())
        .collect();
    let router = Router::new()
        .merge(open)
        .merge(viewer)
        .merge(operator)
        .merge(admin)
        // Requests other than ingest are small.
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::record,
        ))
        // axum's own errors (unknown route, body too large, bad query) in
        // the shared JSON shape.
        .layer(axum::middleware::map_response(error::uniform))
        .layer(axum::middleware::map_response(harden))
        .with_state(state);
    if origins.is_empty() {
        return router;
    }
    // Pages of the listed sites (a Grafana, a provincial portal) may call.
    router.layer(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
            ])
            .max_age(std::time::Duration::from_secs(3600)),
    )
}

/// What the page may load and do: its own scripts, styles and
/// connections only (no inline script or style, nothing from elsewhere),
/// and no other site may frame it (an operator's buttons cannot be
/// clicked through another page).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Browser hardening on every response, the API's and the page's.
async fn harden(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The largest request body but ingest's, bytes.
pub const MAX_REQUEST_BODY: usize = 64 << 10;

/// Serves until `state.cancel` fires (over HTTPS with `tls`); then closes
/// WebSockets and returns.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tls::TlsConfig>,
    state: AppState,
) -> std::io::Result<()> {
    let cancel = state.cancel.clone();
    let tracker = state.tracker.clone();
    let app = router(state);
    match tls {
        None => {
            // Nagle's algorithm would hold small WebSocket frames back ~40 ms.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            serve_on(listener, app, cancel).await?;
        }
        Some(config) => {
            let port = listener.local_addr()?.port();
            if let Some(addr) = config.redirect_listen {
                let plain = TcpListener::bind(addr).await?;
                tokio::spawn(tls::redirect(plain, port, cancel.clone()));
            }
            let listener = tls::TlsListener::new(
                listener,
                config.files(),
                config.reload_check,
                cancel.clone(),
            )
            .map_err(std::io::Error::other)?
            // The connection's address for the handlers (no other effect).
            .tap_io(|_| {});
            let app = app.layer(axum::middleware::map_response(hsts));
            serve_on(listener, app, cancel).await?;
        }
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

async fn serve_on<L>(listener: L, app: Router, cancel: CancellationToken) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    for<'a> std::net::SocketAddr:
        axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    // The client's address, for the audit log.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move { cancel.cancelled().await })
    .await
}

/// Over HTTPS, browsers are told to use nothing else for a year.
async fn hsts(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        axum::http::header::STRICT_TRANSPORT_SECURITY,
        axum::http::HeaderValue::from_static("max-age=31536000"),
    );
    response
}
