//! Durable engine state under SIGKILL: a mixed scenario (flood levels,
//! rolling rainfall and zone rainfall, plates' tracks and geofences) goes
//! through Mosquitto (persistence on) or Tansu into the `ioc` binary, once
//! without interruption and once killed with SIGKILL at seeded random
//! points (at least five, one while a checkpoint is being written and one
//! as a restart restores). The alerts in the store (ids, versions and every
//! transition) and the time-series points (readings, windows, alert
//! versions, geofence events) must be the same.
//!
//! `IOC_FAULT_SEED=N` repeats a run; `IOC_FAULT_KILLS=N` kills more often;
//! `IOC_FAULT_DUMP=1` writes both runs' lines, sorted, to
//! `target/tmp/fault-{uninterrupted,killed}.txt` when they differ.
//! A failure prints the seed and the first difference.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Mosquitto, TEST_ADMIN, Tansu, Victoria, free_port};
use ioc_alerts::{AlertFilter, AlertStore};
use ioc_devices::{Registry, Scenario, Simulator};
use ioc_schemas::Timestamp;
use rand::{Rng as _, SeedableRng as _};

/// 40 minutes of event time, a reading every 150 ms over all devices.
const SPAN_MS: i64 = 40 * 60_000;
const STEP_MS: i64 = 150;

/// The scenario's readings as `(device, kind, payload)`, in event-time
/// order, starting an hour ago (the simulator's demo: a flood, rain over
/// a landslide pass, a traffic jam, a watch-listed plate).
fn scenario() -> Vec<(String, String, Vec<u8>)> {
    let registry = Registry::sonla_demo();
    let t0 = (Timestamp::now().millis() - 3_600_000) / 60_000 * 60_000;
    let mut sim = Simulator::new(registry.clone(), Scenario::Demo, 42, Timestamp(t0));
    (0..SPAN_MS / STEP_MS)
        .filter_map(|k| sim.next_reading(Timestamp(t0 + k * STEP_MS)))
        .map(|e| {
            let kind = registry
                .device(registry.lookup(&e.device).unwrap())
                .kind
                .to_string();
            (e.device.clone(), kind, e.to_json())
        })
        .collect()
}

/// The demo rules without the staleness rule: when a silent device is
/// flagged depends on how far event time has moved at each scan, which
/// depends on how readings were batched, not only on the readings.
fn rules(dir: &Path) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let text = std::fs::read_to_string(root.join("rules.toml")).unwrap();
    // Blocks from one `[[` table header to the next; the staleness rule's goes.
    let mut kept = String::new();
    for (i, block) in text.split("\n[[").enumerate() {
        if block.contains("kind = \"staleness\"") {
            continue;
        }
        if i > 0 {
            kept.push_str("\n[[");
        }
        kept.push_str(block);
    }
    std::fs::copy(root.join("watchlist.txt"), dir.join("watchlist.txt")).unwrap();
    let path = dir.join("rules.toml");
    std::fs::write(&path, kept).unwrap();
    path
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Source {
    Mqtt,
    Kafka,
}

/// One deployment: a broker, VictoriaMetrics and a directory for ioc.
struct Rig {
    source: Source,
    dir: tempfile::TempDir,
    http_port: u16,
    victoria: Victoria,
    mosquitto: Option<Mosquitto>,
    tansu: Option<Tansu>,
}

