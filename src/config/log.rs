//! The `[log]` section: how much is logged, and in which form.

use serde::Deserialize;

use super::check::invalid;
use super::defaults::DEFAULT_LOG_LEVEL;
use super::ConfigError;

/// The `[log]` section. `RUST_LOG`, when set, overrides `level`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A `tracing` filter: `info`, `debug`, `shardis=debug,warn`, ...
    pub level: String,
    /// `text` (one line per event) or `json` (one JSON object per line).
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: DEFAULT_LOG_LEVEL.into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl LogSettings {
    /// `level` must be a filter `tracing` accepts.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.level) {
            return Err(invalid("log.level", format!("{:?}: {e}", self.level)));
        }
        Ok(())
    }
}
