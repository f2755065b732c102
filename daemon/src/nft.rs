//! Kernel backend: puts a [`Plan`] into nf_tables over netlink and reads it back.
//!
//! This is the only module of portd that speaks netlink (through `nftnl` and `mnl`).
//! [`Backend::apply`] replaces portd's own `inet` table in one atomic batch,
//! [`Backend::apply_delta`] changes only set elements and counters, and [`Backend::read`]
//! dumps the table into an [`Observed`] value that [`Observed::matches`] compares with a
//! plan. Every object is built attribute for attribute as nft(8) 1.0.6 builds the text of
//! [`portd_rules::render::render`] (sets with the same key types, lengths, flags and
//! userdata, rules with the same expressions and registers), so `nft list table` cannot
//! tell a table made here from one made by `nft -f`.
//!
//! Netlink I/O: each call opens its own socket (so it acts in the network namespace of the
//! calling thread), sends the whole batch in one `sendto` (the kernel only treats what
//! arrives in one message as a transaction), and then waits for the answer to every
//! message it sent. Set elements go in chunks of at most 32 KiB, below the 64 KiB limit
//! of a netlink attribute and the 128 KiB pages of the batch. The first refusal names
//! the refused object, down to the element, from the kernel's extended ack.

use nftnl::expr::Expression;
use nftnl::nftnl_sys::{self as sys, libc::nlmsghdr};
use nftnl::{Batch, Chain, MsgType, NlMsg, ProtoFamily, Table};
use portd_rules::model::{Family, Proto};
use portd_rules::plan::{self, ChainType, Delta, Element, FieldType, Hook, Plan, Set, Value};
use portd_rules::render;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::{fmt, io, mem};

/// Kernel, libnftnl and nft(8) constants that `libc` lacks (or types as `c_int`).
mod k {
    // <linux/netfilter.h>
    pub const NFPROTO_INET: u16 = 1;
    pub const NFPROTO_IPV4: u8 = 2;
    pub const NFPROTO_IPV6: u8 = 10;
    pub const NF_DROP: i32 = 0;
    pub const NF_ACCEPT: u32 = 1;
    pub const NF_INET_PRE_ROUTING: u32 = 0;
    pub const NF_INET_LOCAL_IN: u32 = 1;
    pub const NF_INET_LOCAL_OUT: u32 = 3;
    // <linux/netfilter/nf_tables.h>: message types
    pub const NFT_MSG_GETTABLE: u16 = 1;
    pub const NFT_MSG_GETCHAIN: u16 = 4;
    pub const NFT_MSG_GETRULE: u16 = 7;
    pub const NFT_MSG_NEWSET: u16 = 9;
    pub const NFT_MSG_GETSET: u16 = 10;
    pub const NFT_MSG_NEWSETELEM: u16 = 12;
    pub const NFT_MSG_GETSETELEM: u16 = 13;
    pub const NFT_MSG_DELSETELEM: u16 = 14;
    pub const NFT_MSG_NEWOBJ: u16 = 18;
    pub const NFT_MSG_GETOBJ: u16 = 19;
    pub const NFT_MSG_DELOBJ: u16 = 20;
    pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
    // registers: NFT_REG_1 is 16 bytes wide, NFT_REG32_xx are its 4-byte slices
    pub const NFT_REG_VERDICT: u32 = 0;
    pub const NFT_REG_1: u32 = 1;
    pub const NFT_REG32_01: u32 = 9;
    pub const NFT_REG32_02: u32 = 10;
    pub const NFT_REG32_03: u32 = 11;
    // verdicts
    pub const NFT_JUMP: i32 = -3;
    pub const NFT_RETURN: i32 = -5;
    // sets and objects
    pub const NFT_SET_INTERVAL: u32 = 0x4;
    pub const NFT_SET_MAP: u32 = 0x8;
    pub const NFT_SET_OBJECT: u32 = 0x40;
    pub const NFT_SET_CONCAT: u32 = 0x80;
    pub const NFT_OBJECT_COUNTER: u32 = 1;
    pub const NFT_LOOKUP_F_INV: u32 = 1;
    // expressions
    pub const NFT_META_MARK: u32 = 3;
    pub const NFT_META_IIFNAME: u32 = 6;
    pub const NFT_META_NFPROTO: u32 = 15;
    pub const NFT_META_L4PROTO: u32 = 16;
    pub const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
    pub const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
    pub const NFT_CMP_EQ: u32 = 0;
    pub const NFT_CMP_NEQ: u32 = 1;
    pub const NFT_BYTEORDER_HTON: u32 = 1;
    pub const NFT_CT_STATE: u32 = 0;
    pub const NFT_CT_STATUS: u32 = 2;
    pub const NFTA_FIB_F_DADDR: u32 = 1 << 1;
    pub const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
    pub const RTN_LOCAL: u32 = 2;
    /// `NF_CT_STATE_BIT(IP_CT_NEW)`
    pub const CT_STATE_NEW: u32 = 1 << 3;
    pub const IPS_DST_NAT: u32 = 1 << 5;
    pub const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 1 << 1;
    // <linux/netlink.h>
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLMSG_MIN_TYPE: u16 = 0x10;
    pub const NLM_F_ACK: u16 = 0x4;
    pub const NLM_F_DUMP_INTR: u16 = 0x10;
    pub const NLM_F_DUMP: u16 = 0x300;
    pub const NLM_F_EXCL: u16 = 0x200;
    pub const NLM_F_CREATE: u16 = 0x400;
    pub const NLM_F_CAPPED: u16 = 0x100;
    pub const NLM_F_ACK_TLVS: u16 = 0x200;
    pub const SOL_NETLINK: i32 = 270;
    pub const NETLINK_CAP_ACK: i32 = 10;
    pub const NETLINK_EXT_ACK: i32 = 11;
    pub const NLMSGERR_ATTR_MSG: u16 = 1;
    pub const NLMSGERR_ATTR_OFFS: u16 = 2;
    // nft(8) datatypes (src/datatype.h), byte orders and expression types
    pub const TYPE_NFPROTO: u32 = 2;
    pub const TYPE_IPADDR: u32 = 7;
    pub const TYPE_IP6ADDR: u32 = 8;
    pub const TYPE_INET_PROTOCOL: u32 = 12;
    pub const TYPE_INET_SERVICE: u32 = 13;
    pub const TYPE_MARK: u32 = 19;
    pub const TYPE_IFNAME: u32 = 41;
    pub const TYPE_BITS: u32 = 6;
    pub const BYTEORDER_INVALID: u32 = 0;
    pub const BYTEORDER_HOST: u32 = 1;
    pub const BYTEORDER_BIG: u32 = 2;
    pub const EXPR_CONCAT: u32 = 13;
    // libnftnl udata.h
    pub const UDATA_SET_KEYBYTEORDER: u8 = 0;
    pub const UDATA_SET_DATABYTEORDER: u8 = 1;
    pub const UDATA_SET_KEY_TYPEOF: u8 = 3;
    pub const UDATA_SET_DATA_INTERVAL: u8 = 6;
    pub const UDATA_SET_TYPEOF_EXPR: u8 = 0;
    pub const UDATA_SET_TYPEOF_DATA: u8 = 1;
}

/// Upper bound of the element list of one set-element message. The kernel's limit is
/// 64 KiB (a netlink attribute length is 16 bits); half of it keeps well clear.
const ELEMS_BYTES: usize = 32 * 1024;
/// Receive buffer: the kernel sends at most 32 KiB of dump per datagram.
const RECV_BYTES: usize = 128 * 1024;
/// How long to wait for any one reply of the kernel.
const REPLY_TIMEOUT_SECS: i64 = 30;
/// How often `read` starts over when the table changes while it is dumped.
const READ_ATTEMPTS: u32 = 5;

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Why the kernel backend failed, one variant per netlink phase.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The netfilter netlink socket could not be opened or configured.
    #[error("cannot open a netfilter netlink socket: {source}; {hint}")]
    Socket {
        /// what the system said
        source: io::Error,
        /// what to do
        hint: &'static str,
    },
    /// Something of the plan cannot be put into a netlink message; nothing was sent.
    #[error("cannot encode {what}: {reason}; nothing was sent to the kernel")]
    Encode {
        /// the object
        what: String,
        /// what is wrong with it
        reason: String,
    },
    /// The batch could not be sent; nothing was changed.
    #[error("cannot send the batch ({bytes} bytes) to the kernel: {source}; {hint}")]
    Send {
        /// size of the batch
        bytes: usize,
        /// what the system said
        source: io::Error,
        /// what to do
        hint: &'static str,
    },
    /// The kernel refused one message of the batch and rolled back all of it.
    #[error(
        "kernel refused {object}: {reason}{detail}; {hint} (the kernel rolled back the whole batch, nothing changed)"
    )]
    Rejected {
        /// the refused object, e.g. `set fwd_to, element ipv4 . tcp . 80 : 8080`
        object: String,
        /// sequence number of the refused message
        seq: u32,
        /// kernel errno
        errno: i32,
        /// the errno as text
        reason: String,
        /// the kernel's extended-ack message, as `: ...`, or empty
        detail: String,
        /// what to do
        hint: &'static str,
    },
    /// The kernel's answers to a batch were lost: whether it was applied is unknown.
    #[error("lost the kernel's answer to the batch ({missing} of {total} messages unacknowledged): {source}; read the table to see what the kernel holds")]
    Ack {
        /// messages without an answer
        missing: usize,
        /// messages in the batch
        total: usize,
        /// what the system said
        source: io::Error,
    },
    /// A dump request failed.
    #[error("cannot read the {what} of table inet {table}: {source}; {hint}")]
    Dump {
        /// what was being read
        what: &'static str,
        /// the table
        table: String,
        /// what the kernel said
        source: io::Error,
        /// what to do
        hint: &'static str,
    },
    /// A reply of the kernel could not be parsed.
    #[error("cannot decode the kernel's {what}: {reason}")]
    Decode {
        /// what was being read
        what: &'static str,
        /// what is wrong
        reason: String,
    },
    /// The table changed during every attempt to read it.
    #[error("table inet {table} kept changing while it was read ({attempts} attempts); try again")]
    Unstable {
        /// the table
        table: String,
        /// attempts made
        attempts: u32,
    },
}

impl BackendError {
    /// The kernel errno behind this error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            BackendError::Rejected { errno, .. } => Some(*errno),
            BackendError::Socket { source, .. }
            | BackendError::Send { source, .. }
            | BackendError::Ack { source, .. }
            | BackendError::Dump { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// What to do about a kernel errno.
fn hint(errno: Option<i32>) -> &'static str {
    match errno {
        Some(libc::EPERM | libc::EACCES) => {
            "need CAP_NET_ADMIN: run portd as root or grant it that capability"
        }
        Some(libc::ENOENT) => {
            "something it refers to does not exist (table, set, chain or counter), e.g. the table was deleted meanwhile; a full apply recreates everything"
        }
        Some(libc::EEXIST) => {
            "it is already in the kernel, so the kernel holds something portd did not expect; a full apply replaces the table"
        }
        Some(libc::EINVAL) => {
            "the kernel rejected its attributes (a key or value of the wrong type or length, or a feature this kernel lacks)"
        }
        Some(libc::ENOBUFS | libc::EMSGSIZE | libc::ENOSPC) => {
            "too much for one netlink message or socket buffer; change fewer forwards at once, or raise net.core.wmem_max and net.core.rmem_max"
        }
        Some(libc::EOPNOTSUPP) => {
            "this kernel lacks an nf_tables feature portd needs (nft_redir, nft_fib_inet, nft_objref, nft_ct, concatenated interval sets)"
        }
        Some(libc::EBUSY) => "it is still in use (a counter referenced by a map element, or a chain by a rule)",
        Some(libc::ENOTEMPTY) => "it overlaps an interval already in the set",
        Some(libc::ENOMEM) => "the kernel ran out of memory",
        Some(libc::EAGAIN) => "the kernel did not answer in time",
        Some(libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT) => {
            "this kernel has no nf_tables netlink support (CONFIG_NF_TABLES)"
        }
        _ => "see the kernel log (dmesg) for details",
    }
}

fn encode_err(what: impl Into<String>, reason: impl Into<String>) -> BackendError {
    BackendError::Encode { what: what.into(), reason: reason.into() }
}

fn cstring(what: &str, s: &str) -> Result<CString, BackendError> {
    CString::new(s).map_err(|_| encode_err(format!("{what} `{}`", s.escape_debug()), "it contains a NUL byte"))
}

// ---------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------

/// The kernel side of portd: owns the table `inet <table>` and nothing else.
///
/// Changes go out on one netlink socket that stays open between them, in the network
/// namespace the first change was made in. Closing an nfnetlink socket makes nf_tables
/// wait for the deferred destruction of everything deleted since (an RCU grace period:
/// 7 to 30 ms here after deleting one element), so a socket per change would put that
/// wait on every removal.
pub struct Backend {
    table: String,
    tx: Mutex<Option<Conn>>,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend").field("table", &self.table).finish_non_exhaustive()
    }
}

