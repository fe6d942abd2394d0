//! Twilio webhooks without a valid signature change nothing; a media socket without the
//! call's token is refused.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::*;
use switchboard_actors::{CallId, CallState};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_signature_is_refused_and_changes_nothing() {
    let mut s = builtin("restaurant");
    s.answer.ring_ms = 60_000;
    let stack = stack(vec![s.clone()]).await;
    let id = stack.engine.place_call(request_for(&s)).await.unwrap();
    let before = stack.engine.status(id).await.unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://{}", stack.http_addr);
    for (path, sig) in [
        (format!("/twilio/status/{id}"), Some("bm90IGEgc2lnbmF0dXJl")),
        (format!("/twilio/status/{id}"), None),
        (
            format!("/twilio/voice/{id}"),
            Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        ),
    ] {
        let mut req = http.post(format!("{base}{path}")).form(&[
            ("CallSid", "CAforged"),
            ("CallStatus", "completed"),
            ("SequenceNumber", "99"),
        ]);
        if let Some(sig) = sig {
            req = req.header("X-Twilio-Signature", sig);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 403, "{path} with {sig:?}");
        // The API's one error shape, saying what is accepted.
        let body: serde_json::Value = resp.json().await.expect("a JSON error body");
        assert_eq!(body["error"]["code"], "forbidden", "{body}");
        let m = body["error"]["message"].as_str().unwrap();
        assert!(
            m.contains("X-Twilio-Signature") && m.contains("accepted:"),
            "{m}"
        );
    }
    let after = stack.engine.status(id).await.unwrap();
    assert_eq!(after.state, CallState::Dialing);
    assert_eq!(after.last_seq, before.last_seq.max(after.last_seq));
    assert!(
        after.carrier_status.as_deref() != Some("completed"),
        "{after:?}"
    );
    stack.engine.cancel(id).await.unwrap();
    stack.stop().await;
}

/// A Media Streams `start` for call `id` with a guessed token, as an intruder would send it.
fn forged_start(id: CallId) -> Message {
    let start = serde_json::json!({"event":"start","sequenceNumber":"1","streamSid":"MZforged",
        "start":{"accountSid":"AC1","streamSid":"MZforged","callSid":"CAforged","tracks":["inbound"],
                 "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},
                 "customParameters":{"callId": id.to_string(), "token":"guessed"}}});
    Message::text(start.to_string())
}

/// The code of the close frame the engine ends the socket with (bounded: 5 s).
async fn close_code<S>(ws: &mut S) -> Option<u16>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Close(f) = m {
                return f.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("the socket was closed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_socket_without_the_token_is_refused() {
    let mut s = builtin("restaurant");
    s.answer.ring_ms = 60_000;
    let stack = stack(vec![s.clone()]).await;
    let id = stack.engine.place_call(request_for(&s)).await.unwrap();
    let url = format!("ws://{}/twilio/media/{id}", stack.http_addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    ws.send(Message::text(
        r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
    ))
    .await
    .unwrap();
    ws.send(forged_start(id)).await.unwrap();
    // The engine closes the socket with a policy-violation close frame.
    assert_eq!(close_code(&mut ws).await, Some(1008));
    assert_eq!(
        stack.engine.status(id).await.unwrap().state,
        CallState::Dialing,
        "the forged stream did not connect the call"
    );
    // A socket for an unknown call is not even upgraded.
    let unknown = format!(
        "ws://{}/twilio/media/01JD3Z8Q5V6N0M8X9K2C4B7A1E",
        stack.http_addr
    );
    assert!(
        tokio_tungstenite::connect_async(unknown.as_str())
            .await
            .is_err()
    );
    stack.engine.cancel(id).await.unwrap();
    stack.stop().await;
}

/// Sockets that reach the call before its genuine stream — one refused for a wrong token, one
/// that goes away before `start` — do not take its place: the genuine stream is still taken
/// and the call runs to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_before_the_genuine_stream_do_not_take_its_place() {
    let mut s = builtin("restaurant");
    s.answer.ring_ms = 8_000; // 2 s at test speed: time for the intruders first
    let stack = stack(vec![s.clone()]).await;
    let id = stack.engine.place_call(request_for(&s)).await.unwrap();
    let url = format!("ws://{}/twilio/media/{id}", stack.http_addr);
    // One says `connected` and leaves without `start`.
    let (mut early, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    early
        .send(Message::text(
            r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
        ))
        .await
        .unwrap();
    early.close(None).await.unwrap();
    while let Some(Ok(_)) = early.next().await {}
    // One presents a guessed token and is refused with 1008.
    let (mut forged, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    forged.send(forged_start(id)).await.unwrap();
    assert_eq!(close_code(&mut forged).await, Some(1008));
    // The genuine stream comes after the ring and the call goes on as scripted.
    let rec = finished(&stack, id, Duration::from_secs(60)).await;
    assert_eq!(
        (rec.state, rec.detail),
        (
            CallState::Completed,
            switchboard_actors::CallDetail::AgentEnded
        ),
        "{rec:?}"
    );
    assert!(rec.outcome.is_some_and(|o| o.success));
    assert_no_violations(&stack);
    stack.stop().await;
}
