//! # switchboard-actors: the engine
//!
//! One supervised actor per phone call, bridging a Twilio Media Stream to an OpenAI Realtime
//! (GA) session. Embed it with [`Engine`]; the `switchboard` crate adds the HTTP/MCP frontends
//! and the simulator.
//!
//! ## Supervision tree
//!
//! ```text
//!              Engine (Clone facade: ActorRef + EventBus + config)
//!                 │ calls/casts
//!                 ▼
//!            ┌────────────┐   emits   ┌──────────┐  append  ┌───────┐
//!            │ Supervisor │──────────▶│ EventBus │─────────▶│ Store │
//!            └────────────┘           └──────────┘          └───────┘
//!              │ spawn_linked, one per call (named by its ULID)  │ publish after durable
//!              ▼                                                 ▼
//!        ┌───────────┐                              subscribers: MCP, SSE, REST, webhooks
//!        │ CallActor │  owns call::state (pure state machine)
//!        └───────────┘
//!           │      │ spawn_linked
//!           ▼      ▼
//!   ┌───────────┐ ┌──────────┐
//!   │ TwilioLeg │ │ ModelLeg │   media frames flow leg↔leg over bounded channels,
//!   └───────────┘ └──────────┘   never through mailboxes
//! ```
//!
//! - The Supervisor never dies because a call ended or panicked: it overrides
//!   `handle_supervisor_evt`, records the call's end (a panic is `failed`) and hangs up the
//!   carrier call.
//! - A CallActor's `post_stop` stops its legs and waits, so sockets close with proper frames.
//!
//! ## Modules
//! - [`model`]: the public data (requests, records, events, transcripts).
//! - [`events`]: the event bus (durable before published) and gap-free event streams.
//! - [`store`]: the event log and projections behind the [`store::Store`] trait.
//! - [`config`], [`policy`]: settings and destination checks.
//! - [`validate`]: [`PhoneNumber`] and `CallRequest::validate`, the one request check.

pub mod call;
pub mod config;
pub mod engine;
pub mod events;
pub mod model;
pub mod outbox;
pub mod policy;
pub mod realtime;
pub mod recovery;
pub mod store;
pub mod supervisor;
pub mod tls;
pub mod twilio;
pub mod validate;

pub use config::EngineConfig;
pub use engine::{CancelOutcome, CarrierUpdate, Engine, EngineError};
pub use model::*;
pub use validate::{PhoneNumber, PhoneNumberError, RequestError};
