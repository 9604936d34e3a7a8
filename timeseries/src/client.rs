//! `POST /api/v2/write`: one batch, and what the answer means for it.
//!
//! InfluxDB 2, InfluxDB 3 (its v2 compatibility endpoint) and
//! VictoriaMetrics all take line protocol there, with `org`, `bucket` and
//! `precision=ms` in the query, `Authorization: Token …`, and
//! `Content-Encoding: gzip` for compressed bodies.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use crate::config::InfluxConfig;

/// A write that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Worth retrying: the database is unreachable, overloaded, or refuses
    /// our credentials or bucket (a configuration problem an operator can
    /// fix without losing the data).
    #[error("{message}")]
    Transient {
        /// What happened.
        message: String,
        /// The server asked us to wait this long.
        retry_after: Option<Duration>,
    },
    /// The database refused the data itself; sending it again cannot help.
    #[error("HTTP {status}: {message}")]
    Permanent {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
}

/// Could not build the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `influx.url` is not a URL.
    #[error("influx.url {url:?} is not a URL: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// `influx.token` cannot be a header.
    #[error("influx.token cannot be sent as an HTTP header (control characters?)")]
    Token,
    /// The HTTP client could not start (TLS set-up).
    #[error("cannot create the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Writes batches to one bucket.
#[derive(Clone, Debug)]
pub struct WriteClient {
    http: reqwest::Client,
    url: Url,
    auth: Option<HeaderValue>,
}

impl WriteClient {
    /// A client for `config`'s URL, bucket and token.
    pub fn new(config: &InfluxConfig) -> Result<Self, ClientError> {
        let mut url: Url =
            config
                .url
                .trim_end_matches('/')
                .parse()
                .map_err(|e| ClientError::Url {
                    url: config.url.clone(),
                    reason: format!("{e}"),
                })?;
        let path = format!("{}/api/v2/write", url.path().trim_end_matches('/'));
        url.set_path(&path);
        {
            let mut q = url.query_pairs_mut();
            if !config.org.is_empty() {
                q.append_pair("org", &config.org);
            }
            q.append_pair("bucket", &config.bucket);
            q.append_pair("precision", "ms");
        }
        let auth = match &config.token {
            Some(t) => {
                let mut v =
                    HeaderValue::from_str(&format!("Token {t}")).map_err(|_| ClientError::Token)?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .tcp_nodelay(true)
            .pool_max_idle_per_host(2)
            .build()?;
        Ok(WriteClient { http, url, auth })
    }

    /// The write URL (without the token).
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// Sends one batch of line protocol.
    pub async fn write(&self, body: Vec<u8>, gzip: bool) -> Result<(), WriteError> {
        let mut request = self
            .http
            .post(self.url.clone())
            .header(CONTENT_TYPE, "text/plain; charset=utf-8");
        if gzip {
            request = request.header(CONTENT_ENCODING, "gzip");
        }
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| WriteError::Transient {
                message: describe(&e),
                retry_after: None,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.unwrap_or_default();
        // Keep the first 2 KiB of the server's message.
        let message: String = text.trim().chars().take(2048).collect();
        Err(classify(status, message, retry_after))
    }
}

/// 400 and 422 are bad data; 413 is a batch too large for the server
/// (lower `influx.batch_size`); everything else, 401/403/404 included, is
/// retried, because the data is good and the fix is on the server side.
fn classify(status: StatusCode, message: String, retry_after: Option<Duration>) -> WriteError {
    match status.as_u16() {
        400 | 413 | 422 => WriteError::Permanent {
            status: status.as_u16(),
            message,
        },
        code => WriteError::Transient {
            message: match code {
                401 | 403 => format!("HTTP {code} (check influx.token): {message}"),
                404 => format!(
                    "HTTP {code} (check influx.url, influx.org and influx.bucket): {message}"
                ),
                _ => format!("HTTP {code}: {message}"),
            },
            retry_after,
        },
    }
}

/// The error and its causes on one line ("error sending request: …: connection refused").
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_carries_org_bucket_and_precision() {
        let c = WriteClient::new(&InfluxConfig {
            url: "http://db.example:8086/prefix/".into(),
            org: "Sơn La".into(),
            bucket: "ioc".into(),
            token: Some("secret".into()),
            ..InfluxConfig::default()
        })
        .unwrap();
        assert_eq!(
            c.url(),
            "http://db.example:8086/prefix/api/v2/write?org=S%C6%A1n+La&bucket=ioc&precision=ms"
        );
        assert!(!c.url().contains("secret"));
    }

    #[test]
    fn bad_data_is_permanent_and_the_rest_is_retried() {
        let is_permanent = |code| {
            matches!(
                classify(StatusCode::from_u16(code).unwrap(), String::new(), None),
                WriteError::Permanent { .. }
            )
        };
        for code in [400, 413, 422] {
            assert!(is_permanent(code), "{code}");
        }
        for code in [401, 403, 404, 408, 429, 500, 502, 503, 504] {
            assert!(!is_permanent(code), "{code}");
        }
    }
}
