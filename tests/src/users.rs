//! Real system accounts made for one test, and connecting to a socket as one of them.

use crate::{err, must, sh, NEXT};
use std::path::Path;
use std::sync::atomic::Ordering;

/// A real system account made for one test (`useradd`), deleted on drop.
pub struct TestUser {
    /// Its login name.
    pub name: String,
}

impl TestUser {
    /// Creates `<prefix><pid><n>` with no home and no login shell.
    pub fn new(prefix: &str) -> TestUser {
        let name = format!("{prefix}{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        Self::named(&name)
    }

    /// Like [`TestUser::new`], as an ordinary user (a free uid above the system accounts').
    pub fn regular(prefix: &str) -> TestUser {
        let name = format!("{prefix}{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        // (one free uid at a time: two tests of one binary run side by side)
        let _one = FREE_UID.lock().unwrap_or_else(|p| p.into_inner());
        Self::made(&name, &["-u", &free_uid(None).to_string()])
    }

    /// Creates the account `name` (which must not exist yet).
    pub fn named(name: &str) -> TestUser {
        Self::made(name, &[])
    }

    /// Creates the account `name` with `useradd` options of its own (`-u UID`,
    /// `--badname`).
    pub fn made(name: &str, extra: &[&str]) -> TestUser {
        useradd(name, extra);
        TestUser { name: name.to_string() }
    }

    /// Its uid.
    pub fn uid(&self) -> u32 {
        must("id", &["-u", &self.name]).trim().parse().expect("numeric uid")
    }

    /// Creates the account again with a uid it never had (after [`TestUser::delete`]).
    pub fn recreate_with_new_uid(&self, old: u32) {
        let _one = FREE_UID.lock().unwrap_or_else(|p| p.into_inner());
        useradd(&self.name, &["-u", &free_uid(Some(old)).to_string()]);
    }

    /// Deletes the account now (the test recreates it), keeping the guard for the new one.
    pub fn delete(&self) {
        let o = sh("userdel", &[&self.name]);
        assert!(o.status.success(), "userdel {}: {}", self.name, err(&o));
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = sh("userdel", &[&self.name]);
        let _ = sh("groupdel", &[&self.name]);
    }
}

/// Held from choosing a free uid until the account has it.
static FREE_UID: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `useradd` of a system account with no home, no login shell and a group of its name.
/// A uid no account has (nor `except`), above the system accounts' range.
fn free_uid(except: Option<u32>) -> u32 {
    (42000..60000u32)
        .find(|u| Some(*u) != except && !sh("getent", &["passwd", &u.to_string()]).status.success())
        .expect("a free uid")
}

fn useradd(name: &str, extra: &[&str]) {
    let mut args = vec!["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group"];
    args.extend_from_slice(extra);
    args.push(name);
    let o = sh("useradd", &args);
    assert!(o.status.success(), "useradd {name}: {} (the delegation tests need useradd, from passwd)", err(&o));
}

/// Connects to the Unix socket `path` as `uid` (and gid), so the server sees a non-root
/// peer, without starting a process: a short-lived thread changes only its own
/// credentials (the raw setresuid/setresgid system calls act on the calling thread) and
/// connects.
pub fn connect_as(uid: u32, path: &Path) -> std::io::Result<std::os::unix::net::UnixStream> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        // SAFETY: raw system calls that change this thread's credentials only; checked.
        let rc = unsafe { libc::syscall(libc::SYS_setresgid, uid, uid, uid) };
        assert_eq!(rc, 0, "setresgid({uid}): {}", std::io::Error::last_os_error());
        // SAFETY: as above.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
        assert_eq!(rc, 0, "setresuid({uid}): {}", std::io::Error::last_os_error());
        std::os::unix::net::UnixStream::connect(&path)
    })
    .join()
    .expect("connect thread")
}
