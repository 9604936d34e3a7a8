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
use rumqttc::{
    AsyncClient, Event, EventLoop, Incoming, MqttOptions, NetworkOptions, Publish, QoS,
    SubscribeFilter, Transport,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::MqttSourceConfig;
use crate::deadletter::Origin;
use crate::pipeline::Ingestor;

/// A configured MQTT source, ready to run.
pub struct MqttSource {
    config: MqttSourceConfig,
    ingestor: Ingestor,
}

fn qos(level: u8) -> QoS {
    if level == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

impl MqttSource {
    /// A source from its configuration.
    pub fn new(config: MqttSourceConfig, ingestor: Ingestor) -> Self {
        MqttSource { config, ingestor }
    }

    fn options(&self) -> MqttOptions {
        let c = &self.config;
        // An invalid URL is reported by configuration validation before start.
        let (host, port) = c.endpoint().unwrap_or_else(|_| ("127.0.0.1".into(), 1883));
        let mut o = MqttOptions::new(&c.client_id, host, port);
        o.set_keep_alive(c.keep_alive)
            .set_clean_session(!c.persistent_session)
            .set_manual_acks(true)
            .set_max_packet_size(c.max_packet_bytes, c.max_packet_bytes);
        if let Some(user) = &c.username {
            o.set_credentials(user, c.password.clone().unwrap_or_default());
        }
        if c.tls() {
            match tls_connector(c) {
                Ok(connector) => {
                    o.set_transport(Transport::tls_with_config(connector.into()));
                }
                // Files are checked by configuration validation; a bad one
                // here is logged and the connection attempts will fail.
                Err(e) => warn!(error = %e, "cannot set up MQTT TLS"),
            }
        }
        o
    }

    /// Runs until `cancel` fires, then disconnects.
    pub async fn run(self, cancel: CancellationToken) {
        let (client, mut eventloop) = AsyncClient::new(self.options(), 256);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let (tx, rx) = mpsc::channel::<Publish>(1024);
        let handler = tokio::spawn(handle(rx, client.clone(), self.ingestor));
        info!(url = %self.config.url, topics = ?self.config.topics, "MQTT source starting");
        let filters: Vec<_> = self
            .config
            .topics
            .iter()
            .map(|t| SubscribeFilter::new(t.clone(), qos(self.config.qos)))
            .collect();
        connection(
            &mut eventloop,
            &client,
            &filters,
            &tx,
            self.config.max_backoff,
            &cancel,
        )
        .await;
        // Stop taking messages, let the handler finish what it holds, then leave.
        drop(tx);
        let _ = handler.await;
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(ev) = eventloop.poll().await {
                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
        info!("MQTT source stopped");
    }
}

/// A TLS connector with the configured CA and client certificate.
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

async fn connection(
    eventloop: &mut EventLoop,
    client: &AsyncClient,
    filters: &[SubscribeFilter],
    tx: &mpsc::Sender<Publish>,
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
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                info!(
                    session_present = ack.session_present,
                    "connected to the MQTT broker"
                );
                backoff = Duration::from_millis(200);
                attempt = 0;
                if let Err(e) = client.try_subscribe_many(filters.iter().cloned()) {
                    warn!(error = %e, "cannot subscribe");
                }
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    r = tx.send(p) => if r.is_err() { return },
                }
            }
            Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    warn!(?ack, "the broker refused a subscription");
                }
            }
            Ok(_) => {}
            Err(e) => {
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

async fn handle(mut rx: mpsc::Receiver<Publish>, client: AsyncClient, ingestor: Ingestor) {
    while let Some(p) = rx.recv().await {
        let origin = Origin::Mqtt { topic: &p.topic };
        if ingestor.submit(origin, &p.payload).await.is_err() {
            debug!("engine closed; leaving the message unacknowledged for redelivery");
            return;
        }
        if p.qos != QoS::AtMostOnce && client.ack(&p).await.is_err() {
            return;
        }
    }
}
