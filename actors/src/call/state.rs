//! The call's state machine: a pure function `(machine, input) → effects`, no I/O, so every
//! (state, input) pair, late and duplicate inputs included, is unit-tested.

use crate::data::{CallDetail, CallState, Outcome, OutcomeStatus};

#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// The carrier accepted the create request.
    CarrierCreated {
        sid: String,
    },
    /// The carrier refused the create request.
    CarrierRejected {
        reason: String,
    },
    /// A status callback (Twilio `CallStatus`).
    CarrierStatus {
        status: String,
    },
    /// The media stream's `start` arrived with the right token.
    StreamStarted,
    /// Twilio sent `stop` (the call is ending on its side).
    StreamStopped,
    /// The media socket closed without `stop`.
    StreamDropped,
    /// The model session failed or closed.
    ModelFailed {
        reason: String,
    },
    /// The agent called `end_call`.
    AgentEnded {
        outcome: Outcome,
    },
    /// The agent's last audio has played (after `AgentEnded`).
    PlaybackDrained,
    /// The carrier was asked to play keys (DTMF) and then open a new media stream: the
    /// current stream's end is expected and is not the callee leaving.
    Restream,
    /// The carrier refused the request; the current stream goes on.
    RestreamFailed,
    /// The new stream did not arrive in time.
    RestreamTimedOut,
    Cancel,
    MaxDuration {
        secs: u64,
    },
    Shutdown,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Record a state or detail change.
    Publish {
        state: CallState,
        detail: CallDetail,
        reason: Option<String>,
    },
    /// Ask the model to speak first.
    Greet,
    /// Wait for the agent's audio to finish playing, then feed `PlaybackDrained`.
    AwaitPlayback,
    /// End the carrier call: `cancel` = still ringing (Status=canceled), else completed.
    HangUp { cancel: bool },
    /// Terminal: write `Ended`, close both legs, stop the actor.
    Finish {
        state: CallState,
        detail: CallDetail,
        reason: String,
        outcome: Outcome,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    pub state: CallState,
    pub detail: CallDetail,
    pub carrier_sid: Option<String>,
    /// `end_call` received; waiting for playback before hanging up.
    pub agent_outcome: Option<Outcome>,
    /// Between a `Restream` and the new stream's start.
    pub restreaming: bool,
    pub ended: bool,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            state: CallState::Dialing,
            detail: CallDetail::Admitted,
            carrier_sid: None,
            agent_outcome: None,
            restreaming: false,
            ended: false,
        }
    }
}

fn finish(state: CallState, detail: CallDetail, reason: &str, status: OutcomeStatus) -> Effect {
    Effect::Finish {
        state,
        detail,
        reason: reason.to_owned(),
        outcome: Outcome::new(status, reason),
    }
}

