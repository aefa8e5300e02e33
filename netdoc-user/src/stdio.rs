//! stdout and stderr as netdoc uses them. A write error on stdout is an error of the run (its
//! output is lost), reported once; stderr carries only what netdoc says about the run, so a
//! write error there is ignored rather than a panic (`eprintln!` panics: exit 101).
//!
//! A closed stdout cannot be seen by writing to it: Rust's runtime opens /dev/null over a
//! closed standard fd before `main` (so that later opens never take fd 1), and its stdout
//! swallows EBADF besides. So the binary notes which standard fds were closed before the
//! runtime starts ([`note_closed_at_start`], from an `.init_array` entry), and writes fail then.
use std::{
    fmt,
    io::{self, Write as _},
    sync::atomic::{AtomicU8, Ordering},
};

/// Bit `fd` set: standard fd `fd` was closed when the process started.
static CLOSED_AT_START: AtomicU8 = AtomicU8::new(0);

/// Records which of stdout and stderr were closed when the process started. Called before
/// Rust's runtime initialises (it must not allocate or touch std's streams).
pub fn note_closed_at_start() {
    let mut closed = 0;
    for fd in [1, 2] {
        // SAFETY: F_GETFD only asks whether `fd` is open; no memory is involved.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            closed |= 1 << fd;
        }
    }
    CLOSED_AT_START.store(closed, Ordering::Relaxed);
}

fn closed_at_start(fd: u8) -> bool {
    CLOSED_AT_START.load(Ordering::Relaxed) & (1 << fd) != 0
}

/// Writes `bytes` to stdout and flushes. The error says it was stdout; a closed pipe keeps its
/// kind (`BrokenPipe`) so that callers can end quietly on it.
pub fn write_stdout(bytes: &[u8]) -> io::Result<()> {
    if closed_at_start(1) {
        return Err(io::Error::other(format!(
            "writing to stdout: {} (it was closed when netdoc started)",
            io::Error::from_raw_os_error(libc::EBADF)
        )));
    }
    let mut out = io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| {
            if e.kind() == io::ErrorKind::BrokenPipe {
                return e;
            }
            io::Error::new(e.kind(), format!("writing to stdout: {e}"))
        })
}

/// Writes `bytes` to stderr; whether it could is the caller's to weigh.
pub fn write_stderr(bytes: &[u8]) -> io::Result<()> {
    if closed_at_start(2) {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    let mut err = io::stderr().lock();
    err.write_all(bytes).and_then(|()| err.flush())
}

/// One line on stderr, `netdoc: ` first: one line even where a name in it holds a newline or
/// an escape, which are shown escaped ([`crate::text::printable`]). Losing it (a full or closed
/// stderr) must not end or change the run: only the run's own output decides its exit code.
pub fn say(args: fmt::Arguments) {
    let line = args.to_string();
    let _ = write_stderr(format!("netdoc: {}\n", crate::text::printable(&line)).as_bytes());
}

/// `say!("...", ...)`: [`say`] with `format!`'s arguments; netdoc's only way to stderr.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::stdio::say(format_args!($($arg)*))
    };
}
