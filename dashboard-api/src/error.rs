//! One JSON shape for every API error: `{"error": {"code", "message"}}`,
//! with `problems` listing every problem of a `422 invalid`.
//!
//! The codes ([`ErrorCode`]) are stable: clients may branch on them. Errors
//! that axum itself answers (an unknown route, a wrong method, a body over
//! the limit, a query that does not parse) get the same shape through
//! [`uniform`].

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Serialize;

/// The stable code of an API error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the request is malformed (a query parameter, a body that is not
    /// the expected JSON).
    BadRequest,
    /// 401: no token, or one that is unknown, expired or badly signed.
    Unauthorized,
    /// 403: a valid token whose role is not enough, or a page of another
    /// site.
    Forbidden,
    /// 404: the named thing (or route) does not exist, or the feature is
    /// not enabled on this server.
    NotFound,
    /// 405: the route exists for another method.
    MethodNotAllowed,
    /// 409: the alert is resolved; it takes no more actions.
    AlertResolved,
    /// 409: a device with this id is already registered.
    DeviceExists,
    /// 413: the body is over the limit.
    PayloadTooLarge,
    /// 415: the body's content type is not accepted.
    UnsupportedMediaType,
    /// 422: understood, but invalid; `problems` lists every problem.
    Invalid,
    /// 429: over the caller's rate limit; `Retry-After` says when to retry.
    TooManyRequests,
    /// 503: the service cannot take the request now (the alert store is
    /// unreachable or not configured, shutting down).
    Unavailable,
    /// 500: a fault of the server.
    Internal,
}

impl ErrorCode {
    /// The code as written in responses.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::AlertResolved => "alert_resolved",
            ErrorCode::DeviceExists => "device_exists",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Invalid => "invalid",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status of the code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::AlertResolved | ErrorCode::DeviceExists => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code of an error status that no handler of ours chose.
    fn of_status(status: StatusCode) -> Self {
        match status.as_u16() {
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            405 => ErrorCode::MethodNotAllowed,
            413 => ErrorCode::PayloadTooLarge,
            415 => ErrorCode::UnsupportedMediaType,
            422 => ErrorCode::Invalid,
            429 => ErrorCode::TooManyRequests,
            503 => ErrorCode::Unavailable,
            500.. => ErrorCode::Internal,
            _ => ErrorCode::BadRequest,
        }
    }
}

/// The body of every error response.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ErrorDetail {
    /// Stable, for programs.
    pub code: ErrorCode,
    /// For people; may change.
    pub message: String,
    /// Every problem found (`invalid` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<String>>,
}

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
    /// The request conflicts with the state of what it names.
    Conflict(ErrorCode, String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, message, problems) = match self {
            ApiError::Invalid(m, problems) => (ErrorCode::Invalid, m, Some(problems)),
            ApiError::NotFound(m) => (ErrorCode::NotFound, m, None),
            ApiError::BadRequest(m) => (ErrorCode::BadRequest, m, None),
            ApiError::Unauthorized(m) => (ErrorCode::Unauthorized, m, None),
            ApiError::Forbidden(m) => (ErrorCode::Forbidden, m, None),
            ApiError::TooManyRequests(m) => (ErrorCode::TooManyRequests, m, None),
            ApiError::Unavailable(m) => (ErrorCode::Unavailable, m, None),
            ApiError::Conflict(code, m) => (code, m, None),
        };
        respond(code.status(), code, message, problems)
    }
}

fn respond(
    status: StatusCode,
    code: ErrorCode,
    message: String,
    problems: Option<Vec<String>>,
) -> Response {
    let mut response = (
        status,
        Json(ErrorBody {
            error: ErrorDetail {
                code,
                message,
                problems,
            },
        }),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// Gives an error response that is not JSON (axum's own: an unknown route,
/// a wrong method, a body over the limit, a rejected query) the shared
/// shape, keeping its status, headers and text as the message.
pub async fn uniform(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let json = respond(status, ErrorCode::of_status(status), message, None);
    let (json_parts, body) = json.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.extend(json_parts.headers);
    Response::from_parts(parts, body)
}
