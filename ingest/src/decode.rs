//! From bytes on a topic to a [`Reading`] for the engine, or a [`Rejection`].

use std::sync::Arc;

use ioc_devices::{Registry, RegistryCell};
use ioc_processing::Reading;
use ioc_schemas::envelope::{Limits, decode};
use ioc_schemas::{
    DeviceKind, Presence, PresenceChange, PresenceStatus, RejectReason, Rejection, Timestamp,
};

/// How far outside the catalogue's areas a position may lie, in degrees
/// (about 55 km): a device near the border may see across it, a position in
/// another country is a broken GPS fix or swapped coordinates.
pub const POSITION_MARGIN_DEG: f64 = 0.5;

/// Decodes and validates telemetry against the registry.
#[derive(Clone, Debug)]
pub struct Decoder {
    /// The registry in force (read per message; changes apply at once).
    registry: Arc<RegistryCell>,
    limits: Limits,
    /// The catalogue's bounding box widened by [`POSITION_MARGIN_DEG`].
    bounds: Option<([f64; 2], [f64; 2])>,
    /// Devices refused as not registered, for adoption.
    unregistered: Arc<crate::unregistered::Unregistered>,
}

/// The `{kind}` and `{device}` of a telemetry topic `ioc/v1/{kind}/{device}/telemetry`.
pub fn parse_telemetry_topic(topic: &str) -> Option<(&str, &str)> {
    parse_device_topic(topic, "/telemetry")
}

/// The `{kind}` and `{device}` of a presence topic `ioc/v1/{kind}/{device}/status`.
pub fn parse_status_topic(topic: &str) -> Option<(&str, &str)> {
    parse_device_topic(topic, "/status")
}

fn parse_device_topic<'t>(topic: &'t str, suffix: &str) -> Option<(&'t str, &'t str)> {
    let rest = topic.strip_prefix("ioc/v1/")?.strip_suffix(suffix)?;
    let (kind, device) = rest.split_once('/')?;
    (!kind.is_empty() && !device.is_empty() && !device.contains('/')).then_some((kind, device))
}

/// The status on a presence topic: `online` or `offline` (surrounding
/// whitespace and case ignored, a JSON string accepted), or `None` for an
/// empty payload, which is how a retained status is cleared.
pub fn parse_status(payload: &[u8]) -> Result<Option<PresenceStatus>, Rejection> {
    let text = std::str::from_utf8(payload).unwrap_or_default().trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    if payload.is_empty() {
        Ok(None)
    } else if text.eq_ignore_ascii_case("online") {
        Ok(Some(PresenceStatus::Online))
    } else if text.eq_ignore_ascii_case("offline") {
        Ok(Some(PresenceStatus::Offline))
    } else {
        Err(Rejection::new(
            RejectReason::InvalidField,
            "a status payload is `online` or `offline`",
        ))
    }
}

impl Decoder {
    /// A decoder for this registry and these limits.
    pub fn new(registry: Arc<Registry>, limits: Limits) -> Self {
        Self::live(Arc::new(RegistryCell::new(registry)), limits)
    }

    /// A decoder for the registry in force in `registry`, whenever it
    /// changes (the areas, and so the bounds, stay those of the first).
    pub fn live(registry: Arc<RegistryCell>, limits: Limits) -> Self {
        let bounds = registry.current().areas().bounds().map(|(lo, hi)| {
            let m = POSITION_MARGIN_DEG;
            ([lo[0] - m, lo[1] - m], [hi[0] + m, hi[1] + m])
        });
        Decoder {
            registry,
            limits,
            bounds,
            unregistered: Arc::default(),
        }
    }

