//! Wiring: start every component in order, stop them in reverse. Where
//! outputs go is the router's business ([`crate::outputs`]).
//!
//! Start: registry → embedded broker → engine → time-series sink → live
//! hub → alert store → dead-letter writer (file, or Kafka topic) → HTTP (with ingest) →
//! Kafka source → MQTT source → simulator. Stop: HTTP ingest, simulator
//! and sources first (the engine's inputs close), the engine drains, the
//! hub takes its last outputs and the alert store stores the last alert
//! changes, then WebSockets are closed, the HTTP server stops, the dead-letter writer flushes and the time-series sink spools
//! its last batch and writes what it can in `influx.shutdown_timeout`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use ioc_dashboard_api::{AppState, LiveHub};
use ioc_devices::{Registry, Simulator};
use ioc_ingest::deadletter::{DeadLetters, FileSink, Writer};
use ioc_ingest::http::HttpIngest;
use ioc_ingest::kafka::{KafkaSink, KafkaSource};
use ioc_ingest::mqtt::MqttSource;
use ioc_ingest::{IngestStats, Ingestor};
use ioc_processing::{Engine, EngineConfig, EngineStats};
use ioc_schemas::{EngineOutput, Timestamp};
use ioc_timeseries::{Sink, SinkStats};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::config::Config;
use crate::outputs::Router;
use crate::rules::{Reloader, RulesSource, ZonesSource};

/// The process-wide Prometheus recorder (installed once, shared by every
/// app in the process).
fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .clone()
}

