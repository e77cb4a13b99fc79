//! Running an example binary that `cargo test` built beside the tests:
//! found by path, killed by its own pid if the test ends early, its output
//! read on threads so no pipe stalls it, and every wait bounded.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The example `name` built beside this test:
/// `target/<profile>/deps/<test>` → `target/<profile>/examples/<name>`.
pub fn example_binary(name: &str) -> PathBuf {
    let me = std::env::current_exe().expect("the test knows its own path");
    let profile = me
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let bin = profile.join("examples").join(name);
    assert!(
        bin.is_file(),
        "{} is missing: `cargo test` builds it with the other examples; with a target filter, \
         build it first with `cargo build --example {name}`",
        bin.display()
    );
    bin
}

/// An example's process, killed (by its own pid) if the test ends early.
pub struct Run(pub Child);

impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Everything `pipe` yields, read on a thread so neither pipe can stall the child.
fn collect(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    rx
}

/// Runs example `name` with `args`; its stdout, once it exited
/// successfully within `limit`.
pub fn run_example(name: &str, args: &[&str], limit: Duration) -> String {
    let began = Instant::now();
    let mut run = Run(Command::new(example_binary(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{name} starts: {e}")));
    let stdout = collect(run.0.stdout.take().expect("stdout is piped"));
    let stderr = collect(run.0.stderr.take().expect("stderr is piped"));
    let status = loop {
        if let Some(status) = run.0.try_wait().expect("waiting on the example") {
            break status;
        }
        assert!(
            began.elapsed() < limit,
            "{name} still running after {limit:?}; killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // The pipes close when the example exits; its Python workers are gone by then.
    let wait = Duration::from_secs(10);
    let out = stdout
        .recv_timeout(wait)
        .expect("the example's stdout closes");
    let err = stderr
        .recv_timeout(wait)
        .expect("the example's stderr closes");
    assert!(status.success(), "{name} failed ({status}):\n{out}\n{err}");
    out
}
