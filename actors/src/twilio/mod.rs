//! Twilio: the REST client, TwiML, webhook signatures, and the media-stream leg.

pub mod leg;
pub mod playback;
pub mod rest;
pub mod signature;
pub mod twiml;
pub mod urls;
pub mod wire;
