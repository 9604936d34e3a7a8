//! The `ioc` configuration: defaults → file → `IOC_*` environment → flags.
//!
//! Every key is documented in `deploy/ioc.example.toml`. Environment
//! variables use `__` between levels: `IOC_HTTP__LISTEN=0.0.0.0:8080`,
//! `IOC_SIMULATOR__ENABLED=false`. [`Config::problems`] lists every problem
//! with the path of its key; `ioc validate` prints them without starting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ioc_devices::Scenario;
use ioc_ingest::deadletter::DeadLetterConfig;
use ioc_ingest::http::HttpIngestConfig;
use ioc_ingest::kafka::KafkaConfig;
use ioc_ingest::mqtt::MqttSourceConfig;
use ioc_timeseries::InfluxConfig;
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The HTTP server (REST, WebSocket, control-room page).
    pub http: HttpConfig,
    /// The MQTT source.
    pub mqtt: MqttSourceConfig,
    /// The Kafka source and dead-letter topic.
    pub kafka: KafkaConfig,
    /// The in-process MQTT broker.
    pub embedded_broker: EmbeddedBrokerConfig,
    /// Where devices and areas come from.
    pub catalogue: CatalogueConfig,
    /// The built-in device simulator.
    pub simulator: SimulatorConfig,
    /// The processing engine.
    pub processing: ProcessingConfig,
    /// `POST /api/v1/ingest`.
    pub http_ingest: HttpIngestConfig,
    /// Where rejected messages go.
    pub dead_letter: DeadLetterConfig,
    /// Time series to InfluxDB (or anything that speaks its v2 write API).
    pub influx: InfluxConfig,
    /// The rules file.
    pub rules: RulesConfig,
    /// The alert store.
    pub alerts: ioc_alerts::AlertsConfig,
    /// Durable engine state: checkpoints and the ingest journal.
    pub checkpoint: CheckpointConfig,
    /// One process of a cluster; without `hosts`, ioc runs alone.
    pub cluster: ClusterConfig,
}

/// One process of a cluster: several `ioc` processes run one dataflow,
/// connected by timely's own networking. Give every process the same
/// `hosts` and each its own `process` (`IOC_CLUSTER__PROCESS=1`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `host:port` of every process, in process order: where each listens
    /// for the others. Empty (or one entry): ioc runs alone.
    pub hosts: Vec<String>,
    /// This process's index in `hosts`, from 0.
    pub process: usize,
    /// The processes whose screens show the whole deployment: each gets
    /// the other processes' device states, windows and tracks. Empty: every
    /// process. Listing fewer saves the others the decoding (point the
    /// control room at these); alerts reach every process either way.
    pub front: Vec<usize>,
}

impl ClusterConfig {
    /// How many processes run the dataflow (1 alone).
    pub fn processes(&self) -> usize {
        self.hosts.len().max(1)
    }

    /// Whether this process shares the dataflow with others.
    pub fn is_cluster(&self) -> bool {
        self.processes() > 1
    }

    /// The engine's view of it, with where other processes' outputs go;
    /// `None` alone.
    pub fn engine(
        &self,
        remote_outputs: flume::Sender<Vec<ioc_schemas::EngineOutput>>,
    ) -> Option<ioc_processing::ClusterConfig> {
        self.is_cluster().then(|| ioc_processing::ClusterConfig {
            hosts: self.hosts.clone(),
            process: self.process,
            remote_outputs: Some(remote_outputs),
            front: self.front.clone(),
        })
    }
}

/// Durable engine state: where checkpoints and the ingest journal go, how
/// often a checkpoint is taken and how many are kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Keep state across restarts. Off, a restart forgets every window,
    /// rule state, geofence and track, and readings are acknowledged as
    /// soon as the engine has them in memory.
    pub enabled: bool,
    /// Directory for `checkpoints/` and `journal/`.
    pub dir: PathBuf,
    /// Time between checkpoints: a restart replays at most about this
    /// much of the journal.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Complete checkpoints kept (the older ones are the fall-back when
    /// the newest is damaged).
    pub retain: usize,
    /// Most bytes the journal may hold; beyond it ingestion waits (MQTT and
    /// Kafka messages stay unacknowledged, HTTP requests wait) until a
    /// checkpoint cuts it.
    pub journal_max_bytes: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        let d = ioc_processing::DurableConfig::default();
        CheckpointConfig {
            enabled: true,
            dir: PathBuf::from("data/state"),
            interval: d.interval,
            retain: d.retain,
            journal_max_bytes: d.journal_max_bytes,
        }
    }
}

