//! Durable state: the ingest journal and consistent checkpoints.
//!
//! - [`journal`]: every reading a worker takes is appended to its journal
//!   segment before the source acknowledges it (group-committed
//!   `fdatasync` on a syncer thread; the [`Receipt`] resolves then);
//! - [`store`]: checkpoint directories, one per epoch, with a manifest
//!   written last; checksummed, so a torn or corrupt one is detected;
//! - [`coordinator`]: the thread that asks the workers for a checkpoint,
//!   gathers their parts and writes them, cuts the journal behind it.
//!
//! State is split into [`PARTITIONS`] fixed key partitions (by device,
//! subject or zone id). A worker owns whole partitions (`partition %
//! workers`), so a checkpoint restores into any number of workers up to
//! that many.
//!
//! A checkpoint is aligned: on a request each worker puts a mark into its
//! input after the readings it has taken and stops taking more; each
//! device operator snapshots when its mark arrives and passes marks on to
//! every geo operator, which snapshots once it has them all. No item
//! crosses the cut while the workers wait, so the parts agree; the
//! workers resume as soon as every part is serialized (the files are
//! written behind them).

pub mod codec;
pub mod coordinator;
pub mod journal;
pub mod store;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Fixed key partitions of the engine's state: the most workers (over all
/// processes) a checkpoint can be restored into.
pub const PARTITIONS: u16 = 256;

/// The partition of a device, subject or zone id (FNV-1a: stable across
/// runs, processes and builds).
pub fn partition_of(id: &str) -> u16 {
    (fnv(id) % u64::from(PARTITIONS)) as u16
}

/// FNV-1a of a text.
pub fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Where and how often the engine keeps its state.
#[derive(Clone, Debug)]
pub struct DurableConfig {
    /// Checkpoints go to `dir/checkpoints`, the journal to `dir/journal`.
    pub dir: PathBuf,
    /// Time between checkpoints.
    pub interval: Duration,
    /// Complete checkpoints kept (the newest first; older ones are the
    /// fall-back when the newest is damaged).
    pub retain: usize,
    /// Most bytes the journal may hold; beyond it the workers stop taking
    /// readings (back-pressure) until a checkpoint cuts the journal.
    pub journal_max_bytes: u64,
}

impl Default for DurableConfig {
    fn default() -> Self {
        DurableConfig {
            dir: PathBuf::from("data"),
            interval: Duration::from_secs(10),
            retain: 2,
            journal_max_bytes: 1 << 30,
        }
    }
}

/// Resolves once the journal holds a reading durably: the source may then
/// acknowledge it.
#[derive(Debug)]
pub struct Receipt(Option<tokio::sync::oneshot::Receiver<()>>);

/// The acknowledgement a worker fires once the journal holds a reading.
pub type Ack = tokio::sync::oneshot::Sender<()>;

impl Receipt {
    /// A receipt that is already durable (no journal, or nothing to keep).
    pub fn done() -> Self {
        Receipt(None)
    }

    /// A receipt and the acknowledgement that resolves it.
    pub fn pending() -> (Self, Ack) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Receipt(Some(rx)), tx)
    }

    /// Waits until the reading is durable; `Err` when the engine stopped
    /// before it was (do not acknowledge it).
    pub async fn durable(self) -> Result<(), crate::Closed> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx.await.map_err(|_| crate::Closed),
        }
    }

    /// [`Receipt::durable`] for synchronous code.
    pub fn wait(self) -> Result<(), crate::Closed> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx.blocking_recv().map_err(|_| crate::Closed),
        }
    }

    /// `Some` once decided, without waiting.
    pub fn try_durable(&mut self) -> Option<Result<(), crate::Closed>> {
        match &mut self.0 {
            None => Some(Ok(())),
            Some(rx) => match rx.try_recv() {
                Ok(()) => Some(Ok(())),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => None,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => Some(Err(crate::Closed)),
            },
        }
    }
}

/// The checkpoint handshake between the coordinator and the workers.
#[derive(Debug, Default)]
pub struct Control {
    /// The newest epoch asked for.
    pub requested: AtomicU64,
    /// The newest epoch whose parts are all taken: workers resume.
    pub taken: AtomicU64,
    /// Replay of the journal is over: checkpoints may begin.
    pub replayed: AtomicBool,
    /// The journal is over its bound: workers take no readings.
    pub journal_full: AtomicBool,
    /// Bytes in the journal's segments on disk.
    pub journal_bytes: AtomicU64,
    /// The last checkpoint after the inputs closed is written: workers end.
    pub finished: AtomicBool,
}

impl Control {
    /// Whether epoch `epoch`'s checkpoint is under way (asked, not all taken).
    pub fn pending(&self) -> Option<u64> {
        let r = self.requested.load(Ordering::Acquire);
        (r > self.taken.load(Ordering::Acquire)).then_some(r)
    }
}
