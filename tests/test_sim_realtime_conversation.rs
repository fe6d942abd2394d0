//! A conversation with the simulator's Realtime model, driven directly by a scripted client
//! written from protocols/openai-realtime.md (no engine in the loop): the callee's audio heard
//! and transcribed, scripted responses with a tool call, cancel, truncate and barge-in.

#[path = "support/sim_realtime.rs"]
mod harness;
#[path = "support/wire.rs"]
mod wire;

use std::time::Duration;

use harness::*;
use serde_json::{Value, json};
use switchboard::sim::Scenario;
use switchboard::sim::voice::FRAME_BYTES;
use wire::assert_shape;

// ------------------------------------------------------------------ speech in (§5.2, §5.3)

#[tokio::test]
async fn the_callees_audio_is_heard_turned_and_transcribed() {
    let sim = sim().await;
    let s = restaurant();
    let line = s.script[1].callee.clone().expect("callee line");
    // The Twilio half registers what the callee says; here the test stands in for it.
    let audio = sim.state().voices.register(&line);
    let mut c = connect(&sim, Connect::default()).await;
    let id = c.start(&instructions_for(&s)).await;
    // Without the agent speaking first, a greeting turn would interleave; turn it off.
    c.send(
        &json!({"type": "session.update", "session": {"type": "realtime",
        "audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": false}}}}}),
    )
    .await;
    c.until("session.updated").await;

    c.silence(200).await;
    c.append(&audio).await;
    c.silence(700).await;
    let started = c.until("input_audio_buffer.speech_started").await;
    let item = started["item_id"].as_str().unwrap().to_owned();
    // 200 ms of silence came first; the start includes 300 ms of prefix padding.
    assert_eq!(started["audio_start_ms"], 0);
    let stopped = c.until("input_audio_buffer.speech_stopped").await;
    let line_ms = (audio.len() / 8) as u64;
    assert_eq!(stopped["audio_end_ms"], 200 + line_ms);
    assert_eq!(stopped["item_id"], item.as_str());
    let committed = c.until("input_audio_buffer.committed").await;
    assert_eq!(committed["item_id"], item.as_str());
    let added = c.until("conversation.item.added").await;
    assert_eq!(added["item"]["role"], "user");
    assert_eq!(added["item"]["content"][0]["type"], "input_audio");
    c.until("conversation.item.done").await;
    let done = c
        .until("conversation.item.input_audio_transcription.completed")
        .await;
    assert_eq!(done["transcript"], line.as_str());
    assert_eq!(done["item_id"], item.as_str());
    assert_shape(
        &fixture("transcription_completed_usage.json"),
        &done["usage"],
        "usage",
    );
    let order = types(&c.seen);
    let pos = |t: &str| order.iter().position(|x| *x == t).unwrap();
    assert!(
        pos("input_audio_buffer.speech_started") < pos("input_audio_buffer.speech_stopped")
            && pos("input_audio_buffer.speech_stopped") < pos("input_audio_buffer.committed")
            && pos("input_audio_buffer.committed") < pos("conversation.item.added")
            && pos("conversation.item.done")
                < pos("conversation.item.input_audio_transcription.completed"),
        "{order:?}"
    );
    assert!(violations_of(&sim, &id).is_empty());

    // The same line with one byte changed is not the callee's line: a violation, and a
    // transcript that says so instead of words.
    let mut altered = audio.clone();
    altered[audio.len() / 2] ^= 0x01;
    c.append(&altered).await;
    c.silence(700).await;
    c.until("input_audio_buffer.committed").await;
    c.until("conversation.item.done").await;
    let v = violations_of(&sim, &id);
    assert!(
        v.iter().any(|(rule, _, _)| rule == "unrecognized-audio"),
        "{v:?}"
    );
    let placeholder = c
        .until("conversation.item.input_audio_transcription.completed")
        .await;
    assert_eq!(placeholder["transcript"], "[unrecognised audio]");
    let transcripts = c
        .seen
        .iter()
        .filter(|e| e["type"] == "conversation.item.input_audio_transcription.completed")
        .count();
    assert_eq!(transcripts, 2);
    let summary = sim
        .state()
        .realtime
        .sessions()
        .into_iter()
        .find(|x| x.id == id)
        .unwrap();
    assert_eq!(summary.callee_heard, vec![line]);
    sim.shutdown().await;
}

