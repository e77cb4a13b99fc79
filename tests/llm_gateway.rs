//! The LLM gateway example serves streams over HTTP from a pool of Python
//! processes that each serve many at once: a short run of the already-built
//! example, its printed summary read back.

use std::time::Duration;

mod support {
    pub mod example;
}
use support::example::run_example;

#[test]
fn the_gateway_streams_every_token_of_every_stream() {
    // 200 streams on 2 processes of 32: more streams than lanes, so some
    // wait for a lane, and every one must still come through whole.
    let out = run_example(
        "llm_gateway",
        &[
            "--streams",
            "200",
            "--tokens",
            "10",
            "--token-ms",
            "2",
            "--processes",
            "2",
            "--concurrency",
            "32",
        ],
        Duration::from_secs(120),
    );
    assert!(out.contains("streams: 200 ok, 0 failed"), "{out}");
    assert!(out.contains("time to first token: p50"), "{out}");
    let used = out
        .lines()
        .find_map(|l| l.strip_prefix("processes used: "))
        .and_then(|n| n.trim().parse::<usize>().ok());
    assert_eq!(used, Some(2), "{out}");
}
