//! Recent history of every device, in memory, for the page's charts
//! (`GET /api/v1/devices/{id}/history`) without a time-series database.
//!
//! Each device keeps a ring of fixed-width buckets (`step`, by event time)
//! holding, per numeric metric it reports, the sum and count of the
//! readings that fell in it. A query re-aggregates buckets into any
//! multiple of `step`: rainfall (an amount per reading) is summed,
//! the others averaged. The whole history is bounded by `max_memory`: the
//! number of buckets a device keeps is the smaller of `window / step` and
//! its share of that budget, worked out once at start.

use std::collections::VecDeque;
use std::time::Duration;

use ioc_schemas::{DeviceState, Field};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `[http.history]`: the in-memory history behind the page's charts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Width of one bucket (the finest step a query can ask for).
    #[serde(with = "humantime_serde")]
    pub step: Duration,
    /// How far back each device's history reaches when it reports every
    /// step (buckets without readings take no room, so a device reporting
    /// less often keeps longer).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Memory for the history of all devices together, in MiB. With many
    /// devices each keeps fewer buckets than `window / step`.
    pub max_memory_mib: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            step: Duration::from_secs(10),
            window: Duration::from_secs(2 * 3600),
            max_memory_mib: 32,
        }
    }
}

impl HistoryConfig {
    /// Every problem with the settings.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.step < Duration::from_secs(1) {
            problems.push("http.history.step: at least 1s".to_owned());
        }
        if self.window < self.step {
            problems.push("http.history.window: at least one step".to_owned());
        }
        problems
    }
}

/// The fields charted, in the order of a view's columns.
const CHARTED: [Field; 8] = [
    Field::WaterLevelM,
    Field::RainfallMm,
    Field::FlowM3s,
    Field::InflowM3s,
    Field::OutflowM3s,
    Field::FlowVph,
    Field::SpeedKmh,
    Field::OccupancyPct,
];

/// Whether a bucket reports the sum of its readings (rainfall since the
/// previous reading adds up) rather than their mean.
fn additive(f: Field) -> bool {
    f == Field::RainfallMm
}

fn bit(f: Field) -> u16 {
    1 << (f as u16)
}

/// One metric's readings in one bucket.
#[derive(Clone, Copy, Debug, Default)]
struct Cell {
    sum: f32,
    count: u16,
}

/// One device's buckets, oldest first: `index[k]` is the bucket number
/// (event time / step) of cells `k * stride .. (k + 1) * stride`.
#[derive(Debug, Default)]
struct Series {
    /// The fields kept, as bits of [`Field`]; `stride` of them.
    mask: u16,
    stride: usize,
    index: VecDeque<u32>,
    cells: VecDeque<Cell>,
}

const BUCKET_OVERHEAD: usize = std::mem::size_of::<u32>();

/// The history of every device of the registry, by device index.
#[derive(Debug)]
pub struct History {
    step_ms: i64,
    /// Buckets kept per device.
    capacity: usize,
    series: Vec<Series>,
}

/// What a query answers: one row per bucket, one column per metric.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct HistoryView {
    /// The device.
    pub device: String,
    /// The width of each row, seconds.
    pub step_s: u64,
    /// The metrics, in the order of `values`.
    pub metrics: Vec<MetricInfo>,
    /// The start of each row's interval, ms since the epoch, oldest first.
    /// Rows without readings are left out.
    pub t: Vec<i64>,
    /// Per metric, per row: the sum (additive metrics) or the mean, or null
    /// when the row has no reading of it.
    pub values: Vec<Vec<Option<f64>>>,
}

/// A metric of a [`HistoryView`].
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct MetricInfo {
    /// The field, named as in the envelope (`flow_vph`: vehicles per hour
    /// over the counting interval).
    pub name: Field,
    /// `sum` or `mean` of the readings in a row.
    pub aggregate: &'static str,
}

impl History {
    /// Empty history for `devices` devices.
    pub fn new(config: &HistoryConfig, devices: usize) -> Self {
        let step_ms = config.step.as_millis().clamp(1000, i64::MAX as u128) as i64;
        let wanted = (config.window.as_millis() / step_ms as u128).max(1) as usize;
        // A typical device keeps three metrics.
        let bucket = BUCKET_OVERHEAD + 3 * std::mem::size_of::<Cell>();
        let budget = config.max_memory_mib.saturating_mul(1 << 20);
        let share = budget / devices.max(1) / bucket;
        History {
            step_ms,
            capacity: wanted.min(share).max(2),
            series: (0..devices).map(|_| Series::default()).collect(),
        }
    }

