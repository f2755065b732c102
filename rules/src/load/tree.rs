//! The document tree the loader walks: what serde_yaml deserialises a file into instead
//! of [`serde_yaml::Value`].
//!
//! It holds the same information as a `Value` and is built by the same deserializer, so
//! serde_yaml still decides what parses, reports syntax errors, resolves scalars, expands
//! aliases and refuses duplicate keys, with the same messages at the same places. One
//! thing it refuses that a `Value` takes: a tree larger than twice its text plus
//! [`ALIAS_NODES`] (nodes, and the bytes of the strings it copies: see [`parse`]), a
//! backstop behind the checks of aliases that the loader makes before parsing
//! (`load/aliases.rs`), should the two parsers ever differ. It is cheaper to build:
//! plain scalars borrow the text instead of being copied, a mapping is a vector of pairs
//! instead of a hash table, and keys are hashed only when a mapping grows large enough
//! for duplicate checks to need it.

use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, EnumAccess, Error as _, MapAccess, SeqAccess, VariantAccess,
    Visitor,
};
use serde_yaml::mapping::Entry;
use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Number, Value};
use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;

/// Nodes that aliases may add to a tree beyond what its text holds.
pub const ALIAS_NODES: usize = 65_536;

/// The start of the message for a tree that outgrows its bound.
pub(crate) const TOO_MANY_NODES: &str = "YAML aliases expand to more than";

thread_local! {
    /// Nodes the tree being built on this thread may still take.
    static LEFT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Parses `text` into a tree of at most `2 × text.len() + 1 + ALIAS_NODES` units: a node
/// is one, a string copied out of the text one more per byte (without aliases, every
/// node but an empty document's takes at least one byte of text, and a copied string no
/// more bytes than it was written with).
pub(crate) fn parse(text: &str) -> Result<Node<'_>, serde_yaml::Error> {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            LEFT.with(|l| l.set(usize::MAX));
        }
    }
    let _reset = Reset;
    LEFT.with(|l| l.set(text.len().saturating_mul(2).saturating_add(1 + ALIAS_NODES)));
    serde_yaml::from_str(text)
}

/// Counts one node of the tree being built.
fn take<E: de::Error>() -> Result<(), E> {
    take_n(1)
}

/// Counts `n` units of the tree being built.
fn take_n<E: de::Error>(n: usize) -> Result<(), E> {
    LEFT.with(|l| match l.get().checked_sub(n) {
        None => Err(E::custom(format_args!(
            "{TOO_MANY_NODES} {ALIAS_NODES} nodes beyond what the file writes out; write the entries out"
        ))),
        Some(left) => {
            l.set(left);
            Ok(())
        }
    })
}

/// One YAML node; the variants are those of [`serde_yaml::Value`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node<'t> {
    Null,
    Bool(bool),
    Number(Number),
    /// Borrowed from the text where serde_yaml hands the scalar out unchanged.
    String(Cow<'t, str>),
    Sequence(Vec<Node<'t>>),
    Mapping(Map<'t>),
    Tagged(Box<(Tag, Node<'t>)>),
}

/// A mapping's entries in file order; its keys are distinct as `Value`s.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Map<'t>(Vec<(Node<'t>, Node<'t>)>);

impl<'t> Node<'t> {
    /// The node under any tags, as [`Value::untag_ref`] gives it.
    pub(crate) fn untag(&self) -> &Node<'t> {
        let mut n = self;
        while let Node::Tagged(t) = n {
            n = &t.1;
        }
        n
    }
    /// As [`Value::as_mapping`]: looks through tags.
    pub(crate) fn as_mapping(&self) -> Option<&Map<'t>> {
        match self.untag() {
            Node::Mapping(m) => Some(m),
            _ => None,
        }
    }
    /// As [`Value::as_str`]: looks through tags.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self.untag() {
            Node::String(s) => Some(s),
            _ => None,
        }
    }
    /// As [`Value::is_null`]: looks through tags.
    pub(crate) fn is_null(&self) -> bool {
        matches!(self.untag(), Node::Null)
    }
    /// As [`Value::get`] with a string index: the value of key `k` of the mapping
    /// under any tags.
    pub(crate) fn get(&self, k: &str) -> Option<&Node<'t>> {
        self.as_mapping().and_then(|m| m.get(k))
    }

    /// The same node as a [`Value`] (for keys that are not strings, which are compared
    /// as serde_yaml compares them).
    fn to_value(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Number(n) => Value::Number(n.clone()),
            Node::String(s) => Value::String(s.to_string()),
            Node::Sequence(s) => Value::Sequence(s.iter().map(Node::to_value).collect()),
            Node::Mapping(m) => Value::Mapping(m.0.iter().map(|(k, v)| (k.to_value(), v.to_value())).collect()),
            Node::Tagged(t) => Value::Tagged(Box::new(TaggedValue { tag: t.0.clone(), value: t.1.to_value() })),
        }
    }
}

