//! What a caller knows of the nodes: every endpoint the registry shows,
//! kept current by its watch, with a connection and an in-flight count
//! each; and which of them may be called now.
//!
//! A node is not called when:
//! * its endpoint is gone (withdrawn, or its lease expired: etcd deletes
//!   it and every watcher hears so at once);
//! * a call to it was just lost — it sits out `eject_for` (by default one
//!   lease TTL, by which time a dead node's entry has expired), or until
//!   it publishes again;
//! * the registry has been unreachable for longer than a lease: whatever
//!   was known may be gone by now.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cenote_core::{EndpointEntry, Load, RegistryEvent};
use tokio::time::Instant;
use tonic::transport::Channel;

use super::choose::{score, two_choices};
use super::transport::Connector;
use crate::error::CallError;

/// A node serving a pool, as [`Remote::nodes`](crate::Remote::nodes) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's name.
    pub node: String,
    /// Where it is reached.
    pub addr: String,
    /// Its load as last published.
    pub load: Load,
    /// This caller's calls to it not answered yet.
    pub in_flight: usize,
    /// Whether a call would be sent to it now.
    pub callable: bool,
}

/// One endpoint and what this caller keeps for it.
struct Known {
    entry: EndpointEntry,
    /// Which appearance of the node this is: a node whose endpoint went
    /// away and came back (restarted, or its lease expired) gets a new
    /// one, so a session placed on it before knows it may not be there.
    incarnation: u64,
    channel: Result<Channel, String>,
    in_flight: Arc<AtomicUsize>,
    ejected_until: Option<Instant>,
}

impl Known {
    fn callable(&self, now: Instant) -> bool {
        self.channel.is_ok() && self.ejected_until.is_none_or(|t| t <= now)
    }

    /// A call goes to this node: counted in flight until the pick drops.
    fn pick(&self) -> Result<Pick, CallError> {
        let channel = self.channel.clone().map_err(|reason| CallError::NodeLost {
            node: self.entry.node.clone(),
            reason,
        })?;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(Pick {
            node: self.entry.node.clone(),
            incarnation: self.incarnation,
            channel,
            in_flight: Arc::clone(&self.in_flight),
        })
    }
}

#[derive(Default)]
struct State {
    /// Service, then node.
    services: HashMap<String, HashMap<String, Known>>,
    /// Since when the registry has been unreachable.
    registry_lost: Option<Instant>,
    /// Whether the end of trust after losing the registry was logged.
    told_expired: bool,
    /// The last incarnation given out.
    incarnations: u64,
}

/// The chosen node for one call; the in-flight count drops with it.
pub(crate) struct Pick {
    pub node: String,
    pub incarnation: u64,
    pub channel: Channel,
    in_flight: Arc<AtomicUsize>,
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) struct Directory {
    state: Mutex<State>,
    connector: Connector,
    /// How long what was known is trusted after the registry is lost.
    lease_ttl: Option<Duration>,
    eject_for: Duration,
}