impl Clone for Backend {
    /// The same table, with a socket of its own.
    fn clone(&self) -> Backend {
        Backend::new(&self.table)
    }
}

/// What the kernel holds in portd's table, decoded with the types of an expected plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Named counters: packets and bytes.
    pub counters: BTreeMap<String, (u64, u64)>,
    /// Elements of every set that could be decoded with the expected plan's types.
    pub sets: BTreeMap<String, BTreeSet<Element>>,
    /// Definition of every set in the kernel, decodable or not.
    pub set_shapes: BTreeMap<String, SetShape>,
    /// Chains in kernel order, with their rules.
    pub chains: Vec<ObservedChain>,
    /// What could not be decoded or is unknown to the expected plan; non-empty means no match.
    pub problems: Vec<String>,
}

/// Kernel definition of a set: the attributes that `apply` sets from a plan [`Set`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetShape {
    /// `NFT_SET_*` flags.
    pub flags: u32,
    /// nft datatype of the key (concatenations: 6 bits per field).
    pub key_type: u32,
    /// Key length in bytes.
    pub key_len: u32,
    /// Datatype of map data (0: none).
    pub data_type: u32,
    /// Length of map data (0: none).
    pub data_len: u32,
    /// Object type of object maps (0: none).
    pub obj_type: u32,
}

/// One chain as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedChain {
    /// Chain name.
    pub name: String,
    /// Hook attachment of a base chain.
    pub hook: Option<ObservedHook>,
    /// Each rule as libnftnl prints its expressions, e.g. `[ fib daddr type => reg 1 ] [ cmp eq reg 1 0x00000002 ] ...`.
    pub rules: Vec<String>,
}

/// Hook attachment of a base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedHook {
    /// `filter` or `nat`.
    pub kind: String,
    /// `NF_INET_*` hook number.
    pub hook: u32,
    /// Priority.
    pub priority: i32,
    /// Policy verdict (1: accept).
    pub policy: u32,
}

impl Backend {
    /// A backend for table `inet <table>`; no kernel access until a method is called.
    pub fn new(table: &str) -> Backend {
        Backend { table: table.to_string(), tx: Mutex::new(None) }
    }

    /// Name of the table this backend owns.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Replaces the table with `plan` in one netlink batch: add table, delete table, add
    /// table, then counters, sets with their elements, chains and rules. The kernel applies
    /// all of it or, on any error, none of it.
    pub fn apply(&self, plan: &Plan) -> Result<(), BackendError> {
        let table = self.table_of(plan)?;
        let ids = SetIds::of(plan);
        let t = Table::new(&table, ProtoFamily::Inet);
        // The plan keeps elements packed; the batch (and its error messages) borrow them decoded.
        let decoded: Vec<Vec<Element>> = plan.sets.iter().map(|s| s.elements.iter().collect()).collect();
        let mut b = Builder::new(&table);
        // add table inet T; delete table inet T; add table inet T
        // (the first add makes the delete succeed when the table does not exist yet)
        b.push(&t, MsgType::Add, Subject::Table);
        b.push(&t, MsgType::Del, Subject::Table);
        b.push(&t, MsgType::Add, Subject::Table);
        for name in &plan.counters {
            // counter NAME { }
            let c = CounterMsg::new(&table, name)?;
            b.push(&c, MsgType::Add, Subject::Counter(name));
        }
        for ((i, set), decoded) in plan.sets.iter().enumerate().zip(&decoded) {
            // map NAME { type KEY : DATA; flags interval; elements = { ... } }
            let id = ids.by_index(i);
            let s = SetMsg::new(&table, set, id)?;
            b.push(&s, MsgType::Add, Subject::Set(&set.name));
            let elements: Vec<&Element> = decoded.iter().collect();
            b.push_elements(set, Some(id), &elements, MsgType::Add)?;
        }
        let mut chains = Vec::with_capacity(plan.chains.len());
        for c in &plan.chains {
            // chain NAME { type T hook H priority P; policy accept; }
            let chain = chain_obj(&t, c)?;
            b.push(&chain, MsgType::Add, Subject::Chain(&c.name));
            chains.push(chain);
        }
        for (c, chain) in plan.chains.iter().zip(&chains) {
            for r in &c.rules {
                let rule = build_rule(chain, r, &ids)?;
                b.push(&rule, MsgType::Add, Subject::Rule { chain: &c.name, rule: r });
            }
        }
        self.send(b)
    }

    /// Changes the kernel from `old` to `new` element by element in one batch: add
    /// counters, delete elements, add elements, delete counters. A structural change
    /// (table, chains or set definitions) falls back to [`Backend::apply`] of `new`.
    pub fn apply_delta(&self, old: &Plan, new: &Plan) -> Result<(), BackendError> {
        let d = Plan::diff(old, new);
        if d.structural {
            return self.apply(new);
        }
        self.apply_changes(new, &d)
    }

    /// Sends an element-level [`Delta`] in one batch. `new` supplies the table name and the
    /// set definitions (which a non-structural delta leaves as they are). Adds are
    /// exclusive, so a kernel that drifted from `old` refuses the whole batch.
    pub fn apply_changes(&self, new: &Plan, d: &Delta) -> Result<(), BackendError> {
        if d.structural {
            return Err(encode_err("element-level change".to_string(), "the delta is structural; use apply"));
        }
        if d.is_empty() {
            return Ok(());
        }
        let table = self.table_of(new)?;
        let mut b = Builder::new(&table);
        for name in &d.add_counters {
            // add counter inet T NAME
            let c = CounterMsg::new(&table, name)?;
            b.push(&c, MsgType::Add, Subject::Counter(name));
        }
        for (list, op) in [(&d.del_elements, MsgType::Del), (&d.add_elements, MsgType::Add)] {
            if let Some((name, _)) = list.iter().find(|(n, _)| new.set(n).is_none()) {
                return Err(encode_err(format!("change of set {name}"), "the plan has no such set"));
            }
            for set in &new.sets {
                // delete element inet T SET { ... } / add element inet T SET { ... }
                let elements: Vec<&Element> = list.iter().filter(|(n, _)| *n == set.name).map(|(_, e)| e).collect();
                b.push_elements(set, None, &elements, op)?;
            }
        }
        for name in &d.del_counters {
            // delete counter inet T NAME
            let c = CounterMsg::new(&table, name)?;
            b.push(&c, MsgType::Del, Subject::Counter(name));
        }
        self.send(b)
    }

    /// What the kernel holds in the table now, decoded with the types of `expected`, or
    /// `None` when the table does not exist.
    pub fn read(&self, expected: &Plan) -> Result<Option<Observed>, BackendError> {
        let table = cstring("table name", &self.table)?;
        for _ in 0..READ_ATTEMPTS {
            let mut r = Reader::new(&table, &self.table)?;
            let Some(raw) = r.read_all()? else {
                return Ok(None);
            };
            if r.consistent() {
                return Ok(Some(raw.decode(expected)));
            }
        }
        Err(BackendError::Unstable { table: self.table.clone(), attempts: READ_ATTEMPTS })
    }

    /// Deletes the table; succeeds when it does not exist.
    pub fn remove(&self) -> Result<(), BackendError> {
        let table = cstring("table name", &self.table)?;
        let t = Table::new(&table, ProtoFamily::Inet);
        let mut b = Builder::new(&table);
        // add table inet T; delete table inet T (the add makes a missing table no error)
        b.push(&t, MsgType::Add, Subject::Table);
        b.push(&t, MsgType::Del, Subject::Table);
        self.send(b)
    }

    /// Sends a batch on the kept socket (opened on first use). A socket that saw any
    /// failure is closed rather than reused, so no stray answer can reach the next batch.
    fn send(&self, b: Builder<'_>) -> Result<(), BackendError> {
        let mut slot = self.tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut conn = match slot.take() {
            Some(c) => c,
            None => Conn::open()?,
        };
        conn.drain();
        let result = b.commit(&mut conn);
        if result.is_ok() {
            *slot = Some(conn);
        }
        result
    }

    fn table_of(&self, plan: &Plan) -> Result<CString, BackendError> {
        if plan.table != self.table {
            return Err(encode_err(
                format!("plan for table inet {}", plan.table),
                format!("this backend owns table inet {} and touches no other", self.table),
            ));
        }
        cstring("table name", &self.table)
    }
}

impl Observed {
    /// True when the kernel holds exactly what [`Backend::apply`] of `plan` builds: the
    /// same counters, set definitions and elements, chains, hooks and rule expressions.
    pub fn matches(&self, plan: &Plan) -> bool {
        self.differences(plan).is_empty()
    }

