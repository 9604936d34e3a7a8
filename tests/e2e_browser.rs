//! The control-room page in a real browser (headless Chromium): it loads the
//! map (devices clustered at the province's zoom), follows the live feed and
//! lists an open alert with its area; the station's chart comes from the
//! history endpoint; a new critical alert flashes the screen; the language
//! and large type switch; a screenshot is saved as a test artifact
//! (`target/test-artifacts/control-room.png`); an operator acknowledges,
//! assigns and resolves the alert with the page's buttons (driven through the DevTools
//! protocol), and the store and the page agree; when the server goes away
//! the page says so.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Device, Screen, free_port, get_json, river_reading, test_config};

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
    let levels = common::alarm_levels(&running.registry, "river-to-hieu");
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

    // The page renders after it subscribed and its snapshot arrived: wait
    // for the device count and the alert, then check the whole DOM.
    // Without a token the page asks for one, and refuses a wrong one.
    let bare = format!("http://{}/", running.http_addr);
    let mut login = Page::open(browser, &bare).await;
    login
        .wait_true("!document.getElementById('login').hidden")
        .await;
    login
        .eval("document.getElementById('token').value = 'not-a-token'; document.querySelector('#login-form button').click(); true")
        .await;
    login
        .wait_true("document.getElementById('login-error').textContent.includes('không hợp lệ')")
        .await;
    login
        .eval(&format!(
            "document.getElementById('token').value = '{}'; document.querySelector('#login-form button').click(); true",
            common::TEST_ADMIN
        ))
        .await;
    login
        .wait_true("document.getElementById('login').hidden && document.body.innerText.includes('261 thiết bị')")
        .await;
    drop(login);

    // Signed in with the link the server prints at start.
    let url = format!("http://{}/#token={}", running.http_addr, common::TEST_ADMIN);
    let mut page = Page::open(browser, &url).await;
    page.wait_true(
        "document.getElementById('whoami').textContent === 'admin · admin' && location.hash === ''",
    )
    .await;
    // Everything below runs under the page's Content-Security-Policy.
    page.watch_csp().await;
    page.wait_true(
        "document.body.innerText.includes('261 thiết bị') \
         && !!document.querySelector('li[data-subject=\"river-to-hieu\"]')",
    )
    .await;
    let dom = page.eval("document.documentElement.outerHTML").await;
    let problems = check(dom.as_str().unwrap_or_default());
    assert!(problems.is_empty(), "{problems}");
    // At the province's zoom, quiet devices are grouped.
    page.wait_true("window.iocPerf.draws > 0 && window.iocPerf.clusters > 0")
        .await;

    // The alert's station: its chart, from the history endpoint.
    page.eval("document.querySelector('li[data-subject=\"river-to-hieu\"]').click(); true")
        .await;
    page.wait_true(
        "!document.getElementById('chart-box').hidden \
         && document.getElementById('chart-legend').innerText.includes('Mực nước (m)') \
         && document.getElementById('detail').innerText.includes('Căn cứ cảnh báo')",
    )
    .await;

    // The alert carries its zone and nearest shelters; the map draws the zones.
    page.wait_true(
        "(() => { const li = document.querySelector('li[data-subject=\"river-to-hieu\"]'); \
         return li.innerText.includes('Vùng ngập lụt ven suối Nậm La') && li.innerText.includes('Gần nhất:') \
         && window.iocPerf.zones > 10; })()",
    )
    .await;

    // A watch-listed plate read by three cameras: its track is drawn.
    for (k, camera) in ["cam-son-la-01", "cam-son-la-02", "cam-son-la-03"]
        .into_iter()
        .enumerate()
    {
        let pos = running.registry.get(camera).expect(camera).pos;
        let ts = ioc_schemas::Timestamp(
            ioc_schemas::Timestamp::now().millis() - 120_000 + 60_000 * k as i64,
        );
        let read = serde_json::json!({
            "v": 1, "device": camera, "ts": ts.to_rfc3339(), "seq": 1, "pos": pos,
            "camera": {"event": "plate_read", "plate": ioc_devices::simulator::WATCHED_PLATE, "confidence": 0.93}
        });
        device
            .publish(
                &format!("ioc/v1/camera/{camera}/telemetry"),
                read.to_string(),
            )
            .await;
    }
    page.wait_true("window.iocPerf.tracks >= 1").await;

    // A new critical alert (BĐ3 is severe) flashes the screen.
    let other = "river-chieng-an";
    let levels_other = common::alarm_levels(&running.registry, other);
    let mut other_seq = 0;
    common::wait_for_async("a second alert on the page", 20, async || {
        other_seq += 1;
        device
            .publish(
                &format!("ioc/v1/river_gauge/{other}/telemetry"),
                river_reading(other, other_seq, levels_other[2] + 0.2),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        page.eval("window.iocAlarms.count >= 1 && document.body.classList.contains('alarm')")
            .await
            == serde_json::Value::Bool(true)
    })
    .await;

    // English, then large type for the videowall.
    page.eval("document.getElementById('lang').click(); true")
        .await;
    page.wait_true(
        "document.documentElement.lang === 'en' && document.body.innerText.includes('Open alerts') \
         && document.getElementById('chart-legend').innerText.includes('Water level (m)')",
    )
    .await;
    page.eval("document.getElementById('large').click(); true")
        .await;
    page.wait_true("document.body.classList.contains('large')")
        .await;
    let png = page.screenshot().await;
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("control-room.png"), &png).unwrap();
    // Back to Vietnamese for the checks below.
    page.eval(
        "document.getElementById('lang').click(); document.getElementById('large').click(); true",
    )
    .await;

    let alert = get_json(running.http_addr, "/api/v1/alerts?subject=river-to-hieu").await;
    let id = alert[0]["id"].as_str().unwrap().to_owned();
    let item = "document.querySelector('li[data-subject=\"river-to-hieu\"]')";
    page.wait_true(&format!("!!{item} && !!{item}.querySelector('button.ack')"))
        .await;
    page.eval(&format!(
        "localStorage.setItem('ioc.operator', 'Lò Văn Lan'); {item}.querySelector('button.ack').click(); true"
    ))
    .await;
    let stored = wait_status(running.http_addr, &id, "acknowledged").await;
    assert_eq!(
        stored["alert"]["handling"]["acknowledged_by"],
        "Lò Văn Lan (admin)"
    );
    page.wait_true(&format!(
        "{item}.innerText.includes('Đã xác nhận bởi Lò Văn Lan (admin)') && !{item}.querySelector('button.ack')"
    ))
    .await;
    // Assigned to a team from the list (the page asks whom).
    page.eval(&format!(
        "window.prompt = () => 'Đội cứu hộ 2'; {item}.querySelector('button.assign').click(); true"
    ))
    .await;
    page.wait_true(&format!(
        "{item}.innerText.includes('Giao cho: Đội cứu hộ 2')"
    ))
    .await;
    assert_eq!(
        get_json(running.http_addr, &format!("/api/v1/alerts/{id}")).await["alert"]["handling"]["assignee"],
        "Đội cứu hộ 2"
    );
    page.eval(&format!(
        "{item}.querySelector('button.resolve').click(); true"
    ))
    .await;
    let stored = wait_status(running.http_addr, &id, "resolved").await;
    assert_eq!(
        stored["alert"]["handling"]["resolved_by"],
        "Lò Văn Lan (admin)"
    );
    page.wait_true(&format!("!{item}")).await;
    assert_eq!(page.csp_violations().await, serde_json::json!([]));
    // The server goes away: the page says the screen may be out of date.
    running.shutdown().await.unwrap();
    page.wait_true(
        "!document.getElementById('offline-banner').hidden \
         && document.getElementById('offline-banner').innerText.includes('Mất kết nối')",
    )
    .await;
    drop(page);
}

