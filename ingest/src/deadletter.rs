//! Dead letters: every rejected message, kept with everything needed to
//! understand and replay it.
//!
//! A [`DeadLetter`] holds the original bytes (as text when they are UTF-8,
//! base64 otherwise), where the message came from ([`Origin`]: MQTT topic,
//! Kafka topic/partition/offset/key, or the HTTP client), the reason, the
//! JSON pointer of the bad field and the time. Sources hand dead letters to
//! [`DeadLetters`] *before* they acknowledge the message, exactly as they
//! hand valid readings to the engine, so a rejected message is never lost
//! in between. A writer thread drains the queue into a [`Sink`]: the
//! append-only [`FileSink`] (JSON Lines, size-rotated), or the Kafka topic
//! `ioc.deadletter` when Kafka is configured (see `crate::kafka`), which
//! falls back to the file when the broker cannot take a record.
//!
//! `ioc deadletter list|replay` read the file back with [`read_all`].

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ioc_schemas::{RejectReason, Rejection, Timestamp};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::stats::Source;

/// Where a message came from.
#[derive(Clone, Copy, Debug)]
pub enum Origin<'a> {
    /// An MQTT publish.
    Mqtt {
        /// The topic it was published on.
        topic: &'a str,
    },
    /// A Kafka record.
    Kafka {
        /// Topic.
        topic: &'a str,
        /// Partition.
        partition: i32,
        /// Offset in the partition.
        offset: i64,
        /// Message key, if any.
        key: Option<&'a [u8]>,
    },
    /// A line of an HTTP ingest request.
    Http {
        /// The name of the token the client authenticated with.
        client: &'a str,
        /// 1-based line number in the request body.
        line: usize,
        /// Device id patterns the token covers (`*` matches any suffix).
        scope: &'a [String],
    },
}

impl Origin<'_> {
    /// The source the message entered through.
    pub fn source(&self) -> Source {
        match self {
            Origin::Mqtt { .. } => Source::Mqtt,
            Origin::Kafka { .. } => Source::Kafka,
            Origin::Http { .. } => Source::Http,
        }
    }
}

/// One rejected message. Serialized as one JSON line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// When it was rejected.
    pub at: Timestamp,
    /// `mqtt`, `kafka` or `http`.
    pub source: String,
    /// MQTT or Kafka topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Kafka partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// Kafka offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    /// Kafka message key (lossy UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// HTTP client (token name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// HTTP request line number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Why it was rejected.
    pub reason: RejectReason,
    /// JSON pointer of the bad field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// What exactly was wrong.
    pub detail: String,
    /// The original bytes, when they are UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The original bytes in base64, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

impl DeadLetter {
    /// A dead letter for `payload` from `origin`, rejected for `rejection`.
    pub fn new(origin: &Origin<'_>, rejection: Rejection, payload: &[u8], at: Timestamp) -> Self {
        let (payload, payload_base64) = match std::str::from_utf8(payload) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(payload)),
            ),
        };
        let mut d = DeadLetter {
            at,
            source: origin.source().label().to_owned(),
            topic: None,
            partition: None,
            offset: None,
            key: None,
            client: None,
            line: None,
            reason: rejection.reason,
            pointer: rejection.pointer,
            detail: rejection.detail,
            payload,
            payload_base64,
        };
        match *origin {
            Origin::Mqtt { topic } => d.topic = Some(topic.to_owned()),
            Origin::Kafka {
                topic,
                partition,
                offset,
                key,
            } => {
                d.topic = Some(topic.to_owned());
                d.partition = Some(partition);
                d.offset = Some(offset);
                d.key = key.map(|k| String::from_utf8_lossy(k).into_owned());
            }
            Origin::Http { client, line, .. } => {
                d.client = Some(client.to_owned());
                d.line = Some(line);
            }
        }
        d
    }

    /// The original bytes.
    pub fn original(&self) -> Vec<u8> {
        match (&self.payload, &self.payload_base64) {
            (Some(text), _) => text.as_bytes().to_vec(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }

    /// The record as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The record as one JSON line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = self.to_json();
        line.push(b'\n');
        line
    }
}

