//! Geo enrichment: which zones contain a point, on one core.
//!
//! ```sh
//! cargo bench --bench geo -- [POINTS]
//! ```
//!
//! Two synthetic zone sets over the province's bounding box: 1 000 zones
//! and 10 000 zones, each a star-shaped polygon of 32–64 vertices (about
//! 3 km and 1.2 km across, so zones overlap and most points hit some).
//! For each, `POINTS` random points (default 2 000 000) are looked up on
//! one thread: points per second per core, and the latency of single
//! lookups timed one by one (p50, p99, max over 200 000 of them). Also:
//! the 3 nearest of 2 asset kinds among 2 000 assets. Writes
//! `target/bench/geo.json` (or `$IOC_BENCH_OUT`).

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use ioc_devices::Zones;
use ioc_devices::noise::unit;
use ioc_devices::zones::synthetic;
use ioc_schemas::{AssetKind, Timestamp};
use serde_json::{Value, json};

const BBOX: [f64; 4] = [103.2, 20.6, 105.0, 22.0];

fn points(n: usize, seed: u64) -> Vec<[f64; 2]> {
    (0..n as u64)
        .map(|k| {
            [
                BBOX[0] + (BBOX[2] - BBOX[0]) * unit(seed, k, 0),
                BBOX[1] + (BBOX[3] - BBOX[1]) * unit(seed, k, 1),
            ]
        })
        .collect()
}

fn percentiles(mut ns: Vec<u64>) -> Value {
    ns.sort_unstable();
    let at = |p: f64| ns[((ns.len() as f64 * p) as usize).min(ns.len() - 1)];
    json!({"p50": at(0.5) as f64 / 1000.0, "p99": at(0.99) as f64 / 1000.0, "p999": at(0.999) as f64 / 1000.0, "max": ns[ns.len() - 1] as f64 / 1000.0})
}

fn lookup(zones: usize, radius: f64, pts: &[[f64; 2]]) -> Value {
    let text = synthetic(zones, (32, 64), radius, BBOX, 7);
    let t = Instant::now();
    let set = Zones::from_geojson(&text).unwrap();
    let load_s = t.elapsed().as_secs_f64();
    let mut found = Vec::new();
    let mut hits = 0usize;
    let cpu = common::own_thread_cpu_seconds();
    let t = Instant::now();
    for p in pts {
        set.indices_at(*p, &mut found);
        hits += found.len();
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = common::own_thread_cpu_seconds() - cpu;
    let sample = pts.len().min(200_000);
    let mut ns = Vec::with_capacity(sample);
    for p in &pts[..sample] {
        let t = Instant::now();
        set.indices_at(*p, &mut found);
        ns.push(t.elapsed().as_nanos() as u64);
        std::hint::black_box(&found);
    }
    let per_core = pts.len() as f64 / cpu.max(1e-9);
    let _ = secs;
    println!(
        "{zones:>6} zones: {:.2} M points/s per core ({:.0} ns CPU/point), {:.2} zones per point, load {load_s:.2} s",
        per_core / 1e6,
        cpu * 1e9 / pts.len() as f64,
        hits as f64 / pts.len() as f64
    );
    json!({
        "zones": zones,
        "vertices": [32, 64],
        "points": pts.len(),
        "zones_per_point": hits as f64 / pts.len() as f64,
        "points_per_s_per_core": per_core,
        "cpu_ns_per_point": cpu * 1e9 / pts.len() as f64,
        "lookup_us": percentiles(ns),
        "load_s": load_s,
    })
}

fn main() {
    let n: usize = common::arg(0, 2_000_000);
    let pts = points(n, 11);
    let small = lookup(1_000, 0.015, &pts);
    let large = lookup(10_000, 0.006, &pts);
    // Nearest assets: 2 000 assets of five kinds.
    let assets: Vec<Value> = (0..2000u64)
        .map(|k| {
            let kind = AssetKind::ALL[k as usize % AssetKind::ALL.len()];
            json!({"type":"Feature","properties":{"id":format!("a{k}"),"name":"A","kind":kind.as_str()},
                   "geometry":{"type":"Point","coordinates":[BBOX[0] + 1.8 * unit(3, k, 0), BBOX[1] + 1.4 * unit(3, k, 1)]}})
        })
        .collect();
    let set =
        Zones::from_geojson(&json!({"type":"FeatureCollection","features":assets}).to_string())
            .unwrap();
    let m = n.min(200_000);
    let t = Instant::now();
    for p in &pts[..m] {
        std::hint::black_box(set.nearest(
            *p,
            &[AssetKind::Shelter, AssetKind::FireStation],
            3,
            None,
        ));
    }
    let nearest_us = t.elapsed().as_secs_f64() * 1e6 / m as f64;
    println!("nearest 3 of 2 kinds among 2000 assets: {nearest_us:.2} µs per query");
    let result = json!({
        "benchmark": "geo",
        "date": Timestamp::now(),
        "machine": common::bench_machine(),
        "commit": common::bench_commit(),
        "zones_1000": small,
        "zones_10000": large,
        "nearest_us": nearest_us,
    });
    let out = common::write_bench_result("geo", &result);
    println!("written to {}", out.display());
}
