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

#![forbid(unsafe_code)]

use crate::safedir::Dir;
use portd_rules::policy::{SetKey, UserSet};
use portd_rules::Forward;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name of the snapshot inside `state_dir`.
pub const STATE_FILE: &str = "sets.json";
/// File name of the journal inside `state_dir`.
pub const JOURNAL_FILE: &str = "sets.journal";
/// The journal is folded into a new snapshot once it is this large, or as large as the
/// snapshot, whichever is more.
const JOURNAL_MIN_LIMIT: u64 = 64 * 1024;

/// What is persisted: every set applied through the socket, by owner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Persisted {
    /// Owner (`user:NAME`; a key that names no user is kept as read, see [`SetKey`]) ->
    /// the uid that applied the set and its forwards.
    pub sets: BTreeMap<SetKey, UserSet>,
    /// Entries that could not be read at all (located), left out of `sets`.
    pub unreadable: Vec<String>,
    /// The files as they were read, to locate a forward that validation finds wrong.
    sources: Vec<(PathBuf, Vec<u8>)>,
}

impl Persisted {
    /// Where the forward `name` of `owner` was last written, as `path:line` (`state` when
    /// it cannot be found). Looked up only for the forwards that need it, so a start
    /// builds no location for each of 10,000 good ones.
    pub fn origin(&self, owner: &str, name: &str) -> String {
        let [(spath, snapshot), (jpath, journal)] = self.sources.as_slice() else { return "state".into() };
        // the journal's last record that put it wins
        let lines: Vec<&[u8]> = journal.split(|b| *b == b'\n').collect();
        for (i, raw) in lines.iter().enumerate().rev() {
            let Ok(r) = serde_json::from_slice::<Record>(raw) else { continue };
            if r.owner == owner && r.put.iter().any(|f| f.name == name) {
                return format!("{}:{}", jpath.display(), i + 1);
            }
        }
        let text = String::from_utf8_lossy(snapshot);
        match snapshot_lines(&text).get(&(owner.to_string(), name.to_string())) {
            Some(line) => format!("{}:{line}", spath.display()),
            None => "state".into(),
        }
    }
}

/// One set in the snapshot: `{"uid": N, "forwards": [...]}`, or the bare list of the
/// first format (no uid; bound to the name's uid at the next start). The forwards stay
/// unparsed text until each is read on its own, so one bad entry spoils only itself.
struct SavedSet<'a> {
    uid: Option<u32>,
    forwards: Vec<&'a serde_json::value::RawValue>,
}

impl<'de: 'a, 'a> Deserialize<'de> for SavedSet<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = SavedSet<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("{\"uid\": N, \"forwards\": [...]} or a list of forwards")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut forwards = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(f) = seq.next_element()? {
                    forwards.push(f);
                }
                Ok(SavedSet { uid: None, forwards })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut set = SavedSet { uid: None, forwards: Vec::new() };
                while let Some(key) = map.next_key::<&str>()? {
                    match key {
                        "uid" => set.uid = map.next_value()?,
                        "forwards" => set.forwards = map.next_value()?,
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(set)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The snapshot file (`sets.json`) as read: every set, its forwards still text.
#[derive(Deserialize)]
struct SetsFile<'a> {
    #[allow(dead_code)]
    version: u32,
    #[serde(borrow)]
    sets: BTreeMap<String, SavedSet<'a>>,
}

/// The name of a forward that cannot be read whole, for its message.
#[derive(Deserialize)]
struct NameOnly {
    name: String,
}

/// One change of one owner's set: forwards added or replaced (by name), names removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Whose set.
    pub owner: String,
    /// The uid the set belongs to after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Forwards added, or replacing the forward of the same name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub put: Vec<Forward>,
    /// Names of forwards removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl Record {
    /// The record that turns `old` (the owner's set now) into `new`: the forwards that
    /// are new or differ, and the names that go.
    pub fn between(owner: &str, uid: Option<u32>, old: &[Forward], new: &[Forward]) -> Record {
        let before: std::collections::HashMap<&str, &Forward> = old.iter().map(|f| (f.name.as_str(), f)).collect();
        let after: std::collections::HashSet<&str> = new.iter().map(|f| f.name.as_str()).collect();
        Record {
            owner: owner.to_string(),
            uid,
            put: new.iter().filter(|f| before.get(f.name.as_str()) != Some(f)).cloned().collect(),
            remove: old.iter().filter(|f| !after.contains(f.name.as_str())).map(|f| f.name.clone()).collect(),
        }
    }

    /// True when the record changes nothing.
    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.remove.is_empty()
    }

    /// Applies the record to `sets`: a put replaces the forward of its name in place or
    /// appends it; a set left empty is dropped. Applying it twice changes nothing more.
    pub fn apply(&self, sets: &mut BTreeMap<SetKey, UserSet>) {
        let entry = match sets.get_mut(self.owner.as_str()) {
            Some(e) => e,
            None => sets.entry(SetKey::read(self.owner.clone())).or_default(),
        };
        if self.uid.is_some() {
            entry.uid = self.uid;
        }
        let set = &mut entry.forwards;
        if self.remove.len() <= 4 {
            // A few names (`portctl remove`): comparing names is cheaper than hashing
            // every forward of the set.
            if !self.remove.is_empty() {
                set.retain(|f| !self.remove.contains(&f.name));
            }
        } else {
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
            sets.remove(self.owner.as_str());
        }
    }
}

