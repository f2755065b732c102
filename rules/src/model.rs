//! The validated model: forwards, the daemon's settings and grants.
//!
//! Values of these types come out of [`crate::load`], or arrive typed (the protocol, the
//! state file) and are checked by [`crate::validate`], so every field here satisfies the
//! rules portd.yaml(5) states.

use ipnet::IpNet;
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// A concrete transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP
    Tcp,
    /// UDP
    Udp,
}

/// A concrete address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4
    Ipv4,
    /// IPv6
    Ipv6,
}

/// `proto:` of a forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtoSel {
    /// TCP only (default)
    #[default]
    Tcp,
    /// UDP only
    Udp,
    /// TCP and UDP
    Both,
}

/// `family:` of a forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FamilySel {
    /// IPv4 only
    Ipv4,
    /// IPv6 only
    Ipv6,
    /// both (default)
    #[default]
    Both,
}

impl ProtoSel {
    /// The concrete protocols selected.
    pub fn protos(self) -> &'static [Proto] {
        match self {
            ProtoSel::Tcp => &[Proto::Tcp],
            ProtoSel::Udp => &[Proto::Udp],
            ProtoSel::Both => &[Proto::Tcp, Proto::Udp],
        }
    }
    /// Parses `tcp`, `udp` or `both`.
    pub fn parse(s: &str) -> Option<ProtoSel> {
        match s {
            "tcp" => Some(ProtoSel::Tcp),
            "udp" => Some(ProtoSel::Udp),
            "both" => Some(ProtoSel::Both),
            _ => None,
        }
    }
}

impl FamilySel {
    /// The concrete families selected.
    pub fn families(self) -> &'static [Family] {
        match self {
            FamilySel::Ipv4 => &[Family::Ipv4],
            FamilySel::Ipv6 => &[Family::Ipv6],
            FamilySel::Both => &[Family::Ipv4, Family::Ipv6],
        }
    }
    /// Parses `ipv4`, `ipv6` or `both`.
    pub fn parse(s: &str) -> Option<FamilySel> {
        match s {
            "ipv4" => Some(FamilySel::Ipv4),
            "ipv6" => Some(FamilySel::Ipv6),
            "both" => Some(FamilySel::Both),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}
impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        })
    }
}
impl fmt::Display for ProtoSel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProtoSel::Tcp => "tcp",
            ProtoSel::Udp => "udp",
            ProtoSel::Both => "both",
        })
    }
}
impl fmt::Display for FamilySel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FamilySel::Ipv4 => "ipv4",
            FamilySel::Ipv6 => "ipv6",
            FamilySel::Both => "both",
        })
    }
}

/// An inclusive port range; a single port has `start == end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "PortRangeRepr")]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port (inclusive).
    pub end: u16,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PortRangeRepr {
    Num(u64),
    Str(String),
}

impl TryFrom<PortRangeRepr> for PortRange {
    type Error = String;
    fn try_from(r: PortRangeRepr) -> Result<Self, String> {
        match r {
            PortRangeRepr::Num(n) => PortRange::parse(&n.to_string()),
            PortRangeRepr::Str(s) => PortRange::parse(&s),
        }
    }
}

