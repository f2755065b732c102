//! The actor as an I/O shell, with a fake kernel: commits (delta, else the whole table),
//! the order kernel → state → answer, rollback after a failed state write, the repair
//! back-off, and grants judged through the shell. No root needed.

#![forbid(unsafe_code)]

use super::*;
use portd_kernel::nft::{BackendError, Observed};
use portd_rules::proto::{ErrorKind, ForwardState};
use portd_rules::{Delta, Forward, PortRange};
use std::sync::{Arc, Mutex};

/// What the fake kernel saw and holds.
#[derive(Default)]
struct Log {
    /// "replace N" (N forwards) or "change +A -R".
    batches: Vec<String>,
    /// Forwards in the table, as owner/name.
    table: Vec<String>,
    refuse_changes: bool,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<Log>>);

impl Fake {
    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn names(plan: &Plan) -> Vec<String> {
    plan.forwards.iter().map(|p| format!("{}/{}", p.owner, p.forward.name)).collect()
}

impl Kernel for Fake {
    fn replace(&self, plan: &Plan) -> Result<(), BackendError> {
        let mut l = self.log();
        l.batches.push(format!("replace {}", plan.forwards.len()));
        l.table = names(plan);
        Ok(())
    }
    fn change(&self, current: &Plan, delta: &Delta) -> Result<(), BackendError> {
        let mut l = self.log();
        if l.refuse_changes {
            l.batches.push("change refused".into());
            return Err(BackendError::Unstable { table: current.table.clone(), attempts: 0 });
        }
        l.batches.push(format!("change +{} -{}", delta.summary.added.len(), delta.summary.removed.len()));
        let mut next = current.clone();
        delta.apply_in_place(&mut next);
        l.table = names(&next);
        Ok(())
    }
    fn relayout(&self, _current: &Plan, new: &Plan) -> Result<(), BackendError> {
        let mut l = self.log();
        l.batches.push(format!("relayout {}", new.forwards.len()));
        l.table = names(new);
        Ok(())
    }
    fn observe(&self, _plan: &Plan) -> Result<Option<Observed>, BackendError> {
        Ok(None)
    }
    fn remove(&self) -> Result<(), BackendError> {
        let mut l = self.log();
        l.batches.push("remove".into());
        l.table.clear();
        Ok(())
    }
}

struct Setup {
    dir: PathBuf,
    fake: Fake,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        let dir = std::env::temp_dir().join(format!("portd-actor-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("state")).expect("scratch");
        Setup { dir, fake: Fake::default() }
    }

    fn config(&self, extra: &str) -> String {
        format!(
            "version: 1\nsettings:\n  table: t\n  listener_check: off\n  state_dir: {}\n{extra}",
            self.dir.join("state").display()
        )
    }

    fn start(&self, extra: &str) -> Daemon {
        let path = self.dir.join("portd.yaml");
        let text = self.config(extra);
        std::fs::write(&path, &text).expect("config");
        let config = portd_rules::parse_config("portd.yaml", &text).expect("valid config");
        let o = Overrides { table: None, state_dir: None };
        Daemon::start(
            path,
            config,
            o,
            Arc::default(),
            Box::new(self.fake.clone()),
            crate::dataplane::Steering::off("unit tests"),
        )
        .expect("start")
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn root() -> Caller {
    Caller { uid: 0, pid: None, user: "root".into() }
}

fn nobody() -> Caller {
    let uid = accounts::lookup("nobody").expect("the account database has `nobody`").uid;
    Caller { uid, pid: None, user: "nobody".into() }
}

fn fwd(name: &str, port: u16, to: u16) -> Forward {
    Forward::new(name, PortRange::single(port), PortRange::single(to))
}

fn apply(d: &mut Daemon, who: &Caller, forwards: Vec<Forward>) -> Answer {
    d.handle(who, Request::Apply { forwards, dry_run: false, owner: None })
}

/// Every forward of a status, as the server reads it (the fake kernel holds no table).
fn states(d: &mut Daemon) -> Vec<(String, ForwardState)> {
    let s = d.pending_status().status(None, None, None);
    s.forwards.iter().map(|f| (format!("{}/{}", f.owner, f.forward.name), f.state)).collect()
}

#[test]
fn a_change_goes_to_the_kernel_as_elements_then_to_the_state() {
    let s = Setup::new("change");
    let mut d = s.start("");
    assert_eq!(s.fake.log().batches, vec!["replace 0"], "start puts the table in");
    apply(&mut d, &root(), vec![fwd("http", 80, 8080)]).expect("applied");
    assert_eq!(s.fake.log().batches.last().map(String::as_str), Some("change +1 -0"));
    assert_eq!(s.fake.log().table, vec!["user:root/http"]);
    let mut again = crate::state::Store::new(&s.dir.join("state"));
    let persisted = again.load().expect("load");
    assert_eq!(persisted.sets["user:root"].forwards, vec![fwd("http", 80, 8080)]);
    assert_eq!(persisted.sets["user:root"].uid, Some(0));
}

#[test]
fn a_refused_element_change_falls_back_to_the_whole_table() {
    let s = Setup::new("fallback");
    let mut d = s.start("");
    s.fake.log().refuse_changes = true;
    apply(&mut d, &root(), vec![fwd("http", 80, 8080)]).expect("applied");
    let l = s.fake.log();
    assert_eq!(l.batches[l.batches.len() - 2..], ["change refused".to_string(), "replace 1".to_string()]);
    assert_eq!(l.table, vec!["user:root/http"]);
}

#[test]
fn a_failed_state_write_rolls_the_kernel_back_and_is_not_acknowledged() {
    let s = Setup::new("rollback");
    let mut d = s.start("");
    // The next change writes a snapshot, whose temporary file cannot be written (a
    // directory in its place fails even for root).
    std::fs::create_dir_all(s.dir.join("state").join(".sets.json.tmp")).expect("blocker");
    d.store.snapshot_next();
    let e = apply(&mut d, &root(), vec![fwd("http", 80, 8080)]).expect_err("not persisted");
    assert_eq!(e.kind(), ErrorKind::Internal);
    assert!(e.messages()[0].contains("rolled back"), "{e:?}");
    let l = s.fake.log();
    assert_eq!(l.batches[l.batches.len() - 2..], ["change +1 -0".to_string(), "replace 0".to_string()]);
    assert!(l.table.is_empty(), "the kernel holds what it held before: {:?}", l.table);
    drop(l);
    assert!(states(&mut d).is_empty(), "nothing was acknowledged");
}

#[test]
fn the_repair_back_off_stands_back_after_a_burst() {
    let s = Setup::new("backoff");
    let mut d = s.start("");
    for _ in 0..60 {
        d.repair_if_drifted(portd_kernel::events::TableEvent::TableDeleted);
    }
    let replaced = s.fake.log().batches.iter().filter(|b| b.starts_with("replace")).count();
    assert_eq!(replaced, 1 + policy::REPAIR_BURST, "start, then at most a burst of repairs");
    assert_eq!(d.repairs, policy::REPAIR_BURST as u64);
    assert!(d.backoff.deferred().is_some(), "standing back");
    assert_eq!(d.timers.at(Timer::Repair), d.backoff.deferred(), "woken when the back-off is over");
    assert_eq!(d.backoff.hits, 1);
}

#[test]
fn grants_are_judged_through_the_shell_and_a_revoked_one_suspends_on_reload() {
    let s = Setup::new("grants");
    let granted = "grants:\n  - {user: nobody, ports: [80], to: \"8000-8099\"}\n";
    let mut d = s.start(granted);
    let who = nobody();
    apply(&mut d, &who, vec![fwd("http", 80, 8080)]).expect("within the grant");
    let e = apply(&mut d, &who, vec![fwd("ssh", 22, 8022)]).expect_err("outside");
    assert_eq!(e.kind(), ErrorKind::Denied);
    assert!(e.messages()[0].contains("outside your grants"), "{e:?}");
    let e = d
        .handle(
            &who,
            Request::Apply { forwards: vec![], dry_run: false, owner: Some(policy::Owner::User("root".into())) },
        )
        .expect_err("not root");
    assert_eq!(e.kind(), ErrorKind::Denied);
    std::fs::write(s.dir.join("portd.yaml"), s.config("")).expect("config");
    d.reload(None, false, None).expect("reload");
    assert_eq!(states(&mut d), vec![("user:nobody/http".to_string(), ForwardState::Suspended)]);
    assert!(s.fake.log().table.is_empty(), "out of the kernel");
    std::fs::write(s.dir.join("portd.yaml"), s.config(granted)).expect("config");
    d.reload(None, false, None).expect("reload");
    assert_eq!(states(&mut d), vec![("user:nobody/http".to_string(), ForwardState::Active)]);
    assert_eq!(s.fake.log().table, vec!["user:nobody/http"]);
}

#[test]
fn the_status_line_counts_each_owner_once() {
    let s = Setup::new("status-line");
    let granted = "grants:\n  - {user: nobody, ports: [\"80-90\"], to: \"8000-8099\"}\n";
    let mut d = s.start(&format!(
        "{granted}forwards:\n  - {{name: a, port: 100, to: 1100}}\n  - {{name: b, port: 101, to: 1101}}\n"
    ));
    assert_eq!(d.status_line(), "2 forward(s) from 1 owner(s) in table inet t");
    apply(&mut d, &nobody(), vec![fwd("x", 80, 8080), fwd("y", 81, 8081), fwd("z", 82, 8082)]).expect("granted");
    apply(&mut d, &root(), vec![fwd("r", 200, 1200)]).expect("root");
    assert_eq!(d.status_line(), "6 forward(s) from 3 owner(s) in table inet t");
    d.handle(&root(), Request::Remove { name: "r".into(), owner: None, dry_run: false, if_exists: false })
        .expect("removed");
    assert_eq!(d.status_line(), "5 forward(s) from 2 owner(s) in table inet t");
}

#[test]
fn an_unnamed_caller_is_named_by_the_actor() {
    let mut c = Caller::unnamed(0, Some(1));
    c.name();
    assert_eq!(c.user, "root");
    assert_eq!(c.owner().to_string(), "user:root");
    let mut nameless = Caller::unnamed(u32::MAX - 7, None);
    nameless.name();
    assert_eq!(nameless.user, (u32::MAX - 7).to_string(), "a uid without a name goes by its number");
}

#[test]
fn requests_put_a_pending_trim_off_but_not_for_ever() {
    let s = Setup::new("trim");
    let mut d = s.start("");
    d.timers.cancel(Timer::Trim);
    d.put_off_trim();
    assert_eq!(d.timers.at(Timer::Trim), None, "nothing pending, nothing scheduled");
    let due = Instant::now() + Duration::from_millis(10);
    d.timers.set_unless_pending(Timer::Trim, due);
    d.put_off_trim();
    let at = d.timers.at(Timer::Trim);
    assert!(at.is_some_and(|t| t >= due + Duration::from_millis(50)), "put off by about TRIM_DELAY");
    let long_ago = Instant::now() - TRIM_MAX_WAIT - Duration::from_secs(1);
    d.timers.cancel(Timer::Trim);
    d.timers.set_unless_pending(Timer::Trim, long_ago);
    d.put_off_trim();
    let at = d.timers.at(Timer::Trim);
    assert!(at.is_some_and(|t| t <= Instant::now()), "due at once after TRIM_MAX_WAIT: {at:?}");
}

/// One forward as each entry path receives it: text fields (a file, a command line), or
/// typed (the state file, a request on the wire).
struct Case {
    name: &'static str,
    port: &'static str,
    to: &'static str,
    family: portd_rules::FamilySel,
    interfaces: &'static [&'static str],
    sources: &'static [&'static str],
    description: Option<String>,
}

impl Case {
    fn new(name: &'static str, port: &'static str, to: &'static str) -> Case {
        Case { name, port, to, family: portd_rules::FamilySel::Both, interfaces: &[], sources: &[], description: None }
    }
    /// As a rules file: what `portctl apply`, `portctl check` and the config go through.
    fn yaml(&self) -> String {
        let list = |l: &[&str]| serde_json::to_string(l).expect("json");
        let mut y = format!(
            "version: 1\nforwards:\n  - name: \"{}\"\n    port: \"{}\"\n    to: \"{}\"\n    family: {}\n    interfaces: {}\n    sources: {}\n",
            self.name,
            self.port,
            self.to,
            self.family,
            list(self.interfaces),
            list(self.sources)
        );
        if let Some(d) = &self.description {
            y.push_str(&format!("    description: \"{d}\"\n"));
        }
        y
    }
    /// As typed on the wire and in the state file, host bits and all.
    fn typed(&self) -> Forward {
        let range = |s: &str| PortRange::parse(s).expect("cases use ports that parse");
        let mut f = Forward::new(self.name, range(self.port), range(self.to));
        f.family = self.family;
        f.interfaces = self.interfaces.iter().map(|s| s.to_string()).collect();
        f.sources = self.sources.iter().map(|s| s.parse().expect("cases use networks that parse")).collect();
        f.description = self.description.clone();
        f
    }
}

/// The same forwards, valid and invalid, through every entry path — a rules file (apply,
/// check, the config), `portctl add`, a request on the wire, the state file — get the same
/// verdict, and the accepted ones the same form (host bits cleared).
#[test]
fn every_entry_path_gives_a_forward_the_same_verdict() {
    use portd_rules::FamilySel::{Ipv4, Ipv6};
    let cases = vec![
        (Case::new("plain", "80", "8080"), true),
        (Case { sources: &["203.0.113.9/24"], ..Case::new("hostbits", "81", "8081") }, true),
        (Case { sources: &["203.0.113.9/24", "203.0.113.0/24"], ..Case::new("twice", "82", "8082") }, true),
        (Case { family: Ipv6, sources: &["2001:db8::1/32"], ..Case::new("hostbits6", "83", "8083") }, true),
        (Case::new("Bad!", "84", "8084"), false),
        (Case::new("itself", "85", "85"), false),
        (Case::new("lengths", "8000-8009", "9000-9004"), false),
        (Case { family: Ipv4, sources: &["2001:db8::/32"], ..Case::new("family", "86", "8086") }, false),
        (Case { interfaces: &["eth0", "eth0"], ..Case::new("ifaces", "87", "8087") }, false),
        (Case { interfaces: &["bad name"], ..Case::new("ifname", "88", "8088") }, false),
        (Case { description: Some("x".repeat(201)), ..Case::new("described", "89", "8089") }, false),
    ];

    // The state file: every case in root's persisted set, then a start.
    let state = Setup::new("entry-state");
    let sets: BTreeMap<SetKey, UserSet> = [(
        SetKey::of_user("root").expect("a user"),
        UserSet { uid: Some(0), forwards: cases.iter().map(|(c, _)| c.typed()).collect() },
    )]
    .into();
    Store::new(&state.dir.join("state")).save(&sets).expect("state file");
    let from_state = state.start("");
    let wire = Setup::new("entry-wire");
    let mut on_wire = wire.start("");

    for (case, valid) in &cases {
        let by_file = portd_rules::parse_rules("rules.yaml", &case.yaml()).map(|r| r.forwards[0].clone()).ok();
        let family = case.family;
        let sources: Vec<String> = case.sources.iter().map(|s| s.to_string()).collect();
        let by_add = portd_rules::validate::assemble(case.name, case.port, case.to, &sources, |f| {
            f.family = family;
            f.interfaces = case.interfaces.iter().map(|s| s.to_string()).collect();
            f.description = case.description.clone();
            Vec::new()
        })
        .ok();
        let add = Request::Add { forward: case.typed(), owner: None, dry_run: false, replace: false };
        let by_wire = match on_wire.handle(&root(), add) {
            Ok(_) => on_wire.users["user:root"].forwards.iter().find(|f| f.name == case.name).cloned(),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Invalid, "{}: {e:?}", case.name);
                None
            }
        };
        let refused_at_start = from_state.invalid.get("user:root").is_some_and(|i| i.contains_key(case.name));
        let by_state = (!refused_at_start)
            .then(|| from_state.users["user:root"].forwards.iter().find(|f| f.name == case.name).cloned())
            .flatten();

        assert_eq!(by_file.is_some(), *valid, "{}: the file's verdict", case.name);
        assert_eq!(by_add, by_file, "{}: portctl add and the file", case.name);
        assert_eq!(by_wire, by_file, "{}: the wire and the file", case.name);
        assert_eq!(by_state, by_file, "{}: the state file and the file", case.name);
    }
    let cleared = |name: &str| {
        from_state.users["user:root"]
            .forwards
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.sources.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    };
    assert_eq!(cleared("hostbits"), Some(vec!["203.0.113.0/24".to_string()]), "host bits are cleared");
    assert_eq!(cleared("twice"), Some(vec!["203.0.113.0/24".to_string()]), "a network counts once");
    assert_eq!(cleared("hostbits6"), Some(vec!["2001:db8::/32".to_string()]));
}
