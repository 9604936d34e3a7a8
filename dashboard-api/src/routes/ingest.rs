//! `POST /api/v1/ingest`: telemetry from gateways over HTTP.
//!
//! `Authorization: Bearer <token>` is required. `Content-Type:
//! application/json` sends one envelope; anything else (normally
//! `application/x-ndjson`) one envelope per line. The answer is `200` with a
//! result per line (rejected lines are in the dead letters), `401` for a
//! missing or unknown token, `413` for a body over `http_ingest.max_body_bytes`,
//! `503` while the processor shuts down.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use ioc_ingest::http::{IngestError, IngestReport};

use crate::AppState;
use crate::error::ApiError;

/// Accepts one envelope or an NDJSON batch.
pub async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<IngestReport>, ApiError> {
    let Some(http) = state.ingest.as_ref() else {
        return Err(ApiError::NotFound(
            "HTTP ingest is disabled (http_ingest.enabled = false)".into(),
        ));
    };
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let token = http
        .authenticate(header(AUTHORIZATION))
        .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "empty body: send one envelope or NDJSON lines".into(),
        ));
    }
    let single = header(CONTENT_TYPE)
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    match http.ingest(token, &body, single).await {
        Ok(report) => Ok(Json(report)),
        Err(e @ IngestError::Closed(_)) => Err(ApiError::Unavailable(e.to_string())),
        Err(e @ IngestError::Unauthorized(_)) => Err(ApiError::Unauthorized(e.to_string())),
    }
}
