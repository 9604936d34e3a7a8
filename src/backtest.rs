//! `ioc backtest`: what a rules file would have raised over recorded
//! readings, against the rules in force (or another file).
//!
//! The engine's own code runs twice, side by side, over one pass of the
//! recording: an [`Engine`] per rule set, in event time, with the
//! configuration's engine settings and the idle clock switched off (event
//! time comes from the readings only). Readings are checked as ingest checks
//! them (registry, kind, coordinates, duplicates, lateness); the age and
//! clock-skew limits do not apply to a recording. Each engine's alert
//! changes are folded into episodes, and [`diff`] pairs the episodes of the
//! two runs per rule and subject by overlap in time.
//!
//! Inputs: an NDJSON file of envelopes (the MQTT payload), which may also
//! hold dead letters (`ioc deadletter list --show`, their original payload
//! is used), or a state directory's ingest journal (`checkpoint.dir`: the
//! readings since the oldest kept checkpoint).
//!
//! Readings in the `warmup` before `from` fill windows and rule states
//! (a 24-hour rainfall total needs the day before); episodes that opened
//! before `from` are left out of the comparison. A backtest never touches
//! the alert store, the time series or any channel: its outputs stay in
//! memory.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ioc_devices::Registry;
use ioc_ingest::Decoder;
use ioc_ingest::dedup::SeqWindows;
use ioc_processing::{Engine, EngineConfig, EngineInput, Reading, RuleSet, ZonesCell};
use ioc_schemas::{AlertStatus, EngineOutput, Limits, Timestamp};
use serde::Serialize;

/// Readings handed to the engines at a time.
const BATCH: usize = 1024;

/// Bad input lines listed in a report (the rest are only counted).
const BAD_LINES_LISTED: usize = 50;

/// Where recorded readings come from.
#[derive(Clone, Debug)]
pub enum Recording {
    /// An NDJSON file: one envelope (or one dead letter) per line.
    Ndjson(PathBuf),
    /// The ingest journal of a state directory (`checkpoint.dir`).
    Journal(PathBuf),
}

impl Recording {
    /// A directory is a state directory, anything else an NDJSON file.
    pub fn at(path: &Path) -> Recording {
        if path.is_dir() {
            Recording::Journal(path.to_owned())
        } else {
            Recording::Ndjson(path.to_owned())
        }
    }

    fn describe(&self) -> String {
        match self {
            Recording::Ndjson(p) => p.display().to_string(),
            Recording::Journal(p) => format!("the journal in {}", p.display()),
        }
    }
}

/// What to run.
#[derive(Clone)]
pub struct Plan {
    /// The readings.
    pub recording: Recording,
    /// The rules tried.
    pub new: Arc<RuleSet>,
    /// What they are compared with.
    pub current: Arc<RuleSet>,
    /// Zones and assets (zone rules, geofences, alert enrichment).
    pub zones: Arc<ZonesCell>,
    /// The catalogue.
    pub registry: Arc<Registry>,
    /// Engine settings (lateness, rainfall bucket, ...); rules, zones and
    /// the durable state are set by the backtest.
    pub engine: EngineConfig,
    /// Episodes that open before this are not compared (readings before it
    /// still fill windows, from `from - warmup`).
    pub from: Option<Timestamp>,
    /// Readings at or after this are not read.
    pub to: Option<Timestamp>,
    /// How long before `from` readings are run to fill windows and states.
    pub warmup: Duration,
}

/// How far through the recording a run is.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// Bytes read of the input.
    pub done: u64,
    /// Bytes of the input.
    pub total: u64,
    /// Readings run so far.
    pub readings: u64,
}

