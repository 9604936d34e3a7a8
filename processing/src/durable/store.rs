//! Checkpoints on disk.
//!
//! ```text
//! checkpoints/0000000042/          one complete checkpoint (epoch 42)
//!     device-w000.bin ...          each worker's part of each operator
//!     geo-w000.bin ...
//!     MANIFEST.json                written last: what it holds, checksums
//! checkpoints/0000000043.tmp/      one being written (or torn by a kill)
//! ```
//!
//! A checkpoint is written into `{epoch}.tmp`, every file `fsync`ed, the
//! manifest last, then the directory is renamed and its parent synced: a
//! directory without `.tmp` and with a manifest is complete. Loading checks
//! each part's size and CRC-32 against the manifest; a damaged checkpoint
//! is skipped for the one before it, with a log line and a metric.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

/// The format checkpoints are written in: parts in bincode (the compact
/// encoding timely's exchange uses). Format 1 (JSON parts) is still read.
pub const FORMAT: u32 = 2;

/// What a checkpoint holds, written last.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version ([`FORMAT`]; 1: JSON parts).
    pub format: u32,
    /// Epoch: the checkpoint contains every journal segment numbered up to it.
    pub epoch: u64,
    /// Wall-clock time it was taken, ms.
    pub created_ms: i64,
    /// Process start (journal generation) that wrote it.
    pub generation: u64,
    /// Workers that wrote it (in a cluster, this process's).
    pub workers: usize,
    /// Processes of the cluster that wrote it (1 alone); each process's
    /// checkpoint holds the partitions its workers own.
    #[serde(default = "one")]
    pub processes: usize,
    /// The event-time watermark at the cut (the lowest frontier any worker
    /// had promised), ms.
    pub watermark_ms: i64,
    /// Event time the engine first started listening at, ms.
    pub listening_since_ms: i64,
    /// Where the replayable sources (Kafka: topic, partition) stopped:
    /// the offset of the first record the checkpoint does not contain.
    #[serde(default)]
    pub logs: super::logs::Positions,
    /// The parts.
    pub parts: Vec<PartMeta>,
}

/// One worker's part of one operator.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartMeta {
    /// File name in the checkpoint's directory.
    pub file: String,
    /// `device` or `geo`.
    pub operator: String,
    /// Worker that wrote it.
    pub worker: usize,
    /// Bytes.
    pub bytes: u64,
    /// CRC-32 of the file.
    pub crc32: u32,
    /// Entries (devices; subjects, zones and waiting items) per partition.
    pub partitions: Vec<(u16, u32)>,
}

/// A part handed to the store.
#[derive(Debug)]
pub struct Part {
    /// Which operator.
    pub operator: &'static str,
    /// Which worker.
    pub worker: usize,
    /// The serialized part.
    pub data: Vec<u8>,
    /// Entries per partition.
    pub partitions: Vec<(u16, u32)>,
}

/// A checkpoint on disk, as `list` sees it.
#[derive(Debug)]
pub struct Listed {
    /// Epoch.
    pub epoch: u64,
    /// Its directory.
    pub path: PathBuf,
    /// The manifest, or why there is none usable.
    pub manifest: Result<Manifest, String>,
    /// Bytes of its files.
    pub bytes: u64,
}

/// A checkpoint read back and checked.
#[derive(Debug)]
pub struct Loaded {
    /// Its manifest.
    pub manifest: Manifest,
    /// Each part's bytes, in the manifest's order.
    pub parts: Vec<Vec<u8>>,
}

/// The checkpoint directory.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

