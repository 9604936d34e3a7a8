//! The processing engine: a Timely Dataflow over event time.
//!
//! - [`Engine::start`] spawns the workers (at least two) and returns an
//!   [`EngineInput`], the bounded hand-off that ingest sends [`Reading`]s to;
//! - `watermark`: the shared event-time watermark that every worker's
//!   input capability follows, so frontiers are watermarks;
//! - `dataflow`: the dataflow itself: readings are exchanged by device to
//!   the worker that owns it, applied to `device_state::DeviceTable`
//!   (latest state at once; windows and rules with each reading that
//!   follows its device's previous one, the rest in event-time order once
//!   the watermark passes them); results leave through a bounded channel of
//!   [`EngineOutput`]s;
//! - `windows`: rolling rainfall totals, traffic and camera aggregates;
//! - `rules`: the rules file ([`RuleSet`], reloadable through
//!   [`RulesCell`]) and each rule kind, one module each behind
//!   `rules::RuleKind`, its state a plain serializable value, tested
//!   without timely;
//! - `geo`: the geo operator's state (moving subjects' zones and
//!   tracks, zones' rule states), which calls the kinds' geo hooks.
//!
//! Other crates use the engine ([`Engine`], [`EngineConfig`],
//! [`EngineInput`], [`EngineStats`]), the readings it takes ([`Reading`]),
//! the rules and zones in force ([`RuleSet`], [`RulesCell`], [`ZonesCell`])
//! and the duplicate window ingest shares with it ([`seq_window`]); the
//! rest is the crate's own.
//!
//! This is the only crate that names a timely type. It is synchronous: the
//! async edges meet it at the two bounded channels. Dropping every
//! [`EngineInput`] closes the inputs; [`Engine::join`] then waits for the
//! dataflow to drain.

mod dataflow;
mod device_state;
mod geo;
mod reading;
mod reorder;
mod rules;
mod sample;
pub mod seq_window;
mod watermark;
mod windows;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use ioc_devices::Registry;
use ioc_schemas::{EngineOutput, Timestamp};
use timely::WorkerConfig;

use device_state::TableConfig;
pub use reading::Reading;
pub use rules::{RuleErrors, RuleSet};
use watermark::Watermark;

/// Rules the engine runs when it is given none: river-gauge alarm levels
/// (BĐ1–BĐ3 from the registry) with a 0.2 m hysteresis.
pub const BUILTIN_RULES: &str = r#"
[[rule]]
id = "river_level"
kind = "threshold"
devices = ["river_gauge"]
field = "water_level_m"
levels = "registry"
hysteresis = 0.2
title_vi = "Mực nước sông"
title_en = "River water level"
"#;

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
    /// How far behind the watermark a reading may arrive and still amend
    /// windows; older readings are dead-lettered as `late` by ingest.
    pub lateness: Duration,
    /// Length of a rainfall bucket (divides one hour): the step at which
    /// rolling totals move.
    pub rain_bucket: Duration,
    /// The rules; `None` runs [`BUILTIN_RULES`].
    pub rules: Option<Arc<RuleSet>>,
    /// Zones and assets (geofences, zone rules, alert enrichment); none
    /// when absent. Shared so a reload reaches the engine.
    pub zones: Option<Arc<ZonesCell>>,
    /// Capacity of the input channel, in readings.
    pub input_capacity: usize,
    /// Per-device progress: a reading that directly follows its device's
    /// previous one (next `seq`, event time not older) reaches the device's
    /// windows and rules at once instead of waiting for the watermark, and
    /// rolling rainfall totals are judged as readings make them grow. Off,
    /// every decision waits for the watermark.
    pub per_device_progress: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: 2,
            out_of_orderness: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(2),
            lateness: Duration::from_secs(3600),
            rain_bucket: Duration::from_secs(300),
            rules: None,
            zones: None,
            input_capacity: 65_536,
            per_device_progress: true,
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
    /// Bytes of per-device state (slots, rule states, windows) and reorder
    /// buffers over all workers, as of each worker's last scan (every
    /// minute of event time).
    pub state_bytes: AtomicU64,
    /// Bytes of the largest single device's state seen.
    pub largest_device_bytes: AtomicU64,
    /// Readings decided at once: each directly followed its device's
    /// previous one (the rest waited for the watermark).
    pub in_order: AtomicU64,
    /// Devices' own positions geofenced at once, for the same reason.
    pub positions_at_once: AtomicU64,
}

