//! `GET /api/v1/live`: the WebSocket feed; the protocol is in [`crate::live`].

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// Upgrades the connection and serves the live protocol on it.
pub async fn live(
    State(app): State<AppState>,
    connected: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // An address refused too often waits here too.
    let address = connected.map(|c| c.0.0.ip());
    if let Some(response) = app.auth.still_waiting(address) {
        return response;
    }
    // A browser page of another site may not open the feed (cross-site
    // WebSocket hijacking) unless its origin is listed.
    if let Some(origin) = headers.get(axum::http::header::ORIGIN) {
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok());
        let allowed = origin
            .to_str()
            .is_ok_and(|o| app.auth.origin_allowed(o, host));
        if !allowed {
            metrics::counter!("ioc_ws_refused_total", "reason" => "origin").increment(1);
            return crate::error::ApiError::Forbidden(format!(
                "pages of {origin:?} may not open the live feed (http.auth.cors_origins)"
            ))
            .into_response();
        }
    }
    // A token in the header is checked with the first message, so that a
    // refusal is a live `error` message like any other.
    let header = app.auth.caller(&headers).await;
    let has_header = headers.contains_key(axum::http::header::AUTHORIZATION);
    // Clients send only small requests. The read buffer is zeroed up to its
    // size on every read attempt, so its default (128 KiB) cost more CPU
    // than everything else a connection does.
    ws.read_buffer_size(4 << 10)
        .max_message_size(crate::live::MAX_REQUEST_BYTES)
        .max_frame_size(crate::live::MAX_REQUEST_BYTES)
        .on_upgrade(move |socket| {
            let tracker = app.tracker.clone();
            let header = has_header.then_some(header);
            tracker.track_future(crate::live::serve(
                app.live.clone(),
                app.auth.clone(),
                header,
                address,
                socket,
            ))
        })
}
