//! Alerts as OASIS Common Alerting Protocol 1.2 messages, the format
//! national warning systems exchange, and an Atom feed of them.
//!
//! One message per alert version: `identifier` is `{alert id}:{version}`;
//! version 1 is an `Alert`, later versions are `Update`s that reference the
//! first; once resolved the message carries `responseType` `AllClear` and
//! urgency `Past`. Each message has two `info` blocks, Vietnamese and
//! English, with the level and evidence as parameters and the alert's
//! place as a circle and its administrative areas as geocodes. Times are
//! written with `-00:00` for UTC, as CAP requires (no `Z`).

use std::fmt::Write as _;

use ioc_schemas::{Alert, AlertStatus, Severity, Timestamp};
use serde::{Deserialize, Serialize};

/// Who the messages say they are from (`[alerts]` `cap_sender*`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapSender {
    /// `sender`: a stable identifier of this system, without spaces.
    pub sender: String,
    /// `senderName`: the issuing centre, for people.
    pub name: String,
}

impl Default for CapSender {
    fn default() -> Self {
        CapSender {
            sender: "ioc.sonla.example".into(),
            name: "Trung tâm Giám sát, điều hành thông minh tỉnh Sơn La".into(),
        }
    }
}

/// CAP time: `YYYY-MM-DDThh:mm:ss-00:00`.
fn time(t: Timestamp) -> String {
    let s = t.to_rfc3339();
    // RFC 3339 from the schemas crate: `...T..:..:..(.fff)Z`.
    let base = s.get(..19).unwrap_or(&s);
    format!("{base}-00:00")
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no place for other control characters.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// The CAP category of a rule, from its subject matter.
fn category(rule: &str) -> &'static str {
    let r = rule.to_ascii_lowercase();
    if r.contains("landslide") {
        "Geo"
    } else if ["river", "rain", "flood", "reservoir", "spill", "water"]
        .iter()
        .any(|k| r.contains(k))
    {
        "Met"
    } else if ["traffic", "congestion", "speed", "incident"]
        .iter()
        .any(|k| r.contains(k))
    {
        "Transport"
    } else if ["watch", "plate", "intrusion"]
        .iter()
        .any(|k| r.contains(k))
    {
        "Security"
    } else if r.contains("fire") || r.contains("smoke") {
        "Fire"
    } else if ["offline", "stale", "silent"].iter().any(|k| r.contains(k)) {
        "Infra"
    } else {
        "Other"
    }
}

fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Minor => "Minor",
        Severity::Moderate => "Moderate",
        Severity::Severe => "Severe",
        Severity::Extreme => "Extreme",
    }
}

/// The CAP 1.2 message of the alert's current version.
pub fn message(alert: &Alert, from: &CapSender) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    write_alert(&mut x, alert, from, true);
    x
}

