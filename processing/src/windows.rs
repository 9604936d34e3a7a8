//! Windows over event time, per device.
//!
//! - [`RainWindows`]: rolling rainfall totals over 1 h, 3 h, 6 h and 24 h,
//!   kept as a ring of buckets (`rain_bucket`, default 5 min). Gauges report
//!   increments since their previous reading, so a lost reading is lost
//!   rain: a gap in sequence numbers marks the buckets it spans, and a total
//!   over a window with a marked bucket, starting before the gauge's first
//!   reading, or ending after a silence of more than two expected
//!   intervals, is reported as incomplete (a lower bound).
//! - [`TrafficWindows`]: 5-minute tumbling windows per counter: flow by
//!   class (vehicles/h), mean speed weighted by vehicles, mean occupancy.
//! - [`CameraCounts`]: camera events by type over the last 5 and 60 minutes.
//!
//! A window is emitted when the watermark passes its end. A reading that
//! arrives later but inside the retained range amends it, and the window is
//! emitted again marked as a revision. Sums do not depend on arrival order.

use std::collections::BTreeMap;
use std::sync::Arc;

use ioc_schemas::{CameraEvent, FlowByClass, Timestamp, WindowResult, WindowValue};

/// Rolling rainfall windows, ms.
pub const RAIN_WINDOWS_MS: [i64; 4] = [3_600_000, 3 * 3_600_000, 6 * 3_600_000, 24 * 3_600_000];
/// Length of traffic windows and camera buckets, ms.
pub const TRAFFIC_WINDOW_MS: i64 = 5 * 60_000;
/// Traffic windows kept for late amendments (one hour).
const TRAFFIC_KEPT: usize = 13;
/// Camera buckets: twelve 5-minute buckets make the hour.
const CAMERA_BUCKETS: usize = 12;

fn result(
    device: &Arc<str>,
    start: i64,
    end: i64,
    revision: bool,
    value: WindowValue,
) -> WindowResult {
    WindowResult {
        device: device.clone(),
        start: Timestamp(start),
        end: Timestamp(end),
        revision,
        value,
    }
}

/// Rolling rainfall totals of one gauge.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RainWindows {
    bucket_ms: i64,
    /// Per bucket: rain in hundredths of a millimetre in the low 15 bits
    /// (saturating at 327.67 mm, far beyond any rain ever measured in a few
    /// minutes) and the gap mark in the top bit. 576 bytes for a day of
    /// 5-minute buckets.
    mm: Box<[u16]>,
    /// Absolute number of the newest bucket.
    newest: i64,
    /// Event time of the oldest reading (`i64::MAX` before the first).
    first_ms: i64,
    /// Event time and sequence number of the newest reading.
    prev_ts: i64,
    prev_seq: u64,
    emitted_end: i64,
    /// Per window, the last emitted total in tenths of a millimetre times
    /// two plus its completeness; `u32::MAX` before the first.
    emitted: [u32; 4],
    revised: bool,
    /// Running totals of readings whose bucket follows a boundary not yet
    /// closed: `(reading's event time, the four totals as of it)`, judged
    /// after that close (see [`RainWindows::running`]).
    deferred: Vec<(i64, [f64; 4])>,
    /// The running sums (hundredths of a millimetre) of the four windows
    /// that close at the end of bucket `.0`, kept while readings land in
    /// that bucket so each costs an addition, not a walk over a day of
    /// buckets.
    running: Option<(i64, [u64; 4])>,
}

/// The gap mark of a rain bucket.
const GAP: u16 = 0x8000;
/// Most rain a bucket holds, hundredths of a millimetre.
const BUCKET_MAX: u16 = 0x7fff;

impl RainWindows {
    /// Empty windows with this bucket length (which divides one hour).
    pub fn new(bucket_ms: i64) -> Self {
        let n = (RAIN_WINDOWS_MS[3] / bucket_ms) as usize;
        RainWindows {
            bucket_ms,
            mm: vec![0; n].into_boxed_slice(),
            newest: i64::MIN,
            first_ms: i64::MAX,
            prev_ts: i64::MIN,
            prev_seq: 0,
            emitted_end: i64::MIN,
            emitted: [u32::MAX; 4],
            revised: false,
            deferred: Vec::new(),
            running: None,
        }
    }

