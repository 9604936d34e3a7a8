//! Load generator over Kafka: the simulated readings of
//! [`ioc_devices::loadgen`], produced to a telemetry topic with the device
//! id as the record key, at a fixed rate or as fast as the broker takes
//! them.
//!
//! One producer thread walks the devices round-robin on a 1 ms pacing
//! tick; every reading's event time is its send time, and the observer
//! learns each (device, seq) just before the record is handed to
//! librdkafka. Delivery reports are counted as acknowledgements, and the
//! run flushes (waits for them) before it reports. It lives here, not in
//! `ioc-devices`, because only this module names rdkafka.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ioc_devices::loadgen::{LoadReport, LoadSpec, Observer};
use ioc_devices::{DeviceIndex, Registry, Simulator};
use ioc_schemas::Timestamp;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use tokio_util::sync::CancellationToken;

use super::KafkaConfig;

#[derive(Default)]
struct Acks {
    acked: AtomicU64,
    failed: AtomicU64,
}

struct Counting(Arc<Acks>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.acked.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Produces readings of every device of `registry` to `topic` as `spec`
/// says (`spec.qos` and `spec.connections` do not apply); stops early if
/// `cancel` fires. Blocking: run it on a thread of its own.
pub fn produce(
    config: &KafkaConfig,
    topic: &str,
    registry: Arc<Registry>,
    spec: &LoadSpec,
    observer: Option<Observer>,
    cancel: &CancellationToken,
) -> Result<LoadReport, KafkaError> {
    let acks = Arc::new(Acks::default());
    let mut client = config.client_config();
    client
        .set("linger.ms", "1")
        .set("queue.buffering.max.messages", "1000000")
        .set("acks", "all");
    let producer: ThreadedProducer<Counting> =
        client.create_with_context(Counting(acks.clone()))?;
    let devices = registry.devices().len();
    let mut sim = Simulator::new(registry.clone(), spec.scenario, spec.seed, Timestamp::now());
    let start = Instant::now();
    let deadline = start + spec.duration;
    let tick = Duration::from_millis(1);
    let per_tick = spec.rate * tick.as_secs_f64();
    let (mut owed, mut next, mut sent) = (0.0f64, 0usize, 0u64);
    let mut next_tick = start;
    'send: while Instant::now() < deadline && devices > 0 && !cancel.is_cancelled() {
        if per_tick > 0.0 {
            next_tick += tick;
            if let Some(wait) = next_tick.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            owed += per_tick;
        } else {
            owed = 1024.0;
        }
        while owed >= 1.0 {
            owed -= 1.0;
            let index = next as DeviceIndex;
            next = (next + 1) % devices;
            if spec.exclude.contains(&index) {
                continue;
            }
            let reading = sim.reading(index, Timestamp::now());
            if let Some(observe) = &observer {
                observe(index, reading.seq);
            }
            let payload = reading.to_json();
            let key = registry.device(index).id.as_str();
            let mut record = BaseRecord::to(topic).key(key).payload(&payload);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(1));
                        if cancel.is_cancelled() {
                            break 'send;
                        }
                    }
                    Err((e, _)) => return Err(e),
                }
            }
            sent += 1;
        }
    }
    let seconds = spec
        .duration
        .as_secs_f64()
        .min(start.elapsed().as_secs_f64());
    producer.flush(Duration::from_secs(30))?;
    Ok(LoadReport {
        sent,
        acked: acks.acked.load(Ordering::Relaxed),
        seconds,
        rate: sent as f64 / seconds.max(1e-9),
        connection_errors: acks.failed.load(Ordering::Relaxed),
    })
}
