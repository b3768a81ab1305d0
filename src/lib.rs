//! shardis: a Redis-protocol proxy that shards keys over Redis nodes.
//!
//! The data path, one request at a time:
//!
//! ```text
//! client socket
//!   -> resp::RequestParser   own parser: RESP arrays + inline, resumable, hard limits
//!   -> command::plan         command table -> Forward | Split | Broadcast | Local | Error
//!   -> backend::NodeConn     multiplexed, pipelined connection; FIFO of waiting replies
//!   -> resp::ReplyFramer     frame boundaries in backend bytes, depth-limited
//!   -> client::serve         replies written strictly in request order
//! client socket
//! ```
//!
//! Invariants: a reply goes back in the order its request came; a bad client only ends its own
//! connection; a key's shard depends on configuration alone, never on node health.
#![forbid(unsafe_code)]

pub mod backend;
pub mod command;
pub mod config;
pub mod lock;
pub mod modes;
pub mod net;
pub mod proxy;
pub mod resp;
pub mod routing;
pub mod server;
pub mod session;
pub mod telemetry;
pub mod topology;
