//! Configuration of the MQTT source.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The MQTT protocol version to speak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MqttProtocol {
    /// MQTT 3.1.1, which every broker speaks.
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.
    #[serde(rename = "5")]
    V5,
}

impl MqttProtocol {
    /// `3.1.1` or `5`, as in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            MqttProtocol::V311 => "3.1.1",
            MqttProtocol::V5 => "5",
        }
    }
}

/// How the MQTT source connects and what it subscribes to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSourceConfig {
    /// Consume telemetry over MQTT.
    pub enabled: bool,
    /// Broker URL, `mqtt://host:port`, or `mqtts://host:port` for TLS. With
    /// the embedded broker enabled, this is also the address it listens on.
    pub url: String,
    /// Protocol version: `"3.1.1"` or `"5"`.
    pub protocol: MqttProtocol,
    /// Client id. Keep it stable: with a persistent session the broker keeps
    /// QoS 1 messages for this id while the processor is away.
    pub client_id: String,
    /// Topic filters to subscribe to.
    pub topics: Vec<String>,
    /// Presence topic filters (`ioc/v1/{kind}/{device}/status`, retained
    /// `online`/`offline`); empty to ignore presence. Do not put these
    /// behind `$share/`: every processor needs every device's status, and
    /// brokers do not deliver retained messages to shared subscriptions.
    pub presence_topics: Vec<String>,
    /// Subscription QoS: 0 (at most once) or 1 (at least once).
    pub qos: u8,
    /// Ask the broker to keep the session (subscriptions and queued QoS 1
    /// messages) across disconnects.
    pub persistent_session: bool,
    /// MQTT 5: how long the broker keeps a persistent session while the
    /// processor is away, e.g. `"7d"` (MQTT 3.1.1 brokers decide themselves).
    #[serde(with = "humantime_serde")]
    pub session_expiry: Duration,
    /// MQTT keep-alive interval, e.g. `"30s"`.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Longest wait between reconnection attempts, e.g. `"30s"`.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Largest accepted packet in bytes.
    pub max_packet_bytes: usize,
    /// Optional user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Optional password (with `username`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// TLS (`mqtts://`): CA certificate file (PEM) that signed the broker's
    /// certificate; the system's roots when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// TLS: client certificate file (PEM), for brokers that require one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<std::path::PathBuf>,
    /// TLS: the client certificate's private key (PEM, PKCS#8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<std::path::PathBuf>,
}

impl Default for MqttSourceConfig {
    fn default() -> Self {
        MqttSourceConfig {
            enabled: true,
            url: "mqtt://127.0.0.1:1883".into(),
            protocol: MqttProtocol::V311,
            client_id: "ioc".into(),
            topics: vec!["ioc/v1/+/+/telemetry".into()],
            presence_topics: vec!["ioc/v1/+/+/status".into()],
            qos: 1,
            persistent_session: true,
            session_expiry: Duration::from_secs(7 * 24 * 3600),
            keep_alive: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
            max_packet_bytes: 256 * 1024,
            username: None,
            password: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
        }
    }
}

impl MqttSourceConfig {
    /// The broker's host and port from [`Self::url`].
    pub fn endpoint(&self) -> Result<(String, u16), String> {
        ioc_devices::simulator::mqtt::parse_broker_url(&self.url)
    }

    /// Whether the URL asks for TLS (`mqtts://`).
    pub fn tls(&self) -> bool {
        self.url.starts_with("mqtts://")
    }

    /// Every problem with this configuration, each with the key it concerns.
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut p = Vec::new();
        if let Err(e) = self.endpoint() {
            p.push(format!("{prefix}.url: {e}"));
        }
        if self.client_id.is_empty() {
            p.push(format!("{prefix}.client_id: must not be empty"));
        }
        if self.topics.is_empty() {
            p.push(format!(
                "{prefix}.topics: subscribe to at least one topic filter"
            ));
        }
        if let Some(t) = self
            .presence_topics
            .iter()
            .find(|t| t.starts_with("$share/"))
        {
            p.push(format!(
                "{prefix}.presence_topics: {t:?} is a shared subscription; every processor needs every status"
            ));
        }
        if self.protocol == MqttProtocol::V5
            && self.persistent_session
            && self.session_expiry.is_zero()
        {
            p.push(format!(
                "{prefix}.session_expiry: 0 ends an MQTT 5 session at disconnect; give it a duration or set persistent_session = false"
            ));
        }
        if self.qos > 1 {
            p.push(format!(
                "{prefix}.qos: {} is not supported; use 0 or 1",
                self.qos
            ));
        }
        if self.keep_alive < Duration::from_secs(5) {
            p.push(format!("{prefix}.keep_alive: must be at least 5s"));
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            p.push(format!(
                "{prefix}.client_cert_file: set client_cert_file and client_key_file together"
            ));
        }
        if !self.tls() && (self.ca_file.is_some() || self.client_cert_file.is_some()) {
            p.push(format!(
                "{prefix}.url: TLS files are set but the URL is not mqtts://"
            ));
        }
        for (key, file) in [
            ("ca_file", &self.ca_file),
            ("client_cert_file", &self.client_cert_file),
            ("client_key_file", &self.client_key_file),
        ] {
            if let Some(f) = file
                && !f.exists()
            {
                p.push(format!("{prefix}.{key}: {} does not exist", f.display()));
            }
        }
        if self.password.is_some() && self.username.is_none() {
            p.push(format!("{prefix}.password: set username too"));
        }
        p
    }
}
