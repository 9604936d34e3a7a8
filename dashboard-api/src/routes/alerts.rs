//! Alerts: listing with filters and paging, one alert with its history,
//! and operators' actions (acknowledge, resolve, assign, notes).
//!
//! Every action is committed to the alert store before the response: a
//! success means it survives a crash. The new version also goes to every
//! live client.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use ioc_alerts::{ActError, AlertFilter, AlertService, Operation, Refusal};
use ioc_schemas::{Alert, AlertDetail, AlertStatus, Severity, Timestamp};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;

/// Query of `GET /api/v1/alerts`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, schemars::JsonSchema)]
pub struct ListQuery {
    /// `active` (default: open and acknowledged), `all`, or a comma-separated
    /// list of `open`, `acknowledged`, `resolved`.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    /// Minimum severity: `minor`, `moderate`, `severe`, `extreme`.
    #[serde(skip_serializing_if = "Option::is_none")]
    severity: Option<String>,
    /// Rule id.
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    /// Device or zone id.
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    /// Administrative area id (any level).
    #[serde(skip_serializing_if = "Option::is_none")]
    area: Option<String>,
    /// Episodes opened at or after (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    /// Episodes opened before (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<usize>,
    /// The cursor of the next page (from the `Link` header).
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<String>,
}

fn service(app: &AppState) -> Result<&AlertService, ApiError> {
    app.alerts
        .as_deref()
        .ok_or_else(|| ApiError::Unavailable("no alert store is configured".into()))
}

fn store_error(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "alert store request failed");
    ApiError::Unavailable(format!("alert store: {e}"))
}

fn parse_filter(q: &ListQuery) -> Result<AlertFilter, ApiError> {
    let mut problems = Vec::new();
    let status = match q.status.as_deref().unwrap_or("active") {
        "active" => vec![AlertStatus::Open, AlertStatus::Acknowledged],
        "all" => Vec::new(),
        list => list
            .split(',')
            .filter_map(|s| {
                let parsed = AlertStatus::parse(s.trim());
                if parsed.is_none() {
                    problems.push(format!(
                        "status {s:?}: expected active, all, open, acknowledged or resolved"
                    ));
                }
                parsed
            })
            .collect(),
    };
    let min_severity = q.severity.as_deref().and_then(|s| {
        let parsed = Severity::parse(s);
        if parsed.is_none() {
            problems.push(format!(
                "severity {s:?}: expected minor, moderate, severe or extreme"
            ));
        }
        parsed
    });
    let mut time = |name: &str, v: &Option<String>| {
        v.as_deref().and_then(|t| {
            let parsed = Timestamp::parse_rfc3339(t);
            if parsed.is_none() {
                problems.push(format!("{name} {t:?}: expected an RFC 3339 time"));
            }
            parsed
        })
    };
    let (from, to) = (time("from", &q.from), time("to", &q.to));
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        problems.push(format!("limit {limit}: expected 1 to 1000"));
    }
    if !problems.is_empty() {
        return Err(ApiError::BadRequest(problems.join("; ")));
    }
    Ok(AlertFilter {
        status,
        min_severity,
        rule: q.rule.clone(),
        subject: q.subject.clone(),
        area: q.area.clone(),
        from,
        to,
        limit,
        after: q.after.clone(),
    })
}

/// `GET /api/v1/alerts`: alerts matching the filters, newest episode
/// first. When there are more, the `Link` header (`rel="next"`) gives the
/// next page.
pub async fn list(
    State(app): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let filter = parse_filter(&q)?;
    let Some(service) = app.alerts.as_deref() else {
        // Without a store: what the hub holds in memory.
        let mut v = app.hub.open_alerts();
        v.extend(app.hub.resolved_alerts());
        v.retain(|a| filter.status.is_empty() || filter.status.contains(&a.status));
        return Ok((HeaderMap::new(), Json(v)));
    };
    let page = service.list(&filter).await.map_err(store_error)?;
    let mut headers = HeaderMap::new();
    if let Some(next) = page.next {
        // The same query, continued after the last alert of this page.
        let mut more = q.clone();
        more.limit = Some(filter.limit);
        more.after = Some(next);
        let link = serde_urlencoded::to_string(&more)
            .map(|qs| format!("</api/v1/alerts?{qs}>; rel=\"next\""))
            .ok()
            .and_then(|l| HeaderValue::from_str(&l).ok());
        if let Some(v) = link {
            headers.insert(header::LINK, v);
        }
    }
    Ok((headers, Json(page.alerts)))
}