impl CheckpointConfig {
    /// The engine's settings, `None` when off.
    pub fn durable(&self) -> Option<ioc_processing::DurableConfig> {
        self.enabled.then(|| ioc_processing::DurableConfig {
            dir: self.dir.clone(),
            interval: self.interval,
            retain: self.retain,
            journal_max_bytes: self.journal_max_bytes,
        })
    }
}

/// Where the rules come from and how they are reloaded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// The rules file (see `deploy/rules.toml`). Unset: the copy of
    /// `deploy/rules.toml` built into the binary (not reloadable from disk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// How often the file (and the watch lists it names) is checked for
    /// changes; `0s` turns watching off (reload through the API only).
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
    /// Recorded readings that backtests from the page run over: an NDJSON
    /// file of envelopes (`ioc simulate --out` records one) or a state
    /// directory whose journal to read. Unset: `checkpoint.dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backtest_input: Option<PathBuf>,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            file: None,
            watch_interval: Duration::from_secs(2),
            backtest_input: None,
        }
    }
}

/// HTTP server settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Bearer token of the `admin` role (named `admin`). Unset: a random
    /// token is made at start and printed in the log with the page's
    /// login link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// Who else may call: API tokens with roles, JWT verification, and
    /// whether callers without a token get a role.
    #[serde(default)]
    pub auth: ioc_dashboard_api::auth::AuthConfig,
    /// Recent readings kept in memory for the page's charts.
    #[serde(default)]
    pub history: ioc_dashboard_api::history::HistoryConfig,
    /// Send every audit entry to this syslog collector as well (RFC 5424;
    /// `udp://host:514` or `tcp://host:601`). Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_syslog: Option<String>,
    /// Serve HTTPS with this certificate (reloaded when it changes).
    /// Unset: plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ioc_dashboard_api::tls::TlsConfig>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_token: None,
            auth: Default::default(),
            history: Default::default(),
            audit_syslog: None,
            tls: None,
        }
    }
}

/// In-process broker settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedBrokerConfig {
    /// Start an MQTT broker inside the process, listening on `mqtt.url`.
    /// Turn off to use your own broker.
    pub enabled: bool,
    /// Largest MQTT payload the embedded broker accepts, in bytes.
    pub max_payload_bytes: usize,
}

impl Default for EmbeddedBrokerConfig {
    fn default() -> Self {
        EmbeddedBrokerConfig {
            enabled: true,
            max_payload_bytes: 256 * 1024,
        }
    }
}

/// Catalogue files; the built-in Sơn La demo when unset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogueConfig {
    /// Devices GeoJSON file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<PathBuf>,
    /// Administrative areas GeoJSON file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub areas: Option<PathBuf>,
    /// Zones and assets GeoJSON files, loaded as one set and reloaded when
    /// one changes (see the README's zone file format). Unset: the Sơn La
    /// demo zones built into the binary; `[]`: no zones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<PathBuf>>,
    /// Load tests: the demo catalogue replicated to this many devices
    /// (copies get ids `{id}~{k}`), instead of the files or the demo.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<usize>,
}

/// Built-in simulator settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorConfig {
    /// Publish simulated readings of the whole catalogue to `mqtt.url`.
    pub enabled: bool,
    /// `demo` (every scenario at once), `normal`, `flood`,
    /// `landslide_rain`, `traffic_jam`, `device_outage` or `watchlist_plate`.
    pub scenario: Scenario,
    /// Readings per second, over all devices.
    pub rate: f64,
    /// Seed: the same seed gives the same readings.
    pub seed: u64,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            enabled: true,
            scenario: Scenario::Demo,
            rate: 50.0,
            seed: 42,
        }
    }
}

