//! Kafka source throughput: records already on a local broker (Tansu, in
//! memory, started here on a free loopback port) consumed by the real
//! source thread, decoded, validated, checked for duplicates and handed to
//! a running engine. The clock runs from the source's start until the
//! engine's input has taken every record.
//!
//! ```sh
//! cargo bench --bench kafka_ingest -- [RECORDS] [DEVICES] [PARTITIONS]
//! ```
//!
//! Defaults: 1000000 records (~200 bytes each), 10000 devices, 4
//! partitions. Prints the result (with the CPU time of the source thread)
//! and writes it to `target/bench/kafka-ingest.json` (or `$IOC_BENCH_OUT`).

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use ioc_devices::{Registry, Scenario, Simulator};
use ioc_ingest::deadletter::{DeadLetterConfig, FileSink};
use ioc_ingest::kafka::KafkaConfig;
use ioc_schemas::Timestamp;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let records: usize = common::arg(0, 1_000_000);
    let devices: usize = common::arg(1, 10_000);
    let partitions: i32 = common::arg(2, 4);
    let tansu = common::Tansu::start();
    tansu.create_topic("ioc.telemetry", partitions).await;

    let registry = Registry::sonla_scaled(devices);
    let t0 = Timestamp::now().millis() - 3_600_000;
    let mut sim = Simulator::new(registry.clone(), Scenario::Flood, 7, Timestamp(t0));
    let mut bytes = 0usize;
    let mut batch: Vec<(i32, Option<&str>, Vec<u8>)> = Vec::new();
    let produce_started = Instant::now();
    for k in 0..records {
        let e = sim.next_reading(Timestamp(t0 + k as i64)).unwrap();
        let index = registry.lookup(&e.device).unwrap() as usize;
        let value = e.to_json();
        bytes += value.len();
        batch.push((index as i32 % partitions, None, value));
        if batch.len() == 100_000 || k + 1 == records {
            tansu.produce("ioc.telemetry", &batch);
            batch.clear();
        }
    }
    let produce_s = produce_started.elapsed().as_secs_f64();

    let dir = tempfile::tempdir().unwrap();
    let sink = FileSink::open(&DeadLetterConfig {
        file: dir.path().join("dl.jsonl"),
        ..DeadLetterConfig::default()
    })
    .unwrap();
    let config = KafkaConfig {
        enabled: true,
        bootstrap_servers: tansu.bootstrap(),
        group_id: "bench".into(),
        ..KafkaConfig::default()
    };
    let started = Instant::now();
    let pipeline = common::Pipeline::start(config, registry, Box::new(sink));
    let stats = pipeline.stats.clone();
    let mut first_at = None;
    while stats.received_count() < records as u64 {
        if first_at.is_none() && stats.received_count() > 0 {
            first_at = Some(started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "stalled at {}",
            stats.received_count()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = common::threads_cpu_seconds("ioc-kafka");
    let first = first_at.unwrap_or_default().as_secs_f64();
    let outputs = pipeline.stop().len();
    let result = serde_json::json!({
            "benchmark": "kafka_ingest",
            "date": Timestamp::now(),
            "machine": common::bench_machine(),
            "commit": common::bench_commit(),
            "records": records,
            "mean_record_bytes": bytes / records.max(1),
            "partitions": partitions,
            "devices": devices,
            "seconds": elapsed,
            "first_record_after_s": first,
            "records_per_s": records as f64 / elapsed,
            "records_per_s_after_first": records as f64 / (elapsed - first),
            "source_thread_cpu_s": cpu,
            "records_per_cpu_s": records as f64 / cpu,
            "accepted": stats.accepted_count(),
            "rejected": stats.rejections(),
            "engine_outputs": outputs,
            "produce_s": produce_s,
    });
    let out = common::write_bench_result("kafka-ingest", &result);
    println!(
        "{}\nwritten to {}",
        serde_json::to_string(&result).unwrap(),
        out.display()
    );
}
