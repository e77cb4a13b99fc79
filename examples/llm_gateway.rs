//! An LLM gateway: an HTTP server whose handler streams tokens, over
//! server-sent events, from an `async def` generator in a pool of 4 Python
//! processes that each serve 64 streams at once
//! (`PythonConfig::concurrency(64)`). The model is a stand-in
//! (`examples/python/llm.py`) that yields a token every few ms, waiting as
//! a call to a model server does.
//!
//! Run: `cargo run --release --example llm_gateway` opens 1,000 concurrent
//! streams against the server and prints streams/s, time to first token
//! (p50/p99) and the processes used. `-- --serve 127.0.0.1:8080` serves
//! until Ctrl-C instead (`curl -N 'localhost:8080/generate?prompt=hi'`).
//! Flags: `--streams N`, `--tokens N`, `--token-ms N`, `--processes N`,
//! `--concurrency K`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use axum::Router;
use cenote::python::{PyCall, PythonConfig, PythonFactory, PythonPool};
use cenote::Pool;
use futures::{Stream, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Llm = Pool<PythonFactory>;

struct Args {
    streams: usize,
    tokens: u64,
    token_ms: u64,
    processes: usize,
    concurrency: usize,
    serve: Option<SocketAddr>,
}

const USAGE: &str = "usage: llm_gateway [--streams N] [--tokens N] [--token-ms N] \
[--processes N] [--concurrency K] [--serve ADDR]";

fn args() -> Result<Args, String> {
    let mut a = Args {
        streams: 1000,
        tokens: 20,
        token_ms: 5,
        processes: 4,
        concurrency: 64,
        serve: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: {v:?} is not a whole number\n{USAGE}"))
        };
        match flag.as_str() {
            "--streams" => a.streams = num(&value)?.max(1) as usize,
            "--tokens" => a.tokens = num(&value)?.max(1),
            "--token-ms" => a.token_ms = num(&value)?,
            "--processes" => a.processes = num(&value)?.max(1) as usize,
            "--concurrency" => a.concurrency = num(&value)?.max(1) as usize,
            "--serve" => {
                a.serve = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--serve: {value:?} is not an address\n{USAGE}"))?,
                )
            }
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    Ok(a)
}

#[derive(serde::Deserialize)]
struct Prompt {
    prompt: String,
    tokens: Option<u64>,
    token_ms: Option<u64>,
}

/// `GET /generate?prompt=...`: the model's tokens as they come, one event
/// each, then `[DONE]`. A client that goes away drops the stream, which
/// cancels the generator on its worker.
async fn generate(
    State(pool): State<Llm>,
    Query(p): Query<Prompt>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let call = PyCall::new(
        "generate",
        json!({"prompt": p.prompt, "tokens": p.tokens.unwrap_or(20), "token_ms": p.token_ms.unwrap_or(5)}),
    );
    let tokens = match pool.stream(call).await {
        Ok(stream) => stream
            .map(|item| match item {
                Ok(token) => Event::default().data(token.as_str().unwrap_or_default()),
                Err(e) => Event::default().event("error").data(e.to_string()),
            })
            .left_stream(),
        Err(e) => {
            futures::stream::once(
                async move { Event::default().event("error").data(e.to_string()) },
            )
            .right_stream()
        }
    };
    let done = futures::stream::once(async { Event::default().data("[DONE]") });
    Sse::new(tokens.chain(done).map(Ok))
}

/// One client stream: the time to its first token and its token count.
async fn one_stream(addr: SocketAddr, i: usize, a: &Args) -> Result<(Duration, u64), String> {
    let began = Instant::now();
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET /generate?prompt=p{i}&tokens={}&token_ms={} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
        a.tokens, a.token_ms
    );
    conn.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let (mut seen, mut first, mut tokens) = (Vec::new(), None, 0);
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        tokens = text.matches(&format!("data: p{i}-")).count() as u64;
        if tokens > 0 && first.is_none() {
            first = Some(began.elapsed());
        }
        if text.contains("event: error") {
            return Err(format!("stream {i}: {text}"));
        }
        if text.contains("data: [DONE]") {
            break;
        }
    }
    Ok((first.ok_or(format!("stream {i} sent no token"))?, tokens))
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = match args() {
        Ok(a) => a,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let handlers = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/llm.py");
    let pool: Llm = Pool::builder(PythonFactory::new(
        PythonConfig::new(handlers).concurrency(a.concurrency),
    ))
    .name("llm")
    .size(a.processes)
    .max_waiters(a.streams.max(10_000))
    .build()
    .await?;
    let app = Router::new()
        .route("/generate", get(generate))
        .with_state(pool.clone());
    let listener =
        tokio::net::TcpListener::bind(a.serve.unwrap_or(([127, 0, 0, 1], 0).into())).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    if a.serve.is_some() {
        println!("serving on http://{addr}/generate?prompt=hi (Ctrl-C ends)");
        tokio::signal::ctrl_c().await?;
    } else {
        println!(
            "{} streams of {} tokens, one every {} ms, at once, through {} processes serving {} each",
            a.streams, a.tokens, a.token_ms, a.processes, a.concurrency
        );
        let began = Instant::now();
        let results =
            futures::future::join_all((0..a.streams).map(|i| one_stream(addr, i, &a))).await;
        let took = began.elapsed();
        let mut ttft = Vec::new();
        let mut failed = 0;
        for r in results {
            match r {
                Ok((first, tokens)) if tokens == a.tokens => ttft.push(first),
                Ok((_, tokens)) => {
                    failed += 1;
                    eprintln!("a stream ended after {tokens} tokens");
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("{e}");
                }
            }
        }
        ttft.sort();
        println!(
            "streams: {} ok, {failed} failed in {took:.2?}: {:.0} streams/s",
            ttft.len(),
            ttft.len() as f64 / took.as_secs_f64()
        );
        if !ttft.is_empty() {
            println!(
                "time to first token: p50 {:.1?}, p99 {:.1?}",
                percentile(&ttft, 0.5),
                percentile(&ttft, 0.99)
            );
        }
        println!("processes used: {}", pool.status().live);
        if failed > 0 {
            server.abort();
            pool.close().await;
            std::process::exit(1);
        }
    }
    server.abort();
    pool.close().await;
    Ok(())
}
