//! Configuration: the TOML file, the `SHARDIS__...` environment variables over it, and the
//! checked [`Config`] the rest of the proxy reads.
//!
//! ```text
//!  config.toml ─────┐
//!                   ├──> RawConfig ────────> RawConfig::validate ─────> Config
//!  SHARDIS__... ────┘    raw.rs, with        each section's check,      this file
//!  variables, env.rs     defaults.rs for     in turn; the first
//!                        what is left out    error stops it
//! ```
//!
//! `RawConfig` mirrors the file one to one; [`Config`] has addresses resolved, names
//! defaulted and every rule checked. Each section is checked, and turned into its part of
//! [`Config`], in the file that defines that part:
//!
//! - `listen`, `metrics_listen`: here, with `check.rs` (what several sections share);
//! - `[routing]`: `routing.rs` (the hash, distribution and hash tag of [`Config::router`]);
//! - `password` and `[[users]]`: `users.rs` ([`Secret`], [`User`], [`Role`]);
//! - `[tls]`: `tls.rs` ([`TlsSettings`]);
//! - `[backend]`: `backend.rs` ([`BackendSettings`]);
//! - `[log]`: `log.rs` ([`LogSettings`]);
//! - `[limits]`: `limits.rs` ([`ClientLimits`], and the parser's [`Limits`]);
//! - `[health]`: `health.rs` ([`HealthSettings`]);
//! - `[locks]` and `[commands]`: `policy.rs` ([`LockSettings`], [`Policy`]);
//! - `[replication]`: `replication.rs` ([`ReplicationMode`], [`WriteAck`], [`ReadFrom`]);
//! - `[[shards]]`: `shards.rs` ([`ShardConfig`], [`SentinelConfig`]).
//!
//! The order of the checks is that of `RawConfig::validate`, at the end of this file.
//!
//! Every error names the key it is about, e.g. `shards[1].primary: "127.0.0.1" is not
//! host:port`, and the environment variable when a `SHARDIS__...` override set it (`env.rs`).
//! Durations are humantime's `"500ms"`, `"2s"` (`duration.rs`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::resp::Limits;
use crate::routing::{Distribution, HashFn, HashTag, RingMember, Router};

mod backend;
mod check;
mod defaults;
mod duration;
mod env;
mod health;
mod limits;
mod log;
mod policy;
mod raw;
mod replication;
mod routing;
mod shards;
mod tls;
mod users;

pub use backend::BackendSettings;
pub use defaults::{DEFAULT_DOWN_AFTER, DEFAULT_MAX_DEDICATED};
pub use health::HealthSettings;
pub use limits::ClientLimits;
pub use log::{LogFormat, LogSettings};
pub use policy::{LockSettings, Policy};
pub use replication::{ReadFrom, ReplicationMode, WriteAck};
pub use shards::{SentinelConfig, ShardConfig};
pub use tls::TlsSettings;
pub use users::{Role, Secret, User};

use check::listen_addr;
use raw::RawConfig;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}", without_source(.0))]
    Load(#[from] config::ConfigError),
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
    /// What a `SHARDIS__...` variable set was refused: `problem` is the error it caused.
    #[error("environment variable {var}: {problem}")]
    Env { var: String, problem: String },
}

/// A parse error's text without the lines quoting the file (`3 | password = "...`): the
/// quoted line may hold a password, and errors reach logs and the SHARDIS RELOAD reply. The
/// line and column stay.
fn without_source(e: &config::ConfigError) -> String {
    e.to_string()
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            let gutter = t.trim_start_matches(|c: char| c.is_ascii_digit());
            !gutter.trim_start().starts_with('|')
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The validated runtime configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    /// Worker threads, each with its own clients and node connections; 0 = one per two CPUs
    /// (see [`crate::net::workers::wanted`]).
    pub workers: usize,
    /// On SIGTERM/SIGINT: how long sessions may take to finish their in-flight requests.
    pub shutdown_grace: Duration,
    /// Password clients must give with AUTH (or HELLO ... AUTH default <pw>), if any.
    pub password: Option<Secret>,
    /// Client users (`[[users]]`): AUTH <name> <password>, with a role and key prefixes.
    pub users: Vec<User>,
    /// Where `GET /metrics` (Prometheus text) is served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// A second listener, for clients speaking TLS.
    pub tls: Option<TlsSettings>,
    pub log: LogSettings,
    pub hash: HashFn,
    pub distribution: Distribution,
    pub hash_tag: Option<HashTag>,
    pub backend: BackendSettings,
    pub protocol: Limits,
    pub client: ClientLimits,
    /// Commands allowed beyond the defaults (`[commands]`).
    pub policy: Policy,
    pub health: HealthSettings,
    /// Where shard epochs and current primaries are kept across restarts.
    pub state_file: Option<std::path::PathBuf>,
    /// Replica acknowledgements wait this long before a write is answered with an error.
    pub ack_timeout: Duration,
    /// Replicas further behind than this serve no reads.
    pub max_lag: Duration,
    pub shards: Vec<ShardConfig>,
}

impl Config {
    /// Whether clients are served without AUTH: no password and no users.
    pub fn open_to_all(&self) -> bool {
        self.password.is_none() && self.users.is_empty()
    }

    /// Reads `path` (TOML), applies `SHARDIS__...` environment overrides and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let load = || -> Result<Config, ConfigError> {
            let raw: RawConfig = config::Config::builder()
                .add_source(config::File::from(path).format(config::FileFormat::Toml))
                .add_source(env::source())
                .build()?
                .try_deserialize()?;
            raw.validate()
        };
        load().map_err(|e| env::blame(e, &env::overrides()))
    }

    /// Parses TOML text (no environment overrides); used by `shardis dev` and tests.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()?
            .try_deserialize()?;
        raw.validate()
    }

    /// Where keys go under this configuration.
    pub fn router(&self) -> Router {
        let members: Vec<RingMember> = self
            .shards
            .iter()
            .map(|s| RingMember {
                name: s.name.clone(),
                weight: s.weight,
            })
            .collect();
        Router::new(self.hash, self.distribution, self.hash_tag, &members)
    }
}

impl RawConfig {
    /// Each section's checks, in the order the sections have always been checked in: for a
    /// file with several errors, the one reported first stays the same.
    fn validate(self) -> Result<Config, ConfigError> {
        let listen = listen_addr("listen", &self.listen)?;
        let (hash, distribution, hash_tag) = self.routing.validate()?;
        users::check(self.password.as_ref(), &self.users)?;
        let tls = self.tls.map(raw::RawTls::validate).transpose()?;
        self.backend.check_tls()?;
        let metrics_listen = match &self.metrics_listen {
            None => None,
            Some(addr) => Some(listen_addr("metrics_listen", addr)?),
        };
        self.log.check()?;
        self.backend.check()?;
        let (protocol, client) = self.limits.validate()?;
        self.health.check()?;
        let locks = self.locks.validate()?;
        let shard_defaults = self.replication.validate()?;
        let shards = shards::validate(self.shards, &shard_defaults)?;
        Ok(Config {
            listen,
            workers: self.workers,
            shutdown_grace: self.shutdown_grace,
            password: self.password,
            users: self.users,
            metrics_listen,
            tls,
            log: self.log,
            hash,
            distribution,
            hash_tag,
            backend: self.backend,
            protocol,
            client,
            policy: self.commands.into_policy(locks),
            health: self.health,
            state_file: self.replication.state_file,
            ack_timeout: self.replication.ack_timeout,
            max_lag: self.replication.max_lag,
            shards,
        })
    }
}

#[cfg(test)]
mod tests;
