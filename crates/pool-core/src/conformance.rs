//! The checks every [`Queue`] must pass, for a queue of your own (feature
//! `conformance`). Run them in a test:
//!
//! ```
//! use cenote_core::conformance;
//! use cenote_strategies::Lifo; // your strategy here
//!
//! conformance::check_idle_strategy::<Lifo>().unwrap();
//! conformance::check_wait_strategy::<Lifo>().unwrap();
//! ```
//!
//! Each check returns the first [`Violation`] it finds, naming the rule:
//!
//! * every entry pushed comes out exactly once (by `pop`, `remove`,
//!   `take_first`, `take_matching`), and nothing comes out that was not
//!   pushed;
//! * `remove` by key works after any interleaving of operations (a seeded
//!   random walk of 20,000 of them), and a key whose entry left removes
//!   nothing, even after its slot may have been reused;
//! * `len` and `is_empty` are right after every operation;
//! * no residue: after 100,000 push/remove cycles the queue holds exactly
//!   the entries still queued and has dropped every other one (each entry
//!   carries a tracer the check counts);
//! * `take_first(n)` gives the first `n` in serving order (what `pop` would
//!   give), `take_matching` only entries its predicate picks, never more
//!   than its limit, leaving the rest queued;
//! * idle queues: `pop` serves the idle worker holding the caller's session
//!   key, whichever it is.
//!
//! It says nothing of the order itself: that is your strategy.
//! [`idle_worker`] and [`waiter`] make entries for tests of the order.

use std::sync::Arc;
use std::time::Duration;

use crate::affinity::{Affinity, AffinityKey, AffinityMode};
use crate::clock::Stamp;
use crate::entry::{Caller, CellId, IdleWorker, Waiter};
use crate::live::{Held, Meta};
use crate::queue::{Entry, IdleStrategy, Queue, WaitStrategy};
use crate::worker::WorkerId;

/// A rule a queue broke, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("queue breaks the Queue contract: {0}")]
pub struct Violation(pub String);

/// The worker the checks put in idle queues: nothing but a tracer, so the
/// checks see whether a queue still holds an entry.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    tracer: Arc<()>,
}

/// An idle worker for a test of an idle queue's order: id `id`, `tasks`
/// tasks served, holding the session keys `keys`.
pub fn idle_worker(id: u64, tasks: u64, keys: &[&str]) -> IdleWorker<Probe> {
    traced_worker(id, tasks, keys, Probe::default())
}

fn traced_worker(id: u64, tasks: u64, keys: &[&str], probe: Probe) -> IdleWorker<Probe> {
    let mut meta = Meta::new(WorkerId(id), None);
    meta.tasks = tasks;
    meta.keys = keys.iter().map(|k| AffinityKey::from(*k)).collect();
    meta.affine = !keys.is_empty();
    IdleWorker(Box::new(Held {
        worker: probe,
        meta,
    }))
}

/// A waiting caller for a test of a waiter queue's order.
pub fn waiter(caller: Caller<'_>) -> Waiter {
    Waiter::new(CellId::new(0), caller)
}

/// Run every check on the idle queue of strategy `S`.
pub fn check_idle_strategy<S: IdleStrategy>() -> Result<(), Violation> {
    check_idle_queue::<S::Queue<Probe>>()
}

/// Run every check on the waiter queue of strategy `S`.
pub fn check_wait_strategy<S: WaitStrategy>() -> Result<(), Violation> {
    check_wait_queue::<S::Queue>()
}

/// Run every check on idle queue `Q`.
pub fn check_idle_queue<Q: Queue<IdleWorker<Probe>>>() -> Result<(), Violation> {
    let kit = IdleKit {
        probe: Probe::default(),
        plain: Caller::new(Stamp::now(), Duration::from_secs(1)),
    };
    check_queue::<Q, _>(&kit)?;
    check_claims::<Q>(&kit)
}

