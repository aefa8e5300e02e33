//! The doctor's report as text: the live top findings and the final ranked report.
use std::fmt::Write as _;

use super::{DropAccounting, Report, is_blind_spot};
use crate::{
    model::finding::{Finding, Severity},
    text::printable,
};

/// The few most important findings, one line each, for the live view.
pub fn top(findings: &[Finding], n: usize) -> String {
    let problems: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.severity > Severity::Info)
        .collect();
    if problems.is_empty() {
        return "no problem found so far\n".into();
    }
    let mut out = String::new();
    for (i, f) in problems.iter().take(n).enumerate() {
        let _ = writeln!(
            out,
            "{}. [{}] {} ({})",
            i + 1,
            f.severity.name(),
            printable(&f.title),
            printable(&f.scope.to_string())
        );
    }
    out
}

pub fn report(r: &Report) -> String {
    let mut out = format!(
        "netdoc doctor{}: {} (kernel {}), {:.0} s\n",
        if r.replayed { " (replayed)" } else { "" },
        printable(&r.hostname),
        printable(&r.kernel),
        r.duration_s
    );
    let (blind, shown): (Vec<&Finding>, Vec<&Finding>) =
        r.findings.iter().partition(|f| is_blind_spot(f));
    let problems = shown.iter().filter(|f| f.severity > Severity::Info).count();
    match problems {
        0 => out.push_str("no problem found\n"),
        n => {
            let _ = writeln!(out, "{n} finding(s), most severe first:\n");
        }
    }
    // Problems first (the ranking puts them there), then notes of severity info.
    for (i, f) in shown.iter().enumerate() {
        let _ = writeln!(out, "{}. {}", i + 1, f.render());
    }
    if !blind.is_empty() {
        out.push_str("what this run could not see:\n");
        for f in blind {
            out.push_str(&f.render());
        }
    }
    let _ = writeln!(
        out,
        "drop events: {} matched, {} delivered, {} lost",
        r.drops_matched, r.drops_delivered, r.drops_lost
    );
    let _ = writeln!(
        out,
        "drops accounted for: {}",
        accounting(&r.drops_accounted)
    );
    out
}

/// Where the run's drops went, in one line: nothing the probe counted goes unmentioned.
pub fn accounting(a: &DropAccounting) -> String {
    let harmless: u64 = a.harmless.values().sum();
    let mut out = format!("{} by the findings, {harmless} not loss", a.explained);
    if harmless > 0 {
        let each: Vec<String> = a.harmless.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let _ = write!(
            out,
            " (copies the receiver already had or nobody needed: {})",
            each.join(", ")
        );
    }
    let _ = write!(
        out,
        ", {} in groups below the noise threshold of {} packets",
        a.below_noise,
        super::MIN_PACKETS
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drop_of_the_run_is_in_the_accounting_line() {
        let a = DropAccounting {
            explained: 300,
            harmless: [
                ("TCP_OLD_SEQUENCE".to_string(), 1099),
                ("NOT_SPECIFIED@ip6_mc_input".to_string(), 16),
            ]
            .into(),
            below_noise: 3,
        };
        assert_eq!(
            accounting(&a),
            "300 by the findings, 1115 not loss (copies the receiver already had or nobody needed: NOT_SPECIFIED@ip6_mc_input 16, TCP_OLD_SEQUENCE 1099), 3 in groups below the noise threshold of 10 packets"
        );
        assert_eq!(
            accounting(&DropAccounting::default()),
            "0 by the findings, 0 not loss, 0 in groups below the noise threshold of 10 packets"
        );
    }
}
