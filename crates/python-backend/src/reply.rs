//! [`Reply`]: what a result or a stream chunk carries (JSON, plus the raw
//! bytes the handler returned), and how it becomes what the caller asked
//! for.
//!
//! A JSON [`Value`] cannot hold bytes, so an untyped call whose result has
//! some fails with a [`PythonError::Decode`] that says how to ask for them;
//! a typed call decodes them into its type's bytes fields.

use std::sync::Arc;

use serde::de::{DeserializeOwned, Error as _};
use serde_json::Value;

use crate::attach::{self, Attachments};
use crate::error::PythonError;

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
                 `.returning::<bytes::Bytes>()` or a struct with a `Bytes` field",
                self.attachments.len()
            )),
        ))
    }

    /// The result decoded into `R`, bytes into its bytes fields.
    pub(crate) fn decode<R: DeserializeOwned>(self, function: &str) -> Result<R, PythonError> {
        let decoded = if self.attachments.is_empty() {
            serde_json::from_value(self.value)
        } else {
            attach::from_value(self.value, Attachments::new(self.attachments))
        };
        decoded.map_err(|e| decode_error(function, e))
    }
}

fn decode_error(function: &str, source: serde_json::Error) -> PythonError {
    PythonError::Decode {
        function: function.to_string(),
        source: Arc::new(source),
    }
}