impl PortRange {
    /// One port.
    pub fn single(port: u16) -> PortRange {
        PortRange { start: port, end: port }
    }
    /// Number of ports in the range.
    pub fn len(&self) -> u32 {
        u32::from(self.end) - u32::from(self.start) + 1
    }
    /// Never empty; present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }
    /// The ports, in order.
    pub fn ports(&self) -> impl Iterator<Item = u16> {
        self.start..=self.end
    }
    /// True when the two ranges share a port.
    pub fn overlaps(&self, o: &PortRange) -> bool {
        self.start <= o.end && o.start <= self.end
    }
    /// True when `o` lies entirely inside `self`.
    pub fn contains(&self, o: &PortRange) -> bool {
        self.start <= o.start && o.end <= self.end
    }
    /// Parses `80` or `8000-8099`, with a message naming what is wrong.
    pub fn parse(s: &str) -> Result<PortRange, String> {
        let s = s.trim();
        let one = |p: &str| -> Result<u16, String> {
            let p = p.trim();
            match p.parse::<u64>() {
                Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
                Ok(n) => Err(format!("{n} is not a port (1-65535)")),
                Err(_) => Err(format!(
                    "`{}` is not a port number (1-65535)",
                    p.chars().take(32).collect::<String>().escape_debug()
                )),
            }
        };
        match s.split_once('-') {
            None => one(s).map(PortRange::single),
            Some((a, b)) => {
                let (a, b) = (one(a)?, one(b)?);
                if a > b {
                    Err(format!("range `{s}` runs backwards; write `{b}-{a}`"))
                } else {
                    Ok(PortRange { start: a, end: b })
                }
            }
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.start == self.end {
            s.serialize_u16(self.start)
        } else {
            s.serialize_str(&self.to_string())
        }
    }
}

fn is_true(b: &bool) -> bool {
    *b
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn default_true() -> bool {
    true
}

/// One validated forward: public `port` to local `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    /// Unique name within its owner's set.
    pub name: String,
    /// Public port or range.
    pub port: PortRange,
    /// Local target port or range of the same length.
    pub to: PortRange,
    /// Transport protocols.
    #[serde(default)]
    pub proto: ProtoSel,
    /// Address families.
    #[serde(default)]
    pub family: FamilySel,
    /// Also redirect the host's own connections to its addresses.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub local: bool,
    /// Only traffic arriving on these interfaces (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// Only traffic from these networks (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<IpNet>,
    /// Packet mark; `None` takes the daemon's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<u32>,
    /// Refuse new connections to `to` from other hosts that bypassed `port`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub protect: bool,
    /// Free text for operators (printable, at most [`MAX_DESCRIPTION_CHARS`] characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Longest `description:` of a forward, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 200;

impl Forward {
    /// A TCP forward for both families with every default.
    pub fn new(name: &str, port: PortRange, to: PortRange) -> Forward {
        Forward {
            name: name.to_string(),
            port,
            to,
            proto: ProtoSel::Tcp,
            family: FamilySel::Both,
            local: true,
            interfaces: Vec::new(),
            sources: Vec::new(),
            mark: None,
            protect: false,
            description: None,
        }
    }

    /// Every (family, protocol, public port) this forward claims.
    pub fn claims(&self) -> impl Iterator<Item = (Family, Proto, u16)> + '_ {
        self.family.families().iter().flat_map(move |&fam| {
            self.proto.protos().iter().flat_map(move |&proto| self.port.ports().map(move |port| (fam, proto, port)))
        })
    }

    /// The target port for public port `p` (which must lie in `self.port`).
    pub fn target_of(&self, p: u16) -> u16 {
        self.to.start + (p - self.port.start)
    }
}

/// A rules file: what `portctl apply` takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesFile {
    /// Schema version, always 1.
    pub version: u32,
    /// The forwards.
    pub forwards: Vec<Forward>,
}

/// What a clean stop does to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExit {
    /// Delete the table (default).
    #[default]
    Remove,
    /// Leave the rules in the kernel.
    Keep,
}

/// `settings.listener_check`: whether user forwards are checked against the sockets of
/// other uids (NETLINK_SOCK_DIAG).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerCheck {
    /// Refuse and suspend (default).
    #[default]
    Enforce,
    /// Only warn (answer and log).
    Warn,
    /// No check.
    Off,
}

/// `settings.dispatch`: how TCP forwards reach their target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dispatch {
    /// Steer where the kernel and capabilities allow it, NAT otherwise (default).
    #[default]
    Auto,
    /// Steer TCP forwards (sk_lookup to the owner's listening socket); start fails without BPF.
    Steer,
    /// Redirect with NAT, as before.
    Nat,
}

/// `settings.ownership`: how user forwards' target ports are kept for their owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ownership {
    /// Kernel reservation where the kernel and capabilities allow it, polled otherwise (default).
    #[default]
    Auto,
    /// cgroup bind hooks refuse a bind of a reserved target port by any other uid; start fails without BPF.
    Kernel,
    /// Only socket-table checks (`listener_check`).
    Polled,
}

impl fmt::Display for Dispatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dispatch::Auto => "auto",
            Dispatch::Steer => "steer",
            Dispatch::Nat => "nat",
        })
    }
}

impl fmt::Display for Ownership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ownership::Auto => "auto",
            Ownership::Kernel => "kernel",
            Ownership::Polled => "polled",
        })
    }
}

/// `settings.socket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketSettings {
    /// Socket path.
    pub path: String,
    /// Group owning the socket, if any.
    pub group: Option<String>,
    /// Permission bits.
    pub mode: u32,
}

/// `settings` of the daemon config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// nftables table name (family inet).
    pub table: String,
    /// Default packet mark.
    pub mark: u32,
    /// What a clean stop does.
    pub on_exit: OnExit,
    /// Control socket.
    pub socket: SocketSettings,
    /// Where applied sets are persisted.
    pub state_dir: String,
    /// Listener ownership checks of user forwards.
    #[serde(default)]
    pub listener_check: ListenerCheck,
    /// How TCP forwards reach their target.
    #[serde(default)]
    pub dispatch: Dispatch,
    /// How target ports are kept for their owner.
    #[serde(default)]
    pub ownership: Ownership,
    /// The Prometheus endpoint; `None`: no TCP socket at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSettings>,
}

/// `settings.metrics`: where portd serves `GET /metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsSettings {
    /// Address and port of the HTTP listener, e.g. `127.0.0.1:9649`.
    pub listen: std::net::SocketAddr,
    /// Networks scrapers may connect from (default: loopback only); others are closed
    /// unanswered.
    #[serde(default = "MetricsSettings::loopback")]
    pub allow: Vec<ipnet::IpNet>,
}

