//! One phone call: its pure state machine, its actor, and the messages between them.

pub mod actor;
pub mod messages;
pub mod state;
pub mod types;

use std::time::Duration;

use tokio_util::task::AbortOnDropHandle;

/// Read and write buffers of both legs' sockets, sized for 20 ms frames and small events
/// rather than the library's 128 KiB each (two sockets per call). A larger message (a long
/// audio delta) still fits: the read buffer grows for it, and writes beyond this are flushed.
pub const SOCKET_BUFFER: usize = 8 * 1024;

/// How a leg lets go of its socket when the actor stops: the reader dies at once (nothing it
/// could read matters any more), `close` asks the writer for a close frame, and the writer gets
/// a bounded moment to send it so the peer sees a clean close rather than a reset. Answers
/// what the writer returned, or `None` if it had to be aborted.
pub(crate) async fn stop_socket<T>(
    reader: &AbortOnDropHandle<()>,
    writer: Option<AbortOnDropHandle<T>>,
    close: impl std::future::Future<Output = ()>,
) -> Option<T> {
    reader.abort();
    // A peer that stopped reading must not keep the writer (and what it holds) alive.
    let mut w = writer?;
    let finished = tokio::time::timeout(Duration::from_secs(2), async {
        close.await;
        (&mut w).await
    })
    .await;
    match finished {
        Ok(Ok(v)) => Some(v),
        Ok(Err(_)) => None,
        Err(_) => {
            tracing::warn!("the media socket did not close within 2 s; dropped");
            w.abort();
            None
        }
    }
}
