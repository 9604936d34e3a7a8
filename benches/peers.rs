//! ioc against the stream processors a province's integrator would
//! otherwise choose, on one workload, in one sitting: Bytewax (Python on
//! Timely Dataflow), Pathway (Python on a Rust dataflow engine) and Apache
//! Flink (the JVM; its DataStream API).
//!
//! ```sh
//! cargo bench --bench peers -- [DEVICES] [READINGS] [STEP_MS]
//! ```
//!
//! Defaults: 100000 devices of the scaled Sơn La catalogue (the demo's
//! kind mix), 3000000 readings of the flood scenario, event time 2 ms
//! apart (so each device reports every DEVICES × STEP_MS ms: 200 s, and the
//! readings cover 100 minutes). The workload is written once, as data, to
//! `target/bench/peers/`: `readings.ndjson` (one envelope per line, as a
//! device publishes it) and `devices.json` (each river gauge's BĐ1–BĐ3
//! levels, which ioc reads from its registry). Every system then reads the
//! file, computes what `benches/peers/rules.toml` says, and writes its
//! alert transitions (`{"rule", "device", "ts", "level"}` per line):
//!
//! - `river_level`: per gauge, the BĐ level with 0.2 m hysteresis, per reading;
//! - `rain_1h`: per rain gauge, the 1-hour total sliding by 5 minutes, over
//!   10 mm (left 2 mm below);
//! - `traffic_slow`: per counter, the 5-minute mean speed weighted by
//!   vehicles, below 40 km/h (cleared at 43).
//!
//! Each system runs as its own process, one after the other, measured from
//! outside: wall time from start to exit (start-up included), CPU seconds
//! and peak resident memory of the process and its children, sampled from
//! `/proc` every 20 ms. The transitions of every peer are compared with
//! ioc's per rule and subject; `benches/peers/README.md` says how each
//! peer is written and the semantic differences the comparison allows.
//!
//! `IOC_PEERS=ioc,bytewax` runs only some systems. The peers run from the
//! virtual environments `tests/run.sh` makes (`$IOC_PEERS_HOME`, default
//! `~/.cache/ioc-peers`); a missing one fails with what to run.

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead as _, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ioc_devices::{Registry, Scenario, Simulator};
use ioc_ingest::Decoder;
use ioc_ingest::dedup::SeqWindows;
use ioc_processing::{Engine, EngineConfig};
use ioc_schemas::{DeviceKind, EngineOutput, Limits, Timestamp};
use serde_json::{Value, json};

/// 2026-01-01T00:00Z: the workload's first event time.
const T0: i64 = 1_767_225_600_000;

const RULES: &str = include_str!("peers/rules.toml");

