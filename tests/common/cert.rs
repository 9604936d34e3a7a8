//! Test certificates made by the `openssl` command.

use std::path::Path;

/// A self-signed certificate for 127.0.0.1 named `name`, written to
/// `dir/cert.pem` and `dir/key.pem` (each replaced whole, the key first:
/// a reload between the two renames fails and is tried again).
pub fn self_signed(dir: &Path, name: &str) {
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-days", "1", "-subj", &format!("/CN={name}")])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        // Its own trust anchor, but not a CA (webpki refuses a CA as a server).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(dir.join("key.pem.new"))
        .arg("-out")
        .arg(dir.join("cert.pem.new"))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the openssl command is needed to make test certificates (Debian: openssl)");
    assert!(status.success(), "openssl req failed");
    std::fs::rename(dir.join("key.pem.new"), dir.join("key.pem")).expect("rename key");
    std::fs::rename(dir.join("cert.pem.new"), dir.join("cert.pem")).expect("rename certificate");
}
