//! One client session: read requests, plan them, dispatch them, write replies in order.
//!
//! The session is one task driving one socket. Each request becomes a `Slot` at the back of a
//! FIFO; a slot is either ready (the proxy answered it) or waits for backend replies. Replies are
//! written strictly from the front of the FIFO, so they go back in request order even when the
//! requests went to different shards or were split. Reading pauses while too many requests are
//! in flight or too many reply bytes wait for the client (backpressure), and writing never stops
//! reading from progressing otherwise, so a client that pipelines a lot before reading does not
//! deadlock against the proxy.
//!
//! A protocol error ends this client only: it gets `-ERR Protocol error: ...`, the replies to
//! its earlier requests, and then the connection closes.
//!
//! The pieces: `task` runs the loop and owns the socket (`conn`) and the FIFO of owed
//! replies (`pipeline`); `dispatch` carries out one request through its phases, sending
//! through `send` and `scan`; `state` is what the client's commands change; `local`
//! answers the proxy's own commands; `acl`, `pubsub`, `transaction`, `slot` and
//! `merge` are what those steps use.

pub mod acl;
mod conn;
mod dispatch;
pub mod local;
pub mod merge;
mod pipeline;
mod pubsub;
mod scan;
mod send;
mod slot;
mod state;
mod task;
mod transaction;
mod upload;

pub use dispatch::auth_failure_delay;
pub use state::Session;
pub use task::serve;
