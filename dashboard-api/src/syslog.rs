//! The audit log to a syslog collector (a security operations centre's
//! SIEM): each entry as an RFC 5424 message, facility "log audit" (13),
//! severity notice for an allowed write and warning for a refused one, the
//! entry itself as the message's JSON. UDP (one datagram per entry) or TCP
//! (RFC 6587 octet counting, reconnected when the collector drops it).
//! Entries go through a bounded queue: a collector that cannot keep up
//! loses entries (counted in `ioc_audit_syslog_dropped_total`), never a
//! request's time; the audit table keeps them all.

use std::time::Duration;

use ioc_alerts::AuditEntry;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpStream, UdpSocket};
use tracing::warn;

/// Where entries go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `udp://host:port`.
    Udp(String),
    /// `tcp://host:port`.
    Tcp(String),
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: udp://host:port or tcp://host:port");
        let (scheme, rest) = s.split_once("://").ok_or_else(bad)?;
        if !rest
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        {
            return Err(bad());
        }
        match scheme {
            "udp" => Ok(Target::Udp(rest.to_owned())),
            "tcp" => Ok(Target::Tcp(rest.to_owned())),
            _ => Err(bad()),
        }
    }
}

/// The sending end: hands entries to the sender task.
#[derive(Clone, Debug)]
pub struct Syslog {
    tx: tokio::sync::mpsc::Sender<AuditEntry>,
}

impl Syslog {
    /// Starts the sender task (within a Tokio runtime).
    pub fn start(target: Target) -> Syslog {
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        tokio::spawn(run(target, rx));
        Syslog { tx }
    }

    /// Queues an entry; dropped (and counted) when the queue is full.
    pub fn send(&self, entry: &AuditEntry) {
        if self.tx.try_send(entry.clone()).is_err() {
            metrics::counter!("ioc_audit_syslog_dropped_total").increment(1);
        }
    }
}

/// The RFC 5424 message of an entry.
pub fn message(entry: &AuditEntry, hostname: &str) -> String {
    // Facility 13 (log audit); 4 warning for refusals, 5 notice otherwise.
    let severity = if entry.status == 401 || entry.status == 403 || entry.status == 429 {
        4
    } else {
        5
    };
    let pri = 13 * 8 + severity;
    let json = serde_json::to_string(entry).unwrap_or_default();
    format!(
        "<{pri}>1 {} {hostname} ioc {} audit - {json}",
        entry.at,
        std::process::id()
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.is_ascii() && !h.contains(' '))
        .unwrap_or_else(|| "-".to_owned())
}

/// The connection to the collector, opened on first use and again after
/// it broke.
#[derive(Default)]
struct Link {
    udp: Option<UdpSocket>,
    tcp: Option<TcpStream>,
}

impl Link {
    async fn send(&mut self, target: &Target, line: &str) -> std::io::Result<()> {
        match target {
            Target::Udp(addr) => {
                let socket = match self.udp.take() {
                    Some(s) => s,
                    None => {
                        let s = UdpSocket::bind("0.0.0.0:0").await?;
                        s.connect(addr).await?;
                        s
                    }
                };
                let sent = socket.send(line.as_bytes()).await.map(|_| ());
                self.udp = Some(socket);
                sent
            }
            Target::Tcp(addr) => {
                let framed = format!("{} {line}", line.len());
                // A kept connection the collector closed fails the first
                // write: once again on a fresh one.
                let mut attempt = 0;
                loop {
                    let mut stream = match self.tcp.take() {
                        Some(s) => s,
                        None => {
                            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
                                .await
                                .map_err(|_| std::io::Error::other("connection timed out"))??
                        }
                    };
                    match stream.write_all(framed.as_bytes()).await {
                        Ok(()) => {
                            self.tcp = Some(stream);
                            return Ok(());
                        }
                        Err(_) if attempt == 0 => attempt += 1,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
}

async fn run(target: Target, mut rx: tokio::sync::mpsc::Receiver<AuditEntry>) {
    let host = hostname();
    let mut link = Link::default();
    // Said once per outage, not per entry.
    let mut failing = false;
    while let Some(entry) = rx.recv().await {
        match link.send(&target, &message(&entry, &host)).await {
            Ok(()) => {
                failing = false;
                metrics::counter!("ioc_audit_syslog_sent_total").increment(1);
            }
            Err(e) => {
                metrics::counter!("ioc_audit_syslog_failures_total").increment(1);
                if !failing {
                    warn!(error = %e, target = ?target, "cannot send audit entries to syslog");
                }
                failing = true;
            }
        }
    }
}
