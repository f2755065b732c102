//! Helpers of the steer and ownership tests: a config with a grant, applying as a user,
//! sockets bound as another account, and reading portd's log.
#![allow(dead_code)]

use portd_tests::*;
use std::process::Output;
use std::time::Duration;

/// A config granting `user` public ports 80-81 and targets 8000-9000.
pub fn granted(net: &Net, user: &str, settings: &str) -> String {
    let base = config(net, &format!("grants:\n{}", grant(user, "\"80-81\"")));
    base.replacen("settings:\n", &format!("settings:\n{settings}"), 1)
}

/// One item of `grants:`: `user` may forward `ports` (a YAML list's items, `80` or
/// `"80-81"`) to targets 8000-9000.
pub fn grant(user: &str, ports: &str) -> String {
    format!("  - user: {user}\n    ports: [{ports}]\n    to: \"8000-9000\"\n")
}

/// portd steering the system forward `name` (`port` -> `to`) to a socat app on `to` that
/// answers with the local port its client reached; returns once the app is registered.
pub fn served_system_forward(net: &Net, name: &str, port: u16, to: u16) -> (Portd, Bg) {
    let text = config(net, &format!("forwards:\n  - name: {name}\n    port: {port}\n    to: {to}\n"));
    let d = Portd::start_bpf(net, &text, &[]);
    let app = net.tcp_app(&net.srv, to, "port-$SOCAT_SOCKPORT");
    wait_for(|| forward(&d.status_json(), name)["listening"] == true, "the app to be registered");
    (d, app)
}

/// Applies `yaml` as `user`.
pub fn apply_as(d: &Portd, net: &Net, user: &str, yaml: &str) -> Output {
    let f = write(&net.dir, &format!("{user}.yaml"), yaml);
    std::fs::set_permissions(&net.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod dir");
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod file");
    d.ctl_as(user, "", &["apply", f.to_str().expect("utf-8")])
}

pub fn web(port: u16, to: u16) -> String {
    format!("version: 1\nforwards:\n  - name: web\n    port: {port}\n    to: {to}\n")
}

pub fn forward<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["forwards"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["forward"]["name"] == name))
        .unwrap_or_else(|| panic!("no forward {name} in {status}"))
}

/// Runs a Python snippet in the server namespace as `user` (None: root); returns stdout.
pub fn py_as(net: &Net, user: Option<&str>, code: &str) -> Output {
    py_command_as(net, user, code).output().expect("python3")
}

/// [`py_as`] in the background, its output piped.
pub fn spawn_py_as(net: &Net, user: &str, code: &str) -> std::process::Child {
    let mut c = py_command_as(net, Some(user), code);
    c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("python3")
}

/// The command that runs a Python snippet in the server namespace as `user` (None: root).
fn py_command_as(net: &Net, user: Option<&str>, code: &str) -> std::process::Command {
    let mut c = net.nsenter(&net.srv, "setpriv");
    match user {
        Some(u) => {
            let gid = String::from_utf8_lossy(&sh("id", &["-g", u]).stdout).trim().to_string();
            c.args([format!("--reuid={u}"), format!("--regid={gid}"), "--clear-groups".into()]);
        }
        None => {
            c.arg("--");
        }
    }
    c.args(["/usr/bin/python3", "-c", code]);
    c
}

/// The error of binding `port` for TCP and UDP, IPv4 and IPv6, as `user`: one line each.
pub fn binds_as(net: &Net, user: &str, port: u16) -> String {
    let code = format!(
        "import socket\nfor fam,addr in ((socket.AF_INET,'0.0.0.0'),(socket.AF_INET6,'::'),(socket.AF_INET,'127.0.0.1')):\n  for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):\n    s=socket.socket(fam,kind)\n    try:\n      s.bind((addr,{port})); print('bound', addr, kind)\n    except OSError as e:\n      print('refused', addr, kind, e.errno)\n"
    );
    out(&py_as(net, Some(user), &code))
}

/// Asserts that every bind of [`binds_as`]'s answer (`refused ADDR KIND ERRNO` or
/// `bound ADDR KIND`) of socket type `kind` (1 TCP, 2 UDP) was refused with EACCES.
pub fn assert_refused(binds: &str, kind: u8) {
    let kind = kind.to_string();
    let lines: Vec<Vec<&str>> = binds
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.get(2) == Some(&kind.as_str()))
        .collect();
    assert_eq!(lines.len(), 3, "{binds}");
    assert!(lines.iter().all(|f| f[0] == "refused" && f.get(3) == Some(&"13")), "{binds}");
}

/// The wall-clock time of a log record (`2026-12-06T05:09:01.886115Z ...`, UTC).
pub fn log_time(line: &str) -> std::time::SystemTime {
    let stamp = line.split_whitespace().next().unwrap_or_default();
    let (date, time) = stamp.trim_end_matches('Z').split_once('T').unwrap_or_else(|| panic!("no time in {line}"));
    let d: Vec<i64> = date.split('-').map(|p| p.parse().expect("date")).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<u64> = hms.split(':').map(|p| p.parse().expect("time")).collect();
    // days since 1970-01-01 (civil from days, Howard Hinnant's algorithm)
    let (y, m) = if d[1] <= 2 { (d[0] - 1, d[1] + 9) } else { (d[0], d[1] - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let micros: u64 = format!("{frac:0<6}")[..6].parse().expect("fraction");
    std::time::UNIX_EPOCH
        + Duration::from_secs(days as u64 * 86_400 + t[0] * 3600 + t[1] * 60 + t[2])
        + Duration::from_micros(micros)
}

/// Loads an nft script into the server namespace.
pub fn nft_file(net: &Net, script: &str) {
    let f = write(&net.dir, "foreign.nft", script);
    net.exec_ok(&net.srv, "nft", &["-f", f.to_str().expect("utf-8")]);
}

/// One connection from the client namespace; the app's reply, or None.
pub fn get(net: &Net, addr: &str, port: u16) -> Option<String> {
    net.tcp_get(&net.cli, addr, port)
}
