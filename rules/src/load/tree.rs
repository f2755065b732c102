//! The document tree the loader walks: what serde_yaml deserialises a file into instead
//! of [`serde_yaml::Value`].
//!
//! It holds the same information as a `Value` and is built by the same deserializer, so
//! serde_yaml still decides what parses, reports syntax errors, resolves scalars, expands
//! aliases within its bounds and refuses duplicate keys, with the same messages at the
//! same places. It is cheaper to build: plain scalars borrow the text instead of being
//! copied, a mapping is a vector of pairs instead of a hash table, and keys are hashed
//! only when a mapping grows large enough for duplicate checks to need it.

use serde::de::{self, Deserialize, Deserializer, EnumAccess, Error as _, MapAccess, SeqAccess, Visitor};
use serde_yaml::mapping::Entry;
use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Number, Value};
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

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

    fn from_value(v: Value) -> Node<'t> {
        match v {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(b),
            Value::Number(n) => Node::Number(n),
            Value::String(s) => Node::String(Cow::Owned(s)),
            Value::Sequence(s) => Node::Sequence(s.into_iter().map(Node::from_value).collect()),
            Value::Mapping(m) => {
                Node::Mapping(Map(m.into_iter().map(|(k, v)| (Node::from_value(k), Node::from_value(v))).collect()))
            }
            Value::Tagged(t) => {
                let TaggedValue { tag, value } = *t;
                Node::Tagged(Box::new((tag, Node::from_value(value))))
            }
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
        Ok(Node::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number(i.into()))
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number(u.into()))
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Node<'de>, E> {
        Ok(Node::Number(f.into()))
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(s)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Sequence(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
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
        // A tagged node: serde_yaml's own code reads the tag and the content, so tags
        // are judged exactly as for a `Value`; tags are rare, the copy is cheap.
        let t = TaggedValue::deserialize(de::value::EnumAccessDeserializer::new(data))?;
        Ok(Node::Tagged(Box::new((t.tag, Node::from_value(t.value)))))
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
    let node = serde_yaml::from_str::<Node>(text).map_err(|e| e.to_string());
    let value = serde_yaml::from_str::<Value>(text).map_err(|e| e.to_string());
    match (node, value) {
        (Ok(n), Ok(v)) if n.to_value() == v => None,
        (Err(a), Err(b)) if a == b => None,
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
            let node = serde_yaml::from_str::<Node>(doc).map_err(|e| e.to_string());
            let value = serde_yaml::from_str::<Value>(doc).map_err(|e| e.to_string());
            match (node, value) {
                (Ok(n), Ok(v)) => assert_eq!(n.to_value(), v, "{doc:?}"),
                (n, v) => assert_eq!(n.map(|_| ()), v.map(|_| ()), "{doc:?}"),
            }
        }
    }

    #[test]
    fn plain_scalars_borrow_the_text() {
        let node = serde_yaml::from_str::<Node>("name: p1025\n").expect("valid");
        assert!(matches!(node.get("name"), Some(Node::String(Cow::Borrowed("p1025")))));
    }
}
