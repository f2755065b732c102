//! The kernel backend against the real kernel. Every test builds its own pair of network
//! namespaces, a "server" where the backend and the apps run and a "client" joined to it
//! by a veth pair, sends real TCP and UDP traffic over IPv4 and IPv6, and never touches
//! the host's ruleset. Without root the tests fail and say why.

use portd_kernel::nft::{Backend, BackendError, Observed};
use portd_rules::model::{FamilySel, Forward, PortRange, ProtoSel};
use portd_rules::plan::{compile, names, Element, OwnedSet, Plan, Value};
use portd_rules::{Family, Proto};
use portd_tests::in_netns;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const S4: &str = portd_tests::SRV4;
const C4: &str = portd_tests::CLI4;
/// `portd_tests::SRV6` and `CLI6` in brackets, as socat takes them.
const S6: &str = "[fd00:250::1]";
const C6: &str = "[fd00:250::2]";
const APP: &str = "app8080";

// ---------- helpers: the backend inside the shared namespaces, socat apps and clients ----------

/// The shared test namespaces (portd_tests::Net: server and client joined by veth
/// `vsrv`/`vcli`), the backend run inside the server, and socat apps killed on drop.
struct Net {
    apps: Vec<portd_tests::Bg>,
    server: String,
    client: String,
    ns: portd_tests::Net,
}

impl Net {
    fn new(_test: &str) -> Net {
        let ns = portd_tests::Net::setup();
        Net { apps: Vec::new(), server: ns.srv.clone(), client: ns.cli.clone(), ns }
    }

    fn apply(&self, plan: &Plan) -> Result<(), BackendError> {
        let p = plan.clone();
        in_netns(&self.server, move || Backend::new(&p.table).apply(&p))
    }

    fn apply_delta(&self, old: &Plan, new: &Plan) -> Result<(), BackendError> {
        let (o, n) = (old.clone(), new.clone());
        in_netns(&self.server, move || Backend::new(&n.table).apply_delta(&o, &n))
    }

    fn read(&self, plan: &Plan) -> Option<Observed> {
        let p = plan.clone();
        in_netns(&self.server, move || Backend::new(&p.table).read(&p)).expect("read")
    }

