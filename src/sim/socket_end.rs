//! How the simulator tells a closed socket from a dropped one, on both halves.

use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};

/// After a send failed the socket is going, but the engine's close frame may still be waiting
/// to be read. Reads (bounded by `limit` of real time) until it comes and then completes the
/// close handshake; `Err` says how the socket ended instead, for the drop violation. Generic
/// over the socket's message type: the model half serves axum sockets, the media half dials
/// tungstenite ones.
pub async fn expect_close<M, E, T, R>(
    tx: &mut T,
    rx: &mut R,
    is_close: impl Fn(&M) -> bool,
    limit: Duration,
) -> Result<(), String>
where
    E: std::fmt::Display,
    T: Sink<M> + Unpin,
    R: Stream<Item = Result<M, E>> + Unpin,
{
    let end = crate::sim::clock::within(limit, async {
        loop {
            match rx.next().await {
                Some(Ok(m)) if is_close(&m) => return Ok(()),
                Some(Ok(_)) => continue,
                None => return Err("the connection ended (EOF)".to_owned()),
                Some(Err(e)) => return Err(format!("reading failed: {e}")),
            }
        }
    })
    .await;
    match end {
        Some(Ok(())) => {
            let _ = tx.flush().await;
            Ok(())
        }
        Some(Err(what)) => Err(format!("a send failed, then {what}")),
        None => Err(format!(
            "a send failed and no close frame came within {limit:?}"
        )),
    }
}
