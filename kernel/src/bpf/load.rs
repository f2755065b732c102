//! Opening (load, attach, pin, or re-open what is pinned), drift repair and
//! removal of one instance's pin directory.

#![forbid(unsafe_code)]

use std::{
    fs::{self, File},
    os::fd::AsFd,
    os::unix::fs::{DirBuilderExt, MetadataExt},
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
        Dataplane::open_for(pin_dir, DEFAULT_SYS_UID_MAX)
    }

    /// [`Dataplane::open`] for a system whose system accounts end at
    /// `sys_uid_max` (`SYS_UID_MAX` of /etc/login.defs): besides a user
    /// forward's owner, only root and those may bind its public port.
    pub fn open_for(pin_dir: &Path, sys_uid_max: u32) -> Result<Dataplane, BpfError> {
        let pin_dir = &absolute(pin_dir)?;
        if !sys::on_bpffs(pin_dir) {
            return Err(BpfError::NotBpffs { path: pin_dir.to_owned() });
        }
        let (maps, links) = (maps_dir(pin_dir), links_dir(pin_dir));
        make_private_dirs(pin_dir, sys_uid_max)?;
        let cookie = sys::netns_cookie().map_err(BpfError::Netns)?;
        check_owner(pin_dir, cookie)?;

        let btf = Btf::from_sys_fs().map_err(BpfError::Btf)?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .default_map_pin_directory(&maps)
            .override_global("netns_cookie", &cookie, true)
            .override_global("sys_uid_max", &sys_uid_max, true)
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
            sys_uid_max,
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
        make_private_dirs(&self.pin_dir, self.sys_uid_max)?;
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
        Dataplane::remove_for(pin_dir, DEFAULT_SYS_UID_MAX)
    }

    /// [`Dataplane::remove`] for a system whose system accounts end at
    /// `sys_uid_max`: root removes the pins of portd's own account.
    pub fn remove_for(pin_dir: &Path, sys_uid_max: u32) -> Result<bool, BpfError> {
        let pin_dir = &absolute(pin_dir)?;
        if fs::symlink_metadata(pin_dir).is_err() {
            return Ok(false);
        }
        if sys::fs_type(pin_dir).map_err(BpfError::pin_dir(pin_dir))? != sys::BPF_FS_MAGIC {
            return Err(BpfError::NotBpffs { path: pin_dir.to_owned() });
        }
        // Only a tree of ours: a symlink or another account's directory could aim the
        // removal at another instance's pins.
        for dir in pin_dirs(pin_dir) {
            if let Ok(m) = fs::symlink_metadata(&dir) {
                check_private(&dir, &m, sys_uid_max)?;
            }
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

/// `SYS_UID_MAX` where /etc/login.defs does not say (Debian's).
pub const DEFAULT_SYS_UID_MAX: u32 = 999;

/// `path` from the root: a relative one is taken from the working directory.
fn absolute(path: &Path) -> Result<PathBuf, BpfError> {
    std::path::absolute(path).map_err(BpfError::pin_dir(path))
}

/// Makes `<bpffs>/portd`, the pin directory and its `maps` and `links` (mode 0700),
/// or checks those that exist: each must be a directory, not a symlink, owned by
/// this process's user, root or a system account (uid up to `sys_uid_max`: the
/// packaged `portd`, whose pins root's `--remove-table` takes away), and writable by
/// no one else. On a bpffs that every account may write (`mount -t bpf` gives mode
/// 1777), an account that made them first could unpin what portd pins there, or
/// keep portd from pinning at all.
fn make_private_dirs(pin_dir: &Path, sys_uid_max: u32) -> Result<(), BpfError> {
    for dir in &pin_dirs(pin_dir) {
        let dir = dir.as_path();
        let meta = match fs::symlink_metadata(dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match fs::DirBuilder::new().mode(0o700).create(dir) {
                    Ok(()) => {}
                    // made meanwhile: judged below like any that was there
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(BpfError::PinDir { path: dir.to_owned(), source: e }),
                }
                fs::symlink_metadata(dir).map_err(BpfError::pin_dir(dir))?
            }
            Err(e) => return Err(BpfError::PinDir { path: dir.to_owned(), source: e }),
        };
        check_private(dir, &meta, sys_uid_max)?;
    }
    Ok(())
}

/// Every directory of the pins, outermost first: [`below_mount`], then `maps` and
/// `links`.
fn pin_dirs(pin_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = below_mount(pin_dir);
    dirs.extend([maps_dir(pin_dir), links_dir(pin_dir)]);
    dirs
}

/// `pin_dir` and its ancestors below the bpffs mount holding it, outermost first
/// (`<bpffs>/portd`, `<bpffs>/portd/<table>`): the mount's own directory is the
/// operator's (mode 1777 where it was mounted without a mode).
fn below_mount(pin_dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for dir in pin_dir.ancestors() {
        let Some(parent) = dir.parent() else { break };
        let exists = fs::symlink_metadata(dir).is_ok();
        if exists && sys::fs_type(parent).map_or(true, |t| t != sys::BPF_FS_MAGIC) {
            break; // `dir` is the mount
        }
        dirs.push(dir.to_owned());
    }
    dirs.reverse();
    dirs
}

/// Refuses a pin directory (from `lstat`) that is not a directory, not ours,
/// root's or a system account's, or writable by group or others.
fn check_private(dir: &Path, meta: &fs::Metadata, sys_uid_max: u32) -> Result<(), BpfError> {
    let unsafe_dir = |why: String| Err(BpfError::UnsafePinDir { path: dir.to_owned(), why });
    if meta.file_type().is_symlink() {
        return unsafe_dir("is a symbolic link".into());
    }
    if !meta.is_dir() {
        return unsafe_dir("is not a directory".into());
    }
    let me = sys::euid();
    if meta.uid() != me && meta.uid() > sys_uid_max {
        return unsafe_dir(format!(
            "belongs to uid {}, neither portd's (uid {me}) nor root's nor a system account's",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return unsafe_dir(format!("is writable by other accounts (mode {:o})", meta.mode() & 0o7777));
    }
    Ok(())
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