    /// Decodes a payload. With `topic`, also checks that the topic names the
    /// same device and kind as the envelope and the registry.
    pub fn decode(
        &self,
        topic: Option<&str>,
        payload: &[u8],
        now: Timestamp,
    ) -> Result<Reading, Rejection> {
        let from_topic = match topic {
            Some(t) => Some(parse_telemetry_topic(t).ok_or_else(|| {
                Rejection::new(
                    RejectReason::TopicMismatch,
                    format!("{t:?} is not a telemetry topic ioc/v1/{{kind}}/{{device}}/telemetry"),
                )
            })?),
            None => None,
        };
        let envelope = decode(payload, &self.limits, now)?;
        let registry = self.registry.read();
        let Some(index) = registry.lookup(&envelope.device) else {
            self.unregistered
                .note(topic, &envelope.device, envelope.pos, payload, now);
            return Err(Rejection::new(
                RejectReason::UnknownDevice,
                format!("device {:?} is not in the registry", envelope.device),
            )
            .at("/device"));
        };
        let device = registry.device(index);
        if device.lifecycle.is_retired() {
            return Err(Rejection::new(
                RejectReason::RetiredDevice,
                format!("device {:?} is retired", envelope.device),
            )
            .at("/device"));
        }
        if let Some((kind, id)) = from_topic {
            if id != envelope.device {
                return Err(Rejection::new(
                    RejectReason::TopicMismatch,
                    format!(
                        "topic names device {id:?} but the envelope says {:?}",
                        envelope.device
                    ),
                ));
            }
            check_topic_kind(kind, device.kind)?;
        }
        if let (Some(pos), Some((lo, hi))) = (envelope.pos, self.bounds)
            && !(lo[0]..=hi[0]).contains(&pos[0]) | !(lo[1]..=hi[1]).contains(&pos[1])
        {
            return Err(Rejection::new(
                RejectReason::InvalidCoordinates,
                format!(
                    "pos [{}, {}] is far outside the catalogue's areas (lon {:.2}..{:.2}, lat {:.2}..{:.2})",
                    pos[0], pos[1], lo[0], hi[0], lo[1], hi[1]
                ),
            )
            .at("/pos"));
        }
        if !device.kind.accepts(&envelope.body) {
            return Err(Rejection::new(
                RejectReason::KindMismatch,
                format!(
                    "a {} does not send {} readings",
                    device.kind,
                    envelope.body.key()
                ),
            ));
        }
        Ok(Reading {
            device: index,
            received: now,
            envelope,
        })
    }

    /// The devices refused as not registered since the start.
    pub fn unregistered(&self) -> &Arc<crate::unregistered::Unregistered> {
        &self.unregistered
    }

    /// Decodes a message on a presence topic `ioc/v1/{kind}/{device}/status`.
    /// `Ok(None)`: an empty payload (a cleared retained status), nothing to do.
    pub fn presence(
        &self,
        topic: &str,
        payload: &[u8],
        now: Timestamp,
    ) -> Result<Option<PresenceChange>, Rejection> {
        let Some((kind, id)) = parse_status_topic(topic) else {
            return Err(Rejection::new(
                RejectReason::TopicMismatch,
                format!("{topic:?} is not a status topic ioc/v1/{{kind}}/{{device}}/status"),
            ));
        };
        let registry = self.registry.read();
        let Some(index) = registry.lookup(id) else {
            return Err(Rejection::new(
                RejectReason::UnknownDevice,
                format!("device {id:?} is not in the registry"),
            ));
        };
        check_topic_kind(kind, registry.device(index).kind)?;
        drop(registry);
        if payload.len() > 64 {
            return Err(Rejection::new(
                RejectReason::Oversized,
                format!("a status payload of {} bytes", payload.len()),
            ));
        }
        Ok(parse_status(payload)?.map(|status| PresenceChange {
            device: id.to_owned(),
            presence: Presence {
                status,
                received: now,
            },
        }))
    }
}

