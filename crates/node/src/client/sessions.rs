//! Sessions across nodes: which node holds each session this caller has
//! started, and where a new one goes.
//!
//! A session ([`CallOptions::affinity`](cenote_core::CallOptions::affinity))
//! lives in one worker on one node; the node's own pool keeps it on that
//! worker (the key and its mode travel with the call). What the caller must
//! do is reach that node every time, so:
//!
//! * **A strict session this caller has not called yet** may live on a
//!   node already (another caller started it): before its first call from
//!   here, the caller asks every node serving the pool whether it holds the
//!   key (`wire::HOLDS_PATH`, one round of small calls at once) and goes to
//!   the one that does. A node that cannot answer fails that call (the
//!   session may be there); it is left out, and the next call asks again.
//! * **A new session** goes where *rendezvous hashing* puts it: of the
//!   nodes that can be called now, the one whose hash of (key, node name)
//!   is highest. Every caller computes the same answer from the same node
//!   set, with no table shared between them, and a node joining takes only
//!   the keys it now wins (about 1 in n+1), where hashing modulo the node
//!   count would move most of them.
//! * **A session already placed** goes to its node, which this table
//!   remembers, so it stays put when nodes join: a scale-up moves no
//!   session of this caller's.
//! * **Its node is gone** (its endpoint withdrawn or expired, a call to it
//!   lost with it, or it came back as a new process — a new incarnation in
//!   the directory): a `Strict` or `FailFast` session fails with
//!   `AffinityLost { reason: NodeLost }` until the caller starts it over
//!   ([`RemotePool::forget_session`](super::RemotePool::forget_session));
//!   it never moves silently. A `Hint` session moves to the node the hash
//!   now gives among the nodes left (or, retried, among those it has not
//!   failed on), and starts over there: the handler's state for it is
//!   empty on its new node.
//!
//! The table is per [`Remote`](super::Remote) (its clones share it), and
//! bounded: past its capacity, the sessions unused longest are forgotten
//! (and found again by asking when next called). A hinted session is not
//! asked about: it goes by the hash, which agrees with every other
//! caller's until the node set changes, and a miss costs only its state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cenote_core::{Affinity, AffinityKey, AffinityLoss};
use tokio::time::Instant;

use super::directory::{Directory, Pick};
use crate::error::CallError;

/// Where one session lives.
struct Placed {
    node: String,
    incarnation: u64,
    used: Instant,
}

pub(crate) struct Sessions {
    table: Mutex<HashMap<(Arc<str>, AffinityKey), Placed>>,
    capacity: usize,
}

impl Sessions {
    pub fn new(capacity: usize) -> Self {
        Sessions {
            table: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The node for a call of session `affinity` to `pool`. `avoid`: the
    /// nodes a retried call already failed on (a hint moves off them; a
    /// strict session does not move).
    pub fn route(
        &self,
        directory: &Directory,
        pool: &Arc<str>,
        affinity: &Affinity,
        avoid: &[String],
    ) -> Result<Pick, CallError> {
        // Without the registry no node can be told gone: that is no node
        // to call, not a lost session.
        if let Some(reason) = directory.untrusted() {
            return Err(CallError::NoNode {
                pool: pool.to_string(),
                reason,
            });
        }
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let at = (Arc::clone(pool), affinity.key.clone());
        if let Some(placed) = table.get_mut(&at) {
            let moving = !affinity.mode.is_strict() && avoid.contains(&placed.node);
            if !moving {
                if let Some(pick) = directory.pick(pool, &placed.node, Some(placed.incarnation)) {
                    placed.used = Instant::now();
                    return Ok(pick);
                }
                if affinity.mode.is_strict() {
                    return Err(CallError::AffinityLost {
                        key: affinity.key.to_string(),
                        reason: AffinityLoss::NodeLost,
                    });
                }
            }
            tracing::debug!(key = %affinity.key, from = %placed.node, %pool,
                "hinted session moves: its node is gone or failed this call");
        }
        let pick = hashed(directory, pool, &affinity.key, avoid)
            .and_then(|node| directory.pick(pool, &node, None))
            .ok_or_else(|| CallError::NoNode {
                pool: pool.to_string(),
                reason: "no node serving it can be called now".into(),
            })?;
        drop(table);
        self.place(pool, &affinity.key, &pick.node, pick.incarnation);
        Ok(pick)
    }

    /// What the nodes said when asked whether they hold session `key` of
    /// `pool`: `holders` said yes. Remembers the holder (of two, the one
    /// the hash prefers, as every caller would choose); whether there was
    /// one.
    pub fn found(&self, pool: &Arc<str>, key: &AffinityKey, holders: &[&Pick]) -> bool {
        let nodes = holders.iter().map(|p| p.node.as_str());
        let Some(node) = rendezvous(key.as_str(), nodes) else {
            return false;
        };
        let holder = holders.iter().find(|p| p.node == node).expect("a holder");
        self.place(pool, key, &holder.node, holder.incarnation);
        true
    }

    /// Remember that session `key` of `pool` lives on `node`, as it is now
    /// (`incarnation`).
    fn place(&self, pool: &Arc<str>, key: &AffinityKey, node: &str, incarnation: u64) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let at = (Arc::clone(pool), key.clone());
        if table.len() >= self.capacity && !table.contains_key(&at) {
            forget_oldest(&mut table, self.capacity);
        }
        table.insert(
            at,
            Placed {
                node: node.to_string(),
                incarnation,
                used: Instant::now(),
            },
        );
    }

    /// The node session `key` of `pool` is placed on, if it is.
    pub fn placed(&self, pool: &Arc<str>, key: &AffinityKey) -> Option<String> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table
            .get(&(Arc::clone(pool), key.clone()))
            .map(|p| p.node.clone())
    }

