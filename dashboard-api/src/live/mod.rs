//! The live protocol of `GET /api/v1/live` (documented for clients in
//! `docs/live-protocol.md`).
//!
//! Each client has a [`Session`]: its filter, what changed for it since its
//! last message, its own sequence numbers. A task per session follows the
//! hub's updates and sorts what passes the filter into the session's pending
//! sets (device states conflated to the latest, alerts kept in order on
//! their own lane); the connection's task sends whatever is pending as one
//! message whenever the socket can take it, so a slow client gets fewer,
//! larger messages rather than a growing queue. A client that cannot keep
//! up at all (too many alerts waiting, or its session lagging the hub) gets
//! a snapshot instead. A session outlives its connection for
//! [`SESSION_KEEP`]: a client that reconnects naming its session and the
//! last `seq` it saw gets the messages it missed, or a snapshot when they
//! are no longer kept.

pub mod filter;
pub mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use futures_util::{SinkExt, StreamExt};
use ioc_schemas::{LiveMessage, LiveRequest, SnapshotReason};
use rand::Rng as _;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::debug;

pub use filter::Filter;
pub use session::Session;

use crate::auth::{Auth, AuthError, Caller};
use crate::hub::LiveHub;

/// How long a session waits for its client to come back.
pub const SESSION_KEEP: Duration = Duration::from_secs(60);
/// How long a new connection may take to send its `subscribe`.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(10);
/// How often the server pings; a client silent for three of these is gone.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How long one message may take to leave before the client is dropped
/// (its session stays, for a resume).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest message a client may send.
pub const MAX_REQUEST_BYTES: usize = 64 << 10;

/// Every live session, by id.
#[derive(Debug)]
pub struct Sessions {
    hub: Arc<LiveHub>,
    cancel: CancellationToken,
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    /// No sessions yet; sessions end when `cancel` fires.
    pub fn new(hub: Arc<LiveHub>, cancel: CancellationToken) -> Arc<Self> {
        Arc::new(Sessions {
            hub,
            cancel,
            map: Mutex::new(HashMap::new()),
        })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The session named `id`, while it is kept.
    pub fn find(&self, id: &str) -> Option<Arc<Session>> {
        self.map().get(id).cloned()
    }

    /// How many sessions are kept (attached or waiting for their client).
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A new session for `filter`, following the hub from now on.
    pub fn open(self: &Arc<Self>, filter: Filter, reason: SnapshotReason) -> Arc<Session> {
        let id = format!("{:032x}", rand::rng().random::<u128>());
        let session = Arc::new(Session::new(id.clone(), filter, reason));
        // Subscribed before the first snapshot is taken: no update falls
        // between the two.
        let rx = self.hub.updates();
        self.map().insert(id, session.clone());
        metrics::gauge!("ioc_live_sessions").set(self.len() as f64);
        tokio::spawn(follow(self.clone(), session.clone(), rx));
        session
    }
}

/// Sorts the hub's updates into the session until it expires or the
/// server stops.
async fn follow(
    sessions: Arc<Sessions>,
    session: Arc<Session>,
    mut rx: tokio::sync::broadcast::Receiver<Arc<crate::hub::Update>>,
) {
    let mut check = tokio::time::interval(SESSION_KEEP / 6);
    loop {
        tokio::select! {
            () = sessions.cancel.cancelled() => break,
            update = rx.recv() => match update {
                Ok(update) => {
                    if session.merge(&update) {
                        session.notify.notify_one();
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    debug!(missed, session = session.id(), "live session fell behind the hub; resynchronising");
                    session.resync(SnapshotReason::Resync);
                }
                Err(RecvError::Closed) => break,
            },
            _ = check.tick() => {
                if session.expired(SESSION_KEEP) {
                    break;
                }
            }
        }
    }
    sessions.map().remove(session.id());
    metrics::gauge!("ioc_live_sessions").set(sessions.len() as f64);
}

fn error(code: &str, message: impl Into<String>) -> Message {
    let message = LiveMessage::Error {
        code: code.into(),
        message: message.into(),
    };
    Message::Text(serde_json::to_string(&message).unwrap_or_default().into())
}

/// A close frame with code 1008 (policy violation).
fn close(reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code: close_code::POLICY,
        reason: reason.into(),
    }))
}

/// Refuses a connection's first message: an `error`, then a close.
async fn refuse(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    code: &str,
    message: impl Into<String>,
    reason: &'static str,
) {
    let _ = sink.send(error(code, message)).await;
    let _ = sink.send(close(reason)).await;
}

fn parse(text: &str) -> Result<LiveRequest, String> {
    if text.len() > MAX_REQUEST_BYTES {
        return Err(format!(
            "a request may have at most {MAX_REQUEST_BYTES} bytes"
        ));
    }
    serde_json::from_str(text).map_err(|e| format!("not a valid request: {e}"))
}

/// Serves one WebSocket connection until the client leaves, is dropped or
/// the server stops.
pub async fn serve(
    sessions: Arc<Sessions>,
    auth: Arc<Auth>,
    header: Option<Result<Caller, AuthError>>,
    address: Option<std::net::IpAddr>,
    socket: WebSocket,
) {
    metrics::gauge!("ioc_ws_clients").increment(1.0);
    connection(&sessions, &auth, header, address, socket).await;
    metrics::gauge!("ioc_ws_clients").decrement(1.0);
}