    fn slot(&self, bucket: i64) -> usize {
        bucket.rem_euclid(self.mm.len() as i64) as usize
    }

    fn set_gap(&mut self, bucket: i64) {
        let s = self.slot(bucket);
        self.mm[s] |= GAP;
    }

    /// Whether a reading has been heard.
    fn heard(&self) -> bool {
        self.first_ms != i64::MAX
    }

    /// Adds a reading's increment. Returns false when it is older than
    /// the 24 h the ring holds.
    pub fn add(&mut self, ts: i64, seq: u64, mm: f64) -> bool {
        let n = self.mm.len() as i64;
        let b = ts.div_euclid(self.bucket_ms);
        if self.newest != i64::MIN && b <= self.newest - n {
            return false;
        }
        if self.newest == i64::MIN || b > self.newest {
            let from = if self.newest == i64::MIN {
                b - n + 1
            } else {
                (self.newest + 1).max(b - n + 1)
            };
            for k in from..=b {
                let s = self.slot(k);
                self.mm[s] = 0;
            }
            self.newest = b;
        }
        let s = self.slot(b);
        // `as` saturates (and maps NaN, which validation rejects, to 0).
        let add = (mm * 100.0).round() as u16;
        let before = self.mm[s] & BUCKET_MAX;
        let rain = before.saturating_add(add).min(BUCKET_MAX);
        self.mm[s] = rain | (self.mm[s] & GAP);
        self.running = match self.running {
            Some((bucket, sums)) if bucket == b => {
                Some((bucket, sums.map(|sum| sum + u64::from(rain - before))))
            }
            _ => None,
        };
        let heard = self.heard();
        self.first_ms = self.first_ms.min(ts);
        if !heard {
            (self.prev_ts, self.prev_seq) = (ts, seq);
        } else if ts > self.prev_ts {
            if seq != self.prev_seq.wrapping_add(1) {
                for k in self.prev_ts.div_euclid(self.bucket_ms).max(b - n + 1)..=b {
                    self.set_gap(k);
                }
            }
            (self.prev_ts, self.prev_seq) = (ts, seq);
        } else if ts < self.emitted_end {
            // Late: amends its bucket; an emitted window is revised.
            self.revised = true;
        }
        true
    }

    /// The totals of the four windows ending at `end` (exclusive, a bucket
    /// boundary): `(mm to a tenth, complete)`.
    pub fn totals(&self, end: i64, expected_interval_ms: i64) -> [(f64, bool); 4] {
        let end_b = end.div_euclid(self.bucket_ms);
        let recent =
            self.heard() && self.prev_ts >= end - 2 * expected_interval_ms.max(self.bucket_ms);
        let mut out = [(0.0, false); 4];
        let (mut sum, mut gap) = (0u64, false);
        let mut k = end_b - 1;
        for (w, window) in RAIN_WINDOWS_MS.iter().enumerate() {
            let start_b = end_b - window / self.bucket_ms;
            while k >= start_b {
                if k <= self.newest && k > self.newest - self.mm.len() as i64 {
                    let bucket = self.mm[self.slot(k)];
                    sum += u64::from(bucket & BUCKET_MAX);
                    gap |= bucket & GAP != 0;
                } else if k > self.newest {
                    // No reading yet for this bucket: nothing fell, as far as we know.
                } else {
                    gap = true;
                }
                k -= 1;
            }
            let complete = !gap && recent && self.first_ms <= start_b * self.bucket_ms;
            // Tenths of a millimetre, as gauges report.
            out[w] = ((sum as f64 / 10.0).round() / 10.0, complete);
        }
        out
    }

