//! The write half of the call's model socket, shared so callee audio goes from the Twilio
//! leg's reader straight onto the model socket: no task hop per 20 ms frame (the measured
//! cost of a hop is two thread wake-ups). The model leg's own writer uses it for the rare
//! control events and the close frame.
//!
//! Until the session is open (the model connects while the phone rings) callee audio is held,
//! up to [`HELD_AT_MOST`] frames (the oldest go first), and goes out first once it is; after
//! the session closed it is dropped (the call is ending: the model leg has told the call why).

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::{Error, Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::wire::Appender;
use crate::twilio::wire::Payload;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub(crate) type Sink = SplitSink<Ws, Message>;

/// 10 s of 20 ms frames.
pub const HELD_AT_MOST: usize = 500;

#[derive(Clone, Default)]
pub struct ModelInput(Arc<Mutex<Input>>);

#[derive(Default)]
struct Input {
    state: State,
    appender: Appender,
    /// Callee audio that came while connecting.
    held: VecDeque<Payload>,
}

#[derive(Default)]
enum State {
    #[default]
    Connecting,
    Open(Sink),
    Closed,
}

impl ModelInput {
    /// Callee audio: written and flushed at once, held while connecting, dropped once closed.
    pub async fn audio(&self, payload: Payload) {
        let mut guard = self.0.lock().await;
        let g = &mut *guard;
        match &mut g.state {
            State::Open(sink) => {
                let event = text(g.appender.append(payload.as_bytes()));
                if sink.send(event).await.is_err() {
                    g.state = State::Closed;
                }
            }
            State::Connecting => {
                if g.held.len() == HELD_AT_MOST {
                    g.held.pop_front();
                }
                g.held.push_back(payload);
            }
            State::Closed => {}
        }
    }

    /// Opens the input on the connected socket (after the session's first event went out),
    /// writing the audio held meanwhile first, in one flush.
    pub(crate) async fn open(&self, mut sink: Sink) -> Result<(), Error> {
        let mut g = self.0.lock().await;
        let Input {
            state,
            appender,
            held,
        } = &mut *g;
        let released = async {
            for p in held.drain(..) {
                sink.feed(text(appender.append(p.as_bytes()))).await?;
            }
            sink.flush().await
        }
        .await;
        *state = match released {
            Ok(()) => State::Open(sink),
            Err(_) => State::Closed,
        };
        released
    }

    /// A control event (JSON text).
    pub(crate) async fn send(&self, event: String) -> Result<(), Error> {
        let mut g = self.0.lock().await;
        let State::Open(sink) = &mut g.state else {
            return Err(Error::AlreadyClosed);
        };
        let sent = sink.send(Message::text(event)).await;
        if sent.is_err() {
            g.state = State::Closed;
        }
        sent
    }

    /// Sends `frame` and closes the socket; later audio is dropped.
    pub(crate) async fn close(&self, frame: Message) {
        let mut g = self.0.lock().await;
        if let State::Open(sink) = &mut g.state {
            let _ = sink.send(frame).await;
            let _ = sink.close().await;
        }
        g.state = State::Closed;
        g.held.clear();
    }
}

/// A text frame of what [`Appender`] wrote (always UTF-8: JSON around base64).
fn text(b: bytes::Bytes) -> Message {
    Message::Text(Utf8Bytes::try_from(b).unwrap_or_else(|_| "".into()))
}
