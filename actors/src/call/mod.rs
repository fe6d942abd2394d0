//! One phone call: its pure state machine, its actor, and the messages between them.

pub mod actor;
pub mod messages;
pub mod state;
