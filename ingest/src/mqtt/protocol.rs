//! MQTT 3.1.1 and MQTT 5 behind one small surface.
//!
//! rumqttc has a client per protocol version with the same shape but
//! distinct types. The source needs little of either: connect with options,
//! poll for connection acknowledgements, subscription results and messages,
//! subscribe, acknowledge a message, disconnect. These enums give the
//! source that surface once, so the connection and handler loops are
//! written once for both versions.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
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
#[derive(Clone, Debug, Default)]
pub(crate) struct AckBacklog {
    waiting: Arc<Mutex<VecDeque<Delivery>>>,
    /// Whether `waiting` may hold anything, so the common case (nothing
    /// waits) takes no lock on the per-message path.
    any: Arc<AtomicBool>,
}

impl AckBacklog {
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

    /// Queues the acknowledgement of a message (if its QoS asks for one)
    /// without waiting; when the request queue is full it waits in `backlog`.
    pub(crate) fn ack(&self, d: &Delivery, backlog: &AckBacklog) {
        if !d.needs_ack() {
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