fn main() {
    if let Ok(args) = std::env::var("IOC_PEERS_AS_IOC") {
        let args: Vec<&str> = args.split('\n').collect();
        return run_ioc(args[0].parse().unwrap(), args[1].as_ref(), args[2].as_ref());
    }
    let devices: usize = common::arg(0, 100_000);
    let readings: usize = common::arg(1, 3_000_000);
    let step_ms: i64 = common::arg(2, 2);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/bench/peers");
    std::fs::create_dir_all(&dir).unwrap();
    let workload = Workload::write(&dir, devices, readings, step_ms);
    let only = std::env::var("IOC_PEERS").ok();
    let wanted = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|s| s.trim() == name))
    };
    let peers_home = std::env::var_os("IOC_PEERS_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/ioc-peers")
        });
    let mut systems: Vec<System> = Vec::new();
    if wanted("ioc") {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.env(
            "IOC_PEERS_AS_IOC",
            format!(
                "{devices}\n{}\n{}",
                workload.readings.display(),
                dir.join("ioc.ndjson").display()
            ),
        );
        systems.push(System::new("ioc", c, &dir));
    }
    let peers = root.join("benches/peers");
    let python = |venv: &str| {
        let p = peers_home.join(venv).join("bin/python");
        assert!(
            p.exists(),
            "{} is missing: run tests/run.sh (it makes the peers' virtual environments), \
             or leave the peer out with IOC_PEERS",
            p.display()
        );
        p
    };
    if wanted("bytewax") {
        let mut c = Command::new(python("bytewax"));
        // Python holds one core per process: two processes of one worker
        // each (Bytewax's local cluster runner) use both cores.
        c.args(["-m", "bytewax.testing", "-w", "1", "-p", "2"])
            .arg(format!("{}:flow", peers.join("bytewax_flow.py").display()));
        systems.push(System::new("bytewax", c, &dir));
    }
    if wanted("pathway") {
        let mut c = Command::new(python("pathway"));
        c.arg(peers.join("pathway_flow.py"))
            .env("PATHWAY_THREADS", "2")
            .env("PATHWAY_MONITORING_LEVEL", "none");
        systems.push(System::new("pathway", c, &dir));
    }
    if wanted("flink") {
        let lib = python("flink")
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("lib/python3.11/site-packages/pyflink/lib");
        let jar = peers_home.join("flink/peers-flink.jar");
        assert!(
            jar.exists(),
            "{} is missing: run tests/run.sh (it compiles benches/peers/flink/)",
            jar.display()
        );
        let mut c = Command::new("java");
        c.arg("-Xmx2g")
            .arg("-cp")
            .arg(format!("{}:{}/*", jar.display(), lib.display()))
            .arg("PeersFlink");
        systems.push(System::new("flink", c, &dir));
    }
    for s in &mut systems {
        s.command
            .env("PEERS_READINGS", &workload.readings)
            .env("PEERS_DEVICES", &workload.devices)
            .env("PEERS_OUT", &s.out)
            .env("PEERS_PARALLELISM", "2");
    }

    let mut results = Vec::new();
    for s in systems {
        let _ = std::fs::remove_file(&s.out);
        eprintln!("== {}", s.name);
        let m = measure(s.command);
        let transitions = Transitions::read(&s.out, workload.last_ts)
            .unwrap_or_else(|e| panic!("{}: {e} ({})", s.name, m.stderr_tail));
        eprintln!(
            "   {:.1} s, {:.1} CPU s, {:.0} MiB, {} transitions",
            m.seconds,
            m.cpu_seconds,
            m.peak_rss_mib,
            transitions.count()
        );
        results.push((s.name, m, transitions));
    }

    let per_million = |m: &Measured| m.cpu_seconds / (readings as f64 / 1e6);
    let rows: Vec<Value> = results
        .iter()
        .map(|(name, m, t)| {
            json!({
                "system": name,
                "version": version(name, &peers_home),
                "seconds": m.seconds,
                "readings_per_s": readings as f64 / m.seconds,
                "cpu_seconds": m.cpu_seconds,
                "cpu_s_per_million": per_million(m),
                "cores_used": m.cpu_seconds / m.seconds,
                "peak_rss_mib": m.peak_rss_mib,
                "transitions": t.by_rule(),
            })
        })
        .collect();
    // ioc against each peer, by name (the suite's targets point here): how
    // many times ioc's figure is better, and whether the alerts agree.
    let mut ioc_vs = serde_json::Map::new();
    if let Some((_, om, ot)) = results.iter().find(|r| r.0 == "ioc") {
        for (name, m, t) in results.iter().filter(|r| r.0 != "ioc") {
            let agreement = t.compare(ot);
            ioc_vs.insert(
                (*name).to_owned(),
                json!({
                    "times_faster": m.seconds / om.seconds,
                    "times_less_cpu_per_reading": per_million(m) / per_million(om),
                    "times_less_memory": m.peak_rss_mib / om.peak_rss_mib,
                    "subjects_that_differ": agreement["differ"],
                    "agreement": agreement,
                }),
            );
        }
    }
    print_table(&rows, &ioc_vs);
    let result = json!({
        "ioc_vs": ioc_vs,
        "bench": "peers",
        "machine": common::bench_machine(),
        "commit": common::bench_commit(),
        "devices": devices,
        "readings": readings,
        "step_ms": step_ms,
        "event_time_minutes": (workload.last_ts - T0) as f64 / 60_000.0,
        "workload_mib": std::fs::metadata(&workload.readings).map_or(0, |m| m.len()) as f64 / 1048576.0,
        "systems": rows,
    });
    let path = common::write_bench_result("peers", &result);
    eprintln!("wrote {}", path.display());
    for (peer, vs) in &ioc_vs {
        assert_eq!(
            vs["subjects_that_differ"], 0,
            "{peer} disagrees with ioc beyond the documented differences: {:#}",
            vs["agreement"]
        );
    }
}

