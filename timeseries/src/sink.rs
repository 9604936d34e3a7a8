//! The batcher thread and the writer task, and how they stop.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ioc_devices::Registry;
use ioc_schemas::Timestamp;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::client::{WriteClient, WriteError};
use crate::config::{InfluxConfig, SpoolFull};
use crate::gzip::Gzip;
use crate::line::{LineEncoder, Lines};
use crate::spool::{Segment, Spool};
use crate::{Input, Record, SinkStats};

/// The sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The spool directory cannot be used.
    #[error("cannot open the time-series spool {dir} (influx.spool_dir): {source}")]
    Spool {
        /// The directory.
        dir: String,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    /// The batcher thread could not start.
    #[error("cannot start the time-series batcher: {0}")]
    Thread(std::io::Error),
}

/// What the batcher and the writer share.
struct Shared {
    spool: Mutex<Spool>,
    /// Signalled when the writer frees room in the spool.
    room: Condvar,
    /// Signalled when the batcher adds a batch.
    ready: Notify,
    stats: Arc<SinkStats>,
    /// Shutdown asked: the batcher flushes and exits.
    stop: AtomicBool,
    /// The batcher has exited: no batch will be added.
    batcher_done: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the spool's size after a change.
    fn publish(&self, spool: &Spool) {
        let s = &self.stats;
        s.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
        s.spool_points.store(spool.points(), Ordering::Relaxed);
        s.spool_batches.store(spool.len() as u64, Ordering::Relaxed);
        metrics::gauge!("ioc_influx_spool_bytes").set(spool.bytes() as f64);
        metrics::gauge!("ioc_influx_spool_points").set(spool.points() as f64);
        metrics::gauge!("ioc_influx_spool_batches").set(spool.len() as f64);
        let age = spool.oldest_enqueued_ms().map_or(0.0, |t| {
            (Timestamp::now().millis() - t).max(0) as f64 / 1000.0
        });
        metrics::gauge!("ioc_influx_oldest_unsent_seconds").set(age);
    }
}

/// A running sink: the batcher thread and the writer task.
pub struct Sink {
    shared: Arc<Shared>,
    batcher: std::thread::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
    abandon: CancellationToken,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").finish_non_exhaustive()
    }
}

impl Sink {
    /// Opens the spool (resuming what a previous run left) and starts
    /// writing. Must be called inside a Tokio runtime.
    pub fn start(
        config: &InfluxConfig,
        registry: Arc<Registry>,
    ) -> Result<(Sink, Input), SinkError> {
        Self::start_live(config, Arc::new(ioc_devices::RegistryCell::new(registry)))
    }

    /// As [`Sink::start`], with the registry in force in `registry`
    /// whenever it changes (a device's tags follow its registry entry).
    pub fn start_live(
        config: &InfluxConfig,
        registry: Arc<ioc_devices::RegistryCell>,
    ) -> Result<(Sink, Input), SinkError> {
        let spool = Spool::open(&config.spool_dir, config.spool_max_bytes).map_err(|source| {
            SinkError::Spool {
                dir: config.spool_dir.display().to_string(),
                source,
            }
        })?;
        let client = WriteClient::new(config)?;
        if !spool.is_empty() {
            info!(
                batches = spool.len(),
                points = spool.points(),
                dir = %spool.dir().display(),
                "time-series spool holds batches from an earlier run; writing them first"
            );
        }
        let stats = Arc::new(SinkStats::default());
        let shared = Arc::new(Shared {
            spool: Mutex::new(spool),
            room: Condvar::new(),
            ready: Notify::new(),
            stats: stats.clone(),
            stop: AtomicBool::new(false),
            batcher_done: AtomicBool::new(false),
        });
        shared.publish(&shared.lock());
        let (tx, rx) = flume::bounded(config.queue_capacity);
        let batcher = {
            let batcher = Batcher {
                shared: shared.clone(),
                encoder: LineEncoder::new(&registry.current()),
                registry_seen: registry.generation(),
                registry,
                batch_size: config.batch_size,
                flush_interval: config.flush_interval,
                gzip: config.gzip,
                policy: config.spool_full,
            };
            std::thread::Builder::new()
                .name("ioc-influx-batcher".into())
                .spawn(move || batcher.run(rx))
                .map_err(SinkError::Thread)?
        };
        let abandon = CancellationToken::new();
        info!(url = client.url(), "writing time series");
        let writer = tokio::spawn(write_loop(
            shared.clone(),
            client,
            config.max_backoff,
            abandon.clone(),
        ));
        let input = Input {
            tx,
            stats,
            last_warning_ms: Arc::new(AtomicI64::new(0)),
        };
        Ok((
            Sink {
                shared,
                batcher,
                writer,
                abandon,
                shutdown_timeout: config.shutdown_timeout,
            },
            input,
        ))
    }

