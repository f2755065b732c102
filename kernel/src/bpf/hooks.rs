//! The attached programs: where each goes and how it is attached.

#![forbid(unsafe_code)]

use std::{
    fs::File,
    os::fd::{AsFd, BorrowedFd},
    path::Path,
};

use aya::{
    programs::{
        links::{CgroupAttachMode, FdLink},
        CgroupSock, CgroupSockAddr, SkLookup, SockOps,
    },
    Ebpf,
};

use super::{error::BpfError, link_update};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hook {
    Steer,
    Register,
    Bind4,
    Bind6,
    PostBind4,
    PostBind6,
}

impl Hook {
    pub(crate) const ALL: [Hook; 6] =
        [Hook::Register, Hook::Bind4, Hook::Bind6, Hook::PostBind4, Hook::PostBind6, Hook::Steer];

    /// The program's function name in portd.bpf.c.
    pub(crate) fn program(self) -> &'static str {
        match self {
            Hook::Steer => "steer_lookup",
            Hook::Register => "register_listener",
            Hook::Bind4 => "bind4",
            Hook::Bind6 => "bind6",
            Hook::PostBind4 => "post_bind4",
            Hook::PostBind6 => "post_bind6",
        }
    }

    /// The link's file name under `<pin dir>/links`.
    pub(crate) fn pin_name(self) -> &'static str {
        match self {
            Hook::Steer => "steer",
            Hook::Register => "register",
            Hook::Bind4 => "bind4",
            Hook::Bind6 => "bind6",
            Hook::PostBind4 => "post_bind4",
            Hook::PostBind6 => "post_bind6",
        }
    }
}

/// Where programs attach: this thread's network namespace (sk_lookup) and
/// the cgroup v2 root (the others: only there do they see every process).
pub(crate) struct Targets {
    pub netns: File,
    pub cgroup_root: File,
}

/// Loads `hook`'s program if needed and puts it into the link pinned at
/// `path` in place of the program there (a restart or upgrade: the link stays
/// attached throughout).
pub(crate) fn replace(ebpf: &mut Ebpf, hook: Hook, path: &Path) -> Result<(), BpfError> {
    let name = hook.program();
    let program =
        ebpf.program_mut(name).ok_or_else(|| BpfError::Invalid(format!("the BPF object has no program {name}")))?;
    let err = |action| BpfError::program(name, action);
    // Each program type has its own load() and fd(): one arm per type.
    macro_rules! loaded_fd {
        ($ty:ty) => {{
            let p: &mut $ty = program.try_into().map_err(err("type"))?;
            if p.fd().is_err() {
                p.load().map_err(err("load (verifier)"))?;
            }
            p.fd().map_err(err("descriptor"))?.as_fd()
        }};
    }
    let fd: BorrowedFd<'_> = match hook {
        Hook::Steer => loaded_fd!(SkLookup),
        Hook::Register => loaded_fd!(SockOps),
        Hook::Bind4 | Hook::Bind6 => loaded_fd!(CgroupSockAddr),
        Hook::PostBind4 | Hook::PostBind6 => loaded_fd!(CgroupSock),
    };
    link_update::replace_program(path, fd).map_err(|e| BpfError::Pin {
        what: hook.pin_name(),
        path: path.to_owned(),
        source: Box::new(e),
    })
}

/// Loads `hook`'s program if needed and attaches it; the link is returned
/// unpinned (dropping it detaches).
pub(crate) fn attach(ebpf: &mut Ebpf, hook: Hook, at: &Targets) -> Result<FdLink, BpfError> {
    let name = hook.program();
    let program =
        ebpf.program_mut(name).ok_or_else(|| BpfError::Invalid(format!("the BPF object has no program {name}")))?;
    let err = |action| BpfError::program(name, action);
    // The programs on the cgroup root: one arm per program type.
    macro_rules! cgroup_link {
        ($ty:ty) => {{
            let p: &mut $ty = program.try_into().map_err(err("type"))?;
            if p.fd().is_err() {
                p.load().map_err(err("load (verifier)"))?;
            }
            let id =
                p.attach(&at.cgroup_root, CgroupAttachMode::Single).map_err(err("attach to the cgroup v2 root"))?;
            let link = p.take_link(id).map_err(err("take link"))?;
            FdLink::try_from(link).map_err(|e| BpfError::Link { program: name, source: Box::new(e) })?
        }};
    }
    Ok(match hook {
        Hook::Steer => {
            let p: &mut SkLookup = program.try_into().map_err(err("type"))?;
            if p.fd().is_err() {
                p.load().map_err(err("load (verifier)"))?;
            }
            let id = p.attach(&at.netns).map_err(err("attach to the network namespace"))?;
            p.take_link(id).map_err(err("take link"))?.into()
        }
        Hook::Register => cgroup_link!(SockOps),
        Hook::Bind4 | Hook::Bind6 => cgroup_link!(CgroupSockAddr),
        Hook::PostBind4 | Hook::PostBind6 => cgroup_link!(CgroupSock),
    })
}