fn print_table(rows: &[Value], ioc_vs: &serde_json::Map<String, Value>) {
    println!(
        "{:<8} {:>9} {:>11} {:>10} {:>9} {:>9} {:>10} {:>10}",
        "system", "seconds", "readings/s", "CPU s/M", "cores", "RSS MiB", "ioc ×", "agree"
    );
    for r in rows {
        let vs = r["system"].as_str().and_then(|name| ioc_vs.get(name));
        let ioc_x = vs.and_then(|v| v["times_faster"].as_f64());
        let agree = vs.map_or(&Value::Null, |v| &v["agreement"]);
        println!(
            "{:<8} {:>9.1} {:>11.0} {:>10.2} {:>9.2} {:>9.0} {:>10} {:>10}",
            r["system"].as_str().unwrap_or(""),
            r["seconds"].as_f64().unwrap_or(0.0),
            r["readings_per_s"].as_f64().unwrap_or(0.0),
            r["cpu_s_per_million"].as_f64().unwrap_or(0.0),
            r["cores_used"].as_f64().unwrap_or(0.0),
            r["peak_rss_mib"].as_f64().unwrap_or(0.0),
            ioc_x.map_or("-".into(), |x| format!("{x:.1}")),
            match (agree["same"].as_u64(), agree["subjects"].as_u64()) {
                (Some(s), Some(n)) => format!("{s}/{n}"),
                _ => "-".into(),
            },
        );
    }
}

/// The workload's files.
struct Workload {
    readings: PathBuf,
    devices: PathBuf,
    /// The last reading's event time: transitions after it are how a
    /// system flushes at the end of its input, not compared.
    last_ts: i64,
}

impl Workload {
    /// Writes the workload unless the same one is there already.
    fn write(dir: &Path, devices: usize, readings: usize, step_ms: i64) -> Workload {
        let w = Workload {
            readings: dir.join("readings.ndjson"),
            devices: dir.join("devices.json"),
            last_ts: T0 + (readings as i64 - 1) * step_ms,
        };
        let stamp = dir.join("workload.json");
        let spec =
            json!({"devices": devices, "readings": readings, "step_ms": step_ms, "version": 1});
        let same = std::fs::read(&stamp)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|s| s == spec);
        if same && w.readings.exists() && w.devices.exists() {
            return w;
        }
        let started = Instant::now();
        let registry = Registry::sonla_scaled(devices);
        let levels: BTreeMap<&str, [f64; 3]> = registry
            .devices()
            .iter()
            .filter(|d| d.kind == DeviceKind::RiverGauge)
            .filter_map(|d| Some((d.id.as_str(), d.thresholds.alarm_levels_m?)))
            .collect();
        std::fs::write(
            &w.devices,
            serde_json::to_vec(&json!({ "river_levels": levels })).unwrap(),
        )
        .unwrap();
        let mut sim = Simulator::new(registry.clone(), Scenario::Flood, 7, Timestamp(T0));
        let mut out =
            BufWriter::with_capacity(1 << 20, std::fs::File::create(&w.readings).unwrap());
        for k in 0..readings {
            let envelope = sim
                .next_reading(Timestamp(T0 + k as i64 * step_ms))
                .unwrap();
            out.write_all(&envelope.to_json()).unwrap();
            out.write_all(b"\n").unwrap();
        }
        out.flush().unwrap();
        std::fs::write(&stamp, spec.to_string()).unwrap();
        eprintln!(
            "wrote the workload ({readings} readings of {devices} devices) in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        w
    }
}

/// One system's run.
struct System {
    name: &'static str,
    command: Command,
    out: PathBuf,
}

impl System {
    fn new(name: &'static str, command: Command, dir: &Path) -> System {
        System {
            name,
            command,
            out: dir.join(format!("{name}.ndjson")),
        }
    }
}

struct Measured {
    seconds: f64,
    cpu_seconds: f64,
    peak_rss_mib: f64,
    stderr_tail: String,
}

