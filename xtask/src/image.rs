//! `cargo xtask image`: netdoc's container image, `deploy/Containerfile` over the static
//! release binary alone, built with podman.
use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

/// An ELF program header of this type names the dynamic loader: a static binary has none.
const PT_INTERP: u32 = 3;

pub fn build(tag: &str, root: &Path) -> Result<()> {
    let netdoc = crate::build_release()?;
    let elf = fs::read(&netdoc).with_context(|| format!("reading {}", netdoc.display()))?;
    if needs_a_loader(&elf).context("reading the release binary's ELF headers")? {
        bail!(
            "{} is dynamically linked: a FROM scratch image cannot run it",
            netdoc.display()
        );
    }
    let context = root.join("target/image");
    fs::create_dir_all(&context)?;
    fs::copy(&netdoc, context.join("netdoc"))?;
    fs::copy(
        root.join("deploy/Containerfile"),
        context.join("Containerfile"),
    )?;
    let status = Command::new("podman")
        .args(["build", "--quiet", "--tag", tag, "--file"])
        .arg(context.join("Containerfile"))
        .arg(&context)
        .status()
        .context("running podman build")?;
    if !status.success() {
        bail!("podman build failed");
    }
    eprintln!("xtask image: built {tag}");
    Ok(())
}

/// Whether a 64-bit little-endian ELF file asks for a dynamic loader (has `PT_INTERP`).
fn needs_a_loader(elf: &[u8]) -> Option<bool> {
    if elf.get(..4)? != b"\x7fELF" || *elf.get(4)? != 2 || *elf.get(5)? != 1 {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let phoff = u64::from_le_bytes(elf.get(0x20..0x28)?.try_into().ok()?) as usize;
    let (size, count) = (u16_at(0x36)? as usize, u16_at(0x38)? as usize);
    (0..count)
        .map(|i| {
            let at = phoff + i * size;
            Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?))
        })
        .try_fold(false, |found, kind| Some(found || kind? == PT_INTERP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_binary_needs_a_loader() {
        let this = fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(
            needs_a_loader(&this),
            Some(true),
            "test binaries are dynamic"
        );
        assert_eq!(needs_a_loader(b"#!/bin/sh\n"), None);
    }
}
