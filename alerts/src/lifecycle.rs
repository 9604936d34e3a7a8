//! The lifecycle as plain functions: how a rule's change or an operator's
//! action turns the stored alert into its next version.
//!
//! The rule (the engine) owns the judgement: level, evidence, whether the
//! condition holds. Operators own the handling: acknowledgement,
//! assignment, notes, resolution by hand. Neither overwrites the other:
//!
//! - an escalation makes an acknowledged alert `open` again (someone must
//!   look at the new level) and reopens one an operator had resolved;
//! - a lowered level or new evidence leaves the status as it is;
//! - the condition clearing resolves the alert (`resolved_by: rule`) unless
//!   an operator already had.

use ioc_schemas::{Alert, AlertAction, AlertChange, AlertStatus, Timestamp};

/// Who the engine is in the history.
pub const RULE: &str = "rule";

/// Longest note or name accepted from an operator, in characters.
pub const MAX_TEXT: usize = 2000;

/// What an operator asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Operation {
    /// Acknowledge an open alert.
    Acknowledge,
    /// Resolve it by hand.
    Resolve,
    /// Assign it to someone (`None`: nobody).
    Assign(Option<String>),
    /// Add a note.
    Note(String),
}

/// Why an operator's action was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// The alert is resolved: nothing to acknowledge.
    #[error("the alert is resolved")]
    Resolved,
    /// Empty or too long text, or an empty operator name.
    #[error("{0}")]
    Invalid(String),
}

/// The next version of `stored` (`None`: a new alert) after the rule's change
/// `change`, with its history entry. (Replays are recognised by the store.)
pub fn apply_rule(stored: Option<&Alert>, change: &Alert, now: Timestamp) -> (Alert, AlertChange) {
    let Some(s) = stored else {
        let mut a = change.clone();
        a.version = 1;
        a.handling = Default::default();
        a.handling.notified_at = Some(now);
        let action = if a.status.is_active() {
            AlertAction::Opened
        } else {
            a.handling.resolved_by = Some(RULE.into());
            AlertAction::Cleared
        };
        let c = record(&a, now, RULE, action, None);
        return (a, c);
    };
    let mut a = change.clone();
    a.id = s.id.clone();
    a.opened_at = s.opened_at.min(change.opened_at);
    a.peak_level = s.peak_level.max(change.peak_level);
    a.version = s.version + 1;
    a.handling = s.handling.clone();
    let (status, action) = if !change.status.is_active() {
        if s.status.is_active() {
            a.handling.resolved_by = Some(RULE.into());
        }
        (AlertStatus::Resolved, AlertAction::Cleared)
    } else if change.level > s.level {
        let action = if s.status == AlertStatus::Resolved {
            a.handling.resolved_by = None;
            AlertAction::Reopened
        } else {
            AlertAction::Escalated
        };
        (AlertStatus::Open, action)
    } else if change.level < s.level {
        (s.status, AlertAction::Lowered)
    } else {
        (s.status, AlertAction::Updated)
    };
    a.status = status;
    if status == AlertStatus::Resolved {
        // Resolved by hand earlier: keep when that was.
        a.resolved_at = s.resolved_at.or(change.resolved_at).or(Some(now));
    } else {
        a.resolved_at = None;
    }
    if matches!(action, AlertAction::Escalated | AlertAction::Reopened) {
        a.handling.notified_at = Some(now);
    }
    let c = record(&a, now, RULE, action, None);
    (a, c)
}

/// The next version of `stored` after an operator's action, `Ok(None)`
/// when it is already so (acknowledging twice, resolving a resolved alert).
pub fn apply_operation(
    stored: &Alert,
    op: &Operation,
    by: &str,
    now: Timestamp,
) -> Result<Option<(Alert, AlertChange)>, Refusal> {
    let by = by.trim();
    if by.is_empty() || by.chars().count() > 200 {
        return Err(Refusal::Invalid(
            "`by` must name the operator (1 to 200 characters)".into(),
        ));
    }
    let mut a = stored.clone();
    let (action, note) = match op {
        Operation::Acknowledge => match stored.status {
            AlertStatus::Open => {
                a.status = AlertStatus::Acknowledged;
                a.handling.acknowledged_by = Some(by.into());
                a.handling.acknowledged_at = Some(now);
                (AlertAction::Acknowledged, None)
            }
            AlertStatus::Acknowledged => return Ok(None),
            AlertStatus::Resolved => return Err(Refusal::Resolved),
        },
        Operation::Resolve => {
            if stored.status == AlertStatus::Resolved {
                return Ok(None);
            }
            a.status = AlertStatus::Resolved;
            a.resolved_at = Some(now);
            a.handling.resolved_by = Some(by.into());
            (AlertAction::Resolved, None)
        }
        Operation::Assign(to) => {
            let to = to.as_deref().map(str::trim).filter(|t| !t.is_empty());
            if to.is_some_and(|t| t.chars().count() > 200) {
                return Err(Refusal::Invalid(
                    "an assignee has at most 200 characters".into(),
                ));
            }
            if to == stored.handling.assignee.as_deref() {
                return Ok(None);
            }
            a.handling.assignee = to.map(str::to_owned);
            (AlertAction::Assigned, to.map(str::to_owned))
        }
        Operation::Note(text) => {
            let text = text.trim();
            if text.is_empty() || text.chars().count() > MAX_TEXT {
                return Err(Refusal::Invalid(format!(
                    "a note has 1 to {MAX_TEXT} characters"
                )));
            }
            a.handling.notes += 1;
            (AlertAction::Noted, Some(text.to_owned()))
        }
    };
    a.version = stored.version + 1;
    let c = record(&a, now, by, action, note);
    Ok(Some((a, c)))
}

