//! The attach planner: per probe, try each hook the kernel might accept, best first, keep the
//! first that really loads and attaches, and record why every other one was skipped.
use std::{borrow::Cow, fmt};

use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, FExit, KProbe, Program, TracePoint},
};
use serde::{Deserialize, Serialize};

use crate::{Error, facts::tracefs::EventFormat, kernel::Kernel};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Hook {
    TpBtf {
        event: Cow<'static, str>,
    },
    Tracepoint {
        category: Cow<'static, str>,
        name: Cow<'static, str>,
    },
    /// Function exit with typed arguments and return value.
    Fexit {
        function: Cow<'static, str>,
    },
    /// A kretprobe, paired with a kprobe program named `<program>_entry` that saves arguments.
    Kretprobe {
        function: Cow<'static, str>,
    },
    /// Netfilter bpf_links (the conntrack stage sentinels, attached by their own module).
    NetfilterLink,
}

impl Hook {
    /// The program type name, as `--hook` takes it.
    pub fn kind(&self) -> &'static str {
        match self {
            Hook::TpBtf { .. } => "tp_btf",
            Hook::Tracepoint { .. } => "tracepoint",
            Hook::Fexit { .. } => "fexit",
            Hook::Kretprobe { .. } => "kretprobe",
            Hook::NetfilterLink => "netfilter",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hook::TpBtf { event } => write!(f, "tp_btf/{event}"),
            Hook::Tracepoint { category, name } => write!(f, "tracepoint/{category}/{name}"),
            Hook::Fexit { function } => write!(f, "fexit/{function}"),
            Hook::Kretprobe { function } => write!(f, "kretprobe/{function}"),
            Hook::NetfilterLink => write!(f, "netfilter_link/ipv4+ipv6"),
        }
    }
}

/// The hook types a user may force with `--hook`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HookKind {
    #[value(name = "tp_btf")]
    TpBtf,
    Tracepoint,
}

impl HookKind {
    /// As [`Hook::kind`] names it.
    pub fn name(self) -> &'static str {
        match self {
            HookKind::TpBtf => "tp_btf",
            HookKind::Tracepoint => "tracepoint",
        }
    }
}

/// One way to attach a probe: a hook, the program for it, and what it needs from userspace.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub hook: Hook,
    pub program: &'static str,
    /// `Err(why)` when userspace already knows this hook cannot work here (e.g. no BTF).
    pub precondition: Result<(), Error>,
}

/// The usual pair for a tracepoint: tp_btf (typed arguments) first, then the classic tracepoint,
/// which needs `fields` in its tracefs format.
pub fn tracepoint_pair(
    kernel: &Kernel,
    (category, name): (&'static str, &'static str),
    btf_program: &'static str,
    tp_program: &'static str,
    format: &Result<EventFormat, Error>,
    fields: &[&str],
) -> Vec<Candidate> {
    let tp_pre = match format {
        Ok(f) => match fields.iter().find(|n| f.field(n).is_none()) {
            Some(missing) => Err(Error::Unavailable(format!(
                "{category}:{name} format has no {missing}"
            ))),
            None => Ok(()),
        },
        Err(e) => Err(e.clone()),
    };
    vec![
        Candidate {
            hook: Hook::TpBtf { event: name.into() },
            program: btf_program,
            precondition: kernel.tp_btf_args(name).map(|_| ()),
        },
        Candidate {
            hook: Hook::Tracepoint {
                category: category.into(),
                name: name.into(),
            },
            program: tp_program,
            precondition: tp_pre,
        },
    ]
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    Attached,
    /// Works on this kernel, but a better hook was chosen (only `netdoc probes` tries these).
    Available,
    Skipped(String),
    Failed(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub hook: Hook,
    pub program: Cow<'static, str>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbePlan {
    pub probe: Cow<'static, str>,
    pub attempts: Vec<Attempt>,
}

/// What became of one probe in a run: the hook it attached through, or why it is unavailable.
/// Every summary carries these, so a degraded run says so in its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeStatus {
    pub probe: Cow<'static, str>,
    pub hook: Option<String>,
    pub unavailable: Option<String>,
    /// Runs the kernel skipped because the probe's program was already running on that CPU
    /// (its event came again from an interrupt while it ran): events it never saw.
    #[serde(default)]
    pub missed_runs: u64,
}

impl ProbePlan {
    pub fn status(&self) -> ProbeStatus {
        ProbeStatus {
            probe: self.probe.clone(),
            hook: self.chosen().map(|a| a.hook.to_string()),
            unavailable: self.chosen().is_none().then(|| self.failure()),
            missed_runs: 0,
        }
    }

