//! Turns `--kernel` (a vmlinuz, a .deb or a Debian kernel version) into a bootable image and its
//! module tree. Debian packages come through a private apt configuration under the cache, so the
//! host's own sources are never touched.
use std::{
    cmp::Reverse,
    collections::{BTreeSet, HashSet},
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
/// Suites that carry the kernels we test: bullseye (5.10), bookworm (6.1), trixie (6.12) and
/// trixie's backports, the newest kernel Debian ships.
const SUITES: [(&str, &str); 9] = [
    ("http://deb.debian.org/debian", "bullseye"),
    ("http://deb.debian.org/debian-security", "bullseye-security"),
    ("http://deb.debian.org/debian", "bookworm"),
    ("http://deb.debian.org/debian", "bookworm-updates"),
    ("http://deb.debian.org/debian-security", "bookworm-security"),
    ("http://deb.debian.org/debian", "trixie"),
    ("http://deb.debian.org/debian", "trixie-updates"),
    ("http://deb.debian.org/debian-security", "trixie-security"),
    ("http://deb.debian.org/debian", "trixie-backports"),
];
/// The smallest Debian flavour that boots under QEMU and has BTF, kprobes and fentry.
const FLAVOUR: &str = "-cloud-amd64";
/// The `--kernel` spec for the highest-versioned cloud kernel of all suites.
pub const NEWEST: &str = "newest";

pub fn resolve(spec: &str, modules: Option<&Path>, cache: &Path) -> Result<KernelImage> {
    let path = Path::new(spec);
    if spec.ends_with(".deb") {
        if !path.is_file() {
            bail!("--kernel {spec}: no such .deb file");
        }
        return from_debs(&[path.to_path_buf()], cache);
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
    let debs = download(spec, cache)?;
    from_debs(&debs, cache)
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

/// Unpacks the packages of one kernel into one tree (cached under the first one's name).
fn from_debs(debs: &[PathBuf], cache: &Path) -> Result<KernelImage> {
    let first = debs.first().context("no package to unpack")?;
    let stem = first
        .file_stem()
        .context("deb name")?
        .to_string_lossy()
        .into_owned();
    let dir = cache.join("kernels").join(&stem);
    if !dir.is_dir() {
        let tmp = dir.with_extension("partial");
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        for deb in debs {
            run(
                "dpkg-deb",
                &["-x".as_ref(), deb.as_os_str(), tmp.as_os_str()],
            )?;
        }
        fs::rename(&tmp, &dir)?;
    }
    let vmlinuz =
        vmlinuz(&dir).with_context(|| format!("{}: no vmlinuz inside", first.display()))?;
    Ok(KernelImage {
        label: label(&stem),
        vmlinuz,
        modules: module_tree(&dir).ok(),
    })
}

/// Up to 6.18 Debian's image is `boot/vmlinuz-<release>`; the split packages of 6.19 and later
/// put it beside the modules, as `vmlinuz` (signed) or `vmlinuz.unsigned`.
fn vmlinuz(dir: &Path) -> Option<PathBuf> {
    [Some(dir.join("boot")), module_tree(dir).ok()]
        .into_iter()
        .flatten()
        .filter_map(|d| fs::read_dir(d).ok())
        .flat_map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()))
        .find(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
        })
}

/// A short name for tables and run directories: the release without package kind, signing or
/// flavour ("6.1.0-56", "7.3.4+deb13").
fn label(stem: &str) -> String {
    let name = stem.split('_').next().unwrap_or(stem);
    let release = ["linux-image-", "linux-binary-unsigned-", "linux-binary-"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name);
    let release = release.strip_suffix("-unsigned").unwrap_or(release);
    release.strip_suffix(FLAVOUR).unwrap_or(release).to_string()
}

