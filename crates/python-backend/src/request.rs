//! Requests: [`PyCall`] names a Python function and its arguments (JSON,
//! plus raw bytes carried beside it); [`TypedCall`] adds the Rust type the
//! result is decoded into.

use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::attach;
use crate::error::PythonError;

/// One call of a handler function.
///
/// `args` maps onto Python like this: an array is passed positionally, an
/// object as keyword arguments, `null` as no arguments, and any other value
/// as the single positional argument. To pass one dict positionally, wrap
/// it in an array: `json!([{"a": 1}])`.
///
/// ```
/// use serde_json::json;
/// use cenote_python::PyCall;
/// let call = PyCall::new("embed", json!({"text": "hello"}));
/// let positional = PyCall::new("add", json!([1, 2]));
/// let typed = PyCall::new("add", json!([1, 2])).returning::<i64>();
/// # let _ = (call, positional, typed);
/// let wire: PyCall = serde_json::from_value(json!({"function": "add", "args": [1, 2]})).unwrap();
/// assert_eq!(wire, PyCall::new("add", json!([1, 2])));
/// ```
///
/// # Raw bytes
///
/// Bytes travel beside the JSON, as they are: no base64, no pickle, no copy
/// on the way out. The handler gets a Python `bytes` where they were put, or
/// a read-only `memoryview` on shared memory for bytes of the config's
/// `shm_threshold` or more (see the README's "Raw bytes").
/// [`with_args`](Self::with_args) takes them from any byte-string field
/// (`bytes::Bytes`, `serde_bytes::ByteBuf`, `#[serde(with = "serde_bytes")]`
/// on a `Vec<u8>`); [`attach`](Self::attach) and
/// [`kwarg_bytes`](Self::kwarg_bytes) put them into JSON built by hand.
///
/// ```
/// use bytes::Bytes;
/// use cenote_python::PyCall;
/// use serde_json::json;
/// // thumbnail(image, 128): the image goes as raw bytes.
/// let call = PyCall::with_args("thumbnail", &(Bytes::from(vec![0xff; 1024]), 128)).unwrap();
/// // The same by hand: a placeholder marks where the bytes go.
/// let mut call = PyCall::new("thumbnail", json!(null));
/// let image = call.attach(vec![0xff; 1024]);
/// call.args = json!([image, 128]);
/// // As a keyword argument: thumbnail(size=128, image=b"...").
/// let call = PyCall::new("thumbnail", json!({"size": 128})).kwarg_bytes("image", vec![0xff; 1024]);
/// # let _ = call;
/// ```
///
/// Where bytes go, the JSON holds a placeholder, `{"$cenote_bytes": 0}`;
/// in a call that carries bytes, an object of that one key is read as one.
///
/// It is a serde type, so a call can travel (e.g. to a pool on another
/// node) as `{"function": "add", "args": [1, 2]}`; `args` and `kwargs`
/// may be left out. Its bytes then travel as `"attachments"`, in whatever
/// form that serde format gives byte strings (JSON: arrays of numbers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PyCall {
    /// A public function of the handler module.
    pub function: String,
    /// Its arguments (see the type's doc for the mapping).
    #[serde(default)]
    pub args: Value,
    /// Extra keyword arguments, merged over an object `args`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kwargs: Option<Map<String, Value>>,
    /// The raw bytes the placeholders in `args` and `kwargs` stand for
    /// (lent, so a node's wire carries them with no copy).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "cenote_attach::lend::vec"
    )]
    attachments: Vec<Bytes>,
    /// Sent as a batch (see `batch.rs`): only the host makes one.
    #[serde(skip)]
    batch: bool,
}

impl PyCall {
    /// Call `function` with `args`.
    pub fn new(function: impl Into<String>, args: Value) -> Self {
        PyCall {
            function: function.into(),
            args,
            kwargs: None,
            attachments: Vec::new(),
            batch: false,
        }
    }

    /// A batch call of `function` with one positional argument, the list
    /// of `items`, carrying `attachments` (see `batch.rs`).
    pub(crate) fn batch(function: String, items: Vec<Value>, attachments: Vec<Bytes>) -> Self {
        PyCall {
            attachments,
            batch: true,
            ..PyCall::new(function, Value::Array(vec![Value::Array(items)]))
        }
    }