/// An admin tries a lowered BĐ3 for the Tô Hiệu gauge over the recorded
/// flood from the page: the backtest lists the alert only the new rules
/// raise and draws the station's timeline, in both languages; a rules file
/// with a mistake is refused with the problem named; then the admin applies
/// the file, which is written and put in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_backtests_a_rules_change_and_applies_it() {
    let browser = chromium();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, ioc::rules::DEMO_RULES).unwrap();
    std::fs::write(dir.path().join("watchlist.txt"), ioc::rules::DEMO_WATCHLIST).unwrap();
    // A recorded flood at the gauge: up to 0.3 m under BĐ3 and down again,
    // a reading a minute.
    let registry = ioc_devices::Registry::sonla_demo();
    let bd3 = common::alarm_levels(&registry, "river-to-hieu")[2];
    let t0 = 1_783_987_200_000i64;
    let recording = dir.path().join("flood.ndjson");
    std::fs::write(
        &recording,
        common::river_ndjson((0..240i64).map(|m| {
            let rise = 1.0 - (m - 120).abs() as f64 / 120.0;
            (
                "river-to-hieu",
                m as u64 + 1,
                bd3 - 2.0 + 1.7 * rise,
                t0 + m * 60_000,
            )
        })),
    )
    .unwrap();
    let mut config = test_config(format!("mqtt://127.0.0.1:{}", free_port()), true);
    config.rules.file = Some(rules.clone());
    config.rules.backtest_input = Some(recording);
    let running = ioc::app::start(config).await.expect("start");

    let url = format!("http://{}/#token={}", running.http_addr, common::TEST_ADMIN);
    let mut page = Page::open(browser, &url).await;
    page.wait_true("!document.getElementById('rules-open').hidden")
        .await;
    // The page works under its Content-Security-Policy (no inline script
    // or style): nothing it does is blocked.
    page.watch_csp().await;
    page.wait_true("!document.getElementById('rules-open').hidden")
        .await;
    page.eval("document.getElementById('rules-open').click(); true")
        .await;
    page.wait_true("document.getElementById('rules-text').value.includes('river_level')")
        .await;
    // A mistake first: refused, the problem named, nothing run.
    page.eval(
        "const a = document.getElementById('rules-text'); \
         a.value = a.value + '\\n[[rule]]\\nid = \"broken\"\\nkind = \"no_such_kind\"\\n'; \
         document.getElementById('bt-run').click(); true",
    )
    .await;
    page.wait_true(
        "document.querySelector('#bt-result .problems') !== null \
         && document.getElementById('bt-result').innerText.includes('no_such_kind')",
    )
    .await;
    // A file picked from disk lands in the editor.
    let picked = dir.path().join("picked.toml");
    std::fs::write(&picked, "# picked from disk\n").unwrap();
    let doc = page.call("DOM.getDocument", serde_json::json!({})).await;
    let input = page
        .call(
            "DOM.querySelector",
            serde_json::json!({"nodeId": doc["root"]["nodeId"], "selector": "#rules-upload"}),
        )
        .await;
    page.call(
        "DOM.setFileInputFiles",
        serde_json::json!({"nodeId": input["nodeId"], "files": [picked.display().to_string()]}),
    )
    .await;
    page.wait_true("document.getElementById('rules-text').value.startsWith('# picked from disk')")
        .await;
    // BĐ3 lowered by 0.5 m for this gauge alone.
    let lowered = format!(
        r#"
[[rule]]
id = "to_hieu_bd3"
kind = "threshold"
devices = ["river_gauge"]
ids = ["river-to-hieu"]
field = "water_level_m"
levels = [{{ name = "BĐ3", value = {}, severity = "severe" }}]
hysteresis = 0.2
title_vi = "Tô Hiệu trên BĐ3 hạ"
title_en = "Tô Hiệu above lowered BĐ3"
"#,
        bd3 - 0.5
    );
    let new_text = format!("{}{lowered}", ioc::rules::DEMO_RULES);
    page.eval(&format!(
        "document.getElementById('rules-text').value = {}; \
         document.getElementById('bt-run').click(); true",
        serde_json::to_string(&new_text).unwrap()
    ))
    .await;
    page.wait_true(
        "document.querySelector('#bt-result li.only_new[data-subject=\"river-to-hieu\"][data-rule=\"to_hieu_bd3\"]') !== null",
    )
    .await;
    let shown = page
        .eval("document.getElementById('bt-result').innerText")
        .await;
    let shown = shown.as_str().unwrap();
    assert!(shown.contains("Chỉ có với quy tắc mới"), "{shown}");
    assert!(shown.contains("Phường Tô Hiệu"), "{shown}");
    assert_eq!(
        page.eval("document.querySelectorAll('#bt-result li').length")
            .await,
        1,
        "only the lowered level differs: {shown}"
    );
    assert_eq!(
        page.eval("document.querySelectorAll('.timeline .bar.new').length")
            .await,
        1
    );
    page.eval("document.getElementById('lang').click(); true")
        .await;
    page.wait_true(
        "document.getElementById('bt-result').innerText.includes('Only with the new rules')",
    )
    .await;
    let png = page.screenshot().await;
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("backtest.png"), png).unwrap();

    // Applied: written to the rules file and in force.
    page.eval("window.confirm = () => true; document.getElementById('rules-apply').click(); true")
        .await;
    page.wait_true(
        "document.getElementById('bt-status').innerText.includes('The new rules are in force')",
    )
    .await;
    let on_disk = std::fs::read_to_string(&rules).unwrap();
    assert!(on_disk.contains("to_hieu_bd3"));
    let file = get_json(running.http_addr, "/api/v1/rules/file").await;
    assert!(file["text"].as_str().unwrap().contains("to_hieu_bd3"));
    assert_eq!(file["editable"], true);
    assert_eq!(page.csp_violations().await, serde_json::json!([]));
    drop(page);
    running.shutdown().await.unwrap();
}