/// Engine settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessingConfig {
    /// Timely worker threads.
    pub workers: usize,
    /// How far behind the newest event time a reading may arrive and still be on time.
    #[serde(with = "humantime_serde")]
    pub out_of_orderness: Duration,
    /// After this long without readings, event time follows the wall clock.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How far in the future an event time may be (device clock skew).
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// How far in the past an event time may be: older readings are dead-lettered.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Largest accepted telemetry payload, in bytes.
    pub max_payload_bytes: usize,
    /// How far behind the watermark a reading may arrive and still amend
    /// its windows; older readings are dead-lettered as `late`.
    #[serde(with = "humantime_serde")]
    pub lateness: Duration,
    /// Rainfall bucket: the step at which rolling rainfall totals move
    /// (must divide one hour).
    #[serde(with = "humantime_serde")]
    pub rain_bucket: Duration,
    /// Decide a device's rules with each in-order reading (next `seq`)
    /// instead of waiting for the watermark; `false` makes every decision
    /// wait `out_of_orderness`.
    pub per_device_progress: bool,
}

impl ProcessingConfig {
    /// The engine settings these give (no rules, zones or durable state).
    pub fn engine(&self) -> ioc_processing::EngineConfig {
        ioc_processing::EngineConfig {
            workers: self.workers,
            out_of_orderness: self.out_of_orderness,
            idle_timeout: self.idle_timeout,
            per_device_progress: self.per_device_progress,
            lateness: self.lateness,
            rain_bucket: self.rain_bucket,
            ..ioc_processing::EngineConfig::default()
        }
    }
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        let engine = ioc_processing::EngineConfig::default();
        let limits = ioc_schemas::Limits::default();
        ProcessingConfig {
            workers: engine.workers,
            out_of_orderness: engine.out_of_orderness,
            idle_timeout: engine.idle_timeout,
            max_future_skew: Duration::from_millis(limits.max_future_skew_ms as u64),
            max_age: Duration::from_millis(limits.max_age_ms as u64),
            max_payload_bytes: limits.max_payload_bytes,
            lateness: engine.lateness,
            rain_bucket: engine.rain_bucket,
            per_device_progress: engine.per_device_progress,
        }
    }
}

/// Top-level sections, for filtering `IOC_*` variables.
const SECTIONS: [&str; 14] = [
    "alerts",
    "checkpoint",
    "cluster",
    "http",
    "mqtt",
    "kafka",
    "embedded_broker",
    "catalogue",
    "simulator",
    "processing",
    "http_ingest",
    "dead_letter",
    "influx",
    "rules",
];

