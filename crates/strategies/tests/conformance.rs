//! Every shipped strategy passes the public conformance checks, for each
//! queue it names; and `Deadline` serves the nearest deadline first.

use std::time::Duration;

use cenote_core::conformance::{self, waiter};
use cenote_core::{Caller, Queue, Stamp};
use cenote_strategies::{Deadline, DeadlineQueue, Fifo, Lifo, Priority};

/// Both of a strategy's queues pass the checks.
fn conforms<S: cenote_core::IdleStrategy + cenote_core::WaitStrategy>() {
    conformance::check_idle_strategy::<S>().unwrap();
    conformance::check_wait_strategy::<S>().unwrap();
}

#[test]
fn every_shipped_strategy_conforms() {
    conforms::<Fifo>();
    conforms::<Lifo>();
    conforms::<Priority>();
    // Deadline orders waiters only.
    conformance::check_wait_strategy::<Deadline>().unwrap();
}

#[test]
fn deadline_serves_the_nearest_deadline_then_arrival_order() {
    let t0 = Stamp::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut q = DeadlineQueue::default();
    // (arrival ms, timeout ms): deadlines 500, 130, 300, 130, 20.
    for (arrival, timeout) in [(0, 500), (10, 120), (20, 280), (30, 100), (40, 0)] {
        q.push(waiter(
            Caller::new(at(arrival), Duration::from_millis(timeout)).with_priority(7),
        ));
    }
    let order: Vec<_> = std::iter::from_fn(|| q.pop(()))
        .map(|w| w.arrival().since(t0).as_millis())
        .collect();
    assert_eq!(order, vec![40, 10, 30, 20, 0]);
}

#[test]
fn deadline_removes_by_key_and_ignores_priority() {
    let t0 = Stamp::now();
    let mut q = DeadlineQueue::default();
    let late = q.push(waiter(
        Caller::new(t0, Duration::from_secs(9)).with_priority(100),
    ));
    let soon = q.push(waiter(Caller::new(t0, Duration::from_secs(1))));
    assert_eq!(
        q.remove(soon).map(|w| w.caller().timeout()),
        Some(Duration::from_secs(1))
    );
    assert!(q.remove(soon).is_none());
    assert_eq!(q.pop(()).map(|w| w.priority()), Some(100));
    assert!(q.remove(late).is_none());
    assert!(q.is_empty());
}

/// The checks catch what they claim to: queues broken on purpose fail them,
/// each with the rule it breaks.
mod broken {
    use cenote_core::conformance::{check_idle_queue, Probe};
    use cenote_core::{Caller, IdleWorker, Queue};

    /// A stack with one flaw chosen by `FLAW`.
    struct Flawed<const FLAW: u8> {
        entries: Vec<(u64, IdleWorker<Probe>)>,
        next: u64,
    }

    impl<const FLAW: u8> Default for Flawed<FLAW> {
        fn default() -> Self {
            Flawed {
                entries: Vec::new(),
                next: 0,
            }
        }
    }

    const IGNORES_CLAIMS: u8 = 0;
    const LAZY_REMOVE: u8 = 1;
    const OVER_LIMIT: u8 = 2;
    const REUSES_KEYS: u8 = 3;

    impl<const FLAW: u8> Queue<IdleWorker<Probe>> for Flawed<FLAW> {
        type Key = u64;

        fn push(&mut self, entry: IdleWorker<Probe>) -> u64 {
            self.next += 1;
            let key = if FLAW == REUSES_KEYS {
                self.entries.len() as u64
            } else {
                self.next
            };
            self.entries.push((key, entry));
            key
        }

        fn pop(&mut self, caller: Caller<'_>) -> Option<IdleWorker<Probe>> {
            let claimed = caller
                .affinity()
                .filter(|_| FLAW != IGNORES_CLAIMS)
                .and_then(|a| self.entries.iter().position(|(_, w)| w.holds(&a.key)));
            match claimed {
                Some(at) => Some(self.entries.remove(at).1),
                None => self.entries.pop().map(|(_, w)| w),
            }
        }

        fn remove(&mut self, key: u64) -> Option<IdleWorker<Probe>> {
            if FLAW == LAZY_REMOVE {
                return None;
            }
            let at = self.entries.iter().position(|(k, _)| *k == key)?;
            Some(self.entries.remove(at).1)
        }

        fn len(&self) -> usize {
            self.entries.len()
        }

        fn take_matching(
            &mut self,
            limit: usize,
            pred: &mut dyn FnMut(&mut IdleWorker<Probe>) -> bool,
        ) -> Vec<IdleWorker<Probe>> {
            let limit = if FLAW == OVER_LIMIT {
                usize::MAX
            } else {
                limit
            };
            let mut out = Vec::new();
            let mut i = self.entries.len();
            while i > 0 && out.len() < limit {
                i -= 1;
                if pred(&mut self.entries[i].1) {
                    out.push(self.entries.remove(i).1);
                }
            }
            out
        }
    }

    fn rule_broken<Q: Queue<IdleWorker<Probe>>>() -> String {
        check_idle_queue::<Q>()
            .expect_err("a broken queue passed")
            .0
    }

    #[test]
    fn each_flaw_is_caught_by_its_rule() {
        assert!(rule_broken::<Flawed<IGNORES_CLAIMS>>().starts_with("session claim"));
        assert!(rule_broken::<Flawed<LAZY_REMOVE>>().starts_with("remove by key"));
        let over = rule_broken::<Flawed<OVER_LIMIT>>();
        assert!(
            over.starts_with("take_matching") || over.starts_with("take_first"),
            "{over}"
        );
        let reused = rule_broken::<Flawed<REUSES_KEYS>>();
        assert!(
            reused.starts_with("remove by key") || reused.starts_with("stale key"),
            "{reused}"
        );
    }

    #[test]
    fn a_sound_stack_passes() {
        check_idle_queue::<Flawed<{ u8::MAX }>>().unwrap();
    }
}
