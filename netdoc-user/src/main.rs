//! The `netdoc` binary.
fn main() -> std::process::ExitCode {
    netdoc_user::main()
}