/// Where dead letters are written.
pub trait Sink: Send {
    /// Writes one record.
    fn write(&mut self, letter: &DeadLetter) -> std::io::Result<()>;
    /// Makes everything written so far durable (or handed off).
    fn flush(&mut self) -> std::io::Result<()>;
    /// A name for logs and metrics: `file` or `kafka`.
    fn name(&self) -> &'static str;
}

/// File sink settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterConfig {
    /// The append-only JSON Lines file.
    pub file: PathBuf,
    /// Rotate the file when it grows past this many bytes.
    pub max_file_bytes: u64,
    /// Rotated files to keep (`file.1` is the newest).
    pub keep_files: usize,
    /// The Kafka topic for dead letters, used when `kafka.enabled`.
    pub kafka_topic: String,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig {
            file: PathBuf::from("data/dead-letters.jsonl"),
            max_file_bytes: 256 * 1024 * 1024,
            keep_files: 4,
            kafka_topic: "ioc.deadletter".into(),
        }
    }
}

/// The append-only, size-rotated JSON Lines file.
pub struct FileSink {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    out: BufWriter<File>,
    size: u64,
    last_sync: Instant,
}

fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl FileSink {
    /// Opens (creating it and its directory if needed) the file for appending.
    pub fn open(config: &DeadLetterConfig) -> std::io::Result<Self> {
        if let Some(dir) = config.file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.file)?;
        let size = file.metadata()?.len();
        Ok(FileSink {
            path: config.file.clone(),
            max_bytes: config.max_file_bytes.max(4096),
            keep: config.keep_files,
            out: BufWriter::with_capacity(64 * 1024, file),
            size,
            last_sync: Instant::now(),
        })
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()?;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = rotated(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.out = BufWriter::with_capacity(64 * 1024, file);
        self.size = 0;
        info!(file = %self.path.display(), "dead-letter file rotated");
        Ok(())
    }
}

impl Sink for FileSink {
    fn write(&mut self, letter: &DeadLetter) -> std::io::Result<()> {
        let line = letter.to_line();
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.out.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        // fsync at most once a second: the page cache survives a process
        // crash, and a power cut loses at most the last second.
        if self.last_sync.elapsed() >= Duration::from_secs(1) {
            self.out.get_ref().sync_data()?;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "file"
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        let _ = self.out.flush();
        let _ = self.out.get_ref().sync_data();
    }
}

/// Dead letters written and failed, by the writer thread.
#[derive(Debug, Default)]
pub struct DeadLetterStats {
    /// Records written to the sink.
    pub written: AtomicU64,
    /// Records the sink could not take (logged with their content).
    pub failed: AtomicU64,
}

/// The hand-off to the dead-letter writer. Clone it freely; the writer
/// stops when every clone is dropped, after writing what it holds.
#[derive(Clone, Debug)]
pub struct DeadLetters {
    tx: flume::Sender<DeadLetter>,
    stats: Arc<DeadLetterStats>,
}

/// The writer thread; join it after dropping every [`DeadLetters`].
pub struct Writer {
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    /// Waits until the writer has written everything and closed its sink.
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

impl DeadLetters {
    /// Starts a writer thread draining into `sink`.
    pub fn start(sink: Box<dyn Sink>) -> (DeadLetters, Writer) {
        let (tx, rx) = flume::bounded::<DeadLetter>(16_384);
        let stats = Arc::new(DeadLetterStats::default());
        let s = stats.clone();
        let thread = std::thread::Builder::new()
            .name("ioc-deadletter".into())
            .spawn(move || write_loop(sink, &rx, &s))
            .unwrap_or_else(|e| panic!("cannot start the dead-letter thread: {e}"));
        (DeadLetters { tx, stats }, Writer { thread })
    }

    /// Queues a dead letter, waiting while the writer is behind.
    pub async fn send(&self, letter: DeadLetter) {
        if let Err(e) = self.tx.send_async(letter).await {
            error!(letter = ?e.into_inner(), "dead-letter writer is gone; record logged here");
        }
    }

    /// Queues a dead letter from synchronous code.
    pub fn send_blocking(&self, letter: DeadLetter) {
        if let Err(e) = self.tx.send(letter) {
            error!(letter = ?e.into_inner(), "dead-letter writer is gone; record logged here");
        }
    }

