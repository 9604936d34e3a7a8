//! The alert service: takes the rule's alerts from the engine, keeps them
//! in the store, re-notifies what nobody acknowledged, carries operators'
//! actions out, and hands every new version to whoever publishes them (the
//! live hub, and later the delivery channels).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ioc_schemas::{Alert, AlertChange, AlertDetail, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::channels::webhook::{self, Webhook};
use crate::lifecycle::Operation;
use crate::store::{ActError, AlertFilter, AlertPage, AlertStore, Delivery, StoreError};

/// Receives every stored change, in the order it was committed.
pub type Publish = Arc<dyn Fn(Vec<(Alert, AlertChange)>) + Send + Sync>;

/// Delivers one outbox entry to a subscriber other than a webhook (e.g.
/// Kafka): `Ok` once the subscriber has it. Retried until it succeeds.
pub type SinkFn = Arc<
    dyn Fn(Delivery) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// The subscriber name of the Kafka alert channel's deliveries (a sink
/// the binary adds); no webhook may take it, or the two would share
/// outbox rows.
pub const KAFKA_SUBSCRIBER: &str = "kafka";

/// Longest pause between retries of a sink (webhooks: ten minutes).
const SINK_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// `[alerts]` in the configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Where alerts are kept: `sqlite://data/alerts.db` (the default, a file
    /// created on first start) or `postgres://user:password@host/db`.
    pub database: String,
    /// An open alert nobody acknowledged is notified again after this long;
    /// `0s` never.
    #[serde(with = "humantime_serde")]
    pub renotify_after: Duration,
    /// Webhook subscribers (`[[alerts.webhooks]]`).
    pub webhooks: Vec<Webhook>,
    /// With `[kafka]` enabled: every change's alert state goes to this
    /// topic, keyed by alert id (compaction keeps each alert's latest);
    /// empty: none.
    pub kafka_topic: String,
    /// Publish alerts to the MQTT broker of `[mqtt]` (when the MQTT source
    /// is enabled): each active alert retained at `{mqtt_topic_prefix}/{id}`,
    /// every change on `{mqtt_topic_prefix}/events`.
    pub mqtt: bool,
    /// Topic prefix for alerts on MQTT.
    pub mqtt_topic_prefix: String,
    /// MQTT client id of the alert publisher.
    pub mqtt_client_id: String,
    /// CAP `sender`: a stable identifier of this system, without spaces.
    pub cap_sender: String,
    /// CAP `senderName`: the issuing centre.
    pub cap_sender_name: String,
    /// Set by the binary, not read from the file: other processes (a
    /// cluster) deliver from the same outbox, so each delivery attempted
    /// is taken first ([`AlertStore::take_due_deliveries`]).
    #[serde(skip)]
    pub shared_outbox: bool,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            database: "sqlite://data/alerts.db".into(),
            renotify_after: Duration::from_secs(15 * 60),
            webhooks: Vec::new(),
            kafka_topic: "ioc.alerts".into(),
            mqtt: true,
            mqtt_topic_prefix: "ioc/v1/alerts".into(),
            mqtt_client_id: "ioc-alerts".into(),
            cap_sender: crate::channels::cap::CapSender::default().sender,
            cap_sender_name: crate::channels::cap::CapSender::default().name,
            shared_outbox: false,
        }
    }
}

