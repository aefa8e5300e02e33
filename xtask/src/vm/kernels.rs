//! Turns `--kernel` (a vmlinuz, a .deb or a Debian kernel version) into a bootable image and its
//! module tree. Debian packages come through a private apt configuration under the cache, so the
//! host's own sources are never touched.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// A kernel ready to boot.
pub struct KernelImage {
    /// What the user named, for tables and messages.
    pub label: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of this kernel, when it has one.
    pub modules: Option<PathBuf>,
}

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Suites that carry the kernels we test: bullseye (5.10) and bookworm (6.1, 6.12 backport).
const SUITES: [(&str, &str); 5] = [
    ("http://deb.debian.org/debian", "bullseye"),
    ("http://deb.debian.org/debian-security", "bullseye-security"),
    ("http://deb.debian.org/debian", "bookworm"),
    ("http://deb.debian.org/debian", "bookworm-updates"),
    ("http://deb.debian.org/debian-security", "bookworm-security"),
];
/// The smallest Debian flavour that boots under QEMU and has BTF, kprobes and fentry.
const FLAVOUR: &str = "-cloud-amd64-unsigned";

pub fn resolve(spec: &str, modules: Option<&Path>, cache: &Path) -> Result<KernelImage> {
    let path = Path::new(spec);
    if spec.ends_with(".deb") {
        if !path.is_file() {
            bail!("--kernel {spec}: no such .deb file");
        }
        return from_deb(path, cache);
    }
    if path.is_file() {
        let modules = match modules {
            Some(m) => Some(module_tree(m)?),
            None => None,
        };
        return Ok(KernelImage {
            label: spec.to_string(),
            vmlinuz: path.to_path_buf(),
            modules,
        });
    }
    if spec.contains('/') {
        bail!(
            "--kernel {spec}: no such file (give a vmlinuz/bzImage, a .deb or a version like 6.1)"
        );
    }
    let deb = download(spec, cache)?;
    from_deb(&deb, cache)
}

/// `DIR` may be a `make modules_install INSTALL_MOD_PATH=DIR` tree or `lib/modules/<release>` itself.
fn module_tree(dir: &Path) -> Result<PathBuf> {
    if dir.join("modules.order").is_file() || dir.join("kernel").is_dir() {
        return Ok(dir.to_path_buf());
    }
    for base in ["lib/modules", "usr/lib/modules"] {
        if let Ok(mut entries) = fs::read_dir(dir.join(base))
            && let Some(Ok(e)) = entries.next()
        {
            return Ok(e.path());
        }
    }
    bail!(
        "--modules {}: no lib/modules/<release> inside",
        dir.display()
    )
}

fn from_deb(deb: &Path, cache: &Path) -> Result<KernelImage> {
    let stem = deb
        .file_stem()
        .context("deb name")?
        .to_string_lossy()
        .into_owned();
    let dir = cache.join("kernels").join(&stem);
    if !dir.join("boot").is_dir() {
        let tmp = dir.with_extension("partial");
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        run(
            "dpkg-deb",
            &["-x".as_ref(), deb.as_os_str(), tmp.as_os_str()],
        )?;
        fs::rename(&tmp, &dir)?;
    }
    let vmlinuz = fs::read_dir(dir.join("boot"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
        })
        .with_context(|| format!("{}: no boot/vmlinuz* inside", deb.display()))?;
    let modules = module_tree(&dir).ok();
    let label = stem.split('_').next().unwrap_or(&stem).to_string();
    let label = label
        .trim_start_matches("linux-image-")
        .trim_end_matches(FLAVOUR)
        .to_string();
    Ok(KernelImage {
        label,
        vmlinuz,
        modules,
    })
}

