//! The kernel reads of `portctl doctor`, on a thread of its own: other tables' chains
//! (`nft::read_foreign`), legacy iptables tables (only those already loaded), the
//! sockets of the namespace (sock_diag) and the conntrack counters; the decisions are
//! [`portd_rules::doctor`]'s.

use portd_rules::doctor::{self, legacy, Finding, ForeignChain, SelfState, Severity};
use portd_rules::plan::PlacedForward;
use portd_rules::proto::Body;
use std::collections::BTreeMap;
use std::io;

/// What the actor hands the doctor's thread: what only the actor knows.
pub struct DoctorInputs {
    /// Active forwards (the plan's).
    pub forwards: Vec<PlacedForward>,
    /// Uid of each user owner (root's sets left out: any listener is fine for them).
    pub owner_uids: BTreeMap<String, u32>,
    /// The plan, to compare the kernel's table with.
    pub plan: portd_rules::Plan,
    /// portd's own state (`in_sync` is read here).
    pub me: SelfState,
    /// Why TCP forwards use NAT and target ports are only polled, when the settings
    /// asked for the BPF data plane (`auto`) and it cannot run.
    pub dataplane_fallback: Option<String>,
    /// The loaded legacy iptables tables as root's portctl read them, if it did.
    pub legacy_tables: Option<portd_rules::proto::LegacyTables>,
    /// How forwards are dispatched, and the fix that steers them when the host can.
    pub dispatch: doctor::DispatchView,
}

/// portd's NAT chains' priority (dstnat), as compiled.
const PORTD_NAT_PRIORITY: i32 = -100;

/// Runs the checks on a new thread and sends the answer to `reply`.
pub fn spawn(s: DoctorInputs, reply: tokio::sync::oneshot::Sender<crate::actor::Answer>) {
    let (tx, rx) = std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<crate::actor::Answer>>();
    let spawned = std::thread::Builder::new().name("doctor".into()).spawn(move || {
        let findings = run(&s);
        if let Ok(reply) = rx.recv() {
            let _ = reply.send(Ok(Body::Doctor { findings }));
        }
    });
    match spawned {
        Ok(_) => {
            let _ = tx.send(reply);
        }
        Err(e) => {
            let _ = reply.send(Err(crate::actor::Error::Internal(format!("cannot start the doctor thread: {e}"))));
        }
    }
}

fn unreadable(check: &str, what: String) -> Finding {
    Finding {
        check: check.into(),
        severity: Severity::Warning,
        forward: None,
        message: format!("{what}; this check did not run"),
        fix: "see portd's log; run `portctl doctor` again".into(),
    }
}