    /// Room for `devices` devices (devices registered since the start;
    /// each keeps as many buckets as the first ones).
    pub fn grow(&mut self, devices: usize) {
        if devices > self.series.len() {
            self.series.resize_with(devices, Series::default);
        }
    }

    /// Buckets kept per device.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The bucket width.
    pub fn step(&self) -> Duration {
        Duration::from_millis(self.step_ms as u64)
    }

    /// Adds the reading of device `i`. Readings older than the device's
    /// oldest bucket, once the ring is full, are left out.
    pub fn record(&mut self, i: usize, state: &DeviceState) {
        let Some(s) = self.series.get_mut(i) else {
            return;
        };
        // Each field read once (on every reading the hub applies).
        let values = CHARTED.map(|f| state.reading.field(f).filter(|v| v.is_finite()));
        let mask = CHARTED
            .into_iter()
            .zip(&values)
            .filter(|(_, v)| v.is_some())
            .fold(0, |m, (f, _)| m | bit(f));
        if mask == 0 {
            return;
        }
        let Ok(bucket) = u32::try_from(state.ts.millis().div_euclid(self.step_ms)) else {
            return;
        };
        // A metric not seen before: start again with it (rare: a device's
        // readings keep their shape).
        if mask & !s.mask != 0 {
            let stride = (s.mask | mask).count_ones() as usize;
            // The whole ring at once: growing by doubling would overshoot
            // the budget by up to a half.
            *s = Series {
                mask: s.mask | mask,
                stride,
                index: VecDeque::with_capacity(self.capacity + 1),
                cells: VecDeque::with_capacity((self.capacity + 1) * stride),
            };
        }
        let k = match s.index.back() {
            Some(&last) if last == bucket => s.index.len() - 1,
            Some(&last) if last > bucket => match s.index.binary_search(&bucket) {
                Ok(k) => k,
                Err(0) if s.index.len() >= self.capacity => return,
                Err(k) => {
                    s.index.insert(k, bucket);
                    for j in 0..s.stride {
                        s.cells.insert(k * s.stride + j, Cell::default());
                    }
                    k
                }
            },
            _ => {
                s.index.push_back(bucket);
                s.cells
                    .extend(std::iter::repeat_n(Cell::default(), s.stride));
                s.index.len() - 1
            }
        };
        let kept = CHARTED
            .into_iter()
            .zip(values)
            .filter(|&(f, _)| s.mask & bit(f) != 0);
        for (j, (_, v)) in kept.enumerate() {
            if let Some(v) = v {
                let cell = &mut s.cells[k * s.stride + j];
                cell.sum += v as f32;
                cell.count = cell.count.saturating_add(1);
            }
        }
        while s.index.len() > self.capacity {
            s.index.pop_front();
            s.cells.drain(..s.stride);
        }
    }

