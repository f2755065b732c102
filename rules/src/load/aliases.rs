//! What YAML aliases add to a document, measured before the parser expands them.
//!
//! serde_yaml bounds how many aliases it follows, not what they expand to: one list
//! of 6,000 items aliased 6,000 times is 30 KB of text and 36 million nodes, and one
//! long string aliased a thousand times is a thousand copies of it. So a text that can
//! hold aliases (it has a `*`) is first walked as yaml-rust2's event stream, where an
//! alias is one event: the weight of every anchored node is recorded when it ends, and
//! each alias adds its anchor's weight. A document whose aliases add more than
//! [`ALIAS_WEIGHT`] to what it writes out is refused, at the alias that crossed it.
//!
//! Two things the weighing could not trust are refused outright: an anchor name
//! defined twice (serde_yaml and yaml-rust2 number a redefined anchor differently, so
//! an alias could be weighed as one node and expanded as another), and an alias inside
//! the node its anchor names (serde_yaml replays it into itself, to its depth limit).

#![forbid(unsafe_code)]

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, Scanner, TokenType};

/// What a node weighs besides its text: about what it takes in memory once parsed.
pub const NODE_WEIGHT: u64 = 64;
/// The most that aliases may add to a document: 65,536 nodes, or 4 MiB of text.
pub const ALIAS_WEIGHT: u64 = 4 << 20;

/// An open collection: its anchor, and its weight with aliases expanded and as written.
struct Open {
    anchor: usize,
    expanded: u64,
    written: u64,
}

#[derive(Default)]
struct Weigh {
    open: Vec<Open>,
    anchors: HashMap<usize, u64>,
    expanded: u64,
    written: u64,
    /// Where the growth first went over [`ALIAS_WEIGHT`] (1-based line and column).
    over_at: Option<(usize, usize)>,
    /// Where an alias inside the node its own anchor names is.
    into_itself: Option<(usize, usize)>,
}

impl Weigh {
    fn done(&mut self, anchor: usize, expanded: u64, written: u64, mark: Marker) {
        if anchor != 0 {
            self.anchors.insert(anchor, expanded);
        }
        match self.open.last_mut() {
            Some(o) => {
                o.expanded = o.expanded.saturating_add(expanded);
                o.written = o.written.saturating_add(written);
            }
            None => {
                self.expanded = self.expanded.saturating_add(expanded);
                self.written = self.written.saturating_add(written);
            }
        }
        if self.over_at.is_none() && self.growth() > ALIAS_WEIGHT {
            self.over_at = Some((mark.line(), mark.col() + 1));
        }
    }

    /// What the aliases met so far add (the open collections' included).
    fn growth(&self) -> u64 {
        self.open.iter().fold(self.expanded.saturating_sub(self.written), |g, o| {
            g.saturating_add(o.expanded.saturating_sub(o.written))
        })
    }
}

fn tag_len(tag: &Option<yaml_rust2::parser::Tag>) -> u64 {
    tag.as_ref().map_or(0, |t| (t.handle.len() + t.suffix.len()) as u64)
}

impl MarkedEventReceiver for Weigh {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, _, anchor, tag) => {
                let w = NODE_WEIGHT + value.len() as u64 + tag_len(&tag);
                self.done(anchor, w, w, mark);
            }
            Event::Alias(id) => {
                if self.into_itself.is_none() && self.open.iter().any(|o| o.anchor == id) {
                    self.into_itself = Some((mark.line(), mark.col() + 1));
                }
                let e = self.anchors.get(&id).copied().unwrap_or(NODE_WEIGHT);
                self.done(0, e, NODE_WEIGHT, mark);
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) => {
                let w = NODE_WEIGHT + tag_len(&tag);
                self.open.push(Open { anchor, expanded: w, written: w });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(o) = self.open.pop() {
                    self.done(o.anchor, o.expanded, o.written, mark);
                }
            }
            _ => {}
        }
    }
}

