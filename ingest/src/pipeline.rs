//! The one path every source takes: decode and validate, drop duplicates,
//! hand the reading to the engine or the rejection to the dead letters.
//!
//! [`Ingestor::submit`] returns only when the message is *handled*: either
//! the engine's input channel holds the reading or the dead-letter writer
//! holds the rejection. An accepted reading comes with a [`Receipt`] that
//! resolves once the engine's journal holds it on disk (at once when state
//! is kept in memory only). Sources acknowledge (MQTT ack, HTTP response)
//! only after that, which is what makes delivery at-least-once end to
//! end, across a crash too. Kafka, a replayable log, takes
//! [`Ingestor::submit_from_log_blocking`] instead: not journaled, its
//! offsets kept by the checkpoints. With a time-series sink configured, an
//! accepted reading is queued for it first (see `ioc_timeseries`).

use std::sync::Arc;

use ioc_devices::Registry;
use ioc_processing::{Closed, EngineInput, Reading, Receipt};
use ioc_schemas::{EngineOutput, Limits, RejectReason, Rejection, Timestamp};

use crate::deadletter::{DeadLetter, DeadLetters, Origin};
use crate::decode::Decoder;
use crate::dedup::SeqWindows;
use crate::stats::IngestStats;
use tracing::debug;

/// Decoder, duplicate windows, engine input, dead letters and counters,
/// shared by every source. Cheap to clone.
#[derive(Clone)]
pub struct Ingestor {
    decoder: Decoder,
    seen: Arc<SeqWindows>,
    engine: EngineInput,
    dead_letters: DeadLetters,
    stats: Arc<IngestStats>,
    presence: Option<flume::Sender<Vec<EngineOutput>>>,
    timeseries: Option<ioc_timeseries::Input>,
}

impl std::fmt::Debug for Ingestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingestor").finish_non_exhaustive()
    }
}

impl Ingestor {
    /// An ingestor over this registry feeding `engine`.
    pub fn new(
        registry: Arc<Registry>,
        limits: Limits,
        engine: EngineInput,
        dead_letters: DeadLetters,
        stats: Arc<IngestStats>,
    ) -> Self {
        let cell = Arc::new(ioc_devices::RegistryCell::new(registry));
        Self::live(cell, limits, engine, dead_letters, stats)
    }

    /// An ingestor over the registry in force in `registry`, whenever it
    /// changes, feeding `engine`.
    pub fn live(
        registry: Arc<ioc_devices::RegistryCell>,
        limits: Limits,
        engine: EngineInput,
        dead_letters: DeadLetters,
        stats: Arc<IngestStats>,
    ) -> Self {
        Ingestor {
            seen: Arc::new(SeqWindows::new(registry.current().devices().len())),
            decoder: Decoder::live(registry, limits),
            engine,
            dead_letters,
            stats,
            presence: None,
            timeseries: None,
        }
    }

    /// Queues every accepted reading for the time-series sink too.
    pub fn with_timeseries(mut self, input: ioc_timeseries::Input) -> Self {
        self.timeseries = Some(input);
        self
    }

    fn archive(reading: &Reading) -> ioc_timeseries::Record {
        ioc_timeseries::Record::Reading {
            device: reading.device,
            envelope: reading.envelope.clone(),
        }
    }

    /// Sends device presence (from MQTT status topics) to `outputs`, the
    /// channel the live hub reads the engine's outputs from.
    pub fn with_presence(mut self, outputs: flume::Sender<Vec<EngineOutput>>) -> Self {
        self.presence = Some(outputs);
        self
    }

    /// Decodes and checks one message; no side effects but the duplicate window.
    pub fn check(
        &self,
        origin: &Origin<'_>,
        payload: &[u8],
        now: Timestamp,
    ) -> Result<Reading, Rejection> {
        let topic = match origin {
            Origin::Mqtt { topic } => Some(*topic),
            _ => None,
        };
        let reading = self.decoder.decode(topic, payload, now)?;
        if let Origin::Kafka { key: Some(key), .. } = origin
            && *key != reading.envelope.device.as_bytes()
        {
            return Err(Rejection::new(
                RejectReason::KeyMismatch,
                format!(
                    "message key {:?} names another device than the envelope's {:?}",
                    String::from_utf8_lossy(key),
                    reading.envelope.device
                ),
            )
            .at("/device"));
        }
        if let Origin::Http { client, scope, .. } = origin
            && !crate::http::in_scope(scope, &reading.envelope.device)
        {
            return Err(Rejection::new(
                RejectReason::Forbidden,
                format!(
                    "token {client:?} does not cover device {:?}",
                    reading.envelope.device
                ),
            )
            .at("/device"));
        }
        if self.engine.too_late(reading.envelope.ts, now) {
            return Err(Rejection::new(
                RejectReason::Late,
                format!(
                    "event time {} is older than the watermark {} minus the allowed lateness; its windows are closed",
                    reading.envelope.ts,
                    self.engine.watermark(now)
                ),
            )
            .at("/ts"));
        }
        if !self
            .seen
            .first_time(reading.device, reading.envelope.seq, reading.envelope.ts)
        {
            return Err(Rejection::new(
                RejectReason::Duplicate,
                format!(
                    "device {:?} already sent seq {} (ts {})",
                    reading.envelope.device, reading.envelope.seq, reading.envelope.ts
                ),
            )
            .at("/seq"));
        }
        Ok(reading)
    }

