//! # switchboard-actors: the engine
//!
//! One supervised actor per phone call, bridging a Twilio Media Stream to an OpenAI Realtime
//! (GA) session. Embed it with [`Engine`]; the `switchboard` crate adds the HTTP/MCP frontends
//! and the simulator.
//!
//! ## Supervision tree
//!
//! ```text
//! Engine (Clone facade: ActorRef<Supervisor> + EventBus + config + TaskTracker)
//!  │  owns: the event writer's JoinHandle (health), the TaskTracker (shutdown waits on it)
//!  │ call / cast
//!  ▼
//! Supervisor ──────────────────────────── one per Engine; never stops because a call did
//!  │ spawn_linked, one per call, named call-<ULID>
//!  ▼
//! CallActor ───────────────────────────── owns call::state::Machine and both legs
//!  ├─ ModelLeg (spawn_linked) ─────────── one per call
//!  │    └─ session task: connect (off the CallActor's mailbox), then one task running the
//!  │       reader and the control writer of the Realtime socket (join!)
//!  └─ TwilioLeg (spawn_linked) ────────── one per media stream; a key press replaces the
//!       └─ stream task: reads and writes  stream, so legs follow one another, one at a time
//!          the media socket; holds the call's agent audio while it runs, returns it when done
//!
//! audio:   TwilioLeg stream task ──ModelInput──▶ model socket    (callee → model, no hop:
//!          the socket's write half is shared, behind a mutex, with the ModelLeg's writer)
//!          ModelLeg reader ──mpsc(512)──▶ TwilioLeg stream task  (agent → callee; barge-in
//!          and drain markers travel in order with the audio)
//!          never through a mailbox; the agent-audio receiver moves from stream to stream
//! control: bounded channels from each leg actor to its task; ModelEvent / MediaEvent
//!          casts from the tasks to the CallActor
//! events:  CallActor and Supervisor ─emit─▶ EventBus ─▶ writer task ─append─▶ Store
//!          ─publish after durable─▶ broadcast ─▶ MCP, SSE, REST, webhooks, the CLI
//! spawned: REST create / redirect / hang-up and playback waits run on the Engine's
//!          TaskTracker (the CallActor and the Supervisor spawn there); timers are held by
//!          the CallActor and aborted when it stops
//! ```
//!
//! - The Supervisor never dies because a call ended or panicked: it overrides
//!   `handle_supervisor_evt`, records the call's end (a panic is `failed`) and hangs up the
//!   carrier call (on the TaskTracker).
//! - A CallActor's `post_stop` stops its legs and waits, so sockets close with proper frames
//!   (1000; 1008 for a refused stream token).
//! - `Engine::shutdown` ends every live call, stops the Supervisor, then waits (bounded) for
//!   the TaskTracker, so a hang-up asked for is not dropped on the way out.
//!
//! ## Modules
//! - [`data`]: the public data (requests, records, events, transcripts).
//! - [`error`]: [`EngineError`], what the engine answers when it cannot do what was asked.
//! - [`events`]: the event bus (durable before published) and gap-free event streams.
//! - [`store`]: the event log and projections behind the [`store::Store`] trait.
//! - [`config`], [`policy`]: settings and destination checks.
//! - [`validate`]: [`PhoneNumber`] and `CallRequest::validate`, the one request check.
//! - [`call`]: the CallActor, its pure state machine, its messages and its own types.
//! - [`realtime`]: the only place that speaks OpenAI Realtime JSON; the model leg.
//! - [`twilio`]: REST client, TwiML, signatures, the URLs Twilio reaches us at, the media leg.

pub mod call;
pub mod config;
pub mod data;
pub mod engine;
pub mod error;
pub mod events;
pub mod outbox;
pub mod policy;
pub mod realtime;
pub mod recovery;
pub mod store;
pub mod supervisor;
pub mod tls;
pub mod twilio;
pub mod validate;

pub use call::types::{CancelOutcome, CarrierUpdate};
pub use config::EngineConfig;
pub use data::*;
pub use engine::Engine;
pub use error::EngineError;
pub use validate::{PhoneNumber, PhoneNumberError, RequestError};
