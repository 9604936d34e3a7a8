//! The control-room page in a real browser (headless Chromium): it loads the
//! map, follows the live feed and lists an open alert with its area.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Device, Screen, free_port, river_reading, test_config};

fn chromium() -> &'static str {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap_or_else(|| {
        panic!(
            "Chromium is not installed: run tests/run.sh (it installs the Debian package chromium)"
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_shows_the_live_alert_with_its_area() {
    let browser = chromium();
    let port = free_port();
    let running = ioc::app::start(test_config(format!("mqtt://127.0.0.1:{port}"), true))
        .await
        .expect("start");
    let levels = running
        .registry
        .get("river-to-hieu")
        .unwrap()
        .thresholds
        .alarm_levels_m
        .unwrap();
    let mut screen = Screen::connect(running.http_addr).await;
    screen.next().await.unwrap();
    let device = Device::connect(port).await;
    let mut seq = 0;
    loop {
        seq += 1;
        device
            .publish(
                "ioc/v1/river_gauge/river-to-hieu/telemetry",
                river_reading("river-to-hieu", seq, levels[2] + 0.1),
            )
            .await;
        if tokio::time::timeout(
            Duration::from_secs(2),
            screen.alert("river-to-hieu", "open"),
        )
        .await
        .is_ok()
        {
            break;
        }
        assert!(seq < 10, "no alert");
    }

    // The page renders after its WebSocket snapshot arrives, in real time;
    // headless Chromium dumps the DOM on a virtual-time budget, so a dump
    // can come too early on a loaded machine. Try a few times.
    let url = format!("http://{}/", running.http_addr);
    let mut problems = String::new();
    for _ in 0..5 {
        let dom = dump_dom(browser, &url).await;
        problems = check(&dom);
        if problems.is_empty() {
            break;
        }
    }
    assert!(problems.is_empty(), "{problems}");
    running.shutdown().await.unwrap();
}

async fn dump_dom(browser: &'static str, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let url = url.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1400,900",
                "--virtual-time-budget=4000",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .output()
    })
    .await
    .unwrap()
    .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What is wrong with the rendered page; empty when nothing is.
fn check(dom: &str) -> String {
    let mut p = Vec::new();
    if !dom.contains("class=\"conn up\"") {
        p.push("the page did not connect to the live feed");
    }
    if !dom.contains("261 thiết bị") {
        p.push("the device count is missing");
    }
    if !dom.contains("data-subject=\"river-to-hieu\"") {
        p.push("the alert is not listed");
    }
    if !(dom.contains("BĐ3") && dom.contains("Phường Tô Hiệu · Thành phố Sơn La")) {
        p.push("the alert's level or area is missing");
    }
    if p.is_empty() {
        String::new()
    } else {
        format!("{}:\n{dom}", p.join("; "))
    }
}