    /// Every way the kernel differs from `plan`, one line each, for logs and status.
    pub fn differences(&self, plan: &Plan) -> Vec<String> {
        let mut out = self.problems.clone();
        let have: BTreeSet<&String> = self.counters.keys().collect();
        let want: BTreeSet<&String> = plan.counters.iter().collect();
        out.extend(want.difference(&have).map(|c| format!("counter {c} is missing")));
        out.extend(have.difference(&want).map(|c| format!("counter {c} is not in the plan")));
        for set in &plan.sets {
            match (SetShape::of(set), self.set_shapes.get(&set.name)) {
                (_, None) => {
                    out.push(format!("set {} is missing", set.name));
                    continue;
                }
                (Err(e), _) => out.push(format!("set {}: {e}", set.name)),
                (Ok(want), Some(have)) if want != *have => {
                    out.push(format!("set {} is defined as {have:?}, the plan wants {want:?}", set.name));
                }
                _ => {}
            }
            let want: BTreeSet<Element> = set.elements.iter().map(|e| normalize(&e)).collect();
            match self.sets.get(&set.name) {
                Some(have) if *have == want => {}
                Some(have) => {
                    let missing: Vec<&Element> = want.difference(have).collect();
                    let extra: Vec<&Element> = have.difference(&want).collect();
                    let mut line = format!(
                        "set {}: {} elements missing, {} not in the plan",
                        set.name,
                        missing.len(),
                        extra.len()
                    );
                    if let Some(e) = missing.first() {
                        line.push_str(&format!(", e.g. missing {}", element_text(e)));
                    }
                    if let Some(e) = extra.first() {
                        line.push_str(&format!(", e.g. extra {}", element_text(e)));
                    }
                    out.push(line);
                }
                None => out.push(format!("set {} could not be decoded", set.name)),
            }
        }
        for name in self.set_shapes.keys() {
            if plan.set(name).is_none() {
                out.push(format!("set {name} is not in the plan"));
            }
        }
        match expected_chains(plan) {
            Err(e) => out.push(format!("cannot build the plan's rules: {e}")),
            Ok(want) => {
                let names = |v: &[ObservedChain]| v.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
                if names(&want) != names(&self.chains) {
                    out.push(format!("chains are {:?}, the plan has {:?}", names(&self.chains), names(&want)));
                }
                for (w, h) in want.iter().zip(&self.chains) {
                    if w.hook != h.hook {
                        out.push(format!("chain {} is hooked as {:?}, the plan wants {:?}", w.name, h.hook, w.hook));
                    }
                    if w.rules.len() != h.rules.len() {
                        out.push(format!(
                            "chain {} has {} rules, the plan has {}",
                            w.name,
                            h.rules.len(),
                            w.rules.len()
                        ));
                    }
                    if let Some((i, (want, have))) = w.rules.iter().zip(&h.rules).enumerate().find(|(_, (a, b))| a != b)
                    {
                        out.push(format!("chain {} rule {}: kernel has {have}, the plan wants {want}", w.name, i + 1));
                    }
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Encoding of keys, data and set definitions
// ---------------------------------------------------------------------------------------

/// How nft(8) represents one key field: datatype, length in bytes, byte order.
fn field_spec(t: FieldType) -> Option<(u32, u32, u32)> {
    Some(match t {
        FieldType::NfProto => (k::TYPE_NFPROTO, 1, k::BYTEORDER_HOST),
        FieldType::InetProto => (k::TYPE_INET_PROTOCOL, 1, k::BYTEORDER_BIG),
        FieldType::InetService => (k::TYPE_INET_SERVICE, 2, k::BYTEORDER_BIG),
        FieldType::Ifname => (k::TYPE_IFNAME, 16, k::BYTEORDER_HOST),
        FieldType::Ipv4Addr => (k::TYPE_IPADDR, 4, k::BYTEORDER_BIG),
        FieldType::Ipv6Addr => (k::TYPE_IP6ADDR, 16, k::BYTEORDER_BIG),
        FieldType::Mark => (k::TYPE_MARK, 4, k::BYTEORDER_HOST),
        FieldType::Counter => return None,
    })
}

/// Length of a field in a concatenation: every field starts on a 4-byte register.
fn reg_len(len: u32) -> u32 {
    len.div_ceil(4) * 4
}

impl SetShape {
    /// The kernel definition `apply` gives `set`.
    pub fn of(set: &Set) -> Result<SetShape, String> {
        let mut shape = SetShape::default();
        let concat = set.key.len() > 1;
        for t in &set.key {
            let (id, len, _) = field_spec(*t).ok_or_else(|| format!("{t:?} cannot be part of a key"))?;
            shape.key_type = (shape.key_type << k::TYPE_BITS) | id;
            shape.key_len += if concat { reg_len(len) } else { len };
        }
        if set.key.is_empty() {
            return Err("the key has no fields".into());
        }
        if set.interval {
            shape.flags |= k::NFT_SET_INTERVAL;
            if concat {
                shape.flags |= k::NFT_SET_CONCAT;
            }
        }
        match set.data {
            None => {}
            Some(FieldType::Counter) => {
                shape.flags |= k::NFT_SET_OBJECT;
                shape.obj_type = k::NFT_OBJECT_COUNTER;
            }
            Some(t) => {
                let (id, len, _) = field_spec(t).ok_or_else(|| format!("{t:?} cannot be map data"))?;
                shape.flags |= k::NFT_SET_MAP;
                shape.data_type = id;
                shape.data_len = len;
            }
        }
        Ok(shape)
    }
}

/// The userdata nft(8) 1.0.6 attaches to a set: key and data byte order, an (empty)
/// typeof record for concatenated keys, and the data-interval flag of maps. `nft list`
/// reads it back, so it is reproduced byte for byte.
fn set_udata(set: &Set) -> Vec<u8> {
    fn put_u32(out: &mut Vec<u8>, ty: u8, v: u32) {
        out.extend_from_slice(&[ty, 4]);
        out.extend_from_slice(&v.to_ne_bytes());
    }
    let mut out = Vec::new();
    let key_order = match set.key.as_slice() {
        [one] => field_spec(*one).map_or(k::BYTEORDER_INVALID, |s| s.2),
        _ => k::BYTEORDER_INVALID,
    };
    put_u32(&mut out, k::UDATA_SET_KEYBYTEORDER, key_order);
    if let Some(d) = set.data.and_then(field_spec) {
        put_u32(&mut out, k::UDATA_SET_DATABYTEORDER, d.2);
    }
    if set.key.len() > 1 {
        // nest { TYPEOF_EXPR: EXPR_CONCAT, TYPEOF_DATA: nest { } }
        out.extend_from_slice(&[k::UDATA_SET_KEY_TYPEOF, 8]);
        put_u32(&mut out, k::UDATA_SET_TYPEOF_EXPR, k::EXPR_CONCAT);
        out.extend_from_slice(&[k::UDATA_SET_TYPEOF_DATA, 0]);
    }
    if set.data.is_some() {
        put_u32(&mut out, k::UDATA_SET_DATA_INTERVAL, 0);
    }
    out
}

/// One element as netlink bytes.
struct EncodedElem {
    key: Vec<u8>,
    key_end: Option<Vec<u8>>,
    data: Option<Vec<u8>>,
    objref: Option<CString>,
}

impl EncodedElem {
    /// Bytes this element takes in a set-element message.
    fn wire_len(&self) -> usize {
        let value = |len: usize| 8 + len.div_ceil(4) * 4;
        4 + value(self.key.len())
            + self.key_end.as_ref().map_or(0, |v| value(v.len()))
            + self.data.as_ref().map_or(0, |v| value(v.len()))
            + self.objref.as_ref().map_or(0, |s| 4 + (s.as_bytes().len() + 1).div_ceil(4) * 4)
    }
}

/// The bytes of one value, as nft(8) puts it into a key or map data.
fn value_bytes(v: &Value) -> Result<Vec<u8>, String> {
    Ok(match v {
        Value::NfProto(Family::Ipv4) => vec![k::NFPROTO_IPV4],
        Value::NfProto(Family::Ipv6) => vec![k::NFPROTO_IPV6],
        Value::InetProto(Proto::Tcp) => vec![libc::IPPROTO_TCP as u8],
        Value::InetProto(Proto::Udp) => vec![libc::IPPROTO_UDP as u8],
        Value::InetService(p) => p.to_be_bytes().to_vec(),
        Value::Ifname(name) => {
            if name.len() > 15 || name.contains('\0') {
                return Err(format!("interface name `{}` is longer than 15 bytes or has a NUL", name.escape_debug()));
            }
            let mut b = name.as_bytes().to_vec();
            b.resize(16, 0);
            b
        }
        Value::Ipv4Net(n) if n.prefix_len() == 32 => n.addr().octets().to_vec(),
        Value::Ipv6Net(n) if n.prefix_len() == 128 => n.addr().octets().to_vec(),
        Value::Ipv4Net(_) | Value::Ipv6Net(_) => {
            return Err(format!("network {} needs an interval set", render::value(v)))
        }
        Value::Mark(m) => m.to_ne_bytes().to_vec(),
        Value::Counter(c) => return Err(format!("counter reference \"{c}\" can only be the data of a counter map")),
    })
}

/// Encodes `e` for `set`: fields padded to registers in concatenations, networks of
/// interval sets as first and last address (`KEY` and `KEY_END`).
fn encode_element(set: &Set, e: &Element, with_data: bool) -> Result<EncodedElem, String> {
    if e.key.len() != set.key.len() {
        return Err(format!("it has {} key fields, the set's key has {}", e.key.len(), set.key.len()));
    }
    let concat = set.key.len() > 1;
    let (mut key, mut end) = (Vec::new(), Vec::new());
    for v in &e.key {
        let (first, last) = match v {
            Value::Ipv4Net(n) if set.interval => (n.network().octets().to_vec(), n.broadcast().octets().to_vec()),
            Value::Ipv6Net(n) if set.interval => (n.network().octets().to_vec(), n.broadcast().octets().to_vec()),
            _ => {
                let b = value_bytes(v)?;
                (b.clone(), b)
            }
        };
        let width = if concat { reg_len(first.len() as u32) as usize } else { first.len() };
        for (out, mut b) in [(&mut key, first), (&mut end, last)] {
            b.resize(width, 0);
            out.extend_from_slice(&b);
        }
    }
    let mut out = EncodedElem { key, key_end: set.interval.then_some(end), data: None, objref: None };
    if !with_data {
        return Ok(out);
    }
    match (set.data, &e.data) {
        (None, None) => {}
        (Some(FieldType::Counter), Some(Value::Counter(name))) => {
            out.objref = Some(CString::new(name.as_str()).map_err(|_| "the counter name has a NUL byte".to_string())?);
        }
        (Some(_), Some(v)) => out.data = Some(value_bytes(v)?),
        (None, Some(_)) => return Err("it has data but the set is not a map".into()),
        (Some(_), None) => return Err("it has no data but the set is a map".into()),
    }
    Ok(out)
}

/// An element as nft(8) writes it, e.g. `ipv4 . tcp . 80 : 8080`.
fn element_text(e: &Element) -> String {
    let key: Vec<String> = e.key.iter().map(render::value).collect();
    match &e.data {
        Some(d) => format!("{} : {}", key.join(" . "), render::value(d)),
        None => key.join(" . "),
    }
}

/// `e` with networks reduced to their prefix, as the kernel stores them.
fn normalize(e: &Element) -> Element {
    let key = e
        .key
        .iter()
        .map(|v| match v {
            Value::Ipv4Net(n) => Value::Ipv4Net(n.trunc()),
            Value::Ipv6Net(n) => Value::Ipv6Net(n.trunc()),
            v => v.clone(),
        })
        .collect();
    Element { key, data: e.data.clone() }
}

/// Decodes a kernel element with the field types of `set`.
fn decode_element(set: &Set, raw: &RawElem) -> Result<Element, String> {
    let concat = set.key.len() > 1;
    let mut at = 0usize;
    let mut key = Vec::with_capacity(set.key.len());
    let end_bytes = raw.key_end.as_deref();
    for t in &set.key {
        let (_, len, _) = field_spec(*t).ok_or_else(|| format!("{t:?} cannot be part of a key"))?;
        let width = if concat { reg_len(len) } else { len } as usize;
        let field = raw.key.get(at..at + len as usize).ok_or("the key is too short")?;
        let field_end = match end_bytes {
            Some(b) => b.get(at..at + len as usize).ok_or("the key end is too short")?,
            None => field,
        };
        at += width;
        let value = match t {
            FieldType::Ipv4Addr => {
                let a = u32::from_be_bytes(field.try_into().map_err(|_| "bad IPv4 address")?);
                let b = u32::from_be_bytes(field_end.try_into().map_err(|_| "bad IPv4 address")?);
                let net = v4_prefix(a, b)
                    .ok_or_else(|| format!("{} - {} is not a network", Ipv4Addr::from(a), Ipv4Addr::from(b)))?;
                Value::Ipv4Net(net)
            }
            FieldType::Ipv6Addr => {
                let a = u128::from_be_bytes(field.try_into().map_err(|_| "bad IPv6 address")?);
                let b = u128::from_be_bytes(field_end.try_into().map_err(|_| "bad IPv6 address")?);
                let net = v6_prefix(a, b)
                    .ok_or_else(|| format!("{} - {} is not a network", Ipv6Addr::from(a), Ipv6Addr::from(b)))?;
                Value::Ipv6Net(net)
            }
            t => {
                if field != field_end {
                    return Err(format!("an interval over a {t:?} field"));
                }
                decode_value(*t, field)?
            }
        };
        key.push(value);
    }
    if at != raw.key.len() {
        return Err(format!("the key has {} bytes, the set's type needs {at}", raw.key.len()));
    }
    let data = match set.data {
        None if raw.data.is_none() && raw.objref.is_none() => None,
        None => return Err("it has data but the plan's set is not a map".into()),
        Some(FieldType::Counter) => Some(Value::Counter(raw.objref.clone().ok_or("it refers to no counter")?)),
        Some(t) => Some(decode_value(t, raw.data.as_deref().ok_or("it has no data")?)?),
    };
    Ok(Element { key, data })
}

/// Decodes one non-network value of exactly its own length.
fn decode_value(t: FieldType, b: &[u8]) -> Result<Value, String> {
    let bad = || format!("{} bytes are no {t:?}", b.len());
    Ok(match (t, b) {
        (FieldType::NfProto, [k::NFPROTO_IPV4]) => Value::NfProto(Family::Ipv4),
        (FieldType::NfProto, [k::NFPROTO_IPV6]) => Value::NfProto(Family::Ipv6),
        (FieldType::InetProto, [p]) if i32::from(*p) == libc::IPPROTO_TCP => Value::InetProto(Proto::Tcp),
        (FieldType::InetProto, [p]) if i32::from(*p) == libc::IPPROTO_UDP => Value::InetProto(Proto::Udp),
        (FieldType::InetService, [a, b]) => Value::InetService(u16::from_be_bytes([*a, *b])),
        (FieldType::Mark, [a, b, c, d]) => Value::Mark(u32::from_ne_bytes([*a, *b, *c, *d])),
        (FieldType::Ifname, b) if b.len() == 16 => {
            let name = b.split(|c| *c == 0).next().unwrap_or_default();
            Value::Ifname(String::from_utf8(name.to_vec()).map_err(|_| "interface name is not UTF-8")?)
        }
        (FieldType::NfProto | FieldType::InetProto, [v]) => return Err(format!("unknown {t:?} {v}")),
        _ => return Err(bad()),
    })
}

/// The network whose first and last address are `a` and `b`, if there is one.
fn v4_prefix(a: u32, b: u32) -> Option<ipnet::Ipv4Net> {
    let host = a ^ b;
    (host & host.wrapping_add(1) == 0 && a & host == 0)
        .then(|| ipnet::Ipv4Net::new(a.into(), (32 - host.count_ones()) as u8).ok())
        .flatten()
}

/// The network whose first and last address are `a` and `b`, if there is one.
fn v6_prefix(a: u128, b: u128) -> Option<ipnet::Ipv6Net> {
    let host = a ^ b;
    (host & host.wrapping_add(1) == 0 && a & host == 0)
        .then(|| ipnet::Ipv6Net::new(a.into(), (128 - host.count_ones()) as u8).ok())
        .flatten()
}

// ---------------------------------------------------------------------------------------
// Netlink objects nftnl does not provide: counters, sets, set-element chunks
// ---------------------------------------------------------------------------------------

/// A libnftnl allocation; allocation only fails when memory is exhausted, and then we
/// abort like the allocator and `nftnl` itself do.
fn alloc<T>(p: *mut T) -> NonNull<T> {
    match NonNull::new(p) {
        Some(p) => p,
        None => std::process::abort(),
    }
}

/// A named counter object (`NFT_MSG_NEWOBJ` / `NFT_MSG_DELOBJ`).
struct CounterMsg {
    raw: NonNull<sys::nftnl_obj>,
}

impl CounterMsg {
    fn new(table: &CStr, name: &str) -> Result<CounterMsg, BackendError> {
        let cname = cstring("counter", name)?;
        // SAFETY: a fresh object; strings are copied by libnftnl.
        unsafe {
            let raw = alloc(sys::nftnl_obj_alloc());
            let o = raw.as_ptr();
            sys::nftnl_obj_set_u32(o, sys::NFTNL_OBJ_FAMILY as u16, u32::from(k::NFPROTO_INET));
            sys::nftnl_obj_set_str(o, sys::NFTNL_OBJ_TABLE as u16, table.as_ptr());
            sys::nftnl_obj_set_str(o, sys::NFTNL_OBJ_NAME as u16, cname.as_ptr());
            sys::nftnl_obj_set_u32(o, sys::NFTNL_OBJ_TYPE as u16, k::NFT_OBJECT_COUNTER);
            sys::nftnl_obj_set_u64(o, sys::NFTNL_OBJ_CTR_PKTS as u16, 0);
            sys::nftnl_obj_set_u64(o, sys::NFTNL_OBJ_CTR_BYTES as u16, 0);
            Ok(CounterMsg { raw })
        }
    }
}

// SAFETY: a counter message is a few hundred bytes, far below nft_nlmsg_maxsize().
unsafe impl NlMsg for CounterMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let (ty, flags) = match msg_type {
            MsgType::Add => (k::NFT_MSG_NEWOBJ, k::NLM_F_CREATE | k::NLM_F_EXCL | k::NLM_F_ACK),
            MsgType::Del => (k::NFT_MSG_DELOBJ, k::NLM_F_ACK),
        };
        // SAFETY: the caller provides a buffer of nft_nlmsg_maxsize() bytes.
        unsafe {
            let nlh = sys::nftnl_nlmsg_build_hdr(buf.cast::<c_char>(), ty, k::NFPROTO_INET, flags, seq);
            sys::nftnl_obj_nlmsg_build_payload(nlh, self.raw.as_ptr());
        }
    }
}

impl Drop for CounterMsg {
    fn drop(&mut self) {
        // SAFETY: allocated by nftnl_obj_alloc and freed only here.
        unsafe { sys::nftnl_obj_free(self.raw.as_ptr()) }
    }
}

/// A set or map definition (`NFT_MSG_NEWSET`) built as nft(8) builds it.
struct SetMsg {
    raw: NonNull<sys::nftnl_set>,
}

impl SetMsg {
    fn new(table: &CStr, set: &Set, id: u32) -> Result<SetMsg, BackendError> {
        let what = || format!("set {}", set.name);
        let shape = SetShape::of(set).map_err(|e| encode_err(what(), e))?;
        let name = cstring("set", &set.name)?;
        let udata = set_udata(set);
        // concatenated interval sets also describe their field lengths: inet_proto . inet_service . ipv4_addr is 1, 2, 4
        let fields: Vec<u8> = set.key.iter().filter_map(|t| field_spec(*t)).map(|s| s.1 as u8).collect();
        let msg = SetMsg { raw: alloc(unsafe { sys::nftnl_set_alloc() }) };
        let s = msg.raw.as_ptr();
        // SAFETY: `s` is a fresh set; strings and data are copied by libnftnl.
        let ok = unsafe {
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FAMILY as u16, u32::from(k::NFPROTO_INET));
            sys::nftnl_set_set_str(s, sys::NFTNL_SET_TABLE as u16, table.as_ptr());
            sys::nftnl_set_set_str(s, sys::NFTNL_SET_NAME as u16, name.as_ptr());
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_ID as u16, id);
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FLAGS as u16, shape.flags);
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_TYPE as u16, shape.key_type);
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_LEN as u16, shape.key_len);
            if shape.flags & k::NFT_SET_MAP != 0 {
                sys::nftnl_set_set_u32(s, sys::NFTNL_SET_DATA_TYPE as u16, shape.data_type);
                sys::nftnl_set_set_u32(s, sys::NFTNL_SET_DATA_LEN as u16, shape.data_len);
            }
            if shape.flags & k::NFT_SET_OBJECT != 0 {
                sys::nftnl_set_set_u32(s, sys::NFTNL_SET_OBJ_TYPE as u16, shape.obj_type);
            }
            let mut ok = true;
            if shape.flags & k::NFT_SET_CONCAT != 0 {
                ok &= sys::nftnl_set_set_data(
                    s,
                    sys::NFTNL_SET_DESC_CONCAT as u16,
                    fields.as_ptr().cast(),
                    fields.len() as u32,
                ) == 0;
            }
            ok &= sys::nftnl_set_set_data(s, sys::NFTNL_SET_USERDATA as u16, udata.as_ptr().cast(), udata.len() as u32)
                == 0;
            ok
        };
        if !ok {
            return Err(encode_err(what(), format!("libnftnl refused its description ({} key fields)", fields.len())));
        }
        Ok(msg)
    }
}

