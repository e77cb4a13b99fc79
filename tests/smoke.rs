mod common;
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_get_status_close() {
    let f = TestFactory::default();
    let pool = builder(f.clone(), 3).build().await.unwrap();
    assert_eq!(pool.status().idle, 3);
    assert_eq!(pool.call(Op::Ok).await.unwrap() > 0, true);
    let g = pool.get().await.unwrap();
    assert_eq!(pool.status().busy, 1);
    drop(g);
    pool.check_invariants().unwrap();
    assert_eq!(pool.status().totals.served, 2);
    pool.close().await;
    assert_eq!(f.book.alive(), 0);
    let _ = Duration::ZERO;
}
