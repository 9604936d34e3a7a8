//! A live session: one client's filter, what changed for it since its last
//! message (conflated), its own sequence numbers, and the messages it was
//! sent lately (so that a reconnecting client gets what it missed).

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use ioc_schemas::{DeviceView, LiveMessage, SnapshotReason};
use tokio::sync::Notify;

use super::filter::Filter;
use crate::hub::{Frame, LiveHub, Update};

/// How many alerts and geofence events may wait for one client before it
/// is resynchronised with a snapshot instead (they are never conflated).
pub const MAX_PENDING_EVENTS: usize = 10_000;
/// Devices per snapshot message (about 0.4 KiB each as JSON): a
/// province's snapshot goes out as `snapshot` plus `snapshot_part`s of
/// about a megabyte instead of one message of tens of megabytes, which the
/// server would hold several copies of while sending it.
pub const SNAPSHOT_PART: usize = 2_000;
/// Registry entries per delta: the rest wait for a later message.
pub const REGISTRY_PART: usize = 2_000;
/// The least time between two messages carrying registry entries: an
/// import of 100 000 devices reaches a screen over about 5 s, a part at a
/// time, instead of as 40 MB at once that every reading behind it waits
/// for the client to read.
pub const REGISTRY_PACE: std::time::Duration = std::time::Duration::from_millis(100);
/// How many messages a session keeps for resuming, at most.
const HISTORY_FRAMES: usize = 512;
/// How many bytes of messages a session keeps for resuming, at most.
const HISTORY_BYTES: usize = 8 << 20;

/// What changed for one client since its last message. Device states,
/// presence, windows and tracks are conflated (the latest per device,
/// window or plate); alerts and geofence events are kept in order.
#[derive(Debug, Default)]
struct Pending {
    devices: HashMap<u32, Frame>,
    /// Devices' registry entries, by index: sent [`REGISTRY_PART`] at a
    /// time, so that an import of many devices does not hold a screen's
    /// readings behind one huge message.
    registry: std::collections::BTreeMap<u32, Frame>,
    presence: HashMap<u32, Frame>,
    windows: HashMap<(u32, &'static str, u32), Frame>,
    tracks: HashMap<Arc<str>, Frame>,
    alerts: Vec<Frame>,
    geofence: Vec<Frame>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.devices.is_empty()
            && self.registry.is_empty()
            && self.presence.is_empty()
            && self.windows.is_empty()
            && self.tracks.is_empty()
            && self.alerts.is_empty()
            && self.geofence.is_empty()
    }

    fn clear(&mut self) {
        *self = Pending::default();
    }

    /// Whether anything but registry entries (and device states waiting
    /// for theirs) is pending.
    fn has_other(&self) -> bool {
        !(self.presence.is_empty()
            && self.windows.is_empty()
            && self.tracks.is_empty()
            && self.alerts.is_empty()
            && self.geofence.is_empty()
            && self.devices.keys().all(|k| self.registry.contains_key(k)))
    }

    fn events(&self) -> usize {
        self.alerts.len() + self.geofence.len()
    }
}

/// The devices (registry indices) of a snapshot, sent in parts of
/// [`SNAPSHOT_PART`], each with the devices' state when it goes out.
#[derive(Debug, Default)]
struct SnapshotParts {
    devices: Vec<u32>,
    sent: usize,
}

impl SnapshotParts {
    /// Whether every part went out (or no snapshot is in progress).
    fn is_done(&self) -> bool {
        self.sent >= self.devices.len()
    }

    /// The next part's views and whether more follow; after the last, the
    /// list is let go.
    fn next(&mut self, hub: &LiveHub) -> (Vec<DeviceView>, bool) {
        let end = (self.sent + SNAPSHOT_PART).min(self.devices.len());
        let views = hub.views(&self.devices[self.sent..end]);
        self.sent = end;
        let more = !self.is_done();
        if !more {
            *self = SnapshotParts::default();
        }
        (views, more)
    }
}

#[derive(Debug)]
struct Inner {
    filter: Arc<Filter>,
    /// The sequence number of the last message made for the client.
    seq: u64,
    /// The last hub update the client's messages reflect.
    through: u64,
    /// A snapshot is due next, and why.
    want: Option<SnapshotReason>,
    /// The snapshot in progress; deltas wait until all its parts are sent.
    parts: SnapshotParts,
    pending: Pending,
    /// Recent messages, for resuming.
    history: VecDeque<(u64, Utf8Bytes)>,
    history_bytes: usize,
    /// Since when no connection is attached.
    detached_at: Option<Instant>,
    /// When the last message with registry entries was made.
    registry_sent: Option<Instant>,
}

