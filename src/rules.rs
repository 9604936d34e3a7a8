//! The rules and zones in force: loaded at start, reloaded when a file
//! changes or an admin asks (`POST /api/v1/rules/reload`).
//!
//! A reload validates the rules file and the zones files first; an invalid
//! file changes nothing (the rules and zones in force stay) and every
//! problem is reported. The engine keeps all device state, window contents
//! and geofence visits across a reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ioc_devices::{Registry, RegistryCell, Zones};
use ioc_processing::{RuleErrors, RuleSet, RulesCell, ZonesCell};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// The demo rules built into the binary (a copy of `deploy/rules.toml`).
pub const DEMO_RULES: &str = include_str!("../deploy/rules.toml");
/// The demo watch list built into the binary (`deploy/watchlist.txt`).
pub const DEMO_WATCHLIST: &str = include_str!("../deploy/watchlist.txt");

/// Where rules come from.
#[derive(Clone, Debug)]
pub struct RulesSource {
    file: Option<PathBuf>,
    /// The registry rules are checked and compiled against.
    registry: Arc<RegistryCell>,
}

impl RulesSource {
    /// Rules from `file`, or the built-in demo rules, for `registry`.
    pub fn new(file: Option<PathBuf>, registry: Arc<Registry>) -> Self {
        Self::live(file, Arc::new(RegistryCell::new(registry)))
    }

    /// Rules from `file`, or the built-in demo rules, for the registry in
    /// force in `registry` whenever they are loaded.
    pub fn live(file: Option<PathBuf>, registry: Arc<RegistryCell>) -> Self {
        RulesSource { file, registry }
    }

    /// Reads and validates the rules.
    pub fn load(&self) -> Result<RuleSet, RuleErrors> {
        self.load_for(&self.registry.current())
    }

    /// Reads and validates the rules for `registry` (a registry about to
    /// be put in force: rules hold each device's registry levels).
    pub fn load_for(&self, registry: &Registry) -> Result<RuleSet, RuleErrors> {
        match &self.file {
            Some(path) => RuleSet::load(path, registry),
            None => self.parse_for(DEMO_RULES, registry),
        }
    }

    /// The text of the rules: the file's, or the built-in demo rules.
    pub fn text(&self) -> Result<String, String> {
        match &self.file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("{}: cannot read: {e}", path.display())),
            None => Ok(DEMO_RULES.to_owned()),
        }
    }

    /// Validates rules `text` as if it were the rules file (files it names
    /// are read beside it; the built-in rules know the demo watch list).
    pub fn parse(&self, text: &str) -> Result<RuleSet, RuleErrors> {
        self.parse_for(text, &self.registry.current())
    }

    fn parse_for(&self, text: &str, registry: &Registry) -> Result<RuleSet, RuleErrors> {
        match &self.file {
            Some(path) => RuleSet::parse_at(text, path, registry),
            None => RuleSet::parse(text, registry, &|name| match name {
                "watchlist.txt" => Ok((DEMO_WATCHLIST.to_owned(), None)),
                other => Err(format!(
                    "the built-in rules only know watchlist.txt, not {other}"
                )),
            }),
        }
    }

    /// Replaces the rules file with `text` once it is valid (written to a
    /// temporary file beside it, synced, renamed over it, the directory
    /// synced). Without a rules file there is nothing to write to.
    pub fn write(&self, text: &str) -> Result<(), Vec<String>> {
        use ioc_processing::durable::store::{sync_dir, write_synced};
        let Some(path) = &self.file else {
            return Err(vec![
                "this server runs the built-in demo rules: set rules.file to edit them".into(),
            ]);
        };
        self.parse(text).map_err(|e| e.0)?;
        let tmp = path.with_extension("toml.new");
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        write_synced(&tmp, text.as_bytes())
            .and_then(|()| {
                std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
            })
            .and_then(|()| dir.map_or(Ok(()), sync_dir))
            .map_err(|e| vec![format!("cannot write the rules file: {e}")])
    }

    /// Whether the rules come from a file (which can be replaced).
    pub fn is_file(&self) -> bool {
        self.file.is_some()
    }

    /// Where the rules come from, for logs and answers.
    pub fn describe(&self) -> String {
        self.file.as_ref().map_or_else(
            || "built-in demo rules".to_owned(),
            |p| p.display().to_string(),
        )
    }
}

