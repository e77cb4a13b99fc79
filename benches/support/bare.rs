//! The bare baseline of the Python bench: a bridge driven by blocking
//! reads and writes of its frames, with no pool and no async runtime, the
//! physical limit of this framing and bridge loop.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use cenote::python::bridge_script;
use serde_json::{json, Value};

/// One bridge, spoken to directly.
pub struct BareBridge {
    child: Child,
    pub stdin: ChildStdin,
    pub stdout: ChildStdout,
    /// The write end of its cancel pipe (never written: no call is late).
    _cancels: OwnedFd,
    next_id: u64,
}

impl BareBridge {
    /// Start a bridge on `handlers` serving `concurrency` calls at once, and
    /// read its ready frame.
    pub fn start(interpreter: &Path, handlers: &Path, concurrency: usize) -> Self {
        let (read, write) = cenote_testkit::fds::pipe();
        let mut cmd = Command::new(interpreter);
        // SAFETY: the hook only makes the cancel pipe, which the bridge
        // reads on fd 3, the child's fd 3.
        unsafe {
            cmd.pre_exec(cenote_testkit::fds::fd3(read.as_raw_fd()));
        }
        let mut child = cmd
            .arg("-u")
            .arg("-c")
            .arg(bridge_script())
            .arg(handlers)
            .arg((64u32 << 20).to_string())
            .arg(std::process::id().to_string())
            .arg(concurrency.to_string())
            .arg("0") // no shared memory
            .env("OMP_NUM_THREADS", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn bridge");
        drop(read);
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let mut bare = BareBridge {
            child,
            stdin,
            stdout,
            _cancels: write,
            next_id: 1,
        };
        let ready = read_frame(&mut bare.stdout);
        assert!(ready.starts_with(br#"{"t":"ready""#));
        bare
    }

    /// Write a call of `function` with `args`.
    pub fn send(&mut self, function: &str, args: &Value) {
        let mut frame = vec![0u8; 4];
        serde_json::to_writer(
            &mut frame,
            &json!({"t": "call", "id": self.next_id, "fn": function, "args": args}),
        )
        .expect("encode");
        self.next_id += 1;
        let n = (frame.len() - 4) as u32;
        frame[..4].copy_from_slice(&n.to_be_bytes());
        self.stdin.write_all(&frame).expect("write");
    }

    /// Call `echo` and wait for its answer.
    pub fn echo(&mut self, args: &Value) -> Value {
        self.send("echo", args);
        let body = read_frame(&mut self.stdout);
        let mut v: Value = serde_json::from_slice(&body).expect("decode");
        v["value"].take()
    }
}

/// Read one frame's body.
pub fn read_frame(input: &mut impl Read) -> Vec<u8> {
    try_read_frame(input).expect("a frame")
}

/// Read one frame's body; `None` at the end of the stream.
pub fn try_read_frame(input: &mut impl Read) -> Option<Vec<u8>> {
    let mut head = [0u8; 4];
    input.read_exact(&mut head).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(head) as usize];
    input.read_exact(&mut body).ok()?;
    Some(body)
}

impl Drop for BareBridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
