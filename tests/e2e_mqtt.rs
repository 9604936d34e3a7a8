//! The MQTT source against Mosquitto: TLS with a client certificate and a
//! password, a shared subscription split across two processors, a broker
//! restart in the middle of a stream, device presence from retained status
//! topics and last wills, and an MQTT 5 session that outlives the processor.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    Device, Mosquitto, Screen, dead_letters, free_port, get_json, river_reading, test_config,
    wait_for,
};
use ioc::app::Running;
use ioc_ingest::mqtt::MqttProtocol;
use rumqttc::{LastWill, QoS};

const TOPIC: &str = "ioc/v1/river_gauge/river-to-hieu/telemetry";

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is needed to make test certificates");
    assert!(status.success(), "openssl {args:?}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=ioc test CA",
        ],
    );
    for (name, cn) in [("server", "127.0.0.1"), ("client", "ioc")] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        std::fs::write(
            dir.join(format!("{name}.ext")),
            "subjectAltName=IP:127.0.0.1\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificate_and_password() {
    let plain = free_port();
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let c = certs.path().to_owned();
    let broker = Mosquitto::start_with(|tls_port, dir| {
        let passwd = dir.join("passwd");
        std::fs::write(&passwd, "").unwrap();
        let ok = Command::new("mosquitto_passwd")
            .args(["-b", passwd.to_str().unwrap(), "ioc", "s3cret-pass"])
            .status()
            .unwrap();
        assert!(ok.success());
        format!(
            "per_listener_settings true\n\
             listener {tls_port} 127.0.0.1\n\
             cafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n\
             require_certificate true\nallow_anonymous false\npassword_file {1}\n\
             listener {plain} 127.0.0.1\nallow_anonymous true\n",
            c.display(),
            passwd.display()
        )
    });
    let mut config = test_config(format!("mqtts://127.0.0.1:{}", broker.port), false);
    config.mqtt.username = Some("ioc".into());
    config.mqtt.password = Some("s3cret-pass".into());
    config.mqtt.ca_file = Some(c.join("ca.pem"));
    config.mqtt.client_cert_file = Some(c.join("client.pem"));
    // native-tls wants the key as PKCS#8.
    openssl(
        &c,
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "client.key",
            "-out",
            "client.p8",
        ],
    );
    config.mqtt.client_key_file = Some(c.join("client.p8"));
    assert_eq!(config.problems(), Vec::<String>::new());
    let running = ioc::app::start(config).await.unwrap();
    let device = Device::connect(plain).await;
    let stats = running.ingest_stats.clone();
    let mut seq = 0;
    wait_for("a reading over TLS", 20, || {
        seq += 1;
        let d = device.client.clone();
        let p = river_reading("river-to-hieu", seq, 1.0);
        tokio::spawn(async move { d.publish(TOPIC, rumqttc::QoS::AtLeastOnce, false, p).await });
        stats.accepted_count() > 0
    })
    .await;
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_subscription_splits_one_stream_between_two_processors() {
    let broker = Mosquitto::start();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let mut a = test_config(url.clone(), false);
    let mut b = test_config(url, false);
    for c in [&mut a, &mut b] {
        c.mqtt.topics = vec!["$share/ioc/ioc/v1/+/+/telemetry".into()];
    }
    let a = ioc::app::start(a).await.unwrap();
    let b = ioc::app::start(b).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let device = Device::connect(broker.port).await;
    let n = 400;
    for seq in 1..=n {
        device
            .publish(TOPIC, river_reading("river-to-hieu", seq, 1.0))
            .await;
    }
    let (sa, sb) = (a.ingest_stats.clone(), b.ingest_stats.clone());
    wait_for("every reading, once", 20, || {
        sa.received_count() + sb.received_count() >= n
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sa.received_count() + sb.received_count(),
        n,
        "each message goes to one of the two"
    );
    assert!(
        sa.received_count() > 0 && sb.received_count() > 0,
        "both got a share"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_no_acknowledged_reading() {
    let mut broker = Mosquitto::start_with(|port, dir| {
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\n\
             persistence true\npersistence_location {}/\nautosave_interval 1\n",
            dir.display()
        )
    });
    let mut config = test_config(format!("mqtt://127.0.0.1:{}", broker.port), false);
    config.mqtt.max_backoff = Duration::from_secs(1);
    let running = ioc::app::start(config).await.unwrap();
    let stats = running.ingest_stats.clone();
    let device = Device::connect(broker.port).await;
    let first = river_reading("river-to-hieu", 1, 1.0);
    wait_for("the source to subscribe", 10, || {
        let (d, p) = (device.client.clone(), first.clone());
        tokio::spawn(async move { d.publish(TOPIC, rumqttc::QoS::AtLeastOnce, false, p).await });
        stats.accepted_count() > 0
    })
    .await;
    // A stream of readings with the broker restarted in the middle. The
    // device client retransmits what the broker had not acknowledged.
    let n = 300u64;
    for seq in 2..=n {
        device
            .publish(TOPIC, river_reading("river-to-hieu", seq, 1.0))
            .await;
        if seq == n / 2 {
            broker.restart();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_for("every reading after the restart", 30, || {
        stats.accepted_count() >= n
    })
    .await;
    // Duplicates (redeliveries) were caught; each reading counted once.
    assert_eq!(stats.accepted_count(), n);
    running.shutdown().await.unwrap();
}

const STATUS: &str = "ioc/v1/river_gauge/river-to-hieu/status";

async fn presence_of(running: &Running, device: &str) -> serde_json::Value {
    get_json(running.http_addr, &format!("/api/v1/devices/{device}")).await["presence"]["status"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_retained_status_and_the_last_will() {
    let broker = Mosquitto::start();
    // The gauge announces itself before the processor exists: the broker
    // keeps its retained status for whoever subscribes later.
    let gauge = Device::connect_with(broker.port, |o| {
        o.set_last_will(LastWill::new(STATUS, "offline", QoS::AtLeastOnce, true));
    })
    .await;
    gauge
        .client
        .publish(STATUS, QoS::AtLeastOnce, true, "online")
        .await
        .unwrap();
    let config = test_config(format!("mqtt://127.0.0.1:{}", broker.port), false);
    let running = ioc::app::start(config.clone()).await.unwrap();
    let stats = running.ingest_stats.clone();
    wait_for("the retained status", 10, || stats.accepted_count() > 0).await;
    assert_eq!(presence_of(&running, "river-to-hieu").await, "online");

    // The gauge's connection drops without a goodbye: the broker publishes
    // its last will, and the screen sees the change as a delta.
    let mut screen = Screen::connect(running.http_addr).await;
    screen.next().await.unwrap();
    drop(gauge);
    let change = loop {
        let delta = screen.next().await.expect("live feed closed");
        if let Some(p) = delta["presence"].as_array().and_then(|p| p.first()) {
            break p.clone();
        }
    };
    assert_eq!(
        (&change["device"], &change["status"]),
        (&"river-to-hieu".into(), &"offline".into())
    );
    assert_eq!(presence_of(&running, "river-to-hieu").await, "offline");

    // Bad statuses are dead letters like bad telemetry.
    let other = Device::connect(broker.port).await;
    other.publish(STATUS, "maybe").await;
    other
        .publish("ioc/v1/river_gauge/river-atlantis/status", "online")
        .await;
    wait_for("two rejected statuses", 10, || {
        stats.received_count() - stats.accepted_count() >= 2
    })
    .await;
    running.shutdown().await.unwrap();
    let mut reasons: Vec<_> = dead_letters(&config)
        .iter()
        .map(|l| l.reason.code().to_owned())
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["invalid_field", "unknown_device"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt5_session_keeps_readings_while_the_processor_is_away() {
    let broker = Mosquitto::start();
    let mut config = test_config(format!("mqtt://127.0.0.1:{}", broker.port), false);
    config.mqtt.protocol = MqttProtocol::V5;
    let running = ioc::app::start(config.clone()).await.unwrap();
    let stats = running.ingest_stats.clone();
    let device = Device::connect(broker.port).await;
    wait_for("the MQTT 5 source to subscribe", 10, || {
        let d = device.client.clone();
        tokio::spawn(async move {
            d.publish(
                TOPIC,
                QoS::AtLeastOnce,
                false,
                river_reading("river-to-hieu", 1, 1.0),
            )
            .await
        });
        stats.accepted_count() > 0
    })
    .await;
    // A clean shutdown sends DISCONNECT. Without a session expiry, an
    // MQTT 5 broker would end the session here and drop what follows.
    running.shutdown().await.unwrap();
    let n = 50u64;
    for seq in 2..=n + 1 {
        device
            .publish(TOPIC, river_reading("river-to-hieu", seq, 1.0))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let running = ioc::app::start(config).await.unwrap();
    let stats = running.ingest_stats.clone();
    wait_for("the readings queued in the session", 15, || {
        stats.accepted_count() >= n
    })
    .await;
    assert_eq!(
        get_json(running.http_addr, "/api/v1/devices/river-to-hieu").await["state"]["seq"],
        n + 1
    );
    running.shutdown().await.unwrap();
}
