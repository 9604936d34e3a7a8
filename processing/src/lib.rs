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
pub mod durable;
mod geo;
mod reading;
mod reorder;
mod rules;
mod sample;
pub mod seq_window;
mod watermark;
mod windows;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use ioc_devices::{Registry, RegistryCell};
use ioc_schemas::{EngineOutput, Timestamp};
use timely::WorkerConfig;

use device_state::TableConfig;
use durable::coordinator::{Coordinator, Message, Restore};
pub use durable::logs::{LogSource, Positions};
use durable::{Control, Tickets, journal};
pub use durable::{DurableConfig, Receipt};
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
#[derive(Clone)]
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
    /// Checkpoints and the ingest journal; `None` keeps state in memory only.
    pub durable: Option<DurableConfig>,
    /// With `durable`: waits until the outputs before a checkpoint's cut
    /// are stored by whoever reads the output channel.
    pub outputs_durable: Option<durable::coordinator::OutputsDurable>,
    /// Event time from which devices never heard from count as overdue
    /// (default: the start, less `out_of_orderness`). A run over recorded
    /// readings sets the recording's start.
    pub listening_since: Option<Timestamp>,
    /// One process of a cluster; `None` runs alone.
    pub cluster: Option<ClusterConfig>,
}

/// This process's place in a cluster: one dataflow over several
/// processes, connected by timely's own networking. Each process runs
/// `workers` workers; worker `w` of process `p` is the dataflow's worker
/// `p * workers + w`, and a device's readings are exchanged to the worker
/// that owns its partition, whichever process took them in.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// `host:port` of every process, in process order (timely's hostfile);
    /// this process listens on its own.
    pub hosts: Vec<String>,
    /// This process's index in `hosts`.
    pub process: usize,
    /// Where the outputs of other processes' workers arrive (device
    /// states, windows, geofence events, tracks; not alerts, which each
    /// process stores for the devices it owns), so that this process can
    /// show the whole deployment. `None` does not send them here.
    pub remote_outputs: Option<flume::Sender<Vec<EngineOutput>>>,
    /// The processes that show the whole deployment (get every other
    /// process's outputs); empty: all of them. The same on every process.
    pub front: Vec<usize>,
}

impl ClusterConfig {
    /// How many processes the cluster has.
    pub fn processes(&self) -> usize {
        self.hosts.len()
    }

    /// Whether process `p` gets the other processes' outputs.
    pub fn is_front(&self, p: usize) -> bool {
        self.front.is_empty() || self.front.contains(&p)
    }
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("workers", &self.workers)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
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
            durable: None,
            outputs_durable: None,
            listening_since: None,
            cluster: None,
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
    rxs: Vec<flume::Receiver<Input>>,
    /// The registry in force (workers pick a new one up at their next step).
    registry: Arc<RegistryCell>,
    rules: Arc<RulesCell>,
    zones: Arc<ZonesCell>,
    table: TableConfig,
    watermark: Watermark,
    lateness_ms: i64,
    threads: Vec<OnceLock<Thread>>,
    stats: Arc<EngineStats>,
    /// The checkpoint handshake.
    control: Control,
    /// The journal and the coordinator, when state is durable.
    durable: Option<DurableShared>,
    /// What each worker takes back from the checkpoint, once.
    restore: Vec<Mutex<Option<Restore>>>,
    /// Batches the sinks have put into the output channel.
    outputs_sent: AtomicU64,
    /// Workers whose input channel has closed (state in memory only).
    inputs_closed: std::sync::atomic::AtomicUsize,
    /// The dataflow's index of this process's first worker (0 alone).
    base: usize,
    /// Workers in the whole dataflow, over every process.
    peers: usize,
    /// In a cluster, where other processes' outputs go.
    remote_outputs: Option<flume::Sender<Vec<EngineOutput>>>,
    /// In a cluster, the other processes this one's outputs go to (those
    /// that show the whole deployment).
    fronts: Vec<usize>,
}

