//! What a caller of remote pools adds to the pool's own metrics
//! (`cenote_core::metrics`): calls per node and their latency, as the
//! caller saw them (network and the node's wait and call together). Names
//! always; recording with feature `metrics`.
//!
//! The `node` label is the serving node's name: a closed set as long as
//! the cluster is (nodes come and go, but not per call). A call that found
//! no node to go to is not counted here; its error says why.

use std::time::Duration;

use cenote_core::metrics::{counter, histogram, Kind, Label, Metric, POOL_LABEL};

use crate::error::CallError;

const NODE_LABEL: Label = Label {
    key: "node",
    values: &[],
};

/// Remote calls by node and outcome (`cenote.node.calls{node, outcome}`);
/// a stream counts as one call, when it ends (or is dropped: `ok`).
pub const CALLS: Metric = Metric {
    name: "cenote.node.calls",
    kind: Kind::Counter,
    unit: "{call}",
    labels: &[
        POOL_LABEL,
        NODE_LABEL,
        Label {
            key: "outcome",
            values: &["ok", "error", "node_lost"],
        },
    ],
    help: "Calls a caller sent to a node's pool: answered, failed with an error (the pool's, the worker's, a timeout), or lost with the node",
};

/// Remote call latency by node (`cenote.node.call_time{node}`).
pub const CALL_TIME: Metric = Metric {
    name: "cenote.node.call_time",
    kind: Kind::Histogram,
    unit: "s",
    labels: &[POOL_LABEL, NODE_LABEL],
    help: "Time from sending a call to a node to its answer, as the caller saw it (network, the node's wait for a worker, the call)",
};

/// Message bytes a caller sent to and received from a node
/// (`cenote.node.bytes{node, direction}`): bodies as they travel, JSON and
/// raw byte strings, without gRPC's own framing.
pub const BYTES: Metric = Metric {
    name: "cenote.node.bytes",
    kind: Kind::Counter,
    unit: "By",
    labels: &[
        POOL_LABEL,
        NODE_LABEL,
        Label {
            key: "direction",
            values: &["sent", "received"],
        },
    ],
    help: "Body bytes a caller sent to a node's pool (requests) and received from it (answers): the JSON and the raw byte strings beside it",
};

/// Every metric a caller of remote pools adds, in the README's order.
pub const NODE: &[Metric] = &[CALLS, CALL_TIME, BYTES];

/// One call or stream to `node`'s pool `pool`: `sent` body bytes out,
/// `received` back, ended after `took` with `error` if it failed. Handles
/// are looked up per call (a map lookup in the recorder): small beside a
/// network round trip.
pub(crate) fn record(
    pool: &str,
    node: &str,
    (sent, received): (usize, usize),
    error: Option<&CallError>,
    took: Duration,
) {
    let kind = match error {
        None => "ok",
        Some(CallError::NodeLost { .. }) => "node_lost",
        Some(_) => "error",
    };
    counter(&CALLS, &[("pool", pool), ("node", node), ("outcome", kind)]).increment(1);
    histogram(&CALL_TIME, &[("pool", pool), ("node", node)]).record(took);
    let bytes = |direction| {
        counter(
            &BYTES,
            &[("pool", pool), ("node", node), ("direction", direction)],
        )
    };
    bytes("sent").increment(sent as u64);
    bytes("received").increment(received as u64);
}