fn check_topic_kind(kind: &str, registered: DeviceKind) -> Result<(), Rejection> {
    if DeviceKind::parse(kind) == Some(registered) {
        Ok(())
    } else {
        Err(Rejection::new(
            RejectReason::TopicMismatch,
            format!("topic kind {kind:?} does not match the registered kind {registered}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        Decoder::new(Registry::sonla_demo(), Limits::default())
    }

    const OK: &str = r#"{"v":1,"device":"river-to-hieu","ts":1783998760000,"seq":1,"hydrology":{"water_level_m":3.2}}"#;
    const NOW: Timestamp = Timestamp(1_783_998_765_120);

    #[test]
    fn accepts_a_registered_device_on_its_topic() {
        let r = decoder()
            .decode(
                Some("ioc/v1/river_gauge/river-to-hieu/telemetry"),
                OK.as_bytes(),
                NOW,
            )
            .unwrap();
        assert_eq!(r.envelope.device, "river-to-hieu");
    }

    #[test]
    fn registry_and_topic_reasons() {
        let d = decoder();
        let reason = |topic: Option<&str>, json: &str| {
            d.decode(topic, json.as_bytes(), NOW).unwrap_err().reason
        };
        assert_eq!(
            reason(None, &OK.replace("river-to-hieu", "river-atlantis")),
            RejectReason::UnknownDevice
        );
        assert_eq!(
            reason(
                None,
                r#"{"v":1,"device":"river-to-hieu","ts":1783998760000,"seq":1,"camera":{"event":"crowd","confidence":0.5}}"#
            ),
            RejectReason::KindMismatch
        );
        // Valid WGS 84, but in the Mekong delta, not in Sơn La.
        assert_eq!(
            reason(
                None,
                &OK.replace(r#""seq":1,"#, r#""seq":1,"pos":[105.8,10.0],"#)
            ),
            RejectReason::InvalidCoordinates
        );
        assert_eq!(
            reason(Some("ioc/v1/river_gauge/rain-to-hieu/telemetry"), OK),
            RejectReason::TopicMismatch
        );
        assert_eq!(
            reason(Some("ioc/v1/camera/river-to-hieu/telemetry"), OK),
            RejectReason::TopicMismatch
        );
        assert_eq!(
            reason(Some("sensors/river-to-hieu"), OK),
            RejectReason::TopicMismatch
        );
        assert_eq!(
            reason(Some("ioc/v1/river_gauge/river-to-hieu/telemetry"), "{oops"),
            RejectReason::MalformedJson
        );
    }

    #[test]
    fn presence_topics_and_payloads() {
        let d = decoder();
        let on = d
            .presence("ioc/v1/river_gauge/river-to-hieu/status", b" Online\n", NOW)
            .unwrap()
            .unwrap();
        assert_eq!(
            (on.device.as_str(), on.presence.status, on.presence.received),
            ("river-to-hieu", PresenceStatus::Online, NOW)
        );
        let off = d
            .presence(
                "ioc/v1/river_gauge/river-to-hieu/status",
                b"\"offline\"",
                NOW,
            )
            .unwrap()
            .unwrap();
        assert_eq!(off.presence.status, PresenceStatus::Offline);
        assert_eq!(
            d.presence("ioc/v1/river_gauge/river-to-hieu/status", b"", NOW),
            Ok(None)
        );
        let reason =
            |topic: &str, payload: &[u8]| d.presence(topic, payload, NOW).unwrap_err().reason;
        assert_eq!(
            reason("ioc/v1/river_gauge/river-to-hieu/status", b"up"),
            RejectReason::InvalidField
        );
        assert_eq!(
            reason("ioc/v1/river_gauge/river-atlantis/status", b"online"),
            RejectReason::UnknownDevice
        );
        assert_eq!(
            reason("ioc/v1/camera/river-to-hieu/status", b"online"),
            RejectReason::TopicMismatch
        );
        assert_eq!(
            reason("ioc/v1/river_gauge/river-to-hieu/status", &[b'x'; 100]),
            RejectReason::Oversized
        );
    }

    #[test]
    fn parses_topics() {
        assert_eq!(
            parse_telemetry_topic("ioc/v1/camera/cam-1/telemetry"),
            Some(("camera", "cam-1"))
        );
        assert_eq!(parse_telemetry_topic("ioc/v1/camera/a/b/telemetry"), None);
        assert_eq!(parse_telemetry_topic("ioc/v1//x/telemetry"), None);
    }
}