/// Why the aliases of a text are refused, and where (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Whether the aliases of `text`'s first document are refused: an anchor name defined
/// twice, an alias inside its own anchor's node, or more than [`ALIAS_WEIGHT`] added to
/// what it writes out. `None` when none is (or it has no alias). A text the event parser
/// refuses is left to serde_yaml, which reports the syntax error (it expands nothing of a
/// document it cannot parse).
pub(crate) fn refused(text: &str) -> Option<Refused> {
    if !text.contains('*') {
        return None;
    }
    let at = |m: &Marker, message: String| Some(Refused { line: m.line(), column: m.col() + 1, message });
    let mut defined: HashMap<String, Marker> = HashMap::new();
    for token in Scanner::new(text.chars()) {
        if let TokenType::Anchor(name) = token.1 {
            if let Some(first) = defined.get(&name) {
                return at(
                    &token.0,
                    format!(
                        "anchor `&{}` is defined twice (first on line {}); give each anchor a name of its own",
                        super::ctx::clip(&name),
                        first.line()
                    ),
                );
            }
            defined.insert(name, token.0);
        }
    }
    let mut w = Weigh::default();
    let mut parser = Parser::new_from_str(text);
    let parsed = parser.load(&mut w, false);
    if let Some((line, column)) = w.into_itself {
        return Some(Refused {
            line,
            column,
            message:
                "this alias is inside the node its anchor names, which would expand into itself; write the entries out"
                    .into(),
        });
    }
    if parsed.is_err() && w.over_at.is_none() {
        return None;
    }
    let grown = w.growth();
    w.over_at.map(|(line, column)| Refused {
        line,
        column,
        message: format!(
            "YAML aliases add {:.1} MiB to what the file writes out; the limit is {} MiB (about {} nodes or as many bytes of text): write the entries out",
            grown as f64 / 1048576.0,
            ALIAS_WEIGHT >> 20,
            super::ctx::thousands((ALIAS_WEIGHT / NODE_WEIGHT) as usize)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_deep_and_long_aliases_are_weighed_and_shared_lists_pass() {
        let wide = format!("x: &a [{}]\ny: [{}]\n", vec!["0"; 6000].join(","), vec!["*a"; 6000].join(","));
        let r = refused(&wide).expect("36 million nodes");
        assert_eq!(r.line, 2);
        assert!(r.message.starts_with("YAML aliases add 2"), "{r:?}");
        let mut deep = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            deep.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(refused(&deep).is_some());
        // One 1 MiB string aliased 5 times: 5 MiB of copies.
        let long = format!("s: &s \"{}\"\nl: [*s, *s, *s, *s, *s]\n", "x".repeat(1 << 20));
        assert!(refused(&long).is_some());
        let four = format!("s: &s \"{}\"\nl: [*s, *s, *s]\n", "x".repeat(1 << 20));
        assert_eq!(refused(&four), None, "3 MiB of copies is within the bound");
        // 1,000 forwards sharing a list of 10 sources: about 0.7 MiB.
        let mut shared = String::from("nets: &nets [10.0.0.0/8, 10.1.0.0/16, 10.2.0.0/16, 10.3.0.0/16, 10.4.0.0/16, 10.5.0.0/16, 10.6.0.0/16, 10.7.0.0/16, 10.8.0.0/16, 10.9.0.0/16]\nforwards:\n");
        for i in 0..1000 {
            shared.push_str(&format!("  - {{name: f{i}, port: {}, to: {}, sources: *nets}}\n", 1000 + i, 20000 + i));
        }
        assert_eq!(refused(&shared), None);
        assert_eq!(refused("a: [1, 2\n"), None, "a syntax error is serde_yaml's to report");
        assert_eq!(refused("a: 1 # no alias *here\n"), None);
    }

    #[test]
    fn a_redefined_anchor_and_an_alias_into_itself_are_refused() {
        // serde_yaml would expand every *a as the 1 MiB block (its numbering of a
        // redefined anchor collides with the next one), weighed here as `x`.
        let text = format!("p: &a x\nq: &b x\nr: &a x\nbig: &c |\n  {}\nf: [*a, *a]\n", "y".repeat(1000));
        let r = refused(&text).expect("redefined");
        assert_eq!(
            (r.line, r.message.as_str()),
            (3, "anchor `&a` is defined twice (first on line 1); give each anchor a name of its own")
        );
        let r = refused("forwards: &a [x, *a]\n").expect("into itself");
        assert_eq!((r.line, r.column), (1, 18));
        assert!(r.message.starts_with("this alias is inside the node its anchor names"), "{r:?}");
        // An alias inside another anchor's node is fine.
        assert_eq!(refused("n: &n [10.0.0.0/8]\nf: &f {sources: *n}\ng: [*f, *f]\n"), None);
    }
}