impl Config {
    /// Loads defaults, then `file` (if any), then `IOC_*` environment variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            anyhow::ensure!(
                path.exists(),
                "configuration file {} does not exist",
                path.display()
            );
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(
            Env::prefixed("IOC_")
                .filter(|k| {
                    SECTIONS.iter().any(|s| {
                        k.as_str()
                            .to_ascii_lowercase()
                            .starts_with(&format!("{s}__"))
                    })
                })
                .split("__"),
        );
        let invalid = |e: figment::Error| {
            let lines: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            anyhow::anyhow!("invalid configuration:\n  - {}", lines.join("\n  - "))
        };
        // Secrets may come from files (`*_file`, as container secrets are
        // mounted): read them in before the settings are checked.
        let mut tree: serde_json::Value = figment.extract().map_err(invalid)?;
        let mut problems = Vec::new();
        read_secret_files(&mut tree, "", &mut problems);
        anyhow::ensure!(
            problems.is_empty(),
            "invalid configuration:\n  - {}",
            problems.join("\n  - ")
        );
        Figment::from(Serialized::defaults(tree))
            .extract()
            .map_err(invalid)
    }

    /// What `ioc validate` warns about without refusing: secrets written in
    /// the configuration file itself (rather than in the environment or a
    /// `*_file`), and tokens shorter than 32 characters.
    pub fn secret_warnings(&self, file: Option<&Path>) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(text) = file.and_then(|f| std::fs::read_to_string(f).ok())
            && let Ok(table) = text.parse::<toml::Table>()
        {
            literal_secrets(&toml::Value::Table(table), "", &mut warnings);
        }
        let mut tokens: Vec<(String, &str)> = Vec::new();
        if let Some(t) = &self.http.admin_token {
            tokens.push(("http.admin_token".into(), t));
        }
        for (i, t) in self.http.auth.tokens.iter().enumerate() {
            tokens.push((format!("http.auth.tokens[{i}] ({})", t.name), &t.token));
        }
        for (i, t) in self.http_ingest.tokens.iter().enumerate() {
            tokens.push((format!("http_ingest.tokens[{i}] ({})", t.name), &t.token));
        }
        for (at, token) in tokens {
            let n = token.chars().count();
            if n < 32 {
                warnings.push(format!(
                    "{at}: the token has {n} characters; use at least 32 random ones"
                ));
            }
        }
        warnings
    }

    /// The problems of a cluster member's configuration: hosts that are
    /// not `host:port` or appear twice, a process index out of range, and
    /// what cannot be one process's own in a cluster.
    fn cluster_problems(&self) -> Vec<String> {
        let c = &self.cluster;
        let mut p = Vec::new();
        for (i, h) in c.hosts.iter().enumerate() {
            let port = h
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            if !matches!(port, Some((host, Ok(_))) if !host.is_empty()) {
                p.push(format!("cluster.hosts[{i}]: {h:?} is not host:port"));
            }
            if c.hosts[..i].contains(h) {
                p.push(format!("cluster.hosts[{i}]: {h:?} is given twice"));
            }
        }
        for (i, f) in c.front.iter().enumerate() {
            if *f >= c.processes() {
                p.push(format!(
                    "cluster.front[{i}]: process {f} is out of range (hosts lists {})",
                    c.hosts.len()
                ));
            }
        }
        if !c.hosts.is_empty() && c.process >= c.hosts.len() {
            p.push(format!(
                "cluster.process: {} is out of range (hosts lists {} processes, numbered from 0)",
                c.process,
                c.hosts.len()
            ));
        }
        if !c.is_cluster() {
            return p;
        }
        if !self.alerts.database.starts_with("postgres") {
            p.push(format!(
                "alerts.database: {:?} cannot be shared by the processes of a cluster; \
                 give every process the same PostgreSQL database (postgres://...)",
                self.alerts.database
            ));
        }
        if self.embedded_broker.enabled {
            p.push(
                "embedded_broker.enabled: each process would run a broker of its own; \
                 point every process at one broker (mqtt.url)"
                    .into(),
            );
        }
        if self.mqtt.enabled && !self.mqtt.topics.iter().all(|t| t.starts_with("$share/")) {
            p.push(
                "mqtt.topics: subscribe through a shared subscription \
                 (\"$share/ioc/ioc/v1/+/+/telemetry\") so that each reading goes to one process"
                    .into(),
            );
        }
        p
    }

    /// This configuration as process `cluster.process` runs it: in a
    /// cluster, MQTT client ids get `-p{process}` (a broker disconnects a
    /// client whose id another takes), the durable state goes to
    /// `checkpoint.dir/process-{process}`, the time-series spool to
    /// `influx.spool_dir/process-{process}` and dead letters to
    /// `{name}-p{process}.jsonl` (processes sharing a machine and a
    /// configuration file must not share these files) and the simulator
    /// runs on process 0 only.
    pub fn for_this_process(mut self) -> Config {
        if self.cluster.is_cluster() {
            let n = self.cluster.process;
            self.checkpoint.dir = self.checkpoint.dir.join(format!("process-{n}"));
            self.influx.spool_dir = self.influx.spool_dir.join(format!("process-{n}"));
            let file = &self.dead_letter.file;
            let stem = file.file_stem().map_or_else(
                || "dead-letters".into(),
                |s| s.to_string_lossy().into_owned(),
            );
            let ext = file
                .extension()
                .map_or_else(String::new, |e| format!(".{}", e.to_string_lossy()));
            self.dead_letter.file = file.with_file_name(format!("{stem}-p{n}{ext}"));
            self.mqtt.client_id = format!("{}-p{n}", self.mqtt.client_id);
            self.alerts.mqtt_client_id = format!("{}-p{n}", self.alerts.mqtt_client_id);
            self.alerts.shared_outbox = true;
            self.simulator.enabled &= n == 0;
        }
        self
    }

    /// Every problem, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = self.mqtt.problems("mqtt");
        p.extend(self.http_ingest.problems("http_ingest"));
        p.extend(self.kafka.problems("kafka"));
        p.extend(self.influx.problems("influx"));
        p.extend(self.alerts.problems("alerts"));
        // The admin token, when unset, is made at start (32 characters).
        let admin = self
            .http
            .admin_token
            .as_deref()
            .unwrap_or("a-token-made-at-start-0123456789");
        if let Err(e) = ioc_dashboard_api::auth::Auth::new(&self.http.auth, admin) {
            p.push(format!("http.auth: {e}"));
        }
        if let Some(Err(e)) = self
            .http
            .audit_syslog
            .as_deref()
            .map(str::parse::<ioc_dashboard_api::syslog::Target>)
        {
            p.push(format!("http.audit_syslog: {e}"));
        }
        if let Some(Err(e)) = self.http.tls.as_ref().map(|t| t.files().load()) {
            p.push(format!("http.tls: {e}"));
        }
        p.extend(self.http.history.problems());
        let p_ = &mut p;
        let mut check = |ok: bool, msg: &str| {
            if !ok {
                p_.push(msg.to_owned());
            }
        };
        check(
            self.processing.workers >= 1,
            "processing.workers: must be at least 1",
        );
        check(
            self.processing.workers <= usize::from(ioc_processing::durable::PARTITIONS),
            "processing.workers: at most 256 (the engine state's key partitions)",
        );
        if self.checkpoint.enabled {
            check(
                !self.checkpoint.dir.as_os_str().is_empty(),
                "checkpoint.dir: must name a directory",
            );
            check(
                self.checkpoint.interval >= Duration::from_millis(100),
                "checkpoint.interval: at least 100ms",
            );
            check(self.checkpoint.retain >= 1, "checkpoint.retain: at least 1");
            check(
                self.checkpoint.journal_max_bytes >= 1 << 20,
                "checkpoint.journal_max_bytes: at least 1 MiB",
            );
        }
        p.extend(self.cluster_problems());
        let p_ = &mut p;
        let mut check = |ok: bool, msg: &str| {
            if !ok {
                p_.push(msg.to_owned());
            }
        };
        let bucket = self.processing.rain_bucket.as_millis();
        check(
            bucket >= 1000 && 3_600_000 % bucket == 0,
            "processing.rain_bucket: must divide one hour (e.g. 1m, 5m, 10m)",
        );
        let rules_missing = self.rules.file.as_ref().filter(|f| !f.exists());
        check(
            rules_missing.is_none(),
            &format!(
                "rules.file: {} does not exist",
                rules_missing
                    .map(|f| f.display().to_string())
                    .unwrap_or_default()
            ),
        );
        check(
            self.processing.max_payload_bytes >= 256,
            "processing.max_payload_bytes: must be at least 256",
        );
        check(
            self.simulator.rate.is_finite()
                && self.simulator.rate > 0.0
                && self.simulator.rate <= 1_000_000.0,
            "simulator.rate: must be between 0 and 1000000 readings per second",
        );
        check(
            self.catalogue.scale.is_none() || self.catalogue.devices.is_none(),
            "catalogue.scale: replicates the built-in demo; do not set it with catalogue files",
        );
        check(
            self.catalogue.devices.is_some() == self.catalogue.areas.is_some(),
            "catalogue: set both devices and areas, or neither for the built-in Sơn La demo",
        );
        for (key, path) in [
            ("catalogue.devices", &self.catalogue.devices),
            ("catalogue.areas", &self.catalogue.areas),
        ] {
            if let Some(path) = path
                && !path.exists()
            {
                p.push(format!("{key}: {} does not exist", path.display()));
            }
        }
        if self.embedded_broker.enabled
            && let Ok((host, _)) = self.mqtt.endpoint()
            && !matches!(
                host.as_str(),
                "127.0.0.1" | "localhost" | "::1" | "0.0.0.0" | "::"
            )
        {
            p.push(format!(
                "embedded_broker.enabled: the embedded broker can only listen on this machine, but mqtt.url names {host}; set embedded_broker.enabled = false to use that broker"
            ));
        }
        if self.simulator.enabled && self.mqtt.tls() {
            p.push("simulator.enabled: the simulator publishes plain MQTT and cannot reach an mqtts:// broker; turn it off or use `ioc simulate` against a plain listener".into());
        }
        if self.embedded_broker.enabled && self.mqtt.tls() {
            p.push("embedded_broker.enabled: the embedded broker speaks plain MQTT; use mqtt:// or your own TLS broker".into());
        }
        if self.dead_letter.file.as_os_str().is_empty() {
            p.push("dead_letter.file: must name a file".into());
        }
        p
    }

    /// The decoder's limits.
    pub fn limits(&self) -> ioc_schemas::Limits {
        let p = &self.processing;
        ioc_schemas::Limits {
            max_payload_bytes: p.max_payload_bytes,
            max_future_skew_ms: p.max_future_skew.as_millis() as i64,
            max_age_ms: p.max_age.as_millis() as i64,
        }
    }

    /// Fails with every problem, one per line, when there is any.
    pub fn validate(&self) -> anyhow::Result<()> {
        let problems = self.problems();
        anyhow::ensure!(
            problems.is_empty(),
            "invalid configuration:\n  - {}",
            problems.join("\n  - ")
        );
        Ok(())
    }

    /// The registry this configuration names.
    pub fn registry(&self) -> anyhow::Result<std::sync::Arc<ioc_devices::Registry>> {
        if let Some(n) = self.catalogue.scale {
            return Ok(ioc_devices::Registry::sonla_scaled(n));
        }
        match (&self.catalogue.devices, &self.catalogue.areas) {
            (Some(d), Some(a)) => {
                let devices = std::fs::read_to_string(d)
                    .with_context(|| format!("reading {}", d.display()))?;
                let areas = std::fs::read_to_string(a)
                    .with_context(|| format!("reading {}", a.display()))?;
                Ok(std::sync::Arc::new(ioc_devices::Registry::from_geojson(
                    &devices, &areas,
                )?))
            }
            _ => Ok(ioc_devices::Registry::sonla_demo()),
        }
    }
}

