//! The vocabulary of a plan: [`Plan`], its sets, chains and rules, the set names, placed
//! and owned forwards, conflicts; and the lookups every other part of `plan` uses.

use crate::element::{Elements, FieldType, Value};
use crate::model::{Family, Forward, Proto};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Name of the owner of the config file's forwards.
pub const SYSTEM_OWNER: &str = "system";

/// A named set or map of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set {
    /// Set name.
    pub name: String,
    /// What it is for, shown as a comment in the rendered ruleset.
    pub comment: String,
    /// Concatenated key type.
    pub key: Vec<FieldType>,
    /// Data type for maps.
    pub data: Option<FieldType>,
    /// Interval set (`flags interval`), for network prefixes.
    pub interval: bool,
    /// Every element carries its own packet and byte counter (`counter` in the set).
    pub counter: bool,
    /// Elements, ordered (kept packed: see [`Elements`]).
    pub elements: Elements,
}

/// The smallest `size` portd gives a hash set.
pub const MIN_SET_SIZE: u32 = 1024;

impl Set {
    /// The `size` the set is created with: a power of two with room for twice its
    /// elements, at least [`MIN_SET_SIZE`]. The kernel then builds its hash table once,
    /// at that size, instead of growing it while a batch inserts, and later changes have
    /// room to grow. The size is also the kernel's limit: a change beyond it is refused,
    /// and portd then replaces the whole table with sets sized anew. `None` for interval
    /// sets, which are not hash tables.
    pub fn kernel_size(&self) -> Option<u32> {
        if self.interval {
            return None;
        }
        let room = u32::try_from(self.elements.len().saturating_mul(2)).unwrap_or(u32::MAX);
        Some(room.max(MIN_SET_SIZE).checked_next_power_of_two().unwrap_or(u32::MAX))
    }
}

/// nftables chain types used by portd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainType {
    /// `type filter`
    Filter,
    /// `type nat`
    Nat,
}

/// Netfilter hooks used by portd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    /// `hook prerouting`
    Prerouting,
    /// `hook input`
    Input,
    /// `hook output`
    Output,
}

/// Hook attachment of a base chain (policy is always accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseChain {
    /// Chain type.
    #[serde(rename = "type")]
    pub kind: ChainType,
    /// Hook.
    pub hook: Hook,
    /// Priority (mangle -150, dstnat -100, filter 0).
    pub priority: i32,
}

/// How a rule keys its lookup: `KEY` is `meta nfproto . meta l4proto . th dport`
/// (family-specific sets), `PORT_KEY` is `meta l4proto . th dport` (sets of forwards that
/// serve both families, one element for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyExpr {
    /// `meta nfproto . meta l4proto . th dport`
    Family,
    /// `meta l4proto . th dport`
    Port,
    /// `meta nfproto . meta l4proto . ct original proto-dst`: a redirected packet's
    /// public port, after NAT changed its destination
    OrigFamily,
    /// `meta l4proto . ct original proto-dst`
    OrigPort,
}

fn family_key() -> KeyExpr {
    KeyExpr::Family
}