impl<'t> Map<'t> {
    /// The value of the string key `k`, as [`Mapping::get`] finds it.
    pub(crate) fn get(&self, k: &str) -> Option<&Node<'t>> {
        self.0.iter().find(|(key, _)| matches!(key, Node::String(s) if s == k)).map(|(_, v)| v)
    }
    /// The keys and values in file order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&Node<'t>, &Node<'t>)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// Mirrors serde_yaml's own visitor for `Value` call for call, so that every error
/// serde_yaml raises while building the tree is the one it raises for a `Value`.
struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        // The wording serde_yaml's `Value` uses, as it appears in type errors.
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Node<'de>, E> {
        take::<E>()?;
        Ok(Node::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Node<'de>, E> {
        take::<E>()?;
        Ok(Node::Number(i.into()))
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Node<'de>, E> {
        take::<E>()?;
        Ok(Node::Number(u.into()))
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Node<'de>, E> {
        take::<E>()?;
        Ok(Node::Number(f.into()))
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Node<'de>, E> {
        take::<E>()?;
        Ok(Node::String(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Node<'de>, E> {
        take_n::<E>(1 + s.len())?;
        Ok(Node::String(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Node<'de>, E> {
        take_n::<E>(1 + s.len())?;
        Ok(Node::String(Cow::Owned(s)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node<'de>, E> {
        take::<E>()?;
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node<'de>, E> {
        take::<E>()?;
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        take::<A::Error>()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Sequence(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        take::<A::Error>()?;
        let mut entries: Vec<(Node<'de>, Node<'de>)> = Vec::new();
        let mut keys = Keys::default();
        while let Some(key) = map.next_key::<Node<'de>>()? {
            if let Some(message) = keys.duplicate(&entries, &key) {
                return Err(A::Error::custom(message));
            }
            let value = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Node::Mapping(Map(entries)))
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Node<'de>, A::Error> {
        // A tagged node: the tag as serde_yaml's `Value` reads it, the content as a
        // node of this tree (so that it is counted too).
        take::<A::Error>()?;
        let (tag, content) = data.variant_seed(TagSeed)?;
        Ok(Node::Tagged(Box::new((tag, content.newtype_variant::<Node<'de>>()?))))
    }
}

/// Reads a node's tag the way serde_yaml's `Value` does: any text but the empty one.
struct TagSeed;

impl<'de> DeserializeSeed<'de> for TagSeed {
    type Value = Tag;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Tag, D::Error> {
        d.deserialize_string(self)
    }
}

impl Visitor<'_> for TagSeed {
    type Value = Tag;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML tag string")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Tag, E> {
        if s.is_empty() {
            return Err(E::custom("empty YAML tag is not allowed"));
        }
        Ok(Tag::new(s))
    }
}

/// Mappings up to this many string keys are checked for a repeated key by a scan.
const SCAN_KEYS: usize = 8;

/// The keys a mapping has seen, for the duplicate check serde_yaml's `Mapping` makes.
/// A string key equals only a string key with the same text; every other key is
/// compared through a real `Mapping`, so its equality is serde_yaml's own.
#[derive(Default)]
struct Keys<'de> {
    strings: usize,
    hashed: Option<HashSet<Cow<'de, str>>>,
    others: Option<Mapping>,
}

impl<'de> Keys<'de> {
    /// Records `key`; returns serde_yaml's message if the mapping already has it.
    fn duplicate(&mut self, entries: &[(Node<'de>, Node<'de>)], key: &Node<'de>) -> Option<String> {
        let Node::String(s) = key else {
            let others = self.others.get_or_insert_with(Mapping::new);
            return match others.entry(key.to_value()) {
                Entry::Occupied(e) => Some(duplicate_message(e.key())),
                Entry::Vacant(e) => {
                    e.insert(Value::Null);
                    None
                }
            };
        };
        self.strings += 1;
        let seen = match &mut self.hashed {
            Some(set) => !set.insert(s.clone()),
            None if self.strings <= SCAN_KEYS => entries.iter().any(|(k, _)| matches!(k, Node::String(t) if t == s)),
            None => {
                let mut set: HashSet<Cow<'de, str>> = entries
                    .iter()
                    .filter_map(|(k, _)| match k {
                        Node::String(t) => Some(t.clone()),
                        _ => None,
                    })
                    .collect();
                let seen = !set.insert(s.clone());
                self.hashed = Some(set);
                seen
            }
        };
        seen.then(|| duplicate_message(&Value::String(s.to_string())))
    }
}

/// serde_yaml's message for a repeated mapping key (its `DuplicateKeyError`).
fn duplicate_message(key: &Value) -> String {
    match key {
        Value::Null => "duplicate entry with null key".to_string(),
        Value::Bool(b) => format!("duplicate entry with key `{b}`"),
        Value::Number(n) => format!("duplicate entry with key {n}"),
        Value::String(s) => format!("duplicate entry with key {s:?}"),
        Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => "duplicate entry in YAML map".to_string(),
    }
}

/// Whether the compact tree of `text` equals serde_yaml's own `Value` of it (or both
/// refuse it alike): the fuzz target of rules files checks this on every input it tries,
/// its kept corpus included. `None` when they agree.
pub(crate) fn differs_from_value(text: &str) -> Option<String> {
    let node = parse(text).map_err(|e| e.to_string());
    let value = serde_yaml::from_str::<Value>(text).map_err(|e| e.to_string());
    match (node, value) {
        (Ok(n), Ok(v)) if n.to_value() == v => None,
        (Err(a), Err(b)) if a == b => None,
        // The one difference by design: the tree's bound on what aliases expand to.
        (Err(a), Ok(_)) if a.contains(TOO_MANY_NODES) => None,
        (n, v) => Some(format!("tree {:?} but value {:?}", n.map(|n| n.to_value()), v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree holds what a `Value` holds, and refuses what a `Value` refuses with the
    /// same message, for documents that exercise every variant and key kind.
    #[test]
    fn same_as_value() {
        let docs = [
            "version: 1\nforwards:\n  - {name: a, port: 80, to: 8080}\n",
            "a: 1\nb: -2\nc: 1.5\nd: .nan\ne: ~\nf: true\ng: 'q'\nh: \"x\\ty\"\ni: [1, [2]]\n",
            "!t {a: !u [1, 2], b: !!str 3}\n",
            "{1: a, 1.0: b, true: c, null: d, [1]: e, {x: 1}: f, !t x: g, x: h}\n",
            "x: &a {p: 1}\ny: *a\nz: [*a, *a]\n",
            "a: 1\na: 2\n",
            "{b: 1, c: 2, d: 3, e: 4, f: 5, g: 6, h: 7, i: 8, j: 9, k: 10, b: 11}\n",
            "{1: a, 1: b}\n",
            "{.nan: a, .NaN: b}\n",
            "{0.0: a, -0.0: b}\n",
            "{[1]: a, [1]: b}\n",
            "{~: a, null: b}\n",
            "{true: a, True: b}\n",
            "{!t x: a, !t x: b}\n",
            "! x\n",
            "big: 340282366920938463463374607431768211455\n",
            "a: [1, 2\n",
            "a: *nothere\n",
            "--- 1\n--- 2\n",
            "",
        ];
        for doc in docs {
            let node = parse(doc).map_err(|e| e.to_string());
            let value = serde_yaml::from_str::<Value>(doc).map_err(|e| e.to_string());
            match (node, value) {
                (Ok(n), Ok(v)) => assert_eq!(n.to_value(), v, "{doc:?}"),
                (n, v) => assert_eq!(n.map(|_| ()), v.map(|_| ()), "{doc:?}"),
            }
        }
    }

    #[test]
    fn plain_scalars_borrow_the_text() {
        let node = parse("name: p1025\n").expect("valid");
        assert!(matches!(node.get("name"), Some(Node::String(Cow::Borrowed("p1025")))));
    }

    /// Aliases of aliases: a few kilobytes that would be millions of nodes are refused
    /// at the bound, located, and the bound is lifted again after the parse; shared
    /// lists within the bound still load.
    #[test]
    fn aliases_expand_within_a_bound() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(bomb.len() < 1000, "{}", bomb.len());
        let e = parse(&bomb).expect_err("10^8 nodes");
        assert!(e.to_string().contains("YAML aliases expand to more than 65536 nodes"), "{e}");
        assert!(e.location().is_some(), "{e}");
        assert_eq!(LEFT.with(Cell::get), usize::MAX, "the bound is lifted after the parse");
        assert_eq!(differs_from_value(&bomb[..bomb.len() / 2]), None);

        // 1,000 forwards sharing one list of 10 sources: 10,000 nodes from aliases.
        let mut shared = String::from("nets: &nets [10.0.0.0/8, 10.1.0.0/16, 10.2.0.0/16, 10.3.0.0/16, 10.4.0.0/16, 10.5.0.0/16, 10.6.0.0/16, 10.7.0.0/16, 10.8.0.0/16, 10.9.0.0/16]\nforwards:\n");
        for i in 0..1000 {
            shared.push_str(&format!("  - {{name: f{i}, port: {}, to: {}, sources: *nets}}\n", 1000 + i, 20000 + i));
        }
        let tree = parse(&shared).expect("within the bound");
        assert!(matches!(tree.get("forwards"), Some(Node::Sequence(f)) if f.len() == 1000));
        // A tag's content counts too.
        let tagged = bomb.replacen("a7: &a7 [", "a7: !t [", 1);
        assert!(parse(&tagged).expect_err("tagged").to_string().contains(TOO_MANY_NODES));
    }
}
