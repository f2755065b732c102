//! Persisted owner sets, in `state_dir`:
//!
//! - `sets.json`, a snapshot of every set, replaced atomically (temporary file, fsync,
//!   rename, fsync of the directory);
//! - `sets.journal`, one JSON line per change since that snapshot (the forwards put and
//!   the names removed), appended and fdatasync'ed before the change is acknowledged.
//!
//! A change of one forward therefore writes one short line, not the whole state. Loading
//! replays the journal onto the snapshot; an unreadable last line (cut short, or never
//! filled) is a write the crash interrupted, which was never acknowledged, and is dropped. When the journal has
//! grown to the size of the snapshot, the next change writes a new snapshot and empties
//! the journal. Replaying a record twice gives the same sets (puts and removals by name),
//! so a crash between the two steps loses nothing.

use portd_rules::plan::{PlacedForward, Summary};
use portd_rules::Forward;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// File name of the snapshot inside `state_dir`.
pub const STATE_FILE: &str = "sets.json";
/// File name of the journal inside `state_dir`.
pub const JOURNAL_FILE: &str = "sets.journal";
/// The journal is folded into a new snapshot once it is this large, or as large as the
/// snapshot, whichever is more.
const JOURNAL_MIN_LIMIT: u64 = 64 * 1024;

/// What is persisted: every set applied through the socket, by owner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    /// Format version.
    pub version: u32,
    /// Owner (`user:NAME`) -> forwards.
    pub sets: BTreeMap<String, Vec<Forward>>,
}

/// One change of one owner's set: forwards added or replaced (by name), names removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Whose set.
    pub owner: String,
    /// Forwards added, or replacing the forward of the same name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub put: Vec<Forward>,
    /// Names of forwards removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl Record {
    /// The record of a change of `owner`'s set: the forwards it adds or changes, the names
    /// it removes.
    pub fn of(owner: &str, s: &Summary) -> Record {
        Record::between(owner, s.added.iter().chain(s.changed.iter().map(|(_, n)| n)), s.removed.iter())
    }

    /// The record that takes the same change back.
    pub fn undoing(owner: &str, s: &Summary) -> Record {
        Record::between(owner, s.removed.iter().chain(s.changed.iter().map(|(o, _)| o)), s.added.iter())
    }

    fn between<'a>(
        owner: &str,
        put: impl Iterator<Item = &'a PlacedForward>,
        remove: impl Iterator<Item = &'a PlacedForward>,
    ) -> Record {
        Record {
            owner: owner.to_string(),
            put: put.map(|p| p.forward.clone()).collect(),
            remove: remove.map(|p| p.forward.name.clone()).collect(),
        }
    }

    /// Applies the record to `sets`: a put replaces the forward of its name in place or
    /// appends it; a set left empty is dropped. Applying it twice changes nothing more.
    pub fn apply(&self, sets: &mut BTreeMap<String, Vec<Forward>>) {
        let set = sets.entry(self.owner.clone()).or_default();
        if !self.remove.is_empty() {
            let gone: std::collections::HashSet<&str> = self.remove.iter().map(String::as_str).collect();
            set.retain(|f| !gone.contains(f.name.as_str()));
        }
        if self.put.len() <= 4 {
            for f in &self.put {
                match set.iter_mut().find(|g| g.name == f.name) {
                    Some(g) => *g = f.clone(),
                    None => set.push(f.clone()),
                }
            }
        } else {
            let at: std::collections::HashMap<String, usize> =
                set.iter().enumerate().map(|(i, g)| (g.name.clone(), i)).collect();
            for f in &self.put {
                match at.get(&f.name) {
                    Some(&i) => set[i] = f.clone(),
                    None => set.push(f.clone()),
                }
            }
        }
        if set.is_empty() {
            sets.remove(&self.owner);
        }
    }
}

/// Reads and writes the snapshot and the journal.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// The journal, open for appending once the state has been loaded or written.
    journal: Option<File>,
    journal_len: u64,
    snapshot_len: u64,
}

impl Store {
    /// A store in `dir` (created on first save if missing).
    pub fn new(dir: &Path) -> Store {
        Store { dir: dir.to_path_buf(), journal: None, journal_len: 0, snapshot_len: 0 }
    }

    /// Path of the snapshot.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Path of the journal.
    pub fn journal_path(&self) -> PathBuf {
        self.dir.join(JOURNAL_FILE)
    }

