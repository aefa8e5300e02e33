//! Packets a namespace refused by its own routing: strict reverse-path filtering (the route
//! back to the source leaves by another interface), a host that does not forward or a route
//! that refuses, and a next hop that never answered ARP/NDP. Each from the drop reason, told
//! apart by what the namespace said of the path soon after the first drop (its routes, its
//! settings, its neighbour entries), read by `netdoc` itself.
use std::collections::BTreeMap;

use super::{MIN_PACKETS, claims, counted_in, grew, inside, namespace_scope};
use crate::model::shell::quote;
use crate::{
    doctor::{DropGroup, NamespacePath, Snapshot},
    facts::route::RouteTo,
    model::finding::{Confidence, Evidence, Finding, Scope, Severity},
};

/// The drop groups of `reasons`, per namespace.
fn by_namespace<'a>(s: &'a Snapshot, reasons: &[&str]) -> BTreeMap<u32, Vec<&'a DropGroup>> {
    super::groups_by_namespace(s, |g| reasons.contains(&g.reason.as_str()))
}

fn path_of(s: &Snapshot, inode: u32) -> Option<&NamespacePath> {
    s.paths.iter().find(|p| p.netns.inode == inode)
}

fn scope_of(groups: &[&DropGroup], inode: u32) -> Scope {
    namespace_scope(groups.iter().find_map(|g| g.netns_name.as_deref()), inode)
}

fn devices_of<'a>(groups: &[&'a DropGroup]) -> Vec<&'a str> {
    let mut out: Vec<&str> = groups
        .iter()
        .flat_map(|g| g.devices.iter().map(String::as_str))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn drop_source(g: &DropGroup) -> String {
    format!("skb:kfree_skb {}@{}", g.reason, g.location)
}

fn events(groups: &[&DropGroup]) -> u64 {
    groups.iter().map(|g| g.events).sum()
}

/// The busiest destinations as evidence, at most three.
fn flows(groups: &[&DropGroup]) -> Vec<Evidence> {
    groups
        .iter()
        .flat_map(|g| super::target_evidence(g))
        .take(3)
        .collect()
}

/// How a route answered, in words.
fn route_words(r: &RouteTo) -> String {
    match (r.refuses(), &r.dev, &r.via) {
        (true, ..) => format!(
            "{} ({})",
            r.kind.replace('_', " "),
            r.answer.as_deref().unwrap_or("refused")
        ),
        (false, Some(dev), Some(via)) => format!("via {via} dev {dev}"),
        (false, Some(dev), None) => format!("dev {dev}"),
        _ => r.kind.clone(),
    }
}

fn setting(p: Option<&NamespacePath>, name: &str) -> Option<u64> {
    p.and_then(|p| p.reading.settings.get(name)).copied()
}

fn counter_evidence(s: &Snapshot, inode: u32, counters: &[&str]) -> Vec<Evidence> {
    let Some(ns) = counted_in(s, inode) else {
        return Vec::new();
    };
    counters
        .iter()
        .filter_map(|c| {
            let n = grew(Some(ns), c);
            (n > 0).then(|| Evidence::new(format!("{c} grew by {n}"), super::counter_source(c, ns)))
        })
        .collect()
}

fn unread(p: Option<&NamespacePath>) -> Option<Evidence> {
    let why = match p {
        None => "the namespace's routes and settings could not be read (it went away, or netdoc did not find it in time)".to_string(),
        Some(p) => format!("its routes could not be read: {}", p.reading.unavailable.as_deref()?),
    };
    Some(Evidence::new(
        why,
        "ip -j route get, /proc/sys in the namespace",
    ))
}