/// Every check; findings most severe first.
pub fn run(s: &DoctorInputs) -> Vec<Finding> {
    let mut me = s.me.clone();
    me.in_sync =
        matches!(portd_kernel::nft::Backend::new(&s.plan.table).read(&s.plan), Ok(Some(o)) if o.matches(&s.plan));
    let mut findings = doctor::check_self(&me);
    let mut chains: Vec<ForeignChain> = Vec::new();
    match portd_kernel::nft::read_foreign(&s.me.table) {
        Ok(read) => {
            if read.rules_left_out > 0 {
                findings.push(Finding {
                    check: "foreign-drop".into(),
                    severity: Severity::Info,
                    forward: None,
                    message: format!(
                        "the ruleset is large: {} rules were read and {} more were left out, so chains past that point were judged by their first rules only",
                        portd_kernel::nft::MAX_FOREIGN_RULES,
                        read.rules_left_out
                    ),
                    fix: "read the rest with `nft list ruleset`".into(),
                });
            }
            chains = read.chains;
        }
        Err(e) => findings.push(unreadable("foreign-drop", format!("reading the other nftables tables: {e}"))),
    }
    for v6 in [false, true] {
        let given = s.legacy_tables.as_ref().and_then(|t| if v6 { t.v6.clone() } else { t.v4.clone() });
        match legacy_chains(v6, given) {
            Ok(c) => chains.extend(c),
            Err(e) => findings.push(unreadable("legacy-iptables", e)),
        }
    }
    findings.extend(doctor::check_chains_with(&chains, &s.forwards, PORTD_NAT_PRIORITY, &s.dispatch));
    match portd_kernel::sockdiag::holding() {
        Ok(held) => findings.extend(doctor::check_listeners(
            &s.forwards,
            |proto, port| {
                held.iter()
                    .filter(|h| h.proto == proto && h.port == port)
                    .map(|h| doctor::Listening { uid: h.uid, addr: h.addr, v6only: h.v6only, listening: h.listening })
                    .collect()
            },
            |owner| s.owner_uids.get(owner).copied(),
        )),
        Err(e) => findings.push(unreadable("listener", format!("reading the socket tables (NETLINK_SOCK_DIAG): {e}"))),
    }
    match conntrack_counts() {
        Ok(Some((count, max))) => findings.extend(doctor::check_conntrack(count, max)),
        // No conntrack in this namespace yet: nothing is tracked, nothing can be full.
        Ok(None) => {}
        Err(e) => findings.push(unreadable("conntrack", format!("reading the conntrack table's size: {e}"))),
    }
    if let Some(reason) = &s.dataplane_fallback {
        findings.push(Finding {
            check: "dispatch".into(),
            severity: Severity::Warning,
            forward: None,
            message: format!(
                "TCP forwards use NAT and target ports are only checked by polling: the BPF data plane cannot run ({reason}); bans and blocks written for public ports do not apply to forwarded traffic"
            ),
            fix: "run portd with CAP_BPF and CAP_PERFMON (the packaged unit has them) on a kernel 5.19 or newer with BTF, or set settings.dispatch: nat and settings.ownership: polled to choose NAT".into(),
        });
    }
    doctor::sort(&mut findings);
    findings
}

/// The conntrack table's entries and limit: from ctnetlink (IPCTNL_MSG_CT_GET_STATS, which
/// the unit's sandbox allows), else from /proc/sys (which `ProcSubset=pid` hides). `None`
/// when conntrack is not loaded.
fn conntrack_counts() -> Result<Option<(u64, u64)>, String> {
    let netlink = portd_kernel::conntrack::stats;
    let netlink_err = match netlink() {
        Ok(Some(v)) => return Ok(Some(v)),
        Ok(None) => "the kernel's answer carried no counts".to_string(),
        // ctnetlink not loaded: no conntrack module, nothing tracked.
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(None),
        Err(e) => e.to_string(),
    };
    let read = |f: &str| std::fs::read_to_string(format!("/proc/sys/net/netfilter/{f}"));
    match (read("nf_conntrack_count"), read("nf_conntrack_max")) {
        (Ok(count), Ok(max)) => match (count.trim().parse(), max.trim().parse()) {
            (Ok(count), Ok(max)) => Ok(Some((count, max))),
            _ => Err(format!("unreadable numbers in /proc/sys/net/netfilter ({count:?}, {max:?})")),
        },
        (Err(e), _) | (_, Err(e)) => Err(format!(
            "ctnetlink: {netlink_err}; /proc/sys/net/netfilter/nf_conntrack_count: {e} (run `sysctl net.netfilter.nf_conntrack_count net.netfilter.nf_conntrack_max` to see them)"
        )),
    }
}

/// `IPT_SO_GET_INFO` / `IP6T_SO_GET_INFO` (the same number at SOL_IP and SOL_IPV6).
const SO_GET_INFO: libc::c_int = 64;
/// `IPT_SO_GET_ENTRIES` / `IP6T_SO_GET_ENTRIES`.
const SO_GET_ENTRIES: libc::c_int = 65;
/// Largest legacy table read (bytes of entries).
const MAX_LEGACY_BYTES: u32 = 16 * 1024 * 1024;

