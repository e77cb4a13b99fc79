//! Where entries live in etcd, and how keys and values turn back into
//! entries and events.
//!
//! ```text
//! {prefix}/pools/{name}                 -> PoolEntry (JSON)
//! {prefix}/workers/{pool}/{id:020}      -> WorkerEntry (JSON)
//! ```
//! Worker ids are zero-padded so etcd's key order is id order.

use cenote_core::{PoolEntry, RegistryError, RegistryEvent, WorkerEntry, WorkerId};

#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }

    pub fn pools(&self) -> String {
        format!("{}/pools/", self.prefix)
    }

    pub fn pool(&self, name: &str) -> String {
        format!("{}/pools/{name}", self.prefix)
    }

    pub fn workers(&self, pool: &str) -> String {
        format!("{}/workers/{pool}/", self.prefix)
    }

    pub fn worker(&self, pool: &str, id: WorkerId) -> String {
        format!("{}/workers/{pool}/{:020}", self.prefix, id.0)
    }

    /// The event a put or delete of `key` means; `None` for keys that are
    /// not cenote's or values that do not decode (logged, never a panic).
    pub fn event(&self, key: &str, value: Option<&[u8]>) -> Option<RegistryEvent> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        if let Some(name) = rest.strip_prefix("pools/") {
            return match value {
                None => Some(RegistryEvent::PoolDown {
                    name: name.to_string(),
                }),
                Some(v) => decode::<PoolEntry>(key, v).ok().map(RegistryEvent::PoolUp),
            };
        }
        let (pool, id) = rest.strip_prefix("workers/")?.rsplit_once('/')?;
        match value {
            None => Some(RegistryEvent::WorkerDown {
                pool: pool.to_string(),
                id: WorkerId(id.parse().ok()?),
            }),
            Some(v) => decode::<WorkerEntry>(key, v)
                .ok()
                .map(RegistryEvent::WorkerUp),
        }
    }
}

/// Decode an entry, naming the key if it is not valid.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    key: &str,
    value: &[u8],
) -> Result<T, RegistryError> {
    serde_json::from_slice(value).map_err(|e| {
        tracing::warn!(key, error = %e, "registry entry does not decode; skipped");
        RegistryError::Corrupt {
            key: key.to_string(),
            reason: e.to_string(),
        }
    })
}

pub(crate) fn encode<T: serde::Serialize>(entry: &T) -> Result<Vec<u8>, RegistryError> {
    serde_json::to_vec(entry)
        .map_err(|e| RegistryError::Unavailable(format!("entry does not encode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_into_events() {
        let k = Keys::new("/cenote/");
        assert_eq!(k.pool("a"), "/cenote/pools/a");
        assert_eq!(
            k.event(&k.worker("p", WorkerId(42)), None),
            Some(RegistryEvent::WorkerDown {
                pool: "p".into(),
                id: WorkerId(42)
            })
        );
        assert_eq!(
            k.event(&k.pool("a"), None),
            Some(RegistryEvent::PoolDown { name: "a".into() })
        );
        // Foreign keys and bad values are ignored, not fatal.
        assert_eq!(k.event("/other/pools/a", None), None);
        assert_eq!(k.event(&k.pool("a"), Some(b"not json")), None);
        assert_eq!(k.event("/cenote/workers/p/not-a-number", None), None);
    }
}
