//! The placeholders of a worker's frames: a frame carries its JSON and its
//! raw attachments (see `frame.rs`), and where an attachment belongs the
//! JSON holds `{"$cenote_bytes": <index>}` (see [`cenote_attach`]). The
//! bridge uses the same name (`bridge.rs` hands it over).

pub(crate) use cenote_attach::Attachments;
use cenote_attach::Key;

/// The key of a frame's placeholders.
pub(crate) const BYTES: Key = Key::new("$cenote_bytes");
