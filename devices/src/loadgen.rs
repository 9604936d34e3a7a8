//! Load generator: simulated telemetry of many devices over MQTT, at a fixed
//! rate or as fast as the broker takes it, for a set time.
//!
//! The devices are split over several MQTT connections (a device always
//! publishes on the same one, so its readings stay in order), each paced on
//! a 1 ms tick. Every reading's event time is its send time; an observer
//! callback learns each (device, seq) as it is handed to the client, so a
//! latency probe can time it with sub-millisecond precision. QoS 1
//! acknowledgements are counted, and the run waits for the outstanding ones
//! before it reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, NetworkOptions, QoS};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::simulator::mqtt::telemetry_topic;
use crate::{DeviceIndex, Registry, Scenario, Simulator};
use ioc_schemas::Timestamp;

/// What to send.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Readings per second over all devices; 0 for as fast as possible.
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// MQTT QoS, 0 or 1.
    pub qos: u8,
    /// MQTT connections to spread the devices over.
    pub connections: usize,
    /// Simulation scenario.
    pub scenario: Scenario,
    /// Simulation seed.
    pub seed: u64,
    /// Devices the load leaves alone (a benchmark drives them itself, e.g.
    /// to provoke alerts at a known rate).
    pub exclude: Vec<DeviceIndex>,
}

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            rate: 10_000.0,
            duration: Duration::from_secs(10),
            qos: 1,
            connections: 4,
            scenario: Scenario::Normal,
            seed: 7,
            exclude: Vec::new(),
        }
    }
}

/// What was sent.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadReport {
    /// Readings handed to the MQTT clients.
    pub sent: u64,
    /// QoS 1 acknowledgements from the broker (0 with QoS 0).
    pub acked: u64,
    /// Seconds from the first send to the last.
    pub seconds: f64,
    /// `sent / seconds`.
    pub rate: f64,
    /// Connection errors seen (each followed by a reconnect).
    pub connection_errors: u64,
}

/// Called with each reading's device and sequence number just before it is
/// handed to the client.
pub type Observer = Arc<dyn Fn(DeviceIndex, u64) + Send + Sync>;

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
}

/// Publishes the readings of every device of `registry` to the broker at
/// `host:port` as `spec` says; stops early if `cancel` fires.
pub async fn mqtt(
    registry: Arc<Registry>,
    host: &str,
    port: u16,
    spec: &LoadSpec,
    observer: Option<Observer>,
    cancel: CancellationToken,
) -> LoadReport {
    let connections = spec.connections.clamp(1, registry.devices().len().max(1));
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let deadline = start + spec.duration;
    let tasks: Vec<_> = (0..connections)
        .map(|k| {
            let worker = Worker {
                k,
                connections,
                registry: registry.clone(),
                host: host.to_owned(),
                port,
                spec: spec.clone(),
                observer: observer.clone(),
                counters: counters.clone(),
            };
            tokio::spawn(worker.run(deadline, cancel.clone()))
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let seconds = spec
        .duration
        .as_secs_f64()
        .min(start.elapsed().as_secs_f64());
    let sent = counters.sent.load(Ordering::Relaxed);
    LoadReport {
        sent,
        acked: counters.acked.load(Ordering::Relaxed),
        seconds,
        rate: sent as f64 / seconds.max(1e-9),
        connection_errors: counters.errors.load(Ordering::Relaxed),
    }
}

struct Worker {
    k: usize,
    connections: usize,
    registry: Arc<Registry>,
    host: String,
    port: u16,
    spec: LoadSpec,
    observer: Option<Observer>,
    counters: Arc<Counters>,
}

impl Worker {
    async fn run(self, deadline: Instant, cancel: CancellationToken) {
        let mut o = MqttOptions::new(
            format!("ioc-loadgen-{}-{}", std::process::id(), self.k),
            &self.host,
            self.port,
        );
        o.set_keep_alive(Duration::from_secs(30))
            .set_inflight(1000)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(o, 4096);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let in_flight = Arc::new(AtomicU64::new(0));
        let done = CancellationToken::new();
        let poller = {
            let (counters, in_flight, done) =
                (self.counters.clone(), in_flight.clone(), done.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = done.cancelled() => break,
                        ev = eventloop.poll() => match ev {
                            Ok(Event::Incoming(Incoming::PubAck(_))) => {
                                counters.acked.fetch_add(1, Ordering::Relaxed);
                                in_flight.fetch_sub(1, Ordering::Relaxed);
                            }
                            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "load generator lost its connection");
                                counters.errors.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                }
            })
        };
        let qos = if self.spec.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let mine: Vec<DeviceIndex> = (0..self.registry.devices().len())
            .filter(|i| i % self.connections == self.k)
            .map(|i| i as DeviceIndex)
            .filter(|i| !self.spec.exclude.contains(i))
            .collect();
        let topics: Vec<String> = mine
            .iter()
            .map(|&i| {
                let d = self.registry.device(i);
                telemetry_topic(d.kind, &d.id)
            })
            .collect();
        let mut sim = Simulator::new(
            self.registry.clone(),
            self.spec.scenario,
            self.spec.seed,
            Timestamp::now(),
        );
        let tick = Duration::from_millis(1);
        let per_tick = self.spec.rate / self.connections as f64 * tick.as_secs_f64();
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let (mut owed, mut next) = (0.0, 0usize);
        'send: while Instant::now() < deadline && !mine.is_empty() {
            if per_tick > 0.0 {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    _ = interval.tick() => {}
                }
                owed += per_tick;
            } else {
                // As fast as possible: a batch, then let the poller run.
                owed = 256.0;
                tokio::task::yield_now().await;
            }
            while owed >= 1.0 {
                owed -= 1.0;
                let index = mine[next];
                let topic = &topics[next];
                next = (next + 1) % mine.len();
                let reading = sim.reading(index, Timestamp::now());
                if let Some(observe) = &self.observer {
                    observe(index, reading.seq);
                }
                if qos == QoS::AtLeastOnce {
                    in_flight.fetch_add(1, Ordering::Relaxed);
                }
                if client
                    .publish(topic.as_str(), qos, false, reading.to_json())
                    .await
                    .is_err()
                {
                    break 'send;
                }
                self.counters.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Wait for the broker to acknowledge what is in flight.
        let wait_until = Instant::now() + Duration::from_secs(30);
        while qos == QoS::AtLeastOnce
            && in_flight.load(Ordering::Relaxed) > 0
            && Instant::now() < wait_until
            && !cancel.is_cancelled()
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), poller).await;
        done.cancel();
    }
}
