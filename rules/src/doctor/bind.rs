//! The addresses a forward's application listens on: the two most common mistakes of an
//! application behind a forward. Bound to loopback only (127.0.0.1, ::1) while the forward
//! takes other hosts' connections, which both NAT's redirect and steering hand to the
//! address they arrived on, never to loopback; and on an IPv6 socket that takes no IPv4
//! (`IPV6_V6ONLY`) while the forward takes IPv4.

use super::{fwd_name, l4, proto_word, Finding, Severity};
use crate::model::{Family, Proto};
use crate::plan::PlacedForward;
use std::net::IpAddr;

/// One socket on a target port, as the kernel's socket tables report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// Owner uid.
    pub uid: u32,
    /// Bound address (`0.0.0.0` or `::` for any).
    pub addr: IpAddr,
    /// An IPv6 socket that takes no IPv4.
    pub v6only: bool,
    /// It takes connections (false: a TCP socket bound without listening, which holds
    /// the port all the same).
    pub listening: bool,
}

impl Listening {
    /// A socket of `uid` on every address of both families (`::`, dual-stack).
    pub fn any(uid: u32) -> Listening {
        Listening { uid, addr: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), v6only: false, listening: true }
    }

    fn loopback(&self) -> bool {
        loopback(self.addr)
    }

    /// Takes IPv6 connections: an IPv6 socket on an address that is not IPv4-mapped.
    pub fn takes_ipv6(&self) -> bool {
        matches!(self.addr, IpAddr::V6(a) if a.to_ipv4_mapped().is_none())
    }

    /// Takes IPv4 connections: an IPv4 socket, `::` without v6-only, or an IPv4-mapped
    /// address.
    pub fn takes_ipv4(&self) -> bool {
        match self.addr {
            IpAddr::V4(_) => true,
            IpAddr::V6(a) => (a.is_unspecified() && !self.v6only) || a.to_ipv4_mapped().is_some(),
        }
    }
}

