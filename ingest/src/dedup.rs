//! Duplicate detection: the same device and sequence number, seen before.
//!
//! At-least-once delivery means redeliveries: an MQTT broker resends an
//! unacknowledged QoS 1 message after a reconnect, a Kafka consumer re-reads
//! from the last committed offset, a gateway retries a POST. Each device has
//! an anti-replay window (as in IPsec): the highest sequence number seen and
//! a 64-bit map of which of the 64 numbers below it were seen. A reading is a
//! duplicate when its number is marked, unless its event time is newer than
//! anything the device sent before: then the device restarted and began
//! counting again, and its window starts over. Readings older than the
//! window cannot be told apart and pass; the engine's order check sees them.
//!
//! Sixteen bytes and a lock per registered device, uncontended in practice
//! (one device is usually fed by one source).

use std::sync::Mutex;

use ioc_devices::DeviceIndex;
use ioc_schemas::Timestamp;

#[derive(Clone, Copy, Debug, Default)]
struct Window {
    highest: u64,
    /// Bit `i` set: sequence number `highest - i` was seen.
    seen: u64,
    newest_ts: i64,
}

/// One window per registered device.
#[derive(Debug)]
pub struct SeqWindows {
    windows: Vec<Mutex<Window>>,
}

impl SeqWindows {
    /// Windows for `devices` registered devices.
    pub fn new(devices: usize) -> Self {
        SeqWindows {
            windows: (0..devices).map(|_| Mutex::default()).collect(),
        }
    }

    /// Records the reading; `false` when it is a duplicate.
    pub fn first_time(&self, device: DeviceIndex, seq: u64, ts: Timestamp) -> bool {
        let Some(slot) = self.windows.get(device as usize) else {
            return true;
        };
        let mut w = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ts = ts.millis();
        if w.seen == 0 || (seq <= w.highest && ts > w.newest_ts) {
            // First reading, or the device restarted its numbering.
            *w = Window {
                highest: seq,
                seen: 1,
                newest_ts: ts,
            };
            return true;
        }
        w.newest_ts = w.newest_ts.max(ts);
        if seq > w.highest {
            let shift = seq - w.highest;
            w.seen = if shift >= 64 { 0 } else { w.seen << shift } | 1;
            w.highest = seq;
            return true;
        }
        let back = w.highest - seq;
        if back >= 64 {
            return true;
        }
        let bit = 1u64 << back;
        if w.seen & bit != 0 {
            return false;
        }
        w.seen |= bit;
        true
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