/// Downloads the newest Debian cloud kernel package matching `version` ("5.10", "6.1",
/// "6.12.117", "6.1.0-56" or a full package name). Mirrors lag: older builds are tried in turn.
fn download(version: &str, cache: &Path) -> Result<PathBuf> {
    let apt = AptDir::new(&cache.join("apt"))?;
    let debs = cache.join("debs");
    fs::create_dir_all(&debs)?;
    let candidates = apt.kernel_packages(version)?;
    if candidates.is_empty() {
        bail!(
            "--kernel {version}: no Debian package linux-image-{version}*{FLAVOUR} in bullseye or bookworm"
        );
    }
    // Remembered until the next list refresh, so each run does not ask the mirror again.
    let missing_file = cache.join("apt/not-on-mirror");
    let mut missing = fs::read_to_string(&missing_file).unwrap_or_default();
    for (package, pkg_version) in candidates.iter().take(4) {
        let file_version = pkg_version.replace(':', "%3a");
        let deb = debs.join(format!("{package}_{file_version}_amd64.deb"));
        if deb.is_file() {
            return Ok(deb);
        }
        let key = format!("{package}={pkg_version}");
        if missing.lines().any(|l| l == key) {
            continue;
        }
        eprintln!("xtask vm: downloading {package} {pkg_version}");
        if apt.download(package, pkg_version, &debs).is_ok() && deb.is_file() {
            return Ok(deb);
        }
        eprintln!("xtask vm: {package} {pkg_version} is not on the mirror; trying an older one");
        missing.push_str(&key);
        missing.push('\n');
        let _ = fs::write(&missing_file, &missing);
    }
    bail!("--kernel {version}: no matching package could be downloaded")
}

struct AptDir {
    options: Vec<String>,
}

impl AptDir {
    fn new(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir.join("lists/partial"))?;
        fs::create_dir_all(dir.join("cache/archives/partial"))?;
        let sources = dir.join("sources.list");
        let text: String = SUITES
            .iter()
            .map(|(uri, suite)| format!("deb [signed-by={KEYRING}] {uri} {suite} main\n"))
            .collect();
        fs::write(&sources, text)?;
        let d = dir.display();
        let options = [
            format!("Dir::Etc::SourceList={}", sources.display()),
            "Dir::Etc::SourceParts=/dev/null".into(),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::Cache={d}/cache"),
            "Dir::State::status=/dev/null".into(),
            "APT::Sandbox::User=root".into(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect();
        let apt = Self { options };
        // Refresh at most daily: package lists are what makes a version name resolvable.
        let fresh = fs::metadata(dir.join("lists/lock"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() < 86_400);
        if !fresh {
            eprintln!("xtask vm: refreshing the kernel package lists");
            apt.command("apt-get", &["update", "-qq"])?;
            fs::write(dir.join("lists/lock"), "")?;
            let _ = fs::remove_file(dir.join("not-on-mirror"));
        }
        Ok(apt)
    }

    fn command(&self, tool: &str, args: &[&str]) -> Result<String> {
        let out = Command::new(tool)
            .args(&self.options)
            .args(args)
            .output()
            .with_context(|| format!("running {tool}"))?;
        if !out.status.success() {
            bail!(
                "{tool} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// (package, version) pairs matching `version`, newest first.
    fn kernel_packages(&self, version: &str) -> Result<Vec<(String, String)>> {
        let full = version.starts_with("linux-image-");
        let prefix = if full {
            version.to_string()
        } else {
            format!("linux-image-{version}")
        };
        let names: Vec<String> = self
            .command("apt-cache", &["pkgnames", "linux-image-"])?
            .lines()
            .filter(|n| {
                n.strip_prefix(&prefix).is_some_and(|rest| {
                    (full && rest.is_empty())
                        || (rest.starts_with(['.', '-', '+']) && n.ends_with(FLAVOUR))
                })
            })
            .map(str::to_string)
            .collect();
        if names.is_empty() {
            return Ok(vec![]);
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut found: Vec<(String, String)> = self
            .command("apt-cache", &[&["madison"], refs.as_slice()].concat())?
            .lines()
            .filter_map(|l| {
                let mut cols = l.split('|').map(str::trim);
                Some((cols.next()?.to_string(), cols.next()?.to_string()))
            })
            .collect();
        found.sort_by_key(|(_, v)| std::cmp::Reverse(natural_key(v)));
        found.dedup();
        Ok(found)
    }

    fn download(&self, package: &str, version: &str, into: &Path) -> Result<()> {
        let spec = format!("{package}={version}");
        let out = Command::new("apt-get")
            .args(&self.options)
            .args(["download", "-qq", &spec])
            .current_dir(into)
            .output()?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }
}

/// Orders version strings by their numeric runs ("5.10.262-1" > "5.10.259-1").
fn natural_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0))
        .collect()
}

fn run(cmd: &str, args: &[&std::ffi::OsStr]) -> Result<()> {
    let status = Command::new(cmd)
        .args(args)
        .status()
        .with_context(|| format!("running {cmd}"))?;
    if !status.success() {
        bail!("{cmd} failed");
    }
    Ok(())
}
