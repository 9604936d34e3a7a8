//! The output router: where each kind of output goes.
//!
//! ```text
//! engine ─ EngineOutput batches ─► hub loop ─► Router::route_engine
//!   Alert ──────────────► alert service (stores each change, in order)
//!                            │ every stored version, the rule's and operators' alike
//!                            ▼
//!                         Router::publish ──┬─► live hub (screens, REST)
//!                                           ├─► time series (`alert` measurement)
//!                                           └─► MQTT alert channel (retained state, events)
//!                         the store's outbox ──► Kafka alert channel, webhooks
//!   Window ─────────────► time series (rainfall, traffic, camera) ─┐
//!   Geofence ───────────► time series (`geofence` measurement) ────┼─► live hub
//!   Device, Presence, Track ───────────────────────────────────────┘
//! ingest ─ accepted readings ─► time series (`reading` measurement)
//! ```
//!
//! The live hub never sees the engine's alerts directly: it shows what the
//! store holds, so a screen and the database agree. The alert channels
//! themselves live in `ioc_alerts::channels`; this module decides which
//! of them a deployment feeds (from the configuration) and connects them.

use std::sync::Arc;

use anyhow::Context as _;
use ioc_alerts::channels::kafka::{self, KafkaPublisher};
use ioc_alerts::channels::mqtt::{self as alert_mqtt, AlertMqtt};
use ioc_alerts::{AlertService, Publish, SinkFn};
use ioc_dashboard_api::LiveHub;
use ioc_schemas::{Alert, EngineOutput};
use ioc_timeseries::{Input, Record};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The consumers of every kind of output, connected.
#[derive(Clone)]
pub struct Router {
    hub: Arc<LiveHub>,
    timeseries: Option<Input>,
    mqtt: Option<AlertMqtt>,
    registry: Arc<ioc_devices::RegistryCell>,
}

/// The MQTT alert channel before it connects: changes offered meanwhile
/// wait for it.
pub struct MqttChannel {
    pending: alert_mqtt::Pending,
    options: rumqttc::MqttOptions,
    prefix: String,
}

impl Router {
    /// The router of `config`: the live hub always; the time series when
    /// `influx` is on; the MQTT alert channel when `alerts.mqtt` and
    /// `mqtt` are on (returned, to be run once the store says which
    /// alerts are active).
    pub fn new(
        config: &Config,
        hub: Arc<LiveHub>,
        timeseries: Option<Input>,
        registry: Arc<ioc_devices::RegistryCell>,
    ) -> (Router, Option<MqttChannel>) {
        let (mqtt, pending) = if config.alerts.mqtt && config.mqtt.enabled {
            let (tx, pending) = alert_mqtt::channel();
            let channel = MqttChannel {
                pending,
                options: ioc_ingest::mqtt::publisher_options(
                    &config.mqtt,
                    &config.alerts.mqtt_client_id,
                ),
                prefix: config.alerts.mqtt_topic_prefix.clone(),
            };
            (Some(tx), Some(channel))
        } else {
            (None, None)
        };
        let router = Router {
            hub,
            timeseries,
            mqtt,
            registry,
        };
        (router, pending)
    }

    /// The store's publish callback: every stored alert version goes to
    /// the MQTT channel, the time series and the live hub.
    pub fn publish(&self) -> Publish {
        let router = self.clone();
        Arc::new(move |changes| {
            if let Some(m) = &router.mqtt {
                m.offer(&changes);
            }
            router.hub.apply(
                changes
                    .into_iter()
                    .map(|(a, _)| EngineOutput::alert(a))
                    .collect(),
            );
        })
    }

    /// Routes a batch of engine outputs before the hub applies what is
    /// left: the rule's alerts go to the store (in order; the hub gets the
    /// stored versions through [`Router::publish`]); windows and geofence
    /// events also go to the time series.
    pub fn route_engine(&self, alerts: &AlertService, batch: &mut Vec<EngineOutput>) {
        if batch.iter().any(|o| matches!(o, EngineOutput::Alert(_))) {
            let mut rest = Vec::with_capacity(batch.len());
            for output in batch.drain(..) {
                match output {
                    EngineOutput::Alert(a) => alerts.offer(*a),
                    other => rest.push(other),
                }
            }
            *batch = rest;
        }
        let Some(input) = &self.timeseries else {
            return;
        };
        let registry = self.registry.current();
        for output in batch.iter() {
            match output {
                EngineOutput::Window(w) => {
                    if let Some(device) = registry.lookup(&w.device) {
                        input.offer(Record::Window {
                            device,
                            window: Box::new(w.clone()),
                        });
                    }
                }
                EngineOutput::Geofence(g) => {
                    input.offer(Record::Geofence(Box::new(g.clone())));
                }
                EngineOutput::Alert(_)
                | EngineOutput::Device(_)
                | EngineOutput::Presence(_)
                | EngineOutput::Track(_) => {}
            }
        }
    }
}

/// The outbox subscriber that writes each alert version to the time
/// series: through the outbox, a change stored just before a crash still
/// gets its point after the restart.
pub const TIMESERIES_SUBSCRIBER: &str = "timeseries";

/// Delivers an alert version as a time-series point: done once the point
/// is in the sink's spool on disk.
fn timeseries_sink(input: ioc_timeseries::Input) -> SinkFn {
    Arc::new(move |d: ioc_alerts::Delivery| {
        let input = input.clone();
        Box::pin(async move {
            let body: serde_json::Value =
                serde_json::from_str(&d.body).map_err(|e| e.to_string())?;
            let alert: ioc_schemas::Alert =
                serde_json::from_value(body["alert"].clone()).map_err(|e| e.to_string())?;
            input
                .send(Record::Alert(Box::new(alert)))
                .await
                .map_err(|e| e.to_string())?;
            input.flushed().await.map_err(|e| e.to_string())
        })
    })
}

impl MqttChannel {
    /// Connects and publishes until `cancel` fires, first reconciling the
    /// broker's retained alerts with `active`.
    pub fn run(self, active: Vec<Alert>, cancel: CancellationToken) -> JoinHandle<()> {
        self.pending.run(self.options, self.prefix, active, cancel)
    }
}

/// The alert channels fed from the store's durable outbox, by subscriber
/// name: Kafka when `kafka` is on and `alerts.kafka_topic` is set
/// (webhooks are configured in `alerts.webhooks` and delivered by the
/// alert service itself).
pub fn outbox_channels(
    config: &Config,
    timeseries: Option<ioc_timeseries::Input>,
) -> anyhow::Result<Vec<(String, SinkFn)>> {
    let mut sinks = Vec::new();
    if let Some(input) = timeseries {
        sinks.push((TIMESERIES_SUBSCRIBER.to_owned(), timeseries_sink(input)));
    }
    if config.kafka.enabled && !config.alerts.kafka_topic.is_empty() {
        let producer = KafkaPublisher::new(&config.kafka.producer_config())
            .context("cannot create the Kafka alert producer")?;
        sinks.push((
            ioc_alerts::KAFKA_SUBSCRIBER.to_owned(),
            kafka::sink(Arc::new(producer), config.alerts.kafka_topic.clone()),
        ));
    }
    Ok(sinks)
}