/// What the input held.
#[derive(Clone, Debug, Default, Serialize)]
pub struct InputReport {
    /// What was read.
    pub source: String,
    /// Lines (NDJSON) or journal records read.
    pub records: u64,
    /// Readings run through the engines (the warmup included).
    pub readings: u64,
    /// Readings outside the period and its warmup, skipped.
    pub outside: u64,
    /// Readings already seen (same device and `seq`), skipped.
    pub duplicates: u64,
    /// Readings older than the watermark less the allowed lateness, skipped.
    pub late: u64,
    /// Lines that are not a valid reading.
    pub bad: u64,
    /// The first of them: line number and the reason.
    pub bad_lines: Vec<BadLine>,
    /// Event time of the first and last reading run.
    pub first: Option<Timestamp>,
    /// See `first`.
    pub last: Option<Timestamp>,
    /// Event time of the oldest and newest reading in the input.
    pub input_first: Option<Timestamp>,
    /// See `input_first`.
    pub input_last: Option<Timestamp>,
}

/// A line of the input that is not a valid reading.
#[derive(Clone, Debug, Serialize)]
pub struct BadLine {
    /// 1-based line number (the record's number in a journal).
    pub line: u64,
    /// Why.
    pub reason: String,
}

/// One alert episode: from opening to resolution.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Episode {
    /// The alert id.
    pub id: String,
    /// The rule.
    pub rule: String,
    /// The device or zone.
    pub subject: String,
    /// The smallest administrative area of the alert's position.
    pub area: String,
    /// What it is about (English).
    pub title_en: String,
    /// What it is about (Vietnamese).
    pub title_vi: String,
    /// Event time it opened.
    pub opened_at: Timestamp,
    /// Event time it resolved; `None`: still open at the end.
    pub resolved_at: Option<Timestamp>,
    /// Highest level reached.
    pub peak_level: u8,
    /// Each level when first reached in this episode, lowest first.
    pub levels: Vec<LevelReached>,
}

/// A level first reached at some event time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LevelReached {
    /// 1-based level.
    pub level: u8,
    /// Its name, e.g. `BĐ2`.
    pub name: String,
    /// When.
    pub at: Timestamp,
}

impl Episode {
    fn from_alert(a: &ioc_schemas::Alert) -> Episode {
        Episode {
            id: a.id.clone(),
            rule: a.rule.clone(),
            subject: a.subject.clone(),
            area: a
                .area
                .first()
                .map(|r| r.name.to_string())
                .unwrap_or_default(),
            title_en: a.title_en.clone(),
            title_vi: a.title_vi.clone(),
            opened_at: a.opened_at,
            resolved_at: None,
            peak_level: 0,
            levels: Vec::new(),
        }
    }

    fn apply(&mut self, a: &ioc_schemas::Alert) {
        if a.level > 0 && !self.levels.iter().any(|l| l.level == a.level) {
            self.levels.push(LevelReached {
                level: a.level,
                name: a.level_name.clone(),
                at: a.updated_at,
            });
            self.levels.sort_by_key(|l| l.level);
        }
        self.peak_level = self.peak_level.max(a.peak_level).max(a.level);
        if a.status == AlertStatus::Resolved {
            self.resolved_at = Some(a.resolved_at.unwrap_or(a.updated_at));
        }
    }

    fn end_ms(&self) -> i64 {
        self.resolved_at.map_or(i64::MAX, Timestamp::millis)
    }

    fn level_name(&self, level: u8) -> String {
        self.levels
            .iter()
            .find(|l| l.level == level)
            .map_or_else(|| format!("level {level}"), |l| l.name.clone())
    }
}

/// An episode of both runs that differs.
#[derive(Clone, Debug, Serialize)]
pub struct Changed {
    /// The episode under the new rules.
    pub new: Episode,
    /// Under the current rules.
    pub current: Episode,
    /// `new.opened_at - current.opened_at`, ms: negative is earlier.
    pub start_ms: i64,
    /// `new.resolved_at - current.resolved_at`, ms, when both resolved.
    pub end_ms: Option<i64>,
    /// Per level: `(level, new - current in ms)` where both reached it and
    /// the times differ; a level only one run reached shows in the peaks.
    pub levels_ms: Vec<(u8, i64)>,
}

/// One rule and area's counts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Row {
    /// The rule.
    pub rule: String,
    /// The area.
    pub area: String,
    /// Episodes only under the new rules.
    pub only_new: usize,
    /// Only under the current rules.
    pub only_current: usize,
    /// In both, different.
    pub changed: usize,
    /// In both, the same.
    pub same: usize,
}

