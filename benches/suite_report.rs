//! The benchmark suite's report: merges the results `benches/suite.sh`
//! collected into one JSON file beside them (`../suite.json`) with the
//! machine, the commit and every target, and prints a summary.
//!
//! ```sh
//! cargo bench --bench suite_report -- target/bench/suite [--smoke]
//! ```

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use serde_json::{Value, json};

/// One target of the suite, from the benchmarks issue.
struct Target {
    result: &'static str,
    what: &'static str,
    /// JSON pointer of the figure in the result.
    pointer: &'static str,
    bound: Bound,
}

enum Bound {
    AtLeast(f64),
    AtMost(f64),
}

const TARGETS: &[Target] = &[
    Target {
        result: "engine",
        what: "engine only, events/s (2 workers)",
        pointer: "/events_per_s",
        bound: Bound::AtLeast(1_000_000.0),
    },
    Target {
        result: "e2e-mqtt-50k",
        what: "MQTT end to end, sustained events/s",
        pointer: "/sent/rate",
        bound: Bound::AtLeast(50_000.0),
    },
    Target {
        result: "e2e-mqtt-50k",
        what: "MQTT end to end at 50k/s, readings missing",
        pointer: "/missing",
        bound: Bound::AtMost(0.0),
    },
    Target {
        result: "e2e-mqtt-10k",
        what: "latency at 10k/s, p50 ms",
        pointer: "/latency_ms/p50",
        bound: Bound::AtMost(1.0),
    },
    Target {
        result: "e2e-mqtt-10k",
        what: "latency at 10k/s, p99 ms",
        pointer: "/latency_ms/p99",
        bound: Bound::AtMost(10.0),
    },
    Target {
        result: "e2e-mqtt-10k",
        what: "MQTT end to end at 10k/s, readings missing",
        pointer: "/missing",
        bound: Bound::AtMost(0.0),
    },
    Target {
        result: "e2e-mqtt-50k",
        what: "latency at 50k/s, p99 ms",
        pointer: "/latency_ms/p99",
        bound: Bound::AtMost(50.0),
    },
    Target {
        result: "e2e-mqtt-10k",
        what: "reading → alert on the screen at 10k/s, p99 ms",
        pointer: "/alert_latency_ms/p99",
        bound: Bound::AtMost(10.0),
    },
    Target {
        result: "e2e-mqtt-50k",
        what: "reading → alert on the screen at 50k/s, p99 ms",
        pointer: "/alert_latency_ms/p99",
        bound: Bound::AtMost(50.0),
    },
    Target {
        result: "e2e-mqtt-50k",
        what: "alert changes missing at 50k/s",
        pointer: "/alert_latency_ms/missing",
        bound: Bound::AtMost(0.0),
    },
    Target {
        result: "e2e-mqtt-50k",
        what: "latency at 50k/s, max ms",
        pointer: "/latency_ms/max",
        bound: Bound::AtMost(1000.0),
    },
    Target {
        result: "e2e-mqtt-50k",
        what: "whole process RSS peak, MiB (100k devices)",
        pointer: "/ioc/rss_peak_mib",
        bound: Bound::AtMost(300.0),
    },
    Target {
        result: "e2e-kafka",
        what: "Kafka end to end, events/s",
        pointer: "/throughput_per_s",
        bound: Bound::AtLeast(200_000.0),
    },
    Target {
        result: "e2e-kafka",
        what: "Kafka end to end, readings missing",
        pointer: "/missing",
        bound: Bound::AtMost(0.0),
    },
    Target {
        result: "e2e-mqtt-10k",
        what: "state per device once reported, bytes (upper bound)",
        pointer: "/ioc/state_bytes_per_device",
        bound: Bound::AtMost(1024.0),
    },
    Target {
        result: "kafka-ingest",
        what: "Kafka consumer path alone, records/s",
        pointer: "/records_per_s",
        bound: Bound::AtLeast(200_000.0),
    },
    Target {
        result: "influx-sink",
        what: "time series: encode + gzip, CPU ns/point",
        pointer: "/encode_gzip/cpu_ns_per_point",
        bound: Bound::AtMost(500.0),
    },
    Target {
        result: "geo",
        what: "zones containing a point, 1 000 zones, points/s per core",
        pointer: "/zones_1000/points_per_s_per_core",
        bound: Bound::AtLeast(2_000_000.0),
    },
    Target {
        result: "geo",
        what: "zones containing a point, 10 000 zones, points/s per core",
        pointer: "/zones_10000/points_per_s_per_core",
        bound: Bound::AtLeast(500_000.0),
    },
    Target {
        result: "geo",
        what: "zones containing a point, 10 000 zones, p99 µs",
        pointer: "/zones_10000/lookup_us/p99",
        bound: Bound::AtMost(10.0),
    },
    Target {
        result: "ws-fanout-100",
        what: "WebSocket fan-out to 100 clients, deliveries/s",
        pointer: "/deliveries_per_s",
        bound: Bound::AtLeast(1_000_000.0),
    },
    Target {
        result: "ws-fanout-100",
        what: "WebSocket fan-out to 100 clients, p99 ms",
        pointer: "/latency_ms/p99",
        bound: Bound::AtMost(5.0),
    },
    Target {
        result: "ws-fanout-1000",
        what: "WebSocket fan-out to 1 000 clients, deliveries/s",
        pointer: "/deliveries_per_s",
        bound: Bound::AtLeast(200_000.0),
    },
    Target {
        result: "peers",
        what: "same workload: ioc's throughput ÷ Bytewax's",
        pointer: "/ioc_vs/bytewax/times_faster",
        bound: Bound::AtLeast(3.0),
    },
    Target {
        result: "peers",
        what: "same workload: ioc's throughput ÷ Pathway's",
        pointer: "/ioc_vs/pathway/times_faster",
        bound: Bound::AtLeast(2.0),
    },
    Target {
        result: "peers",
        what: "same workload: Flink's CPU per reading ÷ ioc's",
        pointer: "/ioc_vs/flink/times_less_cpu_per_reading",
        bound: Bound::AtLeast(1.0),
    },
    Target {
        result: "peers",
        what: "same workload: subjects whose alerts differ, Bytewax",
        pointer: "/ioc_vs/bytewax/subjects_that_differ",
        bound: Bound::AtMost(0.0),
    },
    Target {
        result: "peers",
        what: "same workload: subjects whose alerts differ, Pathway",
        pointer: "/ioc_vs/pathway/subjects_that_differ",
        bound: Bound::AtMost(0.0),
    },
    Target {
        result: "peers",
        what: "same workload: subjects whose alerts differ, Flink",
        pointer: "/ioc_vs/flink/subjects_that_differ",
        bound: Bound::AtMost(0.0),
    },
];

