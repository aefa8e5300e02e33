//! Picks the kernel modules the guest needs (veth, conntrack, nftables) with their dependencies,
//! read from each module's `.modinfo` (Debian ships no modules.dep), in load order.
use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use object::{Object as _, ObjectSection as _};

/// What the scenarios and integration tests use. Names missing from a tree are built in or absent
/// there; netdoc and the tests report what is missing by themselves.
pub const WANTED: &[&str] = &[
    "veth",
    "nf_conntrack",
    "nf_tables",
    "nft_ct",
    "nft_chain_nat",
    "nft_nat",
    "nf_nat",
    "nft_masq",
    "nft_reject_inet",
    "nft_reject_ipv4",
    "nft_counter",
    "nft_limit",
    // sock_diag for TCP and UDP sockets (netdoc's listener and socket evidence); a host loads
    // them on demand through modprobe, which the guest lacks.
    "inet_diag",
    "tcp_diag",
    "udp_diag",
    // A slow queue that holds what a socket sent (the send-side loss test).
    "sch_tbf",
];

/// One module to load, decompressed.
pub struct Module {
    pub name: String,
    pub object: Vec<u8>,
}

/// The modules of `WANTED` found in `tree`, dependencies first.
pub fn closure(tree: &Path) -> Result<Vec<Module>> {
    let mut files = HashMap::new();
    index(tree, &mut files)?;
    let mut ordered = Vec::new();
    let mut seen = HashSet::new();
    for name in WANTED {
        visit(name, &files, &mut seen, &mut ordered)?;
    }
    Ok(ordered)
}

fn visit(
    name: &str,
    files: &HashMap<String, PathBuf>,
    seen: &mut HashSet<String>,
    out: &mut Vec<Module>,
) -> Result<()> {
    let name = name.replace('-', "_");
    if !seen.insert(name.clone()) {
        return Ok(());
    }
    let Some(path) = files.get(&name) else {
        return Ok(());
    };
    let object = decompress(path)?;
    for dep in depends(&object).with_context(|| format!("{}", path.display()))? {
        visit(&dep, files, seen, out)?;
    }
    out.push(Module { name, object });
    Ok(())
}

fn index(dir: &Path, files: &mut HashMap<String, PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            index(&path, files)?;
            continue;
        }
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        if let Some(stem) = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
            .iter()
            .find_map(|ext| file.strip_suffix(ext))
        {
            files.insert(stem.replace('-', "_"), path);
        }
    }
    Ok(())
}

fn decompress(path: &Path) -> Result<Vec<u8>> {
    let tool = match path.extension().and_then(|e| e.to_str()) {
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => return fs::read(path).with_context(|| format!("reading {}", path.display())),
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {tool}"))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed", path.display());
    }
    Ok(out.stdout)
}

/// The `depends=` entry of a module's `.modinfo` section.
fn depends(object: &[u8]) -> Result<Vec<String>> {
    let file = object::File::parse(object)?;
    let section = file
        .section_by_name(".modinfo")
        .context("no .modinfo section")?;
    let data = section.data()?;
    Ok(data
        .split(|b| *b == 0)
        .filter_map(|entry| entry.strip_prefix(b"depends="))
        .flat_map(|deps| {
            String::from_utf8_lossy(deps)
                .split(',')
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|d| !d.is_empty())
        .collect())
}
