//! Byte strings handed through serde without a copy, where both ends
//! agree to it.
//!
//! serde lends a serializer a byte string only as `&[u8]`, for the length
//! of one call, so a serializer that keeps the bytes must copy them; and a
//! deserializer can hand a target only a slice or a `Vec<u8>`. For a
//! message of 16 MiB that is a copy (and 4,096 fresh pages) on each side.
//!
//! So a field that holds `Bytes` and knows it may travel through cenote's
//! wires says so ([`serialize`] / [`deserialize`], or [`vec`](mod@vec) for a
//! `Vec<Bytes>`): while its bytes are being serialized, the `Bytes` itself
//! is left on this thread, and the capturing serializer takes a clone of
//! it (a reference count) when the slice it is given is exactly those
//! bytes. Decoding works the same way in reverse. With any other serializer
//! or deserializer the field is an ordinary byte string.

use std::cell::RefCell;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

thread_local! {
    /// The byte string being handed over on this thread, if one is.
    static LENT: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Run `f` with `bytes` left on this thread for [`taken`] to find.
pub(crate) fn lending<R>(bytes: &Bytes, f: impl FnOnce(&[u8]) -> R) -> R {
    let before = LENT.with(|l| l.replace(Some(bytes.clone())));
    let out = f(bytes);
    LENT.with(|l| *l.borrow_mut() = before);
    out
}

/// The `Bytes` being lent, if `slice` is exactly its bytes.
pub(crate) fn taken(slice: &[u8]) -> Option<Bytes> {
    LENT.with(|l| {
        l.borrow()
            .as_ref()
            .filter(|b| b.as_ptr() == slice.as_ptr() && b.len() == slice.len())
            .cloned()
    })
}

/// Serialize `bytes` as a byte string, lent (see the module docs).
pub fn serialize<S: Serializer>(bytes: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    lending(bytes, |slice| s.serialize_bytes(slice))
}

/// Deserialize a byte string into `Bytes`, taking a lent one without a
/// copy (see the module docs). Also takes a sequence of numbers, which is
/// how JSON without placeholders writes bytes.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    d.deserialize_byte_buf(BytesVisitor)
}

/// [`serialize`] and [`deserialize`] for a `Vec<Bytes>`:
/// `#[serde(with = "cenote_attach::lend::vec")]`.
pub mod vec {
    use super::*;

    /// Serialize each byte string, lent.
    pub fn serialize<S: Serializer>(all: &[Bytes], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(all.len()))?;
        for bytes in all {
            seq.serialize_element(&Lent(bytes))?;
        }
        seq.end()
    }

    /// Deserialize each byte string, taking lent ones without a copy.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Bytes>, D::Error> {
        let all: Vec<Taken> = Deserialize::deserialize(d)?;
        Ok(all.into_iter().map(|t| t.0).collect())
    }

    struct Lent<'a>(&'a Bytes);

    impl Serialize for Lent<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            super::serialize(self.0, s)
        }
    }

    struct Taken(Bytes);

    impl<'de> Deserialize<'de> for Taken {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            super::deserialize(d).map(Taken)
        }
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(taken(v).unwrap_or_else(|| Bytes::copy_from_slice(v)))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v.as_bytes()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(Bytes::from(out))
    }
}