/// The device registry on the page: an admin adds a river gauge with its
/// position picked on the map; its reading through Mosquitto is accepted
/// at once and raises its alert; the admin lowers its BĐ3 in the form and
/// the open alert follows to BĐ3; the gauge is retired with its button
/// and its next reading is a `retired_device` dead letter. An unknown
/// device shows in the adoption list and, adopted, its readings are
/// replayed. A viewer sees the registry without edit controls, and the API
/// refuses a viewer's change (403).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_manages_the_registry_on_the_page() {
    const NEW: &str = "river-suoi-muoi-moi";
    const STRANGER: &str = "rain-chua-dang-ky";
    const VIEWER: &str = "viewer-token-0123456789abcdef";
    let browser = chromium();
    let broker = common::Mosquitto::start();
    let mut config = test_config(format!("mqtt://127.0.0.1:{}", broker.port), false);
    config
        .http
        .auth
        .tokens
        .push(ioc_dashboard_api::auth::ApiToken {
            name: "wall-screen".into(),
            token: VIEWER.into(),
            role: ioc_dashboard_api::auth::Role::Viewer,
        });
    let running = ioc::app::start(config).await.expect("start");
    let addr = running.http_addr;
    let url = format!("http://{addr}/#token={}", common::TEST_ADMIN);
    let mut page = Page::open(browser, &url).await;
    page.watch_csp().await;
    page.wait_true("!document.getElementById('registry-open').hidden && document.body.classList.contains('admin') && lastSeq !== null")
        .await;
    page.eval("document.getElementById('registry-open').click(); true")
        .await;
    page.wait_true("document.querySelectorAll('#reg-table tbody tr').length > 100")
        .await;

    // A new gauge, its position picked on the map.
    page.eval("document.getElementById('reg-new').click(); document.getElementById('rf-pick').click(); true")
        .await;
    page.wait_true("document.getElementById('registry-panel').hidden && document.body.classList.contains('picking')")
        .await;
    let centre = page
        .eval("(() => { const r = document.getElementById('map').getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        .await;
    for kind in ["mousePressed", "mouseReleased"] {
        page.call(
            "Input.dispatchMouseEvent",
            serde_json::json!({"type": kind, "x": centre[0], "y": centre[1], "button": "left", "clickCount": 1}),
        )
        .await;
    }
    page.wait_true("!document.getElementById('registry-panel').hidden && document.getElementById('rf-lon').value !== ''")
        .await;
    let picked = page
        .eval("[Number(document.getElementById('rf-lon').value), Number(document.getElementById('rf-lat').value)]")
        .await;
    let (lon, lat) = (picked[0].as_f64().unwrap(), picked[1].as_f64().unwrap());
    assert!(
        (103.0..106.0).contains(&lon) && (20.5..22.5).contains(&lat),
        "picked {picked}"
    );
    page.eval(&format!(
        "const v = (id, x) => document.getElementById(id).value = x;          v('rf-id', '{NEW}'); v('rf-kind', 'river_gauge'); v('rf-name', 'Trạm thủy văn Suối Muội (mới)');          v('rf-bd1', '3'); v('rf-bd2', '4'); v('rf-bd3', '5'); v('rf-river', 'Suối Muội');          document.getElementById('rf-save').click(); true"
    ))
    .await;
    page.wait_true(&format!(
        "document.querySelector('#reg-table tr[data-id=\"{NEW}\"]') !== null && document.getElementById('reg-form').hidden"
    ))
    .await;
    let registered = get_json(addr, &format!("/api/v1/registry/devices/{NEW}")).await;
    assert_eq!(registered["pos"][0].as_f64(), Some(lon), "{registered}");
    assert_eq!(registered["changes"][0]["action"], "create");

    // Its reading through Mosquitto: accepted at once, its alert at BĐ2.
    let device = Device::connect(broker.port).await;
    let topic = format!("ioc/v1/river_gauge/{NEW}/telemetry");
    let mut seq = 0;
    let mut screen = Screen::connect(addr).await;
    loop {
        seq += 1;
        device.publish(&topic, river_reading(NEW, seq, 4.6)).await;
        match tokio::time::timeout(Duration::from_secs(2), screen.alert(NEW, "open")).await {
            Ok(a) => {
                assert_eq!(a["level"], 2);
                break;
            }
            Err(_) => assert!(seq < 10, "no alert after {seq} readings"),
        }
    }
    page.wait_true(&format!(
        "[...alerts.values()].some((a) => a.subject === '{NEW}' && a.level === 2)"
    ))
    .await;
    // BĐ3 lowered under the water in the form: the open alert goes to BĐ3.
    page.eval(&format!(
        "document.querySelector('#reg-table tr[data-id=\"{NEW}\"] button[data-action=\"edit\"]').click();          document.getElementById('rf-bd3').value = '4.5'; document.getElementById('rf-save').click(); true"
    ))
    .await;
    page.wait_true(&format!(
        "[...alerts.values()].some((a) => a.subject === '{NEW}' && a.level === 3)"
    ))
    .await;
    let png = page.screenshot().await;
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("registry.png"), png).unwrap();

    // Retired with its button: its next reading is refused.
    page.eval(&format!(
        "window.confirm = () => true; window.prompt = () => 'thay trạm';          document.querySelector('#reg-table tr[data-id=\"{NEW}\"] button[data-action=\"retire\"]').click(); true"
    ))
    .await;
    page.wait_true(&format!(
        "document.querySelector('#reg-table tr.retired[data-id=\"{NEW}\"]') !== null"
    ))
    .await;
    seq += 1;
    device.publish(&topic, river_reading(NEW, seq, 6.0)).await;
    common::wait_for("the retired gauge's reading refused", 10, || {
        running
            .ingest_stats
            .rejected_count(ioc_schemas::RejectReason::RetiredDevice)
            == 1
    })
    .await;

    // An unknown rain gauge: listed for adoption, adopted on the page, its
    // readings replayed.
    let stranger_topic = format!("ioc/v1/rain_gauge/{STRANGER}/telemetry");
    for s in 1..=2u64 {
        let reading = serde_json::json!({
            "v": 1, "device": STRANGER, "ts": ioc_schemas::Timestamp::now().to_rfc3339(), "seq": s,
            "pos": [103.92, 21.33], "hydrology": {"rainfall_mm": 1.5},
        });
        device.publish(&stranger_topic, reading.to_string()).await;
    }
    page.eval("loadUnregistered(); true").await;
    for _ in 0..50 {
        if page
            .eval(&format!(
                "document.querySelector('#reg-unregistered tr[data-id=\"{STRANGER}\"]') !== null"
            ))
            .await
            == serde_json::Value::Bool(true)
        {
            break;
        }
        page.eval("loadUnregistered(); true").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    page.eval(&format!(
        "document.querySelector('#reg-unregistered tr[data-id=\"{STRANGER}\"] button[data-action=\"adopt\"]').click(); true"
    ))
    .await;
    page.wait_true("document.getElementById('rf-kind').value === 'rain_gauge' && document.getElementById('rf-lon').value === '103.92'")
        .await;
    page.eval("document.getElementById('rf-name').value = 'Trạm đo mưa mới nhận'; document.getElementById('rf-save').click(); true")
        .await;
    page.wait_true(&format!(
        "devices.has('{STRANGER}') && devices.get('{STRANGER}').state !== null && devices.get('{STRANGER}').state.seq === 2"
    ))
    .await;
    assert_eq!(page.csp_violations().await, serde_json::json!([]));
    drop(page);

    // A viewer: the registry without edit controls; the API says 403.
    let url = format!("http://{addr}/#token={VIEWER}");
    let mut viewer = Page::open(browser, &url).await;
    viewer
        .wait_true("!document.getElementById('registry-open').hidden && lastSeq !== null")
        .await;
    viewer
        .eval("document.getElementById('registry-open').click(); true")
        .await;
    viewer
        .wait_true("document.querySelectorAll('#reg-table tbody tr').length > 100")
        .await;
    assert_eq!(
        viewer
            .eval("document.querySelectorAll('#reg-table button').length + (document.getElementById('reg-new').offsetParent === null ? 0 : 1) + document.querySelectorAll('#reg-unregistered button').length")
            .await,
        0
    );
    let (status, _) = common::http(
        addr,
        "POST",
        "/api/v1/registry/devices",
        &[
            ("Authorization", &*format!("Bearer {VIEWER}")),
            ("Content-Type", "application/json"),
        ],
        br#"{"id":"x","kind":"rain_gauge","name":"x","pos":[103.9,21.3],"expected_interval_s":60}"#,
    )
    .await;
    assert_eq!(status, 403);
    drop(viewer);
    running.shutdown().await.unwrap();
}