fn io(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

impl Store {
    /// The store in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Store, String> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        Ok(Store {
            dir: dir.to_owned(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every checkpoint directory, complete or not, oldest first.
    pub fn list(&self) -> Result<Vec<Listed>, String> {
        let mut found = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(|e| io(&self.dir, e))?;
        for e in entries {
            let e = e.map_err(|e| io(&self.dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let (digits, torn) = match name.strip_suffix(".tmp") {
                Some(d) => (d, true),
                None => (name.as_str(), false),
            };
            let Ok(epoch) = digits.parse::<u64>() else {
                continue;
            };
            let path = e.path();
            let bytes = std::fs::read_dir(&path)
                .map(|d| {
                    d.filter_map(|f| f.ok()?.metadata().ok())
                        .map(|m| m.len())
                        .sum()
                })
                .unwrap_or(0);
            let manifest = if torn {
                Err("incomplete (the process stopped while writing it)".to_owned())
            } else {
                read_manifest(&path)
            };
            found.push(Listed {
                epoch,
                path,
                manifest,
                bytes,
            });
        }
        found.sort_by_key(|l| (l.epoch, l.manifest.is_ok()));
        Ok(found)
    }

    /// The highest epoch any directory carries, complete or not.
    pub fn highest_epoch(&self) -> u64 {
        self.list()
            .unwrap_or_default()
            .iter()
            .map(|l| l.epoch)
            .max()
            .unwrap_or(0)
    }

    /// The newest checkpoint that reads back whole. Damaged ones are
    /// skipped with a log line and `ioc_checkpoint_damaged_total`. `Err`
    /// names every damaged file when there were checkpoints and none is
    /// usable: starting empty would be silently wrong.
    pub fn load_latest(&self) -> Result<Option<Loaded>, String> {
        let listed = self.list()?;
        let mut problems = Vec::new();
        for l in listed.iter().rev() {
            let loaded = Self::read(l);
            match loaded {
                Ok(l) => return Ok(Some(l)),
                // A checkpoint being written when the process stopped is
                // expected, not damage.
                Err(_) if l.path.extension().is_some_and(|e| e == "tmp") => {}
                Err(e) => {
                    warn!(checkpoint = %l.path.display(), problem = %e, "checkpoint damaged; trying the one before");
                    metrics::counter!("ioc_checkpoint_damaged_total").increment(1);
                    problems.push(e);
                }
            }
        }
        if problems.is_empty() {
            Ok(None)
        } else {
            Err(format!(
                "no usable checkpoint in {}: {}",
                self.dir.display(),
                problems.join("; ")
            ))
        }
    }

    /// A listed checkpoint's manifest and parts, each part checked
    /// against the manifest's size and CRC-32.
    fn read(l: &Listed) -> Result<Loaded, String> {
        let m = l.manifest.clone()?;
        let mut parts = Vec::with_capacity(m.parts.len());
        for p in &m.parts {
            let path = l.path.join(&p.file);
            let data = std::fs::read(&path).map_err(|e| io(&path, e))?;
            if data.len() as u64 != p.bytes || crc32fast::hash(&data) != p.crc32 {
                return Err(format!(
                    "{}: size or checksum does not match the manifest",
                    path.display()
                ));
            }
            parts.push(data);
        }
        Ok(Loaded { manifest: m, parts })
    }

    /// Checkpoint `epoch`, whole (a cluster restores the one every
    /// process completed, not always the newest here).
    pub fn load_epoch(&self, epoch: u64) -> Result<Loaded, String> {
        let listed = self.list()?;
        let l = listed
            .iter()
            .rev()
            .find(|l| l.epoch == epoch && l.manifest.is_ok())
            .ok_or_else(|| format!("no complete checkpoint {epoch} in {}", self.dir.display()))?;
        Self::read(l)
    }

    /// Removes every checkpoint after `epoch` (complete or not): a cluster
    /// went back to `epoch`, and what came after here is not the
    /// cluster's. Returns how many.
    pub fn remove_after(&self, epoch: u64) -> Result<usize, String> {
        let mut removed = 0;
        for l in self.list()?.iter().filter(|l| l.epoch > epoch) {
            std::fs::remove_dir_all(&l.path).map_err(|e| io(&l.path, e))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Writes a checkpoint: parts, then the manifest, then the rename.
    /// Returns its bytes.
    pub fn write(&self, mut manifest: Manifest, parts: Vec<Part>) -> Result<u64, String> {
        let tmp = self.dir.join(format!("{:010}.tmp", manifest.epoch));
        let done = self.dir.join(format!("{:010}", manifest.epoch));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        let mut total = 0;
        for p in parts {
            let ext = if manifest.format == 1 { "json" } else { "bin" };
            let file = format!("{}-w{:03}.{ext}", p.operator, p.worker);
            let path = tmp.join(&file);
            write_synced(&path, &p.data)?;
            total += p.data.len() as u64;
            manifest.parts.push(PartMeta {
                file,
                operator: p.operator.to_owned(),
                worker: p.worker,
                bytes: p.data.len() as u64,
                crc32: crc32fast::hash(&p.data),
                partitions: p.partitions,
            });
        }
        let data = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
        write_synced(&tmp.join("MANIFEST.json"), &data)?;
        total += data.len() as u64;
        if done.exists() {
            std::fs::remove_dir_all(&done).map_err(|e| io(&done, e))?;
        }
        std::fs::rename(&tmp, &done).map_err(|e| io(&done, e))?;
        sync_dir(&self.dir)?;
        Ok(total)
    }

    /// Removes all but the newest `retain` complete checkpoints, and
    /// incomplete ones older than the newest complete. Returns the oldest
    /// epoch kept (the journal is needed from there).
    pub fn prune(&self, retain: usize) -> Result<Option<u64>, String> {
        let listed = self.list()?;
        let complete: Vec<u64> = listed
            .iter()
            .filter(|l| l.manifest.is_ok())
            .map(|l| l.epoch)
            .collect();
        let keep_from = complete
            .len()
            .checked_sub(retain.max(1))
            .and_then(|i| complete.get(i))
            .or(complete.first())
            .copied();
        let newest = complete.last().copied().unwrap_or(0);
        for l in &listed {
            let old = keep_from.is_some_and(|k| l.epoch < k);
            let stale_tmp = l.manifest.is_err() && l.epoch < newest;
            if old || stale_tmp {
                std::fs::remove_dir_all(&l.path).map_err(|e| io(&l.path, e))?;
            }
        }
        Ok(keep_from)
    }
}

fn one() -> usize {
    1
}

fn read_manifest(dir: &Path) -> Result<Manifest, String> {
    let path = dir.join("MANIFEST.json");
    let data = std::fs::read(&path).map_err(|e| io(&path, e))?;
    serde_json::from_slice(&data).map_err(|e| format!("{}: {e}", path.display()))
}

/// Locks data directory `dir` for this process, creating it if need be.
/// The lock goes with the returned file, and with the process however it
/// ends. Two processes on one directory would interleave their journals
/// and overwrite each other's checkpoints: the second is refused, with
/// the first one's process id.
pub fn lock_dir(dir: &Path) -> Result<File, String> {
    use std::io::Read as _;
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let path = dir.join("LOCK");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| io(&path, e))?;
    match f.try_lock() {
        Ok(()) => {
            f.set_len(0).map_err(|e| io(&path, e))?;
            write!(f, "{}", std::process::id()).map_err(|e| io(&path, e))?;
            Ok(f)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            Err(format!(
                "{}: the data directory is in use by another process (pid {}); each ioc process needs its own checkpoint.dir",
                path.display(),
                pid.trim()
            ))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io(&path, e)),
    }
}

/// Writes a file and syncs it.
pub fn write_synced(path: &Path, data: &[u8]) -> Result<(), String> {
    let mut f = File::create(path).map_err(|e| io(path, e))?;
    f.write_all(data).map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))
}

/// Syncs a directory (its entries: a rename or a new file).
pub fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn manifest(epoch: u64) -> Manifest {
        Manifest {
            format: 1,
            epoch,
            created_ms: 0,
            generation: 1,
            workers: 1,
            processes: 1,
            watermark_ms: 0,
            listening_since_ms: 0,
            logs: Default::default(),
            parts: Vec::new(),
        }
    }

    fn part(data: &str) -> Part {
        Part {
            operator: "device",
            worker: 0,
            data: data.as_bytes().to_vec(),
            partitions: vec![(3, 1)],
        }
    }

    #[test]
    fn a_data_directory_serves_one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path()).unwrap();
        let e = lock_dir(dir.path()).unwrap_err();
        assert!(
            e.contains("in use") && e.contains(&std::process::id().to_string()),
            "{e}"
        );
        drop(held);
        lock_dir(dir.path()).unwrap();
    }

    #[test]
    fn a_damaged_checkpoint_falls_back_to_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.write(manifest(1), vec![part("[1]")]).unwrap();
        store.write(manifest(2), vec![part("[2]")]).unwrap();
        assert_eq!(store.load_latest().unwrap().unwrap().manifest.epoch, 2);
        // A bit flipped in the newest: the one before is used.
        std::fs::write(dir.path().join("0000000002/device-w000.json"), "[3]").unwrap();
        let loaded = store.load_latest().unwrap().unwrap();
        assert_eq!(
            (loaded.manifest.epoch, loaded.parts[0].as_slice()),
            (1, &b"[1]"[..])
        );
        // Every one damaged: refused, naming the file.
        std::fs::write(dir.path().join("0000000001/device-w000.json"), "[").unwrap();
        let e = store.load_latest().unwrap_err();
        assert!(e.contains("0000000001/device-w000.json"), "{e}");
    }

    #[test]
    fn a_torn_write_is_ignored_and_pruning_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for e in 1..=4 {
            store.write(manifest(e), vec![part("[]")]).unwrap();
        }
        std::fs::create_dir(dir.path().join("0000000005.tmp")).unwrap();
        assert_eq!(store.load_latest().unwrap().unwrap().manifest.epoch, 4);
        assert_eq!(store.highest_epoch(), 5);
        assert_eq!(store.prune(2).unwrap(), Some(3));
        let left: Vec<u64> = store.list().unwrap().iter().map(|l| l.epoch).collect();
        assert_eq!(left, vec![3, 4, 5]);
    }
}
