//! The Kafka consumer-group source.

use std::collections::VecDeque;
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
use ioc_processing::Receipt;

/// The source's view of librdkafka's callbacks: statistics to metrics,
/// synchronous commit before partitions are revoked. Holds the records
/// handed to the engine whose offsets wait for the journal.
#[derive(Default)]
struct Context {
    unsynced: std::sync::Mutex<VecDeque<Unsynced>>,
}

impl Context {
    fn unsynced(&self) -> std::sync::MutexGuard<'_, VecDeque<Unsynced>> {
        self.unsynced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

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
                // (same thread): once the journal holds it, store and commit
                // its offsets now, so the next owner starts exactly after it.
                store_durable(consumer, &mut self.unsynced(), true);
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
        let consumer: BaseConsumer<Context> = cc.create_with_context(Context::default())?;
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

/// Records handed to the engine whose journal write is not yet on disk.
const UNSYNCED: usize = 16_384;

/// A record's offset waiting for its reading to be durable.
struct Unsynced {
    receipt: Receipt,
    topic: String,
    partition: i32,
    offset: i64,
}

/// Stores the offsets of the records at the front whose readings are
/// durable (all of them with `wait`). `false`: the engine closed.
fn store_durable(
    consumer: &BaseConsumer<Context>,
    unsynced: &mut VecDeque<Unsynced>,
    wait: bool,
) -> bool {
    while let Some(front) = unsynced.front_mut() {
        let result = if wait {
            None
        } else {
            match front.receipt.try_durable() {
                None => return true,
                some => some,
            }
        };
        let Some(u) = unsynced.pop_front() else { break };
        let Unsynced {
            receipt,
            topic,
            partition,
            offset,
        } = u;
        if result.unwrap_or_else(|| receipt.wait()).is_err() {
            return false;
        }
        // The record's own offset: librdkafka stores the next one (+1).
        if let Err(e) = consumer.store_offset(&topic, partition, offset) {
            warn!(error = %e, "cannot store a Kafka offset");
        }
    }
    true
}

fn run(consumer: &BaseConsumer<Context>, ingestor: &Ingestor, cancel: &CancellationToken) {
    let mut last_error_log: Option<Instant> = None;
    // Offsets are stored in order, once the journal holds each record.
    let unsynced = || consumer.context().unsynced();
    while !cancel.is_cancelled() {
        if !store_durable(consumer, &mut unsynced(), false) {
            return;
        }
        let waiting = !unsynced().is_empty();
        let Some(polled) = consumer.poll(Duration::from_millis(if waiting { 2 } else { 100 }))
        else {
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
        let receipt = match ingestor.submit_blocking(origin, message.payload().unwrap_or_default())
        {
            Ok(Ok(receipt)) => receipt,
            // Dead-lettered: handled.
            Ok(Err(_)) => Receipt::done(),
            // The engine is closing: this record was not taken, so its
            // offset is not stored and the next owner reads it again.
            Err(_) => return,
        };
        let mut queue = unsynced();
        queue.push_back(Unsynced {
            receipt,
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
        });
        if queue.len() >= UNSYNCED && !store_durable(consumer, &mut queue, true) {
            return;
        }
    }
    // Stopping: what was handed off is stored once durable (the engine is
    // still running; it closes after the sources).
    store_durable(consumer, &mut unsynced(), true);
}