    /// Device `i`'s history from `from` to `to` (ms since the epoch, `to`
    /// excluded) in rows of `step` (rounded up to a multiple of the
    /// bucket width).
    pub fn query(&self, i: usize, device: &str, from: i64, to: i64, step: Duration) -> HistoryView {
        // Any step a caller asks for, however large, stays in range: a row
        // longer than a year holds everything anyway.
        let asked = step.as_millis().min(366 * 86_400_000) as i64;
        let per_row = (asked + self.step_ms - 1) / self.step_ms;
        let row_ms = per_row.max(1) * self.step_ms;
        let empty = Series::default();
        let s = self.series.get(i).unwrap_or(&empty);
        let kept: Vec<Field> = CHARTED
            .into_iter()
            .filter(|&f| s.mask & bit(f) != 0)
            .collect();
        let mut view = HistoryView {
            device: device.to_owned(),
            step_s: (row_ms / 1000) as u64,
            metrics: kept
                .iter()
                .map(|&name| MetricInfo {
                    name,
                    aggregate: if additive(name) { "sum" } else { "mean" },
                })
                .collect(),
            t: Vec::new(),
            values: vec![Vec::new(); kept.len()],
        };
        // Sums and counts of the row being filled.
        let mut row: Option<(i64, Vec<Cell>)> = None;
        let flush = |view: &mut HistoryView, (t, cells): (i64, Vec<Cell>)| {
            view.t.push(t);
            for (j, (c, m)) in cells.iter().zip(&kept).enumerate() {
                view.values[j].push((c.count > 0).then(|| {
                    let v = if additive(*m) {
                        f64::from(c.sum)
                    } else {
                        f64::from(c.sum) / f64::from(c.count)
                    };
                    // f32 sums: keep what the readings' precision says.
                    (v * 1000.0).round() / 1000.0
                }));
            }
        };
        for (k, &b) in s.index.iter().enumerate() {
            let start = i64::from(b) * self.step_ms;
            if start + self.step_ms <= from || start >= to {
                continue;
            }
            let row_start = start.div_euclid(row_ms) * row_ms;
            if row.as_ref().is_some_and(|(t, _)| *t != row_start) {
                flush(&mut view, row.take().expect("checked"));
            }
            let (_, cells) =
                row.get_or_insert_with(|| (row_start, vec![Cell::default(); s.stride]));
            for (acc, c) in cells
                .iter_mut()
                .zip(s.cells.range(k * s.stride..(k + 1) * s.stride))
            {
                acc.sum += c.sum;
                acc.count = acc.count.saturating_add(c.count);
            }
        }
        if let Some(r) = row {
            flush(&mut view, r);
        }
        view
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ioc_schemas::{Body, Hydrology, Timestamp};

    use super::*;

    fn level(ts_s: i64, level: f64, rain: Option<f64>) -> DeviceState {
        DeviceState {
            device: Arc::from("g"),
            ts: Timestamp(ts_s * 1000),
            seq: 0,
            pos: [104.0, 21.0],
            reading: Body::Hydrology(Hydrology {
                water_level_m: Some(level),
                rainfall_mm: rain,
                ..Hydrology::default()
            }),
            alarm_level: None,
        }
    }

    fn config(window_s: u64) -> HistoryConfig {
        HistoryConfig {
            step: Duration::from_secs(60),
            window: Duration::from_secs(window_s),
            max_memory_mib: 64,
        }
    }

    #[test]
    fn buckets_average_levels_and_sum_rain() {
        let mut h = History::new(&config(3600), 1);
        h.record(0, &level(0, 1.0, Some(2.0)));
        h.record(0, &level(30, 2.0, Some(3.0)));
        h.record(0, &level(60, 4.0, None));
        let v = h.query(0, "g", 0, 3_600_000, Duration::from_secs(60));
        assert_eq!(v.t, vec![0, 60_000]);
        assert_eq!(v.metrics[0].name, Field::WaterLevelM);
        assert_eq!(v.values[0], vec![Some(1.5), Some(4.0)]);
        assert_eq!(v.values[1], vec![Some(5.0), None]);
        // Coarser rows re-aggregate the buckets.
        let v = h.query(0, "g", 0, 3_600_000, Duration::from_secs(120));
        assert_eq!(v.step_s, 120);
        assert_eq!(
            v.values[0],
            vec![Some(7.0 / 3.0).map(|x: f64| (x * 1000.0).round() / 1000.0)]
        );
    }

    #[test]
    fn the_ring_is_bounded_and_late_readings_find_their_bucket() {
        let mut h = History::new(&config(600), 1);
        assert_eq!(h.capacity(), 10);
        for m in 0..30 {
            h.record(0, &level(m * 60, m as f64, None));
        }
        // Late, inside the ring: joins its bucket.
        h.record(0, &level(25 * 60 + 10, 27.0, None));
        // Late, before the ring: left out.
        h.record(0, &level(60, 99.0, None));
        let v = h.query(0, "g", 0, i64::MAX, Duration::from_secs(60));
        assert_eq!(v.t.len(), 10);
        assert_eq!(v.t[0], 20 * 60_000);
        assert_eq!(v.values[0][5], Some(26.0));
        // A gap in the readings: buckets are sparse, and a late reading
        // inside the ring fills the gap.
        h.record(0, &level(40 * 60, 1.0, None));
        h.record(0, &level(35 * 60, 2.0, None));
        let v = h.query(0, "g", 0, i64::MAX, Duration::from_secs(60));
        assert_eq!(v.t.len(), 10);
        assert_eq!(v.t[8..], [35 * 60_000, 40 * 60_000]);
    }

    #[test]
    fn any_step_or_range_is_answered() {
        let mut h = History::new(&config(600), 1);
        h.record(0, &level(60, 1.0, None));
        let huge = Duration::from_secs(u64::MAX);
        let v = h.query(0, "g", i64::MIN, i64::MAX, huge);
        assert_eq!(v.values[0], vec![Some(1.0)]);
        assert!(h.query(0, "g", 0, 1, Duration::ZERO).t.is_empty());
    }

    #[test]
    fn memory_bounds_the_ring_with_many_devices() {
        let c = HistoryConfig {
            max_memory_mib: 1,
            ..config(24 * 3600)
        };
        let h = History::new(&c, 10_000);
        assert!(h.capacity() * 10_000 * (BUCKET_OVERHEAD + 3 * 8) <= 1 << 20);
        assert!(h.capacity() >= 2);
    }
}
