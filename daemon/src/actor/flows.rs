//! NAT forwards' counts: which flows the kernel side follows ([`portd_kernel::natcount`]),
//! and keeping what their closed flows received across restarts (`flows.json` in the
//! state directory).

#![forbid(unsafe_code)]

use super::*;
use portd_kernel::natcount::{Closed, Counts, Key};
use std::collections::HashSet;

/// How often the closed flows' counts are kept when they changed, and per-flow
/// accounting checked (another program may switch it off).
pub(super) const FLOWS_KEEP: Duration = Duration::from_secs(5);

/// One kept count.
#[derive(serde::Serialize, serde::Deserialize)]
struct Kept {
    family: portd_rules::Family,
    proto: portd_rules::Proto,
    port: u16,
    to: u16,
    packets: u64,
    bytes: u64,
}

/// The counts kept in `text` (one JSON object a line; lines that do not parse are left out).
pub(super) fn parse_kept(text: &[u8]) -> Counts {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| serde_json::from_str::<Kept>(l).ok())
        .map(|k| (Key { family: k.family, proto: k.proto, port: k.port, to: k.to }, (k.packets, k.bytes)))
        .collect()
}

fn kept_text(counts: &Counts) -> Vec<u8> {
    let mut keys: Vec<&Key> = counts.keys().collect();
    keys.sort();
    let mut out = Vec::new();
    for k in keys {
        let (packets, bytes) = counts[k];
        let line = Kept { family: k.family, proto: k.proto, port: k.port, to: k.to, packets, bytes };
        if let Ok(l) = serde_json::to_vec(&line) {
            out.extend(l);
            out.push(b'\n');
        }
    }
    out
}

/// The flow keys of `plan`'s redirected forwards: every port, family and protocol of a
/// NAT plan's forwards, the UDP ones of a steer plan's (its TCP is steered).
pub(super) fn nat_keys(plan: &Plan) -> HashSet<Key> {
    let mut keys = HashSet::new();
    for p in &plan.forwards {
        for &proto in p.forward.proto.protos() {
            if plan.steer && proto == portd_rules::Proto::Tcp {
                continue;
            }
            for port in p.forward.port.ports() {
                for &family in p.forward.family.families() {
                    keys.insert(Key { family, proto, port, to: p.forward.target_of(port) });
                }
            }
        }
    }
    keys
}

impl Daemon {
    /// The follower of closed flows, with what an earlier run kept.
    pub(super) fn closed_flows(store: &mut Store) -> Closed {
        Closed::new(parse_kept(&store.load_flows()))
    }

    /// Follows the flows of the plan's NAT forwards (after each change of the plan).
    pub(super) fn track_flows(&mut self) {
        let Some(flows) = self.flows.as_mut() else { return };
        let keys = nat_keys(&self.plan);
        let any = !keys.is_empty();
        flows.track(keys);
        if any {
            self.timers.set_earliest(Timer::Flows, Instant::now() + FLOWS_KEEP);
        }
    }

    /// Keeps the closed flows' counts when they changed, and puts per-flow accounting
    /// back on when another program switched it off.
    pub(super) fn keep_flows(&mut self) {
        let Some(flows) = self.flows.as_ref() else { return };
        let tracking = !flows.tracked().is_empty();
        if tracking {
            match portd_kernel::natcount::account() {
                Ok(true) => tracing::warn!(
                    action = "repair",
                    "per-flow conntrack accounting was switched off; switched on again (NAT forwards' flows begun meanwhile count nothing)"
                ),
                Ok(false) => {}
                Err(e) => tracing::debug!("checking per-flow conntrack accounting: {e}"),
            }
            self.timers.set_earliest(Timer::Flows, Instant::now() + FLOWS_KEEP);
        }
        if let Some(counts) = flows.changed() {
            if let Err(e) = self.store.save_flows(&kept_text(&counts)) {
                tracing::warn!("{e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_counts_read_back_and_a_bad_line_is_left_out() {
        let k = Key { family: portd_rules::Family::Ipv6, proto: portd_rules::Proto::Udp, port: 53, to: 5353 };
        let counts = Counts::from([(k, (3, 300)), (Key { port: 80, to: 8080, ..k }, (1, 60))]);
        let mut text = kept_text(&counts);
        text.extend(b"{\"family\":\"ipv9\"}\n");
        assert_eq!(parse_kept(&text), counts);
    }
}
