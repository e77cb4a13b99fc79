//! SIGKILL of a host process that runs a pool leaves no Python process
//! behind: each bridge notices its parent is gone and takes its process
//! group with it; in fork-server mode the fork server sees its socket close
//! and takes every worker's group with it, then exits.
//!
//! The host is this test binary re-run with an env variable, so the test
//! needs nothing built beyond itself.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cenote_python::PyCall;
use common::*;
use serde_json::json;

const HOST_TAG: &str = "CENOTE_ORPHAN_HOST_TAG";

/// In the child: run a pool with an idle worker, a busy one, and a busy one
/// with a grandchild, announce, then wait to be killed.
#[test]
fn host_process() {
    let Ok(tag) = std::env::var(HOST_TAG) else {
        return; // Only meaningful when re-run as the host.
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let pool = chaos_pool(chaos(&tag), 3).await;
        let p1 = pool.clone();
        tokio::spawn(async move { p1.call(PyCall::new("sleep", json!([60]))).await });
        let p2 = pool.clone();
        tokio::spawn(async move { p2.call(PyCall::new("spawn_and_hang", json!([60]))).await });
        let ok = eventually(Duration::from_secs(10), || tagged(&tag).len() == 4).await;
        println!("CENOTE_HOST_READY {ok}");
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

#[tokio::test]
async fn sigkill_of_the_host_leaves_no_python_behind() {
    init_tracing();
    if std::env::var(HOST_TAG).is_ok() {
        return;
    }
    let tag = new_tag("orphans");
    let mut host = Command::new(std::env::current_exe().unwrap())
        .args(["host_process", "--exact", "--nocapture", "--test-threads=1"])
        .env(HOST_TAG, &tag)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = host.stdout.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| {
                // The harness prints "test host_process ... " on the same line.
                l.find("CENOTE_HOST_READY").map(|at| l[at..].to_string())
            })
    });
    let line = match tokio::time::timeout(Duration::from_secs(30), ready).await {
        Ok(line) => line.unwrap(),
        Err(_) => {
            let _ = host.kill();
            let _ = host.wait();
            panic!("host did not announce readiness within 30 s");
        }
    };
    assert_eq!(line.as_deref(), Some("CENOTE_HOST_READY true"));
    let before = tagged(&tag);
    assert_eq!(before.len(), 4, "3 bridges + 1 grandchild: {before:?}");
    let servers = fork_servers(&tag);
    assert!(servers.len() <= 1, "{servers:?}");
    host.kill().unwrap(); // SIGKILL
    host.wait().unwrap();
    let killed = Instant::now();
    let left = wait_gone(&tag, Duration::from_secs(2)).await;
    assert!(
        left.is_empty(),
        "python left {:?} after the host died: {left:?}",
        killed.elapsed()
    );
    let gone = eventually(
        Duration::from_secs(2).saturating_sub(killed.elapsed()),
        || servers.iter().all(|&p| !alive(p)),
    )
    .await;
    assert!(
        gone,
        "the fork server outlived the host by 2 s: {servers:?}"
    );
}
