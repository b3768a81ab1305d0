//! The `[health]` section: active checks of every node. Read straight into
//! [`HealthSettings`], then checked.

use std::time::Duration;

use serde::Deserialize;

use super::check::{invalid, nonzero};
use super::defaults::{
    DEFAULT_DOWN_AFTER, DEFAULT_FAILURE_THRESHOLD, DEFAULT_HEALTH_INTERVAL,
    DEFAULT_SUCCESS_THRESHOLD,
};
use super::{duration, ConfigError};

/// The `[health]` section: active checks of every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSettings {
    /// Every node gets a PING and an INFO replication this often.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Consecutive checks refused or reset that make a node down (a connection refused is
    /// evidence of death; silence is not).
    pub failure_threshold: u32,
    /// Consecutive answers that bring a down node back.
    pub success_threshold: u32,
    /// Silence that makes a node down: a node that keeps its connection but does not answer
    /// (a long script, a huge reply, a fork) is only slow until then.
    #[serde(with = "duration")]
    pub down_after: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            interval: DEFAULT_HEALTH_INTERVAL,
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            success_threshold: DEFAULT_SUCCESS_THRESHOLD,
            down_after: DEFAULT_DOWN_AFTER,
        }
    }
}

impl HealthSettings {
    /// Neither delay zero, both thresholds at least 1.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        nonzero("health.interval", self.interval)?;
        nonzero("health.down_after", self.down_after)?;
        if self.failure_threshold == 0 || self.success_threshold == 0 {
            return Err(invalid(
                "health",
                "failure_threshold and success_threshold must be at least 1",
            ));
        }
        Ok(())
    }
}
