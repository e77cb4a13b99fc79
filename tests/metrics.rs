//! Metrics (feature `metrics`), three ways:
//! - the README's table is the code's table, row for row;
//! - a recorder sees what `status()` counts: a pool built under
//!   `metrics-util`'s debugging recorder registers every name in the table,
//!   and each counter, histogram and gauge agrees with the pool's status
//!   after calls, a crash, timeouts and a queue of waiters;
//! - `examples/metrics.rs` serves them to Prometheus: scraped over HTTP at
//!   each of its phases, calls are counted, callers wait during its burst,
//!   and the crash is counted.

mod common;
mod support {
    pub mod example;
}

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cenote::metrics::Metric;
use cenote::CheckoutOptions;
use common::{builder, eventually, Op, TestFactory};
use metrics_util::debugging::{DebugValue, Snapshotter};
use support::example::{example_binary, Run};

/// Every metric cenote records: the pool's, the Python pool's, then a
/// remote caller's.
fn all_metrics() -> Vec<Metric> {
    let core = cenote::metrics::POOL.iter();
    core.chain(cenote::python::metrics::PYTHON)
        .chain(cenote::node::metrics::NODE)
        .copied()
        .collect()
}

#[test]
fn the_readme_table_is_the_code_table() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let rows: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("| `cenote."))
        .collect();
    let code: Vec<String> = all_metrics().iter().map(Metric::row).collect();
    assert_eq!(
        rows,
        code,
        "the README's metrics table differs from cenote::metrics::POOL + \
         cenote::python::metrics::PYTHON + cenote::node::metrics::NODE; its rows should read:\n{}",
        code.join("\n")
    );
}

// ---- a recorder in the test ----

/// A metric of pool "test": its name and its label other than `pool` and
/// `strategy`, if it has one.
type Name = (String, Option<String>);

/// What the debugging recorder has seen so far: its snapshots drain it, so
/// counts and samples are added up here; gauges are as of the last one.
#[derive(Default)]
struct Seen {
    keys: HashSet<Name>,
    counters: HashMap<Name, u64>,
    gauges: HashMap<Name, f64>,
    histograms: HashMap<Name, Vec<f64>>,
}

impl Seen {
    /// Take in a snapshot of pool "test"'s metrics.
    fn take(&mut self, snap: &Snapshotter) -> &mut Self {
        self.gauges.clear();
        for (key, _, _, value) in snap.snapshot().into_vec() {
            let (_, key) = key.into_parts();
            if !key
                .labels()
                .any(|l| l.key() == "pool" && l.value() == "test")
            {
                continue;
            }
            let extra = key
                .labels()
                .find(|l| !matches!(l.key(), "pool" | "strategy"))
                .map(|l| l.value().to_string());
            let name = (key.name().to_string(), extra);
            self.keys.insert(name.clone());
            match value {
                DebugValue::Counter(n) => *self.counters.entry(name).or_default() += n,
                DebugValue::Gauge(g) => drop(self.gauges.insert(name, g.into_inner())),
                DebugValue::Histogram(v) => self
                    .histograms
                    .entry(name)
                    .or_default()
                    .extend(v.iter().map(|x| x.into_inner())),
            }
        }
        self
    }

    fn counter(&self, name: &str) -> u64 {
        self.counters[&(name.to_string(), None)]
    }

    fn gauge(&self, name: &str, label: Option<&str>) -> f64 {
        self.gauges[&(name.to_string(), label.map(str::to_string))]
    }

    fn samples(&self, name: &str) -> &[f64] {
        &self.histograms[&(name.to_string(), None)]
    }
}