// SAFETY: a set definition is a few hundred bytes, far below nft_nlmsg_maxsize().
unsafe impl NlMsg for SetMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _msg_type: MsgType) {
        let flags = k::NLM_F_CREATE | k::NLM_F_EXCL | k::NLM_F_ACK;
        // SAFETY: the caller provides a buffer of nft_nlmsg_maxsize() bytes.
        unsafe {
            let nlh = sys::nftnl_nlmsg_build_hdr(buf.cast::<c_char>(), k::NFT_MSG_NEWSET, k::NFPROTO_INET, flags, seq);
            sys::nftnl_set_nlmsg_build_payload(nlh, self.raw.as_ptr());
        }
    }
}

impl Drop for SetMsg {
    fn drop(&mut self) {
        // SAFETY: allocated by nftnl_set_alloc and freed only here.
        unsafe { sys::nftnl_set_free(self.raw.as_ptr()) }
    }
}

/// One `NFT_MSG_NEWSETELEM` / `NFT_MSG_DELSETELEM` message: a chunk of a set's elements.
struct ElemMsg {
    raw: NonNull<sys::nftnl_set>,
}

impl ElemMsg {
    /// Encodes elements from the front of `elements` until the message holds
    /// [`ELEMS_BYTES`] (at least one); returns it and how many elements it took. An
    /// element that cannot be encoded is returned as its index and the reason.
    fn chunk(
        table: &CStr,
        set: &Set,
        id: Option<u32>,
        elements: &[&Element],
        with_data: bool,
    ) -> Result<(ElemMsg, usize), (usize, String)> {
        let name = CString::new(set.name.as_str()).map_err(|_| (0, "the set name has a NUL byte".to_string()))?;
        let msg = ElemMsg { raw: alloc(unsafe { sys::nftnl_set_alloc() }) };
        let s = msg.raw.as_ptr();
        // SAFETY: `s` is a fresh set used only as a container for elements.
        unsafe {
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FAMILY as u16, u32::from(k::NFPROTO_INET));
            sys::nftnl_set_set_str(s, sys::NFTNL_SET_TABLE as u16, table.as_ptr());
            sys::nftnl_set_set_str(s, sys::NFTNL_SET_NAME as u16, name.as_ptr());
            if let Some(id) = id {
                sys::nftnl_set_set_u32(s, sys::NFTNL_SET_ID as u16, id);
            }
        }
        let (mut bytes, mut taken) = (0, 0);
        for (i, e) in elements.iter().enumerate() {
            let enc = encode_element(set, e, with_data).map_err(|r| (i, r))?;
            let len = enc.wire_len();
            if taken > 0 && bytes + len > ELEMS_BYTES {
                break;
            }
            bytes += len;
            taken += 1;
            // SAFETY: a fresh element, handed to the set which then owns it; data is copied.
            unsafe {
                let el = alloc(sys::nftnl_set_elem_alloc()).as_ptr();
                let put = |attr: u32, b: &[u8]| {
                    sys::nftnl_set_elem_set(el, attr as u16, b.as_ptr().cast(), b.len() as u32);
                };
                put(sys::NFTNL_SET_ELEM_KEY, &enc.key);
                if let Some(end) = &enc.key_end {
                    put(sys::NFTNL_SET_ELEM_KEY_END, end);
                }
                if let Some(data) = &enc.data {
                    put(sys::NFTNL_SET_ELEM_DATA, data);
                }
                if let Some(name) = &enc.objref {
                    sys::nftnl_set_elem_set_str(el, sys::NFTNL_SET_ELEM_OBJREF as u16, name.as_ptr());
                }
                sys::nftnl_set_elem_add(s, el);
            }
        }
        Ok((msg, taken))
    }
}

// SAFETY: `chunk` keeps the element list below ELEMS_BYTES (32 KiB), and the names are
// at most a few hundred bytes, so the message stays below nft_nlmsg_maxsize().
unsafe impl NlMsg for ElemMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let (ty, flags) = match msg_type {
            MsgType::Add => (k::NFT_MSG_NEWSETELEM, k::NLM_F_CREATE | k::NLM_F_EXCL | k::NLM_F_ACK),
            MsgType::Del => (k::NFT_MSG_DELSETELEM, k::NLM_F_ACK),
        };
        // SAFETY: the caller provides a buffer of nft_nlmsg_maxsize() bytes.
        unsafe {
            let nlh = sys::nftnl_nlmsg_build_hdr(buf.cast::<c_char>(), ty, k::NFPROTO_INET, flags, seq);
            sys::nftnl_set_elems_nlmsg_build_payload(nlh, self.raw.as_ptr());
        }
    }
}

impl Drop for ElemMsg {
    fn drop(&mut self) {
        // SAFETY: allocated by nftnl_set_alloc and freed only here (with its elements).
        unsafe { sys::nftnl_set_free(self.raw.as_ptr()) }
    }
}

// ---------------------------------------------------------------------------------------
// Expressions and rules
// ---------------------------------------------------------------------------------------

/// One nf_tables expression with exactly the attributes nft(8) gives it; the comment on
/// each variant is how libnftnl prints it.
enum Expr {
    /// `[ meta load KEY => reg DREG ]`
    Meta { key: u32, dreg: u32 },
    /// `[ meta set KEY with reg SREG ]`
    MetaSet { key: u32, sreg: u32 },
    /// `[ payload load LENb @ BASE header + OFFSET => reg DREG ]`
    Payload { base: u32, offset: u32, len: u32, dreg: u32 },
    /// `[ cmp OP reg SREG DATA ]`
    Cmp { op: u32, sreg: u32, data: Vec<u8> },
    /// `[ bitwise reg R = ( reg R & MASK ) ^ 0x00000000 ]` on a 4-byte register
    And32 { reg: u32, mask: u32 },
    /// `[ byteorder reg R = hton(reg R, SIZE, LEN) ]`
    Hton { reg: u32, size: u32, len: u32 },
    /// `[ lookup reg SREG set NAME (dreg DREG) FLAGS ]`; the flags are always sent
    /// (`0x0` or `0x1` for `!=`) because the kernel always reports them.
    Lookup { set: CString, set_id: u32, sreg: u32, dreg: Option<u32>, invert: bool },
    /// `[ objref sreg SREG set NAME ]`
    ObjrefMap { set: CString, set_id: u32, sreg: u32 },
    /// `[ fib daddr type => reg DREG ]`
    FibDaddrType { dreg: u32 },
    /// `[ ct load KEY => reg DREG ]`
    Ct { key: u32, dreg: u32 },
    /// `[ redir proto_min reg R proto_max reg R flags 0x2 ]` (the kernel reports
    /// proto_max equal to proto_min when only the latter is given, so both are sent)
    Redir { reg: u32 },
    /// `[ immediate reg 0 VERDICT (-> CHAIN) ]`
    Verdict { code: i32, chain: Option<CString> },
}

