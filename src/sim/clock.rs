//! Bounds the simulator measures on the wall clock.
//!
//! Tests may pause tokio's clock, which then jumps to the next timer whenever every task
//! waits — even while the engine's answer is on its way through a socket. A check like "the
//! engine replied to our close within 2 s" would then fire before the engine even ran, so it
//! is bounded by real time instead, polled on tokio's clock.

// The one place std's clock is the point: see above.
#![allow(clippy::disallowed_types)]

use std::future::Future;
use std::time::Duration;

/// `fut`'s output, or `None` when `limit` of real time passed first.
pub async fn within<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    let start = std::time::Instant::now();
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return Some(out),
            _ = tokio::time::sleep(Duration::from_millis(10)) => {
                if start.elapsed() >= limit {
                    return None;
                }
            }
        }
    }
}
