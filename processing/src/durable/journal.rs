//! The ingest journal: what each worker took, in the order it took it.
//!
//! A worker appends every reading it takes from its channel to its current
//! segment (one `write` per batch) and hands the batch's acknowledgements
//! to the syncer thread, which `fdatasync`s every segment written since
//! its last turn and then fires them: one flush for everything that
//! arrived meanwhile (group commit). A source acknowledges a reading
//! (MQTT PUBACK, HTTP 200) only then. Kafka records are not journaled
//! (see [`super::logs`]).
//!
//! Segments are named `{segment:010}-g{generation:06}-w{worker:03}.log`.
//! Segment `s` holds what the worker took after its mark for checkpoint
//! `s - 1` and before its mark for checkpoint `s`, so checkpoint `k`
//! contains every segment numbered `k` or less, and a restart replays
//! the rest in (generation, segment) order. Each process start is a new
//! generation. A record is `[length u32][crc32 u32][payload]`, little-endian; the
//! payload is [`super::codec`]'s binary envelope (JSON in the first format).

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ioc_schemas::{Envelope, Timestamp};
use serde::Deserialize;
use tracing::{error, warn};

use super::{Control, Tickets};
use crate::reading::Reading;

/// One journal record.
#[derive(Debug, Deserialize)]
pub struct Entry {
    /// When ingest received it, ms.
    pub received: i64,
    /// The reading.
    pub envelope: Envelope,
}

/// A segment file and what its name says.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Segment {
    /// Process start it was written in.
    pub generation: u64,
    /// Checkpoint epoch whose mark closed it.
    pub segment: u64,
    /// Worker that wrote it.
    pub worker: usize,
    /// The file.
    pub path: PathBuf,
}

impl Segment {
    /// The file name of a segment.
    pub fn name(segment: u64, generation: u64, worker: usize) -> String {
        format!("{segment:010}-g{generation:06}-w{worker:03}.log")
    }

    fn parse(path: PathBuf) -> Option<Segment> {
        let name = path.file_name()?.to_str()?.strip_suffix(".log")?;
        let mut parts = name.split('-');
        let segment = parts.next()?.parse().ok()?;
        let generation = parts.next()?.strip_prefix('g')?.parse().ok()?;
        let worker = parts.next()?.strip_prefix('w')?.parse().ok()?;
        Some(Segment {
            generation,
            segment,
            worker,
            path,
        })
    }
}

