//! The device registry, live: list, register, change, retire and put in
//! maintenance; import and export as CSV or GeoJSON; adopt devices that
//! send readings but are not registered.
//!
//! A change is checked whole (every problem of every device, naming the
//! field), stored with who made it and the device before and after (one
//! transaction, however many devices), then put in force: the rules
//! compiled for the new registry first, then the registry, which ingest
//! reads per message and the engine's workers at their next step (within
//! a second); the live feed sends the changed devices' views. No other
//! device loses anything: indices stay, nothing restarts.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use ioc_alerts::{AlertStore, DeviceChange, DeviceChangeEntry};
use ioc_devices::{DeviceIndex, Problem, Registry, RegistryCell};
use ioc_schemas::{AreaRef, DeviceKind, DeviceSpec, Lifecycle, Thresholds, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::hub::LiveHub;

/// The largest import accepted, bytes (100 000 devices of CSV take about
/// 15 MB).
pub const MAX_IMPORT_BYTES: usize = 64 << 20;

/// Puts a registry prepared by [`Enforce::prepare`] in force, with the
/// rules compiled for it; every problem otherwise.
pub type Commit = Box<dyn FnOnce() -> Result<(), Vec<String>> + Send>;

/// Puts registries in force: the rules compiled for them, then the
/// registry (see `ioc::rules::Reloader`).
pub trait Enforce: Send + Sync {
    /// Compiles the rules for `registry` (nothing changes yet): what puts
    /// both in force, or every problem.
    fn prepare(&self, registry: Arc<Registry>) -> Result<Commit, Vec<String>>;
}

/// What the registry routes work with.
pub struct RegistryAdmin {
    /// The registry in force.
    pub cell: Arc<RegistryCell>,
    /// Where the registry is kept.
    pub store: Arc<AlertStore>,
    /// The live hub, told of every change.
    pub hub: Arc<LiveHub>,
    /// Puts a new registry in force.
    pub enforce: Arc<dyn Enforce>,
    /// Ingest: the unregistered devices, and replay of an adopted one's
    /// messages; taken away at shutdown ([`RegistryAdmin::close`]), as it
    /// holds the engine's input open.
    pub ingest: std::sync::Mutex<Option<ioc_ingest::pipeline::Ingestor>>,
    /// One change at a time.
    pub write: tokio::sync::Mutex<()>,
    /// Why the registry cannot change while this process runs, if it
    /// cannot (a process of a cluster: the others would not follow).
    pub fixed: Option<String>,
}

/// What a change did.
#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
pub struct Applied {
    /// Devices registered by it.
    pub added: usize,
    /// Devices it changed.
    pub changed: usize,
    /// Devices given as they already were.
    pub unchanged: usize,
}

/// Why a change was not made.
pub enum Refused {
    /// Problems with the devices given; nothing changed.
    Invalid(Vec<Problem>),
    /// The rules do not fit the new registry; nothing changed.
    Rules(Vec<String>),
    /// The store failed; nothing changed.
    Store(String),
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> ApiError {
        match r {
            Refused::Invalid(p) => ApiError::Invalid(
                "the devices are not valid; nothing changed".into(),
                p.iter().map(ToString::to_string).collect(),
            ),
            Refused::Rules(p) => ApiError::Invalid(
                "the rules in force do not fit the changed registry; nothing changed".into(),
                p,
            ),
            Refused::Store(e) => ApiError::Unavailable(e),
        }
    }
}

impl RegistryAdmin {
    /// The registry in the store, seeded from `catalogue` on first start;
    /// devices of the catalogue the store does not have yet are added.
    /// The store's devices win over the catalogue's for ids in both.
    pub async fn load(
        store: &AlertStore,
        catalogue: Arc<Registry>,
    ) -> Result<Arc<Registry>, String> {
        let listed = |p: Vec<Problem>| {
            p.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let stored = store.devices().await.map_err(|e| e.to_string())?;
        let (action, stored, next) = if stored.is_empty() {
            (
                "seed",
                Registry::empty(catalogue.shared_areas().clone()),
                catalogue.clone(),
            )
        } else {
            let stored =
                Registry::from_specs(stored, catalogue.shared_areas().clone()).map_err(|p| {
                    format!(
                        "the registry in the store does not fit the areas: {}",
                        listed(p)
                    )
                })?;
            let missing: Vec<DeviceSpec> = (0..catalogue.devices().len() as DeviceIndex)
                .filter(|&i| stored.lookup(&catalogue.device(i).id).is_none())
                .map(|i| catalogue.spec(i))
                .collect();
            let next = stored
                .with(missing)
                .map_err(|p| format!("the catalogue's new devices do not fit: {}", listed(p)))?;
            ("catalogue", stored, Arc::new(next))
        };
        let changes: Vec<DeviceChange> = (stored.devices().len()..next.devices().len())
            .map(|i| DeviceChange {
                action: action.into(),
                before: None,
                after: next.spec(i as DeviceIndex),
                ordinal: i as DeviceIndex,
            })
            .collect();
        if !changes.is_empty() {
            store
                .record_devices(&changes, "catalogue", Timestamp::now())
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(
                devices = changes.len(),
                action,
                "registry stored from the catalogue"
            );
        }
        Ok(next)
    }

    /// Registers `specs` (new ids added, known ones replaced) for `actor`.
    pub async fn apply(
        &self,
        actor: &str,
        action: &str,
        specs: Vec<DeviceSpec>,
    ) -> Result<Applied, Refused> {
        self.apply_prepared(actor, action, specs, None).await
    }

    /// [`RegistryAdmin::apply`], with the registry `specs` make of `base`
    /// already worked out (an import checks it first): used when `base` is
    /// still the registry in force.
    async fn apply_prepared(
        &self,
        actor: &str,
        action: &str,
        specs: Vec<DeviceSpec>,
        prepared: Option<(Arc<Registry>, Registry)>,
    ) -> Result<Applied, Refused> {
        if let Some(why) = &self.fixed {
            return Err(Refused::Store(why.clone()));
        }
        let _one = self.write.lock().await;
        let began = std::time::Instant::now();
        let current = self.cell.current();
        let mut applied = Applied::default();
        let mut changes = Vec::new();
        let mut fresh = Vec::new();
        for spec in &specs {
            let before = current.lookup(&spec.id).map(|i| current.spec(i));
            match &before {
                Some(b) if b == spec => applied.unchanged += 1,
                Some(_) => applied.changed += 1,
                None => applied.added += 1,
            }
            if before.as_ref() != Some(spec) {
                fresh.push(spec.clone());
                changes.push((before, spec.clone()));
            }
        }
        let next = match prepared {
            Some((base, next)) if Arc::ptr_eq(&base, &current) => Arc::new(next),
            _ => Arc::new(current.with(specs).map_err(Refused::Invalid)?),
        };
        if changes.is_empty() {
            return Ok(applied);
        }
        // Blocking (the rules file is read and compiled): off the async threads.
        let enforce = self.enforce.clone();
        let prepared = next.clone();
        let commit = tokio::task::spawn_blocking(move || enforce.prepare(prepared))
            .await
            .map_err(|e| Refused::Store(e.to_string()))?
            .map_err(Refused::Rules)?;
        let changes: Vec<DeviceChange> = changes
            .into_iter()
            .map(|(before, after)| DeviceChange {
                action: action.into(),
                ordinal: next.lookup(&after.id).unwrap_or_default(),
                before,
                after,
            })
            .collect();
        let checked = began.elapsed();
        self.store
            .record_devices(&changes, actor, Timestamp::now())
            .await
            .map_err(|e| Refused::Store(format!("the registry could not be stored: {e}")))?;
        let stored = began.elapsed();
        let result = tokio::task::spawn_blocking(commit)
            .await
            .map_err(|e| Refused::Store(e.to_string()))?;
        if let Err(problems) = result {
            // Checked a moment ago: the rules file changed in between.
            tracing::error!(
                "registry change stored but not in force (the rules file changed meanwhile): {}; \
                 it takes effect with the next valid rules reload",
                problems.join("; ")
            );
            return Err(Refused::Rules(problems));
        }
        let enforced = began.elapsed();
        self.hub.refresh_registry();
        tracing::info!(
            actor,
            action,
            added = applied.added,
            changed = applied.changed,
            checked_ms = checked.as_millis() as u64,
            stored_ms = (stored - checked).as_millis() as u64,
            in_force_ms = (enforced - stored).as_millis() as u64,
            screens_ms = (began.elapsed() - enforced).as_millis() as u64,
            "registry changed"
        );
        metrics::counter!("ioc_registry_changes_total", "action" => action.to_owned())
            .increment(changes.len() as u64);
        Ok(applied)
    }
}

impl RegistryAdmin {
    /// Lets go of ingest (adoption answers 503 from now on), so that the
    /// engine's input can close.
    pub fn close(&self) {
        self.ingest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }

    fn ingestor(&self) -> Option<ioc_ingest::pipeline::Ingestor> {
        self.ingest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

fn admin(app: &AppState) -> Result<Arc<RegistryAdmin>, ApiError> {
    app.registry
        .clone()
        .ok_or_else(|| ApiError::NotFound("this server has no device registry to manage".into()))
}

/// A registered device: as it was registered, with the areas its
/// position (or area override) resolves to.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct RegisteredDevice {
    /// The device as registered.
    #[serde(flatten)]
    pub spec: DeviceSpec,
    /// Its administrative areas, smallest first.
    pub areas: Vec<AreaRef>,
}

/// A page of the registry.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct RegistryPage {
    /// How many devices match.
    pub total: usize,
    /// The devices of this page, in registration order.
    pub devices: Vec<RegisteredDevice>,
}

/// `GET /api/v1/registry/devices` query.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryQuery {
    /// Text in the id or the name (case and diacritics ignored).
    pub q: Option<String>,
    /// Only this kind.
    pub kind: Option<DeviceKind>,
    /// Only devices in this lifecycle state: `active`, `maintenance`, `retired`.
    pub lifecycle: Option<String>,
    /// Only devices in this administrative area (id).
    pub area: Option<String>,
    /// Skip this many matches.
    pub offset: Option<usize>,
    /// At most this many (default 200, at most 5 000).
    pub limit: Option<usize>,
}

fn fold(text: &str) -> String {
    deunicode::deunicode(text).to_lowercase()
}

fn entry(registry: &Registry, i: DeviceIndex) -> RegisteredDevice {
    RegisteredDevice {
        spec: registry.spec(i),
        areas: registry.device(i).area.clone(),
    }
}

/// `GET /api/v1/registry/devices` (viewer): the registry, filtered.
pub async fn list(
    State(app): State<AppState>,
    Query(q): Query<RegistryQuery>,
) -> Result<Json<RegistryPage>, ApiError> {
    let registry = app.hub.registry();
    let needle = q.q.as_deref().map(fold).filter(|n| !n.is_empty());
    let matches = |d: &ioc_schemas::DeviceInfo| {
        q.kind.is_none_or(|k| d.kind == k)
            && q.lifecycle
                .as_deref()
                .is_none_or(|l| d.lifecycle.as_str() == l)
            && q.area
                .as_deref()
                .is_none_or(|a| d.area.iter().any(|r| &*r.id == a))
            && needle
                .as_deref()
                .is_none_or(|n| fold(&d.id).contains(n) || fold(&d.name).contains(n))
    };
    let all: Vec<DeviceIndex> = (0..registry.devices().len() as DeviceIndex)
        .filter(|&i| matches(registry.device(i)))
        .collect();
    let limit = q.limit.unwrap_or(200).clamp(1, 5000);
    let devices = all
        .iter()
        .skip(q.offset.unwrap_or(0))
        .take(limit)
        .map(|&i| entry(&registry, i))
        .collect();
    Ok(Json(RegistryPage {
        total: all.len(),
        devices,
    }))
}

/// One device of the registry with its recorded changes.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct RegistryDetail {
    /// The device.
    #[serde(flatten)]
    pub device: RegisteredDevice,
    /// Its changes, newest first (at most 100).
    pub changes: Vec<DeviceChangeEntry>,
}

