//! The live hub: the latest state of every device and the open alerts,
//! and the ordered stream of updates that live sessions follow.
//!
//! [`LiveHub::apply`] turns a batch of engine outputs into one [`Update`]
//! (conflating several states of one device into the latest, serializing
//! every item once) with the next hub sequence number, and broadcasts it.
//! Each live session ([`crate::live`]) filters the updates for its client.
//! [`LiveHub::snapshot`] gives what passes a filter at a hub sequence
//! number, so a session knows which updates it already reflects.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use ioc_devices::{Current, Registry, RegistryCell, Zones};
use ioc_schemas::{
    Alert, DeviceState, DeviceView, EngineOutput, Presence, PresenceStatus, Track, WindowResult,
    ZoneRef,
};
use tokio::sync::broadcast;

use crate::history::{History, HistoryConfig, HistoryView};
use crate::live::Filter;

/// How many updates a session may fall behind the hub before it is
/// resynchronised with a fresh snapshot. Sessions only sort updates into
/// their pending sets (sending is separate), so they rarely fall behind.
const BROADCAST_CAPACITY: usize = 4096;
/// How many resolved alerts the hub remembers for `GET /api/v1/alerts?status=resolved`.
const RESOLVED_KEPT: usize = 500;
/// How many watch-listed plates' tracks the hub keeps for new clients.
const TRACKS_KEPT: usize = 200;

/// A serialized live message or item, shared by every client that receives it.
pub type Frame = Arc<str>;

/// Where an item is, for filters: the device (when it is one), its latest
/// position and the zones that position lies in.
#[derive(Clone, Debug)]
pub struct Place {
    /// The device's index in the registry.
    pub device: Option<u32>,
    /// The latest position `[lon, lat]`.
    pub pos: [f64; 2],
    /// The zones the position lies in.
    pub zones: Arc<[ZoneRef]>,
}

/// One item of an update, serialized once for every client.
#[derive(Clone, Debug)]
pub struct Item {
    /// Where it is.
    pub place: Place,
    /// The item as JSON.
    pub json: Frame,
}

/// A window result of an update: the window (its kind and length) is the
/// conflation key with the device.
#[derive(Clone, Debug)]
pub struct WindowItem {
    /// The device and where it is.
    pub place: Place,
    /// The value's kind (`rainfall`, `traffic`, ...).
    pub kind: &'static str,
    /// The window's length, s.
    pub window_s: u32,
    /// The result as JSON.
    pub json: Frame,
}

/// An alert change of an update.
#[derive(Clone, Debug)]
pub struct AlertItem {
    /// The alert (filters read its severity, areas, zones and subject).
    pub alert: Alert,
    /// The subject's index in the registry, when it is a device.
    pub device: Option<u32>,
    /// The alert as JSON.
    pub json: Frame,
}

/// A watch-listed plate's track that moved.
#[derive(Clone, Debug)]
pub struct TrackItem {
    /// The plate: a client keeps the latest track per plate.
    pub plate: Arc<str>,
    /// Where it was last read.
    pub pos: [f64; 2],
    /// The track as JSON.
    pub json: Frame,
}

/// A geofence event of an update.
#[derive(Clone, Debug)]
pub struct GeofenceItem {
    /// Where the subject was.
    pub pos: [f64; 2],
    /// The zone's id.
    pub zone: String,
    /// The event as JSON.
    pub json: Frame,
}

/// What one applied batch changed, each item serialized once.
#[derive(Debug, Default)]
pub struct Update {
    /// The hub's sequence number of this update.
    pub seq: u64,
    /// Devices whose state changed (latest state only).
    pub devices: Vec<Item>,
    /// Alert changes, in order.
    pub alerts: Vec<AlertItem>,
    /// Devices whose connection status changed.
    pub presence: Vec<Item>,
    /// Window results.
    pub windows: Vec<WindowItem>,
    /// Geofence events, in order.
    pub geofence: Vec<GeofenceItem>,
    /// Tracks that moved.
    pub tracks: Vec<TrackItem>,
    /// Devices whose registry entry changed (or that were added): their
    /// whole view.
    pub registry: Vec<Item>,
    /// With `registry` items: the registry they come from (sessions'
    /// filters learn new devices from it).
    pub registry_now: Option<Arc<Registry>>,
}

/// The most registry entries in one update (see [`LiveHub::refresh_registry`]).
pub const REGISTRY_ITEMS: usize = 2_000;

