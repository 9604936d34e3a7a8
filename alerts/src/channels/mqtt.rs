//! Alerts on MQTT: the current state of each active alert retained at
//! `{prefix}/{alert id}` (QoS 1), cleared (an empty retained message) when
//! it is resolved, and every change on `{prefix}/events`.
//!
//! Changes come from the alert store's publish callback, after they are
//! committed. At start the retained topics are reconciled with the store:
//! the publisher subscribes to `{prefix}/+` for a moment, clears every
//! retained alert that is not active any more (resolved while the process
//! was down, or before a crash let it clear the topic) and publishes every
//! active one, so the broker's retained state agrees with the store.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ioc_schemas::{Alert, AlertChange};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Hands stored changes to the publisher; never waits.
#[derive(Clone, Debug)]
pub struct AlertMqtt {
    tx: mpsc::UnboundedSender<Vec<(Alert, AlertChange)>>,
}

/// The publisher before it runs (changes offered meanwhile wait for it).
pub struct Pending {
    rx: mpsc::UnboundedReceiver<Vec<(Alert, AlertChange)>>,
}

/// A publisher and the receiving end to start it with.
pub fn channel() -> (AlertMqtt, Pending) {
    let (tx, rx) = mpsc::unbounded_channel();
    (AlertMqtt { tx }, Pending { rx })
}

impl AlertMqtt {
    /// Queues changes for publication.
    pub fn offer(&self, changes: &[(Alert, AlertChange)]) {
        let _ = self.tx.send(changes.to_vec());
    }
}

enum Seen {
    Subscribed,
    Retained(String),
}

impl Pending {
    /// Connects with `options` (the MQTT source's broker, TLS and
    /// credentials, under the publisher's own client id) and publishes
    /// until `cancel` fires (then publishes what is queued and disconnects).
    pub fn run(
        self,
        options: rumqttc::MqttOptions,
        prefix: String,
        active: Vec<Alert>,
        cancel: CancellationToken,
    ) -> JoinHandle<()> {
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        let poll_cancel = CancellationToken::new();
        let stop_polling = poll_cancel.clone();
        let poll = tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = stop_polling.cancelled() => break,
                    e = eventloop.poll() => e,
                };
                match event {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = seen_tx.send(Seen::Subscribed);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.retain => {
                        let _ = seen_tx.send(Seen::Retained(p.topic));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!(error = %e, "alert publisher: MQTT connection lost; reconnecting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        let mut rx = self.rx;
        tokio::spawn(async move {
            reconcile(&client, &prefix, &active, seen_rx).await;
            // The newest version published of each alert: a change committed
            // while the start-up snapshot was read is in both, and must not
            // be published twice or after a newer one.
            let mut latest: HashMap<String, u32> =
                active.iter().map(|a| (a.id.clone(), a.version)).collect();
            loop {
                let batch = tokio::select! {
                    _ = cancel.cancelled() => break,
                    b = rx.recv() => b,
                };
                let Some(batch) = batch else { break };
                publish(&client, &prefix, batch, &mut latest).await;
            }
            while let Ok(batch) = rx.try_recv() {
                publish(&client, &prefix, batch, &mut latest).await;
            }
            let _ = client.disconnect().await;
            // Let the event loop send what is queued, then stop it.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while !poll.is_finished() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            poll_cancel.cancel();
        })
    }
}

async fn reconcile(
    client: &AsyncClient,
    prefix: &str,
    active: &[Alert],
    mut seen: mpsc::UnboundedReceiver<Seen>,
) {
    let filter = format!("{prefix}/+");
    if client.subscribe(&filter, QoS::AtLeastOnce).await.is_err() {
        return;
    }
    let mut retained = HashSet::new();
    let mut settle = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let next = tokio::time::timeout_at(settle, seen.recv()).await;
        match next {
            Ok(Some(Seen::Subscribed)) => {
                // Retained messages follow the subscription's acknowledgement.
                settle = tokio::time::Instant::now() + Duration::from_millis(500);
            }
            Ok(Some(Seen::Retained(topic))) => {
                retained.insert(topic);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let _ = client.unsubscribe(&filter).await;
    let ids: HashSet<&str> = active.iter().map(|a| a.id.as_str()).collect();
    let mut cleared = 0;
    for topic in &retained {
        let id = topic
            .strip_prefix(prefix)
            .unwrap_or(topic)
            .trim_start_matches('/');
        if !ids.contains(id) {
            let _ = client
                .publish(topic, QoS::AtLeastOnce, true, Vec::new())
                .await;
            cleared += 1;
        }
    }
    for a in active {
        let body = serde_json::to_vec(a).unwrap_or_default();
        let _ = client
            .publish(format!("{prefix}/{}", a.id), QoS::AtLeastOnce, true, body)
            .await;
    }
    info!(
        active = active.len(),
        cleared, "alerts on MQTT reconciled with the store"
    );
}

async fn publish(
    client: &AsyncClient,
    prefix: &str,
    batch: Vec<(Alert, AlertChange)>,
    latest: &mut HashMap<String, u32>,
) {
    for (alert, change) in batch {
        match latest.get(&alert.id) {
            Some(&v) if v >= alert.version => continue,
            _ => {}
        }
        // Resolved ones too (a reopening comes with a newer version). A few
        // bytes an alert; alerts are few.
        latest.insert(alert.id.clone(), alert.version);
        let event = serde_json::json!({"alert": &alert, "change": &change}).to_string();
        let _ = client
            .publish(format!("{prefix}/events"), QoS::AtLeastOnce, false, event)
            .await;
        let state = if alert.status.is_active() {
            serde_json::to_vec(&alert).unwrap_or_default()
        } else {
            Vec::new()
        };
        let _ = client
            .publish(
                format!("{prefix}/{}", alert.id),
                QoS::AtLeastOnce,
                true,
                state,
            )
            .await;
    }
}
