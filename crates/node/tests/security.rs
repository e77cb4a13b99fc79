//! What a node does with callers it should not trust, on loopback: a wrong
//! or missing token, a request over the frame limit, garbage bodies and
//! headers sent straight over gRPC, an unknown method — each gets a typed
//! error and the node serves on. An open node says so. TLS works with a
//! certificate made here, and is refused without the CA that signed it.

mod common;

use std::time::Duration;

use bytes::Bytes;
use cenote_node::wire::{RawCodec, CALL_PATH};
use cenote_node::{CallError, Node, Remote};
use cenote_registry::LocalRegistry;
use common::*;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

const TEST_LIMIT: Duration = Duration::from_secs(60);

async fn caller_with(registry: &LocalRegistry, token: Option<&str>) -> Remote {
    let mut b = Remote::builder(as_node(registry, "caller"));
    if let Some(t) = token {
        b = b.token(t);
    }
    b.connect().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_token_is_unauthorized_and_the_node_serves_on() {
    tokio::time::timeout(TEST_LIMIT, async {
        let registry = LocalRegistry::new("-");
        let node = serve_jobs(as_node(&registry, "n1"), job_pool("n1", 1).await).await;
        for token in [Some("wrong-token"), Some("test-token-"), Some(""), None] {
            let jobs = caller_with(&registry, token)
                .await
                .pool::<Job, String>("jobs");
            assert_eq!(
                jobs.call(Job::Whoami).await.unwrap_err(),
                CallError::Unauthorized { node: "n1".into() },
                "token {token:?}"
            );
        }
        let jobs = caller_with(&registry, Some("test-token"))
            .await
            .pool::<Job, String>("jobs");
        assert_eq!(jobs.call(Job::Whoami).await.unwrap(), "n1");
        node.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "current_thread")]
async fn an_open_node_says_so_loudly() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::WARN));
    let registry = LocalRegistry::new("-");
    let open = Node::builder(as_node(&registry, "open"))
        .pool::<Job>("jobs", job_pool("open", 1).await)
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    open.shutdown().await;
    let closed = serve_jobs(as_node(&registry, "closed"), job_pool("closed", 1).await).await;
    closed.shutdown().await;
    let text = logs.text();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("WITHOUT a token"))
        .collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(
        warnings[0].contains("WARN") && warnings[0].contains("open"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_the_frame_limit_are_too_large_and_the_node_serves_on() {
    tokio::time::timeout(TEST_LIMIT, async {
        let registry = LocalRegistry::new("-");
        let node = jobs_node(as_node(&registry, "n1"), job_pool("n1", 1).await)
            .max_request_bytes(1024)
            .serve("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let jobs = caller_with(&registry, Some("test-token"))
            .await
            .pool::<Job, String>("jobs");
        let err = jobs.call(Job::Echo("x".repeat(4096))).await.unwrap_err();
        assert!(
            matches!(&err, CallError::TooLarge { detail } if detail.contains("1024")),
            "{err:?}"
        );
        assert_eq!(
            jobs.call(Job::Echo("x".repeat(900))).await.unwrap().len(),
            900
        );

        // Answers are bounded on the caller's side too.
        let small = Remote::builder(as_node(&registry, "caller"))
            .token("test-token")
            .max_response_bytes(100)
            .connect()
            .await
            .unwrap()
            .pool::<Job, String>("jobs");
        let err = small.call(Job::Echo("y".repeat(500))).await.unwrap_err();
        assert!(matches!(err, CallError::TooLarge { .. }), "{err:?}");
        assert_eq!(small.call(Job::Whoami).await.unwrap(), "n1");
        node.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// Send `body` with `headers` straight over gRPC, as any client could;
/// the typed error the node answers with.
async fn raw_call(
    url: &str,
    path: &str,
    headers: &[(&'static str, &str)],
    body: &'static [u8],
) -> Result<Bytes, tonic::Status> {
    let channel = Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(vec![Bytes::from_static(body)]);
    request
        .metadata_mut()
        .insert("authorization", "Bearer test-token".parse().unwrap());
    for (key, value) in headers {
        if key.ends_with("-bin") {
            request
                .metadata_mut()
                .insert_bin(*key, MetadataValue::from_bytes(value.as_bytes()));
        } else {
            request.metadata_mut().insert(*key, value.parse().unwrap());
        }
    }
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    grpc.unary(request, path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

fn typed(status: tonic::Status) -> CallError {
    serde_json::from_slice(status.details())
        .unwrap_or_else(|e| panic!("status without a typed error ({e}): {status:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_over_the_wire_gets_typed_errors_and_the_node_serves_on() {
    tokio::time::timeout(TEST_LIMIT, async {
        let registry = LocalRegistry::new("-");
        let node = serve_jobs(as_node(&registry, "n1"), job_pool("n1", 1).await).await;
        let url = node.url().to_string();
        let pool = [("cenote-pool-bin", "jobs")];

        // The documented wire works by hand...
        let ok = raw_call(&url, CALL_PATH, &pool, br#"{"Echo":"raw"}"#).await.unwrap();
        assert_eq!(&ok[..], br#""raw""#);
        // ...and everything malformed is refused with a typed error.
        for body in [&b"\x00\xff\xfenot json"[..], b"", br#"{"Nope":1}"#, br#"[1,2]"#] {
            let err = typed(raw_call(&url, CALL_PATH, &pool, body).await.unwrap_err());
            assert!(
                matches!(&err, CallError::BadRequest { message } if message.contains("Job")),
                "{body:?}: {err:?}"
            );
        }
        let err = typed(raw_call(&url, CALL_PATH, &[], br#"{"Whoami":null}"#).await.unwrap_err());
        assert!(matches!(&err, CallError::BadRequest { message } if message.contains("cenote-pool-bin")), "{err:?}");
        let bad_deadline = [("cenote-pool-bin", "jobs"), ("cenote-remaining-us", "soon")];
        let err = typed(raw_call(&url, CALL_PATH, &bad_deadline, b"\"Whoami\"").await.unwrap_err());
        assert!(matches!(&err, CallError::BadRequest { message } if message.contains("cenote-remaining-us")), "{err:?}");
        let unknown = [("cenote-pool-bin", "nope")];
        let err = typed(raw_call(&url, CALL_PATH, &unknown, b"\"Whoami\"").await.unwrap_err());
        assert_eq!(err, CallError::UnknownPool { pool: "nope".into(), node: "n1".into() });
        let status = raw_call(&url, "/cenote.node.v1.Node/Other", &pool, b"{}").await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");

        // Still serving, through the ordinary client too.
        let jobs = caller_with(&registry, Some("test-token")).await.pool::<Job, String>("jobs");
        assert_eq!(jobs.call(Job::Whoami).await.unwrap(), "n1");
        node.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_certificate_made_here() {
    use cenote_node::tls::{Certificate, Identity};
    tokio::time::timeout(TEST_LIMIT, async {
        let made = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        let (cert, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let registry = LocalRegistry::new("-");
        let node = jobs_node(as_node(&registry, "n1"), job_pool("n1", 1).await)
            .tls(Identity::from_pem(&cert, &key))
            .serve("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        assert!(
            node.url().starts_with("https://127.0.0.1:"),
            "{}",
            node.url()
        );

        let trusting = Remote::builder(as_node(&registry, "caller"))
            .token("test-token")
            .tls(Certificate::from_pem(&cert), None)
            .connect()
            .await
            .unwrap();
        let jobs = trusting.pool::<Job, String>("jobs");
        assert_eq!(
            jobs.call(Job::Echo("sealed".into())).await.unwrap(),
            "sealed"
        );

        // A caller with no CA is told what is missing.
        let naive = caller_with(&registry, Some("test-token")).await;
        let err = naive
            .pool::<Job, String>("jobs")
            .call(Job::Whoami)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CallError::NoNode { reason, .. } if reason.contains("TLS")),
            "{err:?}"
        );
        // A caller trusting another CA does not get through.
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let suspicious = Remote::builder(as_node(&registry, "caller"))
            .token("test-token")
            .tls(Certificate::from_pem(other.cert.pem()), None)
            .connect()
            .await
            .unwrap();
        let err = suspicious
            .pool::<Job, String>("jobs")
            .call(Job::Whoami)
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::NodeLost { .. }), "{err:?}");
        // And the node serves on.
        assert_eq!(jobs.call(Job::Whoami).await.unwrap(), "n1");
        node.shutdown().await;
    })
    .await
    .expect("test timed out");
}