/// The comparison of two runs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Diff {
    /// Episodes only the new rules raise.
    pub only_new: Vec<Episode>,
    /// Episodes only the current rules raise.
    pub only_current: Vec<Episode>,
    /// Episodes both raise, with a different level, start or end.
    pub changed: Vec<Changed>,
    /// Episodes both raise alike.
    pub same: usize,
    /// Counts per rule and area.
    pub rows: Vec<Row>,
}

impl Diff {
    /// Whether both runs raised the same.
    pub fn is_empty(&self) -> bool {
        self.only_new.is_empty() && self.only_current.is_empty() && self.changed.is_empty()
    }
}

/// The outcome of a backtest.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Episodes opening from here are compared.
    pub from: Option<Timestamp>,
    /// Readings before this were read.
    pub to: Option<Timestamp>,
    /// What the input held.
    pub input: InputReport,
    /// Episodes under the new rules (opened in the period).
    pub new_episodes: usize,
    /// Under the current rules.
    pub current_episodes: usize,
    /// The comparison.
    pub diff: Diff,
    /// Wall-clock seconds of the run.
    pub seconds: f64,
    /// Readings per second through both engines.
    pub readings_per_second: f64,
}

/// One rule set's engine and what collects its alerts.
struct Run {
    engine: Engine,
    input: EngineInput,
    episodes: std::thread::JoinHandle<Vec<Episode>>,
}

impl Run {
    fn start(plan: &Plan, rules: Arc<RuleSet>, since: Option<Timestamp>) -> anyhow::Result<Run> {
        let config = EngineConfig {
            rules: Some(rules),
            zones: Some(plan.zones.clone()),
            durable: None,
            outputs_durable: None,
            // Event time comes from the recording only: a pause in reading
            // it must not move event time to the wall clock.
            idle_timeout: Duration::from_secs(100 * 365 * 24 * 3600),
            listening_since: since,
            ..plan.engine.clone()
        };
        let (tx, rx) = flume::bounded::<Vec<EngineOutput>>(256);
        let (engine, input) = Engine::start(&config, plan.registry.clone(), tx)
            .map_err(|e| anyhow::anyhow!("starting the engine: {e}"))?;
        let episodes = std::thread::Builder::new()
            .name("ioc-backtest".into())
            .spawn(move || {
                let mut by_id: BTreeMap<String, Episode> = BTreeMap::new();
                for batch in rx.iter() {
                    for out in batch {
                        if let EngineOutput::Alert(a) = out {
                            by_id
                                .entry(a.id.clone())
                                .or_insert_with(|| Episode::from_alert(&a))
                                .apply(&a);
                        }
                    }
                }
                by_id.into_values().collect()
            })?;
        Ok(Run {
            engine,
            input,
            episodes,
        })
    }

    fn finish(self) -> anyhow::Result<Vec<Episode>> {
        drop(self.input);
        self.engine
            .join()
            .map_err(|e| anyhow::anyhow!("the engine stopped: {e}"))?;
        self.episodes
            .join()
            .map_err(|_| anyhow::anyhow!("the alert collector failed"))
    }
}

/// Checks readings as ingest does and hands them to both engines.
struct Feed<'a> {
    plan: &'a Plan,
    decoder: Decoder,
    seen: SeqWindows,
    /// Started with the first reading run, so that devices never heard
    /// from count as overdue from the recording's start, not from now.
    runs: Option<[Run; 2]>,
    report: InputReport,
    /// Readings checked but not yet handed to the engines.
    batch: Vec<Reading>,
}