/// Run every check on waiter queue `Q`.
pub fn check_wait_queue<Q: Queue<Waiter>>() -> Result<(), Violation> {
    check_queue::<Q, _>(&WaitKit {
        tracer: AffinityKey::from("conformance"),
        base: Stamp::now(),
    })
}

fn fail<T>(rule: &str, detail: impl std::fmt::Display) -> Result<T, Violation> {
    Err(Violation(format!("{rule}: {detail}")))
}

/// What the generic checks need to know about one kind of entry.
trait Kit {
    type T: Entry;
    /// An entry with id `id`; `salt` varies what the order looks at.
    fn make(&self, id: u64, salt: u64) -> Self::T;
    fn id(entry: &Self::T) -> u64;
    /// `pop` with a request that claims nothing.
    fn pop<Q: Queue<Self::T>>(&self, q: &mut Q) -> Option<Self::T>;
    /// Entries made and not yet dropped.
    fn alive(&self) -> usize;
}

struct IdleKit {
    probe: Probe,
    plain: Caller<'static>,
}

impl Kit for IdleKit {
    type T = IdleWorker<Probe>;

    fn make(&self, id: u64, salt: u64) -> Self::T {
        let mut w = traced_worker(id, salt % 7, &[], self.probe.clone());
        w.0.meta.idle_since = self.plain.arrival() + Duration::from_nanos(salt % 1000);
        w
    }

    fn id(entry: &Self::T) -> u64 {
        entry.id().0
    }

    fn pop<Q: Queue<Self::T>>(&self, q: &mut Q) -> Option<Self::T> {
        q.pop(self.plain)
    }

    fn alive(&self) -> usize {
        Arc::strong_count(&self.probe.tracer) - 1
    }
}

struct WaitKit {
    /// Every waiter's session key: its reference count is the tracer.
    tracer: AffinityKey,
    base: Stamp,
}

impl Kit for WaitKit {
    type T = Waiter;

    fn make(&self, id: u64, salt: u64) -> Waiter {
        let session = Affinity {
            key: self.tracer.clone(),
            mode: AffinityMode::Hint,
        };
        let caller = Caller::new(
            self.base + Duration::from_nanos(salt % 977),
            Duration::from_millis(salt % 13),
        )
        .with_priority((salt % 5) as i32 - 2)
        .with_affinity(Some(&session));
        Waiter::new(CellId::new(id as u32), caller)
    }

    fn id(entry: &Waiter) -> u64 {
        u64::from(entry.cell().get())
    }

    fn pop<Q: Queue<Waiter>>(&self, q: &mut Q) -> Option<Waiter> {
        q.pop(())
    }

    fn alive(&self) -> usize {
        self.tracer.strong_count() - 1
    }
}

/// A small seeded generator, so a violation reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The queue under test beside the ids it should hold and their keys.
struct Model<Q: Queue<K::T>, K: Kit> {
    q: Q,
    live: Vec<(u64, Q::Key)>,
    gone: Vec<Q::Key>,
    next_id: u64,
    _kit: std::marker::PhantomData<K>,
}

impl<Q: Queue<K::T>, K: Kit> Model<Q, K> {
    fn new() -> Self {
        Model {
            q: Q::default(),
            live: Vec::new(),
            gone: Vec::new(),
            next_id: 0,
            _kit: std::marker::PhantomData,
        }
    }

    fn push(&mut self, kit: &K, salt: u64) {
        let id = self.next_id;
        self.next_id += 1;
        let key = self.q.push(kit.make(id, salt));
        self.live.push((id, key));
    }

    /// Account for entries that came out of the queue: each must be queued,
    /// once. They are dropped here.
    fn out(&mut self, what: &str, entries: Vec<K::T>) -> Result<Vec<u64>, Violation> {
        let mut ids = Vec::new();
        for e in entries {
            let id = K::id(&e);
            let Some(at) = self.live.iter().position(|(i, _)| *i == id) else {
                return fail(
                    "exactly once",
                    format!("{what} gave entry {id}, not queued"),
                );
            };
            let (_, key) = self.live.swap_remove(at);
            self.gone.push(key);
            ids.push(id);
        }
        Ok(ids)
    }