impl Rig {
    fn new(source: Source) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let (mosquitto, tansu) = match source {
            Source::Mqtt => (
                Some(Mosquitto::start_with(|port, d| {
                    format!(
                        "listener {port} 127.0.0.1\nallow_anonymous true\n\
                         persistence true\npersistence_location {}/\n\
                         max_queued_messages 0\nmax_inflight_messages 100\n",
                        d.display()
                    )
                })),
                None,
            ),
            Source::Kafka => (None, Some(Tansu::start_sqlite())),
        };
        Rig {
            source,
            http_port: free_port(),
            victoria: Victoria::start(),
            mosquitto,
            tansu,
            dir,
        }
    }

    fn config(&self) -> std::path::PathBuf {
        let d = self.dir.path();
        let source = match self.source {
            Source::Mqtt => format!(
                "[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nclient_id = \"ioc-durable\"\n",
                self.mosquitto.as_ref().unwrap().port
            ),
            Source::Kafka => format!(
                "[mqtt]\nenabled = false\n\
                 [kafka]\nenabled = true\nbootstrap_servers = \"{}\"\ntopics = [\"telemetry\"]\n\
                 group_id = \"ioc-durable\"\nstart_from = \"earliest\"\n\
                 properties = {{ \"session.timeout.ms\" = \"6000\", \"auto.commit.interval.ms\" = \"200\" }}\n",
                self.tansu.as_ref().unwrap().bootstrap()
            ),
        };
        let path = d.join("ioc.toml");
        std::fs::write(
            &path,
            format!(
                "[http]\nlisten = \"127.0.0.1:{port}\"\nadmin_token = \"{TEST_ADMIN}\"\n\
                 {source}\
                 [embedded_broker]\nenabled = false\n\
                 [simulator]\nenabled = false\n\
                 [processing]\nidle_timeout = \"1h\"\nout_of_orderness = \"5m\"\n\
                 [rules]\nfile = \"{rules}\"\n\
                 [dead_letter]\nfile = \"{d}/dead-letters.jsonl\"\n\
                 [alerts]\ndatabase = \"sqlite://{d}/alerts.db\"\n\
                 kafka_topic = \"\"\n\
                 [checkpoint]\ndir = \"{d}/state\"\ninterval = \"300ms\"\n\
                 [influx]\nenabled = true\nurl = \"{url}\"\nspool_dir = \"{d}/spool\"\n\
                 batch_size = 500\nflush_interval = \"100ms\"\nmax_backoff = \"300ms\"\n",
                port = self.http_port,
                rules = rules(d).display(),
                d = d.display(),
                url = self.victoria.url(),
            ),
        )
        .unwrap();
        path
    }

    /// Starts ioc; `restored` is set once it logs that it restores a
    /// checkpoint.
    fn spawn(&self, config: &Path, restored: &Arc<AtomicBool>) -> Ioc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ioc"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn,ioc_processing=info,ioc_ingest=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start ioc");
        let stderr = child.stderr.take().unwrap();
        let restored = restored.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("restoring checkpoint") {
                    restored.store(true, Ordering::SeqCst);
                }
                if line.contains("WARN")
                    || line.contains("ERROR")
                    || line.contains("restoring")
                    || line.contains("partitions assigned")
                {
                    eprintln!("ioc: {line}");
                }
            }
        });
        Ioc(child)
    }

    /// Feeds the scenario: MQTT paced over a few seconds (while ioc is
    /// killed and restarted), Kafka all at once (ioc reads it at its pace).
    async fn feed(&self, readings: Vec<(String, String, Vec<u8>)>) {
        match self.source {
            Source::Mqtt => {
                let device = common::Device::connect(self.mosquitto.as_ref().unwrap().port).await;
                // ioc's session must exist before the broker keeps anything
                // for it: a probe (an unknown device) until ioc has one.
                let addr = ([127, 0, 0, 1], self.http_port).into();
                common::wait_for_async("ioc subscribed", 60, async || {
                    device
                        .publish("ioc/v1/river_gauge/probe/telemetry", b"{}".to_vec())
                        .await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    stats(addr)
                        .await
                        .is_some_and(|s| s["ingest"]["received"].as_u64() > Some(0))
                })
                .await;
                for (i, (id, kind, payload)) in readings.into_iter().enumerate() {
                    device
                        .publish(&format!("ioc/v1/{kind}/{id}/telemetry"), payload)
                        .await;
                    if i % 200 == 199 {
                        tokio::time::sleep(Duration::from_millis(60)).await;
                    }
                }
                // Everything handed to the broker before the device goes.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Source::Kafka => {
                let tansu = self.tansu.as_ref().unwrap();
                // One partition: records come in one order whatever the
                // consumer's timing (several partitions interleave at the
                // pace they are fetched, which shifts event time).
                tansu.create_topic("telemetry", 1).await;
                for chunk in readings.chunks(2000) {
                    let records: Vec<(i32, Option<&str>, Vec<u8>)> = chunk
                        .iter()
                        .map(|(id, _, p)| (-1, Some(id.as_str()), p.clone()))
                        .collect();
                    tansu.produce("telemetry", &records);
                }
            }
        }
    }

    /// Waits until ioc has taken nothing new for a while (two seconds; ten
    /// with Kafka, whose consumer group first waits out the killed member).
    async fn quiet(&self) {
        let still = match self.source {
            Source::Mqtt => Duration::from_secs(2),
            Source::Kafka => Duration::from_secs(15),
        };
        let addr = ([127, 0, 0, 1], self.http_port).into();
        let (mut last, mut since) = (u64::MAX, Instant::now());
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            assert!(Instant::now() < deadline, "ioc never went quiet");
            let n = stats(addr)
                .await
                .map_or(0, |s| s["ingest"]["received"].as_u64().unwrap_or(0));
            // Alert versions still on their way to the time series count
            // as activity.
            let n = n + pending(addr).await * 1_000_000_000;
            if n != last {
                (last, since) = (n, Instant::now());
            } else if since.elapsed() > still {
                eprintln!("quiet: {}", stats(addr).await.unwrap_or_default());

                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every alert change in the store and every point in the database,
    /// one line each, sorted.
    async fn outcome(&self) -> Vec<String> {
        let store = AlertStore::open(&format!("sqlite://{}/alerts.db", self.dir.path().display()))
            .await
            .unwrap();
        let mut lines = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list(&AlertFilter {
                    limit: 1000,
                    after: after.take(),
                    ..AlertFilter::default()
                })
                .await
                .unwrap();
            for a in &page.alerts {
                let detail = store.get(&a.id).await.unwrap().unwrap();
                lines.push(format!(
                    "alert {} v{} {} level {} opened {} updated {} value {}",
                    a.id,
                    a.version,
                    a.status.as_str(),
                    a.level,
                    a.opened_at.millis(),
                    a.updated_at.millis(),
                    a.evidence.value
                ));
                for c in detail.history {
                    lines.push(format!(
                        "change {} v{} {} {} level {} by {}",
                        c.alert,
                        c.version,
                        c.action.as_str(),
                        c.status.as_str(),
                        c.level,
                        c.by
                    ));
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        for state in ["pending", "dead"] {
            let left = store.deliveries(state, 1000).await.unwrap();
            if !left.is_empty() {
                eprintln!("{} {state} deliveries, e.g. {:?}", left.len(), left.first());
            }
        }
        for s in self.victoria.export(r#"{__name__=~".+"}"#).await {
            let labels: Vec<String> = s.metric.iter().map(|(k, v)| format!("{k}={v}")).collect();
            for (t, v) in s.timestamps.iter().zip(&s.values) {
                lines.push(format!("point {} {t} {v}", labels.join(",")));
            }
        }
        // A point written again (journal replay) has the same series and
        // time: InfluxDB keeps one; VictoriaMetrics, without
        // deduplication, lists both.
        lines.sort();
        lines.dedup();
        lines
    }
}

/// Outbox deliveries not yet made.
async fn pending(addr: std::net::SocketAddr) -> u64 {
    let r = reqwest::Client::new()
        .get(format!(
            "http://{addr}/api/v1/webhooks/deliveries?state=pending&limit=1000"
        ))
        .bearer_auth(TEST_ADMIN)
        .timeout(Duration::from_secs(1))
        .send()
        .await;
    let Ok(r) = r else { return 0 };
    let body: serde_json::Value =
        serde_json::from_slice(&r.bytes().await.unwrap_or_default()).unwrap_or_default();
    body.as_array().map_or(0, |a| a.len() as u64)
}

/// `/api/v1/stats`, or `None` while ioc is not answering.
async fn stats(addr: std::net::SocketAddr) -> Option<serde_json::Value> {
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/stats"))
        .bearer_auth(TEST_ADMIN)
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .ok()?;
    serde_json::from_slice(&r.bytes().await.ok()?).ok()
}

/// An `ioc` process, killed if the test ends (or fails) with it running.
struct Ioc(Child);

impl Drop for Ioc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stop(mut ioc: Ioc) {
    let child = &mut ioc.0;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "ioc did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill(mut ioc: Ioc) {
    ioc.0.kill().unwrap();
    ioc.0.wait().unwrap();
}

/// When a run is killed.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// After this long.
    After(Duration),
    /// While a checkpoint directory is being written (`.tmp`).
    InCheckpoint,
    /// As soon as it says it restores a checkpoint (the journal replay follows).
    AtRestore,
}

async fn uninterrupted(source: Source, readings: &[(String, String, Vec<u8>)]) -> Vec<String> {
    let rig = Rig::new(source);
    let config = rig.config();
    let child = rig.spawn(&config, &Arc::default());
    common::wait_for_port(([127, 0, 0, 1], rig.http_port).into(), "ioc");
    rig.feed(readings.to_vec()).await;
    rig.quiet().await;
    stop(child);
    rig.outcome().await
}

async fn killed(source: Source, readings: &[(String, String, Vec<u8>)], seed: u64) -> Vec<String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let kills: usize = std::env::var("IOC_FAULT_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(5);
    // Random times, one in a checkpoint write, one at a restore (never
    // first: the first start has nothing to restore).
    let mut plan: Vec<Kill> = (0..kills - 2)
        .map(|_| Kill::After(Duration::from_millis(rng.random_range(150..1200))))
        .collect();
    let at = rng.random_range(0..plan.len());
    plan.insert(at, Kill::InCheckpoint);
    let at = rng.random_range(1..=plan.len());
    plan.insert(at, Kill::AtRestore);
    eprintln!("fault plan (seed {seed}): {plan:?}");
    let rig = Rig::new(source);
    let config = rig.config();
    let checkpoints = rig.dir.path().join("state/checkpoints");
    let feed = {
        let readings = readings.to_vec();
        let rig = &rig;
        async move { rig.feed(readings).await }
    };
    let faults = async {
        for k in &plan {
            let restored = Arc::new(AtomicBool::new(false));
            let child = rig.spawn(&config, &restored);
            match *k {
                Kill::After(d) => {
                    // Counted from when this run takes readings (a Kafka
                    // consumer first waits for the group to let it in).
                    let addr = ([127, 0, 0, 1], rig.http_port).into();
                    let wait = match rig.source {
                        Source::Mqtt => Duration::from_secs(2),
                        Source::Kafka => Duration::from_secs(15),
                    };
                    let deadline = Instant::now() + wait;
                    while Instant::now() < deadline {
                        let taking = stats(addr)
                            .await
                            .is_some_and(|s| s["ingest"]["received"].as_u64() > Some(0));
                        if taking {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    tokio::time::sleep(d).await;
                }
                Kill::InCheckpoint => {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while Instant::now() < deadline {
                        let writing = std::fs::read_dir(&checkpoints).is_ok_and(|d| {
                            d.filter_map(Result::ok)
                                .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                        });
                        if writing {
                            eprintln!("killed while a checkpoint was being written");
                            break;
                        }
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                }
                Kill::AtRestore => {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while !restored.load(Ordering::SeqCst) && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                    if restored.load(Ordering::SeqCst) {
                        eprintln!("killed as the restart restored its checkpoint");
                    }
                }
            }
            kill(child);
        }
    };
    tokio::join!(feed, faults);
    let child = rig.spawn(&config, &Arc::default());
    common::wait_for_port(([127, 0, 0, 1], rig.http_port).into(), "ioc");
    rig.quiet().await;
    stop(child);
    rig.outcome().await
}

async fn compare(source: Source) {
    let seed = std::env::var("IOC_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let readings = scenario();
    let want = uninterrupted(source, &readings).await;
    let count = |p: &str| want.iter().filter(|l| l.starts_with(p)).count();
    eprintln!(
        "uninterrupted: {} alert changes, {} points",
        count("change"),
        count("point")
    );
    assert!(
        want.iter().any(|l| l.contains("river_level")),
        "no flood alert"
    );
    assert!(
        want.iter().any(|l| l.contains("rain_")),
        "no rainfall alert"
    );
    assert!(
        want.iter()
            .any(|l| l.contains("rainfall_mm_3h") || l.contains("window")),
        "no window"
    );
    let got = killed(source, &readings, seed).await;
    if got != want {
        let missing: Vec<&String> = want
            .iter()
            .filter(|l| got.binary_search(l).is_err())
            .collect();
        let extra: Vec<&String> = got
            .iter()
            .filter(|l| want.binary_search(l).is_err())
            .collect();
        if std::env::var_os("IOC_FAULT_DUMP").is_some() {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
            std::fs::write(dir.join("fault-uninterrupted.txt"), want.join("\n")).unwrap();
            std::fs::write(dir.join("fault-killed.txt"), got.join("\n")).unwrap();
        }
        // The uninterrupted run's lines for the same series and time.
        let near = |l: &str| -> Vec<&String> {
            let key: String = l.rsplit_once(' ').map_or(l, |x| x.0).to_owned();
            want.iter()
                .filter(|w| w.starts_with(&key))
                .take(3)
                .collect()
        };
        panic!(
            "{source:?}, seed {seed} (IOC_FAULT_SEED={seed} repeats it): the killed run differs \
             from the uninterrupted one ({} against {} lines).\nfirst missing: {:?}\nfirst extra: {:?}\n\
             uninterrupted at that place: {:?}\nmissing {} lines, extra {} lines; extra: {:#?}",
            got.len(),
            want.len(),
            missing.first(),
            extra.first(),
            extra.first().map(|l| near(l)),
            missing.len(),
            extra.len(),
            extra.iter().take(8).collect::<Vec<_>>(),
        );
    }
    eprintln!("{source:?}, seed {seed}: {} lines, the same", want.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_through_mosquitto_loses_and_repeats_nothing() {
    compare(Source::Mqtt).await;
}

/// Through Tansu, one partition: a restart reads on from the offset its
/// checkpoint keeps (whatever the group committed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_through_kafka_loses_and_repeats_nothing() {
    compare(Source::Kafka).await;
}
