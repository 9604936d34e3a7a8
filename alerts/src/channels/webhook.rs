//! Webhook subscribers: who wants which alerts, how requests are signed,
//! and the delivery worker that drains the durable outbox.
//!
//! Each change that matches a subscriber's filter is written to the outbox
//! in the transaction that stores the change. The worker posts the oldest
//! due delivery of each alert (versions of one alert go in order) with:
//!
//! - `Content-Type: application/json`, body `{"alert": …, "change": …}`;
//! - `X-IOC-Signature-256: sha256=<hex HMAC-SHA256 of the body with the
//!   subscriber's secret>`;
//! - `Idempotency-Key: <alert id>:<version>` (the same on every retry);
//! - `X-IOC-Delivery-Attempt: <n>`.
//!
//! A 2xx answer delivers it. Anything else, or no answer within `timeout`,
//! is retried with exponential backoff (1 s doubling, at most 10 min) until
//! `max_attempts`; then it is dead: kept with its last error and listed by
//! `GET /api/v1/webhooks/deliveries?state=dead`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use ioc_schemas::{Alert, AlertChange, AreaRef, Severity};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// One webhook subscriber (`[[alerts.webhooks]]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// A stable name (it keys the subscriber's deliveries).
    pub name: String,
    /// Where to post, `http://` or `https://`.
    pub url: String,
    /// The HMAC-SHA256 key for `X-IOC-Signature-256` (at least 16 characters).
    pub secret: String,
    /// Only these rules (empty: all).
    #[serde(default)]
    pub rules: Vec<String>,
    /// Only alerts at least this severe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
    /// Only alerts in one of these administrative areas (empty: all).
    #[serde(default)]
    pub areas: Vec<String>,
    /// Attempts before a delivery is dead.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Time allowed for one request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_attempts() -> u32 {
    12
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Webhook {
    /// Whether this subscriber wants the alert.
    pub fn wants(&self, alert: &Alert) -> bool {
        (self.rules.is_empty() || self.rules.contains(&alert.rule))
            && self.min_severity.is_none_or(|m| alert.severity >= m)
            && AreaRef::chain_within(&alert.area, &self.areas)
    }

    /// Every problem, with `prefix` before each key.
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.name.trim().is_empty() {
            p.push(format!("{prefix}.name: must not be empty"));
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            p.push(format!(
                "{prefix}.url: expected http://… or https://…, got {:?}",
                self.url
            ));
        }
        if self.secret.chars().count() < 16 {
            p.push(format!("{prefix}.secret: at least 16 characters"));
        }
        if self.max_attempts == 0 {
            p.push(format!("{prefix}.max_attempts: at least 1"));
        }
        p
    }
}

/// The body posted for one change.
pub fn body(alert: &Alert, change: &AlertChange) -> String {
    serde_json::json!({"alert": alert, "change": change}).to_string()
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Wait before attempt `attempts + 1`.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(10)).min(Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(600));
    }
}
