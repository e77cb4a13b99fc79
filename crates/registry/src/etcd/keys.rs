//! Where entries live in etcd, and how keys and values turn back into
//! entries and events.
//!
//! ```text
//! {prefix}/pools/{name}                 -> PoolEntry (JSON)
//! {prefix}/workers/{pool}/{id:020}      -> WorkerEntry (JSON)
//! {prefix}/endpoints/{service}/{node}   -> EndpointEntry (JSON)
//! ```
//! Worker ids are zero-padded so etcd's key order is id order. Pool names
//! are escaped (`%` as `%25`, `/` as `%2F`) so a name such as `team/a` can
//! never reach into another pool's keys: `workers/team/` must not list the
//! workers of `team/a`. Services and node names are escaped the same way.

use cenote_core::{EndpointEntry, PoolEntry, RegistryError, RegistryEvent, WorkerEntry, WorkerId};

/// The key layout under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    /// The layout under `prefix` (a trailing `/` is ignored).
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// Everything cenote writes under this prefix.
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// Every pool entry.
    pub fn pools(&self) -> String {
        format!("{}/pools/", self.prefix)
    }

    /// One pool's entry.
    pub fn pool(&self, name: &str) -> String {
        format!("{}/pools/{}", self.prefix, escape(name))
    }

    /// Every worker entry of one pool.
    pub fn workers(&self, pool: &str) -> String {
        format!("{}/workers/{}/", self.prefix, escape(pool))
    }

    /// One worker's entry.
    pub fn worker(&self, pool: &str, id: WorkerId) -> String {
        format!("{}/workers/{}/{:020}", self.prefix, escape(pool), id.0)
    }

    /// Every endpoint, of every service.
    pub fn endpoints(&self) -> String {
        format!("{}/endpoints/", self.prefix)
    }

    /// One node's endpoint of one service.
    pub fn endpoint(&self, service: &str, node: &str) -> String {
        format!(
            "{}/endpoints/{}/{}",
            self.prefix,
            escape(service),
            escape(node)
        )
    }

    /// The event a put or delete of `key` means; `None` for keys that are
    /// not cenote's or values that do not decode (logged, never a panic).
    pub fn event(&self, key: &str, value: Option<&[u8]>) -> Option<RegistryEvent> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        if let Some(name) = rest.strip_prefix("pools/") {
            return match value {
                None => Some(RegistryEvent::PoolDown {
                    name: unescape(name)?,
                }),
                Some(v) => decode::<PoolEntry>(key, v).ok().map(RegistryEvent::PoolUp),
            };
        }
        if let Some(pair) = rest.strip_prefix("endpoints/") {
            let (service, node) = pair.split_once('/')?;
            return match value {
                None => Some(RegistryEvent::EndpointDown {
                    service: unescape(service)?,
                    node: unescape(node)?,
                }),
                Some(v) => decode::<EndpointEntry>(key, v)
                    .ok()
                    .map(RegistryEvent::EndpointUp),
            };
        }
        let (pool, id) = rest.strip_prefix("workers/")?.split_once('/')?;
        match value {
            None => Some(RegistryEvent::WorkerDown {
                pool: unescape(pool)?,
                id: WorkerId(id.parse().ok()?),
            }),
            Some(v) => decode::<WorkerEntry>(key, v)
                .ok()
                .map(RegistryEvent::WorkerUp),
        }
    }
}

/// A name as one key segment: no `/` inside, and reversible.
fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

/// The name a key segment stands for; `None` if it was not made by [`escape`].
fn unescape(segment: &str) -> Option<String> {
    let mut out = String::with_capacity(segment.len());
    let mut rest = segment;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3)?;
        out.push(match code {
            "25" => '%',
            "2F" => '/',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// Decode an entry, naming the key if it is not valid (and logging it: a
/// bad entry is skipped, never fatal).
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

/// The largest entry written. etcd refuses requests over 1.5 MiB by
/// default; an entry it would refuse must be refused here, before this
/// node counts it as its own (or every reconnection would fail on it).
pub(crate) const MAX_ENTRY_BYTES: usize = 512 * 1024;

/// Encode an entry as the JSON stored in etcd.
pub(crate) fn encode<T: serde::Serialize>(entry: &T) -> Result<Vec<u8>, RegistryError> {
    let value = serde_json::to_vec(entry)
        .map_err(|e| RegistryError::Unavailable(format!("entry does not encode: {e}")))?;
    if value.len() > MAX_ENTRY_BYTES {
        return Err(RegistryError::Unavailable(format!(
            "entry is {} bytes, more than the {MAX_ENTRY_BYTES} an etcd registry stores; \
             use shorter names",
            value.len()
        )));
    }
    Ok(value)
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
        assert_eq!(k.event("/cenotex/pools/a", None), None);
        assert_eq!(k.event(&k.pool("a"), Some(b"not json")), None);
        assert_eq!(k.event("/cenote/workers/p/not-a-number", None), None);
        assert_eq!(k.event("/cenote/workers/p", None), None);
        assert_eq!(k.event("/cenote/pools/bad%zz", None), None);
        assert_eq!(k.event("/cenote/pools/bad%", None), None);
        assert_eq!(k.event("/cenote/pools/bad%2", None), None);
        assert_eq!(k.event("/cenote/endpoints/only-service", None), None);
        assert_eq!(k.event(&k.endpoint("s", "n"), Some(b"{}")), None);
    }

    #[test]
    fn names_with_slashes_stay_in_their_own_keys() {
        let k = Keys::new("/c");
        assert_eq!(k.pool("team/a"), "/c/pools/team%2Fa");
        assert!(!k
            .worker("team/a", WorkerId(1))
            .starts_with(&k.workers("team")));
        for name in ["team/a", "100%", "%2F", "a/b/c", "plain", ""] {
            assert_eq!(
                k.event(&k.pool(name), None),
                Some(RegistryEvent::PoolDown { name: name.into() }),
                "{name:?}"
            );
            assert_eq!(
                k.event(&k.worker(name, WorkerId(7)), None),
                Some(RegistryEvent::WorkerDown {
                    pool: name.into(),
                    id: WorkerId(7)
                }),
                "{name:?}"
            );
            assert_eq!(
                k.event(&k.endpoint(name, name), None),
                Some(RegistryEvent::EndpointDown {
                    service: name.into(),
                    node: name.into()
                }),
                "{name:?}"
            );
        }
    }

    #[test]
    fn unescape_never_panics_on_odd_bytes() {
        for s in ["%", "%%", "%2", "é%2Fé", "%é", "é%", "%25%2F%"] {
            let _ = unescape(s);
        }
        assert_eq!(unescape("é%2Fé").as_deref(), Some("é/é"));
    }
}