/// Polls the alert until it has `status`; returns it with its history.
/// Over HTTPS (a certificate made by the `openssl` command): the page
/// signs in, its live feed comes over `wss://`, and it runs under the
/// Content-Security-Policy without a violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_works_over_https() {
    let browser = chromium();
    let dir = tempfile::tempdir().unwrap();
    common::cert::self_signed(dir.path(), "127.0.0.1");
    let mut config = test_config(format!("mqtt://127.0.0.1:{}", free_port()), true);
    config.http.tls = Some(ioc_dashboard_api::tls::TlsConfig {
        cert_file: dir.path().join("cert.pem"),
        key_file: dir.path().join("key.pem"),
        reload_check: Duration::from_secs(10),
        redirect_listen: None,
    });
    let running = ioc::app::start(config).await.expect("start");
    let url = format!(
        "https://{}/#token={}",
        running.http_addr,
        common::TEST_ADMIN
    );
    let mut page = Page::open(browser, &url).await;
    page.watch_csp().await;
    page.wait_true(
        "location.protocol === 'https:' \
         && document.getElementById('whoami').textContent === 'admin · admin' \
         && document.body.innerText.includes('261 thiết bị')",
    )
    .await;
    assert_eq!(page.csp_violations().await, serde_json::json!([]));
    drop(page);
    running.shutdown().await.unwrap();
}