/// Line (1-based) of each forward in a snapshot written by [`Store::save`] (one forward
/// per line after a line opening its owner's set); 1 for a snapshot on one line.
fn snapshot_lines(text: &str) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    let mut owner: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(rest) = line.strip_prefix('"') {
            if let Some(end) = rest.find("\":") {
                owner = serde_json::from_str::<String>(&line[..end + 2]).ok();
                continue;
            }
        }
        if let (Some(o), Some(v)) = (&owner, line.trim_end_matches(',').strip_prefix("{\"name\":")) {
            if let Ok(serde_json::Value::String(name)) = serde_json::Deserializer::from_str(v)
                .into_iter::<serde_json::Value>()
                .next()
                .unwrap_or(Ok(serde_json::Value::Null))
            {
                out.entry((o.clone(), name)).or_insert(i + 1);
            }
        }
    }
    out
}

/// The snapshot as JSON with one forward per line, so problems found at load can name
/// the line:
///
/// ```text
/// {"version":2,"sets":{
/// "user:web":{"uid":1001,"forwards":[
/// {"name":"http","port":80,"to":8080}
/// ]}}}
/// ```
fn snapshot_text(sets: &BTreeMap<SetKey, UserSet>) -> serde_json::Result<Vec<u8>> {
    let mut out = b"{\"version\":2,\"sets\":{".to_vec();
    for (i, (owner, set)) in sets.iter().enumerate() {
        out.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
        serde_json::to_writer(&mut out, owner.as_str())?;
        out.extend_from_slice(b":{\"uid\":");
        serde_json::to_writer(&mut out, &set.uid)?;
        out.extend_from_slice(b",\"forwards\":[");
        for (j, f) in set.forwards.iter().enumerate() {
            out.extend_from_slice(if j == 0 { b"\n" } else { b",\n" });
            serde_json::to_writer(&mut out, f)?;
        }
        out.extend_from_slice(b"\n]}");
    }
    out.extend_from_slice(b"}}\n");
    Ok(out)
}

/// Reads and writes the snapshot and the journal.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// The directory, held open once loaded (all files are opened relative to it).
    handle: Option<Dir>,
    /// The journal, open for appending once the state has been loaded or written.
    journal: Option<File>,
    journal_len: u64,
    snapshot_len: u64,
}

impl Store {
    /// A store in `dir` (created on first save if missing).
    pub fn new(dir: &Path) -> Store {
        Store { dir: dir.to_path_buf(), handle: None, journal: None, journal_len: 0, snapshot_len: 0 }
    }

    /// The state directory, opened (and created, mode 0750) on first use; refused when it
    /// is a symlink or another user can write it.
    /// The caller puts it back in `handle` when done (an error path just reopens it).
    fn take_dir(&mut self) -> anyhow::Result<Dir> {
        match self.handle.take() {
            Some(d) => Ok(d),
            None => Dir::open(&self.dir, 0o750).map_err(|e| anyhow::anyhow!("state directory: {e}")),
        }
    }