#[test]
fn a_recorder_sees_what_status_counts() {
    let (recorder, snap, rt) = cenote_testkit::recorder::local_recorder();
    let factory = TestFactory::default();
    // Registered with the recorder in place at build; recorded from then on.
    let pool = metrics::with_local_recorder(&recorder, || {
        rt.block_on(builder(factory, 2).max_overflow(0).build())
    })
    .expect("pool builds");

    rt.block_on(async {
        let mut seen = Seen::default();
        // Every name in the table is registered, with its closed label values.
        let m = seen.take(&snap);
        for metric in cenote::metrics::POOL {
            let values = metric.labels.iter().find(|l| !l.values.is_empty());
            let keys: Vec<Option<String>> = match values {
                Some(l) => l.values.iter().map(|v| Some(v.to_string())).collect(),
                None => vec![None],
            };
            for key in keys {
                assert!(
                    m.keys.contains(&(metric.name.to_string(), key.clone())),
                    "{} {key:?} not registered; registered: {:?}",
                    metric.name,
                    m.keys
                );
            }
        }
        assert_eq!(m.samples("cenote.pool.create_time").len(), 2);

        for _ in 0..20 {
            pool.call(Op::Ok).await.unwrap();
        }
        assert!(pool.call(Op::Crash).await.is_err());
        // A late call: its worker cannot cancel, so it is killed.
        let late = cenote::CallOptions::default().timeout(Duration::from_millis(20));
        assert!(pool
            .call_with(Op::Slow(Duration::from_secs(2)), late)
            .await
            .is_err());
        // Both workers held: one caller waits until the tick samples it,
        // another gives up.
        assert!(eventually(Duration::from_secs(5), || pool.status().idle == 2).await);
        let held = (pool.get().await.unwrap(), pool.get().await.unwrap());
        let hurried = CheckoutOptions::default().timeout(Duration::from_millis(30));
        assert!(pool.get_with(hurried).await.is_err());
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.get().await.map(drop) }
        });
        let sampled = eventually(Duration::from_secs(5), || {
            let m = seen.take(&snap);
            m.gauges.contains_key(&("cenote.pool.waiting".into(), None))
                && m.gauge("cenote.pool.waiting", None) == 1.0
                && m.gauge("cenote.pool.workers", Some("busy")) == 2.0
                && m.gauge("cenote.pool.workers", Some("idle")) == 0.0
                && m.gauge("cenote.pool.workers.max", None) == 2.0
        })
        .await;
        assert!(
            sampled,
            "the tick never sampled one waiter and two busy workers"
        );
        drop(held);
        waiter.await.unwrap().unwrap();

        let status = pool.status();
        let t = &status.totals;
        let m = seen.take(&snap);
        assert_eq!(m.counter("cenote.pool.crashes"), t.crashes);
        assert_eq!(t.crashes, 1);
        assert_eq!(m.counter("cenote.pool.killed"), t.killed);
        assert_eq!(t.killed, 1);
        assert_eq!(m.counter("cenote.pool.restarts"), t.restarts);
        assert_eq!(t.restarts, 2);
        assert_eq!(m.counter("cenote.pool.call.timeouts"), t.call_timeouts);
        assert_eq!(t.call_timeouts, 1);
        assert_eq!(
            m.counter("cenote.pool.checkout.timeouts"),
            t.checkout_timeouts
        );
        assert_eq!(t.checkout_timeouts, 1);
        // One sample per checkout served, waits among them.
        let (waits, uses) = (
            m.samples("cenote.pool.wait_time"),
            m.samples("cenote.pool.use_time"),
        );
        assert_eq!(uses.len() as u64, t.served);
        assert_eq!(waits.len() as u64, t.served);
        assert_eq!(status.wait.count, t.served);
        assert!(waits.iter().any(|&w| w > 0.0), "the waiter's wait");
        assert!(uses.iter().all(|&u| (0.0..10.0).contains(&u)), "{uses:?}");
        assert_eq!(m.samples("cenote.pool.create_time").len(), 4);
        pool.close().await;
    });
}

// ---- the example, scraped over HTTP ----

/// How long any one phase of the example may take to show up.
const PHASE_LIMIT: Duration = Duration::from_secs(60);

/// A loopback port nobody listens on now.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// One sample line of the exposition format: its name, labels, value.
type Sample = (String, HashMap<String, String>, f64);

/// GET /metrics, parsed; `None` while nothing answers.
fn scrape(addr: SocketAddr) -> Option<Vec<Sample>> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        conn,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    Some(body.lines().filter_map(parse_sample).collect())
}

/// `name{k="v",...} value` or `name value`; comments are `None`.
fn parse_sample(line: &str) -> Option<Sample> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => {
            let labels = rest
                .trim_end_matches('}')
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            (name.to_string(), labels)
        }
        None => (series.to_string(), HashMap::new()),
    };
    Some((name, labels, value.parse().ok()?))
}

