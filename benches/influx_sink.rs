//! Time-series sink: our CPU per point for line protocol, gzip (level 1),
//! the spool and the HTTP write, against a local receiver.
//!
//! ```sh
//! cargo bench --bench influx_sink -- [POINTS] [DEVICES]
//! ```
//!
//! Defaults: 1000000 simulated readings of 10000 devices (the demo's mix of
//! gauges, counters and cameras). Two measurements:
//!
//! - `encode_gzip`: line protocol (grouped by series, as the sink hands
//!   it out) and gzip alone, on one thread, in batches of 5000 (no I/O),
//!   reusing the batch and compressor as the sink does; five passes, the
//!   median reported;
//! - `sink`: the whole [`ioc_timeseries::Sink`]: a feeder thread queues
//!   the readings, the batcher encodes, compresses and spools them, the
//!   writer reads each batch back and POSTs it to `/api/v2/write` of a
//!   receiver in a child process (which reads the body and answers 204,
//!   so only our side is measured). CPU is the process's, less the
//!   feeder thread's.
//!
//! Writes the result to `target/bench/influx-sink.json` (or `$IOC_BENCH_OUT`).

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ioc_devices::{Registry, Scenario, Simulator};
use ioc_schemas::Timestamp;
use ioc_timeseries::line::{LineEncoder, Lines};
use ioc_timeseries::{InfluxConfig, Record, Sink};