/// Where zones come from: files, or the Sơn La demo zones built in.
#[derive(Clone, Debug)]
pub struct ZonesSource {
    files: Option<Vec<PathBuf>>,
}

impl ZonesSource {
    /// Zones from `files` (none at all when empty), or the built-in demo
    /// zones when `None`.
    pub fn new(files: Option<Vec<PathBuf>>) -> Self {
        ZonesSource { files }
    }

    /// Reads and validates every file as one set.
    pub fn load(&self) -> Result<Zones, Vec<String>> {
        let Some(files) = &self.files else {
            return Zones::from_geojson(ioc_devices::catalogue::SONLA_ZONES)
                .map_err(|e| e.problems);
        };
        let mut texts = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(f)
                .map_err(|e| vec![format!("{}: cannot read: {e}", f.display())])?;
            texts.push((f.display().to_string(), text));
        }
        let named: Vec<(&str, &str)> = texts
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        Zones::from_files(&named).map_err(|e| e.problems)
    }

    /// The files, for change detection.
    pub fn files(&self) -> &[PathBuf] {
        self.files.as_deref().unwrap_or_default()
    }
}

/// Reloads the rules and zones into a running engine.
#[derive(Clone, Debug)]
pub struct Reloader {
    source: RulesSource,
    cell: Arc<RulesCell>,
    zones: ZonesSource,
    zones_cell: Arc<ZonesCell>,
    /// One change of the rules or the registry at a time: rules are
    /// compiled for the registry they go in force with.
    changing: Arc<std::sync::Mutex<()>>,
}

impl Reloader {
    /// A reloader for the engine's rules and zones.
    pub fn new(
        source: RulesSource,
        cell: Arc<RulesCell>,
        zones: ZonesSource,
        zones_cell: Arc<ZonesCell>,
    ) -> Self {
        Reloader {
            source,
            cell,
            zones,
            zones_cell,
            changing: Arc::default(),
        }
    }

    /// Compiles the rules for a new registry; the returned commit puts
    /// them in force first, then the registry (the order the engine's
    /// workers read them in). Fails, changing nothing, when the rules do
    /// not validate against it. Should the rules be reloaded in between,
    /// the commit compiles them again.
    pub fn prepare_registry(
        &self,
        registry: Arc<Registry>,
    ) -> Result<ioc_dashboard_api::routes::registry::Commit, Vec<String>> {
        let compile = |source: &RulesSource, registry: &Registry| {
            source.load_for(registry).map_err(|e| {
                e.0.into_iter()
                    .map(|p| format!("the rules do not fit the new registry: {p}"))
                    .collect::<Vec<_>>()
            })
        };
        let seen = self.cell.generation();
        let set = compile(&self.source, &registry)?;
        let this = self.clone();
        Ok(Box::new(move || {
            let _one = this
                .changing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let set = if this.cell.generation() == seen {
                set
            } else {
                compile(&this.source, &registry)?
            };
            this.cell.replace(Arc::new(set));
            this.source.registry.replace(registry);
            Ok(())
        }))
    }

    /// Loads, validates and puts the rules and zones in force; a summary,
    /// or every problem (then nothing changes).
    pub fn reload(&self) -> Result<serde_json::Value, Vec<String>> {
        let _one = self
            .changing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (self.source.load(), self.zones.load()) {
            (Ok(set), Ok(zones)) => {
                let mut summary = summary(&set, &self.source.describe());
                summary["zones"] = json!(zones.all().len());
                summary["assets"] = json!(zones.assets().len());
                let rules = set.rules.len();
                let zone_count = zones.all().len();
                self.cell.replace(Arc::new(set));
                self.zones_cell.replace(Arc::new(zones));
                info!(source = %self.source.describe(), rules, zones = zone_count, "rules and zones reloaded");
                metrics::counter!("ioc_rules_reloads_total", "result" => "ok").increment(1);
                Ok(summary)
            }
            (rules, zones) => {
                let mut problems = rules.err().map(|e| e.0).unwrap_or_default();
                problems.extend(zones.err().unwrap_or_default());
                error!(source = %self.source.describe(), "rules and zones not reloaded, those in force stay: {}", problems.join("; "));
                metrics::counter!("ioc_rules_reloads_total", "result" => "invalid").increment(1);
                Err(problems)
            }
        }
    }

