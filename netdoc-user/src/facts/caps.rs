//! Whether this process may load and attach tracing programs.
use anyhow::Result;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability mask from a `/proc/self/status` text.
pub fn effective(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

pub fn can_trace(caps: u64) -> bool {
    let has = |c: u32| caps & (1 << c) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

pub fn require_tracing() -> Result<()> {
    let status = super::read_text("/proc/self/status").unwrap_or_default();
    match effective(&status) {
        Some(caps) if can_trace(caps) => Ok(()),
        _ => fail!(
            Privilege,
            "netdoc needs root, or CAP_BPF and CAP_PERFMON: run it with sudo"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_bpf_perfmon_may_trace_others_may_not() {
        let root = effective("Name:\tx\nCapEff:\t000001ffffffffff\n").unwrap();
        assert!(can_trace(root));
        assert!(can_trace((1 << CAP_BPF) | (1 << CAP_PERFMON)));
        assert!(!can_trace(1 << CAP_BPF));
        assert!(!can_trace(
            effective("CapEff:\t0000000000000000\n").unwrap()
        ));
        assert_eq!(effective("no caps here"), None);
    }
}
