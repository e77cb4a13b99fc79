//! What cenote's own tests, examples and benches share, in one place
//! instead of a copy per test crate: a real etcd server ([`etcd`]), a bare bridge's fd 3 ([`fds`]), the
//! processes a test started as /proc shows them, found by an env tag and
//! never by name ([`procs`]), deadline-bound waits ([`wait`]), and the
//! chaos task the storms strike Python workers with ([`storm`]), the
//! start mode the suite runs them in ([`mode`]), and a recorder for
//! metrics tests ([`recorder`]).
//!
//! A dev-dependency only, never published: nothing a user links.

pub mod etcd;
pub mod fds;
pub mod mode;
pub mod procs;
pub mod recorder;
pub mod storm;
pub mod wait;

pub use etcd::EtcdServer;
pub use mode::start_mode;
pub use wait::{eventually, eventually_async};