/// Sign-in with the province's account: the page sends the browser to a
/// real OpenID provider (authorization code with PKCE), a person signs in
/// on its pages, and back on the page ioc trades the code for a token and
/// the person is signed in with the role the provider gives them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_signs_in_with_the_provinces_identity_provider() {
    let browser = chromium();
    let keys = tempfile::tempdir().unwrap();
    let (provider_port, page_port) = (free_port(), free_port());
    let page = format!("http://127.0.0.1:{page_port}/");
    let _provider =
        common::oidc::Provider::start(provider_port, keys.path(), "a", 300, Some(&page));
    let mut config = test_config(format!("mqtt://127.0.0.1:{}", free_port()), true);
    config.http.listen = ([127, 0, 0, 1], page_port).into();
    config.http.auth.oidc = Some(ioc_dashboard_api::oidc::OidcConfig {
        issuer: format!("http://127.0.0.1:{provider_port}"),
        audience: "ioc".into(),
        role_claim: None,
        refresh: Duration::from_secs(3600),
        leeway: Duration::from_secs(30),
        client_id: Some("ioc-page".into()),
        scope: "openid api".into(),
    });
    let running = ioc::app::start(config).await.expect("start");
    let mut tab = Page::open(browser, &page).await;
    tab.wait_true("!document.getElementById('sso').hidden")
        .await;
    tab.eval("document.getElementById('sso').click(); true")
        .await;
    // The provider's own sign-in page, then its consent page.
    tab.wait_true("!!document.querySelector('input[name=login]')")
        .await;
    tab.eval(
        "document.querySelector('input[name=login]').value = 'chief'; \
         document.querySelector('input[name=password]').value = 'any'; \
         document.querySelector('form').submit(); true",
    )
    .await;
    tab.wait_true("location.pathname.includes('/interaction/') && !document.querySelector('input[name=login]') && !!document.querySelector('form')")
        .await;
    tab.eval("document.querySelector('form').submit(); true")
        .await;
    // Back on the page, signed in as the provider's admin.
    tab.wait_true(
        "location.port === '' + PORT && document.getElementById('login').hidden \
         && document.getElementById('whoami').textContent === 'chief · admin' \
         && location.search === ''"
            .replace("PORT", &page_port.to_string())
            .as_str(),
    )
    .await;
    drop(tab);
    running.shutdown().await.unwrap();
}