/// Our end-to-end result and the Node-RED baseline's at the same load.
const BASELINES: &[(&str, &str)] = &[
    ("e2e-mqtt-10k", "e2e-node-red-10k"),
    ("e2e-mqtt-50k", "e2e-node-red-50k"),
];

/// Ours against the baseline's: how many times better ours is on each
/// figure (above 1: ours is better).
fn ratios(ours: &Value, theirs: &Value) -> Value {
    let f = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_f64);
    let better_if_higher = |p: &str| Some(f(ours, p)? / f(theirs, p)?);
    let better_if_lower = |p: &str| Some(f(theirs, p)? / f(ours, p)?);
    json!({
        "throughput": better_if_higher("/throughput_per_s"),
        "latency_p50": better_if_lower("/latency_ms/p50"),
        "latency_p99": better_if_lower("/latency_ms/p99"),
        "latency_max": better_if_lower("/latency_ms/max"),
        "cpu_per_million": better_if_lower("/ioc/cpu_seconds_per_million"),
        "rss_peak": better_if_lower("/ioc/rss_peak_mib"),
        "missing": {"ours": ours["missing"], "baseline": theirs["missing"]},
    })
}

fn main() {
    let dir = std::path::PathBuf::from(common::arg(0, "target/bench/suite".to_owned()));
    let smoke = std::env::args().any(|a| a == "--smoke");
    let mut results = serde_json::Map::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let value: Value =
            serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        results.insert(name, value);
    }

    let mut rows = Vec::new();
    println!(
        "\n{:<52} {:>14} {:>14}  {}",
        "target",
        "measured",
        "bound",
        if smoke { "(smoke run: not judged)" } else { "" }
    );
    for t in TARGETS {
        let value = results
            .get(t.result)
            .and_then(|r| r.pointer(t.pointer))
            .and_then(Value::as_f64);
        let (bound_text, met) = match t.bound {
            Bound::AtLeast(b) => (format!("≥ {b}"), value.map(|v| v >= b)),
            Bound::AtMost(b) => (format!("≤ {b}"), value.map(|v| v <= b)),
        };
        let verdict = match (smoke, met) {
            (true, _) => "",
            (false, Some(true)) => "met",
            (false, Some(false)) => "NOT MET",
            (false, None) => "not run",
        };
        println!(
            "{:<52} {:>14} {:>14}  {verdict}",
            t.what,
            value.map_or("-".to_owned(), |v| format!("{v:.2}")),
            bound_text
        );
        rows.push(json!({
            "result": t.result, "what": t.what, "pointer": t.pointer,
            "bound": bound_text, "value": value, "met": if smoke { None } else { met },
        }));
    }
    let mut baseline = serde_json::Map::new();
    for (ours, theirs) in BASELINES {
        let (Some(o), Some(t)) = (results.get(*ours), results.get(*theirs)) else {
            continue;
        };
        let r = ratios(o, t);
        let x = |k: &str| r[k].as_f64().map_or("-".to_owned(), |v| format!("{v:.1}×"));
        println!(
            "vs Node-RED ({theirs}): throughput {}, p99 {} lower, CPU per reading {} less, RSS {} less",
            x("throughput"),
            x("latency_p99"),
            x("cpu_per_million"),
            x("rss_peak")
        );
        baseline.insert((*theirs).to_owned(), r);
    }
    let report = json!({
        "suite": "standard",
        "smoke": smoke,
        "date": ioc_schemas::Timestamp::now(),
        "machine": common::bench_machine(),
        "commit": common::bench_commit(),
        "targets": rows,
        "vs_node_red": baseline,
        "results": results,
    });
    let out = dir.with_file_name("suite.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("\nwritten to {}", out.display());
    for name in [
        "engine",
        "kafka-ingest",
        "e2e-mqtt-10k",
        "e2e-kafka",
        "influx-sink",
        "e2e-node-red-10k",
        "peers",
    ] {
        assert!(
            results.contains_key(name),
            "the suite produced no {name} result"
        );
    }
}
