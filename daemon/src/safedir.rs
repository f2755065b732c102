//! Directories portd writes in (the state directory, the socket's directory), held open
//! and used only relative to their handle: every file is opened with O_NOFOLLOW, renamed
//! and removed inside the same directory, and owners are changed without following
//! symlinks. A directory that another user can write is refused at start, because a
//! symlink planted there could make portd overwrite, read or chmod files it should not.

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// An open directory.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

fn io_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Why a directory's owner or mode makes it unsafe, if it does.
pub fn unsafe_because(st: &FileStat, me: u32) -> Option<String> {
    if st.st_uid != me && st.st_uid != 0 {
        return Some(format!("it belongs to uid {}, not to portd (uid {me}) or root", st.st_uid));
    }
    if st.st_mode & 0o022 != 0 {
        return Some(format!(
            "its mode {:04o} lets other users write in it; run `chmod go-w` on it",
            st.st_mode & 0o7777
        ));
    }
    None
}

impl Dir {
    /// Opens `path` (creating it with `mode` when missing), refusing a symlink and a
    /// directory another user can write.
    pub fn open(path: &Path, mode: u32) -> io::Result<Dir> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match nix::unistd::mkdir(path, Mode::from_bits_truncate(mode)) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(io_err(e)),
        }
        let raw = nix::fcntl::open(path, OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| match e {
                nix::Error::ELOOP | nix::Error::ENOTDIR => io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a directory (a symlink is refused)", path.display()),
                ),
                e => io_err(e),
            })?;
        // SAFETY: `open` returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(io_err)?;
        if let Some(why) = unsafe_because(&st, nix::unistd::geteuid().as_raw()) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is not safe for portd: {why}", path.display()),
            ));
        }
        Ok(Dir { fd })
    }

    fn open_at(&self, name: &str, flags: OFlag, mode: u32) -> io::Result<File> {
        let raw = nix::fcntl::openat(
            Some(self.fd.as_raw_fd()),
            name,
            flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(io_err)?;
        // SAFETY: `openat` returned a new descriptor that nothing else owns.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(raw) }))
    }

    /// The contents of `name`, or `None` when it does not exist.
    pub fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        use std::io::Read;
        match self.open_at(name, OFlag::O_RDONLY, 0) {
            Ok(mut f) => {
                let mut v = Vec::new();
                f.read_to_end(&mut v)?;
                Ok(Some(v))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates or truncates `name` for writing.
    pub fn create(&self, name: &str, mode: u32) -> io::Result<File> {
        self.open_at(name, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC, mode)
    }

    /// Opens `name` for reading and writing, creating it when missing (a lock file).
    pub fn open_rw(&self, name: &str, mode: u32) -> io::Result<File> {
        self.open_at(name, OFlag::O_RDWR | OFlag::O_CREAT, mode)
    }

    /// Opens `name` for appending, creating it when missing.
    pub fn append(&self, name: &str, mode: u32) -> io::Result<File> {
        self.open_at(name, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_APPEND, mode)
    }

    /// Renames `from` to `to` inside this directory.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let d = Some(self.fd.as_raw_fd());
        nix::fcntl::renameat(d, from, d, to).map_err(io_err)
    }

    /// Makes renames and new names in the directory durable.
    pub fn sync(&self) -> io::Result<()> {
        nix::unistd::fsync(self.fd.as_raw_fd()).map_err(io_err)
    }

    /// What `name` is, without following a symlink; `None` when it does not exist.
    pub fn kind(&self, name: &str) -> io::Result<Option<SFlag>> {
        match nix::sys::stat::fstatat(Some(self.fd.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()))),
            Err(nix::Error::ENOENT) => Ok(None),
            Err(e) => Err(io_err(e)),
        }
    }

    /// Removes the file `name`.
    pub fn unlink(&self, name: &str) -> io::Result<()> {
        nix::unistd::unlinkat(Some(self.fd.as_raw_fd()), name, nix::unistd::UnlinkatFlags::NoRemoveDir).map_err(io_err)
    }

    /// Sets the group of `name` without following a symlink.
    pub fn chgrp(&self, name: &str, gid: u32) -> io::Result<()> {
        nix::unistd::fchownat(
            Some(self.fd.as_raw_fd()),
            name,
            None,
            Some(nix::unistd::Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("portd-safedir-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("mode");
        d
    }

    #[test]
    fn symlinks_and_writable_directories_are_refused() {
        let base = scratch("refuse");
        let real = base.join("real");
        std::fs::create_dir(&real).expect("dir");
        std::os::unix::fs::symlink(&real, base.join("link")).expect("symlink");
        let e = Dir::open(&base.join("link"), 0o750).expect_err("symlink");
        assert!(e.to_string().contains("a symlink is refused"), "{e}");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o777)).expect("mode");
        let e = Dir::open(&real, 0o750).expect_err("world-writable");
        assert!(e.to_string().contains("lets other users write in it"), "{e}");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o750)).expect("mode");
        let d = Dir::open(&real, 0o750).expect("safe");
        // A planted symlink inside is never followed.
        let victim = base.join("victim");
        std::fs::write(&victim, "keep").expect("victim");
        std::os::unix::fs::symlink(&victim, real.join("sets.json")).expect("plant");
        assert!(d.create("sets.json", 0o640).is_err(), "O_NOFOLLOW refuses the symlink");
        assert!(d.read("sets.json").is_err());
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep");
        assert_eq!(d.kind("sets.json").expect("stat"), Some(SFlag::S_IFLNK));
        std::fs::remove_dir_all(&base).expect("cleanup");
    }
}
