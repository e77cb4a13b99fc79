//! Many calls in flight per Python process (`PythonConfig::concurrency`):
//! on one worker's lanes, without a pool. Each case runs in both start
//! modes. (Through a pool: `concurrent_pool.rs`.)

mod common;

use std::time::{Duration, Instant};

use cenote_core::Worker;
use cenote_python::{PyCall, PythonConfig, PythonError, PythonFactory, PythonWorker, StartMode};
use common::*;
use futures::StreamExt;
use serde_json::json;

fn many(tag: &str, mode: StartMode, k: usize) -> PythonConfig {
    py_config("many.py", tag, mode).concurrency(k)
}

/// `n` lanes of `w`.
fn lanes(w: &PythonWorker, n: usize) -> Vec<PythonWorker> {
    (0..n).map(|_| w.lane().expect("a lane")).collect()
}

/// Call `call(i)` on lane `i` of `lanes`, all at once.
async fn run_concurrently(
    lanes: &mut [PythonWorker],
    call: impl Fn(usize) -> PyCall,
) -> Vec<Result<serde_json::Value, PythonError>> {
    futures::future::join_all(
        lanes
            .iter_mut()
            .enumerate()
            .map(|(i, lane)| lane.call_json(call(i), ctx())),
    )
    .await
}

#[tokio::test]
async fn sixty_four_waiting_calls_share_one_process() {
    init_tracing();
    for mode in MODES {
        for function in ["async_sleep", "sync_sleep"] {
            let tag = new_tag("k64");
            let factory = PythonFactory::new(many(&tag, mode, 64));
            let w = factory.spawn("t/k64").await.unwrap();
            assert_eq!(w.capacity(), 64);
            assert_eq!(w.ready_info().concurrency, 64);
            let mut ls = lanes(&w, 64);
            // Warm up: threads for the sync handlers start on first use.
            run_concurrently(&mut ls, |i| PyCall::new(function, json!([0.01, i]))).await;
            let began = Instant::now();
            let got = run_concurrently(&mut ls, |i| PyCall::new(function, json!([0.2, i]))).await;
            let took = began.elapsed();
            for (i, r) in got.into_iter().enumerate() {
                assert_eq!(r.unwrap(), json!(i), "{mode:?} {function}");
            }
            assert!(
                took < Duration::from_millis(400),
                "{mode:?} {function}: 64 calls of 200 ms took {took:?}"
            );
            assert_eq!(tagged(&tag).len(), 1, "{mode:?}: one process");
            drop(ls);
            w.shutdown(Duration::from_secs(1)).await;
            cenote_core::Factory::shutdown(&factory).await;
            assert!(wait_gone(&tag, Duration::from_secs(5)).await.is_empty());
        }
    }
}

