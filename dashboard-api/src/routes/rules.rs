//! The rules file from the page (admin): read it, try a changed one over
//! recorded readings (a backtest: which alerts it would have raised, against
//! the rules in force), and put it in force.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ioc_schemas::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;

/// A blocking call of the running system: its answer, or every problem.
pub type Call<I> = Arc<dyn Fn(I) -> Result<Value, Vec<String>> + Send + Sync>;

/// What the running system does for these routes.
pub struct RulesAdmin {
    /// The rules file's text and where it is: `{source, text, editable}`.
    pub text: Call<()>,
    /// Writes rules text to the rules file once valid and reloads it.
    pub apply: Call<String>,
    /// Runs a backtest; the report.
    pub backtest: Call<BacktestRequest>,
}

/// `POST /api/v1/backtest`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BacktestRequest {
    /// The rules tried, as the text of a rules file (TOML).
    pub rules: String,
    /// Compare alerts that open from this time.
    #[serde(default)]
    pub from: Option<Timestamp>,
    /// Read readings before this time.
    #[serde(default)]
    pub to: Option<Timestamp>,
}

/// `PUT /api/v1/rules/file`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RulesText {
    /// The new rules file (TOML).
    pub text: String,
}

fn admin(app: &AppState) -> Result<Arc<RulesAdmin>, ApiError> {
    app.rules_admin
        .clone()
        .ok_or_else(|| ApiError::NotFound("this server has no rules file to manage".into()))
}

async fn call<I: Send + 'static>(
    f: Call<I>,
    input: I,
    refused: &str,
) -> Result<Json<Value>, ApiError> {
    match tokio::task::spawn_blocking(move || f(input)).await {
        Ok(Ok(v)) => Ok(Json(v)),
        Ok(Err(problems)) => Err(ApiError::Invalid(refused.into(), problems)),
        Err(e) => Err(ApiError::Unavailable(format!("failed: {e}"))),
    }
}

/// `GET /api/v1/rules/file` (admin): the rules in force as text.
pub async fn file(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    call(
        admin(&app)?.text.clone(),
        (),
        "the rules file cannot be read",
    )
    .await
}

/// `PUT /api/v1/rules/file` (admin): replaces the rules file and reloads
/// it; 422 with every problem when the text is invalid (nothing changes).
pub async fn apply(
    State(app): State<AppState>,
    Json(body): Json<RulesText>,
) -> Result<Json<Value>, ApiError> {
    call(
        admin(&app)?.apply.clone(),
        body.text,
        "the rules are not applied; the rules in force stay",
    )
    .await
}

/// `POST /api/v1/backtest` (admin): what the rules would have raised over
/// the recorded readings, against the rules in force.
pub async fn backtest(
    State(app): State<AppState>,
    Json(body): Json<BacktestRequest>,
) -> Result<Json<Value>, ApiError> {
    call(
        admin(&app)?.backtest.clone(),
        body,
        "the backtest did not run",
    )
    .await
}
