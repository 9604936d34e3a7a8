//! `[influx]`: where time series go and how hard the sink tries.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the sink does when the on-disk spool reaches `spool_max_bytes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolFull {
    /// Delete the oldest unsent batch to make room: ingestion, alerts and
    /// the live screens carry on; every dropped point is counted
    /// (`ioc_influx_points_dropped_total{reason="spool_full"}`) and logged
    /// as an error.
    #[default]
    DropOldest,
    /// Stop taking new points until the database accepts batches again:
    /// no reading is dropped, but ingestion stops (MQTT and Kafka hold the
    /// backlog), and with it the live state and the alerts. Alert changes
    /// still never wait: one that finds the queue full is dropped and
    /// counted (`reason="queue_full"`).
    Block,
}

/// Time-series sink settings (InfluxDB v2 write API).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InfluxConfig {
    /// Write readings and alert changes to the database.
    pub enabled: bool,
    /// Base URL of the database: InfluxDB 2 (`http://host:8086`), InfluxDB 3
    /// (`http://host:8181`), or VictoriaMetrics (`http://host:8428`).
    pub url: String,
    /// Organisation (InfluxDB 2; InfluxDB 3 and VictoriaMetrics ignore it).
    pub org: String,
    /// Bucket (InfluxDB 2) or database (InfluxDB 3).
    pub bucket: String,
    /// API token, sent as `Authorization: Token …`. Prefer the
    /// `IOC_INFLUX__TOKEN` environment variable to writing it here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Points per write request.
    pub batch_size: usize,
    /// A batch is written at the latest this long after its first point.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Compress request bodies with gzip (level 1).
    pub gzip: bool,
    /// Give up on one write request after this long (and retry it).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Longest pause between retries of a failing write.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Directory of batches not yet written; they survive restarts and are
    /// written, in order, when the database is reachable.
    pub spool_dir: PathBuf,
    /// Largest size of the spool, in bytes (compressed).
    pub spool_max_bytes: u64,
    /// `drop_oldest` or `block`: what happens when the spool is full.
    pub spool_full: SpoolFull,
    /// Points held in memory between ingest and the batcher.
    pub queue_capacity: usize,
    /// At shutdown, how long to keep writing the spool before leaving the
    /// rest for the next start.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for InfluxConfig {
    fn default() -> Self {
        InfluxConfig {
            enabled: false,
            url: "http://127.0.0.1:8086".into(),
            org: "sonla".into(),
            bucket: "ioc".into(),
            token: None,
            batch_size: 5000,
            flush_interval: Duration::from_secs(1),
            gzip: true,
            timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(30),
            spool_dir: PathBuf::from("data/influx-spool"),
            spool_max_bytes: 1 << 30,
            spool_full: SpoolFull::DropOldest,
            queue_capacity: 65_536,
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// The smallest spool: a few full batches, so that a batch always fits.
pub const MIN_SPOOL_BYTES: u64 = 16 << 20;

impl InfluxConfig {
    /// Every problem, each naming its key under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut p = Vec::new();
        if !self.enabled {
            return p;
        }
        match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
            Ok(_) => p.push(format!(
                "{prefix}.url: {:?} must be an http:// or https:// URL",
                self.url
            )),
            Err(e) => p.push(format!("{prefix}.url: {:?} is not a URL: {e}", self.url)),
        }
        if self.bucket.trim().is_empty() {
            p.push(format!(
                "{prefix}.bucket: must name a bucket (or an InfluxDB 3 database)"
            ));
        }
        if !(1..=100_000).contains(&self.batch_size) {
            p.push(format!(
                "{prefix}.batch_size: must be between 1 and 100000 points"
            ));
        }
        if self.flush_interval.is_zero() {
            p.push(format!("{prefix}.flush_interval: must be longer than 0s"));
        }
        if self.timeout.is_zero() {
            p.push(format!("{prefix}.timeout: must be longer than 0s"));
        }
        if self.max_backoff < Duration::from_millis(100) {
            p.push(format!("{prefix}.max_backoff: must be at least 100ms"));
        }
        if self.spool_dir.as_os_str().is_empty() {
            p.push(format!("{prefix}.spool_dir: must name a directory"));
        }
        if self.spool_max_bytes < MIN_SPOOL_BYTES {
            p.push(format!(
                "{prefix}.spool_max_bytes: must be at least {MIN_SPOOL_BYTES} (16 MiB)"
            ));
        }
        if self.queue_capacity == 0 {
            p.push(format!("{prefix}.queue_capacity: must be at least 1"));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_config_has_no_problems_and_enabled_reports_each_key() {
        assert!(InfluxConfig::default().problems("influx").is_empty());
        let c = InfluxConfig {
            enabled: true,
            url: "ftp://x".into(),
            bucket: " ".into(),
            batch_size: 0,
            flush_interval: Duration::ZERO,
            spool_max_bytes: 1,
            ..InfluxConfig::default()
        };
        let p = c.problems("influx").join("\n");
        for key in [
            "url",
            "bucket",
            "batch_size",
            "flush_interval",
            "spool_max_bytes",
        ] {
            assert!(
                p.contains(&format!("influx.{key}:")),
                "{key} missing from {p}"
            );
        }
        let ok = InfluxConfig {
            enabled: true,
            ..InfluxConfig::default()
        };
        assert!(ok.problems("influx").is_empty());
    }
}
