//! Typed decoding of a JSON value whose placeholders stand for attachments.
//!
//! The deserializer walks the value as serde_json's own does, except that a
//! placeholder is handed to the target as a byte string. An attachment is
//! moved out on first use (`visit_byte_buf`), so `Bytes`, `ByteBuf` and
//! `#[serde(with = "serde_bytes")] Vec<u8>` take the buffer the frame was
//! read into, with no copy. A plain `Vec<u8>` gets it as a sequence.

use std::cell::RefCell;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use serde::forward_to_deserialize_any;
use serde_json::{Error, Map, Value};

use crate::lend::lending;
use crate::Key;
use bytes::Bytes;

/// The attachments of one message, each taken at most once.
#[derive(Debug, Default)]
pub struct Attachments(RefCell<Vec<Option<Attachment>>>);

/// One attachment: a buffer of its own, handed over as it is; or a part of
/// a larger buffer, lent (see `lend`) so that a cooperating field takes it
/// without a copy.
#[derive(Debug)]
enum Attachment {
    Owned(Vec<u8>),
    Shared(Bytes),
}

impl Attachments {
    /// Attachments in buffers of their own, in index order.
    pub fn new(attachments: Vec<Vec<u8>>) -> Self {
        Attachments(RefCell::new(
            attachments
                .into_iter()
                .map(|a| Some(Attachment::Owned(a)))
                .collect(),
        ))
    }

    /// Attachments that are parts of a larger buffer (a message read
    /// whole), in index order.
    pub fn shared(attachments: Vec<Bytes>) -> Self {
        Attachments(RefCell::new(
            attachments
                .into_iter()
                .map(|a| Some(Attachment::Shared(a)))
                .collect(),
        ))
    }

    fn take(&self, index: usize) -> Result<Attachment, Error> {
        let mut all = self.0.borrow_mut();
        let count = all.len();
        match all.get_mut(index) {
            None => Err(de::Error::custom(format_args!(
                "a placeholder refers to attachment {index}, but the frame carries {count}"
            ))),
            Some(slot) => slot.take().ok_or_else(|| {
                de::Error::custom(format_args!(
                    "attachment {index} is referred to twice; each goes to one place"
                ))
            }),
        }
    }
}

/// Decode `value` into `T`, placeholders becoming bytes.
pub(crate) fn from_value<T: DeserializeOwned>(
    key: Key,
    value: Value,
    attachments: Attachments,
) -> Result<T, Error> {
    T::deserialize(De {
        value,
        attachments: &Source { key, attachments },
    })
}

/// What every level of a decoding shares: the attachments and the key of
/// their placeholders.
struct Source {
    key: Key,
    attachments: Attachments,
}

struct De<'a> {
    value: Value,
    attachments: &'a Source,
}

impl De<'_> {
    /// The attachment this value stands for, if it is a placeholder.
    fn attachment(&self) -> Option<Result<Attachment, Error>> {
        let source = self.attachments;
        match &self.value {
            Value::Object(map) => source.key.index_of(map).map(|i| source.attachments.take(i)),
            _ => None,
        }
    }
}

impl<'de> de::Deserializer<'de> for De<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if let Some(bytes) = self.attachment() {
            return match bytes? {
                Attachment::Owned(v) => visitor.visit_byte_buf(v),
                Attachment::Shared(b) => lending(&b, |slice| visitor.visit_bytes(slice)),
            };
        }
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => de::Deserializer::deserialize_any(n, visitor),
            Value::String(s) => visitor.visit_string(s),
            Value::Array(items) => visitor.visit_seq(Seq {
                items: items.into_iter(),
                attachments: self.attachments,
            }),
            Value::Object(map) => visitor.visit_map(Entries {
                entries: map.into_iter(),
                value: None,
                attachments: self.attachments,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        // A `Vec<u8>` asks for a sequence: give it the attachment's bytes.
        match self.attachment() {
            Some(bytes) => {
                let bytes = match bytes? {
                    Attachment::Owned(v) => v,
                    Attachment::Shared(b) => b.to_vec(),
                };
                visitor.visit_seq(de::value::SeqDeserializer::new(bytes.into_iter()))
            }
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.value {
            Value::String(variant) => visitor.visit_enum(variant.into_deserializer()),
            Value::Object(map) if map.len() == 1 => {
                let (variant, value) = map.into_iter().next().expect("one entry");
                visitor.visit_enum(Variant {
                    variant,
                    value: De {
                        value,
                        attachments: self.attachments,
                    },
                })
            }
            other => Err(de::Error::invalid_type(unexpected(&other), &"an enum")),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct map struct identifier
    }
}

fn unexpected(value: &Value) -> de::Unexpected<'_> {
    match value {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(_) => de::Unexpected::Other("a number"),
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}

struct Seq<'a> {
    items: std::vec::IntoIter<Value>,
    attachments: &'a Source,
}

impl<'de> SeqAccess<'de> for Seq<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.items.next() {
            Some(value) => seed
                .deserialize(De {
                    value,
                    attachments: self.attachments,
                })
                .map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Entries<'a> {
    entries: <Map<String, Value> as IntoIterator>::IntoIter,
    value: Option<Value>,
    attachments: &'a Source,
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(key.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a map value was asked for before its key"))?;
        seed.deserialize(De {
            value,
            attachments: self.attachments,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct Variant<'a> {
    variant: String,
    value: De<'a>,
}

impl<'de, 'a> EnumAccess<'de> for Variant<'a> {
    type Error = Error;
    type Variant = De<'a>;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, De<'a>), Error> {
        let variant = seed.deserialize(self.variant.into_deserializer())?;
        Ok((variant, self.value))
    }
}

impl<'de> VariantAccess<'de> for De<'_> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        de::Deserialize::deserialize(self)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_map(self, visitor)
    }
}
