//! What a network namespace says of the path of a dropped packet: the route to an address
//! (`ip -j route get`), the neighbour entries of its devices (`ip -j neigh show`), their
//! queueing disciplines with the kernel's statistics (`tc -j -s qdisc show`), and the settings
//! that decide reverse-path filtering, forwarding and how many packets wait for a neighbour. Read in the calling thread's namespace; parsed from JSON, so no name or address
//! can forge a field.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::nft::output_of;

/// How the namespace routes packets to one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTo {
    pub addr: String,
    /// `unicast`, `local`, `broadcast`, ..., or the refusal: `unreachable`, `prohibit`,
    /// `blackhole`, `no_route`; `unknown` when the lookup failed otherwise.
    pub kind: String,
    /// The device it leaves by and the gateway, for a route that delivers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// What `ip route get` answered, when it refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

impl RouteTo {
    /// Whether the route refuses the address (no route, or a route that rejects).
    pub fn refuses(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "unreachable" | "prohibit" | "blackhole" | "no_route"
        )
    }
}

/// A neighbour entry: an address on a device and its states (`REACHABLE`, `FAILED`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbour {
    pub addr: String,
    pub dev: String,
    pub state: Vec<String>,
}

/// A queueing discipline of a device and what the kernel counted of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Qdisc {
    pub dev: String,
    pub kind: String,
    pub root: bool,
    pub drops: u64,
    pub overlimits: u64,
    /// Packets and bytes queued when read.
    pub qlen: u64,
    pub backlog: u64,
    /// Its parameters as `tc` prints them (`rate 125000 burst 10240 limit 20000`).
    pub options: String,
}

#[derive(Deserialize)]
struct JsonQdisc {
    kind: String,
    #[serde(default)]
    root: bool,
    #[serde(default)]
    drops: u64,
    #[serde(default)]
    overlimits: u64,
    #[serde(default)]
    qlen: u64,
    #[serde(default)]
    backlog: u64,
    #[serde(default)]
    options: serde_json::Map<String, serde_json::Value>,
}