    /// Counts the message and runs `check` on it: its result, or the
    /// rejection with its dead letter (counted and logged).
    fn triage<T>(
        &self,
        origin: &Origin<'_>,
        payload: &[u8],
        check: impl FnOnce(Timestamp) -> Result<T, Rejection>,
    ) -> Result<T, Box<(Rejection, DeadLetter)>> {
        let source = origin.source();
        self.stats.received(source);
        let now = Timestamp::now();
        check(now).map_err(|rejection| {
            self.stats.rejected(source, &rejection);
            debug!(?origin, %rejection, "rejected message");
            let letter = DeadLetter::new(origin, rejection.clone(), payload, now);
            Box::new((rejection, letter))
        })
    }

    /// The counters this ingestor keeps.
    pub fn stats(&self) -> &Arc<IngestStats> {
        &self.stats
    }

    /// The devices refused as not registered since the start.
    pub fn unregistered(&self) -> &Arc<crate::unregistered::Unregistered> {
        self.decoder.unregistered()
    }

    /// Submits again the kept messages of a device just registered (see
    /// [`crate::unregistered`]): each as it came (an MQTT message with its
    /// topic; others as lines from client `adoption`). The counts of
    /// accepted messages and of rejections by reason.
    pub async fn replay_adopted(
        &self,
        id: &str,
    ) -> Result<(u64, std::collections::BTreeMap<&'static str, u64>), Closed> {
        let mut accepted = 0;
        let mut rejected = std::collections::BTreeMap::new();
        let scope = [id.to_owned()];
        for (n, kept) in self.unregistered().take(id).into_iter().enumerate() {
            let origin = match &kept.topic {
                Some(topic) => Origin::Mqtt { topic },
                None => Origin::Http {
                    client: "adoption",
                    line: n + 1,
                    scope: &scope,
                },
            };
            match self.submit(origin, &kept.payload).await? {
                Ok(_) => accepted += 1,
                Err(r) => *rejected.entry(r.reason.code()).or_default() += 1,
            }
        }
        Ok((accepted, rejected))
    }

    /// Rewrites a reading replayed from the engine's journal to the time
    /// series (points keep their event time, so a rewrite is idempotent).
    pub fn rearchive_blocking(&self, reading: &Reading) {
        if let Some(ts) = &self.timeseries {
            let _ = ts.send_blocking(Self::archive(reading));
        }
    }

    /// Hands a rejected message's dead letter to the writer; returns the
    /// rejection for the source to report.
    async fn dead_letter(&self, (rejection, letter): (Rejection, DeadLetter)) -> Rejection {
        self.dead_letters.send(letter).await;
        rejection
    }

    /// Handles one message. `Ok(Ok(receipt))`: accepted and queued for the
    /// engine (acknowledge once the receipt resolves); `Ok(Err(rejection))`:
    /// dead-lettered; `Err(Closed)`: the engine is shutting down and the
    /// message was not taken (do not acknowledge it).
    pub async fn submit(
        &self,
        origin: Origin<'_>,
        payload: &[u8],
    ) -> Result<Result<Receipt, Rejection>, Closed> {
        match self.triage(&origin, payload, |now| self.check(&origin, payload, now)) {
            Ok(reading) => {
                if let Some(ts) = &self.timeseries {
                    ts.send(Self::archive(&reading)).await.map_err(|_| Closed)?;
                }
                let receipt = self.engine.send(reading).await?;
                self.stats.accepted(origin.source());
                Ok(Ok(receipt))
            }
            Err(rejected) => Ok(Err(self.dead_letter(*rejected).await)),
        }
    }

    /// Handles a message on a presence topic `ioc/v1/{kind}/{device}/status`:
    /// the device's new status goes to the live state, a bad one to the dead
    /// letters. Same contract as [`Ingestor::submit`].
    pub async fn submit_presence(
        &self,
        topic: &str,
        payload: &[u8],
    ) -> Result<Result<(), Rejection>, Closed> {
        let origin = Origin::Mqtt { topic };
        match self.triage(&origin, payload, |now| {
            self.decoder.presence(topic, payload, now)
        }) {
            Ok(change) => {
                if let (Some(change), Some(tx)) = (change, &self.presence) {
                    self.engine.note_output();
                    tx.send_async(vec![EngineOutput::Presence(change)])
                        .await
                        .map_err(|_| Closed)?;
                }
                self.stats.accepted(origin.source());
                Ok(Ok(()))
            }
            Err(rejected) => Ok(Err(self.dead_letter(*rejected).await)),
        }
    }

    /// [`Ingestor::submit`] for a synchronous source that is itself a
    /// replayable log (Kafka): the reading is not journaled; the source
    /// keeps its position in the checkpoints through a
    /// [`ioc_processing::LogSource`] (see [`Ingestor::log_source`]).
    /// `Ok(_)`: handled (accepted or dead-lettered); `Err(Closed)`: not taken.
    pub fn submit_from_log_blocking(
        &self,
        origin: Origin<'_>,
        payload: &[u8],
    ) -> Result<Result<(), Rejection>, Closed> {
        match self.triage(&origin, payload, |now| self.check(&origin, payload, now)) {
            Ok(reading) => {
                if let Some(ts) = &self.timeseries {
                    ts.send_blocking(Self::archive(&reading))
                        .map_err(|_| Closed)?;
                }
                self.engine.send_unjournaled_blocking(reading)?;
                self.stats.accepted(origin.source());
                Ok(Ok(()))
            }
            Err(rejected) => {
                let (rejection, letter) = *rejected;
                self.dead_letters.send_blocking(letter);
                Ok(Err(rejection))
            }
        }
    }

    /// A replayable source's part in the engine's checkpoints (`None`
    /// when state is kept in memory only).
    pub fn log_source(&self) -> Option<ioc_processing::LogSource> {
        self.engine.log_source()
    }
}
