//! The audit log: every write through the API (operators' actions, reloads),
//! allowed or refused, with who, what, when, from where and the answer.
//! Kept in the alert store's database when there is one (the `audit_log`
//! table), else the last [`MEMORY_KEPT`] in memory; `GET /api/v1/audit`
//! (admin) reads it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;

use axum::Json;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use ioc_alerts::AuditEntry;
use ioc_schemas::Timestamp;
use serde::Deserialize;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// How many entries are kept without a database.
pub const MEMORY_KEPT: usize = 10_000;

/// Entries kept in memory when there is no alert store.
#[derive(Debug, Default)]
pub struct MemoryLog(Mutex<VecDeque<AuditEntry>>);

impl MemoryLog {
    fn push(&self, entry: AuditEntry) {
        let mut log = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if log.len() == MEMORY_KEPT {
            log.pop_front();
        }
        log.push_back(entry);
    }

    fn latest(&self, before: Option<Timestamp>, limit: usize) -> Vec<AuditEntry> {
        let log = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        log.iter()
            .rev()
            .filter(|e| before.is_none_or(|b| e.at < b))
            .take(limit.clamp(1, 1000))
            .cloned()
            .collect()
    }
}

/// Whether a request is a write the log records: any method but the
/// reading ones, except telemetry (ingest has its own counters and dead
/// letters).
fn is_write(method: &Method, path: &str) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) && path != "/api/v1/ingest"
}

/// Records every write after it is answered (outermost layer: refusals by
/// the gates are recorded too; the gate hands the caller over in the
/// response's extensions).
pub async fn record(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| request.uri().path().to_string(), |p| p.to_string());
    if !is_write(&method, request.uri().path()) {
        return next.run(request).await;
    }
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string());
    let response = next.run(request).await;
    let caller = response.extensions().get::<Caller>();
    let entry = AuditEntry {
        at: Timestamp::now(),
        actor: caller.map_or_else(|| "unauthenticated".into(), |c| c.name.clone()),
        role: caller.map_or_else(String::new, |c| c.role.as_str().into()),
        method: method.to_string(),
        path,
        source,
        status: response.status().as_u16(),
    };
    metrics::counter!("ioc_audit_entries_total").increment(1);
    if let Some(syslog) = &app.syslog {
        syslog.send(&entry);
    }
    match &app.alerts {
        Some(service) => {
            if let Err(e) = service.record_audit(&entry).await {
                // The write happened; losing its record is loud, not fatal.
                tracing::error!(error = %e, ?entry, "cannot record a write in the audit log");
                metrics::counter!("ioc_audit_failures_total").increment(1);
            }
        }
        None => app.audit.push(entry),
    }
    response
}

/// Query of `GET /api/v1/audit`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries before this time (ms since the epoch, or RFC 3339): the next page.
    before: Option<Timestamp>,
    /// At most this many, 1 to 1000 (default 100).
    limit: Option<usize>,
    /// `json` (the default: one array) or `ndjson` (one entry per line,
    /// for a security operations centre's collector).
    format: Option<String>,
}

/// `GET /api/v1/audit` (admin): the latest writes, newest first; as JSON
/// lines with `format=ndjson`.
pub async fn list(
    State(app): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    use axum::response::IntoResponse as _;
    let ndjson = match q.format.as_deref() {
        None | Some("json") => false,
        Some("ndjson") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format {other:?}: json or ndjson"
            )));
        }
    };
    let limit = q.limit.unwrap_or(100);
    let entries = match &app.alerts {
        Some(service) => service
            .audit(q.before, limit)
            .await
            .map_err(|e| ApiError::Unavailable(format!("audit log: {e}")))?,
        None => app.audit.latest(q.before, limit),
    };
    if !ndjson {
        return Ok(Json(entries).into_response());
    }
    let mut body = Vec::new();
    for e in &entries {
        serde_json::to_writer(&mut body, e).map_err(|e| ApiError::Unavailable(e.to_string()))?;
        body.push(b'\n');
    }
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        body,
    )
        .into_response())
}
