//! The deployment files in `deploy/` say what ioc reads: the systemd units
//! pass `systemd-analyze verify`; the compose file and the Kubernetes
//! manifest give each process of the cluster its own index, name every
//! process in the hosts list the way the others reach it, and carry a
//! configuration every process accepts. (Building the image and running
//! the compose file and the manifest need registries this test does not
//! reach; the README says how.)

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use ioc::config::Config;
use yaml_rust2::{Yaml, YamlLoader};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

fn yaml(file: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(deploy(file)).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The configuration `text` as process `process` reads it, with the
/// database a secret or the environment gives.
fn member(text: &str, process: usize, database: Option<&str>) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ioc.toml");
    std::fs::write(&path, text).unwrap();
    let mut c = Config::load(Some(&path)).unwrap();
    c.cluster.process = process;
    if let Some(d) = database {
        c.alerts.database = d.into();
    }
    assert_eq!(c.problems(), Vec::<String>::new(), "process {process}");
    c
}

#[test]
fn systemd_units_verify() {
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("systemd-analyze is not installed: run tests/run.sh (Debian's `systemd`)")
        });
    let dir = tempfile::tempdir().unwrap();
    // The units run the installed binary; verify checks it is executable,
    // so they are checked against the one just built. The template is
    // checked as an instance.
    for (unit, name) in [
        ("ioc.service", "ioc.service"),
        ("ioc@.service", "ioc@0.service"),
    ] {
        let text = std::fs::read_to_string(deploy(&format!("systemd/{unit}")))
            .unwrap()
            .replace("/usr/local/bin/ioc", env!("CARGO_BIN_EXE_ioc"));
        assert!(
            text.contains("Restart=on-failure"),
            "{unit} restarts on failure"
        );
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(analyze)
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify {unit}: {}\n{stderr}",
            out.status
        );
    }
    let template = std::fs::read_to_string(deploy("systemd/ioc@.service")).unwrap();
    assert!(template.contains("Environment=IOC_CLUSTER__PROCESS=%i"));
}

#[test]
fn the_compose_cluster_gives_each_process_its_index_and_one_configuration() {
    let doc = &yaml("cluster/compose.yaml")[0];
    let services = &doc["services"];
    let text = std::fs::read_to_string(deploy("cluster/ioc.toml")).unwrap();
    let first = member(&text, 0, None);
    let hosts = &first.cluster.hosts;
    assert_eq!(hosts.len(), 3);
    for (p, host) in hosts.iter().enumerate() {
        let name = format!("ioc-{p}");
        let service = &services[name.as_str()];
        assert!(!service.is_badvalue(), "compose.yaml has no service {name}");
        assert_eq!(
            host,
            &format!("{name}:7100"),
            "hosts[{p}] is service {name}"
        );
        assert_eq!(
            service["environment"]["IOC_CLUSTER__PROCESS"].as_str(),
            Some(p.to_string().as_str())
        );
        // The shared part, through the `<<: *ioc` merge.
        let shared = &service["<<"];
        let volumes = shared["volumes"].as_vec().unwrap();
        assert!(
            volumes
                .iter()
                .any(|v| v.as_str() == Some("./ioc.toml:/etc/ioc/ioc.toml:ro")),
            "{name} mounts ioc.toml"
        );
        assert_eq!(shared["restart"].as_str(), Some("on-failure"));
        let c = member(&text, p, None);
        assert_eq!(c.for_this_process().simulator.enabled, p == 0);
    }
    // What the configuration points at is in the compose file.
    for (what, url) in [
        ("mqtt.url", first.mqtt.url.as_str()),
        ("alerts.database", first.alerts.database.as_str()),
        ("influx.url", first.influx.url.as_str()),
        (
            "kafka.bootstrap_servers",
            first.kafka.bootstrap_servers.as_str(),
        ),
    ] {
        let host = url
            .rsplit('@')
            .next()
            .unwrap()
            .trim_start_matches("mqtt://")
            .trim_start_matches("http://")
            .split(':')
            .next()
            .unwrap();
        assert!(
            !services[host].is_badvalue(),
            "{what} = {url:?}: compose.yaml has no service {host}"
        );
    }
}

#[test]
fn the_kubernetes_statefulset_takes_its_index_from_the_pod_ordinal() {
    let docs = yaml("kubernetes/ioc.yaml");
    let kind = |k: &str| {
        docs.iter()
            .filter(|d| d["kind"].as_str() == Some(k))
            .collect::<Vec<_>>()
    };
    let sts = kind("StatefulSet")[0];
    let name = sts["metadata"]["name"].as_str().unwrap();
    let service = sts["spec"]["serviceName"].as_str().unwrap();
    let replicas = sts["spec"]["replicas"].as_i64().unwrap() as usize;
    let headless = kind("Service")
        .into_iter()
        .find(|s| s["metadata"]["name"].as_str() == Some(service))
        .expect("the StatefulSet's headless service");
    assert_eq!(headless["spec"]["clusterIP"].as_str(), Some("None"));
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true)
    );
    let port = headless["spec"]["ports"][0]["port"].as_i64().unwrap();
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    let env = container["env"].as_vec().unwrap();
    let var = |n: &str| env.iter().find(|e| e["name"].as_str() == Some(n)).unwrap();
    assert_eq!(
        var("IOC_CLUSTER__PROCESS")["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("metadata.labels['apps.kubernetes.io/pod-index']")
    );
    assert!(!var("IOC_ALERTS__DATABASE")["valueFrom"]["secretKeyRef"].is_badvalue());
    let text = kind("ConfigMap")[0]["data"]["ioc.toml"].as_str().unwrap();
    for p in 0..replicas {
        let c = member(text, p, Some("postgres://ioc:secret@postgres:5432/ioc"));
        assert_eq!(c.cluster.hosts.len(), replicas);
        assert!(
            c.cluster.hosts[p].starts_with(&format!("{name}-{p}.{service}."))
                && c.cluster.hosts[p].ends_with(&format!(":{port}")),
            "hosts[{p}] = {} is not pod {name}-{p} of service {service}, port {port}",
            c.cluster.hosts[p]
        );
    }
}

#[test]
fn the_image_builds_the_binary_and_runs_it() {
    let text = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    assert!(text.contains("cargo build --release --locked --bin ioc"));
    assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/ioc\"]"));
    let toolchain = text
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .and_then(|l| l.split('-').next())
        .unwrap();
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains(&format!("rust-version = \"{toolchain}\"")),
        "the image builds with Rust {toolchain}, the workspace's rust-version"
    );
}
