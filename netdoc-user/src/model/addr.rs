//! Addresses as the kernel hands them over (16 bytes, network order, IPv4 in the first four),
//! and IP protocol numbers by name.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use crate::Error;

pub fn ip(family: u16, a: &[u8; 16]) -> Option<IpAddr> {
    match family {
        2 => Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
        10 => Some(IpAddr::V6(Ipv6Addr::from(*a))),
        _ => None,
    }
}

/// `10.0.0.1:80` or `[fd00::1]:80`.
pub fn endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// An IP protocol number, as `--proto` takes it: a name netdoc knows or the number itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proto(pub u8);

impl FromStr for Proto {
    type Err = Error;

    fn from_str(p: &str) -> Result<Self, Error> {
        Ok(Proto(match p.to_ascii_lowercase().as_str() {
            "tcp" => 6,
            "udp" => 17,
            "icmp" => 1,
            "icmpv6" | "icmp6" => 58,
            "sctp" => 132,
            other => match other.parse() {
                Ok(n) => n,
                Err(_) => fail!(
                    Input,
                    "unknown protocol '{p}' (use tcp, udp, icmp, icmpv6, sctp or a number from 0 to 255)"
                ),
            },
        }))
    }
}

pub fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_names_or_numbers() {
        let proto = |p: &str| p.parse::<Proto>();
        assert_eq!(proto("UDP"), Ok(Proto(17)));
        assert_eq!(proto("icmp6"), Ok(Proto(58)));
        assert_eq!(proto("47"), Ok(Proto(47)));
        for bad in ["300", "tcpp", ""] {
            assert!(matches!(proto(bad), Err(Error::Input(_))), "{bad}");
        }
        assert_eq!(proto_name(132), "sctp");
    }
}
