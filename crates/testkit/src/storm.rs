//! A storm's view of its Python workers, and the chaos task that strikes
//! them: `tests/chaos_python.rs` and `examples/soak.rs`.
//!
//! Workers are recognised as Python children of this process, or of its
//! fork server, whose environment carries the storm's tag (see
//! [`procs`](crate::procs)). Only pids found that way, and checked again
//! just before the signal, are ever signalled — never anything by name.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{rngs::StdRng, Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use crate::procs::{all_pids, has_tag, read_proc, runs_zygote, signal, Proc};

/// A worker of ours: a Python child of this process (spawn mode), or a
/// child of our fork server (fork-server mode). The fork server itself is
/// not a worker (its workers share its command line, not its parent).
fn is_our_python(p: &Proc) -> bool {
    if !(p.comm.starts_with("python") && p.state != 'Z') {
        return false;
    }
    let me = std::process::id();
    if p.ppid == me {
        return !runs_zygote(p.pid);
    }
    read_proc(p.ppid).is_some_and(|parent| parent.ppid == me && runs_zygote(parent.pid))
}

/// Live (non-zombie) Python children of this process carrying `tag`.
pub fn python_children(tag: &str) -> Vec<Proc> {
    all_pids()
        .into_iter()
        .filter_map(read_proc)
        .filter(|p| is_our_python(p) && has_tag(p.pid, tag))
        .collect()
}

/// Is `pid` still one of this storm's live Python children?
pub fn still_ours(pid: u32, tag: &str) -> bool {
    read_proc(pid).is_some_and(|p| is_our_python(&p)) && has_tag(pid, tag)
}

/// Has the process written anything? A bridge writes nothing until its
/// ready frame, so this tells a serving worker from one still starting: the
/// chaos task aims at workers, not at starts (killing slow starts over and
/// over only measures how fast the machine imports Python).
pub fn has_spoken(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("wchar:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
        .is_some_and(|n| n > 0)
}

/// What the chaos task did.
#[derive(Default)]
pub struct ChaosLog {
    /// Workers it SIGKILLed.
    pub kills: AtomicU64,
    /// Workers it SIGSTOPped.
    pub stops: AtomicU64,
    /// Pids it stopped: each must be gone after close.
    pub stopped: Mutex<HashSet<u32>>,
    /// Every worker pid it saw.
    pub seen: Mutex<HashSet<u32>>,
}

/// Every `every` (±40%), SIGKILL a random serving worker; every fifth strike
/// is a SIGSTOP instead. Runs until `stop` is cancelled; a zero `every`
/// strikes nothing.
pub async fn chaos_monkey(
    tag: String,
    every: Duration,
    seed: u64,
    log: Arc<ChaosLog>,
    stop: CancellationToken,
) {
    if every.is_zero() {
        return;
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0xC4A0_5EED);
    let mut strikes = 0u64;
    loop {
        let pause = every.mul_f64(rng.gen_range(0.6..1.4));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.cancelled() => return,
        }
        let procs = python_children(&tag);
        lock(&log.seen).extend(procs.iter().map(|p| p.pid));
        // Leave stopped ones for the pool to find.
        let running: Vec<u32> = procs
            .iter()
            .filter(|p| p.state != 'T' && has_spoken(p.pid))
            .map(|p| p.pid)
            .collect();
        if running.is_empty() {
            continue;
        }
        let victim = running[rng.gen_range(0..running.len())];
        if !still_ours(victim, &tag) {
            continue;
        }
        strikes += 1;
        if strikes.is_multiple_of(5) {
            if signal(victim, libc::SIGSTOP) {
                log.stops.fetch_add(1, Ordering::SeqCst);
                lock(&log.stopped).insert(victim);
            }
        } else if signal(victim, libc::SIGKILL) {
            log.kills.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