/// Strict reverse-path filtering: a packet whose source the namespace would route back by
/// another interface (or not at all) is refused. The effective mode is the larger of `all` and
/// the interface's (1 strict, 2 loose).
pub fn reverse_path(s: &Snapshot) -> Vec<Finding> {
    by_namespace(s, &["IP_RPFILTER"])
        .into_iter()
        .filter(|(_, groups)| events(groups) >= MIN_PACKETS)
        .map(|(inode, groups)| {
            let n = events(&groups);
            let scope = scope_of(&groups, inode);
            let path = path_of(s, inode);
            let devices = devices_of(&groups);
            let arrived = devices.first().copied();
            let mut evidence = vec![Evidence::new(
                format!(
                    "{n} packets refused by the reverse-path check at {}{}",
                    groups[0].location,
                    arrived.map_or(String::new(), |d| format!(" on {d}"))
                ),
                drop_source(groups[0]),
            )];
            evidence.extend(counter_evidence(s, inode, &["TcpExt.IPReversePathFilter"]));
            let all = setting(path, "net.ipv4.conf.all.rp_filter");
            let on_dev = arrived.and_then(|d| setting(path, &format!("net.ipv4.conf.{d}.rp_filter")));
            let effective = all.max(on_dev);
            if let (Some(all), Some(dev)) = (all, arrived) {
                let mode = |m: u64| match m {
                    0 => "off",
                    1 => "strict",
                    _ => "loose",
                };
                evidence.push(Evidence::new(
                    format!(
                        "rp_filter: all {all}, {dev} {}: the effective mode is the larger, {} ({})",
                        on_dev.map_or("unknown".into(), |v| v.to_string()),
                        effective.unwrap_or(all),
                        mode(effective.unwrap_or(all))
                    ),
                    format!("net.ipv4.conf.{{all,{dev}}}.rp_filter in {scope}"),
                ));
            }
            let back: Vec<&RouteTo> = path
                .map(|p| p.reading.routes.iter().filter(|r| p.sources.contains(&r.addr)).collect())
                .unwrap_or_default();
            let asymmetric = back
                .iter()
                .any(|r| r.refuses() || (r.dev.is_some() && r.dev.as_deref() != arrived));
            for r in back.iter().take(3) {
                evidence.push(Evidence::new(
                    format!(
                        "the route back to the source {} leaves by {}{}",
                        r.addr,
                        route_words(r),
                        match (r.dev.as_deref(), arrived) {
                            (Some(out), Some(inn)) if out != inn => format!(", not by {inn} where the packets arrived"),
                            _ => String::new(),
                        }
                    ),
                    format!("ip -j route get {} in {scope}", r.addr),
                ));
            }
            evidence.extend(unread(path));
            evidence.extend(flows(&groups));
            let dev = arrived.unwrap_or("IF");
            let source = back.first().map_or("SOURCE", |r| r.addr.as_str());
            Finding {
                id: "reverse_path_filter".into(),
                severity: Severity::Critical,
                confidence: if asymmetric { Confidence::High } else { Confidence::Medium },
                title: format!(
                    "{n} packets arriving{} were refused by strict reverse-path filtering in {scope}: the route back to their source leaves by another way",
                    arrived.map_or(String::new(), |d| format!(" on {d}"))
                ),
                affected: n,
                evidence,
                fix: vec![
                    format!(
                        "if the asymmetric path is intended, use loose mode (the effective mode is the larger of all and {dev}): {}",
                        inside(&scope, &format!("sysctl -w net.ipv4.conf.all.rp_filter=2 {}", quote(&format!("net.ipv4.conf.{dev}.rp_filter=2"))))
                    ),
                    format!(
                        "else add the missing route back to the source by {dev}: {}",
                        inside(&scope, &format!("ip route add {} dev {}", quote(source), quote(dev)))
                    ),
                ],
                explains: claims(&groups),
                scope,
            }
        })
        .collect()
}

