//! A user-written backend: a worker that owns a connection-like resource,
//! pooled with Priority waiters (the `priority` feature), and that can
//! cancel a request its caller left (a late or dropped call), so the pool
//! keeps it instead of replacing it.
//!
//! Run: cargo run --release --example custom_worker
use std::time::Duration;

use cenote::{
    Call, CallCtx, CallOptions, Cancel, Error, Factory, Lifo, Pool, Priority, Worker, WorkerCtx,
};

/// Whatever the worker owns: a socket, a model, a process handle...
struct Session {
    id: u64,
    calls: u64,
    /// A request was sent and its answer not read: what a caller that gave
    /// up mid-call leaves behind.
    in_flight: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("session {0} refused the request")]
struct Refused(u64);

impl Worker for Session {
    type Error = Refused;
    // Retire a session after 100 calls; the pool starts a warm replacement first.
    fn retire_reason(&self) -> Option<cenote::Retire> {
        (self.calls >= 100).then_some(cenote::Retire::Tasks(100))
    }
    // A late or dropped call left a request in flight: ask the resource to
    // drop it (here there is nothing to wait for). Without this the pool
    // would kill and replace the session after a late call.
    async fn cancel(&mut self, _grace: Duration) -> Cancel {
        self.in_flight = false;
        Cancel::Freed
    }
    async fn shutdown(self, _grace: Duration) {
        println!("session {} closed after {} calls", self.id, self.calls);
    }
}

impl Call<String> for Session {
    type Response = String;
    async fn call(&mut self, text: String, _ctx: CallCtx) -> Result<String, Refused> {
        self.calls += 1;
        self.in_flight = true;
        let work = if text == "slow" { 1_000 } else { 2 };
        tokio::time::sleep(Duration::from_millis(work)).await; // the real work
        self.in_flight = false;
        Ok(format!("session {} says {}", self.id, text.to_uppercase()))
    }
}

struct Sessions;
impl Factory for Sessions {
    type Worker = Session;
    async fn create(&self, ctx: WorkerCtx) -> Result<Session, Refused> {
        Ok(Session {
            id: ctx.id.0,
            calls: 0,
            in_flight: false,
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool: Pool<Sessions, Lifo, Priority> = Pool::builder(Sessions).size(4).build().await?;
    let calls = (0..200)
        .map(|i| pool.call_with(format!("hello {i}"), CallOptions::default().priority(i % 3)));
    let answers = futures::future::try_join_all(calls).await?;
    println!("{}", answers[0]);
    // A call past its deadline: the caller is told at once, and the session
    // cancels the request and serves on (`cancelled: 1`, `killed: 0`).
    let late = CallOptions::default().timeout(Duration::from_millis(50));
    let err = pool.call_with("slow".to_string(), late).await.unwrap_err();
    assert!(matches!(err, Error::CallTimeout(_)), "{err}");
    println!("late call: {err}");
    // The cancel runs after the caller has its answer, off its path.
    tokio::time::sleep(Duration::from_millis(20)).await;
    println!("{}", serde_json::to_string_pretty(&pool.status())?);
    pool.close().await;
    Ok(())
}