impl Feed<'_> {
    fn bad(&mut self, line: u64, reason: String) {
        self.report.bad += 1;
        if self.report.bad_lines.len() < BAD_LINES_LISTED {
            self.report.bad_lines.push(BadLine { line, reason });
        }
    }

    /// One NDJSON line: an envelope, or a dead letter with its payload.
    fn line(&mut self, number: u64, text: &[u8]) -> anyhow::Result<()> {
        if text.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        self.report.records += 1;
        // A recording is old by nature: only the checks that hold whatever
        // the wall clock says apply.
        let now = Timestamp(i64::MAX / 4);
        let decoded = self.decoder.decode(None, text, now).or_else(|first| {
            match serde_json::from_slice::<ioc_ingest::DeadLetter>(text) {
                Ok(letter) => self.decoder.decode(None, &letter.original(), now),
                Err(_) => Err(first),
            }
        });
        match decoded {
            Ok(reading) => self.reading(reading),
            Err(rejection) => {
                self.bad(number, rejection.to_string());
                Ok(())
            }
        }
    }

    fn reading(&mut self, mut reading: Reading) -> anyhow::Result<()> {
        let ts = reading.envelope.ts;
        let r = &mut self.report;
        r.input_first = Some(r.input_first.map_or(ts, |t| t.min(ts)));
        r.input_last = Some(r.input_last.map_or(ts, |t| t.max(ts)));
        let earliest = self
            .plan
            .from
            .map(|f| Timestamp(f.millis() - self.plan.warmup.as_millis() as i64));
        if earliest.is_some_and(|e| ts < e) || self.plan.to.is_some_and(|t| ts >= t) {
            r.outside += 1;
            return Ok(());
        }
        let now = Timestamp::now();
        if let Some(runs) = &self.runs
            && runs[0].input.too_late(ts, now)
        {
            r.late += 1;
            return Ok(());
        }
        if !self
            .seen
            .first_time(reading.device, reading.envelope.seq, ts)
        {
            r.duplicates += 1;
            return Ok(());
        }
        r.readings += 1;
        r.first = Some(r.first.map_or(ts, |t| t.min(ts)));
        r.last = Some(r.last.map_or(ts, |t| t.max(ts)));
        reading.received = now;
        if self.runs.is_none() {
            self.runs = Some([
                Run::start(self.plan, self.plan.new.clone(), Some(ts))?,
                Run::start(self.plan, self.plan.current.clone(), Some(ts))?,
            ]);
        }
        self.batch.push(reading);
        if self.batch.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands the readings gathered so far to both engines.
    fn flush(&mut self) -> anyhow::Result<()> {
        let Some(runs) = &self.runs else {
            return Ok(());
        };
        let closed = |_| anyhow::anyhow!("the engine stopped while reading the recording");
        runs[1]
            .input
            .send_all_blocking(self.batch.iter().cloned())
            .map_err(closed)?;
        runs[0]
            .input
            .send_all_blocking(self.batch.drain(..))
            .map_err(closed)?;
        Ok(())
    }
}

/// Runs both rule sets over the recording and compares what they raise.
/// `progress` is called now and then from the reading thread.
pub fn run(plan: &Plan, mut progress: impl FnMut(Progress)) -> anyhow::Result<Report> {
    let begun = Instant::now();
    let limits = Limits {
        max_future_skew_ms: i64::MAX / 4,
        max_age_ms: i64::MAX / 4,
        ..Limits::default()
    };
    let mut feed = Feed {
        plan,
        decoder: Decoder::new(plan.registry.clone(), limits),
        seen: SeqWindows::new(plan.registry.devices().len()),
        runs: None,
        report: InputReport {
            source: plan.recording.describe(),
            ..InputReport::default()
        },
        batch: Vec::with_capacity(BATCH),
    };
    match &plan.recording {
        Recording::Ndjson(path) => read_ndjson(path, &mut feed, &mut progress)?,
        Recording::Journal(dir) => read_journal(dir, &mut feed, &mut progress)?,
    }
    feed.flush()?;
    let Feed { runs, report, .. } = feed;
    let Some([new_run, current_run]) = runs else {
        let held = match (report.input_first, report.input_last) {
            (Some(a), Some(b)) => format!("it holds readings from {a} to {b}"),
            _ => format!("it holds no valid reading ({} bad lines)", report.bad),
        };
        anyhow::bail!(
            "no readings in the period {} – {} in {}: {held}",
            plan.from.map_or("(start)".into(), |t| t.to_string()),
            plan.to.map_or("(end)".into(), |t| t.to_string()),
            report.source
        );
    };
    let (new, current) = (new_run.finish()?, current_run.finish()?);
    let in_period = |e: &Episode| plan.from.is_none_or(|f| e.opened_at >= f);
    let new: Vec<Episode> = new.into_iter().filter(in_period).collect();
    let current: Vec<Episode> = current.into_iter().filter(in_period).collect();
    let seconds = begun.elapsed().as_secs_f64();
    Ok(Report {
        from: plan.from,
        to: plan.to,
        new_episodes: new.len(),
        current_episodes: current.len(),
        diff: diff(new, current),
        readings_per_second: report.readings as f64 / seconds.max(1e-9),
        seconds,
        input: report,
    })
}