/// The built-in chains of every legacy table already loaded in the namespace; none when
/// the legacy modules are not loaded (the names file is then absent; nothing is loaded
/// by asking). Read through /proc/self/net, which a unit's `ProcSubset=pid` leaves
/// visible (it hides /proc/net); when even that is missing the check says it did not run.
/// `given`: the names as root's portctl read them (only built-in table names are asked
/// for: asking for another name would make the kernel look for a module).
fn legacy_chains(v6: bool, given: Option<Vec<String>>) -> Result<Vec<ForeignChain>, String> {
    let names = if v6 { "/proc/self/net/ip6_tables_names" } else { "/proc/self/net/ip_tables_names" };
    // portd's own view of its namespace first; root's portctl's list only where the
    // kernel hides the file from portd (the packaged unit runs as user portd).
    let read = match (std::fs::read_to_string(names), given) {
        (Err(e), Some(list)) if e.kind() == io::ErrorKind::PermissionDenied => Ok(list.join(" ")),
        (r, _) => r,
    };
    let list = match read {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(format!(
                "cannot tell whether legacy iptables tables are loaded: the kernel shows {names} only to root ({e}); run `portctl doctor` as root, which reads it and passes the names on"
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if std::path::Path::new("/proc/self/net/dev").exists() {
                return Ok(Vec::new());
            }
            return Err(format!(
                "cannot tell whether legacy iptables tables are loaded: /proc/self/net is not visible ({e})"
            ));
        }
        Err(e) => return Err(format!("reading {names}: {e}")),
    };
    let (domain, level) = if v6 { (libc::AF_INET6, libc::SOL_IPV6) } else { (libc::AF_INET, libc::SOL_IP) };
    // Any inet socket reaches the netfilter getsockopts (CAP_NET_ADMIN is checked);
    // a datagram socket needs no CAP_NET_RAW.
    // SAFETY: plain socket(2); the result is checked and owned below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("opening a socket to read legacy iptables: {}", io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let get = |opt: libc::c_int, buf: &mut [u8]| -> io::Result<()> {
        let mut len = buf.len() as libc::socklen_t;
        // SAFETY: `buf` is valid for `len` bytes and the kernel writes at most that many.
        let rc = unsafe { libc::getsockopt(raw, level, opt, buf.as_mut_ptr().cast(), &raw mut len) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    let mut out = Vec::new();
    for table in list.split_whitespace().filter(|t| portd_rules::proto::LegacyTables::KNOWN.contains(t)) {
        let mut name = [0u8; 32];
        let n = table.len().min(31);
        name[..n].copy_from_slice(&table.as_bytes()[..n]);
        let mut info = [0u8; legacy::GETINFO_LEN];
        info[..32].copy_from_slice(&name);
        let cmd = if v6 { "ip6tables-legacy" } else { "iptables-legacy" };
        get(SO_GET_INFO, &mut info).map_err(|e| format!("reading legacy table {table} ({cmd} -t {table} -S): {e}"))?;
        let info = legacy::parse_info(&info).ok_or(format!("legacy table {table}: short answer"))?;
        if info.size > MAX_LEGACY_BYTES {
            return Err(format!("legacy table {table} holds {} bytes of rules; doctor reads at most {MAX_LEGACY_BYTES}; list it with `{cmd} -t {table} -S`", info.size));
        }
        let mut buf = vec![0u8; legacy::GET_ENTRIES_HEADER + info.size as usize];
        buf[..32].copy_from_slice(&name);
        buf[32..36].copy_from_slice(&info.size.to_ne_bytes());
        get(SO_GET_ENTRIES, &mut buf).map_err(|e| format!("reading the rules of legacy table {table}: {e}"))?;
        out.extend(
            legacy::chains(table, v6, &info, &buf[legacy::GET_ENTRIES_HEADER..])
                .map_err(|e| format!("legacy table {table}: {e}; list it with `{cmd} -t {table} -S`"))?,
        );
    }
    Ok(out)
}