/// The segments in `dir`, in replay order (generation, segment, worker).
pub fn segments(dir: &Path) -> std::io::Result<Vec<Segment>> {
    let mut found = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                if let Some(s) = Segment::parse(e?.path()) {
                    found.push(s);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    found.sort_by_key(|s| (s.generation, s.segment, s.worker));
    Ok(found)
}

/// Bytes of the journal's segments.
pub fn bytes(dir: &Path) -> u64 {
    segments(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.path.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// A segment that cannot be replayed.
#[derive(Debug, thiserror::Error)]
#[error("journal segment {}: {reason} at byte {offset}", path.display())]
pub struct Damaged {
    /// The file.
    pub path: PathBuf,
    /// Where the bad record starts.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// How a segment ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadEnd {
    /// Records read.
    pub records: u64,
    /// An unfinished last record (a write cut short by a kill; never
    /// acknowledged, so nothing is lost by skipping it).
    pub torn_tail: bool,
}

/// Reads a segment's records in order. A record cut short at the end is a
/// torn write and ends the segment; a bad record before the end is damage.
pub fn read(path: &Path, mut each: impl FnMut(Entry)) -> Result<ReadEnd, Damaged> {
    let damaged = |offset: u64, reason: String| Damaged {
        path: path.to_owned(),
        offset,
        reason,
    };
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| damaged(0, format!("cannot read: {e}")))?;
    let mut at = 0usize;
    let mut done = ReadEnd::default();
    while at < data.len() {
        let Some(header) = data.get(at..at + 8) else {
            done.torn_tail = true;
            break;
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(payload) = data.get(at + 8..at + 8 + len) else {
            done.torn_tail = true;
            break;
        };
        let last = at + 8 + len == data.len();
        if crc32fast::hash(payload) != crc {
            if last {
                // A write cut short that happened to leave a whole length.
                done.torn_tail = true;
                break;
            }
            return Err(damaged(at as u64, "checksum mismatch".into()));
        }
        let entry = if payload.first() == Some(&super::codec::TAG) {
            super::codec::decode(payload).map(|(received, envelope)| Entry { received, envelope })
        } else {
            serde_json::from_slice(payload).map_err(|e| e.to_string())
        }
        .map_err(|e| damaged(at as u64, format!("undecodable record: {e}")))?;
        each(entry);
        done.records += 1;
        at += 8 + len;
    }
    Ok(done)
}

/// For the syncer: a batch written to a segment (its readings' tickets
/// are done once the file is synced), or a writer that stopped.
enum Job {
    Written {
        file: Arc<File>,
        tickets: Vec<u64>,
        of: Arc<Tickets>,
    },
    Stopped(Arc<Tickets>),
}

/// The syncer thread's end.
#[derive(Clone, Debug)]
pub struct Syncer {
    tx: flume::Sender<Job>,
}

impl Syncer {
    /// Starts the syncer thread; it stops when every [`Syncer`] and
    /// writer is dropped.
    pub fn start() -> std::io::Result<Syncer> {
        let (tx, rx) = flume::unbounded::<Job>();
        std::thread::Builder::new()
            .name("ioc-journal-sync".into())
            .spawn(move || sync_loop(&rx))?;
        Ok(Syncer { tx })
    }
}

fn sync_loop(rx: &flume::Receiver<Job>) {
    let fsync = metrics::histogram!("ioc_journal_fsync_seconds");
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        jobs.extend(rx.try_iter());
        let mut files: Vec<&Arc<File>> = Vec::new();
        for j in &jobs {
            if let Job::Written { file, .. } = j
                && !files.iter().any(|f| Arc::ptr_eq(f, file))
            {
                files.push(file);
            }
        }
        let start = Instant::now();
        for f in files {
            // A reading is acknowledged only once it is on disk: retry
            // (holding every acknowledgement back) until the sync works.
            let mut wait = Duration::from_millis(100);
            while let Err(e) = f.sync_data() {
                error!(error = %e, "cannot sync the journal; readings stay unacknowledged");
                metrics::counter!("ioc_journal_errors_total", "op" => "sync").increment(1);
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
        fsync.record(start.elapsed().as_secs_f64());
        for j in jobs {
            match j {
                Job::Written { tickets, of, .. } => of.done(&tickets),
                Job::Stopped(of) => of.close(),
            }
        }
    }
}

/// One worker's journal writer.
pub struct Writer {
    dir: PathBuf,
    generation: u64,
    worker: usize,
    segment: u64,
    file: Option<Arc<File>>,
    buf: Vec<u8>,
    syncer: Syncer,
    tickets: Arc<Tickets>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("segment", &self.segment)
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// A writer for `worker` of `generation`, starting at segment
    /// `segment`, marking `tickets` done as its batches are synced.
    pub fn new(
        dir: PathBuf,
        generation: u64,
        worker: usize,
        segment: u64,
        syncer: Syncer,
        tickets: Arc<Tickets>,
    ) -> Self {
        Writer {
            dir,
            generation,
            worker,
            segment,
            file: None,
            buf: Vec::with_capacity(1 << 16),
            syncer,
            tickets,
        }
    }

    /// Appends a reading to the batch.
    pub fn append(&mut self, reading: &Reading) {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 8]);
        super::codec::encode(&mut self.buf, reading.received.millis(), &reading.envelope);
        let payload = &self.buf[at + 8..];
        let len = (payload.len() as u32).to_le_bytes();
        let crc = crc32fast::hash(payload).to_le_bytes();
        self.buf[at..at + 4].copy_from_slice(&len);
        self.buf[at + 4..at + 8].copy_from_slice(&crc);
    }

    /// Writes the batch and hands its readings' tickets to the syncer.
    /// Retries (the worker waits: back-pressure) while the disk refuses.
    pub fn commit(&mut self, tickets: Vec<u64>, control: &Control) {
        if self.buf.is_empty() {
            self.tickets.done(&tickets);
            return;
        }
        let mut wait = Duration::from_millis(100);
        loop {
            match self.write() {
                Ok(file) => {
                    control
                        .journal_bytes
                        .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
                    self.buf.clear();
                    let job = Job::Written {
                        file,
                        tickets,
                        of: self.tickets.clone(),
                    };
                    if self.syncer.tx.send(job).is_err() {
                        warn!("the journal syncer stopped");
                    }
                    return;
                }
                Err(e) => {
                    error!(error = %e, dir = %self.dir.display(), "cannot write the journal (disk full?); ingestion waits");
                    metrics::counter!("ioc_journal_errors_total", "op" => "write").increment(1);
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn write(&mut self) -> std::io::Result<Arc<File>> {
        let file = match &self.file {
            Some(f) => f.clone(),
            None => {
                let path = self
                    .dir
                    .join(Segment::name(self.segment, self.generation, self.worker));
                let f = Arc::new(OpenOptions::new().create(true).append(true).open(path)?);
                self.file = Some(f.clone());
                f
            }
        };
        (&*file).write_all(&self.buf)?;
        Ok(file)
    }

    /// Closes the current segment at the mark for checkpoint `epoch`;
    /// what follows goes to segment `epoch + 1`. Returns the closed file,
    /// if anything was written to it.
    pub fn roll(&mut self, epoch: u64) -> Option<PathBuf> {
        let closed = self.file.take().map(|_| {
            self.dir
                .join(Segment::name(self.segment, self.generation, self.worker))
        });
        self.segment = epoch + 1;
        closed
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // After its batches: their tickets are done first.
        let _ = self.syncer.tx.send(Job::Stopped(self.tickets.clone()));
    }
}

impl Entry {
    /// The reading, if its device is in `registry`.
    pub fn reading(self, registry: &ioc_devices::Registry) -> Option<Reading> {
        let device = registry.lookup(&self.envelope.device)?;
        Some(Reading {
            device,
            received: Timestamp(self.received),
            envelope: self.envelope,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn reading(seq: u64) -> Reading {
        let registry = ioc_devices::Registry::sonla_demo();
        let id = registry.shared_id(0).clone();
        let mut r = crate::reading::water_level(&registry, &id, 1_000 + seq as i64, seq, 2.0);
        r.received = Timestamp(5);
        r
    }

    #[test]
    fn records_read_back_and_a_torn_tail_ends_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let control = Control::default();
        let mut w = Writer::new(
            dir.path().into(),
            1,
            0,
            1,
            Syncer::start().unwrap(),
            Arc::default(),
        );
        for seq in 1..=3 {
            w.append(&reading(seq));
        }
        w.commit(Vec::new(), &control);
        let path = w.roll(1).unwrap();
        let mut seen = Vec::new();
        let done = read(&path, |e| seen.push(e.envelope.seq)).unwrap();
        assert_eq!((seen, done.torn_tail), (vec![1, 2, 3], false));
        // A kill in the middle of a write leaves part of a record.
        let data = std::fs::read(&path).unwrap();
        std::fs::write(&path, &data[..data.len() - 5]).unwrap();
        let mut seen = Vec::new();
        let done = read(&path, |e| seen.push(e.envelope.seq)).unwrap();
        assert_eq!((seen, done.torn_tail), (vec![1, 2], true));
        // A flipped byte before the end is damage, named with its place.
        let mut data = data;
        data[12] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        let e = read(&path, |_| {}).unwrap_err();
        assert_eq!(e.offset, 0);
        assert!(e.to_string().contains("checksum"), "{e}");
    }

    #[test]
    fn segment_names_sort_in_replay_order() {
        let dir = tempfile::tempdir().unwrap();
        for (s, g, w) in [(3, 2, 0), (2, 1, 1), (3, 1, 0), (2, 1, 0)] {
            std::fs::write(dir.path().join(Segment::name(s, g, w)), b"").unwrap();
        }
        let order: Vec<_> = segments(dir.path())
            .unwrap()
            .into_iter()
            .map(|s| (s.segment, s.generation, s.worker))
            .collect();
        assert_eq!(order, vec![(2, 1, 0), (2, 1, 1), (3, 1, 0), (3, 2, 0)]);
    }
}