/// `GET /api/v1/registry/devices/{id}` (viewer).
pub async fn detail(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RegistryDetail>, ApiError> {
    let admin = admin(&app)?;
    let registry = admin.cell.current();
    let i = registry
        .lookup(&id)
        .ok_or_else(|| ApiError::NotFound(format!("no device {id:?}")))?;
    let changes = admin
        .store
        .device_changes(Some(&id), None, 100)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(RegistryDetail {
        device: entry(&registry, i),
        changes,
    }))
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], expected: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("body: {e}; expected {expected}")))
}

/// `POST /api/v1/registry/devices` (admin): registers a new device.
pub async fn create(
    State(app): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let admin = admin(&app)?;
    let spec: DeviceSpec = json_body(&body, "a device")?;
    if admin.cell.current().lookup(&spec.id).is_some() {
        return Err(ApiError::Conflict(
            ErrorCode::DeviceExists,
            format!(
                "device {:?} is already registered; PUT /api/v1/registry/devices/{{id}} changes it",
                spec.id
            ),
        ));
    }
    let id = spec.id.clone();
    admin.apply(&caller.name, "create", vec![spec]).await?;
    let registry = admin.cell.current();
    let i = registry.lookup(&id).unwrap_or_default();
    Ok((axum::http::StatusCode::CREATED, Json(entry(&registry, i))).into_response())
}