impl Expression for Expr {
    fn to_expr(&self, _rule: &nftnl::Rule<'_>) -> NonNull<sys::nftnl_expr> {
        let name: &CStr = match self {
            Expr::Meta { .. } | Expr::MetaSet { .. } => c"meta",
            Expr::Payload { .. } => c"payload",
            Expr::Cmp { .. } => c"cmp",
            Expr::And32 { .. } => c"bitwise",
            Expr::Hton { .. } => c"byteorder",
            Expr::Lookup { .. } => c"lookup",
            Expr::ObjrefMap { .. } => c"objref",
            Expr::FibDaddrType { .. } => c"fib",
            Expr::Ct { .. } => c"ct",
            Expr::Redir { .. } => c"redir",
            Expr::Verdict { .. } => c"immediate",
        };
        let expr = alloc(unsafe { sys::nftnl_expr_alloc(name.as_ptr()) });
        let e = expr.as_ptr();
        let u32_ = |attr: u32, v: u32| unsafe { sys::nftnl_expr_set_u32(e, attr as u16, v) };
        let bytes = |attr: u32, b: &[u8]| unsafe {
            sys::nftnl_expr_set(e, attr as u16, b.as_ptr().cast(), b.len() as u32);
        };
        let str_ = |attr: u32, s: &CStr| unsafe {
            sys::nftnl_expr_set_str(e, attr as u16, s.as_ptr());
        };
        // Every attribute below belongs to the expression type named above; libnftnl
        // copies strings and data.
        match self {
            Expr::Meta { key, dreg } => {
                u32_(sys::NFTNL_EXPR_META_KEY, *key);
                u32_(sys::NFTNL_EXPR_META_DREG, *dreg);
            }
            Expr::MetaSet { key, sreg } => {
                u32_(sys::NFTNL_EXPR_META_KEY, *key);
                u32_(sys::NFTNL_EXPR_META_SREG, *sreg);
            }
            Expr::Payload { base, offset, len, dreg } => {
                u32_(sys::NFTNL_EXPR_PAYLOAD_DREG, *dreg);
                u32_(sys::NFTNL_EXPR_PAYLOAD_BASE, *base);
                u32_(sys::NFTNL_EXPR_PAYLOAD_OFFSET, *offset);
                u32_(sys::NFTNL_EXPR_PAYLOAD_LEN, *len);
            }
            Expr::Cmp { op, sreg, data } => {
                u32_(sys::NFTNL_EXPR_CMP_SREG, *sreg);
                u32_(sys::NFTNL_EXPR_CMP_OP, *op);
                bytes(sys::NFTNL_EXPR_CMP_DATA, data);
            }
            Expr::And32 { reg, mask } => {
                u32_(sys::NFTNL_EXPR_BITWISE_SREG, *reg);
                u32_(sys::NFTNL_EXPR_BITWISE_DREG, *reg);
                u32_(sys::NFTNL_EXPR_BITWISE_LEN, 4);
                bytes(sys::NFTNL_EXPR_BITWISE_MASK, &mask.to_ne_bytes());
                bytes(sys::NFTNL_EXPR_BITWISE_XOR, &0u32.to_ne_bytes());
            }
            Expr::Hton { reg, size, len } => {
                u32_(sys::NFTNL_EXPR_BYTEORDER_SREG, *reg);
                u32_(sys::NFTNL_EXPR_BYTEORDER_DREG, *reg);
                u32_(sys::NFTNL_EXPR_BYTEORDER_OP, k::NFT_BYTEORDER_HTON);
                u32_(sys::NFTNL_EXPR_BYTEORDER_LEN, *len);
                u32_(sys::NFTNL_EXPR_BYTEORDER_SIZE, *size);
            }
            Expr::Lookup { set, set_id, sreg, dreg, invert } => {
                u32_(sys::NFTNL_EXPR_LOOKUP_SREG, *sreg);
                if let Some(d) = dreg {
                    u32_(sys::NFTNL_EXPR_LOOKUP_DREG, *d);
                }
                str_(sys::NFTNL_EXPR_LOOKUP_SET, set);
                u32_(sys::NFTNL_EXPR_LOOKUP_SET_ID, *set_id);
                u32_(sys::NFTNL_EXPR_LOOKUP_FLAGS, if *invert { k::NFT_LOOKUP_F_INV } else { 0 });
            }
            Expr::ObjrefMap { set, set_id, sreg } => {
                u32_(sys::NFTNL_EXPR_OBJREF_SET_SREG, *sreg);
                str_(sys::NFTNL_EXPR_OBJREF_SET_NAME, set);
                u32_(sys::NFTNL_EXPR_OBJREF_SET_ID, *set_id);
            }
            Expr::FibDaddrType { dreg } => {
                u32_(sys::NFTNL_EXPR_FIB_DREG, *dreg);
                u32_(sys::NFTNL_EXPR_FIB_RESULT, k::NFT_FIB_RESULT_ADDRTYPE);
                u32_(sys::NFTNL_EXPR_FIB_FLAGS, k::NFTA_FIB_F_DADDR);
            }
            Expr::Ct { key, dreg } => {
                u32_(sys::NFTNL_EXPR_CT_DREG, *dreg);
                u32_(sys::NFTNL_EXPR_CT_KEY, *key);
            }
            Expr::Redir { reg } => {
                u32_(sys::NFTNL_EXPR_REDIR_REG_PROTO_MIN, *reg);
                u32_(sys::NFTNL_EXPR_REDIR_REG_PROTO_MAX, *reg);
                u32_(sys::NFTNL_EXPR_REDIR_FLAGS, k::NF_NAT_RANGE_PROTO_SPECIFIED);
            }
            Expr::Verdict { code, chain } => {
                u32_(sys::NFTNL_EXPR_IMM_DREG, k::NFT_REG_VERDICT);
                u32_(sys::NFTNL_EXPR_IMM_VERDICT, *code as u32);
                if let Some(c) = chain {
                    str_(sys::NFTNL_EXPR_IMM_CHAIN, c);
                }
            }
        }
        expr
    }
}

/// Set IDs of one plan: nft numbers the sets of a batch 1, 2, ... in order, and rules
/// and element messages name a set created in the same batch by name and ID.
struct SetIds(HashMap<String, u32>);

impl SetIds {
    fn of(plan: &Plan) -> SetIds {
        SetIds(plan.sets.iter().enumerate().map(|(i, s)| (s.name.clone(), i as u32 + 1)).collect())
    }

    fn by_index(&self, i: usize) -> u32 {
        i as u32 + 1
    }

    fn get(&self, name: &str) -> Result<(CString, u32), String> {
        let id = self.0.get(name).ok_or_else(|| format!("the plan has no set {name}"))?;
        let c = CString::new(name).map_err(|_| format!("set name `{}` has a NUL byte", name.escape_debug()))?;
        Ok((c, *id))
    }
}

/// `meta nfproto . meta l4proto . th dport` into reg 1, reg 9 and reg 10.
fn load_key() -> [Expr; 3] {
    [
        Expr::Meta { key: k::NFT_META_NFPROTO, dreg: k::NFT_REG_1 },
        Expr::Meta { key: k::NFT_META_L4PROTO, dreg: k::NFT_REG32_01 },
        Expr::Payload { base: k::NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, len: 2, dreg: k::NFT_REG32_02 },
    ]
}

/// `fib daddr type local`
fn fib_daddr_local() -> [Expr; 2] {
    [
        Expr::FibDaddrType { dreg: k::NFT_REG_1 },
        Expr::Cmp { op: k::NFT_CMP_EQ, sreg: k::NFT_REG_1, data: k::RTN_LOCAL.to_ne_bytes().to_vec() },
    ]
}

fn lookup(ids: &SetIds, set: &str, dreg: Option<u32>, invert: bool) -> Result<Expr, String> {
    let (set, set_id) = ids.get(set)?;
    Ok(Expr::Lookup { set, set_id, sreg: k::NFT_REG_1, dreg, invert })
}

fn jump(chain: &str) -> Result<Expr, String> {
    let c = CString::new(chain).map_err(|_| format!("chain name `{}` has a NUL byte", chain.escape_debug()))?;
    Ok(Expr::Verdict { code: k::NFT_JUMP, chain: Some(c) })
}

/// The expressions of one plan rule, as nft(8) builds them from `render::rule(r)`.
fn rule_exprs(r: &plan::Rule, ids: &SetIds) -> Result<Vec<Expr>, String> {
    let mut x = Vec::new();
    match r {
        plan::Rule::JumpIfLocal { chain } => {
            // fib daddr type local jump CHAIN
            x.extend(fib_daddr_local());
            x.push(jump(chain)?);
        }
        plan::Rule::JumpIfLocalKeyNotIn { set, chain } => {
            // fib daddr type local meta nfproto . meta l4proto . th dport != @SET jump CHAIN
            x.extend(fib_daddr_local());
            x.extend(load_key());
            x.push(lookup(ids, set, None, true)?);
            x.push(jump(chain)?);
        }
        plan::Rule::ReturnUnlessIface { keys, allowed } => {
            // meta nfproto . meta l4proto . th dport @KEYS
            //   meta nfproto . meta l4proto . th dport . iifname != @ALLOWED return
            x.extend(load_key());
            x.push(lookup(ids, keys, None, false)?);
            x.extend(load_key());
            x.push(Expr::Meta { key: k::NFT_META_IIFNAME, dreg: k::NFT_REG32_03 });
            x.push(lookup(ids, allowed, None, true)?);
            x.push(Expr::Verdict { code: k::NFT_RETURN, chain: None });
        }
        plan::Rule::ReturnUnlessSource { family, keys, allowed } => {
            // meta nfproto ipv4 meta nfproto . meta l4proto . th dport @KEYS
            //   meta l4proto . th dport . ip saddr != @ALLOWED return
            // (ipv6: ip6 saddr); nft byte-swaps l4proto for the interval lookup
            let (nfproto, offset, len) = match family {
                Family::Ipv4 => (k::NFPROTO_IPV4, 12, 4),
                Family::Ipv6 => (k::NFPROTO_IPV6, 8, 16),
            };
            x.push(Expr::Meta { key: k::NFT_META_NFPROTO, dreg: k::NFT_REG_1 });
            x.push(Expr::Cmp { op: k::NFT_CMP_EQ, sreg: k::NFT_REG_1, data: vec![nfproto] });
            x.extend(load_key());
            x.push(lookup(ids, keys, None, false)?);
            x.push(Expr::Meta { key: k::NFT_META_L4PROTO, dreg: k::NFT_REG_1 });
            x.push(Expr::Hton { reg: k::NFT_REG_1, size: 2, len: 1 });
            x.push(Expr::Payload { base: k::NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, len: 2, dreg: k::NFT_REG32_01 });
            x.push(Expr::Payload { base: k::NFT_PAYLOAD_NETWORK_HEADER, offset, len, dreg: k::NFT_REG32_02 });
            x.push(lookup(ids, allowed, None, true)?);
            x.push(Expr::Verdict { code: k::NFT_RETURN, chain: None });
        }
        plan::Rule::Redirect { proto, map } => {
            // meta l4proto tcp redirect to meta nfproto . meta l4proto . th dport map @MAP
            let p = match proto {
                Proto::Tcp => libc::IPPROTO_TCP as u8,
                Proto::Udp => libc::IPPROTO_UDP as u8,
            };
            x.push(Expr::Meta { key: k::NFT_META_L4PROTO, dreg: k::NFT_REG_1 });
            x.push(Expr::Cmp { op: k::NFT_CMP_EQ, sreg: k::NFT_REG_1, data: vec![p] });
            x.extend(load_key());
            x.push(lookup(ids, map, Some(k::NFT_REG_1), false)?);
            x.push(Expr::Redir { reg: k::NFT_REG_1 });
        }
        plan::Rule::SetMark { map } => {
            // meta mark set meta nfproto . meta l4proto . th dport map @MAP
            x.extend(load_key());
            x.push(lookup(ids, map, Some(k::NFT_REG_1), false)?);
            x.push(Expr::MetaSet { key: k::NFT_META_MARK, sreg: k::NFT_REG_1 });
        }
        plan::Rule::CountNamed { map } => {
            // counter name meta nfproto . meta l4proto . th dport map @MAP
            let (set, set_id) = ids.get(map)?;
            x.extend(load_key());
            x.push(Expr::ObjrefMap { set, set_id, sreg: k::NFT_REG_1 });
        }
        plan::Rule::DropUnredirected { set } => {
            // ct state new iifname != "lo" ct status & dnat == 0
            //   meta nfproto . meta l4proto . th dport @SET drop
            let mut lo = b"lo".to_vec();
            lo.resize(16, 0);
            x.push(Expr::Ct { key: k::NFT_CT_STATE, dreg: k::NFT_REG_1 });
            x.push(Expr::And32 { reg: k::NFT_REG_1, mask: k::CT_STATE_NEW });
            x.push(Expr::Cmp { op: k::NFT_CMP_NEQ, sreg: k::NFT_REG_1, data: 0u32.to_ne_bytes().to_vec() });
            x.push(Expr::Meta { key: k::NFT_META_IIFNAME, dreg: k::NFT_REG_1 });
            x.push(Expr::Cmp { op: k::NFT_CMP_NEQ, sreg: k::NFT_REG_1, data: lo });
            x.push(Expr::Ct { key: k::NFT_CT_STATUS, dreg: k::NFT_REG_1 });
            x.push(Expr::And32 { reg: k::NFT_REG_1, mask: k::IPS_DST_NAT });
            x.push(Expr::Cmp { op: k::NFT_CMP_EQ, sreg: k::NFT_REG_1, data: 0u32.to_ne_bytes().to_vec() });
            x.extend(load_key());
            x.push(lookup(ids, set, None, false)?);
            x.push(Expr::Verdict { code: k::NF_DROP, chain: None });
        }
    }
    Ok(x)
}

fn build_rule<'c>(chain: &'c Chain<'c>, r: &plan::Rule, ids: &SetIds) -> Result<nftnl::Rule<'c>, BackendError> {
    let exprs = rule_exprs(r, ids).map_err(|e| encode_err(format!("rule `{}`", render::rule(r)), e))?;
    let mut rule = nftnl::Rule::new(chain);
    for e in &exprs {
        rule.add_expr(e);
    }
    Ok(rule)
}

fn hook_num(h: Hook) -> u32 {
    match h {
        Hook::Prerouting => k::NF_INET_PRE_ROUTING,
        Hook::Input => k::NF_INET_LOCAL_IN,
        Hook::Output => k::NF_INET_LOCAL_OUT,
    }
}

fn chain_obj<'t>(t: &'t Table, c: &plan::Chain) -> Result<Chain<'t>, BackendError> {
    let name = cstring("chain", &c.name)?;
    let mut chain = Chain::new(&name, t);
    if let Some(b) = &c.base {
        let hook = match b.hook {
            Hook::Prerouting => nftnl::Hook::PreRouting,
            Hook::Input => nftnl::Hook::In,
            Hook::Output => nftnl::Hook::Out,
        };
        chain.set_hook(hook, b.priority);
        chain.set_type(match b.kind {
            ChainType::Filter => nftnl::ChainType::Filter,
            ChainType::Nat => nftnl::ChainType::Nat,
        });
        chain.set_policy(nftnl::Policy::Accept);
    }
    Ok(chain)
}