async fn wait_status(addr: std::net::SocketAddr, id: &str, status: &str) -> serde_json::Value {
    let path = format!("/api/v1/alerts/{id}");
    common::wait_for_async(&format!("alert {id} {status}"), 10, async || {
        get_json(addr, &path).await["alert"]["status"] == status
    })
    .await;
    get_json(addr, &path).await
}

/// A page in headless Chromium, driven over the DevTools protocol.
struct Page {
    child: std::process::Child,
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Page {
    async fn open(browser: &str, url: &str) -> Page {
        let port = free_port();
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1400,900",
                "--remote-allow-origins=*",
                // The HTTPS test's certificate is made by the test.
                "--ignore-certificate-errors",
            ])
            .arg(format!("--remote-debugging-port={port}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run chromium");
        let devtools: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        tokio::task::spawn_blocking(move || common::wait_for_port(devtools, "chromium DevTools"))
            .await
            .unwrap();
        let mut target = None;
        for _ in 0..100 {
            // Chromium keeps the connection open whatever the request says:
            // a client that reads by Content-Length.
            let list: serde_json::Value =
                match reqwest::get(format!("http://{devtools}/json/list")).await {
                    Ok(r) => serde_json::from_str(&r.text().await.unwrap_or_default())
                        .unwrap_or_default(),
                    Err(_) => serde_json::Value::Null,
                };
            target = list.as_array().into_iter().flatten().find_map(|t| {
                (t["type"] == "page")
                    .then(|| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))?
            });
            if target.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let target = target.expect("a page target in DevTools");
        let (ws, _) = tokio_tungstenite::connect_async(target).await.unwrap();
        Page {
            child,
            ws,
            next_id: 0,
            _profile: profile,
        }
    }

