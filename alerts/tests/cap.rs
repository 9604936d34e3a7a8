//! Every CAP message the store produces is valid against the OASIS CAP 1.2
//! schema (checked with `xmllint`), and the feed is well-formed XML.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::process::Command;

use ioc_alerts::channels::cap::{self, CapSender};
#[path = "support/fixture.rs"]
mod fixture;

use fixture::rule_alert;
use ioc_schemas::{Alert, AlertStatus, Evidence, Severity, Timestamp};

fn alert(version: u32, status: AlertStatus, severity: Severity) -> Alert {
    let mut a = rule_alert(
        "river_level",
        "river-to-hieu",
        1_767_225_600_000,
        2,
        version,
    );
    a.status = status;
    a.severity = severity;
    a.level = if status == AlertStatus::Resolved {
        0
    } else {
        2
    };
    a.title_vi =
        "Mực nước sông lên BĐ2 tại Trạm thủy văn Tô Hiệu (Nậm La): 5.46 m <&> \"x\"".into();
    a.title_en = "River water level up to BĐ2 at Tô Hiệu & co".into();
    a.evidence = Evidence::new(5.46, "m", 5.0, Timestamp(1_767_225_660_000), 9);
    a.updated_at = Timestamp(1_767_225_660_123);
    a
}

fn xmllint(args: &[&str], file: &Path) -> (bool, String) {
    let out = Command::new("xmllint").args(args).arg(file).output().unwrap_or_else(|e| {
        panic!("xmllint is not installed ({e}): run tests/run.sh, which installs Debian's libxml2-utils")
    });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn messages_are_valid_cap_1_2_and_the_feed_is_well_formed() {
    let xsd = Path::new(env!("CARGO_MANIFEST_DIR")).join("cap/CAP-v1.2.xsd");
    let dir = tempfile::tempdir().unwrap();
    let from = CapSender::default();
    let cases = [
        alert(1, AlertStatus::Open, Severity::Moderate),
        alert(2, AlertStatus::Acknowledged, Severity::Severe),
        alert(5, AlertStatus::Resolved, Severity::Extreme),
    ];
    for (i, a) in cases.iter().enumerate() {
        let text = cap::message(a, &from);
        let file = dir.path().join(format!("{i}.xml"));
        std::fs::write(&file, &text).unwrap();
        let (ok, err) = xmllint(&["--noout", "--schema", xsd.to_str().unwrap()], &file);
        assert!(ok, "invalid CAP:\n{err}\n{text}");
        assert!(text.contains(&format!("<identifier>{}:{}</identifier>", a.id, a.version)));
        assert!(
            text.contains("<sent>2026-01-01T00:01:00-00:00</sent>"),
            "{text}"
        );
    }
    let first = cap::message(&cases[0], &from);
    assert!(first.contains("<msgType>Alert</msgType>") && !first.contains("<references>"));
    let last = cap::message(&cases[2], &from);
    assert!(last.contains("<msgType>Update</msgType>"));
    assert!(
        last.contains("<responseType>AllClear</responseType>")
            && last.contains("<urgency>Past</urgency>")
    );
    assert!(last.contains(&format!(
        "<references>ioc.sonla.example,{}:1,2026-01-01T00:00:00-00:00</references>",
        cases[2].id
    )));

    let feed = cap::feed(&cases, &from, "http://127.0.0.1:8080/api/v1/alerts.cap");
    let file = dir.path().join("feed.xml");
    std::fs::write(&file, &feed).unwrap();
    let (ok, err) = xmllint(&["--noout"], &file);
    assert!(ok, "feed is not well-formed:\n{err}");
    assert_eq!(feed.matches("<entry>").count(), 3);
}
