//! The one registry of probe families: a new family is one more field here.
use crate::{
    conntrack::confirm::ConfirmKernel, drops::DropKernel, family::Family, kernel::Kernel,
    loader::Configs, retrans::RetransKernel, softirq::SoftirqKernel,
};

/// Every probe family, discovered once per run from the same kernel facts. A new family is
/// one more field here (and in [`Families::all`]).
pub struct Families {
    pub drops: DropKernel,
    pub softirq: SoftirqKernel,
    pub retrans: RetransKernel,
    pub confirm: ConfirmKernel,
}

impl Families {
    pub fn discover(kernel: &Kernel) -> Self {
        Self {
            drops: DropKernel::discover(kernel),
            softirq: SoftirqKernel::discover(kernel),
            retrans: RetransKernel::discover(kernel),
            confirm: ConfirmKernel::discover(kernel),
        }
    }

    pub fn all(&self) -> [&dyn Family; 4] {
        [&self.drops, &self.softirq, &self.retrans, &self.confirm]
    }

    /// The object's config globals, each family's part filled in.
    pub fn configs(&self) -> Configs {
        let mut configs = Configs::default();
        for family in self.all() {
            family.configure(&mut configs);
        }
        configs
    }
}
