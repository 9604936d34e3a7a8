//! Kafka: the consumer-group source and the dead-letter producer (alerts
//! go to Kafka through `ioc_alerts::channels::kafka`).
//!
//! - [`KafkaConfig`]: brokers, group, topics, start position, security
//!   settings and raw librdkafka properties;
//! - [`source::KafkaSource`]: a consumer on its own thread. It polls and
//!   runs each record through the shared [`crate::Ingestor`]. With state in
//!   memory only it stores the record's offset once the reading is in the
//!   engine's input (or the rejection in the dead letters); with durable
//!   state the records are not journaled: the engine's checkpoints keep
//!   each partition's offset (the consumer stops at every cut, see
//!   `ioc_processing::LogSource`), a start seeks there, and the offsets are
//!   stored once a checkpoint holds them. librdkafka commits stored offsets
//!   in the background. Rebalance callbacks run inside `poll` on the same thread, so
//!   when partitions are revoked every record polled before has been handed
//!   off, and the callback commits synchronously. A graceful stop commits
//!   synchronously too. Delivery is at-least-once; redeliveries are caught
//!   by the duplicate windows;
//! - [`sink::KafkaSink`]: dead letters to a topic (`ioc.deadletter`),
//!   falling back to the file when the broker cannot take them;
//! - [`loadgen::produce`]: the load generator's Kafka side (`ioc loadgen
//!   --kafka`), for benchmarks.
//!
//! This is the only module that names rdkafka.

pub mod loadgen;
pub mod sink;
pub mod source;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

pub use sink::KafkaSink;
pub use source::KafkaSource;

/// Where a consumer group with no committed offset starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The oldest retained record.
    Earliest,
    /// Only records produced from now on.
    Latest,
}

/// Kafka settings, shared by the source and the dead-letter producer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Consume telemetry from Kafka (and send dead letters there).
    pub enabled: bool,
    /// `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    /// Consumer group id: processes with the same id split the partitions.
    pub group_id: String,
    /// Client id, shown in broker logs.
    pub client_id: String,
    /// Topics to consume. Record key = device id, value = envelope v1.
    pub topics: Vec<String>,
    /// Where a new group starts.
    pub start_from: StartFrom,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_protocol: Option<String>,
    /// SASL mechanism, e.g. `PLAIN` or `SCRAM-SHA-256`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<String>,
    /// SASL user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl_username: Option<String>,
    /// SASL password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl_password: Option<String>,
    /// CA certificate file (PEM) to verify the brokers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_ca_location: Option<String>,
    /// Client certificate file (PEM) for mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_certificate_location: Option<String>,
    /// Client private key file (PEM) for mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_key_location: Option<String>,
    /// How often librdkafka reports statistics (lag per partition, fetch
    /// rates) to the metrics; `0s` turns them off.
    #[serde(with = "humantime_serde")]
    pub statistics_interval: Duration,
    /// Any librdkafka property, applied last (see librdkafka's
    /// CONFIGURATION.md), e.g. `"fetch.wait.max.ms" = "50"`.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            enabled: false,
            bootstrap_servers: "127.0.0.1:9092".into(),
            group_id: "ioc".into(),
            client_id: "ioc".into(),
            topics: vec!["ioc.telemetry".into()],
            start_from: StartFrom::Earliest,
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            statistics_interval: Duration::from_secs(5),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// Settings every client (consumer, producer) gets.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id)
            // TCP_NODELAY: Nagle's algorithm would hold small requests back.
            .set("socket.nagle.disable", "true")
            .set(
                "statistics.interval.ms",
                self.statistics_interval.as_millis().to_string(),
            );
        for (key, value) in [
            ("security.protocol", &self.security_protocol),
            ("sasl.mechanism", &self.sasl_mechanism),
            ("sasl.username", &self.sasl_username),
            ("sasl.password", &self.sasl_password),
            ("ssl.ca.location", &self.ssl_ca_location),
            ("ssl.certificate.location", &self.ssl_certificate_location),
            ("ssl.key.location", &self.ssl_key_location),
        ] {
            if let Some(v) = value {
                c.set(key, v);
            }
        }
        c
    }

    /// Settings of our producers: idempotent, acknowledged by all in-sync
    /// replicas, batched for 5 ms, given up after 30 s (raw properties last).
    pub fn producer_config(&self) -> ClientConfig {
        let mut cc = self.client_config();
        cc.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000");
        self.apply_properties(&mut cc);
        cc
    }

    /// Raw properties, applied after ours so they can override anything.
    fn apply_properties(&self, c: &mut ClientConfig) {
        for (k, v) in &self.properties {
            c.set(k, v);
        }
    }

    /// Every problem with these settings, each naming its key.
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut p = Vec::new();
        if !self.enabled {
            return p;
        }
        if self.bootstrap_servers.trim().is_empty() {
            p.push(format!("{prefix}.bootstrap_servers: must not be empty"));
        }
        if self.group_id.is_empty() {
            p.push(format!("{prefix}.group_id: must not be empty"));
        }
        if self.topics.is_empty() {
            p.push(format!("{prefix}.topics: consume at least one topic"));
        }
        // librdkafka checks every property when a client is created; do it
        // now so a typo is reported with the other problems.
        let mut c = self.client_config();
        self.apply_properties(&mut c);
        if let Err(e) = c.create::<rdkafka::producer::BaseProducer>() {
            p.push(format!("{prefix}: librdkafka refuses the settings: {e}"));
        }
        p
    }
}
