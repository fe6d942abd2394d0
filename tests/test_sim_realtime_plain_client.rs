//! The simulator's Realtime endpoint as any GA client sees it, with no switchboard and no
//! scenario in the loop: speech no script knows is transcribed (as a placeholder) and
//! answered, a function call forced by `tool_choice` gets arguments valid against the
//! tool's schema, the answer's audio can be truncated, and errors name the client's event.

#[path = "support/sim_realtime.rs"]
mod harness;
#[path = "support/wire.rs"]
mod wire;

use harness::*;
use serde_json::{Value, json};
use switchboard::sim::voice;
use wire::assert_shape;

/// The sheet's GA update as a plain client sends it: no scenario's goal in the instructions.
async fn plain_session(c: &mut Client) -> String {
    c.start("You are a helpful assistant. Keep answers short.")
        .await
}

#[tokio::test]
async fn an_unscripted_spoken_turn_is_transcribed_and_answered_with_audio() {
    let sim = sim().await;
    let mut c = connect(&sim, Connect::default()).await;
    let id = plain_session(&mut c).await;

    // Speech no scenario has: loud mu-law that no one registered.
    let speech = voice::synthesize("Hi, is anybody there? I wanted to ask about the weather.");
    c.silence(200).await;
    c.append(&speech).await;
    c.silence(700).await;

    let started = c.until("input_audio_buffer.speech_started").await;
    let item = started["item_id"].as_str().unwrap().to_owned();
    c.until("input_audio_buffer.speech_stopped").await;
    c.until("input_audio_buffer.committed").await;
    let heard = c
        .until("conversation.item.input_audio_transcription.completed")
        .await;
    assert_eq!(heard["item_id"], item.as_str());
    assert_eq!(heard["transcript"], "[unrecognised audio]");
    assert_shape(
        &fixture("transcription_completed_usage.json"),
        &heard["usage"],
        "usage",
    );

    // The automatic response (create_response: true): audio, its transcript, response.done.
    let reply = response(&mut c).await;
    let kinds = types(&reply);
    for t in [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.output_item.done",
    ] {
        assert!(kinds.contains(&t), "{t} missing from {kinds:?}");
    }
    let transcript = reply
        .iter()
        .find(|e| e["type"] == "response.output_audio_transcript.done")
        .unwrap()["transcript"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!transcript.is_empty());
    let audio = audio_of(&reply);
    assert_eq!(
        audio,
        voice::synthesize(&transcript),
        "audio of its transcript"
    );
    let done = reply.last().unwrap();
    assert_eq!(done["response"]["status"], "completed");
    assert_shape(
        &fixture("response_done_usage.json"),
        &done["response"]["usage"],
        "usage",
    );
    assert!(done["response"]["usage"]["output_tokens"].as_u64().unwrap() > 0);

    // Truncate works on the response's item.
    let answer = reply
        .iter()
        .find(|e| e["type"] == "response.output_item.added")
        .unwrap()["item"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let heard_ms = (audio.len() / 8 / 2) as u64;
    let mut t = fixture("truncate.json");
    t["item_id"] = json!(answer);
    t["audio_end_ms"] = json!(heard_ms);
    c.send(&t).await;
    let ok = c.until("conversation.item.truncated").await;
    assert_eq!(
        (&ok["item_id"], &ok["audio_end_ms"]),
        (&json!(answer), &json!(heard_ms))
    );

    // The unrecognised audio is still a violation (it is what an engine that mangles audio
    // produces); nothing else is.
    let v = violations_of(&sim, &id);
    assert!(
        v.iter().all(|(rule, _, _)| rule == "unrecognized-audio") && !v.is_empty(),
        "{v:?}"
    );
    sim.shutdown().await;
}

fn book_table() -> Value {
    json!({"type": "function", "name": "book_table",
        "description": "Book a table.",
        "parameters": {"type": "object",
            "properties": {
                "party_size": {"type": "integer", "minimum": 1, "maximum": 12},
                "time": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"},
                "name": {"type": "string", "minLength": 2},
                "seating": {"type": "string", "enum": ["indoor", "outdoor"]},
                "digits": {"type": "string", "pattern": "^[0-9*#wW]{1,32}$"},
                "notes": {"type": "string"}
            },
            "required": ["party_size", "time", "name", "seating", "digits"],
            "additionalProperties": false}})
}

/// A hand check of `args` against `book_table`'s schema.
fn assert_valid_booking(args: &Value) {
    let o = args.as_object().expect("arguments are an object");
    for k in o.keys() {
        assert!(
            ["party_size", "time", "name", "seating", "digits", "notes"].contains(&k.as_str()),
            "{k} is not a property: {args}"
        );
    }
    let size = o["party_size"].as_i64().expect("party_size is an integer");
    assert!((1..=12).contains(&size), "{args}");
    let time: Vec<char> = o["time"].as_str().expect("time").chars().collect();
    assert!(
        time.len() == 5
            && ('0'..='2').contains(&time[0])
            && time[1].is_ascii_digit()
            && time[2] == ':'
            && ('0'..='5').contains(&time[3])
            && time[4].is_ascii_digit(),
        "{args}"
    );
    assert!(
        o["name"].as_str().expect("name").chars().count() >= 2,
        "{args}"
    );
    assert!(
        ["indoor", "outdoor"].contains(&o["seating"].as_str().unwrap()),
        "{args}"
    );
    let digits = o["digits"].as_str().unwrap();
    assert!(
        (1..=32).contains(&digits.len())
            && digits
                .chars()
                .all(|c| c.is_ascii_digit() || "*#wW".contains(c)),
        "{args}"
    );
}

fn function_call(events: &[Value]) -> &Value {
    events
        .iter()
        .find(|e| e["type"] == "response.function_call_arguments.done")
        .unwrap_or_else(|| panic!("no function call in {:?}", types(events)))
}

#[tokio::test]
async fn a_forced_function_call_gets_arguments_valid_against_its_schema() {
    let sim = sim().await;
    let mut c = connect(&sim, Connect::default()).await;
    let id = plain_session(&mut c).await;
    c.send(
        &json!({"type": "session.update", "session": {"type": "realtime",
        "tools": [fixture("session_update_ga.json")["session"]["tools"][0].clone(), book_table()],
        "tool_choice": {"type": "function", "name": "book_table"}}}),
    )
    .await;
    c.until("session.updated").await;

    // Forced by the session's tool_choice.
    c.send(&json!({"type": "response.create"})).await;
    let r = response(&mut c).await;
    let call = function_call(&r);
    assert_shape(
        &fixture("function_call_arguments_done.json"),
        call,
        "function_call_arguments.done",
    );
    assert_eq!(call["name"], "book_table");
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert_valid_booking(&args);
    assert_eq!(r.last().unwrap()["response"]["status"], "completed");

    // Forced per response, by name, over the session's choice.
    c.send(&json!({"type": "response.create", "response": {"tool_choice": {"type": "function", "name": "end_call"}}}))
        .await;
    let r = response(&mut c).await;
    let call = function_call(&r);
    assert_eq!(call["name"], "end_call");
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert!(
        args["reason"].is_string() && args.as_object().unwrap().len() == 1,
        "{args}"
    );

    // "required" with the response's own tools: the one tool it offers is called.
    c.send(&json!({"type": "response.create", "response": {"tools": [book_table()], "tool_choice": "required"}}))
        .await;
    let r = response(&mut c).await;
    let call = function_call(&r);
    assert_eq!(call["name"], "book_table");
    assert_valid_booking(&serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap());

    // A function the session does not have cannot be forced: an error naming the event.
    c.send(
        &json!({"type": "response.create", "event_id": "evt_force_1",
        "response": {"tool_choice": {"type": "function", "name": "fly_to_the_moon"}}}),
    )
    .await;
    let err = c.until("error").await;
    assert_eq!(err["error"]["event_id"], "evt_force_1", "{err}");
    assert_eq!(err["error"]["param"], "tool_choice", "{err}");
    let v = violations_of(&sim, &id);
    assert!(
        v.iter().all(|(rule, _, _)| rule == "unknown-tool-choice") && v.len() == 1,
        "{v:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn errors_echo_the_client_event_id() {
    let sim = sim().await;
    let mut c = connect(&sim, Connect::default()).await;
    plain_session(&mut c).await;

    c.send(&json!({"type": "response.cancel", "event_id": "evt_client_42"}))
        .await;
    let err = c.until("error").await;
    assert_eq!(err["error"]["code"], "response_cancel_not_active");
    assert_eq!(err["error"]["event_id"], "evt_client_42", "{err}");

    c.send(
        &json!({"type": "session.update", "event_id": "evt_client_43",
        "session": {"type": "realtime", "bogus_field": 1}}),
    )
    .await;
    let err = c.until("error").await;
    assert_eq!(err["error"]["code"], "unknown_parameter");
    assert_eq!(err["error"]["event_id"], "evt_client_43", "{err}");

    // Without an event_id the error's is null, as before.
    c.send(&json!({"type": "response.cancel"})).await;
    let err = c.until("error").await;
    assert!(err["error"]["event_id"].is_null(), "{err}");

    // response.create is always answered, even with nothing to say.
    c.send(&json!({"type": "response.create"})).await;
    let r = response(&mut c).await;
    assert_eq!(r.last().unwrap()["response"]["status"], "completed");
    sim.shutdown().await;
}

/// Two scenarios that share their callee lines: hearing one tells the agent no single script,
/// so the plain agent holds the conversation.
fn twins() -> Vec<switchboard::sim::Scenario> {
    ["+12125550181", "+12125550182"]
        .iter()
        .enumerate()
        .map(|(i, number)| {
            let toml = format!(
                r#"
name = "twin{i}"
number = "{number}"
[agent]
goal = "Twin scenario {i} for the plain agent"
[[script]]
callee = "What name should the table be under?"
[[script]]
callee = "Thanks, that's all for now. Goodbye!"
"#
            );
            switchboard::sim::Scenario::from_toml("twin.toml", &toml).expect("scenario")
        })
        .collect()
}

fn transcript_of(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "response.output_audio_transcript.done")
        .map(|e| e["transcript"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn the_plain_agent_greets_answers_from_the_context_and_hangs_up_on_goodbye() {
    let sim = sim_with(twins()).await;
    let mut c = connect(&sim, Connect::default()).await;
    let id = c
        .start(
            "You are a voice assistant placing an outbound phone call on behalf of Alex Kim. \
             You are the caller.\n\nGoal: Reserve a table for two tonight\n\
             Context: The booking name is Alex Kim. Callback number +14155550123.\n",
        )
        .await;

    // It greets and says why it calls, in words of its own.
    c.send(&json!({"type": "response.create"})).await;
    let greeting = transcript_of(&response(&mut c).await);
    assert_eq!(
        greeting,
        "Hello, this is an assistant calling on behalf of Alex Kim. I'm calling to reserve a table for two tonight."
    );

    // A question: answered with the fact from the context that fits.
    for (line, answer) in [
        (
            "What name should the table be under?",
            "The booking name is Alex Kim.",
        ),
        (
            "Thanks, that's all for now. Goodbye!",
            "Thank you so much for your help. Goodbye!",
        ),
    ] {
        let audio = sim.state().voices.register(line);
        c.append(&audio).await;
        c.silence(700).await;
        let heard = c
            .until("conversation.item.input_audio_transcription.completed")
            .await;
        assert_eq!(heard["transcript"], line);
        let reply = response(&mut c).await;
        assert_eq!(transcript_of(&reply), answer);
        if line.contains("Goodbye") {
            // The callee closed: end_call, with arguments for the session's own end_call.
            let call = function_call(&reply);
            assert_eq!(call["name"], "end_call");
            let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
            let keys: Vec<&String> = args.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["reason"], "{args}");
            assert!(
                args["reason"].as_str().unwrap().contains("Goodbye"),
                "{args}"
            );
        } else {
            assert!(
                !types(&reply).contains(&"response.function_call_arguments.done"),
                "{:?}",
                types(&reply)
            );
        }
    }
    assert!(
        violations_of(&sim, &id).is_empty(),
        "{:?}",
        violations_of(&sim, &id)
    );
    sim.shutdown().await;
}
