//! Addresses as the kernel hands them over (16 bytes, network order, IPv4 in the first four).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