/// The durable side of [`Shared`].
#[derive(Clone, Debug)]
struct DurableShared {
    /// The data directory's lock, held while the engine runs.
    _lock: Arc<std::fs::File>,
    journal: std::path::PathBuf,
    generation: u64,
    first_segment: u64,
    syncer: journal::Syncer,
    coordinator: flume::Sender<Message>,
    /// Each worker's tickets.
    tickets: Vec<Arc<Tickets>>,
}

/// A reading on its way to a worker.
#[derive(Debug)]
struct Input {
    reading: Reading,
    /// Its ticket, done once the journal holds it: a reading with one is
    /// journaled; one without comes from the journal itself, from a log
    /// whose position the checkpoint keeps, or state is in memory only.
    ticket: Option<u64>,
}

impl Shared {
    /// A worker's journal writer, when state is durable.
    fn journal_writer(&self, worker: usize) -> Option<journal::Writer> {
        let d = self.durable.as_ref()?;
        Some(journal::Writer::new(
            d.journal.clone(),
            d.generation,
            worker,
            d.first_segment,
            d.syncer.clone(),
            d.tickets.get(worker)?.clone(),
        ))
    }

    fn restore_for(&self, worker: usize) -> Option<device_state::DeviceRestore> {
        let mut slot = self.restore.get(worker)?.lock().ok()?;
        let r = slot.as_mut()?;
        Some(device_state::DeviceRestore {
            table: r.table,
            devices: std::mem::take(&mut r.devices),
        })
    }

    fn restore_geo_for(&self, worker: usize) -> Option<(geo::GeoProgress, Vec<geo::GeoEntry>)> {
        let mut slot = self.restore.get(worker)?.lock().ok()?;
        let r = slot.take()?;
        Some((r.geo_progress, r.geo))
    }

    fn hand_part(&self, epoch: u64, part: durable::store::Part) {
        if let Some(d) = &self.durable {
            let _ = d.coordinator.send(Message::Part { epoch, part });
        }
    }

    fn hand_cut(&self, epoch: u64, closed: Option<std::path::PathBuf>, frontier: u64) {
        if let Some(d) = &self.durable {
            let _ = d.coordinator.send(Message::Cut {
                epoch,
                closed,
                frontier,
            });
        }
    }

    fn hand_flushed(&self) {
        if let Some(d) = &self.durable {
            let _ = d.coordinator.send(Message::Flushed);
        }
    }

    fn hand_closing(&self) {
        if let Some(d) = &self.durable {
            let _ = d.coordinator.send(Message::Closing);
        }
    }

    /// In a cluster, another process's device operator marked its input
    /// for `epoch`: this process cuts it too (once asked, and only when
    /// it is not already under way here).
    fn peer_marked(&self, epoch: u64) {
        if let Some(d) = &self.durable
            && self.peers > self.rxs.len()
            && self.control.requested.load(Ordering::Acquire) < epoch
            && self.control.peer_asked.fetch_max(epoch, Ordering::AcqRel) < epoch
        {
            let _ = d.coordinator.send(Message::PeerCut(epoch));
        }
    }

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
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the processing engine is closed")]
pub struct Closed;

/// The hand-off into the engine. Clone it freely; the engine's inputs close
/// when every clone is dropped.
#[derive(Clone, Debug)]
pub struct EngineInput {
    txs: Vec<flume::Sender<Input>>,
    shared: Arc<Shared>,
}

impl EngineInput {
    /// The worker of this process that takes a reading: the one that owns
    /// its device's partition (the dataflow's `Exchange` routing,
    /// `partition % peers`, so the reading never changes worker inside the
    /// dataflow). In a cluster, a device another process owns goes to a
    /// worker picked by its partition, so that its readings keep their
    /// order on their way to the owner.
    fn owner(&self, reading: &Reading) -> usize {
        let partition = usize::from(durable::partition_of(&reading.envelope.device));
        (partition % self.shared.peers)
            .checked_sub(self.shared.base)
            .filter(|w| *w < self.txs.len())
            .unwrap_or(partition % self.txs.len())
    }

