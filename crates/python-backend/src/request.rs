//! Requests: [`PyCall`] names a Python function and its arguments;
//! [`TypedCall`] adds the Rust type the result is decoded into.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
/// It is a serde type, so a call can travel (e.g. to a pool on another
/// node) as `{"function": "add", "args": [1, 2]}`; `args` and `kwargs`
/// may be left out.
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
}

impl PyCall {
    /// Call `function` with `args`.
    pub fn new(function: impl Into<String>, args: Value) -> Self {
        PyCall {
            function: function.into(),
            args,
            kwargs: None,
        }
    }

    /// Call `function` with arguments from any serde type (a struct becomes
    /// keyword arguments, a tuple or `Vec` positional ones).
    pub fn with_args<A: Serialize + ?Sized>(
        function: impl Into<String>,
        args: &A,
    ) -> Result<Self, PythonError> {
        let function = function.into();
        let args = serde_json::to_value(args).map_err(|e| {
            PythonError::BadRequest(format!("arguments for {function} cannot be encoded: {e}"))
        })?;
        Ok(PyCall::new(function, args))
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

/// A [`PyCall`] whose result is decoded into `R`
/// ([`PythonError::Decode`] if it does not fit).
#[derive(Debug, Clone)]
pub struct TypedCall<R> {
    /// The call.
    pub call: PyCall,
    _result: PhantomData<fn() -> R>,
}

/// Decode a JSON result into `R`, naming the function on failure.
pub(crate) fn decode<R: DeserializeOwned>(function: &str, value: Value) -> Result<R, PythonError> {
    serde_json::from_value(value).map_err(|e| PythonError::Decode {
        function: function.to_string(),
        source: std::sync::Arc::new(e),
    })
}
