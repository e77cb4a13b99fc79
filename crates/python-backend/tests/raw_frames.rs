//! The bridge driven by hand-written frames, which `PyCall` cannot produce:
//! a call frame whose function name is not a string, bad `kwargs`, odd
//! frames, cancels. Each is answered with an error frame and the bridge
//! serves the next request; it exits only with its named codes.

mod common;

use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::time::Duration;

use cenote_python::{bridge_script, BridgeExit};
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// One bridge on the chaos handlers, spoken to directly.
struct Raw {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    /// The write end of its cancel pipe.
    cancels: std::fs::File,
}

impl Raw {
    /// Launch as the worker does (frames on fds 0 and 1, the cancel pipe
    /// on fd 3), then read the ready frame.
    async fn start(tag: &str, max_frame: usize) -> Raw {
        let (read, write) = cenote_testkit::fds::pipe();
        let write = std::fs::File::from(write);
        let mut cmd = Command::new("python3");
        // SAFETY: the hook only makes the cancel pipe the child's fd 3.
        unsafe {
            cmd.pre_exec(cenote_testkit::fds::fd3(read.as_raw_fd()));
        }
        let mut child = cmd
            .arg("-u")
            .arg("-c")
            .arg(bridge_script())
            .arg(chaos_path())
            .arg(max_frame.to_string())
            .arg(std::process::id().to_string())
            .arg("1")
            .arg("0") // no shared memory
            .env(TAG_VAR, tag)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the bridge");
        drop(read);
        let mut raw = Raw {
            stdin: child.stdin.take(),
            stdout: child.stdout.take().unwrap(),
            child,
            cancels: write,
        };
        assert_eq!(raw.recv().await["t"], "ready");
        raw
    }

