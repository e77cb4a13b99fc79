//! A real `etcd` server for tests: free loopback ports, a temporary data
//! directory, a log file, stopped (by its own pid) and cleaned up on drop.
//!
//! The binary is `$CENOTE_ETCD_BIN`, or `etcd` on `PATH`. When neither is
//! there, the harness runs the workspace's `scripts/install-deps etcd` once
//! (it installs Debian's `etcd-server` as root, and otherwise says what to
//! install), so the README's test command works on a fresh machine. If etcd
//! still cannot be started the test fails with instructions: these tests
//! never pass silently without a server.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::procs::alive;

/// How long a starting etcd may take to answer its health check.
const READY_WITHIN: Duration = Duration::from_secs(20);
/// How long a stopping etcd gets after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// One single-member etcd cluster owned by a test.
pub struct EtcdServer {
    child: Option<Child>,
    /// The client URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    peer_url: String,
    /// Holds `data/` (the server's data dir) and `etcd.log`.
    base: PathBuf,
    name: String,
    /// Every pid this server has had, so tests can check none outlives it.
    pids: Vec<u32>,
}

/// `$CENOTE_ETCD_BIN`, else `etcd`, installed first if it is not on `PATH`.
fn etcd_binary() -> String {
    if let Ok(bin) = std::env::var("CENOTE_ETCD_BIN") {
        return bin;
    }
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|dir| dir.join("scripts/install-deps"))
            .find(|script| script.exists());
        if let Some(script) = script {
            // Its own message says what is missing; a failure shows up as
            // the spawn error below.
            let _ = Command::new("bash").arg(script).arg("etcd").status();
        }
    });
    "etcd".into()
}

/// Two distinct free loopback ports: both are bound at once (so they differ)
/// and released just before etcd binds them.
fn free_ports() -> (u16, u16) {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("no free loopback port");
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| l.local_addr().expect("bound socket has an address").port();
    (port(&a), port(&b))
}

impl EtcdServer {
    /// Start a single-member etcd on free loopback ports and wait until it
    /// is healthy. Panics with instructions if `etcd` cannot be started.
    pub fn start() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let name = format!("cenote-test-{}-{n}", std::process::id());
        let (client, peer) = free_ports();
        let base = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("create the etcd test directory");
        let mut server = EtcdServer {
            child: None,
            url: format!("http://127.0.0.1:{client}"),
            peer_url: format!("http://127.0.0.1:{peer}"),
            base,
            name,
            pids: Vec::new(),
        };
        server.spawn();
        server
    }

    fn data_dir(&self) -> PathBuf {
        self.base.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.base.join("etcd.log")
    }

    fn spawn(&mut self) {
        let bin = etcd_binary();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the etcd log file");
        let log_err = log.try_clone().expect("clone the etcd log file");
        let child = Command::new(&bin)
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &self.url])
            .args(["--advertise-client-urls", &self.url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .arg("--initial-cluster")
            .arg(format!("{}={}", self.name, self.peer_url))
            .args(["--initial-cluster-state", "new"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start etcd server binary {bin:?} ({e}). The registry tests need a \
                     real etcd: install it (Debian/Ubuntu: `apt-get install etcd-server`) or set \
                     CENOTE_ETCD_BIN to its path"
                )
            });
        self.pids.push(child.id());
        self.child = Some(child);
        self.wait_ready();
    }

    /// Wait (at most [`READY_WITHIN`]) until `/health` says true; panics
    /// with the server's log if it exits or never gets there.
    fn wait_ready(&mut self) {
        let addr = self.url.trim_start_matches("http://").to_string();
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!(
                        "etcd exited during startup ({status}); its log:\n{}",
                        self.log_tail()
                    );
                }
            }
            if healthy(&addr) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let tail = self.log_tail();
        self.stop();
        panic!(
            "etcd at {} was not healthy within {READY_WITHIN:?}; its log:\n{tail}",
            self.url
        );
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        let _ = File::open(self.log_path()).and_then(|mut f| f.read_to_string(&mut text));
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The running server's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stop the server by its own pid: SIGTERM, then SIGKILL after
    /// its stop grace (5 s); always reaped. Panics if it is somehow still alive.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        let termed = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if termed {
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let Ok(None) = child.try_wait() {
            let _ = child.kill(); // SIGKILL, to this pid only
        }
        let _ = child.wait();
        assert!(!alive(pid), "etcd pid {pid} is still alive after stop");
    }

    /// Start again on the same ports; with `fresh_data`, on an empty data
    /// dir (everything the cluster knew is gone, as after losing its disk).
    pub fn restart(&mut self, fresh_data: bool) {
        self.stop();
        if fresh_data {
            let _ = std::fs::remove_dir_all(self.data_dir());
        }
        self.spawn();
    }

    /// Assert that no process this server ever ran is alive.
    pub fn assert_all_stopped(&self) {
        for &pid in &self.pids {
            assert!(!alive(pid), "etcd pid {pid} outlived its test");
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let pid = self.pid();
        if let Some(mut child) = self.child.take() {
            if std::thread::panicking() {
                // No second panic while unwinding: just make sure it dies.
                let _ = child.kill();
                let _ = child.wait();
            } else {
                self.child = Some(child);
                self.stop();
            }
        }
        let _ = std::fs::remove_dir_all(&self.base);
        if !std::thread::panicking() {
            self.assert_all_stopped();
        } else if let Some(pid) = pid {
            if alive(pid) {
                eprintln!("warning: etcd pid {pid} may have outlived its test");
            }
        }
    }
}

/// One HTTP health check against etcd's client port.
fn healthy(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}
