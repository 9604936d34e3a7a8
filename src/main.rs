//! `ioc`: the IOC stream processor.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ioc::config::Config;
use ioc_devices::{Registry, Scenario, Simulator};
use ioc_schemas::Timestamp;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Real-time core of a provincial Intelligent Operations Center.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args, Default)]
struct RunArgs {
    /// Configuration file (TOML); see deploy/ioc.example.toml.
    #[arg(long, short, env = "IOC_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// HTTP listen address (overrides http.listen).
    #[arg(long)]
    http_listen: Option<std::net::SocketAddr>,
    /// MQTT broker URL (overrides mqtt.url).
    #[arg(long)]
    mqtt_url: Option<String>,
    /// Use the broker at --mqtt-url instead of starting one.
    #[arg(long)]
    no_embedded_broker: bool,
    /// Do not run the built-in simulator.
    #[arg(long)]
    no_simulator: bool,
}

#[derive(Subcommand)]
enum RulesAction {
    /// Check a rules file against the configured catalogue; lists every
    /// problem, or the rules it holds.
    Check {
        /// The rules file (default: `rules.file` of the configuration, or
        /// the built-in demo rules).
        file: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run the system (the default).
    Run,
    /// Check a configuration and the catalogue it names, without starting.
    Validate,
    /// Work with rules files.
    Rules {
        #[command(subcommand)]
        action: RulesAction,
    },
    /// Publish simulated Sơn La telemetry to an MQTT broker.
    Simulate {
        /// Broker URL, e.g. mqtt://127.0.0.1:1883.
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        /// Scenario: demo, normal, flood, landslide_rain, traffic_jam,
        /// device_outage or watchlist_plate.
        #[arg(long, default_value = "demo")]
        scenario: Scenario,
        /// Readings per second over all devices.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// Seed of the simulation.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Stop after this many seconds (runs until Ctrl-C otherwise).
        #[arg(long)]
        duration: Option<u64>,
        /// Centre the flood on this river gauge.
        #[arg(long)]
        flood_target: Option<String>,
        /// Record instead of publishing: write the readings of `--duration`
        /// seconds of simulated time (default one hour) to this NDJSON file
        /// at once, one envelope per line, for `ioc backtest`.
        #[arg(long)]
        out: Option<PathBuf>,
        /// With --out: the event time of the first reading (RFC 3339;
        /// default: the duration before now).
        #[arg(long, value_parser = parse_time)]
        start: Option<Timestamp>,
    },
    /// What a rules file would have raised over recorded readings, compared
    /// with the rules in force (or --against): alerts only in one, and
    /// alerts in both with a different level, start or end, per rule and
    /// area. Runs the engine in event time; touches no store or output.
    Backtest {
        /// The rules file tried.
        #[arg(long)]
        rules: PathBuf,
        /// The rules compared with (default: `rules.file` of the
        /// configuration, or the built-in demo rules).
        #[arg(long)]
        against: Option<PathBuf>,
        /// Recorded readings: an NDJSON file of envelopes (dead letters
        /// too), or a state directory whose journal to read (default:
        /// `checkpoint.dir` of the configuration).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Compare alerts that open from this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        from: Option<Timestamp>,
        /// Read readings before this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        to: Option<Timestamp>,
        /// How long before --from readings fill windows and rule states.
        #[arg(long, default_value = "24h", value_parser = humantime_serde::re::humantime::parse_duration)]
        warmup: Duration,
        /// Also write the whole report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Worker threads per rule set (two engines run side by side).
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// Load test: publish simulated readings of a scaled catalogue over
    /// MQTT (or produce them to Kafka with --kafka) at a fixed rate (or as
    /// fast as possible) for a set time. Run the processor with
    /// `catalogue.scale` set to the same device count.
    Loadgen {
        /// Broker URL, e.g. mqtt://127.0.0.1:1883.
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        /// Produce to Kafka at these bootstrap servers (host:port) instead
        /// of publishing over MQTT; key = device id.
        #[arg(long)]
        kafka: Option<String>,
        /// Kafka topic to produce to.
        #[arg(long, default_value = "ioc.telemetry")]
        topic: String,
        /// Devices (the demo catalogue replicated to this many).
        #[arg(long, default_value_t = 100_000)]
        devices: usize,
        /// Readings per second over all devices; 0 = as fast as possible.
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
        /// Seconds to send for.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// MQTT QoS: 0 or 1.
        #[arg(long, default_value_t = 1)]
        qos: u8,
        /// MQTT connections to spread the devices over.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// Read and replay dead letters (rejected messages).
    Deadletter {
        #[command(subcommand)]
        action: DeadletterAction,
    },
    /// What the engine's durable state holds on disk (checkpoint.dir):
    /// what a restart restores and replays.
    Checkpoint {
        #[command(subcommand)]
        action: CheckpointAction,
    },
}

#[derive(Subcommand)]
enum CheckpointAction {
    /// Every checkpoint (epoch, age, size, devices, state) and the journal
    /// a restart would replay.
    List,
    /// One checkpoint (the newest usable one by default): its parts, their
    /// checksums, and entries per key partition.
    Inspect {
        /// The checkpoint's epoch.
        epoch: Option<u64>,
    },
}

#[derive(Subcommand)]
enum DeadletterAction {
    /// Count dead letters by source and reason; with --show, print them.
    List {
        #[command(flatten)]
        select: Select,
        /// Print the matching letters as JSON lines too.
        #[arg(long)]
        show: bool,
    },
    /// Re-submit dead letters to a running processor (POST /api/v1/ingest).
    Replay {
        #[command(flatten)]
        select: Select,
        /// The processor's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// An HTTP ingest token (http_ingest.tokens).
        #[arg(long, env = "IOC_INGEST_TOKEN")]
        token: String,
        /// Letters per request.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
}

#[derive(clap::Args)]
struct Select {
    /// The dead-letter file (default: dead_letter.file of the configuration).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Only this reason, e.g. unknown_device.
    #[arg(long, value_parser = parse_reason)]
    reason: Option<ioc_schemas::RejectReason>,
    /// Only this source: mqtt, kafka or http.
    #[arg(long)]
    source: Option<String>,
    /// Only letters about this device.
    #[arg(long)]
    device: Option<String>,
}

fn parse_time(s: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(s)
        .ok_or_else(|| format!("{s:?} is not an RFC 3339 time, e.g. 2026-07-14T06:00:00+07:00"))
}

fn parse_reason(s: &str) -> Result<ioc_schemas::RejectReason, String> {
    ioc_schemas::RejectReason::parse(s).ok_or_else(|| {
        let all: Vec<_> = ioc_schemas::RejectReason::ALL
            .iter()
            .map(|r| r.code())
            .collect();
        format!("unknown reason; one of {}", all.join(", "))
    })
}

impl Select {
    fn load(self, run: &RunArgs) -> anyhow::Result<Vec<ioc_ingest::DeadLetter>> {
        let file = match self.file {
            Some(f) => f,
            None => load(run)?.for_this_process().dead_letter.file,
        };
        let filter = ioc::deadletter::Filter {
            reason: self.reason,
            source: self.source,
            device: self.device,
        };
        ioc::deadletter::load(&file, &filter)
    }
}

async fn deadletter(action: DeadletterAction, run: &RunArgs) -> anyhow::Result<()> {
    match action {
        DeadletterAction::List { select, show } => {
            let letters = select.load(run)?;
            if show {
                for d in &letters {
                    println!("{}", serde_json::to_string(d)?);
                }
            }
            print!("{}", ioc::deadletter::summary(&letters));
        }
        DeadletterAction::Replay {
            select,
            url,
            token,
            batch,
        } => {
            let letters = select.load(run)?;
            let done = ioc::deadletter::replay(&letters, &url, &token, batch).await?;
            println!("replayed {}: {} accepted", done.sent, done.accepted);
            for (reason, n) in done.rejected {
                println!("  {n:>8} rejected again: {reason}");
            }
        }
    }
    Ok(())
}

fn load(args: &RunArgs) -> anyhow::Result<Config> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(addr) = args.http_listen {
        config.http.listen = addr;
    }
    if let Some(url) = &args.mqtt_url {
        config.mqtt.url = url.clone();
    }
    if args.no_embedded_broker {
        config.embedded_broker.enabled = false;
    }
    if args.no_simulator {
        config.simulator.enabled = false;
    }
    Ok(config)
}

/// Ctrl-C and SIGTERM, registered once so that a second signal is seen as a
/// second signal.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt()).context("listening for Ctrl-C")?,
                terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Resolves on the next Ctrl-C or SIGTERM.
    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Exit status of a cluster member that lost another process.
const EXIT_PEER_LOST: i32 = 3;

/// In a cluster, a lost connection to another process ends the whole
/// computation (timely's networking threads panic, named
/// `timely:recv-{process}` and `timely:send-{process}`): this process logs
/// which peer it lost and exits with [`EXIT_PEER_LOST`], for its
/// supervisor to restart it with the others.
fn exit_when_a_peer_is_lost(cluster: &ioc::config::ClusterConfig) {
    let hosts = cluster.hosts.clone();
    let me = cluster.process;
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if name.starts_with("timely:") || message.contains("timely communication error") {
            let peer = name
                .rsplit('-')
                .next()
                .and_then(|n| n.parse::<usize>().ok());
            let host = peer.and_then(|p| hosts.get(p)).map_or("?", String::as_str);
            let peer = peer.map_or_else(|| "?".to_owned(), |p| p.to_string());
            tracing::error!(
                process = me,
                lost = %peer,
                host,
                "lost cluster process {peer} ({host}): {message}. The dataflow cannot go on \
                 without it; exiting with status {EXIT_PEER_LOST} (restart every process)"
            );
            std::process::exit(EXIT_PEER_LOST);
        }
        default(info);
    }));
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = load(&args)?;
    if config.cluster.is_cluster() {
        exit_when_a_peer_is_lost(&config.cluster);
    }
    let mut signals = Signals::new()?;
    let running = ioc::app::start(config).await?;
    let url = format!("http://{}/", running.http_addr);
    match &running.made_admin_token {
        Some(token) => println!(
            "\n  IOC Sơn La is running. Open {url}#token={token} in a browser\n  \
             (signed in as admin; the token is valid until the next start).\n"
        ),
        None => println!(
            "\n  IOC Sơn La is running. Open {url} in a browser and sign in with a token\n  \
             (http.admin_token, or one of http.auth.tokens).\n"
        ),
    }
    signals.next().await;
    eprintln!("shutting down (press Ctrl-C again to force)");
    tokio::select! {
        r = running.shutdown() => r,
        () = signals.next() => anyhow::bail!("forced exit before shutdown completed"),
        () = tokio::time::sleep(Duration::from_secs(20)) => anyhow::bail!("shutdown took longer than 20 s"),
    }
}

