//! Making the maps equal to the daemon's rule sets.

#![forbid(unsafe_code)]

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
};

use aya::{
    maps::{Array, HashMap, MapData, SockHash},
    programs::Iter,
    Pod,
};

use super::{
    abi::{CountKey, CountVal, ListenerKey, PortKey, SteerVal, TargetVal, ANY_UID, FAMILY_V4, FAMILY_V6, SLOTS},
    error::BpfError,
    sys,
    types::port_key,
    Dataplane, Reservation, SteerEntry, Watched, MAX_PORTS,
};

/// Words of the `local_ports` bitmap.
const LOCAL_PORT_WORDS: u32 = 65536 / 32;

impl Dataplane {
    /// Makes the maps equal to these sets: adds what is missing, deletes what
    /// is extra, updates what changed, leaves the rest alone (an unchanged
    /// forward is never interrupted). Then registers the sockets already
    /// listening on newly targeted ports (the iterator walks this thread's
    /// namespace, which must be the one the data plane serves).
    ///
    /// The maps are read back only on the first call, after a
    /// [`Dataplane::repair`] that put something back, after
    /// [`Dataplane::forget_written`], and after a failed call; otherwise the sets are compared with what the last call
    /// wrote, so a one-forward change costs a few bpf(2) calls whatever the
    /// number of forwards. A [`SteerEntry`] may be owned by
    /// [`super::ANY_UID`]; a reservation or watched port may not.
    pub fn sync(
        &mut self,
        steer: &[SteerEntry],
        reserved: &[Reservation],
        watched: &[Watched],
    ) -> Result<(), BpfError> {
        let want = Wanted::new(steer, reserved, watched)?;
        let ours = sys::netns_cookie().map_err(BpfError::Netns)?;
        if ours != self.netns_cookie {
            return Err(BpfError::WrongNetns { path: self.pin_dir.clone(), pinned: self.netns_cookie, ours });
        }
        // Until this call succeeds the mirror is unknown: a failure half way
        // leaves `written` at None, and the next call reads the maps.
        let (current, read_back) = match self.written.take() {
            Some(w) => (w, false),
            None => (self.read_maps()?, true),
        };

        // Targets first, so listeners register before steering starts; the
        // sockets of a port that stops being a target, or changes owner, go.
        let mut targets = self.hash::<u32, TargetVal>("targets")?;
        let mut purge = BTreeSet::new();
        let mut scan = Vec::new();
        for (&port, &owner_uid) in &want.targets {
            match current.targets.get(&port) {
                Some(&uid) if uid == owner_uid => continue,
                Some(_) => {
                    purge.insert(port as u16);
                }
                None => {}
            }
            scan.push(port);
            targets.insert(port, TargetVal { owner_uid, scan: 1 }, 0).map_err(BpfError::map("targets"))?;
        }
        let gone: Vec<u32> = current.targets.keys().filter(|p| !want.targets.contains_key(p)).copied().collect();

        // A port that starts being steered, or is steered anew (another target,
        // another owner), starts counting from zero (its entry exists before
        // connections are steered there); one that stops loses its entry. After
        // a read-back every steered port gets an entry it lacks (a pin directory
        // of a version without `counts`).
        let same = |port: &u32, v: &SteerVal| {
            let t = u32::from(v.target_port);
            current.steer.get(port) == Some(v) && current.targets.get(&t) == want.targets.get(&t)
        };
        let mut counts = self.hash::<CountKey, CountVal>("counts")?;
        for (port, v) in want.steer.iter().filter(|(p, v)| read_back || !same(p, v)) {
            let flags = if same(port, v) { BPF_NOEXIST } else { 0 };
            for key in count_keys(*port) {
                match counts.insert(key, CountVal::default(), flags) {
                    Err(e) if is_eexist(&e) => {}
                    other => other.map_err(BpfError::map("counts"))?,
                }
            }
        }
        reconcile(&mut self.hash::<u32, SteerVal>("steer")?, &current.steer, &want.steer, "steer")?;
        let mut counts = self.hash::<CountKey, CountVal>("counts")?;
        for port in current.steer.keys().filter(|p| !want.steer.contains_key(p)) {
            for key in count_keys(*port) {
                remove(&mut counts, &key, "counts")?;
            }
        }
        let mut targets = self.hash::<u32, TargetVal>("targets")?;
        for port in gone {
            remove(&mut targets, &port, "targets")?;
            purge.insert(port as u16);
        }
        self.purge_listeners(&purge)?;
        reconcile(&mut self.hash::<PortKey, u32>("reserved")?, &current.reserved, &want.reserved, "reserved")?;
        reconcile(&mut self.hash::<PortKey, u32>("watched")?, &current.watched, &want.watched, "watched")?;

        if !scan.is_empty() {
            self.run_iterator()?;
            let mut targets = self.hash::<u32, TargetVal>("targets")?;
            for port in scan {
                let owner_uid = want.targets[&port];
                targets.insert(port, TargetVal { owner_uid, scan: 0 }, 0).map_err(BpfError::map("targets"))?;
            }
        }
        self.written = Some(want);
        Ok(())
    }

