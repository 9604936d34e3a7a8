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
