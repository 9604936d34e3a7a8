//! The processing engine: a Timely Dataflow over event time.
//!
//! - [`Engine::start`] spawns the workers (at least two) and returns an
//!   [`EngineInput`], the bounded hand-off that ingest sends [`Reading`]s to;
//! - [`watermark`]: the shared event-time watermark that every worker's
//!   input capability follows, so frontiers are watermarks;
//! - [`dataflow`]: the dataflow itself: readings are exchanged by device to
//!   the worker that owns it, applied to [`device_state::DeviceTable`]
//!   (latest state, duplicate and order checks) and evaluated by the
//!   [`rules`]; results leave through a bounded channel of
//!   [`EngineOutput`]s;
//! - [`rules`]: each rule a plain state machine, tested without timely.
//!
//! This is the only crate that names a timely type. It is synchronous: the
//! async edges meet it at the two bounded channels. Dropping every
//! [`EngineInput`] closes the inputs; [`Engine::join`] then waits for the
//! dataflow to drain.

pub mod dataflow;
pub mod device_state;
pub mod reading;
pub mod rules;
pub mod watermark;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use ioc_devices::Registry;
use ioc_schemas::EngineOutput;
use timely::WorkerConfig;

pub use reading::Reading;
use rules::river_level::RiverLevelRule;
use watermark::Watermark;

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Worker threads (at least 1; 2 or more in production).
    pub workers: usize,
    /// How far behind the newest event time a reading may arrive and still
    /// be on time.
    pub out_of_orderness: Duration,
    /// After this long without readings, event time follows the wall clock.
    pub idle_timeout: Duration,
    /// River-level hysteresis margin, in metres.
    pub river_hysteresis_m: f64,
    /// Capacity of the input channel, in readings.
    pub input_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: 2,
            out_of_orderness: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            river_hysteresis_m: 0.2,
            input_capacity: 65_536,
        }
    }
}

/// Counters the engine keeps; also exported as Prometheus metrics.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Readings applied or examined by the state operator.
    pub processed: AtomicU64,
    /// Readings with the same device, sequence number and event time as the latest.
    pub duplicates: AtomicU64,
    /// Readings older than their device's latest reading.
    pub out_of_order: AtomicU64,
    /// Readings older than the watermark when they arrived.
    pub late: AtomicU64,
}

impl EngineStats {
    /// A plain snapshot of the counters.
    pub fn snapshot(&self) -> [(&'static str, u64); 4] {
        [
            ("processed", self.processed.load(Ordering::Relaxed)),
            ("duplicates", self.duplicates.load(Ordering::Relaxed)),
            ("out_of_order", self.out_of_order.load(Ordering::Relaxed)),
            ("late", self.late.load(Ordering::Relaxed)),
        ]
    }
}

/// State shared by the workers and the input handles.
#[derive(Debug)]
pub struct Shared {
    /// One input channel per worker; a device's readings always travel
    /// through the channel of the worker that owns the device, so they keep
    /// their arrival order and the exchange stays local.
    rxs: Vec<flume::Receiver<Reading>>,
    registry: Arc<Registry>,
    river: RiverLevelRule,
    watermark: Watermark,
    threads: Vec<OnceLock<Thread>>,
    stats: Arc<EngineStats>,
}

impl Shared {
    fn register_thread(&self, index: usize) {
        if let Some(slot) = self.threads.get(index) {
            let _ = slot.set(std::thread::current());
        }
    }

    fn wake(&self, worker: usize) {
        if let Some(t) = self.threads.get(worker).and_then(OnceLock::get) {
            t.unpark();
        }
    }
}

/// The engine could not start or failed while running.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Timely refused the configuration.
    #[error("cannot start the timely workers: {0}")]
    Start(String),
    /// A worker thread panicked.
    #[error("a processing worker failed: {0}")]
    Worker(String),
}

/// The engine is shutting down and takes no more readings.
#[derive(Debug, thiserror::Error)]
#[error("the processing engine is closed")]
pub struct Closed;

/// The hand-off into the engine. Clone it freely; the engine's inputs close
/// when every clone is dropped.
#[derive(Clone, Debug)]
pub struct EngineInput {
    txs: Vec<flume::Sender<Reading>>,
    shared: Arc<Shared>,
}

/// The worker that owns a device. Matches timely's `Exchange` routing
/// (`hash % peers`), so readings never change worker inside the dataflow.
fn owner(device: ioc_devices::DeviceIndex, workers: usize) -> usize {
    device as usize % workers
}

impl EngineInput {
    /// Sends a reading, waiting while the engine is full.
    pub async fn send(&self, reading: Reading) -> Result<(), Closed> {
        let w = owner(reading.device, self.txs.len());
        self.txs[w].send_async(reading).await.map_err(|_| Closed)?;
        self.shared.wake(w);
        Ok(())
    }

    /// Sends a reading from synchronous code, blocking while the engine is full.
    pub fn send_blocking(&self, reading: Reading) -> Result<(), Closed> {
        let w = owner(reading.device, self.txs.len());
        self.txs[w].send(reading).map_err(|_| Closed)?;
        self.shared.wake(w);
        Ok(())
    }
}

impl Drop for EngineInput {
    fn drop(&mut self) {
        // The last handle closes the channels; wake the workers so they
        // notice now rather than at their next idle check.
        for w in 0..self.txs.len() {
            self.shared.wake(w);
        }
    }
}

/// A running engine.
pub struct Engine {
    guards: timely::communication::WorkerGuards<()>,
    stats: Arc<EngineStats>,
}

impl Engine {
    /// Starts the workers. Outputs go to `output`.
    pub fn start(
        config: &EngineConfig,
        registry: Arc<Registry>,
        output: flume::Sender<EngineOutput>,
    ) -> Result<(Engine, EngineInput), EngineError> {
        let workers = config.workers.max(1);
        let per_worker = (config.input_capacity / workers).max(1);
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..workers).map(|_| flume::bounded(per_worker)).unzip();
        let stats = Arc::new(EngineStats::default());
        let shared = Arc::new(Shared {
            rxs,
            registry,
            river: RiverLevelRule {
                margin_m: config.river_hysteresis_m,
            },
            watermark: Watermark::new(
                config.out_of_orderness.as_millis() as i64,
                config.idle_timeout.as_millis() as i64,
            ),
            threads: (0..workers).map(|_| OnceLock::new()).collect(),
            stats: stats.clone(),
        });
        let timely_config = timely::Config {
            communication: timely::CommunicationConfig::Process(workers),
            worker: WorkerConfig::default(),
        };
        let worker_shared = shared.clone();
        let guards = timely::execute(timely_config, move |worker| {
            dataflow::run_worker(worker, &worker_shared, &output);
        })
        .map_err(EngineError::Start)?;
        Ok((Engine { guards, stats }, EngineInput { txs, shared }))
    }

    /// The engine's counters.
    pub fn stats(&self) -> Arc<EngineStats> {
        self.stats.clone()
    }

    /// Waits until the inputs are closed and everything has been processed.
    pub fn join(self) -> Result<(), EngineError> {
        for r in self.guards.join() {
            r.map_err(EngineError::Worker)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
