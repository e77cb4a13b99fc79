//! A message's body: JSON, and the raw bytes its placeholders stand for.
//!
//! A value's byte strings (`Bytes`, `serde_bytes`, a `PyCall`'s
//! attachments, a `PyReply`'s bytes) are pulled out of its JSON by
//! [`cenote_attach`] under the node wire's own key, [`BYTES`], and travel
//! after the JSON as they are: no base64, no arrays of numbers.
//!
//! | form | bytes |
//! |---|---|
//! | no byte strings | the JSON, nothing else |
//! | with byte strings | `0x00`, the count `n` (u32, big-endian), `n` lengths (u64, big-endian), the JSON, then the `n` byte strings back to back |
//!
//! JSON never begins with a zero byte, so the first byte tells the forms
//! apart, and a client in another language that has no bytes to send
//! sends plain JSON.

use bytes::{Buf, Bytes};
use cenote_attach::{Attachments, Key};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The key of the node wire's placeholders: `{"$cenote_wire_bytes": 0}`.
/// Not a Python frame's key, so a `PyCall`'s own placeholders cross as
/// plain JSON.
pub const BYTES: Key = Key::new("$cenote_wire_bytes");

/// The first byte of a body with byte strings.
const PARTS: u8 = 0;

/// `value` as a body, in parts that are written out one after another
/// (the byte strings are not copied again into one buffer).
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<Bytes>, String> {
    let (json, attachments) = BYTES.to_vec(value).map_err(|e| e.to_string())?;
    let json = Bytes::from(json);
    if attachments.is_empty() {
        return Ok(vec![json]);
    }
    let count = u32::try_from(attachments.len()).map_err(|_| {
        format!(
            "{} byte strings is too many for one message",
            attachments.len()
        )
    })?;
    let mut head = Vec::with_capacity(5 + 8 * attachments.len());
    head.push(PARTS);
    head.extend_from_slice(&count.to_be_bytes());
    for a in &attachments {
        head.extend_from_slice(&(a.len() as u64).to_be_bytes());
    }
    let mut parts = Vec::with_capacity(2 + attachments.len());
    parts.push(Bytes::from(head));
    parts.push(json);
    parts.extend(attachments);
    Ok(parts)
}

/// The size of a body in parts.
pub(crate) fn len(parts: &[Bytes]) -> usize {
    parts.iter().map(Bytes::len).sum()
}

/// Decode a body into `T`, its byte strings into `T`'s byte-string fields.
pub(crate) fn decode<T: DeserializeOwned>(mut body: Bytes) -> Result<T, String> {
    if body.first() != Some(&PARTS) {
        return serde_json::from_slice(&body).map_err(|e| e.to_string());
    }
    body.advance(1);
    let short = || "the body ends inside its header of byte-string lengths".to_string();
    if body.len() < 4 {
        return Err(short());
    }
    let count = body.get_u32() as usize;
    if body.len() / 8 < count {
        return Err(short());
    }
    let lengths: Vec<u64> = (0..count).map(|_| body.get_u64()).collect();
    let attached = lengths
        .iter()
        .try_fold(0u64, |sum, &n| sum.checked_add(n))
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n <= body.len())
        .ok_or_else(|| {
            format!(
                "its byte strings ({lengths:?} bytes) do not fit in the {} bytes left",
                body.len()
            )
        })?;
    let json = body.split_to(body.len() - attached);
    let value: serde_json::Value = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
    // Parts of the message as read, lent to fields that take them as they
    // are (a `PyCall`'s bytes), copied for the rest.
    let attachments = lengths.iter().map(|&n| body.split_to(n as usize)).collect();
    BYTES
        .from_value(value, Attachments::shared(attachments))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Image {
        name: String,
        pixels: Bytes,
        thumbs: Vec<Bytes>,
    }

    fn join(parts: Vec<Bytes>) -> Bytes {
        parts.concat().into()
    }

    #[test]
    fn byte_strings_travel_raw_beside_the_json() {
        let image = Image {
            name: "cat".into(),
            pixels: Bytes::from(vec![7u8; 1000]),
            thumbs: vec![Bytes::from_static(b"t"), Bytes::new()],
        };
        let parts = encode(&image).unwrap();
        let size = len(&parts);
        // The header, a short JSON, and the bytes once: not 4x as numbers.
        assert!(size < 1000 + 200, "{size}");
        assert_eq!(decode::<Image>(join(parts)).unwrap(), image);
    }

    #[test]
    fn plain_values_are_plain_json() {
        let parts = encode(&serde_json::json!({"a": [1, 2]})).unwrap();
        assert_eq!(join(parts), Bytes::from_static(br#"{"a":[1,2]}"#));
        let back: serde_json::Value = decode(Bytes::from_static(br#"{"a":[1,2]}"#)).unwrap();
        assert_eq!(back, serde_json::json!({"a": [1, 2]}));
    }

    #[test]
    fn another_wires_placeholders_pass_as_json() {
        // A Python frame's placeholder inside a value is plain JSON here.
        let inner = serde_json::json!({"$cenote_bytes": 0});
        let parts = encode(&(inner.clone(), Bytes::from_static(b"xy"))).unwrap();
        let (back, bytes): (serde_json::Value, Bytes) = decode(join(parts)).unwrap();
        assert_eq!(back, inner);
        assert_eq!(bytes, Bytes::from_static(b"xy"));
    }

    #[test]
    fn a_value_cannot_take_bytes_and_says_so() {
        let parts = encode(&Bytes::from_static(b"xy")).unwrap();
        let err = decode::<serde_json::Value>(join(parts)).unwrap_err();
        assert!(err.contains("byte"), "{err}");
    }

    #[test]
    fn truncated_or_lying_headers_are_errors_not_panics() {
        let parts = encode(&Bytes::from(vec![1u8; 64])).unwrap();
        let whole = join(parts);
        for cut in 0..whole.len() {
            let _ = decode::<Bytes>(whole.slice(..cut));
        }
        let mut lying = whole.to_vec();
        lying[5..13].copy_from_slice(&u64::MAX.to_be_bytes());
        let err = decode::<Bytes>(Bytes::from(lying)).unwrap_err();
        assert!(err.contains("do not fit"), "{err}");
        let mut many = vec![PARTS];
        many.extend_from_slice(&u32::MAX.to_be_bytes());
        let err = decode::<Bytes>(Bytes::from(many)).unwrap_err();
        assert!(err.contains("header"), "{err}");
    }
}
