//! The name people use for a network namespace: `host`, its `ip netns` name, the pod or
//! container behind it, else its main process. Pure: it takes what the holders' files said.
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::facts::{
    cgroup::{Container, Pod},
    nsholders::{self, Holder},
};

/// What kind of name a namespace has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetnsKind {
    /// The initial namespace (pid 1's).
    Host,
    /// Named by `ip netns` (a mount under /run/netns or /var/run/netns).
    IpNetns,
    /// A Kubernetes pod's (its containers share it).
    Pod,
    /// One container's.
    Container,
    /// Some process's, named `comm[pid]`.
    Process,
    /// Held only by a mount outside the `ip netns` directories.
    Mount,
}

/// A namespace as events and summaries carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetnsRef {
    pub inode: u32,
    /// `SO_NETNS_COOKIE`; null on kernels before 5.14.
    pub cookie: Option<u64>,
    pub name: String,
    pub kind: NetnsKind,
    /// The one container behind it, when there is exactly one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
}

#[cfg(test)]
impl NetnsRef {
    /// An `ip netns` namespace called `name`, for tests of what carries one.
    pub fn named(name: &str) -> Self {
        Self {
            inode: 4026532000,
            cookie: Some(4096),
            name: name.into(),
            kind: NetnsKind::IpNetns,
            container: None,
            pod: None,
        }
    }
}

/// What the files of a namespace's holders said.
pub struct Seen<'a> {
    pub inode: u32,
    pub cookie: Option<u64>,
    pub is_host: bool,
    pub holders: &'a [Holder],
    /// The containers of the processes inside (from their cgroups).
    pub containers: &'a BTreeSet<Container>,
    /// `comm` and pid of its lowest-numbered process.
    pub main: Option<(String, u32)>,
    /// The kubelet's name for a pod uid.
    pub pod: &'a dyn Fn(&str) -> Pod,
}

/// Whether an `ip netns` name was made up by a container runtime for a sandbox (CNI's
/// `cni-<uuid>`, podman's `netns-<uuid>`): the pod or container behind it is the name people
/// use.
fn made_by_a_runtime(name: &str) -> bool {
    ["cni-", "netns-"].iter().any(|prefix| {
        name.strip_prefix(prefix).is_some_and(|id| {
            id.len() >= 8 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        })
    })
}

/// Names a namespace: host, ip netns name, pod, container, process, mount, in that order; an
/// `ip netns` name a runtime made up comes after the pod or container behind it.
pub fn identify(seen: Seen) -> NetnsRef {
    let pod_uids: BTreeSet<&str> = seen
        .containers
        .iter()
        .filter_map(|c| c.pod_uid.as_deref())
        .collect();
    let pod = match pod_uids.len() {
        1 => pod_uids.first().map(|uid| (seen.pod)(uid)),
        _ => None,
    };
    let container = match seen.containers.len() {
        1 => seen.containers.first().cloned(),
        _ => None,
    };
    let ip_netns = seen
        .holders
        .iter()
        .find_map(|h| match h {
            Holder::Mount(path) => nsholders::ip_netns_name(path),
            Holder::Process(_) => None,
        })
        .filter(|name| !(made_by_a_runtime(name) && (pod.is_some() || container.is_some())));
    let (name, kind) = if seen.is_host {
        ("host".to_string(), NetnsKind::Host)
    } else if let Some(name) = ip_netns {
        (name, NetnsKind::IpNetns)
    } else if let Some(pod) = &pod {
        let name = match (&pod.namespace, &pod.name) {
            (Some(ns), Some(name)) => format!("pod {ns}/{name}"),
            _ => format!("pod {}", pod.uid),
        };
        (name, NetnsKind::Pod)
    } else if let Some(c) = &container {
        (c.short(), NetnsKind::Container)
    } else if let Some((comm, pid)) = &seen.main {
        (format!("{comm}[{pid}]"), NetnsKind::Process)
    } else {
        let mount = seen.holders.first().map(|h| h.file().display().to_string());
        (
            mount.unwrap_or_else(|| format!("netns:{}", seen.inode)),
            NetnsKind::Mount,
        )
    };
    NetnsRef {
        inode: seen.inode,
        cookie: seen.cookie,
        name,
        kind,
        container,
        pod,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn pod_named(uid: &str) -> Pod {
        Pod {
            uid: uid.into(),
            namespace: Some("shop".into()),
            name: Some("cart".into()),
        }
    }

    fn container(id: &str, pod: Option<&str>) -> Container {
        Container {
            runtime: "containerd".into(),
            id: id.into(),
            pod_uid: pod.map(Into::into),
        }
    }

    fn name(holders: &[Holder], containers: &[Container], main: Option<(&str, u32)>) -> NetnsRef {
        identify(Seen {
            inode: 7,
            cookie: Some(9),
            is_host: false,
            holders,
            containers: &containers.iter().cloned().collect(),
            main: main.map(|(c, p)| (c.to_string(), p)),
            pod: &pod_named,
        })
    }

    #[test]
    fn each_kind_of_name_in_its_order() {
        let named = [
            Holder::Mount(PathBuf::from("/run/netns/blue")),
            Holder::Process(40),
        ];
        let app = container("a1", Some("u1"));
        let n = name(&named, std::slice::from_ref(&app), Some(("nginx", 40)));
        assert_eq!((n.name.as_str(), n.kind), ("blue", NetnsKind::IpNetns));
        assert_eq!(
            n.pod.as_ref().map(|p| p.uid.as_str()),
            Some("u1"),
            "fields stay"
        );
        let procs = [Holder::Process(40), Holder::Process(41)];
        let sandbox = container("s1", Some("u1"));
        let p = name(&procs, &[app.clone(), sandbox], Some(("pause", 40)));
        assert_eq!((p.name.as_str(), p.kind), ("pod shop/cart", NetnsKind::Pod));
        assert_eq!(
            p.container, None,
            "a pod of several containers names the pod"
        );
        let docker = Container {
            runtime: "docker".into(),
            id: "f".repeat(64),
            pod_uid: None,
        };
        let c = name(&procs, std::slice::from_ref(&docker), Some(("sh", 40)));
        assert_eq!(
            (c.name.as_str(), c.kind),
            ("docker:ffffffffffff", NetnsKind::Container)
        );
        let cni = [
            Holder::Mount(PathBuf::from(
                "/var/run/netns/cni-5f0c2a1e-8d5b-4d0e-9a3c-1b2c3d4e5f60",
            )),
            Holder::Process(40),
        ];
        let p = name(&cni, std::slice::from_ref(&app), Some(("pause", 40)));
        assert_eq!(
            (p.name.as_str(), p.kind),
            ("pod shop/cart", NetnsKind::Pod),
            "a pod outranks the name CNI made up for its sandbox"
        );
        let podman = [Holder::Mount(PathBuf::from(
            "/run/netns/netns-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9",
        ))];
        assert_eq!(
            name(&podman, &[], None).kind,
            NetnsKind::IpNetns,
            "with nothing behind it, the made-up name is all there is"
        );
        let plain = name(&procs, &[], Some(("unshare", 40)));
        assert_eq!(
            (plain.name.as_str(), plain.kind),
            ("unshare[40]", NetnsKind::Process)
        );
        let mount = name(
            &[Holder::Mount(PathBuf::from("/run/docker/netns/ab"))],
            &[],
            None,
        );
        assert_eq!(
            (mount.name.as_str(), mount.kind),
            ("/run/docker/netns/ab", NetnsKind::Mount)
        );
    }
}