/// The qdiscs of `tc -j -s qdisc show dev DEV` output.
pub fn parse_qdiscs(dev: &str, json: &str) -> Vec<Qdisc> {
    serde_json::from_str::<Vec<JsonQdisc>>(json)
        .unwrap_or_default()
        .into_iter()
        .map(|q| Qdisc {
            dev: dev.to_string(),
            kind: q.kind,
            root: q.root,
            drops: q.drops,
            overlimits: q.overlimits,
            qlen: q.qlen,
            backlog: q.backlog,
            // Numbers and words only: a parameter is never a place for a tenant's text.
            options: q
                .options
                .iter()
                .filter_map(|(k, v)| match v {
                    serde_json::Value::Number(n) => Some(format!("{k} {n}")),
                    serde_json::Value::Bool(true) => Some(k.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(" "),
        })
        .collect()
}

#[derive(Deserialize)]
struct JsonRoute {
    #[serde(rename = "type")]
    kind: Option<String>,
    dev: Option<String>,
    gateway: Option<String>,
}

#[derive(Deserialize)]
struct JsonNeighbour {
    dst: String,
    #[serde(default)]
    dev: Option<String>,
    #[serde(default)]
    state: Vec<String>,
}

/// The route to `addr`, from `ip -j route get` output or its refusal.
pub fn parse_route(addr: &str, answer: Result<&str, &str>) -> RouteTo {
    let refused = |kind: &str, why: &str| RouteTo {
        addr: addr.to_string(),
        kind: kind.to_string(),
        dev: None,
        via: None,
        answer: Some(why.trim().to_string()),
    };
    match answer {
        Ok(json) => match serde_json::from_str::<Vec<JsonRoute>>(json) {
            Ok(routes) if !routes.is_empty() => {
                let r = &routes[0];
                RouteTo {
                    addr: addr.to_string(),
                    kind: r.kind.clone().unwrap_or_else(|| "unicast".into()),
                    dev: r.dev.clone(),
                    via: r.gateway.clone(),
                    answer: None,
                }
            }
            _ => refused("unknown", "ip route get gave no route"),
        },
        // The kernel's errno for each refusing route type.
        Err(why) if why.contains("No route to host") => refused("unreachable", why),
        Err(why) if why.contains("Permission denied") => refused("prohibit", why),
        Err(why) if why.contains("Invalid argument") => refused("blackhole", why),
        Err(why) if why.contains("Network is unreachable") => refused("no_route", why),
        Err(why) => refused("unknown", why),
    }
}

/// The entries of `ip -j neigh show` output.
pub fn parse_neighbours(json: &str) -> Vec<Neighbour> {
    serde_json::from_str::<Vec<JsonNeighbour>>(json)
        .unwrap_or_default()
        .into_iter()
        .map(|n| Neighbour {
            addr: n.dst,
            dev: n.dev.unwrap_or_default(),
            state: n.state,
        })
        .collect()
}

/// A device name netdoc may put in a `/proc/sys` path: the kernel's own rules (no `/`, not
/// `.` or `..`), checked again since the name comes from an event.
fn is_device_name(dev: &str) -> bool {
    !dev.is_empty() && dev.len() < 16 && !dev.contains('/') && dev != "." && dev != ".."
}

/// The settings of `devices` (and `all`) that decide reverse-path filtering, forwarding and
/// the neighbour queue, as `net.ipv4.conf.DEV.rp_filter` and so on: those that exist.
fn settings_here(devices: &[String]) -> BTreeMap<String, u64> {
    let mut names = vec!["net.ipv4.ip_forward".to_string()];
    let devices = devices.iter().filter(|d| is_device_name(d));
    for dev in std::iter::once("all").chain(devices.map(String::as_str)) {
        names.push(format!("net.ipv4.conf.{dev}.rp_filter"));
        names.push(format!("net.ipv4.conf.{dev}.forwarding"));
        names.push(format!("net.ipv6.conf.{dev}.forwarding"));
        if dev != "all" {
            names.push(format!("net.ipv4.neigh.{dev}.unres_qlen_bytes"));
            names.push(format!("net.ipv4.neigh.{dev}.mcast_solicit"));
            names.push(format!("net.ipv6.neigh.{dev}.unres_qlen_bytes"));
        }
    }
    names
        .into_iter()
        .filter_map(|name| {
            // A device name may hold dots: only the fixed parts are separators.
            let path = sysctl_path(&name);
            let text = std::fs::read(path).ok()?;
            let value = String::from_utf8_lossy(&text).trim().parse().ok()?;
            Some((name, value))
        })
        .collect()
}

/// `/proc/sys/...` of a setting named `net.ipv4.conf.DEV.rp_filter`: the device's dots are
/// kept, the setting's separators become slashes.
fn sysctl_path(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let path = match parts.as_slice() {
        [
            "net",
            family,
            table @ ("conf" | "neigh"),
            rest @ ..,
            setting,
        ] if !rest.is_empty() => {
            format!("net/{family}/{table}/{}/{setting}", rest.join("."))
        }
        _ => name.replace('.', "/"),
    };
    format!("/proc/sys/{path}")
}

/// What one namespace says of the path of some dropped packets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathReading {
    pub settings: BTreeMap<String, u64>,
    pub routes: Vec<RouteTo>,
    /// Entries that are not reachable (INCOMPLETE, FAILED, ...) on the devices asked about.
    pub neighbours: Vec<Neighbour>,
    /// The queueing disciplines of the devices asked about, with their statistics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub qdiscs: Vec<Qdisc>,
    /// The RPS CPU masks of each device's receive queues (`rps_cpus`, hex), where read.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rps: BTreeMap<String, Vec<String>>,
    /// Why `ip` could not be asked, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// Reads, in this thread's namespace, the routes to `addrs` and the settings and unresolved
/// neighbours of `devices`.
pub fn read_here(addrs: &[String], devices: &[String]) -> PathReading {
    let mut out = PathReading {
        settings: settings_here(devices),
        ..Default::default()
    };
    for addr in addrs {
        if addr.parse::<std::net::IpAddr>().is_err() {
            continue;
        }
        match output_of("ip", &["-j", "route", "get", addr]) {
            Ok(json) => out.routes.push(parse_route(addr, Ok(&json))),
            Err(crate::Error::Unavailable(why)) => {
                out.unavailable = Some(why);
                return out;
            }
            Err(e) => out.routes.push(parse_route(addr, Err(&e.to_string()))),
        }
    }
    out.rps = rps_here(devices);
    for dev in devices.iter().filter(|d| is_device_name(d)) {
        if let Ok(json) = output_of("tc", &["-j", "-s", "qdisc", "show", "dev", dev]) {
            out.qdiscs.extend(parse_qdiscs(dev, &json));
        }
    }
    if let Ok(json) = output_of("ip", &["-j", "neigh", "show"]) {
        out.neighbours = parse_neighbours(&json)
            .into_iter()
            .filter(|n| devices.contains(&n.dev))
            .filter(|n| {
                !n.state
                    .iter()
                    .any(|s| ["REACHABLE", "PERMANENT", "NOARP"].contains(&s.as_str()))
            })
            .collect();
    }
    out
}

/// The RPS masks of `devices` in this thread's namespace. `/sys/class/net` shows the devices
/// of the namespace sysfs was mounted in, so a child mounts its own in a private mount
/// namespace (as `ip netns exec` does); the device names go in as arguments, never as code.
fn rps_here(devices: &[String]) -> BTreeMap<String, Vec<String>> {
    let devices: Vec<&str> = devices
        .iter()
        .map(String::as_str)
        .filter(|d| is_device_name(d))
        .collect();
    if devices.is_empty() {
        return BTreeMap::new();
    }
    let script = r#"mount -t sysfs sysfs /sys || exit 1
for dev in "$@"; do for q in /sys/class/net/"$dev"/queues/rx-*/rps_cpus; do
  [ -r "$q" ] && printf '%s %s\n' "$dev" "$(cat "$q")"; done; done"#;
    let mut args = vec![
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
    ];
    args.extend(devices);
    output_of("unshare", &args).map_or_else(|_| BTreeMap::new(), |text| parse_rps(&text))
}

/// `DEV MASK` lines: each device's masks, in queue order.
fn parse_rps(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some((dev, mask)) = line.rsplit_once(' ') {
            out.entry(dev.to_string())
                .or_default()
                .push(mask.trim().to_string());
        }
    }
    out
}

/// The CPUs a hex mask (`00000003`, `ff,ffffffff`) names.
pub fn mask_cpus(mask: &str) -> Vec<u32> {
    let hex: String = mask.chars().filter(|c| *c != ',').collect();
    let mut out = Vec::new();
    for (i, c) in hex.chars().rev().enumerate() {
        let Some(bits) = c.to_digit(16) else {
            return Vec::new();
        };
        out.extend(
            (0..4)
                .filter(|b| bits & (1 << b) != 0)
                .map(|b| (i * 4) as u32 + b),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ip -j route get` and its refusals, as recorded on this host's 6.18 kernel.
    #[test]
    fn routes_and_refusals() {
        let direct = r#"[{"dst":"10.78.0.1","dev":"rbv","prefsrc":"10.78.0.2","flags":[],"uid":0,"cache":[]}]"#;
        let r = parse_route("10.78.0.1", Ok(direct));
        assert_eq!(
            (r.kind.as_str(), r.dev.as_deref(), r.via.as_deref()),
            ("unicast", Some("rbv"), None)
        );
        assert!(!r.refuses());
        let gw = r#"[{"dst":"10.96.0.3","gateway":"10.78.0.1","dev":"rbv","prefsrc":"10.78.0.2","flags":[],"uid":0,"cache":[]}]"#;
        assert_eq!(
            parse_route("10.96.0.3", Ok(gw)).via.as_deref(),
            Some("10.78.0.1")
        );
        let local = r#"[{"type":"local","dst":"::1","from":"::","dev":"lo","table":"local"}]"#;
        assert_eq!(parse_route("::1", Ok(local)).kind, "local");
        for (answer, kind) in [
            (
                "ip -j route get 10.99.0.5: RTNETLINK answers: No route to host",
                "unreachable",
            ),
            (
                "ip -j route get 10.98.0.5: RTNETLINK answers: Permission denied",
                "prohibit",
            ),
            (
                "ip -j route get 10.97.0.1: RTNETLINK answers: Invalid argument",
                "blackhole",
            ),
            (
                "ip -j route get 192.0.2.1: RTNETLINK answers: Network is unreachable",
                "no_route",
            ),
            ("ip -j route get 192.0.2.1: took longer than 2 s", "unknown"),
        ] {
            let r = parse_route("a", Err(answer));
            assert_eq!(r.kind, kind, "{answer}");
            assert_eq!(r.refuses(), kind != "unknown");
        }
        assert_eq!(parse_route("a", Ok("not json")).kind, "unknown");
    }

    #[test]
    fn neighbours_with_hostile_names() {
        let json = r#"[{"dst":"10.78.0.77","dev":"rbv","state":["FAILED"]},{"dst":"10.78.0.1","dev":"a\u001b]0;x\u0007","lladdr":"aa:bb:cc:dd:ee:ff","state":["REACHABLE"]}]"#;
        let n = parse_neighbours(json);
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].state, ["FAILED"]);
        assert_eq!(n[1].dev, "a\u{1b}]0;x\u{7}");
        assert!(parse_neighbours("[{\"dst\": 3}]").is_empty());
    }

    /// `tc -j -s qdisc show dev qav` on this host's 6.18 kernel, a tbf that dropped.
    #[test]
    fn qdisc_statistics() {
        let json = r#"[{"kind":"tbf","handle":"8002:","root":true,"refcnt":3,"options":{"rate":125000,"burst":10240,"lat":81920},"bytes":12972,"packets":18,"drops":1971,"overlimits":1997,"requeues":0,"backlog":17714,"qlen":17}]"#;
        let q = &parse_qdiscs("qav", json)[0];
        assert_eq!(
            (q.kind.as_str(), q.root, q.drops, q.overlimits),
            ("tbf", true, 1971, 1997)
        );
        assert_eq!(q.options, "burst 10240 lat 81920 rate 125000");
        assert_eq!((q.qlen, q.backlog), (17, 17714));
        let noqueue = r#"[{"kind":"noqueue","handle":"0:","root":true,"refcnt":2,"options":{},"bytes":0,"packets":0,"drops":0,"overlimits":0,"requeues":0,"backlog":0,"qlen":0}]"#;
        assert_eq!(parse_qdiscs("vb", noqueue)[0].drops, 0);
        let hostile = r#"[{"kind":"x\u001b[2J","options":{"note":"\nFAKE"}}]"#;
        assert_eq!(parse_qdiscs("vb", hostile)[0].options, "");
        assert!(parse_qdiscs("vb", "garbage").is_empty());
    }

    #[test]
    fn rps_masks() {
        let rps = parse_rps("vb0 00000002\nvb0 0\nlo 00000000\n");
        assert_eq!(rps["vb0"], ["00000002", "0"]);
        assert_eq!(mask_cpus("00000002"), [1]);
        assert_eq!(mask_cpus("0"), Vec::<u32>::new());
        assert_eq!(mask_cpus("1,00000001"), [0, 32]);
        assert_eq!(mask_cpus("zz"), Vec::<u32>::new());
    }

    #[test]
    fn setting_paths_keep_a_devices_dots() {
        assert_eq!(
            sysctl_path("net.ipv4.conf.eth0.100.rp_filter"),
            "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
        );
        assert_eq!(
            sysctl_path("net.ipv4.conf.all.rp_filter"),
            "/proc/sys/net/ipv4/conf/all/rp_filter"
        );
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward"),
            "/proc/sys/net/ipv4/ip_forward"
        );
        assert!(!is_device_name("../../x"));
        assert!(!is_device_name(".."));
        assert!(is_device_name("veth0"));
    }
}
