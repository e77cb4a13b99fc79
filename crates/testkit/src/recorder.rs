//! A `metrics` recorder a test installs for itself, and the one-thread
//! runtime it runs on: `metrics::with_local_recorder` holds for the
//! current thread only, so everything that records must run there.

use metrics_util::debugging::{DebuggingRecorder, Snapshotter};

/// A fresh recorder, what reads it, and a current-thread runtime.
pub fn local_recorder() -> (DebuggingRecorder, Snapshotter, tokio::runtime::Runtime) {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    (recorder, snap, rt)
}
