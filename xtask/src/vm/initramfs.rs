//! The guest's initramfs: busybox, the host's own binaries (netdoc, ip, nft, test binaries) at
//! their host paths with the shared libraries they load, chosen kernel modules, and `/init`.
use std::{
    fs,
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::modules::Module;

/// Where the guest's init finds its modules and job.
pub const MODULE_DIR: &str = "lib/modules/netdoc-vm";
pub const JOB: &str = "etc/netdoc-vm/job";

pub struct Stage {
    root: PathBuf,
}

impl Stage {
    pub fn new(root: &Path) -> Result<Self> {
        let _ = fs::remove_dir_all(root);
        fs::create_dir_all(root)?;
        // Mirror the host's merged-/usr links so that library paths from ldd resolve unchanged.
        for top in ["bin", "sbin", "lib", "lib64"] {
            let host = Path::new("/").join(top);
            match fs::read_link(&host) {
                Ok(target) => {
                    fs::create_dir_all(root.join(&target))?;
                    symlink(&target, root.join(top))?;
                }
                Err(_) => fs::create_dir_all(root.join(top))?,
            }
        }
        for dir in [
            "proc",
            "sys",
            "dev",
            "tmp",
            "run",
            "etc/netdoc-vm",
            MODULE_DIR,
        ] {
            fs::create_dir_all(root.join(dir))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    fn dest(&self, host_path: &Path) -> PathBuf {
        self.root
            .join(host_path.strip_prefix("/").unwrap_or(host_path))
    }

    /// Copies an executable (debug info stripped) to `at` in the guest, with its libraries.
    pub fn executable(&self, host: &Path, at: &Path) -> Result<()> {
        let dest = self.dest(at);
        fs::create_dir_all(dest.parent().context("path")?)?;
        let status = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&dest)
            .arg(host)
            .status()
            .context("running strip (binutils)")?;
        if !status.success() {
            fs::copy(host, &dest).with_context(|| format!("copying {}", host.display()))?;
        }
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))?;
        for lib in libraries(host)? {
            let dest = self.dest(&lib);
            if !dest.exists() {
                fs::create_dir_all(dest.parent().context("path")?)?;
                fs::copy(&lib, &dest).with_context(|| format!("copying {}", lib.display()))?;
            }
        }
        Ok(())
    }

    /// A host tool found on PATH, at the same path in the guest.
    pub fn tool(&self, name: &str) -> Result<()> {
        let path = which(name).with_context(|| format!("{name} is not installed on this host"))?;
        self.executable(&path, &path)
    }

    pub fn file(&self, at: &str, contents: &[u8], mode: u32) -> Result<()> {
        let dest = self.root.join(at);
        fs::create_dir_all(dest.parent().context("path")?)?;
        fs::write(&dest, contents)?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    pub fn modules(&self, modules: &[Module]) -> Result<()> {
        let mut order = String::new();
        for m in modules {
            self.file(&format!("{MODULE_DIR}/{}.ko", m.name), &m.object, 0o644)?;
            order.push_str(&m.name);
            order.push('\n');
        }
        self.file(&format!("{MODULE_DIR}/order"), order.as_bytes(), 0o644)
    }

    /// Packs the stage as a newc cpio archive.
    pub fn pack(&self, out: &Path) -> Result<()> {
        let out = std::path::absolute(out)?;
        let status = Command::new("sh")
            .arg("-c")
            .arg("find . -print0 | cpio --null -o -H newc --quiet > \"$0\"")
            .arg(&out)
            .current_dir(&self.root)
            .status()
            .context("running cpio")?;
        if !status.success() {
            bail!("packing the initramfs failed");
        }
        Ok(())
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Shared libraries an executable loads, by ldd (empty for static binaries).
fn libraries(exe: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(exe)
        .output()
        .context("running ldd")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect())
}