/// What passes a filter at one moment: the parts of a snapshot.
#[derive(Debug)]
pub struct Snapshot {
    /// The hub sequence number it reflects: later updates change it.
    pub seq: u64,
    /// The devices that pass, by registry index: their views are taken
    /// part by part with [`LiveHub::views`], so that a province's snapshot
    /// never exists whole in memory.
    pub devices: Vec<u32>,
    /// The open alerts that pass.
    pub alerts: Vec<Alert>,
    /// The tracks that pass.
    pub tracks: Vec<Track>,
}

fn json<T: serde::Serialize>(value: &T) -> Frame {
    serde_json::to_string(value).unwrap_or_default().into()
}

#[derive(Debug)]
struct HubState {
    seq: u64,
    /// The registry the vectors below are sized for.
    registry: Arc<Registry>,
    /// Its generation in the cell.
    registry_seen: u64,
    /// Devices changed by it, still to be announced to screens.
    announce: VecDeque<usize>,
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
    zones: Vec<Arc<[ZoneRef]>>,
    /// The zones generation `zones` was worked out with.
    zones_seen: u64,
    /// Recent tracks of watch-listed plates, by plate.
    tracks: HashMap<String, Track>,
}

/// Shared live state. Cheap to clone through [`Arc`].
#[derive(Debug)]
pub struct LiveHub {
    /// The registry in force; `HubState::registry` follows it.
    cell: Arc<RegistryCell>,
    geo: Arc<Current<Zones>>,
    state: Mutex<HubState>,
    /// Recent readings for charts; its own lock, so a chart's query never
    /// holds up the live feed for long.
    history: Mutex<History>,
    tx: broadcast::Sender<Arc<Update>>,
}

impl LiveHub {
    /// An empty hub for the devices of `registry`, with no zones.
    pub fn new(registry: Arc<Registry>) -> Arc<Self> {
        Self::with_zones(registry, Arc::new(Current::new(Arc::default())))
    }

    /// An empty hub for the devices of `registry`; device views carry the
    /// zones (of the set in force) their latest position lies in.
    pub fn with_zones(registry: Arc<Registry>, geo: Arc<Current<Zones>>) -> Arc<Self> {
        Self::with_history(registry, geo, &HistoryConfig::default())
    }

    /// An empty hub with zones that keeps recent readings as `history` says.
    pub fn with_history(
        registry: Arc<Registry>,
        geo: Arc<Current<Zones>>,
        history: &HistoryConfig,
    ) -> Arc<Self> {
        Self::live(Arc::new(RegistryCell::new(registry)), geo, history)
    }