/// The registry the tools (`ioc validate`, `ioc rules check`, `ioc
/// backtest`) check against: the one the server keeps in its store, when
/// that exists and has one (devices registered through the API count),
/// else the catalogue. Never writes: an absent SQLite file is not made.
pub async fn registry_for_tools(config: &Config) -> anyhow::Result<(Arc<Registry>, &'static str)> {
    let catalogue = config.registry()?;
    let url = &config.alerts.database;
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        if !std::path::Path::new(path).exists() {
            return Ok((catalogue, "the catalogue (no store yet)"));
        }
    }
    let store = match ioc_alerts::AlertStore::open(url).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(
                "the registry's store cannot be read ({e}); checking against the catalogue"
            );
            return Ok((catalogue, "the catalogue (store unreachable)"));
        }
    };
    let specs = store.devices().await?;
    store.close().await;
    if specs.is_empty() {
        return Ok((catalogue, "the catalogue (store empty)"));
    }
    let registry = Registry::from_specs(specs, catalogue.shared_areas().clone()).map_err(|p| {
        anyhow::anyhow!(
            "the registry in the store does not fit the areas: {}",
            p.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    Ok((Arc::new(registry), "the registry in the store"))
}

/// A running system.
pub struct Running {
    /// Where the HTTP server listens.
    pub http_addr: SocketAddr,
    /// The registry at start.
    pub registry: Arc<Registry>,
    /// The registry in force (changed through the registry API).
    pub registry_cell: Arc<ioc_devices::RegistryCell>,
    /// Ingest counters.
    pub ingest_stats: Arc<IngestStats>,
    /// Engine counters.
    pub engine_stats: Arc<EngineStats>,
    /// The dead-letter hand-off (for its counters).
    pub dead_letters: DeadLetters,
    /// Time-series sink counters, when `influx.enabled`.
    pub influx_stats: Option<Arc<SinkStats>>,
    /// The admin token made at start when `http.admin_token` is unset.
    pub made_admin_token: Option<Arc<str>>,
    influx: Option<Sink>,
    sources: CancellationToken,
    http_ingest: Option<Arc<HttpIngest>>,
    registry_admin: Arc<ioc_dashboard_api::routes::registry::RegistryAdmin>,
    dead_letter_writer: Writer,
    kafka_thread: Option<std::thread::JoinHandle<()>>,
    http: CancellationToken,
    source_tasks: Vec<JoinHandle<()>>,
    engine: JoinHandle<anyhow::Result<()>>,
    hub_task: JoinHandle<()>,
    alerts_done: CancellationToken,
    alerts_task: JoinHandle<()>,
    alert_mqtt_done: CancellationToken,
    alert_mqtt_task: Option<JoinHandle<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

/// Starts everything the configuration asks for.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    config.validate()?;
    let config = config.for_this_process();
    let cluster = config.cluster.is_cluster();
    // Before anything registers its metrics, so their handles are live.
    let metrics = prometheus();
    let catalogue = config.registry()?;
    // The registry lives in the alert store's database: seeded from the
    // catalogue on first start, changed through the API since.
    let device_store = Arc::new(
        ioc_alerts::AlertStore::open(&config.alerts.database)
            .await
            .with_context(|| {
                format!(
                    "cannot open the store for the device registry (alerts.database = {:?})",
                    config.alerts.database
                )
            })?,
    );
    // The processes of a cluster start together: the first to seed an
    // empty store wins, the others read what it stored.
    let mut attempts = if cluster { 10 } else { 1 };
    let registry = loop {
        attempts -= 1;
        match ioc_dashboard_api::routes::registry::RegistryAdmin::load(
            &device_store,
            catalogue.clone(),
        )
        .await
        {
            Ok(r) => break r,
            Err(e) if attempts > 0 => {
                tracing::debug!(error = %e, "registry not loaded yet; reading it again");
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            Err(e) => anyhow::bail!("device registry: {e}"),
        }
    };
    info!(
        devices = registry.devices().len(),
        areas = registry.areas().all().len(),
        "device registry loaded"
    );
    let registry_cell = Arc::new(ioc_devices::RegistryCell::new(registry.clone()));

    let (host, port) = config.mqtt.endpoint().map_err(anyhow::Error::msg)?;
    if config.embedded_broker.enabled {
        let addr: SocketAddr = tokio::net::lookup_host((host.as_str(), port))
            .await?
            .next()
            .with_context(|| format!("cannot resolve {host}"))?;
        let max = config.embedded_broker.max_payload_bytes;
        tokio::task::spawn_blocking(move || crate::broker::start(addr, max)).await??;
        info!(%addr, "embedded MQTT broker listening");
    }

    let rules_source = RulesSource::live(config.rules.file.clone(), registry_cell.clone());
    let rules = rules_source
        .load()
        .map_err(|e| anyhow::anyhow!("{}: {e}", rules_source.describe()))?;
    info!(source = %rules_source.describe(), rules = rules.rules.len(), "rules loaded");
    let zones_source = ZonesSource::new(config.catalogue.zones.clone());
    let zones = zones_source
        .load()
        .map_err(|e| anyhow::anyhow!("invalid zones:\n  - {}", e.join("\n  - ")))?;
    info!(
        zones = zones.all().len(),
        assets = zones.assets().len(),
        "zones loaded"
    );
    let zones = Arc::new(ioc_processing::ZonesCell::new(Arc::new(zones)));
    let p = &config.processing;
    // Batches of engine outputs the hub has routed, and the alert store
    // once open: a checkpoint counts only once the alert changes before
    // it are stored.
    let routed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let alerts_cell: Arc<std::sync::OnceLock<Arc<ioc_alerts::AlertService>>> = Arc::default();
    let influx_cell: Arc<std::sync::OnceLock<ioc_timeseries::Input>> = Arc::default();
    let outputs_durable = {
        let (routed, cell, influx) = (routed.clone(), alerts_cell.clone(), influx_cell.clone());
        let handle = tokio::runtime::Handle::current();
        Arc::new(move |sent: u64| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while routed.load(std::sync::atomic::Ordering::Acquire) < sent {
                if std::time::Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let Some(alerts) = cell.get() else {
                return false;
            };
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            // The alert store, then the time series (which the store's
            // changes also go to).
            let influx = influx.get().cloned();
            handle
                .block_on(async move {
                    tokio::time::timeout(left, async {
                        alerts.flushed().await;
                        match influx {
                            Some(i) => i.flushed().await.is_ok(),
                            None => true,
                        }
                    })
                    .await
                })
                .unwrap_or(false)
        }) as ioc_processing::durable::coordinator::OutputsDurable
    };
    // Other processes' outputs, in a cluster: for the screens only.
    let (remote_tx, remote_rx) = flume::bounded(256);
    let engine_config = EngineConfig {
        rules: Some(Arc::new(rules)),
        zones: Some(zones.clone()),
        durable: config.checkpoint.durable(),
        outputs_durable: Some(outputs_durable),
        cluster: config.cluster.engine(remote_tx),
        ..p.engine()
    };
    // Batches of engine outputs (a timely message each, up to ~1 000).
    let (out_tx, out_rx) = flume::bounded(256);
    // In a cluster this waits until every process has connected.
    let (mut engine, input) = {
        let (cell, out_tx) = (registry_cell.clone(), out_tx.clone());
        tokio::task::spawn_blocking(move || Engine::start_live(&engine_config, cell, out_tx))
            .await??
    };
    let engine_stats = engine.stats();
    let reloader = Reloader::new(rules_source, engine.rules(), zones_source, zones.clone());

    let (influx, influx_input) = if config.influx.enabled {
        let (sink, input) = Sink::start_live(&config.influx, registry_cell.clone())?;
        (Some(sink), Some(input))
    } else {
        (None, None)
    };
    let influx_stats = influx.as_ref().map(Sink::stats);
    if let Some(i) = &influx_input {
        let _ = influx_cell.set(i.clone());
    }

    let hub = LiveHub::live(registry_cell.clone(), zones.clone(), &config.http.history);
    let (step, buckets) = hub.history_bounds();
    tracing::info!(
        step = %humantime_serde::re::humantime::format_duration(step),
        buckets,
        "chart history per device"
    );
    // Each kind of output to its consumers: the router module says which.
    let (router, mqtt_channel) = Router::new(
        &config,
        hub.clone(),
        influx_input.clone(),
        registry_cell.clone(),
    );
    let alerts_done = CancellationToken::new();
    // Stopped after the store: its last changes still reach the broker.
    let alert_mqtt_done = CancellationToken::new();
    let (alerts, alerts_task) = ioc_alerts::AlertService::start(
        &config.alerts,
        router.publish(),
        crate::outputs::outbox_channels(&config, influx_input.clone())?,
        alerts_done.clone(),
    )
    .await
    .with_context(|| {
        format!(
            "cannot open the alert store (alerts.database = {:?})",
            config.alerts.database
        )
    })?;
    let active = alerts.active().await?;
    info!(
        backend = alerts.backend(),
        active = active.len(),
        "alert store open"
    );
    let alert_mqtt_task = mqtt_channel.map(|c| c.run(active.clone(), alert_mqtt_done.clone()));
    hub.apply(active.into_iter().map(EngineOutput::alert).collect());
    let to_store = alerts.clone();
    let hub_task = tokio::spawn(ioc_dashboard_api::hub::run(
        hub.clone(),
        out_rx,
        move |batch| router.route_engine(&to_store, batch),
        routed.clone(),
    ));
    let _ = alerts_cell.set(alerts.clone());
    if cluster {
        // What the other processes' workers show: their device states,
        // windows, geofence events and tracks straight from the dataflow,
        // their alert changes through the store they share with this one.
        tokio::spawn(ioc_dashboard_api::hub::run(
            hub.clone(),
            remote_rx,
            |_| {},
            Arc::default(),
        ));
        let shown = hub.clone();
        tokio::spawn(ioc_alerts::follow::follow(
            config.alerts.database.clone(),
            alerts.clone(),
            move |changed| shown.apply(changed.into_iter().map(EngineOutput::alert).collect()),
            alerts_done.clone(),
        ));
    }

    let ingest_stats = Arc::new(IngestStats::default());
    let sink = FileSink::open(&config.dead_letter).with_context(|| {
        format!(
            "cannot open the dead-letter file {} (dead_letter.file)",
            config.dead_letter.file.display()
        )
    })?;
    let sink: Box<dyn ioc_ingest::deadletter::Sink> = if config.kafka.enabled {
        Box::new(
            KafkaSink::new(&config.kafka, &config.dead_letter.kafka_topic, sink)
                .context("cannot create the Kafka dead-letter producer")?,
        )
    } else {
        Box::new(sink)
    };
    let (dead_letters, dead_letter_writer) = DeadLetters::start(sink);
    let mut ingestor = Ingestor::live(
        registry_cell.clone(),
        config.limits(),
        input.clone(),
        dead_letters.clone(),
        ingest_stats.clone(),
    );
    if let Some(input) = influx_input {
        ingestor = ingestor.with_timeseries(input);
    }
    // What the journal holds after the restored checkpoint goes through the
    // engine again (and to the time series: same points, same timestamps)
    // before any source starts.
    let (engine, recovered) = {
        let (input, ingestor) = (input.clone(), ingestor.clone());
        tokio::task::spawn_blocking(move || {
            let r = engine.replay(&input, |r| ingestor.rearchive_blocking(r));
            r.map(|r| (engine, r))
        })
        .await??
    };
    drop(input);
    if config.checkpoint.enabled {
        info!(
            checkpoint = ?recovered.checkpoint,
            replayed = recovered.readings,
            dir = %config.checkpoint.dir.display(),
            "engine state recovered"
        );
    }
    let engine = tokio::task::spawn_blocking(move || engine.join().map_err(anyhow::Error::from));
    let http_ingest = config.http_ingest.enabled.then(|| {
        Arc::new(HttpIngest::new(
            config.http_ingest.clone(),
            ingestor.clone(),
        ))
    });
    let listener = tokio::net::TcpListener::bind(config.http.listen).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "HTTP port {} is in use: set http.listen (or --http-listen, or IOC_HTTP__LISTEN) to a free address",
                config.http.listen
            )
        } else {
            anyhow::Error::new(e).context(format!("cannot listen on {}", config.http.listen))
        }
    })?;
    let http_addr = listener.local_addr()?;
    let http = CancellationToken::new();
    let stats_fn = {
        let (ingest, engine, dl, influx) = (
            ingest_stats.clone(),
            engine_stats.clone(),
            dead_letters.clone(),
            influx_stats.clone(),
        );
        Arc::new(move || {
            let rejected: serde_json::Map<_, _> = ingest
                .rejections()
                .into_iter()
                .map(|(r, n)| (r.code().to_owned(), json!(n)))
                .collect();
            let engine = BTreeMap::from(engine.snapshot());
            let influx = influx.as_ref().map(|s| BTreeMap::from(s.snapshot()));
            json!({
                "ingest": {
                    "received": ingest.received_count(),
                    "accepted": ingest.accepted_count(),
                    "rejected": rejected,
                    "mqtt_subscribed": ingest.mqtt_subscribed(),
                },
                "influx": influx,
                "engine": engine,
                "dead_letters": {
                    "written": dl.stats().written.load(std::sync::atomic::Ordering::Relaxed),
                    "failed": dl.stats().failed.load(std::sync::atomic::Ordering::Relaxed),
                },
            })
        })
    };
    let mut made_admin_token = None;
    let admin_token: Arc<str> = match &config.http.admin_token {
        Some(t) => t.as_str().into(),
        None => {
            use rand::Rng as _;
            let token: String = rand::rng()
                .sample_iter(rand::distr::Alphanumeric)
                .take(32)
                .map(char::from)
                .collect();
            info!(
                "admin token for this run (set http.admin_token to choose one): {token}; \
                 control room: {}://{}/#token={token}",
                if config.http.tls.is_some() {
                    "https"
                } else {
                    "http"
                },
                http_addr
            );
            let token: Arc<str> = token.into();
            made_admin_token = Some(token.clone());
            token
        }
    };
    let mut auth = ioc_dashboard_api::auth::Auth::new(&config.http.auth, &admin_token)
        .map_err(|e| anyhow::anyhow!("http.auth: {e}"))?;
    if let Some(oidc) = &config.http.auth.oidc {
        let keys = ioc_dashboard_api::oidc::Keys::discover(oidc)
            .await
            .map_err(|e| {
                anyhow::anyhow!("http.auth.oidc: cannot reach the identity provider: {e}")
            })?;
        tokio::spawn(keys.clone().refresh_every(http.clone()));
        auth = auth.with_oidc(keys);
    }
    let reload = reloader.clone();
    let rules_admin = rules_admin(&reloader, zones.clone(), registry_cell.clone(), &config);
    let registry_admin = ioc_dashboard_api::routes::registry::RegistryAdmin {
        cell: registry_cell.clone(),
        store: device_store,
        hub: hub.clone(),
        enforce: Arc::new(reloader.clone()),
        ingest: std::sync::Mutex::new(Some(ingestor.clone())),
        write: tokio::sync::Mutex::new(()),
        fixed: cluster.then(|| {
            "the registry cannot change while a cluster runs: the other processes would not \
             follow. Change it with the cluster stopped (one process alone on the same \
             database), then start every process again"
                .to_owned()
        }),
    };
    let registry_admin = Arc::new(registry_admin);
    let syslog = match &config.http.audit_syslog {
        Some(target) => Some(ioc_dashboard_api::syslog::Syslog::start(
            target
                .parse()
                .map_err(|e| anyhow::anyhow!("http.audit_syslog: {e}"))?,
        )),
        None => None,
    };
    let state = AppState {
        syslog,
        rules_reload: Some(Arc::new(move || reload.reload())),
        rules_admin: Some(Arc::new(rules_admin)),
        auth: Arc::new(auth),
        // The alert store keeps the audit log.
        audit: Arc::default(),
        live: ioc_dashboard_api::live::Sessions::new(hub.clone(), http.clone()),
        hub,
        cancel: http.clone(),
        tracker: TaskTracker::new(),
        metrics: metrics.map(|h| Arc::new(move || h.render()) as ioc_dashboard_api::Render),
        stats: stats_fn,
        ingest: http_ingest.clone(),
        alerts: Some(alerts.clone()),
        registry: Some(registry_admin.clone()),
    };
    let server = tokio::spawn(ioc_dashboard_api::serve(
        listener,
        config.http.tls.clone(),
        state,
    ));

    let sources = CancellationToken::new();
    let mut source_tasks = Vec::new();
    source_tasks.push(tokio::spawn(
        reloader.watch(config.rules.watch_interval, sources.child_token()),
    ));
    let kafka_thread = if config.kafka.enabled {
        let source = KafkaSource::new(config.kafka.clone(), ingestor.clone());
        Some(
            source
                .spawn(sources.child_token())
                .context("cannot start the Kafka source")?,
        )
    } else {
        None
    };
    if config.mqtt.enabled {
        // Device presence goes straight to the hub, beside the engine's outputs.
        let ingestor = ingestor.with_presence(out_tx);
        let source = MqttSource::new(config.mqtt.clone(), ingestor);
        source_tasks.push(tokio::spawn(source.run(sources.child_token())));
    }
    if config.simulator.enabled {
        let s = &config.simulator;
        let sim = Simulator::new(
            registry_cell.current(),
            s.scenario,
            s.seed,
            Timestamp::now(),
        );
        let (rate, cancel, host) = (s.rate, sources.child_token(), host.clone());
        source_tasks.push(tokio::spawn(async move {
            ioc_devices::simulator::mqtt::publish(sim, &host, port, rate, cancel).await;
        }));
    }
    info!(%http_addr, "IOC is running");
    Ok(Running {
        http_addr,
        registry,
        registry_cell,
        ingest_stats,
        engine_stats,
        dead_letters,
        influx_stats,
        made_admin_token,
        influx,
        sources,
        http_ingest,
        registry_admin,
        dead_letter_writer,
        kafka_thread,
        http,
        source_tasks,
        engine,
        hub_task,
        alerts_done,
        alerts_task,
        alert_mqtt_done,
        alert_mqtt_task,
        server,
    })
}

