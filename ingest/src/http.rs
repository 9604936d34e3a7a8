//! HTTP ingest for gateways that cannot speak MQTT or Kafka:
//! `POST /api/v1/ingest` with a bearer token, one envelope
//! (`Content-Type: application/json`) or an NDJSON batch (any other type),
//! answered with a result per line. The route itself lives in the dashboard
//! API; this module holds what it needs: the settings, token checks, and
//! [`HttpIngest::ingest`], which runs each line through the shared
//! [`Ingestor`].

use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::deadletter::Origin;
use crate::pipeline::Ingestor;
use ioc_processing::Closed;
use ioc_schemas::RejectReason;

/// HTTP ingest settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpIngestConfig {
    /// Serve `POST /api/v1/ingest`.
    pub enabled: bool,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Who may post: one entry per gateway or device.
    pub tokens: Vec<IngestToken>,
}

impl Default for HttpIngestConfig {
    fn default() -> Self {
        HttpIngestConfig {
            enabled: true,
            max_body_bytes: 16 * 1024 * 1024,
            tokens: Vec::new(),
        }
    }
}

/// A bearer token and the devices it may send for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestToken {
    /// Who holds it (appears in dead letters and logs; never the token).
    pub name: String,
    /// The secret, sent as `Authorization: Bearer <token>`.
    pub token: String,
    /// Device ids this token covers; `*` at the end matches any suffix.
    /// A device token lists one id, a gateway token its devices or `["*"]`.
    #[serde(default = "everything")]
    pub devices: Vec<String>,
}

fn everything() -> Vec<String> {
    vec!["*".into()]
}

impl HttpIngestConfig {
    /// Every problem with these settings, each naming its key.
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.max_body_bytes < 1024 {
            p.push(format!("{prefix}.max_body_bytes: must be at least 1024"));
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.token.len() < 16 {
                p.push(format!(
                    "{prefix}.tokens[{i}].token: use at least 16 characters (e.g. `openssl rand -hex 24`)"
                ));
            }
            if t.name.is_empty() {
                p.push(format!("{prefix}.tokens[{i}].name: must not be empty"));
            }
            if t.devices.is_empty() {
                p.push(format!(
                    "{prefix}.tokens[{i}].devices: list at least one device id or pattern"
                ));
            }
        }
        p
    }
}

/// Whether a device id matches one of the patterns.
pub fn in_scope(patterns: &[String], device: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => device.starts_with(prefix),
        None => p == device,
    })
}

/// Compares without an early exit, so response time does not tell how much
/// of a guessed token was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The result for one line of a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LineResult {
    /// 1-based line number.
    pub line: usize,
    /// `accepted` or `rejected`.
    pub status: LineStatus,
    /// Why it was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RejectReason>,
    /// JSON pointer of the bad field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// What was wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Outcome of one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LineStatus {
    /// Queued for processing.
    Accepted,
    /// Dead-lettered.
    Rejected,
}

/// The response body of `POST /api/v1/ingest`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IngestReport {
    /// Lines accepted.
    pub accepted: usize,
    /// Lines rejected (each is in the dead letters).
    pub rejected: usize,
    /// One entry per non-blank line, in order.
    pub results: Vec<LineResult>,
}

/// Why a request was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// No or wrong token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The engine is shutting down; retry against another instance or later.
    #[error("the processor is shutting down")]
    Closed(#[from] Closed),
}

/// Tokens and the shared ingest path.
#[derive(Debug)]
pub struct HttpIngest {
    config: HttpIngestConfig,
    /// Taken out by [`HttpIngest::close`], so the engine's inputs can close
    /// while the HTTP server still serves screens.
    ingestor: RwLock<Option<Ingestor>>,
}

impl HttpIngest {
    /// HTTP ingest with these settings.
    pub fn new(config: HttpIngestConfig, ingestor: Ingestor) -> Self {
        HttpIngest {
            config,
            ingestor: RwLock::new(Some(ingestor)),
        }
    }

    /// Stops taking telemetry: later requests get `503`; requests in flight finish.
    pub fn close(&self) {
        self.ingestor
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }

    /// The settings.
    pub fn config(&self) -> &HttpIngestConfig {
        &self.config
    }

    /// The token entry for an `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<&IngestToken, IngestError> {
        if self.config.tokens.is_empty() {
            return Err(IngestError::Unauthorized(
                "HTTP ingest has no tokens configured: add [[http_ingest.tokens]] to the configuration",
            ));
        }
        let Some(given) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else {
            return Err(IngestError::Unauthorized(
                "send the ingest token as `Authorization: Bearer <token>`",
            ));
        };
        let given = given.trim().as_bytes();
        // Check every token, so the time taken does not say which one matched.
        let mut found = None;
        for t in &self.config.tokens {
            if same_secret(t.token.as_bytes(), given) && found.is_none() {
                found = Some(t);
            }
        }
        found.ok_or(IngestError::Unauthorized("unknown ingest token"))
    }

    /// Runs every line of `body` through ingest. `single` treats the whole
    /// body as one envelope (`application/json`).
    pub async fn ingest(
        &self,
        token: &IngestToken,
        body: &[u8],
        single: bool,
    ) -> Result<IngestReport, IngestError> {
        let ingestor = self
            .ingestor
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or(Closed)?;
        let mut report = IngestReport::default();
        let lines: Vec<&[u8]> = if single {
            vec![body]
        } else {
            body.split(|&b| b == b'\n').collect()
        };
        // Answered once the journal holds every accepted line.
        let mut receipts = Vec::new();
        for (i, line) in lines.into_iter().enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let origin = Origin::Http {
                client: &token.name,
                line: i + 1,
                scope: &token.devices,
            };
            let result = match ingestor.submit(origin, line).await? {
                Ok(receipt) => {
                    receipts.push(receipt);
                    report.accepted += 1;
                    LineResult {
                        line: i + 1,
                        status: LineStatus::Accepted,
                        reason: None,
                        pointer: None,
                        detail: None,
                    }
                }
                Err(r) => {
                    report.rejected += 1;
                    LineResult {
                        line: i + 1,
                        status: LineStatus::Rejected,
                        reason: Some(r.reason),
                        pointer: r.pointer,
                        detail: Some(r.detail),
                    }
                }
            };
            report.results.push(result);
        }
        for r in receipts {
            r.durable().await?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_match_ids_and_prefixes() {
        let s = ["river-*".to_owned(), "cam-ql6-01".to_owned()];
        assert!(in_scope(&s, "river-to-hieu"));
        assert!(in_scope(&s, "cam-ql6-01"));
        assert!(!in_scope(&s, "cam-ql6-02"));
        assert!(!in_scope(&s, "rain-to-hieu"));
        assert!(in_scope(&["*".to_owned()], "anything"));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abcdef", b"abcdef"));
        assert!(!same_secret(b"abcdef", b"abcdeg"));
        assert!(!same_secret(b"abc", b"abcdef"));
    }
}