    /// Emits the windows ending at each bucket boundary passed since the
    /// last call, up to `frontier` (or a revision of the last emitted ones),
    /// but only windows whose total or completeness changed. Returns
    /// `(end, window, total, complete, revision)` for the rules.
    pub fn emit(
        &mut self,
        device: &Arc<str>,
        frontier: i64,
        expected_interval_ms: i64,
        out: &mut Vec<WindowResult>,
    ) -> Vec<(i64, i64, f64, bool, bool)> {
        let last = frontier.div_euclid(self.bucket_ms) * self.bucket_ms;
        let revised = std::mem::take(&mut self.revised);
        if !self.heard() || (last <= self.emitted_end && !revised) {
            return Vec::new();
        }
        let ends: Vec<(i64, bool)> = if last <= self.emitted_end {
            vec![(self.emitted_end, true)]
        } else {
            // Every boundary passed, oldest first (at most a day's worth).
            let span = RAIN_WINDOWS_MS[3];
            let since_first = (self.first_ms.div_euclid(self.bucket_ms) + 1) * self.bucket_ms;
            let first = (self.emitted_end + self.bucket_ms)
                .max(last - span + self.bucket_ms)
                .max(since_first);
            (0..)
                .map(|k| first + k * self.bucket_ms)
                .take_while(|&e| e <= last)
                .map(|e| (e, false))
                .collect()
        };
        let mut changed = Vec::new();
        for (end, revision) in ends {
            let totals = self.totals(end, expected_interval_ms);
            self.emitted_end = self.emitted_end.max(end);
            for (w, &(mm, complete)) in totals.iter().enumerate() {
                let key = ((mm * 10.0).round() as u32) << 1 | u32::from(complete);
                if self.emitted[w] == key {
                    continue;
                }
                self.emitted[w] = key;
                let window = RAIN_WINDOWS_MS[w];
                out.push(result(
                    device,
                    end - window,
                    end,
                    revision,
                    WindowValue::Rainfall {
                        total_mm: mm,
                        complete,
                    },
                ));
                changed.push((end, window, mm, complete, revision));
            }
        }
        changed
    }

    /// Bytes this gauge's windows take.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + std::mem::size_of_val(&*self.mm)
            + self.deferred.capacity() * std::mem::size_of::<(i64, [f64; 4])>()
    }

    /// The four totals of the windows that close at the end of the bucket
    /// of `ts`, as the readings so far make them: lower bounds of what
    /// they close at (a total only grows within its bucket), so a level
    /// they reach is reached at `ts`. Returns them, and whether they can be
    /// judged now, after every earlier close; if not they are also kept for
    /// [`RainWindows::judgeable`] (the boundary before `ts` has not been
    /// closed yet: judging first would put a reading before the close
    /// that precedes it in event time).
    pub fn running(&mut self, ts: i64) -> ([f64; 4], bool) {
        let bucket = ts.div_euclid(self.bucket_ms);
        let start = bucket * self.bucket_ms;
        let sums = match self.running {
            Some((b, sums)) if b == bucket => sums,
            _ => {
                let sums = self.sums(start + self.bucket_ms);
                self.running = Some((bucket, sums));
                sums
            }
        };
        // Tenths of a millimetre, as `totals` rounds them.
        let totals = sums.map(|sum| (sum as f64 / 10.0).round() / 10.0);
        if self.deferred.is_empty() && !self.close_pending(start) {
            return (totals, true);
        }
        self.deferred.push((ts, totals));
        (totals, false)
    }

    /// The sums of the four windows ending at `end`, hundredths of a
    /// millimetre (what `totals` adds up, without the completeness).
    fn sums(&self, end: i64) -> [u64; 4] {
        let end_b = end.div_euclid(self.bucket_ms);
        let mut out = [0; 4];
        let mut sum = 0u64;
        let mut k = end_b - 1;
        for (w, window) in RAIN_WINDOWS_MS.iter().enumerate() {
            let start_b = end_b - window / self.bucket_ms;
            while k >= start_b {
                if k <= self.newest && k > self.newest - self.mm.len() as i64 {
                    sum += u64::from(self.mm[self.slot(k)] & BUCKET_MAX);
                }
                k -= 1;
            }
            out[w] = sum;
        }
        out
    }

    /// Whether a window closing at or before `boundary` is still to be
    /// emitted.
    fn close_pending(&self, boundary: i64) -> bool {
        let first_close = (self.first_ms.div_euclid(self.bucket_ms) + 1) * self.bucket_ms;
        self.emitted_end.max(first_close - self.bucket_ms) < boundary
    }

    /// Deferred running totals whose preceding closes have been emitted,
    /// oldest first.
    pub fn judgeable(&mut self) -> Vec<(i64, [f64; 4])> {
        let ready = self.deferred.partition_point(|&(ts, _)| {
            !self.close_pending(ts.div_euclid(self.bucket_ms) * self.bucket_ms)
        });
        self.deferred.drain(..ready).collect()
    }
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
struct TrafficAcc {
    /// Window number (start / window length).
    window: i32,
    counts: [u32; 4],
    interval_s: u32,
    /// Vehicles with a speed, and the sum of their speeds in tenths of
    /// km/h (room for 2 million vehicles at 200 km/h in five minutes).
    speed_vehicles: u32,
    speed_tenths: u32,
    /// Seconds with an occupancy, and the sum of occupancy in tenths of a
    /// percent times seconds. Integer sums do not depend on arrival order.
    occ_s: u32,
    occ_tenths_s: u32,
}

