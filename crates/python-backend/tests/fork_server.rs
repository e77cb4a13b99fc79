//! The fork-server start mode against real python3: workers are forked from
//! one process that imported the handler once; each leads its own process
//! group, runs the after-fork hook and draws its own random numbers; the
//! pool survives the fork server's death; unsafe handlers fall back to
//! spawn and say why; nothing outlives `close`.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use cenote_core::{Error, Pool};
use cenote_python::{PyCall, PythonConfig, PythonError, PythonFactory, StartMode};
use common::*;
use serde_json::{json, Value};

fn forking(tag: &str, mode: StartMode) -> PythonConfig {
    PythonConfig::new(py_dir().join("forking.py"))
        .env(TAG_VAR, tag)
        .start_mode(mode)
        .startup_timeout(Duration::from_secs(20))
}

async fn who_all(pool: &PyPool, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut guards = Vec::new();
    for _ in 0..n {
        guards.push(pool.get().await.unwrap());
    }
    for g in &mut guards {
        out.push(g.call(PyCall::new("who", json!(null))).await.unwrap());
    }
    out
}

#[tokio::test]
async fn workers_are_forked_from_one_server_and_set_up_after_the_fork() {
    let tag = test_tag("forked");
    let pool = chaos_builder(forking(&tag, StartMode::Auto), 3)
        .build()
        .await
        .unwrap();
    let report = pool.factory().start_mode();
    assert_eq!(report.mode, StartMode::ForkServer, "{report:?}");
    assert_eq!(report.fallback, None);
    let server = report.fork_server_pid.expect("a fork server pid");
    let workers = who_all(&pool, 3).await;
    let mut randoms = HashSet::new();
    for w in &workers {
        let pid = w["pid"].as_u64().unwrap();
        // Forked by the server, which imported the module once.
        assert_eq!(w["ppid"].as_u64(), Some(u64::from(server)), "{w}");
        assert_eq!(w["imported_in"].as_u64(), Some(u64::from(server)), "{w}");
        // Its own process group, and its own after-fork hook.
        assert_eq!(w["pgid"].as_u64(), Some(pid), "{w}");
        assert_eq!(w["hooked_in"].as_u64(), Some(pid), "{w}");
        randoms.insert(w["random"].to_string());
    }
    assert_eq!(
        randoms.len(),
        3,
        "workers share a random state: {workers:?}"
    );
    close_none_left(pool, &tag).await;
    assert!(
        fork_servers(&tag).is_empty(),
        "the fork server outlived close"
    );
}

#[tokio::test]
async fn spawn_mode_starts_fresh_interpreters() {
    let tag = test_tag("spawned");
    let pool = chaos_builder(forking(&tag, StartMode::Spawn), 2)
        .build()
        .await
        .unwrap();
    let report = pool.factory().start_mode();
    assert_eq!(
        (report.mode, report.fork_server_pid),
        (StartMode::Spawn, None)
    );
    for w in who_all(&pool, 2).await {
        let pid = w["pid"].as_u64().unwrap();
        assert_eq!(w["imported_in"].as_u64(), Some(pid), "{w}");
        assert_eq!(w["ppid"].as_u64(), Some(u64::from(std::process::id())));
    }
    assert!(fork_servers(&tag).is_empty());
    close_none_left(pool, &tag).await;
}

#[tokio::test]
async fn a_handler_that_leaves_threads_falls_back_to_spawn_and_says_why() {
    let tag = test_tag("threads");
    let config = PythonConfig::new(py_dir().join("threads_at_import.py"))
        .env(TAG_VAR, &tag)
        .start_mode(StartMode::Auto);
    let pool = chaos_builder(config, 2).build().await.unwrap();
    let report = pool.factory().start_mode();
    assert_eq!(report.mode, StartMode::Spawn, "{report:?}");
    let why = report.fallback.unwrap_or_default();
    assert!(why.contains("threads"), "{why}");
    assert_eq!(
        pool.call(PyCall::new("ping", json!(null))).await.unwrap(),
        json!("pong")
    );
    assert!(
        fork_servers(&tag).is_empty(),
        "the unsafe fork server is gone"
    );
    close_none_left(pool, &tag).await;
}

#[tokio::test]
async fn a_failing_after_fork_hook_is_a_clear_start_error() {
    let tag = test_tag("badhook");
    let factory = PythonFactory::new(
        PythonConfig::new(py_dir().join("bad_after_fork.py"))
            .env(TAG_VAR, &tag)
            .start_mode(StartMode::ForkServer),
    );
    let err = factory.spawn("t/badhook").await.unwrap_err();
    match &err {
        PythonError::Startup { message, .. } => {
            assert!(message.contains("cannot reopen the database"), "{err}")
        }
        other => panic!("expected a start error, got {other:?}"),
    }
    drop(factory);
    assert!(wait_gone(&tag, Duration::from_secs(2)).await.is_empty());
}

#[tokio::test]
async fn an_import_error_in_the_fork_server_is_the_same_start_error() {
    let tag = test_tag("zimport");
    let factory = PythonFactory::new(
        PythonConfig::new(py_dir().join("import_error.py"))
            .env(TAG_VAR, &tag)
            .start_mode(StartMode::ForkServer),
    );
    let err = factory.spawn("t/zimport").await.unwrap_err();
    assert!(
        matches!(err, PythonError::Startup { .. }) && err.to_string().contains("failed to import"),
        "{err}"
    );
    assert!(fork_servers(&tag).is_empty());
}

