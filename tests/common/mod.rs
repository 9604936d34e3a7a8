//! Helpers for end-to-end tests: free ports, a running system, real MQTT
//! and WebSocket clients.

#![allow(dead_code, clippy::unwrap_used)]

#[allow(dead_code)]
pub mod cert;
#[allow(dead_code)]
pub mod oidc;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use ioc::config::Config;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// `n` loopback addresses (`127.0.0.1:port`) free a moment ago: the
/// `cluster.hosts` of a test cluster.
pub fn cluster_hosts(n: usize) -> Vec<String> {
    (0..n)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect()
}

/// `items` as the inside of a TOML array of strings: `"a", "b"`.
pub fn toml_strings(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `n`th positional command-line argument (benchmarks), or `default`.
pub fn arg<T: std::str::FromStr>(n: usize, default: T) -> T {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// Waits until something accepts TCP connections at `addr`.
pub fn wait_for_port(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {addr} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Polls `done` every 50 ms; fails the test after `secs` seconds.
pub async fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the async `done` every 50 ms; fails the test after `secs`.
pub async fn wait_for_async(what: &str, secs: u64, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `ioc` binary with the configuration file `config`, once its HTTP
/// port answers (warnings and errors on the test's stderr).
pub fn run_ioc(config: &std::path::Path, http_port: u16) -> Child {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ioc"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("cannot start ioc");
    wait_for_port(([127, 0, 0, 1], http_port).into(), "ioc");
    child
}

/// A configuration for tests: HTTP on a free port, no simulator, MQTT at `mqtt_url`.
pub fn test_config(mqtt_url: String, embedded: bool) -> Config {
    let mut c = Config::default();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.http.admin_token = Some(TEST_ADMIN.into());
    c.mqtt.url = mqtt_url;
    c.mqtt.client_id = format!("ioc-test-{}", free_port());
    c.embedded_broker.enabled = embedded;
    c.simulator.enabled = false;
    // A fresh directory: a leftover one of an earlier run (same port
    // number) would add its dead letters to this run's.
    let dir = std::env::temp_dir().join(format!("ioc-test-{}-{}", std::process::id(), free_port()));
    let _ = std::fs::remove_dir_all(&dir);
    c.dead_letter.file = dir.join("dead-letters.jsonl");
    c.alerts.database = format!("sqlite://{}", dir.join("alerts.db").display());
    c.checkpoint.dir = dir.join("state");
    c.http_ingest.tokens = vec![ioc_ingest::http::IngestToken {
        name: "test-gateway".into(),
        token: TEST_TOKEN.into(),
        devices: vec!["*".into()],
    }];
    c
}

/// The HTTP ingest token [`test_config`] configures.
pub const TEST_TOKEN: &str = "test-token-0123456789abcdef";

/// The admin token [`test_config`] configures, which [`http`] and
/// [`Screen`] present unless told otherwise.
pub const TEST_ADMIN: &str = "test-admin-token-0123456789";

/// Every dead letter written to the file of `config` (after shutdown).
pub fn dead_letters(config: &Config) -> Vec<ioc_ingest::DeadLetter> {
    let (letters, problems) = ioc_ingest::deadletter::read_all(&config.dead_letter.file)
        .unwrap_or_else(|e| panic!("reading dead letters: {e}"));
    assert!(problems.is_empty(), "{problems:?}");
    letters
}

/// A Mosquitto broker on a free loopback port, stopped on drop.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Anonymous, plain MQTT on a free port.
    pub fn start() -> Mosquitto {
        Mosquitto::start_with(|port, _| {
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        })
    }

    /// Mosquitto with the configuration `conf(port, dir)` returns (plus
    /// logging to stderr); `dir` is a temporary directory for its files.
    pub fn start_with(conf: impl FnOnce(u16, &std::path::Path) -> String) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let text = conf(port, dir.path());
        let mut m = Mosquitto {
            child: Self::spawn(dir.path(), &text),
            port,
            _dir: dir,
        };
        m.wait();
        m
    }

    fn spawn(dir: &std::path::Path, text: &str) -> Child {
        let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!("mosquitto is not installed: run tests/run.sh (it installs the Debian package mosquitto), or apt-get install mosquitto")
            });
        let conf = dir.join("mosquitto.conf");
        // As root, mosquitto would switch to its own user, which cannot
        // read the test's private temporary directory.
        std::fs::write(
            &conf,
            format!("{text}\nuser root\nlog_dest stderr\nlog_type error\n"),
        )
        .unwrap();
        Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start mosquitto")
    }

    fn wait(&mut self) {
        wait_for_port(SocketAddr::from(([127, 0, 0, 1], self.port)), "mosquitto");
    }

    /// Stops the broker gracefully (SIGTERM: it saves its persistence file)
    /// and starts it again with the same configuration and port.
    pub fn restart(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(self._dir.path().join("mosquitto.conf")).unwrap();
        let text = text.replace("\nuser root\nlog_dest stderr\nlog_type error\n", "");
        self.child = Self::spawn(self._dir.path(), &text);
        self.wait();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A device-side MQTT client, as a real gauge would use.
pub struct Device {
    pub client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Device {
    pub async fn connect(port: u16) -> Device {
        Device::connect_with(port, |_| {}).await
    }

    /// A device whose options `tune` adjusts (e.g. to set a last will).
    pub async fn connect_with(port: u16, tune: impl FnOnce(&mut MqttOptions)) -> Device {
        let mut o = MqttOptions::new(format!("device-{}", free_port()), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(10));
        o.set_max_packet_size(1 << 20, 1 << 20);
        // Like a real gauge: keep the session and retransmit what the
        // broker had not acknowledged when the connection comes back.
        o.set_clean_session(false);
        tune(&mut o);
        let (client, mut eventloop) = AsyncClient::new(o, 64);
        let task = tokio::spawn(async move {
            loop {
                if eventloop.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Device { client, task }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("publish");
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Leaves a retained message at `topic` on the broker at `port`, and
/// returns once a new subscriber gets it.
pub async fn retain(port: u16, topic: &str, payload: &[u8]) {
    let device = Device::connect(port).await;
    device
        .client
        .publish(topic, QoS::AtLeastOnce, true, payload.to_vec())
        .await
        .expect("publish");
    wait_for_async("the retained message on the broker", 10, async || {
        let w = Watcher::subscribe(port, topic).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        w.messages().iter().any(|m| m.2)
    })
    .await;
}

/// A received MQTT message: `(topic, payload, retained)`.
pub type Received = (String, Vec<u8>, bool);

/// An MQTT subscriber that records every message it receives.
pub struct Watcher {
    seen: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    /// Subscribes to `filter` (QoS 1) on the broker at `port`.
    /// Returns once the broker acknowledged the subscription, so that what
    /// it has not sent by then (retained messages come right after) was not
    /// there.
    pub async fn subscribe(port: u16, filter: &str) -> Watcher {
        let o = MqttOptions::new(format!("watcher-{}", free_port()), "127.0.0.1", port);
        let (client, mut eventloop) = AsyncClient::new(o, 64);
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let into = seen.clone();
        let (subscribed, acked) = tokio::sync::oneshot::channel();
        let mut subscribed = Some(subscribed);
        let task = tokio::spawn(async move {
            let _client = client;
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        if let Some(s) = subscribed.take() {
                            let _ = s.send(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        into.lock()
                            .unwrap()
                            .push((p.topic, p.payload.to_vec(), p.retain));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), acked)
            .await
            .expect("the broker did not acknowledge the subscription")
            .unwrap();
        Watcher { seen, task }
    }

    /// Everything received so far.
    pub fn messages(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A live-feed client for benchmarks, subscribed to everything. Snapshots
/// of large catalogues are tens of megabytes in one frame, beyond
/// tungstenite's default limits, so its limits are 512 MiB. Its read
/// buffer is 16 KiB: tungstenite zeroes the whole buffer on every read, and
/// its default 128 KiB made the benchmarks' clients the busiest part of
/// the machine.
pub async fn live_subscriber(
    http: SocketAddr,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(512 << 20))
        .max_frame_size(Some(512 << 20))
        .read_buffer_size(16 << 10);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(
        format!("ws://{http}/api/v1/live"),
        Some(config),
        true,
    )
    .await
    .expect("WebSocket connect");
    let subscribe = serde_json::json!({"type": "subscribe", "token": TEST_ADMIN});
    ws.send(Message::Text(subscribe.to_string().into()))
        .await
        .expect("WebSocket send");
    ws
}

/// A control-room WebSocket client.
pub struct Screen {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    pub last_seq: Option<u64>,
}

impl Screen {
    /// Connects and subscribes to everything, with [`TEST_ADMIN`].
    pub async fn connect(http: SocketAddr) -> Screen {
        Screen::subscribe(
            http,
            serde_json::json!({"type": "subscribe", "token": TEST_ADMIN}),
        )
        .await
    }

    /// Connects and sends `request` (a `subscribe`) first.
    pub async fn subscribe(http: SocketAddr, request: Value) -> Screen {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/api/v1/live"))
            .await
            .expect("WebSocket connect");
        let mut screen = Screen { ws, last_seq: None };
        screen.send(&request).await;
        screen
    }

    /// Sends a client message.
    pub async fn send(&mut self, request: &Value) {
        self.ws
            .send(Message::Text(request.to_string().into()))
            .await
            .expect("WebSocket send");
    }

    /// The next JSON message, checking that sequence numbers have no gaps.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("no live message within 10 s")?;
            match msg.expect("WebSocket error") {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("live message is JSON");
                    let seq = v["seq"].as_u64().expect("every live message has a seq");
                    if let Some(prev) = self.last_seq {
                        assert_eq!(seq, prev + 1, "live sequence has a gap");
                    }
                    self.last_seq = Some(seq);
                    return Some(v);
                }
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// Reads until a state of `device` arrives (with sequence number `seq`,
    /// when given).
    pub async fn device_state(&mut self, device: &str, seq: Option<u64>) {
        loop {
            let v = self
                .next()
                .await
                .expect("live feed closed while waiting for a device state");
            if v["devices"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|d| d["device"] == device && seq.is_none_or(|s| d["seq"] == s))
            {
                return;
            }
        }
    }

    /// Reads until an alert about `subject` with `status` arrives; returns it.
    pub async fn alert(&mut self, subject: &str, status: &str) -> Value {
        self.alert_where(|a| a["subject"] == subject && a["status"] == status)
            .await
    }

    /// Reads until an alert for which `want` holds arrives; returns it.
    pub async fn alert_where(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self
                .next()
                .await
                .expect("live feed closed while waiting for an alert");
            if let Some(a) = v["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| want(a))
            {
                return a.clone();
            }
        }
    }
}

/// The flood alarm levels (BĐ1, BĐ2, BĐ3) of river gauge `gauge`, in metres.
pub fn alarm_levels(registry: &ioc_devices::Registry, gauge: &str) -> [f64; 3] {
    registry
        .get(gauge)
        .and_then(|d| d.thresholds.alarm_levels_m)
        .unwrap_or_else(|| panic!("{gauge} is not a river gauge with alarm levels"))
}

/// Publishes readings of river gauge `gauge` at `level_m` (sequence 1, 2,
/// …) until the screen shows its alert open: the MQTT source subscribes
/// right after connecting, so the first readings may come too early.
/// Returns the alert and the last sequence number used.
pub async fn publish_until_open(
    device: &Device,
    screen: &mut Screen,
    gauge: &str,
    level_m: f64,
) -> (Value, u64) {
    let topic = format!("ioc/v1/river_gauge/{gauge}/telemetry");
    let mut seq = 0;
    loop {
        seq += 1;
        device
            .publish(&topic, river_reading(gauge, seq, level_m))
            .await;
        match tokio::time::timeout(Duration::from_secs(2), screen.alert(gauge, "open")).await {
            Ok(a) => return (a, seq),
            Err(_) => assert!(seq < 10, "no alert after {seq} readings"),
        }
    }
}

/// A telemetry envelope for a river gauge at the current time.
pub fn river_reading(device: &str, seq: u64, level_m: f64) -> String {
    serde_json::json!({
        "v": 1,
        "device": device,
        "ts": ioc_schemas::Timestamp::now().to_rfc3339(),
        "seq": seq,
        "hydrology": {"water_level_m": level_m}
    })
    .to_string()
}

/// A minimal HTTP/1.1 request over a plain TCP stream (keeps the test's
/// dependencies small): the status code and the body parsed as JSON
/// (`Null` when it is not JSON). Without an `Authorization` header in
/// `headers` it presents [`TEST_ADMIN`]; an empty one sends none.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        // An empty Authorization stands for none at all.
        if !(v.is_empty() && k.eq_ignore_ascii_case("authorization")) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
    {
        head.push_str(&format!("Authorization: Bearer {TEST_ADMIN}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (413) before reading a large body.
    let _ = s.write_all(body).await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{path}: no status in {head:?}"));
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// GET a JSON document; fails unless the status is 200.
pub async fn get_json(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = http(addr, "GET", path, &[], b"").await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// A Tansu Kafka-protocol broker (in-memory storage) on a free loopback
/// port, stopped on drop.
pub struct Tansu {
    child: Child,
    pub port: u16,
    _dir: Option<tempfile::TempDir>,
    /// SASL/SCRAM-SHA-512 user and password the helpers connect with, when
    /// the broker requires authentication.
    pub user: Option<(String, String)>,
}

fn tansu_binary() -> std::path::PathBuf {
    std::env::var_os("HOME")
            .map(|h| std::path::Path::new(&h).join(".cargo/bin/tansu"))
            .filter(|p| p.exists())
            .or_else(|| {
                std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                    .map(|d| d.join("tansu"))
                    .find(|p| p.exists())
            })
            .unwrap_or_else(|| {
                panic!("tansu is not installed: run tests/run.sh (it runs `cargo install --locked tansu --features dynostore,libsql`)")
            })
}

impl Tansu {
    pub fn start() -> Tansu {
        Tansu::spawn_in(&std::env::temp_dir(), "memory://tansu/", false, free_port())
    }

    /// A broker on SQLite storage, which keeps every record's offset: a
    /// fetch from an offset inside a producer's batch starts there, as
    /// Kafka's does. The in-memory (object store) engine of Tansu 0.6
    /// starts at the next batch instead (`dynostore.rs`, `fetch`:
    /// `offsets.split_off(&offset)`), skipping the rest of the batch: a
    /// consumer resuming at a checkpoint's offset would lose it.
    #[allow(dead_code)]
    pub fn start_sqlite() -> Tansu {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tansu::spawn_in(dir.path(), "sqlite://tansu.db", false, free_port());
        t._dir = Some(dir);
        t
    }

    /// A broker that requires SASL authentication, with one SCRAM-SHA-512
    /// user. Tansu's user command does not authenticate, so the user is
    /// created while the broker is open, then the broker restarts on the
    /// same (SQLite) storage with authentication required.
    pub fn start_with_user(user: &str, password: &str) -> Tansu {
        let dir = tempfile::tempdir().unwrap();
        // Tansu reads a sqlite:// path relative to its working directory.
        let storage = "sqlite://tansu.db";
        let port = free_port();
        let mut open = Tansu::spawn_in(dir.path(), storage, false, port);
        let status = Command::new(tansu_binary())
            .args(["user", "create", "--mechanism", "scram512", "--broker"])
            .arg(format!("tcp://127.0.0.1:{port}"))
            .args([user, password])
            .stdout(Stdio::null())
            .status()
            .expect("cannot run tansu user create");
        assert!(status.success(), "tansu user create failed");
        let _ = open.child.kill();
        let _ = open.child.wait();
        let mut t = Tansu::spawn_in(dir.path(), storage, true, port);
        t.user = Some((user.into(), password.into()));
        t._dir = Some(dir);
        t
    }

    fn spawn_in(dir: &std::path::Path, storage: &str, authentication: bool, port: u16) -> Tansu {
        let url = format!("tcp://127.0.0.1:{port}");
        let mut command = Command::new(tansu_binary());
        command
            .current_dir(dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", storage]);
        if authentication {
            command.arg("--authentication");
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start tansu");
        wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)), "tansu");
        Tansu {
            child,
            port,
            _dir: None,
            user: None,
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A client configuration for this broker (with its SASL user, if any).
    fn client(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap());
        if let Some((user, password)) = &self.user {
            c.set("security.protocol", "sasl_plaintext")
                .set("sasl.mechanism", "SCRAM-SHA-512")
                .set("sasl.username", user)
                .set("sasl.password", password);
        }
        c
    }

    /// Creates a topic with `partitions` partitions.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            self.client().create().unwrap();
        let results = admin
            .create_topics(
                &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .unwrap();
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
        }
    }

    /// Produces `(partition, key, value)` records and waits for every acknowledgement.
    pub fn produce(&self, topic: &str, records: &[(i32, Option<&str>, Vec<u8>)]) {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let producer: BaseProducer = self.client().set("linger.ms", "5").create().unwrap();
        for (partition, key, value) in records {
            let mut r = BaseRecord::to(topic).partition(*partition).payload(value);
            if let Some(k) = key {
                r = r.key(*k);
            }
            while let Err((e, back)) = producer.send(r) {
                assert!(
                    matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull
                        )
                    ),
                    "{e}"
                );
                producer.poll(Duration::from_millis(10));
                r = back;
            }
            producer.poll(Duration::ZERO);
        }
        producer
            .flush(Duration::from_secs(30))
            .expect("records acknowledged");
    }

    /// Reads every record of `topic` from the start (values only).
    pub fn read_all(&self, topic: &str, expected: usize) -> Vec<Vec<u8>> {
        self.read_keyed(topic, expected)
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    /// Reads every record of `topic` from the start: `(key, value)`.
    pub fn read_keyed(&self, topic: &str, expected: usize) -> Vec<(String, Vec<u8>)> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::message::Message;
        let consumer: BaseConsumer = self
            .client()
            .set("group.id", format!("reader-{}", free_port()))
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut out = Vec::new();
        while out.len() < expected && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                out.push((key, m.payload().unwrap_or_default().to_vec()));
            }
        }
        out
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A river reading as bytes, with an explicit event time.
pub fn river_reading_at(device: &str, seq: u64, level_m: f64, ts_ms: i64) -> Vec<u8> {
    serde_json::json!({
        "v": 1, "device": device, "ts": ts_ms, "seq": seq,
        "hydrology": {"water_level_m": level_m}
    })
    .to_string()
    .into_bytes()
}

/// River readings `(device, seq, level, event time)` as one NDJSON body.
pub fn river_ndjson<'a>(readings: impl IntoIterator<Item = (&'a str, u64, f64, i64)>) -> Vec<u8> {
    readings
        .into_iter()
        .flat_map(|(d, seq, level, ts)| {
            let mut l = river_reading_at(d, seq, level, ts);
            l.push(b'\n');
            l
        })
        .collect()
}

/// `POST /api/v1/ingest` of an NDJSON body with [`TEST_TOKEN`].
pub async fn post_ingest(addr: std::net::SocketAddr, body: &[u8]) -> (u16, Value) {
    let auth = format!("Bearer {TEST_TOKEN}");
    http(
        addr,
        "POST",
        "/api/v1/ingest",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-ndjson"),
        ],
        body,
    )
    .await
}

/// An engine, the shared ingest path and a Kafka source, as the app wires
/// them, recording every device state the engine emits.
pub struct Pipeline {
    /// Stops the source when the pipeline is dropped (a failed test too).
    cancel: tokio_util::sync::DropGuard,
    source: std::thread::JoinHandle<()>,
    engine: ioc_processing::Engine,
    outputs: std::thread::JoinHandle<Vec<(String, u64)>>,
    writer: ioc_ingest::deadletter::Writer,
    pub stats: std::sync::Arc<ioc_ingest::IngestStats>,
}

impl Pipeline {
    pub fn start(
        config: ioc_ingest::kafka::KafkaConfig,
        registry: std::sync::Arc<ioc_devices::Registry>,
        sink: Box<dyn ioc_ingest::deadletter::Sink>,
    ) -> Pipeline {
        use ioc_schemas::EngineOutput;
        let (tx, rx) = flume::bounded(1 << 16);
        let outputs = std::thread::spawn(move || {
            rx.iter()
                .flatten()
                .filter_map(|o| match o {
                    EngineOutput::Device(d) => Some((d.device.to_string(), d.seq)),
                    _ => None,
                })
                .collect()
        });
        let (engine, input) =
            ioc_processing::Engine::start(&Default::default(), registry.clone(), tx).unwrap();
        let (dead_letters, writer) = ioc_ingest::DeadLetters::start(sink);
        let stats = std::sync::Arc::new(ioc_ingest::IngestStats::default());
        let ingestor = ioc_ingest::Ingestor::new(
            registry,
            ioc_schemas::Limits::default(),
            input,
            dead_letters,
            stats.clone(),
        );
        let cancel = tokio_util::sync::CancellationToken::new();
        let source = ioc_ingest::kafka::KafkaSource::new(config, ingestor)
            .spawn(cancel.clone())
            .unwrap();
        Pipeline {
            cancel: cancel.drop_guard(),
            source,
            engine,
            outputs,
            writer,
            stats,
        }
    }

    /// Stops (committing), drains the engine, and returns every
    /// `(device, seq)` it processed, in output order.
    pub fn stop(self) -> Vec<(String, u64)> {
        drop(self.cancel);
        self.source.join().unwrap();
        self.engine.join().unwrap();
        self.writer.join();
        self.outputs.join().unwrap()
    }
}

/// VictoriaMetrics (Debian package `victoria-metrics`) on a free loopback
/// port: it takes the InfluxDB v2 write API, and `export` reads points back.
/// The port and data directory stay the same across [`Victoria::stop`] and
/// [`Victoria::run`], as a database restarted by an operator would.
pub struct Victoria {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// One series from VictoriaMetrics' export.
#[derive(Debug, serde::Deserialize)]
pub struct Series {
    pub metric: std::collections::BTreeMap<String, String>,
    pub values: Vec<f64>,
    pub timestamps: Vec<i64>,
}

impl Victoria {
    /// Started and listening.
    pub fn start() -> Victoria {
        let mut v = Victoria::reserve();
        v.run();
        v
    }

    /// A port and a data directory, with nothing listening yet.
    pub fn reserve() -> Victoria {
        Victoria {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Starts (or restarts) the database.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "VictoriaMetrics is already running");
        let binary = "/usr/bin/victoria-metrics";
        assert!(
            std::path::Path::new(binary).exists(),
            "VictoriaMetrics is not installed: run tests/run.sh (it installs the Debian package victoria-metrics), or apt-get install victoria-metrics"
        );
        let child = Command::new(binary)
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!("-storageDataPath={}", self.dir.path().display()))
            .arg("-retentionPeriod=100y")
            .arg("-search.latencyOffset=0s")
            // A point written again (ioc's journal replay after a crash)
            // replaces the first, as in InfluxDB.
            .arg("-dedup.minScrapeInterval=1ms")
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start victoria-metrics");
        self.child = Some(child);
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], self.port)),
            "victoria-metrics",
        );
    }

    /// Stops it gracefully (SIGTERM: it flushes what it took to disk).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every series matching the selector, after making recent writes
    /// searchable.
    pub async fn export(&self, selector: &str) -> Vec<Series> {
        let client = reqwest::Client::new();
        let base = self.url();
        client
            .get(format!("{base}/internal/force_flush"))
            .send()
            .await
            .unwrap();
        let url = reqwest::Url::parse_with_params(
            &format!("{base}/api/v1/export"),
            [("match[]", selector)],
        )
        .unwrap();
        let text = client.get(url).send().await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Cores and CPU model of this machine, for benchmark results.
pub fn bench_machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned());
    serde_json::json!({
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": model,
    })
}

/// The commit being measured, if this is a git checkout.
pub fn bench_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Writes a benchmark's JSON result to `$IOC_BENCH_OUT`, or to
/// `target/bench/{name}.json`, and returns the path.
pub fn write_bench_result(name: &str, result: &Value) -> std::path::PathBuf {
    let out = std::env::var_os("IOC_BENCH_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/bench")
                .join(format!("{name}.json"))
        });
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&out, serde_json::to_string_pretty(result).unwrap()).unwrap();
    out
}

/// CPU seconds used so far by this process's threads whose name starts
/// with `prefix` (Linux; names are cut to 15 bytes).
pub fn threads_cpu_seconds(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            comm.trim().starts_with(prefix).then_some(())?;
            stat_cpu_seconds(&t.path().join("stat"))
        })
        .sum()
}

/// utime + stime, in seconds, from a `/proc/.../stat` file.
pub fn stat_cpu_seconds(path: &std::path::Path) -> Option<f64> {
    let tick = 100.0; // USER_HZ on Linux
    let stat = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    Some((utime + stime) / tick)
}

/// CPU seconds used so far by this whole process.
pub fn process_cpu_seconds() -> f64 {
    stat_cpu_seconds("/proc/self/stat".as_ref()).expect("cannot read /proc/self/stat")
}

/// CPU seconds used so far by the calling thread: to the nanosecond from
/// `/proc/thread-self/schedstat` where the kernel keeps it, else in the
/// 10 ms ticks of `/proc/thread-self/stat`.
pub fn own_thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(|ns| ns as f64 / 1e9)
        .or_else(|| stat_cpu_seconds("/proc/thread-self/stat".as_ref()))
        .expect("cannot read /proc/thread-self/stat")
}
