//! `GET /api/v1/live`: the WebSocket feed; the protocol is in [`crate::live`].

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;

use crate::AppState;

/// Upgrades the connection and serves the live protocol on it.
pub async fn live(State(app): State<AppState>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| {
        let tracker = app.tracker.clone();
        tracker.track_future(crate::live::serve(app.live.clone(), socket))
    })
}
