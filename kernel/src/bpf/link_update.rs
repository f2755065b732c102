//! Replacing the program behind a pinned link, atomically (BPF_LINK_UPDATE):
//! how a restarted or upgraded daemon puts its own programs in place without
//! a moment unattached. aya 0.14 exposes neither a pinned link's descriptor
//! nor a link update for sk_lookup and sock_ops links, hence these two raw
//! bpf(2) calls.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// A zeroed `union bpf_attr`; the kernel requires unused bytes to be zero.
type Attr = [u32; 32];

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: attr is a live, writable buffer of the size passed, laid out as
    // the union bpf_attr member that `cmd` reads; any pointer inside it is set
    // by the caller to memory that outlives this call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), size_of::<Attr>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens the BPF object pinned at `path`.
fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr: Attr = [0; 32];
    let ptr = c.as_ptr() as u64;
    // `pathname` is the first, 64-bit field.
    attr[0] = ptr as u32;
    attr[1] = (ptr >> 32) as u32;
    if cfg!(target_endian = "big") {
        attr.swap(0, 1);
    }
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: BPF_OBJ_GET returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Makes the link pinned at `path` run `program` from now on.
pub(crate) fn replace_program(path: &Path, program: BorrowedFd<'_>) -> io::Result<()> {
    let link = obj_get(path)?;
    let mut attr: Attr = [0; 32];
    attr[0] = link.as_raw_fd() as u32; // link_fd
    attr[1] = program.as_raw_fd() as u32; // new_prog_fd; flags and old_prog_fd stay 0
    bpf(BPF_LINK_UPDATE, &mut attr).map(drop)
}