fn read_ndjson(
    path: &Path,
    feed: &mut Feed<'_>,
    progress: &mut impl FnMut(Progress),
) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::with_capacity(512);
    let (mut number, mut done) = (0u64, 0u64);
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        number += 1;
        done += n as u64;
        feed.line(number, &line)?;
        if number % 65_536 == 0 {
            progress(Progress {
                done,
                total,
                readings: feed.report.readings,
            });
        }
    }
    progress(Progress {
        done,
        total,
        readings: feed.report.readings,
    });
    Ok(())
}

fn read_journal(
    dir: &Path,
    feed: &mut Feed<'_>,
    progress: &mut impl FnMut(Progress),
) -> anyhow::Result<()> {
    use ioc_processing::durable::journal;
    let journal_dir = dir.join("journal");
    let segments = journal::segments(&journal_dir)
        .with_context(|| format!("listing {}", journal_dir.display()))?;
    anyhow::ensure!(
        !segments.is_empty(),
        "{} has no journal segments: is it a state directory (checkpoint.dir) of a process with durable state?",
        dir.display()
    );
    let total: u64 = segments
        .iter()
        .filter_map(|s| s.path.metadata().ok())
        .map(|m| m.len())
        .sum();
    // Each worker wrote its own segments: put their readings back in event
    // time order before running them.
    let mut readings = Vec::new();
    let mut done = 0;
    for s in &segments {
        // Records of devices not in the catalogue, by their number.
        let mut unknown = Vec::new();
        let registry = &feed.plan.registry;
        let records = &mut feed.report.records;
        journal::read(&s.path, |entry| {
            *records += 1;
            let device = entry.envelope.device.clone();
            match entry.reading(registry) {
                Some(r) => readings.push(r),
                None => unknown.push((*records, device)),
            }
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (n, device) in unknown {
            feed.bad(n, format!("device {device:?} is not in the catalogue"));
        }
        done += s.path.metadata().map(|m| m.len()).unwrap_or(0);
        progress(Progress {
            done,
            total,
            readings: 0,
        });
    }
    readings.sort_by_key(|r| r.envelope.ts);
    for (k, r) in readings.into_iter().enumerate() {
        feed.reading(r)?;
        if k % 65_536 == 0 {
            progress(Progress {
                done,
                total,
                readings: feed.report.readings,
            });
        }
    }
    Ok(())
}

fn overlaps(a: &Episode, b: &Episode) -> bool {
    a.opened_at.millis() <= b.end_ms() && b.opened_at.millis() <= a.end_ms()
}

/// Pairs the episodes of two runs per rule and subject (an episode with the
/// first one of the other run it overlaps in time) and lists what differs.
pub fn diff(new: Vec<Episode>, current: Vec<Episode>) -> Diff {
    type Key = (String, String);
    let mut groups: BTreeMap<Key, (Vec<Episode>, Vec<Episode>)> = BTreeMap::new();
    for e in new {
        groups
            .entry((e.rule.clone(), e.subject.clone()))
            .or_default()
            .0
            .push(e);
    }
    for e in current {
        groups
            .entry((e.rule.clone(), e.subject.clone()))
            .or_default()
            .1
            .push(e);
    }
    let mut d = Diff::default();
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    for (_, (mut new, mut current)) in groups {
        new.sort_by_key(|e| e.opened_at);
        current.sort_by_key(|e| e.opened_at);
        let mut taken = vec![false; current.len()];
        for n in new {
            let row = rows.entry((n.rule.clone(), n.area.clone())).or_default();
            let partner = (0..current.len()).find(|&i| !taken[i] && overlaps(&n, &current[i]));
            let Some(i) = partner else {
                row.only_new += 1;
                d.only_new.push(n);
                continue;
            };
            taken[i] = true;
            let c = &current[i];
            let levels_ms: Vec<(u8, i64)> = n
                .levels
                .iter()
                .filter_map(|l| {
                    let other = c.levels.iter().find(|m| m.level == l.level)?;
                    let delta = l.at.millis() - other.at.millis();
                    // The level an episode opens at moves with its start.
                    let opening = l.at == n.opened_at && other.at == c.opened_at;
                    (delta != 0 && !opening).then_some((l.level, delta))
                })
                .collect();
            let same_levels = n
                .levels
                .iter()
                .map(|l| l.level)
                .eq(c.levels.iter().map(|l| l.level));
            if n.opened_at == c.opened_at
                && n.resolved_at == c.resolved_at
                && n.peak_level == c.peak_level
                && same_levels
                && levels_ms.is_empty()
            {
                row.same += 1;
                d.same += 1;
                continue;
            }
            row.changed += 1;
            d.changed.push(Changed {
                start_ms: n.opened_at.millis() - c.opened_at.millis(),
                end_ms: n
                    .resolved_at
                    .zip(c.resolved_at)
                    .map(|(a, b)| a.millis() - b.millis()),
                levels_ms,
                current: c.clone(),
                new: n,
            });
        }
        for (i, c) in current.into_iter().enumerate() {
            if !taken[i] {
                rows.entry((c.rule.clone(), c.area.clone()))
                    .or_default()
                    .only_current += 1;
                d.only_current.push(c);
            }
        }
    }
    d.rows = rows
        .into_iter()
        .map(|((rule, area), row)| Row { rule, area, ..row })
        .collect();
    d
}

/// A duration in words: `25 min`, `2 h 5 min`, `40 s`.
fn span(ms: i64) -> String {
    let s = ms.unsigned_abs() / 1000;
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

fn earlier_later(ms: i64) -> String {
    if ms < 0 {
        format!("{} earlier", span(ms))
    } else {
        format!("{} later", span(ms))
    }
}

fn describe_episode(e: &Episode) -> String {
    let end = e
        .resolved_at
        .map_or_else(|| "still open at the end".to_owned(), |t| format!("to {t}"));
    let level = e
        .levels
        .iter()
        .find(|l| l.level == e.peak_level && !l.name.is_empty())
        .map_or_else(String::new, |l| format!(" {}", l.name));
    format!(
        "{} {} ({}){level} from {} {end}",
        e.rule, e.subject, e.area, e.opened_at
    )
}

/// What changed in a paired episode, in words.
pub fn describe_change(c: &Changed) -> Vec<String> {
    let mut said = Vec::new();
    if c.start_ms != 0 {
        said.push(format!("opens {}", earlier_later(c.start_ms)));
    }
    match (c.new.resolved_at, c.current.resolved_at, c.end_ms) {
        (_, _, Some(ms)) if ms != 0 => said.push(format!("resolves {}", earlier_later(ms))),
        (Some(t), None, _) => said.push(format!("resolves at {t} instead of staying open")),
        (None, Some(t), _) => said.push(format!("stays open instead of resolving at {t}")),
        _ => {}
    }
    if c.new.peak_level != c.current.peak_level {
        said.push(format!(
            "peaks at {} instead of {}",
            c.new.level_name(c.new.peak_level),
            c.current.level_name(c.current.peak_level)
        ));
    }
    for (level, ms) in &c.levels_ms {
        said.push(format!(
            "reaches {} {}",
            c.new.level_name(*level),
            earlier_later(*ms)
        ));
    }
    said
}

/// The report as text: the input, a table per rule and area, then every
/// difference.
pub fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let i = &r.input;
    let _ = writeln!(
        out,
        "{}: {} readings run ({} to {}), {:.2} s, {:.0} readings/s",
        i.source,
        i.readings,
        i.first.map_or("-".into(), |t| t.to_string()),
        i.last.map_or("-".into(), |t| t.to_string()),
        r.seconds,
        r.readings_per_second
    );
    let _ = writeln!(
        out,
        "skipped: {} outside the period, {} duplicates, {} late, {} bad lines",
        i.outside, i.duplicates, i.late, i.bad
    );
    for b in &i.bad_lines {
        let _ = writeln!(out, "  line {}: {}", b.line, b.reason);
    }
    if i.bad > i.bad_lines.len() as u64 {
        let _ = writeln!(out, "  ... and {} more", i.bad - i.bad_lines.len() as u64);
    }
    let _ = writeln!(
        out,
        "episodes: {} with the new rules, {} with the current rules",
        r.new_episodes, r.current_episodes
    );
    let d = &r.diff;
    if d.is_empty() {
        let _ = writeln!(
            out,
            "no difference: both raise the same {} episodes",
            d.same
        );
        return out;
    }
    let _ = writeln!(
        out,
        "\n{:<18} {:<28} {:>8} {:>12} {:>8} {:>6}",
        "rule", "area", "only new", "only current", "changed", "same"
    );
    // Rows where both agree are in the JSON only.
    for row in d
        .rows
        .iter()
        .filter(|r| r.only_new + r.only_current + r.changed > 0)
    {
        let _ = writeln!(
            out,
            "{:<18} {:<28} {:>8} {:>12} {:>8} {:>6}",
            row.rule, row.area, row.only_new, row.only_current, row.changed, row.same
        );
    }
    let _ = writeln!(out);
    for e in &d.only_new {
        let _ = writeln!(out, "+ only new:     {}", describe_episode(e));
    }
    for e in &d.only_current {
        let _ = writeln!(out, "- only current: {}", describe_episode(e));
    }
    for c in &d.changed {
        let _ = writeln!(
            out,
            "~ changed:      {}: {}",
            describe_episode(&c.new),
            describe_change(c).join("; ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn episode(subject: &str, open: i64, end: Option<i64>, peak: u8) -> Episode {
        Episode {
            id: format!("r:{subject}:{open}"),
            rule: "r".into(),
            subject: subject.into(),
            area: "a".into(),
            title_en: String::new(),
            title_vi: String::new(),
            opened_at: Timestamp(open),
            resolved_at: end.map(Timestamp),
            peak_level: peak,
            levels: (1..=peak)
                .map(|l| LevelReached {
                    level: l,
                    name: format!("L{l}"),
                    at: Timestamp(open + i64::from(l - 1) * 10),
                })
                .collect(),
        }
    }

    #[test]
    fn pairs_overlapping_episodes_and_reports_the_rest() {
        let current = vec![
            episode("g1", 100, Some(200), 1),
            episode("g2", 100, Some(200), 2),
            episode("g3", 500, None, 1),
        ];
        let new = vec![
            episode("g1", 100, Some(200), 1),
            episode("g2", 80, Some(220), 3),
            episode("g3", 300, Some(400), 1),
            episode("g3", 500, None, 1),
        ];
        let d = diff(new, current);
        assert_eq!(d.same, 2);
        assert_eq!(d.only_current.len(), 0);
        assert_eq!(d.only_new.len(), 1);
        assert_eq!(d.only_new[0].opened_at, Timestamp(300));
        assert_eq!(d.changed.len(), 1);
        let c = &d.changed[0];
        assert_eq!((c.start_ms, c.end_ms), (-20, Some(20)));
        assert_eq!(c.levels_ms, vec![(2, -20)]);
        let said = describe_change(c).join("; ");
        assert!(said.contains("peaks at L3 instead of L2"), "{said}");
    }

    #[test]
    fn the_same_episodes_make_an_empty_diff() {
        let e = vec![episode("g1", 100, Some(200), 2), episode("g2", 5, None, 1)];
        let d = diff(e.clone(), e);
        assert!(d.is_empty());
        assert_eq!(d.same, 2);
    }
}
