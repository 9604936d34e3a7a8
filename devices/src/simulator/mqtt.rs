//! Publishes simulated readings over MQTT, as real devices do.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, QoS};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use ioc_schemas::Timestamp;

use super::Simulator;

/// The MQTT topic a device publishes its telemetry on.
pub fn telemetry_topic(kind: ioc_schemas::DeviceKind, device: &str) -> String {
    format!("ioc/v1/{kind}/{device}/telemetry")
}

/// The presence topic of a device: `ioc/v1/{kind}/{device}/status`, where
/// it keeps a retained `online` or `offline` (the latter as its last will).
pub fn status_topic(kind: ioc_schemas::DeviceKind, device: &str) -> String {
    format!("ioc/v1/{kind}/{device}/status")
}

/// Splits `mqtt://host:port` (or `tcp://`, or a bare `host:port`; default
/// port 1883) or `mqtts://host:port` (TLS; default port 8883) into host and
/// port.
pub fn parse_broker_url(url: &str) -> Result<(String, u16), String> {
    let (rest, default_port) = match url.strip_prefix("mqtts://") {
        Some(rest) => (rest, 8883),
        None => (
            url.strip_prefix("mqtt://")
                .or_else(|| url.strip_prefix("tcp://"))
                .unwrap_or(url),
            1883,
        ),
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("invalid port in broker URL {url:?}"))?,
        ),
        None => (rest, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("no host in broker URL {url:?}"));
    }
    Ok((host.to_owned(), port))
}

/// Publishes readings at `rate` messages per second until `cancel` fires.
/// Returns the number of readings published.
pub async fn publish(
    mut sim: Simulator,
    host: &str,
    port: u16,
    rate: f64,
    cancel: CancellationToken,
) -> u64 {
    let mut options = MqttOptions::new(format!("ioc-simulator-{}", std::process::id()), host, port);
    options.set_keep_alive(Duration::from_secs(15));
    options.set_inflight(200);
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    // The poller outlives `cancel` until the last statuses and the
    // disconnect have gone out (or `done` gives up on them).
    let done = CancellationToken::new();
    let poller = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                tokio::select! {
                    () = done.cancelled() => break,
                    event = eventloop.poll() => match event {
                        Ok(Event::Incoming(rumqttc::Incoming::ConnAck(_))) => {
                            backoff = Duration::from_millis(100);
                            debug!("simulator connected");
                        }
                        Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                        Ok(_) => {}
                        Err(e) => {
                            warn!(error = %e, "simulator lost the broker; retrying in {backoff:?}");
                            tokio::select! {
                                () = done.cancelled() => break,
                                () = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            }
        })
    };
    info!(
        host,
        port,
        rate,
        devices = sim.registry().devices().len(),
        "simulator publishing"
    );
    // The simulated devices share one connection, so one last will cannot
    // speak for each; they announce themselves and sign off explicitly.
    let status_topics: Vec<String> = sim
        .registry()
        .devices()
        .iter()
        .map(|d| status_topic(d.kind, &d.id))
        .collect();
    let statuses = |status: &'static str| {
        let (client, topics) = (client.clone(), &status_topics);
        async move {
            for topic in topics {
                if client
                    .publish(topic.as_str(), QoS::AtLeastOnce, true, status)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    };
    tokio::select! {
        () = cancel.cancelled() => {}
        () = statuses("online") => {}
    }
    let tick = Duration::from_millis(10);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let per_tick = rate.max(0.0) * tick.as_secs_f64();
    let mut owed = 0.0;
    let mut sent = 0u64;
    'outer: loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = interval.tick() => {}
        }
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            let Some(reading) = sim.next_reading(Timestamp::now()) else {
                break 'outer;
            };
            let kind = sim.registry().get(&reading.device).map(|d| d.kind);
            let Some(kind) = kind else { continue };
            let topic = telemetry_topic(kind, &reading.device);
            tokio::select! {
                () = cancel.cancelled() => break 'outer,
                r = client.publish(topic, QoS::AtLeastOnce, false, reading.to_json()) => {
                    if r.is_err() { break 'outer }
                }
            }
            sent += 1;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        statuses("offline").await;
        let _ = client.disconnect().await;
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), poller).await;
    done.cancel();
    info!(sent, "simulator stopped");
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_broker_urls() {
        assert_eq!(
            parse_broker_url("mqtt://127.0.0.1:1884").unwrap(),
            ("127.0.0.1".into(), 1884)
        );
        assert_eq!(
            parse_broker_url("localhost").unwrap(),
            ("localhost".into(), 1883)
        );
        assert_eq!(
            parse_broker_url("tcp://[::1]:1883").unwrap(),
            ("::1".into(), 1883)
        );
        assert_eq!(
            parse_broker_url("mqtts://broker.example").unwrap(),
            ("broker.example".into(), 8883)
        );
        assert!(parse_broker_url("mqtt://:1883").is_err());
        assert!(parse_broker_url("mqtt://h:port").is_err());
    }
}
