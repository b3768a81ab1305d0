//! The wire format: the client request parser, the backend reply framer, reply builders.

pub mod encode;
pub mod reply;
mod request;

pub use encode::{Proto, Value};
pub use reply::{FrameError, ReplyFramer};
pub use request::{parse_i64, Limits, ProtocolError, Request, RequestParser, Unfinished};
