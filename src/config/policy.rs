//! The `[commands]` and `[locks]` sections: the commands refused unless the operator allows
//! them, and the keys that are fenced locks. Together they are the [`Policy`] sessions apply.

use std::time::Duration;

use bytes::Bytes;

use super::check::invalid;
use super::defaults::{DEFAULT_FREEZE_MARGIN, DEFAULT_LOCK_MAX_TTL, DEFAULT_LOCK_PREFIX};
use super::raw::{RawCommands, RawLocks};
use super::ConfigError;

/// The longest `locks.max_ttl`: a lease must fit in Redis's PX and in the Lua number a script
/// handles exactly.
const MAX_LOCK_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Which commands the operator allows beyond the defaults, and which keys are locks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// FLUSHDB and FLUSHALL, sent to every shard.
    pub allow_flush: bool,
    /// KEYS (it walks every key of every shard, blocking each) is refused unless allowed.
    pub allow_keys: bool,
    /// CONFIG SET, CONFIG RESETSTAT, SLOWLOG RESET and LATENCY RESET, sent to every node.
    pub allow_node_admin: bool,
    pub locks: LockSettings,
}

/// Fenced locks (`[locks]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockSettings {
    /// `SET key owner NX PX|EX ttl` on a key starting with this is a lock grant; empty: none
    /// is.
    pub prefix: Bytes,
    /// The longest lease a grant or an extension may ask for.
    pub max_ttl: Duration,
    /// After a failover a shard grants no lock for `max_ttl` plus this (clock drift, and the
    /// time the failover took to notice).
    pub freeze_margin: Duration,
}

impl Default for LockSettings {
    fn default() -> Self {
        LockSettings {
            prefix: Bytes::from_static(DEFAULT_LOCK_PREFIX.as_bytes()),
            max_ttl: DEFAULT_LOCK_MAX_TTL,
            freeze_margin: DEFAULT_FREEZE_MARGIN,
        }
    }
}

impl LockSettings {
    /// Whether a SET on `key` is a lock grant.
    pub fn in_namespace(&self, key: &[u8]) -> bool {
        !self.prefix.is_empty() && key.starts_with(&self.prefix)
    }

    /// How long a shard refuses grants after a failover.
    pub fn freeze(&self) -> Duration {
        self.max_ttl + self.freeze_margin
    }
}

impl RawLocks {
    /// `max_ttl` must be longer than 0 and at most [`MAX_LOCK_TTL`].
    pub(super) fn validate(self) -> Result<LockSettings, ConfigError> {
        if self.max_ttl.is_zero() || self.max_ttl > MAX_LOCK_TTL {
            return Err(invalid(
                "locks.max_ttl",
                "must be longer than 0 and at most one year",
            ));
        }
        Ok(LockSettings {
            prefix: Bytes::from(self.prefix.into_bytes()),
            max_ttl: self.max_ttl,
            freeze_margin: self.freeze_margin,
        })
    }
}

impl RawCommands {
    /// Nothing to check: each key is a bool.
    pub(super) fn into_policy(self, locks: LockSettings) -> Policy {
        Policy {
            allow_flush: self.allow_flush,
            allow_keys: self.allow_keys,
            allow_node_admin: self.allow_node_admin,
            locks,
        }
    }
}
