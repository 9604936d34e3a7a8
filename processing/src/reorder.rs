//! The reorder buffer: items wait here until the watermark passes their
//! event time, then leave in their release order (for samples `(event
//! time, device, seq)`, for geo items event time, subject, source).
//!
//! Items arrive nearly in event-time order, so the buffer is a sorted
//! deque: each batch is sorted on its own and merged into the tail, which
//! touches only the items it overlaps (usually none), and release pops
//! from the front. Each item moves a handful of times, where a binary
//! heap would move it once per level on the way in and on the way out, and
//! nothing already held is sorted again: sorting all that waits at every
//! frontier step costs the whole out-of-orderness window each time.

use std::cmp::Ordering;
use std::collections::VecDeque;

use crate::sample::Sample;

/// What the buffer holds: an event time and a total release order that
/// begins with it.
pub trait Timed {
    /// Event time, in milliseconds.
    fn ts(&self) -> i64;
    /// The release order; event time first.
    fn order(&self, other: &Self) -> Ordering;
}

impl Timed for Sample {
    fn ts(&self) -> i64 {
        self.ts
    }
    fn order(&self, other: &Self) -> Ordering {
        (self.ts, self.device, self.seq).cmp(&(other.ts, other.device, other.seq))
    }
}

/// Items waiting for the watermark, in release order.
#[derive(Debug)]
pub struct ReorderBuffer<T> {
    sorted: VecDeque<T>,
    incoming: Vec<T>,
    merge: Vec<T>,
}

impl<T> Default for ReorderBuffer<T> {
    fn default() -> Self {
        ReorderBuffer {
            sorted: VecDeque::new(),
            incoming: Vec::new(),
            merge: Vec::new(),
        }
    }
}

impl<T: Timed> ReorderBuffer<T> {
    /// Adds an item (kept aside until the next [`ReorderBuffer::release`]).
    pub fn push(&mut self, item: T) {
        self.incoming.push(item);
    }

    /// Items waiting, including those pushed since the last release.
    pub fn len(&self) -> usize {
        self.sorted.len() + self.incoming.len()
    }

    /// Whether no item is waiting.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves every item with event time before `limit` to `out`, in
    /// release order.
    pub fn release(&mut self, limit: i64, out: &mut Vec<T>) {
        self.absorb();
        let n = self.sorted.partition_point(|s| s.ts() < limit);
        out.extend(self.sorted.drain(..n));
    }

    /// Every item waiting, in release order (for a checkpoint).
    pub fn items(&mut self) -> impl Iterator<Item = &T> {
        self.absorb();
        self.sorted.iter()
    }

    /// Merges the items pushed since the last release into the sorted deque.
    fn absorb(&mut self) {
        if self.incoming.is_empty() {
            return;
        }
        // Nearly sorted already: the sort finds the runs.
        self.incoming.sort_by(T::order);
        let first = &self.incoming[0];
        // Only the sorted items after the batch's first need merging.
        let overlap = self.sorted.len()
            - self
                .sorted
                .partition_point(|s| s.order(first) != Ordering::Greater);
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
                (Some(x), Some(y)) => x.order(y) != Ordering::Greater,
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
    use crate::geo::GeoItem;

    fn key(s: &Sample) -> (i64, u32, u64) {
        (s.ts, s.device, s.seq)
    }

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

        /// Geo items leave in the geo operator's order (event time,
        /// subject, source) when they come in batches released at any
        /// limits, as `GeoState::apply` expects them.
        #[test]
        fn geo_items_release_in_apply_order(
            batches in prop::collection::vec(
                prop::collection::vec((0u8..5, 0u8..3, 0i64..100), 0..30), 1..10),
            limits in prop::collection::vec(0i64..110, 10),
        ) {
            let mut buffer = ReorderBuffer::default();
            let mut out: Vec<GeoItem> = Vec::new();
            let mut pushed = 0;
            for (batch, &limit) in batches.iter().zip(&limits) {
                for &(subject, source, ts) in batch {
                    buffer.push(GeoItem::Position {
                        subject: format!("s{subject}").into(),
                        source: format!("d{source}").into(),
                        plate: false,
                        next: false,
                        ts,
                        pos: [104.0, 21.3],
                    });
                    pushed += 1;
                }
                let before = out.len();
                buffer.release(limit, &mut out);
                prop_assert!(out[before..].iter().all(|g| g.ts() < limit));
                prop_assert!(out[before..].is_sorted_by(|a, b| a.cmp_order(b).is_le()));
            }
            buffer.release(i64::MAX, &mut out);
            prop_assert!(buffer.is_empty());
            prop_assert_eq!(out.len(), pushed);
        }
    }
}