/// The few rule shapes portd uses. Each is a constant number of expressions; the
/// comment beside each variant is its nft text (`KEY` is `meta nfproto . meta l4proto . th dport`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum Rule {
    /// `fib daddr type local jump CHAIN`
    JumpIfLocal {
        /// target chain
        chain: String,
    },
    /// `fib daddr type local KEY != @SET jump CHAIN`
    JumpIfLocalKeyNotIn {
        /// set of keys excluded
        set: String,
        /// target chain
        chain: String,
    },
    /// `KEY @KEYS KEY . iifname != @ALLOWED return`
    ReturnUnlessIface {
        /// keys that are restricted to interfaces
        keys: String,
        /// allowed key . interface pairs
        allowed: String,
    },
    /// `KEY @KEYS meta nfproto FAMILY meta l4proto . th dport . ip(6) saddr != @ALLOWED return`
    ReturnUnlessSource {
        /// family this rule checks
        family: Family,
        /// keys that are restricted to sources
        keys: String,
        /// allowed l4proto . port . network triples
        allowed: String,
    },
    /// `meta l4proto PROTO redirect to KEY map @MAP` (or `PORT_KEY`)
    Redirect {
        /// transport protocol (nft needs it to know where the port goes)
        proto: Proto,
        /// key -> target port
        map: String,
        /// the key the map is looked up with
        key: KeyExpr,
    },
    /// `KEY @SET meta mark set KEY map @MAP`: counts the packet in the element it finds,
    /// then sets the forward's own mark, if it has one (a forward of `MAP` has its key in
    /// `SET`; a miss in either leaves the packet as it is).
    CountSetMark {
        /// set whose elements count
        set: String,
        /// key -> mark
        map: String,
        /// the key both are looked up with (`KEY` or its `ct original proto-dst` form)
        #[serde(default = "family_key")]
        key: KeyExpr,
        /// `meta l4proto PROTO` first (nft needs it to type `ct original proto-dst`)
        #[serde(default)]
        proto: Option<Proto>,
    },
    /// `iif "lo" return`: a packet that arrives on loopback was sent by this host, and
    /// raw_output has already untracked it.
    ReturnIfLoopback,
    /// `KEY @SET` (or `PORT_KEY @SET`), then `meta mark set meta mark | MARK` (the default
    /// mark's bits, other bits of the packet's mark left alone) unless the mark is 0,
    /// then `return` if asked: the lookup counts the packet in the element it finds.
    Count {
        /// set whose elements count
        set: String,
        /// the key the set is looked up with
        key: KeyExpr,
        /// mark set on a match (0: none)
        mark: u32,
        /// leave the chain on a match (nothing after it concerns this packet)
        then_return: bool,
        /// `meta l4proto PROTO` first (nft needs it to type `ct original proto-dst`)
        #[serde(default)]
        proto: Option<Proto>,
    },
    /// `ct state new iifname != "lo" ct status & dnat == 0 KEY @SET drop`
    DropUnredirected {
        /// protected target keys
        set: String,
    },
    /// `KEY @SET (fib daddr type local) notrack return`, with `th dport` or `th sport`:
    /// steered connections take no conntrack entry in either direction. The lookup comes
    /// first, so only packets of a steered port pay for the route lookup.
    Notrack {
        /// steered keys (a map looked up as a set)
        set: String,
        /// the key the set is looked up with
        key: KeyExpr,
        /// the key's port is the source port (replies of the app) instead of the destination
        sport: bool,
        /// only packets to this host's own addresses
        if_local: bool,
    },
    /// `ct direction original ct status dnat goto CHAIN`: what the client of a redirected
    /// connection sends (the nat chains saw its first packet, addressed to this host) goes
    /// to the accounting chain; answers and packets of no redirect do not.
    GotoIfRedirected {
        /// accounting chain
        chain: String,
    },
    /// `KEY @SET return`
    ReturnIfKeyIn {
        /// keys that leave the chain
        set: String,
    },
    /// `iifname != "lo" meta l4proto tcp KEY @KEYS KEY . iifname != @ALLOWED reject with tcp reset`:
    /// a steered forward's interfaces, where no NAT rule can leave the packet alone.
    RejectUnlessIface {
        /// keys that are restricted to interfaces
        keys: String,
        /// allowed key . interface pairs
        allowed: String,
    },
    /// `meta l4proto != tcp return`: steer_in concerns steered (TCP) connections only; a
    /// UDP packet a NAT forward redirected may carry another forward's public port.
    ReturnUnlessTcp,
    /// `iif "lo" goto CHAIN`
    GotoIfLoopback {
        /// chain for the host's own connections
        chain: String,
    },
    /// `KEY @SET goto CHAIN`
    GotoIfKeyIn {
        /// keys that go on
        set: String,
        /// target chain
        chain: String,
    },
    /// `iif != "lo" KEY @SET drop`: a steered forward's `protect`. A steered
    /// connection keeps its public port, so nothing from another host may reach the
    /// target port itself; stateless, no conntrack needed.
    DropProtected {
        /// protected target keys
        set: String,
    },
    /// `iifname != "lo" meta l4proto tcp meta nfproto FAMILY KEY @KEYS meta l4proto . th dport . ip(6) saddr != @ALLOWED reject with tcp reset`
    RejectUnlessSource {
        /// family this rule checks
        family: Family,
        /// keys that are restricted to sources
        keys: String,
        /// allowed l4proto . port . network triples
        allowed: String,
    },
}

