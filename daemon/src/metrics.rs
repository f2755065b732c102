//! Prometheus metrics: the live instruments the server and the actor update (requests,
//! apply and repair durations), and the exposition of a status snapshot with them.
//!
//! The exposition is written by `prometheus-client` (OpenMetrics text). Scrapers that do
//! not ask for OpenMetrics get the Prometheus text format 0.0.4, which differs only in
//! the names on a counter's `# HELP` and `# TYPE` lines (`_total` included) and in having
//! no `# EOF` line; [`exposition`] makes exactly those two changes to the crate's output.

#![forbid(unsafe_code)]

use portd_rules::proto::{Command, ErrorKind, ForwardState, Outcome, Response, Status};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

/// Labels of `portd_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    command: String,
    result: String,
}

/// A label value escaped as the exposition formats require (prometheus-client writes
/// values as they are): backslash, double quote and line feed.
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Labels of the per-forward families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForwardLabels {
    owner: String,
    name: String,
    port: String,
    to: String,
    proto: String,
}

/// Labels of `portd_forward_suspended`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SuspendedLabels {
    owner: String,
    name: String,
}

/// Labels of `portd_forwards`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// Labels of `portd_dataplane`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DataplaneLabels {
    dispatch: String,
    ownership: String,
    reason: String,
}

/// Labels of `portd_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// The instruments updated as things happen; cheap to update from any thread (atomics).
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    apply_seconds: Histogram,
    repair_seconds: Histogram,
    /// 1 when the last reload of the config succeeded (or none was tried since start).
    reload_ok: Gauge,
    /// When the config was last loaded successfully (start or reload), seconds since the epoch.
    reload_success: Gauge<f64, AtomicU64>,
}

/// Now, in seconds since the epoch.
fn epoch_seconds() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            // 100 µs .. ~1.6 s: an element change takes well under a millisecond, a
            // replace of 60,000 forwards about a second.
            apply_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            // 1 ms .. ~65 s: repairs wait out the back-off when another program keeps
            // changing the table.
            repair_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            // The instruments are made once the config was read at start: that load
            // counts as the last successful one until a reload is tried.
            reload_ok: {
                let g = Gauge::default();
                g.set(1);
                g
            },
            reload_success: {
                let g = Gauge::<f64, AtomicU64>::default();
                g.set(epoch_seconds());
                g
            },
        }
    }
}

/// Which exposition format a scraper gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (`text/plain; version=0.0.4`).
    Text,
    /// OpenMetrics text 1.0.0 (`application/openmetrics-text`).
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names it, else text.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.to_ascii_lowercase().contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    /// The HTTP `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The name of a command in `portd_requests_total`.
pub fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Status => "status",
        Command::Apply { .. } => "apply",
        Command::Add { .. } => "add",
        Command::Remove { .. } => "remove",
        Command::Export { .. } => "export",
        Command::Reload { .. } => "reload",
        Command::Grants => "grants",
        Command::Metrics => "metrics",
        Command::Doctor { .. } => "doctor",
    }
}

