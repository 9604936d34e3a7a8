//! Alerts on a Kafka topic: every stored change, keyed by alert id, the
//! value the alert's state. Fed from the durable outbox like a webhook
//! ([`sink`]), so a broker that is away gets every change later, in order.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use tokio::sync::oneshot;

use crate::service::SinkFn;
use crate::store::Delivery;

struct Context;

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = Box<oneshot::Sender<Result<(), String>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, done: Self::DeliveryOpaque) {
        let _ = done.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string()));
    }
}

/// Produces keyed records, idempotently and acknowledged by all in-sync
/// replicas.
pub struct KafkaPublisher {
    producer: ThreadedProducer<Context>,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KafkaPublisher")
    }
}

impl KafkaPublisher {
    /// A producer with the settings of `config` (brokers, security,
    /// idempotence: the Kafka source's producer settings).
    pub fn new(config: &rdkafka::ClientConfig) -> Result<Self, KafkaError> {
        Ok(KafkaPublisher {
            producer: config.create_with_context(Context)?,
        })
    }

    /// Produces one record; resolves when the broker acknowledged it (or
    /// did not, with the reason).
    pub async fn send(&self, topic: &str, key: &str, payload: &[u8]) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        let record = BaseRecord::with_opaque_to(topic, Box::new(tx))
            .key(key)
            .payload(payload);
        self.producer.send(record).map_err(|(e, _)| e.to_string())?;
        rx.await
            .map_err(|_| "the producer stopped before the broker answered".to_owned())?
    }

    /// Waits up to `timeout` for what is in flight.
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}

/// The outbox subscriber that produces each delivery to `topic`: the key
/// is the alert's id, the value its state.
pub fn sink(producer: Arc<KafkaPublisher>, topic: String) -> SinkFn {
    Arc::new(move |d: Delivery| {
        let (producer, topic) = (producer.clone(), topic.clone());
        Box::pin(async move {
            let body: serde_json::Value =
                serde_json::from_str(&d.body).map_err(|e| e.to_string())?;
            let value = serde_json::to_vec(&body["alert"]).map_err(|e| e.to_string())?;
            producer.send(&topic, &d.alert, &value).await
        })
    })
}
