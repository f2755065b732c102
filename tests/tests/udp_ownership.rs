//! A new UDP forward's datagrams are its owner's from the first one: no other account
//! binds its public port between the NAT going live and the kernel refusing such binds,
//! and flows on that port from before the forward (a client that sent earlier, or
//! entries another account primed from the port while it was free) go to the forward.
//! The real portd with its BPF data plane, real accounts, real traffic.

use portd_tests::*;
use std::process::Stdio;

mod steer_common;
use steer_common::*;

/// From the client namespace, UDP from source port `sport` to `SRV4:port`: the first
/// answer within `tries` sends (200 ms apart), or None.
fn udp_from(net: &Net, sport: u16, port: u16, tries: u32) -> Option<String> {
    let code = format!(
        "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',{sport}))\ns.settimeout(0.2)\nfor i in range({tries}):\n  s.sendto(b'hi',('{SRV4}',{port}))\n  try:\n    print(s.recv(64).decode().strip()); break\n  except OSError: pass\n"
    );
    let o = net.exec(&net.cli, "python3", &["-c", &code]);
    Some(out(&o).trim().to_string()).filter(|s| !s.is_empty())
}

#[test]
fn no_other_account_binds_a_new_udp_forwards_public_port_once_its_nat_is_live() {
    // mallory probes 127.x.y.z:5300 with a fresh tuple each time (a tuple conntrack saw
    // before the forward would stay unredirected) and, the moment a probe is no longer
    // refused (the NAT is live), binds 5300: that bind must be refused, every time.
    let net = Net::setup();
    let (alice, mallory) = (TestUser::regular("ua"), TestUser::regular("um"));
    let d = Portd::start_bpf(&net, &config(&net, &format!("grants:\n{}", grant(&alice.name, "\"5300-5310\""))), &[]);
    let _app = net.udp_app_as(&net.srv, &alice.name, 8300, "alice");
    let race = "import socket, time, random\nn = random.randrange(1 << 22)\nt = time.time()\nwhile time.time() - t < 15:\n  n += 1\n  p = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n  p.connect(('127.%d.%d.%d' % ((n >> 16) & 255, (n >> 8) & 255, (n & 255) or 1), 5300))\n  try:\n    p.send(b'probe'); p.recv(64, socket.MSG_DONTWAIT)\n  except ConnectionRefusedError:\n    p.close(); continue\n  except BlockingIOError:\n    pass\n  s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n  s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n  try:\n    s.bind(('::', 5300)); print('BOUND', flush=True)\n  except OSError as e:\n    print('refused', e.errno, flush=True)\n  break\nelse:\n  print('no forward seen')\n";
    let attacker = spawn_py_as(&net, &mallory.name, race);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let dns = "version: 1\nforwards:\n  - name: dns\n    port: 5300\n    to: 8300\n    proto: udp\n";
    let o = apply_as(&d, &net, &alice.name, dns);
    assert!(o.status.success(), "{}", err(&o));
    let o = attacker.wait_with_output().expect("attacker");
    let said = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(
        said,
        "refused 13",
        "mallory's bind the moment the NAT was live: {said} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(udp_from(&net, 40404, 5300, 5).as_deref(), Some("alice"));
}

#[test]
fn clients_that_sent_to_a_udp_port_before_its_forward_reach_the_forward() {
    // While 5305/udp is free, mallory binds it, sends one datagram to each of three client
    // ports (conntrack now takes those clients' datagrams for answers to mallory's
    // flows) and closes it. alice's forward on 5305 then reaches those clients too.
    let net = Net::setup();
    let (alice, mallory) = (TestUser::regular("ub"), TestUser::regular("un"));
    let d = Portd::start_bpf(&net, &config(&net, &format!("grants:\n{}", grant(&alice.name, "\"5300-5310\""))), &[]);
    let _app = net.udp_app_as(&net.srv, &alice.name, 8305, "alice");
    // (a UDP forward already there: NAT runs, so conntrack tracks flows in the namespace)
    let one = "version: 1\nforwards:\n  - name: one\n    port: 5301\n    to: 8301\n    proto: udp\n";
    assert!(apply_as(&d, &net, &alice.name, one).status.success());
    let prime = format!(
        "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',5305))\nfor p in (40700, 40701, 40702): s.sendto(b'x', ('{CLI4}', p))\ns.close()\nprint('primed')\n"
    );
    let o = spawn_py_as(&net, &mallory.name, &prime).wait_with_output().expect("prime");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "primed", "{}", String::from_utf8_lossy(&o.stderr));
    let primed = net.exec_ok(&net.srv, "conntrack", &["-L", "-p", "udp", "--orig-port-src", "5305"]);
    assert!(primed.contains("dport=40700"), "the primed flows are in conntrack: {primed}");
    // The host's own flow to port 5305 of another host is not the forward's business.
    let out_flow = format!(
        "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',41000))\ns.sendto(b'x', ('{CLI4}', 5305))\n"
    );
    net.exec_ok(&net.srv, "python3", &["-c", &out_flow]);
    let dns = format!("{one}  - name: dns\n    port: 5305\n    to: 8305\n    proto: udp\n");
    assert!(apply_as(&d, &net, &alice.name, &dns).status.success());
    for sport in [40700, 40701, 40800] {
        assert_eq!(udp_from(&net, sport, 5305, 10).as_deref(), Some("alice"), "client port {sport}");
    }
    let kept = net.exec_ok(&net.srv, "conntrack", &["-L", "-p", "udp", "--orig-port-dst", "5305"]);
    assert!(kept.contains("sport=41000"), "the host's outgoing flow to another host's 5305 stays: {kept}");
}

