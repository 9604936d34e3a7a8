//! `staleness`: a device silent for longer than k × its expected interval
//! opens a device-offline alert; its next reading resolves it. Devices
//! never heard from are flagged k × their interval after the engine's event
//! time started.

use super::alert::{Step, Tracker};

/// A `staleness` rule's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Staleness {
    /// Silence longer than this many expected intervals opens the alert.
    pub factor: f64,
    /// Severity of the alert.
    pub severity: ioc_schemas::Severity,
}

impl Staleness {
    /// How long a device may stay silent, ms.
    pub fn allowed_ms(&self, expected_interval_s: u32) -> i64 {
        (self.factor * f64::from(expected_interval_s.max(1)) * 1000.0) as i64
    }

    /// Checks a device at event time `now`: `since` is its latest reading's
    /// event time, or when the engine started for a device never heard from.
    pub fn check(
        &self,
        tracker: &mut Tracker,
        since: i64,
        now: i64,
        expected_interval_s: u32,
    ) -> Option<Step> {
        let allowed = self.allowed_ms(expected_interval_s);
        let silent = now - since > allowed;
        match (tracker.level(), silent) {
            // Opened at the moment the silence became too long, whenever the scan ran.
            (0, true) => tracker.step(1, since + allowed + 1),
            (1, false) => tracker.step(0, since),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use ioc_schemas::Severity;

    use super::*;

    #[test]
    fn silence_opens_and_data_clears() {
        let r = Staleness {
            factor: 3.0,
            severity: Severity::Minor,
        };
        let mut t = Tracker::default();
        assert_eq!(r.check(&mut t, 0, 180_000, 60), None);
        let open = r.check(&mut t, 0, 180_001, 60).unwrap();
        assert_eq!((open.level, open.opened_ms), (1, 180_001));
        assert_eq!(r.check(&mut t, 0, 500_000, 60), None);
        let mut late_scan = Tracker::default();
        let open = r.check(&mut late_scan, 0, 400_000, 60).unwrap();
        assert_eq!(
            open.opened_ms, 180_001,
            "the moment the silence exceeded the limit"
        );
        let clear = r.check(&mut t, 499_000, 500_000, 60).unwrap();
        assert_eq!((clear.level, clear.version), (0, 2));
    }
}
