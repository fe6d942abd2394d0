//! The floor's server: a bare echo of the Twilio media WebSocket (`switchboard bench-echo`).
//!
//! It accepts any media socket and sends each `media` message straight back as it came: one
//! read and one write per frame, no parsing beyond spotting the event name, no engine, no
//! model socket. Everything else the simulator sends (`connected`, `start`, `stop`) is read
//! and dropped; a close is answered. What this costs per call is the floor the engine's
//! figures are compared with.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Serves until `stop` is cancelled; each connection in its own task.
pub async fn serve(listener: TcpListener, stop: CancellationToken) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    conns.spawn(connection(tcp, stop.clone()));
                }
                Err(e) => {
                    tracing::warn!("bench-echo: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stop.cancelled() => break,
        }
    }
    conns.abort_all();
}

async fn connection(tcp: TcpStream, stop: CancellationToken) {
    let ws = match tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::accept_async(tcp),
    )
    .await
    {
        Ok(Ok(ws)) => ws,
        _ => return,
    };
    let (mut tx, mut rx) = ws.split();
    loop {
        let msg = tokio::select! {
            m = rx.next() => m,
            _ = stop.cancelled() => break,
        };
        match msg {
            Some(Ok(Message::Text(t))) => {
                if is_media(t.as_str()) && tx.send(Message::Text(t)).await.is_err() {
                    break;
                }
            }
            Some(Ok(Message::Close(_))) => {
                // tungstenite queued the reply close frame; flushing sends it.
                let _ = tx.flush().await;
                break;
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => break,
        }
    }
}

/// A Media Streams `media` message (the simulator writes `"event":"media"` first).
fn is_media(text: &str) -> bool {
    text.get(..24)
        .unwrap_or(text)
        .contains(r#""event":"media""#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_media_is_echoed() {
        assert!(is_media(
            r#"{"event":"media","sequenceNumber":"2","media":{}}"#
        ));
        assert!(!is_media(r#"{"event":"start","start":{"event":"media"}}"#));
        assert!(!is_media(r#"{"event":"stop"}"#));
    }
}