    pub(crate) fn is_batch(&self) -> bool {
        self.batch
    }

    /// Call `function` with arguments from any serde type (a struct becomes
    /// keyword arguments, a tuple or `Vec` positional ones). Byte-string
    /// fields (`Bytes`, `ByteBuf`, `serde_bytes`) travel as raw bytes.
    pub fn with_args<A: Serialize + ?Sized>(
        function: impl Into<String>,
        args: &A,
    ) -> Result<Self, PythonError> {
        let function = function.into();
        let (args, attachments) = attach::BYTES.to_value(args).map_err(|e| {
            PythonError::BadRequest(format!("arguments for {function} cannot be encoded: {e}"))
        })?;
        Ok(PyCall {
            attachments,
            ..PyCall::new(function, args)
        })
    }

    /// Carry `bytes` with this call and return the placeholder that stands
    /// for them: put it anywhere in `args` or `kwargs`, and the handler gets
    /// the bytes there. A `Vec<u8>` or `Bytes` is moved in, not copied.
    pub fn attach(&mut self, bytes: impl Into<Bytes>) -> Value {
        self.attachments.push(bytes.into());
        attach::BYTES.placeholder(self.attachments.len() - 1)
    }

    /// Add one keyword argument holding raw bytes.
    pub fn kwarg_bytes(mut self, key: impl Into<String>, bytes: impl Into<Bytes>) -> Self {
        let placeholder = self.attach(bytes);
        self.kwarg(key, placeholder)
    }

    /// The raw bytes this call carries, in placeholder order.
    pub fn attachments(&self) -> &[Bytes] {
        &self.attachments
    }

    /// Add one keyword argument.
    pub fn kwarg(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.kwargs
            .get_or_insert_with(Map::new)
            .insert(key.into(), value.into());
        self
    }

    /// Decode the result into `R` instead of returning JSON.
    pub fn returning<R: DeserializeOwned>(self) -> TypedCall<R> {
        TypedCall {
            call: self,
            _result: PhantomData,
        }
    }
}

impl<S: Into<String>> From<(S, Value)> for PyCall {
    fn from((function, args): (S, Value)) -> Self {
        PyCall::new(function, args)
    }
}

/// A [`PyCall`] whose result comes back whole, as a [`PyReply`](crate::PyReply): its JSON
/// and the bytes the handler returned. This is the call type to serve a
/// Python pool as on a node (`Node::builder(..).pool::<RawCall>(..)`):
/// the reply then crosses with its bytes raw, and the caller decodes it
/// into any type (`RemotePool<PyCall, Bytes>`, a struct with `Bytes`
/// fields, or a `serde_json::Value` when there are no bytes). On the wire
/// it is a [`PyCall`], so callers send `PyCall`s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawCall(pub PyCall);

impl From<PyCall> for RawCall {
    fn from(call: PyCall) -> Self {
        RawCall(call)
    }
}

/// A [`PyCall`] whose result is decoded into `R`
/// ([`PythonError::Decode`] if it does not fit). Bytes the handler returns
/// (`bytes`, `bytearray`, `memoryview`) decode into byte-string fields:
/// `bytes::Bytes` and `serde_bytes::ByteBuf` take them with no copy; a plain
/// `Vec<u8>` also works, element by element.
#[derive(Debug, Clone)]
pub struct TypedCall<R> {
    /// The call.
    pub call: PyCall,
    _result: PhantomData<fn() -> R>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_call_with_bytes_survives_serde_whole() {
        let mut call = PyCall::new("f", json!(null));
        let image = call.attach(vec![0u8, 1, 255]);
        call.args = json!([image, 2]);
        let call = call.kwarg_bytes("extra", Bytes::from_static(b"xy"));
        assert_eq!(call.attachments().len(), 2);
        let wire = serde_json::to_string(&call).unwrap();
        let back: PyCall = serde_json::from_str(&wire).unwrap();
        assert_eq!(back, call, "{wire}");
        // Without bytes the wire form is what it always was.
        let plain = serde_json::to_value(PyCall::new("add", json!([1, 2]))).unwrap();
        assert_eq!(plain, json!({"function": "add", "args": [1, 2]}));
    }
}
