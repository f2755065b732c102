//! Every example of the README and the man pages runs, as written, against a real portd:
//! the README's walk-through and install notes in one session, the examples of
//! portctl(1), portd.yaml(5) and portd(8) in another. Each session starts portd (with its
//! BPF data plane, in a throwaway network namespace) from the configuration its docs
//! show, and runs every command line of their code blocks with `sh -c`, as root or as the
//! user the example is for, asserting its exit code and, in `console` blocks, that its
//! output (stdout and stderr, in order) is the output shown. Needs root.
//!
//! How a command runs: in the server namespace (or the client's, see `client`), in a
//! mount namespace of its own whose `/home` is a scratch tmpfs holding the files the docs
//! put there, from a working directory that holds the docs' files (`rules.yaml`), with
//! `PORTD_SOCKET` naming the test's socket and a `PATH` whose `portd` runs the real portd
//! with the test's `--config` and `--bpffs` when the line gives none (the test's stand-ins
//! for /etc/portd/portd.yaml and /sys/fs/bpf; nothing of the host's is read or written).
//! The sessions' daemons keep their table on exit (`on_exit: keep`, as packaged).
//!
//! Placeholders in shown output: runs of spaces compare as one (column widths follow the
//! values) and the PACKETS and BYTES of a status table stand for any count.
//!
//! The docs steer the test with a note right before a block, `<!-- doc-test: ... -->` in
//! Markdown and `.\" doc-test: ...` lines in roff, whose directives are separated by `; `:
//!
//! - `config`: the block is the daemon configuration's (grants), for the session's portd;
//! - `file=PATH ...`: the block is written to each PATH (relative: the working directory;
//!   `/home/USER/...`: that user's home), owned by the block's user; with `apply`, that
//!   user then runs `portctl apply PATH` (exit 0);
//! - `user=NAME`: the block's commands run as NAME with its groups (default root);
//! - `app=PORT`: before the block, an application of the block's user listens on PORT
//!   (both families) and answers `hello from USER; local port N`;
//! - `client(PROG ...)`: lines of these programs run in the client's namespace (the
//!   README's addresses, 10.251.0.1 and fd00:251::1, are the server's);
//! - `exit(COMMAND): N`: that command exits N (every other command: 0);
//! - `not-run: REASON`, `not-run(PROG ...): REASON`: the block, or its lines of these
//!   programs, cannot run here; the test lists them with the reason (to the end of the
//!   note's line), never skipping a line in silence;
//! - `stand-in(COMMAND): WHAT`: the test does WHAT instead of COMMAND (the one stand-in:
//!   stopping portd's units is the test stopping its portd); such blocks run last.
//!
//! The guides under docs/ are checked by doc_examples.rs (YAML parses, commands parse).

use portd_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

mod doc_common;
use doc_common::*;

/// What a block's note asks for.
#[derive(Debug, Default)]
struct Note {
    config: bool,
    files: Vec<String>,
    apply: bool,
    user: Option<String>,
    app: Option<u16>,
    client: Vec<String>,
    exits: Vec<(String, i32)>,
    not_run: Option<String>,
    not_run_progs: Vec<(Vec<String>, String)>,
    stand_ins: Vec<(String, String)>,
}

