//! MQTT 3.1.1 and MQTT 5 behind one small surface.
//!
//! rumqttc has a client per protocol version with the same shape but
//! distinct types. The source needs little of either: connect with options,
//! poll for connection acknowledgements, subscription results and messages,
//! subscribe, acknowledge a message, disconnect. These enums give the
//! source that surface once, so the connection and handler loops are
//! written once for both versions.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rumqttc::v5;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet};
use rumqttc::{Event, Incoming, NetworkOptions, QoS, SubscribeFilter, SubscribeReasonCode};

use super::config::{MqttProtocol, MqttSourceConfig};

/// What the connection loop cares about in an event.
#[derive(Debug)]
pub(crate) enum Polled {
    /// The broker accepted the connection.
    Connected {
        /// Whether the broker still had our session.
        session_present: bool,
    },
    /// A message arrived.
    Message(Delivery),
    /// The broker granted every subscription.
    Subscribed,
    /// The broker refused at least one subscription.
    SubscriptionRefused(String),
    /// Anything else (pings, acks, outgoing packets).
    Other,
}

/// A received message, with what it takes to acknowledge it.
#[derive(Debug)]
pub(crate) enum Delivery {
    V4(rumqttc::Publish),
    V5(v5::mqttbytes::v5::Publish),
}

impl Delivery {
    /// The topic; a non-UTF-8 topic (MQTT forbids it) reads as empty.
    pub(crate) fn topic(&self) -> &str {
        match self {
            Delivery::V4(p) => &p.topic,
            Delivery::V5(p) => std::str::from_utf8(&p.topic).unwrap_or_default(),
        }
    }

    pub(crate) fn payload(&self) -> &Bytes {
        match self {
            Delivery::V4(p) => &p.payload,
            Delivery::V5(p) => &p.payload,
        }
    }

    /// What acknowledging needs (packet id and QoS), without the payload.
    fn ack_token(&self) -> Delivery {
        match self {
            Delivery::V4(p) => Delivery::V4(rumqttc::Publish {
                topic: String::new(),
                payload: Bytes::new(),
                ..p.clone()
            }),
            Delivery::V5(p) => Delivery::V5(v5::mqttbytes::v5::Publish {
                topic: Bytes::new(),
                payload: Bytes::new(),
                properties: None,
                ..p.clone()
            }),
        }
    }

    /// Whether the broker expects an acknowledgement (QoS 1).
    fn needs_ack(&self) -> bool {
        match self {
            Delivery::V4(p) => p.qos != QoS::AtMostOnce,
            Delivery::V5(p) => p.qos != v5::mqttbytes::QoS::AtMostOnce,
        }
    }
}

