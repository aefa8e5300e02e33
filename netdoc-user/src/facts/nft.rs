//! `nft` (and the iptables-legacy tools) run in the calling thread's network namespace,
//! bounded in time: the ruleset listings the NAT and drop-rule readers parse.
use std::{
    io::{ErrorKind, Read as _},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::Error;

/// How long a listing may take: a large ruleset lists in well under a second, and the caller
/// waits for it.
const LISTING: Duration = Duration::from_secs(2);

/// The output of `nft ARGS` here; why not otherwise (no nf_tables, no `nft` on this host, or
/// it failed or took too long), each reason naming the command.
pub fn list(args: &[&str]) -> Result<String, Error> {
    if !super::fwtables::nf_tables_present() {
        return Err(Error::Unavailable(format!(
            "nft {}: nf_tables is not loaded, so any rules are iptables-legacy's",
            args.join(" ")
        )));
    }
    output_of("nft", args)
}

/// The output of `PROGRAM ARGS`, run here and bounded in time; why not otherwise.
pub fn output_of(program: &str, args: &[&str]) -> Result<String, Error> {
    let command = format!("{program} {}", args.join(" "));
    let failed = |why: String| Error::Failed(format!("{command}: {why}"));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => Error::Unavailable(format!("{command}: {e}")),
            _ => failed(e.to_string()),
        })?;
    // Read on a thread so a full pipe never blocks nft while we wait for it to exit.
    let mut stdout = child.stdout.take().expect("piped stdout");
    // Decoded lossily: a name or comment of other bytes must not cost the whole ruleset.
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stdout
            .read_to_end(&mut bytes)
            .map(|_| String::from_utf8_lossy(&bytes).into_owned())
    });
    let deadline = Instant::now() + LISTING;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Failed(format!(
                    "{command} took longer than {} s",
                    LISTING.as_secs()
                )));
            }
            Err(e) => return Err(failed(e.to_string())),
        }
    };
    let text = reader
        .join()
        .map_err(|_| failed("reading its output failed".into()))?
        .map_err(|e| failed(e.to_string()))?;
    if !status.success() {
        let mut stderr = Vec::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_end(&mut stderr);
        }
        return Err(failed(String::from_utf8_lossy(&stderr).trim().to_string()));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_of_other_bytes_is_decoded_lossily_and_a_failure_names_its_command() {
        assert_eq!(output_of("printf", &["a\\377b"]).unwrap(), "a\u{fffd}b");
        let why = output_of("sh", &["-c", "printf 'no\\377\\n' >&2; exit 3"]).unwrap_err();
        assert_eq!(
            why.to_string(),
            "sh -c printf 'no\\377\\n' >&2; exit 3: no\u{fffd}"
        );
    }
}