#[allow(clippy::too_many_arguments)]
fn backtest_plan(
    config: &Config,
    registry: std::sync::Arc<ioc_devices::Registry>,
    rules: PathBuf,
    against: Option<PathBuf>,
    input: Option<PathBuf>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    warmup: Duration,
    workers: usize,
) -> anyhow::Result<ioc::backtest::Plan> {
    let load = |file: Option<PathBuf>, what: &str| -> anyhow::Result<_> {
        let source = ioc::rules::RulesSource::new(file, registry.clone());
        source
            .load()
            .map(std::sync::Arc::new)
            .map_err(|e| anyhow::anyhow!("{what} ({}): {e}", source.describe()))
    };
    let new = load(Some(rules), "the rules tried")?;
    let current = load(
        against.or(config.rules.file.clone()),
        "the rules compared with",
    )?;
    let zones = ioc::rules::ZonesSource::new(config.catalogue.zones.clone())
        .load()
        .map_err(|e| anyhow::anyhow!("zones: {}", e.join("; ")))?;
    if let (Some(f), Some(t)) = (from, to) {
        anyhow::ensure!(f < t, "--from ({f}) must be before --to ({t})");
    }
    let input = input.unwrap_or_else(|| config.checkpoint.dir.clone());
    anyhow::ensure!(
        input.exists(),
        "no recording at {}: give --input FILE.ndjson (record one with `ioc simulate --out`) or a state directory",
        input.display()
    );
    Ok(ioc::backtest::Plan {
        recording: ioc::backtest::Recording::at(&input),
        new,
        current,
        zones: std::sync::Arc::new(ioc_processing::ZonesCell::new(std::sync::Arc::new(zones))),
        registry,
        engine: ioc_processing::EngineConfig {
            workers: workers.max(1),
            ..config.processing.engine()
        },
        from,
        to,
        warmup,
    })
}

