//! What ingest hands to the engine.

use ioc_devices::DeviceIndex;
use ioc_schemas::{Envelope, Timestamp};
use serde::{Deserialize, Serialize};

/// A validated reading from a registered device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// The device's index in the registry the engine was started with.
    pub device: DeviceIndex,
    /// When ingest received it (wall clock).
    #[serde(with = "ioc_schemas::time::as_millis")]
    pub received: Timestamp,
    /// The reading itself.
    pub envelope: Envelope,
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