    /// Makes the next [`Dataplane::sync`] read the maps back instead of
    /// trusting what this process wrote last (call it when something else may
    /// have written them: a second daemon, an operator with bpftool).
    pub fn forget_written(&mut self) {
        self.written = None;
    }

    /// How many sockets are registered for `target_port` (0: the owner's app
    /// is not listening, a steered connection would be refused).
    pub fn listening(&self, target_port: u16) -> Result<usize, BpfError> {
        Ok(self.registered()?.get(&target_port).copied().unwrap_or(0))
    }

    /// How many sockets are registered for each target port, in one pass over the
    /// listener map (a status asks for every steered target at once).
    pub fn registered(&self) -> Result<BTreeMap<u16, usize>, BpfError> {
        let map = self.ebpf.map("listeners").ok_or_else(|| BpfError::Invalid("no map listeners".into()))?;
        let hash = SockHash::<_, ListenerKey>::try_from(map).map_err(BpfError::map("listeners"))?;
        let mut counts = BTreeMap::new();
        for key in hash.keys() {
            *counts.entry(key.map_err(BpfError::map("listeners"))?.port).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// What the closed connections of each steered public port received, per
    /// family (`(port, v6)` → (segments, payload bytes)), from the sockets'
    /// own counters as they closed; connections still open are not in it
    /// (`sockdiag::connections` reads those).
    pub fn closed_counts(&self) -> Result<crate::sockdiag::ConnCounts, BpfError> {
        let map = self.ebpf.map("counts").ok_or_else(|| BpfError::Invalid("no map counts".into()))?;
        let hash = HashMap::<_, CountKey, CountVal>::try_from(map).map_err(BpfError::map("counts"))?;
        let mut out = BTreeMap::new();
        for kv in hash.iter() {
            let (k, v) = kv.map_err(BpfError::map("counts"))?;
            out.insert((k.port, k.family == FAMILY_V6), (v.packets, v.bytes));
        }
        Ok(out)
    }

    fn hash<K: Pod, V: Pod>(&mut self, name: &'static str) -> Result<HashMap<&mut MapData, K, V>, BpfError> {
        let map = self.ebpf.map_mut(name).ok_or_else(|| BpfError::Invalid(format!("no map {name}")))?;
        HashMap::try_from(map).map_err(BpfError::map(name))
    }

    /// The ports recorded by [`Dataplane::record_local_ports`] (by an earlier run too).
    pub fn local_ports(&self) -> Result<BTreeSet<u16>, BpfError> {
        let map = self.ebpf.map("local_ports").ok_or_else(|| BpfError::Invalid("no map local_ports".into()))?;
        let words = Array::<_, u32>::try_from(map).map_err(BpfError::map("local_ports"))?;
        let mut out = BTreeSet::new();
        for i in 0..LOCAL_PORT_WORDS {
            let w = words.get(&i, 0).map_err(BpfError::map("local_ports"))?;
            out.extend((0..32).filter(|b| w & (1 << b) != 0).map(|b| (i * 32 + b) as u16));
        }
        Ok(out)
    }

    /// Records `now` as the ports portd added to `ip_local_reserved_ports`, where
    /// `before` was recorded: writes only the words that change.
    pub fn record_local_ports(&mut self, before: &BTreeSet<u16>, now: &BTreeSet<u16>) -> Result<(), BpfError> {
        let map = self.ebpf.map_mut("local_ports").ok_or_else(|| BpfError::Invalid("no map local_ports".into()))?;
        let mut words = Array::<_, u32>::try_from(map).map_err(BpfError::map("local_ports"))?;
        let bits = |set: &BTreeSet<u16>| {
            let mut w = vec![0u32; LOCAL_PORT_WORDS as usize];
            for &p in set {
                w[usize::from(p) / 32] |= 1 << (p % 32);
            }
            w
        };
        let (old, new) = (bits(before), bits(now));
        for (i, (a, b)) in old.iter().zip(&new).enumerate() {
            if a != b {
                words.set(i as u32, *b, 0).map_err(BpfError::map("local_ports"))?;
            }
        }
        Ok(())
    }

    /// The maps' content, read back (two bpf(2) calls per entry).
    fn read_maps(&mut self) -> Result<Written, BpfError> {
        let targets = collect(&self.hash::<u32, TargetVal>("targets")?, "targets")?;
        Ok(Written {
            steer: collect(&self.hash("steer")?, "steer")?,
            // A scan flag left by an interrupted sync changes nothing: the
            // port is a target of that owner, its sockets are registered by
            // listen() from now on.
            targets: targets.into_iter().map(|(port, t)| (port, t.owner_uid)).collect(),
            reserved: collect(&self.hash("reserved")?, "reserved")?,
            watched: collect(&self.hash("watched")?, "watched")?,
        })
    }

    /// Unregisters every socket of these target ports: each slot's key is
    /// deleted directly (no walk of the whole sockhash).
    fn purge_listeners(&mut self, ports: &BTreeSet<u16>) -> Result<(), BpfError> {
        if ports.is_empty() {
            return Ok(());
        }
        let map = self.ebpf.map_mut("listeners").ok_or_else(|| BpfError::Invalid("no map listeners".into()))?;
        let mut hash = SockHash::<_, ListenerKey>::try_from(map).map_err(BpfError::map("listeners"))?;
        for &port in ports {
            for slot in 0..SLOTS {
                match hash.remove(&ListenerKey { port, slot }) {
                    Err(e) if is_enoent(&e) => {}
                    other => other.map_err(BpfError::map("listeners"))?,
                }
            }
        }
        Ok(())
    }

    /// Runs the iter/tcp program once over this thread's namespace.
    fn run_iterator(&mut self) -> Result<(), BpfError> {
        const NAME: &str = "scan_listeners";
        let iter: &mut Iter = self
            .ebpf
            .program_mut(NAME)
            .ok_or_else(|| BpfError::Invalid(format!("no program {NAME}")))?
            .try_into()
            .map_err(BpfError::program(NAME, "type"))?;
        let id = iter.attach().map_err(BpfError::program(NAME, "attach"))?;
        let link = iter.take_link(id).map_err(BpfError::program(NAME, "take link"))?;
        let mut file = link.into_file().map_err(|e| BpfError::Iterator(io::Error::other(e)))?;
        io::copy(&mut file, &mut io::sink()).map_err(BpfError::Iterator)?;
        Ok(())
    }
}

/// `BPF_NOEXIST`: insert only a key that is not there.
const BPF_NOEXIST: u64 = 1;

/// The `counts` keys of one public port: IPv4 and IPv6.
fn count_keys(port: u32) -> [CountKey; 2] {
    [FAMILY_V4, FAMILY_V6].map(|family| CountKey { port: port as u16, family, pad: 0 })
}

fn is_eexist(e: &aya::maps::MapError) -> bool {
    matches!(e, aya::maps::MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::EEXIST))
}

fn is_enoent(e: &aya::maps::MapError) -> bool {
    matches!(e, aya::maps::MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::ENOENT))
        || matches!(e, aya::maps::MapError::KeyNotFound)
}