/// Downloads the newest Debian cloud kernel matching `spec` ("5.10", "6.1", "6.12.117",
/// "6.1.0-56", a package name, or `newest`): the packages that hold its image and modules.
/// Mirrors lag: older builds are tried in turn.
fn download(spec: &str, cache: &Path) -> Result<Vec<PathBuf>> {
    let apt = AptDir::new(&cache.join("apt"))?;
    let debs = cache.join("debs");
    fs::create_dir_all(&debs)?;
    let candidates = apt.kernel_builds(spec)?;
    if candidates.is_empty() {
        bail!(
            "--kernel {spec}: no matching Debian kernel (linux-image-*{FLAVOUR}) in bullseye, bookworm or trixie"
        );
    }
    // Remembered until the next list refresh, so each run does not ask the mirror again.
    let missing_file = cache.join("apt/not-on-mirror");
    let mut missing = fs::read_to_string(&missing_file).unwrap_or_default();
    for build in candidates.iter().take(4) {
        let files = build.files(&debs);
        if files.iter().all(|f| f.is_file()) {
            return Ok(files);
        }
        let key = format!("{}={}", build.packages.join(" "), build.version);
        if missing.lines().any(|l| l == key) {
            continue;
        }
        eprintln!(
            "xtask vm: downloading {} {}",
            build.packages.join(" and "),
            build.version
        );
        if apt.download(build, &debs).is_ok() && files.iter().all(|f| f.is_file()) {
            return Ok(files);
        }
        eprintln!(
            "xtask vm: {} is not on the mirror; trying an older build",
            build.version
        );
        missing.push_str(&key);
        missing.push('\n');
        let _ = fs::write(&missing_file, &missing);
    }
    bail!("--kernel {spec}: no matching package could be downloaded")
}

/// One Debian kernel build: its release (`uname -r`), package version and the packages that
/// together hold its image and modules.
struct Build {
    release: String,
    version: String,
    packages: Vec<String>,
}

impl Build {
    /// Where `apt-get download` puts each package.
    fn files(&self, dir: &Path) -> Vec<PathBuf> {
        let file_version = self.version.replace(':', "%3a");
        self.packages
            .iter()
            .map(|p| dir.join(format!("{p}_{file_version}_amd64.deb")))
            .collect()
    }
}

/// The package sets that can hold a release's image and modules, preferred first. Since 6.19
/// `linux-image-*` only depends on `linux-binary-*` (the image) and `linux-modules-*`; before, it
/// held both. Unsigned first: the same kernel without the Secure Boot signature nobody checks here.
fn layouts(release: &str) -> [Vec<String>; 4] {
    [
        vec![
            format!("linux-binary-unsigned-{release}"),
            format!("linux-modules-{release}"),
        ],
        vec![
            format!("linux-binary-{release}"),
            format!("linux-modules-{release}"),
        ],
        vec![format!("linux-image-{release}-unsigned")],
        vec![format!("linux-image-{release}")],
    ]
}

/// Whether the kernel release `release` (e.g. "6.1.0-56-cloud-amd64") is what `spec` names.
fn matches(spec: &str, release: &str) -> bool {
    if let Some(named) = spec.strip_prefix("linux-image-") {
        return named.strip_suffix("-unsigned").unwrap_or(named) == release;
    }
    let Some(version) = release.strip_suffix(FLAVOUR) else {
        return false;
    };
    spec == NEWEST
        || version
            .strip_prefix(spec)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '-', '+']))
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
        if fs::read_to_string(&sources).ok().as_deref() != Some(text.as_str()) {
            // Lists of other suites, however recent, cannot resolve the new suites' kernels. The
            // mark goes first, so a refresh that fails now is retried next time.
            let _ = fs::remove_file(dir.join("lists/lock"));
            fs::write(&sources, &text)?;
        }
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

    /// The cloud kernel builds `spec` names, newest first, each in its preferred layout.
    fn kernel_builds(&self, spec: &str) -> Result<Vec<Build>> {
        let names: HashSet<String> = self
            .command("apt-cache", &["pkgnames", "linux-"])?
            .lines()
            .map(str::to_string)
            .collect();
        let releases: BTreeSet<&str> = names
            .iter()
            .filter_map(|n| n.strip_prefix("linux-image-"))
            .map(|r| r.strip_suffix("-unsigned").unwrap_or(r))
            .filter(|r| matches(spec, r))
            .collect();
        let wanted: Vec<String> = releases
            .iter()
            .flat_map(|r| layouts(r).into_iter().flatten())
            .filter(|p| names.contains(p))
            .collect();
        if wanted.is_empty() {
            return Ok(vec![]);
        }
        let refs: Vec<&str> = wanted.iter().map(String::as_str).collect();
        // (package, version) as the suites carry them; one version may be in several suites.
        let available: HashSet<(String, String)> = self
            .command("apt-cache", &[&["madison"], refs.as_slice()].concat())?
            .lines()
            .filter_map(|l| {
                let mut cols = l.split('|').map(str::trim);
                Some((cols.next()?.to_string(), cols.next()?.to_string()))
            })
            .collect();
        let mut builds: Vec<Build> = releases
            .iter()
            .flat_map(|r| builds_of(r, &available))
            .collect();
        builds.sort_by_key(|b| Reverse((natural_key(&b.version), natural_key(&b.release))));
        Ok(builds)
    }

    fn download(&self, build: &Build, into: &Path) -> Result<()> {
        let specs: Vec<String> = build
            .packages
            .iter()
            .map(|p| format!("{p}={}", build.version))
            .collect();
        let out = Command::new("apt-get")
            .args(&self.options)
            .args(["download", "-qq"])
            .args(&specs)
            .current_dir(into)
            .output()?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }
}

