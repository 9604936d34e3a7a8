//! `GET /api/v1/live`: the WebSocket feed.
//!
//! The server sends a `snapshot`, then every `delta` in sequence order. A
//! client that falls more than the hub's buffer behind gets a fresh
//! `snapshot` instead of the deltas it missed (counted as
//! `ioc_ws_resyncs_total`). The server pings every 15 s and closes every
//! socket with code 1001 when it shuts down.

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use tokio::sync::broadcast::error::RecvError;
use tracing::debug;

use crate::AppState;

const HEARTBEAT: Duration = Duration::from_secs(15);

/// Upgrades the connection and follows the hub.
pub async fn live(State(app): State<AppState>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| {
        let tracker = app.tracker.clone();
        tracker.track_future(follow(app, socket))
    })
}

async fn follow(app: AppState, mut socket: WebSocket) {
    let (snapshot, mut rx) = app.hub.subscribe();
    metrics::gauge!("ioc_ws_clients").increment(1.0);
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    let mut next: Option<crate::hub::Frame> = Some(snapshot);
    loop {
        if let Some(frame) = next.take()
            && socket
                .send(Message::Text(frame.as_ref().into()))
                .await
                .is_err()
        {
            break;
        }
        tokio::select! {
            () = app.cancel.cancelled() => {
                let _ = socket
                    .send(Message::Close(Some(CloseFrame { code: close_code::AWAY, reason: "server shutting down".into() })))
                    .await;
                break;
            }
            frame = rx.recv() => match frame {
                Ok(f) => next = Some(f),
                Err(RecvError::Lagged(missed)) => {
                    debug!(missed, "live client fell behind; resynchronising with a snapshot");
                    metrics::counter!("ioc_ws_resyncs_total").increment(1);
                    let (snapshot, fresh) = app.hub.subscribe();
                    rx = fresh;
                    next = Some(snapshot);
                }
                Err(RecvError::Closed) => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = heartbeat.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    metrics::gauge!("ioc_ws_clients").decrement(1.0);
}
