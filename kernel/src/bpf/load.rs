//! Opening (load, attach, pin, or re-open what is pinned), drift repair and
//! removal of one instance's pin directory.

#![forbid(unsafe_code)]

use std::{
    fs::{self, File},
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, MapData, RingBuf},
    programs::{links::PinnedLink, Iter},
    Btf, Ebpf, EbpfLoader,
};

use super::{
    error::BpfError,
    hooks::{self, Hook, Targets},
    sys, Dataplane, Repaired,
};

/// The compiled programs (kernel/bpf, built by build.rs).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portd.bpf.o"));

/// Every map, pinned by name under `<pin dir>/maps`.
pub(crate) const MAPS: [&str; 9] =
    ["steer", "targets", "listeners", "reserved", "watched", "counts", "events", "meta", "local_ports"];

const ITERATOR: &str = "scan_listeners";

fn maps_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join("maps")
}

fn links_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join("links")
}

impl Dataplane {
    /// Loads, attaches and pins everything under `pin_dir` (on bpffs; the
    /// daemon passes `<bpffs>/portd/<table>`), or re-opens what is pinned
    /// there already: maps keep their content and pinned links stay attached,
    /// so a restart refuses no connection; each pinned link is switched to
    /// this binary's program atomically (an upgrade takes effect without a
    /// gap). A missing link is attached anew.
    ///
    /// The calling thread's network namespace is the one served; a pin
    /// directory made for another namespace is refused.
    pub fn open(pin_dir: &Path) -> Result<Dataplane, BpfError> {
        if !sys::on_bpffs(pin_dir) {
            return Err(BpfError::NotBpffs { path: pin_dir.to_owned() });
        }
        let (maps, links) = (maps_dir(pin_dir), links_dir(pin_dir));
        for dir in [&maps, &links] {
            fs::create_dir_all(dir).map_err(BpfError::pin_dir(dir))?;
        }
        let cookie = sys::netns_cookie().map_err(BpfError::Netns)?;
        check_owner(pin_dir, cookie)?;

        let btf = Btf::from_sys_fs().map_err(BpfError::Btf)?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .default_map_pin_directory(&maps)
            .override_global("netns_cookie", &cookie, true)
            .load(OBJECT)
            .map_err(|e| BpfError::Object { dir: maps.clone(), source: Box::new(e) })?;
        let meta = ebpf.map_mut("meta").ok_or_else(|| missing("meta"))?;
        Array::<_, u64>::try_from(meta).and_then(|mut a| a.set(0, cookie, 0)).map_err(BpfError::map("meta"))?;

        let at = targets()?;
        let mut pinned = Vec::with_capacity(Hook::ALL.len());
        for hook in Hook::ALL {
            let path = links.join(hook.pin_name());
            pinned.push(if path.exists() {
                // Attached by an earlier run: keep the link, run our program.
                hooks::replace(&mut ebpf, hook, &path)?;
                PinnedLink::from_pin(&path).map_err(|e| BpfError::Pin {
                    what: hook.pin_name(),
                    path: path.clone(),
                    source: Box::new(e),
                })?
            } else {
                attach_pinned(&mut ebpf, hook, &at, &path)?
            });
        }
        let iter: &mut Iter = ebpf
            .program_mut(ITERATOR)
            .ok_or_else(|| missing(ITERATOR))?
            .try_into()
            .map_err(BpfError::program(ITERATOR, "type"))?;
        iter.load("tcp", &btf).map_err(BpfError::program(ITERATOR, "load (verifier)"))?;

        let events = ebpf.take_map("events").ok_or_else(|| missing("events"))?;
        let events_map = match &events {
            aya::maps::Map::RingBuf(data) => {
                let fd = data.fd().as_fd().try_clone_to_owned().map_err(|e| BpfError::Pin {
                    what: "events",
                    path: maps.join("events"),
                    source: Box::new(e),
                })?;
                MapData::from_fd(fd).map_err(BpfError::map("events"))?
            }
            _ => return Err(BpfError::Invalid("map events is not a ring buffer".into())),
        };
        let events = RingBuf::try_from(events).map_err(BpfError::map("events"))?;
        Ok(Dataplane {
            pin_dir: pin_dir.to_owned(),
            netns_cookie: cookie,
            ebpf,
            links: pinned,
            events,
            events_map,
            written: None,
        })
    }

