//! Power of two choices: pick two candidates at random and take the less
//! loaded. It needs no central balancer and, unlike "always the least
//! loaded", does not send every caller that read the same stale load to the
//! same node at once.
//!
//! *Why not `tower::balance::p2c`:* it is the same rule, but it owns its
//! endpoints (a `Discover` stream of services) and measures load from the
//! client side only (`PendingRequests`, `PeakEwma`). Here the load that
//! matters is what the node publishes to the registry (its idle workers and
//! waiting callers, which other callers' traffic moves too), plus this
//! caller's own calls not yet answered; and each call chooses among the
//! directory's callable candidates (none ejected), preferring those a
//! retried call has not failed on yet. Feeding that through tower would mean a
//! `Discover` over the directory and a `Load` that reads it, to run the
//! same ten lines below. `tests/spread.rs` checks the outcome: under
//! uneven load, calls go to the less loaded nodes.

use rand::Rng;

/// How loaded a candidate looks: callers waiting for its workers plus our
/// own calls to it not yet answered, minus its idle workers. Our in-flight
/// count covers the time until the node's next load update.
pub(crate) fn score(idle: usize, waiting: usize, in_flight: usize) -> i64 {
    let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX / 4);
    n(waiting) + n(in_flight) - n(idle)
}

/// The index of the chosen candidate among `scores` (`None` if empty).
pub(crate) fn two_choices(scores: &[i64], rng: &mut impl Rng) -> Option<usize> {
    match scores.len() {
        0 => None,
        1 => Some(0),
        n => {
            let a = rng.gen_range(0..n);
            // A second, distinct candidate.
            let b = (a + rng.gen_range(1..n)) % n;
            Some(if scores[b] < scores[a] { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn the_most_loaded_of_several_is_never_chosen() {
        let mut rng = StdRng::seed_from_u64(7);
        // Candidate 1 is saturated: of two distinct candidates, at least
        // one is better.
        let scores = [-2, 9, 0];
        let mut chosen = [0; 3];
        for _ in 0..3000 {
            chosen[two_choices(&scores, &mut rng).unwrap()] += 1;
        }
        assert_eq!(chosen[1], 0, "{chosen:?}");
        // The least loaded wins every pair it is in (2 of 3 pairs), the
        // middle one only the pair without it.
        assert!(chosen[0] > 1800 && chosen[2] > 800, "{chosen:?}");
    }

    #[test]
    fn equal_loads_spread_evenly() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut chosen = [0u32; 3];
        for _ in 0..3000 {
            chosen[two_choices(&[0, 0, 0], &mut rng).unwrap()] += 1;
        }
        assert!(chosen.iter().all(|&c| c > 800), "{chosen:?}");
    }

    #[test]
    fn edges() {
        let mut rng = StdRng::seed_from_u64(3);
        assert_eq!(two_choices(&[], &mut rng), None);
        assert_eq!(two_choices(&[5], &mut rng), Some(0));
        assert_eq!(score(3, 1, 2), 0);
        assert!(score(0, usize::MAX, usize::MAX) > score(0, 1, 1));
    }
}
