//! What a change goes through before it is acknowledged: the kernel batch, then an
//! fdatasync'ed (or fsync'ed) state file, then the answer; and when the state cannot be
//! written, the kernel is put back and nothing is acknowledged.
//!
//! `kill -9` keeps the page cache, so the crash test in reliability.rs would pass without
//! any sync; the syscall trace here would not.

use portd_tests::*;
use std::process::{Command, Stdio};

/// One event of the trace that matters here.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ev {
    /// An nf_tables batch was sent (the kernel commits it within the call).
    Batch,
    /// A state file was synced.
    Sync,
    /// A "changed" answer was sent to a client.
    Answer,
}

/// Reads an `strace -f -yy` log into events, in the order the calls completed (batches,
/// syncs) or started (answers).
fn events(trace: &str, state_dir: &str) -> Vec<(Ev, String)> {
    let mut pending: std::collections::HashMap<String, String> = Default::default();
    let mut evs = Vec::new();
    for line in trace.lines() {
        let (pid, rest) = line.split_once(' ').unwrap_or(("", line));
        let rest = rest.trim_start();
        let full = if let Some(start) = rest.strip_suffix(" <unfinished ...>") {
            // The answer counts from its start; the others once they returned.
            if start.contains("UNIX-STREAM") && start.contains("\\\"kind\\\":\\\"changed\\\"") {
                evs.push((Ev::Answer, start.chars().take(120).collect()));
            }
            pending.insert(pid.to_string(), start.to_string());
            continue;
        } else if rest.starts_with("<... ") {
            let Some(start) = pending.remove(pid) else { continue };
            let end = rest.split_once("resumed>").map_or("", |(_, e)| e);
            if start.contains("UNIX-STREAM") {
                continue;
            }
            format!("{start}{end}")
        } else {
            rest.to_string()
        };
        let ok = full.trim_end().rsplit_once(" = ").is_some_and(|(_, r)| !r.starts_with('-'));
        let head: String = full.chars().take(160).collect();
        if (full.starts_with("sendto(") || full.starts_with("sendmsg("))
            && full.contains("NETLINK:[NETFILTER")
            && full.contains("NFNL_MSG_BATCH_BEGIN")
            && ok
        {
            evs.push((Ev::Batch, head));
        } else if (full.starts_with("fdatasync(") || full.starts_with("fsync(")) && full.contains(state_dir) && ok {
            evs.push((Ev::Sync, head));
        } else if full.contains("UNIX-STREAM") && full.contains("\\\"kind\\\":\\\"changed\\\"") {
            evs.push((Ev::Answer, head));
        }
    }
    evs
}

#[test]
fn every_change_is_in_the_kernel_then_synced_then_answered() {
    let net = Net::setup();
    let cfg = config(&net, "");
    let config_path = write(&net.dir, "portd.yaml", &cfg);
    let trace = net.dir.join("trace");
    let o = sh("strace", &["-V"]);
    assert!(o.status.success(), "strace is needed (apt-get install strace; tests/run installs it)");
    let child = Command::new("ip")
        .args(["netns", "exec", &net.srv, "strace", "-f", "-yy", "-s", "256", "-e"])
        .arg("trace=sendmsg,sendto,write,writev,fdatasync,fsync")
        .arg("-o")
        .arg(&trace)
        .arg(bin("portd"))
        .arg("--config")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(net.dir.join("portd.log")).expect("log"))
        .spawn()
        .expect("strace portd");
    let mut d = Portd { child, socket: net.dir.join("portd.sock"), config: config_path, state: net.dir.join("state") };
    d.wait_ready(&net);
    // Every kind of change: add, remove, apply (a few forwards, then one with enough to
    // write a new snapshot instead of a journal line).
    let mut changes = 0;
    for (i, port) in [80u16, 81, 82].into_iter().enumerate() {
        let o = d.ctl(&["add", &format!("a{i}"), &port.to_string(), &(8000 + port).to_string()]);
        assert!(o.status.success(), "{}", err(&o));
        changes += 1;
    }
    for name in ["a0", "a1"] {
        assert!(d.ctl(&["remove", name]).status.success());
        changes += 1;
    }
    let mut big = String::from("version: 1\nforwards:\n");
    for i in 0..2_000 {
        big.push_str(&format!("  - name: f{i}\n    port: {}\n    to: {}\n", 10_000 + i, 30_000 + i));
    }
    for text in ["version: 1\nforwards:\n  - name: x\n    port: 90\n    to: 9090\n", big.as_str()] {
        let f = write(&net.dir, "r.yaml", text);
        let o = d.ctl(&["apply", f.to_str().expect("p")]);
        assert!(o.status.success(), "{}", err(&o));
        changes += 1;
    }
    // Stop portd (strace's child); strace exits with it.
    let strace_pid = d.child.id();
    let children = read(std::path::Path::new(&format!("/proc/{strace_pid}/task/{strace_pid}/children")));
    let portd_pid = children.split_whitespace().next().unwrap_or_else(|| panic!("strace {strace_pid} has no child"));
    let o = sh("kill", &["-TERM", portd_pid]);
    assert!(o.status.success(), "kill {portd_pid}: {}", err(&o));
    assert_eq!(d.wait(), Some(0), "portd under strace exited cleanly");
    let log = std::fs::read_to_string(&trace).expect("trace");
    let state_dir = net.dir.join("state").display().to_string();
    let evs = events(&log, &state_dir);
    let answers: Vec<usize> = evs.iter().enumerate().filter(|(_, (e, _))| *e == Ev::Answer).map(|(i, _)| i).collect();
    assert_eq!(answers.len(), changes, "one changed answer per change; events: {evs:#?}");
    let mut from = 0;
    for (n, &a) in answers.iter().enumerate() {
        let seg = &evs[from..a];
        let batch = seg.iter().rposition(|(e, _)| *e == Ev::Batch);
        let Some(batch) = batch else { panic!("change {n}: no kernel batch before its answer: {seg:#?}") };
        assert!(
            seg[batch..].iter().any(|(e, _)| *e == Ev::Sync),
            "change {n}: no fdatasync/fsync of the state between the kernel batch and the answer: {seg:#?}"
        );
        from = a + 1;
    }
    println!("durability: {changes} changes, each a kernel batch, then a synced state file, then the answer");
}

