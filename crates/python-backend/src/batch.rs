//! Batches on Python workers: [`PyItem`] is one item of a batch, and a
//! [`PythonWorker`] serves a `Vec` of them as one call of a handler that
//! takes a list and returns a list, so a pool of them can be
//! [`batched`](cenote_core::Pool::batched):
//!
//! ```python
//! def embed(texts: list[str]) -> list[list[float]]:
//!     return model.encode(texts).tolist()
//! ```
//!
//! On the wire a batch is one call frame marked `batch`, whose only
//! argument is the list of items; the items' raw bytes travel as the
//! frame's attachments, their placeholders renumbered into one list. The
//! handler's answer must be a list of the same length, in order. An
//! exception *instance* in an item's place (returned, not raised) fails
//! that item alone: the bridge sends it as `{"$cenote_error": {type,
//! message, traceback}}`, which becomes [`PythonError::Raised`] for that
//! item. An exception raised fails the whole batch, as it fails a call.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use cenote_core::{Call, CallCtx};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::attach;
use crate::error::PythonError;
use crate::reply::Reply;
#[cfg(test)]
use crate::reply::ITEM_ERROR;
use crate::request::PyCall;
use crate::worker::PythonWorker;

/// One item of a batch for a Python handler that takes a list: its
/// function, its value (one element of the list the handler gets) and the
/// raw bytes that value carries.
///
/// ```
/// use cenote_python::PyItem;
/// use serde_json::json;
/// let item = PyItem::new("embed", json!("a sentence to embed"));
/// // Bytes travel raw, per item: the handler gets `bytes` in their place.
/// let image = PyItem::with_value("ocr", &(bytes::Bytes::from_static(b"\x89PNG"), "eng")).unwrap();
/// # let _ = (item, image);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PyItem {
    function: Arc<str>,
    value: Value,
    attachments: Vec<Bytes>,
}

impl PyItem {
    /// An item for batch handler `function`, with JSON `value`.
    pub fn new(function: impl Into<Arc<str>>, value: Value) -> Self {
        PyItem {
            function: function.into(),
            value,
            attachments: Vec::new(),
        }
    }

    /// An item whose value is any serde type; its byte-string fields
    /// (`Bytes`, `ByteBuf`, `serde_bytes`) travel as raw bytes.
    pub fn with_value<T: Serialize + ?Sized>(
        function: impl Into<Arc<str>>,
        value: &T,
    ) -> Result<Self, PythonError> {
        let function = function.into();
        let (value, attachments) = attach::BYTES.to_value(value).map_err(|e| {
            PythonError::BadRequest(format!("an item for {function} cannot be encoded: {e}"))
        })?;
        Ok(PyItem {
            function,
            value,
            attachments,
        })
    }

    /// Carry `bytes` with this item and return the placeholder that stands
    /// for them, to put anywhere in the item's value.
    pub fn attach(&mut self, bytes: impl Into<Bytes>) -> Value {
        self.attachments.push(bytes.into());
        attach::BYTES.placeholder(self.attachments.len() - 1)
    }

    /// Set the item's value (placeholders from [`attach`](Self::attach)
    /// may be in it).
    pub fn value(mut self, value: Value) -> Self {
        self.value = value;
        self
    }

    /// The batch handler it is for.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// Decode this item's result into `R` (bytes the handler returned into
    /// `R`'s byte-string fields) instead of JSON.
    pub fn returning<R: DeserializeOwned>(self) -> TypedItem<R> {
        TypedItem {
            item: self,
            _result: PhantomData,
        }
    }
}

/// A [`PyItem`] whose result is decoded into `R`.
#[derive(Debug, Clone)]
pub struct TypedItem<R> {
    item: PyItem,
    _result: PhantomData<fn() -> R>,
}

impl Call<Vec<PyItem>> for PythonWorker {
    type Response = Vec<Result<Value, PythonError>>;

    async fn call(
        &mut self,
        items: Vec<PyItem>,
        ctx: CallCtx,
    ) -> Result<Self::Response, PythonError> {
        let (function, replies) = send(self, items, ctx).await?;
        Ok(replies
            .into_iter()
            .map(|r| r.and_then(|reply| reply.into_json(&function)))
            .collect())
    }
}

impl<R: DeserializeOwned + Send + 'static> Call<Vec<TypedItem<R>>> for PythonWorker {
    type Response = Vec<Result<R, PythonError>>;

    async fn call(
        &mut self,
        items: Vec<TypedItem<R>>,
        ctx: CallCtx,
    ) -> Result<Self::Response, PythonError> {
        let items = items.into_iter().map(|t| t.item).collect();
        let (function, replies) = send(self, items, ctx).await?;
        Ok(replies
            .into_iter()
            .map(|r| r.and_then(|reply| reply.decode(&function)))
            .collect())
    }
}

