//! What runs inside the guest, and how its results come back: `/init` mounts the kernel
//! filesystems, loads the staged modules and runs the job; the job writes `key value` lines to the
//! second serial port (the results channel), which QEMU writes to a host file.

/// Guest PID 1. The job's exit code goes last on the results channel, then the guest powers off.
/// /tmp stays on the (writable) initramfs: host paths staged under it, such as a checkout in
/// /tmp, must stay visible.
pub const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Tests scale their longest loops down under software emulation.
export NETDOC_EMULATED=1
mount -t proc proc /proc
# Errors only on the console from here: the kernel booted with its messages shown.
echo 3 > /proc/sys/kernel/printk
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
mount -t debugfs nodev /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null
ip link set lo up
echo "booted $(uname -r)" > /dev/ttyS1
for m in $(cat /lib/modules/netdoc-vm/order); do
    insmod /lib/modules/netdoc-vm/$m.ko 2>/dev/null || echo "netdoc-vm: module $m did not load"
done
cd /tmp
sh /etc/netdoc-vm/job
echo "rc $?" > /dev/ttyS1
sync
poweroff -f
"#;

/// A job that runs one command; its exit code is the verdict.
pub fn command_job(command: &[String]) -> String {
    let quoted: Vec<String> = command.iter().map(|a| shell_quote(a)).collect();
    format!("{}\n", quoted.join(" "))
}

/// The matrix job: the probe plan, then every integration test binary.
pub fn matrix_job(tests: &[(String, String)]) -> String {
    let mut job = String::from(
        "netdoc probes --json > /tmp/probes 2>&1\n\
         sed 's/^/probe /' /tmp/probes > /dev/ttyS1\n\
         rc=0\n",
    );
    for (name, path) in tests {
        job.push_str(&format!(
            "echo '=== {name}'\n\
             {path} --test-threads=1 > /tmp/out 2>&1; r=$?\n\
             cat /tmp/out\n\
             grep '^test result' /tmp/out | sed 's/^/result {name} /' > /dev/ttyS1\n\
             echo 'test {name} '$r > /dev/ttyS1\n\
             [ $r = 0 ] || rc=1\n"
        ));
    }
    job.push_str("exit $rc\n");
    job
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What the guest reported on its results channel.
#[derive(Default)]
pub struct Results {
    /// `uname -r` of the guest, once init ran.
    pub booted: Option<String>,
    /// The job's exit code, when it finished.
    pub rc: Option<i32>,
    /// `netdoc probes --json` lines.
    pub probes: Vec<serde_json::Value>,
    /// Per test binary: exit code and libtest's summary line.
    pub tests: Vec<(String, i32, String)>,
}

impl Results {
    pub fn parse(text: &str) -> Self {
        let mut r = Self::default();
        let mut summaries: Vec<(String, String)> = vec![];
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "booted" => r.booted = Some(rest.to_string()),
                "rc" => r.rc = rest.trim().parse().ok(),
                "probe" => {
                    if let Ok(v) = serde_json::from_str(rest) {
                        r.probes.push(v);
                    }
                }
                "result" => {
                    if let Some((name, summary)) = rest.split_once(' ') {
                        summaries.push((name.to_string(), summary.to_string()));
                    }
                }
                "test" => {
                    if let Some((name, code)) = rest.split_once(' ') {
                        let summary = summaries
                            .iter()
                            .rev()
                            .find(|(n, _)| n == name)
                            .map(|(_, s)| s.clone())
                            .unwrap_or_else(|| "no test summary (crashed?)".into());
                        r.tests.push((
                            name.to_string(),
                            code.trim().parse().unwrap_or(-1),
                            summary,
                        ));
                    }
                }
                _ => {}
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_results_channel() {
        let r = Results::parse(
            "booted 6.1.0-56-cloud-amd64\r\nprobe {\"probe\":\"drops\"}\n\
             result kernel_drops test result: ok. 9 passed; 0 failed\n\
             test kernel_drops 0\ntest kernel_softirq 101\nrc 1\n",
        );
        assert_eq!(r.booted.as_deref(), Some("6.1.0-56-cloud-amd64"));
        assert_eq!(r.rc, Some(1));
        assert_eq!(r.probes.len(), 1);
        assert_eq!(r.tests[0].1, 0);
        assert!(r.tests[0].2.contains("9 passed"));
        assert_eq!(r.tests[1].1, 101);
        assert!(r.tests[1].2.contains("crashed"));
    }

    #[test]
    fn quotes_shell_words() {
        assert_eq!(
            command_job(&[
                "netdoc".into(),
                "check".into(),
                "--expect".into(),
                "retrans < 5".into()
            ]),
            "netdoc check --expect 'retrans < 5'\n"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
