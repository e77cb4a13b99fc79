//! The batching example under rising load: a short run of the built
//! example, its table read back. Batches hold one item when one caller
//! calls, and grow by themselves as callers queue up.

use std::time::Duration;

mod support {
    pub mod example;
}
use support::example::run_example;

/// The mean batch size the example printed for `callers`.
fn mean_batch(out: &str, callers: u32) -> f64 {
    let row = out
        .lines()
        .find(|l| l.starts_with(&format!("| {callers} |")))
        .unwrap_or_else(|| panic!("no row for {callers} callers:\n{out}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    cells[6].parse().unwrap_or_else(|_| panic!("{row}"))
}

#[test]
fn batches_grow_with_load_and_an_item_fails_alone() {
    let out = run_example("batching", &["--secs", "0.3"], Duration::from_secs(120));
    assert_eq!(mean_batch(&out, 1), 1.0, "{out}");
    assert!(mean_batch(&out, 256) > 8.0, "{out}");
    assert!(mean_batch(&out, 256) > mean_batch(&out, 16), "{out}");
    assert!(
        out.contains("the empty text failed alone: ValueError: empty text"),
        "{out}"
    );
}
