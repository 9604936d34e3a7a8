//! The durable alert store: SQLite (embedded default) or PostgreSQL behind
//! one interface, through sqlx's runtime-chosen `Any` driver.
//!
//! Both databases run the same SQL: `$n` placeholders (SQLite reads them as
//! numbered too), `ON CONFLICT`, a partial unique index. Every change is one
//! transaction that updates the alert with a version check and appends its
//! history entry, so the current state and the history never disagree. A
//! change is committed (SQLite: WAL, `synchronous = FULL`) before anybody
//! hears of it: an operator's action that got a success response survives a
//! crash of the process or of the machine.

use std::time::Duration;

use ioc_schemas::{Alert, AlertChange, AlertDetail, AlertStatus, Severity, Timestamp};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Connection as _, Executor as _, Row as _};
use tokio::sync::Mutex;

use crate::channels::webhook::{self, Webhook};
use crate::lifecycle::{self, Operation, Refusal};

/// The schema, one entry per version, applied in order at start.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_alerts.sql")),
    (2, include_str!("../migrations/0002_webhook_outbox.sql")),
    (3, include_str!("../migrations/0003_audit.sql")),
    (4, include_str!("../migrations/0004_outbox_pending.sql")),
    (5, include_str!("../migrations/0005_devices.sql")),
];

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("alert database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored alert could not be read back.
    #[error("stored alert is not valid JSON: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// Another writer changed the alert between read and write.
    #[error("alert {0} changed concurrently")]
    Conflict(String),
    /// The URL names no database this build supports.
    #[error("alert database URL {0:?}: expected sqlite://… or postgres://…")]
    Url(String),
}

/// Why an operator's action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// No such alert.
    #[error("no alert {0:?}")]
    NotFound(String),
    /// The lifecycle does not allow it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The store failed; the action did not happen.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ActError {
    fn from(e: sqlx::Error) -> Self {
        ActError::Store(e.into())
    }
}

/// Which alerts to list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertFilter {
    /// Any of these statuses (empty: all).
    pub status: Vec<AlertStatus>,
    /// At least this severe.
    pub min_severity: Option<Severity>,
    /// Raised by this rule.
    pub rule: Option<String>,
    /// About this device or zone.
    pub subject: Option<String>,
    /// Inside this administrative area (any level of its chain).
    pub area: Option<String>,
    /// Opened at or after this event time.
    pub from: Option<Timestamp>,
    /// Opened before this event time.
    pub to: Option<Timestamp>,
    /// At most this many (1 to 1000).
    pub limit: usize,
    /// Continue after this cursor (from a previous page).
    pub after: Option<String>,
}

/// A page of alerts, newest episode first.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertPage {
    /// The alerts.
    pub alerts: Vec<Alert>,
    /// The cursor of the next page, if there is one.
    pub next: Option<String>,
}

/// The alert store.
pub struct AlertStore {
    pub(crate) pool: AnyPool,
    backend: &'static str,
    /// One writer at a time in this process (the version check still
    /// guards against another process on the same database).
    pub(crate) write: Mutex<()>,
    /// Webhook subscribers: a matching change gets an outbox row.
    webhooks: Vec<Webhook>,
    /// Other subscribers (e.g. `kafka`): every change gets an outbox row.
    sinks: Vec<String>,
    /// This store handle's name in change notifications (PostgreSQL), so
    /// that a process following them skips its own.
    origin: String,
    /// Other processes deliver from the same outbox: a delivery is taken
    /// before it is attempted.
    shared_outbox: bool,
}

/// The PostgreSQL channel every stored alert change is announced on,
/// with the payload `{origin} {version} {alert id}` ([`AlertStore::origin`]).
pub const CHANGES_CHANNEL: &str = "ioc_alert_changes";

/// How long a delivery taken by one process is left to it before another
/// process sharing the store may take it again (the process may have died
/// in the attempt; delivery is at least once).
const DELIVERY_LEASE_MS: i64 = 120_000;

