//! One JSON shape for every API error: `{"error": {"code", "message"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An API error with a stable code.
#[derive(Debug)]
pub enum ApiError {
    /// The named thing does not exist.
    NotFound(String),
    /// The request is malformed.
    BadRequest(String),
    /// No or wrong credentials.
    Unauthorized(String),
    /// Valid credentials whose role is not enough.
    Forbidden(String),
    /// The caller sent more requests than allowed.
    TooManyRequests(String),
    /// The service cannot take the request now.
    Unavailable(String),
    /// The request was understood but what it names is invalid; every problem listed.
    Invalid(String, Vec<String>),
    /// The request conflicts with the state of what it names (`code`, message).
    Conflict(&'static str, String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiError::Invalid(m, problems) => {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Json(json!({"error": {"code": "invalid", "message": m, "problems": problems}})),
                )
                    .into_response();
            }
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m),
            ApiError::TooManyRequests(m) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests", m),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
            ApiError::Conflict(code, m) => (StatusCode::CONFLICT, code, m),
        };
        let mut response = (
            status,
            Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