/// The re-notification of an alert still open and unacknowledged.
pub fn renotify(stored: &Alert, now: Timestamp) -> (Alert, AlertChange) {
    let mut a = stored.clone();
    a.version += 1;
    a.handling.notified_at = Some(now);
    let c = record(&a, now, RULE, AlertAction::Renotified, None);
    (a, c)
}

fn record(
    a: &Alert,
    at: Timestamp,
    by: &str,
    action: AlertAction,
    note: Option<String>,
) -> AlertChange {
    AlertChange {
        alert: a.id.clone(),
        version: a.version,
        at,
        by: by.into(),
        action,
        status: a.status,
        level: a.level,
        note,
    }
}

#[cfg(test)]
mod tests {
    use ioc_schemas::{Evidence, Severity};

    use super::*;

    pub(crate) fn rule_alert(id: &str, level: u8, version: u32) -> Alert {
        Alert {
            id: id.into(),
            rule: "river_level".into(),
            subject: "river-to-hieu".into(),
            status: if level == 0 {
                AlertStatus::Resolved
            } else {
                AlertStatus::Open
            },
            severity: Severity::Moderate,
            level,
            level_name: format!("BĐ{level}"),
            peak_level: level,
            title_vi: "Mực nước".into(),
            title_en: "River level".into(),
            pos: [103.9, 21.3],
            area: Vec::new(),
            zones: Vec::new(),
            nearest: Vec::new(),
            evidence: Evidence::new(3.0, "m", 2.5, Timestamp(1000), 7),
            opened_at: Timestamp(1000),
            updated_at: Timestamp(1000 + i64::from(version)),
            resolved_at: (level == 0).then_some(Timestamp(5000)),
            version,
            revision: false,
            handling: Default::default(),
        }
    }

    const NOW: Timestamp = Timestamp(9_000);

    #[test]
    fn escalation_reopens_an_acknowledged_alert_and_clearing_resolves_it() {
        let (a, c) = apply_rule(None, &rule_alert("x", 1, 1), NOW);
        assert_eq!(
            (a.version, c.action, a.status),
            (1, AlertAction::Opened, AlertStatus::Open)
        );
        let (a, _) = apply_operation(&a, &Operation::Acknowledge, "lan", NOW)
            .unwrap()
            .unwrap();
        assert_eq!(a.status, AlertStatus::Acknowledged);
        assert_eq!(
            apply_operation(&a, &Operation::Acknowledge, "lan", NOW),
            Ok(None)
        );
        let (a, c) = apply_rule(Some(&a), &rule_alert("x", 2, 2), NOW);
        assert_eq!(
            (a.version, c.action, a.status),
            (3, AlertAction::Escalated, AlertStatus::Open)
        );
        assert_eq!(
            a.handling.acknowledged_by.as_deref(),
            Some("lan"),
            "who acknowledged stays on record"
        );
        let (a, c) = apply_rule(Some(&a), &rule_alert("x", 1, 3), NOW);
        assert_eq!(
            (c.action, a.status, a.peak_level),
            (AlertAction::Lowered, AlertStatus::Open, 2)
        );
        let (a, c) = apply_rule(Some(&a), &rule_alert("x", 0, 4), NOW);
        assert_eq!(
            (c.action, a.status),
            (AlertAction::Cleared, AlertStatus::Resolved)
        );
        assert_eq!(a.handling.resolved_by.as_deref(), Some(RULE));
        assert_eq!(
            apply_operation(&a, &Operation::Acknowledge, "lan", NOW),
            Err(Refusal::Resolved)
        );
    }

    #[test]
    fn an_operator_resolution_holds_until_the_rule_escalates() {
        let (a, _) = apply_rule(None, &rule_alert("x", 2, 1), NOW);
        let (a, _) = apply_operation(&a, &Operation::Resolve, "minh", NOW)
            .unwrap()
            .unwrap();
        let (a, c) = apply_rule(Some(&a), &rule_alert("x", 2, 2), NOW);
        assert_eq!(
            (c.action, a.status),
            (AlertAction::Updated, AlertStatus::Resolved)
        );
        let (b, c) = apply_rule(Some(&a), &rule_alert("x", 0, 3), NOW);
        assert_eq!(
            (c.action, b.handling.resolved_by.as_deref()),
            (AlertAction::Cleared, Some("minh"))
        );
        let (a, c) = apply_rule(Some(&a), &rule_alert("x", 3, 3), NOW);
        assert_eq!(
            (c.action, a.status, a.resolved_at),
            (AlertAction::Reopened, AlertStatus::Open, None)
        );
    }

    #[test]
    fn notes_and_assignment_are_checked_and_counted() {
        let (a, _) = apply_rule(None, &rule_alert("x", 1, 1), NOW);
        assert!(apply_operation(&a, &Operation::Note("  ".into()), "lan", NOW).is_err());
        assert!(apply_operation(&a, &Operation::Note("ok".into()), " ", NOW).is_err());
        let (a, c) = apply_operation(&a, &Operation::Note("đã gọi đội cứu hộ".into()), "lan", NOW)
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.handling.notes, c.note.as_deref()),
            (1, Some("đã gọi đội cứu hộ"))
        );
        let (a, _) = apply_operation(&a, &Operation::Assign(Some("đội 2".into())), "lan", NOW)
            .unwrap()
            .unwrap();
        assert_eq!(a.handling.assignee.as_deref(), Some("đội 2"));
        assert_eq!(
            apply_operation(&a, &Operation::Assign(Some("đội 2".into())), "lan", NOW),
            Ok(None)
        );
        assert_eq!(a.version, 3);
    }
}