    /// Forget where session `key` of `pool` is: its next call places it
    /// anew.
    pub fn forget(&self, pool: &Arc<str>, key: &AffinityKey) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.remove(&(Arc::clone(pool), key.clone()));
    }
}

/// The node the hash gives session `key` of `pool` among the nodes that
/// can be called now, leaving out those in `avoid` while there are others.
pub(crate) fn hashed(
    directory: &Directory,
    pool: &str,
    key: &AffinityKey,
    avoid: &[String],
) -> Option<String> {
    let mut nodes = directory.callable(pool);
    if nodes.iter().any(|n| !avoid.contains(n)) {
        nodes.retain(|n| !avoid.contains(n));
    }
    rendezvous(key.as_str(), nodes.iter().map(String::as_str)).map(str::to_string)
}

/// Make room: forget the eighth of the sessions unused longest (at least
/// one), so a full table sorts once per many insertions, not every time.
fn forget_oldest(table: &mut HashMap<(Arc<str>, AffinityKey), Placed>, capacity: usize) {
    let mut by_use: Vec<(Instant, (Arc<str>, AffinityKey))> =
        table.iter().map(|(k, p)| (p.used, k.clone())).collect();
    by_use.sort_unstable_by_key(|(used, _)| *used);
    let drop = (capacity / 8).max(1);
    for (_, key) in by_use.into_iter().take(drop) {
        table.remove(&key);
    }
}

/// The node rendezvous hashing gives `key` among `nodes`: the one with the
/// highest hash of the pair (ties, which need equal 64-bit hashes, go to
/// the first name in order).
fn rendezvous<'a>(key: &str, nodes: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    nodes
        .map(|node| (weight(key, node), node))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, node)| node)
}

/// A hash of (key, node) that every caller computes alike, whatever its
/// build: FNV-1a over both (with a separator no UTF-8 text holds), then a
/// finalizer that spreads the bits (splitmix64's).
fn weight(key: &str, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain([0xff]).chain(node.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(keys: usize, nodes: &[&str]) -> Vec<String> {
        (0..keys)
            .map(|k| {
                rendezvous(&format!("session-{k}"), nodes.iter().copied())
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn keys_spread_over_the_nodes() {
        let placed = place(3000, &["n1", "n2", "n3"]);
        for node in ["n1", "n2", "n3"] {
            let n = placed.iter().filter(|p| *p == node).count();
            assert!((800..1200).contains(&n), "{node}: {n} of 3000");
        }
    }

    #[test]
    fn a_joining_node_takes_only_its_share() {
        let before = place(3000, &["n1", "n2", "n3"]);
        let after = place(3000, &["n1", "n2", "n3", "n4"]);
        let moved: Vec<_> = before.iter().zip(&after).filter(|(a, b)| a != b).collect();
        // Every key that moved, moved to the new node; about a quarter did.
        assert!(moved.iter().all(|(_, to)| *to == "n4"));
        assert!((600..900).contains(&moved.len()), "{} moved", moved.len());
        // A node leaving moves only its own keys.
        let fewer = place(3000, &["n1", "n3"]);
        for (was, now) in before.iter().zip(&fewer) {
            if was != "n2" {
                assert_eq!(was, now);
            }
        }
    }

    #[test]
    fn order_of_the_nodes_does_not_matter() {
        assert_eq!(
            rendezvous("k", ["a", "b", "c"].into_iter()),
            rendezvous("k", ["c", "a", "b"].into_iter())
        );
        assert_eq!(rendezvous("k", std::iter::empty()), None);
    }

    #[test]
    fn a_full_table_forgets_the_oldest() {
        let mut table = HashMap::new();
        let start = Instant::now();
        for i in 0..16u64 {
            table.insert(
                (Arc::from("p"), AffinityKey::from(i)),
                Placed {
                    node: "n".into(),
                    incarnation: 1,
                    used: start + std::time::Duration::from_millis(i),
                },
            );
        }
        forget_oldest(&mut table, 16);
        assert_eq!(table.len(), 14);
        assert!(!table.contains_key(&(Arc::from("p"), AffinityKey::from(0))));
        assert!(!table.contains_key(&(Arc::from("p"), AffinityKey::from(1))));
        assert!(table.contains_key(&(Arc::from("p"), AffinityKey::from(2))));
    }
}