/// `GET /api/v1/alerts/{id}`: the alert and its whole history;
/// `GET /api/v1/alerts/{id}.cap`: its current version as a CAP 1.2 message.
pub async fn detail(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    let service = service(&app)?;
    let (id, cap) = match id.strip_suffix(".cap") {
        Some(id) => (id.to_owned(), true),
        None => (id, false),
    };
    let detail: AlertDetail = service
        .get(&id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::NotFound(format!("no alert {id:?}")))?;
    if cap {
        let xml = ioc_alerts::channels::cap::message(&detail.alert, service.cap_sender());
        Ok((
            [(header::CONTENT_TYPE, "application/cap+xml; charset=utf-8")],
            xml,
        )
            .into_response())
    } else {
        Ok(Json(detail).into_response())
    }
}

/// `GET /api/v1/alerts.cap`: the active alerts as an Atom feed of CAP 1.2
/// messages, newest episode first.
pub async fn cap_feed(State(app): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let service = service(&app)?;
    let filter = AlertFilter {
        status: vec![AlertStatus::Open, AlertStatus::Acknowledged],
        limit: 1000,
        ..AlertFilter::default()
    };
    let page = service.list(&filter).await.map_err(store_error)?;
    let xml =
        ioc_alerts::channels::cap::feed(&page.alerts, service.cap_sender(), "/api/v1/alerts.cap");
    Ok((
        [(header::CONTENT_TYPE, "application/atom+xml; charset=utf-8")],
        xml,
    ))
}

/// Body of the operators' actions.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Who acts, when the token is shared (a duty desk's): recorded as
    /// `by (token name)`. Absent: the token's name.
    #[serde(default)]
    by: Option<String>,
    /// The note (`/notes`).
    #[serde(default)]
    note: Option<String>,
    /// Whom to assign to (`/assign`); absent or empty: nobody.
    #[serde(default)]
    assignee: Option<String>,
}

/// `POST /api/v1/alerts/{id}/{action}` (operator), optionally with
/// `{"by": "…"}`:
/// - `ack`: acknowledge an open alert (again: no change; resolved: 409);
/// - `resolve`: resolve by hand;
/// - `assign` (`"assignee": "…"`, absent or empty for nobody);
/// - `notes` (`"note": "…"`, 1 to 2000 characters).
pub async fn act(
    State(app): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    Path((id, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Alert>, ApiError> {
    let op = |b: &ActionBody| match action.as_str() {
        "ack" => Ok(Operation::Acknowledge),
        "resolve" => Ok(Operation::Resolve),
        "assign" => Ok(Operation::Assign(b.assignee.clone())),
        "notes" => b
            .note
            .clone()
            .map(Operation::Note)
            .ok_or_else(|| ApiError::BadRequest("`note` is required".into())),
        other => Err(ApiError::NotFound(format!(
            "no action {other:?}: expected ack, resolve, assign or notes"
        ))),
    };
    // JSON whatever the Content-Type says: operators type these with curl.
    let body: ActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActionBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!(
                "body: {e}; expected {{\"by\": \"…\", \"note\": \"…\", \"assignee\": \"…\"}} or nothing"
            ))
        })?
    };
    let op = op(&body)?;
    // The token's holder acts; a `by` in the body names who, for shared
    // tokens (a duty desk's), and is recorded with the token's name.
    let by = match body.by.as_deref().map(str::trim) {
        Some(by) if !by.is_empty() && by != caller.name => format!("{by} ({})", caller.name),
        _ => caller.name.clone(),
    };
    match service(&app)?.act(&id, &op, &by).await {
        Ok(alert) => Ok(Json(alert)),
        Err(ActError::NotFound(_)) => Err(ApiError::NotFound(format!("no alert {id:?}"))),
        Err(ActError::Refused(Refusal::Resolved)) => Err(ApiError::Conflict(
            crate::error::ErrorCode::AlertResolved,
            format!("alert {id:?} is resolved"),
        )),
        Err(ActError::Refused(Refusal::Invalid(m))) => Err(ApiError::Invalid(m.clone(), vec![m])),
        Err(ActError::Store(e)) => Err(store_error(e)),
    }
}

/// Query of `GET /api/v1/webhooks/deliveries`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct DeliveryQuery {
    /// `pending`, `delivered` or `dead` (default `dead`).
    state: Option<String>,
    /// At most this many, 1 to 1000 (default 100).
    limit: Option<usize>,
}

/// `GET /api/v1/webhooks/deliveries[?state=dead|pending|delivered]`: webhook
/// deliveries, newest first, with attempts and the last error.
pub async fn deliveries(
    State(app): State<AppState>,
    Query(q): Query<DeliveryQuery>,
) -> Result<Json<Vec<ioc_alerts::Delivery>>, ApiError> {
    let state = q.state.as_deref().unwrap_or("dead");
    if !["pending", "delivered", "dead"].contains(&state) {
        return Err(ApiError::BadRequest(format!(
            "state {state:?}: expected pending, delivered or dead"
        )));
    }
    let list = service(&app)?
        .deliveries(state, q.limit.unwrap_or(100))
        .await
        .map_err(store_error)?;
    Ok(Json(list))
}
