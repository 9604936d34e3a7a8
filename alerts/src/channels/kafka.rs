//! A producer for records other components publish (alert states), with
//! each delivery's outcome returned to the caller.

use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use tokio::sync::oneshot;

use super::KafkaConfig;

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
    /// A producer for the cluster of `config`.
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaError> {
        let cc = config.producer_config();
        Ok(KafkaPublisher {
            producer: cc.create_with_context(Context)?,
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