    /// The sink's counters.
    pub fn stats(&self) -> Arc<SinkStats> {
        self.shared.stats.clone()
    }

    /// Flushes the open batch to the spool, then keeps writing for at most
    /// `shutdown_timeout`; what is left stays in the spool for the next
    /// start. Call after the sources have stopped.
    pub async fn shutdown(self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.room.notify_all();
        let batcher = self.batcher;
        let _ = tokio::task::spawn_blocking(move || batcher.join()).await;
        self.shared.batcher_done.store(true, Ordering::Relaxed);
        self.shared.ready.notify_one();
        let mut writer = self.writer;
        if tokio::time::timeout(self.shutdown_timeout, &mut writer)
            .await
            .is_err()
        {
            self.abandon.cancel();
            let _ = writer.await;
        }
        let spool = self.shared.lock();
        if spool.is_empty() {
            info!("time series: everything written");
        } else {
            warn!(
                batches = spool.len(),
                points = spool.points(),
                dir = %spool.dir().display(),
                "time series: batches left in the spool; they are written at the next start"
            );
        }
    }
}

/// Renders records into batches and spools them.
struct Batcher {
    shared: Arc<Shared>,
    encoder: LineEncoder,
    /// The registry the encoder renders, and its generation.
    registry: Arc<ioc_devices::RegistryCell>,
    registry_seen: u64,
    batch_size: usize,
    flush_interval: Duration,
    gzip: bool,
    policy: SpoolFull,
}

/// The batch being filled.
struct Batch {
    lines: Lines,
    /// The compressor, kept from batch to batch; `None` without gzip.
    gzip: Option<Gzip>,
    started: Option<(Instant, i64)>,
}

const TICK: Duration = Duration::from_millis(200);

impl Batcher {
    fn run(mut self, rx: flume::Receiver<Record>) {
        let mut batch = Batch {
            lines: Lines::with_capacity(self.batch_size),
            gzip: self.gzip.then(Gzip::new),
            started: None,
        };
        loop {
            let wait = match batch.started {
                Some((t, _)) => (t + self.flush_interval)
                    .saturating_duration_since(Instant::now())
                    .min(TICK),
                None => TICK,
            };
            match rx.recv_timeout(wait) {
                Ok(record) => {
                    if let Some(r) = self.registry.changed_since(&mut self.registry_seen) {
                        self.encoder = LineEncoder::new(&r);
                    }
                    // Take what else is queued without a clock read each.
                    for record in std::iter::once(record).chain(rx.try_iter().take(1024)) {
                        if let Record::Barrier(done) = record {
                            self.flush(&mut batch);
                            let _ = done.send(());
                            continue;
                        }
                        self.add(&mut batch, &record);
                    }
                }
                Err(flume::RecvTimeoutError::Timeout) => {
                    if batch
                        .started
                        .is_some_and(|(t, _)| t.elapsed() >= self.flush_interval)
                    {
                        self.flush(&mut batch);
                    }
                    if self.shared.stop.load(Ordering::Relaxed) {
                        for record in rx.try_iter() {
                            self.add(&mut batch, &record);
                        }
                        self.flush(&mut batch);
                        return;
                    }
                }
                Err(flume::RecvTimeoutError::Disconnected) => {
                    self.flush(&mut batch);
                    return;
                }
            }
        }
    }

