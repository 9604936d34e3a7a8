//! `staleness`: a device silent for longer than k × its expected interval
//! opens a device-offline alert; its next reading resolves it. Devices
//! never heard from are flagged k × their interval after the engine
//! started listening (its first event time, or the wall clock at start if
//! later: a backfill of old readings does not make them overdue).
//!
//! ```toml
//! [[rule]]
//! id = "offline"
//! kind = "staleness"
//! factor = 3                   # k: silent for k × the registry's expected interval
//! ```

use ioc_schemas::{EngineOutput, Evidence, Timestamp};
use serde::Deserialize;

use super::alert::{self, Step, Tracker};
use super::kind::{Check, DeviceCx, Latest, RuleKind, Scan, States, minor};
use super::{Level, Rule};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    #[serde(default = "factor")]
    factor: f64,
    #[serde(default = "minor")]
    severity: ioc_schemas::Severity,
}

fn factor() -> f64 {
    3.0
}

impl RuleKind for Staleness {
    const NAME: &'static str = "staleness";
    const TITLE: (&'static str, &'static str) = ("Mất tín hiệu thiết bị", "Device offline");
    type State = Tracker;

    fn parse(check: &mut Check<'_>, at: &str, table: toml::Table) -> Option<Self> {
        let s: Spec = check.spec(at, table)?;
        check.positive(at, "factor", s.factor);
        Some(Staleness {
            factor: s.factor,
            severity: s.severity,
        })
    }

    fn scans(&self) -> bool {
        true
    }

    /// A device offline is back with this reading. A gap the scan has not
    /// seen yet (the watermark trails arrivals) opens and resolves its
    /// alert here, so the result does not depend on timing.
    fn on_latest(
        &self,
        rule: &Rule,
        states: &mut States<u16>,
        cx: &DeviceCx<'_>,
        latest: &Latest,
        out: &mut Vec<EngineOutput>,
    ) {
        let (since, ts) = (latest.since, latest.ts.millis());
        let allowed = self.allowed_ms(cx.device.expected_interval_s);
        // Usually neither a gap nor an open alert.
        if ts - since <= allowed && !states.is_open(rule) {
            return;
        }
        let tracker = states.get::<Self>(rule);
        if tracker.level() == 0
            && ts - since > allowed
            && let Some(step) = tracker.step(1, since + allowed + 1)
        {
            let at = Timestamp(step.opened_ms);
            out.push(self.alert(rule, cx, step, allowed, at, Some(latest.previous_seq)));
        }
        if let Some(step) = tracker.step(0, ts) {
            out.push(self.alert(rule, cx, step, 0, latest.ts, Some(latest.seq)));
        }
    }

    fn on_scan(
        &self,
        rule: &Rule,
        states: &mut States<u16>,
        cx: &DeviceCx<'_>,
        scan: &Scan,
        out: &mut Vec<EngineOutput>,
    ) {
        // Most devices are neither silent nor offline: settled without
        // looking their rule state up.
        let silent = scan.now - scan.since > self.allowed_ms(cx.device.expected_interval_s);
        if !silent && !states.is_open(rule) || !rule.applies(cx.index, cx.device) {
            return;
        }
        if cx.muted(scan.now) {
            return;
        }
        let tracker = states.get::<Self>(rule);
        if let Some(step) = self.check(tracker, scan.since, scan.now, cx.device.expected_interval_s)
        {
            // The silence when the alert opened; 0 once the device is heard again.
            let (silent_ms, at) = if step.level == 0 {
                (0, scan.since)
            } else {
                (step.opened_ms - scan.since, step.opened_ms)
            };
            out.push(self.alert(rule, cx, step, silent_ms, Timestamp(at), scan.seq));
        }
    }
}

impl Staleness {
    /// A change of a device-offline alert: `silent_ms` is how long the
    /// device was silent when it changed; `seq` its latest sequence
    /// number, `None` when it was never heard from.
    fn alert(
        &self,
        rule: &Rule,
        cx: &DeviceCx<'_>,
        step: Step,
        silent_ms: i64,
        at: Timestamp,
        seq: Option<u64>,
    ) -> EngineOutput {
        let device = cx.device;
        let heard = seq.is_some();
        let allowed_s = (self.allowed_ms(device.expected_interval_s) / 1000) as f64;
        let ev = Evidence::new(
            (silent_ms / 1000) as f64,
            "s",
            allowed_s,
            at,
            seq.unwrap_or(0),
        );
        let level = [Level {
            name: if heard { "offline" } else { "never_heard" }.to_owned(),
            value: allowed_s,
            severity: self.severity,
        }];
        EngineOutput::alert(alert::build(rule, device, device.pos, step, &level, ev))
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
