//! Capabilities: the only module that uses `caps`. After start the process keeps only
//! CAP_NET_ADMIN (effective and permitted), and CAP_BPF with CAP_PERFMON while it runs
//! the BPF data plane, with empty inheritable, ambient and bounding sets and
//! no_new_privs set.
#![forbid(unsafe_code)]

use caps::{CapSet, Capability, CapsHashSet};

/// Drops every capability but CAP_NET_ADMIN, and CAP_BPF and CAP_PERFMON when `bpf`
/// (the data plane's updates and repairs need them). Fails if CAP_NET_ADMIN is not
/// permitted.
pub fn drop_to_net_admin(bpf: bool) -> anyhow::Result<()> {
    let permitted = caps::read(None, CapSet::Permitted)?;
    if !permitted.contains(&Capability::CAP_NET_ADMIN) {
        anyhow::bail!(
            "CAP_NET_ADMIN is not permitted: run portd as root, or give it the capability \
             (systemd: AmbientCapabilities=CAP_NET_ADMIN)"
        );
    }
    // SAFETY-free: prctl through nix. no_new_privs first, so nothing we exec regains privileges.
    nix::sys::prctl::set_no_new_privs()?;
    // The bounding set can only shrink while CAP_SETPCAP is effective.
    if permitted.contains(&Capability::CAP_SETPCAP) {
        caps::raise(None, CapSet::Effective, Capability::CAP_SETPCAP)?;
        caps::clear(None, CapSet::Bounding)?;
    } else {
        let bounding = caps::read(None, CapSet::Bounding)?;
        if bounding.len() > 1 {
            tracing::warn!(
                "bounding set not reduced: CAP_SETPCAP is not available (systemd's CapabilityBoundingSet= does this instead)"
            );
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    let mut only: CapsHashSet = [Capability::CAP_NET_ADMIN].into_iter().collect();
    if bpf {
        only.extend([Capability::CAP_BPF, Capability::CAP_PERFMON].into_iter().filter(|c| permitted.contains(c)));
    }
    caps::set(None, CapSet::Effective, &only)?;
    caps::set(None, CapSet::Permitted, &only)?;
    Ok(())
}
