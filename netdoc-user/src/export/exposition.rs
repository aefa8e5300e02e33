//! The exposition formats a scrape asks for: Prometheus text 0.0.4 (what `curl` and older
//! scrapers get) and OpenMetrics 1.0 (what Prometheus asks for first). Both are rendered from
//! one typed list of metric families. Written here rather than with `prometheus-client`: that
//! crate renders OpenMetrics only, and every value is read afresh at scrape time anyway, so
//! its registry would hold nothing between scrapes.
use std::fmt::Write as _;

/// What a metric's value means over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (the sample name gains `_total`).
    Counter,
    Gauge,
    /// Always 1, the facts in the labels (the sample name gains `_info`).
    Info,
}

/// One label: a name from netdoc's schema and a value from the host.
pub type Label = (&'static str, String);

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<Label>,
    pub value: f64,
}

/// A metric family: its base name (no `_total`/`_info`), help, kind and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

impl Family {
    pub fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        Self {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    pub fn push(&mut self, labels: Vec<Label>, value: f64) {
        self.samples.push(Sample { labels, value });
    }

    /// The name samples carry.
    pub fn sample_name(&self) -> String {
        match self.kind {
            Kind::Counter => format!("{}_total", self.name),
            Kind::Info => format!("{}_info", self.name),
            Kind::Gauge => self.name.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    OpenMetrics,
}

impl Format {
    /// The format a scraper's `Accept` header asks for: OpenMetrics only when it names it
    /// with a quality above zero and above any range that covers the text format (`text/plain`,
    /// `text/*`, `*/*`); of equal qualities the one listed first.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let mut best: Option<(f32, Self)> = None;
        for range in accept.unwrap_or("").split(',') {
            let mut parts = range.split(';').map(str::trim);
            let format = match parts.next().map(str::to_ascii_lowercase).as_deref() {
                Some("application/openmetrics-text") => Self::OpenMetrics,
                Some("text/plain" | "text/*" | "*/*") => Self::Text,
                _ => continue,
            };
            // A malformed quality counts as none: that range is not wanted.
            let quality = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1.0), |(_, q)| q.trim().parse::<f32>().ok())
                .unwrap_or(0.0);
            if quality > 0.0 && best.is_none_or(|(b, _)| quality > b) {
                best = Some((quality, format));
            }
        }
        best.map_or(Self::Text, |(_, format)| format)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Text => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Renders `families` in `format`.
pub fn render(families: &[Family], format: Format) -> String {
    let mut out = String::new();
    for f in families {
        // Text 0.0.4 names the family as its samples are named; OpenMetrics by its base name.
        let (family_name, kind) = match (format, f.kind) {
            (Format::Text, Kind::Counter) => (f.sample_name(), "counter"),
            (Format::Text, _) => (f.sample_name(), "gauge"),
            (Format::OpenMetrics, Kind::Counter) => (f.name.to_string(), "counter"),
            (Format::OpenMetrics, Kind::Gauge) => (f.name.to_string(), "gauge"),
            (Format::OpenMetrics, Kind::Info) => (f.name.to_string(), "info"),
        };
        let _ = writeln!(out, "# HELP {family_name} {}", escape_help(f.help));
        let _ = writeln!(out, "# TYPE {family_name} {kind}");
        let sample_name = f.sample_name();
        for s in &f.samples {
            out += &sample_name;
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (name, value)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{name}=\"{}\"", escape_label(value));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", number(s.value));
        }
    }
    if format == Format::OpenMetrics {
        out += "# EOF\n";
    }
    out
}

/// Integers without a fraction; everything else as Rust prints it (no exponent for the
/// magnitudes netdoc exports).
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn families() -> Vec<Family> {
        let mut drops = Family::new("netdoc_drops", Kind::Counter, "Packets the kernel dropped.");
        drops.push(
            vec![
                ("reason", "NO_SOCKET".into()),
                ("netns", "pod \"a\\b\"".into()),
            ],
            3.0,
        );
        let mut share = Family::new("netdoc_net_rx_share", Kind::Gauge, "line one\nline two");
        share.push(vec![("cpu", "1".into())], 0.25);
        let mut queue = Family::new("netdoc_nic_queue", Kind::Info, "A NIC queue.");
        queue.push(vec![("device", "eth0".into())], 1.0);
        vec![drops, share, queue]
    }

    #[test]
    fn text_format_names_families_as_their_samples_and_escapes() {
        let text = render(&families(), Format::Text);
        assert_eq!(
            text,
            "# HELP netdoc_drops_total Packets the kernel dropped.\n\
             # TYPE netdoc_drops_total counter\n\
             netdoc_drops_total{reason=\"NO_SOCKET\",netns=\"pod \\\"a\\\\b\\\"\"} 3\n\
             # HELP netdoc_net_rx_share line one\\nline two\n\
             # TYPE netdoc_net_rx_share gauge\n\
             netdoc_net_rx_share{cpu=\"1\"} 0.25\n\
             # HELP netdoc_nic_queue_info A NIC queue.\n\
             # TYPE netdoc_nic_queue_info gauge\n\
             netdoc_nic_queue_info{device=\"eth0\"} 1\n"
        );
    }

    #[test]
    fn openmetrics_names_families_by_base_name_and_ends_with_eof() {
        let text = render(&families(), Format::OpenMetrics);
        assert!(text.starts_with("# HELP netdoc_drops Packets"));
        assert!(text.contains("# TYPE netdoc_drops counter\nnetdoc_drops_total{"));
        assert!(text.contains("# TYPE netdoc_nic_queue info\nnetdoc_nic_queue_info{"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn openmetrics_only_when_the_scraper_asks() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Text);
        assert_eq!(Format::from_accept(None), Format::Text);
        for (accept, format) in [
            ("application/openmetrics-text;q=0", Format::Text),
            (
                "application/openmetrics-text; q=0.0, */*;q=0.1",
                Format::Text,
            ),
            ("Application/OpenMetrics-Text", Format::OpenMetrics),
            (
                "text/plain;q=0.9, application/openmetrics-text;q=0.5",
                Format::Text,
            ),
            (
                "text/plain;q=0.5, application/openmetrics-text;q=0.9",
                Format::OpenMetrics,
            ),
            ("application/openmetrics-text;q=x", Format::Text),
            ("application/json", Format::Text),
        ] {
            assert_eq!(Format::from_accept(Some(accept)), format, "{accept}");
        }
    }

    #[test]
    fn whole_numbers_print_without_a_fraction() {
        assert_eq!(number(18446744.0), "18446744");
        assert_eq!(number(0.000123), "0.000123");
    }
}
