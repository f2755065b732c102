//! Batches: the messages of one transaction with the subject of each, sent in one
//! `sendto`; a refusal is traced back to the refused object, down to the element.
#![forbid(unsafe_code)]

use super::codec::Item;
use super::conn::Conn;
use super::consts as k;
use super::error::{encode_err, hint, BackendError};
use super::messages::ElemMsg;
use crate::netlink::attrs;
use nftnl::{Batch, MsgType, NlMsg};
use portd_rules::plan::{self, Set};
use portd_rules::render;
use std::ffi::CStr;
use std::io;

/// What one message of a batch is about, to name the culprit of a kernel error.
pub(super) enum Subject<'a> {
    Table,
    Set(&'a str),
    Elements { set: &'a Set, set_id: Option<u32>, elements: Vec<Item<'a>> },
    Chain(&'a str),
    Rule { chain: &'a str, rule: &'a plan::Rule },
}

/// A batch under construction, and the subject of each of its messages.
pub(super) struct Builder<'a> {
    table: &'a CStr,
    batch: Batch,
    subjects: Vec<(Subject<'a>, MsgType)>,
}

impl<'a> Builder<'a> {
    pub(super) fn new(table: &'a CStr) -> Builder<'a> {
        Builder { table, batch: Batch::new(), subjects: Vec::new() }
    }

    pub(super) fn push<T: NlMsg>(&mut self, msg: &T, op: MsgType, subject: Subject<'a>) {
        self.batch.add(msg, op);
        self.subjects.push((subject, op));
    }

    /// Adds or deletes `elements` of `set` in as many messages as it takes.
    pub(super) fn push_elements(
        &mut self,
        set: &'a Set,
        set_id: Option<u32>,
        elements: &[Item<'a>],
        op: MsgType,
    ) -> Result<(), BackendError> {
        let mut rest = elements;
        while !rest.is_empty() {
            let with_data = op == MsgType::Add;
            let (msg, n) = ElemMsg::chunk(self.table, set, set_id, rest, with_data)
                .map_err(|(i, reason)| encode_err(format!("set {}, element {}", set.name, rest[i].text()), reason))?;
            let elements = rest[..n].to_vec();
            self.push(&msg, op, Subject::Elements { set, set_id, elements });
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Sends the batch and waits for the kernel's answer to every message.
    pub(super) fn commit(self, conn: &mut Conn) -> Result<(), BackendError> {
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
        conn.wait_acks(first, subjects.len(), |i, offset| describe(&subjects[i].0, subjects[i].1, offset, table))
    }
}

/// Describes the subject of a refused message; `offset` is the kernel's pointer to the
/// refused attribute, which names the refused element of a chunk.
fn describe(subject: &Subject<'_>, op: MsgType, offset: Option<u32>, table: &CStr) -> String {
    let del = if op == MsgType::Del { "deleting " } else { "" };
    match subject {
        Subject::Table => format!("{del}table inet {}", table.to_string_lossy()),
        Subject::Set(n) => format!("set {n}"),
        Subject::Chain(n) => format!("chain {n}"),
        Subject::Rule { chain, rule } => format!("rule `{}` in chain {chain}", render::rule(rule)),
        Subject::Elements { set, set_id, elements } => {
            let one = offset.and_then(|o| refused_element(table, set, *set_id, elements, op, o));
            match (one, elements.as_slice()) {
                (Some(e), _) => format!("set {}, {del}element {}", set.name, e.text()),
                (None, [e]) => format!("set {}, {del}element {}", set.name, e.text()),
                (None, [a, .., b]) => format!(
                    "set {}, {del}one of {} elements from {} to {}",
                    set.name,
                    elements.len(),
                    a.text(),
                    b.text()
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
    elements: &[Item<'e>],
    op: MsgType,
    offset: u32,
) -> Option<Item<'e>> {
    let (msg, n) = ElemMsg::chunk(table, set, set_id, elements, op == MsgType::Add).ok()?;
    let buf = msg.encoded(op);
    let bytes = buf.bytes();
    let len = u32::from_ne_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let offset = offset as usize;
    let list = attrs(bytes.get(20..len)?, 20).find(|a| a.ty == k::NFTA_SET_ELEM_LIST_ELEMENTS)?;
    let index = attrs(list.payload, list.at + 4).position(|a| (a.at..a.at + a.raw.len()).contains(&offset))?;
    (index < n).then(|| elements[index])
}
