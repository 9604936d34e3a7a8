//! The live hub: the latest state of every device and the open alerts,
//! and the ordered stream of deltas that WebSocket clients follow.
//!
//! [`LiveHub::apply`] turns a batch of engine outputs into one `delta`
//! (conflating several states of one device into the latest) with the next
//! sequence number, and broadcasts it. [`LiveHub::subscribe`] returns a
//! `snapshot` and a receiver under the same lock, so a client sees every
//! delta after its snapshot and none before it.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use ioc_devices::{Current, Registry, Zones};
use ioc_schemas::{
    Alert, DeviceState, DeviceView, EngineOutput, GeofenceEvent, LiveMessage, Presence,
    PresenceChange, PresenceStatus, Track, WindowResult, ZoneRef,
};
use tokio::sync::broadcast;

/// How many serialized deltas a slow client may fall behind before it is
/// resynchronised with a fresh snapshot.
const BROADCAST_CAPACITY: usize = 4096;
/// How many resolved alerts the hub remembers for `GET /api/v1/alerts?status=resolved`.
const RESOLVED_KEPT: usize = 500;
/// How many watch-listed plates' tracks the hub keeps for new clients.
const TRACKS_KEPT: usize = 200;

/// A serialized live message, shared by every client that receives it.
pub type Frame = Arc<str>;

#[derive(Debug)]
struct HubState {
    seq: u64,
    states: Vec<Option<DeviceState>>,
    presence: Vec<Option<Presence>>,
    /// The latest result of each window of each device.
    windows: Vec<Vec<WindowResult>>,
    /// Devices whose presence is known, and how many of them are online.
    presence_known: usize,
    presence_online: usize,
    open: BTreeMap<String, Alert>,
    resolved: VecDeque<Alert>,
    /// The zones each device's latest position lies in.
    zones: Vec<Vec<ZoneRef>>,
    /// The zones generation `zones` was worked out with.
    zones_seen: u64,
    /// Recent tracks of watch-listed plates, by plate.
    tracks: HashMap<String, Track>,
}

/// Shared live state. Cheap to clone through [`Arc`].
#[derive(Debug)]
pub struct LiveHub {
    registry: Arc<Registry>,
    geo: Arc<Current<Zones>>,
    state: Mutex<HubState>,
    tx: broadcast::Sender<Frame>,
}

impl LiveHub {
    /// An empty hub for the devices of `registry`, with no zones.
    pub fn new(registry: Arc<Registry>) -> Arc<Self> {
        Self::with_zones(registry, Arc::new(Current::new(Arc::default())))
    }

