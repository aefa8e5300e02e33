//! netdoc's one error type. Each variant is a kind of failure its reader acts on differently:
//! it carries the one line netdoc prints (`netdoc: error: ...`) and decides the exit code.
//! Internal steps return it too, so a reason why a probe is skipped or a reading is missing
//! stays typed until a summary or `netdoc probes` shows it.

/// `fail!(Input, "--pages {n}: ...")`: returns that error from a function whose error type
/// takes a netdoc [`Error`] (`anyhow::Error` does).
macro_rules! fail {
    ($kind:ident, $($message:tt)+) => {
        return Err($crate::error::Error::$kind(format!($($message)+)).into())
    };
}

/// The commands whose exit codes mean more than success or failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `netdoc check`: `git bisect run` codes (125 skip this kernel, above 127 stop bisecting).
    Check,
    /// `netdoc doctor`: 0 healthy, 1 findings, 2 could not examine.
    Doctor,
    /// Every other command: 0 or 1.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Input netdoc checks itself is wrong (a namespace, a file, a reason name, a size, an
    /// expectation): the user fixes the command line.
    #[error("{0}")]
    Input(String),
    /// netdoc lacks a privilege or capability it needs.
    #[error("{0}")]
    Privilege(String),
    /// This kernel or host does not offer what is needed (a hook, a map type, a file, a tool).
    #[error("{0}")]
    Unavailable(String),
    /// An operation failed while running (a read, a program load, a child process).
    #[error("{0}")]
    Failed(String),
}

/// `git bisect run` aborts on codes above 127: a check that cannot even be set up must not read
/// as a bad kernel.
pub const CHECK_USAGE: u8 = 128;
/// `git bisect run`'s "skip": this kernel cannot be tested.
pub const CHECK_UNTESTABLE: u8 = 125;
/// The doctor's "could not examine" (1 is its verdict: findings).
pub const DOCTOR_CANNOT_RUN: u8 = 2;

impl Error {
    /// The exit code this error ends `verb` with.
    pub fn exit_code(&self, verb: Verb) -> u8 {
        match (verb, self) {
            (Verb::Check, Error::Unavailable(_)) => CHECK_UNTESTABLE,
            (Verb::Check, _) => CHECK_USAGE,
            (Verb::Doctor, _) => DOCTOR_CANNOT_RUN,
            (Verb::Other, _) => 1,
        }
    }

    /// The exit code of any error `verb` ended with: netdoc's own by its kind, anything else
    /// (a library's, with context) as a failure.
    pub fn exit_code_of(err: &anyhow::Error, verb: Verb) -> u8 {
        err.chain()
            .find_map(|e| e.downcast_ref::<Error>())
            .unwrap_or(&Error::Failed(String::new()))
            .exit_code(verb)
    }

    /// This error with `what` in front: `--netns web: no network namespace ...`.
    pub fn context(self, what: impl std::fmt::Display) -> Error {
        let with = |m: String| format!("{what}: {m}");
        match self {
            Error::Input(m) => Error::Input(with(m)),
            Error::Privilege(m) => Error::Privilege(with(m)),
            Error::Unavailable(m) => Error::Unavailable(with(m)),
            Error::Failed(m) => Error::Failed(with(m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_ends_each_command_with_its_code() {
        let input = Error::Input("--pages 3: not a power of two".into());
        let missing = Error::Unavailable("no kernel BTF".into());
        assert_eq!(input.exit_code(Verb::Other), 1);
        assert_eq!(input.exit_code(Verb::Check), 128, "bisect stops");
        assert_eq!(missing.exit_code(Verb::Check), 125, "bisect skips");
        assert_eq!(missing.exit_code(Verb::Doctor), 2);
    }

    #[test]
    fn a_typed_error_under_context_keeps_its_code_and_a_foreign_one_fails() {
        let wrapped =
            anyhow::Error::new(Error::Unavailable("no tracefs".into())).context("softirq");
        assert_eq!(Error::exit_code_of(&wrapped, Verb::Check), 125);
        assert_eq!(format!("{wrapped:#}"), "softirq: no tracefs");
        let foreign = anyhow::anyhow!("disk on fire");
        assert_eq!(Error::exit_code_of(&foreign, Verb::Check), 128);
        assert_eq!(Error::exit_code_of(&foreign, Verb::Other), 1);
    }

    #[test]
    fn context_keeps_the_kind() {
        let e = Error::Input("empty".into()).context("--netns");
        assert_eq!(e, Error::Input("--netns: empty".into()));
    }
}
