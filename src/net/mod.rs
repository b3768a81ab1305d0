//! Sockets and TLS: what every connection, client or backend, is read and written through; and
//! the worker threads they are served on.
//! Imports nothing from the rest of the crate.

pub mod fds;
pub mod outbox;
pub mod socket;
pub mod tls;
pub mod workers;
