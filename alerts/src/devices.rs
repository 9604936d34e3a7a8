//! The device registry in the alert store's database: each device's
//! description (a [`DeviceSpec`] as JSON) in registration order, and every
//! change with who made it, when, and the description before and after.
//!
//! Writes are one transaction each, however many devices they touch, so an
//! import is applied whole or not at all; rows are written in multi-row
//! statements (an import of 100 000 devices is 400 statements, not 200 000).

use ioc_schemas::{DeviceSpec, Timestamp};
use sqlx::{Connection as _, Row as _};

use crate::store::{AlertStore, StoreError};

/// Rows per multi-row statement. sqlx's SQLite driver looks each
/// parameter up by name among all of the statement's (`sqlite3_bind_parameter_name`),
/// so binding costs the square of a statement's parameters: 500 rows a
/// statement took 4.1 s for 100 000 devices, 50 rows 1.2 s.
const ROWS_PER_STATEMENT: usize = 50;

/// One device's change, as the store records it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceChange {
    /// `create`, `update`, `retire`, `maintenance`, `import`, `adopt`, `seed`...
    pub action: String,
    /// The description before (`None` for a new device).
    pub before: Option<DeviceSpec>,
    /// The description after.
    pub after: DeviceSpec,
    /// Its place in registration order.
    pub ordinal: u32,
}

/// A recorded change of one device.
#[derive(Clone, Debug, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct DeviceChangeEntry {
    /// When (wall clock).
    pub at: Timestamp,
    /// Who: the token's name or the JWT's subject.
    pub actor: String,
    /// The device.
    pub device: String,
    /// What was done.
    pub action: String,
    /// The description before (absent for a new device).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<DeviceSpec>,
    /// The description after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<DeviceSpec>,
}

impl AlertStore {
    /// Every registered device, in registration order.
    pub async fn devices(&self) -> Result<Vec<DeviceSpec>, StoreError> {
        let rows = sqlx::query("SELECT spec FROM devices ORDER BY ordinal")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok(serde_json::from_str(&row.try_get::<String, _>(0)?)?))
            .collect()
    }

    /// Applies `changes` (made by `actor` at `at`) in one transaction.
    pub async fn record_devices(
        &self,
        changes: &[DeviceChange],
        actor: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let _w = self.write.lock().await;
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        for chunk in changes.chunks(ROWS_PER_STATEMENT) {
            let mut sql = String::from(
                "INSERT INTO devices (id, ordinal, spec, updated_at, updated_by) VALUES ",
            );
            push_rows(&mut sql, chunk.len(), 5);
            sql.push_str(
                " ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, \
                 updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            );
            let mut q = sqlx::query(&sql);
            for c in chunk {
                q = q
                    .bind(c.after.id.clone())
                    .bind(i64::from(c.ordinal))
                    .bind(serde_json::to_string(&c.after)?)
                    .bind(at.millis())
                    .bind(actor.to_owned());
            }
            q.execute(&mut *tx).await?;
            let mut sql = String::from(
                "INSERT INTO device_changes (at, actor, device, action, before_spec, after_spec) VALUES ",
            );
            push_rows(&mut sql, chunk.len(), 6);
            let mut q = sqlx::query(&sql);
            for c in chunk {
                let before = c.before.as_ref().map(serde_json::to_string).transpose()?;
                q = q
                    .bind(at.millis())
                    .bind(actor.to_owned())
                    .bind(c.after.id.clone())
                    .bind(c.action.clone())
                    .bind(before)
                    .bind(Some(serde_json::to_string(&c.after)?));
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The latest changes, newest first: of one device, or of all; before
    /// `before` when given.
    pub async fn device_changes(
        &self,
        device: Option<&str>,
        before: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<DeviceChangeEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, actor, device, action, before_spec, after_spec FROM device_changes \
             WHERE ($1 = '' OR device = $1) AND at < $2 ORDER BY at DESC LIMIT $3",
        )
        .bind(device.unwrap_or_default().to_owned())
        .bind(before.map_or(i64::MAX, |t| t.millis()))
        .bind(limit.clamp(1, 1000) as i64)
        .fetch_all(&self.pool)
        .await?;
        let spec = |text: Option<String>| -> Result<Option<DeviceSpec>, StoreError> {
            Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
        };
        rows.iter()
            .map(|row| {
                Ok(DeviceChangeEntry {
                    at: Timestamp(row.try_get(0)?),
                    actor: row.try_get(1)?,
                    device: row.try_get(2)?,
                    action: row.try_get(3)?,
                    before: spec(row.try_get(4)?)?,
                    after: spec(row.try_get(5)?)?,
                })
            })
            .collect()
    }
}

/// `($1, ..., $k), ($k+1, ...)`: `rows` rows of `columns` placeholders.
fn push_rows(sql: &mut String, rows: usize, columns: usize) {
    use std::fmt::Write as _;
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "${}", r * columns + c + 1);
        }
        sql.push(')');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge(id: &str, bd3: f64) -> DeviceSpec {
        DeviceSpec {
            id: id.into(),
            kind: ioc_schemas::DeviceKind::RiverGauge,
            name: format!("Trạm {id}"),
            pos: [103.9, 21.3],
            area: None,
            expected_interval_s: 600,
            thresholds: ioc_schemas::Thresholds {
                alarm_levels_m: Some([1.0, 2.0, bd3]),
                ..Default::default()
            },
            lifecycle: ioc_schemas::Lifecycle::Active,
            river: Some("Nậm La".into()),
            road: None,
            direction: None,
        }
    }

    #[tokio::test]
    async fn devices_keep_their_order_and_every_change_its_author() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let store = AlertStore::open(&url).await.unwrap();
        assert!(store.devices().await.unwrap().is_empty());
        let seed: Vec<DeviceChange> = (0..1200)
            .map(|i| DeviceChange {
                action: "seed".into(),
                before: None,
                after: gauge(&format!("g{i}"), 3.0),
                ordinal: i,
            })
            .collect();
        store
            .record_devices(&seed, "catalogue", Timestamp(1))
            .await
            .unwrap();
        let change = DeviceChange {
            action: "update".into(),
            before: Some(gauge("g7", 3.0)),
            after: gauge("g7", 2.5),
            ordinal: 7,
        };
        store
            .record_devices(std::slice::from_ref(&change), "admin", Timestamp(2))
            .await
            .unwrap();
        let devices = store.devices().await.unwrap();
        assert_eq!(devices.len(), 1200);
        assert_eq!(devices[7], gauge("g7", 2.5));
        assert_eq!(devices[1199].id, "g1199");
        let history = store.device_changes(Some("g7"), None, 10).await.unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].actor, "admin");
        assert_eq!(history[0].before, Some(gauge("g7", 3.0)));
        assert_eq!(history[0].after, Some(gauge("g7", 2.5)));
        assert_eq!(
            store.device_changes(None, None, 1000).await.unwrap().len(),
            1000
        );
    }
}