impl Directory {
    pub fn new(connector: Connector, lease_ttl: Option<Duration>, eject_for: Duration) -> Self {
        Directory {
            state: Mutex::new(State::default()),
            connector,
            lease_ttl,
            eject_for,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change is a single insert or field write: a panic elsewhere
        // cannot leave the state half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add or refresh an endpoint. A node that publishes is alive: any
    /// ejection ends.
    pub fn upsert(&self, entry: EndpointEntry) {
        let mut state = self.lock();
        let state = &mut *state;
        let nodes = state.services.entry(entry.service.clone()).or_default();
        match nodes.get_mut(&entry.node) {
            Some(known) => {
                if known.entry.addr != entry.addr {
                    known.channel = self.connector.channel(&entry.addr);
                }
                known.entry = entry;
                known.ejected_until = None;
            }
            None => {
                let channel = self.connector.channel(&entry.addr);
                if let Err(reason) = &channel {
                    tracing::warn!(node = %entry.node, pool = %entry.service, %reason,
                        "endpoint cannot be called");
                }
                state.incarnations += 1;
                let incarnation = state.incarnations;
                nodes.insert(
                    entry.node.clone(),
                    Known {
                        entry,
                        incarnation,
                        channel,
                        in_flight: Arc::new(AtomicUsize::new(0)),
                        ejected_until: None,
                    },
                );
            }
        }
    }

    /// Apply one registry event.
    pub fn apply(&self, event: RegistryEvent) {
        match event {
            RegistryEvent::EndpointUp(entry) => self.upsert(entry),
            RegistryEvent::EndpointDown { service, node } => {
                let mut state = self.lock();
                if let Some(nodes) = state.services.get_mut(&service) {
                    if nodes.remove(&node).is_some() {
                        tracing::debug!(%node, pool = %service, "endpoint gone");
                    }
                }
            }
            RegistryEvent::Disconnected { reason } => {
                let mut state = self.lock();
                if state.registry_lost.is_none() {
                    state.registry_lost = Some(Instant::now());
                    state.told_expired = false;
                    let nodes: usize = state.services.values().map(HashMap::len).sum();
                    match self.lease_ttl {
                        Some(ttl) => tracing::warn!(%reason, endpoints = nodes, ?ttl,
                            "registry unreachable: calling the nodes known until their leases \
                             would have expired"),
                        None => tracing::warn!(%reason, endpoints = nodes,
                            "registry unreachable: calling the nodes known"),
                    }
                }
            }
            RegistryEvent::Reconnected => {
                let mut state = self.lock();
                if state.registry_lost.take().is_some() {
                    tracing::info!("registry reachable again; nodes are chosen from it again");
                }
            }
            _ => {}
        }
    }

    /// Calls to `node` were lost: leave it out of every pool's choice for
    /// a while.
    pub fn lost(&self, node: &str) {
        let until = Instant::now() + self.eject_for;
        let mut state = self.lock();
        for nodes in state.services.values_mut() {
            if let Some(known) = nodes.get_mut(node) {
                known.ejected_until = Some(until);
            }
        }
    }

    /// Choose a node for a call to `pool`: `pinned` if given (while it
    /// serves the pool), otherwise by power of two choices among the
    /// callable nodes, preferring those not in `avoid` (nodes a retried
    /// call already failed on).
    pub fn choose(
        &self,
        pool: &str,
        pinned: Option<&str>,
        avoid: &[String],
    ) -> Result<Pick, CallError> {
        let now = Instant::now();
        let no_node = |reason: String| CallError::NoNode {
            pool: pool.to_string(),
            reason,
        };
        let mut state = self.lock();
        if let Some(reason) = self.expired(&mut state, now) {
            return Err(no_node(reason));
        }
        let Some(nodes) = state.services.get(pool).filter(|n| !n.is_empty()) else {
            return Err(no_node("no node publishes it".into()));
        };
        let known = match pinned {
            Some(node) => nodes.get(node).ok_or_else(|| {
                no_node(format!(
                    "node {node:?} does not serve it (or its lease expired)"
                ))
            })?,
            None => {
                let callable: Vec<&Known> = nodes.values().filter(|k| k.callable(now)).collect();
                let preferred: Vec<&Known> = callable
                    .iter()
                    .copied()
                    .filter(|k| !avoid.contains(&k.entry.node))
                    .collect();
                let candidates = if preferred.is_empty() {
                    callable
                } else {
                    preferred
                };
                let scores: Vec<i64> = candidates
                    .iter()
                    .map(|k| {
                        score(
                            k.entry.load.idle,
                            k.entry.load.waiting,
                            k.in_flight.load(Ordering::Relaxed),
                        )
                    })
                    .collect();
                let at = two_choices(&scores, &mut rand::thread_rng()).ok_or_else(|| {
                    no_node(
                        match nodes.values().find_map(|k| k.channel.as_ref().err()) {
                            Some(reason) => format!("no node serving it can be called: {reason}"),
                            None => format!(
                                "all {} nodes serving it were lost in the last {:?}",
                                nodes.len(),
                                self.eject_for
                            ),
                        },
                    )
                })?;
                candidates[at]
            }
        };
        known.pick()
    }

    /// The nodes a call to `pool` may go to now, by name.
    pub fn callable(&self, pool: &str) -> Vec<String> {
        self.each_callable(pool, |k| Some(k.entry.node.clone()))
    }

    /// Every node a call to `pool` may go to now, each picked.
    pub fn pick_all(&self, pool: &str) -> Vec<Pick> {
        self.each_callable(pool, |k| k.pick().ok())
    }

    /// `f` of each node a call to `pool` may go to now.
    fn each_callable<R>(&self, pool: &str, f: impl FnMut(&Known) -> Option<R>) -> Vec<R> {
        let now = Instant::now();
        let mut state = self.lock();
        if self.expired(&mut state, now).is_some() {
            return Vec::new();
        }
        let Some(nodes) = state.services.get(pool) else {
            return Vec::new();
        };
        nodes
            .values()
            .filter(|k| k.callable(now))
            .filter_map(f)
            .collect()
    }

    /// `node` for a call to `pool`, if it serves it, may be called now,
    /// and is still the `incarnation` given (when one is).
    pub fn pick(&self, pool: &str, node: &str, incarnation: Option<u64>) -> Option<Pick> {
        let now = Instant::now();
        let mut state = self.lock();
        if self.expired(&mut state, now).is_some() {
            return None;
        }
        let known = state.services.get(pool)?.get(node)?;
        if !known.callable(now) || incarnation.is_some_and(|i| i != known.incarnation) {
            return None;
        }
        known.pick().ok()
    }

    /// Why nothing known can be trusted now (the registry has been
    /// unreachable for longer than a lease), if so.
    pub fn untrusted(&self) -> Option<String> {
        let mut state = self.lock();
        self.expired(&mut state, Instant::now())
    }

    /// Why nothing known can be trusted any more, if so.
    fn expired(&self, state: &mut State, now: Instant) -> Option<String> {
        let (lost, ttl) = (state.registry_lost?, self.lease_ttl?);
        if now < lost + ttl {
            return None;
        }
        if !state.told_expired {
            state.told_expired = true;
            tracing::warn!(
                ?ttl,
                "registry unreachable for longer than a lease: the nodes known \
                may be gone, so none is called until the registry is back"
            );
        }
        Some(format!(
            "the registry has been unreachable for {:?}, longer than a lease ({ttl:?})",
            now - lost
        ))
    }

    /// The nodes serving `pool`, by name.
    pub fn nodes(&self, pool: &str) -> Vec<NodeInfo> {
        let now = Instant::now();
        let mut state = self.lock();
        let expired = self.expired(&mut state, now).is_some();
        let mut out: Vec<NodeInfo> = state
            .services
            .get(pool)
            .map(|nodes| {
                nodes
                    .values()
                    .map(|k| NodeInfo {
                        node: k.entry.node.clone(),
                        addr: k.entry.addr.clone(),
                        load: k.entry.load,
                        in_flight: k.in_flight.load(Ordering::Relaxed),
                        callable: !expired && k.callable(now),
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.node.cmp(&b.node));
        out
    }
}