/// SIGKILL of the fork server: its workers go too (each takes its own group
/// down), callers see crashes, not hangs, and the pool returns to full size
/// with workers forked from a new server.
#[tokio::test]
async fn the_pool_recovers_from_the_fork_servers_death() {
    let tag = test_tag("zkill");
    let pool = chaos_builder(forking(&tag, StartMode::ForkServer), 3)
        .build()
        .await
        .unwrap();
    let first = pool.factory().start_mode().fork_server_pid.unwrap();
    let grandchild = pool
        .call(PyCall::new("spawn_child", json!(null)))
        .await
        .unwrap()
        .as_u64()
        .unwrap() as u32;
    assert!(alive(grandchild));
    // SAFETY: kill(2) on the fork server this test's pool started.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    assert!(
        eventually(Duration::from_secs(2), || !alive(grandchild)).await,
        "a worker's child outlived the fork server"
    );
    let recovered = eventually(Duration::from_secs(15), || {
        let s = pool.status();
        s.idle == 3
            && pool
                .factory()
                .start_mode()
                .fork_server_pid
                .is_some_and(|p| p != first)
    })
    .await;
    assert!(
        recovered,
        "{:?} {:?}",
        pool.status(),
        pool.factory().start_mode()
    );
    let second = pool.factory().start_mode().fork_server_pid.unwrap();
    for w in who_all(&pool, 3).await {
        assert_eq!(w["ppid"].as_u64(), Some(u64::from(second)), "{w}");
    }
    close_none_left(pool, &tag).await;
    assert!(fork_servers(&tag).is_empty());
}

/// A crashed worker is replaced by a fork, and the crash report carries the
/// exit code the fork server saw.
#[tokio::test]
async fn a_crashed_worker_is_replaced_by_a_fork_with_its_exit_code() {
    let tag = test_tag("zcrash");
    let pool = chaos_builder(chaos(&tag).start_mode(StartMode::ForkServer), 2)
        .build()
        .await
        .unwrap();
    let server = pool.factory().start_mode().fork_server_pid.unwrap();
    let err = pool
        .call(PyCall::new("exit_now", json!(null)))
        .await
        .unwrap_err();
    match &err {
        Error::Crashed(PythonError::Crashed { status, .. }) => {
            assert_eq!(*status, cenote_python::Exit::Code(3), "{err}")
        }
        other => panic!("expected a crash, got {other:?}"),
    }
    assert!(eventually(Duration::from_secs(10), || pool.status().idle == 2).await);
    for pid in tagged(&tag) {
        assert_eq!(parent_of(pid), Some(server), "worker {pid} was not forked");
    }
    assert_eq!(pool.factory().start_mode().fork_server_pid, Some(server));
    close_none_left(pool, &tag).await;
}

#[tokio::test]
async fn a_pool_dropped_without_close_leaves_no_fork_server() {
    let tag = test_tag("zdrop");
    let pool: PyPool = Pool::builder(PythonFactory::new(forking(&tag, StartMode::ForkServer)))
        .size(2)
        .shutdown_grace(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    assert_eq!(fork_servers(&tag).len(), 1);
    drop(pool);
    let gone = eventually(Duration::from_secs(5), || {
        tagged(&tag).is_empty() && fork_servers(&tag).is_empty()
    })
    .await;
    assert!(gone, "{:?} {:?}", tagged(&tag), fork_servers(&tag));
}

#[tokio::test]
async fn preloaded_modules_are_imported_once_in_the_fork_server() {
    let tag = test_tag("preload");
    let pool = chaos_builder(
        forking(&tag, StartMode::ForkServer).preload(["csv", "decimal"]),
        2,
    )
    .build()
    .await
    .unwrap();
    for module in ["csv", "decimal"] {
        let v = pool
            .call(PyCall::new("loaded", json!([module])))
            .await
            .unwrap();
        assert_eq!(v, json!(true), "{module} not preloaded");
    }
    // Not preloaded, not imported by the handler: absent.
    let v = pool
        .call(PyCall::new("loaded", json!(["tomllib"])))
        .await
        .unwrap();
    assert_eq!(v, json!(false));
    pool.close().await;
    assert!(fork_servers(&tag).is_empty());
}

#[tokio::test]
async fn an_event_loop_made_at_import_falls_back_to_spawn() {
    let tag = test_tag("loop");
    let config = PythonConfig::new(py_dir().join("loop_at_import.py"))
        .env(TAG_VAR, &tag)
        .start_mode(StartMode::ForkServer);
    let pool = chaos_builder(config, 1).build().await.unwrap();
    let report = pool.factory().start_mode();
    assert_eq!(report.mode, StartMode::Spawn, "{report:?}");
    assert!(report.fallback.unwrap_or_default().contains("event loop"));
    assert_eq!(
        pool.call(PyCall::new("ping", json!(null))).await.unwrap(),
        json!("pong")
    );
    close_none_left(pool, &tag).await;
}