/// `PUT /api/v1/registry/devices/{id}` (admin): changes a device.
pub async fn update(
    State(app): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<RegisteredDevice>, ApiError> {
    let admin = admin(&app)?;
    let spec: DeviceSpec = json_body(&body, "a device")?;
    if spec.id != id {
        return Err(ApiError::BadRequest(format!(
            "the body's id {:?} is not the path's {id:?} (an id cannot change)",
            spec.id
        )));
    }
    if admin.cell.current().lookup(&id).is_none() {
        return Err(ApiError::NotFound(format!(
            "no device {id:?}; POST /api/v1/registry/devices registers it"
        )));
    }
    admin.apply(&caller.name, "update", vec![spec]).await?;
    let registry = admin.cell.current();
    let i = registry.lookup(&id).unwrap_or_default();
    Ok(Json(entry(&registry, i)))
}

/// `POST .../retire` and `.../maintenance` bodies.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LifecycleBody {
    /// Why (kept in the registry and shown to operators).
    #[serde(default)]
    pub reason: String,
    /// Maintenance: when it ends (event time); without it, until the
    /// device is put back in service (`DELETE .../maintenance`).
    pub until: Option<Timestamp>,
}

async fn set_lifecycle(
    app: &AppState,
    caller: &Caller,
    id: &str,
    action: &str,
    lifecycle: impl FnOnce(&Lifecycle) -> Result<Lifecycle, ApiError>,
) -> Result<Json<RegisteredDevice>, ApiError> {
    let admin = admin(app)?;
    let registry = admin.cell.current();
    let i = registry
        .lookup(id)
        .ok_or_else(|| ApiError::NotFound(format!("no device {id:?}")))?;
    let mut spec = registry.spec(i);
    spec.lifecycle = lifecycle(&spec.lifecycle)?;
    admin.apply(&caller.name, action, vec![spec]).await?;
    let registry = admin.cell.current();
    Ok(Json(entry(&registry, i)))
}

