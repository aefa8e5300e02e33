use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Builds the `netdoc-ebpf` programs for bpfel with the nightly toolchain; `main` embeds them.
fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "netdoc-ebpf")
        .ok_or_else(|| anyhow!("netdoc-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("netdoc-ebpf manifest has no parent"))?;
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
