//! The bridge script every worker runs, shipped inside the crate so a pool
//! needs nothing installed on the Python side.

/// The Python source, passed to the interpreter with `-c`.
pub const SCRIPT: &str = include_str!("bridge.py");
