//! Time series to InfluxDB without losing a point.
//!
//! Data moves through four stages:
//!
//! 1. [`Input`]: ingest hands every accepted reading, the live hub's loop
//!    window results and geofence events, and the alert store every
//!    stored alert change, to a bounded in-memory queue of [`Record`]s;
//! 2. the batcher thread ([`sink`]) renders records as line protocol
//!    ([`line`]) into a batch, and when the batch holds `batch_size` points
//!    or is `flush_interval` old, groups its lines by series
//!    ([`line::Lines`]), compresses it (gzip level 1) and writes it
//!    to the [`spool`], a directory with one file per batch;
//! 3. the writer task sends the oldest spooled batch to `/api/v2/write`
//!    ([`client`]) and deletes it on success. A failure that may pass
//!    (connection refused, 5xx, 429, bad token) keeps the batch first in
//!    line and retries with exponential backoff; bad data (400, 422, 413) is
//!    set aside in `spool/rejected/` with the server's message;
//! 4. when the spool reaches `spool_max_bytes`, [`SpoolFull`] decides:
//!    drop the oldest batch (counted, logged) or stop taking points, which
//!    pushes back on ingestion.
//!
//! Every batch passes through the disk, so memory is bounded by the queue
//! and one batch whatever the outage length, order is the spool's order,
//! and a batch that reached the spool survives `kill -9`. Alert delivery
//! and the live screens never wait for the sink: alerts are
//! [`Input::offer`]ed (dropped and counted if the queue is full) and the
//! engine's outputs do not pass through here.

pub mod client;
pub mod config;
pub mod gzip;
pub mod line;
pub mod sink;
pub mod spool;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use ioc_devices::DeviceIndex;
use ioc_schemas::{Alert, Envelope, Timestamp};
use tracing::warn;

pub use config::{InfluxConfig, SpoolFull};
pub use gzip::Gzip;
pub use sink::{Sink, SinkError};

/// What the sink writes.
#[derive(Clone, Debug)]
pub enum Record {
    /// An accepted reading of a registered device.
    Reading {
        /// The device's registry index.
        device: DeviceIndex,
        /// The reading.
        envelope: Envelope,
    },
    /// A change of an alert.
    Alert(Box<Alert>),
    /// A window result (rainfall totals, traffic aggregates, camera counts).
    Window {
        /// The device's registry index.
        device: DeviceIndex,
        /// The result.
        window: Box<ioc_schemas::WindowResult>,
    },
    /// A moving subject entered, left or lingered in a zone.
    Geofence(Box<ioc_schemas::GeofenceEvent>),
    /// Not a point: answered once every record before it is in the spool
    /// (on disk), see [`Input::flushed`].
    Barrier(flume::Sender<()>),
}

/// The sink has stopped and takes no more points.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the time-series sink has stopped")]
pub struct Closed;

/// Counters of the sink, also exported as `ioc_influx_*` metrics.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Points taken into the queue.
    pub queued: AtomicU64,
    /// Points the database accepted.
    pub written: AtomicU64,
    /// Batches the database accepted.
    pub batches_written: AtomicU64,
    /// Failed attempts that will be retried.
    pub retries: AtomicU64,
    /// Batches the database refused as bad data (set aside).
    pub batches_rejected: AtomicU64,
    /// Points in those batches.
    pub points_rejected: AtomicU64,
    /// Points dropped: spool full under `drop_oldest`, queue full for
    /// alerts, or the spool could not be written.
    pub dropped: AtomicU64,
    /// Bytes in the spool.
    pub spool_bytes: AtomicU64,
    /// Points in the spool.
    pub spool_points: AtomicU64,
    /// Batches in the spool.
    pub spool_batches: AtomicU64,
}

impl SinkStats {
    /// A plain snapshot, for `/api/v1/stats`.
    pub fn snapshot(&self) -> [(&'static str, u64); 10] {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("queued", l(&self.queued)),
            ("written", l(&self.written)),
            ("batches_written", l(&self.batches_written)),
            ("retries", l(&self.retries)),
            ("batches_rejected", l(&self.batches_rejected)),
            ("points_rejected", l(&self.points_rejected)),
            ("dropped", l(&self.dropped)),
            ("spool_bytes", l(&self.spool_bytes)),
            ("spool_points", l(&self.spool_points)),
            ("spool_batches", l(&self.spool_batches)),
        ]
    }
}

/// Where points enter the sink. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Input {
    tx: flume::Sender<Record>,
    stats: Arc<SinkStats>,
    last_warning_ms: Arc<AtomicI64>,
}

impl Input {
    /// Queues a record, waiting while the queue is full (which happens only
    /// when the batcher is blocked on a full spool under `spool_full =
    /// "block"`).
    pub async fn send(&self, record: Record) -> Result<(), Closed> {
        self.tx.send_async(record).await.map_err(|_| Closed)?;
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// [`Input::send`] for synchronous callers.
    pub fn send_blocking(&self, record: Record) -> Result<(), Closed> {
        self.tx.send(record).map_err(|_| Closed)?;
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Returns once every record queued before the call is in the spool on
    /// disk (from where it reaches the database even across a restart):
    /// the engine's checkpoint waits for it.
    pub async fn flushed(&self) -> Result<(), Closed> {
        let (tx, rx) = flume::bounded(1);
        self.tx
            .send_async(Record::Barrier(tx))
            .await
            .map_err(|_| Closed)?;
        rx.recv_async().await.map_err(|_| Closed)
    }

    /// Queues a record if there is room, never waiting; a record that does
    /// not fit is counted as dropped (`reason="queue_full"`) and logged at
    /// most once a minute. Returns whether it was queued.
    pub fn offer(&self, record: Record) -> bool {
        match self.tx.try_send(record) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ioc_influx_points_dropped_total", "reason" => "queue_full")
                    .increment(1);
                let now = Timestamp::now().millis();
                let last = self.last_warning_ms.load(Ordering::Relaxed);
                if now - last >= 60_000
                    && self
                        .last_warning_ms
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    warn!(
                        "time-series queue full: a point was dropped (ioc_influx_points_dropped_total{{reason=\"queue_full\"}})"
                    );
                }
                false
            }
        }
    }
}
