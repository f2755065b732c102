//! portctl without a daemon: standard input, `--json` shapes of every outcome, owner
//! checks, completion. Needs no root: the real binary runs in a temp dir.

use serde_json::Value;
use std::io::Write;
use std::process::{Command, Output, Stdio};

const BAD: &str = "version: 1\nforwards:\n  - name: x\n    port: 70000\n    to: 1\n";
const GOOD: &str = "version: 1\nforwards:\n  - name: web\n    port: 80\n    to: 8080\n    description: the shop\n";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env { dir: tempfile::tempdir().expect("temp dir") }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_portctl"));
        c.current_dir(self.dir.path()).env_remove("COMPLETE").env("PORTD_SOCKET", self.dir.path().join("none.sock"));
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run portctl")
    }

    fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn portctl");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        child.wait_with_output().expect("wait portctl")
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write file");
        p.display().to_string()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", text(&o.stdout)))
}

#[test]
fn check_and_plan_read_standard_input() {
    let env = Env::new();
    let o = env.run_stdin(&["check", "-"], BAD);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("<stdin>:4:11: forwards[0].port: 70000 is not a port"), "{}", text(&o.stderr));
    let o = env.run_stdin(&["check", "-"], GOOD);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = env.run_stdin(&["plan", "-"], GOOD);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("table inet portd"), "{}", text(&o.stdout));
}

#[test]
fn check_json_prints_one_object_and_nothing_on_stderr() {
    let env = Env::new();
    let bad = env.file("bad.yaml", BAD);
    let o = env.run(&["check", "--json", &bad]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stderr.is_empty(), "diagnostics repeated on stderr: {}", text(&o.stderr));
    let v = json(&o);
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["kind"], "invalid");
    let d = &v["error"]["diagnostics"][0];
    assert_eq!((d["line"].as_u64(), d["column"].as_u64()), (Some(4), Some(11)), "{v}");
    assert_eq!(d["path"], "forwards[0].port");
    let good = env.file("good.yaml", GOOD);
    let v = json(&env.run(&["check", "--json", &good]));
    assert_eq!((v["ok"].as_bool(), v["forwards"].as_u64()), (Some(true), Some(1)), "{v}");
}

#[test]
fn every_failure_is_json_on_stdout_with_the_usual_exit_code() {
    let env = Env::new();
    let good = env.file("good.yaml", GOOD);
    let bad = env.file("bad.yaml", BAD);
    // (args, exit code, error kind)
    let cases: &[(&[&str], i32, &str)] = &[
        (&["--json", "status"], 3, "unreachable"),
        (&["--json", "apply", &good], 3, "unreachable"),
        // The daemon is down, and the file is invalid: its errors, located.
        (&["--json", "apply", &bad], 1, "invalid"),
        (&["--json", "frobnicate"], 2, "usage"),
        (&["--json", "export", "--owner", "web server"], 2, "usage"),
        (&["--json", "check", "/nonexistent/rules.yaml"], 1, "invalid"),
    ];
    for (args, code, kind) in cases {
        let o = env.run(args);
        assert_eq!(o.status.code(), Some(*code), "{args:?}: {}", text(&o.stderr));
        assert!(o.stderr.is_empty(), "{args:?} wrote to stderr: {}", text(&o.stderr));
        let v = json(&o);
        assert_eq!(v["ok"], false, "{args:?}: {v}");
        assert_eq!(v["error"]["kind"], *kind, "{args:?}: {v}");
        assert!(!v["error"]["messages"].as_array().expect("messages").is_empty(), "{args:?}: {v}");
    }
    let v = json(&env.run(&["--json", "apply", &bad]));
    assert_eq!(v["error"]["diagnostics"][0]["line"], 4, "{v}");
}

