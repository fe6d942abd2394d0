//! OpenAI Realtime, GA interface only (protocols/openai-realtime.md): the session the agent
//! runs in, and the leg actor that owns the socket.

pub mod input;
pub mod leg;
pub mod spoken;
pub mod wire;

use serde_json::json;

use crate::config::EngineConfig;
use crate::data::CallRequest;

/// The agent's instructions. It is the one calling, it says for whom, and it may use only
/// the facts it was given: a phone agent that invents a booking name does real harm.
pub fn instructions(cfg: &EngineConfig, req: &CallRequest) -> String {
    let mut s = format!(
        "You are a voice assistant placing an outbound phone call on behalf of {}. You are the caller: \
         the person who answers did not expect you, so greet them briefly, say who you are calling for and why, \
         then pursue the goal. Speak naturally and keep every turn short (one or two sentences). \
         Never invent names, numbers, dates or other facts that are not in the context below; if you are asked \
         for something you do not know, say you will check and get back to them. \
         If you reach voicemail, leave a short message with the purpose of the call, then end the call. \
         If a phone menu asks you to press keys, call the send_dtmf tool with them, then wait in silence for what \
         the menu says next. \
         When the goal is achieved, cannot be achieved, or the other side wants to stop, say a short goodbye and \
         then call the end_call tool with the outcome and a one-sentence summary.\n\nGoal: {}\n",
        cfg.agent.on_behalf_of, req.goal
    );
    if let Some(c) = req.context.as_deref().filter(|c| !c.trim().is_empty()) {
        s.push_str(&format!("Context: {c}\n"));
    }
    if let Some(i) = req.instructions.as_deref().filter(|i| !i.trim().is_empty()) {
        s.push_str(&format!("Additional instructions: {i}\n"));
    }
    if let Some(l) = req.language.as_deref() {
        s.push_str(&format!("Speak {l}.\n"));
    }
    s
}

/// `session.update` for telephony: mu-law both ways so audio passes through untouched.
pub fn session_update(cfg: &EngineConfig, req: &CallRequest) -> String {
    let mut transcription = json!({"model": cfg.openai.transcription_model});
    if let Some(l) = req.language.as_deref().and_then(|l| l.get(..2)) {
        transcription["language"] = json!(l.to_ascii_lowercase());
    }
    json!({
        "type": "session.update",
        "session": {
            "type": "realtime",
            "model": cfg.openai.model,
            "instructions": instructions(cfg, req),
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "transcription": transcription,
                    "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                       "silence_duration_ms": 500, "create_response": true, "interrupt_response": true}
                },
                "output": {"format": {"type": "audio/pcmu"}, "voice": req.voice.clone().unwrap_or_else(|| cfg.openai.voice.clone())}
            },
            "tools": [end_call_tool(), send_dtmf_tool()],
            "tool_choice": "auto"
        }
    })
    .to_string()
}

fn end_call_tool() -> serde_json::Value {
    json!({
        "type": "function",
        "name": "end_call",
        "description": "Hang up. Call this after your goodbye has been said, when the goal is achieved, cannot be achieved, or the other side wants to stop.",
        "parameters": {
            "type": "object",
            "properties": {
                "outcome": {"type": "string", "enum": ["success", "failure", "unknown"], "description": "Whether the goal was achieved."},
                "summary": {"type": "string", "description": "One sentence: what was agreed or why it failed."}
            },
            "required": ["outcome", "summary"],
            "additionalProperties": false
        }
    })
}

fn send_dtmf_tool() -> serde_json::Value {
    json!({
        "type": "function",
        "name": "send_dtmf",
        "description": "Press keys on the phone keypad, for a phone menu (IVR) or an extension. The keys are played on the line; the call's audio pauses for a moment meanwhile. Say nothing after it until the other side speaks.",
        "parameters": {
            "type": "object",
            "properties": {
                "digits": {"type": "string", "pattern": "^[0-9*#wW]{1,32}$", "description": "The keys, in order: 0-9, * and #; w waits half a second. Example: \"1\" or \"w1234#\"."}
            },
            "required": ["digits"],
            "additionalProperties": false
        }
    })
}

/// What the call asks of the model session, typed; the model leg writes the JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum ToModel {
    /// Speak now (the greeting, or after a tool result the agent must act on).
    ResponseCreate,
    /// The callee heard only `audio_end_ms` of `item_id` (barge-in).
    Truncate { item_id: String, audio_end_ms: u64 },
    /// The result of the agent's tool call.
    FunctionOutput {
        call_id: String,
        output: serde_json::Value,
    },
}

impl ToModel {
    /// The client event as the GA interface spells it.
    pub fn to_json(&self) -> String {
        match self {
            ToModel::ResponseCreate => r#"{"type":"response.create"}"#.to_owned(),
            ToModel::Truncate {
                item_id,
                audio_end_ms,
            } => json!({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": audio_end_ms}).to_string(),
            ToModel::FunctionOutput { call_id, output } => json!({"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": call_id, "output": output.to_string()}}).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_events_are_ga_json() {
        let t: serde_json::Value = serde_json::from_str(
            &ToModel::Truncate {
                item_id: "item_1".into(),
                audio_end_ms: 1500,
            }
            .to_json(),
        )
        .unwrap();
        assert_eq!(t["type"], "conversation.item.truncate");
        assert_eq!(t["audio_end_ms"], 1500);
        let o: serde_json::Value = serde_json::from_str(
            &ToModel::FunctionOutput {
                call_id: "c1".into(),
                output: json!({"ok": true}),
            }
            .to_json(),
        )
        .unwrap();
        assert_eq!(o["item"]["output"], r#"{"ok":true}"#);
    }

    #[test]
    fn session_update_is_ga_pcmu_with_goal_and_context_verbatim() {
        let cfg = EngineConfig::default();
        let mut req = CallRequest::new("+14155550123", "Book a table for two at 7:30 tonight");
        req.context = Some("Name: Alex Kim.".into());
        let v: serde_json::Value = serde_json::from_str(&session_update(&cfg, &req)).unwrap();
        assert_eq!(v["session"]["type"], "realtime");
        assert_eq!(
            v["session"]["audio"]["input"]["format"]["type"],
            "audio/pcmu"
        );
        assert_eq!(
            v["session"]["audio"]["output"]["format"]["type"],
            "audio/pcmu"
        );
        assert_eq!(v["session"]["tools"][0]["name"], "end_call");
        assert_eq!(v["session"]["tools"][1]["name"], "send_dtmf");
        let instr = v["session"]["instructions"].as_str().unwrap();
        assert!(
            instr.contains("Book a table for two at 7:30 tonight")
                && instr.contains("Name: Alex Kim.")
        );
        // No beta field names anywhere.
        let text = v.to_string();
        for beta in [
            "input_audio_format",
            "output_audio_format",
            "g711_ulaw",
            "\"modalities\"",
        ] {
            assert!(!text.contains(beta), "{beta}");
        }
    }
}
