//! cenote's Python backend: pool workers that each own one long-lived Python
//! process, and survive its crashes, hangs and bad input.
//!
//! ```no_run
//! use std::time::Duration;
//! use serde_json::json;
//! use cenote_core::{CallOptions, Pool};
//! use cenote_strategies::{Fifo, Lifo};
//! use cenote_python::{PyCall, PythonConfig, PythonFactory, PythonPool};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = PythonConfig::new("examples/python/handlers.py")
//!     .recycle_after_tasks(10_000);
//! let pool: Pool<PythonFactory, Lifo, Fifo> = Pool::builder(PythonFactory::new(config))
//!     .name("py")
//!     .size(4)
//!     .call_timeout(Duration::from_secs(30)) // every call's deadline, unless it gives its own
//!     .build()
//!     .await?;
//!
//! // JSON in, JSON out; an object is passed as keyword arguments.
//! let echoed = pool.call(PyCall::new("echo", json!({"value": [1, 2, 3]}))).await?;
//! // Typed, with this call's own deadline (its only one: past it the
//! // worker is killed and replaced, and the caller gets `CallTimeout`).
//! let total: i64 = pool
//!     .call_with(
//!         PyCall::new("add", json!([2, 3])).returning::<i64>(),
//!         CallOptions::default().timeout(Duration::from_secs(1)),
//!     )
//!     .await?;
//! // A generator handler, streamed.
//! use futures::StreamExt;
//! let mut items = pool.stream(PyCall::new("count", json!({"n": 3}))).await?;
//! while let Some(item) = items.next().await {
//!     println!("{}", item?);
//! }
//! # let _ = (echoed, total);
//! pool.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Raw bytes
//!
//! Bytes travel beside a call's JSON as they are, both ways, with no base64
//! and no pickle: [`PyCall::kwarg_bytes`] and [`PyCall::attach`] move a
//! `Bytes` or `Vec<u8>` in without a copy, [`PyCall::with_args`] takes
//! byte-string fields (`Bytes`, `serde_bytes::ByteBuf`) from anywhere in a
//! serde type; the handler gets Python `bytes` there, or, from
//! [`PythonConfig::shm_threshold`] on (64 KiB), a read-only `memoryview`
//! on the worker's shared memory, valid until the call ends. Bytes a handler
//! returns (`bytes`, `bytearray`, `memoryview`), anywhere in a result or a
//! stream item, decode into the byte-string fields of the type asked for
//! with [`PyCall::returning`] or [`PyStream::typed`], taking the buffer
//! they were read into. A JSON `Value` cannot hold bytes, so an untyped
//! call whose result has some fails with [`PythonError::Decode`], which
//! says how to ask for them. `max_frame_size` bounds the JSON and the bytes
//! together: over it, a request is [`PythonError::RequestTooLarge`] (not
//! sent) and a result [`PythonError::ResultTooLarge`], and the worker
//! serves on.
//!
//! ```no_run
//! # use cenote_core::Pool;
//! # use cenote_python::PythonFactory;
//! # use cenote_strategies::{Fifo, Lifo};
//! use cenote_python::{Bytes, PyCall};
//! # async fn run(pool: Pool<PythonFactory, Lifo, Fifo>) -> Result<(), Box<dyn std::error::Error>> {
//! let image = Bytes::from(vec![0u8; 1 << 20]);
//! let call = PyCall::new("invert", serde_json::json!(null)).kwarg_bytes("data", image);
//! let inverted: Bytes = pool.call(call.returning()).await?;
//! # let _ = inverted;
//! # Ok(())
//! # }
//! ```
//!
//! How it works: each worker runs `<python> -u -c <bridge>` (the bridge
//! ships in this crate) in its own process group. Requests and answers are
//! length-prefixed frames (JSON, then any raw bytes; see the `frame`
//! module) on private copies of stdin/stdout, so handler output cannot
//! corrupt them; the bridge announces its wire protocol version when ready,
//! and a worker whose bridge speaks another fails to start, saying so; stderr lines go to tracing (target
//! `cenote_python::stderr`). A worker that dies, hangs past a deadline or
//! misses a heartbeat is killed by process group and replaced by the pool.
//! The bridge also exits by itself when the host process goes away.
//!
//! Start modes ([`StartMode`]): by default workers are forked from a fork
//! server that imported the handler module once (see the `zygote` module
//! header for how exits, process groups and orphans are handled), and
//! spawned as fresh interpreters where forking is not safe;
//! [`PythonFactory::start_mode`] says which, and why.
//!
//! # Handler modules
//!
//! - A call may name the module's public (no leading `_`) callables other
//!   than classes and modules: exactly [`ReadyInfo::functions`]. Any other
//!   name is [`PythonError::UnknownFunction`], and the worker serves on.
//! - A handler file is loaded under its file name, unless that name means
//!   another module (a `json.py`, a `logging.py`): then under a private
//!   name. Its directory and the working directory go on `sys.path` after
//!   the standard library, so they add modules but never shadow standard
//!   ones, for the bridge or for the handler's own imports.
//! - `sys.exit()` (any `SystemExit`) in a handler fails only that call, with
//!   [`PythonError::SystemExit`]; the worker stays up. `os._exit(n)` ends the
//!   process: the caller gets [`PythonError::Crashed`] with exit code `n`
//!   (through a pool, `Error::Crashed`, and a replacement starts). Any other
//!   `BaseException` out of a handler (`KeyboardInterrupt`...) ends the
//!   bridge with [`BridgeExit::Internal`].
//! - The bridge exits only with the codes of [`BridgeExit`]; crash and start
//!   errors name them (`exit code 66 (IMPORT_FAILED: ...)`).

#![warn(missing_docs)]

mod attach;
mod batch;
mod bridge;
mod command;
mod config;
mod error;
mod exits;
mod factory;
mod fds;
mod frame;
pub mod metrics;
mod pool;
mod process;
mod protocol;
mod reply;
mod request;
mod shm;
mod stream;
mod worker;
mod zygote;

pub use batch::{PyItem, TypedItem};
pub use bridge::script as bridge_script;
pub use bytes::Bytes;
pub use config::{Handler, PythonConfig, StartMode};
pub use error::{Exit, PythonError, StderrTail};
pub use exits::BridgeExit;
pub use factory::{PythonFactory, StartReport};
/// The frame decoder, for the frame proptests and the fuzz target
/// (feature `testing`; not part of the API).
#[cfg(feature = "testing")]
#[doc(hidden)]
pub use frame::{Decoder as FrameDecoder, Frame, FrameError};
pub use pool::PythonPool;
pub use reply::PyReply;
pub use request::{PyCall, RawCall, TypedCall};
pub use stream::PyStream;
pub use worker::{PythonWorker, ReadyInfo};