/// One write through the API, allowed or refused.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct AuditEntry {
    /// When (wall clock).
    pub at: Timestamp,
    /// Who: the token's name or the JWT's subject (`unauthenticated` when
    /// no valid token came).
    pub actor: String,
    /// The caller's role (empty when unauthenticated).
    pub role: String,
    /// The HTTP method.
    pub method: String,
    /// The path (and query).
    pub path: String,
    /// The client's address.
    pub source: String,
    /// The HTTP status answered.
    pub status: u16,
}

/// One webhook delivery in the outbox.
#[derive(Clone, Debug, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct Delivery {
    /// The subscriber's name.
    pub subscriber: String,
    /// The alert.
    pub alert: String,
    /// The alert's version this delivery announces.
    pub version: u32,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was enqueued (wall clock).
    pub created_at: Timestamp,
    /// The next attempt (pending), or when it was delivered or given up.
    pub next_at: Timestamp,
    /// The last failure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The body posted.
    #[serde(skip)]
    pub body: String,
}

impl std::fmt::Debug for AlertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertStore")
            .field("backend", &self.backend)
            .finish()
    }
}

impl AlertStore {
    /// Connects to `url` (`sqlite://path` creates the file; `postgres://…`)
    /// and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            "sqlite"
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            "postgres"
        } else {
            return Err(StoreError::Url(url.into()));
        };
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            if let Some(dir) = std::path::Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                // sqlx makes the file; the directory is ours to make.
                let _ = std::fs::create_dir_all(dir);
            }
        }
        let url = if backend == "sqlite" && !url.contains("mode=") && !url.contains(":memory:") {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}mode=rwc")
        } else {
            url.to_owned()
        };
        let sqlite = backend == "sqlite";
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 2 } else { 4 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // Durable at commit, readers beside the writer, and
                        // wait for a lock rather than fail.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let store = AlertStore {
            pool,
            backend,
            write: Mutex::new(()),
            webhooks: Vec::new(),
            sinks: Vec::new(),
            origin: format!("{}-{}", std::process::id(), Timestamp::now().millis()),
            shared_outbox: false,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The name this handle's changes are announced under on
    /// [`CHANGES_CHANNEL`] (PostgreSQL only).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Writes a new version of `alert` and its history entry (and outbox
    /// rows) in `tx`, checking the stored version is still `previous`.
    async fn write_change(
        &self,
        tx: &mut sqlx::AnyConnection,
        alert: &Alert,
        previous: Option<u32>,
        entry: &AlertChange,
    ) -> Result<(), StoreError> {
        let subscribers = Subscribers {
            webhooks: &self.webhooks,
            sinks: &self.sinks,
            announce: (self.backend == "postgres").then_some(self.origin.as_str()),
        };
        write(tx, subscribers, alert, previous, entry).await
    }

    /// Every later matching change is queued for these subscribers.
    pub fn with_webhooks(mut self, webhooks: Vec<Webhook>) -> Self {
        self.webhooks = webhooks;
        self
    }

    /// Every later change is queued for each of these subscribers too
    /// (delivered by the service's sinks of the same names).
    pub fn with_sinks(mut self, names: Vec<String>) -> Self {
        self.sinks = names;
        self
    }

    /// Other processes deliver from the same outbox (a cluster): each
    /// delivery is taken before it is attempted
    /// ([`AlertStore::take_due_deliveries`]).
    pub fn with_shared_outbox(mut self, shared: bool) -> Self {
        self.shared_outbox = shared;
        self
    }

    /// The webhook subscribers.
    pub fn webhooks(&self) -> &[Webhook] {
        &self.webhooks
    }

    /// The deliveries due to `subscriber`: of each alert, the oldest pending
    /// version once its time has come (versions of one alert go in order: a
    /// later one waits for the earlier), longest waiting first, at most
    /// `limit`. Each subscriber is asked on its own, so one with a long
    /// backlog (an endpoint that is down) does not hide the others'.
    pub async fn due_deliveries(
        &self,
        subscriber: &str,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "{DELIVERY_SELECT} o WHERE o.subscriber = $1 AND o.state = 'pending' AND o.next_at <= $2 \
             AND o.version = (SELECT MIN(p.version) FROM alert_outbox p \
             WHERE p.subscriber = o.subscriber AND p.alert_id = o.alert_id AND p.state = 'pending') \
             ORDER BY o.next_at, o.alert_id LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(subscriber)
            .bind(now.millis())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(delivery).collect()
    }

    /// [`AlertStore::due_deliveries`], each one taken for this process:
    /// its next attempt is moved two minutes on by a statement that only
    /// one of several processes sharing the store can win, so a cluster
    /// attempts each delivery once (and again, by any process, only if the
    /// one that took it records no outcome within the two minutes).
    pub async fn take_due_deliveries(
        &self,
        subscriber: &str,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let due = self.due_deliveries(subscriber, now, limit).await?;
        if !self.shared_outbox {
            // Alone, nobody else takes them: no lease to wait out after
            // a crash.
            return Ok(due);
        }
        let mut taken = Vec::with_capacity(due.len());
        for d in due {
            let won = sqlx::query(
                "UPDATE alert_outbox SET next_at = $1 WHERE subscriber = $2 AND alert_id = $3 \
                 AND version = $4 AND state = 'pending' AND next_at = $5",
            )
            .bind(now.millis() + DELIVERY_LEASE_MS)
            .bind(&d.subscriber)
            .bind(&d.alert)
            .bind(i64::from(d.version))
            .bind(d.next_at.millis())
            .execute(&self.pool)
            .await?
            .rows_affected();
            if won == 1 {
                taken.push(d);
            }
        }
        Ok(taken)
    }

    /// Gives up the pending deliveries of subscribers not in `configured`
    /// (removed from the configuration): they become dead with that reason.
    /// Returns how many.
    pub async fn abandon_unconfigured(
        &self,
        configured: &[&str],
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let pending: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT subscriber FROM alert_outbox WHERE state = 'pending'",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut abandoned = 0;
        for gone in pending.iter().filter(|s| !configured.contains(&s.as_str())) {
            abandoned += sqlx::query(
                "UPDATE alert_outbox SET state = 'dead', last_error = $1, done_at = $2, next_at = $2 \
                 WHERE subscriber = $3 AND state = 'pending'",
            )
            .bind("subscriber no longer configured")
            .bind(now.millis())
            .bind(gone)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        Ok(abandoned)
    }

    /// Records the outcome of an attempt: delivered, retried at `next_at`,
    /// or dead.
    pub async fn record_attempt(
        &self,
        d: &Delivery,
        outcome: Result<(), String>,
        next_at: Timestamp,
        max_attempts: u32,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let attempts = i64::from(d.attempts) + 1;
        let (state, error, next, done) = match &outcome {
            Ok(()) => ("delivered", None, now, Some(now.millis())),
            Err(e) if attempts >= i64::from(max_attempts) => {
                ("dead", Some(e.as_str()), now, Some(now.millis()))
            }
            Err(e) => ("pending", Some(e.as_str()), next_at, None),
        };
        sqlx::query(
            "UPDATE alert_outbox SET state = $1, attempts = $2, next_at = $3, last_error = $4, done_at = $5 \
             WHERE subscriber = $6 AND alert_id = $7 AND version = $8",
        )
        .bind(state)
        .bind(attempts)
        .bind(next.millis())
        .bind(error)
        .bind(done)
        .bind(&d.subscriber)
        .bind(&d.alert)
        .bind(i64::from(d.version))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deliveries in `state` (`pending`, `delivered`, `dead`), newest first.
    pub async fn deliveries(&self, state: &str, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "{DELIVERY_SELECT} WHERE state = $1 ORDER BY created_at DESC, alert_id, version LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(state)
            .bind(limit.clamp(1, 1000) as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(delivery).collect()
    }

    /// Records a write through the API.
    pub async fn record_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let _w = self.write.lock().await;
        sqlx::query(
            "INSERT INTO audit_log (at, actor, role, method, path, source, status) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(e.at.millis())
        .bind(&e.actor)
        .bind(&e.role)
        .bind(&e.method)
        .bind(&e.path)
        .bind(&e.source)
        .bind(i64::from(e.status))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The latest writes, newest first, before `before` when given.
    pub async fn audit(
        &self,
        before: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, actor, role, method, path, source, status FROM audit_log \
             WHERE at < $1 ORDER BY at DESC LIMIT $2",
        )
        .bind(before.map_or(i64::MAX, |t| t.millis()))
        .bind(limit.clamp(1, 1000) as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    at: Timestamp(row.try_get(0)?),
                    actor: row.try_get(1)?,
                    role: row.try_get(2)?,
                    method: row.try_get(3)?,
                    path: row.try_get(4)?,
                    source: row.try_get(5)?,
                    status: u16::try_from(row.try_get::<i64, _>(6)?).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let _w = self.write.lock().await;
        let mut conn = self.pool.acquire().await?;
        let postgres = self.backend == "postgres";
        if postgres {
            // Processes of a cluster open the database together: one
            // migrates, the others wait and find it done.
            conn.execute("SELECT pg_advisory_lock(7307160001)").await?;
        }
        conn.execute("CREATE TABLE IF NOT EXISTS ioc_schema (version BIGINT NOT NULL)")
            .await?;
        let current: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM ioc_schema")
            .fetch_one(&mut *conn)
            .await?
            .try_get("v")?;
        let current = current.unwrap_or(0);
        for &(version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            let mut tx = conn.begin().await?;
            for statement in statements(sql) {
                tx.execute(statement.as_str()).await?;
            }
            sqlx::query("INSERT INTO ioc_schema (version) VALUES ($1)")
                .bind(version)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(
                version,
                backend = self.backend,
                "alert store schema migrated"
            );
        }
        if postgres {
            conn.execute("SELECT pg_advisory_unlock(7307160001)")
                .await?;
        }
        Ok(())
    }

    /// Applies a change of the rule (the engine's alert for one episode).
    /// `None` when it was applied before (a replay or a retry).
    pub async fn apply_rule(
        &self,
        change: &Alert,
        now: Timestamp,
    ) -> Result<Option<(Alert, AlertChange)>, StoreError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let source =
            sqlx::query("SELECT alert_id, engine_version FROM alert_sources WHERE engine_id = $1")
                .bind(&change.id)
                .fetch_optional(&mut *tx)
                .await?;
        let target = match source {
            Some(row) => {
                let (id, seen): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
                if i64::from(change.version) <= seen {
                    return Ok(None);
                }
                load(&mut tx, &id).await?
            }
            None => {
                // A new episode of the rule: it continues the subject's
                // active alert of the same rule, if there is one.
                let active = if change.status.is_active() {
                    let row = sqlx::query(
                        "SELECT body FROM alerts WHERE rule = $1 AND subject = $2 AND status <> 'resolved'",
                    )
                    .bind(&change.rule)
                    .bind(&change.subject)
                    .fetch_optional(&mut *tx)
                    .await?;
                    row.map(|r| decode(&r)).transpose()?
                } else {
                    None
                };
                match active {
                    Some(a) => Some(a),
                    None => load(&mut tx, &change.id).await?,
                }
            }
        };
        let (alert, entry) = lifecycle::apply_rule(target.as_ref(), change, now);
        self.write_change(&mut tx, &alert, target.as_ref().map(|t| t.version), &entry)
            .await?;
        sqlx::query(
            "INSERT INTO alert_sources (engine_id, alert_id, engine_version) VALUES ($1, $2, $3) \
             ON CONFLICT (engine_id) DO UPDATE SET alert_id = excluded.alert_id, engine_version = excluded.engine_version",
        )
        .bind(&change.id)
        .bind(&alert.id)
        .bind(i64::from(change.version))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some((alert, entry)))
    }

    /// The stored alert and its last change, when `change` is the newest
    /// version of the rule's alert already stored: the engine sends it again
    /// after a restart (it replays what came after its checkpoint). Its
    /// subscribers get it once more, in case the process stopped between
    /// storing and publishing it; anything older is not sent again.
    pub async fn replayed(
        &self,
        change: &Alert,
    ) -> Result<Option<(Alert, AlertChange)>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let row =
            sqlx::query("SELECT alert_id, engine_version FROM alert_sources WHERE engine_id = $1")
                .bind(&change.id)
                .fetch_optional(&mut *conn)
                .await?;
        drop(conn);
        let Some(row) = row else {
            return Ok(None);
        };
        let (id, seen): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
        if seen != i64::from(change.version) {
            return Ok(None);
        }
        Ok(self
            .get(&id)
            .await?
            .and_then(|d| Some((d.alert, d.history.into_iter().last()?))))
    }

    /// Applies an operator's action. Returns the alert and the history entry,
    /// or no entry when the alert already was so.
    pub async fn act(
        &self,
        id: &str,
        op: &Operation,
        by: &str,
        now: Timestamp,
    ) -> Result<(Alert, Option<AlertChange>), ActError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let stored = load(&mut tx, id)
            .await?
            .ok_or_else(|| ActError::NotFound(id.into()))?;
        match lifecycle::apply_operation(&stored, op, by, now)? {
            None => Ok((stored, None)),
            Some((alert, entry)) => {
                self.write_change(&mut tx, &alert, Some(stored.version), &entry)
                    .await?;
                tx.commit().await?;
                Ok((alert, Some(entry)))
            }
        }
    }

    /// Re-notifies every open, unacknowledged alert last notified before
    /// `before`.
    pub async fn renotify_due(
        &self,
        before: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<(Alert, AlertChange)>, StoreError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        // Processes sharing a PostgreSQL store each take the alerts no
        // other is re-notifying at that moment (SQLite has one writer).
        let lock = if self.backend == "postgres" {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = format!(
            "SELECT body FROM alerts WHERE status = 'open' AND notified_at < $1 LIMIT 1000{lock}"
        );
        let rows = sqlx::query(&sql)
            .bind(before.millis())
            .fetch_all(&mut *tx)
            .await?;
        let mut done = Vec::with_capacity(rows.len());
        for row in rows {
            let stored = decode(&row)?;
            let (alert, entry) = lifecycle::renotify(&stored, now);
            self.write_change(&mut tx, &alert, Some(stored.version), &entry)
                .await?;
            done.push((alert, entry));
        }
        tx.commit().await?;
        Ok(done)
    }

    /// One alert with its history.
    pub async fn get(&self, id: &str) -> Result<Option<AlertDetail>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let Some(alert) = load(&mut conn, id).await? else {
            return Ok(None);
        };
        let history =
            sqlx::query("SELECT body FROM alert_history WHERE alert_id = $1 ORDER BY version")
                .bind(id)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| Ok(serde_json::from_str(&r.try_get::<String, _>(0)?)?))
                .collect::<Result<Vec<AlertChange>, StoreError>>()?;
        Ok(Some(AlertDetail { alert, history }))
    }

    /// One alert as it is now, without its history.
    pub async fn alert(&self, id: &str) -> Result<Option<Alert>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        load(&mut conn, id).await
    }

    /// A page of alerts matching `filter`, newest episode first.
    pub async fn list(&self, filter: &AlertFilter) -> Result<AlertPage, StoreError> {
        let mut sql = String::from("SELECT body, opened_at, id FROM alerts WHERE 1 = 1");
        let mut args: Vec<Arg> = Vec::new();
        let mut param = |sql: &mut String, clause: &str, arg: Arg| {
            args.push(arg);
            sql.push_str(&clause.replace("$?", &format!("${}", args.len())));
        };
        if !filter.status.is_empty() {
            sql.push_str(" AND status IN (");
            for (i, s) in filter.status.iter().enumerate() {
                let sep = if i == 0 { "$?" } else { ", $?" };
                param(&mut sql, sep, Arg::Text(s.as_str().into()));
            }
            sql.push(')');
        }
        if let Some(s) = filter.min_severity {
            param(&mut sql, " AND severity >= $?", Arg::Int(severity_rank(s)));
        }
        if let Some(r) = &filter.rule {
            param(&mut sql, " AND rule = $?", Arg::Text(r.clone()));
        }
        if let Some(s) = &filter.subject {
            param(&mut sql, " AND subject = $?", Arg::Text(s.clone()));
        }
        if let Some(a) = &filter.area {
            let pattern = format!("% {} %", escape_like(a));
            param(
                &mut sql,
                " AND areas LIKE $? ESCAPE '\\'",
                Arg::Text(pattern),
            );
        }
        if let Some(t) = filter.from {
            param(&mut sql, " AND opened_at >= $?", Arg::Int(t.millis()));
        }
        if let Some(t) = filter.to {
            param(&mut sql, " AND opened_at < $?", Arg::Int(t.millis()));
        }
        if let Some((at, id)) = filter.after.as_deref().and_then(parse_cursor) {
            param(&mut sql, " AND (opened_at < $?", Arg::Int(at));
            param(&mut sql, " OR (opened_at = $?", Arg::Int(at));
            param(&mut sql, " AND id < $?))", Arg::Text(id.to_owned()));
        }
        let limit = filter.limit.clamp(1, 1000);
        param(
            &mut sql,
            " ORDER BY opened_at DESC, id DESC LIMIT $?",
            Arg::Int(limit as i64 + 1),
        );
        let mut query = sqlx::query(&sql);
        for a in &args {
            query = match a {
                Arg::Int(v) => query.bind(*v),
                Arg::Text(v) => query.bind(v.as_str()),
            };
        }
        let rows = query.fetch_all(&self.pool).await?;
        let more = rows.len() > limit;
        let alerts = rows
            .iter()
            .take(limit)
            .map(decode)
            .collect::<Result<Vec<_>, _>>()?;
        let next = more
            .then(|| {
                alerts
                    .last()
                    .map(|a| format!("{}:{}", a.opened_at.millis(), a.id))
            })
            .flatten();
        Ok(AlertPage { alerts, next })
    }

    /// Every active (open or acknowledged) alert.
    pub async fn active(&self) -> Result<Vec<Alert>, StoreError> {
        let rows =
            sqlx::query("SELECT body FROM alerts WHERE status <> 'resolved' ORDER BY opened_at")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(decode).collect()
    }

    /// Closes the pool (waits for connections to finish).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

