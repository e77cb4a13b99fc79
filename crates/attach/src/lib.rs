//! Raw bytes beside JSON: how they are marked, pulled out and put back.
//!
//! JSON cannot hold bytes, and writing them as arrays of numbers or base64
//! costs 1.3 to 4 times their size plus the parsing. So wherever a value
//! holds a byte string, cenote sends JSON with a *placeholder* in its place
//! and the bytes themselves beside it, as they are. A placeholder is an
//! object with one key whose value is the attachment's index:
//! `{"$cenote_bytes": 0}`.
//!
//! Two wires use this, each with its own [`Key`]: a Python worker's frames
//! (`cenote-python`) and a node's gRPC messages (`cenote-node`). The keys
//! differ so that one wire's placeholders pass through the other as plain
//! JSON: a `PyCall` crossing to a node carries its own placeholders inside
//! its arguments, and they must reach the Python worker untouched.
//!
//! - [`Key::to_value`]: serialize any serde type, every byte string
//!   (`Bytes`, `serde_bytes::ByteBuf`, `#[serde(with = "serde_bytes")]`)
//!   becoming an attachment and its placeholder (`ser`);
//! - [`Key::from_value`]: decode JSON and its attachments into any serde
//!   type, each placeholder handed to the target as bytes (`de`).
//!
//! Placeholders mean something only in a message that has attachments;
//! plain JSON is never rewritten.

mod de;
pub mod lend;
mod ser;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Error, Map, Value};

pub use de::Attachments;

/// The name of the one key of a placeholder object, which sets one wire's
/// placeholders apart from another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key(&'static str);

impl Key {
    /// Placeholders named `name`.
    pub const fn new(name: &'static str) -> Key {
        Key(name)
    }

    /// The key's name.
    pub const fn name(self) -> &'static str {
        self.0
    }

    /// The placeholder for attachment `index`.
    pub fn placeholder(self, index: usize) -> Value {
        let mut map = Map::with_capacity(1);
        map.insert(self.0.to_string(), Value::from(index));
        Value::Object(map)
    }

    /// The attachment index `map` stands for, if it is a placeholder.
    pub fn index_of(self, map: &Map<String, Value>) -> Option<usize> {
        if map.len() != 1 {
            return None;
        }
        map.get(self.0)?
            .as_u64()
            .and_then(|i| usize::try_from(i).ok())
    }

    /// Rewrite every placeholder in `value` to `to(index)`: how several
    /// values' attachments merge into one list, and are handed back.
    pub fn renumber(self, value: &mut Value, to: &mut impl FnMut(usize) -> usize) {
        match value {
            Value::Object(map) => {
                if let Some(i) = self.index_of(map) {
                    *value = self.placeholder(to(i));
                } else {
                    map.values_mut().for_each(|v| self.renumber(v, to));
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.renumber(v, to)),
            _ => {}
        }
    }

    /// Serialize `value` to JSON, byte strings becoming attachments (each
    /// copied once: serde lends them only for the call).
    pub fn to_value<T: Serialize + ?Sized>(
        self,
        value: &T,
    ) -> Result<(Value, Vec<bytes::Bytes>), Error> {
        ser::to_value(self, value)
    }

    /// [`to_value`](Self::to_value), straight to JSON text.
    pub fn to_vec<T: Serialize + ?Sized>(
        self,
        value: &T,
    ) -> Result<(Vec<u8>, Vec<bytes::Bytes>), Error> {
        ser::to_vec(self, value)
    }

    /// Decode `value` into `T`, placeholders becoming bytes. A target that
    /// cannot take bytes where a placeholder stands (a `serde_json::Value`)
    /// is an error that says so.
    pub fn from_value<T: DeserializeOwned>(
        self,
        value: Value,
        attachments: Attachments,
    ) -> Result<T, Error> {
        de::from_value(self, value, attachments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    const KEY: Key = Key::new("$cenote_bytes");

    fn placeholder(i: usize) -> Value {
        KEY.placeholder(i)
    }

    fn to_value<T: Serialize + ?Sized>(v: &T) -> Result<(Value, Vec<Bytes>), Error> {
        KEY.to_value(v)
    }

    fn from_value<T: DeserializeOwned>(v: Value, a: Attachments) -> Result<T, Error> {
        KEY.from_value(v, a)
    }

    use bytes::Bytes;

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
        // Straight to text, the same JSON and the same attachments.
        let (text, direct) = KEY.to_vec(&image).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&text).unwrap(), value);
        assert_eq!(direct, attachments);
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

    #[test]
    fn lent_bytes_cross_without_a_copy_and_others_are_copied() {
        #[derive(Serialize, Deserialize)]
        struct Call {
            #[serde(with = "crate::lend::vec")]
            parts: Vec<Bytes>,
            #[serde(with = "crate::lend")]
            one: Bytes,
        }
        let big = Bytes::from(vec![5u8; 1000]);
        let call = Call {
            parts: vec![big.clone()],
            one: big.slice(10..20),
        };
        let (value, attachments) = KEY.to_value(&call).unwrap();
        assert_eq!(attachments[0].as_ptr(), big.as_ptr());
        assert_eq!(attachments[1].as_ptr(), big[10..].as_ptr());
        let back: Call = KEY
            .from_value(value, Attachments::shared(attachments))
            .unwrap();
        assert_eq!(back.parts[0].as_ptr(), big.as_ptr());
        assert_eq!(back.one, big.slice(10..20));
        // A plain `Bytes` does not cooperate: copied both ways, still equal.
        let (value, attachments) = KEY.to_value(&big).unwrap();
        assert_ne!(attachments[0].as_ptr(), big.as_ptr());
        let back: Bytes = KEY
            .from_value(value, Attachments::shared(attachments))
            .unwrap();
        assert_eq!(back, big);
        // Through plain serde_json a lent field is an ordinary byte string.
        let small = Call {
            parts: vec![Bytes::from_static(b"ab")],
            one: Bytes::new(),
        };
        let json = serde_json::to_string(&small).unwrap();
        assert_eq!(json, r#"{"parts":[[97,98]],"one":[]}"#);
        let back: Call = serde_json::from_str(&json).unwrap();
        assert_eq!(back.parts, small.parts);
    }
}
