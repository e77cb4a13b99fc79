//! [`PythonError`]: everything that can go wrong with a Python worker, each
//! with a message that says what happened and where to look.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::exits::BridgeExit;

/// How a worker process ended. An exit code the bridge uses is shown with
/// its name (see [`BridgeExit`]), e.g. `exit code 66 (IMPORT_FAILED: the
/// handler module failed to import)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// It was ended by this signal (e.g. 9 for SIGKILL, 11 for SIGSEGV).
    Signal(i32),
    /// Its status could not be collected in time.
    Unknown,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => match BridgeExit::from_code(*c) {
                Some(named) => write!(f, "exit code {c} ({}: {})", named.name(), named.meaning()),
                None => write!(f, "exit code {c}"),
            },
            Exit::Signal(s) => write!(f, "killed by signal {s} ({})", signal_name(*s)),
            Exit::Unknown => f.write_str("unknown exit status"),
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGINT => "SIGINT",
        libc::SIGPIPE => "SIGPIPE",
        _ => "signal",
    }
}

/// The last lines a worker wrote to stderr: the first place to look when it
/// crashed or failed to start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StderrTail(pub Vec<String>);

impl fmt::Display for StderrTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("; it wrote nothing to stderr");
        }
        f.write_str("; last stderr lines:")?;
        for line in &self.0 {
            write!(f, "\n  | {line}")?;
        }
        Ok(())
    }
}

/// Why a Python call, start or health check failed.
///
/// Variants fall in two groups. The *call* errors (`Raised`, `SystemExit`,
/// `UnknownFunction`, `BadArguments`, `Unserializable`, `ResultTooLarge`,
/// `RequestTooLarge`, `BadRequest`, `Decode`) leave the worker serving. The rest mean the process
/// is gone or was killed; [`is_fatal`](PythonError::is_fatal) tells them apart.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PythonError {
    /// The handler raised an exception. The worker stays up.
    #[error("{function} raised {type_name}: {message}\n{traceback}")]
    Raised {
        /// The function called.
        function: String,
        /// The exception's Python type, e.g. `ValueError`.
        type_name: String,
        /// `str(exception)`.
        message: String,
        /// The formatted Python traceback.
        traceback: String,
    },
    /// The handler called `sys.exit()` (raised `SystemExit`). The bridge
    /// catches it: the call fails and the worker stays up. (`os._exit()`
    /// cannot be caught: it ends the process, which is [`Crashed`](Self::Crashed).)
    #[error(
        "{function} called sys.exit({code}); the call failed, the worker stays up\n{traceback}"
    )]
    SystemExit {
        /// The function called.
        function: String,
        /// The exit code as Python shows it (`repr(SystemExit.code)`):
        /// `None`, `3`, `'bye'`...
        code: String,
        /// The formatted Python traceback.
        traceback: String,
    },
    /// No public function of that name in the handler module (classes,
    /// modules and names with a leading `_` are not callable).
    #[error("unknown function: {message}")]
    UnknownFunction {
        /// The name asked for.
        function: String,
        /// The bridge's message, listing the functions that exist.
        message: String,
    },
    /// The arguments do not fit the function's signature.
    #[error("bad arguments for {function}: {message}")]
    BadArguments {
        /// The function called.
        function: String,
        /// What Python said, with the signature.
        message: String,
    },
    /// The handler returned something JSON cannot carry (a set, an object,
    /// NaN...). Convert it to lists, dicts, strings and numbers.
    #[error("{function} returned a value that cannot be sent back: {message}")]
    Unserializable {
        /// The function called.
        function: String,
        /// What the encoder said.
        message: String,
    },
    /// The handler's result is larger than `max_frame_size`. Return less, or
    /// raise the limit.
    #[error("result of {function} is too large: {message}")]
    ResultTooLarge {
        /// The function called.
        function: String,
        /// Sizes, from the bridge.
        message: String,
    },
    /// The request is larger than `max_frame_size`; it was not sent.
    #[error("request to {function} is {size} bytes, over the max frame size of {max} bytes; send less or raise max_frame_size")]
    RequestTooLarge {
        /// The function called.
        function: String,
        /// The encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The request could not be encoded or was refused by the bridge as
    /// malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A typed call's result did not match the Rust type asked for.
    #[error("result of {function} does not match the expected type: {source}")]
    Decode {
        /// The function called.
        function: String,
        /// The serde error.
        source: Arc<serde_json::Error>,
    },
    /// A pool's stream ran past its call's deadline; it was cancelled (its
    /// worker serves on if it let go within the pool's `cancel_grace`, and
    /// is killed and replaced if not).
    #[error(
        "{function} did not finish within {after:?}; it was cancelled on its worker (pid {pid})"
    )]
    Timeout {
        /// The function called.
        function: String,
        /// The deadline it had.
        after: Duration,
        /// The killed worker's pid.
        pid: u32,
    },
    /// The process died (exit, signal, segfault) while the worker used it.
    #[error("python worker (pid {pid}) died: {status}{stderr_tail}")]
    Crashed {
        /// Its pid.
        pid: u32,
        /// How it ended.
        status: Exit,
        /// What it last wrote to stderr.
        stderr_tail: StderrTail,
    },
    /// The bridge sent bytes that break the protocol (garbage, an oversized
    /// frame, an answer to the wrong request); the worker was killed.
    #[error("python worker (pid {pid}) broke the protocol: {message}; it was killed{stderr_tail}")]
    Protocol {
        /// Its pid.
        pid: u32,
        /// What was wrong.
        message: String,
        /// What it last wrote to stderr.
        stderr_tail: StderrTail,
    },
    /// The interpreter could not be launched (or came up without its pipes).
    #[error("cannot launch python interpreter {}: {source}", interpreter.display())]
    Spawn {
        /// The interpreter tried.
        interpreter: PathBuf,
        /// The OS error.
        source: Arc<std::io::Error>,
    },
    /// Asking the interpreter for its real path (`sys.executable`) failed.
    #[error("cannot resolve python interpreter {}: {message}", interpreter.display())]
    Interpreter {
        /// The interpreter as configured.
        interpreter: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The worker failed before it was ready: the handler module is missing
    /// or does not import (syntax error, import error...).
    #[error("python worker (pid {pid}) failed to start: {message}{stderr_tail}")]
    Startup {
        /// Its pid.
        pid: u32,
        /// The cause, e.g. the import error.
        message: String,
        /// What it last wrote to stderr.
        stderr_tail: StderrTail,
    },
    /// The worker sent no ready frame within `startup_timeout`; it was killed.
    #[error("python worker (pid {pid}) was not ready within {after:?}; it was killed (raise startup_timeout if the handler module imports slowly){stderr_tail}")]
    StartupTimeout {
        /// Its pid.
        pid: u32,
        /// The startup timeout.
        after: Duration,
        /// What it last wrote to stderr.
        stderr_tail: StderrTail,
    },
    /// An idle worker did not answer a ping within `heartbeat_timeout` (hung,
    /// stopped, or stuck in C code holding the GIL); it was killed.
    #[error(
        "python worker (pid {pid}) did not answer a heartbeat within {after:?}; it was killed"
    )]
    Heartbeat {
        /// Its pid.
        pid: u32,
        /// The heartbeat timeout.
        after: Duration,
    },
    /// A call abandoned by its caller (on a worker used without a pool) did
    /// not let go when cancelled; the worker was killed rather than used
    /// again.
    #[error("python worker (pid {pid}) did not let go of an abandoned call when cancelled; it was killed")]
    Abandoned {
        /// Its pid.
        pid: u32,
    },
    /// The process this call was in flight on (one serving many calls at
    /// once) was killed because of another call: `cause` says which, and
    /// why (it ran past its deadline and did not let go when cancelled, or
    /// the process missed a heartbeat).
    #[error("python worker (pid {pid}) was killed because {cause}; this call was in flight on it")]
    Killed {
        /// Its pid.
        pid: u32,
        /// Why it was killed, naming the call that caused it.
        cause: String,
    },
    /// The pool closed, and its close grace ran out, while this stream
    /// was running; its worker was killed.
    #[error("the pool closed while {function} was streaming, and its close grace ran out; its worker was killed")]
    Closed {
        /// The function streamed.
        function: String,
    },
}

