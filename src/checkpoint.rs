//! `ioc checkpoint list|inspect`: what the engine's durable state holds on
//! disk, so an operator can see what a restart will restore and replay.

use std::fmt::Write as _;
use std::path::Path;

use ioc_processing::durable::journal;
use ioc_processing::durable::store::{Listed, Store};
use ioc_schemas::Timestamp;

fn age(created_ms: i64) -> String {
    let s = ((Timestamp::now().millis() - created_ms) / 1000).max(0);
    match s {
        0..120 => format!("{s} s ago"),
        120..7200 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Entries of an operator in a checkpoint, over every partition.
fn entries(l: &Listed, operator: &str) -> u64 {
    l.manifest.as_ref().map_or(0, |m| {
        m.parts
            .iter()
            .filter(|p| p.operator == operator)
            .flat_map(|p| &p.partitions)
            .map(|(_, n)| u64::from(*n))
            .sum()
    })
}

/// The checkpoints and the journal under `dir`, one line each.
pub fn list(dir: &Path) -> anyhow::Result<String> {
    let store = Store::open(&dir.join("checkpoints")).map_err(anyhow::Error::msg)?;
    let listed = store.list().map_err(anyhow::Error::msg)?;
    let mut out = String::new();
    writeln!(out, "checkpoints in {}:", store.dir().display())?;
    if listed.is_empty() {
        writeln!(
            out,
            "  none: a start begins empty and replays the whole journal"
        )?;
    }
    let newest_ok = listed
        .iter()
        .rev()
        .find(|l| l.manifest.is_ok())
        .map(|l| l.epoch);
    for l in &listed {
        match &l.manifest {
            Ok(m) => writeln!(
                out,
                "  {:>10}  {}  {:>10}  workers {}  devices {}  geo entries {}  watermark {}{}",
                l.epoch,
                age(m.created_ms),
                mib(l.bytes),
                m.workers,
                entries(l, "device"),
                entries(l, "geo"),
                Timestamp(m.watermark_ms),
                if Some(l.epoch) == newest_ok {
                    "  <- a restart restores this one"
                } else {
                    ""
                },
            )?,
            Err(e) => writeln!(out, "  {:>10}  not usable: {e}", l.epoch)?,
        }
    }
    let segments = journal::segments(&dir.join("journal"))?;
    let from = newest_ok.unwrap_or(0);
    let (mut replay, mut replay_bytes, mut kept_bytes) = (0, 0, 0);
    for s in &segments {
        let bytes = s.path.metadata().map(|m| m.len()).unwrap_or(0);
        kept_bytes += bytes;
        if s.segment > from {
            replay += 1;
            replay_bytes += bytes;
        }
    }
    writeln!(
        out,
        "journal in {}: {} segments, {}; a restart replays {replay} of them ({})",
        dir.join("journal").display(),
        segments.len(),
        mib(kept_bytes),
        mib(replay_bytes),
    )?;
    Ok(out)
}

/// One checkpoint (the newest usable one when `epoch` is `None`): its
/// manifest, each part's size and checksum (verified), and the entries of
/// each key partition.
pub fn inspect(dir: &Path, epoch: Option<u64>) -> anyhow::Result<String> {
    let store = Store::open(&dir.join("checkpoints")).map_err(anyhow::Error::msg)?;
    let listed = store.list().map_err(anyhow::Error::msg)?;
    let chosen = match epoch {
        Some(e) => listed.iter().find(|l| l.epoch == e),
        None => listed.iter().rev().find(|l| l.manifest.is_ok()),
    }
    .ok_or_else(|| anyhow::anyhow!("no such checkpoint in {}", store.dir().display()))?;
    let m = chosen
        .manifest
        .as_ref()
        .map_err(|e| anyhow::anyhow!("checkpoint {}: {e}", chosen.epoch))?;
    let mut out = String::new();
    writeln!(out, "checkpoint {} ({})", m.epoch, chosen.path.display())?;
    writeln!(
        out,
        "  taken       {} ({})",
        Timestamp(m.created_ms),
        age(m.created_ms)
    )?;
    writeln!(
        out,
        "  generation  {} (process start that wrote it)",
        m.generation
    )?;
    writeln!(out, "  workers     {}", m.workers)?;
    writeln!(out, "  watermark   {}", Timestamp(m.watermark_ms))?;
    writeln!(out, "  contains    journal segments up to {}", m.epoch)?;
    for (topic, parts) in &m.logs {
        let at: Vec<String> = parts.iter().map(|(p, o)| format!("{p}@{o}")).collect();
        writeln!(
            out,
            "  kafka       {topic}: reads on at partition@offset {}",
            at.join(" ")
        )?;
    }
    writeln!(out, "  parts:")?;
    for p in &m.parts {
        let data = std::fs::read(chosen.path.join(&p.file));
        let check = match &data {
            Ok(d) if d.len() as u64 == p.bytes && crc32fast::hash(d) == p.crc32 => "checksum ok",
            Ok(_) => "DAMAGED: size or checksum differs from the manifest",
            Err(_) => "MISSING",
        };
        let n: u64 = p.partitions.iter().map(|(_, n)| u64::from(*n)).sum();
        writeln!(
            out,
            "    {:<18} {:>10}  {:>7} entries in {:>3} partitions  {check}",
            p.file,
            mib(p.bytes),
            n,
            p.partitions.len()
        )?;
    }
    writeln!(out, "  entries per partition (device / geo):")?;
    let mut per: std::collections::BTreeMap<u16, (u32, u32)> = Default::default();
    for p in &m.parts {
        for (k, n) in &p.partitions {
            let e = per.entry(*k).or_default();
            if p.operator == "device" {
                e.0 += n;
            } else {
                e.1 += n;
            }
        }
    }
    let mut line = String::new();
    for (i, (k, (d, g))) in per.iter().enumerate() {
        let _ = write!(line, "  {k:>3}: {d:>4}/{g:<4}");
        if i % 6 == 5 {
            writeln!(out, "  {line}")?;
            line.clear();
        }
    }
    if !line.is_empty() {
        writeln!(out, "  {line}")?;
    }
    Ok(out)
}
