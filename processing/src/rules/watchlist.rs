//! `watchlist`: every read of a watch-listed plate raises an alert at the
//! camera that read it, at once (a read needs no ordering). The plates'
//! tracks across cameras are drawn on the map.
//!
//! ```toml
//! [[rule]]
//! id = "wanted"
//! kind = "watchlist"
//! plates = ["26A-999.99"]       # and/or:
//! file = "watchlist.txt"        # one plate a line, `#` comments; reloaded when it changes
//! ```

use std::collections::HashSet;

use ioc_devices::DeviceIndex;
use ioc_schemas::{Alert, AlertStatus, DeviceKind, Evidence};
use serde::Deserialize;

use super::Rule;
use super::kind::{Check, DeviceCx, PlateRead, RuleKind, severe};

/// A `watchlist` rule's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Watchlist {
    /// Normalised plates (see [`normalise`]).
    pub plates: HashSet<String>,
    /// Severity of the alerts.
    pub severity: ioc_schemas::Severity,
}

/// A plate reduced to its letters and digits, upper case: `26a-123.45`,
/// `26A12345` and `26A 123 45` are the same plate.
pub fn normalise(plate: &str) -> String {
    plate
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// `prefix` followed by the plate normalised (see [`normalise`]), handed to
/// `f`. Every camera read needs it, so it is built on the stack when it
/// fits (plates are about ten characters), not in a new `String`.
pub fn with_normalised<R>(prefix: &str, plate: &str, f: impl FnOnce(&str) -> R) -> R {
    let heap = || format!("{prefix}{}", normalise(plate));
    let letters = plate
        .bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| b.to_ascii_uppercase());
    let mut buf = [0u8; 48];
    let mut n = 0;
    for b in prefix.bytes().chain(letters) {
        let Some(slot) = buf.get_mut(n) else {
            return f(&heap());
        };
        *slot = b;
        n += 1;
    }
    // A whole prefix and ASCII letters and digits: always UTF-8.
    match std::str::from_utf8(&buf[..n]) {
        Ok(s) => f(s),
        Err(_) => f(&heap()),
    }
}

impl Watchlist {
    /// Whether a plate is on the list.
    pub fn contains(&self, plate: &str) -> bool {
        !self.plates.is_empty() && with_normalised("", plate, |p| self.plates.contains(p))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    #[serde(default)]
    plates: Vec<String>,
    #[serde(default)]
    file: Option<String>,
    #[serde(default = "severe")]
    severity: ioc_schemas::Severity,
}

impl RuleKind for Watchlist {
    const NAME: &'static str = "watchlist";
    const TITLE: (&'static str, &'static str) = (
        "Phương tiện trong danh sách theo dõi",
        "Watch-listed vehicle",
    );
    /// Every read is an alert of its own: nothing to keep.
    type State = ();

    fn parse(check: &mut Check<'_>, at: &str, table: toml::Table) -> Option<Self> {
        let s: Spec = check.spec(at, table)?;
        let mut plates: Vec<String> = s.plates;
        if let Some(file) = &s.file {
            match check.read(file) {
                Ok(text) => plates.extend(
                    text.lines()
                        .map(|l| l.split('#').next().unwrap_or("").trim())
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned),
                ),
                Err(e) => check.problem(at, format!("file: {e}")),
            }
        }
        for p in &plates {
            if !ioc_schemas::plate::is_vietnamese_plate(p) {
                check.problem(
                    at,
                    format!("{p:?} is not a Vietnamese plate (e.g. 26A-123.45)"),
                );
            }
        }
        Some(Watchlist {
            plates: plates.iter().map(|p| normalise(p)).collect(),
            severity: s.severity,
        })
    }

    fn default_devices(&self) -> Vec<DeviceKind> {
        vec![DeviceKind::Camera]
    }

    fn check_devices(
        &self,
        check: &mut Check<'_>,
        at: &str,
        kinds: &[DeviceKind],
        _only: Option<&HashSet<DeviceIndex>>,
    ) {
        if kinds != [DeviceKind::Camera] {
            check.problem(at, "devices: a watch list applies to cameras only");
        }
    }

    fn needs_positions(&self) -> bool {
        true
    }

    fn follows_plate(&self, plate: &str) -> bool {
        // Already normalised: looked up as it is.
        self.plates.contains(plate)
    }

    fn on_plate_read(&self, rule: &Rule, cx: &DeviceCx<'_>, read: &PlateRead<'_>) -> Option<Alert> {
        if !self.contains(read.plate) {
            return None;
        }
        let (device, plate, ts) = (cx.device, read.plate, read.ts);
        let mut ev = Evidence::new(1.0, "read", 1.0, ts, read.seq);
        ev.plate = Some(plate.to_owned());
        Some(Alert {
            id: format!("{}:{}:{}", rule.id, device.id, ts.millis()),
            rule: rule.id.to_string(),
            subject: device.id.clone(),
            status: AlertStatus::Open,
            severity: self.severity,
            level: 1,
            level_name: plate.to_owned(),
            peak_level: 1,
            title_vi: format!("{}: {plate} tại {}", rule.title_vi, device.name),
            title_en: format!("{}: {plate} at {}", rule.title_en, device.name),
            pos: read.pos,
            area: device.area.clone(),
            zones: Vec::new(),
            nearest: Vec::new(),
            evidence: ev,
            opened_at: ts,
            updated_at: ts,
            resolved_at: None,
            version: 1,
            revision: false,
            handling: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plates_match_whatever_their_punctuation() {
        let w = Watchlist {
            plates: ["26A-123.45"].iter().map(|p| normalise(p)).collect(),
            severity: ioc_schemas::Severity::Severe,
        };
        assert!(w.contains("26a12345"));
        assert!(w.contains("26A-123.45"));
        assert!(!w.contains("26A-123.46"));
        // Not ASCII: the letter is dropped, as `normalise` drops it.
        assert!(!w.contains("26Á-123.45"));
    }

    #[test]
    fn plates_longer_than_the_stack_buffer_match_too() {
        // 54 letters and digits: more than the stack buffer holds.
        let long = "VN-26A-123.45-TRAILER-0001-FROM-LAO-CAI-TO-SON-LA-BY-NATIONAL-ROAD-6-X";
        let w = Watchlist {
            plates: [normalise(long)].into_iter().collect(),
            severity: ioc_schemas::Severity::Severe,
        };
        assert!(w.contains(long));
        assert!(w.contains(&long.to_lowercase()));
        assert!(!w.contains(&long.replace('X', "Y")));
    }
}