impl Rule {
    /// The chain this rule jumps or goes to, if it does.
    pub fn target(&self) -> Option<&str> {
        match self {
            Rule::JumpIfLocal { chain }
            | Rule::JumpIfLocalKeyNotIn { chain, .. }
            | Rule::GotoIfRedirected { chain }
            | Rule::GotoIfLoopback { chain }
            | Rule::GotoIfKeyIn { chain, .. } => Some(chain),
            _ => None,
        }
    }
}

/// A chain: a base chain on a hook, or a regular chain jumped to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// Chain name.
    pub name: String,
    /// Hook attachment, for base chains.
    pub base: Option<BaseChain>,
    /// Rules in order.
    pub rules: Vec<Rule>,
}

/// One forward as placed in the plan, for summaries, status and counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedForward {
    /// Owner: `system` or `user:NAME`.
    pub owner: String,
    /// The forward.
    pub forward: Forward,
    /// Effective mark (0: none).
    pub mark: u32,
}

impl PlacedForward {
    /// The comment of its elements, `OWNER/NAME`: status sums the counters of the
    /// elements that carry it.
    pub fn comment(&self) -> String {
        element_comment(&self.owner, &self.forward.name)
    }
}

/// Everything portd puts into the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Table name (family inet).
    pub table: String,
    /// The default mark (`settings.mark`): the counting rule of forwards that keep it sets
    /// it, so only other marks need elements.
    pub mark: u32,
    /// Sets and maps, in declaration order.
    pub sets: Vec<Set>,
    /// Chains, each before every chain that jumps (or goes) to it: the order they are
    /// added in, and the reverse of the order they are deleted in.
    pub chains: Vec<Chain>,
    /// The forwards this plan was compiled from, ordered by owner then name.
    pub forwards: Vec<PlacedForward>,
    /// TCP forwards are steered (`settings.dispatch`): their public port maps to the
    /// target in `fwd_steer`/`fwd_steer_family`, which the sk_lookup program follows,
    /// instead of the NAT maps; the table only counts, marks, filters and untracks them.
    pub steer: bool,
    /// Connection tracking runs in this network namespace for another program's rules (a
    /// firewall's `ct state`, another NAT table): a steer plan then untracks its steered
    /// connections in raw chains. portd's own NAT forwards turn it on too; a steer plan
    /// without them and without this needs no raw chain, so steered packets pass one
    /// input chain and nothing else of portd's.
    #[serde(default)]
    pub conntrack: bool,
}

/// Set and map names.
pub mod names {
    /// l4proto . port -> target port, for forwards of both families
    pub const TO: &str = "fwd_to";
    /// key -> target port, for forwards of one family
    pub const TO_FAMILY: &str = "fwd_to_family";
    /// l4proto . port, counted, for redirected forwards of both families with the
    /// default mark, `local: true` and no `interfaces` or `sources`: one lookup counts and
    /// marks their packets
    pub const COUNT: &str = "fwd_count";
    /// l4proto . port, counted, for the other redirected forwards of both families with
    /// the default mark (restricted to interfaces or sources, or `local: false`), and
    /// steered ones of both families whose own mark is the default: looked up after the
    /// checks
    pub const COUNT_CHECKED: &str = "fwd_count_checked";
    /// key, counted, for the other forwards (one family, or another mark)
    pub const COUNT_FAMILY: &str = "fwd_count_family";
    /// key -> mark, for forwards in `COUNT_FAMILY` with a mark other than 0
    pub const MARK: &str = "fwd_mark";
    /// keys with `local: false` (the default, true, needs no element)
    pub const NOLOCAL: &str = "fwd_nolocal";
    /// keys restricted to interfaces
    pub const IFACE_KEYS: &str = "fwd_iface_keys";
    /// key . ifname allowed
    pub const IFACE: &str = "fwd_iface";
    /// keys restricted to sources
    pub const SRC_KEYS: &str = "fwd_src_keys";
    /// l4proto . port . IPv4 network allowed
    pub const SRC4: &str = "fwd_src4";
    /// l4proto . port . IPv6 network allowed
    pub const SRC6: &str = "fwd_src6";
    /// protected target keys
    pub const PROTECT: &str = "fwd_protect";
    /// l4proto . port -> target port of steered forwards of both families
    pub const STEER: &str = "fwd_steer";
    /// key -> target port of steered forwards of one family
    pub const STEER_FAMILY: &str = "fwd_steer_family";
    /// keys of steered forwards that the steer input chain checks or marks (`interfaces`,
    /// `sources`, a mark of their own)
    pub const STEER_MORE: &str = "fwd_steer_more";
}