/// The result of a response in `portd_requests_total`: `ok` or the error kind.
pub fn result_name(r: &Response) -> &'static str {
    match &r.result {
        Outcome::Ok(_) => "ok",
        Outcome::Error { kind, .. } => match kind {
            ErrorKind::Invalid => "invalid",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Kernel => "kernel",
            ErrorKind::Denied => "denied",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Internal => "internal",
        },
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&self, command: &str, result: &str) {
        self.requests.get_or_create(&RequestLabels { command: command.into(), result: result.into() }).inc();
    }

    /// Records how long the kernel took to take a change.
    pub fn applied(&self, took: Duration) {
        self.apply_seconds.observe(took.as_secs_f64());
    }

    /// Records how long the table stayed different from the plan before it was repaired.
    pub fn repaired(&self, took: Duration) {
        self.repair_seconds.observe(took.as_secs_f64());
    }

    /// Records a reload of the config (not a dry run): `ok` when it was taken.
    pub fn reloaded(&self, ok: bool) {
        self.reload_ok.set(i64::from(ok));
        if ok {
            self.reload_success.set(epoch_seconds());
        }
    }

    /// The whole exposition: `status` (a snapshot the actor took) and the live instruments.
    pub fn exposition(&self, status: &Status, format: Format) -> String {
        let mut r = Registry::default();
        let packets = Family::<ForwardLabels, Counter>::default();
        let bytes = Family::<ForwardLabels, Counter>::default();
        let suspended = Family::<SuspendedLabels, Gauge>::default();
        let by_state = Family::<StateLabels, Gauge>::default();
        for state in [ForwardState::Active, ForwardState::Suspended] {
            by_state.get_or_create(&StateLabels { state: state.to_string() }).set(0);
        }
        for f in &status.forwards {
            by_state.get_or_create(&StateLabels { state: f.state.to_string() }).inc();
            match f.state {
                ForwardState::Active => {
                    let labels = ForwardLabels {
                        owner: label(&f.owner),
                        name: label(&f.forward.name),
                        port: f.forward.port.to_string(),
                        to: f.forward.to.to_string(),
                        proto: f.forward.proto.to_string(),
                    };
                    packets.get_or_create(&labels).inc_by(f.packets);
                    bytes.get_or_create(&labels).inc_by(f.bytes);
                }
                ForwardState::Suspended => {
                    let labels = SuspendedLabels { owner: label(&f.owner), name: label(&f.forward.name) };
                    suspended.get_or_create(&labels).set(1);
                }
            }
        }
        let in_sync = Gauge::<i64>::default();
        in_sync.set(i64::from(status.in_sync));
        let repairs = Counter::<u64>::default();
        repairs.inc_by(status.repairs);
        let dataplane = Family::<DataplaneLabels, Gauge>::default();
        dataplane
            .get_or_create(&DataplaneLabels {
                dispatch: status.dispatch.clone(),
                ownership: status.ownership.clone(),
                reason: status.dataplane_reason.clone().unwrap_or_default(),
            })
            .set(1);
        let untracked = Gauge::<i64>::default();
        untracked.set(i64::from(status.untracked == Some(true)));
        let listening = Family::<SuspendedLabels, Gauge>::default();
        for f in &status.forwards {
            if let Some(l) = f.listening {
                let labels = SuspendedLabels { owner: f.owner.clone(), name: f.forward.name.clone() };
                listening.get_or_create(&labels).set(i64::from(l));
            }
        }
        let build = Family::<BuildLabels, Gauge>::default();
        build.get_or_create(&BuildLabels { version: status.daemon_version.clone() }).set(1);

        r.register("portd_forward_packets", "Packets counted by each active forward (client to server)", packets);
        r.register("portd_forward_bytes", "Bytes counted by each active forward (client to server)", bytes);
        r.register("portd_forwards", "Forwards by state: active (in the kernel) or suspended", by_state);
        r.register(
            "portd_forward_suspended",
            "1 for each forward kept out of the kernel until allowed again",
            suspended,
        );
        r.register("portd_in_sync", "1 when the kernel holds exactly the desired table, else 0", in_sync);
        r.register(
            "portd_dataplane",
            "1, labelled with how TCP forwards are dispatched (steer, nat), how target ports are owned (kernel, polled) and why BPF is not used",
            dataplane,
        );
        r.register(
            "portd_steer_untracked",
            "1 while raw chains untrack steered connections (conntrack runs in the namespace), else 0",
            untracked,
        );
        r.register(
            "portd_forward_target_listening",
            "1 when the target of each active forward takes its connections (every target port, protocol and family), else 0",
            listening,
        );
        r.register("portd_repairs", "Times the table was restored after another program changed it", repairs);
        r.register("portd_requests", "Control requests answered, by command and result", self.requests.clone());
        r.register(
            "portd_apply_duration_seconds",
            "Time the kernel took to take a change (one netlink batch)",
            self.apply_seconds.clone(),
        );
        r.register(
            "portd_drift_repair_latency_seconds",
            "Time from noticing a foreign change of the table to having restored it",
            self.repair_seconds.clone(),
        );
        r.register("portd_build_info", "1, labelled with the daemon's version", build);
        r.register(
            "portd_config_last_reload_successful",
            "1 when the last reload of the config was taken, 0 when it was refused (the previous config stays in force)",
            self.reload_ok.clone(),
        );
        r.register(
            "portd_config_last_reload_success_timestamp_seconds",
            "When the config was last loaded successfully (at start or by a reload), seconds since the epoch",
            self.reload_success.clone(),
        );
        register_process(&mut r, crate::process_metrics::read());
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &r) {
            // Writing into a String cannot fail; keep what was written and say so.
            tracing::error!("encoding the metrics: {e}");
        }
        match format {
            Format::OpenMetrics => out,
            Format::Text => openmetrics_to_text(&out),
        }
    }
}

