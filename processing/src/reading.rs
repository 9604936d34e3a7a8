//! What ingest hands to the engine.

use ioc_devices::DeviceIndex;
use ioc_schemas::{Envelope, Timestamp};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A validated reading from a registered device.
///
/// Between the processes of a cluster it travels as the device index and
/// the journal's binary record (`durable::codec`): timely's exchange
/// encodes with bincode, which cannot read the envelope's own serde form
/// (fields skipped when empty, tagged bodies).
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// The device's index in the registry the engine was started with.
    pub device: DeviceIndex,
    /// When ingest received it (wall clock).
    pub received: Timestamp,
    /// The reading itself.
    pub envelope: Envelope,
}

impl Serialize for Reading {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut record = Vec::with_capacity(96);
        record.extend_from_slice(&self.device.to_le_bytes());
        crate::durable::codec::encode(&mut record, self.received.millis(), &self.envelope);
        s.serialize_bytes(&record)
    }
}

impl<'de> Deserialize<'de> for Reading {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Blob(record) = Blob::deserialize(d)?;
        let bad = |e: String| serde::de::Error::custom(e);
        let (index, record) = record
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("a reading without its device".into()))?;
        let (received, envelope) = crate::durable::codec::decode(record).map_err(bad)?;
        Ok(Reading {
            device: DeviceIndex::from_le_bytes(*index),
            received: Timestamp(received),
            envelope,
        })
    }
}

/// Bytes that serde moves as one run (`serialize_bytes`), not byte by
/// byte as a `Vec<u8>` goes through bincode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Blob(pub Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Blob, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element()? {
                    v.push(b);
                }
                Ok(Blob(v))
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

/// A water-level reading of a registered device, for tests.
#[cfg(test)]
pub(crate) fn water_level(
    registry: &ioc_devices::Registry,
    id: &str,
    ts: i64,
    seq: u64,
    m: f64,
) -> Reading {
    Reading {
        device: registry.lookup(id).expect("registered device"),
        received: Timestamp(ts),
        envelope: Envelope {
            device: id.into(),
            ts: Timestamp(ts),
            seq,
            pos: None,
            body: ioc_schemas::Body::Hydrology(ioc_schemas::Hydrology {
                water_level_m: Some(m),
                ..ioc_schemas::Hydrology::default()
            }),
        },
    }
}
