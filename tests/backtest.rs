//! `ioc backtest` through the binary: a recorded flood at one gauge, the
//! BĐ3 level lowered by 0.5 m, and the diff it prints and writes.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const GAUGE: &str = "river-to-hieu";
/// 2026-07-14T00:00:00Z.
const T0: i64 = 1_783_987_200_000;
const MINUTE: i64 = 60_000;
/// BĐ3 of the gauge in the shipped catalogue.
const BD3: f64 = 6.3;
const HYSTERESIS: f64 = 0.2;

/// Water level at minute `m`: two flood waves over a 3 m stage. The first
/// peaks at 6.05 m (above BĐ3 − 0.5 m, below BĐ3), the second at 7.05 m.
fn level(m: i64) -> f64 {
    let wave = |start: i64, peak: f64| {
        let x = m - start;
        if (0..=120).contains(&x) {
            (peak - 3.0) * (1.0 - (x - 60).abs() as f64 / 60.0)
        } else {
            0.0
        }
    };
    3.0 + wave(60, 6.05) + wave(300, 7.05)
}

const MINUTES: i64 = 600;

fn rules(bd3: f64) -> String {
    format!(
        r#"
[[rule]]
id = "river_bd3"
kind = "threshold"
devices = ["river_gauge"]
ids = ["{GAUGE}"]
field = "water_level_m"
levels = [{{ name = "BĐ3", value = {bd3}, severity = "severe" }}]
hysteresis = {HYSTERESIS}
title_vi = "Mực nước trên BĐ3"
title_en = "Water above BĐ3"
"#
    )
}

/// Event time of the first reading at or above `threshold` from minute
/// `from`, and of the first one after it below `threshold - HYSTERESIS`.
fn episode(from: i64, threshold: f64) -> Option<(i64, i64)> {
    let open = (from..MINUTES).find(|&m| level(m) >= threshold)?;
    let close = (open..MINUTES).find(|&m| level(m) < threshold - HYSTERESIS)?;
    Some((T0 + open * MINUTE, T0 + close * MINUTE))
}

fn write_recording(path: &Path) {
    // A corrupt line, a reading of a device nobody registered and a
    // duplicate: counted, reported with their line numbers, nothing else lost.
    let mut body = b"{\"v\":1,\"device\":\n".to_vec();
    body.extend_from_slice(&common::river_reading_at("river-nowhere", 1, 3.0, T0));
    body.push(b'\n');
    for m in 0..MINUTES {
        body.extend(common::river_ndjson([(
            GAUGE,
            m as u64 + 1,
            level(m),
            T0 + m * MINUTE,
        )]));
        if m == 4 {
            body.extend(common::river_ndjson([(
                GAUGE,
                5,
                level(4),
                T0 + 4 * MINUTE,
            )]));
        }
    }
    std::fs::write(path, body).unwrap();
}

