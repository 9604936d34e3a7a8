//! A bounded history of one field's recent samples, which
//! `rate_of_change`, `surge` and `speed_drop` keep per device.

use serde::{Deserialize, Serialize};

/// Most samples a history keeps; older samples are thinned so the history
/// still spans its whole window.
pub const HISTORY_CAP: usize = 32;

/// Longest window a history may span (the rules file refuses longer).
pub const MAX_HISTORY_MS: i64 = 7 * 24 * 3_600_000;

/// Recent `(event time ms, value)` samples of one field, oldest first,
/// bounded by [`HISTORY_CAP`]. Eight bytes a sample: milliseconds after
/// `base` and the value as `f32` (a river level to a hundredth of a
/// millimetre), since every river gauge, reservoir and counter keeps one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Event time the offsets count from, ms.
    base: i64,
    samples: Vec<(u32, f32)>,
}

impl History {
    fn at(&self, i: usize) -> (i64, f64) {
        let (dt, v) = self.samples[i];
        (self.base + i64::from(dt), f64::from(v))
    }

    fn offset(&self, ts: i64) -> u32 {
        // `rebase` keeps every retained sample within `u32` of the base.
        (ts - self.base) as u32
    }

    /// Moves the base so that `ts` and every sample that outlives it fit.
    fn rebase(&mut self, ts: i64, window_ms: i64) {
        if self.samples.is_empty() {
            self.base = ts;
        } else if ts < self.base {
            let shift = (self.base - ts) as u32;
            for s in &mut self.samples {
                s.0 += shift;
            }
            self.base = ts;
        } else if ts - self.base > i64::from(u32::MAX) {
            // Far ahead: what it pushes out of the window goes now.
            let keep = self
                .samples
                .partition_point(|s| self.base + i64::from(s.0) <= ts - window_ms);
            self.samples.drain(..keep);
            let oldest = self
                .samples
                .first()
                .map_or(ts, |s| self.base + i64::from(s.0));
            let shift = (oldest - self.base) as u32;
            for s in &mut self.samples {
                s.0 -= shift;
            }
            self.base = oldest;
        }
    }

    /// Adds a sample and forgets those older than `window_ms` before it.
    /// Samples closer than `window_ms / HISTORY_CAP` to the previous one
    /// replace it, so the history spans the window whatever the rate.
    pub fn push(&mut self, ts: i64, value: f64, window_ms: i64) {
        let window_ms = window_ms.clamp(1, MAX_HISTORY_MS);
        let len = self.samples.len();
        if len > 0 && ts <= self.at(len - 1).0 - window_ms {
            // The window has already left it behind.
            return;
        }
        let (len, capacity) = (self.samples.len(), self.samples.capacity());
        if len == capacity {
            // Doubling, but never past one over the cap (which `push` trims
            // at once): a history of a dozen samples takes a dozen.
            let want = (capacity * 2).clamp(4, HISTORY_CAP + 1);
            self.samples.reserve_exact(want - len);
        }
        self.rebase(ts, window_ms);
        let spacing = window_ms / HISTORY_CAP as i64;
        let sample = (self.offset(ts), value as f32);
        let at = self.samples.partition_point(|&(t, _)| t <= sample.0);
        let len = self.samples.len();
        if at == len {
            // The common case: newer than everything.
            if len >= 2 && ts - self.at(len - 2).0 < spacing {
                self.samples[len - 1] = sample;
            } else {
                self.samples.push(sample);
            }
        } else {
            self.samples.insert(at, sample);
        }
        let newest = self.at(self.samples.len() - 1).0;
        let keep_from = self
            .samples
            .partition_point(|&(t, _)| self.base + i64::from(t) <= newest - window_ms);
        self.samples.drain(..keep_from);
        if self.samples.len() > HISTORY_CAP {
            self.samples.remove(1);
        }
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> impl ExactSizeIterator<Item = (i64, f64)> + '_ {
        (0..self.samples.len()).map(|i| self.at(i))
    }