#[test]
fn owners_are_checked_the_same_way_by_every_command() {
    let env = Env::new();
    let good = env.file("good.yaml", GOOD);
    for args in [
        vec!["export", "--owner", "web server"],
        vec!["apply", "--owner", "web server", &good],
        vec!["diff", "--owner", "web server", &good],
        vec!["status", "--owner", "web server"],
        vec!["remove", "--owner", "web server", "web"],
        vec!["add", "--owner", "web server", "web", "80", "8080"],
    ] {
        let o = env.run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains("owners are `system`, `user:NAME` or a user NAME"),
            "{args:?}: {}",
            text(&o.stderr)
        );
    }
    // A bare user name means `user:NAME`: it goes on to the daemon (here: unreachable, exit 3).
    for args in [
        vec!["export", "--owner", "root"],
        vec!["apply", "--owner", "root", &good],
        vec!["diff", "--owner", "root", &good],
        vec!["status", "--owner", "root"],
        vec!["remove", "--owner", "root", "web"],
        vec!["add", "--owner", "root", "web", "80", "8080"],
    ] {
        let o = env.run(&args);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", text(&o.stderr));
    }
    // A user that does not exist cannot be given forwards.
    for args in [
        vec!["apply", "--owner", "user:nosuchuser-pd", &good],
        vec!["add", "--owner", "user:nosuchuser-pd", "w", "80", "8080"],
        vec!["add", "--owner", "nosuchuser-pd", "w", "80", "8080"],
    ] {
        let o = env.run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(text(&o.stderr).contains("no user `nosuchuser-pd`"), "{args:?}: {}", text(&o.stderr));
    }
    // A well-formed owner goes on to the daemon (here: unreachable, exit 3).
    assert_eq!(env.run(&["export", "--owner", "user:root"]).status.code(), Some(3));
    assert_eq!(env.run(&["status", "--owner", "system"]).status.code(), Some(3));
}

#[test]
fn add_validates_descriptions_offline() {
    let env = Env::new();
    let long = "x".repeat(201);
    let o = env.run(&["add", "web", "80", "8080", "--description", &long]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("description has 201 characters; the limit is 200"), "{}", text(&o.stderr));
    let o = env.run(&["add", "web", "80", "8080", "--description", "bell\u{7}"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("control character"), "{}", text(&o.stderr));
    // Valid: reaches for the daemon.
    assert_eq!(env.run(&["add", "web", "80", "8080", "--description", "the shop", "--dry-run"]).status.code(), Some(3));
}

#[test]
fn completion_is_silent_when_the_daemon_is_down() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let o = env.run(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0));
        assert!(text(&o.stdout).contains("COMPLETE="), "{shell}: {}", text(&o.stdout));
    }
    // fish asks with the words so far; subcommands come from the CLI itself...
    let o = env.cmd().env("COMPLETE", "fish").args(["--", "portctl", "rem"]).output().expect("complete");
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).lines().any(|l| l.starts_with("remove")), "{}", text(&o.stdout));
    // ...forward names and owners from the daemon, which is down: no candidates, no noise.
    for args in [&["--", "portctl", "remove", ""][..], &["--", "portctl", "status", "--owner", ""][..]] {
        let o = env.cmd().env("COMPLETE", "fish").args(args).output().expect("complete");
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert!(o.stderr.is_empty(), "{args:?}: {}", text(&o.stderr));
        let names: Vec<String> = text(&o.stdout).lines().filter(|l| !l.starts_with('-')).map(String::from).collect();
        assert!(names.iter().all(|l| l.starts_with("system")), "{args:?}: {names:?}");
    }
}

