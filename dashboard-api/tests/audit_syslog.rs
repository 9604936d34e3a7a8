//! The audit log to syslog: each write through the API, allowed or
//! refused, reaches a collector as an RFC 5424 message, over UDP and over
//! TCP (octet counting).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ioc_dashboard_api::AppState;
use ioc_dashboard_api::auth::{Auth, AuthConfig};
use ioc_dashboard_api::hub::LiveHub;
use ioc_dashboard_api::syslog::{Syslog, Target};
use ioc_devices::Registry;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "admin-token-0123456789";

/// A server sending its audit log to `target`; its address.
async fn server(target: Target, cancel: &CancellationToken) -> std::net::SocketAddr {
    let hub = LiveHub::new(Registry::sonla_demo());
    let mut state = AppState::new(
        hub,
        cancel.clone(),
        Auth::new(&AuthConfig::default(), ADMIN).unwrap(),
    );
    state.syslog = Some(Syslog::start(target));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ioc_dashboard_api::serve(listener, None, state));
    addr
}

/// A write without a token (refused: 401).
async fn refused_write(addr: std::net::SocketAddr) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /api/v1/alerts/a-1/ack HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
}

/// Checks an RFC 5424 message of that refusal.
fn check(message: &str) {
    // <PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG
    let parts: Vec<&str> = message.splitn(8, ' ').collect();
    assert_eq!(parts.len(), 8, "{message}");
    // Facility 13 (log audit), severity 4 (warning: refused).
    assert_eq!(parts[0], "<108>1", "{message}");
    assert!(
        parts[1].ends_with('Z') && parts[1].contains('T'),
        "{message}"
    );
    assert!(!parts[2].is_empty(), "{message}");
    assert_eq!(
        (parts[3], parts[5], parts[6]),
        ("ioc", "audit", "-"),
        "{message}"
    );
    assert_eq!(parts[4], std::process::id().to_string(), "{message}");
    let entry: serde_json::Value = serde_json::from_str(parts[7]).unwrap();
    assert_eq!(entry["status"], 401, "{message}");
    assert_eq!(entry["method"], "POST", "{message}");
    assert_eq!(entry["path"], "/api/v1/alerts/a-1/ack", "{message}");
    assert_eq!(entry["actor"], "unauthenticated", "{message}");
    assert_eq!(entry["source"], "127.0.0.1", "{message}");
}

#[tokio::test]
async fn every_write_reaches_a_syslog_collector_over_udp_and_tcp() {
    let cancel = CancellationToken::new();

    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = server(
        format!("udp://{}", udp.local_addr().unwrap())
            .parse()
            .unwrap(),
        &cancel,
    )
    .await;
    refused_write(addr).await;
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(5), udp.recv(&mut buf))
        .await
        .expect("a datagram")
        .unwrap();
    check(std::str::from_utf8(&buf[..n]).unwrap());

    let collector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server(
        format!("tcp://{}", collector.local_addr().unwrap())
            .parse()
            .unwrap(),
        &cancel,
    )
    .await;
    refused_write(addr).await;
    refused_write(addr).await;
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(5), collector.accept())
        .await
        .expect("a connection")
        .unwrap();
    // Octet counting: "LEN SP MSG", twice on one connection.
    let mut stream = Vec::new();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk))
            .await
            .expect("two messages")
            .unwrap();
        stream.extend_from_slice(&chunk[..n]);
        while let Some(sp) = stream.iter().position(|b| *b == b' ') {
            let len: usize = std::str::from_utf8(&stream[..sp]).unwrap().parse().unwrap();
            if stream.len() < sp + 1 + len {
                break;
            }
            seen.push(String::from_utf8(stream[sp + 1..sp + 1 + len].to_vec()).unwrap());
            stream.drain(..sp + 1 + len);
        }
    }
    for m in &seen {
        check(m);
    }
    assert!("http://x:1".parse::<Target>().is_err());
    cancel.cancel();
}