    /// Bytes the history holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.samples.capacity() * std::mem::size_of::<(u32, f32)>()
    }

    /// Least-squares slope in units per hour, if at least `min_samples`
    /// samples span at least `min_span_ms`.
    pub fn slope_per_h(&self, min_samples: usize, min_span_ms: i64) -> Option<f64> {
        let n = self.samples.len();
        let (first, last) = (self.samples.first()?, self.samples.last()?);
        if n < min_samples.max(2) || i64::from(last.0 - first.0) < min_span_ms.max(1) {
            return None;
        }
        let hours = |t: u32| (f64::from(t) - f64::from(last.0)) / 3_600_000.0;
        let nf = n as f64;
        let mean_t = self.samples.iter().map(|&(t, _)| hours(t)).sum::<f64>() / nf;
        let mean_v = self.samples.iter().map(|&(_, v)| f64::from(v)).sum::<f64>() / nf;
        let (mut num, mut den) = (0.0, 0.0);
        for &(t, v) in &self.samples {
            let dt = hours(t) - mean_t;
            num += dt * (f64::from(v) - mean_v);
            den += dt * dt;
        }
        (den > 0.0).then(|| num / den)
    }

    /// The smallest value in the history.
    pub fn min(&self) -> Option<f64> {
        self.samples.iter().map(|s| f64::from(s.1)).reduce(f64::min)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn a_steady_rise_has_its_slope() {
        let mut h = History::default();
        for k in 0..10 {
            h.push(k * 600_000, 1.0 + 0.05 * k as f64, H);
        }
        let slope = h.slope_per_h(3, H / 4).unwrap();
        assert!((slope - 0.3).abs() < 1e-9, "{slope}");
        assert!(h.samples().len() <= 7, "older than an hour are gone");
    }

    /// The plain history the compact one must match: `(i64, f64)` samples.
    fn reference_push(h: &mut Vec<(i64, f64)>, ts: i64, value: f64, window_ms: i64) {
        let spacing = window_ms / HISTORY_CAP as i64;
        let at = h.partition_point(|&(t, _)| t <= ts);
        if at == h.len() {
            let len = h.len();
            if len >= 2 && ts - h[len - 2].0 < spacing {
                h[len - 1] = (ts, value);
            } else {
                h.push((ts, value));
            }
        } else {
            h.insert(at, (ts, value));
        }
        let newest = h.last().map_or(ts, |s| s.0);
        let keep_from = h.partition_point(|&(t, _)| t <= newest - window_ms);
        h.drain(..keep_from);
        if h.len() > HISTORY_CAP {
            h.remove(1);
        }
    }

    proptest! {
        /// The compact history keeps exactly the samples of the plain one,
        /// whatever the order and however far apart they come (jumps of
        /// more than the 49 days a `u32` of milliseconds holds included).
        #[test]
        fn compact_history_matches_the_plain_one(
            steps in prop::collection::vec((-3i64..60, -5.0f64..5.0), 1..80),
            window_min in 1i64..600,
        ) {
            let window_ms = window_min * 60_000;
            let (mut h, mut plain) = (History::default(), Vec::new());
            let mut t = 1_767_225_600_000i64;
            for &(dt, v) in &steps {
                // Mostly forward in minutes, sometimes back, sometimes 60 days ahead.
                t += if dt == 59 { 60 * 24 * H } else { dt * 60_000 };
                let v = f64::from(v as f32);
                h.push(t, v, window_ms);
                reference_push(&mut plain, t, v, window_ms);
                prop_assert_eq!(h.samples().collect::<Vec<_>>(), plain.clone());
                prop_assert!(h.samples.capacity() <= HISTORY_CAP + 1);
            }
        }

        /// The slope does not depend on the order samples arrive in.
        #[test]
        fn slope_is_independent_of_arrival_order(mut pts in prop::collection::vec((0i64..3_000_000, -5.0f64..5.0), 3..20), seed in any::<u64>()) {
            pts.sort_by_key(|p| p.0);
            pts.dedup_by_key(|p| p.0);
            let mut sorted = History::default();
            for &(t, v) in &pts { sorted.samples.push((t as u32, v as f32)); }
            let mut shuffled = pts.clone();
            let n = shuffled.len();
            for i in 0..n { shuffled.swap(i, (seed as usize).wrapping_mul(31).wrapping_add(i * 7) % n); }
            let mut h = History::default();
            for &(t, v) in &shuffled {
                let t = t as u32;
                h.samples.insert(h.samples.partition_point(|s| s.0 <= t), (t, v as f32));
            }
            prop_assert_eq!(h.slope_per_h(2, 1), sorted.slope_per_h(2, 1));
        }
    }
}