/// The maps' content as the last successful sync left it (targets: port ->
/// owner; the scan flag is always clear then).
pub(crate) type Written = Wanted;

/// The maps' wanted content, checked for conflicts.
pub(crate) struct Wanted {
    steer: BTreeMap<u32, SteerVal>,
    targets: BTreeMap<u32, u32>,
    reserved: BTreeMap<PortKey, u32>,
    watched: BTreeMap<PortKey, u32>,
}

impl Wanted {
    fn new(steer: &[SteerEntry], reserved: &[Reservation], watched: &[Watched]) -> Result<Self, BpfError> {
        let mut w = Wanted {
            steer: BTreeMap::new(),
            targets: BTreeMap::new(),
            reserved: BTreeMap::new(),
            watched: BTreeMap::new(),
        };
        for e in steer {
            if e.public_port == 0 || e.target_port == 0 {
                return Err(BpfError::Invalid(format!("steer {} -> {}: port 0", e.public_port, e.target_port)));
            }
            if w.steer.insert(e.public_port.into(), e.value()).is_some_and(|v| v != e.value()) {
                return Err(BpfError::Invalid(format!("public port {} steered twice, differently", e.public_port)));
            }
            if w.targets.insert(e.target_port.into(), e.owner_uid).is_some_and(|uid| uid != e.owner_uid) {
                return Err(BpfError::Invalid(format!("target port {} has two owners", e.target_port)));
            }
        }
        for (set, items, name) in [
            (&mut w.reserved, reserved.iter().map(|r| (r.proto, r.port, r.owner_uid)).collect::<Vec<_>>(), "reserved"),
            (&mut w.watched, watched.iter().map(|r| (r.proto, r.port, r.owner_uid)).collect(), "watched"),
        ] {
            for (proto, port, uid) in items {
                if uid == ANY_UID {
                    return Err(BpfError::Invalid(format!(
                        "{name} port {proto:?}/{port}: a reservation or watched port needs a real owner, not ANY_UID"
                    )));
                }
                if set.insert(port_key(proto, port), uid).is_some_and(|u| u != uid) {
                    return Err(BpfError::Invalid(format!("{name} port {proto:?}/{port} has two owners")));
                }
            }
        }
        for (name, len) in [("steer", w.steer.len()), ("reserved", w.reserved.len()), ("watched", w.watched.len())] {
            if len > MAX_PORTS {
                return Err(BpfError::Invalid(format!("{len} {name} entries, at most {MAX_PORTS}")));
            }
        }
        Ok(w)
    }
}

fn collect<K: Pod + Ord, V: Pod>(
    map: &HashMap<&mut MapData, K, V>,
    name: &'static str,
) -> Result<BTreeMap<K, V>, BpfError> {
    map.iter().map(|kv| kv.map_err(BpfError::map(name))).collect()
}

/// Deletes a key; one already gone is no error.
fn remove<K: Pod, V: Pod>(map: &mut HashMap<&mut MapData, K, V>, key: &K, name: &'static str) -> Result<(), BpfError> {
    match map.remove(key) {
        Err(e) if is_enoent(&e) => Ok(()),
        other => other.map_err(BpfError::map(name)),
    }
}

/// Deletes the keys of `current` not wanted, then inserts missing or changed
/// ones: bpf(2) calls only for the differences.
fn reconcile<K: Pod + Ord, V: Pod + PartialEq>(
    map: &mut HashMap<&mut MapData, K, V>,
    current: &BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
    name: &'static str,
) -> Result<(), BpfError> {
    for key in current.keys().filter(|k| !want.contains_key(k)) {
        remove(map, key, name)?;
    }
    for (key, value) in want {
        if current.get(key) != Some(value) {
            map.insert(key, value, 0).map_err(BpfError::map(name))?;
        }
    }
    Ok(())
}
