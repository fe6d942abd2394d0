//! One phone call: its pure state machine, its actor, and the messages between them.

pub mod actor;
pub mod messages;
pub mod state;

use std::time::Duration;

use tokio::task::JoinHandle;

/// How a leg lets go of its socket when the actor stops: the reader dies at once (nothing it
/// could read matters any more), `close` asks the writer for a close frame, and the writer gets
/// a bounded moment to send it so the peer sees a clean close rather than a reset.
pub(crate) async fn stop_socket(
    reader: &JoinHandle<()>,
    writer: Option<JoinHandle<()>>,
    close: impl FnOnce(),
) {
    reader.abort();
    close();
    // A peer that stopped reading must not keep the writer (and what it holds) alive.
    if let Some(mut w) = writer
        && tokio::time::timeout(Duration::from_secs(2), &mut w)
            .await
            .is_err()
    {
        w.abort();
    }
}