/// The request side of a connection.
#[derive(Clone, Debug)]
pub(crate) enum Client {
    V4(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

/// The connection itself, driven by [`EventLoop::poll`].
pub(crate) enum EventLoop {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

/// Messages between the connection task and the handler.
pub(crate) const HANDOFF: usize = 1024;

/// Requests (acks, subscribes) the client may queue for the event loop.
const REQUESTS: usize = 4096;

/// Acknowledgements the client's request queue could not take yet.
///
/// rumqttc's event loop takes one request per turn but reads up to ten
/// packets from the socket per turn, so under load acks pile up in its
/// request queue. If the handler waited for room there, it would stop
/// draining the hand-off, the connection task would stop polling the event
/// loop (which is what empties the request queue), and everything would
/// stop: a deadlock, seen at 50 000 QoS 1 readings/s. So the handler never
/// waits: an ack that does not fit waits here, and the connection task
/// moves it on after each turn of the event loop. The broker's in-flight
/// window bounds how many can wait.
///
/// Packet ids belong to a session. When the broker starts a new one (a
/// clean session, or one that expired), the acks still waiting and those of
/// messages received before it name packet ids the broker has forgotten or
/// given to new messages: acking them could acknowledge a message not yet
/// handled. So each delivery carries the session's epoch, a new session
/// starts a new epoch and empties the backlog, and an ack of an older epoch
/// is dropped (the broker redelivers what a persistent session kept).
#[derive(Clone, Debug, Default)]
pub(crate) struct AckBacklog {
    waiting: Arc<Mutex<VecDeque<Delivery>>>,
    /// Whether `waiting` may hold anything, so the common case (nothing
    /// waits) takes no lock on the per-message path.
    any: Arc<AtomicBool>,
    epoch: Arc<AtomicU64>,
}

impl AckBacklog {
    /// The epoch of the broker session in force.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The connection is (re)established: without the broker's session,
    /// waiting acks are void and a new epoch begins.
    pub(crate) fn connected(&self, session_present: bool) {
        if session_present {
            return;
        }
        let mut waiting = self.lock();
        let dropped = waiting.len();
        waiting.clear();
        self.any.store(false, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if dropped > 0 {
            metrics::counter!("ioc_mqtt_stale_acks_dropped_total").increment(dropped as u64);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Delivery>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A client and its event loop for `options` in the configured version.
pub(crate) fn connect(c: &MqttSourceConfig, base: Options) -> (Client, EventLoop) {
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    match c.protocol {
        MqttProtocol::V311 => {
            let mut o = rumqttc::MqttOptions::new(&c.client_id, base.host, base.port);
            o.set_keep_alive(c.keep_alive)
                .set_clean_session(!c.persistent_session)
                .set_manual_acks(true)
                .set_max_packet_size(c.max_packet_bytes, c.max_packet_bytes);
            if let Some(user) = &c.username {
                o.set_credentials(user, c.password.clone().unwrap_or_default());
            }
            if let Some(t) = base.transport {
                o.set_transport(t);
            }
            let (client, mut eventloop) = rumqttc::AsyncClient::new(o, REQUESTS);
            eventloop.set_network_options(net);
            (Client::V4(client), EventLoop::V4(Box::new(eventloop)))
        }
        MqttProtocol::V5 => {
            let mut o = v5::MqttOptions::new(&c.client_id, base.host, base.port);
            let packet = u32::try_from(c.max_packet_bytes).unwrap_or(u32::MAX);
            o.set_keep_alive(c.keep_alive)
                .set_clean_start(!c.persistent_session)
                .set_manual_acks(true)
                .set_max_packet_size(Some(packet))
                .set_network_options(net);
            // MQTT 5 ends a session at disconnect unless it has an expiry:
            // a persistent session needs one to outlive the connection.
            if c.persistent_session {
                let secs = c.session_expiry.as_secs();
                o.set_session_expiry_interval(Some(u32::try_from(secs).unwrap_or(u32::MAX)));
            }
            if let Some(user) = &c.username {
                o.set_credentials(user, c.password.clone().unwrap_or_default());
            }
            if let Some(t) = base.transport {
                o.set_transport(t);
            }
            let (client, eventloop) = v5::AsyncClient::new(o, REQUESTS);
            (Client::V5(client), EventLoop::V5(Box::new(eventloop)))
        }
    }
}

/// Where to connect and over what.
pub(crate) struct Options {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) transport: Option<rumqttc::Transport>,
}

impl Client {
    /// Asks for these subscriptions, without waiting.
    pub(crate) fn subscribe(&self, filters: &[(String, u8)]) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .try_subscribe_many(filters.iter().map(|(t, q)| {
                    SubscribeFilter::new(
                        t.clone(),
                        if *q == 0 {
                            QoS::AtMostOnce
                        } else {
                            QoS::AtLeastOnce
                        },
                    )
                }))
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe_many(filters.iter().map(|(t, q)| {
                    Filter::new(
                        t.clone(),
                        if *q == 0 {
                            v5::mqttbytes::QoS::AtMostOnce
                        } else {
                            v5::mqttbytes::QoS::AtLeastOnce
                        },
                    )
                }))
                .map_err(|e| e.to_string()),
        }
    }

    /// Queues the acknowledgement of a message received in session `epoch`
    /// (if its QoS asks for one) without waiting; when the request queue is
    /// full it waits in `backlog`. An ack of an earlier session is dropped.
    pub(crate) fn ack(&self, d: &Delivery, epoch: u64, backlog: &AckBacklog) {
        if !d.needs_ack() {
            return;
        }
        if epoch != backlog.epoch() {
            metrics::counter!("ioc_mqtt_stale_acks_dropped_total").increment(1);
            return;
        }
        // Acks may go out in any order (MQTT allows it).
        if !self.try_ack(d) {
            // Flag and queue change together under the lock.
            let mut waiting = backlog.lock();
            waiting.push_back(d.ack_token());
            backlog.any.store(true, Ordering::Release);
        }
    }

    /// Moves waiting acknowledgements into the request queue while it has room.
    pub(crate) fn flush_acks(&self, backlog: &AckBacklog) {
        if !backlog.any.load(Ordering::Acquire) {
            return;
        }
        let mut waiting = backlog.lock();
        while let Some(d) = waiting.front() {
            if !self.try_ack(d) {
                return;
            }
            waiting.pop_front();
        }
        backlog.any.store(false, Ordering::Release);
    }

    fn try_ack(&self, d: &Delivery) -> bool {
        match (self, d) {
            (Client::V4(c), Delivery::V4(p)) => c.try_ack(p).is_ok(),
            (Client::V5(c), Delivery::V5(p)) => c.try_ack(p).is_ok(),
            // Not ours to acknowledge: drop it.
            _ => true,
        }
    }

    /// Asks for a clean disconnect, without waiting.
    pub(crate) fn disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}

impl EventLoop {
    /// The next event, or the connection error that ended the connection.
    pub(crate) async fn poll(&mut self) -> Result<Polled, String> {
        match self {
            EventLoop::V4(l) => Ok(match l.poll().await.map_err(|e| e.to_string())? {
                Event::Incoming(Incoming::ConnAck(ack)) => Polled::Connected {
                    session_present: ack.session_present,
                },
                Event::Incoming(Incoming::Publish(p)) => Polled::Message(Delivery::V4(p)),
                Event::Incoming(Incoming::SubAck(ack))
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure)) =>
                {
                    Polled::SubscriptionRefused(format!("{:?}", ack.return_codes))
                }
                Event::Incoming(Incoming::SubAck(_)) => Polled::Subscribed,
                _ => Polled::Other,
            }),
            EventLoop::V5(l) => Ok(match l.poll().await.map_err(|e| e.to_string())? {
                v5::Event::Incoming(Packet::ConnAck(ack)) => Polled::Connected {
                    session_present: ack.session_present,
                },
                v5::Event::Incoming(Packet::Publish(p)) => Polled::Message(Delivery::V5(p)),
                v5::Event::Incoming(Packet::SubAck(ack))
                    if ack.return_codes.iter().any(|c| {
                        !matches!(c, v5::mqttbytes::v5::SubscribeReasonCode::Success(_))
                    }) =>
                {
                    Polled::SubscriptionRefused(format!("{:?}", ack.return_codes))
                }
                v5::Event::Incoming(Packet::SubAck(_)) => Polled::Subscribed,
                _ => Polled::Other,
            }),
        }
    }

    /// Polls until the disconnect request has gone out (or the connection ended).
    pub(crate) async fn flush_disconnect(&mut self) {
        match self {
            EventLoop::V4(l) => {
                while let Ok(ev) = l.poll().await {
                    if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                        break;
                    }
                }
            }
            EventLoop::V5(l) => {
                while let Ok(ev) = l.poll().await {
                    if matches!(ev, v5::Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qos1(pkid: u16) -> Delivery {
        let mut p = rumqttc::Publish::new("t", QoS::AtLeastOnce, "x");
        p.pkid = pkid;
        Delivery::V4(p)
    }

    /// A client whose request queue holds `room` requests, never polled.
    fn client(room: usize) -> (Client, rumqttc::EventLoop) {
        let o = rumqttc::MqttOptions::new("test", "127.0.0.1", 1);
        let (c, e) = rumqttc::AsyncClient::new(o, room);
        (Client::V4(c), e)
    }

    #[test]
    fn a_new_session_voids_waiting_and_earlier_acks() {
        let backlog = AckBacklog::default();
        backlog.connected(false);
        let epoch = backlog.epoch();
        let (c, _e) = client(1);
        // The first ack fills the queue; the next two wait.
        for pkid in 1..=3 {
            c.ack(&qos1(pkid), epoch, &backlog);
        }
        assert_eq!(backlog.lock().len(), 2);
        // The broker kept the session: the waiting acks still stand.
        backlog.connected(true);
        assert_eq!((backlog.epoch(), backlog.lock().len()), (epoch, 2));
        // A new session: they are void, and so is an ack from before it.
        backlog.connected(false);
        assert!(backlog.lock().is_empty());
        assert_ne!(backlog.epoch(), epoch);
        c.ack(&qos1(4), epoch, &backlog);
        assert!(
            backlog.lock().is_empty(),
            "a stale ack is dropped, not queued"
        );
        c.ack(&qos1(5), backlog.epoch(), &backlog);
        assert_eq!(backlog.lock().len(), 1, "a current ack waits for room");
    }
}