async fn connection(
    sessions: &Arc<Sessions>,
    auth: &Auth,
    header: Option<Result<Caller, AuthError>>,
    address: Option<std::net::IpAddr>,
    socket: WebSocket,
) {
    let hub = sessions.hub.clone();
    let cancel = sessions.cancel.clone();
    let (mut sink, mut stream) = socket.split();
    // The first message must be a subscribe.
    let first = tokio::select! {
        () = cancel.cancelled() => return,
        first = tokio::time::timeout(SUBSCRIBE_WAIT, next_text(&mut stream)) => first,
    };
    let text = match first {
        Ok(Some(text)) => text,
        Ok(None) => return,
        Err(_) => {
            let first = "expected a subscribe message first";
            return refuse(&mut sink, "bad_request", first, "no subscribe").await;
        }
    };
    let (filter, resume) = match parse(&text) {
        Ok(LiveRequest::Subscribe {
            filter,
            resume,
            token,
        }) => {
            // The header's token, else the message's; every role may watch.
            let caller = match header {
                Some(from_header) => from_header,
                None => auth.verify_fresh(token.as_deref()).await,
            };
            if let Err(e) = caller {
                auth.record_refusal(address, e.reason(), "/api/v1/live", None);
                return refuse(&mut sink, "unauthorized", e.message(), "unauthorized").await;
            }
            match Filter::new(filter, &hub.registry()) {
                Ok(filter) => (filter, resume),
                Err(e) => return refuse(&mut sink, "bad_request", e, "bad filter").await,
            }
        }
        Err(e) => return refuse(&mut sink, "bad_request", e, "bad request").await,
    };
    // Resume the named session, when it is kept and has the filter asked for.
    let mut replay = Vec::new();
    let session = match resume {
        Some(resume) => match sessions.find(&resume.session) {
            Some(session) if session.filter().spec() == filter.spec() => {
                match session.replay_after(resume.seq) {
                    Some(missed) => {
                        metrics::counter!("ioc_ws_resumes_total", "result" => "replayed")
                            .increment(1);
                        replay = missed;
                    }
                    None => {
                        metrics::counter!("ioc_ws_resumes_total", "result" => "too_old")
                            .increment(1);
                        session.resync(SnapshotReason::ResumeUnavailable);
                    }
                }
                session
            }
            Some(session) => {
                metrics::counter!("ioc_ws_resumes_total", "result" => "filter_changed")
                    .increment(1);
                session.set_filter(filter);
                session
            }
            None => {
                metrics::counter!("ioc_ws_resumes_total", "result" => "unavailable").increment(1);
                sessions.open(filter, SnapshotReason::ResumeUnavailable)
            }
        },
        None => sessions.open(filter, SnapshotReason::Subscribe),
    };
    let conn = session.attach();
    let mut replayed = true;
    for frame in replay {
        if !send(&mut sink, frame).await {
            replayed = false;
            break;
        }
    }
    if replayed {
        follow_session(&session, conn, &hub, &cancel, &mut sink, &mut stream).await;
    }
    session.detach(conn);
}

/// Sends the session's messages and takes the client's until either side
/// stops.
async fn follow_session(
    session: &Session,
    conn: u64,
    hub: &LiveHub,
    cancel: &CancellationToken,
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
) {
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            () = cancel.cancelled() => {
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code: close_code::AWAY,
                        reason: "server shutting down".into(),
                    })))
                    .await;
                break;
            }
            () = ready(session) => {
                if !session.is_attached(conn) {
                    // A newer connection resumed this session.
                    let _ = sink.send(close("session resumed elsewhere")).await;
                    break;
                }
                let Some(frame) = session.next_message(hub) else { continue };
                let sent = tokio::select! {
                    sent = send(sink, frame) => sent,
                    () = cancel.cancelled() => false,
                };
                if !sent {
                    break;
                }
            }
            incoming = stream.next() => {
                last_heard = Instant::now();
                match incoming {
                    Some(Ok(Message::Text(text))) => match parse(&text) {
                        Ok(LiveRequest::Subscribe { filter, .. }) => {
                            match Filter::new(filter, &hub.registry()) {
                                Ok(filter) => session.set_filter(filter),
                                Err(e) => {
                                    if sink.send(error("bad_request", e)).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            if sink.send(error("bad_request", e)).await.is_err() {
                                break;
                            }
                        }
                    },
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > 3 * HEARTBEAT {
                    debug!(session = session.id(), "live client silent; dropping the connection");
                    break;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Returns when a message is due for the session (or registry entries
/// waiting for their pace may be).
async fn ready(session: &Session) {
    match session.due() {
        (true, _) => {}
        (false, None) => session.notify.notified().await,
        (false, Some(wait)) => {
            tokio::select! {
                () = session.notify.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Sends one message; false when the client is gone or took longer than
/// [`SEND_TIMEOUT`].
async fn send(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    frame: Utf8Bytes,
) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Text(frame))).await,
        Ok(Ok(()))
    )
}

/// The next text message, skipping pings and pongs; `None` when the client
/// left.
async fn next_text(stream: &mut futures_util::stream::SplitStream<WebSocket>) -> Option<Utf8Bytes> {
    loop {
        match stream.next().await? {
            Ok(Message::Text(text)) => return Some(text),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}
