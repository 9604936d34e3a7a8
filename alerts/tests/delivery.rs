//! The delivery worker against a real SQLite store: a subscriber that is
//! slow to take each delivery still gets a storm of changes quickly,
//! several alerts at once, each version exactly once and in order.

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "support/fixture.rs"]
mod fixture;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fixture::rule_alert;
use ioc_alerts::{AlertService, AlertsConfig, Delivery, SinkFn};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_takes_several_alerts_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = AlertsConfig {
        database: format!("sqlite://{}", dir.path().join("alerts.db").display()),
        ..AlertsConfig::default()
    };
    // A subscriber that takes 300 ms per delivery, counting how many are
    // in its hands at once and what it got.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let got: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let sink: SinkFn = {
        let (in_flight, most, got) = (in_flight.clone(), most.clone(), got.clone());
        Arc::new(move |d: Delivery| {
            let (in_flight, most, got) = (in_flight.clone(), most.clone(), got.clone());
            Box::pin(async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                got.lock().unwrap().push((d.alert, d.version));
                Ok(())
            })
        })
    };
    let cancel = CancellationToken::new();
    let (service, task) = AlertService::start(
        &config,
        Arc::new(|_| {}),
        vec![("sms".into(), sink)],
        cancel.clone(),
    )
    .await
    .unwrap();

    // Twelve gauges open an alert and escalate it: 24 changes.
    for k in 0..12 {
        let subject = format!("river-{k}");
        service.offer(rule_alert("river_level", &subject, 1000, 1, 1));
        service.offer(rule_alert("river_level", &subject, 1000, 2, 2));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.lock().unwrap().len() < 24 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivered only {:?}",
            got.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = got.lock().unwrap().clone();
    let mut by_alert: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (alert, version) in &got {
        by_alert.entry(alert.clone()).or_default().push(*version);
    }
    assert_eq!(by_alert.len(), 12);
    for (alert, versions) in &by_alert {
        assert_eq!(versions, &[1, 2], "{alert}: each version once, in order");
    }
    assert!(
        most.load(Ordering::SeqCst) >= 2,
        "one delivery at a time: {}",
        most.load(Ordering::SeqCst)
    );
    cancel.cancel();
    task.await.unwrap();
}
