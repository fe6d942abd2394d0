//! Scenario files: a script for both ends of one simulated phone call.
//!
//! The Twilio half plays the callee's steps; the model half plays the agent's. Each half
//! advances only on what it recognises in the audio the engine delivers (see `voice`), so a
//! scenario runs the same whether the engine under test is fast, slow or wrong (when it is
//! wrong, the run records violations instead of advancing).
//!
//! The callee takes any agent line it hears while waiting for one as the agent's step (so a
//! plain agent's greeting stands in for a scripted first line); lines it hears while it has
//! its own step to do are let go. Callee lines should be unique to their scenario: the model
//! half finds its script by them when the request did not use the scenario's goal words.
//!
//! ```toml
//! name = "restaurant"
//! number = "+12125550134"          # dialing this number plays this scenario
//! [answer]
//! kind = "human"                   # human | machine | busy | no-answer | failed
//! ring_ms = 1500
//! [agent]
//! goal = "Book a table for two at 7:30 tonight"
//! [[script]]
//! agent = "Hi, I'm calling to book a table for two at 7:30 tonight."
//! [[script]]
//! callee = "Sure. Under what name?"
//! [[script]]
//! agent = "Alex Kim. Thank you, goodbye!"
//! tool = { name = "end_call", arguments = { outcome = "success", summary = "Booked." } }
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Destination number that selects this scenario (E.164).
    pub number: String,
    #[serde(default)]
    pub answer: Answer,
    /// What the engine should be asked to do (used by the demo, examples and tests). The model
    /// half plays this script from the start when the session's instructions carry this goal
    /// word for word; asked in other words, it greets as a plain agent and joins the script at
    /// the first callee line only this scenario has, so the number dialed decides.
    pub agent: AgentBrief,
    #[serde(default)]
    pub script: Vec<Step>,
    #[serde(default)]
    pub faults: Faults,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Answer {
    pub kind: AnswerKind,
    /// Ringing time before answer / no-answer / busy (scripted ms; divided by the speed factor).
    pub ring_ms: u64,
    /// AMD result reported when the client asked for machine detection.
    pub answered_by: Option<String>,
    /// For `machine`: the greeting, then a beep, then the machine records.
    pub greeting: Option<String>,
}

impl Default for Answer {
    fn default() -> Self {
        Answer {
            kind: AnswerKind::Human,
            ring_ms: 1000,
            answered_by: None,
            greeting: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AnswerKind {
    #[default]
    Human,
    Machine,
    Busy,
    NoAnswer,
    Failed,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentBrief {
    pub goal: String,
    #[serde(default)]
    pub context: Option<String>,
    /// Outcome the scenario expects the engine to report; `success` when not given.
    #[serde(default)]
    pub expect_outcome: ExpectedOutcome,
}

/// What a scenario's call should end with. Unknown spellings are refused when the scenario
/// loads, so a typo cannot quietly count as success or as failure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedOutcome {
    #[default]
    Success,
    Failure,
    Unknown,
}

/// One line of the script. Exactly one of `agent`, `callee`, `dtmf`, `expect_digits`, `hangup`,
/// `silence_ms` is the step's action; the rest qualify it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Step {
    /// The agent says this (model half).
    pub agent: Option<String>,
    /// After saying it, the agent calls this tool (the engine offers `end_call` and
    /// `send_dtmf {digits}`; an IVR step after it waits with `expect_digits`).
    pub tool: Option<ToolCall>,
    /// The callee says this (Twilio half), after the agent's previous line has played.
    pub callee: Option<String>,
    /// Barge-in: the callee starts after this many ms of the agent's current line have played,
    /// instead of waiting for it to finish.
    pub barge_in_after_ms: Option<u64>,
    /// Pause before the step (scripted ms).
    pub pause_ms: Option<u64>,
    /// The callee presses these keys (sent as Media Streams `dtmf` events).
    pub dtmf: Option<String>,
    /// The callee (an IVR) waits for these digits from the engine before going on.
    pub expect_digits: Option<String>,
    /// The callee hangs up.
    pub hangup: bool,
    /// The callee stays silent this long (scripted ms).
    pub silence_ms: Option<u64>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    pub name: String,
    #[serde(default)]
    pub arguments: serde_json::Value,
}

/// Faults to inject. Twilio-side times are scripted ms from the media stream's start; model-side
/// times from the session's first appended audio (each half keeps its own clock).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// The model half drops the Realtime socket (no close frame) at this time.
    pub model_drop_at_ms: Option<u64>,
    /// The Twilio half drops the media socket (no close frame) at this time.
    pub media_drop_at_ms: Option<u64>,
    /// Call create answers with this Twilio error code (e.g. 21219, 20429) or HTTP 500 (`500`).
    pub create_error: Option<u32>,
    /// Status callbacks are delayed by this much.
    pub callback_delay_ms: Option<u64>,
    /// Every status callback is sent twice.
    pub callback_duplicate: bool,
    /// Status callbacks are sent in reverse order of their events (after a delay).
    pub callback_out_of_order: bool,
    /// The model waits this long before its first audio byte of each response.
    pub model_first_byte_ms: Option<u64>,
    /// The model half sends a `server_error` event and closes with 1011 at this time.
    pub model_error_at_ms: Option<u64>,
    /// Every `<Connect><Stream>` after the call's first (after keys were pressed) waits this
    /// long before its socket opens: network trouble on the carrier's side.
    pub restream_delay_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("scenario {path} is not valid: {message}")]
    Invalid { path: String, message: String },
}