#[test]
fn a_retargeted_udp_forwards_old_target_stays_reserved_until_its_flows_are_gone() {
    // alice moves her UDP forward from 8300 to 8301 and stops the old app while a client
    // streams to it. The old flow's conntrack entry still sends the client's datagrams
    // to 8300 until portd's conntrack thread has deleted it (after a dump of the whole
    // table, which mallory makes slow by filling it), so 8300 stays alice's until then:
    // mallory, binding 8300 in a loop, receives none of them.
    let net = Net::setup();
    let (alice, mallory) = (TestUser::regular("uc"), TestUser::regular("uo"));
    let d = Portd::start_bpf(&net, &config(&net, &format!("grants:\n{}", grant(&alice.name, "\"5300-5310\""))), &[]);
    let old_app = net.udp_app_as(&net.srv, &alice.name, 8300, "old");
    let _new_app = net.udp_app_as(&net.srv, &alice.name, 8301, "new");
    let dns = |to: u16| format!("version: 1\nforwards:\n  - name: dns\n    port: 5300\n    to: {to}\n    proto: udp\n");
    assert!(apply_as(&d, &net, &alice.name, &dns(8300)).status.success());
    let fill = "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor i in range(100000):\n  try: s.sendto(b'x', ('127.%d.%d.%d' % (100 + (i >> 16), (i >> 8) & 255, i & 255), 9))\n  except OSError: pass\nprint('filled')\n";
    let o = spawn_py_as(&net, &mallory.name, fill).wait_with_output().expect("fill");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "filled");
    let stream = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',40600))\ns.setblocking(False)\nt=time.time(); seen={{}}\nwhile time.time()-t<3.5:\n  s.sendto(b'x',('{SRV4}',5300))\n  time.sleep(0.002)\n  try:\n    while True:\n      d=s.recv(64).decode().strip(); seen[d]=seen.get(d,0)+1\n  except OSError: pass\nprint(sorted(seen.items()))\n"
    );
    let client = net.nsenter(&net.cli, "python3").args(["-c", &stream]).stdout(Stdio::piped()).spawn().expect("client");
    std::thread::sleep(std::time::Duration::from_millis(500));
    drop(old_app);
    let grab = "import socket,time\nt=time.time(); got=0; bound=False\nwhile time.time()-t<3:\n  s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n  s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n  try: s.bind(('::',8300))\n  except OSError:\n    s.close(); time.sleep(0.0002); continue\n  bound=True; s.settimeout(0.1)\n  while time.time()-t<3:\n    try:\n      s.recvfrom(64); got+=1\n    except OSError: pass\n  break\nprint('bound' if bound else 'never', got)\n";
    let mallory_grab = spawn_py_as(&net, &mallory.name, grab);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(apply_as(&d, &net, &alice.name, &dns(8301)).status.success());
    let got = String::from_utf8_lossy(&mallory_grab.wait_with_output().expect("grab").stdout).trim().to_string();
    let seen = String::from_utf8_lossy(&client.wait_with_output().expect("client").stdout).trim().to_string();
    // (bound at last, once the old flow was gone: it got nothing)
    assert_eq!(got, "bound 0", "mallory on the old target, once it was free (client saw {seen})");
    assert!(seen.contains("('new',"), "the client reaches the new target: {seen}");
}
