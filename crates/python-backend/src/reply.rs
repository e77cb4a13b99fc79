//! [`Reply`]: what a result or a stream chunk carries (JSON, plus the raw
//! bytes the handler returned), and how it becomes what the caller asked
//! for.
//!
//! A JSON [`Value`] cannot hold bytes, so an untyped call whose result has
//! some fails with a [`PythonError::Decode`] that says how to ask for them;
//! a typed call decodes them into its type's bytes fields.

use std::sync::Arc;

use bytes::Bytes;

use serde::de::{DeserializeOwned, Error as _};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::attach::{self, Attachments};
use crate::error::PythonError;

/// The key of an item error in a batch's answer (see `batch.rs`): an
/// exception the handler put in an item's place. The bridge knows it as
/// `Wire.ITEM_ERROR`.
pub(crate) const ITEM_ERROR: &str = "$cenote_error";

/// A result's JSON (placeholders where bytes go) and its attachments.
#[derive(Debug)]
pub(crate) struct Reply {
    value: Value,
    attachments: Vec<Vec<u8>>,
}

impl Reply {
    pub(crate) fn new(value: Value, attachments: Vec<Vec<u8>>) -> Self {
        Reply { value, attachments }
    }

    /// The result as JSON; an error if it holds bytes.
    pub(crate) fn into_json(self, function: &str) -> Result<Value, PythonError> {
        if self.attachments.is_empty() {
            return Ok(self.value);
        }
        Err(decode_error(
            function,
            serde_json::Error::custom(format_args!(
                "it holds raw bytes ({} byte strings), which a JSON value cannot; \
                 ask for a type with bytes fields instead, e.g. \
                 `.returning::<bytes::Bytes>()` or a struct with a `Bytes` field \
                 (on a node, serve the pool as `RawCall` and call it with such a type)",
                self.attachments.len()
            )),
        ))
    }

    /// A batch's answer, one reply per item: a list, whose item errors
    /// (see `batch.rs`) fail their item alone, and whose attachments go to
    /// the items that hold their placeholders. Anything but a list fails
    /// the batch.
    pub(crate) fn into_items(
        self,
        function: &str,
    ) -> Result<Vec<Result<Reply, PythonError>>, PythonError> {
        let Value::Array(values) = self.value else {
            return Err(decode_error(
                function,
                serde_json::Error::custom(format_args!(
                    "a batch handler must return a list, one result per item; it returned {}",
                    kind(&self.value)
                )),
            ));
        };
        let mut all = self.attachments;
        let items = values.into_iter().map(|mut value| {
            if let Some(error) = item_error(&value, function) {
                return Err(error);
            }
            let mut own = Vec::new();
            if !all.is_empty() {
                attach::BYTES.renumber(&mut value, &mut |i| match all.get_mut(i) {
                    Some(bytes) => {
                        own.push(std::mem::take(bytes));
                        own.len() - 1
                    }
                    // Names no attachment: left to fail as a bad
                    // placeholder when decoded.
                    None => usize::MAX,
                });
            }
            Ok(Reply::new(value, own))
        });
        Ok(items.collect())
    }

    /// The result decoded into `R`, bytes into its bytes fields.
    pub(crate) fn decode<R: DeserializeOwned>(self, function: &str) -> Result<R, PythonError> {
        let decoded = if self.attachments.is_empty() {
            serde_json::from_value(self.value)
        } else {
            attach::BYTES.from_value(self.value, Attachments::new(self.attachments))
        };
        decoded.map_err(|e| decode_error(function, e))
    }
}

/// A handler's result whole: its JSON and the bytes it returned, the
/// answer to a [`RawCall`](crate::RawCall).
///
/// It serializes with its bytes in place, as byte strings: through a
/// node's wire they cross raw, beside the JSON; through plain serde_json
/// they become arrays of numbers.
#[derive(Debug)]
pub struct PyReply {
    function: String,
    value: Value,
    /// As `Bytes`, to be lent when serialized (no copy on a node's wire).
    attachments: Vec<Bytes>,
}

impl PyReply {
    pub(crate) fn new(function: String, reply: Reply) -> Self {
        PyReply {
            function,
            value: reply.value,
            attachments: reply.attachments.into_iter().map(Bytes::from).collect(),
        }
    }

    /// The function that answered.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// The result as JSON; a [`PythonError::Decode`] if it holds bytes.
    pub fn into_json(self) -> Result<Value, PythonError> {
        let (function, reply) = self.into_parts();
        reply.into_json(&function)
    }

    /// The result decoded into `R`, bytes into its byte-string fields.
    pub fn decode<R: DeserializeOwned>(self) -> Result<R, PythonError> {
        let (function, reply) = self.into_parts();
        reply.decode(&function)
    }

    fn into_parts(self) -> (String, Reply) {
        // Each buffer is this reply's own: no copy.
        let attachments = self.attachments.into_iter().map(Vec::from).collect();
        (self.function, Reply::new(self.value, attachments))
    }
}

impl Serialize for PyReply {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        InPlace {
            value: &self.value,
            attachments: &self.attachments,
        }
        .serialize(s)
    }
}

/// A value whose placeholders serialize as the bytes they stand for.
struct InPlace<'a> {
    value: &'a Value,
    attachments: &'a [Bytes],
}

impl Serialize for InPlace<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let nested = |value| InPlace {
            value,
            attachments: self.attachments,
        };
        match self.value {
            Value::Object(map) => {
                if let Some(i) = attach::BYTES.index_of(map) {
                    let bytes = self.attachments.get(i).ok_or_else(|| {
                        <S::Error as serde::ser::Error>::custom(format_args!(
                            "a placeholder refers to attachment {i}, but the result carries {}",
                            self.attachments.len()
                        ))
                    })?;
                    return cenote_attach::lend::serialize(bytes, s);
                }
                let mut out = s.serialize_map(Some(map.len()))?;
                for (k, v) in map {
                    out.serialize_entry(k, &nested(v))?;
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    out.serialize_element(&nested(v))?;
                }
                out.end()
            }
            other => other.serialize(s),
        }
    }
}

/// The error an item's place holds, if it holds one.
fn item_error(value: &Value, function: &str) -> Option<PythonError> {
    let Value::Object(map) = value else {
        return None;
    };
    if map.len() != 1 {
        return None;
    }
    let error = map.get(ITEM_ERROR)?;
    let field = |name: &str| {
        error
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Some(PythonError::Raised {
        function: function.to_string(),
        type_name: field("type"),
        message: field("message"),
        traceback: field("traceback"),
    })
}

/// What a JSON value is, for an error message.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "None",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a dict",
    }
}

fn decode_error(function: &str, source: serde_json::Error) -> PythonError {
    PythonError::Decode {
        function: function.to_string(),
        source: Arc::new(source),
    }
}
