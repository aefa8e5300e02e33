//! `netdoc drops` filters: parsed from the command line, applied in the kernel.
use std::net::IpAddr;

use anyhow::Result;
use netdoc_common::{DropConfig, filter};

use super::reasons::DropReasons;
use crate::model::addr::Proto;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DropFilter {
    pub reasons: Vec<u32>,
    pub netns: Option<u32>,
    pub proto: Option<u8>,
    pub port: Option<u16>,
    pub addr: Option<IpAddr>,
}

#[derive(Debug, Default, Clone)]
pub struct FilterArgs {
    pub reason: Option<String>,
    /// The inode of a namespace already checked by [`crate::facts::netns::NetnsArg`].
    pub netns: Option<u32>,
    pub proto: Option<Proto>,
    pub port: Option<u16>,
    pub addr: Option<IpAddr>,
}

impl DropFilter {
    pub fn parse(args: &FilterArgs, reasons: &DropReasons) -> Result<Self> {
        let mut f = DropFilter {
            port: args.port,
            addr: args.addr,
            ..Default::default()
        };
        if let Some(list) = &args.reason {
            if reasons.source == super::reasons::Source::Unavailable {
                fail!(
                    Input,
                    "--reason: this kernel reports no drop reasons (kfree_skb has no reason field before 5.17)"
                );
            }
            for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match reasons.code(name) {
                    Some(c) => f.reasons.push(c),
                    None => fail!(
                        Input,
                        "--reason: unknown drop reason '{name}' (this kernel names {} reasons, e.g. NO_SOCKET, NETFILTER_DROP)",
                        reasons.len()
                    ),
                }
            }
            if f.reasons.is_empty() {
                fail!(
                    Input,
                    "--reason: give one or more reason names, comma-separated"
                );
            }
        }
        f.netns = args.netns;
        f.proto = args.proto.map(|p| p.0);
        Ok(f)
    }

    /// Writes the filter into the kernel config; reasons go to a map (see [`DropFilter::reasons`]).
    pub fn apply(&self, cfg: &mut DropConfig) {
        let mut bits = 0;
        if !self.reasons.is_empty() {
            bits |= filter::REASON;
        }
        if let Some(ns) = self.netns {
            bits |= filter::NETNS;
            cfg.netns = ns;
        }
        if let Some(p) = self.proto {
            bits |= filter::PROTO;
            cfg.proto = p;
        }
        if let Some(p) = self.port {
            bits |= filter::PORT;
            cfg.port = p;
        }
        match self.addr {
            Some(IpAddr::V4(a)) => {
                bits |= filter::ADDR;
                cfg.addr_family = 2;
                cfg.addr[..4].copy_from_slice(&a.octets());
            }
            Some(IpAddr::V6(a)) => {
                bits |= filter::ADDR;
                cfg.addr_family = 10;
                cfg.addr = a.octets();
            }
            None => {}
        }
        cfg.filters = bits;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::tracefs::fixture;

    fn reasons() -> DropReasons {
        DropReasons::from_format(&fixture("kfree_skb-6.18.format")).unwrap()
    }

    #[test]
    fn parses_and_applies_every_filter() {
        let args = FilterArgs {
            reason: Some("no_socket, NETFILTER_DROP".into()),
            netns: Some(4026531840),
            proto: Some(Proto(17)),
            port: Some(53),
            addr: Some("10.1.2.3".parse().unwrap()),
        };
        let f = DropFilter::parse(&args, &reasons()).unwrap();
        assert_eq!(f.reasons, vec![3, 12]);
        let mut cfg = DropConfig::EMPTY;
        f.apply(&mut cfg);
        let all = filter::REASON | filter::NETNS | filter::PROTO | filter::PORT | filter::ADDR;
        assert_eq!(cfg.filters, all);
        assert_eq!(
            (cfg.netns, cfg.proto, cfg.port, cfg.addr_family),
            (4026531840, 17, 53, 2)
        );
        assert_eq!(&cfg.addr[..4], &[10, 1, 2, 3]);
    }

    #[test]
    fn ipv6_address_fills_all_sixteen_bytes() {
        let args = FilterArgs {
            addr: Some("fd00::1".parse().unwrap()),
            ..Default::default()
        };
        let mut cfg = DropConfig::EMPTY;
        DropFilter::parse(&args, &reasons())
            .unwrap()
            .apply(&mut cfg);
        assert_eq!(cfg.addr_family, 10);
        assert_eq!(cfg.addr[0], 0xfd);
        assert_eq!(cfg.addr[15], 1);
    }

    #[test]
    fn bad_filters_are_one_line_errors() {
        let bad = |args: FilterArgs| {
            DropFilter::parse(&args, &reasons())
                .unwrap_err()
                .to_string()
        };
        let e = bad(FilterArgs {
            reason: Some("NOPE".into()),
            ..Default::default()
        });
        assert!(
            e.contains("unknown drop reason 'NOPE'") && !e.contains('\n'),
            "{e}"
        );
        let e = DropFilter::parse(
            &FilterArgs {
                reason: Some("NO_SOCKET".into()),
                ..Default::default()
            },
            &DropReasons::numbers_only(false),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no drop reasons"), "{e}");
    }

    #[test]
    fn no_filter_means_no_filter_bits() {
        let mut cfg = DropConfig::EMPTY;
        DropFilter::default().apply(&mut cfg);
        assert_eq!(cfg.filters, 0);
    }
}