fn loopback(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

/// The forward takes connections from other hosts: not only on `lo`, not only from
/// loopback sources.
fn takes_other_hosts(f: &PlacedForward) -> bool {
    let fw = &f.forward;
    (fw.interfaces.is_empty() || fw.interfaces.iter().any(|i| i != "lo"))
        && (fw.sources.is_empty() || fw.sources.iter().any(|n| !loopback(n.addr())))
}

fn addresses(socks: &[Listening]) -> String {
    let mut v: Vec<String> = socks.iter().map(|s| s.addr.to_string()).collect();
    v.sort();
    v.dedup();
    v.join(" and ")
}

/// The findings about the addresses of the sockets on `f`'s target ports for `proto`
/// (at most one of each kind): `sockets(proto, port)` lists them.
pub(super) fn bound(f: &PlacedForward, proto: Proto, sockets: &impl Fn(Proto, u16) -> Vec<Listening>) -> Vec<Finding> {
    let mut out = Vec::new();
    let to = f.forward.to;
    let word = proto_word(l4(proto));
    let ss = format!("`ss -l{}n sport = :{{port}}` shows the address", if proto == Proto::Tcp { "t" } else { "u" });
    let public = |port: u16| f.forward.port.start + (port - to.start);
    let listening = |p: u16| Some((p, sockets(proto, p))).filter(|(_, s)| !s.is_empty());
    let others = takes_other_hosts(f);
    if others {
        if let Some((port, socks)) =
            (to.start..=to.end).filter_map(listening).find(|(_, s)| s.iter().all(Listening::loopback))
        {
            out.push(Finding {
                check: "listener".into(),
                severity: Severity::Warning,
                forward: Some(fwd_name(f)),
                message: format!(
                    "the application on target port {word}/{port} listens on {} only: connections from other hosts to public port {} are redirected to the address they arrived on, not to loopback, and are refused",
                    addresses(&socks),
                    public(port)
                ),
                fix: format!(
                    "make the application listen on 0.0.0.0 (IPv4) or :: (both families) instead; to keep other hosts off port {port} itself, set `protect: true` on the forward; {}",
                    ss.replace("{port}", &port.to_string())
                ),
            });
        }
    }
    if f.forward.family.families().contains(&Family::Ipv4) {
        if let Some((port, socks)) = (to.start..=to.end).filter_map(listening).find(|(_, s)| {
            // A socket on 127.0.0.1 takes no IPv4 from other hosts either.
            !s.iter().all(Listening::loopback)
                && !s.iter().any(|x| x.takes_ipv4() && !(others && x.loopback()))
                && s.iter().any(|x| x.v6only)
        }) {
            out.push(Finding {
                check: "listener".into(),
                severity: Severity::Warning,
                forward: Some(fwd_name(f)),
                message: format!(
                    "the application on target port {word}/{port} listens on IPv6 only ({} with IPV6_V6ONLY): IPv4 connections to public port {} are redirected there and refused",
                    addresses(&socks),
                    public(port)
                ),
                fix: format!(
                    "make the application listen on a dual-stack socket (:: with IPV6_V6ONLY off, such as nginx's `listen [::]:{port} ipv6only=off`) or on 0.0.0.0:{port} too; or set `family: ipv6` on the forward if it is meant for IPv6 only; {}",
                    ss.replace("{port}", &port.to_string())
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FamilySel, Forward, PortRange};

    fn fwd() -> PlacedForward {
        PlacedForward {
            owner: "system".into(),
            forward: Forward::new("web", PortRange::single(80), PortRange::single(8080)),
            mark: 0,
        }
    }

    fn sock(addr: &str, v6only: bool) -> Listening {
        Listening { uid: 0, addr: addr.parse().expect("an address"), v6only, listening: true }
    }

    fn on(f: &PlacedForward, socks: &[Listening]) -> Vec<Finding> {
        let socks = socks.to_vec();
        bound(f, Proto::Tcp, &move |_, p| if p == 8080 { socks.clone() } else { vec![] })
    }

    #[test]
    fn loopback_only_behind_a_forward_for_other_hosts() {
        let f = fwd();
        for lo in [vec![sock("127.0.0.1", false)], vec![sock("127.0.0.1", false), sock("::1", true)]] {
            let found = on(&f, &lo);
            assert_eq!(found.len(), 1, "{found:?}");
            assert_eq!(found[0].severity, Severity::Warning);
            assert!(found[0].message.contains("listens on 127.0.0.1"), "{}", found[0].message);
            assert!(found[0].message.contains("public port 80"), "{}", found[0].message);
            assert!(found[0].fix.contains("0.0.0.0") && found[0].fix.contains("::"), "{}", found[0].fix);
        }
        assert!(on(&f, &[sock("127.0.0.1", false), sock("0.0.0.0", false)]).is_empty(), "one public socket");
        assert!(on(&f, &[sock("::", false)]).is_empty());
        assert!(on(&f, &[sock("192.0.2.1", false)]).is_empty());
        assert!(on(&f, &[]).is_empty(), "nothing listening is the other check's");
        let mut lo_only = fwd();
        lo_only.forward.interfaces = vec!["lo".into()];
        assert!(on(&lo_only, &[sock("127.0.0.1", false)]).is_empty(), "a forward for this host only");
        let mut from_lo = fwd();
        from_lo.forward.sources = vec!["127.0.0.0/8".parse().expect("an address")];
        assert!(on(&from_lo, &[sock("127.0.0.1", false)]).is_empty());
        from_lo.forward.sources.push("10.0.0.0/8".parse().expect("an address"));
        assert_eq!(on(&from_lo, &[sock("127.0.0.1", false)]).len(), 1);
    }

    #[test]
    fn v6_only_behind_a_forward_that_takes_ipv4() {
        let f = fwd();
        let found = on(&f, &[sock("::", true)]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("IPv6 only (:: with IPV6_V6ONLY)"), "{}", found[0].message);
        assert!(found[0].message.contains("IPv4 connections to public port 80"), "{}", found[0].message);
        assert!(found[0].fix.contains("dual-stack") && found[0].fix.contains("0.0.0.0:8080"), "{}", found[0].fix);
        assert!(on(&f, &[sock("::", true), sock("0.0.0.0", false)]).is_empty(), "a v4 socket too");
        assert!(on(&f, &[sock("::", false)]).is_empty(), "dual-stack");
        assert_eq!(on(&f, &[sock("::", true), sock("127.0.0.1", false)]).len(), 1, "v4 on loopback only");
        let mut lo_only = fwd();
        lo_only.forward.interfaces = vec!["lo".into()];
        assert!(on(&lo_only, &[sock("::", true), sock("127.0.0.1", false)]).is_empty(), "enough for this host");
        let mut v6 = fwd();
        v6.forward.family = FamilySel::Ipv6;
        assert!(on(&v6, &[sock("::", true)]).is_empty(), "an IPv6 forward");
        let mut v4 = fwd();
        v4.forward.family = FamilySel::Ipv4;
        assert_eq!(on(&v4, &[sock("::", true)]).len(), 1);
        // Loopback v6-only: one finding, the loopback one.
        let lo = on(&f, &[sock("::1", true)]);
        assert_eq!(lo.len(), 1, "{lo:?}");
        assert!(lo[0].message.contains("::1 only"), "{}", lo[0].message);
    }

    #[test]
    fn the_port_of_a_range_is_named_with_its_public_port() {
        let mut f = fwd();
        f.forward.port = PortRange { start: 80, end: 81 };
        f.forward.to = PortRange { start: 8080, end: 8081 };
        let found = bound(&f, Proto::Udp, &|_, p| if p == 8081 { vec![sock("127.0.0.1", false)] } else { vec![] });
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("target port udp/8081"), "{}", found[0].message);
        assert!(found[0].message.contains("public port 81"), "{}", found[0].message);
        assert!(found[0].fix.contains("ss -lun sport = :8081"), "{}", found[0].fix);
    }
}
