//! `ioc deadletter list` and `ioc deadletter replay`: read the dead-letter
//! file back, summarise it, and re-submit letters after a fix (a device
//! added to the catalogue, a clock corrected) through a running processor's
//! `POST /api/v1/ingest`. Replayed letters take the same path as live data:
//! the ones still wrong are dead-lettered again, with their new reason, and
//! duplicates of readings already processed are caught.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use ioc_ingest::DeadLetter;
use ioc_ingest::http::IngestReport;
use ioc_schemas::RejectReason;

/// Which letters to take.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only this reason.
    pub reason: Option<RejectReason>,
    /// Only this source (`mqtt`, `kafka`, `http`).
    pub source: Option<String>,
    /// Only letters whose device (from the payload) is this one.
    pub device: Option<String>,
}

impl Filter {
    fn keeps(&self, d: &DeadLetter) -> bool {
        self.reason.is_none_or(|r| r == d.reason)
            && self.source.as_ref().is_none_or(|s| *s == d.source)
            && self.device.as_ref().is_none_or(|want| {
                serde_json::from_slice::<serde_json::Value>(&d.original())
                    .ok()
                    .and_then(|v| v.get("device")?.as_str().map(|s| s == want))
                    .unwrap_or(false)
            })
    }
}

/// The letters of `file` (and its rotations) that pass `filter`, oldest first.
pub fn load(file: &Path, filter: &Filter) -> anyhow::Result<Vec<DeadLetter>> {
    let (letters, problems) = ioc_ingest::deadletter::read_all(file)
        .with_context(|| format!("reading {}", file.display()))?;
    for p in problems {
        eprintln!("skipping an unreadable line: {p}");
    }
    Ok(letters.into_iter().filter(|d| filter.keeps(d)).collect())
}

/// Counts by source and reason, as printed by `ioc deadletter list`.
pub fn summary(letters: &[DeadLetter]) -> String {
    let mut counts: BTreeMap<(&str, RejectReason), usize> = BTreeMap::new();
    for d in letters {
        *counts.entry((&d.source, d.reason)).or_default() += 1;
    }
    let mut out = format!("{} dead letters\n", letters.len());
    for ((source, reason), n) in counts {
        out.push_str(&format!("  {n:>8}  {source:<6} {reason}\n"));
    }
    if let (Some(first), Some(last)) = (letters.first(), letters.last()) {
        out.push_str(&format!("from {} to {}\n", first.at, last.at));
    }
    out
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Letters sent.
    pub sent: usize,
    /// Accepted now.
    pub accepted: usize,
    /// Rejected again, by their new reason.
    pub rejected: BTreeMap<RejectReason, usize>,
}

/// Re-submits `letters` to the processor at `url` (e.g.
/// `http://127.0.0.1:8080`) with an ingest token, in batches of `batch`.
pub async fn replay(
    letters: &[DeadLetter],
    url: &str,
    token: &str,
    batch: usize,
) -> anyhow::Result<Replayed> {
    let client = reqwest::Client::new();
    let endpoint = format!("{}/api/v1/ingest", url.trim_end_matches('/'));
    let mut done = Replayed::default();
    // A payload with a line break cannot travel in NDJSON; it goes alone.
    let (alone, lines): (Vec<_>, Vec<_>) = letters
        .iter()
        .map(DeadLetter::original)
        .partition(|p| p.contains(&b'\n'));
    let mut requests: Vec<(Vec<u8>, &str)> = lines
        .chunks(batch.max(1))
        .map(|chunk| (chunk.join(&b'\n'), "application/x-ndjson"))
        .collect();
    requests.extend(alone.into_iter().map(|p| (p, "application/json")));
    for (body, content_type) in requests {
        let response = client
            .post(&endpoint)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {endpoint}"))?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "POST {endpoint}: {status}: {text}");
        let report: IngestReport =
            serde_json::from_str(&text).with_context(|| format!("unexpected answer: {text}"))?;
        done.sent += report.results.len();
        done.accepted += report.accepted;
        for r in report.results {
            if let Some(reason) = r.reason {
                *done.rejected.entry(reason).or_default() += 1;
            }
        }
    }
    Ok(done)
}