// ------------------------------------------------------------------ responses (§5.2, §5.3)

#[tokio::test]
async fn a_scripted_conversation_with_a_tool_call_end_to_end() {
    let sim = sim().await;
    let s = restaurant();
    let mut c = connect(&sim, Connect::default()).await;
    let id = c.start(&instructions_for(&s)).await;

    // The agent speaks first on response.create (§7).
    c.send(&json!({"type": "response.create"})).await;
    let first = response(&mut c).await;
    let kinds = types(&first);
    assert_eq!(
        kinds[..3],
        [
            "response.created",
            "response.output_item.added",
            "conversation.item.added"
        ]
    );
    for t in [
        "response.content_part.added",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
    ] {
        assert!(kinds.contains(&t), "{t} missing from {kinds:?}");
    }
    let delta = first
        .iter()
        .find(|e| e["type"] == "response.output_audio.delta")
        .unwrap();
    assert_shape(&fixture("output_audio_delta.json"), delta, "delta");
    // No beta names, ever.
    assert!(
        !kinds
            .iter()
            .any(|k| k.starts_with("response.audio") || *k == "conversation.item.created"),
        "{kinds:?}"
    );
    // Audio of realistic length for the words: exactly the line's rendering.
    let said = s.script[0].agent.clone().unwrap();
    let audio = audio_of(&first);
    assert_eq!(
        audio.len(),
        switchboard::sim::voice::frames_for(&said) * FRAME_BYTES
    );
    assert_eq!(audio, switchboard::sim::voice::synthesize(&said));
    let transcript: String = first
        .iter()
        .filter(|e| e["type"] == "response.output_audio_transcript.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(transcript, said);
    let done = first.last().unwrap();
    assert_eq!(done["response"]["status"], "completed");
    assert_eq!(done["response"]["object"], "realtime.response");
    assert_shape(
        &fixture("response_done_usage.json"),
        &done["response"]["usage"],
        "usage",
    );
    assert!(done["response"]["usage"]["output_tokens"].as_u64().unwrap() > 0);

    // The callee answers; server VAD ends the turn and the agent answers on its own.
    for step in [1usize, 3] {
        let line = s.script[step].callee.clone().unwrap();
        let audio = sim.state().voices.register(&line);
        c.append(&audio).await;
        c.silence(700).await;
        let heard = c
            .until("conversation.item.input_audio_transcription.completed")
            .await;
        assert_eq!(heard["transcript"], line.as_str());
        let reply = response(&mut c).await;
        let text: String = reply
            .iter()
            .filter(|e| e["type"] == "response.output_audio_transcript.done")
            .map(|e| e["transcript"].as_str().unwrap())
            .collect();
        assert_eq!(text, s.script[step + 1].agent.clone().unwrap());
        if step == 3 {
            // The last turn ends with the scripted tool call (GA: with its name).
            let call = reply
                .iter()
                .find(|e| e["type"] == "response.function_call_arguments.done")
                .unwrap_or_else(|| panic!("no tool call in {:?}", types(&reply)));
            assert_shape(
                &fixture("function_call_arguments_done.json"),
                call,
                "function_call_arguments.done",
            );
            assert_eq!(call["name"], "end_call");
            let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
            assert_eq!(args, s.script[4].tool.clone().unwrap().arguments);
            let output_item = &reply.last().unwrap()["response"]["output"];
            assert!(
                output_item
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|i| i["type"] == "function_call" && i["call_id"] == call["call_id"]),
                "{output_item}"
            );

            // The client answers the call (§4 shape) and it is accepted.
            let mut out = fixture("item_create_function_call_output.json");
            out["item"]["call_id"] = call["call_id"].clone();
            c.send(&out).await;
            let added = c.until("conversation.item.added").await;
            assert_eq!(added["item"]["type"], "function_call_output");
            assert_eq!(added["item"]["call_id"], call["call_id"]);
            c.until("conversation.item.done").await;
        }
    }
    // A user text item is accepted too.
    c.send(&fixture("item_create_user_text.json")).await;
    let added = c.until("conversation.item.added").await;
    assert_eq!(added["item"]["role"], "user");

    assert!(
        violations_of(&sim, &id).is_empty(),
        "{:?}",
        violations_of(&sim, &id)
    );
    let summary = sim
        .state()
        .realtime
        .sessions()
        .into_iter()
        .find(|x| x.id == id)
        .unwrap();
    assert_eq!(summary.agent_said.len(), 3, "{summary:?}");
    assert_eq!(summary.function_outputs, vec!["{\"ok\":true}".to_owned()]);
    assert_eq!(summary.input_format, "audio/pcmu");
    sim.shutdown().await;
}

