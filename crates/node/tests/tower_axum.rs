//! A local pool (`PoolService`, its error mapped to `CallError`) and a remote one (`RemotePool`) are the
//! same kind of thing to tower: `Service<Job, Response = String, Error =
//! CallError>`. The same middleware stacks (timeout, concurrency limit)
//! compose with either, the same boxed type holds either, and an axum
//! handler calls either directly.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Json, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use cenote_core::PoolService;
use cenote_node::{CallError, Node, Remote};
use cenote_registry::LocalRegistry;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

type AnyPool = BoxCloneSyncService<Job, String, CallError>;

const TEST_LIMIT: Duration = Duration::from_secs(60);

/// A local pool and the same pool served by a node and called remotely,
/// as one type.
async fn local_and_remote(registry: &LocalRegistry, size: usize) -> (JobPool, Node, [AnyPool; 2]) {
    let pool = job_pool("n1", size).await;
    let node = serve_jobs(as_node(registry, "n1"), pool.clone()).await;
    let remote = Remote::builder(as_node(registry, "caller"))
        .token("test-token")
        .connect()
        .await
        .unwrap();
    let local =
        AnyPool::new(PoolService::<Job, _, _, _>::new(pool.clone()).map_err(CallError::from));
    let remote = AnyPool::new(remote.pool::<Job, String>("jobs"));
    (pool, node, [local, remote])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_timeout_composes_with_either() {
    tokio::time::timeout(TEST_LIMIT, async {
        let registry = LocalRegistry::new("-");
        let (_pool, node, services) = local_and_remote(&registry, 2).await;
        for (which, svc) in ["local", "remote"].into_iter().zip(services) {
            let mut timed = ServiceBuilder::new()
                .timeout(Duration::from_millis(100))
                .service(svc);
            let ok = timed
                .ready()
                .await
                .unwrap()
                .call(Job::Echo("hi".into()))
                .await;
            assert_eq!(ok.unwrap(), "hi", "{which}");

            let began = Instant::now();
            let err = timed
                .ready()
                .await
                .unwrap()
                .call(Job::Sleep(2_000))
                .await
                .unwrap_err();
            assert!(
                err.is::<tower::timeout::error::Elapsed>(),
                "{which}: {err:?}"
            );
            assert!(began.elapsed() < Duration::from_millis(1_000), "{which}");

            // The pool's own typed errors come through the stack as they are.
            let err = timed
                .ready()
                .await
                .unwrap()
                .call(Job::Fail("nope".into()))
                .await
                .unwrap_err();
            let typed = err.downcast_ref::<CallError>();
            assert!(
                matches!(typed, Some(CallError::Worker { kind, .. }) if kind == "Failed"),
                "{which}: {err:?}"
            );
        }
        node.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_concurrency_limit_composes_with_either() {
    tokio::time::timeout(TEST_LIMIT, async {
        let registry = LocalRegistry::new("-");
        let (pool, node, services) = local_and_remote(&registry, 4).await;
        for (which, svc) in ["local", "remote"].into_iter().zip(services) {
            let limited = ServiceBuilder::new().concurrency_limit(1).service(svc);
            let most_busy = Arc::new(AtomicUsize::new(0));
            let watching = tokio::spawn({
                let (pool, most_busy) = (pool.clone(), most_busy.clone());
                async move {
                    loop {
                        most_busy.fetch_max(pool.load().busy, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            });
            let began = Instant::now();
            let calls = (0..4).map(|_| limited.clone().oneshot(Job::Sleep(60)));
            for r in futures::future::join_all(calls).await {
                assert_eq!(r.unwrap(), "n1", "{which}");
            }
            watching.abort();
            // Four workers were free, yet the calls ran one at a time.
            assert!(
                began.elapsed() >= Duration::from_millis(230),
                "{which}: {:?}",
                began.elapsed()
            );
            assert_eq!(most_busy.load(Ordering::SeqCst), 1, "{which}");
        }
        node.shutdown().await;
    })
    .await
    .expect("test timed out");
}

async fn call_handler(
    State(pool): State<AnyPool>,
    Json(job): Json<Job>,
) -> Result<Json<String>, (StatusCode, String)> {
    match pool.oneshot(job).await {
        Ok(answer) => Ok(Json(answer)),
        Err(e @ CallError::Worker { .. }) => Err((StatusCode::UNPROCESSABLE_ENTITY, e.to_string())),
        Err(e) => Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// One HTTP/1.1 request on loopback; the status code and the body.
async fn http_post(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_handler_calls_a_pool_directly() {
    tokio::time::timeout(TEST_LIMIT, async {
        let registry = LocalRegistry::new("-");
        let (_pool, node, [local, remote]) = local_and_remote(&registry, 2).await;
        let app = Router::new()
            .nest(
                "/local",
                Router::new()
                    .route("/call", post(call_handler))
                    .with_state(local),
            )
            .nest(
                "/remote",
                Router::new()
                    .route("/call", post(call_handler))
                    .with_state(remote),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        for prefix in ["/local", "/remote"] {
            let path = format!("{prefix}/call");
            let (status, body) = http_post(addr, &path, r#"{"Echo":"from http"}"#).await;
            assert_eq!((status, body.as_str()), (200, r#""from http""#), "{prefix}");
            let (status, body) = http_post(addr, &path, r#"{"Fail":"bad input"}"#).await;
            assert_eq!(status, 422, "{prefix}: {body}");
            assert!(body.contains("bad input"), "{prefix}: {body}");
        }
        server.abort();
        node.shutdown().await;
    })
    .await
    .expect("test timed out");
}
