//! The container a process runs in, from its cgroup path (`/proc/PID/cgroup`), and the
//! Kubernetes pod behind it from the kubelet's own directories: no runtime socket, no network.
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A container as its runtime names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Container {
    /// `docker`, `containerd`, `crio`, `podman`, or `nspawn`.
    pub runtime: String,
    /// The runtime's id (64 hex digits for OCI runtimes; the machine name for nspawn).
    pub id: String,
    /// The Kubernetes pod uid, when the cgroup says the container is a pod's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
}

impl Container {
    /// `containerd:0123456789ab`: the runtime and the short id people type.
    pub fn short(&self) -> String {
        let id = if self.id.len() == 64 {
            &self.id[..12]
        } else {
            &self.id
        };
        format!("{}:{id}", self.runtime)
    }
}

/// A Kubernetes pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pod {
    pub uid: String,
    /// `namespace/name`, when the node's kubelet directories tell it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Where the kubelet keeps one log directory per pod: `<namespace>_<name>_<uid>`.
pub const POD_LOGS: &str = "/var/log/pods";

/// The container behind a `/proc/PID/cgroup` text (cgroup v2 `0::/path`, or any v1 line).
pub fn container(cgroup: &str) -> Option<Container> {
    cgroup
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .find_map(from_path)
}

/// Reads a cgroup path from its last component up: the first that names a container decides,
/// and a `pod<uid>` component above it makes it a pod's.
fn from_path(path: &str) -> Option<Container> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (at, (runtime, id)) = parts
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, p)| Some((i, component(p, parts.get(i.wrapping_sub(1)).copied())?)))?;
    let pod_uid = parts[..at].iter().rev().find_map(|p| pod_uid(p));
    // A kubepods path whose leaf is a bare id (cgroupfs driver) is a pod container whatever
    // its runtime: the runtime is not in the path.
    Some(Container {
        runtime: runtime.to_string(),
        id: id.to_string(),
        pod_uid,
    })
}

/// One cgroup path component that names a container: `(runtime, id)`.
fn component<'a>(part: &'a str, parent: Option<&str>) -> Option<(&'static str, &'a str)> {
    const SCOPES: [(&str, &str); 5] = [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "crio"),
        ("libpod-", "podman"),
        ("machine-", "nspawn"),
    ];
    if let Some(unit) = part.strip_suffix(".scope") {
        return SCOPES.iter().find_map(|(prefix, runtime)| {
            let id = unit.strip_prefix(prefix)?;
            // `crio-conmon-<id>` is the monitor, not the container; `libpod-conmon-` likewise.
            (!id.starts_with("conmon-")).then_some((*runtime, id))
        });
    }
    // cgroupfs layouts: /docker/<id>, /kubepods/<qos>/pod<uid>/<id>.
    let is_id = part.len() == 64 && part.bytes().all(|b| b.is_ascii_hexdigit());
    match parent {
        Some("docker") if is_id => Some(("docker", part)),
        Some(p) if is_id && pod_uid(p).is_some() => Some(("kubernetes", part)),
        _ => None,
    }
}

/// The pod uid in `kubepods-burstable-pod<uid with _>.slice` or `pod<uid>` (cgroupfs).
fn pod_uid(part: &str) -> Option<String> {
    let unit = part.strip_suffix(".slice").unwrap_or(part);
    let at = unit.rfind("pod")?;
    let uid = &unit[at + 3..];
    let shaped = uid.len() == 36
        && uid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'_' || b == b'-');
    shaped.then(|| uid.replace('_', "-"))
}

/// A pod's namespace and name from the names of the kubelet's log directories.
pub fn pod_from_logs<'a>(uid: &str, dirs: impl IntoIterator<Item = &'a str>) -> Pod {
    let found = dirs.into_iter().find_map(|d| {
        let (rest, dir_uid) = d.rsplit_once('_')?;
        let (namespace, name) = rest.split_once('_')?;
        (dir_uid == uid).then(|| (namespace.to_string(), name.to_string()))
    });
    Pod {
        uid: uid.to_string(),
        namespace: found.as_ref().map(|f| f.0.clone()),
        name: found.map(|f| f.1),
    }
}

/// [`pod_from_logs`] on this node's kubelet log directories.
pub fn pod(uid: &str) -> Pod {
    let dirs: Vec<String> = std::fs::read_dir(Path::new(POD_LOGS))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    pod_from_logs(uid, dirs.iter().map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";
    const UID: &str = "6f1d2a3b-4c5d-6e7f-8091-a2b3c4d5e6f7";

    #[test]
    fn kubernetes_systemd_paths_name_container_and_pod() {
        let under = |qos: &str| {
            format!(
                "0::/kubepods.slice/kubepods{qos}.slice/kubepods{qos}-pod{}.slice/cri-containerd-{ID}.scope\n",
                UID.replace('-', "_")
            )
        };
        for qos in ["-burstable", "-besteffort", ""] {
            let c = container(&under(qos)).unwrap();
            assert_eq!((c.runtime.as_str(), c.id.as_str()), ("containerd", ID));
            assert_eq!(c.pod_uid.as_deref(), Some(UID), "{qos}");
        }
        let crio = format!(
            "0::/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope",
            UID.replace('-', "_")
        );
        assert_eq!(container(&crio).unwrap().runtime, "crio");
        let conmon = format!(
            "0::/kubepods.slice/kubepods-pod{}.slice/crio-conmon-{ID}.scope",
            UID.replace('-', "_")
        );
        assert_eq!(container(&conmon), None, "the monitor is no container");
    }

    #[test]
    fn cgroupfs_and_plain_runtimes() {
        let k = container(&format!("0::/kubepods/burstable/pod{UID}/{ID}")).unwrap();
        assert_eq!((k.id.as_str(), k.pod_uid.as_deref()), (ID, Some(UID)));
        let d = container(&format!("0::/system.slice/docker-{ID}.scope")).unwrap();
        assert_eq!((d.runtime.as_str(), d.pod_uid.as_deref()), ("docker", None));
        let v1 = container(&format!("12:pids:/docker/{ID}\n0::/")).unwrap();
        assert_eq!(v1.runtime, "docker");
        let p = container(&format!("0::/machine.slice/libpod-{ID}.scope/container")).unwrap();
        assert_eq!(p.runtime, "podman");
        let n = container("0::/machine.slice/machine-web1.scope/payload").unwrap();
        assert_eq!((n.runtime.as_str(), n.id.as_str()), ("nspawn", "web1"));
        assert_eq!(d.short(), "docker:4f1c2d3e4f5a");
        for plain in [
            "0::/user.slice/user-0.slice/session-3.scope",
            "0::/",
            "0::/system.slice/sshd.service",
        ] {
            assert_eq!(container(plain), None, "{plain}");
        }
    }

    #[test]
    fn pod_names_come_from_the_kubelet_log_directories() {
        let dirs = [
            "kube-system_coredns-abc_11111111-2222-3333-4444-555555555555".to_string(),
            format!("shop_cart-7d9f_{UID}"),
        ];
        let pod = pod_from_logs(UID, dirs.iter().map(String::as_str));
        assert_eq!(pod.namespace.as_deref(), Some("shop"));
        assert_eq!(pod.name.as_deref(), Some("cart-7d9f"));
        assert_eq!(pod_from_logs(UID, []).name, None);
    }
}
