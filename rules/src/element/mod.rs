//! Values and elements of sets and maps: the leaf vocabulary shared by the plan, the
//! packed element store and the kernel codec. Depends only on `model` for the family and
//! protocol of a key; the byte tags and the order of values are spelled out here, so no
//! encoding depends on the declaration order of an enum defined elsewhere.

mod packed;
mod value;

pub(crate) use packed::{key_bytes, PackedElement};
pub use packed::{ElementRef, Elements, FieldRef, Parts};
pub use value::{Element, FieldType, Value};