    pub fn chosen(&self) -> Option<&Attempt> {
        self.attempts
            .iter()
            .find(|a| a.outcome == Outcome::Attached)
    }

    /// One line: why the probe could not attach anywhere.
    pub fn failure(&self) -> String {
        let why: Vec<String> = self
            .attempts
            .iter()
            .map(|a| match &a.outcome {
                Outcome::Skipped(w) | Outcome::Failed(w) => format!("{}: {w}", a.hook),
                _ => a.hook.to_string(),
            })
            .collect();
        format!("no hook for {} accepted ({})", self.probe, why.join("; "))
    }
}

/// Attaches the first candidate that works. Links stay owned by `ebpf`: dropping it detaches.
pub fn attach_best(
    ebpf: &mut Ebpf,
    probe: &'static str,
    candidates: Vec<Candidate>,
    btf: Option<&Btf>,
) -> ProbePlan {
    let mut attempts = Vec::new();
    let mut chosen: Option<Hook> = None;
    for c in candidates {
        let outcome = if let Some(hook) = &chosen {
            Outcome::Skipped(format!("{hook} attached first"))
        } else if let Err(why) = c.precondition {
            Outcome::Skipped(why.to_string())
        } else {
            match attach(ebpf, &c.hook, c.program, btf) {
                Ok(()) => {
                    chosen = Some(c.hook.clone());
                    Outcome::Attached
                }
                Err(e) => Outcome::Failed(e.to_string()),
            }
        };
        attempts.push(Attempt {
            hook: c.hook,
            program: c.program.into(),
            outcome,
        });
    }
    ProbePlan {
        probe: probe.into(),
        attempts,
    }
}

fn attach(ebpf: &mut Ebpf, hook: &Hook, program: &str, btf: Option<&Btf>) -> Result<(), Error> {
    let no_btf = || Error::Unavailable("no kernel BTF".into());
    match hook {
        Hook::TpBtf { event } => {
            let btf = btf.ok_or_else(no_btf)?;
            let p: &mut BtfTracePoint = program_mut(ebpf, program)?.try_into().map_err(short)?;
            p.load(event, btf).map_err(short)?;
            p.attach().map_err(short)?;
        }
        Hook::Tracepoint { category, name } => {
            let p: &mut TracePoint = program_mut(ebpf, program)?.try_into().map_err(short)?;
            p.load().map_err(short)?;
            p.attach(category, name).map_err(short)?;
        }
        Hook::Fexit { function } => {
            let btf = btf.ok_or_else(no_btf)?;
            let p: &mut FExit = program_mut(ebpf, program)?.try_into().map_err(short)?;
            p.load(function, btf).map_err(short)?;
            p.attach().map_err(short)?;
        }
        Hook::Kretprobe { function } => {
            // The entry half first, so no return is seen without its saved arguments.
            attach_kprobe(ebpf, &format!("{program}_entry"), function)?;
            attach_kprobe(ebpf, program, function)?;
        }
        Hook::NetfilterLink => {
            return Err(Error::Failed(
                "netfilter links are placed by conntrack::sentinel".into(),
            ));
        }
    }
    Ok(())
}

/// Detaches and unloads every program of `ebpf`, in parallel: detaching a classic tracepoint
/// waits for an RCU grace period (tens of milliseconds each, far more in an emulated guest),
/// and `netdoc probes` leaves one attached per fallback it tried.
pub fn release_all(ebpf: &mut Ebpf) {
    std::thread::scope(|scope| {
        for (name, program) in ebpf.programs_mut() {
            scope.spawn(move || {
                let unloaded = match program {
                    Program::BtfTracePoint(p) => p.unload(),
                    Program::TracePoint(p) => p.unload(),
                    Program::FExit(p) => p.unload(),
                    Program::KProbe(p) => p.unload(),
                    _ => Ok(()),
                };
                // Never loaded (its attempt failed or was skipped) is the usual reason.
                if let Err(e) = unloaded {
                    log::debug!("releasing {name}: {e}");
                }
            });
        }
    });
}

fn program_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut aya::programs::Program, Error> {
    ebpf.program_mut(name)
        .ok_or_else(|| Error::Failed(format!("program {name} missing from the object")))
}

fn attach_kprobe(ebpf: &mut Ebpf, program: &str, function: &str) -> Result<(), Error> {
    let p: &mut KProbe = program_mut(ebpf, program)?.try_into().map_err(short)?;
    p.load().map_err(short)?;
    p.attach(function, 0).map_err(short)?;
    Ok(())
}

/// The kernel's refusal, as the first line of its error chain: verifier logs are long, the
/// plan wants the gist.
fn short(e: impl std::error::Error) -> Error {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    Error::Failed(msg.lines().next().unwrap_or_default().to_string())
}
