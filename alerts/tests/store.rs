//! The same lifecycle suite against SQLite and against PostgreSQL.

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "support/fixture.rs"]
mod fixture;
#[path = "support/postgres.rs"]
mod postgres;

use fixture::rule_alert;

use std::sync::Arc;

use ioc_alerts::{ActError, AlertFilter, AlertStore, Operation, Refusal};
use ioc_schemas::{AlertAction, AlertStatus, Severity, Timestamp};

const NOW: Timestamp = Timestamp(1_767_225_600_000);

async fn lifecycle(store: &AlertStore) {
    let opened = rule_alert("river_level", "river-a", 1000, 1, 1);
    let (a, c) = store.apply_rule(&opened, NOW).await.unwrap().unwrap();
    assert_eq!((a.version, c.action), (1, AlertAction::Opened));
    assert!(
        store.apply_rule(&opened, NOW).await.unwrap().is_none(),
        "a replay changes nothing"
    );
    let (a, _) = store
        .act(&a.id, &Operation::Acknowledge, "lan", NOW)
        .await
        .unwrap();
    assert_eq!((a.status, a.version), (AlertStatus::Acknowledged, 2));
    let (_, again) = store
        .act(&a.id, &Operation::Acknowledge, "lan", NOW)
        .await
        .unwrap();
    assert!(again.is_none(), "acknowledging twice is one change");
    let (a, c) = store
        .apply_rule(&rule_alert("river_level", "river-a", 1000, 2, 2), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (a.status, a.version, c.action),
        (AlertStatus::Open, 3, AlertAction::Escalated)
    );
    store
        .act(
            &a.id,
            &Operation::Assign(Some("đội cứu hộ 2".into())),
            "lan",
            NOW,
        )
        .await
        .unwrap();
    store
        .act(
            &a.id,
            &Operation::Note("đã gọi UBND xã".into()),
            "minh",
            NOW,
        )
        .await
        .unwrap();
    // The rule is restarted: its new episode for the same gauge continues
    // the active alert instead of opening a second one.
    let (b, c) = store
        .apply_rule(&rule_alert("river_level", "river-a", 5000, 2, 1), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (b.id.as_str(), c.action),
        (a.id.as_str(), AlertAction::Updated)
    );
    let (b, c) = store
        .apply_rule(&rule_alert("river_level", "river-a", 5000, 0, 2), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (b.status, c.action),
        (AlertStatus::Resolved, AlertAction::Cleared)
    );
    assert_eq!(b.handling.resolved_by.as_deref(), Some("rule"));
    assert_eq!(b.handling.assignee.as_deref(), Some("đội cứu hộ 2"));
    let err = store
        .act(&a.id, &Operation::Acknowledge, "lan", NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, ActError::Refused(Refusal::Resolved)), "{err}");
    let err = store
        .act("nope", &Operation::Resolve, "lan", NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, ActError::NotFound(_)), "{err}");

    let detail = store.get(&a.id).await.unwrap().unwrap();
    let actions: Vec<_> = detail
        .history
        .iter()
        .map(|c| (c.version, c.action, c.by.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![
            (1, AlertAction::Opened, "rule"),
            (2, AlertAction::Acknowledged, "lan"),
            (3, AlertAction::Escalated, "rule"),
            (4, AlertAction::Assigned, "lan"),
            (5, AlertAction::Noted, "minh"),
            (6, AlertAction::Updated, "rule"),
            (7, AlertAction::Cleared, "rule"),
        ]
    );
    assert_eq!(detail.alert.version, 7);
    assert_eq!(detail.history[4].note.as_deref(), Some("đã gọi UBND xã"));
}

async fn listing(store: &AlertStore) {
    for (i, subject) in ["list-a", "list-b", "list-c"].iter().enumerate() {
        let level = if i == 2 { 2 } else { 1 };
        store
            .apply_rule(
                &rule_alert("rain_24h", subject, 10_000 + i as i64, level, 1),
                NOW,
            )
            .await
            .unwrap();
    }
    let f = |g: &dyn Fn(&mut AlertFilter)| {
        let mut f = AlertFilter {
            rule: Some("rain_24h".into()),
            limit: 100,
            ..Default::default()
        };
        g(&mut f);
        f
    };
    let page = store.list(&f(&|_| {})).await.unwrap();
    assert_eq!(
        page.alerts
            .iter()
            .map(|a| a.subject.as_str())
            .collect::<Vec<_>>(),
        ["list-c", "list-b", "list-a"]
    );
    let severe = store
        .list(&f(&|f| f.min_severity = Some(Severity::Severe)))
        .await
        .unwrap();
    assert_eq!(severe.alerts.len(), 1);
    let area = store
        .list(&f(&|f| f.area = Some("sl-to-hieu".into())))
        .await
        .unwrap();
    assert_eq!(area.alerts.len(), 3);
    let none = store
        .list(&f(&|f| f.area = Some("sl-to".into())))
        .await
        .unwrap();
    assert!(none.alerts.is_empty(), "areas match whole ids");
    let first = store.list(&f(&|f| f.limit = 2)).await.unwrap();
    assert_eq!(first.alerts.len(), 2);
    let next = first.next.clone().unwrap();
    let second = store
        .list(&f(&|f| {
            f.limit = 2;
            f.after = Some(next.clone());
        }))
        .await
        .unwrap();
    assert_eq!(
        second
            .alerts
            .iter()
            .map(|a| a.subject.as_str())
            .collect::<Vec<_>>(),
        ["list-a"]
    );
    assert!(second.next.is_none());
    let timed = store
        .list(&f(&|f| {
            f.from = Some(Timestamp(10_001));
            f.to = Some(Timestamp(10_002));
        }))
        .await
        .unwrap();
    assert_eq!(timed.alerts.len(), 1);
    let resolved = store
        .list(&f(&|f| f.status = vec![AlertStatus::Resolved]))
        .await
        .unwrap();
    assert!(resolved.alerts.is_empty());
}