    /// Loads the persisted sets: the snapshot (missing: empty) with the journal replayed.
    /// A journal with records is folded into a new snapshot before anything is appended.
    pub fn load(&mut self) -> anyhow::Result<Persisted> {
        let path = self.path();
        let mut p = match fs::read(&path) {
            Ok(bytes) => {
                self.snapshot_len = bytes.len() as u64;
                serde_json::from_slice(&bytes).map_err(|e| {
                    anyhow::anyhow!("{}: unreadable state ({e}); move it aside to start empty", path.display())
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted { version: 1, ..Default::default() },
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
        };
        let jpath = self.journal_path();
        let replayed = match fs::read(&jpath) {
            Ok(bytes) => {
                let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
                for (i, raw) in lines.iter().enumerate() {
                    let last = i + 1 == lines.len();
                    let record = raw.strip_suffix(b"\n").map(serde_json::from_slice::<Record>);
                    match record {
                        Some(Ok(r)) => r.apply(&mut p.sets),
                        // The last line of a write that a crash interrupted (cut short, or
                        // with blocks the filesystem never filled): it was never acknowledged.
                        None | Some(Err(_)) if last => {
                            tracing::warn!(
                                "{}:{}: dropping an unfinished last record ({} bytes)",
                                jpath.display(),
                                i + 1,
                                raw.len()
                            );
                        }
                        None | Some(Err(_)) => {
                            let e = record.and_then(Result::err).map_or("no newline".to_string(), |e| e.to_string());
                            return Err(anyhow::anyhow!(
                                "{}:{}: unreadable journal record ({e}); move {} and {} aside to start empty",
                                jpath.display(),
                                i + 1,
                                path.display(),
                                jpath.display()
                            ));
                        }
                    }
                }
                !bytes.is_empty()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", jpath.display())),
        };
        if replayed {
            self.save(&p.sets)?;
        } else if let Ok(j) = OpenOptions::new().append(true).create(true).mode(0o640).open(&jpath) {
            // An empty journal (or none yet: the first change writes the snapshot).
            self.journal = Some(j);
            self.journal_len = 0;
        }
        Ok(p)
    }

    /// Persists one change; `sets` already includes it. Appends the record to the journal,
    /// or writes a new snapshot when the journal has grown large.
    pub fn commit(&mut self, sets: &BTreeMap<String, Vec<Forward>>, record: &Record) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        let limit = self.snapshot_len.max(JOURNAL_MIN_LIMIT);
        if self.journal.is_none() || self.journal_len + line.len() as u64 > limit {
            return self.save(sets);
        }
        let append = |f: &mut File| -> std::io::Result<()> {
            f.write_all(&line)?;
            f.sync_data()
        };
        let f = self.journal.as_mut().expect("checked above");
        match append(f) {
            Ok(()) => {
                self.journal_len += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                // The journal may now end in part of this record: drop the handle so the
                // next change writes a snapshot (which also empties the journal).
                self.journal = None;
                Err(anyhow::anyhow!("appending to {}: {e}", self.journal_path().display()))
            }
        }
    }

    /// Writes a snapshot of `sets` atomically, then empties the journal: a crash leaves
    /// either the old snapshot with the journal or the new snapshot (with or without the
    /// journal, whose records it already holds).
    pub fn save(&mut self, sets: &BTreeMap<String, Vec<Forward>>) -> anyhow::Result<()> {
        #[derive(Serialize)]
        struct View<'a> {
            version: u32,
            sets: &'a BTreeMap<String, Vec<Forward>>,
        }
        let p = View { version: 1, sets };
        fs::create_dir_all(&self.dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", self.dir.display()))?;
        let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        let data = serde_json::to_vec(&p)?;
        self.journal = None;
        let write = || -> std::io::Result<File> {
            let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o640).open(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            fs::rename(&tmp, self.path())?;
            File::open(&self.dir)?.sync_all()?;
            let j = OpenOptions::new().append(true).create(true).mode(0o640).open(self.journal_path())?;
            j.set_len(0)?;
            j.sync_all()?;
            File::open(&self.dir)?.sync_all()?;
            Ok(j)
        };
        let j = write().map_err(|e| anyhow::anyhow!("saving state in {}: {e}", self.dir.display()))?;
        self.journal = Some(j);
        self.journal_len = 0;
        self.snapshot_len = data.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portd_rules::PortRange;

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("portd-state-test-{}", std::process::id()));
        let mut store = Store::new(&dir);
        assert_eq!(store.load().expect("empty").sets.len(), 0);
        let mut p = Persisted { version: 1, ..Default::default() };
        p.sets.insert("user:web".into(), vec![Forward::new("http", PortRange::single(80), PortRange::single(8080))]);
        store.save(&p.sets).expect("save");
        assert_eq!(store.load().expect("load"), p);
        let names: Vec<_> = fs::read_dir(&dir).expect("dir").map(|e| e.expect("e").file_name()).collect();
        let mut names: Vec<String> = names.into_iter().map(|n| n.to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, vec![JOURNAL_FILE.to_string(), STATE_FILE.to_string()]);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    fn fwd(name: &str, port: u16, to: u16) -> Forward {
        Forward::new(name, PortRange::single(port), PortRange::single(to))
    }

    #[test]
    fn journal_replays_onto_the_snapshot_and_drops_an_unfinished_line() {
        let dir = std::env::temp_dir().join(format!("portd-journal-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut store = Store::new(&dir);
        let mut sets = store.load().expect("empty").sets;
        let steps = [
            Record { owner: "user:a".into(), put: vec![fwd("x", 80, 8080), fwd("y", 81, 8081)], remove: vec![] },
            Record { owner: "user:a".into(), put: vec![fwd("x", 80, 9090)], remove: vec!["y".into()] },
            Record { owner: "user:b".into(), put: vec![fwd("z", 82, 8082)], remove: vec![] },
            Record { owner: "user:b".into(), put: vec![], remove: vec!["z".into()] },
        ];
        for r in &steps {
            r.apply(&mut sets);
            store.commit(&sets, r).expect("commit");
        }
        let expect: BTreeMap<String, Vec<Forward>> = [("user:a".to_string(), vec![fwd("x", 80, 9090)])].into();
        assert_eq!(sets, expect);
        // The state dir did not exist, so the first change wrote a snapshot (creating it);
        // each later change is one journal line.
        let journal = fs::read_to_string(store.journal_path()).expect("journal");
        assert_eq!(journal.lines().count(), 3, "{journal}");
        // A torn last record (no newline) was never acknowledged: it is dropped.
        let mut f = OpenOptions::new().append(true).open(store.journal_path()).expect("open");
        f.write_all(br#"{"owner":"user:a","put":[{"name":"w","#).expect("torn");
        drop(f);
        let mut again = Store::new(&dir);
        assert_eq!(again.load().expect("load").sets, expect);
        // So is a last line whose blocks were never written (NULs), newline or not.
        let mut f = OpenOptions::new().append(true).open(again.journal_path()).expect("open");
        f.write_all(b"\0\0\0\0\n").expect("nuls");
        drop(f);
        assert_eq!(Store::new(&dir).load().expect("load").sets, expect);
        // Loading folded the journal into a new snapshot.
        assert_eq!(fs::read(again.journal_path()).expect("journal").len(), 0);
        assert_eq!(Store::new(&dir).load().expect("reload").sets, expect);
        // Replaying records that the snapshot already holds changes nothing.
        let mut twice = expect.clone();
        for r in &steps[1..] {
            r.apply(&mut twice);
        }
        assert_eq!(twice, expect);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_corrupt_record_before_the_end_is_an_error_naming_the_line() {
        let dir = std::env::temp_dir().join(format!("portd-journal-bad-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        fs::write(dir.join(JOURNAL_FILE), "{\"owner\":\"user:a\"}\nnot json\n{\"owner\":\"user:a\"}\n").expect("write");
        let e = Store::new(&dir).load().expect_err("corrupt journal").to_string();
        assert!(e.contains("sets.journal:2: unreadable journal record"), "{e}");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_journal_as_large_as_the_snapshot_is_folded_into_a_new_one() {
        let dir = std::env::temp_dir().join(format!("portd-journal-fold-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let mut store = Store::new(&dir);
        let mut sets = store.load().expect("empty").sets;
        // A large set first (a snapshot of about 100 KB), then one-forward changes.
        let big = Record {
            owner: "user:a".into(),
            put: (0..1500).map(|i| fwd(&format!("f{i}"), 1000 + i, 30000 + i)).collect(),
            remove: vec![],
        };
        big.apply(&mut sets);
        store.save(&sets).expect("snapshot");
        let snapshot = fs::metadata(store.path()).expect("snapshot").len();
        let mut folded = false;
        for i in 0..5000u16 {
            let r = Record { owner: "user:a".into(), put: vec![fwd("moving", 5000, 6000 + i % 1000)], remove: vec![] };
            r.apply(&mut sets);
            store.commit(&sets, &r).expect("commit");
            let journal = fs::metadata(store.journal_path()).expect("journal").len();
            assert!(journal <= snapshot.max(JOURNAL_MIN_LIMIT), "the journal outgrew its limit: {journal} bytes");
            if journal == 0 {
                folded = true;
                break;
            }
        }
        assert!(folded, "the journal was never folded into a snapshot");
        assert_eq!(Store::new(&dir).load().expect("load").sets, sets, "the new snapshot holds every change");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
