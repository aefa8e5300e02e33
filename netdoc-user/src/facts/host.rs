//! Host name and kernel release, for report titles, and the host-wide settings that decide how
//! much a CPU's input backlog holds (they exist only in the initial namespace).
fn read(path: &str) -> String {
    super::read_text(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn hostname() -> String {
    read("/proc/sys/kernel/hostname")
}

pub fn kernel_release() -> String {
    read("/proc/sys/kernel/osrelease")
}

/// Settings of the per-CPU input backlog, global to the host: those that exist.
const BACKLOG_SETTINGS: [&str; 3] = [
    "net.core.netdev_max_backlog",
    "net.core.rps_sock_flow_entries",
    "net.core.flow_limit_table_len",
];

/// The backlog settings, by name.
pub fn backlog_settings() -> std::collections::BTreeMap<String, u64> {
    BACKLOG_SETTINGS
        .iter()
        .filter_map(|name| {
            let path = format!("/proc/sys/{}", name.replace('.', "/"));
            Some((name.to_string(), read(&path).parse().ok()?))
        })
        .collect()
}
