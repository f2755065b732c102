//! The account database as portctl needs it: does a user exist, what is a group called,
//! is the caller in a group (in the database, and in this login's credentials).
//!
//! Thin wrappers over the reentrant libc lookups (`getpwnam_r`, `getgrgid_r`), so NSS
//! sources other than /etc/passwd (LDAP, systemd-userdb) are honoured.

use std::ffi::{CStr, CString};

/// Runs a reentrant lookup with a growing buffer; `None` when there is no entry.
fn lookup<T: Copy>(mut call: impl FnMut(&mut Vec<libc::c_char>) -> (libc::c_int, bool, T)) -> Option<T> {
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        let (rc, found, value) = call(&mut buf);
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        return (rc == 0 && found).then_some(value);
    }
}

/// True when the account database knows user `name`.
pub fn user_exists(name: &str) -> bool {
    let Ok(c) = CString::new(name) else { return false };
    lookup(|buf| {
        // SAFETY: all pointers are valid for the call; `buf` outlives it.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut res: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut res) };
        (rc, !res.is_null(), ())
    })
    .is_some()
}

/// Name of user `uid`, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    let mut name = None;
    lookup(|buf| {
        // SAFETY: as above; the name is copied out before `buf` is reused.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut res: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut res) };
        if rc == 0 && !res.is_null() {
            name = Some(unsafe { CStr::from_ptr(pw.pw_name) }.to_string_lossy().into_owned());
        }
        (rc, !res.is_null(), ())
    })?;
    name
}

/// A group: its name and member names (supplementary members only).
pub struct Group {
    /// Group name.
    pub name: String,
    /// Users listed as members.
    pub members: Vec<String>,
}

/// The group with id `gid`, if the database has it.
pub fn group(gid: u32) -> Option<Group> {
    let mut out = None;
    lookup(|buf| {
        // SAFETY: as above; names are copied out before `buf` is reused.
        let mut gr: libc::group = unsafe { std::mem::zeroed() };
        let mut res: *mut libc::group = std::ptr::null_mut();
        let rc = unsafe { libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr(), buf.len(), &mut res) };
        if rc == 0 && !res.is_null() {
            let name = unsafe { CStr::from_ptr(gr.gr_name) }.to_string_lossy().into_owned();
            let mut members = Vec::new();
            let mut p = gr.gr_mem;
            while !p.is_null() && !unsafe { *p }.is_null() {
                members.push(unsafe { CStr::from_ptr(*p) }.to_string_lossy().into_owned());
                p = unsafe { p.add(1) };
            }
            out = Some(Group { name, members });
        }
        (rc, !res.is_null(), ())
    })?;
    out
}

/// Primary group id of user `uid`, if it exists.
pub fn primary_gid(uid: u32) -> Option<u32> {
    lookup(|buf| {
        // SAFETY: as above.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut res: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut res) };
        (rc, !res.is_null(), pw.pw_gid)
    })
}

/// The caller's real uid.
pub fn uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// True when this process carries group `gid` (effective or supplementary).
pub fn process_has_group(gid: u32) -> bool {
    // SAFETY: getegid cannot fail; getgroups writes at most `n` entries.
    if unsafe { libc::getegid() } == gid {
        return true;
    }
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n <= 0 {
        return false;
    }
    let mut v: Vec<libc::gid_t> = vec![0; n as usize];
    let n = unsafe { libc::getgroups(n, v.as_mut_ptr()) };
    n > 0 && v[..n as usize].contains(&gid)
}
