use which::which;

/// Rebuild when bpf-linker changes: it is not tracked by cargo otherwise.
fn main() {
    let bpf_linker = which("bpf-linker").unwrap();
    println!("cargo:rerun-if-changed={}", bpf_linker.to_str().unwrap());
}
