//! `/proc/interrupts`: per-IRQ counts per CPU and handler names, and which NIC queue a handler
//! name denotes (drivers encode device and queue in it).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrqLine {
    pub irq: u32,
    /// Count per CPU column, in header order.
    pub counts: Vec<u64>,
    /// Action names (several when the line is shared).
    pub handlers: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interrupts {
    /// CPU numbers of the columns (offline CPUs have no column).
    pub cpus: Vec<u32>,
    pub lines: Vec<IrqLine>,
}

impl Interrupts {
    pub fn read() -> std::io::Result<Self> {
        Ok(Self::parse(&super::read_text("/proc/interrupts")?))
    }

    pub fn parse(text: &str) -> Self {
        let mut rows = text.lines();
        let cpus = cpu_columns(rows.next().unwrap_or_default());
        let lines = rows.filter_map(|l| parse_line(l, cpus.len())).collect();
        Self { cpus, lines }
    }

    /// Count per CPU number of one IRQ.
    pub fn per_cpu(&self, irq: u32) -> BTreeMap<u32, u64> {
        self.lines
            .iter()
            .find(|l| l.irq == irq)
            .map(|l| {
                self.cpus
                    .iter()
                    .copied()
                    .zip(l.counts.iter().copied())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The CPU numbers of a `CPU0 CPU1 ...` header (procfs tables leave offline CPUs out).
pub fn cpu_columns(header: &str) -> Vec<u32> {
    header
        .split_whitespace()
        .filter_map(|c| c.strip_prefix("CPU")?.parse().ok())
        .collect()
}

fn parse_line(line: &str, ncpu: usize) -> Option<IrqLine> {
    let (irq, rest) = line.trim_start().split_once(':')?;
    let irq = irq.parse().ok()?;
    let mut tokens = rest.split_whitespace();
    let counts: Vec<u64> = tokens
        .by_ref()
        .take(ncpu)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    let tail: Vec<&str> = tokens.collect();
    // Chip and trigger come first ("PCI-MSIX-0000:00:03.0 1-edge", "IR-PCI-MSI-edge"); the
    // actions follow the trigger, joined by ", ".
    let trigger = tail.iter().rposition(|t| {
        let t = t.to_ascii_lowercase();
        t.ends_with("edge") || t.ends_with("level") || t.ends_with("fasteoi")
    });
    let actions = match trigger {
        Some(i) => tail[i + 1..].join(" "),
        None => tail.last().map(|s| s.to_string()).unwrap_or_default(),
    };
    let handlers = actions
        .split(',')
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect();
    Some(IrqLine {
        irq,
        counts,
        handlers,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueKind {
    Rx,
    Tx,
    /// One vector serves a receive and a transmit ring.
    Combined,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicQueue {
    /// Network device name when known, else what the handler names (`virtio2`, a PCI address).
    pub device: String,
    pub kind: QueueKind,
    pub index: u32,
}

/// Queue-type words drivers put before the queue number, longest first.
const KINDS: [(&str, QueueKind); 10] = [
    ("-tx-rx", QueueKind::Combined),
    ("-txrx", QueueKind::Combined),
    ("-rxtx", QueueKind::Combined),
    ("-input", QueueKind::Rx),
    ("-output", QueueKind::Tx),
    ("-fp", QueueKind::Combined),
    ("-rx", QueueKind::Rx),
    ("-tx", QueueKind::Tx),
    ("-comp", QueueKind::Combined),
    ("-ce", QueueKind::Combined),
];

/// The NIC queue an IRQ handler name denotes, e.g. `eth0-TxRx-3` (ixgbe, bnxt), `i40e-eth0-TxRx-3`,
/// `ens5-Tx-Rx-0` (ena), `virtio0-input.0`, `mlx5_comp3@pci:0000:3b:00.0`. `alias` maps what
/// the handler names (a virtio device, a PCI address) to the network device.
pub fn nic_queue(handler: &str, alias: &BTreeMap<String, String>) -> Option<NicQueue> {
    if let Some(rest) = handler.strip_prefix("mlx5_comp") {
        let (index, bus) = rest.split_once('@')?;
        let addr = bus.strip_prefix("pci:").unwrap_or(bus);
        return Some(NicQueue {
            device: alias.get(addr).cloned().unwrap_or_else(|| addr.to_string()),
            kind: QueueKind::Combined,
            index: index.parse().ok()?,
        });
    }
    let split = handler.rfind(['-', '.'])?;
    let index: u32 = handler[split + 1..].parse().ok()?;
    let head = &handler[..split];
    let lower = head.to_ascii_lowercase();
    let (suffix, kind) = KINDS.iter().find(|(s, _)| lower.ends_with(s))?;
    let prefix = &head[..head.len() - suffix.len()];
    // "i40e-eth0" or "eth0": prefer a name the machine has, else the part after a driver prefix.
    let mut names = vec![prefix];
    if let Some((_, dev)) = prefix.split_once('-') {
        names.push(dev);
    }
    let device = names
        .iter()
        .find_map(|n| alias.get(*n).cloned())
        .unwrap_or_else(|| names.last().unwrap_or(&prefix).to_string());
    Some(NicQueue {
        device,
        kind: *kind,
        index,
    })
}

/// Every network device by its own name and by what its IRQ handlers may name instead: the
/// basename of its `device` link (`virtio2`, `0000:3b:00.0`).
pub fn device_aliases(sys_class_net: &std::path::Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(sys_class_net) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(target) = std::fs::canonicalize(e.path().join("device"))
            && let Some(base) = target.file_name()
        {
            out.insert(base.to_string_lossy().into_owned(), name.clone());
        }
        out.insert(name.clone(), name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Interrupts {
        let path = format!(
            "{}/tests/fixtures/interrupts/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        Interrupts::parse(&std::fs::read_to_string(path).unwrap())
    }

    fn queues(int: &Interrupts, alias: &BTreeMap<String, String>) -> Vec<(u32, NicQueue)> {
        int.lines
            .iter()
            .filter_map(|l| Some((l.irq, nic_queue(l.handlers.first()?, alias)?)))
            .collect()
    }

    fn aliases(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn mlx5_completion_vectors_map_through_the_pci_address() {
        let int = fixture("mlx5");
        assert_eq!(int.cpus.len(), 8);
        let q = queues(&int, &aliases(&[("0000:3b:00.0", "ens1f0np0")]));
        assert_eq!(q.len(), 8, "8 completion vectors, async vector excluded");
        assert!(q.iter().all(|(_, q)| q.device == "ens1f0np0"));
        assert_eq!(q[3].1.index, 3);
        assert_eq!(int.per_cpu(q[3].0)[&3], 1_048_577);
    }

    #[test]
    fn intel_names_with_and_without_driver_prefix() {
        let int = fixture("i40e-ixgbe");
        let q = queues(&int, &aliases(&[("eth2", "eth2"), ("ens1f0", "ens1f0")]));
        let devs: Vec<(&str, u32, QueueKind)> = q
            .iter()
            .map(|(_, q)| (q.device.as_str(), q.index, q.kind))
            .collect();
        assert!(
            devs.contains(&("ens1f0", 3, QueueKind::Combined)),
            "{devs:?}"
        );
        assert!(devs.contains(&("eth2", 1, QueueKind::Combined)), "{devs:?}");
        assert_eq!(
            devs.len(),
            8,
            "link and misc vectors are not queues: {devs:?}"
        );
    }

    #[test]
    fn virtio_queues_resolve_to_the_netdev() {
        let int = fixture("virtio");
        let q = queues(&int, &aliases(&[("virtio1", "eth0")]));
        let rx: Vec<_> = q
            .iter()
            .filter(|(_, q)| q.kind == QueueKind::Rx)
            .map(|(irq, q)| (*irq, q.device.as_str(), q.index))
            .collect();
        assert_eq!(rx, vec![(25, "eth0", 0), (27, "eth0", 1)]);
        assert!(q.iter().all(|(_, q)| q.device == "eth0"), "{q:?}");
    }

    #[test]
    fn ena_tx_rx_queues_and_management_vector() {
        let int = fixture("ena");
        let q = queues(&int, &BTreeMap::new());
        assert_eq!(q.len(), 4);
        assert!(
            q.iter()
                .all(|(_, q)| q.device == "ens5" && q.kind == QueueKind::Combined)
        );
        assert!(
            int.lines
                .iter()
                .any(|l| l.handlers == ["ena-mgmnt@pci:0000:00:05.0"])
        );
    }

    #[test]
    fn recorded_copy_of_this_machine_single_queue_virtio() {
        let int = fixture("this-machine-6.18");
        let q = queues(&int, &aliases(&[("virtio2", "eth0")]));
        let eth0: Vec<_> = q
            .iter()
            .filter(|(_, q)| q.device == "eth0")
            .map(|(irq, q)| (*irq, q.kind, q.index))
            .collect();
        assert_eq!(eth0, vec![(38, QueueKind::Rx, 0), (39, QueueKind::Tx, 0)]);
    }

    #[test]
    fn shared_lines_list_every_action() {
        let int = Interrupts::parse(
            "           CPU0       CPU1\n  9:          0          0   IO-APIC   9-fasteoi   acpi, eth1\nNMI:  0 0  Non-maskable interrupts\n",
        );
        assert_eq!(int.lines.len(), 1);
        assert_eq!(int.lines[0].handlers, ["acpi", "eth1"]);
    }
}
