//! Serializing call arguments with byte strings pulled out as attachments.
//!
//! An adapter over serde_json's serializers (to a `Value`, or straight to
//! text): every call is passed on
//! unchanged, except a byte string, which is stored as an attachment and
//! serialized as its placeholder. Each nested value is wrapped again, so a
//! byte string is found however deep it sits.

use std::cell::RefCell;

use bytes::Bytes;
use serde::ser::{self, Serialize};
use serde_json::{Error, Value};

use crate::Key;

/// The byte strings taken so far, and the key of their placeholders.
struct Store {
    key: Key,
    taken: RefCell<Vec<Bytes>>,
}

/// Serialize `value` to JSON, byte strings becoming attachments.
pub(crate) fn to_value<T: Serialize + ?Sized>(
    key: Key,
    value: &T,
) -> Result<(Value, Vec<Bytes>), Error> {
    capture(key, value, serde_json::value::Serializer)
}

/// Serialize `value` as JSON text, byte strings becoming attachments: one
/// pass, no intermediate `Value`.
pub(crate) fn to_vec<T: Serialize + ?Sized>(
    key: Key,
    value: &T,
) -> Result<(Vec<u8>, Vec<Bytes>), Error> {
    let mut out = Vec::with_capacity(128);
    let ((), attachments) = capture(key, value, &mut serde_json::Serializer::new(&mut out))?;
    Ok((out, attachments))
}

/// Serialize `value` through `inner`, byte strings becoming attachments.
fn capture<T: Serialize + ?Sized, S: ser::Serializer>(
    key: Key,
    value: &T,
    inner: S,
) -> Result<(S::Ok, Vec<Bytes>), S::Error> {
    let store = Store {
        key,
        taken: RefCell::default(),
    };
    let out = value.serialize(Capture {
        inner,
        store: &store,
    })?;
    Ok((out, store.taken.into_inner()))
}

/// A value serialized through [`Capture`].
struct Wrap<'a, T: ?Sized> {
    value: &'a T,
    store: &'a Store,
}

impl<T: Serialize + ?Sized> Serialize for Wrap<'_, T> {
    fn serialize<S: ser::Serializer>(&self, inner: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(Capture {
            inner,
            store: self.store,
        })
    }
}

struct Capture<'a, S> {
    inner: S,
    store: &'a Store,
}

/// The same adapter around each kind of compound serializer.
struct Compound<'a, C> {
    inner: C,
    store: &'a Store,
}

macro_rules! forward {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $name(self, $($arg: $ty),*) -> Result<S::Ok, S::Error> {
            self.inner.$name($($arg),*)
        })*
    };
}

impl<'a, S: ser::Serializer> ser::Serializer for Capture<'a, S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Compound<'a, S::SerializeSeq>;
    type SerializeTuple = Compound<'a, S::SerializeTuple>;
    type SerializeTupleStruct = Compound<'a, S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<'a, S::SerializeTupleVariant>;
    type SerializeMap = Compound<'a, S::SerializeMap>;
    type SerializeStruct = Compound<'a, S::SerializeStruct>;
    type SerializeStructVariant = Compound<'a, S::SerializeStructVariant>;

    forward! {
        serialize_bool(v: bool);
        serialize_i8(v: i8);
        serialize_i16(v: i16);
        serialize_i32(v: i32);
        serialize_i64(v: i64);
        serialize_i128(v: i128);
        serialize_u8(v: u8);
        serialize_u16(v: u16);
        serialize_u32(v: u32);
        serialize_u64(v: u64);
        serialize_u128(v: u128);
        serialize_f32(v: f32);
        serialize_f64(v: f64);
        serialize_char(v: char);
        serialize_str(v: &str);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(name: &'static str);
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str);
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<S::Ok, S::Error> {
        // serde lends the bytes only for the call: a copy, unless their
        // owner left them on this thread (`lend`).
        let bytes = crate::lend::taken(v).unwrap_or_else(|| Bytes::copy_from_slice(v));
        let index = {
            let mut taken = self.store.taken.borrow_mut();
            taken.push(bytes);
            taken.len() - 1
        };
        self.store.key.placeholder(index).serialize(self.inner)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.inner.serialize_some(&Wrap {
            value,
            store: self.store,
        })
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.inner.serialize_newtype_struct(
            name,
            &Wrap {
                value,
                store: self.store,
            },
        )
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.inner.serialize_newtype_variant(
            name,
            index,
            variant,
            &Wrap {
                value,
                store: self.store,
            },
        )
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        let inner = self.inner.serialize_seq(len)?;
        Ok(Compound {
            inner,
            store: self.store,
        })
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        let inner = self.inner.serialize_tuple(len)?;
        Ok(Compound {
            inner,
            store: self.store,
        })
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        let inner = self.inner.serialize_tuple_struct(name, len)?;
        Ok(Compound {
            inner,
            store: self.store,
        })
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        let inner = self
            .inner
            .serialize_tuple_variant(name, index, variant, len)?;
        Ok(Compound {
            inner,
            store: self.store,
        })
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        let inner = self.inner.serialize_map(len)?;
        Ok(Compound {
            inner,
            store: self.store,
        })
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        let inner = self.inner.serialize_struct(name, len)?;
        Ok(Compound {
            inner,
            store: self.store,
        })
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        let inner = self
            .inner
            .serialize_struct_variant(name, index, variant, len)?;
        Ok(Compound {
            inner,
            store: self.store,
        })
    }
}

macro_rules! elements {
    ($($trait:ident, $method:ident;)*) => {$(
        impl<C: ser::$trait> ser::$trait for Compound<'_, C> {
            type Ok = C::Ok;
            type Error = C::Error;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
                let store = self.store;
                self.inner.$method(&Wrap { value, store })
            }

            fn end(self) -> Result<C::Ok, C::Error> {
                self.inner.end()
            }
        }
    )*};
}

elements! {
    SerializeSeq, serialize_element;
    SerializeTuple, serialize_element;
    SerializeTupleStruct, serialize_field;
    SerializeTupleVariant, serialize_field;
}

macro_rules! fields {
    ($($trait:ident;)*) => {$(
        impl<C: ser::$trait> ser::$trait for Compound<'_, C> {
            type Ok = C::Ok;
            type Error = C::Error;

            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), C::Error> {
                let store = self.store;
                self.inner.serialize_field(key, &Wrap { value, store })
            }

            fn end(self) -> Result<C::Ok, C::Error> {
                self.inner.end()
            }
        }
    )*};
}

fields! {
    SerializeStruct;
    SerializeStructVariant;
}

impl<C: ser::SerializeMap> ser::SerializeMap for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), C::Error> {
        // Keys cannot be bytes in JSON; serde_json says so itself.
        self.inner.serialize_key(key)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        let store = self.store;
        self.inner.serialize_value(&Wrap { value, store })
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}
