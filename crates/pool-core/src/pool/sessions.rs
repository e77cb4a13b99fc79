//! The session table: which worker serves each affinity key, which of
//! those workers are idle, and the callers pinned to each of them.
//!
//! * **Keys** map to their worker, or to the loss that ended it (a
//!   tombstone, so strict calls learn `AffinityLost` instead of landing on a
//!   fresh worker). The map is bounded: past `affinity_capacity` keys the
//!   least recently used is forgotten, and a key unused for `affinity_ttl`
//!   is forgotten too. A forgotten key starts a new session.
//! * **Holders** are the workers that have served a session, tracked from
//!   their first session call until they leave: whether each is idle (so a
//!   checkout knows to ask the idle queue for it or to wait), and the queue
//!   of callers waiting for it (ordered by the pool's waiter strategy).
//!
//! A worker lists its keys itself (`Meta::keys`), which is what idle queues
//! see. Every key bound to a worker is in its list; the list may also hold
//! keys forgotten or moved while the worker was busy, which are dropped
//! when it next goes idle ([`Sessions::prune`]). So among idle workers only
//! a key's own worker holds it, and a queue that serves the claimed worker
//! serves the right one.
//!
//! Nothing here is touched by a checkout without a session, except through
//! `Meta::affine` on workers that have served one.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::affinity::{AffinityKey, AffinityLoss};
use crate::clock::Stamp;
use crate::entry::Waiter;
use crate::live::Meta;
use crate::queue::Queue;
use crate::worker::WorkerId;

/// Who serves a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Worker(WorkerId),
    /// Its worker left for this reason.
    Lost(AffinityLoss),
}

/// Where a session call goes, as the table sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// A key not remembered: any worker.
    New,
    /// Its worker is in the idle queue.
    Idle(WorkerId),
    /// Its worker is checked out (or being checked, or retiring).
    Busy(WorkerId),
    /// Its worker is gone.
    Lost(AffinityLoss),
}

/// How a session call was served, for the totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bound {
    /// By the worker that served the key before.
    Hit,
    /// By another worker (the key moved).
    Miss,
    /// The key's first call (or first since it was forgotten or lost).
    New,
}

struct Slot {
    owner: Owner,
    /// Its place in `order`.
    tick: u64,
    used: Stamp,
}

/// A worker that serves sessions.
struct Holder<Q> {
    idle: bool,
    /// Callers waiting for this worker.
    pinned: Q,
}

pub(crate) struct Sessions<Q> {
    keys: HashMap<AffinityKey, Slot>,
    /// Keys by last use, oldest first.
    order: BTreeMap<u64, AffinityKey>,
    next_tick: u64,
    holders: HashMap<WorkerId, Holder<Q>>,
    /// Callers pinned to any holder.
    pinned: usize,
    capacity: usize,
    ttl: Option<Duration>,
}

impl<Q: Queue<Waiter>> Sessions<Q> {
    pub fn new(capacity: usize, ttl: Option<Duration>) -> Self {
        Sessions {
            keys: HashMap::new(),
            order: BTreeMap::new(),
            next_tick: 0,
            holders: HashMap::new(),
            pinned: 0,
            capacity,
            ttl,
        }
    }

    /// Keys remembered (bound or lost).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether `key` is remembered (bound or lost); not a use of it.
    pub fn holds(&self, key: &AffinityKey) -> bool {
        self.keys.contains_key(key)
    }

    /// Callers pinned to session workers.
    pub fn pinned(&self) -> usize {
        self.pinned
    }

    /// Where `key`'s call goes now; counts as a use of the key.
    pub fn route(&mut self, key: &AffinityKey, now: Stamp) -> Route {
        self.expire(now);
        let Some(owner) = self.touch(key, now) else {
            return Route::New;
        };
        match owner {
            Owner::Lost(loss) => Route::Lost(loss),
            Owner::Worker(id) => match self.holders.get(&id) {
                Some(h) if h.idle => Route::Idle(id),
                Some(_) => Route::Busy(id),
                // Unreachable by the table's invariant (`check`); a new
                // session is the safe reading.
                None => Route::New,
            },
        }
    }

    /// Who serves `key`, without counting a use.
    pub fn owner(&self, key: &AffinityKey) -> Option<Owner> {
        self.keys.get(key).map(|s| s.owner)
    }

