//! The anti-replay window of one device's sequence numbers (as in IPsec):
//! the highest number seen and a 64-bit map of which of the 64 numbers below
//! it were seen. Ingest keeps one per device to refuse redeliveries; the
//! engine keeps one per device so that a duplicate that bypassed ingest
//! (or came between newer readings) is not counted twice in a window.

/// Which of a device's recent sequence numbers were seen (24 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeqWindow {
    highest: u64,
    /// Bit `i` set: sequence number `highest - i` was seen.
    seen: u64,
    newest_ts: i64,
}

impl SeqWindow {
    /// Records a reading (event time `ts_ms`); `false` when it is a
    /// duplicate: its number is marked, and its event time is not newer
    /// than anything the device sent (newer means the device restarted its
    /// numbering, and the window starts over). Numbers older than the
    /// window cannot be told apart and pass.
    pub fn first_time(&mut self, seq: u64, ts_ms: i64) -> bool {
        if self.seen == 0 || (seq <= self.highest && ts_ms > self.newest_ts) {
            // First reading, or the device restarted its numbering.
            *self = SeqWindow {
                highest: seq,
                seen: 1,
                newest_ts: ts_ms,
            };
            return true;
        }
        self.newest_ts = self.newest_ts.max(ts_ms);
        if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift } | 1;
            self.highest = seq;
            return true;
        }
        let back = self.highest - seq;
        if back >= 64 {
            return true;
        }
        let bit = 1u64 << back;
        if self.seen & bit != 0 {
            return false;
        }
        self.seen |= bit;
        true
    }
}
