//! The control server's limits, as the README states them: a request must arrive within
//! 10 s, lines over 4 MiB are refused with an error answer, at most 1,024 connections are
//! served at once (more wait in the backlog), an answer lists at most 500 forwards of
//! each kind and says how many more there were.

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

#[test]
fn connection_1025_waits_and_is_then_served() {
    raise_nofile();
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, ""));
    let pid = d.child.id();
    std::thread::sleep(Duration::from_millis(300));
    let base = socket_fds(pid);
    // 1,024 connections (root's: per-user caps do not apply to root), all accepted.
    let mut held: Vec<UnixStream> = (0..1024).map(|_| UnixStream::connect(&d.socket).expect("connect")).collect();
    let t = Instant::now();
    while socket_fds(pid) < base + 1024 {
        assert!(t.elapsed() < Duration::from_secs(5), "portd holds {} connections, not 1,024", socket_fds(pid) - base);
        std::thread::sleep(Duration::from_millis(20));
    }
    // The 1,025th connects (the listen backlog) and sends a request, but is not served...
    let mut extra = UnixStream::connect(&d.socket).expect("connection 1025");
    extra.write_all(STATUS).expect("write");
    extra.write_all(b"\n").expect("write");
    extra.set_read_timeout(Some(Duration::from_millis(1_000))).expect("timeout");
    let mut buf = [0u8; 64];
    match extra.read(&mut buf) {
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
        other => panic!("connection 1025 was served while 1,024 were open: {other:?}"),
    }
    assert_eq!(socket_fds(pid), base + 1024, "portd holds exactly the cap");
    // ...until one of the 1,024 goes away.
    let freed = Instant::now();
    drop(held.pop());
    extra.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    let answer = read_answer(&extra);
    assert!(answer.contains("\"ok\""), "{answer}");
    println!("connection 1025 served {:?} after a slot was freed", freed.elapsed());
    drop(held);
}