    /// The pin directory this instance uses.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Puts back what was unpinned behind our back: a link whose pin is gone
    /// is attached anew (then the old one, which this process still held, is
    /// dropped); a map whose pin is gone is pinned again from our handle.
    ///
    /// When it put anything back, the next [`Dataplane::sync`] reads the maps
    /// back (a drift that unpinned things may have changed their content too);
    /// when nothing was missing, sync goes on trusting what it wrote (the
    /// daemon checks twice a second: reading back 10,000 forwards' entries at
    /// every change after a check would cost each change the whole table).
    pub fn repair(&mut self) -> Result<Repaired, BpfError> {
        let (maps, links) = (maps_dir(&self.pin_dir), links_dir(&self.pin_dir));
        for dir in [&maps, &links] {
            fs::create_dir_all(dir).map_err(BpfError::pin_dir(dir))?;
        }
        let mut repaired = Repaired::default();
        for name in MAPS {
            let path = maps.join(name);
            if path.exists() {
                continue;
            }
            let result = match self.ebpf.map(name) {
                Some(map) => map.pin(&path),
                None => self.events_map.pin(&path),
            };
            result.map_err(|e| BpfError::Pin { what: name, path, source: Box::new(e) })?;
            repaired.repinned.push(name);
        }
        let mut at = None;
        for (i, hook) in Hook::ALL.into_iter().enumerate() {
            let path = links.join(hook.pin_name());
            if path.exists() {
                continue;
            }
            let at = match &mut at {
                Some(at) => at,
                None => at.insert(targets()?),
            };
            self.links[i] = attach_pinned(&mut self.ebpf, hook, at, &path)?;
            repaired.reattached.push(hook.program());
        }
        if !repaired.is_empty() {
            self.written = None;
        }
        Ok(repaired)
    }

    /// Unpins and so detaches everything under `pin_dir` (the links of a
    /// [`Dataplane`] still open in this process stay until it is dropped).
    /// Returns whether there was anything.
    pub fn remove(pin_dir: &Path) -> Result<bool, BpfError> {
        if !pin_dir.exists() {
            return Ok(false);
        }
        if sys::fs_type(pin_dir).map_err(BpfError::pin_dir(pin_dir))? != sys::BPF_FS_MAGIC {
            return Err(BpfError::NotBpffs { path: pin_dir.to_owned() });
        }
        for dir in [links_dir(pin_dir), maps_dir(pin_dir)] {
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for entry in entries {
                let path = entry.map_err(BpfError::pin_dir(&dir))?.path();
                fs::remove_file(&path).map_err(BpfError::pin_dir(&path))?;
            }
            fs::remove_dir(&dir).map_err(BpfError::pin_dir(&dir))?;
        }
        fs::remove_dir(pin_dir).map_err(BpfError::pin_dir(pin_dir))?;
        Ok(true)
    }
}

fn missing(name: &str) -> BpfError {
    BpfError::Invalid(format!("the BPF object has no {name}"))
}

/// Refuses a pin directory whose `meta` map records another namespace.
fn check_owner(pin_dir: &Path, cookie: u64) -> Result<(), BpfError> {
    let path = maps_dir(pin_dir).join("meta");
    if !path.exists() {
        return Ok(());
    }
    let data = MapData::from_pin(&path).map_err(BpfError::map("meta"))?;
    let pinned = Array::<_, u64>::try_from(aya::maps::Map::Array(data))
        .and_then(|a| a.get(&0, 0))
        .map_err(BpfError::map("meta"))?;
    if pinned != 0 && pinned != cookie {
        return Err(BpfError::WrongNetns { path: pin_dir.to_owned(), pinned, ours: cookie });
    }
    Ok(())
}

fn targets() -> Result<Targets, BpfError> {
    let netns = sys::netns_file().map_err(BpfError::Netns)?;
    let root = sys::cgroup2_root().map_err(BpfError::Cgroup)?;
    let cgroup_root = File::open(&root).map_err(|e| BpfError::Cgroup(format!("{}: {e}", root.display())))?;
    Ok(Targets { netns, cgroup_root })
}

fn attach_pinned(ebpf: &mut Ebpf, hook: Hook, at: &Targets, path: &Path) -> Result<PinnedLink, BpfError> {
    let link = hooks::attach(ebpf, hook, at)?;
    link.pin(path).map_err(|e| BpfError::Pin { what: hook.pin_name(), path: path.to_owned(), source: Box::new(e) })
}