impl MetricsSettings {
    /// 127.0.0.0/8 and ::1/128: the default of `settings.metrics.allow`.
    pub fn loopback() -> Vec<ipnet::IpNet> {
        vec![
            ipnet::IpNet::V4(ipnet::Ipv4Net::new(std::net::Ipv4Addr::LOCALHOST, 8).unwrap_or_default()),
            ipnet::IpNet::V6(ipnet::Ipv6Net::from(std::net::Ipv6Addr::LOCALHOST)),
        ]
    }
    /// True when a scraper at `peer` may connect (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address).
    pub fn allows(&self, peer: std::net::IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.allow.iter().any(|n| n.contains(&peer))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            table: "portd".into(),
            mark: 1,
            on_exit: OnExit::Remove,
            socket: SocketSettings { path: "/run/portd/portd.sock".into(), group: Some("portd".into()), mode: 0o660 },
            state_dir: "/var/lib/portd".into(),
            listener_check: ListenerCheck::Enforce,
            dispatch: Dispatch::Auto,
            ownership: Ownership::Auto,
            metrics: None,
        }
    }
}

/// Who a grant is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantSubject {
    /// A user name.
    User(String),
    /// A group name (primary or supplementary).
    Group(String),
}

/// An inclusive range of packet marks; one mark has `start == end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MarkRange {
    /// First mark.
    pub start: u32,
    /// Last mark (inclusive).
    pub end: u32,
}

impl MarkRange {
    /// One mark.
    pub fn single(m: u32) -> MarkRange {
        MarkRange { start: m, end: m }
    }
    /// True when `m` lies in the range.
    pub fn contains(&self, m: u32) -> bool {
        self.start <= m && m <= self.end
    }
}

impl fmt::Display for MarkRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{:#x}", self.start)
        } else {
            write!(f, "{:#x}-{:#x}", self.start, self.end)
        }
    }
}

/// Default of [`Grant::max_forwards`].
pub const DEFAULT_MAX_FORWARDS: u32 = 1000;

/// What an unprivileged caller may forward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The user or group this grant is for.
    pub subject: GrantSubject,
    /// Public ports (or ranges) the caller may forward.
    pub ports: Vec<PortRange>,
    /// Target ports the caller may forward to.
    pub to: Vec<PortRange>,
    /// May the caller set `protect: true` (default false).
    pub protect: bool,
    /// May the caller redirect the host's own connections, `local: true` (default true).
    pub local: bool,
    /// Marks the caller may set; `None`: only `settings.mark` and 0.
    pub marks: Option<Vec<MarkRange>>,
    /// Most forwards the caller's set may hold (default [`DEFAULT_MAX_FORWARDS`]).
    pub max_forwards: u32,
    /// Most kernel elements the caller's set may place
    /// (default [`crate::budget::DEFAULT_MAX_ELEMENTS`]).
    #[serde(default = "default_max_elements")]
    pub max_elements: u64,
    /// Most source elements the caller's set may place
    /// (default [`crate::budget::DEFAULT_MAX_SOURCE_ELEMENTS`]).
    #[serde(default = "default_max_source_elements")]
    pub max_source_elements: u64,
}

fn default_max_elements() -> u64 {
    crate::budget::DEFAULT_MAX_ELEMENTS
}

fn default_max_source_elements() -> u64 {
    crate::budget::DEFAULT_MAX_SOURCE_ELEMENTS
}

impl Grant {
    /// A grant of `ports` to `to` with every other field at its default.
    pub fn new(subject: GrantSubject, ports: Vec<PortRange>, to: Vec<PortRange>) -> Grant {
        Grant {
            subject,
            ports,
            to,
            protect: false,
            local: true,
            marks: None,
            max_forwards: DEFAULT_MAX_FORWARDS,
            max_elements: default_max_elements(),
            max_source_elements: default_max_source_elements(),
        }
    }

    /// True when `f`'s public and target ranges lie inside this grant (the other fields
    /// are judged by [`crate::policy`]).
    pub fn allows(&self, f: &Forward) -> bool {
        self.ports.iter().any(|r| r.contains(&f.port)) && self.to.iter().any(|r| r.contains(&f.to))
    }

    /// True when a forward may carry the effective mark `m` (`default` is `settings.mark`).
    pub fn allows_mark(&self, m: u32, default: u32) -> bool {
        match &self.marks {
            None => m == default || m == 0,
            Some(list) => list.iter().any(|r| r.contains(m)),
        }
    }
}

/// The daemon config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Schema version, always 1.
    pub version: u32,
    /// Settings.
    pub settings: Settings,
    /// Grants for unprivileged callers.
    pub grants: Vec<Grant>,
    /// The `system` rule set.
    pub forwards: Vec<Forward>,
}

impl Default for Config {
    fn default() -> Self {
        Config { version: 1, settings: Settings::default(), grants: Vec::new(), forwards: Vec::new() }
    }
}