    /// Records every Content-Security-Policy violation from the next load
    /// on, and loads the page again.
    async fn watch_csp(&mut self) {
        self.call("Page.enable", serde_json::json!({})).await;
        self.call(
            "Page.addScriptToEvaluateOnNewDocument",
            serde_json::json!({"source": "window.__csp = []; document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));"}),
        )
        .await;
        self.call("Page.reload", serde_json::json!({})).await;
        self.wait_true("Array.isArray(window.__csp) && document.readyState === 'complete'")
            .await;
    }

    /// The violations recorded since [`Page::watch_csp`].
    async fn csp_violations(&mut self) -> serde_json::Value {
        self.eval("window.__csp").await
    }

    /// Evaluates `expression` in the page; its value.
    async fn eval(&mut self, expression: &str) -> serde_json::Value {
        let result = self
            .call(
                "Runtime.evaluate",
                serde_json::json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Calls a DevTools method; its result.
    async fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        self.next_id += 1;
        let id = self.next_id;
        let call = serde_json::json!({"id": id, "method": method, "params": params});
        self.ws.send(Message::text(call.to_string())).await.unwrap();
        loop {
            let msg = self.ws.next().await.expect("DevTools closed").unwrap();
            let Message::Text(text) = msg else { continue };
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                return v["result"].clone();
            }
        }
    }

    /// A PNG of the page as it is drawn.
    async fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine as _;
        let data = self
            .call(
                "Page.captureScreenshot",
                serde_json::json!({"format": "png"}),
            )
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(data["data"].as_str().unwrap_or_default())
            .unwrap()
    }

    /// Waits (up to 20 s) until `expression` is true in the page.
    async fn wait_true(&mut self, expression: &str) {
        for _ in 0..200 {
            if self.eval(expression).await == serde_json::Value::Bool(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("never true in the page: {expression}");
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