fn parse_note(file: &str, line: usize, note: &str) -> Note {
    let mut n = Note::default();
    fn unknown(file: &str, line: usize, d: &str) -> ! {
        panic!("{file}:{line}: unknown doc-test directive `{d}`")
    }
    for l in note.lines() {
        let mut rest = l.trim();
        while !rest.is_empty() {
            // A reason runs to the end of the line.
            if let Some(r) = rest.strip_prefix("not-run: ") {
                n.not_run = Some(r.to_string());
                break;
            }
            if let Some(r) = rest.strip_prefix("not-run(") {
                let (progs, reason) = r.split_once("): ").unwrap_or_else(|| unknown(file, line, rest));
                n.not_run_progs.push((progs.split_whitespace().map(String::from).collect(), reason.to_string()));
                break;
            }
            if let Some(r) = rest.strip_prefix("stand-in(") {
                let (cmd, what) = r.split_once("): ").unwrap_or_else(|| unknown(file, line, rest));
                n.stand_ins.push((cmd.to_string(), what.to_string()));
                break;
            }
            let (d, tail) = rest.split_once("; ").unwrap_or((rest, ""));
            rest = tail;
            if d == "config" {
                n.config = true;
            } else if d == "apply" {
                n.apply = true;
            } else if d.starts_with("file=") {
                for f in d.split_whitespace() {
                    n.files.push(f.strip_prefix("file=").unwrap_or_else(|| unknown(file, line, d)).to_string());
                }
            } else if let Some(u) = d.strip_prefix("user=") {
                n.user = Some(u.to_string());
            } else if let Some(p) = d.strip_prefix("app=") {
                n.app = Some(p.parse().unwrap_or_else(|_| unknown(file, line, d)));
            } else if let Some(p) = d.strip_prefix("client(").and_then(|p| p.strip_suffix(')')) {
                n.client.extend(p.split_whitespace().map(String::from));
            } else if let Some(e) = d.strip_prefix("exit(") {
                let (cmd, code) = e.split_once("): ").unwrap_or_else(|| unknown(file, line, d));
                n.exits.push((cmd.to_string(), code.parse().unwrap_or_else(|_| unknown(file, line, d))));
            } else {
                unknown(file, line, d);
            }
        }
    }
    n
}

/// Output as compared: spaces collapsed, a status table's counters replaced, trailing
/// blank lines dropped.
fn normalize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut packets: Option<usize> = None;
    for line in text.lines() {
        let mut toks: Vec<&str> = line.split_whitespace().collect();
        if toks.first() == Some(&"OWNER") {
            packets = toks.iter().position(|t| *t == "PACKETS").filter(|p| toks.get(p + 1) == Some(&"BYTES"));
        } else if toks.is_empty() {
            packets = None;
        } else if let Some(p) = packets.filter(|p| toks.len() > p + 2) {
            toks[p] = "N";
            toks[p + 1] = "N";
            if ["B", "KiB", "MiB", "GiB"].contains(&toks[p + 2]) {
                toks[p + 2] = "U";
            }
        }
        out.push(toks.join(" "));
    }
    while out.last().is_some_and(String::is_empty) {
        out.pop();
    }
    out
}

/// One running session: a namespace pair, portd, the commands' directories.
struct Session {
    net: Net,
    daemon: Option<Portd>,
    work: PathBuf,
    homes: PathBuf,
    /// The walk-through's user, who owns the working directory and its files.
    owner: String,
    apps: Vec<Bg>,
    ran: usize,
    not_run: Vec<String>,
    failures: Vec<String>,
}

const RUNNER: &str = r#"#!/bin/sh
# One documented command line, run as written (see tests/tests/doc_run.rs).
mount -t tmpfs -o mode=0755 doc-home /home || exit 97
cp -a "$DOC_HOMES"/. /home/ || exit 97
cd "$DOC_WORK" || exit 97
exec 2>&1
exec setpriv --reuid="$DOC_USER" --regid="$(id -g "$DOC_USER")" --init-groups -- \
    env -i PATH="$DOC_PATH" PORTD_SOCKET="$PORTD_SOCKET" HOME="$DOC_WORK" sh -c "$DOC_LINE"
"#;

fn chown(path: &Path, user: &str) {
    let o = sh("chown", &["-R", user, path.to_str().expect("utf-8 path")]);
    assert!(o.status.success(), "chown {user} {}: {}", path.display(), err(&o));
}

fn mode(path: &Path, m: u32) {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(m)).expect("chmod");
}