    /// An empty hub for the devices of `registry`; device views carry the
    /// zones (of the set in force) their latest position lies in.
    pub fn with_zones(registry: Arc<Registry>, geo: Arc<Current<Zones>>) -> Arc<Self> {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        let zones = geo.current();
        let device_zones = registry.devices().iter().map(|d| zones.at(d.pos)).collect();
        Arc::new(LiveHub {
            state: Mutex::new(HubState {
                seq: 0,
                states: vec![None; registry.devices().len()],
                presence: vec![None; registry.devices().len()],
                windows: vec![Vec::new(); registry.devices().len()],
                presence_known: 0,
                presence_online: 0,
                open: BTreeMap::new(),
                resolved: VecDeque::new(),
                zones: device_zones,
                zones_seen: geo.generation(),
                tracks: HashMap::new(),
            }),
            registry,
            geo,
            tx,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panic while holding the lock cannot leave the maps half-written in
        // a way that matters more than losing the hub, so recover the guard.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The registry the hub serves.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The zones in force.
    pub fn zones(&self) -> Arc<Zones> {
        self.geo.current()
    }

    /// After a zones reload, every device's zones again.
    fn refresh_zones(&self, st: &mut HubState) {
        if let Some(zones) = self.geo.changed_since(&mut st.zones_seen) {
            for (i, d) in self.registry.devices().iter().enumerate() {
                let pos = st.states[i].as_ref().map_or(d.pos, |s| s.pos);
                st.zones[i] = zones.at(pos);
            }
        }
    }

    /// Applies a batch of engine outputs and broadcasts one delta.
    pub fn apply(&self, batch: Vec<EngineOutput>) {
        let mut devices: Vec<DeviceState> = Vec::new();
        // Position in `devices` of each device already in this delta.
        let mut in_delta: HashMap<usize, usize> = HashMap::new();
        let mut alerts = Vec::new();
        let mut presence: Vec<PresenceChange> = Vec::new();
        let mut windows: Vec<WindowResult> = Vec::new();
        let mut geofence: Vec<GeofenceEvent> = Vec::new();
        let mut tracks: Vec<Track> = Vec::new();
        let mut st = self.lock();
        self.refresh_zones(&mut st);
        let mut zones = None;
        for output in batch {
            match output {
                EngineOutput::Device(d) => {
                    let Some(i) = self.registry.lookup(&d.device) else {
                        continue;
                    };
                    let i = i as usize;
                    match in_delta.entry(i) {
                        Entry::Occupied(at) => devices[*at.get()] = d.clone(),
                        Entry::Vacant(slot) => {
                            slot.insert(devices.len());
                            devices.push(d.clone());
                        }
                    }
                    let moved = match &st.states[i] {
                        Some(old) => old.pos != d.pos,
                        None => self.registry.device(i as u32).pos != d.pos,
                    };
                    if moved {
                        let zones = zones.get_or_insert_with(|| self.geo.current());
                        st.zones[i] = zones.at(d.pos);
                    }
                    st.states[i] = Some(d);
                }
                EngineOutput::Alert(a) => {
                    let a = *a;
                    // An older version than the one known changes nothing:
                    // at start the store's snapshot of active alerts may
                    // arrive after its first changes (a re-notification).
                    let newer = |o: &Alert| o.id == a.id && o.version > a.version;
                    if st.open.get(&a.id).is_some_and(newer) || st.resolved.iter().any(newer) {
                        continue;
                    }
                    if a.status.is_active() {
                        st.open.insert(a.id.clone(), a.clone());
                    } else {
                        st.open.remove(&a.id);
                        st.resolved.retain(|r| r.id != a.id);
                        if st.resolved.len() == RESOLVED_KEPT {
                            st.resolved.pop_front();
                        }
                        st.resolved.push_back(a.clone());
                    }
                    alerts.push(a);
                }
                EngineOutput::Presence(p) => {
                    let Some(i) = self.registry.lookup(&p.device) else {
                        continue;
                    };
                    let old = st.presence[i as usize].map(|old| old.status);
                    // A repeated status (a retained one seen again after a
                    // reconnect) is not a change.
                    if old == Some(p.presence.status) {
                        continue;
                    }
                    let online = PresenceStatus::Online;
                    st.presence_known += usize::from(old.is_none());
                    st.presence_online += usize::from(p.presence.status == online);
                    st.presence_online -= usize::from(old == Some(online));
                    st.presence[i as usize] = Some(p.presence);
                    presence.retain(|q| q.device != p.device);
                    presence.push(p);
                }
                EngineOutput::Window(w) => {
                    let Some(i) = self.registry.lookup(&w.device) else {
                        continue;
                    };
                    let latest = &mut st.windows[i as usize];
                    let same = |o: &WindowResult| {
                        o.value.kind() == w.value.kind() && o.window_s() == w.window_s()
                    };
                    match latest.iter_mut().find(|o| same(o)) {
                        Some(o) if o.end <= w.end => *o = w.clone(),
                        Some(_) => {}
                        None => latest.push(w.clone()),
                    }
                    windows.push(w);
                }
                EngineOutput::Geofence(g) => geofence.push(g),
                EngineOutput::Track(t) => {
                    if st.tracks.len() >= TRACKS_KEPT && !st.tracks.contains_key(&t.plate) {
                        let oldest = st
                            .tracks
                            .values()
                            .min_by_key(|t| t.points.last().map(|p| p.ts))
                            .map(|t| t.plate.clone());
                        if let Some(plate) = oldest {
                            st.tracks.remove(&plate);
                        }
                    }
                    st.tracks.insert(t.plate.clone(), t.clone());
                    tracks.retain(|o| o.plate != t.plate);
                    tracks.push(t);
                }
            }
        }
        if devices.is_empty()
            && alerts.is_empty()
            && presence.is_empty()
            && windows.is_empty()
            && geofence.is_empty()
            && tracks.is_empty()
        {
            return;
        }
        if !presence.is_empty() {
            let (online, known) = (st.presence_online, st.presence_known);
            metrics::gauge!("ioc_devices_presence", "status" => "online").set(online as f64);
            metrics::gauge!("ioc_devices_presence", "status" => "offline")
                .set((known - online) as f64);
        }
        st.seq += 1;
        let message = LiveMessage::Delta {
            seq: st.seq,
            devices,
            alerts,
            presence,
            windows,
            geofence,
            tracks,
        };
        let frame: Frame = serde_json::to_string(&message).unwrap_or_default().into();
        metrics::gauge!("ioc_open_alerts").set(st.open.len() as f64);
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(frame);
    }

    /// A snapshot frame and a receiver for every later delta.
    pub fn subscribe(&self) -> (Frame, broadcast::Receiver<Frame>) {
        let mut st = self.lock();
        self.refresh_zones(&mut st);
        let message = LiveMessage::Snapshot {
            seq: st.seq,
            devices: self.views(&st),
            alerts: st.open.values().cloned().collect(),
            tracks: st.tracks.values().cloned().collect(),
        };
        let rx = self.tx.subscribe();
        (
            serde_json::to_string(&message).unwrap_or_default().into(),
            rx,
        )
    }

    fn views(&self, st: &HubState) -> Vec<DeviceView> {
        self.registry
            .devices()
            .iter()
            .zip(&st.states)
            .zip(&st.presence)
            .zip(&st.windows)
            .zip(&st.zones)
            .map(|((((info, state), presence), windows), zones)| DeviceView {
                info: info.clone(),
                state: state.clone(),
                presence: *presence,
                windows: windows.clone(),
                zones: zones.clone(),
            })
            .collect()
    }

    /// Every device with its latest state.
    pub fn devices(&self) -> Vec<DeviceView> {
        let mut st = self.lock();
        self.refresh_zones(&mut st);
        self.views(&st)
    }

    /// One device with its latest state.
    pub fn device(&self, id: &str) -> Option<DeviceView> {
        let i = self.registry.lookup(id)?;
        let mut st = self.lock();
        self.refresh_zones(&mut st);
        Some(DeviceView {
            info: self.registry.device(i).clone(),
            state: st.states[i as usize].clone(),
            presence: st.presence[i as usize],
            windows: st.windows[i as usize].clone(),
            zones: st.zones[i as usize].clone(),
        })
    }

    /// Active (open or acknowledged) alerts, most severe and most recent first.
    pub fn open_alerts(&self) -> Vec<Alert> {
        let mut v: Vec<_> = self.lock().open.values().cloned().collect();
        v.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(b.updated_at.cmp(&a.updated_at))
        });
        v
    }

    /// Recently resolved alerts, most recent first.
    pub fn resolved_alerts(&self) -> Vec<Alert> {
        self.lock().resolved.iter().rev().cloned().collect()
    }

    /// Recent tracks of watch-listed plates, most recently seen first.
    pub fn tracks(&self) -> Vec<Track> {
        let mut v: Vec<_> = self.lock().tracks.values().cloned().collect();
        v.sort_by_key(|t| std::cmp::Reverse(t.points.last().map(|p| p.ts)));
        v
    }

    /// Number of WebSocket clients following the hub.
    pub fn clients(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// Moves engine outputs into the hub until the engine's output closes.
///
/// `observe` sees every batch first and may take outputs out of it (the
/// time-series sink copies alert changes there, the alert store takes the
/// rule's alerts and hands the hub its own versions); it must not wait.
pub async fn run(
    hub: Arc<LiveHub>,
    outputs: flume::Receiver<Vec<EngineOutput>>,
    mut observe: impl FnMut(&mut Vec<EngineOutput>),
) {
    while let Ok(mut batch) = outputs.recv_async().await {
        // Whatever else is already queued, up to about 4 096 outputs.
        while batch.len() < 4096 {
            match outputs.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        observe(&mut batch);
        hub.apply(batch);
    }
}

#[cfg(test)]
mod tests {
    use ioc_schemas::{Body, Hydrology, Timestamp};

    use super::*;

    fn state(device: &str, seq: u64) -> EngineOutput {
        EngineOutput::Device(DeviceState {
            device: device.into(),
            ts: Timestamp(seq as i64),
            seq,
            pos: [103.9, 21.3],
            reading: Body::Hydrology(Hydrology::default()),
            alarm_level: None,
        })
    }

    #[test]
    fn snapshot_then_conflated_deltas_in_sequence() {
        let hub = LiveHub::new(ioc_devices::Registry::sonla_demo());
        hub.apply(vec![state("river-to-hieu", 1)]);
        let (snapshot, mut rx) = hub.subscribe();
        let snapshot: serde_json::Value = serde_json::from_str(&snapshot).unwrap();
        assert_eq!(
            (snapshot["type"].as_str(), snapshot["seq"].as_u64()),
            (Some("snapshot"), Some(1))
        );
        hub.apply(vec![
            state("river-to-hieu", 2),
            state("rain-to-hieu", 1),
            state("river-to-hieu", 3),
        ]);
        hub.apply(vec![state("nobody", 1)]);
        hub.apply(vec![state("rain-to-hieu", 2)]);
        let d1: serde_json::Value = serde_json::from_str(&rx.try_recv().unwrap()).unwrap();
        let d2: serde_json::Value = serde_json::from_str(&rx.try_recv().unwrap()).unwrap();
        assert!(rx.try_recv().is_err(), "unknown devices make no delta");
        assert_eq!((d1["seq"].as_u64(), d2["seq"].as_u64()), (Some(2), Some(3)));
        let devices = d1["devices"].as_array().unwrap();
        assert_eq!(devices.len(), 2, "two states of one device are conflated");
        assert_eq!(devices[0]["seq"], 3);
        assert_eq!(hub.device("river-to-hieu").unwrap().state.unwrap().seq, 3);
    }

    fn presence(device: &str, status: PresenceStatus, at: i64) -> EngineOutput {
        EngineOutput::Presence(PresenceChange {
            device: device.into(),
            presence: Presence {
                status,
                received: Timestamp(at),
            },
        })
    }

    #[test]
    fn presence_changes_are_deltas_and_repeats_are_not() {
        let hub = LiveHub::new(ioc_devices::Registry::sonla_demo());
        let (_, mut rx) = hub.subscribe();
        hub.apply(vec![
            presence("river-to-hieu", PresenceStatus::Online, 1),
            presence("river-to-hieu", PresenceStatus::Offline, 2),
        ]);
        hub.apply(vec![presence("river-to-hieu", PresenceStatus::Offline, 3)]);
        let d: serde_json::Value = serde_json::from_str(&rx.try_recv().unwrap()).unwrap();
        assert!(rx.try_recv().is_err(), "a repeated status makes no delta");
        assert_eq!(d["presence"].as_array().unwrap().len(), 1, "conflated");
        assert_eq!(d["presence"][0]["status"], "offline");
        let view = hub.device("river-to-hieu").unwrap();
        assert_eq!(
            view.presence.map(|p| (p.status, p.received)),
            Some((PresenceStatus::Offline, Timestamp(2)))
        );
        let (snapshot, _) = hub.subscribe();
        assert!(snapshot.contains(r#""presence":{"status":"offline""#));
        hub.apply(vec![presence("rain-to-hieu", PresenceStatus::Online, 4)]);
        let st = hub.lock();
        assert_eq!((st.presence_known, st.presence_online), (2, 1));
    }
}
