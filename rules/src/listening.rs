//! Whether a forward's target takes its connections now, and on which addresses: the
//! `listening` and `listeners` of a forward in `portctl status` and the
//! `portd_forward_target_listening` gauge, from one read of the kernel's socket tables.

#![forbid(unsafe_code)]

use crate::doctor::Listening;
use crate::model::{Family, Proto};
use crate::plan::PlacedForward;
use std::net::IpAddr;

/// What the target of one forward has listening.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    /// True when every target port takes every protocol and family of the forward:
    /// a steered TCP port has a socket registered for steering, a NAT port a socket
    /// that takes each family (`::` without v6-only or `0.0.0.0` for IPv4, an IPv6
    /// socket for IPv6).
    pub listening: bool,
    /// The distinct `PROTO ADDRESS` of the sockets on the target ports, sorted, such as
    /// `tcp [::]`, `tcp 127.0.0.1` or `udp [::] v6only` (at most [`MAX_ADDRESSES`]).
    pub addresses: Vec<String>,
}

/// Most addresses listed for one forward (a range may have many sockets).
pub const MAX_ADDRESSES: usize = 8;

/// What `f`'s target has listening. `steered`: its TCP is steered, and
/// `registered(port)` says whether a socket is registered for that port; `sockets(proto,
/// port)` lists the sockets on a port, as the kernel reports them (`None`: unknown; then
/// only steered TCP can be judged, by its registered sockets).
pub fn target(
    f: &PlacedForward,
    steered: bool,
    registered: impl Fn(u16) -> bool,
    sockets: Option<impl Fn(Proto, u16) -> Vec<Listening>>,
) -> Target {
    let families = f.forward.family.families();
    let mut listening = true;
    let mut addresses = Vec::new();
    for &proto in f.forward.proto.protos() {
        for port in f.forward.to.ports() {
            let socks = sockets.as_ref().map(|s| s(proto, port));
            for s in socks.iter().flatten() {
                addresses.push(address(proto, s));
            }
            let every_family = socks.as_ref().map(|socks| {
                families.iter().all(|fam| {
                    socks.iter().any(|s| match fam {
                        Family::Ipv4 => s.takes_ipv4(),
                        Family::Ipv6 => s.takes_ipv6(),
                    })
                })
            });
            listening &= if steered && proto == Proto::Tcp {
                registered(port) && every_family.unwrap_or(true)
            } else {
                every_family.unwrap_or(false)
            };
        }
    }
    addresses.sort();
    addresses.dedup();
    addresses.truncate(MAX_ADDRESSES);
    Target { listening, addresses }
}

fn address(proto: Proto, s: &Listening) -> String {
    let p = match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    match s.addr {
        IpAddr::V4(a) => format!("{p} {a}"),
        IpAddr::V6(a) if s.v6only => format!("{p} [{a}] v6only"),
        IpAddr::V6(a) => format!("{p} [{a}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FamilySel, Forward, PortRange, ProtoSel};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn placed(proto: ProtoSel, family: FamilySel) -> PlacedForward {
        let mut forward: Forward = serde_yaml::from_str("name: web\nport: 80\nto: 8080").expect("forward");
        forward.proto = proto;
        forward.family = family;
        forward.to = PortRange { start: 8080, end: 8080 };
        PlacedForward { owner: "user:web".into(), forward, mark: 1 }
    }

    fn sock(addr: IpAddr, v6only: bool) -> Listening {
        Listening { uid: 1000, addr, v6only, listening: true }
    }

    const ANY4: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    const ANY6: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

    #[test]
    fn nat_needs_a_socket_for_every_family() {
        let both = placed(ProtoSel::Tcp, FamilySel::Both);
        let none = target(&both, false, |_| false, Some(|_, _| vec![]));
        assert_eq!(none, Target { listening: false, addresses: vec![] });
        let dual = target(&both, false, |_| false, Some(|_, _| vec![sock(ANY6, false)]));
        assert_eq!(dual, Target { listening: true, addresses: vec!["tcp [::]".into()] });
        let v6only = target(&both, false, |_| false, Some(|_, _| vec![sock(ANY6, true)]));
        assert_eq!(v6only, Target { listening: false, addresses: vec!["tcp [::] v6only".into()] });
        let v4 = target(&both, false, |_| false, Some(|_, _| vec![sock(ANY4, false)]));
        assert!(!v4.listening, "no IPv6 socket");
        let ipv4 = placed(ProtoSel::Tcp, FamilySel::Ipv4);
        assert!(target(&ipv4, false, |_| false, Some(|_, _| vec![sock(ANY4, false)])).listening);
        let pair = target(&both, false, |_| false, Some(|_, _| vec![sock(ANY4, false), sock(ANY6, true)]));
        assert_eq!(pair.addresses, ["tcp 0.0.0.0", "tcp [::] v6only"]);
        assert!(pair.listening);
    }

    #[test]
    fn steered_tcp_reads_the_registered_sockets_and_udp_the_socket_tables() {
        let both = placed(ProtoSel::Both, FamilySel::Both);
        let tcp_only = |p: Proto, _| if p == Proto::Tcp { vec![sock(ANY6, false)] } else { vec![] };
        assert!(!target(&both, true, |_| true, Some(tcp_only)).listening, "UDP has no socket");
        let all = Some(|_, _| vec![sock(ANY6, false)]);
        assert!(target(&both, true, |_| true, all).listening);
        assert!(!target(&both, true, |_| false, all).listening, "TCP not registered for steering");
        assert_eq!(target(&both, true, |_| true, all).addresses, ["tcp [::]", "udp [::]"]);
        let tcp = placed(ProtoSel::Tcp, FamilySel::Both);
        let v6only = Some(|_, _| vec![sock(ANY6, true)]);
        assert!(!target(&tcp, true, |_| true, v6only).listening, "a v6-only socket takes no IPv4");
        let unknown: Option<fn(Proto, u16) -> Vec<Listening>> = None;
        assert!(target(&tcp, true, |_| true, unknown).listening, "registered, sockets unknown");
        assert!(!target(&placed(ProtoSel::Udp, FamilySel::Both), false, |_| true, unknown).listening);
    }
}
