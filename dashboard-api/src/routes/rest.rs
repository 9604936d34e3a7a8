//! REST endpoints: devices, alerts, areas, health, stats, metrics.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use ioc_schemas::{DeviceKind, DeviceView, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::history::HistoryView;

/// The answer of `GET /healthz`.
#[derive(Serialize, schemars::JsonSchema)]
pub struct Health {
    /// Always `ok`: the process is up and serving.
    pub status: &'static str,
    /// Devices in the registry.
    pub devices: usize,
    /// Live sessions (connected, or kept for a resume).
    pub live_sessions: usize,
}

/// `GET /healthz`: the process is up and serving.
pub async fn healthz(State(app): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        devices: app.hub.registry().devices().len(),
        live_sessions: app.live.len(),
    })
}

/// Filter for `GET /api/v1/devices`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct DeviceQuery {
    /// Only devices of this kind (`river_gauge`, `rain_gauge`, `reservoir`,
    /// `traffic_counter`, `camera`).
    kind: Option<String>,
}

/// `GET /api/v1/devices[?kind=river_gauge]`: every device with its latest state.
pub async fn devices(
    State(app): State<AppState>,
    Query(q): Query<DeviceQuery>,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    let kind = match q.kind.as_deref() {
        None => None,
        Some(k) => Some(
            DeviceKind::parse(k)
                .ok_or_else(|| ApiError::BadRequest(format!("unknown device kind {k:?}")))?,
        ),
    };
    let mut list = app.hub.devices();
    if let Some(kind) = kind {
        list.retain(|d| d.info.kind == kind);
    }
    Ok(Json(list))
}

/// `GET /api/v1/devices/{id}`.
pub async fn device(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    app.hub
        .device(&id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no device {id:?}")))
}

/// Query of `GET /api/v1/devices/{id}/history`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// From this time (RFC 3339 or ms since the epoch); default: as far back
    /// as memory holds.
    pub from: Option<Timestamp>,
    /// Up to this time, excluded (RFC 3339 or ms since the epoch); default:
    /// the latest reading.
    pub to: Option<Timestamp>,
    /// Width of a row (`1m`, `15m`, `1h`…), rounded up to a multiple of
    /// `http.history.step`; default: that step.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub step: Option<std::time::Duration>,
}

/// `GET /api/v1/devices/{id}/history[?from=&to=&step=]`: recent readings
/// from memory, one row per step, for charts.
pub async fn history(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<HistoryView>, ApiError> {
    let from = q.from.map_or(i64::MIN, Timestamp::millis);
    let to = q.to.map_or(i64::MAX, Timestamp::millis);
    if from >= to {
        return Err(ApiError::BadRequest("from: must be before to".into()));
    }
    app.hub
        .history(&id, from, to, q.step)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no device {id:?}")))
}

/// `GET /api/v1/areas`: administrative boundaries as GeoJSON, for the map.
pub async fn areas(State(app): State<AppState>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/geo+json"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        app.hub.registry().areas().geojson().to_owned(),
    )
}

/// `GET /api/v1/zones`: the zones and assets in force as one GeoJSON
/// FeatureCollection, for the map (reloaded with the rules).
pub async fn zones(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/geo+json")],
        app.hub.zones().geojson().to_string(),
    )
}

/// `GET /api/v1/tracks`: recent tracks of watch-listed plates, most
/// recently seen first.
pub async fn tracks(State(app): State<AppState>) -> Json<Vec<ioc_schemas::Track>> {
    Json(app.hub.tracks())
}

/// `GET /api/v1/stats`: ingest and engine counters.
pub async fn stats(State(app): State<AppState>) -> Json<Value> {
    Json((app.stats)())
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics
            .as_ref()
            .map(|render| render())
            .unwrap_or_default(),
    )
}

/// The answer of `GET /api/v1/whoami`.
#[derive(Serialize, schemars::JsonSchema)]
pub struct WhoAmI {
    /// The token's name, or the JWT's subject.
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: &'static str,
}

/// `GET /api/v1/whoami`: the caller's name and role, for the page.
pub async fn whoami(Extension(caller): Extension<Caller>) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: caller.name,
        role: caller.role.as_str(),
    })
}

/// `POST /api/v1/rules/reload` (admin): reads the rules file again and puts
/// it in force without losing state; 422 with every problem when it is
/// invalid (the rules in force stay).
pub async fn reload_rules(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let reload = app
        .rules_reload
        .clone()
        .ok_or_else(|| ApiError::NotFound("this server has no reloadable rules".into()))?;
    match tokio::task::spawn_blocking(move || reload()).await {
        Ok(Ok(summary)) => Ok(Json(summary)),
        Ok(Err(problems)) => Err(ApiError::Invalid(
            "the rules file is invalid; the rules in force stay".into(),
            problems,
        )),
        Err(e) => Err(ApiError::Unavailable(format!("reload failed: {e}"))),
    }
}
