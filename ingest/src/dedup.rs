//! Duplicate detection: the same device and sequence number, seen before.
//!
//! At-least-once delivery means redeliveries: an MQTT broker resends an
//! unacknowledged QoS 1 message after a reconnect, a Kafka consumer re-reads
//! from the last committed offset, a gateway retries a POST. Each device has
//! an anti-replay window ([`SeqWindow`]): a reading is a duplicate when its
//! number was seen, unless its event time is newer than anything the device
//! sent before (the device restarted its numbering). Readings older than
//! the window cannot be told apart and pass; the engine's order check sees
//! them.
//!
//! Twenty-four bytes and a lock per registered device, uncontended in
//! practice (one device is usually fed by one source).

use std::sync::Mutex;

use ioc_devices::DeviceIndex;
use ioc_processing::seq_window::SeqWindow;
use ioc_schemas::Timestamp;

/// One window per registered device.
#[derive(Debug)]
pub struct SeqWindows {
    windows: Vec<Mutex<SeqWindow>>,
    /// Devices registered since the start, beyond `windows`.
    added: Mutex<std::collections::HashMap<DeviceIndex, SeqWindow>>,
}

impl SeqWindows {
    /// Windows for `devices` registered devices (and any added later).
    pub fn new(devices: usize) -> Self {
        SeqWindows {
            windows: (0..devices).map(|_| Mutex::default()).collect(),
            added: Mutex::default(),
        }
    }

    /// Records the reading; `false` when it is a duplicate.
    pub fn first_time(&self, device: DeviceIndex, seq: u64, ts: Timestamp) -> bool {
        let Some(slot) = self.windows.get(device as usize) else {
            return self
                .added
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(device)
                .or_default()
                .first_time(seq, ts.millis());
        };
        slot.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .first_time(seq, ts.millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_783_998_760_000;

    #[test]
    fn redelivery_is_a_duplicate_and_reordering_is_not() {
        let w = SeqWindows::new(2);
        assert!(w.first_time(0, 1, Timestamp(T)));
        assert!(w.first_time(0, 3, Timestamp(T + 2000)));
        assert!(!w.first_time(0, 3, Timestamp(T + 2000)));
        // 2 arrives late but was never seen.
        assert!(w.first_time(0, 2, Timestamp(T + 1000)));
        assert!(!w.first_time(0, 2, Timestamp(T + 1000)));
        assert!(!w.first_time(0, 1, Timestamp(T)));
        // Another device has its own window.
        assert!(w.first_time(1, 3, Timestamp(T + 2000)));
    }

    #[test]
    fn a_restarted_device_counts_again() {
        let w = SeqWindows::new(1);
        for seq in 1..=10 {
            assert!(w.first_time(0, seq, Timestamp(T + seq as i64 * 1000)));
        }
        // Rebooted: numbering starts over with newer event times.
        assert!(w.first_time(0, 1, Timestamp(T + 60_000)));
        assert!(w.first_time(0, 2, Timestamp(T + 61_000)));
        assert!(!w.first_time(0, 2, Timestamp(T + 61_000)));
    }

    #[test]
    fn large_jumps_clear_the_window() {
        let w = SeqWindows::new(1);
        assert!(w.first_time(0, 5, Timestamp(T)));
        assert!(w.first_time(0, 500, Timestamp(T + 1000)));
        assert!(!w.first_time(0, 500, Timestamp(T + 1000)));
        // Older than the window: cannot tell, passes.
        assert!(w.first_time(0, 5, Timestamp(T)));
        // Unknown index (registry mismatch) never panics.
        assert!(w.first_time(9, 1, Timestamp(T)));
    }
}