/// Every version of `release` that some layout holds completely, in the first such layout.
fn builds_of(release: &str, available: &HashSet<(String, String)>) -> Vec<Build> {
    let layouts = layouts(release);
    let versions: BTreeSet<&str> = available
        .iter()
        .filter(|(p, _)| layouts.iter().flatten().any(|l| l == p))
        .map(|(_, v)| v.as_str())
        .collect();
    versions
        .into_iter()
        .filter_map(|version| {
            let packages = layouts.iter().find(|set| {
                set.iter()
                    .all(|p| available.contains(&(p.clone(), version.to_string())))
            })?;
            Some(Build {
                release: release.to_string(),
                version: version.to_string(),
                packages: packages.clone(),
            })
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_short_release() {
        for (stem, label_) in [
            (
                "linux-image-6.1.0-56-cloud-amd64-unsigned_6.1.158-1_amd64",
                "6.1.0-56",
            ),
            (
                "linux-image-6.18.15+deb13-cloud-amd64_6.18.15-1~bpo13+1_amd64",
                "6.18.15+deb13",
            ),
            (
                "linux-binary-unsigned-7.3.4+deb13-cloud-amd64_7.3.4-1~bpo13+1_amd64",
                "7.3.4+deb13",
            ),
            (
                "linux-binary-7.3.4+deb13-cloud-amd64_7.3.4-1~bpo13+1_amd64",
                "7.3.4+deb13",
            ),
            ("linux-image-custom", "custom"),
        ] {
            assert_eq!(label(stem), label_, "{stem}");
        }
    }

    #[test]
    fn specs_name_releases() {
        assert!(matches("6.1", "6.1.0-56-cloud-amd64"));
        assert!(!matches("6.1", "6.12.118+deb13-cloud-amd64"));
        assert!(matches("6.12.115", "6.12.115+deb13.1-cloud-amd64"));
        assert!(matches("7.3.4+deb13", "7.3.4+deb13-cloud-amd64"));
        assert!(!matches("6.1", "6.1.0-56-cloud-amd64-dbg"));
        assert!(!matches("6.1", "6.1.0-56-amd64"));
        assert!(matches(
            "linux-image-6.1.0-56-amd64-unsigned",
            "6.1.0-56-amd64"
        ));
        assert!(matches(NEWEST, "7.3.4+deb13-cloud-amd64"));
        assert!(!matches(NEWEST, "cloud-amd64"));
        assert!(!matches(NEWEST, "7.3.4+deb13-cloud-amd64-dbg"));
    }

    #[test]
    fn builds_prefer_unsigned_and_complete_layouts() {
        let available: HashSet<(String, String)> = [
            ("linux-image-7.3.4+deb13-cloud-amd64", "7.3.4-1"),
            ("linux-binary-7.3.4+deb13-cloud-amd64", "7.3.4-1"),
            ("linux-binary-unsigned-7.3.4+deb13-cloud-amd64", "7.3.4-1"),
            ("linux-modules-7.3.4+deb13-cloud-amd64", "7.3.4-1"),
            ("linux-image-6.12.118+deb13-cloud-amd64", "6.12.118-1"),
            (
                "linux-image-6.12.118+deb13-cloud-amd64-unsigned",
                "6.12.118-1",
            ),
            ("linux-image-6.12.90+deb13-cloud-amd64", "6.12.90-1"),
        ]
        .into_iter()
        .map(|(p, v)| (p.to_string(), v.to_string()))
        .collect();
        let packages = |release| -> Vec<Vec<String>> {
            builds_of(release, &available)
                .into_iter()
                .map(|b| b.packages)
                .collect()
        };
        assert_eq!(
            packages("7.3.4+deb13-cloud-amd64"),
            [[
                "linux-binary-unsigned-7.3.4+deb13-cloud-amd64",
                "linux-modules-7.3.4+deb13-cloud-amd64"
            ]]
        );
        assert_eq!(
            packages("6.12.118+deb13-cloud-amd64"),
            [["linux-image-6.12.118+deb13-cloud-amd64-unsigned"]]
        );
        assert_eq!(
            packages("6.12.90+deb13-cloud-amd64"),
            [["linux-image-6.12.90+deb13-cloud-amd64"]]
        );
    }
}