/// Send `items` as one batch call and split its answer into one reply per
/// item.
async fn send(
    worker: &mut PythonWorker,
    items: Vec<PyItem>,
    ctx: CallCtx,
) -> Result<(Arc<str>, Vec<Result<Reply, PythonError>>), PythonError> {
    let Some(first) = items.first() else {
        return Ok((Arc::from(""), Vec::new()));
    };
    let function = Arc::clone(&first.function);
    let call = merge(&function, items)?;
    let reply = worker.reply(&call, ctx).await?;
    Ok((Arc::clone(&function), reply.into_items(&function)?))
}

/// One batch call of `function` with `items`: their values as one list,
/// their bytes as one list of attachments, placeholders renumbered.
fn merge(function: &str, items: Vec<PyItem>) -> Result<PyCall, PythonError> {
    if let Some(other) = items.iter().find(|i| &*i.function != function) {
        return Err(PythonError::BadRequest(format!(
            "a batch calls one function, and its items name both {function} and {}; \
             batch each function with its own handle",
            other.function
        )));
    }
    let mut values = Vec::with_capacity(items.len());
    let mut attachments = Vec::new();
    for item in items {
        let mut value = item.value;
        let offset = attachments.len();
        if offset > 0 && !item.attachments.is_empty() {
            attach::BYTES.renumber(&mut value, &mut |i| i + offset);
        }
        attachments.extend(item.attachments);
        values.push(value);
    }
    Ok(PyCall::batch(function.to_string(), values, attachments))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_answer_splits_into_items_each_with_its_own_bytes() {
        let error =
            json!({ITEM_ERROR: {"type": "ValueError", "message": "bad", "traceback": "tb"}});
        let value = json!([
            {"a": attach::BYTES.placeholder(1)},
            error,
            [attach::BYTES.placeholder(0), attach::BYTES.placeholder(2)],
            7
        ]);
        let reply = Reply::new(
            value,
            vec![b"zero".to_vec(), b"one".to_vec(), b"two".to_vec()],
        );
        let items = reply.into_items("f").unwrap();
        assert_eq!(items.len(), 4);
        let mut items = items.into_iter();
        #[derive(serde::Deserialize)]
        struct A {
            a: Bytes,
        }
        let a: A = items.next().unwrap().unwrap().decode("f").unwrap();
        assert_eq!(&a.a[..], b"one");
        match items.next().unwrap() {
            Err(PythonError::Raised {
                type_name, message, ..
            }) => assert_eq!(
                (type_name.as_str(), message.as_str()),
                ("ValueError", "bad")
            ),
            other => panic!("{other:?}"),
        }
        let pair: (Bytes, Bytes) = items.next().unwrap().unwrap().decode("f").unwrap();
        assert_eq!((&pair.0[..], &pair.1[..]), (&b"zero"[..], &b"two"[..]));
        assert_eq!(
            items.next().unwrap().unwrap().into_json("f").unwrap(),
            json!(7)
        );
    }

    #[test]
    fn an_answer_that_is_not_a_list_fails_the_batch() {
        let e = Reply::new(json!({"n": 2}), vec![])
            .into_items("f")
            .unwrap_err();
        assert!(e.to_string().contains("returned a dict"), "{e}");
    }

    #[test]
    fn items_bytes_are_renumbered_into_one_list() {
        let mut a = PyItem::new("f", json!(null));
        let p = a.attach(Bytes::from_static(b"a0"));
        let a = a.value(json!([p]));
        let pair = (Bytes::from_static(b"b0"), Bytes::from_static(b"b1"));
        let b = PyItem::with_value("f", &pair).unwrap();
        let call = merge("f", vec![a, b]).unwrap();
        let (zero, one, two) = (
            attach::BYTES.placeholder(0),
            attach::BYTES.placeholder(1),
            attach::BYTES.placeholder(2),
        );
        assert_eq!(call.args, json!([[[zero], [one, two]]]));
        let bytes: Vec<&[u8]> = call.attachments().iter().map(|b| &b[..]).collect();
        assert_eq!(bytes, [&b"a0"[..], b"b0", b"b1"]);
        assert!(call.is_batch());
    }

    #[test]
    fn a_batch_of_two_functions_is_refused() {
        let items = vec![PyItem::new("f", json!(1)), PyItem::new("g", json!(2))];
        let e = merge("f", items).unwrap_err();
        assert!(e.to_string().contains("both f and g"), "{e}");
    }
}
