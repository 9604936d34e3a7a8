//! The alert store: how many changes per second it commits, and how long
//! one takes, on SQLite (WAL, `synchronous = FULL`, the default) or on
//! PostgreSQL (started by the benchmark on a free port, `--postgres`). Each
//! change is one transaction: the alert row with its version check, the
//! history entry, and an outbox row for one webhook subscriber.
//!
//! ```sh
//! cargo bench --bench alert_store -- [ALERTS] [--postgres]
//! ```
//!
//! Default 2000 alerts: each is opened and escalated by the rule and
//! acknowledged by an operator (three changes). Writes the result to
//! `target/bench/alert_store.json` (or `$IOC_BENCH_OUT`).

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../alerts/tests/support/fixture.rs"]
mod fixture;
#[path = "../alerts/tests/support/postgres.rs"]
mod postgres;

use std::time::{Duration, Instant};

use ioc_alerts::{AlertStore, Operation, Webhook};
use ioc_schemas::Timestamp;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let alerts: usize = common::arg(0, 2000);
    let on_postgres = std::env::args().any(|a| a == "--postgres");
    let dir = tempfile::tempdir().unwrap();
    let pg = on_postgres.then(postgres::Postgres::start);
    let url = match &pg {
        Some(pg) => pg.url.clone(),
        None => format!("sqlite://{}", dir.path().join("alerts.db").display()),
    };
    let hook = Webhook {
        name: "agency".into(),
        url: "http://127.0.0.1:9/hook".into(),
        secret: "agency-secret-0123456789".into(),
        rules: Vec::new(),
        min_severity: None,
        areas: Vec::new(),
        max_attempts: 12,
        timeout: Duration::from_secs(1),
    };
    let store = AlertStore::open(&url)
        .await
        .unwrap()
        .with_webhooks(vec![hook]);
    let now = Timestamp::now();
    let mut latencies = Vec::with_capacity(alerts * 3);
    let cpu_before = common::process_cpu_seconds();
    let started = Instant::now();
    for k in 0..alerts {
        let subject = format!("river-{k}");
        let opened = 1_767_225_600_000 + k as i64;
        let t = Instant::now();
        let (a, _) = store
            .apply_rule(
                &fixture::rule_alert("river_level", &subject, opened, 1, 1),
                now,
            )
            .await
            .unwrap()
            .unwrap();
        latencies.push(t.elapsed());
        let t = Instant::now();
        store
            .apply_rule(
                &fixture::rule_alert("river_level", &subject, opened, 2, 2),
                now,
            )
            .await
            .unwrap();
        latencies.push(t.elapsed());
        let t = Instant::now();
        store
            .act(&a.id, &Operation::Acknowledge, "bench", now)
            .await
            .unwrap();
        latencies.push(t.elapsed());
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = common::process_cpu_seconds() - cpu_before;
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let changes = latencies.len();
    let backend = store.backend();
    let result = serde_json::json!({
        "benchmark": "alert_store",
        "date": Timestamp::now(),
        "machine": common::bench_machine(),
        "commit": common::bench_commit(),
        "backend": backend,
        "alerts": alerts,
        "changes": changes,
        "seconds": secs,
        "changes_per_s": changes as f64 / secs,
        "cpu_us_per_change": cpu * 1e6 / changes as f64,
        "latency_ms": {"p50": ms(pct(0.5)), "p99": ms(pct(0.99)), "max": ms(latencies[changes - 1])},
    });
    let out = common::write_bench_result("alert_store", &result);
    println!(
        "alert store ({backend}): {changes} changes in {secs:.2} s: {:.0} changes/s, p50 {:.2} ms, p99 {:.2} ms, {:.0} µs CPU per change\nwritten to {}",
        changes as f64 / secs,
        ms(pct(0.5)),
        ms(pct(0.99)),
        cpu * 1e6 / changes as f64,
        out.display()
    );
    drop(pg);
}