/// The value of `name` for pool "demo" whose labels include `with`.
fn value(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, labels, _)| {
            n == name
                && labels.get("pool").map(String::as_str) == Some("demo")
                && with
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.2)
}

/// Scrape until `check` holds of the samples, for at most [`PHASE_LIMIT`].
fn scrape_until(addr: SocketAddr, what: &str, check: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let began = Instant::now();
    loop {
        if let Some(samples) = scrape(addr) {
            if check(&samples) {
                return samples;
            }
        }
        assert!(began.elapsed() < PHASE_LIMIT, "never scraped {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The example's stdout, line by line, read on a thread.
fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Read lines until one starts with `prefix`; it.
fn expect_line(out: &mpsc::Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + PHASE_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match out.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line starting {prefix:?} from the example: {e}"),
        }
    }
}

#[test]
fn the_example_serves_moving_metrics() {
    let addr = free_port();
    let mut run = Run(Command::new(example_binary("metrics"))
        .args(["--listen", &addr.to_string(), "--secs", "120"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env("RUST_LOG", "error")
        .spawn()
        .expect("the metrics example starts"));
    let out = lines(run.0.stdout.take().expect("stdout is piped"));
    let by_pool = [("strategy", "fifo")];

    expect_line(&out, "steady:");
    let steady = scrape_until(addr, "50 calls", |s| {
        value(s, "cenote_pool_use_time_count", &by_pool).is_some_and(|n| n >= 50.0)
    });
    assert_eq!(
        value(&steady, "cenote_pool_workers_max", &by_pool),
        Some(2.0)
    );
    let mode = |m| value(&steady, "cenote_python_start_mode", &[("mode", m)]);
    assert_eq!(
        mode("fork_server").unwrap() + mode("spawn").unwrap(),
        1.0,
        "exactly one start mode"
    );

    expect_line(&out, "burst:");
    scrape_until(addr, "callers waiting in the burst", |s| {
        value(s, "cenote_pool_waiting", &by_pool).is_some_and(|n| n > 0.0)
    });

    expect_line(&out, "crash:");
    let after = scrape_until(addr, "the crash", |s| {
        value(s, "cenote_pool_crashes", &by_pool).is_some_and(|n| n >= 1.0)
    });
    assert!(value(&after, "cenote_pool_restarts", &by_pool).unwrap() >= 1.0);
    let served = value(&after, "cenote_pool_use_time_count", &by_pool).unwrap();
    assert!(served >= 50.0 + 16.0, "{served} calls counted");
    let memory = value(&after, "cenote_python_memory", &[("stat", "total")]);
    assert!(memory.is_some_and(|b| b > 0.0), "memory {memory:?}");

    // Closing stdin ends the example: it closes its pool and exits.
    drop(run.0.stdin.take());
    expect_line(&out, "done:");
    exits_well(&mut run);
}

/// Wait for the example to exit, for at most [`PHASE_LIMIT`]; it must succeed.
fn exits_well(run: &mut Run) {
    let began = Instant::now();
    let status = loop {
        if let Some(status) = run.0.try_wait().expect("waiting on the example") {
            break status;
        }
        assert!(began.elapsed() < PHASE_LIMIT, "the example did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the example failed: {status}");
}

#[test]
fn the_main_job_serves_its_four_pools() {
    let addr = free_port();
    let report = std::env::temp_dir().join(format!("cenote-metrics-{}.html", std::process::id()));
    let mut run = Run(Command::new(example_binary("side_by_side"))
        .args(["--secs", "3", "--metrics", &addr.to_string()])
        .arg("--report")
        .arg(&report)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env("RUST_LOG", "error")
        .spawn()
        .expect("side_by_side starts"));
    let out = lines(run.0.stdout.take().expect("stdout is piped"));
    expect_line(&out, "workload:");
    let pools = ["fifo", "lifo", "priority", "deadline"];
    scrape_until(addr, "calls served by each of the four pools", |s| {
        pools.iter().all(|p| {
            s.iter().any(|(name, labels, v)| {
                name == "cenote_pool_use_time_count"
                    && labels.get("pool").map(String::as_str) == Some(*p)
                    && labels.get("strategy").map(String::as_str) == Some(*p)
                    && *v > 0.0
            })
        })
    });
    expect_line(&out, "report:");
    exits_well(&mut run);
    let _ = std::fs::remove_file(report);
}
