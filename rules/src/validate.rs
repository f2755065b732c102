//! The rules of one forward's own definition, in one place: every way a forward enters
//! portd (a rules file or the config, `portctl add`, the state file, a request on the
//! wire, `portctl check`) calls [`forward`], so each gets the same answer.
//!
//! Host bits of `sources` are cleared, not refused: `203.0.113.9/24` means
//! `203.0.113.0/24` wherever it is written (and a source listed twice counts once).
//! Rules across forwards (unique names, one forward per public port) belong to the set
//! and are checked where a set is known.

use crate::load::clip;
use crate::model::{FamilySel, Forward, PortRange, MAX_DESCRIPTION_CHARS};
use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;

/// One problem of a forward's definition: the field it is in, as a path below the forward
/// (`name`, `to`, `sources[1]`), and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field, as written in a rules file.
    pub field: &'static str,
    /// The entry of a list field (`interfaces`, `sources`), as given.
    pub index: Option<usize>,
    /// What is wrong, and what to do.
    pub message: String,
}

impl Problem {
    fn new(field: &'static str, message: String) -> Problem {
        Problem { field, index: None, message }
    }
    fn at(field: &'static str, index: usize, message: String) -> Problem {
        Problem { field, index: Some(index), message }
    }
}

impl fmt::Display for Problem {
    /// `field: message`, as a command line reports it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Most interfaces one forward may name.
pub const MAX_INTERFACES: usize = 64;
/// Most sources one forward may list, repeats included (it may place at most
/// [`crate::budget::MAX_FORWARD_SOURCE_ELEMENTS`] after repeats are dropped).
pub const MAX_LISTED_SOURCES: usize = 4096;

/// Checks one forward's own definition and puts it in its one form (host bits of
/// `sources` cleared, repeated sources dropped). Empty when the forward is valid.
pub fn forward(f: &mut Forward) -> Vec<Problem> {
    let mut out = Vec::new();
    if !valid_name(&f.name) {
        out.push(Problem::new(
            "name",
            format!(
                "`{}` is not a valid name: use 1-32 of a-z, 0-9, '_' or '-', starting with a letter or digit",
                clip(&f.name)
            ),
        ));
    }
    if let Some(m) = ranges_problem(f.port, f.to) {
        out.push(Problem::new("to", m));
    }
    // Lists are bounded before their entries are looked at: a forward comes from anyone
    // who can reach the socket, and each entry costs work and an answer line.
    if f.interfaces.len() > MAX_INTERFACES {
        out.push(Problem::new(
            "interfaces",
            format!("{} interfaces are listed; a forward may name at most {MAX_INTERFACES}", f.interfaces.len()),
        ));
    } else {
        let mut seen = std::collections::HashSet::with_capacity(f.interfaces.len());
        for (i, n) in f.interfaces.iter().enumerate() {
            if !valid_ifname(n) {
                out.push(Problem::at(
                    "interfaces",
                    i,
                    format!("`{}` is not an interface name (1-15 of a-z, A-Z, 0-9, '.', '_', '-', '@', '+')", clip(n)),
                ));
            } else if !seen.insert(n.as_str()) {
                out.push(Problem::at("interfaces", i, format!("interface `{n}` is listed twice")));
            }
        }
    }
    if let Some(m) = f.description.as_deref().and_then(description_problem) {
        out.push(Problem::new("description", m));
    }
    if f.sources.len() > MAX_LISTED_SOURCES {
        out.push(Problem::new(
            "sources",
            format!(
                "{} sources are listed; a forward may list at most {MAX_LISTED_SOURCES} (and place at most {} source elements)",
                f.sources.len(),
                crate::budget::MAX_FORWARD_SOURCE_ELEMENTS
            ),
        ));
        return out;
    }
    for (i, s) in f.sources.iter().enumerate() {
        let wrong = match (f.family, s) {
            (FamilySel::Ipv4, IpNet::V6(_)) => Some("ipv6"),
            (FamilySel::Ipv6, IpNet::V4(_)) => Some("ipv4"),
            _ => None,
        };
        if let Some(w) = wrong {
            out.push(Problem::at(
                "sources",
                i,
                format!("{} is an {w} network but the forward is `family: {}`", s.trunc(), f.family),
            ));
        }
    }
    normalize_sources(&mut f.sources);
    // The kernel cost of the shape (ports x protocols x sources), after normalising.
    if let Some(m) = crate::budget::shape_problem(f) {
        out.push(Problem::new("sources", m));
    }
    out
}

/// Clears host bits and drops repeated networks, keeping the first of each.
fn normalize_sources(sources: &mut Vec<IpNet>) {
    for s in sources.iter_mut() {
        *s = s.trunc();
    }
    if sources.len() > 1 {
        let mut seen = std::collections::HashSet::with_capacity(sources.len());
        sources.retain(|s| seen.insert(*s));
    }
}

/// What is wrong with a public range and its target, if anything.
fn ranges_problem(port: PortRange, to: PortRange) -> Option<String> {
    if port.len() != to.len() {
        Some(format!(
            "`{to}` has {} port(s) but `port: {port}` has {}; a range maps to a range of the same length",
            to.len(),
            port.len()
        ))
    } else if port.start == to.start {
        Some(format!("target {to} is the public port itself; forward to a different port"))
    } else {
        None
    }
}

/// A source as text (`203.0.113.0/24`, `2001:db8::/32`, or one address) as a network.
pub fn parse_source(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{}` is not an address or network (203.0.113.0/24, 2001:db8::/32)", clip(s)))
}

/// A forward given as text, the way a command line gives it (`portctl add`): the name,
/// the public and target ports and the sources as written; `rest` sets the other fields
/// and returns the problems it found in them. The forward, checked by [`forward`], or
/// every problem at once.
pub fn assemble(
    name: &str,
    port: &str,
    to: &str,
    sources: &[String],
    rest: impl FnOnce(&mut Forward) -> Vec<Problem>,
) -> Result<Forward, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut ports = |field: &'static str, s: &str| {
        PortRange::parse(s).map_err(|e| problems.push(Problem::new(field, e))).unwrap_or(PortRange::single(1))
    };
    let (p, t) = (ports("port", port), ports("to", to));
    let ranges_ok = problems.is_empty();
    let mut f = Forward::new(name, p, t);
    for (i, s) in sources.iter().enumerate() {
        match parse_source(s) {
            Ok(n) => f.sources.push(n),
            Err(m) => problems.push(Problem::at("sources", i, m)),
        }
    }
    problems.extend(rest(&mut f));
    // A target checked against a port that did not parse would only add noise.
    problems.extend(forward(&mut f).into_iter().filter(|p| ranges_ok || p.field != "to"));
    if problems.is_empty() {
        Ok(f)
    } else {
        Err(problems)
    }
}

/// True for a valid forward or owner-set name: `[a-z0-9][a-z0-9_-]{0,31}`.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// True for an interface name portd accepts: 1-15 of a-z, A-Z, 0-9, '.', '_', '-', '@'
/// and '+' (what Linux accepts, minus what nft cannot print back and read again:
/// quotes, braces, spaces, control characters).
pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'@' | b'+'))
}

/// What is wrong with a forward's `description:`, if anything: at most
/// [`MAX_DESCRIPTION_CHARS`] characters, none of them control or format characters
/// (bidi overrides and isolates, zero-width characters) nor line or paragraph separators.
pub fn description_problem(d: &str) -> Option<String> {
    let n = d.chars().count();
    if n > MAX_DESCRIPTION_CHARS {
        return Some(format!("description has {n} characters; the limit is {MAX_DESCRIPTION_CHARS}: shorten it"));
    }
    crate::text::unprintable_problem(d).map(|p| format!("description contains {p}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bits_are_cleared_and_repeats_dropped() {
        let mut f = Forward::new("a", PortRange::single(80), PortRange::single(8080));
        f.sources =
            ["203.0.113.9/24", "203.0.113.0/24", "2001:db8::1/32"].iter().map(|s| s.parse().expect("net")).collect();
        assert!(forward(&mut f).is_empty());
        let shown: Vec<String> = f.sources.iter().map(|s| s.to_string()).collect();
        assert_eq!(shown, ["203.0.113.0/24", "2001:db8::/32"]);
    }

    #[test]
    fn every_problem_of_a_forward_is_named_by_its_field() {
        let mut f = Forward::new("Bad", PortRange::single(80), PortRange::single(80));
        f.interfaces = vec!["eth0".into(), "eth0".into(), "bad name".into()];
        f.family = FamilySel::Ipv6;
        f.sources = vec!["203.0.113.0/24".parse().expect("net")];
        let fields: Vec<(&str, Option<usize>)> = forward(&mut f).iter().map(|p| (p.field, p.index)).collect();
        assert_eq!(
            fields,
            [("name", None), ("to", None), ("interfaces", Some(1)), ("interfaces", Some(2)), ("sources", Some(0))]
        );
    }

    #[test]
    fn long_lists_get_one_problem_before_their_entries_are_read() {
        let mut f = Forward::new("a", PortRange::single(80), PortRange::single(8080));
        f.interfaces = (0..MAX_INTERFACES).map(|i| format!("eth{i}")).collect();
        assert!(forward(&mut f).is_empty(), "{MAX_INTERFACES} distinct interfaces are fine");
        // 200,000 names, each listed twice: one problem, not 100,000 (and no pairwise comparison).
        f.interfaces = (0..200_000).map(|i| format!("v{}", i / 2)).collect();
        let p = forward(&mut f);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].field, p[0].index), ("interfaces", None));
        assert!(p[0].message.contains("200000 interfaces are listed; a forward may name at most 64"), "{}", p[0]);

        let mut f = Forward::new("a", PortRange::single(80), PortRange::single(8080));
        f.family = FamilySel::Ipv6;
        f.sources = vec!["203.0.113.0/24".parse().expect("net"); MAX_LISTED_SOURCES + 1];
        let p = forward(&mut f);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].message.starts_with("4097 sources are listed; a forward may list at most 4096"), "{}", p[0]);
        // Repeats within the bound are dropped, as before.
        f.family = FamilySel::Both;
        f.sources = vec!["203.0.113.0/24".parse().expect("net"); MAX_LISTED_SOURCES];
        assert!(forward(&mut f).is_empty());
        assert_eq!(f.sources.len(), 1);
    }
}