    /// Makes the next change write a snapshot instead of a journal line (for tests of a
    /// failing snapshot write).
    #[cfg(test)]
    pub fn snapshot_next(&mut self) {
        self.journal = None;
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
        let mut p = Persisted::default();
        let dir = self.take_dir()?;
        let snapshot = dir.read(STATE_FILE).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if let Some(bytes) = &snapshot {
            self.snapshot_len = bytes.len() as u64;
            let unreadable = |e: &dyn std::fmt::Display| {
                anyhow::anyhow!("{}: unreadable state ({e}); move it aside to start empty", path.display())
            };
            let text = std::str::from_utf8(bytes).map_err(|e| unreadable(&e))?;
            let snap: SetsFile<'_> = serde_json::from_str(text).map_err(|e| unreadable(&e))?;
            for (owner, set) in snap.sets {
                let mut forwards = Vec::with_capacity(set.forwards.len());
                for (i, raw) in set.forwards.into_iter().enumerate() {
                    match serde_json::from_str::<Forward>(raw.get()) {
                        Ok(f) => forwards.push(f),
                        Err(e) => {
                            // the line the entry starts on: its offset in the text
                            let at = raw.get().as_ptr() as usize - text.as_ptr() as usize;
                            let line = text.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() + 1;
                            let name = serde_json::from_str::<NameOnly>(raw.get()).map(|n| n.name).unwrap_or_default();
                            p.unreadable.push(format!(
                                "{}:{line}: {owner} forwards[{i}] ({}): cannot be read: {e}",
                                path.display(),
                                name.escape_debug()
                            ));
                        }
                    }
                }
                p.sets.insert(SetKey::read(owner), UserSet { uid: set.uid, forwards });
            }
        }
        if !p.unreadable.is_empty() {
            // Keep what could not be read for the operator before a new snapshot drops it.
            let aside = format!("{STATE_FILE}.unreadable");
            let copy = || -> std::io::Result<()> {
                let bytes = dir.read(STATE_FILE)?.unwrap_or_default();
                let mut f = dir.create(&aside, 0o640)?;
                f.write_all(&bytes)?;
                f.sync_all()
            };
            if let Err(e) = copy() {
                tracing::warn!("copying {} to {aside}: {e}", path.display());
            }
        }
        let jpath = self.journal_path();
        let journal = dir.read(JOURNAL_FILE).map_err(|e| anyhow::anyhow!("{}: {e}", jpath.display()))?;
        let replayed = match &journal {
            Some(bytes) => {
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
            None => false,
        };
        p.sources = vec![(path, snapshot.unwrap_or_default()), (jpath, journal.unwrap_or_default())];
        let append = dir.append(JOURNAL_FILE, 0o640);
        self.handle = Some(dir);
        if replayed || !p.unreadable.is_empty() {
            self.save(&p.sets)?;
        } else if let Ok(j) = append {
            // An empty journal (or none yet: the first change writes the snapshot).
            self.journal = Some(j);
            self.journal_len = 0;
        }
        Ok(p)
    }

    /// Persists one change; `sets` already includes it. Appends the record to the journal,
    /// or writes a new snapshot when the journal has grown large.
    pub fn commit(&mut self, sets: &BTreeMap<SetKey, UserSet>, record: &Record) -> anyhow::Result<()> {
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
    pub fn save(&mut self, sets: &BTreeMap<SetKey, UserSet>) -> anyhow::Result<()> {
        let tmp = format!(".{STATE_FILE}.tmp");
        let data = snapshot_text(sets)?;
        self.journal = None;
        let dir = self.take_dir()?;
        let write = || -> std::io::Result<File> {
            let mut f = dir.create(&tmp, 0o640)?;
            f.write_all(&data)?;
            f.sync_all()?;
            dir.rename(&tmp, STATE_FILE)?;
            dir.sync()?;
            let j = dir.append(JOURNAL_FILE, 0o640)?;
            j.set_len(0)?;
            j.sync_all()?;
            dir.sync()?;
            Ok(j)
        };
        let written = write();
        self.handle = Some(dir);
        let j = written.map_err(|e| anyhow::anyhow!("saving state in {}: {e}", self.dir.display()))?;
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
    use std::fs::{self, OpenOptions};

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("portd-state-test-{}", std::process::id()));
        let mut store = Store::new(&dir);
        assert_eq!(store.load().expect("empty").sets.len(), 0);
        let mut sets = BTreeMap::new();
        let http = Forward::new("http", PortRange::single(80), PortRange::single(8080));
        sets.insert(SetKey::read("user:web".into()), UserSet { uid: Some(1001), forwards: vec![http] });
        store.save(&sets).expect("save");
        let loaded = store.load().expect("load");
        assert_eq!(loaded.sets, sets);
        let at = loaded.origin("user:web", "http");
        assert!(at.ends_with("sets.json:3"), "{at}");
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
            Record {
                uid: None,
                owner: "user:a".into(),
                put: vec![fwd("x", 80, 8080), fwd("y", 81, 8081)],
                remove: vec![],
            },
            Record { uid: None, owner: "user:a".into(), put: vec![fwd("x", 80, 9090)], remove: vec!["y".into()] },
            Record { uid: None, owner: "user:b".into(), put: vec![fwd("z", 82, 8082)], remove: vec![] },
            Record { uid: None, owner: "user:b".into(), put: vec![], remove: vec!["z".into()] },
        ];
        for r in &steps {
            r.apply(&mut sets);
            store.commit(&sets, r).expect("commit");
        }
        let expect: BTreeMap<SetKey, UserSet> =
            [(SetKey::read("user:a".into()), UserSet { uid: None, forwards: vec![fwd("x", 80, 9090)] })].into();
        assert_eq!(sets, expect);
        // Loading created the state dir and an empty journal: each change is one line.
        let journal = fs::read_to_string(store.journal_path()).expect("journal");
        assert_eq!(journal.lines().count(), 4, "{journal}");
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
            uid: None,
            owner: "user:a".into(),
            put: (0..1500).map(|i| fwd(&format!("f{i}"), 1000 + i, 30000 + i)).collect(),
            remove: vec![],
        };
        big.apply(&mut sets);
        store.save(&sets).expect("snapshot");
        let snapshot = fs::metadata(store.path()).expect("snapshot").len();
        let mut folded = false;
        for i in 0..5000u16 {
            let r = Record {
                uid: None,
                owner: "user:a".into(),
                put: vec![fwd("moving", 5000, 6000 + i % 1000)],
                remove: vec![],
            };
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

    /// A fold (snapshot write) is: temporary file written and synced, renamed over the
    /// snapshot, directory synced, journal emptied. A crash can stop it between any two
    /// steps; every state it can leave must load to every acknowledged change.
    #[test]
    fn a_crash_at_any_step_of_a_fold_loses_nothing_acknowledged() {
        let dir = std::env::temp_dir().join(format!("portd-fold-crash-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut store = Store::new(&dir);
        let mut sets = store.load().expect("empty").sets;
        let first = Record { uid: Some(7), owner: "user:a".into(), put: vec![fwd("x", 80, 8080)], remove: vec![] };
        first.apply(&mut sets);
        store.save(&sets).expect("snapshot");
        let old_snapshot = fs::read(store.path()).expect("snapshot");
        // Acknowledged changes since: journal lines.
        for (i, r) in [
            Record { uid: Some(7), owner: "user:a".into(), put: vec![fwd("y", 81, 8081)], remove: vec![] },
            Record { uid: Some(7), owner: "user:a".into(), put: vec![fwd("x", 80, 9090)], remove: vec![] },
            Record { uid: Some(8), owner: "user:b".into(), put: vec![fwd("z", 82, 8082)], remove: vec![] },
        ]
        .iter()
        .enumerate()
        {
            r.apply(&mut sets);
            store.commit(&sets, r).unwrap_or_else(|e| panic!("commit {i}: {e}"));
        }
        let journal = fs::read(store.journal_path()).expect("journal");
        let new_snapshot = snapshot_text(&sets).expect("text");
        let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
        // The states a crash during the fold can leave on disk.
        /// What a crash left: (when, snapshot, temporary file, journal).
        type Left<'a> = (&'a str, &'a [u8], Option<&'a [u8]>, &'a [u8]);
        let cases: [Left; 4] = [
            ("temporary file half written", &old_snapshot, Some(&new_snapshot[..new_snapshot.len() / 2]), &journal),
            ("temporary file whole, not renamed", &old_snapshot, Some(&new_snapshot), &journal),
            ("renamed, journal not emptied", &new_snapshot, None, &journal),
            ("journal emptied", &new_snapshot, None, b""),
        ];
        for (what, snapshot, temp, journal) in cases {
            fs::write(store.path(), snapshot).expect("snapshot");
            match temp {
                Some(t) => fs::write(&tmp, t).expect("tmp"),
                None => {
                    let _ = fs::remove_file(&tmp);
                }
            }
            fs::write(store.journal_path(), journal).expect("journal");
            let loaded = Store::new(&dir).load().unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(loaded.sets, sets, "{what}: every acknowledged change survives");
        }
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