/// Keys that hold secrets: each may instead be given as `{key}_file`, the
/// path of a file holding it (trailing newline dropped).
pub const SECRET_KEYS: &[&str] = &[
    "admin_token",
    "token",
    "hs256_secret",
    "password",
    "sasl_password",
    "secret",
    "database",
];

/// Replaces every `{secret}_file` in `tree` by `{secret}` read from the file.
fn read_secret_files(tree: &mut serde_json::Value, at: &str, problems: &mut Vec<String>) {
    match tree {
        serde_json::Value::Object(map) => {
            let files: Vec<String> = map
                .keys()
                .filter(|k| {
                    k.strip_suffix("_file")
                        .is_some_and(|base| SECRET_KEYS.contains(&base))
                })
                .cloned()
                .collect();
            for key in files {
                let base = key.trim_end_matches("_file").to_owned();
                let Some(serde_json::Value::String(path)) = map.remove(&key) else {
                    problems.push(format!("{at}{key}: a file path (a string)"));
                    continue;
                };
                if map.get(&base).is_some_and(|v| !v.is_null()) {
                    problems.push(format!("{at}{base} and {at}{key}: set one, not both"));
                    continue;
                }
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        let secret = text.trim_end_matches(['\n', '\r']).to_owned();
                        if secret.is_empty() {
                            problems.push(format!("{at}{key}: {path} is empty"));
                        }
                        map.insert(base, serde_json::Value::String(secret));
                    }
                    Err(e) => problems.push(format!("{at}{key}: cannot read {path}: {e}")),
                }
            }
            for (k, v) in map.iter_mut() {
                read_secret_files(v, &format!("{at}{k}."), problems);
            }
        }
        serde_json::Value::Array(items) => {
            let base = at.trim_end_matches('.');
            for (i, v) in items.iter_mut().enumerate() {
                read_secret_files(v, &format!("{base}[{i}]."), problems);
            }
        }
        _ => {}
    }
}

