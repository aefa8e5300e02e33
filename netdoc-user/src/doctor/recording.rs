//! A recording read back for `--replay`: bounded in size (a recording's size follows its
//! namespaces, flows and findings, not its length: a quiet run is 2 KB, a large host's a few
//! MB), parsed once into its type, and refused in one line where it holds what no run
//! records: a negative number, a share above 1, a CPU past the kernel's largest `NR_CPUS`, a
//! run of no time, a stretch that ends before it begins. A replay must not report over
//! "-1 s", "inf%" or CPU 4294967295.
use std::{fmt, io::Read as _, path::Path};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{RECORD_VERSION, Snapshot};
use crate::Error;

/// The default bound on a recording's size, in MiB (`--max-recording-mib`).
pub const DEFAULT_MAX_MIB: u64 = 64;

/// The largest `NR_CPUS` a kernel is built with (x86-64 `MAXSMP`): a CPU number is below it.
const MAX_CPUS: u64 = 8192;

/// Keys whose numbers are CPUs (alone or in a list).
const CPU_KEYS: [&str; 7] = [
    "cpu",
    "cpus",
    "busiest_cpu",
    "affinity",
    "effective",
    "served_by",
    "rps",
];

/// Keys whose numbers are shares of a whole.
const SHARE_KEYS: [&str; 2] = ["share", "net_rx_share"];

/// The snapshot recorded in `path`, or why it cannot be replayed (one line, naming the file).
pub fn read(path: &Path, max_mib: u64) -> Result<Snapshot, Error> {
    let shown = path.display();
    let max = max_mib.saturating_mul(1024 * 1024);
    let file = std::fs::File::open(path)
        .map_err(|e| Error::Input(format!("reading --replay {shown}: {e}")))?;
    let too_large = || {
        Error::Input(format!(
            "--replay {shown}: larger than {max_mib} MiB, more than any run records (--max-recording-mib raises the bound)"
        ))
    };
    // A file's size says it unread; a pipe or a device has none, so read at most one byte
    // past the bound.
    if file.metadata().is_ok_and(|m| m.is_file() && m.len() > max) {
        return Err(too_large());
    }
    let mut text = String::new();
    file.take(max.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(|e| Error::Input(format!("reading --replay {shown}: {e}")))?;
    if text.len() as u64 > max {
        return Err(too_large());
    }
    parse(&text).map_err(|why| Error::Input(format!("--replay {shown}: {why}")))
}

/// A recording's text as its snapshot, or why not.
fn parse(text: &str) -> Result<Snapshot, String> {
    match serde_json::from_str::<Snapshot>(text) {
        Ok(snapshot) => {
            // A second, allocation-free pass over the numbers, which the types let through.
            let mut json = serde_json::Deserializer::from_str(text);
            Plausible { key: None }
                .deserialize(&mut json)
                .map_err(|e| format!("not a recording of a run: {e}"))?;
            plausible_run(&snapshot)?;
            Ok(snapshot)
        }
        // Of another version, the fields may not fit: say that rather than which one.
        Err(e) => match version(text) {
            Some(v) if v != u64::from(RECORD_VERSION) => Err(format!(
                "recording version {v} but this netdoc reads version {RECORD_VERSION}"
            )),
            _ => Err(format!("not a netdoc doctor recording: {e}")),
        },
    }
}

/// The recording's `version`, read without building anything else.
fn version(text: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: Option<u64>,
    }
    serde_json::from_str::<Versioned>(text).ok()?.version
}

/// What the numbers alone cannot say: the run lasted, its busiest stretch is in order.
fn plausible_run(s: &Snapshot) -> Result<(), String> {
    if s.version != RECORD_VERSION {
        return Err(format!(
            "recording version {} but this netdoc reads version {RECORD_VERSION}",
            s.version
        ));
    }
    if s.duration_s <= 0.0 {
        return Err(format!(
            "not a recording of a run: duration_s is {}, and a run lasts",
            s.duration_s
        ));
    }
    if let Some(net_rx) = &s.net_rx
        && net_rx.from_s > net_rx.to_s
    {
        return Err(format!(
            "not a recording of a run: net_rx.from_s {} is after to_s {}",
            net_rx.from_s, net_rx.to_s
        ));
    }
    Ok(())
}