    /// An empty hub for the registry in force in `cell`, whenever it
    /// changes (see [`LiveHub::refresh_registry`]).
    pub fn live(
        cell: Arc<RegistryCell>,
        geo: Arc<Current<Zones>>,
        history: &HistoryConfig,
    ) -> Arc<Self> {
        let registry = cell.current();
        let registry_seen = cell.generation();
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        let zones = geo.current();
        let device_zones = registry
            .devices()
            .iter()
            .map(|d| zones.at(d.pos).into())
            .collect();
        Arc::new(LiveHub {
            state: Mutex::new(HubState {
                seq: 0,
                registry_seen,
                announce: VecDeque::new(),
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
                registry: registry.clone(),
            }),
            history: Mutex::new(History::new(history, registry.devices().len())),
            cell,
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

    /// The registry in force.
    pub fn registry(&self) -> Arc<Registry> {
        self.cell.current()
    }

    /// After a registry change: room for new devices and their zones,
    /// and live updates with the view of every device that changed or was
    /// added (sent now, so screens learn of it without a reading), at most
    /// [`REGISTRY_ITEMS`] per update, the hub's lock let go between them:
    /// an import of 100 000 devices does not hold every reading back while
    /// it is serialized.
    pub fn refresh_registry(&self) {
        loop {
            let mut st = self.lock();
            let mut update = Update::default();
            self.follow_registry(&mut st, &mut update);
            let part: Vec<usize> = {
                let n = st.announce.len().min(REGISTRY_ITEMS);
                st.announce.drain(..n).collect()
            };
            if part.is_empty() {
                return;
            }
            update.registry_now = Some(st.registry.clone());
            for i in part {
                update.registry.push(Item {
                    place: self.place(&st, i),
                    json: json(&self.view(&st, i)),
                });
            }
            st.seq += 1;
            update.seq = st.seq;
            let _ = self.tx.send(Arc::new(update));
        }
    }

    /// Takes a new registry up, if there is one: room for new devices, and
    /// the devices that changed queued for [`LiveHub::refresh_registry`] to
    /// announce.
    fn follow_registry(&self, st: &mut HubState, update: &mut Update) {
        let Some(new) = self.cell.changed_since(&mut st.registry_seen) else {
            return;
        };
        let old = std::mem::replace(&mut st.registry, new);
        let count = st.registry.devices().len();
        let zones = self.geo.current();
        for i in st.states.len()..count {
            st.states.push(None);
            st.presence.push(None);
            st.windows.push(Vec::new());
            st.zones
                .push(zones.at(st.registry.device(i as u32).pos).into());
        }
        self.chart_history().grow(count);
        update.registry_now = Some(st.registry.clone());
        for i in 0..count {
            if old.devices().get(i) == Some(st.registry.device(i as u32)) {
                continue;
            }
            if st.states[i].is_none() {
                st.zones[i] = zones.at(st.registry.device(i as u32).pos).into();
            }
            st.announce.push_back(i);
        }
    }

    /// The zones in force.
    pub fn zones(&self) -> Arc<Zones> {
        self.geo.current()
    }

    /// After a zones reload, every device's zones again.
    fn refresh_zones(&self, st: &mut HubState) {
        if let Some(zones) = self.geo.changed_since(&mut st.zones_seen) {
            let registry = st.registry.clone();
            for (i, d) in registry.devices().iter().enumerate() {
                let pos = st.states[i].as_ref().map_or(d.pos, |s| s.pos);
                st.zones[i] = zones.at(pos).into();
            }
        }
    }

    fn place(&self, st: &HubState, i: usize) -> Place {
        Place {
            device: Some(i as u32),
            pos: st.states[i]
                .as_ref()
                .map_or(st.registry.device(i as u32).pos, |s| s.pos),
            zones: st.zones[i].clone(),
        }
    }

    /// Applies a batch of engine outputs and broadcasts one update.
    pub fn apply(&self, batch: Vec<EngineOutput>) {
        // Devices whose state changed, in order of first change: each is
        // serialized once, at its latest state, after the batch.
        let mut changed: Vec<usize> = Vec::new();
        let mut in_update: HashSet<usize> = HashSet::new();
        let mut update = Update::default();
        let mut st = self.lock();
        self.follow_registry(&mut st, &mut update);
        self.refresh_zones(&mut st);
        let mut zones = None;
        for output in batch {
            match output {
                EngineOutput::Device(d) => {
                    let Some(i) = st.registry.lookup(&d.device) else {
                        continue;
                    };
                    let i = i as usize;
                    let moved = match &st.states[i] {
                        Some(old) => old.pos != d.pos,
                        None => st.registry.device(i as u32).pos != d.pos,
                    };
                    if moved {
                        let zones = zones.get_or_insert_with(|| self.geo.current());
                        st.zones[i] = zones.at(d.pos).into();
                    }
                    self.chart_history().record(i, &d);
                    st.states[i] = Some(d);
                    if in_update.insert(i) {
                        changed.push(i);
                    }
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
                    update.alerts.push(AlertItem {
                        device: st.registry.lookup(&a.subject),
                        json: json(&a),
                        alert: a,
                    });
                }
                EngineOutput::Presence(p) => {
                    let Some(i) = st.registry.lookup(&p.device) else {
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
                    update.presence.retain(|q| q.place.device != Some(i));
                    update.presence.push(Item {
                        place: self.place(&st, i as usize),
                        json: json(&p),
                    });
                }
                EngineOutput::Window(w) => {
                    let Some(i) = st.registry.lookup(&w.device) else {
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
                    update.windows.push(WindowItem {
                        place: self.place(&st, i as usize),
                        kind: w.value.kind(),
                        window_s: w.window_s(),
                        json: json(&w),
                    });
                }
                EngineOutput::Geofence(g) => update.geofence.push(GeofenceItem {
                    pos: g.pos,
                    zone: g.zone.id.clone(),
                    json: json(&g),
                }),
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
                    let plate: Arc<str> = t.plate.as_str().into();
                    update.tracks.retain(|o| o.plate != plate);
                    update.tracks.push(TrackItem {
                        plate,
                        pos: t.points.last().map_or([0.0, 0.0], |p| p.pos),
                        json: json(&t),
                    });
                    st.tracks.insert(t.plate.clone(), t);
                }
            }
        }
        update.devices = changed
            .into_iter()
            .map(|i| Item {
                place: self.place(&st, i),
                json: json(&st.states[i]),
            })
            .collect();
        if update.devices.is_empty()
            && update.alerts.is_empty()
            && update.presence.is_empty()
            && update.windows.is_empty()
            && update.geofence.is_empty()
            && update.tracks.is_empty()
            && update.registry.is_empty()
        {
            return;
        }
        if !update.presence.is_empty() {
            let (online, known) = (st.presence_online, st.presence_known);
            metrics::gauge!("ioc_devices_presence", "status" => "online").set(online as f64);
            metrics::gauge!("ioc_devices_presence", "status" => "offline")
                .set((known - online) as f64);
        }
        st.seq += 1;
        update.seq = st.seq;
        metrics::gauge!("ioc_open_alerts").set(st.open.len() as f64);
        // No receivers is fine: nobody is watching. Sent under the lock so
        // that updates leave in sequence order.
        let _ = self.tx.send(Arc::new(update));
    }

    /// A receiver of every later update.
    pub fn updates(&self) -> broadcast::Receiver<Arc<Update>> {
        self.tx.subscribe()
    }

    /// What passes `filter` now, and the hub sequence number it reflects.
    pub fn snapshot(&self, filter: &Filter) -> Snapshot {
        let mut st = self.lock();
        self.follow_registry(&mut st, &mut Update::default());
        self.refresh_zones(&mut st);
        let mut devices = Vec::new();
        for i in 0..st.states.len() {
            if filter.device(&self.place(&st, i)) {
                devices.push(i as u32);
            }
        }
        let alerts = st
            .open
            .values()
            .filter(|a| filter.alert(a, st.registry.lookup(&a.subject)))
            .cloned()
            .collect();
        let tracks = st
            .tracks
            .values()
            .filter(|t| filter.track(t.points.last().map_or([0.0, 0.0], |p| p.pos)))
            .cloned()
            .collect();
        Snapshot {
            seq: st.seq,
            devices,
            alerts,
            tracks,
        }
    }

    /// The views of these devices (registry indices, as a [`Snapshot`]
    /// lists them) with their latest state.
    pub fn views(&self, devices: &[u32]) -> Vec<DeviceView> {
        let mut st = self.lock();
        self.refresh_zones(&mut st);
        devices
            .iter()
            .filter(|&&i| (i as usize) < st.states.len())
            .map(|&i| self.view(&st, i as usize))
            .collect()
    }

    fn view(&self, st: &HubState, i: usize) -> DeviceView {
        DeviceView {
            info: st.registry.device(i as u32).clone(),
            state: st.states[i].clone(),
            presence: st.presence[i],
            windows: st.windows[i].clone(),
            zones: st.zones[i].to_vec(),
        }
    }

    /// Every device with its latest state.
    pub fn devices(&self) -> Vec<DeviceView> {
        let mut st = self.lock();
        self.refresh_zones(&mut st);
        (0..st.states.len()).map(|i| self.view(&st, i)).collect()
    }

    /// One device with its latest state.
    pub fn device(&self, id: &str) -> Option<DeviceView> {
        let mut st = self.lock();
        let i = st.registry.lookup(id)?;
        self.refresh_zones(&mut st);
        Some(self.view(&st, i as usize))
    }

    /// The recent history of device `id` from `from` to `to` (ms since the
    /// epoch) in rows of `step` (at least the bucket width, `None`: it).
    pub fn history(
        &self,
        id: &str,
        from: i64,
        to: i64,
        step: Option<std::time::Duration>,
    ) -> Option<HistoryView> {
        let i = self.lock().registry.lookup(id)?;
        let h = self.chart_history();
        let step = step.unwrap_or_else(|| h.step());
        Some(h.query(i as usize, id, from, to, step))
    }

    /// How far back history reaches and its finest step.
    pub fn history_bounds(&self) -> (std::time::Duration, usize) {
        let h = self.chart_history();
        (h.step(), h.capacity())
    }

    /// The history, held only for one reading or one query.
    fn chart_history(&self) -> MutexGuard<'_, History> {
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    routed: Arc<std::sync::atomic::AtomicU64>,
) {
    while let Ok(mut batch) = outputs.recv_async().await {
        let mut taken = 1;
        // Whatever else is already queued, up to about 4 096 outputs.
        while batch.len() < 4096 {
            match outputs.try_recv() {
                Ok(more) => {
                    batch.extend(more);
                    taken += 1;
                }
                Err(_) => break,
            }
        }
        observe(&mut batch);
        hub.apply(batch);
        // Batches taken and handed on (the engine's checkpoints wait for it).
        routed.fetch_add(taken, std::sync::atomic::Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use ioc_schemas::{Body, Hydrology, PresenceChange, Timestamp};

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

    fn seqs(items: &[Item]) -> Vec<u64> {
        items
            .iter()
            .map(|i| serde_json::from_str::<DeviceState>(&i.json).unwrap().seq)
            .collect()
    }

    #[test]
    fn snapshot_then_conflated_updates_in_sequence() {
        let hub = LiveHub::new(ioc_devices::Registry::sonla_demo());
        hub.apply(vec![state("river-to-hieu", 1)]);
        let mut rx = hub.updates();
        let everything = Filter::new(Default::default(), &hub.registry()).unwrap();
        let snapshot = hub.snapshot(&everything);
        assert_eq!(snapshot.seq, 1);
        assert_eq!(snapshot.devices.len(), hub.registry().devices().len());
        hub.apply(vec![
            state("river-to-hieu", 2),
            state("rain-to-hieu", 1),
            state("river-to-hieu", 3),
        ]);
        hub.apply(vec![state("nobody", 1)]);
        hub.apply(vec![state("rain-to-hieu", 2)]);
        let u1 = rx.try_recv().unwrap();
        let u2 = rx.try_recv().unwrap();
        assert!(rx.try_recv().is_err(), "unknown devices make no update");
        assert_eq!((u1.seq, u2.seq), (2, 3));
        assert_eq!(
            seqs(&u1.devices),
            [3, 1],
            "two states of one device are conflated"
        );
        let river = hub.registry().lookup("river-to-hieu");
        assert_eq!(u1.devices[0].place.device, river);
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

    /// A registry change reaches screens as the changed devices' views.
    #[test]
    fn registry_changes_are_sent_as_views() {
        let demo = ioc_devices::Registry::sonla_demo();
        let cell = Arc::new(RegistryCell::new(demo.clone()));
        let hub = LiveHub::live(
            cell.clone(),
            Arc::new(Current::new(Arc::default())),
            &HistoryConfig::default(),
        );
        let mut rx = hub.updates();
        let mut spec = demo.spec(0);
        spec.name = "đổi tên".into();
        let mut added = demo.spec(1);
        added.id = "rain-new".into();
        cell.replace(Arc::new(demo.with(vec![spec, added]).unwrap()));
        hub.refresh_registry();
        let update = rx.try_recv().unwrap();
        assert_eq!(update.registry.len(), 2);
        assert!(update.registry[0].json.contains("đổi tên"));
        assert_eq!(
            update.registry[1].place.device,
            Some(demo.devices().len() as u32)
        );
        assert!(hub.device("rain-new").is_some());
        assert_eq!(hub.devices().len(), demo.devices().len() + 1);
        hub.refresh_registry();
        assert!(rx.try_recv().is_err(), "nothing changed since");
    }

    #[test]
    fn presence_changes_are_updates_and_repeats_are_not() {
        let hub = LiveHub::new(ioc_devices::Registry::sonla_demo());
        let mut rx = hub.updates();
        hub.apply(vec![
            presence("river-to-hieu", PresenceStatus::Online, 1),
            presence("river-to-hieu", PresenceStatus::Offline, 2),
        ]);
        hub.apply(vec![presence("river-to-hieu", PresenceStatus::Offline, 3)]);
        let u = rx.try_recv().unwrap();
        assert!(rx.try_recv().is_err(), "a repeated status makes no update");
        assert_eq!(u.presence.len(), 1, "conflated");
        assert!(u.presence[0].json.contains(r#""status":"offline""#));
        let view = hub.device("river-to-hieu").unwrap();
        assert_eq!(
            view.presence.map(|p| (p.status, p.received)),
            Some((PresenceStatus::Offline, Timestamp(2)))
        );
        hub.apply(vec![presence("rain-to-hieu", PresenceStatus::Online, 4)]);
        let st = hub.lock();
        assert_eq!((st.presence_known, st.presence_online), (2, 1));
    }
}