fn lifecycle_body(body: &[u8]) -> Result<LifecycleBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(LifecycleBody::default());
    }
    json_body(body, r#"{"reason": "…", "until": "…"} or nothing"#)
}

/// `POST /api/v1/registry/devices/{id}/retire` (admin): its readings are
/// refused from now on (`retired_device`); its history and alerts stay.
pub async fn retire(
    State(app): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<RegisteredDevice>, ApiError> {
    let b = lifecycle_body(&body)?;
    set_lifecycle(&app, &caller, &id, "retire", |_| {
        Ok(Lifecycle::Retired {
            at: Timestamp::now(),
            reason: b.reason,
        })
    })
    .await
}

/// `POST /api/v1/registry/devices/{id}/maintenance` (operator): its rules
/// raise nothing and it is not reported silent until `until`.
pub async fn maintenance(
    State(app): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<RegisteredDevice>, ApiError> {
    let b = lifecycle_body(&body)?;
    set_lifecycle(&app, &caller, &id, "maintenance", |now| {
        if now.is_retired() {
            return Err(ApiError::Conflict(
                ErrorCode::DeviceExists,
                format!("device {id:?} is retired"),
            ));
        }
        Ok(Lifecycle::Maintenance {
            until: b.until,
            reason: b.reason,
        })
    })
    .await
}

/// `DELETE /api/v1/registry/devices/{id}/maintenance` (operator): back in
/// service.
pub async fn end_maintenance(
    State(app): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<RegisteredDevice>, ApiError> {
    set_lifecycle(&app, &caller, &id, "in_service", |now| match now {
        Lifecycle::Maintenance { .. } | Lifecycle::Active => Ok(Lifecycle::Active),
        Lifecycle::Retired { .. } => Err(ApiError::Conflict(
            ErrorCode::DeviceExists,
            format!("device {id:?} is retired; PUT the device to bring it back"),
        )),
    })
    .await
}

/// `POST /api/v1/registry/import` query.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// `csv` or `geojson` (default: from the Content-Type, else `csv`).
    pub format: Option<String>,
    /// `partial`: apply the valid devices and report the others; default:
    /// nothing is applied unless every device is valid.
    pub mode: Option<String>,
}

/// What an import did, or would have done.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ImportReport {
    /// `csv` or `geojson`.
    pub format: String,
    /// Devices (rows or features) read.
    pub rows: usize,
    /// Whether anything was applied.
    pub applied: bool,
    /// What was applied.
    #[serde(flatten)]
    pub counts: Applied,
    /// Every problem, by row (from 1) and field.
    pub problems: Vec<ImportProblem>,
}

/// One problem of an import.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ImportProblem {
    /// The row (CSV data row) or feature, from 1; 0 for the whole file.
    pub row: usize,
    /// The device's id, when it has one.
    pub id: String,
    /// The field.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl From<&Problem> for ImportProblem {
    fn from(p: &Problem) -> Self {
        ImportProblem {
            row: p.row,
            id: p.id.clone(),
            field: p.field.clone(),
            problem: p.problem.clone(),
        }
    }
}

