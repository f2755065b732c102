//! Old targets of UDP forwards stay reserved until their flows are gone: a retargeted
//! or removed mapping's conntrack entries are deleted by the conntrack thread after a
//! dump of the whole table (milliseconds, more when another account fills the table),
//! and until then the old flows' datagrams still go to the old target port. Had its
//! reservation gone with the change, another account could bind that port meanwhile
//! and receive them.

#![forbid(unsafe_code)]

use super::*;
use portd_kernel::conntrack::Stale;
use portd_rules::model::{Forward, Proto};

/// A user forward kept claimed: owner, uid, forward.
type Claim = (String, u32, Forward);

/// User forwards of an old plan whose UDP mappings a change retired, kept claimed until
/// the conntrack thread has deleted their flows, by job number.
#[derive(Default)]
pub(super) struct Retiring {
    next: u64,
    jobs: Vec<(u64, Vec<Claim>)>,
    /// The actor's own channel, for the conntrack thread's word that a job is done
    /// (none in unit tests: then nothing is kept).
    tx: Option<std::sync::mpsc::Sender<Msg>>,
}

impl Retiring {
    /// The kept forwards, as the data plane's sync takes them, and their uids.
    pub(super) fn forwards(&self) -> impl Iterator<Item = (&str, u32, &Forward)> {
        self.jobs.iter().flat_map(|(_, l)| l.iter().map(|(o, u, f)| (o.as_str(), *u, f)))
    }
}

impl Daemon {
    /// Gives the actor its own channel (see [`Retiring`]).
    pub fn attach_self(&mut self, tx: std::sync::mpsc::Sender<Msg>) {
        self.retiring.tx = Some(tx);
    }

    /// Queues the deletion of `stale` mappings' flows; the user forwards of the current
    /// (old) plan that had their UDP mappings keep their claims until it is done. Called
    /// before the plan changes; `known`: the owner and uid of a set the change may have
    /// emptied (and so dropped).
    pub(super) fn forget_flows(&mut self, stale: Vec<Stale>, known: Option<(&str, u32)>) {
        let udp: Vec<&Stale> = stale.iter().filter(|s| s.proto == Proto::Udp).collect();
        let mut old = Vec::new();
        if self.retiring.tx.is_some() && !udp.is_empty() {
            for p in &self.plan.forwards {
                let uid = self.users.get(p.owner.as_str()).and_then(|s| s.uid);
                let Some(uid) = uid.or_else(|| known.filter(|(o, _)| *o == p.owner).map(|(_, u)| u)) else {
                    continue;
                };
                let f = &p.forward;
                let hit = f.proto.protos().contains(&Proto::Udp)
                    && udp
                        .iter()
                        .any(|s| f.port.start <= s.port && s.port <= f.port.end && f.target_of(s.port) == s.old_to);
                if hit {
                    old.push((p.owner.clone(), uid, f.clone()));
                }
            }
        }
        let mut job = None;
        let done: Option<portd_kernel::conntrack::Done> = match (&self.retiring.tx, old.is_empty()) {
            (Some(tx), false) => {
                let (tx, id) = (tx.clone(), self.retiring.next);
                self.retiring.next += 1;
                self.retiring.jobs.push((id, old));
                job = Some(id);
                Some(Box::new(move || {
                    let _ = tx.send(Msg::FlowsForgotten { job: id });
                }))
            }
            _ => None,
        };
        if !self.conntrack.forget(stale, done) {
            // not queued: nothing will say it is done
            self.retiring.jobs.retain(|(j, _)| Some(*j) != job);
        }
    }

    /// Claims, in the data plane, the ports of the user forwards `new` brings that the
    /// current plan does not have (forwards a reload or a listener check resumes), before
    /// `new` goes into the kernel: their NAT never goes live before their public port
    /// refuses other accounts' binds. [`Daemon::sync_dataplane`] gives back what the
    /// kernel ends up without.
    pub(super) fn claim_resumed(&mut self, new: &Plan) {
        if !self.steering.kernel_ownership() {
            return;
        }
        let old: std::collections::HashSet<String> = self.plan.forwards.iter().map(|p| p.comment()).collect();
        let extra: Vec<(&str, &Forward)> = new
            .forwards
            .iter()
            .filter(|p| p.owner != portd_rules::plan::SYSTEM_OWNER && !old.contains(&p.comment()))
            .map(|p| (p.owner.as_str(), &p.forward))
            .collect();
        if !extra.is_empty() {
            self.sync_dataplane_with(&extra, None);
        }
    }

    /// The conntrack thread is done with `job`: its old targets' reservations may go.
    pub(super) fn flows_forgotten(&mut self, job: u64) {
        let before = self.retiring.jobs.len();
        self.retiring.jobs.retain(|(j, _)| *j != job);
        if self.retiring.jobs.len() != before {
            self.sync_dataplane();
        }
    }
}

/// The forwards that hold claims (target reserved, public port watched) without being in
/// the plan: suspended ones that keep theirs, and retiring ones (see [`Retiring`]).
pub(super) fn claims_beside_the_plan<'a>(
    eval: &'a Evaluation,
    users: &'a BTreeMap<SetKey, UserSet>,
    retiring: &'a Retiring,
) -> Vec<(&'a str, &'a portd_rules::model::Forward)> {
    let mut kept: Vec<_> = eval.kept_forwards(users).map(|(o, f)| (o.as_str(), f)).collect();
    kept.extend(retiring.forwards().map(|(o, _, f)| (o, f)));
    kept
}