/// 5-minute traffic windows of one counter.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct TrafficWindows {
    ring: Vec<TrafficAcc>,
    emitted_upto: i64,
    revised: Vec<i64>,
}

impl TrafficWindows {
    /// Adds a counter reading (its interval ends at `ts`).
    pub fn add(
        &mut self,
        ts: i64,
        counts: [u32; 4],
        interval_s: u32,
        speed: Option<f64>,
        occupancy: Option<f64>,
    ) -> bool {
        let w = ts.div_euclid(TRAFFIC_WINDOW_MS);
        // Window numbers fit an i32 for 20 000 years of epoch milliseconds.
        let n = w as i32;
        let acc = match self.ring.iter_mut().position(|a| a.window == n) {
            Some(i) => &mut self.ring[i],
            None => {
                let newest = self.ring.iter().map(|a| a.window).max().unwrap_or(n);
                if n <= newest - TRAFFIC_KEPT as i32 {
                    return false;
                }
                self.ring
                    .retain(|a| a.window > n.max(newest) - TRAFFIC_KEPT as i32);
                if self.ring.capacity() == 0 {
                    self.ring.reserve_exact(TRAFFIC_KEPT);
                }
                self.ring.push(TrafficAcc {
                    window: n,
                    ..TrafficAcc::default()
                });
                self.ring.last_mut().expect("just pushed")
            }
        };
        let vehicles: u32 = counts.iter().fold(0, |v, &c| v.saturating_add(c));
        for (a, c) in acc.counts.iter_mut().zip(counts) {
            *a = a.saturating_add(c);
        }
        acc.interval_s = acc.interval_s.saturating_add(interval_s);
        if let Some(s) = speed {
            add_weighted(&mut acc.speed_tenths, &mut acc.speed_vehicles, s, vehicles);
        }
        if let Some(o) = occupancy {
            add_weighted(&mut acc.occ_tenths_s, &mut acc.occ_s, o, interval_s);
        }
        if (w + 1) * TRAFFIC_WINDOW_MS <= self.emitted_upto && !self.revised.contains(&w) {
            self.revised.push(w);
        }
        true
    }

    /// Bytes this counter's windows take.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.ring.capacity() * std::mem::size_of::<TrafficAcc>()
            + self.revised.capacity() * std::mem::size_of::<i64>()
    }

    /// Emits windows that ended at or before `frontier`, and revisions;
    /// the means of the newly closed ones (not the revisions) go to
    /// `closed` as well, for the rules.
    pub fn emit(
        &mut self,
        device: &Arc<str>,
        frontier: i64,
        out: &mut Vec<WindowResult>,
        closed: &mut Vec<crate::rules::kind::TrafficMean>,
    ) {
        let mut due: Vec<(i64, bool)> = self
            .ring
            .iter()
            .map(|a| i64::from(a.window))
            .filter(|&w| {
                let end = (w + 1) * TRAFFIC_WINDOW_MS;
                end <= frontier && end > self.emitted_upto
            })
            .map(|w| (w, false))
            .collect();
        due.extend(self.revised.drain(..).map(|w| (w, true)));
        due.sort_unstable();
        for (w, revision) in due {
            let Some(a) = self.ring.iter().find(|a| i64::from(a.window) == w) else {
                continue;
            };
            let per_h = |c: u32| f64::from(c) * 3600.0 / f64::from(a.interval_s.max(1));
            let vehicles = a.counts.iter().map(|&c| u64::from(c)).sum();
            let mean_speed_kmh = (a.speed_vehicles > 0)
                .then(|| round1(f64::from(a.speed_tenths) / 10.0 / f64::from(a.speed_vehicles)));
            let occupancy_pct = (a.occ_s > 0)
                .then(|| round1(f64::from(a.occ_tenths_s) / 10.0 / f64::from(a.occ_s)));
            if !revision {
                closed.push(((w + 1) * TRAFFIC_WINDOW_MS, mean_speed_kmh, occupancy_pct));
            }
            out.push(result(
                device,
                w * TRAFFIC_WINDOW_MS,
                (w + 1) * TRAFFIC_WINDOW_MS,
                revision,
                WindowValue::Traffic {
                    flow_vph: FlowByClass {
                        motorbike: round1(per_h(a.counts[0])),
                        car: round1(per_h(a.counts[1])),
                        truck: round1(per_h(a.counts[2])),
                        bus: round1(per_h(a.counts[3])),
                    },
                    mean_speed_kmh,
                    occupancy_pct,
                    vehicles,
                },
            ));
        }
        let end = frontier.div_euclid(TRAFFIC_WINDOW_MS) * TRAFFIC_WINDOW_MS;
        self.emitted_upto = self.emitted_upto.max(end);
    }
}