/// The chains `apply(plan)` builds, each rule in the canonical text of [`rule_text`]:
/// built with the same code, encoded and parsed back as the kernel's dump is.
fn expected_chains(plan: &Plan) -> Result<Vec<ObservedChain>, String> {
    let ids = SetIds::of(plan);
    let table = CString::new(plan.table.as_str()).map_err(|_| "the table name has a NUL byte".to_string())?;
    let t = Table::new(&table, ProtoFamily::Inet);
    let mut buf = NlBuf::new(nftnl::nft_nlmsg_maxsize() as usize);
    let mut out = Vec::new();
    for c in &plan.chains {
        let chain = chain_obj(&t, c).map_err(|e| e.to_string())?;
        let mut rules = Vec::new();
        for r in &c.rules {
            let rule = build_rule(&chain, r, &ids).map_err(|e| e.to_string())?;
            // libnftnl does not always clear attribute padding (objref names are not
            // NUL-terminated), so start from zeros as the kernel's own dump does
            buf.bytes_mut().fill(0);
            // SAFETY: the buffer has nft_nlmsg_maxsize() bytes.
            unsafe { rule.write(buf.as_mut_ptr().cast(), 0, MsgType::Add) };
            let parsed = RawRule::new();
            // SAFETY: the buffer holds the complete rule message just written.
            if unsafe { sys::nftnl_rule_nlmsg_parse(buf.as_ptr().cast(), parsed.0.as_ptr()) } < 0 {
                return Err(format!("libnftnl cannot parse its own encoding of `{}`", render::rule(r)));
            }
            rules.push(rule_text(&parsed));
        }
        let hook = c.base.map(|b| ObservedHook {
            kind: match b.kind {
                ChainType::Filter => "filter".into(),
                ChainType::Nat => "nat".into(),
            },
            hook: hook_num(b.hook),
            priority: b.priority,
            policy: k::NF_ACCEPT,
        });
        out.push(ObservedChain { name: c.name.clone(), hook, rules });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------------------

/// What one message of a batch is about, to name the culprit of a kernel error.
enum Subject<'a> {
    Table,
    Counter(&'a str),
    Set(&'a str),
    Elements { set: &'a Set, set_id: Option<u32>, elements: Vec<&'a Element> },
    Chain(&'a str),
    Rule { chain: &'a str, rule: &'a plan::Rule },
}

/// A batch under construction, and the subject of each of its messages.
struct Builder<'a> {
    table: &'a CStr,
    batch: Batch,
    subjects: Vec<(Subject<'a>, MsgType)>,
}

impl<'a> Builder<'a> {
    fn new(table: &'a CStr) -> Builder<'a> {
        Builder { table, batch: Batch::new(), subjects: Vec::new() }
    }

    fn push<T: NlMsg>(&mut self, msg: &T, op: MsgType, subject: Subject<'a>) {
        self.batch.add(msg, op);
        self.subjects.push((subject, op));
    }

    /// Adds or deletes `elements` of `set` in as many messages as it takes.
    fn push_elements(
        &mut self,
        set: &'a Set,
        set_id: Option<u32>,
        elements: &[&'a Element],
        op: MsgType,
    ) -> Result<(), BackendError> {
        let mut rest = elements;
        while !rest.is_empty() {
            let with_data = op == MsgType::Add;
            let (msg, n) = ElemMsg::chunk(self.table, set, set_id, rest, with_data).map_err(|(i, reason)| {
                encode_err(format!("set {}, element {}", set.name, element_text(rest[i])), reason)
            })?;
            let elements = rest[..n].to_vec();
            self.push(&msg, op, Subject::Elements { set, set_id, elements });
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Sends the batch and waits for the kernel's answer to every message.
    fn commit(self, conn: &mut Conn) -> Result<(), BackendError> {
        let Builder { table, batch, subjects } = self;
        let batch = batch.finalize();
        let seqs = batch.sequence_numbers();
        // The batch's begin and end messages take a sequence number of their own when the
        // kernel acknowledges them (Linux 6.10 and later); ours lie between them.
        let extra = (seqs.len() as u32).saturating_sub(subjects.len() as u32);
        let first = seqs.start + extra / 2;
        let mut bytes = Vec::new();
        for page in batch.iter() {
            bytes.extend_from_slice(page);
        }
        conn.size_buffers(bytes.len(), subjects.len());
        match conn.sock.send(&bytes) {
            Ok(n) if n == bytes.len() => {}
            Ok(n) => {
                let source = io::Error::other(format!("only {n} bytes were sent"));
                return Err(BackendError::Send { bytes: bytes.len(), source, hint: hint(None) });
            }
            Err(source) => {
                let hint = hint(source.raw_os_error());
                return Err(BackendError::Send { bytes: bytes.len(), source, hint });
            }
        }
        conn.wait_acks(first, &subjects, table)
    }
}

/// Describes the subject of a refused message; `offset` is the kernel's pointer to the
/// refused attribute, which names the refused element of a chunk.
fn describe(subject: &Subject<'_>, op: MsgType, offset: Option<u32>, table: &CStr) -> String {
    let del = if op == MsgType::Del { "deleting " } else { "" };
    match subject {
        Subject::Table => format!("{del}table inet {}", table.to_string_lossy()),
        Subject::Counter(n) => format!("{del}counter {n}"),
        Subject::Set(n) => format!("set {n}"),
        Subject::Chain(n) => format!("chain {n}"),
        Subject::Rule { chain, rule } => format!("rule `{}` in chain {chain}", render::rule(rule)),
        Subject::Elements { set, set_id, elements } => {
            let one = offset.and_then(|o| refused_element(table, set, *set_id, elements, op, o));
            match (one, elements.as_slice()) {
                (Some(e), _) => format!("set {}, {del}element {}", set.name, element_text(e)),
                (None, [e]) => format!("set {}, {del}element {}", set.name, element_text(e)),
                (None, [a, .., b]) => format!(
                    "set {}, {del}one of {} elements from {} to {}",
                    set.name,
                    elements.len(),
                    element_text(a),
                    element_text(b)
                ),
                (None, []) => format!("set {}", set.name),
            }
        }
    }
}

/// The element of a chunk whose attribute starts at byte `offset` of the message:
/// re-encodes the chunk (deterministically) and walks its element list.
fn refused_element<'e>(
    table: &CStr,
    set: &Set,
    set_id: Option<u32>,
    elements: &[&'e Element],
    op: MsgType,
    offset: u32,
) -> Option<&'e Element> {
    let (msg, n) = ElemMsg::chunk(table, set, set_id, elements, op == MsgType::Add).ok()?;
    let mut buf = NlBuf::new(nftnl::nft_nlmsg_maxsize() as usize);
    // SAFETY: the buffer has nft_nlmsg_maxsize() bytes.
    unsafe { msg.write(buf.as_mut_ptr().cast(), 0, op) };
    let bytes = buf.bytes();
    let len = u32::from_ne_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let offset = offset as usize;
    let list = attrs(bytes.get(20..len)?, 20).find(|a| a.ty == k::NFTA_SET_ELEM_LIST_ELEMENTS)?;
    let index = attrs(list.payload, list.at + 4).position(|a| (a.at..a.at + a.len).contains(&offset))?;
    (index < n).then(|| elements[index])
}

/// One netlink attribute: type, start within the message, length, payload.
struct Attr<'b> {
    ty: u16,
    at: usize,
    len: usize,
    payload: &'b [u8],
}

/// The attributes in `b`, which starts at byte `base` of its message.
fn attrs(b: &[u8], base: usize) -> impl Iterator<Item = Attr<'_>> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let len = u16::from_ne_bytes(b.get(pos..pos + 2)?.try_into().ok()?) as usize;
        let ty = u16::from_ne_bytes(b.get(pos + 2..pos + 4)?.try_into().ok()?) & 0x3fff;
        let payload = b.get(pos + 4..pos + len)?;
        let attr = Attr { ty, at: base + pos, len, payload };
        pos += len.div_ceil(4) * 4;
        Some(attr)
    })
}

// ---------------------------------------------------------------------------------------
// Netlink I/O
// ---------------------------------------------------------------------------------------

/// A byte buffer aligned for netlink headers.
struct NlBuf(Vec<u64>);

impl NlBuf {
    fn new(bytes: usize) -> NlBuf {
        NlBuf(vec![0; bytes.div_ceil(8)])
    }
    fn as_ptr(&self) -> *const u8 {
        self.0.as_ptr().cast()
    }
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr().cast()
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: any u64 is 8 valid bytes.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.0.len() * 8) }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: any bytes are a valid u64.
        unsafe { std::slice::from_raw_parts_mut(self.as_mut_ptr(), self.0.len() * 8) }
    }
}

/// The fields of a netlink header this module looks at.
struct Header {
    ty: u16,
    flags: u16,
    seq: u32,
}

fn header(msg: &[u8]) -> Option<Header> {
    Some(Header {
        ty: u16::from_ne_bytes(msg.get(4..6)?.try_into().ok()?),
        flags: u16::from_ne_bytes(msg.get(6..8)?.try_into().ok()?),
        seq: u32::from_ne_bytes(msg.get(8..12)?.try_into().ok()?),
    })
}

/// An `NLMSG_ERROR` message: errno (0 for an ACK), the extended-ack text and offset.
struct NlError {
    errno: i32,
    message: Option<String>,
    offset: Option<u32>,
}

fn parse_error(msg: &[u8]) -> Option<NlError> {
    let h = header(msg)?;
    let error = i32::from_ne_bytes(msg.get(16..20)?.try_into().ok()?);
    let mut e = NlError { errno: -error, message: None, offset: None };
    if h.flags & k::NLM_F_ACK_TLVS == 0 {
        return Some(e);
    }
    // after the error code: the request's header, and its payload unless capped
    let req_len = u32::from_ne_bytes(msg.get(20..24)?.try_into().ok()?) as usize;
    let start = if h.flags & k::NLM_F_CAPPED != 0 { 20 + 16 } else { 20 + req_len.div_ceil(4) * 4 };
    for a in attrs(msg.get(start..)?, start) {
        match a.ty {
            k::NLMSGERR_ATTR_MSG => {
                let text = a.payload.split(|c| *c == 0).next().unwrap_or_default();
                e.message = Some(String::from_utf8_lossy(text).into_owned());
            }
            k::NLMSGERR_ATTR_OFFS => e.offset = a.payload.try_into().ok().map(u32::from_ne_bytes),
            _ => {}
        }
    }
    Some(e)
}