    async fn send_bytes(&mut self, payload: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        let len = u32::try_from(payload.len()).unwrap();
        stdin.write_all(&len.to_be_bytes()).await.unwrap();
        stdin.write_all(payload).await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Ask the bridge to cancel request `id`.
    fn cancel(&mut self, id: u64) {
        use std::io::Write;
        self.cancels.write_all(&id.to_be_bytes()).unwrap();
    }

    async fn send(&mut self, frame: Value) {
        self.send_bytes(frame.to_string().as_bytes()).await;
    }

    async fn recv(&mut self) -> Value {
        let read = async {
            let mut head = [0u8; 4];
            self.stdout.read_exact(&mut head).await?;
            let mut body = vec![0u8; u32::from_be_bytes(head) as usize];
            self.stdout.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(body)
        };
        let body = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the bridge answers within 10 s")
            .expect("the bridge is alive");
        serde_json::from_slice(&body).unwrap()
    }

    /// Send `frame` and expect an error frame of `kind` for request `id`.
    async fn refused(&mut self, frame: Value, id: u64, kind: &str) -> String {
        self.send(frame.clone()).await;
        let answer = self.recv().await;
        assert_eq!(answer["t"], "error", "{frame} -> {answer}");
        assert_eq!(answer["id"], id, "{frame} -> {answer}");
        assert_eq!(answer["kind"], kind, "{frame} -> {answer}");
        answer["message"].as_str().unwrap().to_string()
    }

    /// The bridge still answers a ping and a call.
    async fn serves(&mut self, id: u64) {
        self.send(json!({"t": "ping", "id": id})).await;
        assert_eq!(self.recv().await, json!({"t": "pong", "id": id}));
        self.send(json!({"t": "call", "id": id + 1, "fn": "add", "args": [2, 3]}))
            .await;
        assert_eq!(
            self.recv().await,
            json!({"t": "result", "id": id + 1, "value": 5})
        );
    }

    async fn exit_code(mut self) -> Option<i32> {
        drop(self.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("the bridge exits")
            .unwrap();
        status.code()
    }
}

#[tokio::test]
async fn call_frames_without_a_string_function_name_are_bad_requests() {
    let tag = test_tag("rawnames");
    let mut raw = Raw::start(&tag, 1 << 20).await;
    let mut id = 10;
    for name in [
        json!(5),
        json!(["echo"]),
        json!({"fn": "echo"}),
        json!(null),
        json!(true),
    ] {
        let message = raw
            .refused(
                json!({"t": "call", "id": id, "fn": name}),
                id,
                "bad_request",
            )
            .await;
        assert!(message.contains("\"fn\""), "{name}: {message}");
        raw.serves(id + 1).await;
        id += 10;
    }
    let message = raw
        .refused(json!({"t": "call", "id": id}), id, "bad_request")
        .await;
    assert!(message.contains("NoneType"), "{message}");
    // Strings that name nothing callable.
    for name in ["", "__import__", "os.path", "Widget", "a b"] {
        id += 10;
        raw.refused(
            json!({"t": "call", "id": id, "fn": name}),
            id,
            "unknown_function",
        )
        .await;
        raw.serves(id + 1).await;
    }
    assert_eq!(raw.exit_code().await, Some(BridgeExit::Ok.code()));
}

#[tokio::test]
async fn other_malformed_frames_are_answered_and_the_bridge_serves_on() {
    let tag = test_tag("rawframes");
    let mut raw = Raw::start(&tag, 1 << 20).await;
    let message = raw
        .refused(
            json!({"t": "call", "id": 1, "fn": "add", "args": [1], "kwargs": [2]}),
            1,
            "bad_request",
        )
        .await;
    assert!(message.contains("kwargs"), "{message}");
    raw.serves(2).await;
    raw.refused(
        json!({"t": "call", "id": 4, "fn": "add", "args": {"a": 1}, "kwargs": 7}),
        4,
        "bad_request",
    )
    .await;
    raw.serves(5).await;
    raw.refused(json!({"t": "bogus", "id": 7}), 7, "bad_request")
        .await;
    raw.serves(8).await;
    for junk in [&b"not json"[..], b"[1, 2]", b"\"call\"", b"{}"] {
        raw.send_bytes(junk).await;
        let answer = raw.recv().await;
        assert_eq!(answer["kind"], "bad_request", "{answer}");
        raw.serves(20).await;
    }
    // A shutdown frame is a clean exit.
    raw.send(json!({"t": "shutdown", "id": 0})).await;
    assert_eq!(raw.exit_code().await, Some(BridgeExit::Ok.code()));
}

#[tokio::test]
async fn an_oversized_frame_ends_the_bridge_with_the_protocol_code() {
    let tag = test_tag("rawbig");
    let mut raw = Raw::start(&tag, 1024).await;
    raw.serves(1).await;
    let stdin = raw.stdin.as_mut().unwrap();
    stdin.write_all(&4096u32.to_be_bytes()).await.unwrap();
    stdin.flush().await.unwrap();
    assert_eq!(raw.exit_code().await, Some(BridgeExit::Protocol.code()));
    assert!(wait_gone(&tag, Duration::from_secs(2)).await.is_empty());
}

/// A frame with an attachment table, as the host writes one.
fn attached(json: &Value, attachments: &[&[u8]]) -> Vec<u8> {
    let json = json.to_string();
    let mut body = (attachments.len() as u32).to_be_bytes().to_vec();
    for a in attachments {
        body.extend_from_slice(&(a.len() as u32).to_be_bytes());
    }
    body.extend_from_slice(json.as_bytes());
    for a in attachments {
        body.extend_from_slice(a);
    }
    let mut frame = (body.len() as u32 | 1 << 31).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

#[tokio::test]
async fn attachments_arrive_as_bytes_and_come_back_as_attachments() {
    let tag = test_tag("rawattach");
    let mut raw = Raw::start(&tag, 1 << 20).await;
    let call = json!({"t": "call", "id": 3, "fn": "echo", "args": [{"$cenote_bytes": 1}]});
    let stdin = raw.stdin.as_mut().unwrap();
    stdin
        .write_all(&attached(&call, &[b"unused", b"\x00\xffraw"]))
        .await
        .unwrap();
    stdin.flush().await.unwrap();
    // The answer: flagged word, one attachment of 5 bytes, then the JSON.
    let mut head = [0u8; 12];
    raw.stdout.read_exact(&mut head).await.unwrap();
    let word = u32::from_be_bytes(head[..4].try_into().unwrap());
    assert_ne!(word & 1 << 31, 0, "the answer carries attachments");
    assert_eq!(u32::from_be_bytes(head[4..8].try_into().unwrap()), 1);
    assert_eq!(u32::from_be_bytes(head[8..12].try_into().unwrap()), 5);
    let mut rest = vec![0u8; (word & !(1 << 31)) as usize - 8];
    raw.stdout.read_exact(&mut rest).await.unwrap();
    let (json, bytes) = rest.split_at(rest.len() - 5);
    assert_eq!(bytes, b"\x00\xffraw");
    let answer: Value = serde_json::from_slice(json).unwrap();
    assert_eq!(
        answer,
        json!({"t": "result", "id": 3, "value": {"$cenote_bytes": 0}})
    );
    raw.serves(4).await;
    assert_eq!(raw.exit_code().await, Some(BridgeExit::Ok.code()));
}

#[tokio::test]
async fn a_table_that_does_not_fit_its_frame_ends_the_bridge_with_the_protocol_code() {
    init_tracing();
    for (what, frame) in [
        // Five attachments announced in a body of 8 bytes.
        (
            "count",
            [
                &(8u32 | 1 << 31).to_be_bytes()[..],
                &5u32.to_be_bytes(),
                &[0; 4],
            ]
            .concat(),
        ),
        // One attachment longer than the body.
        (
            "length",
            [
                &(12u32 | 1 << 31).to_be_bytes()[..],
                &1u32.to_be_bytes(),
                &99u32.to_be_bytes(),
                b"{}{}",
            ]
            .concat(),
        ),
    ] {
        let tag = new_tag("rawtable");
        let mut raw = Raw::start(&tag, 1 << 20).await;
        raw.serves(1).await;
        raw.stdin.as_mut().unwrap().write_all(&frame).await.unwrap();
        raw.stdin.as_mut().unwrap().flush().await.unwrap();
        assert_eq!(
            raw.exit_code().await,
            Some(BridgeExit::Protocol.code()),
            "{what}"
        );
        assert!(wait_gone(&tag, Duration::from_secs(2)).await.is_empty());
    }
}

#[tokio::test]
async fn a_cancel_is_answered_cancelled_and_the_bridge_serves_on() {
    let tag = new_tag("raw-cancel");
    let mut raw = Raw::start(&tag, 1 << 20).await;
    // A call under way: interrupted where it sleeps.
    raw.send(json!({"t": "call", "id": 10, "fn": "sleep", "args": [30]}))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    raw.cancel(10);
    let answer = raw.recv().await;
    assert_eq!(
        (&answer["t"], &answer["id"], &answer["kind"]),
        (&json!("error"), &json!(10), &json!("cancelled")),
        "{answer}"
    );
    raw.serves(11).await;
    // A cancel for a request that is not running changes nothing.
    raw.cancel(99);
    raw.serves(20).await;
    // A cancel that comes before its call: the call is answered at once,
    // without running.
    raw.cancel(30);
    tokio::time::sleep(Duration::from_millis(50)).await;
    raw.send(json!({"t": "call", "id": 30, "fn": "sleep", "args": [30]}))
        .await;
    let answer = raw.recv().await;
    assert_eq!(answer["kind"], "cancelled", "{answer}");
    raw.serves(31).await;
    assert_eq!(raw.exit_code().await, Some(BridgeExit::Ok.code()));
}