    /// The worker of `meta` serves `key` from now on (it is checked out for
    /// one of its calls).
    pub fn bind(&mut self, key: &AffinityKey, meta: &mut Meta, now: Stamp) -> Bound {
        let id = meta.id;
        meta.affine = true;
        self.holders.entry(id).or_insert_with(|| Holder {
            idle: false,
            pinned: Q::default(),
        });
        if !meta.keys.contains(key) {
            // Keep a worker that never goes idle (where it is pruned) from
            // collecting forgotten keys: prune as the set doubles.
            let n = meta.keys.len();
            if n >= 64 && n.is_power_of_two() {
                self.prune(meta);
            }
            meta.keys.insert(key.clone());
        }
        let before = self.touch(key, now);
        match self.keys.get_mut(key) {
            Some(slot) => slot.owner = Owner::Worker(id),
            None => {
                let tick = self.next_tick;
                self.next_tick += 1;
                self.keys.insert(
                    key.clone(),
                    Slot {
                        owner: Owner::Worker(id),
                        tick,
                        used: now,
                    },
                );
                self.order.insert(tick, key.clone());
                while self.keys.len() > self.capacity {
                    self.forget_oldest();
                }
            }
        }
        match before {
            Some(Owner::Worker(was)) if was == id => Bound::Hit,
            Some(Owner::Worker(_)) => Bound::Miss,
            _ => Bound::New,
        }
    }

    /// Forget `key`: its next call starts a new session. Whether it was
    /// remembered.
    pub fn forget(&mut self, key: &AffinityKey) -> bool {
        match self.keys.remove(key) {
            Some(slot) => {
                self.order.remove(&slot.tick);
                true
            }
            None => false,
        }
    }

    /// Forget keys unused for the ttl.
    pub fn expire(&mut self, now: Stamp) {
        let Some(ttl) = self.ttl else { return };
        while let Some((_, key)) = self.order.first_key_value() {
            let stale = self.keys.get(key).is_none_or(|s| now.since(s.used) >= ttl);
            if !stale {
                break;
            }
            self.forget_oldest();
        }
    }

    /// Mark a use of `key`; its owner, if remembered.
    fn touch(&mut self, key: &AffinityKey, now: Stamp) -> Option<Owner> {
        let slot = self.keys.get_mut(key)?;
        if let Some(k) = self.order.remove(&slot.tick) {
            slot.tick = self.next_tick;
            self.next_tick += 1;
            self.order.insert(slot.tick, k);
        }
        slot.used = now;
        Some(slot.owner)
    }

    fn forget_oldest(&mut self) {
        if let Some((_, key)) = self.order.pop_first() {
            self.keys.remove(&key);
        }
    }

    /// Whether a session worker is idle now.
    pub fn set_idle(&mut self, id: WorkerId, idle: bool) {
        if let Some(h) = self.holders.get_mut(&id) {
            h.idle = idle;
        }
    }

    /// Drop from a worker about to go idle the keys it no longer serves.
    pub fn prune(&self, meta: &mut Meta) {
        let me = Owner::Worker(meta.id);
        meta.keys
            .retain(|k| self.keys.get(k).is_some_and(|s| s.owner == me));
    }

    /// The worker of `meta` leaves: its keys are lost for `loss`; returns
    /// the callers that waited for it, in serving order.
    pub fn worker_left(&mut self, meta: &Meta, loss: AffinityLoss) -> Vec<Waiter> {
        let me = Owner::Worker(meta.id);
        for key in &meta.keys {
            if let Some(slot) = self.keys.get_mut(key) {
                if slot.owner == me {
                    slot.owner = Owner::Lost(loss);
                }
            }
        }
        match self.holders.remove(&meta.id) {
            Some(mut h) => {
                self.pinned -= h.pinned.len();
                h.pinned.take_first(usize::MAX)
            }
            None => Vec::new(),
        }
    }

    /// Queue `waiter` for worker `owner`; its key there, or the waiter back
    /// if `owner` serves no session.
    pub fn pin(&mut self, owner: WorkerId, waiter: Waiter) -> Result<Q::Key, Waiter> {
        match self.holders.get_mut(&owner) {
            Some(h) => {
                self.pinned += 1;
                Ok(h.pinned.push(waiter))
            }
            None => Err(waiter),
        }
    }