/// An alert opened by `rule` on `subject`, then acknowledged (versions 1, 2).
async fn opened_and_acknowledged(
    store: &AlertStore,
    rule: &str,
    subject: &str,
    opened: i64,
) -> ioc_schemas::Alert {
    let (a, _) = store
        .apply_rule(&rule_alert(rule, subject, opened, 1, 1), NOW)
        .await
        .unwrap()
        .unwrap();
    store
        .act(&a.id, &Operation::Acknowledge, "lan", NOW)
        .await
        .unwrap()
        .0
}

async fn renotification(store: &AlertStore) {
    store
        .apply_rule(&rule_alert("renotify", "r-open", 20_000, 1, 1), NOW)
        .await
        .unwrap();
    opened_and_acknowledged(store, "renotify", "r-acked", 20_000).await;
    let later = Timestamp(NOW.millis() + 60_000);
    assert!(
        store
            .renotify_due(NOW, later)
            .await
            .unwrap()
            .iter()
            .all(|(a, _)| a.rule != "renotify")
    );
    let done = store
        .renotify_due(Timestamp(NOW.millis() + 1), later)
        .await
        .unwrap();
    let mine: Vec<_> = done.iter().filter(|(a, _)| a.rule == "renotify").collect();
    assert_eq!(mine.len(), 1, "only the unacknowledged one");
    assert_eq!(
        (mine[0].0.subject.as_str(), mine[0].1.action),
        ("r-open", AlertAction::Renotified)
    );
    assert!(
        store
            .renotify_due(Timestamp(NOW.millis() + 1), later)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn concurrency(store: Arc<AlertStore>) {
    let (a, _) = store
        .apply_rule(&rule_alert("busy", "busy-a", 30_000, 1, 1), NOW)
        .await
        .unwrap()
        .unwrap();
    let mut tasks = Vec::new();
    for k in 0..20u32 {
        let (store, id) = (store.clone(), a.id.clone());
        tasks.push(tokio::spawn(async move {
            if k % 4 == 0 {
                let level = 1 + (k / 4) as u8;
                store
                    .apply_rule(&rule_alert("busy", "busy-a", 30_000, level, 2 + k / 4), NOW)
                    .await
                    .unwrap();
            } else {
                store
                    .act(&id, &Operation::Note(format!("note {k}")), "op", NOW)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let detail = store.get(&a.id).await.unwrap().unwrap();
    let versions: Vec<u32> = detail.history.iter().map(|c| c.version).collect();
    assert_eq!(
        versions,
        (1..=versions.len() as u32).collect::<Vec<_>>(),
        "versions are contiguous"
    );
    assert_eq!(detail.alert.version as usize, versions.len());
    assert_eq!(detail.alert.handling.notes, 15);
}

/// The outbox hands each subscriber its own due deliveries: per alert the
/// oldest pending version, not before its time; another subscriber's
/// backlog or failures change nothing for it; a subscriber dropped from the
/// configuration has its pending deliveries given up.
async fn outbox(url: &str) {
    let store = AlertStore::open(url).await.unwrap().with_sinks(vec![
        "kafka".into(),
        "mqtt".into(),
        "old".into(),
    ]);
    let key = |ds: &[ioc_alerts::Delivery]| -> Vec<(String, u32)> {
        ds.iter().map(|d| (d.alert.clone(), d.version)).collect()
    };
    // Two alerts, two versions each.
    let mut ids = Vec::new();
    for subject in ["outbox-x", "outbox-y"] {
        ids.push(
            opened_and_acknowledged(&store, "river_level", subject, 2000)
                .await
                .id,
        );
    }
    let (x, y) = (ids[0].clone(), ids[1].clone());
    let due = |who: &'static str, at: Timestamp| {
        let store = &store;
        async move { store.due_deliveries(who, at, 100).await.unwrap() }
    };
    let heads = vec![(x.clone(), 1), (y.clone(), 1)];
    assert_eq!(key(&due("kafka", NOW).await), heads);
    assert!(
        due("kafka", Timestamp(NOW.millis() - 1)).await.is_empty(),
        "not before its time"
    );

    // x:1 delivered, y:1 failed and waits a minute; y:2 waits behind it.
    let first = due("kafka", NOW).await;
    store
        .record_attempt(&first[0], Ok(()), NOW, 12, NOW)
        .await
        .unwrap();
    let later = Timestamp(NOW.millis() + 60_000);
    store
        .record_attempt(&first[1], Err("HTTP 503".into()), later, 12, NOW)
        .await
        .unwrap();
    assert_eq!(key(&due("kafka", NOW).await), vec![(x.clone(), 2)]);
    assert_eq!(
        key(&due("kafka", later).await),
        vec![(x.clone(), 2), (y.clone(), 1)]
    );
    assert_eq!(
        key(&due("mqtt", NOW).await),
        heads,
        "the other subscriber is untouched"
    );
    assert_eq!(
        store.due_deliveries("kafka", NOW, 1).await.unwrap().len(),
        1
    );

    // Taken by one process, a delivery is not due for another (sharing the
    // store) until the taker's two minutes are up.
    let taker = AlertStore::open(url)
        .await
        .unwrap()
        .with_shared_outbox(true);
    let taken = taker.take_due_deliveries("mqtt", NOW, 100).await.unwrap();
    assert_eq!(key(&taken), heads);
    assert!(
        taker
            .take_due_deliveries("mqtt", NOW, 100)
            .await
            .unwrap()
            .is_empty(),
        "taken twice"
    );
    let lease_over = Timestamp(NOW.millis() + 120_000);
    assert_eq!(key(&due("mqtt", lease_over).await), heads);

    // "old" is no longer configured: its four pending deliveries are dead.
    assert_eq!(
        store
            .abandon_unconfigured(&["kafka", "mqtt"], NOW)
            .await
            .unwrap(),
        4
    );
    assert!(due("old", NOW).await.is_empty());
    let dead = store.deliveries("dead", 100).await.unwrap();
    assert_eq!(dead.iter().filter(|d| d.subscriber == "old").count(), 4);
    assert!(
        dead.iter()
            .all(|d| d.last_error.as_deref() == Some("subscriber no longer configured"))
    );
    assert_eq!(
        store
            .abandon_unconfigured(&["kafka", "mqtt"], NOW)
            .await
            .unwrap(),
        0
    );
    assert_eq!(key(&due("mqtt", lease_over).await), heads);
    store.close().await;
}

async fn suite(url: &str) {
    let store = Arc::new(AlertStore::open(url).await.unwrap());
    lifecycle(&store).await;
    listing(&store).await;
    renotification(&store).await;
    concurrency(store.clone()).await;
    outbox(url).await;
    let active = store.active().await.unwrap();
    store.close().await;
    // Opened again (migrations already applied): everything is still there.
    let again = AlertStore::open(url).await.unwrap();
    assert_eq!(again.active().await.unwrap(), active);
    assert!(!active.is_empty());
}

#[tokio::test]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    suite(&format!(
        "sqlite://{}",
        dir.path().join("alerts.db").display()
    ))
    .await;
}

#[tokio::test]
async fn postgresql() {
    let pg = postgres::Postgres::start();
    suite(&pg.url).await;
    processes_sharing_the_store(&pg.database("shared")).await;
}

/// Processes of a cluster open one PostgreSQL store together (one
/// migrates, the others wait), and re-notify at the same moment: each due
/// alert is re-notified once, and no process fails on another's change.
async fn processes_sharing_the_store(url: &str) {
    let opened = futures_util::future::join_all(
        (0..3).map(|_| async { AlertStore::open(url).await.unwrap() }),
    )
    .await;
    let first = &opened[0];
    for k in 0..20 {
        first
            .apply_rule(&rule_alert("shared", &format!("s-{k}"), 20_000, 1, 1), NOW)
            .await
            .unwrap();
    }
    let later = Timestamp(NOW.millis() + 60_000);
    let done = futures_util::future::join_all(
        opened
            .iter()
            .map(|s| s.renotify_due(Timestamp(NOW.millis() + 1), later)),
    )
    .await;
    let mut subjects: Vec<String> = done
        .into_iter()
        .flat_map(|r| r.expect("no process fails on another's re-notification"))
        .map(|(a, _)| a.subject)
        .collect();
    subjects.sort();
    let expected: Vec<String> = {
        let mut e: Vec<String> = (0..20).map(|k| format!("s-{k}")).collect();
        e.sort();
        e
    };
    assert_eq!(subjects, expected, "each due alert re-notified once");
    for s in &opened {
        s.close().await;
    }
}