impl Running {
    /// Stops everything in order and waits for it.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        info!("shutting down: stopping sources");
        self.sources.cancel();
        if let Some(h) = &self.http_ingest {
            h.close();
        }
        self.registry_admin.close();
        for t in self.source_tasks {
            let _ = t.await;
        }
        if let Some(t) = self.kafka_thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        info!("draining the engine");
        self.engine.await??;
        let _ = self.hub_task.await;
        info!("closing live connections and the HTTP server");
        self.http.cancel();
        self.server.await??;
        // After the server: no operator action is cut off half-way.
        info!("storing the last alert changes");
        self.alerts_done.cancel();
        let _ = self.alerts_task.await;
        self.alert_mqtt_done.cancel();
        if let Some(t) = self.alert_mqtt_task {
            let _ = t.await;
        }
        drop(self.dead_letters);
        drop(self.http_ingest);
        let writer = self.dead_letter_writer;
        tokio::task::spawn_blocking(move || writer.join()).await?;
        if let Some(sink) = self.influx {
            info!("flushing time series");
            sink.shutdown().await;
        }
        info!("stopped");
        Ok(())
    }
}

/// The rules file and backtests for the page's admin view.
fn rules_admin(
    reloader: &Reloader,
    zones: Arc<ioc_processing::ZonesCell>,
    registry: Arc<ioc_devices::RegistryCell>,
    config: &Config,
) -> ioc_dashboard_api::routes::rules::RulesAdmin {
    let source = reloader.source().clone();
    let text = {
        let source = source.clone();
        Arc::new(move |()| {
            let text = source.text().map_err(|e| vec![e])?;
            Ok(serde_json::json!({
                "source": source.describe(),
                "text": text,
                "editable": source.is_file(),
            }))
        })
    };
    let apply = {
        let (source, reloader) = (source.clone(), reloader.clone());
        Arc::new(move |text: String| {
            source.write(&text)?;
            info!(source = %source.describe(), "rules file replaced from the API");
            reloader.reload()
        })
    };
    let in_force = reloader.clone();
    let input = config
        .rules
        .backtest_input
        .clone()
        .unwrap_or_else(|| config.checkpoint.dir.clone());
    let engine = ioc_processing::EngineConfig {
        workers: 1,
        ..config.processing.engine()
    };
    let backtest = Arc::new(
        move |req: ioc_dashboard_api::routes::rules::BacktestRequest| {
            let new = source.parse(&req.rules).map_err(|e| e.0)?;
            let plan = crate::backtest::Plan {
                recording: crate::backtest::Recording::at(&input),
                new: Arc::new(new),
                current: in_force.in_force(),
                zones: zones.clone(),
                registry: registry.current(),
                engine: engine.clone(),
                from: req.from,
                to: req.to,
                warmup: std::time::Duration::from_secs(24 * 3600),
            };
            let report = crate::backtest::run(&plan, |_| {}).map_err(|e| vec![format!("{e:#}")])?;
            info!(
                readings = report.input.readings,
                seconds = report.seconds,
                only_new = report.diff.only_new.len(),
                only_current = report.diff.only_current.len(),
                changed = report.diff.changed.len(),
                "backtest run from the API"
            );
            serde_json::to_value(&report).map_err(|e| vec![e.to_string()])
        },
    );
    ioc_dashboard_api::routes::rules::RulesAdmin {
        text,
        apply,
        backtest,
    }
}
