//! The kernel's protocol counters (`nstat`'s sources): `/proc/net/netstat` (TcpExt, IpExt, ...)
//! and `/proc/net/snmp` (Ip, Tcp, Udp, ...). Each group is a header line of names followed by a
//! line of values with the same prefix; counters are named `Group.Name`. Per network namespace.
use std::collections::BTreeMap;

pub type Counters = BTreeMap<String, u64>;

/// The counters of `text` that `keep` wants by name: a name is formatted into one buffer and
/// copied only when kept (a reading of every namespace on a busy node parses many files).
pub(crate) fn parse(text: &str, keep: &dyn Fn(&str) -> bool) -> Counters {
    let mut out = Counters::new();
    let mut name_buf = String::new();
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((group, names)), Some((group2, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            break;
        };
        if group != group2 {
            break;
        }
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            name_buf.clear();
            name_buf.push_str(group);
            name_buf.push('.');
            name_buf.push_str(name);
            if !keep(&name_buf) {
                continue;
            }
            // A few Ip/Tcp fields are signed (Tcp.MaxConn is -1): they are settings, not counters.
            if let Ok(v) = value.parse::<u64>() {
                out.insert(name_buf.clone(), v);
            }
        }
    }
    out
}

/// The groups of `/proc/net/snmp6`.
const SNMP6_GROUPS: [&str; 6] = ["Ip6", "Icmp6", "UdpLite6", "Udp6", "Tcp6", "Ip6Ext"];

/// `/proc/net/snmp6`: one `Name value` per line, the group a prefix of the name
/// (`Udp6RcvbufErrors`): named `Udp6.RcvbufErrors` like the others. Those `keep` wants.
pub(crate) fn parse_snmp6(text: &str, keep: &dyn Fn(&str) -> bool) -> Counters {
    let mut out = Counters::new();
    let mut name_buf = String::new();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let Some(group) = SNMP6_GROUPS
            .iter()
            .filter(|g| name.starts_with(*g))
            .max_by_key(|g| g.len())
        else {
            continue;
        };
        name_buf.clear();
        name_buf.push_str(group);
        name_buf.push('.');
        name_buf.push_str(&name[group.len()..]);
        if !keep(&name_buf) {
            continue;
        }
        if let Ok(v) = value.trim().parse() {
            out.insert(name_buf.clone(), v);
        }
    }
    out
}

/// The counters of the calling thread's network namespace (IPv6's where it has IPv6).
pub fn read() -> Counters {
    read_matching(&|_| true, true)
}

/// The counters named in `wanted`, of the calling thread's network namespace; `snmp6` is read
/// only when one of them is IPv6's.
pub fn read_named(wanted: &[&str]) -> Counters {
    let ipv6 = wanted.iter().any(|name| {
        SNMP6_GROUPS
            .iter()
            .any(|g| name.split_once('.').is_some_and(|(group, _)| group == *g))
    });
    read_matching(&|name| wanted.contains(&name), ipv6)
}

fn read_matching(keep: &dyn Fn(&str) -> bool, ipv6: bool) -> Counters {
    let mut all = Counters::new();
    for file in [
        "/proc/thread-self/net/netstat",
        "/proc/thread-self/net/snmp",
    ] {
        all.extend(parse(&super::read_text(file).unwrap_or_default(), keep));
    }
    if ipv6 && let Ok(text) = super::read_text("/proc/thread-self/net/snmp6") {
        all.extend(parse_snmp6(&text, keep));
    }
    all
}

/// Growth of every counter between two readings; counters that went backwards read 0.
pub fn deltas(before: &Counters, after: &Counters) -> Counters {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: fn(&str) -> bool = |_| true;

    #[test]
    fn groups_are_paired_by_prefix() {
        let c = parse(
            "TcpExt: SyncookiesSent TCPWqueueTooBig\nTcpExt: 3 7\n\
             IpExt: InNoRoutes\nIpExt: 0\n",
            &ALL,
        );
        assert_eq!(c["TcpExt.TCPWqueueTooBig"], 7);
        assert_eq!(c["TcpExt.SyncookiesSent"], 3);
        assert_eq!(c["IpExt.InNoRoutes"], 0);
        let snmp = parse(
            "Tcp: RtoAlgorithm MaxConn RetransSegs\nTcp: 1 -1 12\n",
            &ALL,
        );
        assert_eq!(snmp.get("Tcp.MaxConn"), None);
        assert_eq!(snmp["Tcp.RetransSegs"], 12);
    }

    #[test]
    fn snmp6_names_take_their_group_apart() {
        let c = parse_snmp6(
            "Ip6InReceives   \t12\nUdp6RcvbufErrors 3\nUdpLite6InErrors 1\nIcmp6InMsgs 4\n",
            &ALL,
        );
        assert_eq!(c["Udp6.RcvbufErrors"], 3);
        assert_eq!(c["UdpLite6.InErrors"], 1, "the longest group wins");
        assert_eq!(c["Ip6.InReceives"], 12);
        assert_eq!(c["Icmp6.InMsgs"], 4);
    }

    #[test]
    fn only_wanted_counters_are_kept() {
        let keep = |name: &str| name == "TcpExt.ListenDrops" || name == "Udp6.RcvbufErrors";
        let c = parse(
            "TcpExt: ListenOverflows ListenDrops\nTcpExt: 4 5\nUdp: RcvbufErrors\nUdp: 6\n",
            &keep,
        );
        assert_eq!(c, Counters::from([("TcpExt.ListenDrops".into(), 5)]));
        let c = parse_snmp6("Udp6RcvbufErrors 3\nUdp6InErrors 1\n", &keep);
        assert_eq!(c, Counters::from([("Udp6.RcvbufErrors".into(), 3)]));
    }

    #[test]
    fn deltas_saturate() {
        let before = parse("Tcp: A B\nTcp: 5 9\n", &ALL);
        let after = parse("Tcp: A B C\nTcp: 7 3 1\n", &ALL);
        let d = deltas(&before, &after);
        assert_eq!((d["Tcp.A"], d["Tcp.B"], d["Tcp.C"]), (2, 0, 1));
    }
}