impl Machine {
    pub fn step(&mut self, input: Input) -> Vec<Effect> {
        use CallDetail as D;
        use CallState as S;
        if self.ended {
            // Late inputs change nothing, except a carrier call created after we gave up on
            // it: it must not ring unattended.
            return match input {
                Input::CarrierCreated { sid } => {
                    self.carrier_sid = Some(sid);
                    vec![Effect::HangUp { cancel: true }]
                }
                _ => vec![],
            };
        }
        let connected = self.state == S::Connected;
        let mut fx = Vec::new();
        let mut publish = |m: &mut Machine, state, detail| {
            if m.state != state || m.detail != detail {
                m.state = state;
                m.detail = detail;
                fx.push(Effect::Publish {
                    state,
                    detail,
                    reason: None,
                });
            }
        };
        match input {
            Input::CarrierCreated { sid } => {
                self.carrier_sid = Some(sid);
                if !connected && self.detail == D::Admitted {
                    publish(self, S::Dialing, D::Queued);
                }
            }
            Input::CarrierRejected { reason } => fx.push(finish(
                S::Failed,
                D::CarrierFailed,
                &reason,
                OutcomeStatus::Failure,
            )),
            Input::CarrierStatus { status } => match status.as_str() {
                "queued" | "initiated" if !connected && matches!(self.detail, D::Admitted) => {
                    publish(self, S::Dialing, D::Queued)
                }
                "ringing" if !connected && matches!(self.detail, D::Admitted | D::Queued) => {
                    publish(self, S::Dialing, D::Ringing)
                }
                "in-progress" if !connected => publish(self, S::Dialing, D::Answered),
                "busy" => fx.push(finish(
                    S::Failed,
                    D::Busy,
                    "the line was busy",
                    OutcomeStatus::Failure,
                )),
                "no-answer" => fx.push(finish(
                    S::Failed,
                    D::NoAnswer,
                    "nobody answered",
                    OutcomeStatus::Failure,
                )),
                "failed" => fx.push(finish(
                    S::Failed,
                    D::CarrierFailed,
                    "the carrier could not connect the call",
                    OutcomeStatus::Failure,
                )),
                "canceled" => fx.push(finish(
                    S::Canceled,
                    D::CanceledByUser,
                    "the call was canceled before it was answered",
                    OutcomeStatus::Unknown,
                )),
                "completed" if connected => fx.extend(self.callee_gone()),
                "completed" => fx.push(finish(
                    S::Failed,
                    D::CarrierFailed,
                    "the call ended before its audio stream started",
                    OutcomeStatus::Failure,
                )),
                _ => {} // duplicates and out-of-order progress change nothing
            },
            // The old stream ends because we asked for a new one.
            Input::StreamStopped | Input::StreamDropped if self.restreaming => {}
            Input::StreamStarted if self.restreaming => self.restreaming = false,
            Input::StreamStarted if !connected => {
                publish(self, S::Connected, D::InProgress);
                fx.push(Effect::Greet);
            }
            Input::StreamStarted => {}
            Input::StreamStopped if connected => fx.extend(self.callee_gone()),
            Input::StreamStopped => {}
            Input::StreamDropped if connected && self.agent_outcome.is_none() => {
                fx.push(Effect::HangUp { cancel: false });
                fx.push(finish(
                    S::Failed,
                    D::MediaDisconnected,
                    "the Twilio media stream dropped",
                    OutcomeStatus::Failure,
                ));
            }
            Input::StreamDropped if connected => fx.extend(self.agent_done()),
            Input::StreamDropped => {}
            Input::ModelFailed { reason } => {
                fx.push(Effect::HangUp { cancel: !connected });
                fx.push(finish(
                    S::Failed,
                    if connected {
                        D::ModelDisconnected
                    } else {
                        D::ModelError
                    },
                    &reason,
                    OutcomeStatus::Failure,
                ));
            }
            Input::AgentEnded { outcome } if connected && self.agent_outcome.is_none() => {
                self.agent_outcome = Some(outcome);
                fx.push(Effect::AwaitPlayback);
            }
            Input::AgentEnded { .. } => {}
            Input::PlaybackDrained if self.agent_outcome.is_some() => fx.extend(self.agent_done()),
            Input::PlaybackDrained => {}
            Input::Restream if self.restream_refusal().is_none() => self.restreaming = true,
            Input::Restream => {}
            Input::RestreamFailed => self.restreaming = false,
            Input::RestreamTimedOut if self.restreaming => {
                fx.push(Effect::HangUp { cancel: false });
                fx.push(finish(
                    S::Failed,
                    D::MediaDisconnected,
                    "the media stream did not come back after the keys were pressed",
                    OutcomeStatus::Failure,
                ));
            }
            Input::RestreamTimedOut => {}
            Input::Cancel => {
                fx.push(Effect::HangUp { cancel: !connected });
                let why = if connected {
                    "canceled while connected"
                } else {
                    "canceled while dialing"
                };
                fx.push(finish(
                    S::Canceled,
                    D::CanceledByUser,
                    why,
                    OutcomeStatus::Unknown,
                ));
            }
            Input::MaxDuration { secs } => {
                fx.push(Effect::HangUp { cancel: !connected });
                let why = format!("the call reached its maximum duration of {secs} s");
                let state = if connected { S::Completed } else { S::Failed };
                fx.push(finish(state, D::MaxDuration, &why, OutcomeStatus::Unknown));
            }
            Input::Shutdown => {
                fx.push(Effect::HangUp { cancel: !connected });
                fx.push(finish(
                    S::Canceled,
                    D::EngineShutdown,
                    "the engine shut down",
                    OutcomeStatus::Unknown,
                ));
            }
        }
        if fx.iter().any(|e| matches!(e, Effect::Finish { .. })) {
            self.ended = true;
            if let Some(Effect::Finish { state, detail, .. }) =
                fx.iter().find(|e| matches!(e, Effect::Finish { .. }))
            {
                self.state = *state;
                self.detail = *detail;
            }
        }
        fx
    }