    /// Applies `plan` and checks that the kernel then holds exactly it.
    fn apply_checked(&self, plan: &Plan) {
        self.apply(plan).expect("apply");
        let seen = self.read(plan).expect("table exists after apply");
        assert!(seen.matches(plan), "kernel differs from plan: {:#?}", seen.differences(plan));
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Output {
        self.ns.exec(ns, args[0], &args[1..])
    }

    fn nft(&self, args: &[&str]) -> String {
        let out = self.exec(&self.server, &[&["nft"], args].concat());
        assert!(out.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a socat app in `ns` answering `reply` to every TCP or UDP client of `port`.
    /// A UDP answer ends with an empty datagram (`shut-null`) so the client need not wait
    /// for a timeout, and the app reads the request first so socat never drops the answer.
    fn app(&mut self, ns: &str, udp: bool, port: u16, reply: &str) {
        let (listen, answer) = match udp {
            false => (format!("TCP6-LISTEN:{port},ipv6only=0,reuseaddr,fork"), format!("SYSTEM:echo {reply}")),
            true => (
                format!("UDP6-RECVFROM:{port},ipv6only=0,reuseaddr,fork,shut-null"),
                format!("SYSTEM:read request; echo {reply}"),
            ),
        };
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "socat", "-t5", &listen, &answer])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socat");
        self.apps.push(portd_tests::Bg(child));
        let proto = if udp { "-Hlnu" } else { "-Hlnt" };
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.exec(ns, &["ss", proto, &format!("sport = :{port}")]).stdout.is_empty() {
            assert!(Instant::now() < deadline, "socat did not start listening on {port} in {ns}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What a TCP client in `ns` receives from `host:port` (empty when it cannot connect).
    fn tcp(&self, ns: &str, host: &str, port: u16) -> String {
        let target = format!("TCP:{host}:{port},connect-timeout=2");
        let out = self.exec(ns, &["socat", "-t5", "-T5", "-", &target]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// What a UDP client in `ns` receives after sending one datagram to `host:port`.
    fn udp(&self, ns: &str, host: &str, port: u16) -> String {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "socat", "-t5", "-T5", "-", &format!("UDP:{host}:{port},null-eof")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socat");
        child.stdin.take().expect("stdin").write_all(b"ping\n").expect("write");
        let out = child.wait_with_output().expect("socat");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn forward(name: &str, port: u16, to: u16) -> Forward {
    Forward::new(name, PortRange::single(port), PortRange::single(to))
}

fn plan_of(default_mark: u32, forwards: Vec<Forward>) -> Plan {
    compile("portd", default_mark, &[OwnedSet { owner: "system".into(), forwards }]).expect("plan compiles")
}

/// The seed: 80 -> 8080 (TCP and UDP) and 443 -> 8181, mark 0x1.
fn seed() -> Plan {
    let mut http = forward("http", 80, 8080);
    http.proto = ProtoSel::Both;
    http.mark = Some(1);
    let mut https = forward("https", 443, 8181);
    https.mark = Some(1);
    plan_of(1, vec![http, https])
}

/// The key of a forward's packets and bytes in [`Observed::counters`]: its elements' comment.
fn counter_of(plan: &Plan, name: &str) -> String {
    plan.forwards.iter().find(|f| f.forward.name == name).expect("forward").comment()
}

/// `nft list` text without layout and with element lists sorted.
fn canonical(listing: &str) -> String {
    const OPEN: &str = "elements = {";
    let flat = listing.split_whitespace().collect::<Vec<_>>().join(" ");
    let (mut out, mut rest) = (String::new(), flat.as_str());
    while let Some(i) = rest.find(OPEN) {
        out.push_str(&rest[..i + OPEN.len()]);
        let tail = &rest[i + OPEN.len()..];
        let end = tail.find('}').expect("closing brace");
        let mut items: Vec<&str> = tail[..end].split(',').map(str::trim).collect();
        items.sort_unstable();
        out.push_str(&items.join(", "));
        rest = &tail[end..];
    }
    out + rest
}

/// Named counters (portd makes none) and per-set element counts according to
/// `nft -j list table inet portd`.
fn nft_json_summary(net: &Net) -> (Vec<String>, Vec<(String, usize)>) {
    let v: serde_json::Value =
        serde_json::from_str(&net.nft(&["-j", "list", "table", "inet", "portd"])).expect("nft json");
    let (mut counters, mut sets) = (Vec::new(), Vec::new());
    for item in v["nftables"].as_array().expect("nftables array") {
        if let Some(c) = item.get("counter") {
            counters.push(c["name"].as_str().expect("name").to_string());
        }
        if let Some(s) = item.get("set").or_else(|| item.get("map")) {
            let n = s.get("elem").and_then(|e| e.as_array()).map_or(0, Vec::len);
            sets.push((s["name"].as_str().expect("name").to_string(), n));
        }
    }
    counters.sort();
    sets.sort();
    (counters, sets)
}

fn plan_summary(plan: &Plan) -> (Vec<String>, Vec<(String, usize)>) {
    let mut sets: Vec<(String, usize)> = plan.sets.iter().map(|s| (s.name.clone(), s.elements.len())).collect();
    sets.sort();
    (Vec::new(), sets)
}

/// A forward with every option: UDP and TCP, sources, interfaces, protect, its own mark.
fn everything() -> Plan {
    let mut a = forward("admin", 22, 2222);
    a.sources = vec![
        "203.0.113.0/24".parse().expect("net"),
        "2001:db8::/32".parse().expect("net"),
        "198.51.100.7/32".parse().expect("net"),
    ];
    a.protect = true;
    let mut b = forward("dns", 53, 5353);
    b.proto = ProtoSel::Both;
    b.family = FamilySel::Ipv4;
    b.interfaces = vec!["eth0".into(), "wg0".into()];
    b.local = false;
    b.mark = Some(0x2a);
    let pool = Forward::new("pool", PortRange { start: 8000, end: 8003 }, PortRange { start: 9000, end: 9003 });
    plan_of(1, vec![a, b, pool])
}

/// `plan` compiled again with its TCP forwards steered.
fn steered(plan: Plan) -> Plan {
    let sets = [("system", plan.forwards.iter().map(|p| &p.forward).collect())];
    portd_rules::plan::compile_dispatched("portd", plan.mark, true, &sets).expect("plan compiles")
}

// ---------- tests ----------

#[test]
fn seed_redirects_remote_and_local_traffic_and_counts_it() {
    let mut net = Net::new("seed");
    let (s, c) = (net.server.clone(), net.client.clone());
    net.app(&s, false, 8080, APP);
    net.app(&s, true, 8080, APP);
    net.app(&c, false, 80, "client80");
    let plan = seed();
    net.apply_checked(&plan);

    for host in [S4, S6] {
        assert_eq!(net.tcp(&c, host, 80), APP, "TCP from the client to {host}:80");
        assert_eq!(net.udp(&c, host, 80), APP, "UDP from the client to {host}:80");
    }
    for host in ["127.0.0.1", "[::1]", S4, S6] {
        assert_eq!(net.tcp(&s, host, 80), APP, "TCP from the server itself to {host}:80");
    }
    for host in [C4, C6] {
        assert_eq!(net.tcp(&s, host, 80), "client80", "connection to another host's {host}:80 must not be redirected");
    }

    let seen = net.read(&plan).expect("table");
    assert!(seen.matches(&plan), "{:#?}", seen.differences(&plan));
    let (packets, bytes) = seen.counters[&counter_of(&plan, "http")];
    assert!(packets > 0 && bytes > 0, "http counter did not move: {packets} packets, {bytes} bytes");
    assert_eq!(seen.counters[&counter_of(&plan, "https")], (0, 0), "https saw no traffic");
}

#[test]
fn protect_drops_direct_connections_from_other_hosts() {
    let mut net = Net::new("protect");
    let (s, c) = (net.server.clone(), net.client.clone());
    net.app(&s, false, 8080, APP);
    let open = plan_of(1, vec![forward("http", 80, 8080)]);
    net.apply_checked(&open);
    assert_eq!(net.tcp(&c, S4, 8080), APP, "without protect the target port is reachable directly");

    let mut f = forward("http", 80, 8080);
    f.protect = true;
    let protected = plan_of(1, vec![f]);
    net.apply_checked(&protected);
    for host in [S4, S6] {
        assert_eq!(net.tcp(&c, host, 8080), "", "direct connection to {host}:8080 must be dropped");
        assert_eq!(net.tcp(&c, host, 80), APP, "{host}:80 must still reach the app");
    }
    assert_eq!(net.tcp(&s, "127.0.0.1", 8080), APP, "local connections to 8080 stay allowed");
}

#[test]
fn sources_and_interfaces_restrict_redirects() {
    let mut net = Net::new("restrict");
    let (s, c) = (net.server.clone(), net.client.clone());
    net.app(&s, false, 8080, APP);
    let mut elsewhere = forward("elsewhere", 81, 8080);
    elsewhere.sources = vec!["192.0.2.0/24".parse().expect("net"), "2001:db8::/32".parse().expect("net")];
    let mut wrong_if = forward("wrongif", 82, 8080);
    wrong_if.interfaces = vec!["nosuch0".into()];
    let mut right = forward("right", 83, 8080);
    right.sources = vec!["10.250.0.0/24".parse().expect("net"), "fd00:250::/64".parse().expect("net")];
    right.interfaces = vec!["vsrv".into()];
    let plan = plan_of(1, vec![elsewhere, wrong_if, right]);
    net.apply_checked(&plan);

    for host in [S4, S6] {
        assert_eq!(net.tcp(&c, host, 81), "", "{host}:81 allows only other networks");
        assert_eq!(net.tcp(&c, host, 82), "", "{host}:82 allows only interface nosuch0");
        assert_eq!(net.tcp(&c, host, 83), APP, "{host}:83 allows the client's network on vsrv");
    }
}

#[test]
fn mark_is_set_on_redirected_packets() {
    let mut net = Net::new("mark");
    let (s, c) = (net.server.clone(), net.client.clone());
    net.app(&s, false, 8080, APP);
    let mut marked = forward("marked", 80, 8080);
    marked.mark = Some(0x2a);
    let plan = plan_of(0, vec![marked, forward("plain", 81, 8080)]);
    net.apply_checked(&plan);
    let probe = "table inet probe {\n counter marked { }\n chain input {\n  type filter hook input priority filter + 10; policy accept;\n  meta mark 0x2a counter name \"marked\"\n }\n}\n";
    let mut nft =
        Command::new("ip").args(["netns", "exec", &s, "nft", "-f", "-"]).stdin(Stdio::piped()).spawn().expect("nft");
    nft.stdin.take().expect("stdin").write_all(probe.as_bytes()).expect("write");
    assert!(nft.wait().expect("nft").success(), "probe table rejected");
    let count = || -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(&net.nft(&["-j", "list", "counter", "inet", "probe", "marked"])).expect("json");
        v["nftables"][1]["counter"]["packets"].as_u64().expect("packets")
    };

    assert_eq!(count(), 0);
    assert_eq!(net.tcp(&c, S4, 81), APP);
    assert_eq!(count(), 0, "a forward without mark must not mark");
    assert_eq!(net.tcp(&c, S4, 80), APP);
    assert!(count() > 0, "packets of the marked forward must reach input with mark 0x2a");
}

#[test]
fn the_default_mark_leaves_other_bits_of_the_mark_alone() {
    // WireGuard, Tailscale and policy routing set bits of the mark of their own: the
    // default mark adds its bits and keeps theirs.
    let mut net = Net::new("markbits");
    let (s, c) = (net.server.clone(), net.client.clone());
    net.app(&s, false, 8080, APP);
    net.apply_checked(&plan_of(1, vec![forward("plain", 80, 8080)]));
    let probe = "table inet probe {\n counter both { }\n chain pre {\n  type filter hook prerouting priority mangle - 10; policy accept;\n  tcp dport 80 meta mark set 0x100\n }\n chain input {\n  type filter hook input priority filter + 10; policy accept;\n  meta mark 0x101 counter name \"both\"\n }\n}\n";
    let mut nft =
        Command::new("ip").args(["netns", "exec", &s, "nft", "-f", "-"]).stdin(Stdio::piped()).spawn().expect("nft");
    nft.stdin.take().expect("stdin").write_all(probe.as_bytes()).expect("write");
    assert!(nft.wait().expect("nft").success(), "probe table rejected");
    assert_eq!(net.tcp(&c, S4, 80), APP);
    let v: serde_json::Value =
        serde_json::from_str(&net.nft(&["-j", "list", "counter", "inet", "probe", "both"])).expect("json");
    assert!(v["nftables"][1]["counter"]["packets"].as_u64().expect("packets") > 0, "the mark lost 0x100: {v}");
}

#[test]
fn read_and_nft_agree_with_every_applied_plan() {
    let net = Net::new("agree");
    let empty = Plan::empty("portd", 1);
    assert!(net.read(&empty).is_none(), "no table before the first apply");
    for plan in [empty.clone(), seed(), everything(), seed(), empty.clone()] {
        net.apply_checked(&plan);
        assert_eq!(nft_json_summary(&net), plan_summary(&plan), "nft -j list disagrees");
    }

    // The table built over netlink lists exactly like the one nft -f builds from the
    // rendered text of the same plan, with TCP forwards NATed and steered.
    for plan in [everything(), steered(everything())] {
        net.apply_checked(&plan);
        let ours = net.nft(&["list", "table", "inet", "portd"]);
        in_netns(&net.server, || Backend::new("portd").remove()).expect("remove");
        let mut nft = Command::new("ip")
            .args(["netns", "exec", &net.server, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft");
        nft.stdin.take().expect("stdin").write_all(portd_rules::render::render(&plan).as_bytes()).expect("write");
        assert!(nft.wait().expect("nft").success(), "nft -f of the rendered plan failed");
        let theirs = net.nft(&["list", "table", "inet", "portd"]);
        assert_eq!(canonical(&ours), canonical(&theirs), "\nours:\n{ours}\nnft -f:\n{theirs}");
        let seen = net.read(&plan).expect("table");
        assert!(seen.matches(&plan), "read() of nft's own table: {:#?}", seen.differences(&plan));

        in_netns(&net.server, || Backend::new("portd").remove()).expect("remove");
        assert!(net.read(&plan).is_none(), "no table after remove");
    }
    in_netns(&net.server, || Backend::new("portd").remove()).expect("removing a missing table is fine");
    assert!(net.nft(&["list", "tables"]).trim().is_empty(), "nothing else was created");
}

#[test]
fn rejected_plan_leaves_previous_state_byte_for_byte() {
    let net = Net::new("reject");
    let good = seed();
    net.apply_checked(&good);
    let before = net.nft(&["list", "table", "inet", "portd"]);
    let key = vec![Value::NfProto(Family::Ipv4), Value::InetProto(Proto::Tcp), Value::InetService(9999)];

    // The sets were created with room for 1024 elements: a change beyond that is
    // refused whole (the daemon then replaces the table with larger sets).
    let mut fws: Vec<Forward> = seed().forwards.iter().map(|p| p.forward.clone()).collect();
    fws.extend(many(1100, Vec::new()));
    let too_many = plan_of(1, fws);
    assert!(!Plan::diff(&good, &too_many).structural, "more elements alone are no structural change");
    let err = net.apply_delta(&good, &too_many).expect_err("more elements than the set's size must be refused");
    assert_eq!(err.errno(), Some(libc::ENFILE), "{err}");
    assert_eq!(net.nft(&["list", "table", "inet", "portd"]), before, "delta beyond the size");
    // A backend that knows the sizes (it read the table) says so before sending anything.
    let (g, t) = (good.clone(), too_many.clone());
    let err = in_netns(&net.server, move || {
        let b = Backend::new("portd");
        b.read(&g).expect("read");
        assert_eq!(b.set_sizes().get("fwd_to"), Some(&1024), "sizes read back: {:?}", b.set_sizes());
        b.apply_delta(&g, &t)
    })
    .expect_err("outgrown");
    assert!(matches!(err, BackendError::Outgrown { need: 1103, size: 1024, .. }), "{err}");
    assert_eq!(net.nft(&["list", "table", "inet", "portd"]), before, "nothing sent");
    net.apply_checked(&too_many);
    net.apply_checked(&good);
    let before = net.nft(&["list", "table", "inet", "portd"]);

    let mut wrong_type = good.clone();
    let set = wrong_type.sets.iter_mut().find(|s| s.name == names::TO_FAMILY).expect("to map");
    set.elements.insert(Element { key, data: Some(Value::Mark(1)), comment: None });
    let err = net.apply(&wrong_type).expect_err("a mark in a port map must be refused");
    assert_eq!(err.errno(), Some(libc::EINVAL), "{err}");
    assert!(err.to_string().contains("set fwd_to_family, element ipv4 . tcp . 9999"), "{err}");
    assert_eq!(net.nft(&["list", "table", "inet", "portd"]), before, "type mismatch");
    let err = net.apply_delta(&good, &wrong_type).expect_err("same change as a delta");
    assert_eq!(err.errno(), Some(libc::EINVAL), "{err}");
    assert_eq!(net.nft(&["list", "table", "inet", "portd"]), before, "delta");

    let seen = net.read(&good).expect("table");
    assert!(seen.matches(&good), "{:#?}", seen.differences(&good));
    assert!(!seen.matches(&wrong_type), "read() notices the difference");
}

fn many(n: u16, extra: Vec<Forward>) -> Vec<Forward> {
    let mut v: Vec<Forward> = (0..n).map(|i| forward(&format!("f{i:05}"), 10000 + i, 30000 + i)).collect();
    v.extend(extra);
    v
}

#[test]
fn delta_changes_one_forward_of_a_thousand_in_place() {
    let mut net = Net::new("delta");
    let (s, c) = (net.server.clone(), net.client.clone());
    net.app(&s, false, 8080, APP);
    let old = plan_of(1, many(1000, vec![forward("http", 80, 8080)]));
    net.apply_checked(&old);
    assert_eq!(net.tcp(&c, S4, 80), APP);

    let mut fws = many(1000, vec![forward("http", 80, 8080)]);
    fws[500] = forward("f00500", 10500, 40500);
    let new = plan_of(1, fws);
    let delta = Plan::diff(&old, &new);
    assert!(!delta.structural && delta.size() <= 8, "one changed target is a handful of elements: {}", delta.size());
    net.apply_delta(&old, &new).expect("delta");
    let seen = net.read(&new).expect("table");
    assert!(seen.matches(&new), "{:#?}", seen.differences(&new));
    assert!(seen.counters[&counter_of(&new, "http")].0 > 0, "counters survive a delta: the table was not replaced");

    // adding and removing forwards adds and deletes their counted elements too
    let mut fws = many(1000, vec![forward("http", 80, 8080), forward("extra", 81, 8081)]);
    fws.remove(1);
    let newer = plan_of(1, fws);
    net.apply_delta(&new, &newer).expect("delta");
    let seen = net.read(&newer).expect("table");
    assert!(seen.matches(&newer), "{:#?}", seen.differences(&newer));

    // a change of the skeleton (here: one rule less) falls back to a full apply
    let mut reshaped = newer.clone();
    reshaped.chains[0].rules.pop();
    assert!(Plan::diff(&newer, &reshaped).structural);
    net.apply_delta(&newer, &reshaped).expect("structural delta");
    let seen = net.read(&reshaped).expect("table");
    assert!(seen.matches(&reshaped), "{:#?}", seen.differences(&reshaped));
    assert_eq!(seen.counters[&counter_of(&reshaped, "http")].0, 0, "a full apply starts counters over");
}

#[test]
fn ten_thousand_forwards_in_one_batch() {
    let net = Net::new("tenk");
    let plan = plan_of(1, many(10_000, Vec::new()));
    let t = Instant::now();
    net.apply_checked(&plan);
    eprintln!("10,000 forwards ({} elements): apply + read in {:?}", plan.element_count(), t.elapsed());
}

#[test]
fn sixty_thousand_ports_as_a_range() {
    let net = Net::new("range");
    let range = Forward::new("range", PortRange { start: 2000, end: 61999 }, PortRange { start: 3000, end: 62999 });
    let plan = plan_of(1, vec![range]);
    let t = Instant::now();
    net.apply_checked(&plan);
    eprintln!("60,000 ports ({} elements): apply + read in {:?}", plan.element_count(), t.elapsed());
    assert_eq!(nft_json_summary(&net), plan_summary(&plan));
}

#[test]
fn edits_by_other_programs_are_noticed() {
    let net = Net::new("drift");
    let plan = seed();
    net.apply_checked(&plan);
    let edits: [&[&str]; 4] = [
        &["add", "element", "inet", "portd", "fwd_to", "{ tcp . 1 : 2 }"],
        &["delete", "element", "inet", "portd", "fwd_count", "{ tcp . 443 }"],
        &["flush", "chain", "inet", "portd", "nat_in"],
        &["add", "element", "inet", "portd", "fwd_mark", "{ ipv6 . tcp . 443 : 0x5 }"],
    ];
    for edit in edits {
        net.nft(edit);
        let seen = net.read(&plan).expect("table");
        assert!(!seen.matches(&plan), "`nft {}` went unnoticed", edit.join(" "));
        net.apply_checked(&plan);
    }
    net.nft(&["delete", "table", "inet", "portd"]);
    assert!(net.read(&plan).is_none(), "a deleted table reads as None");
}

#[test]
fn without_cap_net_admin_the_error_says_so() {
    let net = Net::new("noadmin");
    let plan = seed();
    let (apply, read) = in_netns(&net.server, move || {
        caps::drop(None, caps::CapSet::Effective, caps::Capability::CAP_NET_ADMIN).expect("drop CAP_NET_ADMIN");
        let b = Backend::new("portd");
        (b.apply(&plan).expect_err("apply needs CAP_NET_ADMIN"), b.read(&plan).expect_err("read needs CAP_NET_ADMIN"))
    });
    for err in [apply, read] {
        assert_eq!(err.errno(), Some(libc::EPERM), "{err}");
        assert!(err.to_string().contains("need CAP_NET_ADMIN"), "{err}");
    }
    assert!(net.nft(&["list", "tables"]).trim().is_empty(), "nothing was created");
}

#[test]
fn one_backend_keeps_working_after_refusals_and_removals() {
    // The daemon keeps one Backend, and with it one netlink socket, for its whole life:
    // a refused batch must not leave answers behind that the next batch would misread,
    // and removals (which leave deleted elements awaiting destruction) must not slow or
    // confuse the changes that follow.
    let mut net = Net::new("kept");
    let (s, c) = (net.server.clone(), net.client.clone());
    net.app(&s, false, 8080, APP);
    let base = plan_of(1, many(100, vec![]));
    let with_http = plan_of(1, many(100, vec![forward("http", 80, 8080)]));
    let mut refused = with_http.clone();
    let set = refused.sets.iter_mut().find(|s| s.name == names::MARK).expect("mark map");
    let key = vec![Value::NfProto(Family::Ipv4), Value::InetProto(Proto::Tcp), Value::InetService(9999)];
    // a 2-byte port where the map holds 4-byte marks: the kernel refuses the element
    set.elements.insert(Element { key, data: Some(Value::InetService(9999)), comment: None });
    let (b0, w0, r0) = (base.clone(), with_http.clone(), refused.clone());
    let outcomes = in_netns(&s, move || {
        let backend = Backend::new(&b0.table);
        let mut out = Vec::new();
        out.push(backend.apply(&b0).map_err(|e| e.to_string()));
        for round in 0..20 {
            // add http, refuse a bad change, remove http: each on the same socket
            out.push(backend.apply_delta(&b0, &w0).map_err(|e| format!("add {round}: {e}")));
            match backend.apply_delta(&w0, &r0) {
                Ok(()) => out.push(Err(format!("round {round}: a malformed mark was accepted"))),
                Err(e) if e.errno() == Some(libc::EINVAL) => {}
                Err(e) => out.push(Err(format!("round {round}: refused with the wrong error: {e}"))),
            }
            out.push(backend.apply_delta(&w0, &b0).map_err(|e| format!("remove {round}: {e}")));
        }
        out.push(backend.apply_delta(&b0, &w0).map_err(|e| format!("final add: {e}")));
        out
    });
    let failures: Vec<String> = outcomes.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{failures:#?}");
    let seen = net.read(&with_http).expect("table");
    assert!(seen.matches(&with_http), "{:#?}", seen.differences(&with_http));
    assert_eq!(net.tcp(&c, S4, 80), APP, "traffic flows after 20 rounds on one socket");
}