/// Walks a JSON value, refusing numbers no run records; `key` is the field it is under.
struct Plausible<'k> {
    key: Option<&'k str>,
}

impl<'de> DeserializeSeed<'de> for Plausible<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Plausible<'_> {
    fn refuse<E: de::Error>(&self, value: impl fmt::Display, why: &str) -> Result<(), E> {
        Err(E::custom(format!(
            "{} is {value}, {why}",
            self.key.unwrap_or("a value")
        )))
    }

    fn is(&self, keys: &[&str]) -> bool {
        self.key.is_some_and(|k| keys.contains(&k))
    }
}

impl<'de> Visitor<'de> for Plausible<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a recording")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        match self.is(&CPU_KEYS) && v >= MAX_CPUS {
            true => self.refuse(v, "past any CPU a kernel has"),
            false => Ok(()),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        match v < 0 {
            true => self.refuse(v, "and a recording holds no negative number"),
            false => self.visit_u64(v as u64),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        if !v.is_finite() || v < 0.0 {
            return self.refuse(v, "and a recording holds no negative number");
        }
        match self.is(&SHARE_KEYS) && v > 1.0 {
            true => self.refuse(v, "and a share is at most 1"),
            false => Ok(()),
        }
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // A list's numbers are what its key says (`affinity: [0, 1]`).
        while seq
            .next_element_seed(Plausible { key: self.key })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            map.next_value_seed(Plausible { key: Some(&key) })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORDING: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/doctor/veth-flood-6.18.json"
    ));

    /// The recording with `from` replaced by `to`, once.
    fn with(from: &str, to: &str) -> String {
        assert!(RECORDING.contains(from), "{from}");
        RECORDING.replacen(from, to, 1)
    }

    #[test]
    fn a_real_recording_is_plausible() {
        assert!(parse(RECORDING).is_ok());
    }

    #[test]
    fn impossible_values_are_refused_in_one_line() {
        let duration = RECORDING.split("\"duration_s\":").nth(1).unwrap();
        let duration = &duration[..duration.find(',').unwrap()];
        for (text, says) in [
            (
                with(&format!("\"duration_s\":{duration}"), "\"duration_s\":-1"),
                "duration_s is -1, and a recording holds no negative number",
            ),
            (
                with(&format!("\"duration_s\":{duration}"), "\"duration_s\":0"),
                "duration_s is 0, and a run lasts",
            ),
            (
                with("\"cpu\":0", "\"cpu\":4294967295"),
                "cpu is 4294967295, past any CPU a kernel has",
            ),
            (
                with("\"share\":0.76", "\"share\":7.76"),
                "share is 7.764947016981301, and a share is at most 1",
            ),
            (
                with("\"from_s\":", "\"from_s\":1e300,\"x\":"),
                "is after to_s",
            ),
            (
                with("\"count\":", "\"count\":-3,\"x\":"),
                "not a netdoc doctor recording",
            ),
            ("{\"version\":999}".into(), "recording version 999 but"),
            ("[]".into(), "not a netdoc doctor recording"),
            ("\u{0}\u{ff}".into(), "not a netdoc doctor recording"),
        ] {
            let why = parse(&text).expect_err(says);
            assert!(why.contains(says), "{says:?}: {why}");
            assert!(!why.contains('\n'), "{why}");
        }
    }

    #[test]
    fn a_recording_over_the_bound_is_refused_before_it_is_parsed() {
        let path = std::env::temp_dir().join(format!("netdoc-recording-{}", std::process::id()));
        std::fs::write(&path, " ".repeat(1024 * 1024 + 1)).unwrap();
        let why = read(&path, 1).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(why.contains("larger than 1 MiB"), "{why}");
        assert!(why.contains("--max-recording-mib"), "{why}");
        // No size to ask: read up to the bound.
        let why = read(Path::new("/dev/zero"), 1).unwrap_err().to_string();
        assert!(why.contains("larger than 1 MiB"), "{why}");
    }
}
