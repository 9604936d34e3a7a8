//! The on-disk spool: every batch is a file until the database has it.
//!
//! Each batch is written to `{dir}/{seq:016x}-{points}-{enqueued_ms}.lp[.gz]`
//! (through a `.tmp` file and a rename, so a crash never leaves half a
//! batch), sent in `seq` order, and deleted once the database answered
//! 2xx. A batch the database refuses as bad data moves to `{dir}/rejected/`
//! with a `.json` file beside it holding the status and the server's
//! message. Reopening the directory after a crash or a restart resumes
//! exactly where the files say.
//!
//! The file names carry everything the sink needs to know about a batch
//! (order, point count, age, compression), so opening the spool reads no
//! file contents. Writes are not `fsync`ed: a process crash loses nothing
//! that reached [`Spool::push`]; a power cut may lose the last seconds.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tracing::warn;

/// One batch in the spool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Position in write order.
    pub seq: u64,
    /// Points (lines) in the batch.
    pub points: u64,
    /// Wall-clock time the batch's first point entered the sink, epoch ms.
    pub enqueued_ms: i64,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// The file is gzip-compressed.
    pub gzip: bool,
}

impl Segment {
    fn file_name(&self) -> String {
        format!(
            "{:016x}-{}-{}.lp{}",
            self.seq,
            self.points,
            self.enqueued_ms,
            if self.gzip { ".gz" } else { "" }
        )
    }

    fn parse(name: &str, bytes: u64) -> Option<Segment> {
        let (stem, gzip) = match name.strip_suffix(".lp.gz") {
            Some(stem) => (stem, true),
            None => (name.strip_suffix(".lp")?, false),
        };
        let mut parts = stem.splitn(3, '-');
        let seq = u64::from_str_radix(parts.next()?, 16).ok()?;
        let points = parts.next()?.parse().ok()?;
        let enqueued_ms = parts.next()?.parse().ok()?;
        Some(Segment {
            seq,
            points,
            enqueued_ms,
            bytes,
            gzip,
        })
    }
}

/// Why a batch was set aside, written beside it in `rejected/`.
#[derive(Debug, Serialize)]
struct Rejected<'a> {
    status: u16,
    message: &'a str,
    points: u64,
    enqueued_ms: i64,
    rejected_ms: i64,
}

