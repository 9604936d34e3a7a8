//! The MQTT source: subscribe, decode, hand to processing, then acknowledge.
//!
//! Two tasks. The connection task polls the rumqttc event loop (never
//! blocked by our work), re-subscribes after every connection and backs off
//! with jitter after errors. The handler task decodes each message, sends a
//! valid reading to the engine (waiting while the engine is full) and only
//! then acknowledges it, so a QoS 1 message is redelivered by the broker if
//! the process dies before processing took it. Rejected messages go to the
//! dead letters first and are acknowledged after: handled, not lost.

use std::time::Duration;

use ioc_schemas::Timestamp;
use rumqttc::Transport;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::MqttSourceConfig;
use super::protocol::{self, AckBacklog, Client, Delivery, EventLoop, Polled};
use crate::deadletter::Origin;
use crate::decode::parse_status_topic;
use crate::pipeline::Ingestor;
use crate::stats::IngestStats;
use ioc_processing::Receipt;

/// A configured MQTT source, ready to run.
pub struct MqttSource {
    config: MqttSourceConfig,
    ingestor: Ingestor,
}

impl MqttSource {
    /// A source from its configuration.
    pub fn new(config: MqttSourceConfig, ingestor: Ingestor) -> Self {
        MqttSource { config, ingestor }
    }

    fn options(&self) -> protocol::Options {
        let c = &self.config;
        // An invalid URL is reported by configuration validation before start.
        let (host, port) = c.endpoint().unwrap_or_else(|_| ("127.0.0.1".into(), 1883));
        let transport = c.tls().then(|| match tls_connector(c) {
            Ok(connector) => Transport::tls_with_config(connector.into()),
            // Files are checked by configuration validation; a bad one here
            // is logged and the connection attempts will fail.
            Err(e) => {
                warn!(error = %e, "cannot set up MQTT TLS");
                Transport::tls_with_config(rumqttc::TlsConfiguration::Native)
            }
        });
        protocol::Options {
            host,
            port,
            transport,
        }
    }

    /// Runs until `cancel` fires, then disconnects.
    pub async fn run(self, cancel: CancellationToken) {
        let (client, mut eventloop) = protocol::connect(&self.config, self.options());
        let (tx, rx) = mpsc::channel::<(u64, Delivery)>(protocol::HANDOFF);
        let backlog = AckBacklog::default();
        let stats = self.ingestor.stats().clone();
        let handler = tokio::spawn(handle(rx, client.clone(), backlog.clone(), self.ingestor));
        info!(
            url = %self.config.url,
            protocol = self.config.protocol.as_str(),
            topics = ?self.config.topics,
            presence = ?self.config.presence_topics,
            "MQTT source starting"
        );
        let qos = self.config.qos;
        let filters: Vec<(String, u8)> = self
            .config
            .topics
            .iter()
            .chain(&self.config.presence_topics)
            .map(|t| (t.clone(), qos))
            .collect();
        connection(
            &mut eventloop,
            &client,
            &backlog,
            &filters,
            Handoff {
                tx: &tx,
                stats: &stats,
            },
            self.config.max_backoff,
            &cancel,
        )
        .await;
        stats.set_mqtt_subscribed(false);
        // Stop taking messages, let the handler finish what it holds, then leave.
        drop(tx);
        let _ = handler.await;
        client.disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.flush_disconnect()).await;
        info!("MQTT source stopped");
    }
}

/// A TLS connector with the configured CA and client certificate.
/// Options for a client that publishes to the same broker as the source
/// (same address, TLS and credentials; MQTT 3.1.1, clean session), with
/// its own `client_id`.
pub fn publisher_options(c: &MqttSourceConfig, client_id: &str) -> rumqttc::MqttOptions {
    let (host, port) = c.endpoint().unwrap_or_else(|_| ("127.0.0.1".into(), 1883));
    let mut o = rumqttc::MqttOptions::new(client_id, host, port);
    o.set_keep_alive(c.keep_alive)
        .set_clean_session(true)
        .set_max_packet_size(c.max_packet_bytes, c.max_packet_bytes);
    if let Some(user) = &c.username {
        o.set_credentials(user, c.password.clone().unwrap_or_default());
    }
    if c.tls() {
        match tls_connector(c) {
            Ok(connector) => o.set_transport(Transport::tls_with_config(connector.into())),
            Err(e) => {
                warn!(error = %e, "cannot set up MQTT TLS");
                o.set_transport(Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Native,
                ))
            }
        };
    }
    o
}

