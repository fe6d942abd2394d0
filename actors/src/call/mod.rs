//! One phone call: its pure state machine, its actor, and the messages between them.

pub mod actor;
pub mod messages;
pub mod state;
pub mod types;

/// Read and write buffers of both legs' sockets, sized for 20 ms frames and small events
/// rather than the library's 128 KiB each (two sockets per call). A larger message (a long
/// audio delta) still fits: the read buffer grows for it, and writes beyond this are flushed.
pub const SOCKET_BUFFER: usize = 8 * 1024;
