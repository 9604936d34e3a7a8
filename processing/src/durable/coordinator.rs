//! The checkpoint coordinator: asks for checkpoints, gathers the parts,
//! writes them, cuts the journal; and at start, what a checkpoint restores
//! and what the journal replays.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bincode::Options as _;
use ioc_schemas::Timestamp;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::store::{Loaded, Manifest, Part, Store};
use super::{DurableConfig, PARTITIONS, journal};
use crate::Shared;
use crate::device_state::{DeviceSnap, DeviceTable, TableSnap};
use crate::geo::{GeoEntry, GeoItem, GeoProgress, GeoState};
use crate::reorder::ReorderBuffer;
use crate::sample::Sample;

/// What workers and operators tell the coordinator.
#[derive(Debug)]
pub enum Message {
    /// A worker marked its input for `epoch`, closing a journal segment.
    Cut {
        /// The checkpoint.
        epoch: u64,
        /// The segment it closed, if it wrote one.
        closed: Option<PathBuf>,
        /// The frontier it had promised.
        frontier: u64,
    },
    /// An operator's part of `epoch`.
    Part {
        /// The checkpoint.
        epoch: u64,
        /// The part.
        part: Part,
    },
    /// An output sink has put every output before the cut into the
    /// output channel.
    Flushed,
    /// A worker's inputs closed.
    Closing,
    /// In a cluster, a geo operator got another process's mark of
    /// `epoch`: cut it now (the other process waits for this one's marks).
    PeerCut(u64),
}

/// Called once a checkpoint's parts are taken, with the number of output
/// batches the engine had put into its output channel at the cut: returns
/// once whatever consumes them has made them durable (`false`: it could
/// not, and the checkpoint is not written; the next one tries again).
pub type OutputsDurable = Arc<dyn Fn(u64) -> bool + Send + Sync>;

#[derive(Serialize)]
struct DevicePartRef<'a> {
    table: TableSnap,
    devices: &'a [(u16, DeviceSnap)],
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub(crate) struct DevicePart {
    table: TableSnap,
    devices: Vec<(u16, DeviceSnap)>,
}

#[derive(Serialize)]
struct GeoPartRef<'a> {
    progress: GeoProgress,
    entries: &'a [(u16, GeoEntry)],
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub(crate) struct GeoPart {
    progress: GeoProgress,
    entries: Vec<(u16, GeoEntry)>,
}

fn counts<T>(entries: &[(u16, T)]) -> Vec<(u16, u32)> {
    let mut n = vec![0u32; usize::from(PARTITIONS)];
    for (p, _) in entries {
        n[usize::from(*p)] += 1;
    }
    n.into_iter()
        .enumerate()
        .filter(|(_, c)| *c > 0)
        .map(|(p, c)| (p as u16, c))
        .collect()
}

/// The device operator's part.
pub fn device_part(
    table: &DeviceTable,
    pending: &mut ReorderBuffer<Sample>,
    worker: usize,
) -> Part {
    let (t, devices) = table.snapshot(pending);
    let data = encode(&DevicePartRef {
        table: t,
        devices: &devices,
    });
    Part {
        operator: "device",
        worker,
        data,
        partitions: counts(&devices),
    }
}

/// The geo operator's part.
pub fn geo_part(state: &GeoState, pending: &mut ReorderBuffer<GeoItem>, worker: usize) -> Part {
    let (progress, entries) = state.snapshot(pending);
    let data = encode(&GeoPartRef {
        progress,
        entries: &entries,
    });
    Part {
        operator: "geo",
        worker,
        data,
        partitions: counts(&entries),
    }
}

/// What one worker takes back from a checkpoint.
#[derive(Debug, Default)]
pub struct Restore {
    /// The device table's progress.
    pub table: TableSnap,
    /// Its devices.
    pub devices: Vec<DeviceSnap>,
    /// The geo operator's progress.
    pub geo_progress: GeoProgress,
    /// Its subjects, zones and waiting items.
    pub geo: Vec<GeoEntry>,
}