/// Adds `value` in tenths, weighted by `weight`, to `sum`, and the weight to
/// `weights` (saturating; `as` maps negative and NaN values, which
/// validation rejects, to 0).
fn add_weighted(sum: &mut u32, weights: &mut u32, value: f64, weight: u32) {
    let tenths = (value * 10.0).round() as u32;
    *sum = sum.saturating_add(tenths.saturating_mul(weight));
    *weights = weights.saturating_add(weight);
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Camera events by type over 5-minute buckets, for the last hour.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CameraCounts {
    buckets: [[u16; 8]; CAMERA_BUCKETS],
    newest: i64,
    first_ms: Option<i64>,
    emitted_end: i64,
    emitted: [[u32; 8]; 2],
    revised: bool,
}

impl CameraCounts {
    /// Bytes this camera's counts take.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
    }

    /// Counts one event.
    pub fn add(&mut self, ts: i64, event: CameraEvent) -> bool {
        let b = ts.div_euclid(TRAFFIC_WINDOW_MS);
        let n = CAMERA_BUCKETS as i64;
        if self.newest != 0 && b <= self.newest - n {
            return false;
        }
        if self.newest == 0 || b > self.newest {
            let from = if self.newest == 0 {
                b - n + 1
            } else {
                (self.newest + 1).max(b - n + 1)
            };
            for k in from..=b {
                self.buckets[k.rem_euclid(n) as usize] = [0; 8];
            }
            self.newest = b;
        }
        self.first_ms = Some(self.first_ms.map_or(ts, |f| f.min(ts)));
        let e = event as usize;
        let slot = &mut self.buckets[b.rem_euclid(n) as usize][e];
        *slot = slot.saturating_add(1);
        if ts < self.emitted_end {
            self.revised = true;
        }
        true
    }

    fn sum(&self, end_b: i64, buckets: i64) -> [u32; 8] {
        let mut out = [0u32; 8];
        for k in end_b - buckets..end_b {
            if k <= self.newest && k > self.newest - CAMERA_BUCKETS as i64 {
                for (o, &c) in out
                    .iter_mut()
                    .zip(&self.buckets[k.rem_euclid(CAMERA_BUCKETS as i64) as usize])
                {
                    *o += u32::from(c);
                }
            }
        }
        out
    }

    /// Emits the 5- and 60-minute counts ending at each boundary passed
    /// up to `frontier` when they changed, or a revision.
    pub fn emit(&mut self, device: &Arc<str>, frontier: i64, out: &mut Vec<WindowResult>) {
        if self.newest == 0 {
            return;
        }
        let last = frontier.div_euclid(TRAFFIC_WINDOW_MS) * TRAFFIC_WINDOW_MS;
        let revised = std::mem::take(&mut self.revised);
        if last <= self.emitted_end {
            if revised {
                self.emit_at(device, self.emitted_end, true, out);
            }
            return;
        }
        let since_first = self.first_ms.map_or(last, |f| {
            (f.div_euclid(TRAFFIC_WINDOW_MS) + 1) * TRAFFIC_WINDOW_MS
        });
        let first = (self.emitted_end + TRAFFIC_WINDOW_MS)
            .max(last - CAMERA_BUCKETS as i64 * TRAFFIC_WINDOW_MS)
            .max(since_first);
        let mut end = first;
        while end <= last {
            self.emit_at(device, end, false, out);
            end += TRAFFIC_WINDOW_MS;
        }
    }

    fn emit_at(
        &mut self,
        device: &Arc<str>,
        end: i64,
        revision: bool,
        out: &mut Vec<WindowResult>,
    ) {
        self.emitted_end = self.emitted_end.max(end);
        let end_b = end / TRAFFIC_WINDOW_MS;
        for (i, buckets) in [1i64, CAMERA_BUCKETS as i64].into_iter().enumerate() {
            let counts = self.sum(end_b, buckets);
            if counts == self.emitted[i] {
                continue;
            }
            self.emitted[i] = counts;
            let map: BTreeMap<CameraEvent, u32> = CameraEvent::ALL
                .iter()
                .zip(counts)
                .filter(|(_, c)| *c > 0)
                .map(|(&e, c)| (e, c))
                .collect();
            out.push(result(
                device,
                end - buckets * TRAFFIC_WINDOW_MS,
                end,
                revision,
                WindowValue::CameraEvents { counts: map },
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const H: i64 = 3_600_000;
    const T0: i64 = 1_767_225_600_000; // a bucket boundary

    #[test]
    fn rolling_totals_and_completeness() {
        let mut r = RainWindows::new(300_000);
        // Every 10 minutes for 7 hours, 1 mm each.
        for k in 0..=42 {
            r.add(T0 + k * 600_000, k as u64 + 1, 1.0);
        }
        let end = T0 + 7 * H;
        let t = r.totals(end, 600_000);
        // The last hour holds the readings at 6:00 .. 6:50 (the end is exclusive).
        assert_eq!(t[0], (6.0, true));
        assert_eq!(t[1], (18.0, true));
        assert_eq!(t[2], (36.0, true));
        // 24 h starts before the first reading: incomplete, a lower bound.
        assert_eq!(t[3], (42.0, false));
    }

    #[test]
    fn a_sequence_gap_makes_windows_incomplete() {
        let mut r = RainWindows::new(300_000);
        r.add(T0, 1, 1.0);
        r.add(T0 + 600_000, 2, 1.0);
        r.add(T0 + 1_800_000, 5, 1.0); // readings 3 and 4 lost
        r.add(T0 + 2_400_000, 6, 1.0);
        let t = r.totals(T0 + 2_700_000, 600_000);
        assert!(!t[0].1);
        // A silent gauge makes the latest windows incomplete too.
        let mut q = RainWindows::new(300_000);
        q.add(T0 - 2 * H, 1, 0.0);
        q.add(T0, 2, 1.0);
        assert!(q.totals(T0 + 300_000, 600_000)[0].1);
        assert!(!q.totals(T0 + H, 600_000)[0].1);
    }

    #[test]
    fn a_late_reading_revises_an_emitted_window() {
        let mut r = RainWindows::new(300_000);
        let mut out = Vec::new();
        r.add(T0, 1, 2.0);
        r.add(T0 + 400_000, 3, 1.0);
        // Two boundaries passed (T0 + 5 min and + 10 min), four windows each.
        assert_eq!(
            r.emit(&"g".into(), T0 + 600_000, 600_000, &mut out).len(),
            8
        );
        assert!(
            r.emit(&"g".into(), T0 + 610_000, 600_000, &mut out)
                .is_empty()
        );
        r.add(T0 + 200_000, 2, 4.0);
        let revised = r.emit(&"g".into(), T0 + 620_000, 600_000, &mut out);
        assert_eq!(revised[0], (T0 + 600_000, H, 7.0, false, true));
        assert!(out.last().unwrap().revision);
    }

    #[test]
    fn traffic_windows_close_and_revise() {
        let mut t = TrafficWindows::default();
        let mut out = Vec::new();
        t.add(T0 + 60_000, [60, 20, 10, 2], 60, Some(40.0), Some(10.0));
        t.add(T0 + 120_000, [40, 10, 0, 0], 60, Some(20.0), Some(30.0));
        t.emit(&"c".into(), T0 + 200_000, &mut out, &mut Vec::new());
        assert!(out.is_empty(), "not closed yet");
        t.emit(&"c".into(), T0 + 300_000, &mut out, &mut Vec::new());
        let WindowValue::Traffic {
            flow_vph,
            mean_speed_kmh,
            occupancy_pct,
            vehicles,
        } = &out[0].value
        else {
            panic!("{out:?}")
        };
        assert_eq!(*vehicles, 142);
        assert_eq!(flow_vph.motorbike, 3000.0);
        assert_eq!(
            *mean_speed_kmh,
            Some(round1((40.0 * 92.0 + 20.0 * 50.0) / 142.0))
        );
        assert_eq!(*occupancy_pct, Some(20.0));
        t.add(T0 + 180_000, [1, 0, 0, 0], 60, None, None);
        t.emit(&"c".into(), T0 + 310_000, &mut out, &mut Vec::new());
        assert!(out[1].revision);
    }

    #[test]
    fn camera_counts_over_five_and_sixty_minutes() {
        let mut c = CameraCounts::default();
        let mut out = Vec::new();
        c.add(T0 + 1000, CameraEvent::PlateRead);
        c.add(T0 + 2000, CameraEvent::PlateRead);
        c.add(T0 + 400_000, CameraEvent::FireSmoke);
        c.emit(&"cam".into(), T0 + 600_000, &mut out);
        // Boundaries T0 + 5 min and + 10 min, 5- and 60-minute counts each.
        assert_eq!(out.len(), 4);
        let WindowValue::CameraEvents { counts } = &out[3].value else {
            panic!()
        };
        assert_eq!(counts.get(&CameraEvent::PlateRead), Some(&2));
        assert_eq!(out[1].window_s(), 3600);
    }

    proptest! {
        /// The running totals a reading is judged by (kept up by addition
        /// while readings land in one bucket) are the totals of the windows
        /// closing at its bucket's end, counted afresh, whatever came
        /// before: readings in order, late ones, a bucket filled past its
        /// limit.
        #[test]
        fn running_totals_are_the_totals_at_the_bucket_end(steps in prop::collection::vec((-40i64..120, 0.0f64..200.0), 1..80)) {
            let mut w = RainWindows::new(300_000);
            let mut t = T0;
            for (k, &(dt, mm)) in steps.iter().enumerate() {
                t += dt * 10_000;
                let mm = (mm * 10.0).round() / 10.0;
                w.add(t, k as u64 + 1, mm);
                let end = (t.div_euclid(300_000) + 1) * 300_000;
                let fresh = w.totals(end, 0).map(|(total, _)| total);
                // Judged now or deferred, the figures are the same.
                let (got, now) = w.running(t);
                if !now {
                    prop_assert_eq!(w.deferred.last().map(|d| d.1), Some(got));
                }
                prop_assert_eq!(got, fresh, "step {}", k);
            }
        }

        /// Totals do not depend on the order readings arrive in (beyond
        /// completeness, which a late reading never improves).
        #[test]
        fn rain_totals_are_order_independent(incs in prop::collection::vec(0.0f64..20.0, 1..60), seed in any::<u64>()) {
            let readings: Vec<(i64, u64, f64)> = incs.iter().enumerate().map(|(k, &mm)| (T0 + k as i64 * 420_000, k as u64 + 1, (mm * 10.0).round() / 10.0)).collect();
            let mut sorted = RainWindows::new(300_000);
            for &(t, s, mm) in &readings { sorted.add(t, s, mm); }
            let mut shuffled = readings.clone();
            let n = shuffled.len();
            for i in 0..n { shuffled.swap(i, (seed as usize).wrapping_add(i * 13) % n); }
            let mut any = RainWindows::new(300_000);
            for &(t, s, mm) in &shuffled { any.add(t, s, mm); }
            let end = (T0 + n as i64 * 420_000).div_euclid(300_000) * 300_000 + 300_000;
            let (a, b) = (sorted.totals(end, 420_000), any.totals(end, 420_000));
            for w in 0..4 {
                prop_assert!((a[w].0 - b[w].0).abs() < 0.11, "{:?} vs {:?}", a, b);
            }
        }
    }
}
