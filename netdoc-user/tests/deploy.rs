//! The deploy files: the Kubernetes manifests must fit together (labels, ports, volumes) and
//! give every capability a reason; as root where podman is installed, the image built by
//! `cargo xtask image` must run the exporter with only the DaemonSet's capabilities, mounts and
//! read-only root, and count drops in a namespace made after it started.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_yaml_ng::Value;

mod common;
use common::*;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn manifest(name: &str) -> Value {
    let path = deploy_dir().join("kubernetes").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The DaemonSet's one container.
fn container(daemonset: &Value) -> &Value {
    let containers = daemonset["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    assert_eq!(containers.len(), 1);
    &containers[0]
}

/// The capabilities the DaemonSet adds.
fn capabilities(daemonset: &Value) -> Vec<String> {
    strings(&container(daemonset)["securityContext"]["capabilities"]["add"])
}

/// (host path, path in the container, whether mounts made on the host later show inside) of
/// each volume the DaemonSet mounts.
fn mounts(daemonset: &Value) -> Vec<(String, String, bool)> {
    let volumes = daemonset["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap();
    container(daemonset)["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| {
            let volume = volumes
                .iter()
                .find(|v| v["name"] == m["name"])
                .unwrap_or_else(|| panic!("no volume {:?}", m["name"]));
            assert_eq!(m["readOnly"].as_bool(), Some(true), "{m:?} read-only");
            (
                volume["hostPath"]["path"].as_str().unwrap().to_string(),
                m["mountPath"].as_str().unwrap().to_string(),
                m["mountPropagation"] == "HostToContainer",
            )
        })
        .collect()
}

#[test]
fn the_daemonset_service_and_servicemonitor_fit_together() {
    let ds = manifest("daemonset.yaml");
    let svc = manifest("service.yaml");
    let monitor = manifest("servicemonitor.yaml");
    let pod = &ds["spec"]["template"];
    assert_eq!(pod["spec"]["hostNetwork"].as_bool(), Some(true));
    assert_eq!(pod["spec"]["hostPID"].as_bool(), Some(true));
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"],
        pod["metadata"]["labels"]
    );
    let c = container(&ds);
    let security = &c["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    assert!(
        c["securityContext"]["privileged"].is_null(),
        "capabilities, never privileged"
    );
    assert_eq!(
        strings(&c["args"]),
        ["export", "--listen", "$(HOST_IP):9435"],
        "the node's address, named explicitly"
    );
    let env = c["env"].as_sequence().unwrap();
    assert!(
        env.iter().any(|e| e["name"] == "HOST_IP"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP")
    );
    let port = &c["ports"][0];
    assert_eq!(port["containerPort"].as_u64(), Some(9435));
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz");
        assert_eq!(c[probe]["httpGet"]["port"], port["name"]);
    }
    assert_eq!(mounts(&ds).len(), 3, "tracefs, /run/netns, /var/log/pods");

    assert_eq!(svc["spec"]["selector"], pod["metadata"]["labels"]);
    let svc_port = &svc["spec"]["ports"][0];
    assert_eq!(svc_port["targetPort"], port["name"]);
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        svc["metadata"]["labels"]
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], svc_port["name"]);
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let namespaces = strings(&monitor["spec"]["namespaceSelector"]["matchNames"]);
    assert_eq!(namespaces, [svc["metadata"]["namespace"].as_str().unwrap()]);
}

#[test]
fn every_added_capability_says_why() {
    let ds = manifest("daemonset.yaml");
    let added: BTreeSet<String> = capabilities(&ds).into_iter().collect();
    assert_eq!(
        added,
        ["BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN", "SYS_PTRACE"]
            .map(String::from)
            .into(),
    );
    let text = std::fs::read_to_string(deploy_dir().join("kubernetes/daemonset.yaml")).unwrap();
    for cap in &added {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("- {cap} ")))
            .unwrap();
        let why = line.split_once('#').map(|(_, w)| w.trim()).unwrap_or("");
        assert!(why.len() > 10, "{cap} says why it is needed: {line:?}");
    }
}

