//! Can this kernel and process run the data plane? A cheap check with a human
//! reason, so the daemon can fall back to NAT and say why.

use std::path::Path;

use super::{error::Unsupported, sys};

/// The oldest kernel with everything the programs use: `bpf_set_retval` in
/// bind hooks (5.19); sk_lookup's `ingress_ifindex` (5.17); sock_ops
/// `bpf_get_netns_cookie` (5.15); sk_lookup, iter/tcp, ring buffers (5.9).
pub const KERNEL_FLOOR: (u32, u32) = (5, 19);

/// Checks kernel version, kernel BTF, capabilities, bpffs at `bpffs_dir` and a
/// cgroup v2 mount. A pass does not guarantee [`super::Dataplane::open`]
/// succeeds (a kernel built without sk_lookup, say); treat its error the same.
pub fn probe(bpffs_dir: &Path) -> Result<(), Unsupported> {
    let no = |s: String| Err(Unsupported(s));
    match sys::kernel_version() {
        Some(v) if v >= KERNEL_FLOOR => {}
        Some((a, b)) => {
            return no(format!(
                "kernel {a}.{b} is older than {}.{} (bind hooks need bpf_set_retval, sk_lookup needs ingress_ifindex)",
                KERNEL_FLOOR.0, KERNEL_FLOOR.1
            ))
        }
        None => return no("cannot read the kernel version (uname)".into()),
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return no("kernel has no BTF (/sys/kernel/btf/vmlinux; CONFIG_DEBUG_INFO_BTF)".into());
    }
    let caps = sys::effective_caps().map_err(|e| Unsupported(format!("cannot read capabilities: {e}")))?;
    let has = |cap: u32| caps & (1 << cap) != 0 || caps & (1 << sys::CAP_SYS_ADMIN) != 0;
    for (cap, name) in
        [(sys::CAP_BPF, "CAP_BPF"), (sys::CAP_NET_ADMIN, "CAP_NET_ADMIN"), (sys::CAP_PERFMON, "CAP_PERFMON")]
    {
        if !has(cap) {
            return no(format!("no {name} (needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"));
        }
    }
    // `<bpffs>/portd`, where the pins go: a bpffs mount, or the pins' own directory
    // bound from one (the unit binds /sys/fs/bpf/portd, as systemd mounts /sys/fs/bpf
    // with mode 0700, which portd's own account cannot enter).
    let ours = bpffs_dir.join("portd");
    if std::fs::symlink_metadata(&ours).is_ok_and(|m| m.file_type().is_symlink()) {
        return no(format!(
            "{} is a symbolic link (another account may have made it on a bpffs every account may write): \
             remove it as root and restart portd",
            ours.display()
        ));
    }
    if !sys::on_bpffs(&ours) {
        let d = bpffs_dir.display();
        let bound = if bpffs_dir != Path::new("/run/portd/bpffs") {
            String::new()
        } else {
            // the packaged unit's --bpffs
            " (the packaged unit binds /sys/fs/bpf/portd there: is bpffs mounted at /sys/fs/bpf, with \
             /sys/fs/bpf/portd made by systemd-tmpfiles before portd started?)"
                .to_string()
        };
        return no(format!("bpffs not mounted at {d}, nor bound at {d}/portd{bound}"));
    }
    sys::cgroup2_root().map_err(Unsupported)?;
    Ok(())
}

/// Whether the bpf system call works here: creates and closes a one-entry array map. A
/// seccomp filter (a container manager's, a unit's) or a missing capability fails it
/// where [`probe`] passes.
pub fn can_create_map() -> std::io::Result<()> {
    /// `union bpf_attr` for BPF_MAP_CREATE, the fields up to `map_flags`.
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let attr = MapCreate { map_type: BPF_MAP_TYPE_ARRAY, key_size: 4, value_size: 4, max_entries: 1, map_flags: 0 };
    // SAFETY: attr is a live, initialised local of the size passed.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, &raw const attr, size_of::<MapCreate>() as libc::c_long)
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns; dropping closes it.
    drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) });
    Ok(())
}