    /// The input for worker `w`, its receipt, and what marks its ticket
    /// done should it never be sent.
    fn input(&self, w: usize, reading: Reading) -> (Input, Receipt, Unsent<'_>) {
        let tickets = self.shared.durable.as_ref().and_then(|d| d.tickets.get(w));
        let (receipt, ticket) = match tickets {
            Some(t) => {
                let ticket = t.issue();
                (Receipt::of(t.clone(), ticket), Some(ticket))
            }
            None => (Receipt::done(), None),
        };
        let input = Input { reading, ticket };
        (input, receipt, Unsent(tickets.zip(ticket)))
    }

    /// Sends a reading, waiting while the engine is full. The receipt
    /// resolves once the journal holds the reading (at once without one):
    /// acknowledge the source then.
    pub async fn send(&self, reading: Reading) -> Result<Receipt, Closed> {
        let w = self.owner(&reading);
        let (input, receipt, unsent) = self.input(w, reading);
        self.txs[w].send_async(input).await.map_err(|_| Closed)?;
        unsent.sent();
        self.shared.wake(w);
        Ok(receipt)
    }

    /// Counts a batch someone else is about to put into the engine's
    /// output channel (device presence), so that a checkpoint waits until
    /// whoever reads the channel has taken it too.
    pub fn note_output(&self) {
        self.shared.outputs_sent.fetch_add(1, Ordering::Release);
    }

    /// Sends a reading that is not journaled: read back from the journal,
    /// or from a replayable log (Kafka) whose position the checkpoint
    /// keeps through a [`LogSource`]. Blocks while the engine is full.
    pub fn send_unjournaled_blocking(&self, reading: Reading) -> Result<(), Closed> {
        let w = self.owner(&reading);
        let input = Input {
            reading,
            ticket: None,
        };
        self.txs[w].send(input).map_err(|_| Closed)?;
        self.shared.wake(w);
        Ok(())
    }

    /// A replayable source's part in the checkpoints (`None` when state
    /// is kept in memory only). Its readings go in through
    /// [`EngineInput::send_unjournaled_blocking`].
    pub fn log_source(&self) -> Option<LogSource> {
        self.shared.durable.as_ref()?;
        Some(LogSource::new(self.shared.clone()))
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

    /// Sends readings from synchronous code, blocking while the engine is
    /// full, and wakes each worker once for the lot instead of once per
    /// reading. The receipts are in the readings' order.
    pub fn send_all_blocking(
        &self,
        readings: impl IntoIterator<Item = Reading>,
    ) -> Result<Vec<Receipt>, Closed> {
        let mut sent = vec![false; self.txs.len()];
        let mut receipts = Vec::new();
        for reading in readings {
            let w = self.owner(&reading);
            let (input, receipt, unsent) = self.input(w, reading);
            if self.txs[w].is_full() {
                // About to wait for the worker: make sure it is awake.
                self.shared.wake(w);
            }
            self.txs[w].send(input).map_err(|_| Closed)?;
            unsent.sent();
            sent[w] = true;
            receipts.push(receipt);
        }
        for (w, _) in sent.iter().enumerate().filter(|(_, s)| **s) {
            self.shared.wake(w);
        }
        Ok(receipts)
    }

    /// Sends a reading from synchronous code, blocking while the engine is
    /// full. See [`EngineInput::send`] for the receipt.
    pub fn send_blocking(&self, reading: Reading) -> Result<Receipt, Closed> {
        let w = self.owner(&reading);
        let (input, receipt, unsent) = self.input(w, reading);
        self.txs[w].send(input).map_err(|_| Closed)?;
        unsent.sent();
        self.shared.wake(w);
        Ok(receipt)
    }
}

/// A ticket issued for a reading not yet in its worker's channel. Should
/// the send fail or be given up (an async send dropped), the ticket is
/// marked done so that it holds back no other reading's receipt; nobody
/// waits on its own.
struct Unsent<'a>(Option<(&'a Arc<Tickets>, u64)>);