fn write_alert(x: &mut String, a: &Alert, from: &CapSender, namespace: bool) {
    let sender: String = from
        .sender
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ',')
        .collect();
    let ns = if namespace {
        " xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\""
    } else {
        ""
    };
    let resolved = a.status == AlertStatus::Resolved;
    let _ = writeln!(x, "<alert{ns}>");
    let _ = writeln!(
        x,
        "  <identifier>{}</identifier>",
        escape(&identifier(a, a.version))
    );
    let _ = writeln!(x, "  <sender>{}</sender>", escape(&sender));
    let _ = writeln!(x, "  <sent>{}</sent>", time(a.updated_at));
    x.push_str("  <status>Actual</status>\n");
    let _ = writeln!(
        x,
        "  <msgType>{}</msgType>",
        if a.version == 1 { "Alert" } else { "Update" }
    );
    x.push_str("  <scope>Public</scope>\n");
    if a.version > 1 {
        // The first message of this alert: sender,identifier,sent.
        let _ = writeln!(
            x,
            "  <references>{},{},{}</references>",
            escape(&sender),
            escape(&identifier(a, 1)),
            time(a.opened_at)
        );
    }
    let _ = writeln!(
        x,
        "  <incidents>{}</incidents>",
        escape(&a.id.replace([' ', ','], "_"))
    );
    let status_vi = match a.status {
        AlertStatus::Open => "đang mở",
        AlertStatus::Acknowledged => "đã xác nhận",
        AlertStatus::Resolved => "đã kết thúc",
    };
    for (lang, headline, status) in [
        ("vi-VN", &a.title_vi, status_vi),
        ("en-US", &a.title_en, a.status.as_str()),
    ] {
        x.push_str("  <info>\n");
        let _ = writeln!(x, "    <language>{lang}</language>");
        let _ = writeln!(x, "    <category>{}</category>", category(&a.rule));
        let _ = writeln!(x, "    <event>{}</event>", escape(&a.rule));
        let _ = writeln!(
            x,
            "    <responseType>{}</responseType>",
            if resolved { "AllClear" } else { "Monitor" }
        );
        let urgency = match (resolved, a.severity) {
            (true, _) => "Past",
            (false, Severity::Severe | Severity::Extreme) => "Immediate",
            (false, _) => "Expected",
        };
        let _ = writeln!(x, "    <urgency>{urgency}</urgency>");
        let _ = writeln!(x, "    <severity>{}</severity>", severity(a.severity));
        x.push_str("    <certainty>Observed</certainty>\n");
        let _ = writeln!(x, "    <onset>{}</onset>", time(a.opened_at));
        let _ = writeln!(x, "    <senderName>{}</senderName>", escape(&from.name));
        let _ = writeln!(x, "    <headline>{}</headline>", escape(headline));
        let ev = &a.evidence;
        let _ = writeln!(
            x,
            "    <description>{} ({status}): {} {} ({} {})</description>",
            escape(headline),
            ev.value,
            escape(&ev.unit),
            if lang == "vi-VN" {
                "ngưỡng"
            } else {
                "threshold"
            },
            ev.threshold,
        );
        for (name, value) in [
            ("level", a.level_name.clone()),
            ("peak_level", a.peak_level.to_string()),
            ("status", a.status.as_str().to_owned()),
            ("subject", a.subject.clone()),
            ("value", format!("{} {}", ev.value, ev.unit)),
        ] {
            let _ = writeln!(
                x,
                "    <parameter><valueName>{name}</valueName><value>{}</value></parameter>",
                escape(&value)
            );
        }
        x.push_str("    <area>\n");
        let names: Vec<&str> = a.area.iter().map(|r| &*r.name).collect();
        let desc = if names.is_empty() {
            a.subject.clone()
        } else {
            names.join(", ")
        };
        let _ = writeln!(x, "      <areaDesc>{}</areaDesc>", escape(&desc));
        // lat,lon radius in km.
        let _ = writeln!(
            x,
            "      <circle>{:.5},{:.5} 0</circle>",
            a.pos[1], a.pos[0]
        );
        for r in &a.area {
            let _ = writeln!(
                x,
                "      <geocode><valueName>ioc-area</valueName><value>{}</value></geocode>",
                escape(&r.id)
            );
        }
        x.push_str("    </area>\n  </info>\n");
    }
    x.push_str("</alert>\n");
}

fn identifier(a: &Alert, version: u32) -> String {
    // CAP identifiers have no spaces, commas or `<`/`&`.
    let id: String =
        a.id.chars()
            .map(|c| {
                if c.is_whitespace() || matches!(c, ',' | '<' | '&') {
                    '_'
                } else {
                    c
                }
            })
            .collect();
    format!("{id}:{version}")
}

/// An Atom feed of the given alerts, each entry carrying its CAP message
/// (the way CAP feeds are commonly published), newest first.
pub fn feed(alerts: &[Alert], from: &CapSender, self_url: &str) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str("<feed xmlns=\"http://www.w3.org/2005/Atom\">\n");
    let _ = writeln!(x, "  <id>urn:ioc:{}:alerts</id>", escape(&from.sender));
    let _ = writeln!(x, "  <title>{}</title>", escape(&from.name));
    let updated = alerts
        .iter()
        .map(|a| a.updated_at)
        .max()
        .unwrap_or(Timestamp(0));
    let _ = writeln!(x, "  <updated>{}</updated>", updated.to_rfc3339());
    let _ = writeln!(x, "  <link rel=\"self\" href=\"{}\"/>", escape(self_url));
    let _ = writeln!(x, "  <author><name>{}</name></author>", escape(&from.name));
    for a in alerts {
        x.push_str("  <entry>\n");
        let _ = writeln!(
            x,
            "    <id>urn:ioc:{}</id>",
            escape(&identifier(a, a.version))
        );
        let _ = writeln!(x, "    <title>{}</title>", escape(&a.title_vi));
        let _ = writeln!(x, "    <updated>{}</updated>", a.updated_at.to_rfc3339());
        let _ = writeln!(
            x,
            "    <link rel=\"alternate\" type=\"application/cap+xml\" href=\"/api/v1/alerts/{}.cap\"/>",
            escape(&a.id)
        );
        x.push_str("    <content type=\"application/cap+xml\">\n");
        write_alert(&mut x, a, from, true);
        x.push_str("    </content>\n  </entry>\n");
    }
    x.push_str("</feed>\n");
    x
}