impl Session {
    /// Namespaces, directories and the `portd` of the commands' PATH; `owner` owns the
    /// working directory (the walk-through's user).
    fn new(owner: &str) -> Session {
        let net = Net::setup();
        mode(&net.dir, 0o755);
        // The README's addresses (those of scripts/demo) on the same veth pair.
        net.exec_ok(&net.srv, "ip", &["addr", "add", "10.251.0.1/24", "dev", "vsrv"]);
        net.exec_ok(&net.srv, "ip", &["addr", "add", "fd00:251::1/64", "dev", "vsrv", "nodad"]);
        net.exec_ok(&net.cli, "ip", &["addr", "add", "10.251.0.2/24", "dev", "vcli"]);
        net.exec_ok(&net.cli, "ip", &["addr", "add", "fd00:251::2/64", "dev", "vcli", "nodad"]);
        let bin_dir = net.dir.join("bin");
        let (work, homes) = (net.dir.join("work"), net.dir.join("homes"));
        for d in [&bin_dir, &work, &homes] {
            std::fs::create_dir_all(d).expect("scratch dir");
            mode(d, 0o755);
        }
        chown(&work, owner);
        let wrapper = format!(
            "#!/bin/sh\n# The test's portd: its config and bpffs unless the line names others.\ncase \" $* \" in *\" --config\"*) exec {real} \"$@\";; esac\nexec {real} --config {cfg} --bpffs {bpffs} \"$@\"\n",
            real = bin("portd").display(),
            cfg = net.dir.join("portd.yaml").display(),
            bpffs = net.bpffs().display()
        );
        write(&bin_dir, "portd", &wrapper);
        mode(&bin_dir.join("portd"), 0o755);
        std::os::unix::fs::symlink(bin("portctl"), bin_dir.join("portctl")).expect("symlink portctl");
        write(&net.dir, "runner.sh", RUNNER);
        Session {
            net,
            daemon: None,
            work,
            homes,
            owner: owner.into(),
            apps: Vec::new(),
            ran: 0,
            not_run: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Starts portd from the `config` blocks, with the test's settings and `on_exit: keep`.
    fn start(&mut self, blocks: &[&Block]) {
        let grants: String = blocks
            .iter()
            .filter(|b| b.note.as_deref().is_some_and(|n| n.lines().any(|l| l.trim() == "config")))
            .flat_map(|b| b.text.lines().filter(|l| !l.starts_with("version:")).map(|l| format!("{l}\n")))
            .collect();
        assert!(!grants.is_empty(), "no `doc-test: config` block for this session");
        let text = config(&self.net, &grants).replacen("settings:\n", "settings:\n  on_exit: keep\n", 1);
        self.daemon = Some(Portd::start_bpf(&self.net, &text, &[]));
    }

    /// Runs one command line; returns its exit code and output.
    fn run(&self, line: &str, user: &str, ns: &str) -> (i32, String) {
        let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", self.net.dir.join("bin").display());
        let socket = self.net.dir.join("portd.sock");
        let o = self
            .net
            .nsenter(ns, "unshare")
            .args(["--mount", "--propagation", "private", "sh"])
            .arg(self.net.dir.join("runner.sh"))
            .env("DOC_HOMES", &self.homes)
            .env("DOC_WORK", &self.work)
            .env("DOC_USER", user)
            .env("DOC_PATH", path)
            .env("DOC_LINE", line)
            .env("PORTD_SOCKET", socket)
            .output()
            .expect("run a documented command");
        let code = o.status.code().unwrap_or(-1);
        assert_ne!(code, 97, "the runner could not prepare `{line}`: {}", out(&o));
        (code, out(&o))
    }

    /// An app of `user` on `port`, both families, as the walk-through starts it.
    fn app(&mut self, user: &str, port: u16) {
        let script = write(
            &self.net.dir,
            &format!("app-{port}.sh"),
            "#!/bin/sh\necho \"hello from $(id -un); local port $SOCAT_SOCKPORT\"\n",
        );
        mode(&script, 0o755);
        let listen = format!("TCP6-LISTEN:{port},fork,reuseaddr,ipv6only=0");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.net.srv, "setpriv", &format!("--reuid={user}")])
            .arg(format!("--regid={}", out(&sh("id", &["-g", user])).trim()))
            .args(["--init-groups", "socat", &listen, &format!("EXEC:{}", script.display())])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("socat");
        self.apps.push(Bg(child));
        let net = &self.net;
        wait_for(|| net.exec(&net.srv, "ss", &["-Htln", &format!("sport = :{port}")]).stdout.len() > 1, "the app");
    }