impl Unsent<'_> {
    fn sent(mut self) {
        self.0 = None;
    }
}

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        if let Some((tickets, t)) = self.0 {
            tickets.done(&[t]);
        }
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
    shared: Arc<Shared>,
    coordinator: Option<std::thread::JoinHandle<()>>,
    /// Journal segments to replay after the checkpoint restored.
    replay: Vec<journal::Segment>,
    restored: Option<u64>,
    started: std::time::Instant,
}

/// What a start restored and replayed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Epoch of the checkpoint restored (`None`: none on disk).
    pub checkpoint: Option<u64>,
    /// Journal segments read.
    pub segments: usize,
    /// Readings replayed.
    pub readings: u64,
    /// Readings of devices no longer registered, skipped.
    pub unknown: u64,
    /// Segments that ended in a torn write (never acknowledged).
    pub torn: usize,
}

/// What [`prepare`] found on disk.
struct Prepared {
    shared: DurableShared,
    coordinator: Coordinator,
    coordinator_rx: flume::Receiver<Message>,
    restore: Vec<Restore>,
    replay: Vec<journal::Segment>,
    watermark_ms: i64,
    listening_since_ms: Option<i64>,
    restored: Option<u64>,
    logs: Positions,
}

/// Opens the data directory: the newest usable checkpoint split among
/// `workers`, the journal segments after it, this start's generation. In
/// a cluster (`hosts`, this process's index), the checkpoint every process
/// completed and the next epoch come from their agreement
/// (`durable::cluster`), and this process's checkpoints after that one go.
fn prepare(
    config: &DurableConfig,
    workers: usize,
    outputs: Option<durable::coordinator::OutputsDurable>,
    cluster: Option<(&[String], usize)>,
    registry: (usize, u64),
) -> Result<Prepared, EngineError> {
    let start = |e: String| EngineError::Start(e);
    let lock = durable::store::lock_dir(&config.dir).map_err(start)?;
    let store = durable::store::Store::open(&config.dir.join("checkpoints")).map_err(start)?;
    let journal_dir = config.dir.join("journal");
    std::fs::create_dir_all(&journal_dir)
        .map_err(|e| start(format!("{}: {e}", journal_dir.display())))?;
    let segments = journal::segments(&journal_dir)
        .map_err(|e| start(format!("{}: {e}", journal_dir.display())))?;
    let agreed = match cluster {
        Some((hosts, process)) => {
            let highest = segments.iter().map(|s| s.segment).max().unwrap_or(0);
            let mine =
                durable::cluster::propose(process, &store, highest, registry).map_err(start)?;
            tracing::info!(
                process,
                checkpoints = ?mine.complete.iter().map(|c| c.0).collect::<Vec<_>>(),
                "agreeing with the other processes on the checkpoint to restore"
            );
            let from = store.clone();
            let (agreed, shipped) =
                durable::cluster::agree(hosts, process, mine, move |e| from.load_epoch(e))
                    .map_err(start)?;
            tracing::info!(
                epoch = ?agreed.epoch,
                written_by = agreed.written_by,
                next = agreed.next,
                "the cluster agreed"
            );
            Some((agreed, shipped))
        }
        None => None,
    };
    // In a cluster larger than the one that wrote the checkpoint, every
    // writer's copy came: each process takes the partitions it owns now.
    let (agreed, shipped) = match agreed {
        Some((a, s)) => (Some(a), s),
        None => (None, Vec::new()),
    };
    let loaded = match &agreed {
        Some(a) => {
            let removed = store.remove_after(a.epoch.unwrap_or(0)).map_err(start)?;
            if removed > 0 {
                tracing::warn!(
                    removed,
                    "checkpoints after the cluster's last common one removed"
                );
            }
            match a.epoch {
                Some(_) if !shipped.is_empty() => {
                    Some(durable::cluster::merge(shipped).map_err(start)?)
                }
                Some(e) => Some(store.load_epoch(e).map_err(|e| {
                    start(format!(
                        "{e}. The cluster's last common checkpoint cannot be read here: move \
                         every process's data directory away to start the cluster empty."
                    ))
                })?),
                None => None,
            }
        }
        None => store.load_latest().map_err(|e| {
            start(format!(
                "{e}. Move the damaged checkpoints away to start from an older one, or the whole directory to start empty."
            ))
        })?,
    };
    let generation = segments
        .iter()
        .map(|s| s.generation)
        .chain(loaded.as_ref().map(|l| l.manifest.generation))
        .max()
        .unwrap_or(0)
        + 1;
    let next_epoch = match &agreed {
        Some(a) => a.next,
        None => {
            segments
                .iter()
                .map(|s| s.segment)
                .max()
                .unwrap_or(0)
                .max(store.highest_epoch())
                + 1
        }
    };
    let (restore, from, newest, since, logs) = match loaded {
        Some(l) => {
            let m = l.manifest.clone();
            let age_s = (Timestamp::now().millis() - m.created_ms) / 1000;
            let bytes: u64 = m.parts.iter().map(|p| p.bytes).sum();
            let (peers, base) = match cluster {
                Some((hosts, process)) => (hosts.len() * workers, process * workers),
                None => (workers, 0),
            };
            let restore = durable::coordinator::split(l, workers, peers, base).map_err(start)?;
            let devices: usize = restore.iter().map(|r| r.devices.len()).sum();
            let geo: usize = restore.iter().map(|r| r.geo.len()).sum();
            let log_partitions: usize = m.logs.values().map(|t| t.len()).sum();
            tracing::info!(
                epoch = m.epoch,
                age_s,
                bytes,
                devices,
                geo_entries = geo,
                log_partitions,
                from_workers = m.workers,
                workers,
                "restoring checkpoint"
            );
            // In a cluster, every Kafka partition where the process that
            // read it left it.
            let logs = match &agreed {
                Some(a) => a.logs.clone(),
                None => m.logs,
            };
            (
                restore,
                m.epoch,
                m.watermark_ms,
                Some(m.listening_since_ms),
                logs,
            )
        }
        None => (Vec::new(), 0, 0, None, Positions::new()),
    };
    let replay: Vec<journal::Segment> = segments.into_iter().filter(|s| s.segment > from).collect();
    let (tx, rx) = flume::unbounded();
    Ok(Prepared {
        shared: DurableShared {
            _lock: Arc::new(lock),
            journal: journal_dir.clone(),
            generation,
            first_segment: next_epoch,
            syncer: journal::Syncer::start().map_err(|e| start(e.to_string()))?,
            coordinator: tx,
            tickets: (0..workers).map(|_| Arc::default()).collect(),
        },
        coordinator: Coordinator {
            config: config.clone(),
            store,
            journal: journal_dir,
            generation,
            next_epoch,
            outputs,
            processes: cluster.map_or(1, |(hosts, _)| hosts.len()),
        },
        coordinator_rx: rx,
        restore,
        replay,
        watermark_ms: newest,
        listening_since_ms: since,
        restored: since.map(|_| from),
        logs,
    })
}