    /// Why keys cannot be pressed now (a `Restream` would be ignored), if they cannot.
    pub fn restream_refusal(&self) -> Option<&'static str> {
        if self.ended || self.state != CallState::Connected || self.agent_outcome.is_some() {
            Some("keys can be pressed only while the call is connected")
        } else if self.restreaming {
            Some("keys are already being pressed; wait for them to finish")
        } else {
            None
        }
    }

    /// The far end went away while connected.
    fn callee_gone(&mut self) -> Vec<Effect> {
        if self.agent_outcome.is_some() {
            return self.agent_done();
        }
        vec![finish(
            CallState::Completed,
            CallDetail::CalleeHungUp,
            "the callee hung up",
            OutcomeStatus::Unknown,
        )]
    }

    fn agent_done(&mut self) -> Vec<Effect> {
        let outcome = self
            .agent_outcome
            .clone()
            .unwrap_or_else(|| Outcome::new(OutcomeStatus::Unknown, "the agent ended the call"));
        vec![
            Effect::HangUp { cancel: false },
            Effect::Finish {
                state: CallState::Completed,
                detail: CallDetail::AgentEnded,
                reason: "the agent ended the call".into(),
                outcome,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CallDetail as D;
    use CallState as S;

    fn outcome() -> Outcome {
        Outcome::new(OutcomeStatus::Success, "booked")
    }

    fn all_inputs() -> Vec<Input> {
        let mut v = vec![
            Input::CarrierCreated { sid: "CA1".into() },
            Input::CarrierRejected {
                reason: "the destination is not verified on this trial account".into(),
            },
            Input::StreamStarted,
            Input::StreamStopped,
            Input::StreamDropped,
            Input::ModelFailed {
                reason: "model socket closed".into(),
            },
            Input::AgentEnded { outcome: outcome() },
            Input::PlaybackDrained,
            Input::Restream,
            Input::RestreamFailed,
            Input::RestreamTimedOut,
            Input::Cancel,
            Input::MaxDuration { secs: 60 },
            Input::Shutdown,
        ];
        for s in [
            "queued",
            "initiated",
            "ringing",
            "in-progress",
            "completed",
            "busy",
            "no-answer",
            "failed",
            "canceled",
            "bogus",
        ] {
            v.push(Input::CarrierStatus { status: s.into() });
        }
        v
    }

    /// Machines in every reachable situation worth distinguishing.
    fn situations() -> Vec<(&'static str, Machine)> {
        let mut admitted = Machine::default();
        let mut ringing = Machine::default();
        ringing.step(Input::CarrierCreated { sid: "CA1".into() });
        ringing.step(Input::CarrierStatus {
            status: "ringing".into(),
        });
        let mut answered = ringing.clone();
        answered.step(Input::CarrierStatus {
            status: "in-progress".into(),
        });
        let mut connected = answered.clone();
        connected.step(Input::StreamStarted);
        let mut ending = connected.clone();
        ending.step(Input::AgentEnded { outcome: outcome() });
        let mut restreaming = connected.clone();
        restreaming.step(Input::Restream);
        let mut ended = connected.clone();
        ended.step(Input::Cancel);
        admitted.detail = D::Admitted;
        vec![
            ("admitted", admitted),
            ("ringing", ringing),
            ("answered", answered),
            ("connected", connected),
            ("ending", ending),
            ("restreaming", restreaming),
            ("ended", ended),
        ]
    }

    #[test]
    fn every_state_input_pair_is_consistent() {
        for (name, m) in situations() {
            for input in all_inputs() {
                let mut m2 = m.clone();
                let fx = m2.step(input.clone());
                let finishes = fx
                    .iter()
                    .filter(|e| matches!(e, Effect::Finish { .. }))
                    .count();
                assert!(finishes <= 1, "{name} + {input:?}: finished twice");
                if m.ended {
                    let allowed = matches!(input, Input::CarrierCreated { .. });
                    assert!(
                        fx.is_empty() || allowed,
                        "{name} + {input:?}: a finished call produced {fx:?}"
                    );
                }
                if finishes == 1 {
                    assert!(m2.ended && m2.state.is_terminal(), "{name} + {input:?}");
                    // Terminal is absorbing: a second identical input does nothing.
                    let again = m2.step(input.clone());
                    assert!(
                        again.iter().all(|e| matches!(e, Effect::HangUp { .. })),
                        "{name} + {input:?} twice: {again:?}"
                    );
                }
                if !m2.ended {
                    assert!(
                        !m2.state.is_terminal(),
                        "{name} + {input:?}: terminal state without Finish"
                    );
                }
                // Duplicates of a non-terminal input produce no new publication.
                if !m2.ended {
                    let dup = m2.clone().step(input.clone());
                    assert!(
                        !dup.iter().any(|e| matches!(e, Effect::Publish { .. })),
                        "{name} + {input:?} twice published again: {dup:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn happy_path() {
        let mut m = Machine::default();
        assert_eq!(
            m.step(Input::CarrierCreated { sid: "CA1".into() }),
            vec![Effect::Publish {
                state: S::Dialing,
                detail: D::Queued,
                reason: None
            }]
        );
        m.step(Input::CarrierStatus {
            status: "ringing".into(),
        });
        m.step(Input::CarrierStatus {
            status: "in-progress".into(),
        });
        assert_eq!(
            m.step(Input::StreamStarted),
            vec![
                Effect::Publish {
                    state: S::Connected,
                    detail: D::InProgress,
                    reason: None
                },
                Effect::Greet
            ]
        );
        assert_eq!(
            m.step(Input::AgentEnded { outcome: outcome() }),
            vec![Effect::AwaitPlayback]
        );
        let fx = m.step(Input::PlaybackDrained);
        assert_eq!(fx[0], Effect::HangUp { cancel: false });
        assert!(
            matches!(&fx[1], Effect::Finish { state: S::Completed, detail: D::AgentEnded, outcome, .. } if outcome.success)
        );
        // The carrier's completed callback and Twilio's stop arrive late: nothing happens.
        assert!(
            m.step(Input::CarrierStatus {
                status: "completed".into()
            })
            .is_empty()
        );
        assert!(m.step(Input::StreamStopped).is_empty());
    }

    #[test]
    fn endings() {
        let cases: Vec<(Vec<Input>, S, D)> = vec![
            (
                vec![Input::CarrierStatus {
                    status: "busy".into(),
                }],
                S::Failed,
                D::Busy,
            ),
            (
                vec![Input::CarrierStatus {
                    status: "no-answer".into(),
                }],
                S::Failed,
                D::NoAnswer,
            ),
            (
                vec![Input::CarrierRejected { reason: "x".into() }],
                S::Failed,
                D::CarrierFailed,
            ),
            (vec![Input::Cancel], S::Canceled, D::CanceledByUser),
            (
                vec![Input::StreamStarted, Input::Cancel],
                S::Canceled,
                D::CanceledByUser,
            ),
            (
                vec![Input::StreamStarted, Input::StreamStopped],
                S::Completed,
                D::CalleeHungUp,
            ),
            (
                vec![
                    Input::StreamStarted,
                    Input::CarrierStatus {
                        status: "completed".into(),
                    },
                ],
                S::Completed,
                D::CalleeHungUp,
            ),
            (
                vec![
                    Input::StreamStarted,
                    Input::ModelFailed { reason: "x".into() },
                ],
                S::Failed,
                D::ModelDisconnected,
            ),
            (
                vec![Input::StreamStarted, Input::StreamDropped],
                S::Failed,
                D::MediaDisconnected,
            ),
            (
                vec![Input::StreamStarted, Input::MaxDuration { secs: 5 }],
                S::Completed,
                D::MaxDuration,
            ),
            (vec![Input::Shutdown], S::Canceled, D::EngineShutdown),
            // The callee hangs up while the agent's goodbye is playing: still the agent's end.
            (
                vec![
                    Input::StreamStarted,
                    Input::AgentEnded { outcome: outcome() },
                    Input::StreamStopped,
                ],
                S::Completed,
                D::AgentEnded,
            ),
        ];
        for (inputs, state, detail) in cases {
            let mut m = Machine::default();
            let mut fin = None;
            for i in inputs.clone() {
                for e in m.step(i) {
                    if let Effect::Finish { state, detail, .. } = e {
                        fin = Some((state, detail));
                    }
                }
            }
            assert_eq!(fin, Some((state, detail)), "{inputs:?}");
        }
    }

    #[test]
    fn keys_pressed_swap_the_stream_without_ending_the_call() {
        let mut m = Machine::default();
        m.step(Input::CarrierCreated { sid: "CA1".into() });
        m.step(Input::StreamStarted);
        assert!(m.step(Input::Restream).is_empty());
        // Twilio stops the old stream (with or without `stop`), then starts the new one.
        assert!(m.step(Input::StreamStopped).is_empty());
        assert!(m.step(Input::StreamDropped).is_empty());
        assert!(m.step(Input::StreamStarted).is_empty());
        assert!(!m.restreaming && !m.ended && m.state == S::Connected);
        // A late timer for the finished swap does nothing; a real stop now ends the call.
        assert!(m.step(Input::RestreamTimedOut).is_empty());
        let fx = m.step(Input::StreamStopped);
        assert!(matches!(
            fx.last(),
            Some(Effect::Finish {
                detail: D::CalleeHungUp,
                ..
            })
        ));

        // The new stream never comes: the call fails and is hung up.
        let mut m = Machine::default();
        m.step(Input::CarrierCreated { sid: "CA2".into() });
        m.step(Input::StreamStarted);
        m.step(Input::Restream);
        m.step(Input::StreamStopped);
        let fx = m.step(Input::RestreamTimedOut);
        assert_eq!(fx[0], Effect::HangUp { cancel: false });
        assert!(m.ended && m.detail == D::MediaDisconnected);

        // The carrier refused the redirect: the current stream still counts.
        let mut m = Machine::default();
        m.step(Input::StreamStarted);
        m.step(Input::Restream);
        m.step(Input::RestreamFailed);
        assert!(matches!(
            m.step(Input::StreamDropped).last(),
            Some(Effect::Finish {
                detail: D::MediaDisconnected,
                ..
            })
        ));
    }

    #[test]
    fn cancel_while_ringing_cancels_and_late_create_is_hung_up() {
        let mut m = Machine::default();
        let fx = m.step(Input::Cancel);
        assert_eq!(fx[0], Effect::HangUp { cancel: true });
        assert_eq!(
            m.step(Input::CarrierCreated { sid: "CA9".into() }),
            vec![Effect::HangUp { cancel: true }]
        );
    }
}