    fn check(&self, kit: &K, after: &str) -> Result<(), Violation> {
        if self.q.len() != self.live.len() || self.q.is_empty() != self.live.is_empty() {
            return fail(
                "len",
                format!(
                    "after {after}: len {} (is_empty {}), {} queued",
                    self.q.len(),
                    self.q.is_empty(),
                    self.live.len()
                ),
            );
        }
        if kit.alive() != self.live.len() {
            return fail(
                "no residue",
                format!(
                    "after {after}: {} entries alive, {} queued (an entry kept or lost)",
                    kit.alive(),
                    self.live.len()
                ),
            );
        }
        Ok(())
    }
}

fn check_queue<Q: Queue<K::T>, K: Kit>(kit: &K) -> Result<(), Violation> {
    let mut m = Model::<Q, K>::new();
    m.check(kit, "nothing")?;
    if kit.pop(&mut m.q).is_some() || !m.q.take_first(3).is_empty() {
        return fail("exactly once", "an empty queue gave an entry");
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for step in 0..20_000 {
        let op = rng.below(8);
        let what = match op {
            0..=2 => {
                let salt = rng.next();
                m.push(kit, salt);
                "push"
            }
            3 => {
                let got = kit.pop(&mut m.q);
                if got.is_none() != m.live.is_empty() {
                    return fail(
                        "exactly once",
                        format!(
                            "step {step}: pop gave {:?} entries with {} queued",
                            got.is_some(),
                            m.live.len()
                        ),
                    );
                }
                m.out("pop", got.into_iter().collect())?;
                "pop"
            }
            4 if !m.live.is_empty() => {
                let (id, key) = m.live[rng.below(m.live.len())];
                let got = m.q.remove(key);
                match got.as_ref().map(K::id) {
                    Some(got_id) if got_id == id => {}
                    other => {
                        return fail(
                            "remove by key",
                            format!("step {step}: the key of {id} removed {other:?}"),
                        )
                    }
                }
                m.out("remove", got.into_iter().collect())?;
                "remove"
            }
            5 if !m.gone.is_empty() => {
                let key = m.gone[rng.below(m.gone.len())];
                if let Some(e) = m.q.remove(key) {
                    return fail(
                        "stale key",
                        format!("step {step}: a key whose entry left removed {}", K::id(&e)),
                    );
                }
                "remove by a stale key"
            }
            6 => {
                let n = rng.below(3);
                let want = n.min(m.live.len());
                let got = m.q.take_first(n);
                if got.len() != want {
                    return fail(
                        "take_first",
                        format!(
                            "step {step}: take_first({n}) gave {}, {} queued",
                            got.len(),
                            m.live.len()
                        ),
                    );
                }
                m.out("take_first", got)?;
                "take_first"
            }
            _ => {
                let limit = rng.below(4);
                let modulo = 2 + rng.below(3) as u64;
                let got = m.q.take_matching(limit, &mut |e| K::id(e) % modulo == 0);
                if got.len() > limit {
                    return fail(
                        "take_matching",
                        format!("step {step}: {} entries over its limit {limit}", got.len()),
                    );
                }
                let matching = m.live.iter().filter(|(i, _)| i % modulo == 0).count();
                if got.len() < limit.min(matching) {
                    return fail(
                        "take_matching",
                        format!(
                            "step {step}: {} entries of {} matching, limit {limit}",
                            got.len(),
                            matching
                        ),
                    );
                }
                for id in m.out("take_matching", got)? {
                    if id % modulo != 0 {
                        return fail(
                            "take_matching",
                            format!("step {step}: took {id}, which its predicate refuses"),
                        );
                    }
                }
                "take_matching"
            }
        };
        m.check(kit, what)?;
        // Bound the stale keys kept, without losing old ones entirely.
        if m.gone.len() > 4096 {
            m.gone.drain(..2048);
        }
    }
    check_serving_order::<Q, K>(kit, &mut rng)?;
    check_no_residue::<Q, K>(kit, m)
}

/// `take_first` gives what `pop` would, in the same order.
fn check_serving_order<Q: Queue<K::T>, K: Kit>(kit: &K, rng: &mut Rng) -> Result<(), Violation> {
    let (mut a, mut b) = (Model::<Q, K>::new(), Model::<Q, K>::new());
    for _ in 0..64 {
        let salt = rng.next();
        a.push(kit, salt);
        b.push(kit, salt);
    }
    let taken: Vec<u64> = a.q.take_first(40).iter().map(K::id).collect();
    let popped: Vec<u64> = std::iter::from_fn(|| kit.pop(&mut b.q))
        .take(40)
        .map(|e| K::id(&e))
        .collect();
    if taken != popped {
        return fail(
            "take_first",
            format!("take_first(40) gave {taken:?}, 40 pops gave {popped:?}"),
        );
    }
    Ok(())
}

/// 100,000 push/remove cycles, then exactly what is queued remains.
fn check_no_residue<Q: Queue<K::T>, K: Kit>(kit: &K, mut m: Model<Q, K>) -> Result<(), Violation> {
    let left = m.q.take_first(usize::MAX);
    m.out("take_first", left)?;
    m.check(kit, "emptying")?;
    for cycle in 0..100_000u64 {
        m.push(kit, cycle.wrapping_mul(0x2545_F491_4F6C_DD1D));
        if m.live.len() > 3 {
            let (id, key) = m.live[0];
            let got = m.q.remove(key);
            if got.as_ref().map(K::id) != Some(id) {
                return fail(
                    "remove by key",
                    format!("cycle {cycle}: the key of {id} did not remove it"),
                );
            }
            m.out("remove", got.into_iter().collect())?;
        }
    }
    m.check(kit, "100,000 push/remove cycles")?;
    let rest = std::iter::from_fn(|| kit.pop(&mut m.q)).collect();
    m.out("pop", rest)?;
    m.check(kit, "draining")?;
    if !m.live.is_empty() {
        return fail(
            "no residue",
            format!("{} entries never came out", m.live.len()),
        );
    }
    Ok(())
}

/// An idle queue serves the worker holding the caller's key, wherever it
/// sits in the order.
fn check_claims<Q: Queue<IdleWorker<Probe>>>(kit: &IdleKit) -> Result<(), Violation> {
    let mut q = Q::default();
    let keys = ["a", "b", "c", "d", "e", "f"];
    for (i, key) in keys.iter().enumerate() {
        q.push(traced_worker(
            i as u64,
            i as u64 % 3,
            &[key],
            kit.probe.clone(),
        ));
    }
    for key in ["d", "a", "f", "c"] {
        let session = Affinity {
            key: AffinityKey::from(key),
            mode: AffinityMode::Strict,
        };
        let caller =
            Caller::new(Stamp::now(), Duration::from_secs(1)).with_affinity(Some(&session));
        match q.pop(caller) {
            Some(w) if w.holds(&AffinityKey::from(key)) => {}
            other => {
                return fail(
                    "session claim",
                    format!("a caller with key {key:?} was served {other:?}"),
                )
            }
        }
    }
    let nobody = Affinity {
        key: AffinityKey::from("nobody"),
        mode: AffinityMode::Hint,
    };
    let stranger = Caller::new(Stamp::now(), Duration::from_secs(1)).with_affinity(Some(&nobody));
    if q.pop(stranger).is_none() || q.len() != 1 {
        return fail(
            "session claim",
            "a key no worker holds must be served by the strategy's order",
        );
    }
    Ok(())
}
