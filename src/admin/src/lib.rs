//! The admin protocol between `augurctl` (or any local tool) and `augurd`.
//!
//! Transport: a Unix stream socket (default `/run/augur/augurd.sock`). Messages are single lines
//! of JSON, at most [`MAX_LINE`] bytes. Every message carries the protocol version; this build
//! speaks [`PROTOCOL_VERSION`] and version 0 is reserved as invalid.
//!
//! ```text
//! client                                             augurd
//!   | {"version":1,"id":1,"request":{"type":"vms"}}     |
//!   |-------------------------------------------------->|
//!   | {"version":1,"id":1,"reply":{"type":"vms",...}}   |
//!   |<--------------------------------------------------|
//!   | ... any number of requests on one connection ...  |
//! ```
//! Every request gets exactly one reply line with the same `id`: either `reply` or `error`
//! (a [`ErrorCode`] and a one-line message). A request the daemon does not understand (bad JSON,
//! an unknown type, another version) gets an error reply and the connection stays open; only a
//! line over the size cap closes it, after an error reply.
//!
//! Adding a request type or a reply field is compatible; removing or changing one needs a new
//! version.
#![forbid(unsafe_code)]

mod client;
mod messages;
pub mod render;

pub use client::{AdminClient, ClientError};
pub use messages::*;
