//! The reorder buffer: samples wait here until the watermark passes their
//! event time, then leave in `(event time, device, seq)` order.
//!
//! Readings arrive nearly in event-time order, so the buffer is a sorted
//! deque: each batch is sorted on its own and merged into the tail, which
//! touches only the samples it overlaps (usually none), and release pops
//! from the front. Each sample moves a handful of times, where a binary
//! heap would move it once per level on the way in and on the way out.

use std::collections::VecDeque;

use crate::sample::Sample;

fn key(s: &Sample) -> (i64, u32, u64) {
    (s.ts, s.device, s.seq)
}

/// Samples waiting for the watermark, in release order.
#[derive(Debug, Default)]
pub struct ReorderBuffer {
    sorted: VecDeque<Sample>,
    incoming: Vec<Sample>,
    merge: Vec<Sample>,
}

impl ReorderBuffer {
    /// Adds a sample (kept aside until the next [`ReorderBuffer::release`]).
    pub fn push(&mut self, sample: Sample) {
        self.incoming.push(sample);
    }

    /// Samples waiting, including those pushed since the last release.
    pub fn len(&self) -> usize {
        self.sorted.len() + self.incoming.len()
    }

    /// Whether no sample is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves every sample with event time before `limit` to `out`, in
    /// `(event time, device, seq)` order.
    pub fn release(&mut self, limit: i64, out: &mut Vec<Sample>) {
        self.absorb();
        let n = self.sorted.partition_point(|s| s.ts < limit);
        out.extend(self.sorted.drain(..n));
    }

    /// Merges the samples pushed since the last release into the sorted deque.
    fn absorb(&mut self) {
        if self.incoming.is_empty() {
            return;
        }
        // Nearly sorted already: the sort finds the runs.
        self.incoming.sort_by_key(key);
        let first = key(&self.incoming[0]);
        // Only the sorted samples after the batch's first need merging.
        let overlap = self.sorted.len() - self.sorted.partition_point(|s| key(s) <= first);
        if overlap == 0 {
            self.sorted.extend(self.incoming.drain(..));
            return;
        }
        let tail = self.sorted.drain(self.sorted.len() - overlap..);
        let mut a = tail.peekable();
        let mut b = self.incoming.drain(..).peekable();
        self.merge.clear();
        loop {
            let take_a = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => key(x) <= key(y),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_a { a.next() } else { b.next() };
            self.merge.extend(next);
        }
        drop(a);
        drop(b);
        self.sorted.extend(self.merge.drain(..));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use ioc_schemas::{Body, Hydrology};
    use proptest::prelude::*;

    use super::*;

    fn sample(device: u32, ts: i64, seq: u64) -> Sample {
        let body = Body::Hydrology(Hydrology {
            water_level_m: Some(1.0),
            ..Hydrology::default()
        });
        Sample::new(device, ts, seq, &body)
    }

    proptest! {
        /// Whatever the arrival order and however releases interleave with
        /// pushes, every sample leaves exactly once, each release in key
        /// order and only once the limit has passed it; samples that were
        /// not already late when pushed leave in key order overall.
        #[test]
        fn releases_in_order(
            batches in prop::collection::vec(
                prop::collection::vec((0u32..4, 0i64..200), 0..40), 1..12),
            limits in prop::collection::vec(0i64..220, 12),
        ) {
            let mut buffer = ReorderBuffer::default();
            let mut out = Vec::new();
            let mut all = Vec::new();
            let mut on_time = Vec::new();
            let mut limit = 0;
            for (batch, l) in batches.iter().zip(&limits) {
                for &(d, ts) in batch {
                    // Unique, so a sample is known by its key.
                    let seq = all.len() as u64;
                    buffer.push(sample(d, ts, seq));
                    all.push((ts, d, seq));
                    if ts >= limit {
                        on_time.push((ts, d, seq));
                    }
                }
                limit = limit.max(*l);
                let before = out.len();
                buffer.release(limit, &mut out);
                prop_assert!(out[before..].iter().all(|s| s.ts < limit));
                prop_assert!(out[before..].is_sorted_by_key(key));
            }
            buffer.release(i64::MAX, &mut out);
            prop_assert!(buffer.is_empty());
            let mut got: Vec<_> = out.iter().map(key).collect();
            let got_on_time: Vec<_> = got.iter().copied().filter(|k| on_time.contains(k)).collect();
            prop_assert!(got_on_time.is_sorted());
            got.sort();
            all.sort();
            prop_assert_eq!(got, all);
        }
    }
}
