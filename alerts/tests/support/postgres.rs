//! A throwaway PostgreSQL server on a free loopback port, for tests.

#![allow(clippy::unwrap_used, missing_docs, dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A running server, stopped (immediately) and removed on drop.
pub struct Postgres {
    pub url: String,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl): run tests/run.sh, which installs Debian's `postgresql`")
    })
}

/// Runs `program` as the `postgres` user when we are root (PostgreSQL
/// refuses to run as root), else as ourselves.
fn run(program: &Path, args: &[&str]) {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let out = cmd.args(args).output().expect("run a PostgreSQL tool");
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status();
        let data = dir.path().join("data");
        let d = data.to_str().unwrap();
        run(
            &bin.join("initdb"),
            &[
                "-D",
                d,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=on",
            dir.path().display()
        );
        let log = dir.path().join("log").to_str().unwrap().to_owned();
        run(
            &bin.join("pg_ctl"),
            &["-D", d, "-o", &options, "-l", &log, "-w", "start"],
        );
        Postgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            bin,
            data,
            _dir: dir,
        }
    }
}

impl Postgres {
    /// A new, empty database on this server; its URL.
    pub fn database(&self, name: &str) -> String {
        let port = self
            .url
            .rsplit(':')
            .next()
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        run(
            &self.bin.join("psql"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                port,
                "-U",
                "postgres",
                "-c",
                &format!("CREATE DATABASE {name}"),
            ],
        );
        let (server, _) = self.url.rsplit_once('/').unwrap();
        format!("{server}/{name}")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let d = self.data.to_str().unwrap_or_default().to_owned();
        run(
            &self.bin.join("pg_ctl"),
            &["-D", &d, "-m", "immediate", "-w", "stop"],
        );
    }
}
