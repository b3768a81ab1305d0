//! The `[backend]` section: how the proxy connects to the nodes. Read straight into
//! [`BackendSettings`], then checked.

use std::time::Duration;

use serde::Deserialize;

use super::check::{invalid, nonzero, positive};
use super::defaults::{
    DEFAULT_BACKEND_TIMEOUT, DEFAULT_CONNECTIONS, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_DEDICATED,
    DEFAULT_QUEUE_DEPTH, DEFAULT_RECONNECT_BACKOFF, DEFAULT_RECONNECT_BACKOFF_MAX,
};
use super::{duration, ConfigError, Secret};

/// The `[backend]` section, read as is (durations in humantime form: "500ms", "2s").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendSettings {
    /// Multiplexed connections per node (per client protocol: RESP2 and RESP3 each get a set).
    pub connections: usize,
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// How long a request may wait for its reply before the connection is declared broken.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// First delay before reconnecting to a node that failed; doubles up to the max.
    #[serde(with = "duration")]
    pub reconnect_backoff: Duration,
    #[serde(with = "duration")]
    pub reconnect_backoff_max: Duration,
    /// Requests queued per backend connection before senders wait.
    pub queue_depth: usize,
    /// Connections to one node opened for one client each (a blocking command, a WATCH, a
    /// subscriber, a big value being uploaded) that may be open at once; past it such a client
    /// gets an error at once (an upload is gathered whole instead).
    /// Each takes a client slot on the node (Redis's `maxclients`, 10,000 by default).
    pub max_dedicated: usize,
    /// Sent with AUTH on every connection to a node (data and health checks), with
    /// `username` when set (Redis 6 ACL users). Not sent to Sentinels.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// TLS to every node (data and health checks), verifying their certificates against
    /// `tls_ca` for `tls_server_name` (default: the host of the node's address).
    pub tls: bool,
    pub tls_ca: Option<std::path::PathBuf>,
    pub tls_server_name: Option<String>,
}

impl Default for BackendSettings {
    fn default() -> Self {
        BackendSettings {
            connections: DEFAULT_CONNECTIONS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_BACKEND_TIMEOUT,
            reconnect_backoff: DEFAULT_RECONNECT_BACKOFF,
            reconnect_backoff_max: DEFAULT_RECONNECT_BACKOFF_MAX,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            max_dedicated: DEFAULT_MAX_DEDICATED,
            username: None,
            password: None,
            tls: false,
            tls_ca: None,
            tls_server_name: None,
        }
    }
}

impl BackendSettings {
    /// The AUTH command a new node connection sends first, if any.
    pub fn auth_args(&self) -> Option<Vec<&[u8]>> {
        let password = self.password.as_ref()?;
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(user) = &self.username {
            args.push(user.as_bytes());
        }
        args.push(password.expose().as_bytes());
        Some(args)
    }

    /// `tls` needs `tls_ca`, which must be a CA file that can be read. Checked on its own,
    /// before `metrics_listen` and `[log]`, where it always was: the first error a file
    /// reports stays the same.
    pub(super) fn check_tls(&self) -> Result<(), ConfigError> {
        match (&self.tls, &self.tls_ca) {
            (true, None) => {
                return Err(invalid(
                    "backend.tls_ca",
                    "needed with backend.tls: the CA that signs the nodes' certificates",
                ))
            }
            (true, Some(ca)) => {
                crate::net::tls::client_config(ca).map_err(|e| invalid("backend.tls_ca", e))?;
            }
            (false, _) => {}
        }
        Ok(())
    }

    /// The rest of the section: credentials that go together, counts and delays that are not
    /// zero, a backoff that does not shrink.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self
            .password
            .as_ref()
            .is_some_and(|p| p.expose().is_empty())
        {
            return Err(invalid("backend.password", "empty; leave it out for none"));
        }
        if self.username.is_some() && self.password.is_none() {
            return Err(invalid("backend.username", "set without backend.password"));
        }
        positive("backend.connections", self.connections)?;
        positive("backend.queue_depth", self.queue_depth)?;
        positive("backend.max_dedicated", self.max_dedicated)?;
        nonzero("backend.connect_timeout", self.connect_timeout)?;
        nonzero("backend.timeout", self.timeout)?;
        nonzero("backend.reconnect_backoff", self.reconnect_backoff)?;
        if self.reconnect_backoff_max < self.reconnect_backoff {
            return Err(invalid(
                "backend.reconnect_backoff_max",
                "must not be shorter than backend.reconnect_backoff",
            ));
        }
        Ok(())
    }
}