/// `POST /api/v1/registry/import` (admin): CSV or GeoJSON, at most
/// [`MAX_IMPORT_BYTES`].
pub async fn import(
    State(app): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<ImportQuery>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let admin = admin(&app)?;
    let partial = match q.mode.as_deref() {
        None | Some("all") => false,
        Some("partial") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "mode {other:?}: expected all (the default) or partial"
            )));
        }
    };
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let format = match q.format.as_deref() {
        Some(f) => f.to_owned(),
        None if content_type.contains("json") => "geojson".into(),
        None => "csv".into(),
    };
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::BadRequest(format!("the file is not UTF-8 text: {e}")))?;
    let parsed = tokio::task::spawn_blocking({
        let text = text.to_owned();
        let format = format.clone();
        move || match format.as_str() {
            "csv" => ioc_devices::exchange::specs_from_csv(&text).map_err(|p| vec![p]),
            "geojson" => ioc_devices::registry::specs_from_geojson(&text).map_err(|e| {
                e.problems
                    .into_iter()
                    .map(|problem| Problem {
                        row: 0,
                        id: String::new(),
                        field: "file".into(),
                        problem,
                    })
                    .collect()
            }),
            other => Err(vec![Problem {
                row: 0,
                id: String::new(),
                field: "format".into(),
                problem: format!("{other:?}: expected csv or geojson"),
            }]),
        }
    })
    .await
    .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let report = |rows, applied, counts, problems: &[Problem]| ImportReport {
        format: format.clone(),
        rows,
        applied,
        counts,
        problems: problems.iter().map(ImportProblem::from).collect(),
    };
    let (specs, mut problems) = match parsed {
        Ok(read) => read,
        Err(problems) => {
            let r = report(0, false, Applied::default(), &problems);
            return Ok((axum::http::StatusCode::UNPROCESSABLE_ENTITY, Json(r)).into_response());
        }
    };
    let rows = specs.len() + problems.len();
    // The registry's own checks, with the file's rows.
    let current = admin.cell.current();
    let rows_of: Vec<usize> = specs.iter().map(|(row, _)| *row).collect();
    let specs: Vec<DeviceSpec> = specs.into_iter().map(|(_, s)| s).collect();
    let checked = {
        let (current, specs) = (current.clone(), specs.clone());
        tokio::task::spawn_blocking(move || current.with(specs))
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?
    };
    let prepared = match checked {
        Ok(next) => Some((current, next)),
        Err(more) => {
            problems.extend(more.into_iter().map(|mut p| {
                p.row = rows_of
                    .get(p.row.saturating_sub(1))
                    .copied()
                    .unwrap_or(p.row);
                p
            }));
            None
        }
    };
    problems.sort_by_key(|p| p.row);
    let (valid, prepared) = if problems.is_empty() {
        (specs, prepared)
    } else if partial {
        let valid = specs
            .into_iter()
            .zip(&rows_of)
            .filter(|(_, row)| !problems.iter().any(|p| p.row == **row))
            .map(|(s, _)| s)
            .collect();
        (valid, None)
    } else {
        let r = report(rows, false, Applied::default(), &problems);
        return Ok((axum::http::StatusCode::UNPROCESSABLE_ENTITY, Json(r)).into_response());
    };
    let counts = admin
        .apply_prepared(&caller.name, "import", valid, prepared)
        .await?;
    Ok(Json(report(rows, true, counts, &problems)).into_response())
}

