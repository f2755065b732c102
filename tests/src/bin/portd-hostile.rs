//! A hostile control-socket client for the hardening tests, run as an unprivileged user
//! (through setpriv) so the daemon sees that user's uid:
//!
//!     portd-hostile noread SOCKET N       N connections that send status requests and never read
//!     portd-hostile unterminated SOCKET N BYTES   N connections each sending BYTES with no newline
//!
//! It prints `connected K` once its connections are open, then holds them until killed.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: portd-hostile noread|unterminated SOCKET N [BYTES]";
    let (Some(mode), Some(socket), Some(n)) = (args.get(1), args.get(2), args.get(3).and_then(|n| n.parse().ok()))
    else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let n: usize = n;
    let mut held = Vec::new();
    let mut threads = Vec::new();
    match mode.as_str() {
        "noread" => {
            let line = b"{\"version\":1,\"command\":{\"op\":\"status\"}}\n".repeat(2000);
            for _ in 0..n {
                let Ok(mut s) = UnixStream::connect(socket) else { continue };
                let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
                let _ = s.write_all(&line);
                held.push(s);
            }
        }
        "unterminated" => {
            let bytes: usize = args.get(4).and_then(|b| b.parse().ok()).unwrap_or(4 << 20);
            for _ in 0..n {
                let Ok(s) = UnixStream::connect(socket) else { continue };
                let mut w = match s.try_clone() {
                    Ok(w) => w,
                    Err(_) => continue,
                };
                held.push(s);
                threads.push(std::thread::spawn(move || {
                    let chunk = vec![b'x'; 64 * 1024];
                    let mut sent = 0;
                    while sent < bytes {
                        if w.write_all(&chunk[..chunk.len().min(bytes - sent)]).is_err() {
                            break;
                        }
                        sent += chunk.len();
                    }
                }));
            }
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
    println!("connected {}", held.len());
    let _ = std::io::stdout().flush();
    for t in threads {
        let _ = t.join();
    }
    println!("sent");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}
