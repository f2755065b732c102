//! Maps field paths (`forwards[2].port`) to positions in the YAML source.
//!
//! serde_yaml reports positions for syntax and type errors only. For semantic errors
//! (duplicates, conflicts, unequal ranges) we walk the same text once more with
//! yaml-rust2's marked event stream and record where every node and every mapping key
//! starts. Aliases are recorded where they appear and never expanded, so this pass is
//! linear in the size of the file.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Positions (1-based line and column) of nodes and keys by path.
#[derive(Debug, Default)]
pub(crate) struct Locator {
    values: HashMap<String, (usize, usize)>,
    keys: HashMap<String, (usize, usize)>,
}

enum Frame {
    Map { path: String, key: Option<String>, expect_key: bool },
    Seq { path: String, index: usize },
}

struct Builder {
    loc: Locator,
    stack: Vec<Frame>,
    depth_limit_hit: bool,
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Builder {
    /// Path of the node that starts now, and whether it is a mapping key.
    fn next_node(&mut self) -> (String, bool) {
        match self.stack.last_mut() {
            None => (String::new(), false),
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                (p, false)
            }
            Some(Frame::Map { path, key, expect_key }) => {
                if *expect_key {
                    (path.clone(), true)
                } else {
                    (child(path, key.as_deref().unwrap_or("?")), false)
                }
            }
        }
    }

    fn after_node(&mut self) {
        if let Some(Frame::Map { expect_key, .. }) = self.stack.last_mut() {
            *expect_key = !*expect_key;
        }
    }
}

fn pos(m: &Marker) -> (usize, usize) {
    (m.line(), m.col() + 1)
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.stack.len() > 256 {
            self.depth_limit_hit = true;
        }
        match ev {
            Event::Scalar(value, ..) => {
                let (path, is_key) = self.next_node();
                if is_key {
                    // A block mapping's start event is marked after its first key; the
                    // first key is where a reader sees the mapping begin.
                    let here = pos(&mark);
                    if let Some(v) = self.loc.values.get_mut(&path) {
                        *v = (*v).min(here);
                    }
                    let full = child(&path, &value);
                    self.loc.keys.entry(full).or_insert(pos(&mark));
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some(value);
                    }
                } else {
                    self.loc.values.entry(path).or_insert(pos(&mark));
                }
                self.after_node();
            }
            Event::Alias(_) => {
                let (path, is_key) = self.next_node();
                if !is_key {
                    self.loc.values.entry(path).or_insert(pos(&mark));
                }
                self.after_node();
            }
            Event::SequenceStart(..) => {
                let (path, _) = self.next_node();
                self.loc.values.entry(path.clone()).or_insert(pos(&mark));
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingStart(..) => {
                let (path, _) = self.next_node();
                self.loc.values.entry(path.clone()).or_insert(pos(&mark));
                self.stack.push(Frame::Map { path, key: None, expect_key: true });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
                self.after_node();
            }
            _ => {}
        }
    }
}

impl Locator {
    /// Builds the index; a text that does not parse yields an empty index.
    pub(crate) fn new(text: &str) -> Locator {
        let mut b = Builder { loc: Locator::default(), stack: Vec::new(), depth_limit_hit: false };
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut b, false).is_err() || b.depth_limit_hit {
            return Locator::default();
        }
        b.loc
    }

    /// Position of the value at `path`, falling back to its nearest located parent.
    pub(crate) fn value(&self, path: &str) -> (usize, usize) {
        let mut p = path.to_string();
        loop {
            if let Some(v) = self.values.get(&p).or_else(|| self.keys.get(&p)) {
                return *v;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p.truncate(i),
                None => return self.values.get("").copied().unwrap_or((0, 0)),
            }
        }
    }

    /// True when the text writes the key at `path` (not merely a parent of it).
    pub(crate) fn has_key(&self, path: &str) -> bool {
        self.keys.contains_key(path)
    }

    /// Position of the key at `path` (for unknown fields), else of its value.
    pub(crate) fn key(&self, path: &str) -> (usize, usize) {
        self.keys.get(path).copied().unwrap_or_else(|| self.value(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_values_and_keys() {
        let text = "version: 1\nforwards:\n  - name: http\n    port: 70000\n    to: [1, 2]\n";
        let l = Locator::new(text);
        assert_eq!(l.value("forwards[0].port"), (4, 11));
        assert_eq!(l.key("forwards[0].port"), (4, 5));
        assert_eq!(l.value("forwards[0].to[1]"), (5, 13));
        assert_eq!(l.value("forwards[0].nothere"), (3, 5));
        assert_eq!(l.value("version"), (1, 10));
    }

    #[test]
    fn flow_style_is_located() {
        let l = Locator::new("version: 1\nforwards: [{name: a, port: 1, to: 2}]\n");
        assert_eq!(l.value("forwards[0].port"), (2, 28));
    }
}