    /// Renders a record into the batch, and spools the batch once it is full.
    fn add(&self, batch: &mut Batch, record: &Record) {
        if batch.lines.add(&self.encoder, record) {
            if batch.started.is_none() {
                batch.started = Some((Instant::now(), Timestamp::now().millis()));
            }
            if batch.lines.len() >= self.batch_size {
                self.flush(batch);
            }
        }
    }

    fn flush(&self, batch: &mut Batch) {
        let Some((_, enqueued_ms)) = batch.started.take() else {
            return;
        };
        let points = batch.lines.len() as u64;
        let lines = batch.lines.grouped();
        match batch.gzip.as_mut().map(|gz| gz.compress(lines)) {
            Some(Ok(body)) => self.spool(body, points, enqueued_ms, true),
            Some(Err(e)) => {
                // Cannot happen compressing in memory; never lose the batch over it.
                warn!(error = %e, "gzip failed; spooling the batch uncompressed");
                self.spool(lines, points, enqueued_ms, false);
            }
            None => self.spool(lines, points, enqueued_ms, false),
        }
        batch.lines.clear();
    }

    fn spool(&self, body: &[u8], points: u64, enqueued_ms: i64, gzip: bool) {
        let shared = &*self.shared;
        let mut spool = shared.lock();
        let mut blocked_since: Option<Instant> = None;
        while spool.would_overflow(body.len() as u64) {
            match self.policy {
                SpoolFull::DropOldest => match spool.drop_oldest() {
                    Ok(Some(dropped)) => {
                        self.count_dropped(&dropped, "spool_full");
                        error!(
                            points = dropped.points,
                            enqueued = %Timestamp(dropped.enqueued_ms),
                            "time-series spool full (influx.spool_max_bytes): dropped the oldest batch"
                        );
                    }
                    Ok(None) => break,
                    Err(e) => {
                        error!(error = %e, "cannot delete from the time-series spool");
                        break;
                    }
                },
                SpoolFull::Block => {
                    // At shutdown, take the one last batch past the limit
                    // rather than lose it.
                    if shared.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if blocked_since.is_none() {
                        blocked_since = Some(Instant::now());
                        error!(
                            "time-series spool full (influx.spool_max_bytes): ingestion waits until the database takes batches again"
                        );
                    }
                    spool = shared
                        .room
                        .wait_timeout(spool, TICK)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
        if let Some(t) = blocked_since {
            warn!(waited = ?t.elapsed(), "time-series spool has room again; ingestion resumes");
        }
        match spool.push(body, points, enqueued_ms, gzip) {
            Ok(segment) => debug!(
                seq = segment.seq,
                points,
                bytes = body.len(),
                "spooled a batch"
            ),
            Err(e) => {
                shared.stats.dropped.fetch_add(points, Ordering::Relaxed);
                metrics::counter!("ioc_influx_points_dropped_total", "reason" => "spool_error")
                    .increment(points);
                error!(error = %e, dir = %spool.dir().display(), points, "cannot write the time-series spool: batch lost");
            }
        }
        shared.publish(&spool);
        drop(spool);
        shared.ready.notify_one();
    }

    fn count_dropped(&self, segment: &Segment, reason: &'static str) {
        self.shared
            .stats
            .dropped
            .fetch_add(segment.points, Ordering::Relaxed);
        metrics::counter!("ioc_influx_points_dropped_total", "reason" => reason)
            .increment(segment.points);
    }
}

/// Sends spooled batches, oldest first, until the batcher is done and the
/// spool is empty, or `abandon` fires.
async fn write_loop(
    shared: Arc<Shared>,
    client: WriteClient,
    max_backoff: Duration,
    abandon: CancellationToken,
) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(100);
    let mut backoff = FIRST_BACKOFF;
    let mut failing: Option<(Instant, u64)> = None;
    loop {
        let next = {
            let mut spool = shared.lock();
            shared.publish(&spool);
            spool.take_front().map(|s| (spool.path(&s), s))
        };
        let Some((path, segment)) = next else {
            if shared.batcher_done.load(Ordering::Relaxed) {
                return;
            }
            tokio::select! {
                () = shared.ready.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = abandon.cancelled() => return,
            }
            continue;
        };
        let body = match tokio::fs::read(&path).await {
            Ok(body) => body,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Dropped while we looked (spool full, already counted), or
                // deleted by hand: forget it and move on.
                let mut spool = shared.lock();
                if spool.contains(&segment) {
                    warn!(file = %path.display(), points = segment.points, "a spooled batch disappeared from the disk");
                    shared
                        .stats
                        .dropped
                        .fetch_add(segment.points, Ordering::Relaxed);
                    metrics::counter!("ioc_influx_points_dropped_total", "reason" => "spool_error")
                        .increment(segment.points);
                }
                let _ = spool.done(&segment);
                drop(spool);
                shared.room.notify_all();
                continue;
            }
            Err(e) => {
                error!(error = %e, file = %path.display(), "cannot read a spooled batch; setting it aside");
                let mut spool = shared.lock();
                let _ = spool.reject(
                    &segment,
                    0,
                    &format!("unreadable: {e}"),
                    Timestamp::now().millis(),
                );
                shared.room.notify_all();
                continue;
            }
        };
        let result = tokio::select! {
            r = client.write(body, segment.gzip) => r,
            () = abandon.cancelled() => {
                shared.lock().release();
                return;
            }
        };
        let stats = &shared.stats;
        match result {
            Ok(()) => {
                {
                    let mut spool = shared.lock();
                    if let Err(e) = spool.done(&segment) {
                        error!(error = %e, file = %path.display(), "cannot delete a written batch; it may be written again");
                    }
                }
                shared.room.notify_all();
                stats.written.fetch_add(segment.points, Ordering::Relaxed);
                stats.batches_written.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ioc_influx_points_written_total").increment(segment.points);
                metrics::counter!("ioc_influx_batches_written_total").increment(1);
                if let Some((since, attempts)) = failing.take() {
                    info!(after = ?since.elapsed(), attempts, "time-series database reachable again; writing the spool");
                }
                backoff = FIRST_BACKOFF;
            }
            Err(WriteError::Transient {
                message,
                retry_after,
            }) => {
                shared.lock().release();
                stats.retries.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ioc_influx_batches_retried_total").increment(1);
                match &mut failing {
                    None => {
                        warn!(error = %message, "cannot write time series; batches stay in the spool and are retried");
                        failing = Some((Instant::now(), 1));
                    }
                    Some((_, attempts)) => {
                        *attempts += 1;
                        debug!(error = %message, "time-series write failed again");
                    }
                }
                if shared.batcher_done.load(Ordering::Relaxed) {
                    // Shutting down: the spool keeps the rest for next time.
                    return;
                }
                let pause = retry_after.unwrap_or(backoff).min(max_backoff);
                backoff = (backoff * 2).min(max_backoff);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = abandon.cancelled() => return,
                }
            }
            Err(WriteError::Permanent { status, message }) => {
                let now = Timestamp::now().millis();
                let target = shared.lock().reject(&segment, status, &message, now);
                shared.room.notify_all();
                stats.batches_rejected.fetch_add(1, Ordering::Relaxed);
                stats
                    .points_rejected
                    .fetch_add(segment.points, Ordering::Relaxed);
                metrics::counter!("ioc_influx_batches_rejected_total").increment(1);
                metrics::counter!("ioc_influx_points_rejected_total").increment(segment.points);
                match target {
                    Ok(file) => {
                        error!(status, error = %message, file = %file.display(), points = segment.points, "the time-series database refused a batch as bad data; set aside")
                    }
                    Err(e) => {
                        error!(status, error = %message, io_error = %e, "the time-series database refused a batch, and it could not be set aside")
                    }
                }
            }
        }
    }
}
