//! `/proc/self/fdinfo/<fd>` of a BPF program: the kernel's run time and run count for it, kept
//! only while `kernel.bpf_stats_enabled` is 1 (aya 0.14's program info does not carry them), and
//! the runs it skipped, always kept (5.12+).
use std::os::fd::{AsRawFd as _, BorrowedFd};

fn field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
}

fn read(fd: BorrowedFd<'_>) -> Option<String> {
    super::read_text(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()
}

/// `(run_time_ns, run_cnt)` from a program fd's fdinfo text; None without them.
pub fn parse_program_runs(text: &str) -> Option<(u64, u64)> {
    Some((field(text, "run_time_ns:")?, field(text, "run_cnt:")?))
}

/// The run time and count of the program behind `fd` (one of this process's).
pub fn program_runs(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    parse_program_runs(&read(fd)?)
}

/// Runs the kernel skipped because the program was already running on that CPU (a tracepoint
/// hit again from an interrupt while it ran): events it never saw. 0 before 5.12, which does
/// not count them.
pub fn parse_missed_runs(text: &str) -> u64 {
    field(text, "recursion_misses:").unwrap_or(0)
}

/// [`parse_missed_runs`] of the program behind `fd` (one of this process's).
pub fn missed_runs(fd: BorrowedFd<'_>) -> u64 {
    read(fd).as_deref().map_or(0, parse_missed_runs)
}

/// Whether the kernel is keeping program run statistics (`kernel.bpf_stats_enabled`).
pub fn bpf_stats_enabled() -> bool {
    super::read_text("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_time_and_count_of_a_program_fd() {
        // Recorded on 6.18 with kernel.bpf_stats_enabled=1.
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\nprog_type:\t26\n\
                    prog_jited:\t1\nprog_tag:\t298bc380635a6ad9\nmemlock:\t4096\n\
                    prog_id:\t40745\nrun_time_ns:\t525750\nrun_cnt:\t579\n\
                    recursion_misses:\t0\nverified_insns:\t58\n";
        assert_eq!(parse_program_runs(text), Some((525750, 579)));
        assert_eq!(parse_program_runs("pos:\t0\n"), None);
        assert_eq!(
            parse_missed_runs(&text.replace("misses:\t0", "misses:\t3")),
            3
        );
        assert_eq!(parse_missed_runs("pos:\t0\n"), 0, "not counted before 5.12");
    }
}
