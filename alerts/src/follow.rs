//! Alert changes that other processes of a cluster store.
//!
//! Each process stores the rule's changes of the devices its workers own,
//! and its operators' actions, in the PostgreSQL database they share; the
//! store announces every change at commit on [`CHANGES_CHANNEL`]
//! (`pg_notify`). [`follow`] listens there and shows each change another
//! process made on this one's screens, so a control room pointed at any
//! process sees every alert. Its own changes it already published.

use std::sync::Arc;
use std::time::Duration;

use ioc_schemas::Alert;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use crate::store::CHANGES_CHANNEL;
use crate::{AlertService, StoreError};

/// Follows the changes other processes store until `cancel` fires, giving
/// each one's stored alert to `show`. After the connection is lost (and
/// once at start), every active alert is shown again: a change announced
/// meanwhile was missed.
pub async fn follow(
    url: String,
    service: Arc<AlertService>,
    show: impl Fn(Vec<Alert>) + Send + Sync + 'static,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let r = tokio::select! {
            () = cancel.cancelled() => return,
            r = listen(&url, &service, &show) => r,
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "following other processes' alert changes failed; retrying in {backoff:?}");
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// One connection's worth of [`follow`]: returns on an error.
async fn listen(
    url: &str,
    service: &AlertService,
    show: &(impl Fn(Vec<Alert>) + Send + Sync),
) -> Result<(), StoreError> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANGES_CHANNEL).await?;
    let origin = service.origin().to_owned();
    // Anything stored before the listener was in place.
    show(service.active().await?);
    loop {
        let Some(n) = listener.try_recv().await? else {
            // Reconnected: what was announced meanwhile is lost.
            tracing::warn!("lost the alert-change notifications; catching up from the store");
            show(service.active().await?);
            continue;
        };
        let mut parts = n.payload().splitn(3, ' ');
        let (Some(from), Some(_version), Some(id)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if from == origin {
            continue;
        }
        if let Some(alert) = service.alert(id).await? {
            metrics::counter!("ioc_alert_changes_followed_total").increment(1);
            show(vec![alert]);
        }
    }
}