/// Secrets written in the configuration file itself.
fn literal_secrets(value: &toml::Value, at: &str, warnings: &mut Vec<String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let here = format!("{at}{k}");
                let secret = SECRET_KEYS.contains(&k.as_str())
                    && match v {
                        // A database URL is a secret only with a password in it.
                        toml::Value::String(url) if k == "database" => url
                            .split_once("://")
                            .and_then(|(_, rest)| rest.split_once('@'))
                            .is_some_and(|(userinfo, _)| userinfo.contains(':')),
                        toml::Value::String(_) => true,
                        _ => false,
                    };
                if secret {
                    warnings.push(format!(
                        "{here}: a secret written in the configuration file; \
                         give it in the environment (IOC_...) or as {k}_file"
                    ));
                }
                literal_secrets(v, &format!("{here}."), warnings);
            }
        }
        toml::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                literal_secrets(v, &format!("{}[{i}].", at.trim_end_matches('.')), warnings);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_files_and_literal_ones_are_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("admin");
        std::fs::write(&secret, "a-secret-of-forty-characters-0123456789ab\n").unwrap();
        let influx = dir.path().join("influx");
        std::fs::write(&influx, "influx-token-from-a-file").unwrap();
        let file = dir.path().join("ioc.toml");
        std::fs::write(
            &file,
            format!(
                "[http]\nadmin_token_file = {:?}\n\n[[http.auth.tokens]]\nname = \"wall\"\n\
                 token = \"short-but-16-chars\"\nrole = \"viewer\"\n\n[influx]\ntoken_file = {:?}\n",
                secret.display().to_string(),
                influx.display().to_string()
            ),
        )
        .unwrap();
        let c = Config::load(Some(&file)).unwrap();
        assert_eq!(
            c.http.admin_token.as_deref(),
            Some("a-secret-of-forty-characters-0123456789ab")
        );
        assert_eq!(c.influx.token.as_deref(), Some("influx-token-from-a-file"));
        let warnings = c.secret_warnings(Some(&file));
        assert_eq!(warnings.len(), 2, "{warnings:#?}");
        assert!(
            warnings[0]
                .contains("http.auth.tokens[0].token: a secret written in the configuration file"),
            "{warnings:#?}"
        );
        assert!(
            warnings[1].contains("http.auth.tokens[0] (wall): the token has 18 characters"),
            "{warnings:#?}"
        );

        // A missing file, or both ways at once, is refused with the key.
        std::fs::write(&file, "[influx]\ntoken_file = \"/nonexistent/token\"\n").unwrap();
        let e = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(
            e.contains("influx.token_file: cannot read /nonexistent/token"),
            "{e}"
        );
        std::fs::write(
            &file,
            format!(
                "[influx]\ntoken = \"x\"\ntoken_file = {:?}\n",
                influx.display().to_string()
            ),
        )
        .unwrap();
        let e = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(
            e.contains("influx.token and influx.token_file: set one, not both"),
            "{e}"
        );
    }

    #[test]
    fn example_file_documents_every_key_and_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ioc.example.toml");
        let from_file = Config::load(Some(&path)).unwrap();
        assert_eq!(
            from_file,
            Config::default(),
            "the example file should spell out the defaults"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        // Every key, the optional ones too, must be written (or commented
        // out) as `key =` inside its own `[section]`.
        let mut full = Config::default();
        full.catalogue.devices = Some("d".into());
        full.catalogue.areas = Some("a".into());
        full.mqtt.username = Some("u".into());
        full.mqtt.password = Some("p".into());
        full.mqtt.ca_file = Some("c".into());
        full.mqtt.client_cert_file = Some("c".into());
        full.mqtt.client_key_file = Some("c".into());
        full.kafka.security_protocol = Some("s".into());
        full.kafka.sasl_mechanism = Some("s".into());
        full.kafka.sasl_username = Some("s".into());
        full.kafka.sasl_password = Some("s".into());
        full.kafka.ssl_ca_location = Some("s".into());
        full.kafka.ssl_certificate_location = Some("s".into());
        full.kafka.ssl_key_location = Some("s".into());
        full.influx.token = Some("t".into());
        full.http_ingest.tokens = vec![ioc_ingest::http::IngestToken {
            name: "n".into(),
            token: "t".into(),
            devices: vec!["*".into()],
        }];
        full.alerts.webhooks = vec![ioc_alerts::Webhook {
            name: "n".into(),
            url: "http://x".into(),
            secret: "s".into(),
            rules: Vec::new(),
            min_severity: None,
            areas: Vec::new(),
            max_attempts: 1,
            timeout: std::time::Duration::from_secs(1),
        }];
        for key in toml_keys(&serde_json::to_value(full).unwrap(), "") {
            let (section, leaf) = key.split_once('.').unwrap();
            let body = text
                .split(&format!("[{section}]\n"))
                .nth(1)
                .unwrap_or_else(|| panic!("deploy/ioc.example.toml has no [{section}]"));
            let body = body.split("\n[").next().unwrap_or(body);
            assert!(
                body.lines()
                    .map(|l| l.trim_start_matches('#').trim_start())
                    .any(|l| l.starts_with(&format!("{leaf} ="))),
                "deploy/ioc.example.toml does not document {key} in [{section}]"
            );
        }
    }

    #[test]
    fn a_cluster_members_configuration_is_checked() {
        let mut c = Config::default();
        c.cluster.hosts = vec![
            "10.0.0.1:7100".into(),
            "10.0.0.2".into(),
            "10.0.0.1:7100".into(),
        ];
        c.cluster.process = 3;
        c.cluster.front = vec![0, 5];
        let p = c.problems().join("\n");
        for expected in [
            "cluster.hosts[1]: \"10.0.0.2\" is not host:port",
            "cluster.hosts[2]: \"10.0.0.1:7100\" is given twice",
            "cluster.process: 3 is out of range",
            "cluster.front[1]: process 5 is out of range",
            "alerts.database: \"sqlite://data/alerts.db\" cannot be shared",
            "embedded_broker.enabled: each process would run a broker",
            "mqtt.topics: subscribe through a shared subscription",
        ] {
            assert!(p.contains(expected), "{expected:?} not in:\n{p}");
        }
        // A valid member.
        c.cluster.hosts = vec!["10.0.0.1:7100".into(), "10.0.0.2:7100".into()];
        c.cluster.process = 1;
        c.cluster.front = vec![0];
        c.alerts.database = "postgres://ioc@db/ioc".into();
        c.embedded_broker.enabled = false;
        c.mqtt.topics = vec!["$share/ioc/ioc/v1/+/+/telemetry".into()];
        assert_eq!(c.problems(), Vec::<String>::new());
        let member = c.for_this_process();
        assert_eq!(member.mqtt.client_id, "ioc-p1");
        assert_eq!(member.checkpoint.dir, Path::new("data/state/process-1"));
        assert_eq!(
            member.dead_letter.file,
            Path::new("data/dead-letters-p1.jsonl")
        );
        assert_eq!(
            member.influx.spool_dir,
            Path::new("data/influx-spool/process-1")
        );
        assert!(
            !member.simulator.enabled,
            "the simulator runs on process 0 only"
        );
    }

    #[test]
    fn webhook_demo_file_loads_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ioc.webhook-demo.toml");
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.problems(), Vec::<String>::new());
        assert_eq!(c.alerts.webhooks.len(), 1);
        assert!(c.simulator.enabled && c.embedded_broker.enabled);
    }

    fn toml_keys(v: &serde_json::Value, prefix: &str) -> Vec<String> {
        match v {
            serde_json::Value::Object(m) => m
                .iter()
                .flat_map(|(k, v)| {
                    toml_keys(
                        v,
                        &if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        },
                    )
                })
                .collect(),
            _ => vec![prefix.to_owned()],
        }
    }

    #[test]
    fn reports_every_problem_with_its_key() {
        let mut c = Config::default();
        c.processing.workers = 0;
        c.simulator.rate = -1.0;
        c.mqtt.url = "mqtt://broker.example:1883".into();
        c.mqtt.qos = 2;
        let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ioc.webhook-demo.toml");
        let mut hook = Config::load(Some(&demo)).unwrap().alerts.webhooks[0].clone();
        hook.name = ioc_alerts::KAFKA_SUBSCRIBER.into();
        c.alerts.webhooks = vec![hook];
        c.http.audit_syslog = Some("syslog.example:514".into());
        c.http.tls = Some(ioc_dashboard_api::tls::TlsConfig {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
            reload_check: std::time::Duration::from_secs(10),
            redirect_listen: None,
        });
        let p = c.problems().join("\n");
        for key in [
            "processing.workers",
            "simulator.rate",
            "embedded_broker.enabled",
            "mqtt.qos",
            "alerts.webhooks[0].name",
            "http.audit_syslog: \"syslog.example:514\": udp://host:port or tcp://host:port",
            "http.tls: /nonexistent/cert.pem",
        ] {
            assert!(p.contains(key), "{key} missing from {p}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[http]\nlisten = \"127.0.0.1:9000\"\nlistne = 1\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("listne"), "{err}");
    }
}
