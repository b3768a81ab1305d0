//! What the checks of several sections share: the error naming a key, and the rules more
//! than one key follows.

use std::net::SocketAddr;
use std::time::Duration;

use super::ConfigError;

/// The error about `key`: `key: problem`.
pub(super) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// `text` as the `ip:port` a listener binds (`listen`, `tls.listen`, `metrics_listen`).
pub(super) fn listen_addr(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse()
        .map_err(|_| invalid(key, format!("{text:?} is not an ip:port address")))
}

/// A count that must be at least 1.
pub(super) fn positive(key: &str, v: usize) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(invalid(key, "must be at least 1"));
    }
    Ok(())
}

/// A duration that must not be zero.
pub(super) fn nonzero(key: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(invalid(key, "must be longer than 0"));
    }
    Ok(())
}