impl EngineStats {
    /// A plain snapshot of the counters.
    pub fn snapshot(&self) -> [(&'static str, u64); 6] {
        [
            ("processed", self.processed.load(Ordering::Relaxed)),
            ("duplicates", self.duplicates.load(Ordering::Relaxed)),
            ("out_of_order", self.out_of_order.load(Ordering::Relaxed)),
            ("late", self.late.load(Ordering::Relaxed)),
            ("in_order", self.in_order.load(Ordering::Relaxed)),
            (
                "positions_at_once",
                self.positions_at_once.load(Ordering::Relaxed),
            ),
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
    rules: Arc<RulesCell>,
    zones: Arc<ZonesCell>,
    table: TableConfig,
    watermark: Watermark,
    lateness_ms: i64,
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

/// The rules the engine runs, replaceable while it runs.
///
/// Workers pick a new set up at their next step and keep every device's
/// state and window contents; the state of a rule survives when its id and
/// kind stay the same.
pub type RulesCell = ioc_devices::Current<RuleSet>;

/// The zones the engine uses, replaceable while it runs (workers use the
/// new set from their next step; subjects keep their visits by zone id).
pub type ZonesCell = ioc_devices::Current<ioc_devices::Zones>;

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

    /// The watermark at wall-clock time `now`: readings older than it are late.
    pub fn watermark(&self, now: Timestamp) -> Timestamp {
        Timestamp(self.shared.watermark.at(now) as i64)
    }

    /// Whether a reading with event time `ts` is beyond the lateness
    /// horizon: older than the watermark minus the allowed lateness. Such a
    /// reading can no longer amend anything and should be dead-lettered.
    pub fn too_late(&self, ts: Timestamp, now: Timestamp) -> bool {
        let wm = self.shared.watermark.at(now) as i64;
        wm > 0 && ts.millis() < wm - self.shared.lateness_ms
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
    rules: Arc<RulesCell>,
    zones: Arc<ZonesCell>,
}

impl Engine {
    /// Starts the workers. Outputs go to `output` in batches (one per
    /// timely message: a lock per batch instead of one per output).
    pub fn start(
        config: &EngineConfig,
        registry: Arc<Registry>,
        output: flume::Sender<Vec<EngineOutput>>,
    ) -> Result<(Engine, EngineInput), EngineError> {
        let workers = config.workers.max(1);
        let per_worker = (config.input_capacity / workers).max(1);
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..workers).map(|_| flume::bounded(per_worker)).unzip();
        let stats = Arc::new(EngineStats::default());
        let rules = match &config.rules {
            Some(r) => r.clone(),
            None => Arc::new(
                RuleSet::parse(BUILTIN_RULES, &registry, &|_| Err("no files".into()))
                    .unwrap_or_default(),
            ),
        };
        let rules = Arc::new(RulesCell::new(rules));
        let rain_bucket_ms = config.rain_bucket.as_millis() as i64;
        if rain_bucket_ms <= 0 || 3_600_000 % rain_bucket_ms != 0 {
            return Err(EngineError::Start(format!(
                "the rainfall bucket ({:?}) must divide one hour",
                config.rain_bucket
            )));
        }
        let zones = config
            .zones
            .clone()
            .unwrap_or_else(|| Arc::new(ZonesCell::new(Arc::default())));
        let shared = Arc::new(Shared {
            rxs,
            registry,
            rules: rules.clone(),
            zones: zones.clone(),
            table: TableConfig {
                rain_bucket_ms,
                immediate: config.per_device_progress,
                // Devices never heard from are overdue counting from now
                // (as event time goes when idle), not from the oldest
                // event time a backfill brings.
                listening_since_ms: Timestamp::now().millis()
                    - config.out_of_orderness.as_millis() as i64,
                ..TableConfig::default()
            },
            lateness_ms: config.lateness.as_millis() as i64,
            watermark: Watermark::new(
                config.out_of_orderness.as_millis() as i64,
                config.idle_timeout.as_millis() as i64,
                Timestamp::now(),
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
        Ok((
            Engine {
                guards,
                stats,
                rules,
                zones,
            },
            EngineInput { txs, shared },
        ))
    }

    /// The rules in force, to replace them while the engine runs.
    pub fn rules(&self) -> Arc<RulesCell> {
        self.rules.clone()
    }

    /// The zones in force, to replace them while the engine runs.
    pub fn zones(&self) -> Arc<ZonesCell> {
        self.zones.clone()
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
mod reference_tests;
#[cfg(test)]
mod tests;
