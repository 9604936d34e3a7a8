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
        crate::durable::codec::encode(&mut record, self.received.millis(), &self.envelope);
        (self.device, record).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Reading {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (device, record) = <(DeviceIndex, Vec<u8>)>::deserialize(d)?;
        let (received, envelope) =
            crate::durable::codec::decode(&record).map_err(serde::de::Error::custom)?;
        Ok(Reading {
            device,
            received: Timestamp(received),
            envelope,
        })
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
