//! The rules in force: loaded at start, reloaded when the file changes or
//! an admin asks (`POST /api/v1/rules/reload`).
//!
//! A reload validates the whole file first; an invalid file changes
//! nothing (the rules in force stay) and every problem is reported. The
//! engine keeps all device state and window contents across a reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ioc_devices::Registry;
use ioc_processing::{RuleErrors, RuleSet, RulesCell};
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
    registry: Arc<Registry>,
}

impl RulesSource {
    /// Rules from `file`, or the built-in demo rules.
    pub fn new(file: Option<PathBuf>, registry: Arc<Registry>) -> Self {
        RulesSource { file, registry }
    }

    /// Reads and validates the rules.
    pub fn load(&self) -> Result<RuleSet, RuleErrors> {
        match &self.file {
            Some(path) => RuleSet::load(path, &self.registry),
            None => RuleSet::parse(DEMO_RULES, &self.registry, &|name| match name {
                "watchlist.txt" => Ok((DEMO_WATCHLIST.to_owned(), None)),
                other => Err(format!(
                    "the built-in rules only know watchlist.txt, not {other}"
                )),
            }),
        }
    }

    /// Where the rules come from, for logs and answers.
    pub fn describe(&self) -> String {
        self.file.as_ref().map_or_else(
            || "built-in demo rules".to_owned(),
            |p| p.display().to_string(),
        )
    }
}

/// Reloads the rules into a running engine.
#[derive(Clone, Debug)]
pub struct Reloader {
    source: RulesSource,
    cell: Arc<RulesCell>,
}

impl Reloader {
    /// A reloader for the engine's rules.
    pub fn new(source: RulesSource, cell: Arc<RulesCell>) -> Self {
        Reloader { source, cell }
    }

    /// Loads, validates and puts the rules in force; a summary, or every problem.
    pub fn reload(&self) -> Result<serde_json::Value, Vec<String>> {
        match self.source.load() {
            Ok(set) => {
                let summary = summary(&set, &self.source.describe());
                let rules = set.rules.len();
                self.cell.replace(Arc::new(set));
                info!(source = %self.source.describe(), rules, "rules reloaded");
                metrics::counter!("ioc_rules_reloads_total", "result" => "ok").increment(1);
                Ok(summary)
            }
            Err(e) => {
                error!(source = %self.source.describe(), "rules not reloaded, the rules in force stay: {e}");
                metrics::counter!("ioc_rules_reloads_total", "result" => "invalid").increment(1);
                Err(e.0)
            }
        }
    }

    /// Reloads whenever one of the rules' files changes, until cancelled.
    pub async fn watch(self, every: Duration, cancel: CancellationToken) {
        if every.is_zero() || self.source.file.is_none() {
            return;
        }
        let stamp = |files: &[PathBuf]| -> Vec<Option<SystemTime>> {
            files
                .iter()
                .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
                .collect()
        };
        let mut files = self.cell.current().files.clone();
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
                files = self.cell.current().files.clone();
                seen = stamp(&files);
            }
        }
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