enum Arg {
    Int(i64),
    Text(String),
}

/// The statements of a migration file (split at `;` ending a line).
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let code = line.split("--").next().unwrap_or("").trim_end();
        if code.trim().is_empty() {
            continue;
        }
        current.push_str(code);
        current.push('\n');
        if code.ends_with(';') {
            out.push(
                std::mem::take(&mut current)
                    .trim()
                    .trim_end_matches(';')
                    .to_owned(),
            );
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

async fn load(conn: &mut sqlx::AnyConnection, id: &str) -> Result<Option<Alert>, StoreError> {
    sqlx::query("SELECT body FROM alerts WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| decode(&r))
        .transpose()
}

fn decode(row: &sqlx::any::AnyRow) -> Result<Alert, StoreError> {
    let body: String = row.try_get(0)?;
    Ok(serde_json::from_str(&body)?)
}

/// Writes the new version of `alert` (checking that the stored one is
/// still `previous`) and its history entry.
/// Who gets an outbox row for a change.
#[derive(Clone, Copy)]
struct Subscribers<'a> {
    webhooks: &'a [Webhook],
    sinks: &'a [String],
    /// Announce the change on [`CHANGES_CHANNEL`] under this origin
    /// (PostgreSQL delivers it at commit).
    announce: Option<&'a str>,
}

async fn write(
    conn: &mut sqlx::AnyConnection,
    subscribers: Subscribers<'_>,
    alert: &Alert,
    previous: Option<u32>,
    entry: &AlertChange,
) -> Result<(), StoreError> {
    let body = serde_json::to_string(alert)?;
    let areas = format!(
        " {} ",
        alert
            .area
            .iter()
            .map(|a| &*a.id)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let notified = alert
        .handling
        .notified_at
        .map_or(alert.updated_at.millis(), Timestamp::millis);
    let done = match previous {
        None => sqlx::query(
            "INSERT INTO alerts (id, rule, subject, status, severity, areas, opened_at, version, notified_at, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&alert.id)
        .bind(&alert.rule)
        .bind(&alert.subject)
        .bind(alert.status.as_str())
        .bind(severity_rank(alert.severity))
        .bind(&areas)
        .bind(alert.opened_at.millis())
        .bind(i64::from(alert.version))
        .bind(notified)
        .bind(&body)
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        Some(v) => sqlx::query(
            "UPDATE alerts SET status = $1, severity = $2, areas = $3, opened_at = $4, version = $5, \
             notified_at = $6, body = $7 WHERE id = $8 AND version = $9",
        )
        .bind(alert.status.as_str())
        .bind(severity_rank(alert.severity))
        .bind(&areas)
        .bind(alert.opened_at.millis())
        .bind(i64::from(alert.version))
        .bind(notified)
        .bind(&body)
        .bind(&alert.id)
        .bind(i64::from(v))
        .execute(&mut *conn)
        .await?
        .rows_affected(),
    };
    if done != 1 {
        return Err(StoreError::Conflict(alert.id.clone()));
    }
    sqlx::query(
        "INSERT INTO alert_history (alert_id, version, at, by_whom, action, body) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&entry.alert)
    .bind(i64::from(entry.version))
    .bind(entry.at.millis())
    .bind(&entry.by)
    .bind(entry.action.as_str())
    .bind(serde_json::to_string(entry)?)
    .execute(&mut *conn)
    .await?;
    let mut posted = None;
    let wanted = subscribers
        .webhooks
        .iter()
        .filter(|w| w.wants(alert))
        .map(|w| &w.name);
    for name in wanted.chain(subscribers.sinks) {
        let body = posted.get_or_insert_with(|| webhook::body(alert, entry));
        sqlx::query(
            "INSERT INTO alert_outbox (subscriber, alert_id, version, body, created_at, state, attempts, next_at) \
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6)",
        )
        .bind(name)
        .bind(&alert.id)
        .bind(i64::from(alert.version))
        .bind(body.as_str())
        .bind(entry.at.millis())
        .bind(entry.at.millis())
        .execute(&mut *conn)
        .await?;
    }
    if let Some(origin) = subscribers.announce {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGES_CHANNEL)
            .bind(format!("{origin} {} {}", alert.version, alert.id))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The columns [`delivery`] reads, in its order.
const DELIVERY_SELECT: &str = "SELECT subscriber, alert_id, version, state, attempts, created_at, \
     next_at, last_error, body FROM alert_outbox";

fn delivery(row: &sqlx::any::AnyRow) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        subscriber: row.try_get(0)?,
        alert: row.try_get(1)?,
        version: u32::try_from(row.try_get::<i64, _>(2)?).unwrap_or(u32::MAX),
        state: row.try_get(3)?,
        attempts: u32::try_from(row.try_get::<i64, _>(4)?).unwrap_or(u32::MAX),
        created_at: Timestamp(row.try_get(5)?),
        next_at: Timestamp(row.try_get(6)?),
        last_error: row.try_get(7)?,
        body: row.try_get(8)?,
    })
}

fn severity_rank(s: Severity) -> i64 {
    match s {
        Severity::Minor => 0,
        Severity::Moderate => 1,
        Severity::Severe => 2,
        Severity::Extreme => 3,
    }
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

fn parse_cursor(c: &str) -> Option<(i64, &str)> {
    let (at, id) = c.split_once(':')?;
    Some((at.parse().ok()?, id))
}