/// Every answer reaches the call it answers: 10,000 calls with distinct
/// arguments over 16 lanes, each checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_never_crossed() {
    for (mode, tag) in modes("crossed") {
        let factory = PythonFactory::new(many(&tag, mode, 16));
        let w = factory.spawn("t/crossed").await.unwrap();
        let tasks: Vec<_> = lanes(&w, 16)
            .into_iter()
            .enumerate()
            .map(|(lane, mut l)| {
                tokio::spawn(async move {
                    for i in 0..625u64 {
                        let v = lane as u64 * 1_000_000 + i;
                        let (function, arg) = if i % 2 == 0 {
                            ("echo", json!([v]))
                        } else {
                            ("sync_echo", json!([v]))
                        };
                        let got = l
                            .call_json(PyCall::new(function, arg), ctx())
                            .await
                            .unwrap();
                        assert_eq!(got, json!(v));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(w.tasks_served(), 10_000, "{mode:?}");
        w.shutdown(Duration::from_secs(1)).await;
        cenote_core::Factory::shutdown(&factory).await;
        assert!(wait_gone(&tag, Duration::from_secs(5)).await.is_empty());
    }
}

/// A crash fails every call in flight on the process, each with the exit
/// status, and nothing hangs.
#[tokio::test]
async fn a_crash_fails_every_call_in_flight() {
    for (mode, tag) in modes("crash8") {
        let factory = PythonFactory::new(many(&tag, mode, 8));
        let mut w = factory.spawn("t/crash8").await.unwrap();
        let mut ls = lanes(&w, 8);
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            run_concurrently(&mut ls, |i| {
                if i == 3 {
                    PyCall::new("die_after", json!([0.1]))
                } else {
                    PyCall::new("async_sleep", json!([5, i]))
                }
            }),
        )
        .await
        .expect("nothing hangs");
        for r in got {
            assert!(
                matches!(
                    r,
                    Err(PythonError::Crashed {
                        status: cenote_python::Exit::Code(9),
                        ..
                    })
                ),
                "{mode:?}: {r:?}"
            );
        }
        assert!(w.is_broken());
        assert!(ls.iter_mut().all(|l| l.is_broken()));
        drop(ls);
        w.shutdown(Duration::ZERO).await;
        cenote_core::Factory::shutdown(&factory).await;
        assert!(wait_gone(&tag, Duration::from_secs(5)).await.is_empty());
    }
}

/// A late call is cancelled alone: the seven others answer. One that will
/// not let go takes the process, and every call on it says which call.
#[tokio::test]
async fn a_late_call_is_cancelled_alone() {
    for (mode, tag) in modes("late8") {
        let factory = PythonFactory::new(many(&tag, mode, 8));
        let mut w = factory.spawn("t/late8").await.unwrap();
        let pid = w.ready_info().pid;
        let mut ls = lanes(&w, 8);
        let (late, rest) = ls.split_at_mut(1);
        let late = &mut late[0];
        for hang in ["async_hang", "busy_loop"] {
            let others = futures::future::join_all(
                rest.iter_mut()
                    .enumerate()
                    .map(|(i, l)| l.call_json(PyCall::new("async_sleep", json!([0.3, i])), ctx())),
            );
            let cut = async {
                let r = tokio::time::timeout(
                    Duration::from_millis(100),
                    late.call_json(PyCall::new(hang, json!([30])), ctx()),
                )
                .await;
                assert!(r.is_err(), "{mode:?} {hang}");
                late.cancel(Duration::from_millis(250)).await
            };
            let (others, cancelled) = tokio::join!(others, cut);
            assert_eq!(cancelled, cenote_core::Cancel::Freed, "{mode:?} {hang}");
            for (i, r) in others.into_iter().enumerate() {
                assert_eq!(r.unwrap(), json!(i), "{mode:?} {hang}");
            }
        }
        assert!(!w.is_broken());
        // A call that will not let go: killed, and the others say why.
        let others = futures::future::join_all(
            rest.iter_mut()
                .map(|l| l.call_json(PyCall::new("async_sleep", json!([5])), ctx())),
        );
        let cut = async {
            let _ = tokio::time::timeout(
                Duration::from_millis(100),
                late.call_json(PyCall::new("stubborn", json!([30])), ctx()),
            )
            .await;
            late.cancel(Duration::from_millis(250)).await
        };
        let (others, cancelled) = tokio::join!(others, cut);
        assert_eq!(cancelled, cenote_core::Cancel::Failed, "{mode:?}");
        for r in others {
            match r {
                Err(PythonError::Killed { pid: p, cause }) => {
                    assert_eq!(p, pid);
                    assert!(cause.contains("stubborn"), "{cause}");
                }
                other => panic!("{mode:?}: {other:?}"),
            }
        }
        drop(ls);
        w.shutdown(Duration::ZERO).await;
        cenote_core::Factory::shutdown(&factory).await;
        assert!(wait_gone(&tag, Duration::from_secs(5)).await.is_empty());
    }
}

/// Streams run concurrently, their items interleaved on the wire.
#[tokio::test]
async fn streams_interleave() {
    for (mode, tag) in modes("streams") {
        let factory = PythonFactory::new(many(&tag, mode, 4));
        let w = factory.spawn("t/streams").await.unwrap();
        let mut ls = lanes(&w, 4);
        let began = Instant::now();
        let streams = ls.iter_mut().enumerate().map(|(i, l)| {
            let function = if i % 2 == 0 { "tokens" } else { "sync_tokens" };
            l.stream(PyCall::new(function, json!([50, 0.004])), ctx())
                .collect::<Vec<_>>()
        });
        let all = futures::future::join_all(streams).await;
        for items in all {
            let items: Vec<_> = items.into_iter().map(Result::unwrap).collect();
            assert_eq!(items.len(), 50, "{mode:?}");
            assert_eq!(items[49], json!("t49"));
        }
        // Four streams of 200 ms each, side by side.
        assert!(
            began.elapsed() < Duration::from_millis(600),
            "{:?}",
            began.elapsed()
        );
        drop(ls);
        w.shutdown(Duration::from_secs(1)).await;
        cenote_core::Factory::shutdown(&factory).await;
        assert!(wait_gone(&tag, Duration::from_secs(5)).await.is_empty());
    }
}