fn tls_connector(c: &MqttSourceConfig) -> Result<native_tls::TlsConnector, String> {
    let read = |f: &std::path::Path| {
        std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))
    };
    let mut b = native_tls::TlsConnector::builder();
    if let Some(ca) = &c.ca_file {
        let cert = native_tls::Certificate::from_pem(&read(ca)?)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
        b.add_root_certificate(cert);
    }
    if let (Some(cert), Some(key)) = (&c.client_cert_file, &c.client_key_file) {
        let identity = native_tls::Identity::from_pkcs8(&read(cert)?, &read(key)?)
            .map_err(|e| format!("client certificate: {e}"))?;
        b.identity(identity);
    }
    b.build().map_err(|e| e.to_string())
}

/// Where a connection's messages go, and where it says whether it holds
/// its subscriptions.
struct Handoff<'a> {
    tx: &'a mpsc::Sender<(u64, Delivery)>,
    stats: &'a IngestStats,
}

async fn connection(
    eventloop: &mut EventLoop,
    client: &Client,
    backlog: &AckBacklog,
    filters: &[(String, u8)],
    Handoff { tx, stats }: Handoff<'_>,
    max_backoff: Duration,
    cancel: &CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    let mut attempt: u64 = 0;
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => return,
            event = eventloop.poll() => event,
        };
        // A new session voids waiting acks before any of them moves on.
        if let Ok(Polled::Connected { session_present }) = &event {
            backlog.connected(*session_present);
        }
        client.flush_acks(backlog);
        match event {
            Ok(Polled::Connected { session_present }) => {
                info!(session_present, "connected to the MQTT broker");
                backoff = Duration::from_millis(200);
                attempt = 0;
                if let Err(e) = client.subscribe(filters) {
                    warn!(error = %e, "cannot subscribe");
                }
            }
            Ok(Polled::Message(p)) => {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    r = tx.send((backlog.epoch(), p)) => if r.is_err() { return },
                }
            }
            Ok(Polled::Subscribed) => stats.set_mqtt_subscribed(true),
            Ok(Polled::SubscriptionRefused(codes)) => {
                warn!(%codes, "the broker refused a subscription");
            }
            Ok(Polled::Other) => {}
            Err(e) => {
                stats.set_mqtt_subscribed(false);
                attempt += 1;
                // Full jitter: a random wait up to the current backoff.
                let jitter = ioc_devices::noise::unit(
                    std::process::id().into(),
                    attempt,
                    Timestamp::now().millis() as u64,
                );
                let wait = backoff.mul_f64(0.5 + 0.5 * jitter);
                warn!(error = %e, "MQTT connection failed; retrying in {wait:?}");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

/// Messages handed to the engine whose journal write is not yet on disk.
/// Bounds what waits for acknowledgement (the broker's in-flight window
/// is the real bound; this one keeps memory flat whatever it is).
const UNSYNCED: usize = 8192;

async fn handle(
    mut rx: mpsc::Receiver<(u64, Delivery)>,
    client: Client,
    backlog: AckBacklog,
    ingestor: Ingestor,
) {
    // Acknowledged in the order received (MQTT asks for it), each once the
    // engine's journal holds it: the next message is decoded meanwhile.
    let (tx, mut durable) = mpsc::channel::<(Receipt, u64, Delivery)>(UNSYNCED);
    let acker = tokio::spawn(async move {
        while let Some((receipt, epoch, p)) = durable.recv().await {
            if receipt.durable().await.is_err() {
                debug!("engine closed before the journal held a message; left for redelivery");
                return;
            }
            client.ack(&p, epoch, &backlog);
        }
    });
    while let Some((epoch, p)) = rx.recv().await {
        let topic = p.topic();
        let handled = if parse_status_topic(topic).is_some() {
            ingestor
                .submit_presence(topic, p.payload())
                .await
                .map(|r| r.map(|()| Receipt::done()))
        } else {
            ingestor.submit(Origin::Mqtt { topic }, p.payload()).await
        };
        let receipt = match handled {
            Ok(Ok(receipt)) => receipt,
            // Dead-lettered: handled, acknowledged in its turn.
            Ok(Err(_)) => Receipt::done(),
            Err(_) => {
                debug!("engine closed; leaving the message unacknowledged for redelivery");
                break;
            }
        };
        if tx.send((receipt, epoch, p)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = acker.await;
}