/// One client's live session; it outlives a lost connection for a while so
/// that the client can resume it.
#[derive(Debug)]
pub struct Session {
    id: String,
    inner: Mutex<Inner>,
    /// Wakes the attached connection when there is something to send.
    pub notify: Notify,
    /// The attached connection (0: none).
    attached: AtomicU64,
}

static CONNECTIONS: AtomicU64 = AtomicU64::new(1);

impl Session {
    /// A session that will start with a snapshot for `filter`.
    pub fn new(id: String, filter: Filter, reason: SnapshotReason) -> Self {
        Session {
            id,
            inner: Mutex::new(Inner {
                filter: Arc::new(filter),
                seq: 0,
                through: 0,
                want: Some(reason),
                parts: Default::default(),
                pending: Pending::default(),
                history: VecDeque::new(),
                history_bytes: 0,
                detached_at: Some(Instant::now()),
                registry_sent: None,
            }),
            notify: Notify::new(),
            attached: AtomicU64::new(0),
        }
    }

    /// The session's id, as clients name it to resume.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The filter in force.
    pub fn filter(&self) -> Arc<Filter> {
        self.lock().filter.clone()
    }

    /// Replaces the filter: a snapshot for it comes next.
    pub fn set_filter(&self, filter: Filter) {
        let mut inner = self.lock();
        inner.filter = Arc::new(filter);
        inner.pending.clear();
        inner.want = Some(SnapshotReason::Filter);
        drop(inner);
        self.notify.notify_one();
    }

    /// Drops what is pending; a snapshot comes next, for `reason`.
    pub fn resync(&self, reason: SnapshotReason) {
        let mut inner = self.lock();
        inner.pending.clear();
        inner.want = Some(reason);
        drop(inner);
        metrics::counter!("ioc_ws_resyncs_total", "reason" => reason.as_str()).increment(1);
        self.notify.notify_one();
    }

    /// Attaches a new connection, which takes over from any other: returns
    /// its number.
    pub fn attach(&self) -> u64 {
        let conn = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        self.attached.store(conn, Ordering::SeqCst);
        self.lock().detached_at = None;
        // Wake the one being replaced, so that it sees it was, and the new
        // one, for anything pending.
        self.notify.notify_waiters();
        self.notify.notify_one();
        conn
    }

    /// Whether connection `conn` is still the one attached.
    pub fn is_attached(&self, conn: u64) -> bool {
        self.attached.load(Ordering::SeqCst) == conn
    }

    /// Connection `conn` went away (unless another took over already).
    pub fn detach(&self, conn: u64) {
        if self
            .attached
            .compare_exchange(conn, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.lock().detached_at = Some(Instant::now());
        }
    }

    /// Whether no connection was attached for `keep`.
    pub fn expired(&self, keep: Duration) -> bool {
        self.lock()
            .detached_at
            .is_some_and(|at| at.elapsed() >= keep)
    }

    /// The messages after `seq`, when the session still has all of them
    /// (none when `seq` is the last one made).
    pub fn replay_after(&self, seq: u64) -> Option<Vec<Utf8Bytes>> {
        let inner = self.lock();
        if seq > inner.seq {
            return None;
        }
        if seq == inner.seq {
            return Some(Vec::new());
        }
        let first = inner.history.front()?.0;
        if first > seq + 1 {
            return None;
        }
        Some(
            inner
                .history
                .iter()
                .filter(|(s, _)| *s > seq)
                .map(|(_, f)| f.clone())
                .collect(),
        )
    }