    /// Writes a file block where its note puts it: in the working directory, the
    /// walk-through user's; in a home, its user's.
    fn place(&self, path: &str, text: &str) -> PathBuf {
        let p = match path.strip_prefix("/home/") {
            Some(rest) => self.homes.join(rest),
            None => self.work.join(path),
        };
        let dir = p.parent().expect("a file in a directory");
        std::fs::create_dir_all(dir).expect("home dir");
        std::fs::write(&p, format!("{text}\n")).expect("write doc file");
        if let Some(rest) = path.strip_prefix("/home/") {
            let home = rest.split('/').next().expect("user");
            chown(&self.homes.join(home), home);
        } else {
            chown(&p, &self.owner);
        }
        p
    }

    /// Runs one block.
    fn block(&mut self, b: &Block) {
        let at = format!("{}:{}", b.file, b.line);
        let note = b.note.as_deref().map(|n| parse_note(&b.file, b.line, n)).unwrap_or_default();
        let user = note.user.clone().unwrap_or_else(|| "root".into());
        let lines: Vec<(String, Option<String>)> = match b.kind {
            Kind::Commands => b.text.lines().filter(|l| !l.trim().is_empty()).map(|l| (l.to_string(), None)).collect(),
            Kind::Console => console(&b.text),
            Kind::Yaml => {
                for f in &note.files {
                    self.place(f, &b.text);
                }
                if note.apply {
                    let f = note.files.first().unwrap_or_else(|| panic!("{at}: `apply` without a file"));
                    self.check(&at, &format!("portctl apply {f}"), &user, "", 0, None);
                }
                return;
            }
            Kind::Skip => return,
        };
        if let Some(reason) = &note.not_run {
            self.not_run.extend(lines.iter().map(|(l, _)| format!("{at}: `{l}`: {reason}")));
            return;
        }
        if let Some(port) = note.app {
            self.app(&user, port);
        }
        for (line, shown) in lines {
            let prog = words(&line).into_iter().next().unwrap_or_default();
            let mut run = line.clone();
            if let Some((cmd, _)) = note.stand_ins.iter().find(|(c, _)| line.starts_with(c.as_str())) {
                assert_eq!(cmd, "systemctl stop portd.socket portd.service", "{at}: no such stand-in");
                if let Some(mut d) = self.daemon.take() {
                    d.signal("TERM");
                    assert_eq!(d.wait(), Some(0), "{at}: portd stops cleanly");
                }
                run = line[cmd.len()..].trim_start().trim_start_matches("&&").trim().to_string();
            } else if let Some((_, reason)) = note.not_run_progs.iter().find(|(p, _)| p.contains(&prog)) {
                self.not_run.push(format!("{at}: `{line}`: {reason}"));
                continue;
            }
            let expected = note.exits.iter().find(|(c, _)| *c == line).map_or(0, |(_, n)| *n);
            let (ns, who) = if note.client.contains(&prog) {
                (self.net.cli.clone(), "root")
            } else {
                (self.net.srv.clone(), &*user)
            };
            self.check(&at, &run, who, &ns, expected, shown.as_deref());
            if run != line && run.starts_with("portd --remove-table") {
                assert!(self.net.table("portd").is_none(), "{at}: the table is still there after `{line}`");
            }
        }
    }