impl Engine {
    /// Starts the workers. Outputs go to `output` in batches (one per
    /// timely message: a lock per batch instead of one per output).
    pub fn start(
        config: &EngineConfig,
        registry: Arc<Registry>,
        output: flume::Sender<Vec<EngineOutput>>,
    ) -> Result<(Engine, EngineInput), EngineError> {
        Self::start_live(config, Arc::new(RegistryCell::new(registry)), output)
    }

    /// Starts the workers with a registry that may change while they run:
    /// each picks a new one up at its next step, before the rules (so
    /// replace the rules compiled for a new registry first, then the
    /// registry). Devices keep their indices across changes.
    pub fn start_live(
        config: &EngineConfig,
        cell: Arc<RegistryCell>,
        output: flume::Sender<Vec<EngineOutput>>,
    ) -> Result<(Engine, EngineInput), EngineError> {
        let registry = cell.current();
        let begun = std::time::Instant::now();
        let workers = config.workers.max(1);
        let (processes, process) = config
            .cluster
            .as_ref()
            .map_or((1, 0), |c| (c.processes(), c.process));
        if process >= processes {
            return Err(EngineError::Start(format!(
                "process {process} of a cluster of {processes}: the index is out of range"
            )));
        }
        if usize::from(durable::PARTITIONS) < workers * processes {
            return Err(EngineError::Start(format!(
                "at most {} workers over all processes (the state's key partitions)",
                durable::PARTITIONS
            )));
        }
        let hosts = config
            .cluster
            .as_ref()
            .filter(|_| processes > 1)
            .map(|c| (c.hosts.as_slice(), process));
        let fingerprint = durable::cluster::fingerprint(&registry);
        let mut prepared = match &config.durable {
            Some(d) => Some(prepare(
                d,
                workers,
                config.outputs_durable.clone(),
                hosts,
                fingerprint,
            )?),
            None => None,
        };
        // Without durable state the processes still check that they have
        // the same registry before the dataflow starts.
        if let (Some((hosts, process)), None) = (hosts, &config.durable) {
            let mine = durable::cluster::Proposal {
                process,
                registry: fingerprint,
                ..durable::cluster::Proposal::default()
            };
            durable::cluster::agree(hosts, process, mine, |_| Err("no checkpoints".into()))
                .map_err(EngineError::Start)?;
        }
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
        let listening_since_ms = prepared
            .as_ref()
            .and_then(|p| p.listening_since_ms)
            .or(config.listening_since.map(Timestamp::millis))
            .unwrap_or_else(|| {
                Timestamp::now().millis() - config.out_of_orderness.as_millis() as i64
            });
        let restore = prepared
            .as_mut()
            .map(|p| std::mem::take(&mut p.restore))
            .unwrap_or_default();
        let shared = Arc::new(Shared {
            rxs,
            registry: cell,
            rules: rules.clone(),
            zones: zones.clone(),
            table: TableConfig {
                rain_bucket_ms,
                immediate: config.per_device_progress,
                // Devices never heard from are overdue counting from now
                // (as event time goes when idle), not from the oldest
                // event time a backfill brings; after a restart, from the
                // first start.
                listening_since_ms,
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
            control: Control {
                logs: durable::logs::Logs::restored(
                    prepared
                        .as_mut()
                        .map(|p| std::mem::take(&mut p.logs))
                        .unwrap_or_default(),
                ),
                ..Control::default()
            },
            durable: prepared.as_ref().map(|p| p.shared.clone()),
            restore: (0..workers).map(|_| Mutex::new(None)).collect(),
            outputs_sent: AtomicU64::new(0),
            inputs_closed: std::sync::atomic::AtomicUsize::new(0),
            base: process * workers,
            peers: processes * workers,
            remote_outputs: config
                .cluster
                .as_ref()
                .filter(|c| processes > 1 && c.is_front(process))
                .and_then(|c| c.remote_outputs.clone()),
            fronts: config.cluster.as_ref().map_or_else(Vec::new, |c| {
                (0..processes)
                    .filter(|p| *p != process && c.is_front(*p))
                    .collect()
            }),
        });
        for (w, r) in restore.into_iter().enumerate() {
            if let Some(slot) = shared.restore.get(w) {
                *slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r);
            }
        }
        if let Some(p) = prepared.as_ref().filter(|p| p.restored.is_some()) {
            // The watermark where the checkpoint left it: the frontier every
            // worker had promised (the newest event time less the allowed
            // disorder).
            let ooo = config.out_of_orderness.as_millis() as i64;
            shared
                .watermark
                .observe(Timestamp(p.watermark_ms + ooo), Timestamp(0));
        }
        if prepared.is_none() {
            shared.control.replayed.store(true, Ordering::Release);
        }
        let communication = match &config.cluster {
            Some(c) if processes > 1 => {
                tracing::info!(
                    process,
                    processes,
                    hosts = ?c.hosts,
                    "joining the cluster: waiting for every process to connect"
                );
                timely::CommunicationConfig::Cluster {
                    threads: workers,
                    process,
                    addresses: c.hosts.clone(),
                    report: false,
                    zerocopy: false,
                }
            }
            _ => timely::CommunicationConfig::Process(workers),
        };
        let timely_config = timely::Config {
            communication,
            worker: WorkerConfig::default(),
        };
        let worker_shared = shared.clone();
        let guards = timely::execute(timely_config, move |worker| {
            dataflow::run_worker(worker, &worker_shared, &output);
        })
        .map_err(EngineError::Start)?;
        if processes > 1 {
            tracing::info!(process, processes, "cluster connected");
        }
        let mut replay = Vec::new();
        let mut restored = None;
        let coordinator = match prepared {
            Some(p) => {
                replay = p.replay;
                restored = p.restored;
                let (c, rx, s) = (p.coordinator, p.coordinator_rx, shared.clone());
                Some(
                    std::thread::Builder::new()
                        .name("ioc-checkpoint".into())
                        .spawn(move || c.run(&s, &rx))
                        .map_err(|e| EngineError::Start(e.to_string()))?,
                )
            }
            None => None,
        };
        Ok((
            Engine {
                guards,
                stats,
                rules,
                zones,
                shared: shared.clone(),
                coordinator,
                replay,
                restored,
                started: begun,
            },
            EngineInput { txs, shared },
        ))
    }