    /// Where the rules come from.
    pub fn source(&self) -> &RulesSource {
        &self.source
    }

    /// The rules in force.
    pub fn in_force(&self) -> Arc<ioc_processing::RuleSet> {
        self.cell.current()
    }

    /// Reloads whenever one of the rules' files changes, until cancelled.
    pub async fn watch(self, every: Duration, cancel: CancellationToken) {
        if every.is_zero() || (self.source.file.is_none() && self.zones.files().is_empty()) {
            return;
        }
        let stamp = |files: &[PathBuf]| -> Vec<Option<SystemTime>> {
            files
                .iter()
                .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
                .collect()
        };
        let watched = |r: &Reloader| {
            let mut files = r.cell.current().files.clone();
            files.extend(r.zones.files().iter().cloned());
            files
        };
        let mut files = watched(&self);
        let mut seen = stamp(&files);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let now = stamp(&files);
            if now == seen {
                continue;
            }
            seen = now;
            let reloader = self.clone();
            // File reads: off the async threads, like the API's reload.
            let reloaded = tokio::task::spawn_blocking(move || reloader.reload().is_ok()).await;
            if reloaded.unwrap_or(false) {
                files = watched(&self);
                seen = stamp(&files);
            }
        }
    }
}

impl ioc_dashboard_api::routes::registry::Enforce for Reloader {
    fn prepare(
        &self,
        registry: Arc<Registry>,
    ) -> Result<ioc_dashboard_api::routes::registry::Commit, Vec<String>> {
        self.prepare_registry(registry)
    }
}

/// What a rule set holds, for the API and logs.
pub fn summary(set: &RuleSet, source: &str) -> serde_json::Value {
    json!({
        "source": source,
        "rules": set.rules.iter().map(|r| json!({"id": &*r.id, "kind": r.logic.kind()})).collect::<Vec<_>>(),
        "maintenance_windows": set.maintenance.len(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn zone(id: &str, x: f64) -> String {
        format!(
            r#"{{"type":"Feature","properties":{{"id":"{id}","name":"{id}","kind":"restricted"}},
               "geometry":{{"type":"Polygon","coordinates":[[[{x},21.0],[{x}.01,21.0],[{x}.01,21.01],[{x},21.01],[{x},21.0]]]}}}}"#
        )
    }

    /// Zones reload with the rules; a broken zones file changes nothing.
    #[test]
    fn zones_reload_and_a_broken_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zones.geojson");
        let write = |features: &[String]| {
            let text = format!(
                r#"{{"type":"FeatureCollection","features":[{}]}}"#,
                features.join(",")
            );
            std::fs::write(&path, text).unwrap();
        };
        write(&[zone("a", 104.0)]);
        let registry = Registry::sonla_demo();
        let source = RulesSource::new(None, registry);
        let zones = ZonesSource::new(Some(vec![path.clone()]));
        let rules_cell = Arc::new(RulesCell::new(Arc::new(source.load().unwrap())));
        let zones_cell = Arc::new(ZonesCell::new(Arc::new(zones.load().unwrap())));
        let reloader = Reloader::new(source, rules_cell, zones, zones_cell.clone());
        assert_eq!(zones_cell.current().all().len(), 1);

        write(&[zone("a", 104.0), zone("b", 105.0)]);
        let summary = reloader.reload().unwrap();
        assert_eq!(summary["zones"], 2);
        assert!(zones_cell.current().get("b").is_some());

        // An open ring: refused with the feature named, the two zones stay.
        let open = zone("c", 106.0).replace(",[106,21.0]]]", "]]");
        write(&[zone("a", 104.0), open]);
        let problems = reloader.reload().unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("zone c: exterior ring is not closed")),
            "{problems:?}"
        );
        assert_eq!(zones_cell.current().all().len(), 2);
    }
}