/// The spool directory and the batches in it, oldest first.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    bytes: u64,
    points: u64,
    max_bytes: u64,
    next_seq: u64,
    /// The batch being sent, which dropping must not touch.
    in_flight: Option<u64>,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, picking up the batches
    /// a previous run left, and removing half-written ones.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                std::fs::remove_file(entry.path())?;
                continue;
            }
            match Segment::parse(&name, entry.metadata()?.len()) {
                Some(s) => segments.push(s),
                None => warn!(file = %entry.path().display(), "not a spool batch; left alone"),
            }
        }
        segments.sort_by_key(|s| s.seq);
        let next_seq = segments.last().map_or(0, |s| s.seq + 1);
        let spool = Spool {
            dir: dir.to_owned(),
            bytes: segments.iter().map(|s| s.bytes).sum(),
            points: segments.iter().map(|s| s.points).sum(),
            segments: segments.into(),
            max_bytes,
            next_seq,
            in_flight: None,
        };
        Ok(spool)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes on disk (not counting rejected batches).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Points waiting.
    pub fn points(&self) -> u64 {
        self.points
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Whether a batch of `incoming` bytes would take the spool past its
    /// limit. An empty spool always takes a batch.
    pub fn would_overflow(&self, incoming: u64) -> bool {
        !self.segments.is_empty() && self.bytes + incoming > self.max_bytes
    }

    /// Writes a batch as the newest file.
    pub fn push(
        &mut self,
        body: &[u8],
        points: u64,
        enqueued_ms: i64,
        gzip: bool,
    ) -> io::Result<Segment> {
        let segment = Segment {
            seq: self.next_seq,
            points,
            enqueued_ms,
            bytes: body.len() as u64,
            gzip,
        };
        let path = self.dir.join(segment.file_name());
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, &path)?;
        self.next_seq += 1;
        self.bytes += segment.bytes;
        self.points += segment.points;
        self.segments.push_back(segment.clone());
        Ok(segment)
    }

    /// The oldest batch, marked as being sent.
    pub fn take_front(&mut self) -> Option<Segment> {
        let front = self.segments.front()?.clone();
        self.in_flight = Some(front.seq);
        Some(front)
    }

    /// The file holding a batch.
    pub fn path(&self, segment: &Segment) -> PathBuf {
        self.dir.join(segment.file_name())
    }

    /// Whether the batch is still waiting.
    pub fn contains(&self, segment: &Segment) -> bool {
        self.segments.iter().any(|s| s.seq == segment.seq)
    }

    /// Takes the batch at `index` out of the line (its file stays).
    fn forget(&mut self, index: usize) -> Option<Segment> {
        let s = self.segments.remove(index)?;
        self.bytes -= s.bytes;
        self.points -= s.points;
        Some(s)
    }

    /// Takes `segment` out of the line, if it is still in it.
    fn forget_segment(&mut self, segment: &Segment) -> Option<Segment> {
        self.in_flight = None;
        let index = self.segments.iter().position(|s| s.seq == segment.seq)?;
        self.forget(index)
    }

    /// The batch was written: delete it.
    pub fn done(&mut self, segment: &Segment) -> io::Result<()> {
        match self.forget_segment(segment) {
            Some(s) => remove_if_present(&self.path(&s)),
            None => Ok(()),
        }
    }

    /// The send was abandoned (shutdown); the batch stays first in line.
    pub fn release(&mut self) {
        self.in_flight = None;
    }

    /// The database refused the batch as bad data: move it to `rejected/`
    /// with the reason beside it.
    pub fn reject(
        &mut self,
        segment: &Segment,
        status: u16,
        message: &str,
        now_ms: i64,
    ) -> io::Result<PathBuf> {
        let rejected = self.dir.join("rejected");
        std::fs::create_dir_all(&rejected)?;
        let target = rejected.join(segment.file_name());
        if let Some(s) = self.forget_segment(segment) {
            std::fs::rename(self.path(&s), &target)?;
            let why = Rejected {
                status,
                message,
                points: s.points,
                enqueued_ms: s.enqueued_ms,
                rejected_ms: now_ms,
            };
            let json = serde_json::to_vec_pretty(&why).map_err(io::Error::other)?;
            std::fs::write(target.with_extension("json"), json)?;
        }
        Ok(target)
    }

    /// Deletes the oldest batch that is not being sent, to make room.
    /// Returns it, or `None` when there is nothing to drop.
    pub fn drop_oldest(&mut self) -> io::Result<Option<Segment>> {
        let Some(i) = self
            .segments
            .iter()
            .position(|s| Some(s.seq) != self.in_flight)
        else {
            return Ok(None);
        };
        let Some(s) = self.forget(i) else {
            return Ok(None);
        };
        remove_if_present(&self.path(&s))?;
        Ok(Some(s))
    }

    /// When the oldest waiting point entered the sink, epoch ms.
    pub fn oldest_enqueued_ms(&self) -> Option<i64> {
        self.segments.front().map(|s| s.enqueued_ms)
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_survive_reopen_in_order_and_half_written_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let a = s.push(b"a 1\n", 1, 10, false).unwrap();
        let b = s.push(b"b 1\nb 2\n", 2, 20, true).unwrap();
        std::fs::write(dir.path().join("0000000000000009-1-1.tmp"), b"half").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        drop(s);

        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!((s.len(), s.points(), s.bytes()), (2, 3, 12));
        assert!(!dir.path().join("0000000000000009-1-1.tmp").exists());
        assert_eq!(s.take_front(), Some(a.clone()));
        assert_eq!(std::fs::read(s.path(&a)).unwrap(), b"a 1\n");
        s.done(&a).unwrap();
        assert_eq!(s.take_front(), Some(b.clone()));
        let c = s.push(b"c\n", 1, 30, false).unwrap();
        assert_eq!(c.seq, b.seq + 1, "numbering continues after a reopen");
        assert_eq!(s.oldest_enqueued_ms(), Some(20));
    }

    #[test]
    fn dropping_spares_the_batch_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 10).unwrap();
        assert!(!s.would_overflow(100), "an empty spool takes any batch");
        let a = s.push(b"aaaaaa", 1, 1, false).unwrap();
        assert!(!s.would_overflow(4));
        assert!(s.would_overflow(5));
        let b = s.push(b"bbbbbb", 1, 2, false).unwrap();
        assert_eq!(s.take_front(), Some(a.clone()));
        assert_eq!(s.drop_oldest().unwrap(), Some(b.clone()));
        assert!(!s.path(&b).exists());
        assert_eq!(
            s.drop_oldest().unwrap(),
            None,
            "only the batch in flight is left"
        );
        s.release();
        assert_eq!(s.drop_oldest().unwrap(), Some(a));
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn a_batch_deleted_by_hand_can_be_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let a = s.push(b"a\n", 1, 1, false).unwrap();
        let b = s.push(b"b\n", 1, 2, false).unwrap();
        std::fs::remove_file(s.path(&a)).unwrap();
        assert_eq!(s.take_front(), Some(a.clone()));
        assert!(s.contains(&a));
        s.done(&a).unwrap();
        assert!(!s.contains(&a));
        assert_eq!(s.take_front(), Some(b));
    }

    #[test]
    fn rejected_batches_keep_their_bytes_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let a = s.push(b"bad line\n", 1, 5, false).unwrap();
        s.take_front();
        let target = s.reject(&a, 400, "unable to parse", 99).unwrap();
        assert!(s.is_empty());
        assert_eq!(std::fs::read(&target).unwrap(), b"bad line\n");
        let why: serde_json::Value =
            serde_json::from_slice(&std::fs::read(target.with_extension("json")).unwrap()).unwrap();
        assert_eq!(why["status"], 400);
        assert_eq!(why["message"], "unable to parse");
        // The rejected directory is not read back as pending batches.
        assert!(Spool::open(dir.path(), 1 << 20).unwrap().is_empty());
    }
}
