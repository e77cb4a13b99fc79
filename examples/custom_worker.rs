//! A user-written backend: a worker that owns a connection-like resource,
//! pooled with Priority waiters (the `priority` feature).
//!
//! Run: cargo run --release --example custom_worker
use std::time::Duration;

use cenote::{Call, CallCtx, CallOptions, Factory, Lifo, Pool, Priority, Worker, WorkerCtx};

/// Whatever the worker owns: a socket, a model, a process handle...
struct Session {
    id: u64,
    calls: u64,
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
    async fn shutdown(self, _grace: Duration) {
        println!("session {} closed after {} calls", self.id, self.calls);
    }
}

impl Call<String> for Session {
    type Response = String;
    async fn call(&mut self, text: String, _ctx: CallCtx) -> Result<String, Refused> {
        self.calls += 1;
        tokio::time::sleep(Duration::from_millis(2)).await; // the real work
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
    println!("{}", serde_json::to_string_pretty(&pool.status())?);
    pool.close().await;
    Ok(())
}