/// One exit code per class of mistake: every invalid value of a forward is refused before
/// anything is sent, all at once, with 1 (as an invalid file is); a command line that
/// does not parse is 2.
#[test]
fn add_refuses_invalid_values_as_one_class_before_sending() {
    let env = Env::new();
    let cases: &[(&[&str], &str)] = &[
        (&["add", "x", "70000", "8080"], "port: 70000 is not a port"),
        (&["add", "Bad Name", "80", "8080"], "name: `Bad Name` is not a valid name"),
        (&["add", "x", "80", "70000"], "to: 70000 is not a port"),
        (&["add", "x", "80", "80"], "to: target 80 is the public port itself"),
        (&["add", "x", "80", "8080", "--mark", "0x1ffffffff"], "mark: `0x1ffffffff` is not a 32-bit mark"),
        (&["add", "x", "80", "8080", "--source", "300.1.1.1"], "sources: `300.1.1.1` is not an address or network"),
    ];
    for (args, want) in cases {
        let o = env.run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains(want), "{args:?}: {}", text(&o.stderr));
        let v = json(&env.run(&[&["--json"][..], args].concat()));
        assert_eq!(v["error"]["kind"], "invalid", "{args:?}: {v}");
    }
    // Every problem at once.
    let o = env.run(&["add", "Bad Name", "70000", "8080", "--source", "nonsense"]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("port: 70000") && e.contains("name: `Bad Name`") && e.contains("sources: `nonsense`"), "{e}");
    // The command line itself: usage, 2.
    for args in [
        &["add", "x", "80"][..],
        &["add", "x", "80", "8080", "--proto", "sctp"][..],
        &["status", "--port", "70000"][..],
        &["remove"][..],
    ] {
        assert_eq!(env.run(args).status.code(), Some(2), "{args:?}");
    }
    // The new flags parse and reach for the daemon (down here: 3).
    let good = env.file("good.yaml", GOOD);
    for args in [
        &["diff", "--exit-code", &good][..],
        &["add", "x", "80", "8080", "--replace"][..],
        &["remove", "x", "--if-exists"][..],
        &["reload", "--dry-run"][..],
        &["grants"][..],
        &["status", "--port", "80"][..],
    ] {
        assert_eq!(env.run(args).status.code(), Some(3), "{args:?}");
    }
}

/// A daemon that answers one request with `answer` (one line), on a socket in `env`.
fn one_answer(env: &Env, answer: &'static str) -> (std::path::PathBuf, std::thread::JoinHandle<String>) {
    use std::io::BufRead;
    let socket = env.dir.path().join("fake.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let served = std::thread::spawn(move || {
        let (s, _) = listener.accept().expect("accept");
        let mut request = String::new();
        std::io::BufReader::new(&s).read_line(&mut request).expect("request");
        (&s).write_all(answer.as_bytes()).expect("answer");
        request
    });
    (socket, served)
}

#[test]
fn an_invalid_file_is_reported_from_the_daemons_located_problems_without_parsing_it_again() {
    let env = Env::new();
    // A file portctl finds valid: what is printed can only come from the answer.
    let path = env.file("rules.yaml", GOOD);
    let answer = r#"{"version":1,"result":{"error":{"kind":"invalid","messages":["3:5: forwards[0].port: said by the daemon"],"file":"rules.yaml","diagnostics":[{"line":3,"column":5,"path":"forwards[0].port","message":"said by the daemon"}]}}}
"#;
    for json_out in [false, true] {
        let (socket, served) = one_answer(&env, answer);
        let mut args = vec!["--socket", socket.to_str().expect("path"), "apply", &path];
        if json_out {
            args.insert(0, "--json");
        }
        let o = env.run(&args);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
        assert!(served.join().expect("served").contains(r#""op":"apply""#));
        let located = format!("{path}:3:5: forwards[0].port: said by the daemon");
        if json_out {
            let v = json(&o);
            assert_eq!(v["error"]["kind"], "invalid", "{v}");
            assert_eq!(v["error"]["messages"], serde_json::json!([located]), "{v}");
            let d = &v["error"]["diagnostics"][0];
            assert_eq!(
                (d["file"].as_str(), d["line"].as_u64(), d["column"].as_u64()),
                (Some(path.as_str()), Some(3), Some(5))
            );
            assert_eq!(
                (d["path"].as_str(), d["message"].as_str()),
                (Some("forwards[0].port"), Some("said by the daemon"))
            );
        } else {
            assert_eq!(text(&o.stderr), format!("{located}\n"));
        }
        std::fs::remove_file(&socket).expect("socket");
    }
}

#[test]
fn an_older_daemons_invalid_file_answer_is_still_located() {
    let env = Env::new();
    let path = env.file("rules.yaml", BAD);
    let answer = r#"{"version":1,"result":{"error":{"kind":"invalid","messages":["4:11: forwards[0].port: old"],"file":"rules.yaml"}}}
"#;
    let (socket, served) = one_answer(&env, answer);
    let o = env.run(&["--socket", socket.to_str().expect("path"), "apply", &path]);
    served.join().expect("served");
    assert_eq!(o.status.code(), Some(1));
    let local = env.run(&["check", &path]);
    assert_eq!(text(&o.stderr), text(&local.stderr), "the file's own problems, as `check` reports them");
}