/// Packets for other hosts on a namespace that does not forward, or to destinations its
/// routes refuse (no route, `unreachable`, `prohibit`, `blackhole`).
pub fn not_routed(s: &Snapshot) -> Vec<Finding> {
    by_namespace(s, &["IP_INADDRERRORS", "IP_INNOROUTES", "IP_OUTNOROUTES", "IPV6DISABLED"])
        .into_iter()
        .filter(|(_, groups)| events(groups) >= MIN_PACKETS)
        .map(|(inode, groups)| {
            let n = events(&groups);
            let scope = scope_of(&groups, inode);
            let path = path_of(s, inode);
            let routes: Vec<&RouteTo> = path
                .map(|p| p.reading.routes.iter().filter(|r| !p.sources.contains(&r.addr)).collect())
                .unwrap_or_default();
            let refused: Vec<&&RouteTo> = routes.iter().filter(|r| r.refuses()).collect();
            let v4_forward = setting(path, "net.ipv4.ip_forward");
            let v6_forward = setting(path, "net.ipv6.conf.all.forwarding");
            let v6 = groups.iter().any(|g| g.targets.iter().any(|t| t.to.contains('[')));
            let forwarding_off = match v6 {
                true => v6_forward == Some(0),
                false => v4_forward == Some(0),
            };
            let in_addr_errors = groups.iter().any(|g| g.reason == "IP_INADDRERRORS");
            let mut evidence: Vec<Evidence> = groups
                .iter()
                .map(|g| {
                    Evidence::new(
                        format!("{} packets dropped with reason {} at {}", g.events, g.reason, g.location),
                        drop_source(g),
                    )
                })
                .collect();
            evidence.extend(counter_evidence(
                s,
                inode,
                &["Ip.InAddrErrors", "IpExt.InNoRoutes", "Ip.OutNoRoutes", "Ip6.InAddrErrors", "Ip6.InNoRoutes", "Ip6.OutNoRoutes"],
            ));
            let (setting, value) = match v6 {
                true => ("net.ipv6.conf.all.forwarding", v6_forward),
                false => ("net.ipv4.ip_forward", v4_forward),
            };
            if let Some(v) = value {
                evidence.push(Evidence::new(format!("{setting} = {v}"), format!("/proc/sys in {scope}")));
            }
            for r in routes.iter().take(3) {
                evidence.push(Evidence::new(
                    format!("the route to {}: {}", r.addr, route_words(r)),
                    format!("ip -j route get {} in {scope}", r.addr),
                ));
            }
            evidence.extend(unread(path));
            evidence.extend(flows(&groups));
            // Forwarding off refuses a packet for another host before any route matters (the
            // kernel answers EHOSTUNREACH, IP_INADDRERRORS, with or without a route to it).
            let (id, title, fix) = if in_addr_errors && forwarding_off {
                let (sysctl, family) = match v6 {
                    true => ("net.ipv6.conf.all.forwarding=1", "IPv6"),
                    false => ("net.ipv4.ip_forward=1", "IPv4"),
                };
                (
                    "forwarding_disabled",
                    format!("{n} packets for other hosts were dropped in {scope}: it does not forward {family} (forwarding is off)"),
                    vec![
                        format!("if it is meant to route (a router, a gateway, a node for pods): {}", inside(&scope, &format!("sysctl -w {sysctl}"))),
                        "if not, the senders' routes point at the wrong hop: fix their gateway".into(),
                    ],
                )
            } else {
                let to = refused
                    .first()
                    .map_or_else(|| "those destinations".to_string(), |r| r.addr.clone());
                (
                    "route_refuses",
                    format!("{n} packets were dropped in {scope} because it has no usable route to {to}"),
                    vec![
                        format!("look at the routes: {}", inside(&scope, &format!("ip route get {}", quote(&to)))),
                        "add the missing route, or remove the unreachable/prohibit/blackhole route that covers it".into(),
                    ],
                )
            };
            Finding {
                id: id.into(),
                severity: Severity::Critical,
                confidence: if path.is_some() { Confidence::High } else { Confidence::Medium },
                title,
                affected: n,
                evidence,
                fix,
                explains: claims(&groups),
                scope,
            }
        })
        .collect()
}

/// Packets dropped while waiting for a neighbour that never answered ARP/NDP (`NEIGH_FAILED`)
/// or beyond the queue of packets waiting for one (`NEIGH_QUEUEFULL`); a full neighbour table
/// is its own finding.
pub fn unresolved(s: &Snapshot) -> Vec<Finding> {
    let table_full = s.neighbours.iter().any(|t| t.table_fulls > 0);
    by_namespace(s, &["NEIGH_FAILED", "NEIGH_QUEUEFULL"])
        .into_iter()
        .filter(|(_, groups)| !table_full && events(groups) >= MIN_PACKETS)
        .map(|(inode, mut groups)| {
            // The packets still queued when the failed entry goes are purged with it.
            groups.extend(s.drops.groups.iter().filter(|g| {
                g.netns == inode && g.reason == "QUEUE_PURGE" && super::function(&g.location).starts_with("neigh_")
            }));
            let n = events(&groups);
            let scope = scope_of(&groups, inode);
            let path = path_of(s, inode);
            let devices = devices_of(&groups);
            let mut evidence: Vec<Evidence> = groups
                .iter()
                .map(|g| {
                    let what = match g.reason.as_str() {
                        "NEIGH_QUEUEFULL" => "beyond the queue of packets waiting for the address to resolve",
                        _ => "when resolution failed",
                    };
                    Evidence::new(format!("{} packets dropped {what} ({} at {})", g.events, g.reason, g.location), drop_source(g))
                })
                .collect();
            let unanswered: Vec<_> = path.map(|p| p.reading.neighbours.iter().collect()).unwrap_or_default();
            for nb in unanswered.iter().take(3) {
                evidence.push(Evidence::new(
                    format!("neighbour {} on {} is {}", nb.addr, nb.dev, nb.state.join(",")),
                    format!("ip -j neigh show in {scope}"),
                ));
            }
            if let Some(r) = path.and_then(|p| p.reading.routes.first()) {
                evidence.push(Evidence::new(
                    format!("the route to {}: {}", r.addr, route_words(r)),
                    format!("ip -j route get {} in {scope}", r.addr),
                ));
            }
            for dev in &devices {
                if let Some(q) = setting(path, &format!("net.ipv4.neigh.{dev}.unres_qlen_bytes")) {
                    evidence.push(Evidence::new(
                        format!("{dev}: at most {q} bytes wait for an address to resolve (unres_qlen_bytes)"),
                        format!("net.ipv4.neigh.{dev}.unres_qlen_bytes in {scope}"),
                    ));
                }
            }
            let discards: u64 = s.neighbours.iter().map(|t| t.unresolved_discards).sum();
            if discards > 0 {
                evidence.push(Evidence::new(
                    format!("unresolved_discards grew by {discards}, with no table overflow"),
                    "/proc/net/stat/arp_cache, ndisc_cache (all namespaces)",
                ));
            }
            evidence.extend(unread(path));
            evidence.extend(flows(&groups));
            let who = unanswered.first().map_or_else(
                || "a gateway or peer".to_string(),
                |nb| format!("{} on {}", nb.addr, nb.dev),
            );
            Finding {
                id: "neighbour_unresolved".into(),
                severity: Severity::Critical,
                confidence: if unanswered.is_empty() { Confidence::Medium } else { Confidence::High },
                title: format!("{n} packets were dropped in {scope} because {who} does not answer ARP/NDP"),
                affected: n,
                evidence,
                fix: vec![
                    format!("check that the next hop is up and on this link: {}", inside(&scope, "ip neigh show")),
                    "a wrong gateway or an on-link route for addresses that are not on the link looks the same: check the route to the destination".into(),
                ],
                explains: claims(&groups),
                scope,
            }
        })
        .collect()
}