impl AlertsConfig {
    /// Every problem, with `prefix` before each key.
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut p = Vec::new();
        let d = &self.database;
        if !(d.starts_with("sqlite:")
            || d.starts_with("postgres://")
            || d.starts_with("postgresql://"))
        {
            p.push(format!(
                "{prefix}.database: expected sqlite://… or postgres://…, got {d:?}"
            ));
        }
        if self.cap_sender.is_empty() || self.cap_sender.contains([' ', ',', '<', '&']) {
            p.push(format!(
                "{prefix}.cap_sender: an identifier without spaces, commas, < or &, got {:?}",
                self.cap_sender
            ));
        }
        let topic = &self.mqtt_topic_prefix;
        if topic.is_empty() || topic.contains(['+', '#']) || topic.ends_with('/') {
            p.push(format!(
                "{prefix}.mqtt_topic_prefix: a topic without wildcards or a trailing /, got {topic:?}"
            ));
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            p.extend(w.problems(&format!("{prefix}.webhooks[{i}]")));
            if self.webhooks[..i].iter().any(|o| o.name == w.name) {
                p.push(format!(
                    "{prefix}.webhooks[{i}].name: {:?} is used twice",
                    w.name
                ));
            }
            if w.name == KAFKA_SUBSCRIBER {
                p.push(format!(
                    "{prefix}.webhooks[{i}].name: {:?} is the name of the Kafka alert channel's deliveries; choose another",
                    w.name
                ));
            }
        }
        p
    }
}

/// The running service.
pub struct AlertService {
    store: Arc<AlertStore>,
    cap: crate::channels::cap::CapSender,
    /// Each change with when it was offered, and barriers.
    intake: mpsc::UnboundedSender<Intake>,
    out: Arc<Ordered>,
}

