//! The `netdoc` binary.
fn main() -> std::process::ExitCode {
    netdoc_user::main()
}

/// Runs before Rust's runtime, which opens /dev/null over closed standard fds: only then can
/// netdoc still tell that stdout was closed (`netdoc probes >&-`) and fail instead of writing
/// its output nowhere. In the binary, so that the linker keeps it.
#[used]
#[unsafe(link_section = ".init_array")]
static NOTE_CLOSED_STANDARD_FDS: extern "C" fn() = note_closed_standard_fds;

extern "C" fn note_closed_standard_fds() {
    netdoc_user::note_closed_standard_fds();
}
