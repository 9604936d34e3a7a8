//! Durable state: the ingest journal and consistent checkpoints.
//!
//! - [`journal`]: every reading a worker takes is appended to its journal
//!   segment before the source acknowledges it (group-committed
//!   `fdatasync` on a syncer thread; the [`Receipt`] resolves then, through
//!   the worker's [`Tickets`]);
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

pub mod cluster;
pub mod codec;
pub mod coordinator;
pub mod journal;
pub mod logs;
pub mod store;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
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

/// Which readings sent to one worker are in the journal on disk.
///
/// Each reading sent gets the worker's next ticket; once a batch's segment
/// is synced, the syncer marks the batch's tickets done, and a reading's
/// [`Receipt`] resolves once every ticket up to its own is (a counter
/// shared by the worker's readings, not a channel per reading). Readings
/// from several senders may reach the worker in another order than their
/// tickets: those done past the first missing one wait in a set.
#[derive(Debug, Default)]
pub struct Tickets {
    issued: AtomicU64,
    /// Every ticket up to this one is done (tickets start at 1).
    through: AtomicU64,
    /// The worker stopped: tickets not done now never will be.
    closed: AtomicBool,
    /// Tickets done past `through + 1`.
    ahead: Mutex<BTreeSet<u64>>,
    /// Blocking waiters.
    cond: Condvar,
    /// Async waiters.
    notify: tokio::sync::Notify,
}

impl Tickets {
    /// The next reading's ticket.
    pub fn issue(&self) -> u64 {
        self.issued.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Marks tickets done (their readings are durable, or were never sent)
    /// and wakes whoever waits.
    pub fn done(&self, tickets: &[u64]) {
        if tickets.is_empty() {
            return;
        }
        let mut ahead = self.ahead.lock().unwrap_or_else(PoisonError::into_inner);
        let mut through = self.through.load(Ordering::Relaxed);
        for &t in tickets {
            if t == through + 1 {
                through = t;
            } else if t > through {
                ahead.insert(t);
            }
        }
        while ahead.first() == Some(&(through + 1)) {
            ahead.pop_first();
            through += 1;
        }
        self.through.store(through, Ordering::Release);
        drop(ahead);
        self.cond.notify_all();
        self.notify.notify_waiters();
    }

    /// The worker stopped: receipts of tickets not done fail.
    pub fn close(&self) {
        let ahead = self.ahead.lock().unwrap_or_else(PoisonError::into_inner);
        self.closed.store(true, Ordering::Release);
        drop(ahead);
        self.cond.notify_all();
        self.notify.notify_waiters();
    }

    /// `Some` once ticket `t` is decided.
    fn state(&self, t: u64) -> Option<Result<(), crate::Closed>> {
        if self.through.load(Ordering::Acquire) >= t {
            Some(Ok(()))
        } else if self.closed.load(Ordering::Acquire) {
            Some(Err(crate::Closed))
        } else {
            None
        }
    }
}

/// Resolves once the journal holds a reading durably: the source may then
/// acknowledge it.
#[derive(Debug)]
pub struct Receipt(Option<(Arc<Tickets>, u64)>);

impl Receipt {
    /// A receipt that is already durable (no journal, or nothing to keep).
    pub fn done() -> Self {
        Receipt(None)
    }

    /// The receipt of ticket `ticket` of `tickets`.
    pub fn of(tickets: Arc<Tickets>, ticket: u64) -> Self {
        Receipt(Some((tickets, ticket)))
    }

    /// Its ticket, if it waits for one.
    pub fn ticket(&self) -> Option<u64> {
        self.0.as_ref().map(|(_, t)| *t)
    }

    /// Waits until the reading is durable; `Err` when the engine stopped
    /// before it was (do not acknowledge it).
    pub async fn durable(self) -> Result<(), crate::Closed> {
        let Some((tickets, t)) = self.0 else {
            return Ok(());
        };
        loop {
            let notified = tickets.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check: a wake between the two is kept.
            notified.as_mut().enable();
            if let Some(r) = tickets.state(t) {
                return r;
            }
            notified.await;
        }
    }

    /// [`Receipt::durable`] for synchronous code.
    pub fn wait(self) -> Result<(), crate::Closed> {
        let Some((tickets, t)) = self.0 else {
            return Ok(());
        };
        let mut ahead = tickets.ahead.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(r) = tickets.state(t) {
                return r;
            }
            ahead = tickets
                .cond
                .wait(ahead)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// `Some` once decided, without waiting.
    pub fn try_durable(&mut self) -> Option<Result<(), crate::Closed>> {
        match &self.0 {
            None => Some(Ok(())),
            Some((tickets, t)) => tickets.state(*t),
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
    /// Replayable sources taking part in the cuts.
    pub logs: logs::Logs,
    /// In a cluster, the newest epoch another process's mark asked this
    /// one to cut.
    pub peer_asked: AtomicU64,
}

impl Control {
    /// Whether epoch `epoch`'s checkpoint is under way (asked, not all taken).
    pub fn pending(&self) -> Option<u64> {
        let r = self.requested.load(Ordering::Acquire);
        (r > self.taken.load(Ordering::Acquire)).then_some(r)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_receipt_resolves_once_every_ticket_up_to_its_own_is_done() {
        let tickets = Arc::new(Tickets::default());
        let mut r: Vec<Receipt> = (0..4)
            .map(|_| Receipt::of(tickets.clone(), tickets.issue()))
            .collect();
        assert_eq!(r[3].ticket(), Some(4));
        // Senders raced: 2 and 4 reached the worker first.
        tickets.done(&[2, 4]);
        assert!(r.iter_mut().all(|r| r.try_durable().is_none()));
        tickets.done(&[1]);
        let decided: Vec<bool> = r.iter_mut().map(|r| r.try_durable().is_some()).collect();
        assert_eq!(decided, [true, true, false, false]);
        // A waiter on another thread wakes when 3 is done.
        let last = r.pop().unwrap();
        let waiter = std::thread::spawn(move || last.wait());
        let third = r.pop().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let sync = std::thread::spawn({
            let tickets = tickets.clone();
            move || {
                std::thread::sleep(Duration::from_millis(20));
                tickets.done(&[3]);
            }
        });
        assert_eq!(runtime.block_on(third.durable()), Ok(()));
        assert_eq!(waiter.join().unwrap(), Ok(()));
        sync.join().unwrap();
        // The worker stopped: a ticket not done fails, done ones stay done.
        let mut fifth = Receipt::of(tickets.clone(), tickets.issue());
        tickets.close();
        assert_eq!(fifth.try_durable(), Some(Err(crate::Closed)));
        assert_eq!(r.pop().unwrap().wait(), Ok(()));
    }
}