/// One owner's forwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedSet {
    /// `system` or `user:NAME`.
    pub owner: String,
    /// Its forwards (already validated).
    pub forwards: Vec<Forward>,
}

/// Two owners claim the same public port/proto/family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// Owner whose forward was refused.
    pub owner: String,
    /// Its forward.
    pub name: String,
    /// Owner already holding the port.
    pub other_owner: String,
    /// Forward already holding the port.
    pub other_name: String,
    /// The contested port.
    pub port: u16,
    /// Protocol.
    pub proto: Proto,
    /// Family.
    pub family: Family,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "forward `{}` of {}: {} port {} ({}) is already forwarded by `{}` of {}",
            self.name, self.owner, self.proto, self.port, self.family, self.other_name, self.other_owner
        )
    }
}

/// The comment of every element a forward puts into the kernel: `OWNER/NAME`. Owners
/// (`system`, `user:NAME`) and forward names are validated to characters that nft prints
/// and reads back inside a quoted comment.
pub fn element_comment(owner: &str, name: &str) -> String {
    format!("{owner}/{name}")
}

/// Sort key of placed forwards: the system set first, then owners, then names.
pub(crate) fn placed_order(p: &PlacedForward) -> (bool, &str, &str) {
    (p.owner != SYSTEM_OWNER, p.owner.as_str(), p.forward.name.as_str())
}

impl Plan {
    /// The set or map called `name`.
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }

    pub(crate) fn set_mut(&mut self, name: &str) -> &mut Set {
        match self.sets.iter().position(|s| s.name == name) {
            Some(i) => &mut self.sets[i],
            None => unreachable!("skeleton has set {name}"),
        }
    }

    pub(crate) fn insert(&mut self, set: &str, key: &[Value], data: Option<Value>, comment: &str) {
        self.set_mut(set).elements.insert_parts(key, data.as_ref(), Some(comment));
    }

    /// Number of elements over all sets: the kernel objects the forwards take.
    pub fn element_count(&self) -> usize {
        self.sets.iter().map(|s| s.elements.len()).sum()
    }

    /// The forward whose elements carry `comment` (`OWNER/NAME`), if any.
    pub(crate) fn by_comment(&self, comment: &str) -> Option<&PlacedForward> {
        let (owner, name) = comment.split_once('/')?;
        self.placed(owner, name)
    }

    /// The forwards of `owner`, ordered by name (a slice of [`Plan::forwards`]).
    pub fn owned_by(&self, owner: &str) -> &[PlacedForward] {
        let key = (owner != SYSTEM_OWNER, owner);
        let start = self.forwards.partition_point(|p| (p.owner != SYSTEM_OWNER, p.owner.as_str()) < key);
        let end = start + self.forwards[start..].partition_point(|p| p.owner == owner);
        &self.forwards[start..end]
    }

    /// The forward `name` of `owner`, found by binary search.
    pub fn placed(&self, owner: &str, name: &str) -> Option<&PlacedForward> {
        let key = (owner != SYSTEM_OWNER, owner, name);
        let at = self.forwards.partition_point(|p| placed_order(p) < key);
        self.forwards.get(at).filter(|p| p.owner == owner && p.forward.name == name)
    }
}