/// A progress line on the terminal (nothing when stderr is not one).
#[derive(Default)]
struct ProgressBar {
    shown: bool,
    begun: Option<std::time::Instant>,
}

impl ProgressBar {
    fn show(&mut self, p: ioc::backtest::Progress) {
        use std::io::{IsTerminal as _, Write as _};
        if !std::io::stderr().is_terminal() || p.total == 0 {
            return;
        }
        let begun = *self.begun.get_or_insert_with(std::time::Instant::now);
        let share = (p.done as f64 / p.total as f64).clamp(0.0, 1.0);
        let filled = (share * 30.0) as usize;
        let rate = p.readings as f64 / begun.elapsed().as_secs_f64().max(1e-3);
        eprint!(
            "\r[{}{}] {:>3.0} %  {} readings  {:.0}/s ",
            "#".repeat(filled),
            " ".repeat(30 - filled),
            share * 100.0,
            p.readings,
            rate
        );
        let _ = std::io::stderr().flush();
        self.shown = true;
    }

    fn clear(&self) {
        if self.shown {
            eprint!("\r{}\r", " ".repeat(80));
        }
    }
}

/// `ioc simulate --out`: simulated readings written to a file in simulated
/// time, as fast as they can be made.
fn record(
    out: &std::path::Path,
    scenario: Scenario,
    rate: f64,
    seed: u64,
    duration: Option<u64>,
    flood_target: Option<String>,
    start: Option<Timestamp>,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be above 0");
    let seconds = duration.unwrap_or(3600);
    let start =
        start.unwrap_or_else(|| Timestamp(Timestamp::now().millis() - seconds as i64 * 1000));
    let mut sim = Simulator::new(Registry::sonla_demo(), scenario, seed, start);
    if let Some(target) = flood_target {
        sim = sim
            .with_flood_target(&target)
            .with_context(|| format!("no device {target:?} in the catalogue"))?;
    }
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let count = (seconds as f64 * rate) as u64;
    for k in 0..count {
        let now = Timestamp(start.millis() + (k as f64 * 1000.0 / rate) as i64);
        if let Some(envelope) = sim.next_reading(now) {
            w.write_all(&envelope.to_json())?;
            w.write_all(b"\n")?;
        }
    }
    w.flush()?;
    println!(
        "recorded {count} readings from {start} over {seconds} s to {}",
        out.display()
    );
    Ok(())
}