#[tokio::test]
async fn cancel_truncate_and_barge_in() {
    let sim = sim().await;
    let s = Scenario::builtin_named("interrupt").unwrap();
    let long = s.script[0].agent.clone().unwrap();
    let mut c = connect(&sim, Connect::default()).await;
    let id = c.start(&instructions_for(&s)).await;

    // response.cancel mid-response: deltas stop, response.done says cancelled by the client.
    c.send(&json!({"type": "response.create"})).await;
    c.until("response.created").await;
    let first = c.until("response.output_audio.delta").await;
    let item = first["item_id"].as_str().unwrap().to_owned();
    // A second response while one is active is refused.
    c.send(&json!({"type": "response.create"})).await;
    let err = c.until("error").await;
    assert_eq!(
        err["error"]["code"],
        "conversation_already_has_active_response"
    );
    c.send(&json!({"type": "response.cancel"})).await;
    let done = c.until("response.done").await;
    assert_eq!(done["response"]["status"], "cancelled");
    assert_eq!(
        done["response"]["status_details"]["reason"],
        "client_cancelled"
    );
    let sent = audio_of(&c.seen).len();
    assert!(
        sent < switchboard::sim::voice::frames_for(&long) * FRAME_BYTES,
        "the whole line was sent before the cancel"
    );
    // Nothing more of that response arrives.
    while let Some(Got::Event(v)) = c.next(Duration::from_millis(300)).await {
        assert_ne!(v["type"], "response.output_audio.delta", "{v}");
    }
    // Nothing to cancel now.
    c.send(&json!({"type": "response.cancel"})).await;
    let err = c.until("error").await;
    assert_eq!(err["error"]["code"], "response_cancel_not_active");

    // truncate (§4, §6): inside the audio sent → truncated; beyond it or unknown → errors.
    let heard_ms = (sent / 8 / 2) as u64;
    let mut t = fixture("truncate.json");
    t["item_id"] = json!(item);
    t["audio_end_ms"] = json!(heard_ms);
    c.send(&t).await;
    let ok = c.until("conversation.item.truncated").await;
    assert_eq!(ok["item_id"], item.as_str());
    assert_eq!(ok["audio_end_ms"], heard_ms);
    t["audio_end_ms"] = json!(sent as u64 / 8 + 1000);
    c.send(&t).await;
    let err = c.until("error").await;
    assert_eq!(err["error"]["param"], "audio_end_ms", "{err}");
    t["item_id"] = json!("item_nope");
    t["audio_end_ms"] = json!(0);
    c.send(&t).await;
    let err = c.until("error").await;
    assert_eq!(err["error"]["code"], "item_not_found", "{err}");
    let v = violations_of(&sim, &id);
    for rule in ["truncate-beyond-audio", "truncate-unknown-item"] {
        assert!(v.iter().any(|(r, _, _)| r == rule), "{rule} not in {v:?}");
    }

    assert!(
        c.seen
            .iter()
            .all(|e| e["type"] != "input_audio_buffer.speech_started")
    );

    // Barge-in (a new session, the agent's first line again): speech during a response
    // cancels it with reason turn_detected.
    let mut c = connect(&sim, Connect::default()).await;
    c.start(&instructions_for(&s)).await;
    c.send(&json!({"type": "response.create"})).await;
    c.until("response.output_audio.delta").await;
    let interruption = s.script[1].callee.clone().unwrap();
    let audio = sim.state().voices.register(&interruption);
    c.append(&audio[..FRAME_BYTES * 5]).await;
    c.until("input_audio_buffer.speech_started").await;
    let done = c.until("response.done").await;
    assert_eq!(done["response"]["status"], "cancelled");
    assert_eq!(
        done["response"]["status_details"]["reason"],
        "turn_detected"
    );
    sim.shutdown().await;
}