/// `GET /api/v1/registry/export` query.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `csv` (default) or `geojson`.
    pub format: Option<String>,
}

/// `GET /api/v1/registry/export` (viewer): the whole registry as a file
/// that imports again unchanged.
pub async fn export(
    State(app): State<AppState>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let registry = app.hub.registry();
    let (media, name, text) = match q.format.as_deref().unwrap_or("csv") {
        "csv" => (
            "text/csv; charset=utf-8",
            "devices.csv",
            tokio::task::spawn_blocking(move || ioc_devices::exchange::to_csv(&registry)).await,
        ),
        "geojson" => (
            "application/geo+json",
            "devices.geojson",
            tokio::task::spawn_blocking(move || ioc_devices::exchange::to_geojson(&registry)).await,
        ),
        other => {
            return Err(ApiError::BadRequest(format!(
                "format {other:?}: expected csv or geojson"
            )));
        }
    };
    let text = text.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, media.to_owned()),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        text,
    )
        .into_response())
}

/// `GET /api/v1/registry/unregistered` (viewer): devices that sent
/// readings but are not registered, most recently heard first.
pub async fn unregistered(
    State(app): State<AppState>,
) -> Result<Json<Vec<ioc_ingest::unregistered::UnregisteredDevice>>, ApiError> {
    let admin = admin(&app)?;
    Ok(Json(
        admin
            .ingestor()
            .map(|i| i.unregistered().list())
            .unwrap_or_default(),
    ))
}

/// `POST /api/v1/registry/unregistered/{id}/adopt` body: what the
/// registry needs and the readings did not say.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdoptBody {
    /// The kind; default: the one its MQTT topic names.
    pub kind: Option<DeviceKind>,
    /// Its name; default: its id.
    pub name: Option<String>,
    /// Its position; default: the last one it sent.
    pub pos: Option<[f64; 2]>,
    /// Area override.
    pub area: Option<String>,
    /// How often it is expected to report, s (default 600).
    pub expected_interval_s: Option<u32>,
    /// Its thresholds (a river gauge needs its BĐ levels).
    #[serde(default)]
    pub thresholds: Thresholds,
    /// River.
    pub river: Option<String>,
    /// Road.
    pub road: Option<String>,
    /// Direction.
    pub direction: Option<String>,
}

/// What an adoption did.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Adopted {
    /// The device as registered.
    pub device: RegisteredDevice,
    /// Its kept messages accepted on replay.
    pub replayed: u64,
    /// Its kept messages refused on replay, by reason (e.g. `late`: older
    /// than the watermark minus the allowed lateness).
    pub rejected: BTreeMap<String, u64>,
}

