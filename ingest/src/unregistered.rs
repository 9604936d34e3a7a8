//! Devices that send readings but are not in the registry: what an admin
//! needs to adopt one (its id, the kind its topic names, when it was first
//! and last heard, how often, where it said it was) and its latest
//! messages, to be replayed once it is registered.
//!
//! Bounded: at most [`MAX_DEVICES`] devices (the least recently heard goes
//! first), [`KEPT_PER_DEVICE`] messages each and [`MAX_BYTES`] of messages
//! in all. The messages are also in the dead letters (reason
//! `unknown_device`); this copy exists so that adoption can replay them
//! without reading the dead-letter file back. It does not survive a restart.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use ioc_schemas::Timestamp;

/// How many unregistered devices are remembered.
pub const MAX_DEVICES: usize = 10_000;
/// How many of each one's latest messages are kept for replay.
pub const KEPT_PER_DEVICE: usize = 200;
/// Bytes of kept messages over all devices.
pub const MAX_BYTES: usize = 32 << 20;

/// An unregistered device, as the adoption list shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct UnregisteredDevice {
    /// The id its readings carry.
    pub id: String,
    /// The kind its MQTT topic names (`ioc/v1/{kind}/{id}/telemetry`), when
    /// it came over MQTT with a valid kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<ioc_schemas::DeviceKind>,
    /// When it was first heard (wall clock), since the start.
    pub first_seen: Timestamp,
    /// When it was last heard.
    pub last_seen: Timestamp,
    /// How many messages it sent.
    pub count: u64,
    /// The last position it sent, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_pos: Option<[f64; 2]>,
    /// How many of its latest messages are kept for replay.
    pub kept: usize,
}

/// A kept message: the MQTT topic it came on (`None`: Kafka or HTTP) and
/// its bytes.
#[derive(Clone, Debug)]
pub struct Kept {
    /// The MQTT topic, for a message that came over MQTT.
    pub topic: Option<String>,
    /// The payload.
    pub payload: Vec<u8>,
}

#[derive(Debug)]
struct Entry {
    device: UnregisteredDevice,
    messages: VecDeque<Kept>,
}

#[derive(Debug, Default)]
struct Inner {
    devices: HashMap<String, Entry>,
    bytes: usize,
}

/// The unregistered devices heard since the start.
#[derive(Debug, Default)]
pub struct Unregistered {
    inner: Mutex<Inner>,
}

impl Unregistered {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes a message refused as `unknown_device`, that came on MQTT
    /// `topic` (`None`: Kafka or HTTP), whose envelope names device `id`
    /// (at `pos`, if it says).
    pub fn note(
        &self,
        topic: Option<&str>,
        id: &str,
        pos: Option<[f64; 2]>,
        payload: &[u8],
        now: Timestamp,
    ) {
        let kind = topic
            .and_then(crate::decode::parse_telemetry_topic)
            .and_then(|(kind, _)| ioc_schemas::DeviceKind::parse(kind));
        let mut inner = self.lock();
        if !inner.devices.contains_key(id) && inner.devices.len() >= MAX_DEVICES {
            let oldest = inner
                .devices
                .values()
                .min_by_key(|e| e.device.last_seen)
                .map(|e| e.device.id.clone());
            if let Some(old) = oldest.and_then(|o| inner.devices.remove(&o)) {
                inner.bytes -= old.messages.iter().map(|m| m.payload.len()).sum::<usize>();
            }
        }
        let entry = inner.devices.entry(id.to_owned()).or_insert_with(|| Entry {
            device: UnregisteredDevice {
                id: id.to_owned(),
                kind: None,
                first_seen: now,
                last_seen: now,
                count: 0,
                last_pos: None,
                kept: 0,
            },
            messages: VecDeque::new(),
        });
        let d = &mut entry.device;
        d.count += 1;
        d.last_seen = now;
        d.kind = kind.or(d.kind);
        d.last_pos = pos.or(d.last_pos);
        let mut freed = 0;
        if entry.messages.len() >= KEPT_PER_DEVICE
            && let Some(m) = entry.messages.pop_front()
        {
            freed = m.payload.len();
        }
        let fits = payload.len() <= MAX_BYTES;
        if fits {
            entry.messages.push_back(Kept {
                topic: topic.map(str::to_owned),
                payload: payload.to_vec(),
            });
        }
        entry.device.kept = entry.messages.len();
        let added = if fits { payload.len() } else { 0 };
        inner.bytes = inner.bytes + added - freed;
        // Over the byte bound: the oldest message of the device with the
        // most kept goes, until it fits.
        while inner.bytes > MAX_BYTES {
            let Some(biggest) = inner.devices.values_mut().max_by_key(|e| e.messages.len()) else {
                break;
            };
            let Some(m) = biggest.messages.pop_front() else {
                break;
            };
            biggest.device.kept = biggest.messages.len();
            inner.bytes -= m.payload.len();
        }
    }

    /// Every unregistered device, most recently heard first.
    pub fn list(&self) -> Vec<UnregisteredDevice> {
        let mut all: Vec<UnregisteredDevice> = self
            .lock()
            .devices
            .values()
            .map(|e| e.device.clone())
            .collect();
        all.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.id.cmp(&b.id)));
        all
    }

    /// One unregistered device.
    pub fn get(&self, id: &str) -> Option<UnregisteredDevice> {
        self.lock().devices.get(id).map(|e| e.device.clone())
    }

    /// Forgets a device (now registered) and hands its kept messages over,
    /// oldest first, for replay.
    pub fn take(&self, id: &str) -> Vec<Kept> {
        let mut inner = self.lock();
        let Some(e) = inner.devices.remove(id) else {
            return Vec::new();
        };
        inner.bytes -= e.messages.iter().map(|m| m.payload.len()).sum::<usize>();
        e.messages.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_messages_of_each_device_within_bounds() {
        let u = Unregistered::default();
        let topic = "ioc/v1/river_gauge/river-x/telemetry";
        for i in 0..(KEPT_PER_DEVICE + 5) {
            u.note(
                Some(topic),
                "river-x",
                Some([103.9, 21.3]),
                format!("{i}").as_bytes(),
                Timestamp(i as i64),
            );
        }
        let d = u.get("river-x").unwrap();
        assert_eq!(d.kind, Some(ioc_schemas::DeviceKind::RiverGauge));
        assert_eq!(d.count, KEPT_PER_DEVICE as u64 + 5);
        assert_eq!(
            (d.first_seen, d.last_seen),
            (Timestamp(0), Timestamp(KEPT_PER_DEVICE as i64 + 4))
        );
        assert_eq!(d.kept, KEPT_PER_DEVICE);
        let kept = u.take("river-x");
        assert_eq!(kept.len(), KEPT_PER_DEVICE);
        assert_eq!(kept[0].payload, b"5");
        assert_eq!(kept[0].topic.as_deref(), Some(topic));
        assert!(u.list().is_empty());
        assert_eq!(u.lock().bytes, 0);
    }
}
