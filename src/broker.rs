//! The embedded MQTT broker (rumqttd) for the one-command default.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;

/// Starts rumqttd on `addr` in its own thread and waits until it accepts
/// connections.
pub fn start(addr: SocketAddr, max_payload_bytes: usize) -> anyhow::Result<()> {
    // rumqttd reports a busy port only in its log, so check first.
    match TcpListener::bind(addr) {
        Ok(l) => drop(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "MQTT port {addr} is in use: set mqtt.url (or --mqtt-url) to another port for the embedded broker, \
             or point it at your running broker and set embedded_broker.enabled = false (--no-embedded-broker)"
        ),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot listen on {addr} for the embedded MQTT broker"));
        }
    }
    let config: rumqttd::Config = serde_json::from_value(json!({
        "id": 0,
        "router": {
            "max_connections": 10010,
            "max_outgoing_packet_count": 200,
            "max_segment_size": 104_857_600,
            "max_segment_count": 10
        },
        "v4": {
            "1": {
                "name": "v4-1",
                "listen": addr.to_string(),
                "next_connection_delay_ms": 1,
                "connections": {
                    "connection_timeout_ms": 60000,
                    "max_payload_size": max_payload_bytes,
                    "max_inflight_count": 500,
                    "dynamic_filters": true
                }
            }
        }
    }))
    .context("building the embedded broker configuration")?;
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "the embedded MQTT broker stopped");
            }
        })
        .context("spawning the embedded broker thread")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let target = addr
        .to_socket_addrs()?
        .next()
        .context("no broker address")?;
    while TcpStream::connect_timeout(&target, Duration::from_millis(100)).is_err() {
        if Instant::now() > deadline {
            bail!("the embedded MQTT broker did not start listening on {addr} within 5 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_port_is_reported_with_the_way_out() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let err = start(taken.local_addr().unwrap(), 1024)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is in use")
                && err.contains("mqtt.url")
                && err.contains("embedded_broker.enabled"),
            "{err}"
        );
    }
}
