//! Raw bytes inside a call's JSON: how they are marked, put in and taken out.
//!
//! A frame carries its JSON plus raw attachments (see `frame.rs`). Where an
//! attachment belongs, the JSON holds a placeholder: an object with the one
//! key [`KEY`] whose value is the attachment's index,
//! `{"$cenote_bytes": 0}`. Placeholders mean something only in a frame that
//! has attachments, so plain JSON is never rewritten.
//!
//! - `ser`: a serde serializer that turns every byte string (`Bytes`,
//!   `serde_bytes::ByteBuf`, `#[serde(with = "serde_bytes")]`) into an
//!   attachment and its placeholder, for [`PyCall::with_args`](crate::PyCall::with_args);
//! - `de`: a serde deserializer over a JSON value and the attachments that
//!   hands each placeholder to the target type as bytes, for typed results.

mod de;
mod ser;

use serde_json::{Map, Value};

pub(crate) use de::{from_value, Attachments};
pub(crate) use ser::to_value;

/// The one key of a placeholder object. Reserved in frames with
/// attachments: the bridge uses the same name (`bridge.rs` hands it over).
pub const KEY: &str = "$cenote_bytes";

/// The placeholder for attachment `index`.
pub(crate) fn placeholder(index: usize) -> Value {
    let mut map = Map::with_capacity(1);
    map.insert(KEY.to_string(), Value::from(index));
    Value::Object(map)
}

/// The attachment index `map` stands for, if it is a placeholder.
/// Rewrite every placeholder in `value` to `to(index)`: how a batch
/// merges its items' attachments into one list on the way out, and hands
/// each result its own on the way back.
pub(crate) fn renumber(value: &mut Value, to: &mut impl FnMut(usize) -> usize) {
    match value {
        Value::Object(map) => {
            if let Some(i) = index_of(map) {
                *value = placeholder(to(i));
            } else {
                map.values_mut().for_each(|v| renumber(v, to));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| renumber(v, to)),
        _ => {}
    }
}

fn index_of(map: &Map<String, Value>) -> Option<usize> {
    if map.len() != 1 {
        return None;
    }
    map.get(KEY)?.as_u64().and_then(|i| usize::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Image {
        name: String,
        pixels: Bytes,
        thumbs: Vec<Bytes>,
        #[serde(with = "bytes_as_vec")]
        raw: Vec<u8>,
        maybe: Option<Bytes>,
    }

    /// `#[serde(with = "serde_bytes")]` without the crate: a `Vec<u8>` as
    /// a byte string.
    mod bytes_as_vec {
        pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
        pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            let b: bytes::Bytes = serde::Deserialize::deserialize(d)?;
            Ok(b.to_vec())
        }
    }

    #[test]
    fn bytes_round_trip_through_placeholders_anywhere() {
        let image = Image {
            name: "cat".into(),
            pixels: Bytes::from_static(b"\x00\x01\xff"),
            thumbs: vec![Bytes::from_static(b"t1"), Bytes::new()],
            raw: vec![9, 8, 7],
            maybe: Some(Bytes::from_static(b"m")),
        };
        let (value, attachments) = to_value(&image).unwrap();
        assert_eq!(attachments.len(), 5);
        assert_eq!(value["pixels"], placeholder(0));
        assert_eq!(value["thumbs"][1], placeholder(2));
        assert_eq!(value["name"], "cat");
        let back: Image = from_value(
            value,
            Attachments::new(attachments.iter().map(|b| b.to_vec()).collect()),
        )
        .unwrap();
        assert_eq!(back, image);
    }

    #[test]
    fn json_without_bytes_is_left_alone() {
        let v = serde_json::json!({"a": [1, 2.5, "x", null, true], "b": {"c": -3}});
        let (value, attachments) = to_value(&v).unwrap();
        assert!(attachments.is_empty());
        assert_eq!(value, v);
        let back: serde_json::Value = from_value(value, Attachments::default()).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn plain_vec_u8_and_value_targets() {
        let value = serde_json::json!({"data": placeholder(0)});
        #[derive(Deserialize)]
        struct Plain {
            data: Vec<u8>,
        }
        let p: Plain = from_value(value.clone(), Attachments::new(vec![vec![1, 2, 3]])).unwrap();
        assert_eq!(p.data, vec![1, 2, 3]);
        // A JSON value cannot hold bytes: a clear error, not a panic.
        let err =
            from_value::<serde_json::Value>(value, Attachments::new(vec![vec![1]])).unwrap_err();
        assert!(err.to_string().contains("byte"), "{err}");
    }

    #[test]
    fn bad_placeholders_are_errors() {
        let missing = serde_json::json!([placeholder(3)]);
        let err = from_value::<Vec<Bytes>>(missing, Attachments::new(vec![vec![1]])).unwrap_err();
        assert!(err.to_string().contains("attachment 3"), "{err}");
        let twice = serde_json::json!([placeholder(0), placeholder(0)]);
        let err = from_value::<Vec<Bytes>>(twice, Attachments::new(vec![vec![1]])).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }

    #[test]
    fn enums_options_and_newtypes_decode() {
        #[derive(Debug, Deserialize, PartialEq)]
        enum Shape {
            Dot,
            Blob(Bytes),
            Sized { w: u32 },
        }
        #[derive(Debug, Deserialize, PartialEq)]
        struct Wrap(Bytes);
        let v = serde_json::json!(["Dot", {"Blob": placeholder(0)}, {"Sized": {"w": 3}}]);
        let shapes: Vec<Shape> = from_value(v, Attachments::new(vec![b"z".to_vec()])).unwrap();
        assert_eq!(
            shapes,
            vec![
                Shape::Dot,
                Shape::Blob(Bytes::from_static(b"z")),
                Shape::Sized { w: 3 }
            ]
        );
        let w: Wrap = from_value(placeholder(0), Attachments::new(vec![b"q".to_vec()])).unwrap();
        assert_eq!(w, Wrap(Bytes::from_static(b"q")));
        let none: Option<Bytes> = from_value(Value::Null, Attachments::default()).unwrap();
        assert_eq!(none, None);
    }
}