/// Whether podman is installed (the host, by `cargo xtask setup`; not the QEMU guests).
fn has_podman() -> bool {
    Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A container that is removed when the test ends, however it ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "--force", "--time", "0", &self.0])
            .output();
    }
}

#[test]
fn the_image_exports_with_only_the_daemonsets_capabilities() {
    require_root!();
    if !has_podman() {
        eprintln!("skipped: no podman here (the QEMU guests)");
        return;
    }
    note_programs_before();
    let tag = format!("localhost/netdoc-test:{}", std::process::id());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args(["xtask", "image", "--tag", &tag])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(built.success(), "cargo xtask image");
    let ds = manifest("daemonset.yaml");
    let port = free_port();
    let name = format!("netdoc-test-{}", std::process::id());
    let mut run = Command::new("podman");
    // runc and cgroupfs: crun refuses hosts with hybrid cgroups; limits the host allows.
    run.args([
        "--runtime",
        "runc",
        "--cgroup-manager",
        "cgroupfs",
        "run",
        "--detach",
    ])
    .args([
        "--name",
        &name,
        "--network",
        "host",
        "--pid",
        "host",
        "--read-only",
    ])
    .args([
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
    ])
    .args(["--cap-drop", "all"]);
    for cap in capabilities(&ds) {
        run.args(["--cap-add", &cap]);
    }
    // Every mount of the DaemonSet; one this host lacks (no kubelet: /var/log/pods) is an
    // empty directory, as a node without pods would have.
    let empty = std::env::temp_dir().join(format!("netdoc-test-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    for (host, inside, propagated) in mounts(&ds) {
        let options = if propagated { "ro,rslave" } else { "ro" };
        let source = match Path::new(&host).exists() {
            true => PathBuf::from(&host),
            false => empty.clone(),
        };
        run.args([
            "--volume",
            &format!("{}:{inside}:{options}", source.display()),
        ]);
    }
    let out = run
        .arg(&tag)
        .args(["export", "--listen", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let container = Container(name);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the exporter never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http_get(port, "/healthz", None).1, "ok\n");
    let text = http_get(port, "/metrics", None).1;
    for probe in ["drops", "conntrack_stage", "softirq_entry"] {
        if attaches(probe) {
            assert!(
                text.contains(&format!("netdoc_probe_attached{{probe=\"{probe}\",")),
                "{probe}: {text}"
            );
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("netdoc_probe_attached{{probe=\"{probe}\",")))
                .unwrap();
            assert!(
                line.ends_with(" 1"),
                "{probe} attached in the container: {line}"
            );
        }
    }

    // A namespace made after the exporter started, from outside the container.
    let pair = Pair::new("I", 84);
    pair.send(CLOSED_PORT, N);
    let dropped = pair.udp_no_ports();
    assert_eq!(dropped, N as u64);
    let series = format!("netdoc_drops_total{{netns=\"{}\",", pair.b);
    let deadline = Instant::now() + Duration::from_secs(20);
    let total = loop {
        let text = http_get(port, "/metrics", None).1;
        let total: f64 = text
            .lines()
            .filter(|l| l.starts_with(&series))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        if total >= dropped as f64 || Instant::now() > deadline {
            break total;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        total, dropped as f64,
        "{}'s drops, seen from the container",
        pair.b
    );

    let stopped = Command::new("podman")
        .args(["stop", "--time", "10", &container.0])
        .output()
        .unwrap();
    assert!(stopped.status.success());
    let code = Command::new("podman")
        .args(["inspect", "--format", "{{.State.ExitCode}}", &container.0])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&code.stdout).trim(),
        "0",
        "SIGTERM detaches and exits cleanly"
    );
    assert_nothing_left();
    drop(container);
    let _ = std::fs::remove_dir_all(&empty);
    let _ = Command::new("podman")
        .args(["rmi", "--force", &tag])
        .output();
}
