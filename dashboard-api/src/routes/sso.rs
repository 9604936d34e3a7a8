//! The page's sign-in with the identity provider: authorization code with
//! PKCE. The page sends the browser to the provider with a challenge; back
//! with a code, it hands code and verifier to ioc, which trades them at the
//! provider's token endpoint (the page's Content-Security-Policy lets it
//! talk to ioc only) and returns the access token if ioc accepts it.

use axum::Json;
use axum::extract::State;

use crate::AppState;
use crate::error::ApiError;
use crate::oidc::{CodeExchange, PageSignIn, PageToken};

fn not_configured() -> ApiError {
    ApiError::NotFound("sign-in with an identity provider is not configured".into())
}

/// `GET /api/v1/auth/oidc` (open): where the page sends a person to sign in.
pub async fn config(State(app): State<AppState>) -> Result<Json<PageSignIn>, ApiError> {
    app.auth
        .oidc()
        .and_then(|k| k.page_sign_in())
        .map(Json)
        .ok_or_else(not_configured)
}

/// `POST /api/v1/auth/oidc/token` (open): the code the provider gave the
/// page, traded for an access token ioc accepts.
pub async fn token(
    State(app): State<AppState>,
    Json(code): Json<CodeExchange>,
) -> Result<Json<PageToken>, ApiError> {
    let keys = app.auth.oidc().ok_or_else(not_configured)?;
    let access_token = keys.exchange(&code).await.map_err(ApiError::Unauthorized)?;
    app.auth
        .verify_fresh(Some(&access_token))
        .await
        .map_err(|e| ApiError::Unauthorized(e.message()))?;
    Ok(Json(PageToken { access_token }))
}