    /// The writer's counters.
    pub fn stats(&self) -> &DeadLetterStats {
        &self.stats
    }
}

fn write_loop(mut sink: Box<dyn Sink>, rx: &flume::Receiver<DeadLetter>, stats: &DeadLetterStats) {
    let name = sink.name();
    let put = |sink: &mut Box<dyn Sink>, letter: DeadLetter| match sink.write(&letter) {
        Ok(()) => {
            stats.written.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("ioc_deadletters_written_total", "sink" => name).increment(1);
        }
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("ioc_deadletters_failed_total", "sink" => name).increment(1);
            error!(error = %e, ?letter, "cannot write a dead letter; record logged here");
        }
    };
    while let Ok(first) = rx.recv() {
        put(&mut sink, first);
        // Batch whatever else is queued, then flush once.
        for letter in rx.drain() {
            put(&mut sink, letter);
        }
        if let Err(e) = sink.flush() {
            warn!(error = %e, sink = name, "cannot flush dead letters");
        }
    }
}

/// Every dead letter in `file` and its rotated files, oldest first. Lines
/// that do not parse are reported with their file and line number.
pub fn read_all(file: &Path) -> std::io::Result<(Vec<DeadLetter>, Vec<String>)> {
    let mut files: Vec<PathBuf> = (1..1000)
        .map(|n| rotated(file, n))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    if file.exists() {
        files.push(file.to_path_buf());
    }
    if files.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no dead-letter file at {}", file.display()),
        ));
    }
    let (mut letters, mut problems) = (Vec::new(), Vec::new());
    for path in files {
        for (n, line) in BufReader::new(File::open(&path)?).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(&line) {
                Ok(letter) => letters.push(letter),
                Err(e) => problems.push(format!("{}:{}: {e}", path.display(), n + 1)),
            }
        }
    }
    Ok((letters, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(payload: &[u8]) -> DeadLetter {
        DeadLetter::new(
            &Origin::Kafka {
                topic: "ioc.telemetry",
                partition: 2,
                offset: 99,
                key: Some(b"river-to-hieu"),
            },
            Rejection::new(RejectReason::OutOfRange, "too high").at("/hydrology/water_level_m"),
            payload,
            Timestamp(1_783_998_760_000),
        )
    }

    #[test]
    fn keeps_the_original_bytes_text_or_binary() {
        let text = letter(br#"{"v":1}"#);
        assert_eq!(text.payload.as_deref(), Some(r#"{"v":1}"#));
        assert_eq!(text.original(), br#"{"v":1}"#);
        let binary = letter(&[0xff, 0x00, 0x7b]);
        assert!(binary.payload.is_none());
        assert_eq!(binary.original(), vec![0xff, 0x00, 0x7b]);
        let back: DeadLetter = serde_json::from_slice(&binary.to_line()).unwrap();
        assert_eq!(back, binary);
        let json: serde_json::Value = serde_json::from_slice(&text.to_line()).unwrap();
        assert_eq!(json["reason"], "out_of_range");
        assert_eq!(json["partition"], 2);
        assert_eq!(json["key"], "river-to-hieu");
        assert_eq!(json["pointer"], "/hydrology/water_level_m");
        assert_eq!(json["at"], "2026-07-14T03:12:40.000Z");
    }

    #[test]
    fn file_sink_appends_rotates_and_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let config = DeadLetterConfig {
            file: dir.path().join("dl/dead.jsonl"),
            max_file_bytes: 4096,
            keep_files: 2,
            ..DeadLetterConfig::default()
        };
        let (letters, writer) = DeadLetters::start(Box::new(FileSink::open(&config).unwrap()));
        for i in 0..60 {
            letters.send_blocking(letter(format!("{{\"n\":{i}}}").as_bytes()));
        }
        drop(letters);
        writer.join();
        assert!(rotated(&config.file, 1).exists());
        let (back, problems) = read_all(&config.file).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        // Rotation keeps two old files, so the oldest records are gone but
        // what is left is in order and ends with the newest.
        let numbers: Vec<i64> = back
            .iter()
            .map(|d| {
                serde_json::from_slice::<serde_json::Value>(&d.original()).unwrap()["n"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        assert_eq!(numbers.last(), Some(&59));
    }
}
