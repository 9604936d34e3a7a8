//! Dead letters to a Kafka topic.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use tracing::warn;

use super::KafkaConfig;
use crate::deadletter::{DeadLetter, FileSink, Sink};

/// Delivery reports: a record the broker did not take goes to the file.
struct Context {
    fallback: Arc<Mutex<FileSink>>,
}

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = Box<DeadLetter>;

    fn delivery(&self, result: &DeliveryResult<'_>, letter: Self::DeliveryOpaque) {
        if let Err((e, _)) = result {
            warn!(error = %e, "dead letter not delivered to Kafka; writing it to the file");
            metrics::counter!("ioc_deadletters_fallback_total").increment(1);
            let mut file = self
                .fallback
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Err(e) = file.write(&letter).and_then(|()| file.flush()) {
                tracing::error!(error = %e, ?letter, "cannot write a dead letter; record logged here");
            }
        }
    }
}

/// Produces dead letters to `dead_letter.kafka_topic`, keyed by source,
/// idempotently and acknowledged by all in-sync replicas.
pub struct KafkaSink {
    producer: BaseProducer<Context>,
    topic: String,
}

impl KafkaSink {
    /// A producer for `topic`; `fallback` takes what Kafka cannot.
    pub fn new(config: &KafkaConfig, topic: &str, fallback: FileSink) -> Result<Self, KafkaError> {
        let cc = config.producer_config();
        let producer = cc.create_with_context(Context {
            fallback: Arc::new(Mutex::new(fallback)),
        })?;
        Ok(KafkaSink {
            producer,
            topic: topic.to_owned(),
        })
    }
}

impl Sink for KafkaSink {
    fn write(&mut self, letter: &DeadLetter) -> std::io::Result<()> {
        let json = letter.to_json();
        let mut opaque = Box::new(letter.clone());
        loop {
            let record = BaseRecord::with_opaque_to(&self.topic, opaque)
                .key(letter.source.as_str())
                .payload(&json);
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    opaque = r.delivery_opaque;
                    self.producer.poll(Duration::from_millis(100));
                }
                Err((e, _)) => return Err(std::io::Error::other(e)),
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Wait for the broker's acknowledgements (or the fallback).
        self.producer
            .flush(Duration::from_secs(35))
            .map_err(std::io::Error::other)
    }

    fn name(&self) -> &'static str {
        "kafka"
    }
}