    /// Take a pinned caller out of `owner`'s queue by its key.
    pub fn unpin(&mut self, owner: WorkerId, key: Q::Key) -> Option<Waiter> {
        let waiter = self.holders.get_mut(&owner)?.pinned.remove(key)?;
        self.pinned -= 1;
        Some(waiter)
    }

    /// The next caller waiting for `owner`.
    pub fn pop_pinned(&mut self, owner: WorkerId) -> Option<Waiter> {
        let waiter = self.holders.get_mut(&owner)?.pinned.pop(())?;
        self.pinned -= 1;
        Some(waiter)
    }

    /// Take out every pinned caller for which `pred` holds.
    pub fn take_pinned(&mut self, pred: &mut dyn FnMut(&mut Waiter) -> bool) -> Vec<Waiter> {
        let mut out = Vec::new();
        for h in self.holders.values_mut() {
            out.extend(h.pinned.take_matching(usize::MAX, pred));
        }
        self.pinned -= out.len();
        out
    }

    #[cfg(any(test, feature = "testing"))]
    /// The table agrees with itself, and with the idle queue's length.
    pub fn check(&self, idle: usize) -> Result<(), String> {
        let pinned: usize = self.holders.values().map(|h| h.pinned.len()).sum();
        if pinned != self.pinned {
            return Err(format!("pinned {} != pinned queues {pinned}", self.pinned));
        }
        if let Some((id, h)) = self
            .holders
            .iter()
            .find(|(_, h)| h.idle && !h.pinned.is_empty())
        {
            return Err(format!(
                "{} callers wait for {id}, which is idle",
                h.pinned.len()
            ));
        }
        let idle_holders = self.holders.values().filter(|h| h.idle).count();
        if idle_holders > idle {
            return Err(format!(
                "{idle_holders} session workers marked idle, {idle} idle workers"
            ));
        }
        for (key, slot) in &self.keys {
            if let Owner::Worker(id) = slot.owner {
                if !self.holders.contains_key(&id) {
                    return Err(format!("session {key:?} bound to {id}, not tracked"));
                }
            }
            if self.order.get(&slot.tick) != Some(key) {
                return Err(format!("session {key:?} out of the use order"));
            }
        }
        if self.order.len() != self.keys.len() || self.keys.len() > self.capacity {
            return Err(format!(
                "{} keys, {} in use order, capacity {}",
                self.keys.len(),
                self.order.len(),
                self.capacity
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::CellId;

    /// A plain FIFO for the table's pinned callers (the strategies crate's
    /// queues implement another build of this crate's traits).
    #[derive(Default)]
    struct Line(Vec<(u64, Waiter)>, u64);

    impl Queue<Waiter> for Line {
        type Key = u64;
        fn push(&mut self, w: Waiter) -> u64 {
            self.1 += 1;
            self.0.push((self.1, w));
            self.1
        }
        fn pop(&mut self, (): ()) -> Option<Waiter> {
            (!self.0.is_empty()).then(|| self.0.remove(0).1)
        }
        fn remove(&mut self, key: u64) -> Option<Waiter> {
            let at = self.0.iter().position(|(k, _)| *k == key)?;
            Some(self.0.remove(at).1)
        }
        fn len(&self) -> usize {
            self.0.len()
        }
        fn take_matching(
            &mut self,
            limit: usize,
            pred: &mut dyn FnMut(&mut Waiter) -> bool,
        ) -> Vec<Waiter> {
            let mut out = Vec::new();
            let mut i = 0;
            while i < self.0.len() && out.len() < limit {
                if pred(&mut self.0[i].1) {
                    out.push(self.0.remove(i).1);
                } else {
                    i += 1;
                }
            }
            out
        }
    }

    type Table = Sessions<Line>;

    fn key(k: &str) -> AffinityKey {
        AffinityKey::from(k)
    }

    fn at(ms: u64) -> Stamp {
        Stamp::now() + Duration::from_millis(ms)
    }

    #[test]
    fn a_bound_key_routes_to_its_worker_idle_or_busy() {
        let mut t = Table::new(8, None);
        let now = at(0);
        let mut w = Meta::new(WorkerId(1), None);
        assert_eq!(t.route(&key("a"), now), Route::New);
        assert_eq!(t.bind(&key("a"), &mut w, now), Bound::New);
        assert!(w.affine && w.keys.len() == 1 && w.keys.contains(&key("a")));
        assert_eq!(t.route(&key("a"), now), Route::Busy(WorkerId(1)));
        t.set_idle(WorkerId(1), true);
        assert_eq!(t.route(&key("a"), now), Route::Idle(WorkerId(1)));
        assert_eq!(t.bind(&key("a"), &mut w, now), Bound::Hit);
        assert_eq!(w.keys.len(), 1, "a key is listed once");
        t.check(1).unwrap();
    }

    #[test]
    fn a_key_moved_away_is_pruned_from_its_old_worker() {
        let mut t = Table::new(8, None);
        let now = at(0);
        let (mut w1, mut w2) = (Meta::new(WorkerId(1), None), Meta::new(WorkerId(2), None));
        t.bind(&key("a"), &mut w1, now);
        t.bind(&key("b"), &mut w1, now);
        assert_eq!(t.bind(&key("a"), &mut w2, now), Bound::Miss);
        t.prune(&mut w1);
        assert_eq!(w1.keys.iter().collect::<Vec<_>>(), vec![&key("b")]);
        assert_eq!(w2.keys.iter().collect::<Vec<_>>(), vec![&key("a")]);
        t.check(0).unwrap();
    }

    #[test]
    fn a_worker_that_never_idles_does_not_collect_forgotten_keys() {
        let mut t = Table::new(16, None);
        let mut w = Meta::new(WorkerId(1), None);
        for i in 0..10_000 {
            t.bind(&key(&i.to_string()), &mut w, at(0));
        }
        assert_eq!(t.len(), 16);
        assert!(w.keys.len() <= 128, "{} keys listed", w.keys.len());
        t.check(0).unwrap();
    }

    #[test]
    fn keys_die_with_their_worker_and_its_waiters_come_back() {
        let mut t = Table::new(8, None);
        let now = at(0);
        let mut w = Meta::new(WorkerId(1), None);
        assert!(!t.holds(&key("a")));
        t.bind(&key("a"), &mut w, now);
        assert!(t.holds(&key("a")));
        let caller = crate::Caller::new(now, Duration::from_secs(1));
        assert!(t
            .pin(WorkerId(1), Waiter::new(CellId::new(7), caller))
            .is_ok());
        assert!(
            t.pin(WorkerId(2), Waiter::new(CellId::new(8), caller))
                .is_err(),
            "not a holder"
        );
        assert_eq!(t.pinned(), 1);
        let back = t.worker_left(&w, AffinityLoss::Crashed);
        assert_eq!(
            back.iter().map(|w| w.cell()).collect::<Vec<_>>(),
            vec![CellId::new(7)]
        );
        assert_eq!(t.pinned(), 0);
        assert_eq!(t.route(&key("a"), now), Route::Lost(AffinityLoss::Crashed));
        // Lost is still held: its strict calls must fail here, not start
        // over elsewhere.
        assert!(t.holds(&key("a")));
        assert!(t.forget(&key("a")));
        assert!(!t.holds(&key("a")));
        assert_eq!(t.route(&key("a"), now), Route::New);
        t.check(0).unwrap();
    }

    #[test]
    fn the_least_recently_used_key_goes_first_and_idle_keys_expire() {
        let mut t = Table::new(2, Some(Duration::from_millis(100)));
        let mut w = Meta::new(WorkerId(1), None);
        t.bind(&key("a"), &mut w, at(0));
        t.bind(&key("b"), &mut w, at(10));
        // A use makes "a" the most recent: "b" goes when "c" comes.
        t.route(&key("a"), at(20));
        t.bind(&key("c"), &mut w, at(30));
        assert_eq!(t.len(), 2);
        assert_eq!(t.owner(&key("b")), None);
        assert!(t.owner(&key("a")).is_some());
        t.check(0).unwrap();
        t.expire(at(125));
        assert_eq!(t.len(), 1, "a (last used at 20) expired, c (30) not yet");
        t.expire(at(200));
        assert_eq!(t.len(), 0);
        t.check(0).unwrap();
    }
}
