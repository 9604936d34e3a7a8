//! A river-level alert as the rule raises it, for the alert tests.

#![allow(dead_code)]

use ioc_schemas::{Alert, AlertStatus, AreaLevel, AreaRef, Evidence, Severity, Timestamp};

/// The rule's alert about `subject`: episode opened at `opened`, at
/// `level` (0: resolved), the rule's `version`; in Phường Tô Hiệu, Sơn La.
pub fn rule_alert(rule: &str, subject: &str, opened: i64, level: u8, version: u32) -> Alert {
    Alert {
        id: format!("{rule}:{subject}:{opened}"),
        rule: rule.into(),
        subject: subject.into(),
        status: if level == 0 {
            AlertStatus::Resolved
        } else {
            AlertStatus::Open
        },
        severity: if level >= 2 {
            Severity::Severe
        } else {
            Severity::Moderate
        },
        level,
        level_name: format!("BĐ{level}"),
        peak_level: level,
        title_vi: "Mực nước sông".into(),
        title_en: "River level".into(),
        pos: [103.9, 21.3],
        area: vec![
            AreaRef {
                id: "sl-to-hieu".into(),
                name: "Phường Tô Hiệu".into(),
                level: AreaLevel::Commune,
            },
            AreaRef {
                id: "sl".into(),
                name: "Sơn La".into(),
                level: AreaLevel::Province,
            },
        ],
        zones: Vec::new(),
        nearest: Vec::new(),
        evidence: Evidence::new(3.0, "m", 2.5, Timestamp(opened), 7),
        opened_at: Timestamp(opened),
        updated_at: Timestamp(opened + i64::from(version)),
        resolved_at: (level == 0).then_some(Timestamp(opened + 99)),
        version,
        revision: false,
        handling: Default::default(),
    }
}
