//! IRQ affinity (`/proc/irq/N/*_affinity_list`) and RPS masks
//! (`/sys/class/net/DEV/queues/rx-N/rps_cpus`), read under a root so a recorded copy works too.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// A kernel CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(s: &str) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    out.extend(a..=b.min(a + 4096));
                }
            }
            None => {
                if let Ok(c) = part.parse() {
                    out.insert(c);
                }
            }
        }
    }
    out
}

/// A hex CPU mask in 32-bit groups, most significant first: `00000000,00000003`.
pub fn parse_cpu_mask(s: &str) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for (group, word) in s.trim().rsplit(',').enumerate() {
        let Ok(bits) = u32::from_str_radix(word, 16) else {
            continue;
        };
        for b in 0..32 {
            if bits & (1 << b) != 0 {
                out.insert(group as u32 * 32 + b);
            }
        }
    }
    out
}

pub struct IrqSys {
    proc_irq: PathBuf,
    sys_class_net: PathBuf,
}

impl IrqSys {
    pub fn live() -> Self {
        Self::at(Path::new("/proc/irq"), Path::new("/sys/class/net"))
    }

    pub fn at(proc_irq: &Path, sys_class_net: &Path) -> Self {
        Self {
            proc_irq: proc_irq.to_path_buf(),
            sys_class_net: sys_class_net.to_path_buf(),
        }
    }

    fn list(&self, irq: u32, file: &str) -> Option<BTreeSet<u32>> {
        super::read_text(self.proc_irq.join(irq.to_string()).join(file))
            .ok()
            .map(|s| parse_cpu_list(&s))
    }

    /// CPUs the IRQ may be delivered to.
    pub fn affinity(&self, irq: u32) -> Option<BTreeSet<u32>> {
        self.list(irq, "smp_affinity_list")
    }

    /// CPUs the interrupt controller really targets (often one CPU of the mask).
    pub fn effective(&self, irq: u32) -> Option<BTreeSet<u32>> {
        self.list(irq, "effective_affinity_list")
    }

    /// RPS CPUs of a receive queue; empty when RPS is off.
    pub fn rps(&self, device: &str, queue: u32) -> Option<BTreeSet<u32>> {
        let path = self
            .sys_class_net
            .join(device)
            .join("queues")
            .join(format!("rx-{queue}"))
            .join("rps_cpus");
        super::read_text(path).ok().map(|s| parse_cpu_mask(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_and_masks() {
        assert_eq!(parse_cpu_list("0-2,5\n"), BTreeSet::from([0, 1, 2, 5]));
        assert!(parse_cpu_list("").is_empty());
        assert_eq!(
            parse_cpu_mask("00000000,00000003\n"),
            BTreeSet::from([0, 1])
        );
        assert_eq!(parse_cpu_mask("1,00000000"), BTreeSet::from([32]));
        assert!(parse_cpu_mask("0").is_empty());
    }

    #[test]
    fn reads_a_recorded_tree() {
        let dir = std::env::temp_dir().join(format!("netdoc-irqsys-{}", std::process::id()));
        let irq = dir.join("irq/38");
        let q = dir.join("net/eth0/queues/rx-0");
        std::fs::create_dir_all(&irq).unwrap();
        std::fs::create_dir_all(&q).unwrap();
        std::fs::write(irq.join("smp_affinity_list"), "0-1\n").unwrap();
        std::fs::write(irq.join("effective_affinity_list"), "1\n").unwrap();
        std::fs::write(q.join("rps_cpus"), "0\n").unwrap();
        let sys = IrqSys::at(&dir.join("irq"), &dir.join("net"));
        assert_eq!(sys.affinity(38), Some(BTreeSet::from([0, 1])));
        assert_eq!(sys.effective(38), Some(BTreeSet::from([1])));
        assert_eq!(sys.rps("eth0", 0), Some(BTreeSet::new()));
        assert_eq!(sys.affinity(99), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
