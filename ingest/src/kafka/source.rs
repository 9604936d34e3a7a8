//! The Kafka consumer-group source.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, Statistics};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{KafkaConfig, StartFrom};
use crate::deadletter::Origin;
use crate::pipeline::Ingestor;
use ioc_processing::{LogSource, Positions};

/// The source's view of librdkafka's callbacks: statistics to metrics,
/// offsets set on assignment and committed before revocation. Holds the
/// source's part in the engine's checkpoints, when state is durable.
#[derive(Default)]
struct Context {
    log: Mutex<Option<LogSource>>,
    /// Partitions already started where the restored checkpoint left
    /// them (only their first assignment after a start).
    seeded: Mutex<BTreeSet<(String, i32)>>,
}

impl Context {
    fn log(&self) -> MutexGuard<'_, Option<LogSource>> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
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
                // Everything polled before this callback has been handed
                // off (same thread): commit it, so that the next owner
                // starts exactly after it.
                if let Some(log) = self.log().as_ref() {
                    store(consumer, &log.handed_positions());
                }
                commit_sync(consumer, "before revoking partitions");
                info!(partitions = partitions.count(), "Kafka partitions revoked");
            }
            Rebalance::Assign(partitions) => {
                // A partition the restored checkpoint has a position for
                // starts there: the records after it are not in the state,
                // whatever the group committed since.
                let mut seeded = self.seeded.lock().unwrap_or_else(PoisonError::into_inner);
                let log = self.log();
                let mut from_checkpoint = 0;
                for mut e in partitions.elements() {
                    let key = (e.topic().to_owned(), e.partition());
                    let restored = log
                        .as_ref()
                        .and_then(|l| l.restored().get(&key.0)?.get(&key.1).copied());
                    if let Some(offset) = restored
                        && !seeded.contains(&key)
                    {
                        match e.set_offset(Offset::Offset(offset)) {
                            Ok(()) => from_checkpoint += 1,
                            Err(err) => {
                                warn!(topic = %key.0, partition = key.1, error = %err, "cannot start a Kafka partition at the checkpoint's offset")
                            }
                        }
                        seeded.insert(key);
                    }
                }
                info!(
                    partitions = partitions.count(),
                    from_checkpoint, "Kafka partitions assigned"
                );
            }
            Rebalance::Error(e) => warn!(error = %e, "Kafka rebalance error"),
        }
    }
}

/// Stores `positions` (the next offset to read per partition) for the
/// next commit. A partition no longer assigned is skipped.
fn store(consumer: &BaseConsumer<Context>, positions: &Positions) {
    for (topic, parts) in positions {
        for (&partition, &next) in parts {
            // librdkafka stores the record's offset plus one.
            if let Err(e) = consumer.store_offset(topic, partition, next - 1) {
                debug!(topic, partition, error = %e, "Kafka offset not stored");
            }
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
            // Offsets are stored by us (after hand-off, or once a
            // checkpoint holds the records), committed by librdkafka every
            // auto.commit.interval.ms and by us on revoke and on stop.
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
        let context = Context {
            log: Mutex::new(self.ingestor.log_source()),
            seeded: Mutex::default(),
        };
        let consumer: BaseConsumer<Context> = cc.create_with_context(context)?;
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
    // With durable state, offsets are committed once a checkpoint holds
    // the records before them; a short poll lets a checkpoint's cut wait
    // little for this thread.
    let durable = consumer.context().log().is_some();
    let wait = Duration::from_millis(if durable { 20 } else { 100 });
    while !cancel.is_cancelled() {
        if let Some(log) = consumer.context().log().as_mut() {
            log.hold_for_checkpoint();
            if let Some(p) = log.newly_durable() {
                store(consumer, &p);
            }
        }
        let Some(polled) = consumer.poll(wait) else {
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
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        let origin = Origin::Kafka {
            topic,
            partition,
            offset,
            key: message.key(),
        };
        // Accepted or dead-lettered: handled. `Err`: the engine is closing
        // and did not take it, so its offset is not stored and the next
        // owner reads it again.
        if ingestor
            .submit_from_log_blocking(origin, message.payload().unwrap_or_default())
            .is_err()
        {
            return;
        }
        match consumer.context().log().as_ref() {
            Some(log) => log.handed(topic, partition, offset),
            // State in memory only: handed over is as far as it goes.
            None => {
                if let Err(e) = consumer.store_offset(topic, partition, offset) {
                    warn!(error = %e, "cannot store a Kafka offset");
                }
            }
        }
    }
    // Stopping: the engine's last checkpoint (after the sources stop)
    // holds everything handed over.
    if let Some(log) = consumer.context().log().as_ref() {
        store(consumer, &log.handed_positions());
    }
}