fn backtest(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ioc"))
        .current_dir(dir)
        .args(["backtest", "--input", "flood.ndjson"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn millis(v: &Value) -> i64 {
    ioc_schemas::Timestamp::parse_rfc3339(v.as_str().unwrap())
        .unwrap()
        .millis()
}

#[test]
fn lowering_bd3_by_half_a_metre_adds_one_alert_and_opens_the_other_earlier() {
    let dir = tempfile::tempdir().unwrap();
    write_recording(&dir.path().join("flood.ndjson"));
    std::fs::write(dir.path().join("current.toml"), rules(BD3)).unwrap();
    std::fs::write(dir.path().join("lowered.toml"), rules(BD3 - 0.5)).unwrap();

    let (ok, stdout, stderr) = backtest(
        dir.path(),
        &[
            "--rules",
            "lowered.toml",
            "--against",
            "current.toml",
            "--json",
            "report.json",
        ],
    );
    assert!(ok, "backtest failed:\n{stdout}\n{stderr}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    let input = &report["input"];
    assert_eq!(input["readings"], MINUTES, "{input}");
    assert_eq!(input["duplicates"], 1, "{input}");
    assert_eq!(input["bad"], 2, "{input}");
    let bad: Vec<u64> = input["bad_lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["line"].as_u64().unwrap())
        .collect();
    assert_eq!(bad, vec![1, 2]);
    assert!(stdout.contains("line 2: "), "{stdout}");

    let diff = &report["diff"];
    assert_eq!(
        diff["only_current"].as_array().unwrap().len(),
        0,
        "{diff:#}"
    );
    assert_eq!(diff["same"], 0, "{diff:#}");

    // The first wave only reaches the lowered level: one new alert.
    let only_new = diff["only_new"].as_array().unwrap();
    assert_eq!(only_new.len(), 1, "{diff:#}");
    let (open, close) = episode(0, BD3 - 0.5).unwrap();
    assert!(
        open < T0 + 300 * MINUTE,
        "the new alert is the first wave's"
    );
    assert_eq!(only_new[0]["rule"], "river_bd3");
    assert_eq!(only_new[0]["subject"], GAUGE);
    assert_eq!(millis(&only_new[0]["opened_at"]), open);
    assert_eq!(millis(&only_new[0]["resolved_at"]), close);
    assert!(episode(0, BD3).unwrap().0 >= T0 + 300 * MINUTE);

    // The second wave's alert opens earlier and resolves later.
    let changed = diff["changed"].as_array().unwrap();
    assert_eq!(changed.len(), 1, "{diff:#}");
    let (new_open, new_close) = episode(300, BD3 - 0.5).unwrap();
    let (cur_open, cur_close) = episode(300, BD3).unwrap();
    let c = &changed[0];
    assert_eq!(millis(&c["new"]["opened_at"]), new_open);
    assert_eq!(millis(&c["current"]["opened_at"]), cur_open);
    assert_eq!(c["start_ms"], new_open - cur_open);
    assert!(new_open < cur_open);
    assert_eq!(c["end_ms"], new_close - cur_close);
    assert!(
        stdout.contains("opens") && stdout.contains("earlier"),
        "{stdout}"
    );

    // The same rules against themselves: nothing differs.
    let (ok, stdout, stderr) = backtest(
        dir.path(),
        &["--rules", "current.toml", "--against", "current.toml"],
    );
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("no difference: both raise the same 1 episodes"),
        "{stdout}"
    );

    // From the second wave on, the first wave's alert is not compared.
    let (ok, stdout, _) = backtest(
        dir.path(),
        &[
            "--rules",
            "lowered.toml",
            "--against",
            "current.toml",
            "--from",
            "2026-07-14T04:00:00Z",
            "--warmup",
            "1h",
        ],
    );
    assert!(ok);
    assert!(!stdout.contains("only new:"), "{stdout}");
    assert!(stdout.contains("~ changed:"), "{stdout}");
}

#[test]
fn bad_rules_and_empty_periods_are_refused_with_their_reasons() {
    let dir = tempfile::tempdir().unwrap();
    write_recording(&dir.path().join("flood.ndjson"));
    std::fs::write(
        dir.path().join("bad.toml"),
        rules(BD3).replace("hysteresis = 0.2", "hysteresis = -1\nfield2 = 1"),
    )
    .unwrap();
    std::fs::write(dir.path().join("current.toml"), rules(BD3)).unwrap();
    let (ok, _, stderr) = backtest(
        dir.path(),
        &["--rules", "bad.toml", "--against", "current.toml"],
    );
    assert!(!ok);
    assert!(stderr.contains("the rules tried"), "{stderr}");
    assert!(stderr.contains("hysteresis"), "{stderr}");
    assert!(stderr.contains("field2"), "{stderr}");

    let (ok, _, stderr) = backtest(
        dir.path(),
        &[
            "--rules",
            "current.toml",
            "--against",
            "current.toml",
            "--from",
            "2027-01-01T00:00:00Z",
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("no readings in the period")
            && stderr.contains("it holds readings from 2026-07-14T00:00:00.000Z"),
        "{stderr}"
    );
}
