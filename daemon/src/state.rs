//! Persisted owner sets: one JSON file in `state_dir`, written atomically
//! (temporary file, fsync, rename, fsync of the directory).

use portd_rules::Forward;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// File name of the persisted sets inside `state_dir`.
pub const STATE_FILE: &str = "sets.json";

/// What is persisted: every set applied through the socket, by owner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    /// Format version.
    pub version: u32,
    /// Owner (`user:NAME`) -> forwards.
    pub sets: BTreeMap<String, Vec<Forward>>,
}

/// Reads and writes the state file.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// A store in `dir` (created on first save if missing).
    pub fn new(dir: &Path) -> Store {
        Store { dir: dir.to_path_buf() }
    }

    /// Path of the state file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Loads the persisted sets; a missing file is an empty state.
    pub fn load(&self) -> anyhow::Result<Persisted> {
        let path = self.path();
        match fs::read(&path) {
            Ok(bytes) => {
                let p: Persisted = serde_json::from_slice(&bytes).map_err(|e| {
                    anyhow::anyhow!("{}: unreadable state ({e}); move it aside to start empty", path.display())
                })?;
                Ok(p)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Persisted { version: 1, ..Default::default() }),
            Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
        }
    }

    /// Writes the sets atomically: a crash leaves either the old or the new file.
    pub fn save(&self, sets: &BTreeMap<String, Vec<Forward>>) -> anyhow::Result<()> {
        #[derive(Serialize)]
        struct View<'a> {
            version: u32,
            sets: &'a BTreeMap<String, Vec<Forward>>,
        }
        let p = View { version: 1, sets };
        fs::create_dir_all(&self.dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", self.dir.display()))?;
        let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        let data = serde_json::to_vec(&p)?;
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o640).open(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            fs::rename(&tmp, self.path())?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| anyhow::anyhow!("saving state in {}: {e}", self.dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portd_rules::PortRange;

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("portd-state-test-{}", std::process::id()));
        let store = Store::new(&dir);
        assert_eq!(store.load().expect("empty").sets.len(), 0);
        let mut p = Persisted { version: 1, ..Default::default() };
        p.sets.insert("user:web".into(), vec![Forward::new("http", PortRange::single(80), PortRange::single(8080))]);
        store.save(&p.sets).expect("save");
        assert_eq!(store.load().expect("load"), p);
        let names: Vec<_> = fs::read_dir(&dir).expect("dir").map(|e| e.expect("e").file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(STATE_FILE)]);
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
