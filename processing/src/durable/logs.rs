//! Sources that are themselves replayable logs (Kafka).
//!
//! A Kafka record is not written to the journal: the broker keeps it, so
//! the checkpoint keeps where each partition's reading stopped and a
//! restart reads on from there. For that position to match the state, a
//! log source takes part in the checkpoint's cut: when one is asked for,
//! the source stops handing records over and says where it stopped; the
//! workers then take everything already in their channels (which holds
//! every record it handed over) and mark their inputs after it. The
//! checkpoint thus contains exactly the records before the positions it
//! records, and the source resumes once the parts are taken.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::Shared;

/// Where each replayable source stopped: topic → partition → the offset
/// of the next record not contained.
pub type Positions = BTreeMap<String, BTreeMap<i32, i64>>;

/// `newer`'s partitions over `all`'s.
fn overlay(all: &mut Positions, newer: &Positions) {
    for (topic, parts) in newer {
        all.entry(topic.clone()).or_default().extend(parts);
    }
}

/// One registered source, as the workers and the coordinator see it.
#[derive(Debug, Default)]
pub struct Slot {
    positions: Mutex<Positions>,
    /// The checkpoint it has stopped for; `u64::MAX` once it ended.
    paused_for: AtomicU64,
}

impl Slot {
    fn positions(&self) -> std::sync::MutexGuard<'_, Positions> {
        self.positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The registered sources and what the checkpoints hold of them.
#[derive(Debug, Default)]
pub struct Logs {
    /// Where the restored checkpoint left them: a partition no source has
    /// read from since (it has not been assigned yet, or Kafka has not
    /// started) keeps its position in every checkpoint.
    restored: Positions,
    slots: Mutex<Vec<Arc<Slot>>>,
    /// The newest checkpoint written and its positions.
    durable: Mutex<(u64, Positions)>,
}

impl Logs {
    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether any source is registered (the workers then take what is
    /// in their channels before they mark).
    pub fn any(&self) -> bool {
        !self.slots().is_empty()
    }

    /// Whether every source has stopped for checkpoint `epoch`.
    pub fn paused(&self, epoch: u64) -> bool {
        self.slots()
            .iter()
            .all(|s| s.paused_for.load(Ordering::Acquire) >= epoch)
    }

    /// Where the restored checkpoint left the sources.
    pub fn restored(restored: Positions) -> Self {
        Logs {
            restored,
            ..Logs::default()
        }
    }

    /// Every source's positions (call while they are paused), over the
    /// restored ones.
    pub fn positions(&self) -> Positions {
        let mut all = self.restored.clone();
        for s in self.slots().iter() {
            overlay(&mut all, &s.positions());
        }
        all
    }

    /// Checkpoint `epoch` holding `positions` is on disk.
    pub fn written(&self, epoch: u64, positions: Positions) {
        *self.durable.lock().unwrap_or_else(PoisonError::into_inner) = (epoch, positions);
    }
}

/// A replayable source's part in the checkpoints. Dropping it ends it (its
/// last positions stand).
#[derive(Debug)]
pub struct LogSource {
    slot: Arc<Slot>,
    shared: Arc<Shared>,
    told: u64,
}

impl LogSource {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let slot = Arc::new(Slot::default());
        // A source that starts while a checkpoint is being cut stops for
        // it before it hands anything: counted as stopped for it already,
        // it would hand records past the workers' marks while its
        // positions, which the checkpoint keeps, moved past them (lost at
        // a restart from there).
        slot.paused_for.store(
            shared.control.taken.load(Ordering::Acquire),
            Ordering::Release,
        );
        shared.control.logs.slots().push(slot.clone());
        LogSource {
            slot,
            shared,
            told: 0,
        }
    }

    fn wake(&self) {
        for w in 0..self.shared.rxs.len() {
            self.shared.wake(w);
        }
    }

    /// The positions the restored checkpoint holds: start each partition
    /// there the first time it is assigned.
    pub fn restored(&self) -> &Positions {
        &self.shared.control.logs.restored
    }

    /// The record at `offset` of `topic`/`partition` was handed to the
    /// engine (or dead-lettered).
    pub fn handed(&self, topic: &str, partition: i32, offset: i64) {
        let mut p = self.slot.positions();
        match p.get_mut(topic) {
            Some(t) => {
                t.insert(partition, offset + 1);
            }
            None => {
                p.insert(topic.to_owned(), BTreeMap::from([(partition, offset + 1)]));
            }
        }
    }

    /// Where this source stands: per partition, the next offset after
    /// what it handed over, or, where it has handed nothing yet, the
    /// restored checkpoint's. Committed before partitions are revoked, so
    /// that their next assignment (here or elsewhere) starts there rather
    /// than at an offset committed by an earlier run past the checkpoint.
    pub fn handed_positions(&self) -> Positions {
        let mut all = self.shared.control.logs.restored.clone();
        overlay(&mut all, &self.slot.positions());
        all
    }

    /// If a checkpoint is being taken, stops here until its parts are
    /// taken (what was handed before is in it, nothing after). Call it
    /// between records. `true` if it waited.
    pub fn hold_for_checkpoint(&self) -> bool {
        let Some(epoch) = self.shared.control.pending() else {
            return false;
        };
        if self.slot.paused_for.load(Ordering::Acquire) >= epoch {
            return false;
        }
        self.slot.paused_for.store(epoch, Ordering::Release);
        self.wake();
        while self.shared.control.taken.load(Ordering::Acquire) < epoch
            && !self.shared.control.finished.load(Ordering::Acquire)
        {
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }

    /// The positions of a checkpoint written since the last call: they may
    /// be committed to the broker (a restart without the checkpoint
    /// directory then starts there too).
    pub fn newly_durable(&mut self) -> Option<Positions> {
        let d = self
            .shared
            .control
            .logs
            .durable
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (d.0 > self.told).then(|| {
            self.told = d.0;
            d.1.clone()
        })
    }
}

impl Drop for LogSource {
    fn drop(&mut self) {
        self.slot.paused_for.store(u64::MAX, Ordering::Release);
        self.wake();
    }
}