    /// Runs `line` and records a failure when its exit code or output differ.
    fn check(&mut self, at: &str, line: &str, user: &str, ns: &str, expected: i32, shown: Option<&str>) {
        let ns = if ns.is_empty() { self.net.srv.clone() } else { ns.to_string() };
        let (code, output) = self.run(line, user, &ns);
        self.ran += 1;
        if code != expected {
            self.failures.push(format!("{at}: `{line}` as {user} exited {code}, not {expected}:\n{output}"));
        }
        if let Some(shown) = shown {
            if normalize(shown) != normalize(&output) {
                self.failures
                    .push(format!("{at}: `{line}` as {user}: the docs show\n{shown}\n--- but it printed\n{output}"));
            }
        }
    }

    /// Runs the blocks (those with a stand-in last) and fails with every difference.
    fn finish(mut self, name: &str, blocks: Vec<&Block>) {
        let (last, first): (Vec<&Block>, Vec<&Block>) =
            blocks.into_iter().partition(|b| b.note.as_deref().is_some_and(|n| n.contains("stand-in(")));
        for b in first.iter().chain(&last) {
            self.block(b);
        }
        eprintln!("{name}: ran {} command(s); not run:", self.ran);
        for n in &self.not_run {
            eprintln!("  {n}");
        }
        let log = Portd::log(&self.net);
        assert!(self.failures.is_empty(), "{}\n\nportd's log:\n{log}", self.failures.join("\n\n"));
        assert!(self.ran >= 10, "{name}: only {} commands ran: the reader changed?", self.ran);
    }
}

/// A console block's commands, each with the output shown after it.
fn console(text: &str) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for l in text.lines() {
        match (l.strip_prefix("$ "), out.last_mut()) {
            (Some(cmd), _) => out.push((cmd.to_string(), Some(String::new()))),
            (None, Some((_, Some(shown)))) => {
                shown.push_str(l);
                shown.push('\n');
            }
            (None, _) => panic!("console block output before any command: {l}"),
        }
    }
    out
}

/// The blocks a session reads: commands, console sessions and YAML.
fn runnable(blocks: &[Block]) -> Vec<&Block> {
    blocks.iter().filter(|b| b.kind != Kind::Skip).collect()
}

#[test]
fn the_readme_walk_through_runs_as_shown() {
    let blocks = markdown_blocks("README.md");
    let mut session = Session::new("nobody");
    let blocks = runnable(&blocks);
    session.start(&blocks);
    session.finish("README.md", blocks);
}

/// A group the man pages name, made for the test and removed after.
struct TestGroup(&'static str);

impl TestGroup {
    fn new(name: &'static str, members: &[&str]) -> TestGroup {
        let o = sh("groupadd", &["--system", name]);
        assert!(o.status.success(), "groupadd {name}: {}", err(&o));
        for m in members {
            let o = sh("usermod", &["-aG", name, m]);
            assert!(o.status.success(), "usermod -aG {name} {m}: {}", err(&o));
        }
        TestGroup(name)
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _ = sh("groupdel", &[self.0]);
    }
}

#[test]
fn the_man_pages_examples_run() {
    let web = TestUser::named("web");
    let _deploy = TestGroup::new("deploy", &[&web.name]);
    let mut all = Vec::new();
    for man in ["man/portd.yaml.5", "man/portctl.1", "man/portd.8"] {
        all.extend(man_blocks(man).into_iter().filter(|b| b.section == "EXAMPLES" || b.section == "STOP AND REMOVE"));
    }
    let mut session = Session::new(&web.name);
    let blocks = runnable(&all);
    session.start(&blocks);
    // The rules file of portd.yaml(5) is applied after portctl(1)'s examples, which
    // change web's set one forward at a time.
    let (yaml5, rest): (Vec<&Block>, Vec<&Block>) =
        blocks.into_iter().partition(|b| b.file == "man/portd.yaml.5" && b.note.as_deref() != Some("config"));
    let mut ordered: Vec<&Block> = rest.iter().copied().filter(|b| b.file != "man/portd.8").collect();
    ordered.extend(yaml5);
    ordered.extend(rest.iter().copied().filter(|b| b.file == "man/portd.8"));
    session.finish("man pages", ordered);
}
