//! The `[limits]` section: what one client may ask of the proxy. Checked into the parser's
//! [`Limits`] and the sessions' [`ClientLimits`].

use std::time::Duration;

use super::check::positive;
use super::defaults::{
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CLIENTS, DEFAULT_MAX_OUTPUT_BUFFER, DEFAULT_MAX_PIPELINE,
};
use super::raw::RawLimits;
use super::ConfigError;
use crate::resp::Limits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    pub max_clients: usize,
    /// Requests one client may have in flight; reading from it pauses at this depth.
    pub max_pipeline: usize,
    /// Reply bytes held for a client that is not reading; replies wait (and so does reading)
    /// past this.
    pub max_output_buffer: usize,
    /// A client that sends nothing for this long, with nothing in flight, is closed (Redis's
    /// `timeout`); zero means never.
    pub idle_timeout: Duration,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_clients: DEFAULT_MAX_CLIENTS,
            max_pipeline: DEFAULT_MAX_PIPELINE,
            max_output_buffer: DEFAULT_MAX_OUTPUT_BUFFER,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl RawLimits {
    /// Every limit must be at least 1; `idle_timeout` may be zero (never).
    pub(super) fn validate(self) -> Result<(Limits, ClientLimits), ConfigError> {
        for (key, v) in [
            ("limits.max_clients", self.max_clients),
            ("limits.max_bulk_len", self.max_bulk_len),
            ("limits.max_inline_len", self.max_inline_len),
            ("limits.max_args", self.max_args),
            ("limits.max_query_buffer", self.max_query_buffer),
            ("limits.max_pipeline", self.max_pipeline),
            ("limits.max_output_buffer", self.max_output_buffer),
        ] {
            positive(key, v)?;
        }
        let protocol = Limits {
            max_bulk_len: self.max_bulk_len,
            max_inline_len: self.max_inline_len,
            max_args: self.max_args,
            max_query_buffer: self.max_query_buffer,
        };
        let client = ClientLimits {
            max_clients: self.max_clients,
            max_pipeline: self.max_pipeline,
            max_output_buffer: self.max_output_buffer,
            idle_timeout: self.idle_timeout,
        };
        Ok((protocol, client))
    }
}