impl std::fmt::Debug for AlertService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertService")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// What the store task takes, in order.
// Nearly every item is an alert: boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
enum Intake {
    /// A change of the rule, with when it was offered.
    Alert(Instant, Alert),
    /// Answered once everything offered before it is stored.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// Publication in commit order. Operators' actions (API tasks) and the
/// rule's changes (the service task) commit from different tasks; each
/// holds `order` from its commit until its publication, so subscribers
/// never see a version after a newer one.
struct Ordered {
    order: tokio::sync::Mutex<()>,
    publish: Publish,
}

impl Ordered {
    /// Counts and publishes committed changes (the caller holds `order`).
    fn emit(&self, done: Vec<(Alert, AlertChange)>) {
        for (_, c) in &done {
            metrics::counter!("ioc_alert_changes_total", "action" => c.action.as_str())
                .increment(1);
        }
        if !done.is_empty() {
            (self.publish)(done);
        }
    }
}

impl AlertService {
    /// Opens the store and starts the tasks: the rule's alerts are applied
    /// in arrival order, and due re-notifications are made, until `cancel`
    /// fires and the intake is drained. Await the handle for that.
    /// Every change also goes, through the durable outbox, to each of
    /// `sinks` (by name).
    pub async fn start(
        config: &AlertsConfig,
        publish: Publish,
        sinks: Vec<(String, SinkFn)>,
        cancel: CancellationToken,
    ) -> Result<(Arc<AlertService>, tokio::task::JoinHandle<()>), StoreError> {
        let store = Arc::new(
            AlertStore::open(&config.database)
                .await?
                .with_webhooks(config.webhooks.clone())
                .with_sinks(sinks.iter().map(|(n, _)| n.clone()).collect())
                .with_shared_outbox(config.shared_outbox),
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let out = Arc::new(Ordered {
            order: tokio::sync::Mutex::new(()),
            publish,
        });
        let service = Arc::new(AlertService {
            store: store.clone(),
            cap: crate::channels::cap::CapSender {
                sender: config.cap_sender.clone(),
                name: config.cap_sender_name.clone(),
            },
            intake: tx,
            out: out.clone(),
        });
        let renotify = config.renotify_after;
        let deliver = (!config.webhooks.is_empty() || !sinks.is_empty())
            .then(|| tokio::spawn(deliver(store.clone(), sinks, cancel.clone())));
        let task = tokio::spawn(async move {
            run(store, rx, out, renotify, cancel).await;
            if let Some(d) = deliver {
                let _ = d.await;
            }
        });
        Ok((service, task))
    }

    /// Hands over a change of the rule. Never waits and never drops: the
    /// queue holds what the database has not taken yet (alerts are few).
    pub fn offer(&self, alert: Alert) {
        metrics::gauge!("ioc_alert_store_queue").increment(1.0);
        if self
            .intake
            .send(Intake::Alert(Instant::now(), alert))
            .is_err()
        {
            tracing::error!("alert store stopped: an alert change was not stored");
            metrics::counter!("ioc_alert_store_lost_total").increment(1);
        }
    }

    /// Returns once every change offered before the call is stored (or
    /// the service stopped): the engine's checkpoint waits for it, so a
    /// restart never skips a change it made before the checkpoint.
    pub async fn flushed(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.intake.send(Intake::Barrier(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Carries out an operator's action and publishes the new version.
    pub async fn act(&self, id: &str, op: &Operation, by: &str) -> Result<Alert, ActError> {
        let _order = self.out.order.lock().await;
        let (alert, entry) = self.store.act(id, op, by, Timestamp::now()).await?;
        if let Some(entry) = entry {
            self.out.emit(vec![(alert.clone(), entry)]);
        }
        Ok(alert)
    }

    /// One alert with its history.
    pub async fn get(&self, id: &str) -> Result<Option<AlertDetail>, StoreError> {
        self.store.get(id).await
    }

    /// One alert as it is now, without its history.
    pub async fn alert(&self, id: &str) -> Result<Option<Alert>, StoreError> {
        self.store.alert(id).await
    }

    /// A page of alerts.
    pub async fn list(&self, filter: &AlertFilter) -> Result<AlertPage, StoreError> {
        self.store.list(filter).await
    }

    /// Every active alert (for the live hub at start).
    pub async fn active(&self) -> Result<Vec<Alert>, StoreError> {
        self.store.active().await
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// The name this process's changes are announced under (see
    /// [`crate::follow`]).
    pub fn origin(&self) -> &str {
        self.store.origin()
    }

    /// Who CAP messages are from.
    pub fn cap_sender(&self) -> &crate::channels::cap::CapSender {
        &self.cap
    }

    /// Webhook deliveries in `state` (`pending`, `delivered`, `dead`).
    pub async fn deliveries(&self, state: &str, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        self.store.deliveries(state, limit).await
    }

    /// Records a write through the API.
    pub async fn record_audit(&self, entry: &crate::AuditEntry) -> Result<(), StoreError> {
        self.store.record_audit(entry).await
    }

    /// The latest writes through the API, newest first.
    pub async fn audit(
        &self,
        before: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<crate::AuditEntry>, StoreError> {
        self.store.audit(before, limit).await
    }
}

/// Most deliveries a subscriber's worker takes from the outbox at a time.
const ROUND: u32 = 100;

/// Requests a subscriber's worker has in flight at once. The due
/// deliveries are of distinct alerts (one version each), so they may go
/// together: a storm of changes reaches a receiver that takes a second per
/// request in seconds, not minutes.
const IN_FLIGHT: usize = 8;

/// Drains the outbox until `cancel` fires, with one worker per subscriber:
/// a subscriber that is slow or down (each attempt waiting out its
/// `timeout`) holds up only its own deliveries, never another's.
async fn deliver(store: Arc<AlertStore>, sinks: Vec<(String, SinkFn)>, cancel: CancellationToken) {
    let client = match reqwest::Client::builder().build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client: webhooks stay in the outbox");
            return;
        }
    };
    let hooks = store
        .webhooks()
        .iter()
        .cloned()
        .map(|hook| Subscriber::Webhook {
            hook,
            client: client.clone(),
        });
    let sinks = sinks
        .into_iter()
        .map(|(name, sink)| Subscriber::Sink { name, sink });
    let subscribers: Vec<Subscriber> = hooks.chain(sinks).collect();
    let configured: Vec<&str> = subscribers.iter().map(Subscriber::name).collect();
    match store
        .abandon_unconfigured(&configured, Timestamp::now())
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            deliveries = n,
            "pending deliveries to subscribers no longer configured were given up (listed as dead)"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot give up deliveries to removed subscribers"),
    }
    let mut workers = tokio::task::JoinSet::new();
    for subscriber in subscribers {
        workers.spawn(drain(store.clone(), subscriber, cancel.clone()));
    }
    while workers.join_next().await.is_some() {}
}

/// Where a subscriber's deliveries go.
enum Subscriber {
    /// An HTTP endpoint (`[[alerts.webhooks]]`).
    Webhook {
        hook: Webhook,
        client: reqwest::Client,
    },
    /// A channel of ours (Kafka, MQTT), retried until it takes the delivery.
    Sink { name: String, sink: SinkFn },
}

impl Subscriber {
    fn name(&self) -> &str {
        match self {
            Subscriber::Webhook { hook, .. } => &hook.name,
            Subscriber::Sink { name, .. } => name,
        }
    }

    async fn send(&self, d: &Delivery) -> Result<(), String> {
        match self {
            Subscriber::Webhook { hook, client } => post(client, hook, d).await,
            Subscriber::Sink { sink, .. } => sink(d.clone()).await,
        }
    }

    fn max_attempts(&self) -> u32 {
        match self {
            Subscriber::Webhook { hook, .. } => hook.max_attempts,
            Subscriber::Sink { .. } => u32::MAX,
        }
    }

    /// The pause before the next attempt after `attempts` failed ones.
    fn backoff(&self, attempts: u32) -> Duration {
        let wait = webhook::backoff(attempts);
        match self {
            Subscriber::Webhook { .. } => wait,
            Subscriber::Sink { .. } => wait.min(SINK_MAX_BACKOFF),
        }
    }
}

/// One subscriber's worker: posts its due deliveries, oldest first and up
/// to [`IN_FLIGHT`] at once, and records each outcome, until `cancel`
/// fires. A request in flight then is dropped; its delivery stays pending
/// and goes again after a restart (with the same `Idempotency-Key`).
async fn drain(store: Arc<AlertStore>, subscriber: Subscriber, cancel: CancellationToken) {
    let name = subscriber.name().to_owned();
    loop {
        let due = match store
            .take_due_deliveries(&name, Timestamp::now(), ROUND)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(subscriber = %name, error = %e, "alert outbox unavailable; will retry");
                Vec::new()
            }
        };
        metrics::gauge!("ioc_alert_deliveries_due", "subscriber" => name.clone())
            .set(due.len() as f64);
        let round = futures_util::stream::iter(&due).for_each_concurrent(IN_FLIGHT, |d| {
            let (store, subscriber, name) = (&store, &subscriber, &name);
            async move {
                let outcome = subscriber.send(d).await;
                let max_attempts = subscriber.max_attempts();
                let label = match &outcome {
                    Ok(()) => "delivered",
                    Err(_) if d.attempts + 1 >= max_attempts => "dead",
                    Err(_) => "retried",
                };
                metrics::counter!("ioc_alert_deliveries_total", "subscriber" => name.clone(), "outcome" => label).increment(1);
                if let Err(e) = &outcome {
                    tracing::warn!(subscriber = %name, alert = %d.alert, version = d.version, attempt = d.attempts + 1, error = %e, "alert delivery failed");
                }
                let wait = subscriber.backoff(d.attempts);
                let next = Timestamp(Timestamp::now().millis() + wait.as_millis() as i64);
                let recorded = store
                    .record_attempt(d, outcome, next, max_attempts, Timestamp::now())
                    .await;
                if let Err(e) = recorded {
                    tracing::warn!(error = %e, "delivery outcome not recorded; it will be repeated");
                }
            }
        });
        tokio::select! {
            _ = cancel.cancelled() => return,
            () = round => {}
        }
        let pause = if due.is_empty() {
            Duration::from_millis(200)
        } else {
            Duration::ZERO
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

async fn post(client: &reqwest::Client, hook: &Webhook, d: &Delivery) -> Result<(), String> {
    let response = client
        .post(&hook.url)
        .timeout(hook.timeout)
        .header("Content-Type", "application/json")
        .header(
            "X-IOC-Signature-256",
            webhook::signature(&hook.secret, d.body.as_bytes()),
        )
        .header("Idempotency-Key", format!("{}:{}", d.alert, d.version))
        .header("X-IOC-Delivery-Attempt", (d.attempts + 1).to_string())
        .body(d.body.clone())
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        let text = response.text().await.unwrap_or_default();
        let text: String = text.chars().take(300).collect();
        Err(format!("HTTP {status}: {text}"))
    }
}

async fn run(
    store: Arc<AlertStore>,
    mut rx: mpsc::UnboundedReceiver<Intake>,
    out: Arc<Ordered>,
    renotify_after: Duration,
    cancel: CancellationToken,
) {
    let tick = if renotify_after.is_zero() {
        Duration::from_secs(3600)
    } else {
        (renotify_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
    };
    let mut timer = tokio::time::interval(tick);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, 256) => {
                if n == 0 {
                    break;
                }
                let _order = out.order.lock().await;
                let mut done = Vec::with_capacity(n);
                let mut replayed = Vec::new();
                let mut barriers = Vec::new();
                for item in batch.drain(..) {
                    let (offered, alert) = match item {
                        Intake::Alert(offered, alert) => (offered, alert),
                        Intake::Barrier(b) => {
                            barriers.push(b);
                            continue;
                        }
                    };
                    metrics::gauge!("ioc_alert_store_queue").decrement(1.0);
                    let started = Instant::now();
                    metrics::histogram!("ioc_alert_store_wait_seconds")
                        .record(started.duration_since(offered).as_secs_f64());
                    if let Some(change) = apply_with_retry(&store, &alert, &cancel).await {
                        done.push(change);
                    } else if let Ok(Some(again)) = store.replayed(&alert).await {
                        replayed.push(again);
                    }
                    metrics::histogram!("ioc_alert_store_apply_seconds")
                        .record(started.elapsed().as_secs_f64());
                }
                out.emit(done);
                if !replayed.is_empty() {
                    (out.publish)(replayed);
                }
                for b in barriers {
                    let _ = b.send(());
                }
            }
            _ = timer.tick(), if !renotify_after.is_zero() => {
                let now = Timestamp::now();
                let before = Timestamp(now.millis() - renotify_after.as_millis() as i64);
                let _order = out.order.lock().await;
                match store.renotify_due(before, now).await {
                    Ok(done) => out.emit(done),
                    Err(e) => tracing::warn!(error = %e, "re-notification check failed; will retry"),
                }
            }
            _ = cancel.cancelled() => {
                // Whatever is already queued is still stored.
                rx.close();
                cancel_drain(&store, &mut rx, &out).await;
                break;
            }
        }
    }
    store.close().await;
}

async fn cancel_drain(store: &AlertStore, rx: &mut mpsc::UnboundedReceiver<Intake>, out: &Ordered) {
    let _order = out.order.lock().await;
    let mut done = Vec::new();
    while let Ok(item) = rx.try_recv() {
        let Intake::Alert(_, alert) = item else {
            continue;
        };
        metrics::gauge!("ioc_alert_store_queue").decrement(1.0);
        match store.apply_rule(&alert, Timestamp::now()).await {
            Ok(Some(change)) => done.push(change),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, alert = %alert.id, "alert change not stored at shutdown")
            }
        }
    }
    out.emit(done);
}

/// Applies one change of the rule, retrying while the database is away
/// (with backoff up to 5 s) until it is stored or the process stops.
async fn apply_with_retry(
    store: &AlertStore,
    alert: &Alert,
    cancel: &CancellationToken,
) -> Option<(Alert, AlertChange)> {
    let mut wait = Duration::from_millis(100);
    loop {
        match store.apply_rule(alert, Timestamp::now()).await {
            Ok(done) => return done,
            Err(e @ (StoreError::Corrupt(_) | StoreError::Url(_))) => {
                tracing::error!(error = %e, alert = %alert.id, "alert change cannot be stored");
                metrics::counter!("ioc_alert_store_errors_total").increment(1);
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, alert = %alert.id, "alert store unavailable; retrying");
                metrics::counter!("ioc_alert_store_retries_total").increment(1);
                if cancel.is_cancelled() && wait >= Duration::from_secs(5) {
                    tracing::error!(alert = %alert.id, "alert change not stored at shutdown");
                    return None;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}