impl Scenario {
    pub fn from_toml(path_for_errors: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Invalid {
            path: path_for_errors.into(),
            message: e.to_string(),
        })?;
        s.check().map_err(|message| ScenarioError::Invalid {
            path: path_for_errors.into(),
            message,
        })?;
        Ok(s)
    }

    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: p.clone(),
            source,
        })?;
        Self::from_toml(&p, &text)
    }

    /// Every `*.toml` in `dir`, sorted by file name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>, ScenarioError> {
        let d = dir.display().to_string();
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(|source| ScenarioError::Io {
                path: d.clone(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        paths.iter().map(|p| Self::load(p)).collect()
    }

    /// The scenarios shipped in `examples/scenarios/`, compiled in so the demo needs no files.
    pub fn builtin() -> Vec<Scenario> {
        BUILTIN
            .iter()
            .map(|(name, text)| {
                Self::from_toml(name, text).expect("built-in scenarios are valid (tested)")
            })
            .collect()
    }

    pub fn builtin_named(name: &str) -> Option<Scenario> {
        Self::builtin().into_iter().find(|s| s.name == name)
    }

    fn check(&self) -> Result<(), String> {
        let digits = self.number.strip_prefix('+').unwrap_or("");
        if digits.len() < 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "number must be E.164 like +12125550134, got '{}'",
                self.number
            ));
        }
        for (i, st) in self.script.iter().enumerate() {
            let actions = [
                st.agent.is_some(),
                st.callee.is_some(),
                st.dtmf.is_some(),
                st.expect_digits.is_some(),
                st.hangup,
                st.silence_ms.is_some(),
            ]
            .iter()
            .filter(|a| **a)
            .count();
            if actions != 1 {
                return Err(format!(
                    "script step {} must have exactly one of agent, callee, dtmf, expect_digits, hangup, silence_ms",
                    i + 1
                ));
            }
            if st.tool.is_some() && st.agent.is_none() {
                return Err(format!(
                    "script step {}: tool goes with an agent line",
                    i + 1
                ));
            }
            if st.barge_in_after_ms.is_some() && st.callee.is_none() {
                return Err(format!(
                    "script step {}: barge_in_after_ms goes with a callee line",
                    i + 1
                ));
            }
        }
        Ok(())
    }
}

/// `n` scenarios with distinct numbers and lines, for load tests: every frame of every call is
/// unique, so a frame delivered to the wrong call or twice cannot go unnoticed.
pub fn bench_scenarios(n: usize, turns: usize) -> Vec<Scenario> {
    (0..n)
        .map(|i| {
            let mut script = Vec::new();
            for t in 0..turns.max(1) {
                script.push(Step {
                    agent: Some(format!("Agent of bench call {i}, turn {t}: could you confirm the booking details please?")),
                    ..Step::default()
                });
                script.push(Step {
                    callee: Some(format!("Callee of bench call {i}, turn {t}: yes, everything is confirmed as you said.")),
                    ..Step::default()
                });
            }
            script.push(Step {
                agent: Some(format!("Thank you, bench call {i} is done. Goodbye.")),
                tool: Some(ToolCall {
                    name: "end_call".into(),
                    arguments: serde_json::json!({"outcome": "success", "summary": format!("bench call {i} done")}),
                }),
                ..Step::default()
            });
            Scenario {
                name: format!("bench-{i}"),
                description: "generated load-test call".into(),
                number: format!("+1555{:07}", 2_000_000 + i),
                // No ringing: the set-up figure (request → first audio back) is the engine's and the
                // loopback's alone.
                answer: Answer { ring_ms: 0, ..Answer::default() },
                agent: AgentBrief {
                    goal: format!("Confirm the booking details for bench call number {i}"),
                    context: None,
                    expect_outcome: ExpectedOutcome::Success,
                },
                script,
                faults: Faults::default(),
            }
        })
        .collect()
}

const BUILTIN: &[(&str, &str)] = &[
    (
        "restaurant.toml",
        include_str!("../../examples/scenarios/restaurant.toml"),
    ),
    (
        "busy.toml",
        include_str!("../../examples/scenarios/busy.toml"),
    ),
    (
        "no_answer.toml",
        include_str!("../../examples/scenarios/no_answer.toml"),
    ),
    (
        "voicemail.toml",
        include_str!("../../examples/scenarios/voicemail.toml"),
    ),
    (
        "ivr.toml",
        include_str!("../../examples/scenarios/ivr.toml"),
    ),
    (
        "interrupt.toml",
        include_str!("../../examples/scenarios/interrupt.toml"),
    ),
    (
        "hangup.toml",
        include_str!("../../examples/scenarios/hangup.toml"),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_scenarios_parse() {
        let all = Scenario::builtin();
        assert!(all.iter().any(|s| s.name == "restaurant"));
        let mut numbers: Vec<_> = all.iter().map(|s| s.number.clone()).collect();
        numbers.sort();
        numbers.dedup();
        assert_eq!(
            numbers.len(),
            all.len(),
            "each scenario needs its own number"
        );
    }

    #[test]
    fn bad_step_is_named() {
        let e = Scenario::from_toml(
            "x.toml",
            "name='x'\nnumber='+15550001111'\n[agent]\ngoal='g'\n[[script]]\nagent='a'\ncallee='b'\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("step 1"), "{e}");
    }
}
