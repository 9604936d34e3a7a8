//! The Kafka source against a real Kafka-protocol broker (Tansu): several
//! partitions, restart from committed offsets, a rebalance between two
//! consumers of one group, dead letters on a Kafka topic, a broker that
//! requires SASL/SCRAM authentication, and alert states on `ioc.alerts`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Pipeline, Tansu, free_port, get_json, river_reading_at, test_config, wait_for};
use ioc_devices::Registry;
use ioc_ingest::DeadLetter;
use ioc_ingest::deadletter::FileSink;
use ioc_ingest::kafka::{KafkaConfig, KafkaSink};
use ioc_schemas::{RejectReason, Timestamp};

const RIVERS: [&str; 8] = [
    "river-to-hieu",
    "river-chieng-an",
    "river-chieng-coi",
    "river-chieng-sinh",
    "river-quynh-nhai",
    "river-muong-chien",
    "river-muong-gion",
    "river-muong-sai",
];

/// Readings `seqs` of each device, keyed by device, each device always on
/// the same partition.
fn readings(
    devices: &[&'static str],
    seqs: std::ops::RangeInclusive<u64>,
    partitions: i32,
) -> Vec<(i32, Option<&'static str>, Vec<u8>)> {
    let t0 = Timestamp::now().millis() - 60_000;
    let mut out = Vec::new();
    for seq in seqs {
        for (i, d) in devices.iter().enumerate() {
            out.push((
                i as i32 % partitions,
                Some(*d),
                river_reading_at(d, seq, 1.0 + seq as f64 / 100.0, t0 + seq as i64 * 10),
            ));
        }
    }
    out
}

fn kafka_config(tansu: &Tansu, group: &str) -> KafkaConfig {
    KafkaConfig {
        enabled: true,
        bootstrap_servers: tansu.bootstrap(),
        group_id: group.into(),
        statistics_interval: Duration::from_millis(500),
        properties: [("session.timeout.ms".to_owned(), "6000".to_owned())].into(),
        ..KafkaConfig::default()
    }
}

fn present_devices() {
    let registry = Registry::sonla_demo();
    for d in RIVERS {
        assert!(
            registry.lookup(d).is_some(),
            "{d} is not in the demo catalogue"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_partitions_restarts_from_committed_offsets_and_dead_letters_to_kafka() {
    present_devices();
    let tansu = Tansu::start();
    tansu.create_topic("ioc.telemetry", 3).await;
    tansu.create_topic("ioc.deadletter", 1).await;
    let devices = &RIVERS[..3];
    let mut first = readings(devices, 1..=10, 3);
    // Two bad records: not JSON, and a key naming another device.
    first.push((0, Some("river-to-hieu"), b"{not json".to_vec()));
    first.push((
        1,
        Some("river-to-hieu"),
        river_reading_at("river-chieng-an", 99, 1.0, Timestamp::now().millis()),
    ));
    tansu.produce("ioc.telemetry", &first);

    let mut config = test_config(format!("mqtt://127.0.0.1:{}", free_port()), false);
    config.mqtt.enabled = false;
    config.kafka = kafka_config(&tansu, "ioc-restart");
    let running = ioc::app::start(config.clone()).await.unwrap();
    let stats = running.ingest_stats.clone();
    wait_for("the first 30 readings and 2 rejections", 60, || {
        stats.accepted_count() == 30 && stats.rejections().iter().map(|r| r.1).sum::<u64>() == 2
    })
    .await;
    running.shutdown().await.unwrap();

    // While the processor is down, more readings arrive.
    tansu.produce("ioc.telemetry", &readings(devices, 11..=20, 3));
    let running = ioc::app::start(config.clone()).await.unwrap();
    let stats = running.ingest_stats.clone();
    wait_for("the next 30 readings", 60, || stats.accepted_count() >= 30).await;
    // Nothing before the committed offsets is read again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stats.received_count(), 30, "{:?}", stats.rejections());
    assert_eq!(stats.accepted_count(), 30);
    running.shutdown().await.unwrap();

    // The dead letters are on the Kafka topic, with where they came from.
    let letters: Vec<DeadLetter> = tansu
        .read_all("ioc.deadletter", 2)
        .iter()
        .map(|v| serde_json::from_slice(v).unwrap())
        .collect();
    let reasons: BTreeSet<_> = letters.iter().map(|d| d.reason).collect();
    assert_eq!(
        reasons,
        [RejectReason::MalformedJson, RejectReason::KeyMismatch].into()
    );
    for d in &letters {
        assert_eq!(d.source, "kafka");
        assert_eq!(d.topic.as_deref(), Some("ioc.telemetry"));
        assert!(d.partition.is_some() && d.offset.is_some(), "{d:?}");
        assert_eq!(d.key.as_deref(), Some("river-to-hieu"));
    }
    assert!(
        !config.dead_letter.file.exists()
            || std::fs::metadata(&config.dead_letter.file).unwrap().len() == 0,
        "dead letters went to Kafka, not the fallback file"
    );
}

/// A pipeline over the demo catalogue with dead letters to Kafka.
fn pipeline(config: &KafkaConfig, dir: &std::path::Path) -> Pipeline {
    let file = ioc_ingest::deadletter::DeadLetterConfig {
        file: dir.join(format!("dl-{}.jsonl", free_port())),
        ..Default::default()
    };
    let sink = KafkaSink::new(config, "ioc.deadletter", FileSink::open(&file).unwrap()).unwrap();
    Pipeline::start(config.clone(), Registry::sonla_demo(), Box::new(sink))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_in_one_group_split_the_partitions_and_lose_nothing_across_a_rebalance() {
    present_devices();
    let tansu = Tansu::start();
    tansu.create_topic("ioc.telemetry", 4).await;
    tansu.create_topic("ioc.deadletter", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let config = kafka_config(&tansu, "ioc-pair");

    // The first consumer takes all partitions and starts reading...
    tansu.produce("ioc.telemetry", &readings(&RIVERS, 1..=50, 4));
    let a = pipeline(&config, dir.path());
    let a_stats = a.stats.clone();
    wait_for("the first consumer to start", 60, || {
        a_stats.accepted_count() > 0
    })
    .await;
    // ...then a second joins the group; the partitions are split between them
    // while records keep arriving, until the second has processed some and a
    // few more batches went by.
    let b = pipeline(&config, dir.path());
    let b_stats = b.stats.clone();
    let (mut last, mut after) = (50, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while after < 5 {
        assert!(
            Instant::now() < deadline,
            "the second consumer never got a partition"
        );
        tansu.produce("ioc.telemetry", &readings(&RIVERS, last + 1..=last + 10, 4));
        last += 10;
        if b_stats.accepted_count() > 0 {
            after += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let total = RIVERS.len() as u64 * last;
    // Polled by hand so that a timeout says how far each consumer got.
    let deadline = Instant::now() + Duration::from_secs(60);
    while a_stats.accepted_count() + b_stats.accepted_count() < total {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for every record to be processed by one of the two: \
             {total} produced, the first accepted {} (rejected {:?}), the second {} \
             (rejected {:?})",
            a_stats.accepted_count(),
            a_stats.rejections(),
            b_stats.accepted_count(),
            b_stats.rejections()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut processed = a.stop();
    processed.extend(b.stop());

    // Nothing lost: every (device, seq) was processed at least once.
    let unique: BTreeSet<(String, u64)> = processed.iter().cloned().collect();
    for d in RIVERS {
        for seq in 1..=last {
            assert!(
                unique.contains(&(d.to_owned(), seq)),
                "{d} seq {seq} was never processed"
            );
        }
    }
    // At-least-once: redelivery is confined to the handful of records in
    // flight when the partitions moved.
    let again = processed.len() - unique.len();
    assert!(again <= 100, "{again} records processed twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticates_with_sasl_scram_and_is_refused_with_a_wrong_password() {
    let tansu = Tansu::start_with_user("ioc", "river-secret");
    tansu.create_topic("ioc.telemetry", 1).await;
    tansu.create_topic("ioc.deadletter", 1).await;
    tansu.produce("ioc.telemetry", &readings(&RIVERS[..2], 1..=10, 1));
    let mut config = test_config(format!("mqtt://127.0.0.1:{}", free_port()), false);
    config.mqtt.enabled = false;
    config.kafka = KafkaConfig {
        security_protocol: Some("sasl_plaintext".into()),
        sasl_mechanism: Some("SCRAM-SHA-512".into()),
        sasl_username: Some("ioc".into()),
        sasl_password: Some("not-the-password".into()),
        ..kafka_config(&tansu, "ioc-sasl")
    };

    // A wrong password gets nothing.
    let running = ioc::app::start(config.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(running.ingest_stats.received_count(), 0);
    running.shutdown().await.unwrap();

    config.kafka.sasl_password = Some("river-secret".into());
    let running = ioc::app::start(config).await.unwrap();
    let stats = running.ingest_stats.clone();
    wait_for("20 readings over SASL/SCRAM", 60, || {
        stats.accepted_count() == 20
    })
    .await;
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_states_go_to_the_alerts_topic_keyed_by_id() {
    let tansu = Tansu::start();
    for topic in ["ioc.telemetry", "ioc.deadletter", "ioc.alerts"] {
        tansu.create_topic(topic, 1).await;
    }
    let registry = Registry::sonla_demo();
    let levels = common::alarm_levels(&registry, "river-to-hieu");
    let mut config = test_config(format!("mqtt://127.0.0.1:{}", free_port()), false);
    config.mqtt.enabled = false;
    config.kafka = kafka_config(&tansu, "ioc-alert-states");
    let running = ioc::app::start(config).await.unwrap();
    // A reading above BĐ1 opens an alert; an operator acknowledges it.
    let now = Timestamp::now().millis();
    let above = river_reading_at("river-to-hieu", 1, levels[0] + 0.1, now);
    tansu.produce("ioc.telemetry", &[(0, Some("river-to-hieu"), above)]);
    let mut id = String::new();
    common::wait_for_async("the alert opened", 60, async || {
        let open = get_json(running.http_addr, "/api/v1/alerts?subject=river-to-hieu").await;
        id = open[0]["id"].as_str().unwrap_or_default().to_owned();
        !id.is_empty()
    })
    .await;
    let (status, _) = common::http(
        running.http_addr,
        "POST",
        &format!("/api/v1/alerts/{id}/ack"),
        &[],
        br#"{"by": "Lan"}"#,
    )
    .await;
    assert_eq!(status, 200);

    let records = tansu.read_keyed("ioc.alerts", 2);
    assert!(records.iter().all(|(k, _)| *k == id), "keyed by alert id");
    let states: Vec<serde_json::Value> = records
        .iter()
        .map(|(_, r)| serde_json::from_slice(r).unwrap())
        .collect();
    let mine: Vec<(u64, &str)> = states
        .iter()
        .filter(|a| a["id"] == id.as_str())
        .map(|a| {
            (
                a["version"].as_u64().unwrap(),
                a["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(mine, [(1, "open"), (2, "acknowledged")]);
    let delivered = get_json(
        running.http_addr,
        "/api/v1/webhooks/deliveries?state=delivered",
    )
    .await;
    assert_eq!(
        delivered
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["subscriber"] == "kafka")
            .count(),
        2
    );
    running.shutdown().await.unwrap();
}