    /// Sorts the update's items that pass the filter into what is pending.
    /// Returns whether anything was added.
    pub fn merge(&self, update: &Update) -> bool {
        let mut inner = self.lock();
        // A snapshot due next, or already sent, reflects this update.
        if inner.want.is_some() || update.seq <= inner.through {
            return false;
        }
        inner.through = update.seq;
        // Devices registered since the filter was made: it learns their
        // kinds and areas.
        if let Some(registry) = &update.registry_now
            && !inner.filter.covers(registry.devices().len())
            && let Ok(f) = Filter::new(inner.filter.spec().clone(), registry)
        {
            inner.filter = Arc::new(f);
        }
        let filter = inner.filter.clone();
        let pending = &mut inner.pending;
        let mut changed = false;
        // Items that replaced an older one of the same device, window or
        // plate the client had not been sent yet.
        let mut conflated = 0;
        for item in &update.devices {
            if filter.device(&item.place) {
                let device = item.place.device.unwrap_or(u32::MAX);
                conflated += u64::from(pending.devices.insert(device, item.json.clone()).is_some());
                changed = true;
            }
        }
        for item in &update.registry {
            if filter.device(&item.place) {
                let device = item.place.device.unwrap_or(u32::MAX);
                conflated +=
                    u64::from(pending.registry.insert(device, item.json.clone()).is_some());
                changed = true;
            }
        }
        for item in &update.presence {
            if filter.device(&item.place) {
                let device = item.place.device.unwrap_or(u32::MAX);
                conflated +=
                    u64::from(pending.presence.insert(device, item.json.clone()).is_some());
                changed = true;
            }
        }
        for item in &update.windows {
            if filter.device(&item.place) {
                let device = item.place.device.unwrap_or(u32::MAX);
                let key = (device, item.kind, item.window_s);
                conflated += u64::from(pending.windows.insert(key, item.json.clone()).is_some());
                changed = true;
            }
        }
        for item in &update.tracks {
            if filter.track(item.pos) {
                conflated += u64::from(
                    pending
                        .tracks
                        .insert(item.plate.clone(), item.json.clone())
                        .is_some(),
                );
                changed = true;
            }
        }
        for item in &update.alerts {
            if filter.alert(&item.alert, item.device) {
                pending.alerts.push(item.json.clone());
                changed = true;
            }
        }
        for item in &update.geofence {
            if filter.geofence(&item.zone, item.pos) {
                pending.geofence.push(item.json.clone());
                changed = true;
            }
        }
        if conflated > 0 {
            metrics::counter!("ioc_ws_conflated_total").increment(conflated);
        }
        if pending.events() > MAX_PENDING_EVENTS {
            drop(inner);
            self.resync(SnapshotReason::Resync);
            return true;
        }
        changed
    }

    /// Whether a message is due.
    pub fn has_pending(&self) -> bool {
        self.due().0
    }

    /// Whether a message is due; if not, and registry entries wait for
    /// their pace, how long until they are.
    pub fn due(&self) -> (bool, Option<std::time::Duration>) {
        let inner = self.lock();
        if inner.want.is_some() || !inner.parts.is_done() || inner.pending.has_other() {
            return (true, None);
        }
        if inner.pending.registry.is_empty() {
            return (false, None);
        }
        match inner
            .registry_sent
            .map(|t| REGISTRY_PACE.saturating_sub(t.elapsed()))
        {
            Some(wait) if !wait.is_zero() => (false, Some(wait)),
            _ => (true, None),
        }
    }

    /// The next message for the client: a snapshot when one is due, else a
    /// delta with everything pending; `None` when nothing is.
    pub fn next_message(&self, hub: &LiveHub) -> Option<Utf8Bytes> {
        let mut inner = self.lock();
        let frame = if let Some(reason) = inner.want.take() {
            let filter = inner.filter.clone();
            let snapshot = hub.snapshot(&filter);
            inner.through = snapshot.seq;
            inner.pending.clear();
            inner.seq += 1;
            inner.parts = SnapshotParts {
                devices: snapshot.devices,
                sent: 0,
            };
            let (devices, more) = inner.parts.next(hub);
            let message = LiveMessage::Snapshot {
                seq: inner.seq,
                session: self.id.clone(),
                reason,
                devices,
                alerts: snapshot.alerts,
                tracks: snapshot.tracks,
                more,
            };
            metrics::counter!("ioc_ws_snapshots_total", "reason" => reason.as_str()).increment(1);
            serde_json::to_string(&message).unwrap_or_default()
        } else if !inner.parts.is_done() {
            // The snapshot's next devices, as they are now: any later
            // change is pending and follows in a delta.
            let (devices, more) = inner.parts.next(hub);
            inner.seq += 1;
            let message = LiveMessage::SnapshotPart {
                seq: inner.seq,
                devices,
                more,
            };
            serde_json::to_string(&message).unwrap_or_default()
        } else if inner.pending.is_empty() {
            return None;
        } else {
            let paced = inner.pending.registry.is_empty()
                || inner
                    .registry_sent
                    .is_some_and(|t| t.elapsed() < REGISTRY_PACE);
            if paced && !inner.pending.has_other() {
                return None;
            }
            if !paced {
                inner.registry_sent = Some(Instant::now());
            }
            inner.seq += 1;
            let seq = inner.seq;
            delta(seq, &mut inner.pending, !paced)
        };
        let frame = Utf8Bytes::from(frame);
        let seq = inner.seq;
        inner.history_bytes += frame.len();
        inner.history.push_back((seq, frame.clone()));
        // A frame over the whole budget is not kept either: resuming past
        // it gets a snapshot.
        while inner.history.len() > HISTORY_FRAMES || inner.history_bytes > HISTORY_BYTES {
            if let Some((_, old)) = inner.history.pop_front() {
                inner.history_bytes -= old.len();
            }
        }
        Some(frame)
    }
}

