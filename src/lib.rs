//! shardis: a Redis-protocol proxy that shards keys over Redis nodes.
//!
//! The data path, one request at a time, with the module that owns each stage (ARCHITECTURE.md
//! has the whole map):
//!
//! ```text
//! client socket
//!   -> server               listener: client limit, TLS handshake, one session task each,
//!                           on the least loaded worker thread (net::workers)
//!   -> session::serve       the client's loop (session/task.rs): read, parse, dispatch, write
//!   -> resp::RequestParser  own parser: RESP arrays + inline, resumable, hard limits
//!   -> command::plan        command table -> Forward | Split | Broadcast | Local | Error ...
//!   -> session::dispatch    admit (auth, ACL), MULTI queue, execute: session::local answers
//!                           the proxy's own commands, lock runs lock commands
//!   -> topology             the shard's current view: primary, readable replicas
//!   -> backend::NodeConn    the worker's multiplexed, pipelined connection; FIFO of replies
//!   -> resp::ReplyFramer    frame boundaries in backend bytes, depth-limited
//!   -> session pipeline     replies written strictly in request order; splits merged
//! client socket
//! ```
//!
//! Shared by every session: proxy::Proxy (configuration and topology in force, counters, the
//! client registry, reload and shutdown notices); counted by telemetry, shown by server's HTTP
//! port; configuration read and checked by config; health checks and failover in
//! topology::monitor.
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