/// The standard process metrics, each left out when /proc did not give it.
fn register_process(r: &mut Registry, p: crate::process_metrics::Process) {
    let int = |v: u64| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        g
    };
    let float = |v: f64| {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(v);
        g
    };
    if let Some(v) = p.resident_memory_bytes {
        r.register("process_resident_memory_bytes", "Resident memory size in bytes", int(v));
    }
    if let Some(v) = p.open_fds {
        r.register("process_open_fds", "Number of open file descriptors", int(v));
    }
    if let Some(v) = p.max_fds {
        r.register("process_max_fds", "Maximum number of open file descriptors", int(v));
    }
    if let Some(v) = p.start_time_seconds {
        r.register("process_start_time_seconds", "Start time of the process since unix epoch in seconds", float(v));
    }
    if let Some(v) = p.cpu_seconds {
        let c = Counter::<f64, AtomicU64>::default();
        c.inc_by(v);
        r.register("process_cpu_seconds", "Total user and system CPU time spent in seconds", c);
    }
}

/// The Prometheus text format 0.0.4 of an OpenMetrics exposition of counters, gauges and
/// histograms: a counter's `# HELP` and `# TYPE` lines name its `_total` samples, and
/// there is no `# EOF` line. Samples are kept byte for byte.
fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .filter(|n| !n.contains(' '))
        .collect();
    let mut out = String::with_capacity(om.len() + 16 * counters.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The answer to `Command::Metrics`, made from the answer to the status it asked for.
pub fn answer(metrics: &Metrics, status: &Response) -> Response {
    match &status.result {
        Outcome::Ok(portd_rules::proto::Body::Status(s)) => {
            Response::ok(portd_rules::proto::Body::Metrics { text: metrics.exposition(s, Format::Text) })
        }
        Outcome::Ok(_) => {
            Response::error(ErrorKind::Internal, vec!["the daemon answered metrics with no status".into()])
        }
        e @ Outcome::Error { .. } => Response { version: portd_rules::proto::PROTOCOL_VERSION, result: e.clone() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portd_rules::model::{Forward, PortRange};
    use portd_rules::proto::ForwardStatus;

    fn status() -> Status {
        let fs = |owner: &str, name: &str, packets, state| ForwardStatus {
            owner: owner.into(),
            forward: Forward::new(name, PortRange::single(80), PortRange::single(8080)),
            mark: 1,
            packets,
            bytes: packets * 60,
            state,
            reason: None,
            dispatch: None,
            listening: None,
            listeners: Vec::new(),
        };
        Status {
            dispatch: "nat".into(),
            ownership: "polled".into(),
            dataplane_reason: None,
            untracked: None,
            daemon_version: "0.1.0".into(),
            table: "portd".into(),
            in_sync: true,
            repairs: 2,
            forwards: vec![
                fs("system", "web", 7, ForwardState::Active),
                fs("user:alice", "dev", 0, ForwardState::Suspended),
            ],
        }
    }

    #[test]
    fn text_and_openmetrics_carry_the_same_samples() {
        let m = Metrics::default();
        m.request("add", "ok");
        m.applied(Duration::from_micros(300));
        let om = m.exposition(&status(), Format::OpenMetrics);
        let text = m.exposition(&status(), Format::Text);
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(!text.contains("# EOF"), "{text}");
        // Samples of one family come in no fixed order (prometheus-client keeps them in a
        // hash map); process figures are read afresh for each exposition.
        let samples = |s: &str| {
            let mut v = s
                .lines()
                .filter(|l| !l.starts_with('#') && !l.starts_with("process_"))
                .map(str::to_string)
                .collect::<Vec<_>>();
            v.sort();
            v
        };
        assert_eq!(samples(&om), samples(&text));
        assert!(om.contains("# TYPE portd_repairs counter\nportd_repairs_total 2\n"), "{om}");
        assert!(text.contains("# TYPE portd_repairs_total counter\nportd_repairs_total 2\n"), "{text}");
        assert!(
            text.contains(
                "portd_forward_packets_total{owner=\"system\",name=\"web\",port=\"80\",to=\"8080\",proto=\"tcp\"} 7\n"
            ),
            "{text}"
        );
        assert!(text.contains("portd_forwards{state=\"suspended\"} 1\n"), "{text}");
        assert!(text.contains("portd_forward_suspended{owner=\"user:alice\",name=\"dev\"} 1\n"), "{text}");
        assert!(text.contains("portd_requests_total{command=\"add\",result=\"ok\"} 1\n"), "{text}");
        assert!(text.contains("portd_apply_duration_seconds_count 1\n"), "{text}");
        assert!(text.contains("portd_build_info{version=\"0.1.0\"} 1\n"), "{text}");
    }

    #[test]
    fn reload_outcome_and_process_metrics() {
        let m = Metrics::default();
        let value = |text: &str, name: &str| -> f64 {
            let line =
                text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {text}"));
            line[name.len() + 1..].parse().unwrap_or_else(|e| panic!("{line}: {e}"))
        };
        let text = m.exposition(&status(), Format::Text);
        assert_eq!(value(&text, "portd_config_last_reload_successful"), 1.0, "the config read at start");
        let at_start = value(&text, "portd_config_last_reload_success_timestamp_seconds");
        assert!(at_start > 1.7e9, "{text}");
        m.reloaded(false);
        let text = m.exposition(&status(), Format::Text);
        assert_eq!(value(&text, "portd_config_last_reload_successful"), 0.0);
        assert_eq!(value(&text, "portd_config_last_reload_success_timestamp_seconds"), at_start, "a refusal keeps it");
        std::thread::sleep(Duration::from_millis(20));
        m.reloaded(true);
        let text = m.exposition(&status(), Format::Text);
        assert_eq!(value(&text, "portd_config_last_reload_successful"), 1.0);
        assert!(value(&text, "portd_config_last_reload_success_timestamp_seconds") > at_start);
        assert!(value(&text, "process_resident_memory_bytes") > 1e6, "{text}");
        assert!(value(&text, "process_open_fds") >= 3.0, "{text}");
        assert!(value(&text, "process_start_time_seconds") > 1.7e9, "{text}");
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total "), "{text}");
        assert!(text.contains("# TYPE process_start_time_seconds gauge\n"), "{text}");
    }

    #[test]
    fn accept_header_chooses_the_format() {
        assert_eq!(Format::from_accept(None), Format::Text);
        assert_eq!(Format::from_accept(Some("text/plain;version=0.0.4;q=0.3,*/*;q=0.2")), Format::Text);
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4";
        assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
    }

    #[test]
    fn label_values_are_escaped_for_strict_parsers() {
        let mut s = status();
        s.forwards[0].owner = "user:a\\b\"c\nd".into();
        s.forwards[1].owner = "user:e\\f".into();
        for format in [Format::Text, Format::OpenMetrics] {
            let text = Metrics::default().exposition(&s, format);
            assert!(text.contains(r#"owner="user:a\\b\"c\nd""#), "{text}");
            assert!(text.contains(r#"portd_forward_suspended{owner="user:e\\f",name="dev"} 1"#), "{text}");
            // Every sample is one line: the line feed did not end one early.
            assert!(
                text.lines().all(|l| l.starts_with('#') || l.starts_with("portd_") || l.starts_with("process_")),
                "{text}"
            );
        }
    }
}
