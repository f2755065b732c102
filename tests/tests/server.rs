//! The control server's limits: a request must arrive within 10 s, lines over 4 MiB are
//! refused with an error answer, non-root callers share 1,024 connections (64 per uid;
//! more are refused with an answer saying why) while root is always served, an answer
//! lists at most 500 forwards of each kind and says how many more there were.

use portd_tests::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const MAX_LINE: usize = 4 * 1024 * 1024;
const STATUS: &[u8] = b"{\"version\":1,\"command\":{\"op\":\"status\"}}";

fn read_answer(s: &UnixStream) -> String {
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap_or_else(|e| panic!("no answer: {e}"));
    line
}

fn assert_closed(s: &mut UnixStream) {
    let mut rest = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    match s.read_to_end(&mut rest) {
        // Closed, with or without unread data of ours left behind.
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server did not close the connection: {e}"),
    }
}

#[test]
fn a_request_must_arrive_within_the_deadline() {
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, ""));
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    let t = Instant::now();
    s.write_all(b"{\"version\": 1, ").expect("half a request");
    s.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    let line = read_answer(&s);
    let took = t.elapsed();
    assert!(line.contains("\"protocol\"") && line.contains("request not completed within 10s"), "{line}");
    assert!(took >= Duration::from_millis(9_800) && took < Duration::from_secs(12), "deadline answer after {took:?}");
    assert_closed(&mut s);
    assert!(d.ctl(&["status"]).status.success());
}

#[test]
fn an_over_long_line_gets_its_error_answer() {
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, ""));
    // A line of exactly 4 MiB, newline included, is served...
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    let mut line = STATUS.to_vec();
    line.resize(MAX_LINE - 1, b' ');
    line.push(b'\n');
    s.write_all(&line).expect("4 MiB line");
    let answer = read_answer(&s);
    assert!(answer.contains("\"ok\""), "a 4 MiB request is served: {}", &answer[..answer.len().min(300)]);
    // ...one byte more is refused with an error answer.
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    let mut line = STATUS.to_vec();
    line.resize(MAX_LINE, b' ');
    line.push(b'\n');
    s.write_all(&line).expect("4 MiB + 1 line");
    let answer = read_answer(&s);
    assert!(answer.contains("\"protocol\"") && answer.contains("4194304"), "{answer}");
    // A line that goes on past the limit is answered with an error and its connection
    // closed, without reading the rest.
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    let writer = {
        let mut w = s.try_clone().expect("clone");
        std::thread::spawn(move || {
            let chunk = vec![b'a'; 1 << 20];
            let mut written = 0usize;
            while written < 64 << 20 {
                match w.write(&chunk) {
                    Ok(n) => written += n,
                    Err(_) => break,
                }
            }
            written
        })
    };
    let answer = read_answer(&s);
    assert!(answer.contains("\"protocol\"") && answer.contains("request line exceeds 4194304 bytes"), "{answer}");
    assert_closed(&mut s);
    let written = join_all(vec![writer])[0];
    assert!(written < 16 << 20, "the server kept reading past the limit: {written} bytes taken");
    assert!(d.ctl(&["status"]).status.success());
}

#[test]
fn an_answer_lists_at_most_500_forwards_of_each_kind() {
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, ""));
    let mut text = String::from("version: 1\nforwards:\n");
    for i in 0..600 {
        text.push_str(&format!("  - name: f{i}\n    port: {}\n    to: {}\n", 10_000 + i, 20_000 + i));
    }
    let v = request(&d.socket, &apply_request(&text));
    let changed = &v["result"]["ok"];
    assert_eq!(changed["kind"], "changed", "{v}");
    assert_eq!(changed["summary"]["added"].as_array().map(Vec::len), Some(500), "500 listed");
    assert_eq!(changed["omitted"], 100, "and 100 more counted: {}", changed["omitted"]);
    // All 600 were applied all the same.
    assert_eq!(d.status_json()["forwards"].as_array().map(Vec::len), Some(600));
    // Replacing every target: 500 changes listed, 100 more counted.
    let v = request(&d.socket, &apply_request(&text.replace("to: 2", "to: 3")));
    let changed = &v["result"]["ok"];
    assert_eq!(changed["summary"]["changed"].as_array().map(Vec::len), Some(500), "{}", changed["omitted"]);
    assert_eq!(changed["omitted"], 100);
    // portctl says so too.
    let f = write(&net.dir, "empty.yaml", "version: 1\nforwards: []\n");
    let o = d.ctl(&["apply", f.to_str().expect("p")]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("100"), "portctl mentions the 100 forwards not listed: {}", out(&o));
}

/// Non-root uids used for connections (no accounts needed: status and refusals look up
/// no names).
const UID0: u32 = 40_000;

#[test]
fn non_root_connections_are_capped_and_root_is_always_served() {
    raise_nofile();
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, ""));
    let pid = d.child.id();
    std::thread::sleep(Duration::from_millis(300));
    let base = socket_fds(pid);
    // 1,024 non-root connections: 64 (the per-user cap) for each of 16 uids.
    let mut held: Vec<UnixStream> = Vec::new();
    for u in 0..16 {
        for _ in 0..64 {
            held.push(connect_as(UID0 + u, &d.socket).expect("connect"));
        }
    }
    let t = Instant::now();
    while socket_fds(pid) < base + 1024 {
        assert!(t.elapsed() < Duration::from_secs(5), "portd holds {} connections, not 1,024", socket_fds(pid) - base);
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = |uid: u32| {
        let s = connect_as(uid, &d.socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
        let answer = read_answer(&s);
        let mut s = s;
        assert_closed(&mut s);
        answer
    };
    // The 65th connection of one uid is refused, naming the per-user limit...
    let a = refused(UID0);
    assert!(a.contains("\"denied\"") && a.contains("already has 64 connections open"), "{a}");
    // ...and so is the 1,025th non-root connection, of a uid holding none.
    let a = refused(UID0 + 16);
    assert!(a.contains("\"denied\"") && a.contains("portd serves 1024 connections already"), "{a}");
    // Root is always served.
    let v = request(&d.socket, &serde_json::json!({"version": 1, "command": {"op": "status"}}));
    assert!(v["result"]["ok"].is_object(), "root's status with the cap full: {v}");
    // Once one closes, a new non-root connection is served.
    drop(held.pop());
    let t = Instant::now();
    while socket_fds(pid) >= base + 1024 {
        assert!(t.elapsed() < Duration::from_secs(3), "the closed connection's slot was not freed");
        std::thread::sleep(Duration::from_millis(5));
    }
    let freed = Instant::now();
    let mut s = connect_as(UID0 + 16, &d.socket).expect("connect");
    s.write_all(STATUS).expect("write");
    s.write_all(b"\n").expect("write");
    let answer = read_answer(&s);
    assert!(answer.contains("\"ok\""), "{answer}");
    println!(
        "connection cap: 1,024 non-root connections held, the next refused, served again {:?} after a slot was freed",
        freed.elapsed()
    );
    drop(held);
}