/// A `delta` with everything pending, which is then empty. The items are
/// already JSON: they are copied in, not serialized again.
fn delta(seq: u64, pending: &mut Pending, with_registry: bool) -> String {
    let items = pending.devices.len()
        + pending.registry.len()
        + pending.presence.len()
        + pending.windows.len()
        + pending.tracks.len()
        + pending.events();
    let mut out = String::with_capacity(64 + items * 256);
    let _ = write!(out, r#"{{"type":"delta","seq":{seq}"#);
    let mut deliveries = 0;
    let mut section = |name: &str, items: &mut dyn Iterator<Item = Frame>| {
        let mut first = true;
        for item in items {
            if first {
                let _ = write!(out, r#","{name}":["#);
                first = false;
            } else {
                out.push(',');
            }
            out.push_str(&item);
            deliveries += 1;
        }
        if !first {
            out.push(']');
        }
    };
    // Alerts first: the most urgent part of the message.
    section("alerts", &mut pending.alerts.drain(..));
    // A device's registry entry before its state: a new device's first
    // state finds its entry.
    let part: Vec<u32> = if with_registry {
        pending
            .registry
            .keys()
            .take(REGISTRY_PART)
            .copied()
            .collect()
    } else {
        Vec::new()
    };
    section(
        "registry",
        &mut part.iter().filter_map(|k| pending.registry.remove(k)),
    );
    // A device whose registry entry is still to come waits with it.
    let ready: Vec<u32> = if pending.registry.is_empty() {
        Vec::new()
    } else {
        pending
            .devices
            .keys()
            .filter(|k| !pending.registry.contains_key(k))
            .copied()
            .collect()
    };
    if pending.registry.is_empty() {
        section("devices", &mut pending.devices.drain().map(|(_, f)| f));
    } else {
        section(
            "devices",
            &mut ready.iter().filter_map(|k| pending.devices.remove(k)),
        );
    }
    section("presence", &mut pending.presence.drain().map(|(_, f)| f));
    section("windows", &mut pending.windows.drain().map(|(_, f)| f));
    section("geofence", &mut pending.geofence.drain(..));
    section("tracks", &mut pending.tracks.drain().map(|(_, f)| f));
    out.push('}');
    metrics::counter!("ioc_ws_deliveries_total").increment(deliveries);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An import's registry entries go out [`REGISTRY_PART`] at a time, and
    /// a new device's state waits for its entry.
    #[test]
    fn registry_entries_go_out_in_parts_before_their_devices_states() {
        let mut pending = Pending::default();
        let n = REGISTRY_PART as u32 + 10;
        for i in 0..n {
            pending.registry.insert(i, format!("{{\"id\":{i}}}").into());
        }
        pending.devices.insert(1, "{\"device\":1}".into());
        pending
            .devices
            .insert(n - 1, "{\"device\":\"last\"}".into());
        let held: serde_json::Value = serde_json::from_str(&delta(6, &mut pending, false)).unwrap();
        assert_eq!(held["registry"], serde_json::Value::Null);
        assert_eq!(
            held["devices"],
            serde_json::Value::Null,
            "each state waits for its entry"
        );
        let first: serde_json::Value = serde_json::from_str(&delta(7, &mut pending, true)).unwrap();
        assert_eq!(first["registry"].as_array().unwrap().len(), REGISTRY_PART);
        assert_eq!(first["devices"], serde_json::json!([{"device": 1}]));
        let second: serde_json::Value =
            serde_json::from_str(&delta(8, &mut pending, true)).unwrap();
        assert_eq!(second["registry"].as_array().unwrap().len(), 10);
        assert_eq!(second["devices"], serde_json::json!([{"device": "last"}]));
        assert!(pending.is_empty());
    }
}