/// `POST /api/v1/registry/unregistered/{id}/adopt` (admin): registers the
/// device and replays its kept messages.
pub async fn adopt(
    State(app): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Adopted>, ApiError> {
    let admin = admin(&app)?;
    let Some(ingest) = admin.ingestor() else {
        return Err(ApiError::Unavailable("ingest is stopped".into()));
    };
    let Some(seen) = ingest.unregistered().get(&id) else {
        return Err(ApiError::NotFound(format!(
            "no unregistered device {id:?} was heard since the start"
        )));
    };
    let b: AdoptBody = if body.iter().all(u8::is_ascii_whitespace) {
        AdoptBody::default()
    } else {
        json_body(&body, "the device's missing fields")?
    };
    let mut problems = Vec::new();
    let kind = b.kind.or(seen.kind);
    if kind.is_none() {
        problems.push("kind: its topic named no kind; give one".to_owned());
    }
    let pos = b.pos.or(seen.last_pos);
    if pos.is_none() {
        problems.push("pos: it sent no position; give one".to_owned());
    }
    let (Some(kind), Some(pos)) = (kind, pos) else {
        return Err(ApiError::Invalid(
            "the device cannot be registered yet".into(),
            problems,
        ));
    };
    let spec = DeviceSpec {
        id: id.clone(),
        kind,
        name: b.name.unwrap_or_else(|| id.clone()),
        pos,
        area: b.area,
        expected_interval_s: b.expected_interval_s.unwrap_or(600),
        thresholds: b.thresholds,
        lifecycle: Lifecycle::Active,
        river: b.river,
        road: b.road,
        direction: b.direction,
    };
    admin.apply(&caller.name, "adopt", vec![spec]).await?;
    let (replayed, rejected) = ingest
        .replay_adopted(&id)
        .await
        .map_err(|_| ApiError::Unavailable("the engine is shutting down".into()))?;
    let registry = admin.cell.current();
    let i = registry.lookup(&id).unwrap_or_default();
    Ok(Json(Adopted {
        device: entry(&registry, i),
        replayed,
        rejected: rejected
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    }))
}

/// `GET /api/v1/registry/changes` query.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    /// Only this device's.
    pub device: Option<String>,
    /// Only changes before this time.
    pub before: Option<Timestamp>,
    /// At most this many (default 100, at most 1 000).
    pub limit: Option<usize>,
}

/// `GET /api/v1/registry/changes` (admin): who changed what, newest first.
pub async fn changes(
    State(app): State<AppState>,
    Query(q): Query<ChangesQuery>,
) -> Result<Json<Vec<DeviceChangeEntry>>, ApiError> {
    let admin = admin(&app)?;
    admin
        .store
        .device_changes(q.device.as_deref(), q.before, q.limit.unwrap_or(100))
        .await
        .map(Json)
        .map_err(|e| ApiError::Unavailable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First start: the catalogue is stored. Later starts: the store is the
    /// registry; a device the catalogue gained is added, and a device both
    /// have keeps the store's description.
    #[tokio::test]
    async fn the_store_is_seeded_once_and_then_wins() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let store = AlertStore::open(&url).await.unwrap();
        let demo = Registry::sonla_demo();
        let first = RegistryAdmin::load(&store, demo.clone()).await.unwrap();
        assert_eq!(first.devices().len(), demo.devices().len());
        assert_eq!(store.devices().await.unwrap().len(), demo.devices().len());

        let mut changed = demo.spec(0);
        changed.name = "đổi trong tệp".into();
        let mut extra = demo.spec(1);
        extra.id = "rain-extra".into();
        let catalogue = Arc::new(demo.with(vec![changed, extra]).unwrap());
        let second = RegistryAdmin::load(&store, catalogue).await.unwrap();
        assert_eq!(second.devices().len(), demo.devices().len() + 1);
        assert_eq!(second.device(0).name, demo.device(0).name, "the store wins");
        assert!(second.get("rain-extra").is_some());
        let history = store
            .device_changes(Some("rain-extra"), None, 10)
            .await
            .unwrap();
        assert_eq!(history[0].action, "catalogue");
    }
}
