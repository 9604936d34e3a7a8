//! The Kafka consumer-group source.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Statistics};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{KafkaConfig, StartFrom};
use crate::deadletter::Origin;
use crate::pipeline::Ingestor;

/// The source's view of librdkafka's callbacks: statistics to metrics,
/// synchronous commit before partitions are revoked.
struct Context;

impl ClientContext for Context {
    fn stats(&self, s: Statistics) {
        for (topic, t) in &s.topics {
            for (partition, p) in &t.partitions {
                // Partition -1 is librdkafka's internal "unassigned" queue.
                if p.partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                let labels = [
                    ("topic", topic.clone()),
                    ("partition", partition.to_string()),
                ];
                metrics::gauge!("ioc_kafka_consumer_lag", &labels).set(p.consumer_lag as f64);
                // Counters, so that `rate()` gives the fetch rate per partition.
                metrics::counter!("ioc_kafka_fetched_messages_total", &labels).absolute(p.rxmsgs);
                metrics::counter!("ioc_kafka_fetched_bytes_total", &labels).absolute(p.rxbytes);
                metrics::gauge!("ioc_kafka_committed_offset", &labels)
                    .set(p.committed_offset as f64);
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        warn!(%error, reason, "Kafka client error");
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(partitions) => {
                // Everything polled before this callback has been handed off
                // and its offset stored (same thread): commit it now, so the
                // next owner starts exactly after it.
                commit_sync(consumer, "before revoking partitions");
                info!(partitions = partitions.count(), "Kafka partitions revoked");
            }
            Rebalance::Assign(partitions) => {
                info!(partitions = partitions.count(), "Kafka partitions assigned");
            }
            Rebalance::Error(e) => warn!(error = %e, "Kafka rebalance error"),
        }
    }
}

fn commit_sync(consumer: &BaseConsumer<Context>, when: &str) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => debug!(when, "Kafka offsets committed"),
        // Nothing stored since the last commit.
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => warn!(error = %e, when, "cannot commit Kafka offsets"),
    }
}

/// A consumer-group source feeding an [`Ingestor`].
pub struct KafkaSource {
    config: KafkaConfig,
    ingestor: Ingestor,
}

impl KafkaSource {
    /// A source with these settings.
    pub fn new(config: KafkaConfig, ingestor: Ingestor) -> Self {
        KafkaSource { config, ingestor }
    }

    fn consumer(&self) -> Result<BaseConsumer<Context>, KafkaError> {
        let c = &self.config;
        let mut cc = c.client_config();
        cc.set("group.id", &c.group_id)
            // Offsets are stored by us after hand-off, committed by
            // librdkafka every auto.commit.interval.ms and by us on revoke
            // and on stop.
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                match c.start_from {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                },
            )
            // Envelopes are small; fetch in large batches.
            .set("fetch.wait.max.ms", "50")
            .set("queued.min.messages", "100000");
        c.apply_properties(&mut cc);
        let consumer: BaseConsumer<Context> = cc.create_with_context(Context)?;
        let topics: Vec<&str> = c.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(consumer)
    }

    /// Starts the poll thread. It stops when `cancel` fires, committing
    /// what it handed off, or when the engine closes.
    pub fn spawn(
        self,
        cancel: CancellationToken,
    ) -> Result<std::thread::JoinHandle<()>, KafkaError> {
        let consumer = self.consumer()?;
        info!(
            servers = %self.config.bootstrap_servers,
            group = %self.config.group_id,
            topics = ?self.config.topics,
            "Kafka source starting"
        );
        std::thread::Builder::new()
            .name("ioc-kafka".into())
            .spawn(move || {
                run(&consumer, &self.ingestor, &cancel);
                commit_sync(&consumer, "on stop");
                info!("Kafka source stopped");
            })
            .map_err(|e| KafkaError::Subscription(format!("cannot start the Kafka thread: {e}")))
    }
}

fn run(consumer: &BaseConsumer<Context>, ingestor: &Ingestor, cancel: &CancellationToken) {
    let mut last_error_log: Option<Instant> = None;
    while !cancel.is_cancelled() {
        let Some(polled) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = match polled {
            Ok(m) => m,
            Err(e) => {
                // librdkafka reconnects by itself; say so once in a while.
                if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    warn!(error = %e, "Kafka consumer error (retrying)");
                    last_error_log = Some(Instant::now());
                }
                continue;
            }
        };
        let origin = Origin::Kafka {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key(),
        };
        if ingestor
            .submit_blocking(origin, message.payload().unwrap_or_default())
            .is_err()
        {
            // The engine is closing: this record was not taken, so its
            // offset is not stored and the next owner reads it again.
            return;
        }
        if let Err(e) = consumer.store_offset_from_message(&message) {
            warn!(error = %e, "cannot store a Kafka offset");
        }
    }
}