/// Runs `command` to its end, sampling its process tree's CPU time and
/// resident memory from `/proc`.
fn measure(mut command: Command) -> Measured {
    let log = tempfile::NamedTempFile::new().unwrap();
    command
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap());
    let started = Instant::now();
    let mut child = command.spawn().expect("starting the system");
    let root = child.id();
    let mut cpu: HashMap<u32, f64> = HashMap::new();
    let mut peak_rss = 0u64;
    let status = loop {
        let tree = process_tree(root);
        let mut rss = 0;
        for pid in &tree {
            let proc = PathBuf::from(format!("/proc/{pid}"));
            if let Some(c) = common::stat_cpu_seconds(&proc.join("stat")) {
                let seen = cpu.entry(*pid).or_default();
                *seen = seen.max(c);
            }
            let status = std::fs::read_to_string(proc.join("status")).unwrap_or_default();
            rss += status_kib(&status, "VmRSS:");
            // The kernel's own peak of each process, between samples.
            peak_rss = peak_rss.max(status_kib(&status, "VmHWM:"));
        }
        peak_rss = peak_rss.max(rss);
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let seconds = started.elapsed().as_secs_f64();
    let stderr = std::fs::read_to_string(log.path()).unwrap_or_default();
    let tail: String = stderr
        .lines()
        .rev()
        .take(30)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(status.success(), "the run failed ({status}):\n{tail}");
    Measured {
        seconds,
        cpu_seconds: cpu.values().sum(),
        peak_rss_mib: peak_rss as f64 / 1024.0,
        stderr_tail: tail,
    }
}

/// `root` and every process descended from it.
fn process_tree(root: u32) -> Vec<u32> {
    let mut parent: Vec<(u32, u32)> = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok());
        if let Some(ppid) = ppid {
            parent.push((pid, ppid));
        }
    }
    let mut tree = vec![root];
    let mut k = 0;
    while k < tree.len() {
        let p = tree[k];
        tree.extend(parent.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        k += 1;
    }
    tree
}

/// A `kB` figure of a `/proc/PID/status` text (0 when absent).
fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The version a system reports.
fn version(name: &str, peers_home: &Path) -> Value {
    let package = match name {
        "ioc" => return json!(env!("CARGO_PKG_VERSION")),
        "bytewax" => "bytewax",
        "pathway" => "pathway",
        _ => "apache-flink",
    };
    let out = Command::new(peers_home.join(name).join("bin/pip"))
        .args(["show", package])
        .output()
        .ok();
    out.and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Version: ").map(str::to_owned))
    })
    .map_or(Value::Null, Value::from)
}

/// A system's alert transitions: per (rule, subject), `(event time, level)`
/// in event time, consecutive repeats of a level folded.
struct Transitions {
    by_subject: BTreeMap<(String, String), Vec<(i64, u8)>>,
    after_end: usize,
}

impl Transitions {
    fn read(path: &Path, last_ts: i64) -> Result<Transitions, String> {
        let file = std::fs::File::open(path)
            .map_err(|e| format!("no transitions at {}: {e}", path.display()))?;
        let mut all: BTreeMap<(String, String), Vec<(i64, u8)>> = BTreeMap::new();
        let mut after_end = 0;
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| e.to_string())?;
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| format!("{}:{}: {e}: {line}", path.display(), n + 1))?;
            let (Some(rule), Some(device), Some(ts), Some(level)) = (
                v["rule"].as_str(),
                v["device"].as_str(),
                v["ts"].as_i64(),
                v["level"].as_u64(),
            ) else {
                return Err(format!(
                    "{}:{}: not a transition: {line}",
                    path.display(),
                    n + 1
                ));
            };
            if ts > last_ts {
                after_end += 1;
                continue;
            }
            all.entry((rule.to_owned(), device.to_owned()))
                .or_default()
                .push((ts, level as u8));
        }
        for steps in all.values_mut() {
            steps.sort_by_key(|s| s.0);
            let mut level = 0;
            steps.retain(|s| std::mem::replace(&mut level, s.1) != s.1);
        }
        all.retain(|_, s| !s.is_empty());
        Ok(Transitions {
            by_subject: all,
            after_end,
        })
    }

    fn count(&self) -> usize {
        self.by_subject.values().map(Vec::len).sum()
    }

    fn by_rule(&self) -> Value {
        let mut rules: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for ((rule, _), steps) in &self.by_subject {
            let r = rules.entry(rule).or_default();
            r.0 += 1;
            r.1 += steps.len();
        }
        let mut v = json!({ "after_the_input_ends": self.after_end });
        for (rule, (subjects, steps)) in rules {
            v[rule] = json!({"subjects": subjects, "transitions": steps});
        }
        v
    }

    /// Per rule and subject: the same levels in the same order at the same
    /// event times (rainfall: up to one hop later in the peer), or the
    /// first difference.
    fn compare(&self, ours: &Transitions) -> Value {
        let mut keys: Vec<&(String, String)> = self
            .by_subject
            .keys()
            .chain(ours.by_subject.keys())
            .collect();
        keys.sort();
        keys.dedup();
        let (mut same, mut differ) = (0, 0);
        let mut max_shift: BTreeMap<&str, i64> = BTreeMap::new();
        let mut first = Value::Null;
        let empty = Vec::new();
        for key in &keys {
            let theirs = self.by_subject.get(*key).unwrap_or(&empty);
            let mine = ours.by_subject.get(*key).unwrap_or(&empty);
            let levels = |s: &[(i64, u8)]| s.iter().map(|x| x.1).collect::<Vec<_>>();
            // How much later than ioc's each of the peer's transitions may
            // come: a rainfall alert opens at the reading in ioc, at the
            // window's end (up to one hop later) in the peers.
            let allowed = if key.0 == "rain_1h" { 0..300_000 } else { 0..1 };
            let shifts: Vec<i64> = theirs.iter().zip(mine).map(|(a, b)| a.0 - b.0).collect();
            if levels(theirs) == levels(mine) && shifts.iter().all(|d| allowed.contains(d)) {
                same += 1;
                let shift = shifts.into_iter().max_by_key(|d| d.abs()).unwrap_or(0);
                let m = max_shift.entry(&key.0).or_default();
                if shift.abs() > m.abs() {
                    *m = shift;
                }
            } else {
                differ += 1;
                if first.is_null() {
                    let show = |s: &[(i64, u8)]| {
                        s.iter()
                            .take(8)
                            .map(|(ts, l)| format!("{l}@{}", Timestamp(*ts)))
                            .collect::<Vec<_>>()
                    };
                    first = json!({
                        "rule": key.0, "subject": key.1,
                        "peer": show(theirs), "ioc": show(mine),
                    });
                }
            }
        }
        json!({
            "subjects": keys.len(),
            "same": same,
            "differ": differ,
            "max_shift_ms": max_shift,
            "first_difference": first,
        })
    }
}