/// The checkpoint's encoding: bincode with variable-length integers
/// (counts, small numbers and empty buckets take a byte).
fn options() -> impl bincode::Options {
    bincode::DefaultOptions::new()
}

/// A part in the current format. Serializing state cannot fail (every
/// type is plain data); were it to, the checkpoint is not written.
fn encode<T: Serialize>(part: &T) -> Vec<u8> {
    options().serialize(part).unwrap_or_else(|e| {
        error!(error = %e, "cannot encode a checkpoint part");
        Vec::new()
    })
}

/// A part as its checkpoint's format wrote it.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    format: u32,
    file: &str,
    data: &[u8],
) -> Result<T, String> {
    if format == 1 {
        serde_json::from_slice(data).map_err(|e| format!("{file}: {e}"))
    } else {
        options()
            .deserialize(data)
            .map_err(|e| format!("{file}: {e}"))
    }
}

/// A checkpoint split among this process's `workers` workers by
/// partition: the dataflow's workers `base..base + workers` of `peers`
/// (alone, `base` 0 and `peers` = `workers`). A partition another process
/// owns is left to it.
pub fn split(
    loaded: Loaded,
    workers: usize,
    peers: usize,
    base: usize,
) -> Result<Vec<Restore>, String> {
    let mut out: Vec<Restore> = (0..workers).map(|_| Restore::default()).collect();
    let (mut tables, mut geos) = (Vec::new(), Vec::new());
    let same = loaded.manifest.workers * loaded.manifest.processes.max(1) == peers;
    let mine = |p: u16| {
        (usize::from(p) % peers)
            .checked_sub(base)
            .filter(|w| *w < workers)
    };
    let format = loaded.manifest.format;
    if !(1..=super::store::FORMAT).contains(&format) {
        return Err(format!(
            "checkpoint format {format}: written by a newer version (this one reads 1 to {})",
            super::store::FORMAT
        ));
    }
    for (meta, data) in loaded.manifest.parts.iter().zip(loaded.parts) {
        match meta.operator.as_str() {
            "device" => {
                let part: DevicePart = decode(format, &meta.file, &data)?;
                tables.push((meta.worker, part.table));
                for (p, d) in part.devices {
                    if let Some(w) = mine(p) {
                        out[w].devices.push(d);
                    }
                }
            }
            "geo" => {
                let part: GeoPart = decode(format, &meta.file, &data)?;
                geos.push((meta.worker, part.progress));
                for (p, e) in part.entries {
                    if let Some(w) = mine(p) {
                        out[w].geo.push(e);
                    }
                }
            }
            other => return Err(format!("{}: unknown operator {other:?}", meta.file)),
        }
    }
    let all_tables: Vec<TableSnap> = tables.iter().map(|t| t.1).collect();
    let all_geo: Vec<GeoProgress> = geos.iter().map(|g| g.1).collect();
    for (w, r) in out.iter_mut().enumerate() {
        // The same workers: each its own progress; otherwise the earliest.
        r.table = match tables.iter().find(|t| same && t.0 == base + w) {
            Some(t) => t.1,
            None => TableSnap::earliest(&all_tables),
        };
        r.geo_progress = match geos.iter().find(|g| same && g.0 == base + w) {
            Some(g) => g.1,
            None => GeoProgress::earliest(&all_geo),
        };
    }
    Ok(out)
}

/// The coordinator's settings and handles.
pub struct Coordinator {
    /// Settings.
    pub config: DurableConfig,
    /// The checkpoint store.
    pub store: Store,
    /// The journal's directory.
    pub journal: PathBuf,
    /// This process's journal generation.
    pub generation: u64,
    /// The next checkpoint's epoch.
    pub next_epoch: u64,
    /// Waits for the consumers of the outputs before a checkpoint counts.
    pub outputs: Option<OutputsDurable>,
    /// Processes of the cluster (1 alone). In a cluster every process cuts
    /// the same epochs, the first to ask leading the others; and there is
    /// no last checkpoint at a stop (the others may be gone already): the
    /// journal holds what came after the last one.
    pub processes: usize,
}