impl PythonError {
    /// True when the worker's process is gone or was killed because of this
    /// error; false for errors about one call, after which it keeps serving.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            PythonError::Raised { .. }
                | PythonError::SystemExit { .. }
                | PythonError::UnknownFunction { .. }
                | PythonError::BadArguments { .. }
                | PythonError::Unserializable { .. }
                | PythonError::ResultTooLarge { .. }
                | PythonError::RequestTooLarge { .. }
                | PythonError::BadRequest(_)
                | PythonError::Decode { .. }
        )
    }

    /// The Python exception type, for `Raised`.
    pub fn python_type(&self) -> Option<&str> {
        match self {
            PythonError::Raised { type_name, .. } => Some(type_name),
            _ => None,
        }
    }
}

impl cenote_core::ErrorKind for PythonError {
    /// The exception type for a raised exception (`"ValueError"`), the
    /// variant's name otherwise (`"Timeout"`, `"Crashed"`...).
    fn kind(&self) -> String {
        use PythonError as P;
        let name = match self {
            P::Raised { type_name, .. } => return type_name.clone(),
            P::SystemExit { .. } => "SystemExit",
            P::UnknownFunction { .. } => "UnknownFunction",
            P::BadArguments { .. } => "BadArguments",
            P::Unserializable { .. } => "Unserializable",
            P::ResultTooLarge { .. } => "ResultTooLarge",
            P::RequestTooLarge { .. } => "RequestTooLarge",
            P::BadRequest(_) => "BadRequest",
            P::Decode { .. } => "Decode",
            P::Timeout { .. } => "Timeout",
            P::Crashed { .. } => "Crashed",
            P::Protocol { .. } => "Protocol",
            P::Spawn { .. } => "Spawn",
            P::Interpreter { .. } => "Interpreter",
            P::Startup { .. } => "Startup",
            P::StartupTimeout { .. } => "StartupTimeout",
            P::Heartbeat { .. } => "Heartbeat",
            P::Abandoned { .. } => "Abandoned",
            P::Killed { .. } => "Killed",
            P::Closed { .. } => "Closed",
        };
        name.to_string()
    }

    fn is_too_large(&self) -> bool {
        matches!(
            self,
            PythonError::ResultTooLarge { .. } | PythonError::RequestTooLarge { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_of_the_bridge_are_named() {
        let shown = Exit::Code(BridgeExit::ImportFailed.code()).to_string();
        assert_eq!(
            shown,
            "exit code 66 (IMPORT_FAILED: the handler module failed to import)"
        );
        assert_eq!(Exit::Code(3).to_string(), "exit code 3");
        assert_eq!(
            Exit::Signal(libc::SIGKILL).to_string(),
            "killed by signal 9 (SIGKILL)"
        );
    }
}