/// The ioc side, in its own process: the file decoded and checked as
/// ingest does, into the engine (two workers) with the workload's rules,
/// every output drained, the alert transitions written.
fn run_ioc(devices: usize, readings: &Path, out: &Path) {
    let registry = Registry::sonla_scaled(devices);
    let rules = ioc_processing::RuleSet::parse(RULES, &registry, &|_| Err("no files".into()))
        .expect("benches/peers/rules.toml");
    let config = EngineConfig {
        workers: 2,
        rules: Some(Arc::new(rules)),
        // Event time comes from the file only.
        idle_timeout: Duration::from_secs(100 * 365 * 24 * 3600),
        ..EngineConfig::default()
    };
    let (tx, rx) = flume::bounded::<Vec<EngineOutput>>(256);
    let out = out.to_owned();
    let writer = std::thread::spawn(move || {
        let mut w = BufWriter::new(std::fs::File::create(out).unwrap());
        for batch in rx.iter() {
            for o in batch {
                if let EngineOutput::Alert(a) = o {
                    let t = json!({
                        "rule": a.rule, "device": a.subject,
                        "ts": a.evidence.ts.millis(), "level": a.level,
                    });
                    writeln!(w, "{t}").unwrap();
                }
            }
        }
        w.flush().unwrap();
    });
    let (engine, input) = Engine::start(&config, registry.clone(), tx).expect("engine");
    // A recording: the age and clock-skew limits do not apply (as in
    // `ioc backtest`); every other check does.
    let limits = Limits {
        max_future_skew_ms: i64::MAX / 4,
        max_age_ms: i64::MAX / 4,
        ..Limits::default()
    };
    let decoder = Decoder::new(registry.clone(), limits);
    let seen = SeqWindows::new(registry.devices().len());
    let mut reader =
        std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(readings).unwrap());
    let mut line = Vec::with_capacity(1024);
    let mut batch = Vec::with_capacity(1024);
    let now = Timestamp(i64::MAX / 4);
    let mut rejected = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).unwrap() == 0 {
            break;
        }
        match decoder.decode(None, line.trim_ascii_end(), now) {
            Ok(mut r) => {
                if seen.first_time(r.device, r.envelope.seq, r.envelope.ts) {
                    r.received = r.envelope.ts;
                    batch.push(r);
                }
            }
            Err(_) => rejected += 1,
        }
        if batch.len() == 1024 {
            input.send_all_blocking(batch.drain(..)).unwrap();
        }
    }
    input.send_all_blocking(batch.drain(..)).unwrap();
    drop(input);
    engine.join().unwrap();
    writer.join().unwrap();
    assert_eq!(rejected, 0, "the workload's readings are all valid");
}