impl Coordinator {
    /// Runs until every worker's inputs closed (then a last checkpoint).
    pub fn run(mut self, shared: &Arc<Shared>, rx: &flume::Receiver<Message>) {
        // However this ends (a panic too), the workers must not wait on it.
        struct Release<'a>(&'a Arc<Shared>);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                let c = &self.0.control;
                if std::thread::panicking() {
                    error!(
                        "the checkpoint coordinator failed; no more checkpoints until a restart"
                    );
                    metrics::counter!("ioc_checkpoint_failures_total").increment(1);
                }
                c.taken.store(u64::MAX, Ordering::Release);
                c.finished.store(true, Ordering::Release);
                for w in 0..self.0.rxs.len() {
                    self.0.wake(w);
                }
            }
        }
        let _release = Release(shared);
        let control = &shared.control;
        let workers = shared.rxs.len();
        let mut closing = 0;
        let mut last = Instant::now();
        let cluster = self.processes > 1;
        let mut peer: Option<u64> = None;
        let pause = metrics::histogram!("ioc_checkpoint_pause_seconds");
        let duration = metrics::histogram!("ioc_checkpoint_duration_seconds");
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Message::Closing) => closing += 1,
                Ok(Message::PeerCut(e)) if e >= self.next_epoch => peer = Some(e),
                Ok(Message::PeerCut(_)) => {}
                Ok(other) => warn!(?other, "checkpoint message outside a checkpoint"),
                Err(flume::RecvTimeoutError::Timeout) => {}
                Err(flume::RecvTimeoutError::Disconnected) => break,
            }
            let journal_bytes = control.journal_bytes.load(Ordering::Relaxed);
            let full = journal_bytes > self.config.journal_max_bytes;
            if full != control.journal_full.swap(full, Ordering::Relaxed) {
                metrics::gauge!("ioc_journal_full").set(f64::from(u8::from(full)));
            }
            let pressed = journal_bytes > self.config.journal_max_bytes / 2;
            let last_one = closing == workers;
            if cluster && last_one {
                info!("inputs closed: the journal holds what came after the last checkpoint");
                break;
            }
            let replayed = control.replayed.load(Ordering::Acquire);
            let due = peer.is_some() || last.elapsed() >= self.config.interval;
            if !(replayed && (last_one || pressed || due)) {
                if last_one {
                    break;
                }
                continue;
            }
            last = Instant::now();
            if control.taken.load(Ordering::Acquire) == u64::MAX {
                break;
            }
            if let Some(e) = peer.take()
                && e > self.next_epoch
            {
                warn!(
                    ours = self.next_epoch,
                    theirs = e,
                    "another process cut a later checkpoint; following it"
                );
                self.next_epoch = e;
            }
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            let started = Instant::now();
            control.requested.store(epoch, Ordering::Release);
            for w in 0..workers {
                shared.wake(w);
            }
            // Every worker's cut, both operators' parts, both sinks' flushes.
            let (mut cuts, mut parts, mut flushed) = (Vec::new(), Vec::new(), 0);
            let mut frontier = u64::MAX;
            while cuts.len() < workers || parts.len() < 2 * workers || flushed < 2 * workers {
                match rx.recv_timeout(Duration::from_secs(60)) {
                    Ok(Message::Cut {
                        closed,
                        frontier: f,
                        ..
                    }) => {
                        frontier = frontier.min(f);
                        cuts.push(closed);
                    }
                    Ok(Message::Part { part, .. }) => parts.push(part),
                    Ok(Message::Flushed) => flushed += 1,
                    Ok(Message::Closing) => {
                        closing += 1;
                        if cluster && closing == workers {
                            // The other processes may never send their
                            // marks: stopping, the journal has it all.
                            info!(epoch, "inputs closed during a checkpoint; it is given up");
                            return;
                        }
                    }
                    Ok(Message::PeerCut(_)) => {}
                    Err(e) => {
                        error!(epoch, error = %e, "checkpoint parts never came; the engine stopped");
                        return;
                    }
                }
            }
            let outputs = shared.outputs_sent.load(Ordering::Acquire);
            // The replayable sources are stopped at the cut until taken.
            let logs = control.logs.positions();
            control.taken.store(epoch, Ordering::Release);
            for w in 0..workers {
                shared.wake(w);
            }
            pause.record(started.elapsed().as_secs_f64());
            // Outputs of readings the checkpoint contains are stored before
            // it counts: a restart replays only what comes after it.
            if let Some(durable) = &self.outputs
                && !durable(outputs)
            {
                warn!(
                    epoch,
                    "outputs before the cut are not yet stored; checkpoint skipped"
                );
                metrics::counter!("ioc_checkpoint_failures_total").increment(1);
                continue;
            }
            if parts.iter().any(|p| p.data.is_empty()) {
                warn!(epoch, "a part could not be encoded; checkpoint skipped");
                metrics::counter!("ioc_checkpoint_failures_total").increment(1);
                continue;
            }
            parts.sort_by_key(|p| (p.operator, p.worker));
            let manifest = Manifest {
                format: super::store::FORMAT,
                epoch,
                created_ms: Timestamp::now().millis(),
                generation: self.generation,
                workers,
                processes: self.processes,
                watermark_ms: frontier.min(i64::MAX as u64) as i64,
                listening_since_ms: shared.table.listening_since_ms,
                logs: logs.clone(),
                parts: Vec::new(),
            };
            // The segments the checkpoint contains are on disk before it is.
            let unsynced = cuts.into_iter().flatten().find_map(|path| {
                std::fs::File::open(&path)
                    .and_then(|f| f.sync_data())
                    .err()
                    .map(|e| (path, e))
            });
            if let Some((path, e)) = unsynced {
                error!(segment = %path.display(), error = %e, "cannot sync a journal segment; checkpoint skipped");
                metrics::counter!("ioc_checkpoint_failures_total").increment(1);
                continue;
            }
            match self.store.write(manifest, parts) {
                Ok(bytes) => {
                    control.logs.written(epoch, logs);
                    duration.record(started.elapsed().as_secs_f64());
                    metrics::gauge!("ioc_checkpoint_bytes").set(bytes as f64);
                    metrics::gauge!("ioc_checkpoint_epoch").set(epoch as f64);
                    metrics::gauge!("ioc_checkpoint_last_success_timestamp_seconds")
                        .set(Timestamp::now().millis() as f64 / 1000.0);
                    tracing::debug!(epoch, bytes, took = ?started.elapsed(), "checkpoint written");
                    self.prune(control);
                }
                Err(e) => {
                    error!(epoch, error = %e, "cannot write a checkpoint; the previous one stays");
                    metrics::counter!("ioc_checkpoint_failures_total").increment(1);
                }
            }
            if last_one {
                info!(epoch, "last checkpoint written at stop");
                break;
            }
        }
    }

    /// Old checkpoints out, and the journal segments every kept one contains.
    fn prune(&self, control: &super::Control) {
        let keep_from = match self.store.prune(self.config.retain) {
            Ok(k) => k,
            Err(e) => {
                warn!(error = %e, "cannot remove old checkpoints");
                return;
            }
        };
        if let Some(k) = keep_from {
            for s in journal::segments(&self.journal).unwrap_or_default() {
                if s.segment <= k
                    && let Err(e) = std::fs::remove_file(&s.path)
                {
                    warn!(segment = %s.path.display(), error = %e, "cannot remove a journal segment");
                }
            }
        }
        let bytes = journal::bytes(&self.journal);
        control.journal_bytes.store(bytes, Ordering::Relaxed);
        metrics::gauge!("ioc_journal_bytes").set(bytes as f64);
        let full = bytes > self.config.journal_max_bytes;
        control.journal_full.store(full, Ordering::Relaxed);
        metrics::gauge!("ioc_journal_full").set(f64::from(u8::from(full)));
    }
}
