//! Host name and kernel release, for report titles.
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