async fn simulate(
    broker: String,
    scenario: Scenario,
    rate: f64,
    seed: u64,
    duration: Option<u64>,
    flood_target: Option<String>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !broker.starts_with("mqtts://"),
        "the simulator publishes plain MQTT; give it a plain mqtt:// listener"
    );
    let (host, port) =
        ioc_devices::simulator::mqtt::parse_broker_url(&broker).map_err(anyhow::Error::msg)?;
    let mut sim = Simulator::new(Registry::sonla_demo(), scenario, seed, Timestamp::now());
    if let Some(target) = flood_target {
        sim = sim
            .with_flood_target(&target)
            .with_context(|| format!("no device {target:?} in the catalogue"))?;
    }
    let cancel = CancellationToken::new();
    let stopper = cancel.clone();
    let mut signals = Signals::new()?;
    tokio::spawn(async move {
        let limit = duration.map_or(Duration::MAX, Duration::from_secs);
        tokio::select! {
            () = tokio::time::sleep(limit) => {}
            () = signals.next() => {}
        }
        stopper.cancel();
    });
    let sent = ioc_devices::simulator::mqtt::publish(sim, &host, port, rate, cancel).await;
    println!("published {sent} readings");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,rumqttd=off,rumqttc=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        None | Some(Command::Run) => run(cli.run).await,
        Some(Command::Validate) => {
            let config = load(&cli.run)?;
            config.validate()?;
            for w in config.secret_warnings(cli.run.config.as_deref()) {
                eprintln!("warning: {w}");
            }
            let (registry, from) = ioc::app::registry_for_tools(&config).await?;
            println!(
                "configuration is valid: {} devices ({from}), {} areas",
                registry.devices().len(),
                registry.areas().all().len()
            );
            Ok(())
        }
        Some(Command::Rules {
            action: RulesAction::Check { file },
        }) => {
            let config = load(&cli.run)?;
            let (registry, _) = ioc::app::registry_for_tools(&config).await?;
            let source = ioc::rules::RulesSource::new(file.or(config.rules.file), registry);
            match source.load() {
                Ok(set) => {
                    let summary = ioc::rules::summary(&set, &source.describe());
                    println!("{}", serde_json::to_string_pretty(&summary)?);
                    Ok(())
                }
                Err(e) => anyhow::bail!("{e}"),
            }
        }
        Some(Command::Simulate {
            scenario,
            rate,
            seed,
            duration,
            flood_target,
            out: Some(out),
            start,
            ..
        }) => record(&out, scenario, rate, seed, duration, flood_target, start),
        Some(Command::Simulate {
            broker,
            scenario,
            rate,
            seed,
            duration,
            flood_target,
            out: None,
            ..
        }) => simulate(broker, scenario, rate, seed, duration, flood_target).await,
        Some(Command::Backtest {
            rules,
            against,
            input,
            from,
            to,
            warmup,
            json,
            workers,
        }) => {
            let config = load(&cli.run)?;
            let (registry, _) = ioc::app::registry_for_tools(&config).await?;
            let plan = backtest_plan(
                &config, registry, rules, against, input, from, to, warmup, workers,
            )?;
            let report = tokio::task::spawn_blocking(move || {
                let mut bar = ProgressBar::default();
                let r = ioc::backtest::run(&plan, |p| bar.show(p));
                bar.clear();
                r
            })
            .await??;
            print!("{}", ioc::backtest::render(&report));
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("report written to {}", path.display());
            }
            Ok(())
        }
        Some(Command::Loadgen {
            broker,
            kafka,
            topic,
            devices,
            rate,
            duration,
            qos,
            connections,
        }) => {
            let (host, port) = ioc_devices::simulator::mqtt::parse_broker_url(&broker)
                .map_err(anyhow::Error::msg)?;
            anyhow::ensure!(qos <= 1, "--qos is 0 or 1");
            let spec = ioc_devices::loadgen::LoadSpec {
                rate,
                duration: Duration::from_secs(duration),
                qos,
                connections,
                ..Default::default()
            };
            let registry = Registry::sonla_scaled(devices);
            let report = match kafka {
                Some(bootstrap) => {
                    let config = ioc_ingest::kafka::KafkaConfig {
                        bootstrap_servers: bootstrap,
                        statistics_interval: Duration::ZERO,
                        ..Default::default()
                    };
                    tokio::task::spawn_blocking(move || {
                        ioc_ingest::kafka::loadgen::produce(
                            &config,
                            &topic,
                            registry,
                            &spec,
                            None,
                            &CancellationToken::new(),
                        )
                    })
                    .await??
                }
                None => {
                    ioc_devices::loadgen::mqtt(
                        registry,
                        &host,
                        port,
                        &spec,
                        None,
                        CancellationToken::new(),
                    )
                    .await
                }
            };
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Some(Command::Deadletter { action }) => deadletter(action, &cli.run).await,
        Some(Command::Checkpoint { action }) => {
            let config = load(&cli.run)?;
            let dir = &config.checkpoint.dir;
            match action {
                CheckpointAction::List => print!("{}", ioc::checkpoint::list(dir)?),
                CheckpointAction::Inspect { epoch } => {
                    print!("{}", ioc::checkpoint::inspect(dir, epoch)?)
                }
            }
            Ok(())
        }
    }
}