/// A tmpfs mounted on a directory, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let o =
            sh("mount", &["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs", dir.to_str().expect("p")]);
        assert!(o.status.success(), "mount tmpfs on {}: {}", dir.display(), err(&o));
        Tmpfs(dir.to_path_buf())
    }

    /// Fills the filesystem until not one page is left; returns the filler file.
    fn fill(&self) -> std::path::PathBuf {
        let filler = self.0.join("filler");
        let o = sh("dd", &["if=/dev/zero", &format!("of={}", filler.display()), "bs=4096"]);
        assert!(
            !o.status.success() && err(&o).contains("No space left"),
            "dd did not fill {}: {}",
            self.0.display(),
            err(&o)
        );
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = sh("umount", &["-l", self.0.to_str().unwrap_or("")]);
    }
}

#[test]
fn a_failed_state_write_puts_the_kernel_back() {
    let net = Net::setup();
    let state = net.dir.join("state");
    let fs = Tmpfs::mount(&state, "1m");
    // A set on disk before start, so the journal starts empty: the next change needs a
    // new page of the full filesystem.
    std::fs::write(
        state.join("sets.json"),
        r#"{"version":1,"sets":{"user:root":[{"name":"http","port":80,"to":8080}]}}"#,
    )
    .expect("state");
    let cfg = config(&net, "");
    let d = Portd::start(&net, &cfg);
    let table = net.table("portd").expect("table");
    let export = out(&d.ctl(&["export"]));
    assert!(export.contains("name: http"), "{export}");
    let filler = fs.fill();

    // Each kind of change fails once the kernel has it, and is undone.
    let f = write(&net.dir, "r.yaml", "version: 1\nforwards:\n  - name: http\n    port: 80\n    to: 9090\n  - name: new\n    port: 81\n    to: 8181\n");
    for args in [vec!["apply", f.to_str().expect("p")], vec!["add", "extra", "82", "8282"], vec!["remove", "http"]] {
        let o = d.ctl(&args);
        assert_ne!(o.status.code(), Some(0), "{args:?} succeeded with a full state directory");
        assert!(err(&o).contains("sets.journal") || err(&o).contains("state"), "{args:?}: {}", err(&o));
        assert_eq!(net.table("portd").as_deref(), Some(table.as_str()), "{args:?}: the kernel table is byte-identical");
        let js = d.status_json();
        assert_eq!(js["in_sync"], true, "{args:?}: {js}");
        assert_eq!(placed_names(&js), vec!["user:root/http"], "{args:?}");
        assert_eq!(out(&d.ctl(&["export"])), export, "{args:?}: export unchanged");
    }
    // A restart shows none of the refused changes.
    drop(d);
    std::fs::remove_file(&filler).expect("free the space");
    let _ = net.exec(&net.srv, "nft", &["delete", "table", "inet", "portd"]);
    let d = Portd::start(&net, &cfg);
    assert_eq!(out(&d.ctl(&["export"])), export, "after a restart");
    assert_eq!(placed_names(&d.status_json()), vec!["user:root/http"]);
    // With space again, changes are kept.
    let o = d.ctl(&["apply", f.to_str().expect("p")]);
    assert!(o.status.success(), "{}", err(&o));
    drop(d);
    let d = Portd::start(&net, &cfg);
    assert_eq!(placed_names(&d.status_json()), vec!["user:root/http", "user:root/new"]);
    drop(d);
    drop(fs);
}