fn setsockopt_int(fd: c_int, level: c_int, name: c_int, value: c_int) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its size.
    let r = unsafe { libc::setsockopt(fd, level, name, (&raw const value).cast(), mem::size_of::<c_int>() as u32) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A netfilter netlink socket in the calling thread's network namespace.
struct Conn {
    sock: mnl::Socket,
    portid: u32,
    buf: NlBuf,
    seq: u32,
}

// SAFETY: a Conn is the only owner of its socket and buffer; libmnl keeps no per-thread
// state for a socket, so it may be used from whichever thread holds the Conn.
unsafe impl Send for Conn {}

impl Conn {
    fn open() -> Result<Conn, BackendError> {
        let sock = mnl::Socket::new(mnl::Bus::Netfilter).map_err(|source| {
            let hint = hint(source.raw_os_error());
            BackendError::Socket { source, hint }
        })?;
        let fd = sock.as_raw_fd();
        // Error replies carry the kernel's explanation and the offending attribute, but
        // not a copy of the (possibly 64 KiB) request. Both are optional comforts.
        let _ = setsockopt_int(fd, k::SOL_NETLINK, k::NETLINK_EXT_ACK, 1);
        let _ = setsockopt_int(fd, k::SOL_NETLINK, k::NETLINK_CAP_ACK, 1);
        let timeout = libc::timeval { tv_sec: REPLY_TIMEOUT_SECS, tv_usec: 0 };
        // SAFETY: passes a pointer to a live timeval and its size.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                mem::size_of::<libc::timeval>() as u32,
            )
        };
        if r != 0 {
            let source = io::Error::last_os_error();
            return Err(BackendError::Socket { hint: hint(source.raw_os_error()), source });
        }
        let portid = sock.portid();
        Ok(Conn { sock, portid, buf: NlBuf::new(RECV_BYTES), seq: 0 })
    }

    /// Makes room for a batch of `bytes` and the answers to its `messages`: the kernel
    /// refuses a send larger than the send buffer, and drops answers that overflow the
    /// receive buffer. Forcing needs CAP_NET_ADMIN, which every change needs anyway.
    fn size_buffers(&self, bytes: usize, messages: usize) {
        let fd = self.sock.as_raw_fd();
        let want = |n: usize| c_int::try_from(n).unwrap_or(c_int::MAX / 2);
        for (force, plain, n) in [
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, bytes + 64 * 1024),
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, messages * 2048 + 256 * 1024),
        ] {
            if setsockopt_int(fd, libc::SOL_SOCKET, force, want(n)).is_err() {
                let _ = setsockopt_int(fd, libc::SOL_SOCKET, plain, want(n));
            }
        }
    }

    /// Discards whatever answers are still queued (the acknowledgement of a batch's end
    /// message arrives after those of its contents, which is all a commit waits for).
    fn drain(&mut self) {
        let fd = self.sock.as_raw_fd();
        let buf = self.buf.bytes_mut();
        loop {
            // SAFETY: receives into a live buffer of the given length, without blocking.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n <= 0 {
                break;
            }
        }
    }

    fn recv(&mut self) -> io::Result<usize> {
        self.sock.recv_raw(self.buf.bytes_mut())
    }

    /// Receives the answer to every message of a sent batch (sequence numbers from
    /// `first`, in the order of `subjects`); the first refusal becomes the error.
    fn wait_acks(&mut self, first: u32, subjects: &[(Subject<'_>, MsgType)], table: &CStr) -> Result<(), BackendError> {
        let total = subjects.len();
        let mut pending = vec![true; total];
        let mut missing = total;
        while missing > 0 {
            let n = self.recv().map_err(|source| BackendError::Ack { missing, total, source })?;
            let data = &self.buf.bytes()[..n];
            for msg in mnl::NlMessages::new(data) {
                let msg = msg.map_err(|source| BackendError::Ack { missing, total, source })?;
                let Some(h) = header(msg) else { continue };
                if h.ty != k::NLMSG_ERROR {
                    continue;
                }
                let index = h.seq.checked_sub(first).map(|i| i as usize).filter(|i| *i < total);
                if let Err(source) = mnl::cb_run(msg, 0, self.portid) {
                    let e = parse_error(msg).unwrap_or(NlError {
                        errno: source.raw_os_error().unwrap_or(0),
                        message: None,
                        offset: None,
                    });
                    let object = match index {
                        Some(i) => describe(&subjects[i].0, subjects[i].1, e.offset, table),
                        None => "the batch".to_string(),
                    };
                    return Err(BackendError::Rejected {
                        object,
                        seq: h.seq,
                        errno: e.errno,
                        reason: io::Error::from_raw_os_error(e.errno).to_string(),
                        detail: e.message.map(|m| format!(": {m}")).unwrap_or_default(),
                        hint: hint(Some(e.errno)),
                    });
                }
                if let Some(i) = index {
                    if std::mem::take(&mut pending[i]) {
                        missing -= 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends one GET request (payload written by `payload`) and hands every reply to
    /// `each` until the kernel is done. Records generation ids and interrupted dumps.
    fn request(
        &mut self,
        ty: u16,
        flags: u16,
        payload: impl FnOnce(*mut nlmsghdr),
        gen: &mut Generation,
        mut each: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), Fail> {
        self.seq += 1;
        let seq = self.seq;
        let mut req = NlBuf::new(8192);
        // SAFETY: an 8 KiB buffer is plenty for a header and a table, set or chain name.
        let len = unsafe {
            let nlh = sys::nftnl_nlmsg_build_hdr(req.as_mut_ptr().cast(), ty, k::NFPROTO_INET, flags, seq);
            payload(nlh);
            (*nlh).nlmsg_len as usize
        };
        self.sock.send(&req.bytes()[..len]).map_err(Fail::Kernel)?;
        let mut decode_error = None;
        loop {
            let n = self.recv().map_err(Fail::Kernel)?;
            let data = &self.buf.bytes()[..n];
            for msg in mnl::NlMessages::new(data) {
                let msg = msg.map_err(Fail::Kernel)?;
                let Some(h) = header(msg) else { continue };
                if h.ty < k::NLMSG_MIN_TYPE || h.seq != seq {
                    continue;
                }
                gen.seen(msg, h.flags);
                if let Err(e) = each(msg) {
                    decode_error.get_or_insert(e);
                }
            }
            match mnl::cb_run(data, seq, self.portid) {
                Ok(mnl::CbResult::Stop) => break,
                Ok(mnl::CbResult::Ok) => {}
                Err(e) => return Err(Fail::Kernel(e)),
            }
        }
        match decode_error {
            Some(e) => Err(Fail::Decode(e)),
            None => Ok(()),
        }
    }
}

/// Why a GET request failed.
enum Fail {
    Kernel(io::Error),
    Decode(String),
}

/// The ruleset generations a read saw: one, or the read must start over.
#[derive(Default)]
struct Generation {
    ids: BTreeSet<u16>,
    interrupted: bool,
}

impl Generation {
    fn seen(&mut self, msg: &[u8], flags: u16) {
        // nfgenmsg.res_id: the low 16 bits of the ruleset generation, big endian
        if let Some(id) = msg.get(18..20) {
            self.ids.insert(u16::from_be_bytes([id[0], id[1]]));
        }
        self.interrupted |= flags & k::NLM_F_DUMP_INTR != 0;
    }
}

// ---------------------------------------------------------------------------------------
// Reading the table back
// ---------------------------------------------------------------------------------------

macro_rules! raw_object {
    ($name:ident, $ty:ident, $alloc:ident, $free:ident) => {
        /// An owned libnftnl object.
        struct $name(NonNull<sys::$ty>);
        impl $name {
            fn new() -> $name {
                // SAFETY: allocation only; see `alloc`.
                $name(alloc(unsafe { sys::$alloc() }))
            }
        }
        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: allocated by the matching alloc and freed only here.
                unsafe { sys::$free(self.0.as_ptr()) }
            }
        }
    };
}
raw_object!(RawTable, nftnl_table, nftnl_table_alloc, nftnl_table_free);
raw_object!(RawChain, nftnl_chain, nftnl_chain_alloc, nftnl_chain_free);
raw_object!(RawRule, nftnl_rule, nftnl_rule_alloc, nftnl_rule_free);
raw_object!(RawSetObj, nftnl_set, nftnl_set_alloc, nftnl_set_free);
raw_object!(RawObj, nftnl_obj, nftnl_obj_alloc, nftnl_obj_free);

/// A string attribute that libnftnl returns as a pointer (NULL when unset).
fn owned_str(p: *const c_char) -> Option<String> {
    // SAFETY: libnftnl returns NULL or a NUL-terminated string that the object owns.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// A rule as libnftnl prints its expressions: `[ NAME BODY] [ NAME BODY] ...`.
fn rule_text(r: &RawRule) -> String {
    unsafe extern "C" fn one(e: *mut sys::nftnl_expr, data: *mut c_void) -> c_int {
        // SAFETY: `data` is the Vec<String> below; `e` is a live expression of the rule.
        unsafe {
            let out = &mut *data.cast::<Vec<String>>();
            let name = owned_str(sys::nftnl_expr_get_str(e, sys::NFTNL_EXPR_NAME as u16)).unwrap_or_default();
            let mut buf = [0 as c_char; 4096];
            sys::nftnl_expr_snprintf(buf.as_mut_ptr(), buf.len(), e, sys::NFTNL_OUTPUT_DEFAULT, 0);
            let body = owned_str(buf.as_ptr()).unwrap_or_default();
            out.push(format!("[ {name} {body}]"));
        }
        0
    }
    let mut parts: Vec<String> = Vec::new();
    // SAFETY: the callback only reads the expressions and appends to `parts`.
    unsafe { sys::nftnl_expr_foreach(r.0.as_ptr(), Some(one), (&raw mut parts).cast()) };
    parts.join(" ")
}

/// One element as the kernel dumped it.
struct RawElem {
    key: Vec<u8>,
    key_end: Option<Vec<u8>>,
    data: Option<Vec<u8>>,
    objref: Option<String>,
}

/// Everything dumped from the table, not yet decoded.
struct RawTableState {
    counters: BTreeMap<String, (u64, u64)>,
    sets: Vec<(String, SetShape, Vec<RawElem>)>,
    chains: Vec<ObservedChain>,
    orphan_rules: Vec<String>,
}

/// One attempt at dumping the table.
struct Reader<'t> {
    conn: Conn,
    table: &'t CStr,
    name: &'t str,
    gen: Generation,
}

impl<'t> Reader<'t> {
    fn new(table: &'t CStr, name: &'t str) -> Result<Reader<'t>, BackendError> {
        Ok(Reader { conn: Conn::open()?, table, name, gen: Generation::default() })
    }

    fn consistent(&self) -> bool {
        self.gen.ids.len() <= 1 && !self.gen.interrupted
    }

    fn fail(&self, what: &'static str, f: Fail) -> BackendError {
        match f {
            Fail::Kernel(source) => {
                BackendError::Dump { what, table: self.name.to_string(), hint: hint(source.raw_os_error()), source }
            }
            Fail::Decode(reason) => BackendError::Decode { what, reason },
        }
    }

    /// Dumps table, counters, sets, elements, chains and rules; `None` if there is no table.
    fn read_all(&mut self) -> Result<Option<RawTableState>, BackendError> {
        let table = self.table;
        let name = self.name;
        let mine = |t: Option<String>| t.as_deref() == Some(name);

        // nft list table inet T (existence only)
        let t = RawTable::new();
        // SAFETY: strings are copied by libnftnl.
        unsafe { sys::nftnl_table_set_str(t.0.as_ptr(), sys::NFTNL_TABLE_NAME as u16, table.as_ptr()) };
        let got = self.conn.request(
            k::NFT_MSG_GETTABLE,
            k::NLM_F_ACK,
            // SAFETY: the header was built by the caller in a large enough buffer.
            |nlh| unsafe { sys::nftnl_table_nlmsg_build_payload(nlh, t.0.as_ptr()) },
            &mut self.gen,
            |_| Ok(()),
        );
        match got {
            Ok(()) => {}
            Err(Fail::Kernel(e)) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(f) => return Err(self.fail("definition", f)),
        }

        // nft list counters table inet T
        let mut counters = BTreeMap::new();
        let o = RawObj::new();
        // SAFETY: strings are copied by libnftnl.
        unsafe {
            sys::nftnl_obj_set_str(o.0.as_ptr(), sys::NFTNL_OBJ_TABLE as u16, table.as_ptr());
            sys::nftnl_obj_set_u32(o.0.as_ptr(), sys::NFTNL_OBJ_TYPE as u16, k::NFT_OBJECT_COUNTER);
        }
        let got = self.conn.request(
            k::NFT_MSG_GETOBJ,
            k::NLM_F_DUMP,
            // SAFETY: as above.
            |nlh| unsafe { sys::nftnl_obj_nlmsg_build_payload(nlh, o.0.as_ptr()) },
            &mut self.gen,
            |msg| {
                let obj = RawObj::new();
                // SAFETY: `msg` is one complete, aligned netlink message.
                unsafe {
                    let p = obj.0.as_ptr();
                    if sys::nftnl_obj_nlmsg_parse(msg.as_ptr().cast(), p) < 0 {
                        return Err("malformed object".into());
                    }
                    let table = owned_str(sys::nftnl_obj_get_str(p, sys::NFTNL_OBJ_TABLE as u16));
                    if !mine(table) || sys::nftnl_obj_get_u32(p, sys::NFTNL_OBJ_TYPE as u16) != k::NFT_OBJECT_COUNTER {
                        return Ok(());
                    }
                    let name = owned_str(sys::nftnl_obj_get_str(p, sys::NFTNL_OBJ_NAME as u16))
                        .ok_or("counter without a name")?;
                    let packets = sys::nftnl_obj_get_u64(p, sys::NFTNL_OBJ_CTR_PKTS as u16);
                    let bytes = sys::nftnl_obj_get_u64(p, sys::NFTNL_OBJ_CTR_BYTES as u16);
                    counters.insert(name, (packets, bytes));
                }
                Ok(())
            },
        );
        got.map_err(|f| self.fail("counters", f))?;

        // nft list sets table inet T
        let mut shapes: Vec<(String, SetShape)> = Vec::new();
        let s = RawSetObj::new();
        // SAFETY: strings are copied by libnftnl.
        unsafe { sys::nftnl_set_set_str(s.0.as_ptr(), sys::NFTNL_SET_TABLE as u16, table.as_ptr()) };
        let got = self.conn.request(
            k::NFT_MSG_GETSET,
            k::NLM_F_DUMP,
            // SAFETY: as above.
            |nlh| unsafe { sys::nftnl_set_nlmsg_build_payload(nlh, s.0.as_ptr()) },
            &mut self.gen,
            |msg| {
                let set = RawSetObj::new();
                // SAFETY: `msg` is one complete, aligned netlink message.
                unsafe {
                    let p = set.0.as_ptr();
                    if sys::nftnl_set_nlmsg_parse(msg.as_ptr().cast(), p) < 0 {
                        return Err("malformed set".into());
                    }
                    if !mine(owned_str(sys::nftnl_set_get_str(p, sys::NFTNL_SET_TABLE as u16))) {
                        return Ok(());
                    }
                    let name =
                        owned_str(sys::nftnl_set_get_str(p, sys::NFTNL_SET_NAME as u16)).ok_or("set without a name")?;
                    let get = |attr: u32| sys::nftnl_set_get_u32(p, attr as u16);
                    let shape = SetShape {
                        flags: get(sys::NFTNL_SET_FLAGS),
                        key_type: get(sys::NFTNL_SET_KEY_TYPE),
                        key_len: get(sys::NFTNL_SET_KEY_LEN),
                        data_type: get(sys::NFTNL_SET_DATA_TYPE),
                        data_len: get(sys::NFTNL_SET_DATA_LEN),
                        obj_type: get(sys::NFTNL_SET_OBJ_TYPE),
                    };
                    shapes.push((name, shape));
                }
                Ok(())
            },
        );
        got.map_err(|f| self.fail("sets", f))?;

        // nft list set inet T NAME, for each set
        let mut sets = Vec::with_capacity(shapes.len());
        for (set_name, shape) in shapes {
            let cname = CString::new(set_name.as_str())
                .map_err(|_| self.fail("sets", Fail::Decode("set name with a NUL byte".into())))?;
            let s = RawSetObj::new();
            // SAFETY: strings are copied by libnftnl.
            unsafe {
                sys::nftnl_set_set_str(s.0.as_ptr(), sys::NFTNL_SET_TABLE as u16, table.as_ptr());
                sys::nftnl_set_set_str(s.0.as_ptr(), sys::NFTNL_SET_NAME as u16, cname.as_ptr());
            }
            let mut elements = Vec::new();
            let got = self.conn.request(
                k::NFT_MSG_GETSETELEM,
                k::NLM_F_DUMP,
                // SAFETY: as above.
                |nlh| unsafe { sys::nftnl_set_elems_nlmsg_build_payload(nlh, s.0.as_ptr()) },
                &mut self.gen,
                |msg| {
                    let set = RawSetObj::new();
                    // SAFETY: `msg` is one complete, aligned netlink message.
                    if unsafe { sys::nftnl_set_elems_nlmsg_parse(msg.as_ptr().cast(), set.0.as_ptr()) } < 0 {
                        return Err(format!("malformed elements of set {set_name}"));
                    }
                    collect_elements(&set, &mut elements);
                    Ok(())
                },
            );
            got.map_err(|f| self.fail("set elements", f))?;
            sets.push((set_name, shape, elements));
        }

        // nft list chains table inet T (the kernel does not filter chain dumps by table)
        let mut chains = Vec::new();
        let got = self.conn.request(
            k::NFT_MSG_GETCHAIN,
            k::NLM_F_DUMP,
            |_| {},
            &mut self.gen,
            |msg| {
                let chain = RawChain::new();
                // SAFETY: `msg` is one complete, aligned netlink message.
                unsafe {
                    let p = chain.0.as_ptr();
                    if sys::nftnl_chain_nlmsg_parse(msg.as_ptr().cast(), p) < 0 {
                        return Err("malformed chain".into());
                    }
                    if !mine(owned_str(sys::nftnl_chain_get_str(p, sys::NFTNL_CHAIN_TABLE as u16))) {
                        return Ok(());
                    }
                    let name = owned_str(sys::nftnl_chain_get_str(p, sys::NFTNL_CHAIN_NAME as u16))
                        .ok_or("chain without a name")?;
                    let hook = sys::nftnl_chain_is_set(p, sys::NFTNL_CHAIN_HOOKNUM as u16).then(|| ObservedHook {
                        kind: owned_str(sys::nftnl_chain_get_str(p, sys::NFTNL_CHAIN_TYPE as u16)).unwrap_or_default(),
                        hook: sys::nftnl_chain_get_u32(p, sys::NFTNL_CHAIN_HOOKNUM as u16),
                        priority: sys::nftnl_chain_get_s32(p, sys::NFTNL_CHAIN_PRIO as u16),
                        policy: sys::nftnl_chain_get_u32(p, sys::NFTNL_CHAIN_POLICY as u16),
                    });
                    chains.push(ObservedChain { name, hook, rules: Vec::new() });
                }
                Ok(())
            },
        );
        got.map_err(|f| self.fail("chains", f))?;

        // nft list table inet T: the rules, in chain order
        let mut orphan_rules = Vec::new();
        let r = RawRule::new();
        // SAFETY: strings are copied by libnftnl.
        unsafe { sys::nftnl_rule_set_str(r.0.as_ptr(), sys::NFTNL_RULE_TABLE as u16, table.as_ptr()) };
        let got = self.conn.request(
            k::NFT_MSG_GETRULE,
            k::NLM_F_DUMP,
            // SAFETY: as above.
            |nlh| unsafe { sys::nftnl_rule_nlmsg_build_payload(nlh, r.0.as_ptr()) },
            &mut self.gen,
            |msg| {
                let rule = RawRule::new();
                // SAFETY: `msg` is one complete, aligned netlink message.
                unsafe {
                    let p = rule.0.as_ptr();
                    if sys::nftnl_rule_nlmsg_parse(msg.as_ptr().cast(), p) < 0 {
                        return Err("malformed rule".into());
                    }
                    if !mine(owned_str(sys::nftnl_rule_get_str(p, sys::NFTNL_RULE_TABLE as u16))) {
                        return Ok(());
                    }
                    let chain = owned_str(sys::nftnl_rule_get_str(p, sys::NFTNL_RULE_CHAIN as u16)).unwrap_or_default();
                    let text = rule_text(&rule);
                    match chains.iter_mut().find(|c| c.name == chain) {
                        Some(c) => c.rules.push(text),
                        None => orphan_rules.push(format!("rule in unknown chain {chain}: {text}")),
                    }
                }
                Ok(())
            },
        );
        got.map_err(|f| self.fail("rules", f))?;

        Ok(Some(RawTableState { counters, sets, chains, orphan_rules }))
    }
}

/// Copies the elements of a parsed set-element message.
fn collect_elements(set: &RawSetObj, out: &mut Vec<RawElem>) {
    unsafe extern "C" fn one(e: *mut sys::nftnl_set_elem, data: *mut c_void) -> c_int {
        // SAFETY: `data` is the Vec<RawElem> below; `e` is a live element of the set.
        unsafe {
            let out = &mut *data.cast::<Vec<RawElem>>();
            let get = |attr: u32| {
                let mut len = 0u32;
                let p = sys::nftnl_set_elem_get(e, attr as u16, &raw mut len);
                (!p.is_null() && sys::nftnl_set_elem_is_set(e, attr as u16))
                    .then(|| std::slice::from_raw_parts(p.cast::<u8>(), len as usize).to_vec())
            };
            let objref = if sys::nftnl_set_elem_is_set(e, sys::NFTNL_SET_ELEM_OBJREF as u16) {
                owned_str(sys::nftnl_set_elem_get_str(e, sys::NFTNL_SET_ELEM_OBJREF as u16))
            } else {
                None
            };
            out.push(RawElem {
                key: get(sys::NFTNL_SET_ELEM_KEY).unwrap_or_default(),
                key_end: get(sys::NFTNL_SET_ELEM_KEY_END),
                data: get(sys::NFTNL_SET_ELEM_DATA),
                objref,
            });
        }
        0
    }
    // SAFETY: the callback only reads the elements and appends to `out`.
    unsafe { sys::nftnl_set_elem_foreach(set.0.as_ptr(), Some(one), (out as *mut Vec<RawElem>).cast()) };
}

impl RawTableState {
    /// Decodes the dump with the set types of `expected`.
    fn decode(self, expected: &Plan) -> Observed {
        let mut o = Observed {
            counters: self.counters,
            chains: self.chains,
            problems: self.orphan_rules,
            ..Observed::default()
        };
        for (name, shape, raw) in self.sets {
            o.set_shapes.insert(name.clone(), shape);
            let Some(set) = expected.set(&name) else {
                o.problems.push(format!("set {name} ({} elements) is not in the plan", raw.len()));
                continue;
            };
            match SetShape::of(set) {
                Ok(want) if want == shape => {}
                _ => {
                    o.problems.push(format!("set {name} has a different type than in the plan: {shape:?}"));
                    continue;
                }
            }
            let mut elements = BTreeSet::new();
            let mut bad = Vec::new();
            for r in &raw {
                match decode_element(set, r) {
                    Ok(e) => {
                        elements.insert(e);
                    }
                    Err(e) => bad.push(e),
                }
            }
            if let Some(first) = bad.first() {
                o.problems.push(format!("set {name}: {} elements cannot be decoded, e.g.: {first}", bad.len()));
            } else {
                o.sets.insert(name, elements);
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portd_rules::model::{Forward, PortRange};
    use portd_rules::plan::{compile, names, OwnedSet};

    fn plan() -> Plan {
        let mut f = Forward::new("web", PortRange::single(80), PortRange::single(8080));
        f.sources = vec!["203.0.113.7/24".parse().expect("net"), "2001:db8::/32".parse().expect("net")];
        f.interfaces = vec!["eth0".into()];
        compile("portd", 1, &[OwnedSet { owner: "system".into(), forwards: vec![f] }]).expect("compiles")
    }

    #[test]
    fn shapes_are_what_nft_sends() {
        let p = plan();
        let shape = |n| SetShape::of(p.set(n).expect("set")).expect("shape");
        // values from `nft --debug=netlink` of the rendered plan
        assert_eq!(
            shape(names::TO),
            SetShape { flags: 8, key_type: 0x230d, key_len: 12, data_type: 13, data_len: 2, obj_type: 0 }
        );
        assert_eq!(shape(names::MARK).data_type, 19);
        assert_eq!(
            shape(names::COUNTER),
            SetShape { flags: 0x40, key_type: 0x230d, key_len: 12, obj_type: 1, ..Default::default() }
        );
        assert_eq!(shape(names::IFACE).key_type, 0x8c369);
        assert_eq!(shape(names::IFACE).key_len, 28);
        assert_eq!(shape(names::SRC4), SetShape { flags: 0x84, key_type: 0xc347, key_len: 12, ..Default::default() });
        assert_eq!(shape(names::SRC6).key_len, 24);
    }

    #[test]
    fn udata_is_what_nft_sends() {
        let p = plan();
        let to = set_udata(p.set(names::TO).expect("set"));
        assert_eq!(to, [0, 4, 0, 0, 0, 0, 1, 4, 2, 0, 0, 0, 3, 8, 0, 4, 13, 0, 0, 0, 1, 0, 6, 4, 0, 0, 0, 0]);
        let local = set_udata(p.set(names::NOLOCAL).expect("set"));
        assert_eq!(local, [0, 4, 0, 0, 0, 0, 3, 8, 0, 4, 13, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn elements_round_trip() {
        let p = plan();
        for set in &p.sets {
            for e in set.elements.iter() {
                let enc = encode_element(set, &e, true).expect("encodes");
                let raw = RawElem {
                    key: enc.key,
                    key_end: enc.key_end,
                    data: enc.data,
                    objref: enc.objref.map(|c| c.to_string_lossy().into_owned()),
                };
                assert_eq!(decode_element(set, &raw).expect("decodes"), normalize(&e), "set {}", set.name);
            }
        }
        let src4 = p.set(names::SRC4).expect("set");
        let e = src4.elements.iter().next().expect("element");
        let enc = encode_element(src4, &e, true).expect("encodes");
        // tcp . 80 . 203.0.113.0 - tcp . 80 . 203.0.113.255, each field in a 4-byte register
        assert_eq!(enc.key, [6, 0, 0, 0, 0, 80, 0, 0, 203, 0, 113, 0]);
        assert_eq!(enc.key_end, Some(vec![6, 0, 0, 0, 0, 80, 0, 0, 203, 0, 113, 255]));
    }

    #[test]
    fn prefixes() {
        assert_eq!(v4_prefix(0x0a000000, 0x0a0000ff), "10.0.0.0/24".parse().ok());
        assert_eq!(v4_prefix(0, u32::MAX), "0.0.0.0/0".parse().ok());
        assert_eq!(v4_prefix(0x0a000001, 0x0a0000ff), None);
        assert_eq!(v4_prefix(0x0a000000, 0x0a0000fe), None);
        assert_eq!(v6_prefix(1, 1), "::1/128".parse().ok());
    }

    #[test]
    fn rules_render_to_nft_expressions() {
        let p = plan();
        let chains = expected_chains(&p).expect("builds");
        let input = chains.iter().find(|c| c.name == "input").expect("input");
        let redirect = chains.iter().find(|c| c.name == "redirect_in").expect("chain");
        assert_eq!(input.hook, Some(ObservedHook { kind: "filter".into(), hook: 1, priority: 0, policy: 1 }));
        // as printed by `nft --debug=netlink` (plus the attributes the kernel reports back)
        assert!(
            input.rules[0]
                .starts_with("[ ct load state => reg 1 ] [ bitwise reg 1 = ( reg 1 & 0x00000008 ) ^ 0x00000000 ]"),
            "{}",
            input.rules[0]
        );
        assert!(
            redirect.rules[3].ends_with(
                "[ lookup reg 1 set fwd_to dreg 1 0x0 ] [ redir proto_min reg 1 proto_max reg 1 flags 0x2 ]"
            ),
            "{}",
            redirect.rules[3]
        );
        assert!(redirect.rules[1].contains("[ byteorder reg 1 = hton(reg 1, 2, 1) ]"), "{}", redirect.rules[1]);
    }
}
