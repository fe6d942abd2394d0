//! # switchboard
//!
//! Frontends for the [`switchboard_actors`] engine (HTTP webhooks and APIs, MCP) and the
//! built-in phone network [`sim`] that the demo, the examples and the tests run on.

pub mod bench;
pub mod config;
pub mod http;
pub mod mcp;
pub mod report;
pub mod sim;
pub mod stack;
pub mod state;

pub use switchboard_actors as engine;