/// The child process: accept writes, read them whole, answer 204.
fn receiver() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            loop {
                let mut length = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = l.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                if writer
                    .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

/// Passes of the encode-and-gzip measurement.
const PASSES: usize = 5;

fn main() {
    if std::env::args().any(|a| a == "--receiver") {
        return receiver();
    }
    let points: usize = common::arg(0, 1_000_000);
    let devices: usize = common::arg(1, 10_000);
    let registry = Registry::sonla_scaled(devices);
    let t0 = Timestamp::now().millis() - 3_600_000;
    let mut sim = Simulator::new(registry.clone(), Scenario::Flood, 7, Timestamp(t0));
    let records: Vec<Record> = (0..points)
        .map(|k| {
            let envelope = sim.next_reading(Timestamp(t0 + k as i64)).unwrap();
            Record::Reading {
                device: registry.lookup(&envelope.device).unwrap(),
                envelope,
            }
        })
        .collect();

    // 1. Encoding and gzip alone.
    let encode = {
        let (records, registry) = (records.clone(), registry.clone());
        std::thread::Builder::new()
            .name("bench-encode".into())
            .spawn(move || {
                let encoder = LineEncoder::new(&registry);
                let cpu = common::own_thread_cpu_seconds;
                // As the sink does: one batch of lines, reused batch after batch.
                let mut lines = Lines::with_capacity(5000);
                let mut gzip = ioc_timeseries::Gzip::new();
                // Five passes over the same readings; this VM's CPU time
                // varies by a third from run to run, so the median pass
                // is the figure and the spread is printed with it.
                let mut passes: Vec<(f64, f64, usize, usize)> = (0..PASSES)
                    .map(|_| {
                        let (mut enc_cpu, mut gz_cpu, mut raw, mut gz_bytes) = (0.0, 0.0, 0, 0);
                        for chunk in records.chunks(5000) {
                            let cpu0 = cpu();
                            lines.clear();
                            for r in chunk {
                                lines.add(&encoder, r);
                            }
                            let grouped = lines.grouped();
                            let cpu1 = cpu();
                            gz_bytes += gzip.compress(grouped).unwrap().len();
                            enc_cpu += cpu1 - cpu0;
                            gz_cpu += cpu() - cpu1;
                            raw += grouped.len();
                        }
                        (enc_cpu, gz_cpu, raw, gz_bytes)
                    })
                    .collect();
                passes.sort_by(|a, b| (a.0 + a.1).total_cmp(&(b.0 + b.1)));
                let spread = (
                    passes[0].0 + passes[0].1,
                    passes[PASSES - 1].0 + passes[PASSES - 1].1,
                );
                (passes[PASSES / 2], spread)
            })
            .unwrap()
            .join()
            .unwrap()
    };
    let ((enc_cpu, gz_cpu, raw, gz_bytes), (best_cpu, worst_cpu)) = encode;

    // 2. The whole sink against a receiver in another process.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--receiver")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let port: u16 = port.trim().parse().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sink-writer")
        .enable_all()
        .build()
        .unwrap();
    let config = InfluxConfig {
        enabled: true,
        url: format!("http://127.0.0.1:{port}"),
        spool_dir: spool.path().to_owned(),
        ..InfluxConfig::default()
    };
    let (sink, input) = runtime.block_on(async { Sink::start(&config, registry.clone()).unwrap() });
    let stats = sink.stats();
    // The process's CPU less the feeder's (the receiver is another process).
    let cpu0 = common::process_cpu_seconds();
    let started = Instant::now();
    let feeder = std::thread::Builder::new()
        .name("bench-feeder".into())
        .spawn(move || {
            let cpu0 = common::own_thread_cpu_seconds();
            for r in records {
                input.send_blocking(r).unwrap();
            }
            common::own_thread_cpu_seconds() - cpu0
        })
        .unwrap();
    let feeder_cpu = feeder.join().unwrap();
    while stats.written.load(Ordering::Relaxed) < points as u64 {
        assert!(started.elapsed() < Duration::from_secs(600), "stalled");
        std::thread::sleep(Duration::from_millis(2));
    }
    let sink_wall = started.elapsed().as_secs_f64();
    let sink_cpu = common::process_cpu_seconds() - cpu0 - feeder_cpu;
    let batches = stats.batches_written.load(Ordering::Relaxed);
    runtime.block_on(sink.shutdown());
    let _ = child.kill();
    let _ = child.wait();

    let per_point_ns = |cpu: f64| cpu / points as f64 * 1e9;
    let result = serde_json::json!({
        "benchmark": "influx_sink",
        "date": Timestamp::now(),
        "machine": common::bench_machine(),
        "commit": common::bench_commit(),
        "points": points,
        "devices": devices,
        "line_bytes_per_point": raw as f64 / points as f64,
        "gzip_bytes_per_point": gz_bytes as f64 / points as f64,
        "encode_gzip": {
            "cpu_ns_per_point": per_point_ns(enc_cpu + gz_cpu),
            "encode_cpu_ns_per_point": per_point_ns(enc_cpu),
            "gzip_cpu_ns_per_point": per_point_ns(gz_cpu),
            "gzip_mb_per_cpu_s": raw as f64 / gz_cpu / 1e6,
            "passes": PASSES,
            "best_cpu_ns_per_point": per_point_ns(best_cpu),
            "worst_cpu_ns_per_point": per_point_ns(worst_cpu),
        },
        "sink": {
            "cpu_ns_per_point": per_point_ns(sink_cpu),
            "points_per_s": points as f64 / sink_wall,
            "batches": batches,
            "retries": stats.retries.load(Ordering::Relaxed),
        },
    });
    let out = common::write_bench_result("influx-sink", &result);
    println!(
        "influx_sink: {points} points, {:.0} B/line, {:.1} B/point gzipped\n\
         encode+gzip: {:.0} ns CPU per point, median of {PASSES} passes ({:.0}–{:.0}; encode {:.0}, gzip {:.0}: {:.0} MB/s)\n\
         whole sink (encode, gzip, spool, POST): {:.0} ns CPU per point, {:.0} points/s, {batches} batches\n\
         written to {}",
        raw as f64 / points as f64,
        gz_bytes as f64 / points as f64,
        per_point_ns(enc_cpu + gz_cpu),
        per_point_ns(best_cpu),
        per_point_ns(worst_cpu),
        per_point_ns(enc_cpu),
        per_point_ns(gz_cpu),
        raw as f64 / gz_cpu / 1e6,
        per_point_ns(sink_cpu),
        points as f64 / sink_wall,
        out.display()
    );
}