    /// Replays the journal written after the restored checkpoint through
    /// `input` (each reading shown to `each` first, to rewrite what it
    /// feeds outside the engine), then lets checkpoints begin. Call it once
    /// after [`Engine::start`] and before any source sends. A segment
    /// damaged before its end stops the start with its name.
    pub fn replay(
        &mut self,
        input: &EngineInput,
        mut each: impl FnMut(&Reading),
    ) -> Result<Recovered, EngineError> {
        let mut done = Recovered {
            checkpoint: self.restored,
            ..Recovered::default()
        };
        let registry = self.shared.registry.current();
        for s in std::mem::take(&mut self.replay) {
            let mut closed = false;
            let read = journal::read(&s.path, |entry| {
                if closed {
                    return;
                }
                match entry.reading(&registry) {
                    Some(r) => {
                        each(&r);
                        closed = input.send_unjournaled_blocking(r).is_err();
                        done.readings += 1;
                    }
                    None => done.unknown += 1,
                }
            })
            .map_err(|e| {
                EngineError::Start(format!(
                    "{e}. Move the file away to start without its readings."
                ))
            })?;
            if read.torn_tail {
                tracing::warn!(segment = %s.path.display(), "journal segment ends in a torn write (never acknowledged); skipped its tail");
                done.torn += 1;
            }
            done.segments += 1;
        }
        self.shared.control.replayed.store(true, Ordering::Release);
        let took = self.started.elapsed();
        metrics::gauge!("ioc_recovery_seconds").set(took.as_secs_f64());
        metrics::gauge!("ioc_recovery_replayed_readings").set(done.readings as f64);
        if self.shared.durable.is_some() {
            tracing::info!(
                segments = done.segments,
                readings = done.readings,
                unknown_devices = done.unknown,
                torn = done.torn,
                took = ?took,
                "journal replayed"
            );
        }
        Ok(done)
    }

    /// The registry in force, to replace it while the engine runs (see
    /// [`Engine::start_live`] for the order).
    pub fn registry(&self) -> Arc<RegistryCell> {
        self.shared.registry.clone()
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

    /// Waits until the inputs are closed and everything has been processed
    /// (with durable state, after a last checkpoint).
    pub fn join(self) -> Result<(), EngineError> {
        // A start with nothing to replay that never called `replay` still
        // writes its last checkpoint (one with a replay pending must not:
        // it would cut the journal it has not read).
        if self.replay.is_empty() {
            self.shared.control.replayed.store(true, Ordering::Release);
        }
        for r in self.guards.join() {
            r.map_err(EngineError::Worker)?;
        }
        if let Some(c) = self.coordinator {
            c.join()
                .map_err(|_| EngineError::Worker("the checkpoint coordinator failed".into()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod reference_tests;
#[cfg(test)]
mod tests;
