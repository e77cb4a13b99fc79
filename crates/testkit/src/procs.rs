//! Processes a test started, as /proc shows them.
//!
//! Every process a test starts carries [`TAG_VAR`]`=<tag>` in its
//! environment, with a tag unique to the test ([`new_tag`]); Python workers
//! and their fork servers inherit it. So a test finds its own processes,
//! and only those, by tag, checks that none outlives it ([`wait_gone`]),
//! and signals only pids it found that way — never anything by name.

use std::time::Duration;

/// The env variable that tags a test's processes.
pub const TAG_VAR: &str = "CENOTE_TEST_TAG";

/// A tag unique to this test process and run.
pub fn new_tag(name: &str) -> String {
    format!("{name}-{}-{}", std::process::id(), rand::random::<u32>())
}

/// One process as /proc shows it.
#[derive(Debug, Clone)]
pub struct Proc {
    /// Its pid.
    pub pid: u32,
    /// Its parent's pid.
    pub ppid: u32,
    /// Its command name (`python3.11`, `etcd`).
    pub comm: String,
    /// `R`, `S`, `T` (stopped), `Z` (zombie), ...
    pub state: char,
}

/// `pid` as /proc shows it, if it exists.
pub fn read_proc(pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(Proc {
        pid,
        ppid,
        comm,
        state,
    })
}

/// Every pid in /proc.
pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `pid`'s environment carries `tag`.
pub fn has_tag(pid: u32, tag: &str) -> bool {
    let needle = format!("{TAG_VAR}={tag}");
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        .unwrap_or(false)
}

/// Whether `pid` is a zombie (exited, not yet reaped).
pub fn is_zombie(pid: u32) -> bool {
    read_proc(pid).is_some_and(|p| p.state == 'Z')
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    read_proc(pid).is_some_and(|p| p.state != 'Z')
}

/// The parent pid of `pid`.
pub fn parent_of(pid: u32) -> Option<u32> {
    read_proc(pid).map(|p| p.ppid)
}

/// Whether `pid` runs a Python bridge as a fork server (or was forked
/// from one: a fork keeps argv).
pub fn runs_zygote(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).any(|arg| arg == b"--zygote"))
        .unwrap_or(false)
}

/// Whether `pid` is a fork server itself: its workers share its command
/// line, but their parent is the fork server, whose parent is not.
pub fn is_fork_server(pid: u32) -> bool {
    runs_zygote(pid) && !parent_of(pid).is_some_and(runs_zygote)
}

/// Live (non-zombie) processes carrying `tag`, fork servers included,
/// wherever they were reparented.
pub fn tagged(tag: &str) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&pid| has_tag(pid, tag) && alive(pid))
        .collect()
}

/// The live fork servers carrying `tag`.
pub fn fork_servers(tag: &str) -> Vec<u32> {
    tagged(tag)
        .into_iter()
        .filter(|&pid| is_fork_server(pid))
        .collect()
}

/// Wait (at most `limit`) until `find` finds no process; those still
/// found at `limit`.
pub async fn wait_gone(limit: Duration, mut find: impl FnMut() -> Vec<u32>) -> Vec<u32> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = find();
        if left.is_empty() || tokio::time::Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Signal `pid`; whether the signal was delivered. Only for pids a test
/// found as its own.
pub fn signal(pid: u32, sig: i32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) takes any pid and signal number and only reports an
    // error for bad ones; the caller found `pid` as its own process.
    unsafe { libc::kill(pid, sig) == 0 }
}
