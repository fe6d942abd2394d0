//! The Supervisor: admits calls, spawns one CallActor per call, finds a call's actor for the
//! frontends, and records the end of any call whose actor dies without finishing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio_util::task::TaskTracker;

use crate::call::actor::{CallActor, CallArgs, CallShared};
use crate::call::messages::CallMsg;
use crate::config::EngineConfig;
use crate::data::{
    CallDetail, CallId, CallRequest, CallState, EventKind, NewEvent, Outcome, OutcomeStatus, Usage,
};
use crate::error::EngineError;
use crate::events::EventBus;
use crate::twilio::rest::TwilioRest;

pub enum SupervisorMsg {
    Place(CallRequest, RpcReplyPort<Result<CallId, EngineError>>),
    /// The live call's actor, if any.
    Lookup(CallId, RpcReplyPort<Option<ActorRef<CallMsg>>>),
    /// Stop admitting; answer with every live call so the caller can end them.
    Drain(RpcReplyPort<Vec<ActorRef<CallMsg>>>),
}

pub struct SupervisorArgs {
    pub config: Arc<EngineConfig>,
    pub bus: EventBus,
    pub rest: TwilioRest,
    /// The engine's spawned work; calls get it too. Shutdown waits for it.
    pub tasks: TaskTracker,
}

pub struct Supervisor;

struct Live {
    id: CallId,
    actor: ActorRef<CallMsg>,
    shared: Arc<CallShared>,
}

pub struct SupervisorState {
    config: Arc<EngineConfig>,
    bus: EventBus,
    rest: TwilioRest,
    tasks: TaskTracker,
    by_actor: HashMap<ActorId, Live>,
    by_call: HashMap<CallId, ActorId>,
    draining: bool,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<Self::Msg>,
        a: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SupervisorState {
            config: a.config,
            bus: a.bus,
            rest: a.rest,
            tasks: a.tasks,
            by_actor: HashMap::new(),
            by_call: HashMap::new(),
            draining: false,
        })
    }

    async fn handle(
        &self,
        me: ActorRef<Self::Msg>,
        msg: Self::Msg,
        s: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Place(request, reply) => {
                let r = self.place(&me, s, request).await;
                let _ = reply.send(r);
            }
            SupervisorMsg::Lookup(id, reply) => {
                // A call that has written its end is answered from the store, even while its
                // actor is still stopping (its mailbox may already be closed).
                let actor = s
                    .by_call
                    .get(&id)
                    .and_then(|a| s.by_actor.get(a))
                    .filter(|l| !l.shared.ended.load(Ordering::SeqCst))
                    .map(|l| l.actor.clone());
                let _ = reply.send(actor);
            }
            SupervisorMsg::Drain(reply) => {
                s.draining = true;
                let _ = reply.send(s.by_actor.values().map(|l| l.actor.clone()).collect());
            }
        }
        Ok(())
    }

    /// A call's end is never the supervisor's end (the default would stop it).
    async fn handle_supervisor_evt(
        &self,
        _me: ActorRef<Self::Msg>,
        ev: SupervisionEvent,
        s: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match ev {
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            _ => return Ok(()),
        };
        let Some(live) = s.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        s.by_call.remove(&live.id);
        if live.shared.ended.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // The actor died without writing its end: record it, and make sure the phone call
        // does not go on with nobody on the line.
        let reason = match failure {
            Some(e) => format!("internal error: {e}"),
            None => "the call's actor stopped unexpectedly".into(),
        };
        tracing::error!(call = %live.id, "{reason}");
        let sid = live
            .shared
            .carrier_sid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(sid) = sid {
            let rest = s.rest.clone();
            s.tasks.spawn(async move {
                if let Err(e) = rest.hang_up(&sid).await {
                    tracing::error!("could not hang up the carrier call of a crashed call: {e}");
                }
            });
        }
        s.bus.emit(NewEvent::now(
            live.id,
            EventKind::Ended {
                state: CallState::Failed,
                detail: CallDetail::InternalError,
                reason: Some(reason.clone()),
                outcome: Some(Outcome::new(OutcomeStatus::Failure, reason)),
                duration_secs: 0,
                usage: Usage::default(),
            },
        ));
        Ok(())
    }
}

impl Supervisor {
    async fn place(
        &self,
        me: &ActorRef<SupervisorMsg>,
        s: &mut SupervisorState,
        request: CallRequest,
    ) -> Result<CallId, EngineError> {
        if s.draining {
            return Err(EngineError::ShuttingDown);
        }
        if !s.bus.is_running() {
            // Nothing could be recorded: not the call, not its end.
            return Err(EngineError::EventLogStopped);
        }
        if let Some(why) = s.bus.append_failure() {
            return Err(EngineError::EventLogFailing(why));
        }
        let request = request
            .validate(&s.config.calls)
            .map_err(EngineError::InvalidRequest)?;
        if s.by_actor.len() >= s.config.calls.max_concurrent {
            return Err(EngineError::AtCapacity {
                active: s.by_actor.len(),
            });
        }
        let id = CallId::generate();
        s.bus.emit(NewEvent::now(
            id,
            EventKind::Created {
                request: request.clone(),
            },
        ));
        let shared = Arc::new(CallShared::default());
        let args = CallArgs {
            id,
            request,
            config: s.config.clone(),
            bus: s.bus.clone(),
            rest: s.rest.clone(),
            shared: shared.clone(),
            tasks: s.tasks.clone(),
        };
        match Actor::spawn_linked(Some(format!("call-{id}")), CallActor, args, me.get_cell()).await
        {
            Ok((actor, _)) => {
                s.by_call.insert(id, actor.get_id());
                s.by_actor
                    .insert(actor.get_id(), Live { id, actor, shared });
                Ok(id)
            }
            Err(e) => {
                let reason = format!("the call could not start: {e}");
                s.bus.emit(NewEvent::now(
                    id,
                    EventKind::Ended {
                        state: CallState::Failed,
                        detail: CallDetail::InternalError,
                        reason: Some(reason.clone()),
                        outcome: Some(Outcome::new(OutcomeStatus::Failure, reason.clone())),
                        duration_secs: 0,
                        usage: Usage::default(),
                    },
                ));
                Err(EngineError::Internal(reason))
            }
        }
    }
}