/// Packets too big for the next link while forwarding (`PKT_TOO_BIG`): path-MTU discovery at
/// work when the namespace sent the senders ICMP "fragmentation needed" / "packet too big"
/// (a note: the senders lower their MTU), a black hole at this hop when it sent none.
pub fn too_big(s: &Snapshot) -> Vec<Finding> {
    by_namespace(s, &["PKT_TOO_BIG"])
        .into_iter()
        .filter(|(_, groups)| events(groups) >= MIN_PACKETS)
        .map(|(inode, groups)| {
            let n = events(&groups);
            let scope = scope_of(&groups, inode);
            let ns = counted_in(s, inode);
            // Counted when sent, before a rule of the namespace may drop them on the way out.
            let sent = grew(ns, "Icmp.OutDestUnreachs") + grew(ns, "Icmp6.OutPktTooBigs");
            let icmp_dropped: u64 = s
                .drops
                .groups
                .iter()
                .filter(|g| g.netns == inode && matches!(g.proto.as_deref(), Some("icmp" | "icmpv6")) && super::by_rule(s, g))
                .map(|g| g.events)
                .sum();
            let told = sent > icmp_dropped;
            let mut evidence = vec![Evidence::new(
                format!("{n} packets too big for the next link were not forwarded ({})", groups[0].location),
                drop_source(groups[0]),
            )];
            evidence.extend(counter_evidence(s, inode, &["Icmp.OutDestUnreachs", "Icmp6.OutPktTooBigs"]));
            evidence.extend(flows(&groups));
            if icmp_dropped > 0 {
                evidence.push(Evidence::new(
                    format!("{icmp_dropped} ICMP packets were dropped by a firewall rule in {scope}: the \"too big\" replies among them never reach the senders"),
                    "skb:kfree_skb NETFILTER_DROP (icmp)",
                ));
            }
            let (id, severity, title, fix) = match told {
                true => (
                    "path_mtu_discovery",
                    Severity::Info,
                    format!("{n} packets too big for the next link in {scope} were answered with ICMP \"too big\": path-MTU discovery at work"),
                    vec!["nothing to do while the senders lower their MTU; if they keep sending big packets, something between here and them drops the ICMP".into()],
                ),
                false => (
                    "path_mtu_black_hole",
                    Severity::Critical,
                    format!("{n} packets too big for the next link were dropped in {scope} and no ICMP \"too big\" went back: the senders never learn the path MTU"),
                    vec![
                        format!("let the ICMP out (check the rate limit and rules): {}", inside(&scope, "sysctl net.ipv4.icmp_ratelimit net.ipv4.icmp_ratemask")),
                        "or clamp the TCP MSS on the forwarding path (nft: tcp flags syn tcp option maxseg size set rt mtu)".into(),
                    ],
                ),
            };
            Finding {
                id: id.into(),
                severity,
                confidence: if ns.is_some() { Confidence::High } else { Confidence::Medium },
                title,
                affected: n,
                evidence,
                fix,
                explains: claims(&groups),
                scope,
            }
        })
        .collect()
}
